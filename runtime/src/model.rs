//! Domain types: what the runtime knows of pods and containers, independent of gRPC.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Nanoseconds since the Unix epoch, as CRI timestamps are.
pub fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodMetadata {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// The network a pod asked for. darwin-cri always runs pods on the host's network (macOS has no
/// network namespaces); the requested mode is remembered because kubelet compares it with the pod
/// spec and recreates a sandbox whose reported mode differs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkMode {
    #[default]
    Pod,
    Node,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSpec {
    pub metadata: PodMetadata,
    pub hostname: String,
    pub log_directory: String,
    pub dns: Option<DnsConfig>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub runtime_handler: String,
    pub network: NetworkMode,
    /// The pod's runAsUser and runAsGroup: what a darwin kubelet sends (in the pod's Linux
    /// section; containers get no Linux section from it), the default of its containers.
    #[serde(default)]
    pub run_as_user: Option<i64>,
    #[serde(default)]
    pub run_as_group: Option<i64>,
    /// Ports kubelet asks the node to serve for the pod (hostPort).
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
}

/// The transport of a port mapping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// A hostPort: the node's `host_port` (on `host_ip`, or every address when empty) serves the
/// container's `container_port`. Pods share the node's network, so a container's port already
/// is a node port; only a host port that differs needs a forwarder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub container_port: u16,
    pub host_port: u16,
    pub host_ip: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodState {
    Ready,
    NotReady,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    pub id: String,
    pub spec: PodSpec,
    pub state: PodState,
    pub created_at: i64,
    pub dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    /// Absent in records written before propagation was honoured: private, as it was.
    #[serde(default)]
    pub propagation: platform::Propagation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMetadata {
    pub name: String,
    pub attempt: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub metadata: Option<ContainerMetadata>,
    /// The image as kubelet names it (an id or a reference).
    pub image: String,
    /// The image as the pod spec names it (kubelet's user_specified_image), for status.
    #[serde(default)]
    pub user_specified_image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: String,
    pub envs: Vec<(String, String)>,
    pub mounts: Vec<MountSpec>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Relative to the pod's log directory.
    pub log_path: String,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_username: String,
    pub supplemental_groups: Vec<i64>,
    /// supplementalGroupsPolicy Strict: only the groups named in the request, not the image's
    /// /etc/group memberships of the user.
    #[serde(default)]
    pub supplemental_groups_strict: bool,
    /// CPU and memory from kubelet's LinuxContainerResources (a Linux kubelet only).
    #[serde(default)]
    pub linux_resources: Option<crate::limits::LinuxResources>,
    /// What the request says of the container's security.
    #[serde(default)]
    pub security: SecuritySpec,
}

/// The security context of a container request, as far as darwin-cri honours it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecuritySpec {
    /// The request came with a `linux` section (a Linux kubelet); a darwin kubelet sends none,
    /// so runAsUser and privileged never reach darwin-cri from it.
    pub from_linux_kubelet: bool,
    /// Not confined, and may run as root.
    pub privileged: bool,
    /// Writes in the root fail; volumes stay as mounted.
    pub readonly_rootfs: bool,
    /// setuid and setgid bits and file capabilities grant nothing at exec.
    pub no_new_privs: bool,
    /// Capability names (as CRI sends them: "NET_ADMIN", "CAP_SYS_TIME", "ALL") added to and
    /// dropped from the default set.
    pub add_capabilities: Vec<String>,
    pub drop_capabilities: Vec<String>,
    /// Paths in the container made unreadable, and read-only.
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub seccomp: SeccompProfile,
}

/// The seccomp profile a request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompProfile {
    /// The host-global calls only (what namespaces keep from the host under containerd).
    #[default]
    Unconfined,
    /// Those and the calls Docker's default profile refuses.
    RuntimeDefault,
    /// A profile file (Docker's JSON format) on the node, applied beside the host-global one.
    Localhost(PathBuf),
}

