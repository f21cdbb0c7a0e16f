//! Test harness for darwin-cri: an OCI image built from the host's static busybox, the real
//! `darwin-cri` binary on a temporary socket and root, and a CRI client over the unix socket.
#![forbid(unsafe_code)]

pub mod helm;
pub mod registry;
pub mod streaming;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint, Uri};

pub use k8s_cri::v1;

/// The image name the fixture imports.
pub const BUSYBOX: &str = "docker.io/library/busybox:latest";

/// The `darwin-cri` binary next to the test executable (target/<profile>/darwin-cri), or
/// `DARWIN_CRI_BIN`.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("DARWIN_CRI_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("darwin-cri");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --bin darwin-cri` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn write_blob(layout: &Path, data: &[u8]) -> anyhow::Result<String> {
    let hex = sha256_hex(data);
    std::fs::write(layout.join("blobs/sha256").join(&hex), data)?;
    Ok(format!("sha256:{hex}"))
}

/// Builds an OCI image layout at `dir` holding a busybox image made from the host's static
/// busybox: every applet as a symlink in /bin, users root, app (1000, also in group builders
/// 2000) and nobody, and `Cmd ["sh"]`.
pub fn busybox_layout(dir: &Path, name: &str) -> anyhow::Result<()> {
    busybox_layout_with_cmd(dir, name, &["sh"])
}

/// [`busybox_layout`] with another default command (`["sleep", "2147483647"]` makes a pause
/// image).
pub fn busybox_layout_with_cmd(dir: &Path, name: &str, cmd: &[&str]) -> anyhow::Result<()> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("busybox is not installed (apt-get install busybox-static)")?;
    let applets = Command::new(&busybox).arg("--list").output()?;
    let applets = String::from_utf8(applets.stdout)?;

    let mut tar = tar::Builder::new(Vec::new());
    let dir_entry =
        |tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, uid: u64| -> anyhow::Result<()> {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_gid(uid);
            h.set_mtime(1_700_000_000);
            h.set_size(0);
            tar.append_data(&mut h, path, std::io::empty())?;
            Ok(())
        };
    let file_entry = |tar: &mut tar::Builder<Vec<u8>>,
                      path: &str,
                      mode: u32,
                      data: &[u8]|
     -> anyhow::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, path, data)?;
        Ok(())
    };
    for (d, mode, uid) in [
        ("bin", 0o755, 0),
        ("etc", 0o755, 0),
        ("tmp", 0o1777, 0),
        ("root", 0o700, 0),
        ("home", 0o755, 0),
        ("home/app", 0o755, 1000),
    ] {
        dir_entry(&mut tar, d, mode, uid)?;
    }
    file_entry(&mut tar, "bin/busybox", 0o755, &std::fs::read(&busybox)?)?;
    for applet in applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    file_entry(
        &mut tar,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    file_entry(
        &mut tar,
        "etc/group",
        0o644,
        b"root:x:0:\napp:x:1000:\nbuilders:x:2000:app\nnogroup:x:65534:\n",
    )?;
    let layer_tar = tar.into_inner()?;
    let diff_id = format!("sha256:{}", sha256_hex(&layer_tar));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer_tar)?;
    let layer_gz = gz.finish()?;

    std::fs::create_dir_all(dir.join("blobs/sha256"))?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let layer_digest = write_blob(dir, &layer_gz)?;
    let config = serde_json::json!({
        "architecture": host_arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": cmd,
            "WorkingDir": "/"
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}
    });
    let config = serde_json::to_vec(&config)?;
    let config_digest = write_blob(dir, &config)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_gz.len()}]
    });
    let manifest = serde_json::to_vec(&manifest)?;
    let manifest_digest = write_blob(dir, &manifest)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"}
        }]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(())
}

/// A client over a unix socket.
pub async fn connect(
    socket: &Path,
) -> anyhow::Result<(RuntimeServiceClient<Channel>, ImageServiceClient<Channel>)> {
    connect_with_window(socket, None).await
}

/// A client whose HTTP/2 stream window is `window` bytes: a small one makes a client that does
/// not read its streams push back on the server quickly.
pub async fn connect_with_window(
    socket: &Path,
    window: Option<u32>,
) -> anyhow::Result<(RuntimeServiceClient<Channel>, ImageServiceClient<Channel>)> {
    let socket = socket.to_path_buf();
    let channel = Endpoint::try_from("http://[::]:50051")?
        .initial_stream_window_size(window)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await?;
    // kubelet's CRI client accepts messages up to 16 MiB.
    Ok((
        RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(16 << 20),
        ImageServiceClient::new(channel).max_decoding_message_size(16 << 20),
    ))
}

/// A darwin-cri server on its own socket and root, killed (with everything it started) on drop.
#[derive(Debug)]
pub struct Server {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub extra_args: Vec<String>,
}

