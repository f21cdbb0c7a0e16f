//! Sessions with a running container through its monitor: Exec and Attach (streams handed to
//! the streaming server), ExecSync, and the monitor's control commands (log reopening).

use super::*;

/// Output ExecSync keeps per stream; more is read and dropped. kubelet's CRI client accepts
/// messages up to 16 MiB, so both streams together stay below that.
pub(super) const EXEC_OUTPUT_LIMIT: usize = 7 << 20;

/// What ExecSync returns.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}
/// What a request that needs container `c` running is told when it is not: for an exited
/// one, when it exited and with what code.
pub fn not_running_message(c: &Container, what: &str) -> String {
    match c.state {
        ContainerState::Exited => format!(
            "container {} is not running (exited at {}, code {}): cannot {what}",
            c.id,
            chrono::DateTime::from_timestamp_nanos(c.finished_at)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            c.exit_code
        ),
        ContainerState::Running => format!(
            "container {} is running but its monitor does not answer: cannot {what}",
            c.id
        ),
        ContainerState::Created => format!(
            "container {} is not running (created, not started): cannot {what}",
            c.id
        ),
        ContainerState::Unknown => format!(
            "container {} is not running (its state is unknown): cannot {what}",
            c.id
        ),
    }
}

impl Runtime {
    /// Why container `id` cannot take `what` (an exec, an attach) now: it is not running. An
    /// exit under way (its monitor gone, its record not written yet) is waited for a moment, so
    /// that a request racing the container's end gets the exit's facts, never the OS error of a
    /// socket that went away.
    pub(super) async fn not_running(&self, id: &str, what: &str) -> Error {
        let exit = self.exits.lock().ok().and_then(|e| e.get(id).cloned());
        if let Some(mut exit) = exit {
            let _ = tokio::time::timeout(Duration::from_secs(2), exit.wait_for(|done| *done)).await;
        }
        // The monitor records the exit after its process ends: give that a moment too.
        for _ in 0..20 {
            match self.container(id) {
                Ok(c) if c.state == ContainerState::Running && !monitor::is_running(&c.dir) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => break,
            }
        }
        match self.container(id) {
            Ok(c) => Error::WrongState {
                message: not_running_message(&c, what),
                id: c.id,
                state: c.state,
            },
            Err(e) => e,
        }
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
            return Err(self.not_running(id, "exec in it").await);
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
        let (conn, pid) = match started {
            Ok(started) => started,
            // A monitor that an older darwin-cri started, from before exec went through it.
            Err(e) if monitor::is_unknown_command(&e) => {
                return Err(Error::FailedPrecondition(format!(
                    "container {} runs under a monitor from an older darwin-cri (protocol {}) \
                     that cannot exec; restart the container to exec in it",
                    c.id,
                    c.monitor_protocol.max(1)
                )));
            }
            // The monitor refused the command itself (no such executable, say): its answer.
            Err(e)
                if e.kind() == std::io::ErrorKind::Other
                    && monitor::is_running(&c.dir)
                    && !e.to_string().contains("has exited") =>
            {
                return Err(Error::FailedPrecondition(format!(
                    "exec {:?} in container {}: {e}",
                    req.cmd[0], c.id
                )));
            }
            // The socket is gone or reset: the container ended meanwhile.
            Err(_) => return Err(self.not_running(id, "exec in it").await),
        };
        crate::exec::ExecProcess::new(pid, conn, stdio, req)
            .map_err(|e| Error::io("preparing the exec's stdio", e))
    }

    /// Connects to running container `id`'s stdio through its monitor (see [`crate::attach`]).
    /// Returns the connection, past the handshake, and whether the container has a TTY.
    pub async fn attach(&self, id: &str) -> Result<(std::os::unix::net::UnixStream, bool)> {
        let c = self.container(id)?;
        if c.state != ContainerState::Running {
            return Err(self.not_running(id, "attach to it").await);
        }
        let socket = c.process.control_socket.clone();
        let tty = c.process.tty;
        let conn = tokio::task::spawn_blocking(move || monitor::open_attach(&socket))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        let conn = match conn {
            Ok(conn) => conn,
            Err(_) => return Err(self.not_running(id, "attach to it").await),
        };
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

    pub(super) async fn monitor_command(&self, c: &Container, command: &'static str) -> Result<()> {
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
}
