//! The runtime proper: pod sandboxes and containers, their state machines, and recovery.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
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

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Output ExecSync keeps per stream; more is read and dropped. kubelet's CRI client accepts
/// messages up to 16 MiB, so both streams together stay below that.
const EXEC_OUTPUT_LIMIT: usize = 7 << 20;
/// How often a monitor that this server did not start (it survived a restart) is checked.
const ADOPTED_MONITOR_POLL: Duration = Duration::from_millis(100);
/// The pod's termination grace period, which kubelet records on every container.
const GRACE_ANNOTATION: &str = "io.kubernetes.pod.terminationGracePeriod";
/// StopPodSandbox gives what still runs at most this long: kubelet has already spent the grace
/// period in StopContainer, and must get an answer within its runtime request timeout.
const POD_STOP_GRACE_CAP_SECS: i64 = 30;

/// Settings of the runtime, from the server's configuration.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Persistent state: the metadata store, pods and their containers' roots.
    pub root: PathBuf,
    /// The `darwin-cri` executable that is re-executed as each container's monitor.
    pub monitor_exe: PathBuf,
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
}

/// What CreateContainer decided before touching the disk.
#[derive(Debug)]
struct Plan {
    id: String,
    dir: PathBuf,
    log_path: Option<PathBuf>,
    limits: crate::limits::Limits,
    /// The resolved host path of each of the spec's mounts, in order.
    sources: Vec<PathBuf>,
}

/// What ExecSync returns.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// What every root of an image gets before its container's own files: /dev, the jail layout
/// (see [`crate::jail`]) with the user's home, a world-writable /tmp, and /etc.
fn prepare_root(rootfs: &Path, user: &user::ResolvedUser) -> Result<()> {
    let inside = |p: &str| {
        resolve_in_root(rootfs, Path::new(p)).at("resolving in the container root", Path::new(p))
    };
    crate::devices::populate_dev(&inside("/dev")?).at("creating devices in", rootfs)?;
    crate::jail::prepare(rootfs, user.uid, user.gid, &user.home)?;
    let tmp = inside("/tmp")?;
    std::fs::create_dir_all(&tmp).at("creating", &tmp)?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
        .at("chmod", &tmp)?;
    std::fs::create_dir_all(inside("/etc")?).at("creating /etc in", rootfs)?;
    Ok(())
}

/// FNV-1a: a stable name for a prepared layer's inputs (not a security boundary: the inputs
/// are the runtime's own).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
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
    /// The shared statistics sample.
    sampler: Arc<Mutex<crate::stats::Sampler>>,
    /// Callers wait here for one sample instead of each walking the process table.
    sample_gate: tokio::sync::Mutex<()>,
    /// Containers killed for their memory limit, and monitors that died without an exit record.
    oom_kills: std::sync::atomic::AtomicU64,
    monitor_deaths: std::sync::atomic::AtomicU64,
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

/// Records what the monitor reported at start.
fn mark_running(c: &mut Container, s: &monitor::Started) {
    c.state = ContainerState::Running;
    c.pid = s.pid;
    c.pid_start_time = s.start_time;
    c.started_at = s.started_at;
    c.monitor_pid = s.monitor_pid;
    c.monitor_start_time = s.monitor_start_time;
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

/// containerd's rule: a command replaces the image's entrypoint and cmd; args alone replace
/// the cmd; neither means entrypoint + cmd.
pub fn merge_command(
    image: &image_service::ImageConfig,
    command: &[String],
    args: &[String],
) -> Result<Vec<String>> {
    let mut cmd = command.to_vec();
    let mut args = args.to_vec();
    if cmd.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone();
        }
        if !(image.entrypoint.len() == 1 && image.entrypoint[0].is_empty()) {
            cmd = image.entrypoint.clone();
        }
    }
    cmd.extend(args);
    if cmd.is_empty() {
        return Err(Error::InvalidArgument(
            "no command specified: the container config and the image give none".into(),
        ));
    }
    Ok(cmd)
}

/// Sets `KEY=VALUE` in `env`, replacing an earlier value of the same key in place.
fn set_env(env: &mut Vec<String>, kv: String) {
    let key = kv
        .split_once('=')
        .map(|(k, _)| k)
        .unwrap_or(&kv)
        .to_string();
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map(|(k, _)| k).unwrap_or(e) == key)
    {
        Some(slot) => *slot = kv,
        None => env.push(kv),
    }
}

fn resolv_conf(dns: Option<&DnsConfig>) -> String {
    match dns {
        Some(d) if !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()) => {
            let mut out = String::new();
            if !d.searches.is_empty() {
                out.push_str(&format!("search {}\n", d.searches.join(" ")));
            }
            for s in &d.servers {
                out.push_str(&format!("nameserver {s}\n"));
            }
            if !d.options.is_empty() {
                out.push_str(&format!("options {}\n", d.options.join(" ")));
            }
            out
        }
        _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    }
}

fn signal_by_name(name: &str) -> Signal {
    let upper = name.trim().to_ascii_uppercase();
    if upper.is_empty() {
        return Signal::SIGTERM;
    }
    if let Ok(n) = upper.parse::<i32>() {
        return Signal::try_from(n).unwrap_or(Signal::SIGTERM);
    }
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().unwrap_or(Signal::SIGTERM)
}

