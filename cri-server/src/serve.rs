//! `darwin-cri serve`: the CRI socket, its locks, start-up recovery and graceful shutdown.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use image_service::{ImageStore, Platform};
use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use nix::fcntl::{Flock, FlockArg};
use runtime::{Runtime, RuntimeOptions};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;
use crate::cri::Cri;

/// Holds an exclusive lock on `path` for the life of the value; a second holder is refused.
fn lock(path: &Path, what: &str) -> anyhow::Result<Flock<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut held) => {
            use std::io::{Seek, Write};
            let _ = held.set_len(0);
            let _ = held.seek(std::io::SeekFrom::Start(0));
            let _ = writeln!(held, "{}", std::process::id());
            Ok(held)
        }
        Err((_, _)) => {
            let holder = std::fs::read_to_string(path).unwrap_or_default();
            bail!(
                "another darwin-cri (pid {}) is already using {what}; stop it first or choose another with flags",
                holder.trim()
            )
        }
    }
}

/// Prepares the socket path: refuses if a server answers there, removes a stale socket.
fn claim_socket(socket: &Path) -> anyhow::Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if std::fs::symlink_metadata(socket).is_ok() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            bail!(
                "something already serves on {}; is another darwin-cri running?",
                socket.display()
            );
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("removing the stale socket {}", socket.display()))?;
        tracing::info!(socket = %socket.display(), "removed a stale socket");
    }
    Ok(())
}

pub fn platform(config: &Config) -> anyhow::Result<Platform> {
    if config.image.platform.is_empty() {
        let mut host = Platform::host();
        let facts = platform::host_facts();
        // Images for darwin are preferred for the host's macOS version when they say theirs.
        if host.os == facts.os && !facts.os_version.is_empty() && host.os == "darwin" {
            host.os_version = Some(facts.os_version);
        }
        Ok(host)
    } else {
        Platform::parse(&config.image.platform)
            .with_context(|| format!("image.platform {:?}", config.image.platform))
    }
}

/// The monitor containers and build steps run under: `darwin-cri-monitor` beside this
/// executable, or this executable itself (with a warning: each container then costs more).
pub fn monitor_program() -> anyhow::Result<runtime::monitor::MonitorProgram> {
    let exe = std::env::current_exe().context("locating the darwin-cri executable")?;
    let program = runtime::monitor::MonitorProgram::beside(&exe);
    if !program.is_small() {
        tracing::warn!(
            expected = %exe.with_file_name(runtime::monitor::MONITOR_BINARY).display(),
            "the small monitor binary is not installed beside darwin-cri: containers are \
             monitored by darwin-cri itself, which costs each one more memory"
        );
    }
    Ok(program)
}

pub fn open_images(config: &Config) -> anyhow::Result<Arc<ImageStore>> {
    let images = ImageStore::open(
        &config.root.join("images"),
        platform(config)?,
        image_service::tree::snapshot_cloner(),
    )
    .with_context(|| format!("opening the image store under {}", config.root.display()))?
    .with_keep_setuid(config.image.keep_setuid.clone());
    Ok(Arc::new(images))
}

/// Refuses socket paths the OS cannot bind or connect to: the CRI socket, and the monitors'
/// control sockets under the state directory (`<state_dir>/m/<32 hex>.sock`).
pub fn check_socket_paths(config: &Config) -> anyhow::Result<()> {
    let monitor_socket = config
        .state_dir
        .join("m")
        .join(format!("{}.sock", "0".repeat(32)));
    for (what, path) in [
        ("socket", &config.socket),
        ("state_dir (monitor sockets)", &monitor_socket),
    ] {
        if let Some(problem) = platform::socket_path_problem(path) {
            anyhow::bail!("{what}: {problem}");
        }
    }
    Ok(())
}