/// The process a container runs, fully resolved at create time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub rootfs: PathBuf,
    /// The CRI log file, absolute; `None` discards output.
    pub log_path: Option<PathBuf>,
    /// The pod's log directory, which `log_path` lies beneath: the monitor opens the file
    /// beneath it without following links ([`crate::logs::open_log_file`]). `None` in specs
    /// written before the field: `log_path`'s parent.
    #[serde(default)]
    pub log_directory: Option<PathBuf>,
    /// Lines longer than this are split into partial (`P`) records.
    pub max_log_line: usize,
    /// The container's stdio is a pty (output to the log as stdout).
    pub tty: bool,
    /// The container's stdin is held open by the monitor for attach clients; otherwise it is
    /// /dev/null.
    #[serde(default)]
    pub stdin: bool,
    /// The container's stdin closes when the first attach client's stdin ends.
    #[serde(default)]
    pub stdin_once: bool,
    pub stop_signal: String,
    /// What the monitor enforces over the container's process tree.
    #[serde(default)]
    pub limits: crate::limits::Limits,
    /// How often the monitor measures the tree against the memory limit.
    #[serde(default)]
    pub limit_interval_ms: u64,
    /// The monitor's control socket (log reopening, limit updates).
    #[serde(default)]
    pub control_socket: PathBuf,
    /// What the container's processes may do; `None`: not confined (privileged, or the
    /// unconfined runtime handler).
    #[serde(default)]
    pub confinement: Option<platform::Confinement>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub pod_id: String,
    pub name: String,
    pub attempt: u32,
    pub spec: ContainerSpec,
    pub image_id: String,
    pub image_ref: String,
    /// The image's first name (repo tag) when the container was created, for status.
    #[serde(default)]
    pub image_name: String,
    pub process: ProcessSpec,
    pub dir: PathBuf,
    /// Host paths of the mounts made inside the rootfs, in the order they were made.
    pub mounted: Vec<PathBuf>,
    pub state: ContainerState,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub pid: i32,
    pub monitor_pid: i32,
    pub monitor_start_time: u64,
    /// The control protocol of the monitor (see [`crate::monitor::PROTOCOL`]); 0 before the
    /// start, or where the record predates the field.
    #[serde(default)]
    pub monitor_protocol: u32,
    /// Start time of the container process, to tell it from a process that reuses its pid.
    #[serde(default)]
    pub pid_start_time: u64,
    /// CPU time of the whole tree, as the monitor counted it when the container ended.
    #[serde(default)]
    pub final_cpu_ns: u64,
}

impl ProcessSpec {
    /// The log as the monitor opens it: (the directory it must stay beneath, the file).
    pub fn log_target(&self) -> Option<(&Path, &Path)> {
        let path = self.log_path.as_deref()?;
        let dir = self.log_directory.as_deref().or_else(|| path.parent())?;
        Some((dir, path))
    }
}

impl Container {
    pub fn log_path(&self) -> String {
        self.process
            .log_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }
}

/// What `image commit` needs of a container, kept in its directory (`origin.json`) so that the
/// command works with or without the server running: the image its root was made from, and the
/// paths the runtime put there or mounted over (relative to the root), which are not the
/// container's own changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerOrigin {
    pub container_id: String,
    pub image_id: String,
    pub rootfs: PathBuf,
    /// The overlay's upper directory where the root is layered; `None` for a clone or copy.
    pub upper: Option<PathBuf>,
    pub runtime_paths: Vec<PathBuf>,
    /// Entries the runtime made where the image had nothing (the macOS layout of
    /// [`crate::jail`]): left out themselves, but what the container put below them is kept.
    #[serde(default)]
    pub runtime_entries: Vec<PathBuf>,
}

impl ContainerOrigin {
    /// The container's root, for a diff against its image (`image commit`).
    pub fn changed_root(&self) -> ChangedRoot {
        ChangedRoot {
            rootfs: self.rootfs.clone(),
            upper: self.upper.clone(),
            runtime_paths: self.runtime_paths.clone(),
            runtime_entries: self.runtime_entries.clone(),
        }
    }
}

/// A root and what in it is the runtime's rather than its process's, for a diff against the
/// image it was made from: a build step's ([`crate::step::StepRoot::changed`]) or a container's
/// ([`ContainerOrigin::changed_root`]). image-builder's `diff::root_changes` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedRoot {
    /// The root as the process saw it.
    pub rootfs: PathBuf,
    /// The overlay's upper directory where the root is layered; `None` for a clone or copy.
    pub upper: Option<PathBuf>,
    /// Paths whose whole subtree is the runtime's (/dev, /proc, hosts, mounts).
    pub runtime_paths: Vec<PathBuf>,
    /// Entries the runtime made where the image had nothing: left out themselves, what the
    /// process put below them kept.
    pub runtime_entries: Vec<PathBuf>,
}

/// The file in a container's directory holding its [`ContainerOrigin`].
pub const ORIGIN_FILE: &str = "origin.json";
