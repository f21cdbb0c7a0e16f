//! The real `darwin-cri` binary on a temporary root and socket, and a CRI client for it.

use super::*;

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
    /// The `darwin-cri` that [`Server::restart`] runs: [`binary`] unless a test swaps it (as
    /// an upgrade would).
    pub binary: PathBuf,
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
        // The test image (busybox) runs as root, which darwin-cri refuses unless allowed: every
        // server here allows it, unless its configuration says otherwise.
        let mut given = config.map(str::to_string);
        if let Some(i) = extra_args.iter().position(|a| a == "--config") {
            let path = extra_args.get(i + 1).cloned().unwrap_or_default();
            given = Some(std::fs::read_to_string(&path)?);
            extra_args.drain(i..(i + 2).min(extra_args.len()));
        }
        let toml = with_root_allowed(given.as_deref().unwrap_or(""))?;
        let path = dir.path().join("config.toml");
        std::fs::write(&path, toml)?;
        extra_args.extend(["--config".to_string(), path.display().to_string()]);
        let mut server = Server {
            dir,
            child: None,
            extra_args,
            binary: binary(),
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
        let child = Command::new(&self.binary)
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

    /// Container `id`'s bundle directory (its root is `rootfs` in it) in pod `pod`.
    pub fn container_dir(&self, pod: &str, id: &str) -> PathBuf {
        self.root()
            .join("pods")
            .join(pod)
            .join("containers")
            .join(id)
    }

    /// Waits (up to 10 s) until the removals the server finishes after its reply are done:
    /// RemoveContainer and RemovePodSandbox move a directory into `ROOT/trash` at once and
    /// unmount and delete it in the background.
    pub async fn wait_removals(&self) -> anyhow::Result<()> {
        let trash = self.root().join("trash");
        wait_for(Duration::from_secs(10), "the trash emptied", || async {
            std::fs::read_dir(&trash)
                .map_or(true, |mut d| d.next().is_none())
                .then_some(())
        })
        .await
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

/// `config` with `runtime.allow_root = true` unless it sets `allow_root` itself.
fn with_root_allowed(config: &str) -> anyhow::Result<String> {
    let mut table: toml::Table = config.parse()?;
    let runtime = table
        .entry("runtime")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(runtime) = runtime {
        runtime
            .entry("allow_root")
            .or_insert(toml::Value::Boolean(true));
    }
    Ok(toml::to_string(&table)?)
}