impl Server {
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/cri.sock")
    }

    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--root".to_string(),
            self.root().display().to_string(),
            "--state-dir".into(),
            self.dir.path().join("run").display().to_string(),
            "--socket".into(),
            self.socket().display().to_string(),
        ];
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// A new server with the busybox image imported.
    pub async fn start() -> anyhow::Result<Server> {
        Self::start_with(vec![]).await
    }

    pub async fn start_with(extra_args: Vec<String>) -> anyhow::Result<Server> {
        Self::start_full(extra_args, None, None).await
    }

    /// A new server reading `toml` as its configuration file (kept in its temp dir).
    pub async fn start_with_config(toml: &str) -> anyhow::Result<Server> {
        Self::start_full(vec![], None, Some(toml)).await
    }

    /// A server whose root is a tmpfs of `bytes` bytes, to run out of space on purpose.
    pub async fn start_on_tmpfs(bytes: u64) -> anyhow::Result<Server> {
        Self::start_full(vec![], Some(bytes), None).await
    }

    async fn start_full(
        mut extra_args: Vec<String>,
        tmpfs: Option<u64>,
        config: Option<&str>,
    ) -> anyhow::Result<Server> {
        let dir = tempfile::Builder::new()
            .prefix("darwin-cri-test")
            .tempdir()?;
        if let Some(toml) = config {
            let path = dir.path().join("config.toml");
            std::fs::write(&path, toml)?;
            extra_args.extend(["--config".to_string(), path.display().to_string()]);
        }
        let mut server = Server {
            dir,
            child: None,
            extra_args,
        };
        if let Some(bytes) = tmpfs {
            let root = server.root();
            std::fs::create_dir_all(&root)?;
            mount_small_tmpfs(&root, bytes)?;
        }
        let layout = server.dir.path().join("busybox-layout");
        busybox_layout(&layout, BUSYBOX)?;
        let out = Command::new(binary())
            .args(server.args())
            .arg("image")
            .arg("import")
            .arg(&layout)
            .output()?;
        if !out.status.success() {
            bail!(
                "image import failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        server.restart().await?;
        Ok(server)
    }

    /// Starts the server process (again) and waits until it answers.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(binary())
            .args(self.args())
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((mut rt, _)) = connect(&self.socket()).await
                && rt.version(cri::VersionRequest::default()).await.is_ok()
            {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("server exited with {status}: {}", self.log());
            }
            if Instant::now() > deadline {
                bail!("server did not answer within 20 s: {}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's own log: `DARWIN_CRI_SERVER_LOG` if set (to keep it), else in the temp dir.
    pub fn log_path(&self) -> PathBuf {
        std::env::var_os("DARWIN_CRI_SERVER_LOG")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.dir.path().join("server.log"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits (up to 10 s) until no process runs below the server's pod directories.
    pub async fn wait_no_container_processes(&self) -> anyhow::Result<()> {
        let pods = self.root().join("pods");
        wait_for(
            Duration::from_secs(10),
            "no container process left",
            || async { processes_under(&pods).is_empty().then_some(()) },
        )
        .await
    }

    pub async fn client(
        &self,
    ) -> anyhow::Result<(RuntimeServiceClient<Channel>, ImageServiceClient<Channel>)> {
        connect(&self.socket()).await
    }
}

/// Pids of live processes whose root directory or command line points below `dir`.
pub fn processes_under(dir: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next()
            .unwrap_or("Z");
        if state == "Z" || state == "X" {
            continue;
        }
        let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let dir_s = dir.display().to_string();
        if root.starts_with(dir) || String::from_utf8_lossy(&cmdline).contains(&dir_s) {
            out.push(pid);
        }
    }
    out
}

/// Mount points at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir))
        .collect()
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        // Whatever a failed test left: kill its processes, undo its mounts, so the temporary
        // directory can go.
        for pid in processes_under(self.dir.path()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let mut mounts = mounts_under(self.dir.path());
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in mounts {
            let _ = platform::unmount(&m);
        }
    }
}

/// Polls `f` every 20 ms until it returns `Some`, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A pod config as kubelet sends it, minus the Linux section a darwin kubelet leaves out.
pub fn pod_config(name: &str, log_dir: &Path) -> cri::PodSandboxConfig {
    let uid = format!("uid-{name}");
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: uid.clone(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        }),
        labels: [
            ("io.kubernetes.pod.name".to_string(), name.to_string()),
            (
                "io.kubernetes.pod.namespace".to_string(),
                "default".to_string(),
            ),
            ("io.kubernetes.pod.uid".to_string(), uid),
            ("app".to_string(), name.to_string()),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

/// A container config running `sh -c script` from the busybox image.
pub fn container_config(name: &str, script: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: BUSYBOX.into(),
            ..Default::default()
        }),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}/0.log"),
        labels: [("io.kubernetes.container.name".to_string(), name.to_string())]
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

// ----- CRI call helpers ---------------------------------------------------------------------

/// The runtime service client.
pub type Rt = RuntimeServiceClient<Channel>;

/// RunPodSandbox with [`pod_config`], its log directory under the server's temp dir.
pub async fn run_pod(rt: &mut Rt, server: &Server, name: &str) -> anyhow::Result<String> {
    let logs = server.dir.path().join("logs").join(name);
    std::fs::create_dir_all(&logs)?;
    let resp = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config(name, &logs)),
            runtime_handler: String::new(),
        })
        .await?;
    Ok(resp.into_inner().pod_sandbox_id)
}

