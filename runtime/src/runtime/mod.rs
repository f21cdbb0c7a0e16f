//! The runtime proper: pod sandboxes and containers, their state machines, and recovery.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use image_service::safe_path::resolve_in_root;
use image_service::{Image, ImageStore};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::sync::watch;

use crate::error::IoContext;
use crate::fsutil::{clean_in_root, remove_tree, write_atomic};
use crate::model::*;
use crate::monitor::{self, Handshake};

use crate::store::Store;
use crate::user::{self, UserRequest};
use crate::{Error, Result};

mod containers;
mod create;
mod dns_relay;
mod events;
mod health;
mod pods;
mod process_spec;
mod recovery;
mod resources;
mod sessions;

use containers::mark_running;
pub(crate) use create::prepare_root;
pub use health::{Health, Problem, ROOT_FULL_BYTES};
pub(crate) use process_spec::DEFAULT_PATH;
use process_spec::{merge_command, set_env, signal_by_name};
pub use sessions::{ExecOutput, not_running_message};

/// Settings of the runtime, from the server's configuration.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Persistent state: the metadata store, pods and their containers' roots.
    pub root: PathBuf,
    /// What each container's monitor runs: `darwin-cri-monitor` beside the server.
    pub monitor: monitor::MonitorProgram,
    /// Monitors kept started ahead, waiting for a container (see [`monitor::Waiting`]).
    pub waiting_monitors: usize,
    /// Refuse pods that ask for a network of their own instead of running them on the host's.
    pub strict_pod_network: bool,
    /// The address pods report; detected from the host's interfaces when `None`.
    pub node_ip: Option<IpAddr>,
    /// Longest log line written as one record.
    pub max_log_line: usize,
    /// Runtime handler names served besides the default ("").
    pub runtime_handlers: Vec<String>,
    /// How long a monitor may take to report that the container process started.
    pub start_timeout: Duration,
    /// How long StopContainer waits for the process tree to die after SIGKILL.
    pub kill_timeout: Duration,
    /// Copy every container root instead of layering it over the image (overlayfs on Linux).
    pub copy_rootfs: bool,
    /// Roots made ahead for images whose roots are copies (see [`crate::pool`]).
    pub root_pool: crate::pool::PoolOptions,
    /// Runtime state (monitor control sockets); short, since unix socket paths are limited to
    /// 104 bytes on macOS.
    pub state_dir: PathBuf,
    /// How often monitors measure memory against a limit.
    pub limit_interval: Duration,
    /// Events a GetContainerEvents subscriber may have pending before it is dropped.
    pub event_buffer: usize,
    /// How long one statistics sample serves every caller.
    pub stats_interval: Duration,
    /// Which host paths kubelet's mounts may come from, and how they are made.
    pub mounts: crate::mounts::MountPolicy,
    /// The host's mDNSResponder socket, relayed into every running container's root (see
    /// [`crate::dns_proxy`]); `None` relays nothing.
    pub mdns_socket: Option<PathBuf>,
    /// Where cluster domains' resolver(5) files are written (see [`crate::cluster_dns`]).
    pub resolver_dir: Option<PathBuf>,
    /// The cluster's DNS domain (kubelet's clusterDomain): the only one sent to the resolver
    /// directory.
    pub cluster_domain: String,
    /// The cluster's DNS servers (kubelet's clusterDNS); empty: those of the first ClusterFirst
    /// pod.
    pub cluster_dns_servers: Vec<String>,
    /// Let every container run as root (uid 0); otherwise only privileged ones and those of
    /// `allow_root_namespaces`.
    pub allow_root: bool,
    /// Namespaces whose pods may run containers as root.
    pub allow_root_namespaces: Vec<String>,
    /// Mach services a confined container may look up (macOS).
    pub seatbelt_mach_services: Vec<String>,
    /// Capabilities a non-privileged container may add beyond the default set ("ALL": any).
    pub allowed_capabilities: Vec<String>,
    /// Start confined containers with what the kernel's Landlock has when it lacks part of the
    /// policy (the Linux twin); otherwise they are refused.
    pub landlock_best_effort: bool,
}

/// What happened to a container, for GetContainerEvents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