pub async fn serve(mut config: Config) -> anyhow::Result<()> {
    check_socket_paths(&config)?;
    for dir in [&mut config.root, &mut config.state_dir] {
        std::fs::create_dir_all(&*dir).with_context(|| format!("creating {}", dir.display()))?;
        // Real paths only: mounts are found by comparing with the mount table's real paths.
        *dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
    }
    // Again with real paths: on macOS /var/run is /private/var/run, 8 bytes longer.
    check_socket_paths(&config)?;
    let _root_lock = lock(
        &config.root.join("darwin-cri.lock"),
        &format!("the root {}", config.root.display()),
    )?;
    let socket_lock_path = PathBuf::from(format!("{}.lock", config.socket.display()));
    if let Some(dir) = config.socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _socket_lock = lock(
        &socket_lock_path,
        &format!("the socket {}", config.socket.display()),
    )?;
    claim_socket(&config.socket)?;

    let images = open_images(&config)?;
    // A server killed mid-pull leaves half-built snapshots behind.
    if let Err(e) = images.sweep_tmp() {
        tracing::warn!(error = %e, "cannot clear the image store's leftovers");
    }
    let node_ip = if config.runtime.node_ip.is_empty() {
        None
    } else {
        Some(
            config
                .runtime
                .node_ip
                .parse()
                .with_context(|| format!("runtime.node_ip {:?}", config.runtime.node_ip))?,
        )
    };
    let opts = RuntimeOptions {
        root: config.root.clone(),
        monitor: monitor_program()?,
        waiting_monitors: config.runtime.waiting_monitors,
        strict_pod_network: config.runtime.strict_pod_network,
        node_ip,
        max_log_line: config.runtime.max_log_line_bytes,
        runtime_handlers: config.runtime.runtime_handlers.clone(),
        start_timeout: Duration::from_secs(config.runtime.start_timeout_seconds.max(1)),
        kill_timeout: Duration::from_secs(config.runtime.kill_timeout_seconds.max(1)),
        copy_rootfs: config.runtime.rootfs == crate::config::RootfsMode::Copy,
        root_pool: config.runtime.root_pool.options(),
        state_dir: config.state_dir.clone(),
        limit_interval: Duration::from_millis(config.runtime.limit_check_interval_ms.max(10)),
        event_buffer: config.runtime.event_buffer.max(1),
        stats_interval: Duration::from_millis(config.runtime.stats_interval_ms),
        // darwin-cri's own directories are never mount sources (issue #26, 11).
        mounts: config.mounts.policy().with_own_paths(
            [config.root.clone(), config.state_dir.clone()]
                .into_iter()
                .chain(config.socket.parent().map(Path::to_path_buf)),
        ),
        mdns_socket: config.runtime.mdns_socket(),
        resolver_dir: config.runtime.resolver_dir(),
        cluster_domain: config.runtime.cluster_domain.clone(),
        cluster_dns_servers: config.runtime.cluster_dns_servers.clone(),
        allow_root: config.runtime.allow_root,
        allow_root_namespaces: config.runtime.allow_root_namespaces.clone(),
        seatbelt_mach_services: config.runtime.seatbelt_mach_services.clone(),
        allowed_capabilities: config.runtime.allowed_capabilities.clone(),
        landlock_best_effort: config.runtime.landlock_best_effort,
    };
    let rt = Runtime::open(opts, images).context("opening the runtime state")?;
    rt.recover()
        .await
        .context("recovering containers after start")?;

    // For newsyslog, which signals SIGHUP after rotating log.file: the handler is in place
    // before the pid file names this process (SIGHUP's default action ends it), and the file is
    // written once the server is up and removed whenever it stops.
    let signals = shutdown_signals()?;
    tokio::spawn(reopen_log_on_hangup(
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("handling SIGHUP")?,
    ));
    let _pid_file = PidFile::write(config.state_dir.join("darwin-cri.pid"))?;
    // Made with its final mode and group, never reachable otherwise (issue #26, 14).
    let listener = runtime::fsutil::bind_socket(&config.socket, 0o660, config.socket_gid()?)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(UnixListener::from_std)
        .with_context(|| format!("listening on {}", config.socket.display()))?;
    tracing::info!(
        socket = %config.socket.display(),
        root = %config.root.display(),
        node_ip = rt.node_ip(),
        containers = rt.list_containers().len(),
        pods = rt.list_pods().len(),
        "darwin-cri serving CRI v1"
    );

    let metrics = if config.metrics.address.is_empty() {
        None
    } else {
        let address = config
            .metrics
            .address
            .parse()
            .with_context(|| format!("metrics.address {:?}", config.metrics.address))?;
        let m = crate::metrics::Metrics::new(Arc::clone(&rt));
        let bound = crate::metrics::serve(address, Arc::clone(&m)).await?;
        tracing::info!(address = %bound, "serving Prometheus metrics on /metrics");
        Some(m)
    };
    if config.node.report {
        start_node_report(&config);
    }
    let events = Arc::clone(&rt);
    let registry = image_service::registry::Registry::new(config.image.registry())
        .context("setting up the registry client")?;
    let puller = image_service::Puller::new(
        Arc::clone(rt.images()),
        registry,
        config.image.max_concurrent_downloads,
    );
    let streaming =
        crate::streaming::Server::start(Arc::clone(&rt), config.streaming.options()?).await?;
    tracing::info!(
        url = streaming.base_url(),
        "serving exec, attach and port-forward"
    );
    let svc = Cri::new(
        rt,
        platform(&config)?.to_string(),
        metrics.clone(),
        puller,
        streaming,
    );
    let result = tonic::transport::Server::builder()
        .layer(crate::metrics::GrpcMetricsLayer(metrics))
        .add_service(RuntimeServiceServer::new(svc.clone()))
        .add_service(ImageServiceServer::new(svc))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
            shutdown_signal(signals).await;
            // Open GetContainerEvents streams would hold the graceful shutdown forever.
            events.close_subscribers();
        })
        .await;
    let _ = std::fs::remove_file(&config.socket);
    result.context("serving gRPC")?;
    tracing::info!("stopped; containers keep running under their monitors");
    Ok(())
}