/// CreateContainer in `pod`.
pub async fn create(
    rt: &mut Rt,
    pod: &str,
    config: cri::ContainerConfig,
) -> Result<String, tonic::Status> {
    Ok(rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: None,
        })
        .await?
        .into_inner()
        .container_id)
}

/// StartContainer.
pub async fn start(rt: &mut Rt, id: &str) -> Result<(), tonic::Status> {
    rt.start_container(cri::StartContainerRequest {
        container_id: id.into(),
    })
    .await
    .map(|_| ())
}

/// ContainerStatus.
pub async fn status(rt: &mut Rt, id: &str) -> Result<cri::ContainerStatus, tonic::Status> {
    Ok(rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .unwrap_or_default())
}

/// Polls ContainerStatus until the container has exited.
pub async fn wait_exited(
    rt: &mut Rt,
    id: &str,
    timeout: Duration,
) -> anyhow::Result<cri::ContainerStatus> {
    let rt2 = rt.clone();
    wait_for(timeout, "the container to exit", || {
        let mut rt = rt2.clone();
        let id = id.to_string();
        async move {
            let s = status(&mut rt, &id).await.ok()?;
            (s.state == cri::ContainerState::ContainerExited as i32).then_some(s)
        }
    })
    .await
}

/// ExecSync with a timeout in seconds.
pub async fn exec(
    rt: &mut Rt,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<cri::ExecSyncResponse, tonic::Status> {
    Ok(rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        })
        .await?
        .into_inner())
}

// ----- /proc readings for tests and benchmarks ------------------------------------------------

/// A `/proc/PID/status` memory field (`VmRSS`, `RssAnon`, ...), in KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| {
            v.trim_start_matches(':')
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Proportional set size: shared pages divided among the processes that map them, in KiB.
pub fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of a process, in clock ticks.
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The pid of a container's monitor, from ContainerStatus's verbose info.
pub async fn monitor_pid(rt: &mut Rt, id: &str) -> anyhow::Result<i32> {
    let st = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await?
        .into_inner();
    let info: serde_json::Value =
        serde_json::from_str(st.info.get("info").map(String::as_str).unwrap_or("{}"))?;
    info["monitorPid"]
        .as_i64()
        .map(|p| p as i32)
        .ok_or_else(|| anyhow::anyhow!("no monitor pid for {id}"))
}

/// A free loopback TCP port (free when asked; tests bind it right after).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A plain HTTP/1.0 GET on loopback; the body.
pub fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    anyhow::ensure!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "GET {path}: {head}"
    );
    Ok(body.to_string())
}

/// The `p` quantile (0 to 1) of sorted samples, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Prints `name n= p50= p90= p99=` in milliseconds, as the benchmarks report.
pub fn print_latencies(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<36} n={:<4} p50={:>8.2} ms  p90={:>8.2} ms  p99={:>8.2} ms",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.9)),
        ms(percentile(&samples, 0.99)),
    );
}

/// The value of environment variable `name` parsed as a `T`, else `default` (the benchmarks'
/// knobs).
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `config` run as user `name` of the image (its /etc/passwd).
pub fn as_username(mut config: cri::ContainerConfig, name: &str) -> cri::ContainerConfig {
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_username: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

/// A server relaying `upstream` into container roots as the host's mDNSResponder, with one pod
/// and one running container (`sleep`): (server, client, pod, container, the container root's
/// real /var/run, where the relay's socket is).
pub async fn relayed_container(
    upstream: &Path,
) -> anyhow::Result<(Server, Rt, String, String, PathBuf)> {
    let server = Server::start_with_config(&format!(
        "[runtime]\nmdns_socket = {:?}\n",
        upstream.display().to_string()
    ))
    .await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "dns").await?;
    let cid = create(&mut rt, &pod, container_config("c", "exec sleep 1000")).await?;
    start(&mut rt, &cid).await?;
    let var_run = server
        .root()
        .join("pods")
        .join(&pod)
        .join("containers")
        .join(&cid)
        .join("rootfs/var/run")
        .canonicalize()?;
    Ok((server, rt, pod, cid, var_run))
}

/// A file system of `bytes` at `dir`, for the disk-full tests.
#[cfg(target_os = "linux")] // a sized tmpfs; macOS would need a RAM disk made with hdiutil
pub fn mount_small_tmpfs(dir: &Path, bytes: u64) -> anyhow::Result<()> {
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some(format!("size={bytes}").as_str()),
    )?;
    Ok(())
}

/// A file system of `bytes` at `dir`, for the disk-full tests.
#[cfg(not(target_os = "linux"))] // the disk-full tests run on the Linux twin only
pub fn mount_small_tmpfs(_dir: &Path, _bytes: u64) -> anyhow::Result<()> {
    bail!("a size-limited file system for the disk-full tests is made on Linux only")
}