#[derive(Debug, Clone)]
pub struct ContainerEvent {
    pub container_id: String,
    pub pod_id: String,
    pub kind: EventKind,
    pub created_at: i64,
    /// The pod and all its containers as they were when the event happened (kubelet's evented
    /// PLEG reads the statuses from the event: a container removed right after it stopped must
    /// still be in its Stopped event). Shared by every subscriber.
    pub pod: Option<Arc<Pod>>,
    pub containers: Arc<Vec<Container>>,
}

/// Pods and containers. Shared behind an `Arc` by every RPC handler.
#[derive(Debug)]
pub struct Runtime {
    opts: RuntimeOptions,
    images: Arc<ImageStore>,
    store: Store,
    node_ip: String,
    pods: RwLock<HashMap<String, Pod>>,
    containers: RwLock<HashMap<String, Container>>,
    /// Names in use or being created: pod "name_namespace_uid_attempt", container
    /// "pod/name/attempt". kubelet relies on AlreadyExists for a name taken twice.
    names: Mutex<HashSet<String>>,
    /// Set to true when a running container has exited.
    exits: Mutex<HashMap<String, watch::Receiver<bool>>>,
    /// GetContainerEvents subscribers, each with a bounded queue.
    subscribers: Mutex<Vec<tokio::sync::mpsc::Sender<ContainerEvent>>>,
    /// Containers whose StartContainer is under way: a second start or a removal waits its turn.
    starting: Mutex<HashSet<String>>,
    /// The mDNSResponder relay of each running container.
    dns_proxies: Mutex<HashMap<String, crate::dns_proxy::DnsProxy>>,
    /// The forwarders of ready pods' host ports.
    host_ports: crate::host_ports::HostPorts,
    /// The host resolver's files for ready pods' cluster domains.
    cluster_dns: crate::cluster_dns::ClusterDns,
    /// The shared statistics sample.
    sampler: Arc<Mutex<crate::stats::Sampler>>,
    /// Callers wait here for one sample instead of each walking the process table.
    sample_gate: tokio::sync::Mutex<()>,
    /// Containers killed for their memory limit, and monitors that died without an exit record.
    oom_kills: std::sync::atomic::AtomicU64,
    monitor_deaths: std::sync::atomic::AtomicU64,
    /// Why the last monitor could not be started; `None` once one was (see [`Runtime::health`]).
    monitor_start_error: Mutex<Option<String>>,
    /// The pod CIDR kubelet sent in UpdateRuntimeConfig.
    pod_cidr: Mutex<String>,
    /// Removed containers' and pods' directories, deleted after the reply.
    trash: Arc<crate::trash::Trash>,
    /// Roots made ahead for big images.
    pool: crate::pool::RootPool,
    /// Monitors started ahead, and how others are started.
    monitors: monitor::Waiting,
}

/// Marks a container as starting for as long as it lives.
struct Starting<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.id);
        }
    }
}