impl Runtime {
    /// Opens the store under `opts.root` and loads every pod and container. Call
    /// [`Runtime::recover`] from inside the async runtime before serving.
    pub fn open(opts: RuntimeOptions, images: Arc<ImageStore>) -> Result<Arc<Runtime>> {
        std::fs::create_dir_all(opts.root.join("pods")).at("creating", &opts.root)?;
        let store = Store::open(&opts.root.join("metadata.redb"))?;
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
            sampler: Arc::new(Mutex::new(crate::stats::Sampler::default())),
            sample_gate: tokio::sync::Mutex::new(()),
            oom_kills: std::sync::atomic::AtomicU64::new(0),
            monitor_deaths: std::sync::atomic::AtomicU64::new(0),
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

    pub fn runtime_handlers(&self) -> &[String] {
        &self.opts.runtime_handlers
    }

    fn reserve(&self, key: String, what: &str) -> Result<()> {
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

    fn release(&self, key: &str) {
        if let Ok(mut names) = self.names.lock() {
            names.remove(key);
        }
    }

    fn read_pods(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Pod>> {
        self.pods.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_pods(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Pod>> {
        self.pods.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read_containers(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Container>> {
        self.containers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_containers(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Container>> {
        self.containers.write().unwrap_or_else(|p| p.into_inner())
    }

    // ----- events -----------------------------------------------------------------------------

    /// A new GetContainerEvents subscription. A subscriber that falls `event_buffer` events
    /// behind is dropped (its stream ends) so that it never slows the runtime down.
    pub fn subscribe(&self) -> tokio::sync::mpsc::Receiver<ContainerEvent> {
        let (tx, rx) = tokio::sync::mpsc::channel(self.opts.event_buffer.max(1));
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.push(tx);
        }
        rx
    }

    /// Ends every subscription (the server is shutting down: open streams must end).
    pub fn close_subscribers(&self) {
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.clear();
        }
    }

    /// OOM kills and monitor deaths since the server started.
    pub fn kill_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.oom_kills.load(Relaxed),
            self.monitor_deaths.load(Relaxed),
        )
    }

    pub fn subscriber_count(&self) -> usize {
        self.subscribers.lock().map(|s| s.len()).unwrap_or(0)
    }

    fn emit(&self, container_id: &str, pod_id: &str, kind: EventKind) {
        let event = ContainerEvent {
            container_id: container_id.to_string(),
            pod_id: pod_id.to_string(),
            kind,
            created_at: now_nanos(),
        };
        let Ok(mut subs) = self.subscribers.lock() else {
            return;
        };
        subs.retain(|tx| match tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("a container event subscriber fell behind; dropping it");
                false
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    // ----- pods -------------------------------------------------------------------------------

    pub fn run_pod(&self, spec: PodSpec) -> Result<String> {
        let m = &spec.metadata;
        if m.name.is_empty() || m.namespace.is_empty() || m.uid.is_empty() {
            return Err(Error::InvalidArgument(
                "pod sandbox metadata needs a name, a namespace and a uid".into(),
            ));
        }
        if !spec.runtime_handler.is_empty()
            && !self.opts.runtime_handlers.contains(&spec.runtime_handler)
        {
            return Err(Error::InvalidArgument(format!(
                "runtime handler {:?} is not served here; handlers: \"\" (default), {}",
                spec.runtime_handler,
                self.opts.runtime_handlers.join(", ")
            )));
        }
        if spec.network == NetworkMode::Pod && self.opts.strict_pod_network {
            return Err(Error::InvalidArgument(
                "pod asks for its own network namespace, which macOS cannot give; \
                 set hostNetwork: true, or turn off strict_pod_network to run it on the host's network"
                    .into(),
            ));
        }
        let key = pod_key(m);
        self.reserve(key.clone(), "pod sandbox")?;
        let id = new_id();
        let dir = self.opts.root.join("pods").join(&id);
        let result = self.make_pod_dir(&dir, &spec).and_then(|()| {
            let pod = Pod {
                id: id.clone(),
                spec,
                state: PodState::Ready,
                created_at: now_nanos(),
                dir: dir.clone(),
            };
            self.store.put_pod(&pod)?;
            self.write_pods().insert(id.clone(), pod);
            Ok(())
        });
        if let Err(e) = result {
            let _ = remove_tree(&dir);
            self.release(&key);
            return Err(e);
        }
        Ok(id)
    }

    fn make_pod_dir(&self, dir: &Path, spec: &PodSpec) -> Result<()> {
        std::fs::create_dir_all(dir.join("containers")).at("creating", dir)?;
        let hostname = if spec.hostname.is_empty() {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into())
        } else {
            spec.hostname.clone()
        };
        let hosts = format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{hostname}\n",
            self.node_ip
        );
        for (name, content) in [
            ("hostname", format!("{hostname}\n")),
            ("hosts", hosts),
            ("resolv.conf", resolv_conf(spec.dns.as_ref())),
        ] {
            std::fs::write(dir.join(name), content).at("writing", &dir.join(name))?;
        }
        Ok(())
    }

    fn find_pod(&self, id: &str) -> Option<Pod> {
        let pods = self.read_pods();
        if let Some(p) = pods.get(id) {
            return Some(p.clone());
        }
        let mut found = pods.values().filter(|p| matches_id(&p.id, id));
        match (found.next(), found.next()) {
            (Some(p), None) => Some(p.clone()),
            _ => None,
        }
    }

    pub fn pod(&self, id: &str) -> Result<Pod> {
        self.find_pod(id)
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {id:?} not found")))
    }

    pub fn list_pods(&self) -> Vec<Pod> {
        self.read_pods().values().cloned().collect()
    }

    fn pod_container_ids(&self, pod_id: &str) -> Vec<String> {
        self.read_containers()
            .values()
            .filter(|c| c.pod_id == pod_id)
            .map(|c| c.id.clone())
            .collect()
    }

    pub async fn stop_pod(self: &Arc<Self>, id: &str) -> Result<()> {
        let Some(pod) = self.find_pod(id) else {
            return Ok(());
        };
        // kubelet stops containers with their grace period before it stops the pod; what still
        // runs gets the grace period kubelet recorded on it (else none), all at once, so the
        // whole stop takes the longest grace period, not their sum.
        let mut stops = tokio::task::JoinSet::new();
        for cid in self.pod_container_ids(&pod.id) {
            let grace = self
                .find_container(&cid)
                .and_then(|c| {
                    c.spec
                        .annotations
                        .get(GRACE_ANNOTATION)
                        .and_then(|g| g.parse::<i64>().ok())
                })
                .unwrap_or(0)
                .clamp(0, POD_STOP_GRACE_CAP_SECS);
            let rt = Arc::clone(self);
            stops.spawn(async move { rt.stop_container(&cid, grace).await });
        }
        let mut first_error = None;
        while let Some(done) = stops.join_next().await {
            let result = done
                .map_err(|e| Error::Internal(e.to_string()))
                .and_then(|r| r);
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        // Nothing of a stopped pod stays mounted: container roots and kubelet's volumes.
        let dir = pod.dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            for m in platform::mounts_under(&dir)? {
                platform::unmount(&m)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .at("unmounting below", &pod.dir)?;
        let updated = {
            let mut pods = self.write_pods();
            match pods.get_mut(&pod.id) {
                Some(p) if p.state != PodState::NotReady => {
                    p.state = PodState::NotReady;
                    Some(p.clone())
                }
                _ => None,
            }
        };
        if let Some(p) = updated {
            self.store.put_pod(&p)?;
        }
        Ok(())
    }

    pub async fn remove_pod(self: &Arc<Self>, id: &str) -> Result<()> {
        let Some(pod) = self.find_pod(id) else {
            return Ok(());
        };
        for cid in self.pod_container_ids(&pod.id) {
            self.remove_container(&cid).await?;
        }
        let dir = pod.dir.clone();
        tokio::task::spawn_blocking(move || remove_tree(&dir))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .at("removing", &pod.dir)?;
        self.store.delete_pod(&pod.id)?;
        self.write_pods().remove(&pod.id);
        self.sampler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget_pod(&pod.id);
        self.release(&pod_key(&pod.spec.metadata));
        Ok(())
    }

    // ----- containers -------------------------------------------------------------------------

    /// Marks a container busy (starting or being removed) until the guard is dropped; a second
    /// claim meanwhile is refused.
    fn claim(&self, id: &str) -> Result<Starting<'_>> {
        let newly = self
            .starting
            .lock()
            .map(|mut s| s.insert(id.to_string()))
            .unwrap_or(false);
        if !newly {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is starting or being removed; retry once that has returned"
            )));
        }
        Ok(Starting {
            set: &self.starting,
            id: id.to_string(),
        })
    }

    fn find_container(&self, id: &str) -> Option<Container> {
        let containers = self.read_containers();
        if let Some(c) = containers.get(id) {
            return Some(c.clone());
        }
        let mut found = containers.values().filter(|c| matches_id(&c.id, id));
        match (found.next(), found.next()) {
            (Some(c), None) => Some(c.clone()),
            _ => None,
        }
    }

    pub fn container(&self, id: &str) -> Result<Container> {
        self.find_container(id)
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))
    }

    pub fn list_containers(&self) -> Vec<Container> {
        self.read_containers().values().cloned().collect()
    }

    /// Every container `f` keeps, mapped under the read lock without copying the containers:
    /// kubelet lists all of them every second.
    pub fn map_containers<T>(&self, f: impl FnMut(&Container) -> Option<T>) -> Vec<T> {
        self.read_containers().values().filter_map(f).collect()
    }

    /// The image a container is created from, by id or reference.
    pub fn image_for(&self, reference: &str) -> Result<Image> {
        if reference.is_empty() {
            return Err(Error::InvalidArgument(
                "container config names no image".into(),
            ));
        }
        self.images.resolve(reference)?.ok_or_else(|| {
            Error::NotFound(format!(
                "image {reference:?} not found: import it with `darwin-cri image import` first"
            ))
        })
    }

    pub async fn create_container(
        self: &Arc<Self>,
        pod_id: &str,
        spec: ContainerSpec,
    ) -> Result<String> {
        let pod = self.pod(pod_id)?;
        if pod.state != PodState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready (stopped): no new containers",
                pod.id
            )));
        }
        let meta = spec
            .metadata
            .clone()
            .filter(|m| !m.name.is_empty())
            .ok_or_else(|| Error::InvalidArgument("container metadata needs a name".into()))?;
        let image = self.image_for(&spec.image)?;
        let mut sources = Vec::with_capacity(spec.mounts.len());
        for m in &spec.mounts {
            match clean_in_root(&m.container_path) {
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "mount container path {:?} escapes the container root",
                        m.container_path
                    )));
                }
                Some(p) if p.as_os_str().is_empty() => {
                    return Err(Error::InvalidArgument(format!(
                        "mount container path {:?} would cover the container root",
                        m.container_path
                    )));
                }
                Some(_) => {}
            }
            sources.push(
                self.opts
                    .mounts
                    .resolve_source(&m.host_path, &m.container_path)?,
            );
        }
        let log_path = if spec.log_path.is_empty() || pod.spec.log_directory.is_empty() {
            None
        } else {
            let rel = clean_in_root(&spec.log_path)
                .filter(|p| !p.as_os_str().is_empty())
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "log path {:?} leaves the pod's log directory",
                        spec.log_path
                    ))
                })?;
            Some(Path::new(&pod.spec.log_directory).join(rel))
        };
        let limits = crate::limits::resolve(
            &meta.name,
            spec.linux_resources.as_ref(),
            &spec.annotations,
            &pod.spec.annotations,
        )?;
        let key = container_key(&pod.id, &meta.name, meta.attempt);
        self.reserve(key.clone(), "container")?;
        let id = new_id();
        let dir = pod.dir.join("containers").join(&id);
        let rt = Arc::clone(self);
        let plan = Plan {
            id: id.clone(),
            dir: dir.clone(),
            log_path,
            limits,
            sources,
        };
        let (cpod, cimage) = (pod.clone(), image.clone());
        let built =
            tokio::task::spawn_blocking(move || rt.build_container(&plan, &cpod, spec, &cimage))
                .await
                .map_err(|e| Error::Internal(e.to_string()))
                .and_then(|r| r);
        let result = built.and_then(|c| {
            self.store.put_container(&c)?;
            self.write_containers().insert(id.clone(), c);
            self.emit(&id, &pod.id, EventKind::Created);
            Ok(())
        });
        if let Err(e) = result {
            let _ = tokio::task::spawn_blocking(move || remove_tree(&dir)).await;
            let _ = self.images.release(&id);
            self.release(&key);
            return Err(e);
        }
        Ok(id)
    }

    /// Everything CreateContainer does on disk: the rootfs clone, the pod's files, mounts, and
    /// the process spec. Blocking; the caller removes `dir` if this fails.
    fn build_container(
        &self,
        plan: &Plan,
        pod: &Pod,
        spec: ContainerSpec,
        image: &Image,
    ) -> Result<Container> {
        let (dir, id, limits) = (plan.dir.as_path(), plan.id.as_str(), plan.limits);
        let log_path = plan.log_path.clone();
        let t0 = std::time::Instant::now();
        std::fs::create_dir_all(dir).at("creating", dir)?;
        let snapshot = self.images.lease(id, image)?;
        // The image's own passwd and group: the snapshot is the root's initial content.
        let user = user::resolve(
            &snapshot,
            &UserRequest {
                run_as_user: spec.run_as_user,
                run_as_group: spec.run_as_group,
                run_as_username: &spec.run_as_username,
                supplemental_groups: &spec.supplemental_groups,
                image_user: &image.config.user,
            },
        )?;
        let layer = if self.opts.copy_rootfs {
            None
        } else {
            self.prepared_layer(&snapshot, &image.id, &user)
        };
        let layers: Vec<&Path> = layer.iter().map(PathBuf::as_path).collect();
        let (rootfs, layered) =
            crate::rootfs::clone_rootfs(&snapshot, &layers, dir, self.opts.copy_rootfs)
                .at("making the container root from", &snapshot)?;
        tracing::debug!(container = id, elapsed = ?t0.elapsed(), "rootfs cloned");
        let inside = |p: &str| {
            resolve_in_root(&rootfs, Path::new(p))
                .at("resolving in the container root", Path::new(p))
        };
        if !(layered && layer.is_some()) {
            prepare_root(&rootfs, &user)?;
        }
        let mounted_hosts = spec
            .mounts
            .iter()
            .any(|m| clean_in_root(&m.container_path) == Some(PathBuf::from("etc/hosts")));
        for (file, skip) in [
            ("hostname", false),
            ("resolv.conf", false),
            ("hosts", mounted_hosts),
        ] {
            if skip {
                continue;
            }
            let target = inside(&format!("/etc/{file}"))?;
            let _ = std::fs::remove_file(&target);
            std::fs::copy(pod.dir.join(file), &target).at("writing", &target)?;
        }

        let args = merge_command(&image.config, &spec.command, &spec.args)?;
        let hostname = std::fs::read_to_string(pod.dir.join("hostname")).unwrap_or_default();
        let mut env = vec![format!("HOSTNAME={}", hostname.trim())];
        for kv in &image.config.env {
            set_env(&mut env, kv.clone());
        }
        for (k, v) in &spec.envs {
            if k.is_empty() || k.contains('=') {
                return Err(Error::InvalidArgument(format!(
                    "environment variable name {k:?} is invalid"
                )));
            }
            set_env(&mut env, format!("{k}={v}"));
        }
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(DEFAULT_PATH.into());
        }
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", user.home));
        }
        let cwd_req = if !spec.working_dir.is_empty() {
            spec.working_dir.clone()
        } else if !image.config.working_dir.is_empty() {
            image.config.working_dir.clone()
        } else {
            "/".into()
        };
        let cwd_rel = clean_in_root(&cwd_req).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "working dir {cwd_req:?} escapes the container root"
            ))
        })?;
        let cwd = format!("/{}", cwd_rel.display());
        let cwd_host = inside(&cwd)?;
        std::fs::create_dir_all(&cwd_host).at("creating the working dir", &cwd_host)?;

        let mut mounted = Vec::new();
        let mount_result = (|| -> Result<()> {
            for (m, source) in spec.mounts.iter().zip(&plan.sources) {
                let target = inside(&m.container_path)?;
                let is_dir = std::fs::metadata(source)
                    .at("inspecting mount source", source)?
                    .is_dir();
                if is_dir {
                    std::fs::create_dir_all(&target).at("creating mount point", &target)?;
                } else {
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent).at("creating", parent)?;
                    }
                    if std::fs::symlink_metadata(&target).is_err() {
                        std::fs::write(&target, b"").at("creating mount point", &target)?;
                    }
                }
                if std::fs::metadata(&target)
                    .map(|t| t.is_dir())
                    .unwrap_or(false)
                    != is_dir
                {
                    return Err(Error::InvalidArgument(format!(
                        "mount {:?}: source is a {} but the container path is not",
                        m.container_path,
                        if is_dir { "directory" } else { "file" }
                    )));
                }
                let how = self
                    .opts
                    .mounts
                    .mount(source, &target, m.readonly)
                    .at("mounting onto", &target)?;
                match how {
                    crate::mounts::Mounted::Mount => mounted.push(target),
                    crate::mounts::Mounted::Link => {}
                    crate::mounts::Mounted::Copy => tracing::warn!(
                        container = id,
                        source = %source.display(),
                        "a file mount was copied into the root (another file system): the \
                         container's writes to it stay in the root"
                    ),
                }
            }
            Ok(())
        })();
        if let Err(e) = mount_result {
            for t in mounted.iter().rev() {
                let _ = platform::unmount(t);
            }
            return Err(e);
        }

        let process = ProcessSpec {
            args,
            env,
            cwd,
            uid: user.uid,
            gid: user.gid,
            groups: user.groups,
            rootfs: rootfs.clone(),
            log_path,
            max_log_line: self.opts.max_log_line,
            tty: spec.tty,
            stdin: spec.stdin,
            stdin_once: spec.stdin_once,
            stop_signal: image.config.stop_signal.clone(),
            limits,
            limit_interval_ms: self.opts.limit_interval.as_millis() as u64,
            control_socket: self
                .opts
                .state_dir
                .join("m")
                .join(format!("{}.sock", &id[..32.min(id.len())])),
        };
        let bytes =
            serde_json::to_vec_pretty(&process).map_err(|e| Error::Internal(e.to_string()))?;
        tracing::debug!(container = id, elapsed = ?t0.elapsed(), "container prepared");
        write_atomic(&dir.join(monitor::PROCESS_FILE), &bytes)
            .at("writing", &dir.join(monitor::PROCESS_FILE))?;
        let meta = spec.metadata.clone().unwrap_or(ContainerMetadata {
            name: String::new(),
            attempt: 0,
        });
        Ok(Container {
            id: id.to_string(),
            pod_id: pod.id.clone(),
            name: meta.name,
            attempt: meta.attempt,
            image_id: image.id.clone(),
            image_ref: image.id.clone(),
            image_name: image.repo_tags.first().cloned().unwrap_or_default(),
            spec,
            process,
            dir: dir.to_path_buf(),
            mounted,
            state: ContainerState::Created,
            created_at: now_nanos(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            pid: 0,
            monitor_pid: 0,
            monitor_start_time: 0,
            pid_start_time: 0,
            final_cpu_ns: 0,
        })
    }

    fn update_container(
        &self,
        id: &str,
        f: impl FnOnce(&mut Container),
    ) -> Result<Option<Container>> {
        let updated = {
            let mut containers = self.write_containers();
            containers.get_mut(id).map(|c| {
                f(c);
                c.clone()
            })
        };
        if let Some(c) = &updated {
            self.store.put_container(c)?;
        }
        Ok(updated)
    }

    pub async fn start_container(self: &Arc<Self>, id: &str) -> Result<()> {
        let t0 = std::time::Instant::now();
        let c = self.container(id)?;
        if self
            .find_pod(&c.pod_id)
            .is_none_or(|p| p.state != PodState::Ready)
        {
            return Err(Error::FailedPrecondition(format!(
                "the pod sandbox of container {} is stopped: its containers cannot start",
                c.id
            )));
        }
        let _busy = self.claim(&c.id)?;
        // The state may have changed while this call waited for the guard.
        let c = self.container(&c.id)?;
        if c.state != ContainerState::Created {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {:?}, not Created: it cannot be started (again)",
                c.id, c.state
            )));
        }
        let monitor_log = std::fs::File::create(c.dir.join("monitor.log"))
            .at("creating", &c.dir.join("monitor.log"))?;
        // Before the process starts: a build may resolve a name as its first act.
        self.start_dns_proxy(&c);
        let mut monitor = tokio::process::Command::new(&self.opts.monitor_exe);
        monitor
            .arg("monitor")
            .arg(&c.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(monitor_log));
        platform::inherit_only_stdio(monitor.as_std_mut());
        let mut child = monitor.spawn().map_err(|e| {
            self.stop_dns_proxy(&c.id);
            Error::io(
                format!("starting the monitor {}", self.opts.monitor_exe.display()),
                e,
            )
        })?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let mut reader = tokio::io::BufReader::new(out);
            let _ =
                tokio::time::timeout(self.opts.start_timeout, reader.read_line(&mut line)).await;
        }
        match serde_json::from_str::<Handshake>(line.trim()) {
            Ok(Handshake::Started(s)) => {
                tracing::debug!(container = id, elapsed = ?t0.elapsed(), "monitor reported the start");
                let (tx, rx) = watch::channel(false);
                if let Ok(mut exits) = self.exits.lock() {
                    exits.insert(c.id.clone(), rx);
                }
                // The watcher exists before anything below can fail, so the exit is always
                // recorded; it waits for `recorded` so that it never runs before the start is.
                let (recorded, start_recorded) = tokio::sync::oneshot::channel::<()>();
                let rt = Arc::clone(self);
                let cid = c.id.clone();
                tokio::spawn(async move {
                    let _ = child.wait().await;
                    let _ = start_recorded.await;
                    rt.monitor_exited(&cid, tx);
                });
                let update = self.update_container(&c.id, |c| mark_running(c, &s));
                if let Err(e) = update {
                    // The container runs and the runtime knows it; the store catches up at the
                    // next write, or recovery reads the monitor's started.json after a crash.
                    tracing::error!(container = id, error = %e, "recording the start failed");
                }
                self.emit(&c.id, &c.pod_id, EventKind::Started);
                let _ = recorded.send(());
                Ok(())
            }
            outcome => {
                let message = match outcome {
                    Ok(Handshake::Failed(m)) => m,
                    _ => {
                        let _ = child.start_kill();
                        let log =
                            std::fs::read_to_string(c.dir.join("monitor.log")).unwrap_or_default();
                        format!(
                            "the container monitor did not report a start: {}",
                            log.trim()
                        )
                    }
                };
                let _ = child.wait().await;
                self.stop_dns_proxy(&c.id);
                // A monitor that started the container but reported too late: end the container.
                if let Some(s) = monitor::read_started(&c.dir) {
                    let mut started = c.clone();
                    mark_running(&mut started, &s);
                    Self::kill_tree(&started, Signal::SIGKILL);
                }
                self.update_container(&c.id, |c| {
                    c.state = ContainerState::Exited;
                    c.exit_code = 128;
                    c.reason = "StartError".into();
                    c.message = message.clone();
                    c.finished_at = now_nanos();
                })?;
                Err(Error::FailedPrecondition(format!(
                    "starting container {}: {message}",
                    c.id
                )))
            }
        }
    }

    /// Relays the host's mDNSResponder socket into the container's root, if one is configured.
    /// A failure leaves the container without name resolution, not without a start: it is
    /// logged.
    fn start_dns_proxy(&self, c: &Container) {
        let Some(upstream) = &self.opts.mdns_socket else {
            return;
        };
        let (dir, name) = (crate::dns_proxy::ROOT_DIR, crate::dns_proxy::NAME);
        let started = (|| -> std::io::Result<crate::dns_proxy::DnsProxy> {
            // The image decides where /var/run leads (inside the root); the socket's own name is
            // never followed.
            let dir = resolve_in_root(&c.process.rootfs, Path::new(dir))?;
            std::fs::create_dir_all(&dir)?;
            // A volume mounted there is the host's directory, not the container's: no socket is
            // made or removed in it.
            use std::os::unix::fs::MetadataExt;
            if std::fs::metadata(&dir)?.dev() != std::fs::metadata(&c.process.rootfs)?.dev() {
                return Err(std::io::Error::other(format!(
                    "{} is a mount, not the container's own directory",
                    dir.display()
                )));
            }
            let fd = platform::open_dir_nofollow(&dir)?;
            crate::dns_proxy::DnsProxy::start(upstream, fd, name, &self.opts.root.join("sockets"))
        })();
        match started {
            Ok(proxy) => {
                if let Ok(mut proxies) = self.dns_proxies.lock() {
                    proxies.insert(c.id.clone(), proxy);
                }
            }
            Err(e) => {
                tracing::warn!(container = c.id, error = %e, "no DNS relay in the container root")
            }
        }
    }

    fn stop_dns_proxy(&self, id: &str) {
        let proxy = self.dns_proxies.lock().ok().and_then(|mut p| p.remove(id));
        drop(proxy);
    }

    /// The monitor of container `id` is gone: record how the container ended.
    fn monitor_exited(&self, id: &str, tx: watch::Sender<bool>) {
        self.stop_dns_proxy(id);
        let Some(c) = self.find_container(id) else {
            let _ = tx.send(true);
            return;
        };
        let exit = monitor::read_exit(&c.dir);
        let counter = match &exit {
            Some(e) if e.reason.as_deref() == Some("OOMKilled") => Some(&self.oom_kills),
            Some(_) => None,
            None => Some(&self.monitor_deaths),
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let exit_cpu = exit.as_ref().map(|e| e.cpu_ns).unwrap_or(0);
        let (code, finished_at, reason, message) = match exit {
            Some(exit) => (
                exit.exit_code,
                exit.finished_at,
                exit.reason.unwrap_or_else(|| {
                    if exit.exit_code == 0 {
                        "Completed"
                    } else {
                        "Error"
                    }
                    .to_string()
                }),
                exit.message.unwrap_or_default(),
            ),
            None => {
                // The monitor died without recording an exit (killed): end what it supervised.
                Self::kill_tree(&c, Signal::SIGKILL);
                (
                    137,
                    now_nanos(),
                    "Error".to_string(),
                    "the container's monitor died without recording an exit; its processes were killed".to_string(),
                )
            }
        };
        // What ExecSync started in the container does not outlive it.
        for pid in platform::processes_in_root(&c.process.rootfs) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let final_cpu = exit_cpu;
        if let Err(e) = self.update_container(id, |c| {
            c.state = ContainerState::Exited;
            c.final_cpu_ns = c.final_cpu_ns.max(final_cpu);
            c.exit_code = code;
            c.finished_at = finished_at;
            c.reason = reason;
            c.message = message;
        }) {
            tracing::error!(container = id, error = %e, "recording the exit failed");
        }
        if let Ok(mut exits) = self.exits.lock() {
            exits.remove(id);
        }
        self.emit(id, &c.pod_id, EventKind::Stopped);
        let _ = tx.send(true);
    }

    /// Signals every process of the container: its process group and the tree below its main
    /// process (only while that pid still names the container's process, not a later one that
    /// reuses it), the tree below its monitor while the monitor lives, and (where the OS tells)
    /// every process whose root is the container's, which catches those that left both group
    /// and parent (setsid + double fork) and ExecSync's processes.
    fn kill_tree(c: &Container, sig: Signal) {
        let mut pids = Vec::new();
        let main_alive = c.pid > 0
            && platform::process_info(c.pid).is_some_and(|p| {
                p.alive && (c.pid_start_time == 0 || p.start_time == c.pid_start_time)
            });
        if main_alive {
            let _ = killpg(Pid::from_raw(c.pid), sig);
            pids.push(c.pid);
            pids.extend(platform::tree(c.pid));
        }
        if c.monitor_pid > 0 && monitor::is_running(&c.dir) {
            pids.extend(platform::tree(c.monitor_pid));
        }
        pids.extend(platform::processes_in_root(&c.process.rootfs));
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }

    /// Stops a running container: its stop signal, then SIGKILL to the whole tree after
    /// `timeout_secs`. A missing or not-running container is success.
    pub async fn stop_container(self: &Arc<Self>, id: &str, timeout_secs: i64) -> Result<()> {
        let Some(c) = self.find_container(id) else {
            return Ok(());
        };
        if c.state != ContainerState::Running {
            return Ok(());
        }
        let rx = self.exits.lock().ok().and_then(|e| e.get(&c.id).cloned());
        let Some(mut rx) = rx else { return Ok(()) };
        if timeout_secs > 0 {
            let _ = kill(Pid::from_raw(c.pid), signal_by_name(&c.process.stop_signal));
            let wait = Duration::from_secs(timeout_secs as u64);
            if matches!(
                tokio::time::timeout(wait, rx.wait_for(|v| *v)).await,
                Ok(Ok(_))
            ) {
                return Ok(());
            }
        }
        Self::kill_tree(&c, Signal::SIGKILL);
        match tokio::time::timeout(self.opts.kill_timeout, rx.wait_for(|v| *v)).await {
            Ok(Ok(_)) => Ok(()),
            // No watcher any more: the monitor's lock says whether anything still runs.
            Ok(Err(_)) if !monitor::is_running(&c.dir) => Ok(()),
            _ => Err(Error::DeadlineExceeded(format!(
                "container {} did not exit within {:?} of SIGKILL",
                c.id, self.opts.kill_timeout
            ))),
        }
    }

    pub async fn remove_container(self: &Arc<Self>, id: &str) -> Result<()> {
        let Some(c) = self.find_container(id) else {
            return Ok(());
        };
        // Held for the whole removal: a StartContainer meanwhile is refused, not run in a
        // directory being deleted.
        let _busy = self.claim(&c.id)?;
        if c.state == ContainerState::Running {
            self.stop_container(&c.id, 0).await?;
        }
        // Nothing of it may outlive it, whatever state it is in.
        Self::kill_tree(&c, Signal::SIGKILL);
        self.stop_dns_proxy(&c.id);
        let dir = c.dir.clone();
        tokio::task::spawn_blocking(move || remove_tree(&dir))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .at("removing", &c.dir)?;
        self.images.release(&c.id)?;
        self.store.delete_container(&c.id)?;
        self.write_containers().remove(&c.id);
        self.emit(&c.id, &c.pod_id, EventKind::Deleted);
        self.release(&container_key(&c.pod_id, &c.name, c.attempt));
        Ok(())
    }

    /// Starts a process in running container `id` through its monitor (so it is the monitor's
    /// child: in the container's stats and limits, and ended with it), in the container's root
    /// as its user with its environment. Its stdio: pipes for the requested streams, or a
    /// pseudo-terminal in TTY mode.
    pub async fn exec(
        &self,
        id: &str,
        req: &crate::exec::ExecRequest,
    ) -> Result<crate::exec::ExecProcess> {
        let c = self.container(id)?;
        if c.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {:?}, not running: cannot exec in it",
                c.id, c.state
            )));
        }
        if req.cmd.is_empty() {
            return Err(Error::InvalidArgument("exec needs a command".into()));
        }
        let stdio =
            crate::exec::Stdio::new(req).map_err(|e| Error::io("making the exec's stdio", e))?;
        let socket = c.process.control_socket.clone();
        let (args, tty) = (req.cmd.clone(), req.tty);
        let (stdio, started) = tokio::task::spawn_blocking(move || {
            let fds: Vec<_> = stdio.theirs.iter().map(std::os::fd::AsFd::as_fd).collect();
            let started = monitor::start_exec(&socket, &args, tty, &fds);
            (stdio, started)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
        let (conn, pid) = started.map_err(|e| {
            Error::FailedPrecondition(format!("exec {:?} in container {}: {e}", req.cmd[0], c.id))
        })?;
        crate::exec::ExecProcess::new(pid, conn, stdio, req)
            .map_err(|e| Error::io("preparing the exec's stdio", e))
    }

    /// Connects to running container `id`'s stdio through its monitor (see [`crate::attach`]).
    /// Returns the connection, past the handshake, and whether the container has a TTY.
    pub async fn attach(&self, id: &str) -> Result<(std::os::unix::net::UnixStream, bool)> {
        let c = self.container(id)?;
        if c.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {:?}, not running: cannot attach to it",
                c.id, c.state
            )));
        }
        let socket = c.process.control_socket.clone();
        let tty = c.process.tty;
        let conn = tokio::task::spawn_blocking(move || monitor::open_attach(&socket))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| {
                Error::FailedPrecondition(format!(
                    "attaching to container {}: its monitor did not answer: {e}",
                    c.id
                ))
            })?;
        Ok((conn, tty))
    }

    /// Runs `cmd` in a running container's root as its user, with its environment.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Option<Duration>,
    ) -> Result<ExecOutput> {
        let started = std::time::Instant::now();
        let req = crate::exec::ExecRequest {
            cmd: cmd.to_vec(),
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
        };
        // The timeout covers starting the process too.
        let mut process = match timeout {
            Some(t) => tokio::time::timeout(t, self.exec(id, &req))
                .await
                .map_err(|_| {
                    Error::DeadlineExceeded(format!("command {cmd:?} did not start within {t:?}"))
                })??,
            None => self.exec(id, &req).await?,
        };
        let wait_limit = timeout.map(|t| t.saturating_sub(started.elapsed()));
        let pid = process.pid();
        // Output goes into shared buffers, so that what was printed can be returned even when
        // a reader is still blocked on a pipe that an escaped process holds open. Past the
        // limit, output is read and dropped: a command must never block on a full pipe.
        let read = |r: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| {
            let buf = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&buf);
            let task = tokio::spawn(async move {
                let Some(mut r) = r else { return };
                let mut chunk = vec![0u8; 64 * 1024];
                while let Ok(n) = r.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut out) = sink.lock() {
                        let room = EXEC_OUTPUT_LIMIT.saturating_sub(out.len());
                        out.extend_from_slice(&chunk[..n.min(room)]);
                    }
                }
            });
            (buf, task)
        };
        let (out_buf, out_task) = read(process.stdout.take());
        let (err_buf, err_task) = read(process.stderr.take());
        let kill_all = move || crate::exec::kill_exec_tree(pid);
        // Waits (bounded) for the readers to reach the end of output, then takes what they got.
        let collect = |out_task: tokio::task::JoinHandle<()>,
                       err_task: tokio::task::JoinHandle<()>| async move {
            let both = async {
                let _ = out_task.await;
                let _ = err_task.await;
            };
            if tokio::time::timeout(Duration::from_secs(1), both)
                .await
                .is_err()
            {
                // Something that left the tree still holds a pipe: end the whole container's
                // share of this exec and stop waiting.
                kill_all();
            }
            let take = |b: &Arc<Mutex<Vec<u8>>>| {
                b.lock()
                    .map(|mut v| std::mem::take(&mut *v))
                    .unwrap_or_default()
            };
            (take(&out_buf), take(&err_buf))
        };
        let waited = match wait_limit {
            Some(t) => tokio::time::timeout(t, process.wait()).await.ok(),
            None => Some(process.wait().await),
        };
        let exit_code = match waited {
            Some(code) => code.map_err(|e| {
                Error::FailedPrecondition(format!("exec {:?} in container {id}: {e}", cmd[0]))
            })?,
            None => {
                kill_all();
                let _ = process.wait().await;
                let (stdout, stderr) = collect(out_task, err_task).await;
                return Err(Error::DeadlineExceeded(format!(
                    "command {:?} timed out after {:?} and was killed; stdout so far: {:?}; stderr so far: {:?}",
                    cmd,
                    timeout.unwrap_or_default(),
                    String::from_utf8_lossy(&stdout[..stdout.len().min(4096)]),
                    String::from_utf8_lossy(&stderr[..stderr.len().min(4096)]),
                )));
            }
        };
        let (stdout, stderr) = collect(out_task, err_task).await;
        Ok(ExecOutput {
            stdout,
            stderr,
            exit_code,
        })
    }

    // ----- statistics -------------------------------------------------------------------------

    /// Usage of every container, from a sample at most `stats_interval` old. Concurrent callers
    /// wait for one sample instead of each walking the process table.
    pub async fn usage(self: &Arc<Self>) -> Arc<crate::stats::Sample> {
        let _gate = self.sample_gate.lock().await;
        let lock = |s: &Mutex<crate::stats::Sampler>| {
            s.lock()
                .unwrap_or_else(|p| p.into_inner())
                .fresh(self.opts.stats_interval)
        };
        if let Some(fresh) = lock(&self.sampler) {
            return fresh;
        }
        let containers = self.list_containers();
        let sampler = Arc::clone(&self.sampler);
        // The sampler's state is only touched inside the blocking task, which runs to its end
        // even if this caller goes away: a cancelled call cannot lose the CPU history.
        let sampled = tokio::task::spawn_blocking(move || {
            sampler
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .sample(&containers)
        })
        .await;
        match sampled {
            Ok(sample) => sample,
            Err(_) => self
                .sampler
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .last(),
        }
    }

    // ----- logs and resources -------------------------------------------------------------------

    async fn monitor_command(&self, c: &Container, command: &'static str) -> Result<()> {
        let socket = c.process.control_socket.clone();
        tokio::task::spawn_blocking(move || {
            monitor::send_command(&socket, command, Duration::from_secs(5))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(|e| Error::Internal(format!("container {}: monitor {command}: {e}", c.id)))
    }

    /// Makes the monitor reopen the container's log file (kubelet has renamed it).
    pub async fn reopen_log(&self, id: &str) -> Result<()> {
        let c = self.container(id)?;
        if c.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running: there is no log writer to reopen",
                c.id
            )));
        }
        self.monitor_command(&c, "reopen").await
    }

    /// New limits for a container (from kubelet's Linux resources, or from re-read annotations
    /// when `resources` is `None`), applied at once if it runs. The new limits are recorded only
    /// once the monitor has applied them.
    pub async fn update_resources(
        &self,
        id: &str,
        resources: Option<&crate::limits::LinuxResources>,
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        let c = self.container(id)?;
        if c.state == ContainerState::Exited {
            return Err(Error::FailedPrecondition(format!(
                "container {} has exited",
                c.id
            )));
        }
        let limits = match resources {
            Some(r) => {
                let mut limits = c.process.limits;
                crate::limits::apply_linux(&mut limits, r)?;
                limits
            }
            None if annotations.is_empty() => return Ok(()),
            None => {
                let pod = self.pod(&c.pod_id)?;
                crate::limits::resolve(&c.name, None, annotations, &pod.spec.annotations)?
            }
        };
        let path = c.dir.join(monitor::PROCESS_FILE);
        let write = |limits: crate::limits::Limits| -> Result<()> {
            let mut process = c.process.clone();
            process.limits = limits;
            let bytes =
                serde_json::to_vec_pretty(&process).map_err(|e| Error::Internal(e.to_string()))?;
            write_atomic(&path, &bytes).at("writing", &path)
        };
        write(limits)?;
        if c.state == ContainerState::Running
            && let Err(e) = self.monitor_command(&c, "limits").await
        {
            let _ = write(c.process.limits);
            return Err(e);
        }
        self.update_container(&c.id, |c| {
            c.process.limits = limits;
            if let Some(r) = resources {
                c.spec.linux_resources = Some(*r);
            }
        })?;
        Ok(())
    }

    /// A read-only layer holding what [`prepare_root`] adds to a root of this image for this
    /// user, made once and stacked between each such container's own layer and the snapshot.
    /// On overlayfs every directory a container creates costs a copy-up and a rename (about 0.15
    /// ms each; the jail layout makes some 30): shared, they cost nothing per container. `None`
    /// where no overlay can be made: each root is then prepared itself.
    fn prepared_layer(
        &self,
        snapshot: &Path,
        image_id: &str,
        user: &user::ResolvedUser,
    ) -> Option<PathBuf> {
        let digest = image_id.trim_start_matches("sha256:");
        let key = format!(
            "{}-{:016x}",
            &digest[..digest.len().min(16)],
            fnv1a(&format!(
                "{}\0{}\0{}\0{}",
                crate::jail::LAYOUT_VERSION,
                user.uid,
                user.gid,
                user.home
            ))
        );
        let layers = self.opts.root.join("layers");
        let dir = layers.join(&key);
        if dir.join("done").exists() {
            return Some(dir.join("upper"));
        }
        // Made aside under a unique name and renamed into place: a concurrent create of the
        // same image and user makes its own, and the first rename wins.
        let tmp = layers.join(format!("{key}.tmp-{}", &new_id()[..12]));
        let made = (|| -> Result<()> {
            std::fs::create_dir_all(&tmp).at("creating", &tmp)?;
            let merged = crate::rootfs::overlay(snapshot, &[], &tmp).at("layering", &tmp)?;
            let prepared = prepare_root(&merged, user);
            platform::unmount(&merged).at("unmounting", &merged)?;
            prepared?;
            let _ = std::fs::remove_dir_all(tmp.join("work"));
            std::fs::write(tmp.join("done"), b"").at("writing", &tmp)?;
            if std::fs::rename(&tmp, &dir).is_err() && !dir.join("done").exists() {
                return Err(Error::Internal(format!("cannot place {}", dir.display())));
            }
            Ok(())
        })();
        if tmp.exists() {
            let _ = remove_tree(&tmp);
        }
        match made {
            Ok(()) => Some(dir.join("upper")),
            Err(e) => {
                tracing::debug!(error = %e, "no shared prepared layer; preparing the root itself");
                None
            }
        }
    }

    // ----- recovery ---------------------------------------------------------------------------

    /// Unmounts what a crash or a dead FUSE daemon left behind: mounts under stopped pods, and
    /// mounts whose bindfs process is gone (every access to them fails). A forced unmount is
    /// the only way to clear the latter.
    fn unmount_stale(&self) {
        let stopped: Vec<PathBuf> = self
            .list_pods()
            .into_iter()
            .filter(|p| p.state != PodState::Ready)
            .map(|p| p.dir)
            .collect();
        let pods_dir = self.opts.root.join("pods");
        let mounts = platform::mounts_under(&pods_dir).unwrap_or_default();
        for m in mounts {
            let under_stopped = stopped.iter().any(|d| m.starts_with(d));
            if under_stopped || crate::mounts::is_stale(&m) {
                match platform::unmount(&m) {
                    Ok(()) => tracing::info!(mount = %m.display(), "unmounted a stale mount"),
                    Err(e) => {
                        tracing::warn!(mount = %m.display(), error = %e, "cannot unmount a stale mount")
                    }
                }
            }
        }
    }

    /// Makes again the mounts of a live container that are missing (unmounted as stale).
    fn repair_mounts(&self, c: &Container) {
        let live = platform::mounts_under(&c.dir).unwrap_or_default();
        for m in &c.spec.mounts {
            let Ok(target) = resolve_in_root(&c.process.rootfs, Path::new(&m.container_path))
            else {
                continue;
            };
            // Files linked or copied into the root are not mounts.
            if !c.mounted.contains(&target) || live.contains(&target) {
                continue;
            }
            let remounted = self
                .opts
                .mounts
                .resolve_source(&m.host_path, &m.container_path)
                .and_then(|source| {
                    self.opts
                        .mounts
                        .mount(&source, &target, m.readonly)
                        .at("mounting onto", &target)
                });
            match remounted {
                Ok(_) => tracing::info!(container = c.id, mount = %target.display(), "remounted"),
                Err(e) => {
                    tracing::warn!(container = c.id, mount = %target.display(), error = %e, "cannot remount")
                }
            }
        }
    }

    pub async fn recover(self: &Arc<Self>) -> Result<()> {
        self.unmount_stale();
        for c in self.list_containers() {
            let started = if c.state == ContainerState::Created {
                // The server may have died between starting the monitor and recording it; a
                // monitor that is still starting gets the start timeout to report.
                let deadline = std::time::Instant::now() + self.opts.start_timeout;
                loop {
                    let started = monitor::read_started(&c.dir);
                    if started.is_some()
                        || !monitor::is_running(&c.dir)
                        || std::time::Instant::now() > deadline
                    {
                        break started;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            } else {
                None
            };
            if let Some(s) = started {
                self.update_container(&c.id, |c| mark_running(c, &s))?;
            }
            let Some(c) = self.find_container(&c.id) else {
                continue;
            };
            if c.state != ContainerState::Running {
                continue;
            }
            self.start_dns_proxy(&c);
            let (tx, rx) = watch::channel(false);
            self.exits
                .lock()
                .map_err(|_| Error::Internal("exit table poisoned".into()))?
                .insert(c.id.clone(), rx);
            let rt = Arc::clone(self);
            tokio::spawn(async move {
                while monitor::is_running(&c.dir) {
                    tokio::time::sleep(ADOPTED_MONITOR_POLL).await;
                }
                rt.monitor_exited(&c.id, tx);
            });
        }
        for c in self.list_containers() {
            if matches!(c.state, ContainerState::Running | ContainerState::Created) {
                self.repair_mounts(&c);
            }
        }
        // Directories that no record names are debris of work cut short by a crash.
        let known_pods: HashSet<PathBuf> = self.list_pods().into_iter().map(|p| p.dir).collect();
        let known_containers: HashSet<PathBuf> =
            self.list_containers().into_iter().map(|c| c.dir).collect();
        let pods_dir = self.opts.root.join("pods");
        let mut debris = Vec::new();
        for pod_dir in std::fs::read_dir(&pods_dir)
            .at("listing", &pods_dir)?
            .flatten()
        {
            let path = pod_dir.path();
            if !known_pods.contains(&path) {
                debris.push(path);
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(path.join("containers")) {
                debris.extend(
                    entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| !known_containers.contains(p)),
                );
            }
        }
        let known_ids: HashSet<String> = self.list_containers().into_iter().map(|c| c.id).collect();
        for holder in self.images.lease_holders()? {
            if !known_ids.contains(&holder) {
                self.images.release(&holder)?;
            }
        }
        // Prepared layers of images that are gone, and half-made ones.
        let images: Vec<String> = self
            .images
            .list()?
            .into_iter()
            .map(|i| {
                let d = i.id.trim_start_matches("sha256:").to_string();
                d[..d.len().min(16)].to_string()
            })
            .collect();
        if let Ok(entries) = std::fs::read_dir(self.opts.root.join("layers")) {
            debris.extend(entries.flatten().map(|e| e.path()).filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                name.contains(".tmp-") || !images.iter().any(|i| name.starts_with(&format!("{i}-")))
            }));
        }
        for path in debris {
            tracing::info!(path = %path.display(), "removing debris of an unfinished operation");
            if let Err(e) = remove_tree(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove debris");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(entrypoint: &[&str], cmd: &[&str]) -> image_service::ImageConfig {
        image_service::ImageConfig {
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_merging_follows_containerd() {
        let img = cfg(&["/entry"], &["default"]);
        assert_eq!(
            merge_command(&img, &[], &[]).expect("m"),
            v(&["/entry", "default"])
        );
        assert_eq!(
            merge_command(&img, &[], &v(&["x"])).expect("m"),
            v(&["/entry", "x"])
        );
        assert_eq!(
            merge_command(&img, &v(&["/bin/sh"]), &[]).expect("m"),
            v(&["/bin/sh"])
        );
        assert_eq!(
            merge_command(&img, &v(&["/bin/sh"]), &v(&["-c", "true"])).expect("m"),
            v(&["/bin/sh", "-c", "true"])
        );
        assert_eq!(
            merge_command(&cfg(&[""], &["sh"]), &[], &[]).expect("m"),
            v(&["sh"])
        );
        assert!(matches!(
            merge_command(&cfg(&[], &[]), &[], &[]),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn env_later_values_replace_earlier_ones_in_place() {
        let mut env = v(&["A=1", "PATH=/bin"]);
        set_env(&mut env, "PATH=/usr/bin".into());
        set_env(&mut env, "B=2".into());
        assert_eq!(env, v(&["A=1", "PATH=/usr/bin", "B=2"]));
    }

    #[test]
    fn resolv_conf_from_dns_config() {
        let dns = DnsConfig {
            servers: v(&["10.96.0.10"]),
            searches: v(&["ns.svc.cluster.local", "svc.cluster.local"]),
            options: v(&["ndots:5"]),
        };
        assert_eq!(
            resolv_conf(Some(&dns)),
            "search ns.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn stop_signal_names() {
        assert_eq!(signal_by_name(""), Signal::SIGTERM);
        assert_eq!(signal_by_name("SIGQUIT"), Signal::SIGQUIT);
        assert_eq!(signal_by_name("int"), Signal::SIGINT);
        assert_eq!(signal_by_name("9"), Signal::SIGKILL);
        assert_eq!(signal_by_name("bogus"), Signal::SIGTERM);
    }
}