/// The node reporter runs beside the CRI server and never holds it up: its failures (no
/// kubeconfig, an unreachable API server) are logged and retried.
#[cfg(feature = "kube")]
fn start_node_report(config: &Config) {
    tokio::spawn(crate::node_report::run(config.node.clone(), false));
}

#[cfg(not(feature = "kube"))]
fn start_node_report(_config: &Config) {
    tracing::warn!("node.report is set, but this darwin-cri was built without the kube feature");
}

async fn reopen_log_on_hangup(mut hangup: tokio::signal::unix::Signal) {
    while hangup.recv().await.is_some() {
        match crate::logfile::reopen() {
            Ok(()) => tracing::info!("SIGHUP: log file reopened"),
            Err(e) => eprintln!("darwin-cri: reopening the log file: {e}"),
        }
    }
}

/// `<state_dir>/darwin-cri.pid`, removed when the server stops, however it stops short of a
/// kill.
struct PidFile(PathBuf);

impl PidFile {
    fn write(path: PathBuf) -> anyhow::Result<PidFile> {
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// SIGTERM and SIGINT, caught from the moment this is called: one that arrives before the gRPC
/// server runs still ends the server gracefully (the pid file and the socket removed).
fn shutdown_signals() -> anyhow::Result<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>
{
    use tokio::signal::unix::{SignalKind, signal};
    Ok((
        signal(SignalKind::terminate()).context("handling SIGTERM")?,
        signal(SignalKind::interrupt()).context("handling SIGINT")?,
    ))
}

async fn shutdown_signal(
    (mut term, mut int): (tokio::signal::unix::Signal, tokio::signal::unix::Signal),
) {
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
