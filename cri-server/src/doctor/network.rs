//! Networking: the mDNSResponder relay, cluster DNS and the registries.

use super::*;

pub(super) fn mdns(config: &Config) -> Check {
    match config.runtime.mdns_socket() {
        None => Check::ok(
            "dns",
            "no mDNSResponder relay configured (runtime.mdns_socket)",
        ),
        Some(path) if std::fs::symlink_metadata(&path).is_ok() => Check::ok(
            "dns",
            format!("{} is relayed into container roots", path.display()),
        ),
        Some(path) => Check::warn(
            "dns",
            format!(
                "{} does not exist: containers will not resolve names",
                path.display()
            ),
            "start mDNSResponder (launchctl kickstart system/com.apple.mDNSResponder) or set runtime.mdns_socket",
        ),
    }
}

pub(super) fn cluster_dns(config: &Config) -> Check {
    let Some(dir) = config.runtime.resolver_dir() else {
        return Check::ok(
            "cluster dns",
            "pods resolve cluster names through their resolv.conf (no resolver directory)",
        );
    };
    let mut ours = Vec::new();
    let mut others = Vec::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if runtime::cluster_dns::is_ours(&e.path()) {
            let servers: Vec<String> = std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.strip_prefix("nameserver "))
                .map(str::to_string)
                .collect();
            ours.push(format!("{name} → {}", servers.join(", ")));
        } else {
            others.push(name);
        }
    }
    let mut detail = if ours.is_empty() {
        format!(
            "{}: no cluster domain is routed (written when a pod with a cluster DNS config starts)",
            dir.display()
        )
    } else {
        format!("{}: {}", dir.display(), ours.join("; "))
    };
    if !others.is_empty() {
        detail.push_str(&format!(
            "; not darwin-cri's, left alone: {}",
            others.join(", ")
        ));
    }
    Check::ok("cluster dns", detail)
}

pub(super) async fn registries(config: &Config) -> Vec<Check> {
    let hosts: Vec<&String> = config
        .image
        .registries
        .keys()
        .filter(|h| h.as_str() != "*")
        .collect();
    if hosts.is_empty() {
        return vec![Check::ok(
            "registries",
            "none configured: pulls go to each image's own registry",
        )];
    }
    let registry = match image_service::registry::Registry::new(config.image.registry()) {
        Ok(r) => r,
        Err(e) => {
            return vec![Check::fail(
                "registries",
                format!("the registry client cannot be set up: {e}"),
                "check image.ca_files",
            )];
        }
    };
    let mut checks = Vec::new();
    for host in hosts {
        for (url, answer) in registry.probe(host).await {
            checks.push(match answer {
                Ok(200 | 401) => Check::ok("registry", format!("{url} answers")),
                Ok(code) => Check::warn(
                    "registry",
                    format!("{url} answered HTTP {code}, not a registry's 200 or 401"),
                    "check the host and mirror URLs in [image.registries]",
                ),
                Err(e) => Check::warn(
                    "registry",
                    format!("{url} is unreachable: {e}"),
                    "check the network, the URL, and image.ca_files for a private CA",
                ),
            });
        }
    }
    checks
}
