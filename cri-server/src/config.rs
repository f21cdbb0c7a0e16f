//! Configuration: an optional TOML file over embedded defaults, then command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// The default configuration file, with comments; every key in it is a default.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub socket: PathBuf,
    /// The group of the CRI socket (a name or a number); "": root's (the socket is 0660).
    #[serde(default)]
    pub socket_group: String,
    pub root: PathBuf,
    pub state_dir: PathBuf,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub image: ImageConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub streaming: StreamingConfig,
    #[serde(default)]
    pub mounts: MountsConfig,
    #[serde(default)]
    pub node: NodeConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MountsConfig {
    pub mechanism: MountMechanismName,
    pub bindfs_path: PathBuf,
    pub bindfs_options: Vec<String>,
    pub allowed_host_paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountMechanismName {
    Auto,
    Bind,
    Bindfs,
}

impl Default for MountsConfig {
    fn default() -> Self {
        MountsConfig {
            mechanism: MountMechanismName::Auto,
            bindfs_path: "bindfs".into(),
            bindfs_options: Vec::new(),
            allowed_host_paths: Vec::new(),
        }
    }
}

impl MountsConfig {
    pub fn policy(&self) -> runtime::mounts::MountPolicy {
        use runtime::mounts::{MountMechanism, MountPolicy};
        let bindfs = MountMechanism::Bindfs {
            program: self.bindfs_path.clone(),
            options: self.bindfs_options.clone(),
        };
        let mechanism = match self.mechanism {
            MountMechanismName::Bind => MountMechanism::Bind,
            MountMechanismName::Bindfs => bindfs,
            MountMechanismName::Auto => match MountMechanism::native() {
                MountMechanism::Bind => MountMechanism::Bind,
                MountMechanism::Bindfs { .. } => bindfs,
            },
        };
        MountPolicy {
            mechanism,
            allowed_host_paths: self.allowed_host_paths.clone(),
            own_paths: Vec::new(),
        }
    }
}

/// What `darwin-cri node-report` tells the cluster about this Mac.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub report: bool,
    pub build_slots: u32,
    pub name: String,
    pub kubeconfig: PathBuf,
    pub applications_dir: PathBuf,
    pub xcode_select_link: PathBuf,
    pub simulator_runtimes_dir: PathBuf,
    pub report_interval_seconds: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            report: false,
            build_slots: 2,
            name: String::new(),
            kubeconfig: "/etc/kubernetes/kubelet.conf".into(),
            applications_dir: "/Applications".into(),
            xcode_select_link: "/var/db/xcode_select_link".into(),
            simulator_runtimes_dir: "/Library/Developer/CoreSimulator/Volumes".into(),
            report_interval_seconds: 300,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingConfig {
    pub address: String,
    pub port: u16,
    pub token_ttl_seconds: u64,
    pub idle_timeout_seconds: u64,
    pub stream_creation_timeout_seconds: u64,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            address: "127.0.0.1".into(),
            port: 0,
            token_ttl_seconds: 60,
            idle_timeout_seconds: 4 * 3600,
            stream_creation_timeout_seconds: 30,
        }
    }
}