fn new_id() -> String {
    let mut bytes = [0u8; 32];
    // getrandom only fails when the OS has no entropy source at all; fall back to time and pid.
    if getrandom::fill(&mut bytes).is_err() {
        let seed = format!("{}{}", now_nanos(), std::process::id());
        bytes[..seed.len().min(32)].copy_from_slice(&seed.as_bytes()[..seed.len().min(32)]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn pod_key(m: &PodMetadata) -> String {
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

fn container_key(pod_id: &str, name: &str, attempt: u32) -> String {
    format!("{pod_id}/{name}/{attempt}")
}

/// The first non-loopback IPv4 address of an interface that is up, else IPv6, else loopback.
pub fn detect_node_ip() -> IpAddr {
    let mut v6 = None;
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            if !a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP)
                || a.flags
                    .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK)
            {
                continue;
            }
            let Some(addr) = a.address else { continue };
            if let Some(v4) = addr.as_sockaddr_in() {
                return IpAddr::V4(v4.ip());
            }
            if let Some(s6) = addr.as_sockaddr_in6() {
                let ip = s6.ip();
                if v6.is_none() && (ip.segments()[0] & 0xffc0) != 0xfe80 {
                    v6 = Some(IpAddr::V6(ip));
                }
            }
        }
    }
    v6.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

fn matches_id(id: &str, query: &str) -> bool {
    !query.is_empty() && id.starts_with(query)
}

impl Runtime {
    /// Opens the store under `opts.root` and loads every pod and container. Call
    /// [`Runtime::recover`] from inside the async runtime before serving.
    pub fn open(opts: RuntimeOptions, images: Arc<ImageStore>) -> Result<Arc<Runtime>> {
        std::fs::create_dir_all(opts.root.join("pods")).at("creating", &opts.root)?;
        let store = Store::open(&opts.root.join("metadata.redb"))?;
        let trash =
            Arc::new(crate::trash::Trash::new(&opts.root).at("creating the trash in", &opts.root)?);
        let pool = crate::pool::RootPool::new(
            &opts.root,
            opts.root_pool,
            Arc::clone(&images),
            Arc::clone(&trash),
        );
        let node_ip = opts.node_ip.unwrap_or_else(detect_node_ip).to_string();
        let mut names = HashSet::new();
        let pods: HashMap<String, Pod> = store
            .pods()?
            .into_iter()
            .inspect(|p| {
                names.insert(pod_key(&p.spec.metadata));
            })
            .map(|p| (p.id.clone(), p))
            .collect();
        let containers: HashMap<String, Container> = store
            .containers()?
            .into_iter()
            .inspect(|c| {
                names.insert(container_key(&c.pod_id, &c.name, c.attempt));
            })
            .map(|c| (c.id.clone(), c))
            .collect();
        let cluster_dns = crate::cluster_dns::ClusterDns::new(
            opts.resolver_dir.clone(),
            &opts.cluster_domain,
            opts.cluster_dns_servers.clone(),
        );
        let monitors = monitor::Waiting::new(opts.monitor.clone(), opts.waiting_monitors);
        Ok(Arc::new(Runtime {
            opts,
            images,
            store,
            node_ip,
            pods: RwLock::new(pods),
            containers: RwLock::new(containers),
            names: Mutex::new(names),
            exits: Mutex::new(HashMap::new()),
            subscribers: Mutex::new(Vec::new()),
            starting: Mutex::new(HashSet::new()),
            dns_proxies: Mutex::new(HashMap::new()),
            host_ports: crate::host_ports::HostPorts::default(),
            cluster_dns,
            sampler: Arc::new(Mutex::new(crate::stats::Sampler::default())),
            sample_gate: tokio::sync::Mutex::new(()),
            oom_kills: std::sync::atomic::AtomicU64::new(0),
            monitor_deaths: std::sync::atomic::AtomicU64::new(0),
            monitor_start_error: Mutex::new(None),
            pod_cidr: Mutex::new(String::new()),
            trash,
            pool,
            monitors,
        }))
    }

    pub fn images(&self) -> &Arc<ImageStore> {
        &self.images
    }

    pub fn node_ip(&self) -> &str {
        &self.node_ip
    }

    pub fn root(&self) -> &Path {
        &self.opts.root
    }

    /// Whether containers' roots are copies of their images (the pool's domain), not layers.
    pub(super) fn roots_are_copies(&self) -> bool {
        self.opts.copy_rootfs || !platform::LAYERED_ROOTS
    }

    /// An image was pulled: roots of it are made ahead where roots are copies.
    pub fn image_pulled(&self, image_id: &str) {
        if self.roots_are_copies() {
            self.pool.fill(image_id);
        }
    }

    /// Images were removed: their root pools go.
    pub fn images_removed(&self) {
        self.pool.prune();
    }

    /// What the root pools hold now.
    pub fn pool_usage(&self) -> crate::pool::PoolUsage {
        crate::pool::usage(&self.opts.root)
    }

    /// The pids of the monitors started ahead and waiting now.
    pub fn waiting_monitor_pids(&self) -> Vec<u32> {
        self.monitors.pids()
    }

    pub fn runtime_handlers(&self) -> &[String] {
        &self.opts.runtime_handlers
    }

    pub(super) fn reserve(&self, key: String, what: &str) -> Result<()> {
        let mut names = self
            .names
            .lock()
            .map_err(|_| Error::Internal("name table poisoned".into()))?;
        if !names.insert(key.clone()) {
            return Err(Error::AlreadyExists(format!(
                "{what} name {key:?} is already in use"
            )));
        }
        Ok(())
    }

    pub(super) fn release(&self, key: &str) {
        if let Ok(mut names) = self.names.lock() {
            names.remove(key);
        }
    }

    pub(super) fn read_pods(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Pod>> {
        self.pods.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn write_pods(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Pod>> {
        self.pods.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn read_containers(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<String, Container>> {
        self.containers.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn write_containers(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Container>> {
        self.containers.write().unwrap_or_else(|p| p.into_inner())
    }
}
