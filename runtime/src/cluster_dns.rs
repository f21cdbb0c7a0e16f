//! Cluster DNS for the host's resolver.
//!
//! On macOS a program in a container does not read the root's resolv.conf: getaddrinfo asks
//! mDNSResponder (relayed into the root, see [`crate::dns_proxy`]), which follows the host's
//! resolver settings. For a build pod to resolve `cache.ci.svc.cluster.local`, the host must send
//! the cluster domain to the cluster's DNS servers; macOS reads that from `/etc/resolver/<domain>`
//! files (resolver(5)). darwin-cri writes one, for the cluster's own domain
//! (`runtime.cluster_domain`) and to the cluster's DNS servers only, when the first ClusterFirst
//! pod becomes ready and removes it with the last one: a pod's own search domains and servers
//! never reach the host (see [`ClusterDns`]). Files it did not write are never changed or
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

/// Whether a pod's DNS config is kubelet's ClusterFirst config for `domain`: servers, and a search
/// list holding `<namespace>.svc.<domain>` and `svc.<domain>` (kubelet's is `<ns>.svc.<domain>
/// svc.<domain> <domain>` followed by the node's own search domains). A pod with dnsPolicy None
/// can write the same list; what keeps it off the host is that its servers must be the
/// cluster's too (see [`ClusterDns`]).
pub fn is_cluster_first(dns: &DnsConfig, namespace: &str, domain: &str) -> bool {
    !dns.servers.is_empty()
        && is_domain(domain)
        && dns.searches.iter().any(|s| *s == format!("svc.{domain}"))
        && dns
            .searches
            .iter()
            .any(|s| *s == format!("{namespace}.svc.{domain}"))
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

/// An IP address, as resolver(5) takes it in a `nameserver` line.
fn is_address(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
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

/// The resolver file of the cluster's domain while ready pods use it.
///
/// Only the cluster's own domain (`runtime.cluster_domain`, kubelet's clusterDomain) and only the
/// cluster's DNS servers ever reach the resolver directory: a pod's search list cannot name
/// another domain (`svc.com` would send every `*.com` lookup of the Mac to the pod's server), and
/// a pod with servers of its own (dnsPolicy None) gets its resolv.conf and nothing on the host.
/// The servers are `runtime.cluster_dns_servers` (kubelet's clusterDNS) when set: pods with
/// other servers count for nothing. When unset, they are those of the ClusterFirst pods, which
/// kubelet gives every such pod alike: while the ready pods disagree, no file is written at all
/// (one of them is not what it claims), so a lone pod with dnsPolicy None and the cluster's search
/// list can only hold the domain until the first real ClusterFirst pod comes.
#[derive(Debug)]
pub struct ClusterDns {
    dir: Option<PathBuf>,
    domain: String,
    /// The configured servers; empty: those every ClusterFirst pod agrees on.
    servers: Vec<String>,
    /// Ready ClusterFirst pods of the domain → their servers, and what the file holds.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    pods: BTreeMap<String, Vec<String>>,
    written: Option<Vec<String>>,
}

impl ClusterDns {
    /// Resolver files in `dir` (none when `None`) for `domain`, sent to `servers` (when empty:
    /// those every ClusterFirst pod agrees on).
    pub fn new(dir: Option<PathBuf>, domain: &str, servers: Vec<String>) -> Self {
        let domain = domain.trim_matches('.').to_ascii_lowercase();
        let dir = if !servers.iter().all(|s| is_address(s)) {
            if dir.is_some() {
                tracing::warn!(
                    servers = ?servers,
                    "runtime.cluster_dns_servers holds something that is not an IP address; no resolver file is written"
                );
            }
            None
        } else if is_domain(&domain) {
            dir
        } else {
            if dir.is_some() {
                tracing::warn!(
                    domain,
                    "runtime.cluster_domain is not a domain name; no resolver file is written"
                );
            }
            None
        };
        ClusterDns {
            dir,
            domain,
            servers,
            state: Mutex::new(State::default()),
        }
    }

    /// Writes the resolver file for a pod that became ready, if it is a ClusterFirst pod of
    /// the cluster's domain and servers.
    pub fn add(&self, pod_id: &str, namespace: &str, dns: Option<&DnsConfig>) {
        let Some(dns) = dns else { return };
        if self.dir.is_none() || !is_cluster_first(dns, namespace, &self.domain) {
            return;
        }
        // Each server becomes a `nameserver` line of the host's file: an address and nothing
        // else (no second line smuggled in).
        if !dns.servers.iter().all(|s| is_address(s)) {
            tracing::warn!(pod = pod_id, servers = ?dns.servers, "a pod's DNS servers are not all IP addresses; nothing is written for it on the host");
            return;
        }
        if !self.servers.is_empty() && dns.servers != self.servers {
            tracing::warn!(pod = pod_id, servers = ?dns.servers, cluster = ?self.servers, "a pod's DNS servers are not the cluster's (runtime.cluster_dns_servers); nothing is written for it on the host");
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.pods.insert(pod_id.to_string(), dns.servers.clone());
        self.update(&mut state);
    }

    /// Forgets a pod that stopped; the file goes with the last pod using the domain.
    pub fn remove(&self, pod_id: &str) {
        if self.dir.is_none() {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.pods.remove(pod_id).is_some() {
            self.update(&mut state);
        }
    }

    /// Brings the file in line with the ready pods.
    fn update(&self, state: &mut State) {
        let mut servers = state.pods.values();
        let want = servers.next().cloned();
        let want = match want {
            Some(first) if servers.all(|s| *s == first) => Some(first),
            Some(_) => {
                tracing::warn!(domain = self.domain, pods = ?state.pods, "ClusterFirst pods disagree on the cluster's DNS servers; no resolver file is written until they agree (set runtime.cluster_dns_servers)");
                None
            }
            None => None,
        };
        if want == state.written {
            return;
        }
        match &want {
            Some(servers) => self.write(&self.domain, servers),
            None => self.delete(&self.domain),
        }
        state.written = want;
    }

    /// Removes the files of domains that no ready pod uses: left by a server that died.
    pub fn sweep(&self) {
        let Some(dir) = &self.dir else { return };
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if (state.written.is_none() || name != self.domain) && is_ours(&e.path()) {
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
    fn only_kubelets_cluster_first_list_counts() {
        let d = dns(
            &["10.96.0.10"],
            &[
                "ci.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example",
            ],
        );
        assert!(is_cluster_first(&d, "ci", "cluster.local"));
        assert!(!is_cluster_first(&d, "other", "cluster.local"));
        assert!(!is_cluster_first(&d, "ci", "corp.example"));
        let no_servers = dns(&[], &["ci.svc.cluster.local", "svc.cluster.local"]);
        assert!(!is_cluster_first(&no_servers, "ci", "cluster.local"));
    }

    /// Issue #26, 1: a pod's search list named `svc.com`, `svc.apple.com` and `svc.local` and
    /// darwin-cri sent the Mac's `*.com` and `.local` lookups to the pod's server.
    #[test]
    fn a_pods_own_domains_and_servers_write_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hostile = |ns: &str| {
            dns(
                &["192.0.2.53"],
                &[
                    &format!("{ns}.svc.com"),
                    "svc.com",
                    "svc.apple.com",
                    "svc.local",
                    "apple.com",
                    "local",
                ],
            )
        };
        for servers in [vec![], vec!["10.96.0.10".to_string()]] {
            let cluster = ClusterDns::new(Some(dir.path().to_path_buf()), "cluster.local", servers);
            cluster.add("evil", "ci", Some(&hostile("ci")));
            assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 0);
        }
        // dnsPolicy None with the cluster's search list but servers of its own: nothing on the
        // host while the servers are configured, or while a ClusterFirst pod holds the file.
        let own = dns(
            &["192.0.2.53"],
            &["ci.svc.cluster.local", "svc.cluster.local"],
        );
        let configured = ClusterDns::new(
            Some(dir.path().to_path_buf()),
            "cluster.local",
            vec!["10.96.0.10".into()],
        );
        configured.add("none", "ci", Some(&own));
        assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 0);
        let learned = ClusterDns::new(Some(dir.path().to_path_buf()), "cluster.local", vec![]);
        let first = dns(
            &["10.96.0.10"],
            &["ci.svc.cluster.local", "svc.cluster.local"],
        );
        learned.add("first", "ci", Some(&first));
        let file = dir.path().join("cluster.local");
        let written = std::fs::read_to_string(&file).expect("read");
        assert!(written.contains("nameserver 10.96.0.10\n"), "{written}");
        learned.add("none", "ci", Some(&own));
        assert!(!file.exists(), "pods disagree: no file");
        learned.remove("none");
        let written = std::fs::read_to_string(&file).expect("read");
        assert!(written.contains("nameserver 10.96.0.10\n"), "{written}");
        learned.remove("first");
        assert!(!file.exists());
        // A server that is not an address (a second line smuggled in) writes nothing.
        let smuggled = dns(
            &["10.96.0.10\ndomain com"],
            &["ci.svc.cluster.local", "svc.cluster.local"],
        );
        learned.add("smuggled", "ci", Some(&smuggled));
        assert!(!file.exists());
    }

    #[test]
    fn written_with_the_first_pod_removed_with_the_last_others_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("corp.example"), "nameserver 192.0.2.1\n").expect("write");
        std::fs::write(dir.path().join("stale.local"), format!("{MARKER}\n")).expect("write");
        let cluster = ClusterDns::new(Some(dir.path().to_path_buf()), "cluster.local", vec![]);
        cluster.sweep();
        assert!(
            !dir.path().join("stale.local").exists(),
            "ours, unused: swept"
        );
        let a = dns(
            &["10.96.0.10"],
            &["ns.svc.cluster.local", "svc.cluster.local"],
        );
        cluster.add("a", "ns", Some(&a));
        cluster.add("b", "ns", Some(&a));
        let file = dir.path().join("cluster.local");
        let read = || std::fs::read_to_string(&file).unwrap_or_default();
        assert!(read().contains("nameserver 10.96.0.10"), "{}", read());
        cluster.remove("a");
        assert!(read().contains("nameserver 10.96.0.10"), "{}", read());
        cluster.remove("b");
        assert!(!file.exists());
        assert!(dir.path().join("corp.example").exists());
        // A file of someone else's for the cluster domain is left as it is.
        std::fs::write(&file, "nameserver 192.0.2.9\n").expect("write");
        cluster.add("c", "ns", Some(&a));
        cluster.remove("c");
        assert_eq!(read(), "nameserver 192.0.2.9\n");
    }
}
