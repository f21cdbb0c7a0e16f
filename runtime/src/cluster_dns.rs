//! Cluster DNS for the host's resolver.
//!
//! On macOS a program in a container does not read the root's resolv.conf: getaddrinfo asks
//! mDNSResponder (relayed into the root, see [`crate::dns_proxy`]), which follows the host's
//! resolver settings. For a build pod to resolve `cache.ci.svc.cluster.local`, the host must send
//! the cluster domain to the cluster's DNS servers; macOS reads that from `/etc/resolver/<domain>`
//! files (resolver(5)). darwin-cri writes one per cluster domain when the first pod carrying it
//! becomes ready and removes it with the last one. Files it did not write are never changed or
//! removed: each file it writes starts with [`MARKER`].
//!
//! The Linux twin leaves this off (`None`): its programs read the pod's resolv.conf. Tests turn it
//! on with a directory of their own. Unproven on a Mac: the file format is resolver(5)'s, but no
//! pod has resolved through it there yet.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::model::DnsConfig;

/// First line of every resolver file darwin-cri writes.
pub const MARKER: &str =
    "# darwin-cri: cluster DNS for pods; removed with the last pod that uses it";

/// The cluster domains of a pod's DNS config. kubelet's search list for a ClusterFirst pod is
/// `<ns>.svc.<domain> svc.<domain> <domain>` followed by the node's own search domains; only the
/// cluster's domain, the one after `svc.`, is taken (the node's own domains keep the node's
/// servers).
pub fn cluster_domains(dns: &DnsConfig) -> Vec<String> {
    if dns.servers.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<String> = dns
        .searches
        .iter()
        .filter_map(|s| s.strip_prefix("svc."))
        .filter(|d| is_domain(d))
        .map(str::to_string)
        .collect();
    out.dedup();
    out
}

/// A name that is safe as a file name in the resolver directory.
fn is_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && !d.starts_with('.')
        && d.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn contents(servers: &[String]) -> String {
    let mut out = format!("{MARKER}\n");
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    out
}

/// Whether `path` is a resolver file darwin-cri wrote.
pub fn is_ours(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s.starts_with(MARKER))
}

/// The resolver files of the cluster domains that ready pods use.
#[derive(Debug)]
pub struct ClusterDns {
    dir: Option<PathBuf>,
    /// domain → pod id → that pod's DNS servers.
    users: Mutex<BTreeMap<String, BTreeMap<String, Vec<String>>>>,
}

impl ClusterDns {
    pub fn new(dir: Option<PathBuf>) -> Self {
        ClusterDns {
            dir,
            users: Mutex::new(BTreeMap::new()),
        }
    }

    /// Writes the resolver files of a pod that became ready.
    pub fn add(&self, pod_id: &str, dns: Option<&DnsConfig>) {
        let Some(dns) = dns else { return };
        if self.dir.is_none() {
            return;
        }
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        for domain in cluster_domains(dns) {
            let pods = users.entry(domain.clone()).or_default();
            let first = pods.is_empty();
            pods.insert(pod_id.to_string(), dns.servers.clone());
            if first {
                self.write(&domain, &dns.servers);
            }
        }
    }

    /// Forgets a pod that stopped; a domain no pod uses any more loses its file, and one whose
    /// file came from this pod gets the servers of one that remains.
    pub fn remove(&self, pod_id: &str) {
        if self.dir.is_none() {
            return;
        }
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let mut emptied = Vec::new();
        for (domain, pods) in users.iter_mut() {
            let Some(servers) = pods.remove(pod_id) else {
                continue;
            };
            match pods.values().next() {
                None => emptied.push(domain.clone()),
                Some(other) if *other != servers => self.write(domain, other),
                Some(_) => {}
            }
        }
        for domain in emptied {
            users.remove(&domain);
            self.delete(&domain);
        }
    }

    /// Removes the files of domains that no ready pod uses: left by a server that died.
    pub fn sweep(&self) {
        let Some(dir) = &self.dir else { return };
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !users.contains_key(&name) && is_ours(&e.path()) {
                self.delete(&name);
            }
        }
    }

    fn write(&self, domain: &str, servers: &[String]) {
        let Some(dir) = &self.dir else { return };
        let path = dir.join(domain);
        if path.exists() && !is_ours(&path) {
            tracing::warn!(path = %path.display(), "a resolver file darwin-cri did not write is in the way; pods keep the host's resolution for this domain");
            return;
        }
        // The temporary name starts with a dot: resolver(5) would take `cluster.tmp` for a domain.
        let tmp = dir.join(format!(".{domain}.darwin-cri-new"));
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&tmp, contents(servers)))
            .and_then(|()| std::fs::rename(&tmp, &path));
        match written {
            Ok(()) => {
                tracing::info!(path = %path.display(), servers = ?servers, "cluster domain sent to the cluster's DNS")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write a resolver file")
            }
        }
    }

    fn delete(&self, domain: &str) {
        let Some(dir) = &self.dir else { return };
        let path = dir.join(domain);
        if !is_ours(&path) {
            return;
        }
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a resolver file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(servers: &[&str], searches: &[&str]) -> DnsConfig {
        DnsConfig {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            searches: searches.iter().map(|s| s.to_string()).collect(),
            options: vec![],
        }
    }

    #[test]
    fn only_the_cluster_domain_is_taken() {
        let d = dns(
            &["10.96.0.10"],
            &[
                "ci.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example",
            ],
        );
        assert_eq!(cluster_domains(&d), vec!["cluster.local"]);
        assert!(cluster_domains(&dns(&[], &["svc.cluster.local", "cluster.local"])).is_empty());
        assert!(cluster_domains(&dns(&["1.1.1.1"], &["svc...", ".."])).is_empty());
        assert!(cluster_domains(&dns(&["1.1.1.1"], &["svc.a/b", "a/b"])).is_empty());
    }

    #[test]
    fn written_with_the_first_pod_removed_with_the_last_others_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("corp.example"), "nameserver 192.0.2.1\n").expect("write");
        std::fs::write(dir.path().join("stale.local"), format!("{MARKER}\n")).expect("write");
        let cluster = ClusterDns::new(Some(dir.path().to_path_buf()));
        cluster.sweep();
        assert!(
            !dir.path().join("stale.local").exists(),
            "ours, unused: swept"
        );
        let a = dns(&["10.96.0.10"], &["svc.cluster.local", "cluster.local"]);
        let b = dns(&["10.96.0.11"], &["svc.cluster.local", "cluster.local"]);
        cluster.add("a", Some(&a));
        cluster.add("b", Some(&b));
        let file = dir.path().join("cluster.local");
        let read = || std::fs::read_to_string(&file).unwrap_or_default();
        assert!(read().contains("nameserver 10.96.0.10"), "{}", read());
        cluster.remove("a");
        assert!(read().contains("nameserver 10.96.0.11"), "{}", read());
        cluster.remove("b");
        assert!(!file.exists());
        assert!(dir.path().join("corp.example").exists());
        // A file of someone else's for the cluster domain is left as it is.
        std::fs::write(&file, "nameserver 192.0.2.9\n").expect("write");
        cluster.add("c", Some(&a));
        cluster.remove("c");
        assert_eq!(read(), "nameserver 192.0.2.9\n");
    }
}