impl StreamingConfig {
    pub fn options(&self) -> anyhow::Result<crate::streaming::Options> {
        let ip: std::net::IpAddr = self
            .address
            .parse()
            .with_context(|| format!("streaming.address {:?}", self.address))?;
        let secs = |s: u64| std::time::Duration::from_secs(s.max(1));
        Ok(crate::streaming::Options {
            address: std::net::SocketAddr::new(ip, self.port),
            token_ttl: secs(self.token_ttl_seconds),
            idle_timeout: secs(self.idle_timeout_seconds),
            stream_creation_timeout: secs(self.stream_creation_timeout_seconds),
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    pub file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    pub strict_pod_network: bool,
    pub node_ip: String,
    pub max_log_line_bytes: usize,
    pub runtime_handlers: Vec<String>,
    pub start_timeout_seconds: u64,
    pub kill_timeout_seconds: u64,
    pub rootfs: RootfsMode,
    pub limit_check_interval_ms: u64,
    pub event_buffer: usize,
    pub stats_interval_ms: u64,
    pub mdns_socket: String,
    pub cluster_dns_resolver_dir: String,
    pub cluster_domain: String,
    pub cluster_dns_servers: Vec<String>,
    pub allow_root: bool,
    pub allow_root_namespaces: Vec<String>,
    pub seatbelt_mach_services: Vec<String>,
    pub allowed_capabilities: Vec<String>,
    pub landlock_best_effort: bool,
    pub waiting_monitors: usize,
    pub root_pool: RootPoolConfig,
}

/// `[runtime.root_pool]`: roots made ahead for big images where roots are copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RootPoolConfig {
    pub size: usize,
    pub min_files: u64,
    pub max_mib: u64,
}

impl Default for RootPoolConfig {
    fn default() -> Self {
        RootPoolConfig {
            size: 1,
            min_files: 10_000,
            max_mib: 40 * 1024,
        }
    }
}

impl RootPoolConfig {
    /// The runtime's pool settings.
    pub fn options(&self) -> runtime::pool::PoolOptions {
        runtime::pool::PoolOptions {
            size: self.size,
            min_files: self.min_files,
            max_bytes: self.max_mib.saturating_mul(1 << 20),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootfsMode {
    Auto,
    Copy,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageConfig {
    pub platform: String,
    pub max_concurrent_downloads: usize,
    pub ca_files: Vec<PathBuf>,
    pub docker_config: String,
    pub request_attempts: u32,
    pub registries: BTreeMap<String, RegistryHostConfig>,
    pub keep_setuid: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryHostConfig {
    pub mirrors: Vec<String>,
    pub insecure: bool,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            platform: String::new(),
            max_concurrent_downloads: 3,
            ca_files: Vec::new(),
            docker_config: String::new(),
            request_attempts: 4,
            registries: BTreeMap::new(),
            keep_setuid: Vec::new(),
        }
    }
}

impl ImageConfig {
    /// The registry client's settings.
    pub fn registry(&self) -> image_service::registry::RegistryConfig {
        use image_service::registry::{DockerConfig, HostConfig, RegistryConfig};
        RegistryConfig {
            hosts: self
                .registries
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        HostConfig {
                            mirrors: v.mirrors.clone(),
                            insecure: v.insecure,
                        },
                    )
                })
                .collect(),
            ca_files: self.ca_files.clone(),
            docker_config: if self.docker_config.is_empty() {
                DockerConfig::default_path()
            } else {
                Some(PathBuf::from(&self.docker_config))
            },
            attempts: self.request_attempts.max(1),
            ..RegistryConfig::default()
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
            file: PathBuf::new(),
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            strict_pod_network: false,
            node_ip: String::new(),
            max_log_line_bytes: 16 * 1024,
            runtime_handlers: vec!["darwin".into(), runtime::UNCONFINED_HANDLER.into()],
            start_timeout_seconds: 10,
            kill_timeout_seconds: 10,
            rootfs: RootfsMode::Auto,
            limit_check_interval_ms: 250,
            event_buffer: 1024,
            stats_interval_ms: 1000,
            mdns_socket: String::new(),
            cluster_dns_resolver_dir: String::new(),
            cluster_domain: "cluster.local".into(),
            cluster_dns_servers: Vec::new(),
            allow_root: false,
            allow_root_namespaces: Vec::new(),
            seatbelt_mach_services: runtime::confinement::DEFAULT_MACH_SERVICES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            allowed_capabilities: Vec::new(),
            landlock_best_effort: false,
            waiting_monitors: 2,
            root_pool: RootPoolConfig::default(),
        }
    }
}

impl RuntimeConfig {
    /// Where cluster domains' resolver files go: "" is the OS's (macOS only), "none" nowhere.
    pub fn resolver_dir(&self) -> Option<PathBuf> {
        match self.cluster_dns_resolver_dir.as_str() {
            "none" => None,
            "" => platform::RESOLVER_DIR.map(PathBuf::from),
            path => Some(path.into()),
        }
    }

    /// The host socket relayed into container roots: "" is the OS's (macOS only), "none" none.
    pub fn mdns_socket(&self) -> Option<PathBuf> {
        match self.mdns_socket.as_str() {
            "none" => None,
            "" if platform::OS == platform::Os::MacOs => {
                Some(runtime::dns_proxy::MDNS_SOCKET.into())
            }
            "" => None,
            path => Some(path.into()),
        }
    }
}

impl Config {
    /// The CRI socket's group id, from `socket_group` (a group name or a number).
    pub fn socket_gid(&self) -> anyhow::Result<Option<u32>> {
        let g = self.socket_group.trim();
        if g.is_empty() {
            return Ok(None);
        }
        if let Ok(gid) = g.parse::<u32>() {
            return Ok(Some(gid));
        }
        match nix::unistd::Group::from_name(g) {
            Ok(Some(group)) => Ok(Some(group.gid.as_raw())),
            Ok(None) => anyhow::bail!(
                "socket_group {g:?} is no group of this host; give an existing group's name or id"
            ),
            Err(e) => anyhow::bail!("looking up socket_group {g:?}: {e}"),
        }
    }

    /// The embedded defaults, overlaid with the file at `path` if one is given. Keys the file
    /// leaves out keep their defaults, sections included.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let mut merged: toml::Table =
            toml::from_str(DEFAULT_TOML).context("the embedded default configuration")?;
        if let Some(path) = path {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let user: toml::Table =
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            overlay(&mut merged, user);
        }
        toml::Value::Table(merged)
            .try_into()
            .with_context(|| match path {
                Some(p) => format!("invalid configuration in {}", p.display()),
                None => "invalid embedded configuration".into(),
            })
    }
}

fn overlay(base: &mut toml::Table, top: toml::Table) {
    for (k, v) in top {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => overlay(b, t),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_file_equals_the_code_defaults() {
        let c = Config::load(None).expect("defaults load");
        assert_eq!(
            c.socket,
            PathBuf::from("/var/run/darwin-cri/darwin-cri.sock")
        );
        assert_eq!(c.socket_group, "");
        assert_eq!(c.log, LogConfig::default());
        assert_eq!(c.runtime, RuntimeConfig::default());
        assert_eq!(c.image, ImageConfig::default());
        assert_eq!(c.metrics, MetricsConfig::default());
        assert_eq!(c.streaming, StreamingConfig::default());
        assert_eq!(c.mounts, MountsConfig::default());
        assert_eq!(c.node, NodeConfig::default());
    }

    #[test]
    fn a_file_overrides_single_keys_and_rejects_unknown_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "root = \"/r\"\n[runtime]\nstrict_pod_network = true\n").expect("write");
        let c = Config::load(Some(&p)).expect("loads");
        assert_eq!(c.root, PathBuf::from("/r"));
        assert!(c.runtime.strict_pod_network);
        assert_eq!(c.runtime.max_log_line_bytes, 16384);
        std::fs::write(&p, "[runtime]\nstrict_pod_netwrk = true\n").expect("write");
        let err = format!("{:#}", Config::load(Some(&p)).expect_err("typo refused"));
        assert!(err.contains("strict_pod_netwrk"), "{err}");
    }
}
