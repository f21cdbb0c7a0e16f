//! The monitor process: starts the container process in its root, supervises it (output into
//! the log, limits, the exit record) and serves the control socket.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::fcntl::Flock;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::command::{command_for, read_spec};
use super::control::{Session, bind_control, handle_command};
use super::stdio::AttachedStdio;
use super::*;
use crate::fsutil::write_atomic;
use crate::logs::{LogWriter, Stream};
use crate::model::{ProcessSpec, now_nanos};

/// Space for the exit record, reserved at start: a full disk at exit cannot lose the exit code.
const EXIT_PENDING_FILE: &str = "exit.json.pending";

const EXIT_RECORD_SPACE: usize = 4096;

/// How long output held open by leftovers is still read after the main process exits.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// The monitor's main. Returns the process exit code.
pub fn run(bundle: &Path) -> i32 {
    let mut handshake = std::io::stdout();
    let _ = nix::unistd::setsid();
    match start(bundle) {
        Ok(running) => {
            let line = serde_json::to_string(&Handshake::Started(running.started.clone()))
                .unwrap_or_default();
            let _ = writeln!(handshake, "{line}");
            let _ = handshake.flush();
            match supervise(bundle, running) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("monitor {}: {e}", bundle.display());
                    1
                }
            }
        }
        Err(e) => {
            let line = serde_json::to_string(&Handshake::Failed(e.to_string())).unwrap_or_default();
            let _ = writeln!(handshake, "{line}");
            eprintln!("monitor {}: {e}", bundle.display());
            1
        }
    }
}

/// A monitor started ahead (`darwin-cri-monitor --wait`, see [`super::Waiting`]): it waits, on
/// stdin, for the server to name its bundle (one line), then runs as [`run`] with its stderr
/// in the bundle's `monitor.log` and stdin on /dev/null. Its fork, exec and loading were paid
/// before StartContainer. The end of stdin before a line (the server stopped) ends it quietly.
pub fn run_waiting() -> i32 {
    use std::io::BufRead;
    use std::os::unix::ffi::OsStringExt;
    let mut line = Vec::new();
    match std::io::stdin().lock().read_until(b'\n', &mut line) {
        Ok(_) if line.ends_with(b"\n") => {
            line.pop();
        }
        _ => return 0,
    }
    let bundle = PathBuf::from(std::ffi::OsString::from_vec(line));
    // Its command line says only `--wait`: its working directory says which container it
    // monitors (`ls -l /proc/PID/cwd`, `lsof -p PID`).
    if bundle.is_absolute() {
        let _ = std::env::set_current_dir(&bundle);
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(bundle_file(&bundle, "monitor.log"));
    if let Ok(log) = &log {
        let _ = nix::unistd::dup2_stderr(log);
    }
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
    }
    run(&bundle)
}

/// What `start` hands to `supervise`.
struct Running {
    child: std::process::Child,
    started: Started,
    stdout: OwnedFd,
    /// `None` with a TTY: the terminal carries both streams.
    stderr: Option<OwnedFd>,
    /// Where attach clients' input goes: the stdin pipe, or the terminal. `None` without stdin.
    input: Option<OwnedFd>,
    /// The terminal's controlling side, for resizes.
    terminal: Option<OwnedFd>,
    spec: ProcessSpec,
    control: Option<UnixListener>,
    /// Opened before the start is reported: the file exists when StartContainer returns, as
    /// kubelet and critest open it right after.
    log: LogWriter,
    _lock: Flock<std::fs::File>,
}

fn start(bundle: &Path) -> Result<Running, MonitorError> {
    let lock = lock_bundle(bundle)
        .map_err(|e| MonitorError::io("locking the bundle", e))?
        .ok_or(MonitorError::AlreadyRunning)?;
    if let Err(e) = platform::become_subreaper() {
        eprintln!("cannot become a subreaper: {e}");
    }
    let spec = read_spec(bundle)?;
    // Listening before the start is reported: once the server knows the container runs, log
    // reopening and limit updates work.
    let control = bind_control(&spec.control_socket);
    // A log that cannot be opened or written (disk full) loses output, never the container.
    let log = LogWriter::open(spec.log_target(), spec.max_log_line).unwrap_or_else(|e| {
        eprintln!(
            "cannot open the log {:?}: {e}; output is discarded",
            spec.log_path
        );
        LogWriter::discard(spec.max_log_line)
    });
    let mut cmd = command_for(&spec, &spec.args, spec.tty)?;
    let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| MonitorError::io("dup", e));
    let (stdout, stderr, input, terminal) = if spec.tty {
        let (master, slave) =
            platform::open_pty().map_err(|e| MonitorError::io("opening a pseudo-terminal", e))?;
        cmd.stdin(Stdio::from(dup(&slave)?))
            .stdout(Stdio::from(dup(&slave)?))
            .stderr(Stdio::from(slave));
        let input = if spec.stdin {
            Some(dup(&master)?)
        } else {
            None
        };
        let terminal = Some(dup(&master)?);
        (master, None, input, terminal)
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let input = if spec.stdin {
            let (in_r, in_w) = pipe()?;
            cmd.stdin(Stdio::from(in_r));
            Some(in_w)
        } else {
            cmd.stdin(Stdio::null());
            None
        };
        cmd.stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
        (out_r, Some(err_r), input, None)
    };
    let child = cmd
        .spawn()
        .map_err(|e| MonitorError::io(format!("starting {:?}", spec.args.first()), e))?;
    drop(cmd);
    let me = std::process::id() as i32;
    let started = Started {
        pid: child.id() as i32,
        start_time: platform::process_info(child.id() as i32)
            .map(|p| p.start_time)
            .unwrap_or(0),
        started_at: now_nanos(),
        monitor_pid: me,
        monitor_start_time: platform::process_info(me)
            .map(|p| p.start_time)
            .unwrap_or(0),
        protocol: PROTOCOL,
    };
    // From here on a failure must not leave the container running untracked.
    let mut child = child;
    let recorded = serde_json::to_vec(&started)
        .map_err(|e| MonitorError::parse("encoding the start", e))
        .and_then(|bytes| {
            write_atomic(&bundle_file(bundle, STARTED_FILE), &bytes)
                .map_err(|e| MonitorError::io("recording the start", e))
        })
        .and_then(|()| {
            // Room for the exit record now, while there may still be space on the disk.
            std::fs::write(
                bundle_file(bundle, EXIT_PENDING_FILE),
                [b' '; EXIT_RECORD_SPACE],
            )
            .map_err(|e| MonitorError::io("reserving the exit record", e))
        });
    if let Err(e) = recorded {
        let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok(Running {
        child,
        started,
        stdout,
        stderr,
        input,
        terminal,
        spec,
        control,
        log,
        _lock: lock,
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd), MonitorError> {
    platform::pipe_cloexec().map_err(|e| MonitorError::io("pipe", e))
}

fn exit_code(status: WaitStatus) -> Option<(i32, Option<i32>)> {
    match status {
        WaitStatus::Exited(_, code) => Some((code, None)),
        WaitStatus::Signaled(_, sig, _) => Some((128 + sig as i32, Some(sig as i32))),
        _ => None,
    }
}

/// What one poll of the supervisor found ready.
struct Ready {
    /// Per output stream, in [`Supervisor::streams`]' order.
    streams: Vec<bool>,
    /// A child exited (the reaper thread's pipe).
    reaped: bool,
    /// The control socket has connections to accept.
    control: bool,
    /// Per attached client, in order.
    clients: Vec<PollFlags>,
    /// The container's stdin can take pending input.
    input: bool,
    /// Connections of exec'd processes that spoke (a kill) or closed.
    execs: Vec<i32>,
}

/// The monitor's state while the container runs: one poll loop over the container's output,
/// the reaper's exit reports, the control socket, attached clients, exec'd processes and the
/// memory limit, until the main process has exited and its output is drained.
struct Supervisor {
    main: Pid,
    spec: ProcessSpec,
    log: LogWriter,
    log_errors: u64,
    control: Option<UnixListener>,
    streams: Vec<(std::fs::File, Stream)>,
    stdio: AttachedStdio,
    /// Processes exec'd through this monitor, by pid: the connection that hears their exit.
    execs: std::collections::HashMap<i32, UnixStream>,
    /// The reaper thread's reports, one line per exit: `pid code signal`.
    reaped: std::fs::File,
    /// Held while an exec'd process is spawned: std reaps a child whose exec failed itself, and
    /// must not find it reaped by the reaper thread already.
    reap_lock: std::sync::Arc<std::sync::Mutex<()>>,
    /// The main process's exit code and signal, once it exited.
    exited: Option<(i32, Option<i32>)>,
    /// Until when output held open by leftovers is still read.
    deadline: Option<Instant>,
    /// Why the memory limit killed the container, if it did.
    oom: Option<String>,
    interval: Duration,
    next_check: Instant,
    buf: Vec<u8>,
    _lock: Flock<std::fs::File>,
}

fn supervise(bundle: &Path, running: Running) -> std::io::Result<()> {
    let mut s = Supervisor::new(running)?;
    while !(s.exited.is_some() && s.streams.is_empty()) {
        let Some(ready) = s.wait()? else {
            continue;
        };
        s.serve_execs(ready.execs);
        s.stdio.serve_clients(&ready.clients);
        if ready.input {
            s.stdio.write_input();
        }
        s.pump_output(&ready.streams);
        if ready.reaped {
            s.child_exited()?;
        }
        if ready.control {
            s.accept_commands(bundle);
        }
        s.check_memory();
        if s.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    s.finish(bundle)
}

impl Supervisor {
    /// Takes over the started container and starts the reaper thread.
    fn new(running: Running) -> std::io::Result<Supervisor> {
        let Running {
            child,
            stdout,
            stderr,
            input,
            terminal,
            spec,
            control,
            log,
            _lock,
            ..
        } = running;
        let main = Pid::from_raw(child.id() as i32);
        // std's Child is not used to wait: the reaper thread reaps every child (orphans
        // included).
        drop(child);
        let (reaped, reap_lock) = spawn_reaper()?;
        let mut streams: Vec<(std::fs::File, Stream)> = vec![(stdout.into(), Stream::Stdout)];
        if let Some(stderr) = stderr {
            streams.push((stderr.into(), Stream::Stderr));
        }
        let stdio = AttachedStdio::new(input, terminal, spec.stdin_once);
        let interval = Duration::from_millis(spec.limit_interval_ms.max(10));
        Ok(Supervisor {
            main,
            log,
            log_errors: 0,
            control,
            streams,
            stdio,
            execs: Default::default(),
            reaped,
            reap_lock,
            exited: None,
            deadline: None,
            oom: None,
            interval,
            next_check: Instant::now() + interval,
            buf: vec![0u8; 64 * 1024],
            spec,
            _lock,
        })
    }

    /// Whether the memory limit is being watched: while the main process runs, until it fired.
    fn watching(&self) -> bool {
        self.exited.is_none() && self.oom.is_none() && self.spec.limits.memory_bytes.is_some()
    }

    /// Polls everything until something is ready or the next deadline (the drain after exit,
    /// the next memory check); `None` when interrupted.
    fn wait(&mut self) -> std::io::Result<Option<Ready>> {
        let wake_at = match (self.deadline, self.watching()) {
            (Some(d), _) => Some(d),
            (None, true) => Some(self.next_check),
            (None, false) => None,
        };
        let timeout = match wake_at {
            Some(at) => {
                // Rounded up: a timeout rounded down to 0 ms would spin until the deadline.
                let left = at.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left.as_micros().div_ceil(1000).min(60_000) as i32)
                    .unwrap_or(PollTimeout::NONE)
            }
            None => PollTimeout::NONE,
        };
        let mut fds: Vec<PollFd> = self
            .streams
            .iter()
            .map(|(f, _)| PollFd::new(f.as_fd(), PollFlags::POLLIN))
            .collect();
        let n = fds.len();
        let reaped_at = fds.len();
        // Also after the main process's exit: exec'd processes' exits still come.
        fds.push(PollFd::new(self.reaped.as_fd(), PollFlags::POLLIN));
        let control_at = fds.len();
        if let Some(l) = self.control.as_ref() {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
        }
        let clients_at = fds.len();
        let accepting = self.stdio.accepting_input();
        for c in &self.stdio.clients {
            let mut flags = PollFlags::empty();
            if accepting {
                flags |= PollFlags::POLLIN;
            }
            if !c.out.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(c.conn.as_fd(), flags));
        }
        let execs_at = fds.len();
        let exec_pids: Vec<i32> = self.execs.keys().copied().collect();
        for pid in &exec_pids {
            if let Some(conn) = self.execs.get(pid) {
                fds.push(PollFd::new(conn.as_fd(), PollFlags::POLLIN));
            }
        }
        let input_at = fds.len();
        let pending = !self.stdio.pending.is_empty();
        if let Some(input) = self.stdio.input.as_ref().filter(|_| pending) {
            fds.push(PollFd::new(input.as_fd(), PollFlags::POLLOUT));
        }
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let any = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
        Ok(Some(Ready {
            streams: fds[..n].iter().map(any).collect(),
            reaped: fds.get(reaped_at).is_some_and(any),
            control: self.control.is_some() && fds.get(control_at).is_some_and(any),
            clients: fds[clients_at..execs_at]
                .iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect(),
            input: fds.get(input_at).is_some_and(any),
            execs: exec_pids
                .iter()
                .zip(&fds[execs_at..input_at])
                .filter(|(_, f)| any(f))
                .map(|(pid, _)| *pid)
                .collect(),
        }))
    }

    /// The server asks to kill an exec'd process, or gave it up (closed its connection): only
    /// this monitor knows the pid still names that process.
    fn serve_execs(&mut self, ready: Vec<i32>) {
        for pid in ready {
            let mut word = [0u8; 64];
            let gone = match self.execs.get(&pid).map(|c| (&*c).read(&mut word)) {
                Some(Ok(0)) | Some(Err(_)) => true,
                Some(Ok(_)) => false,
                None => continue,
            };
            if gone {
                self.execs.remove(&pid);
            }
            crate::exec::kill_exec_tree(pid);
        }
    }

    /// Output into the log and to attached clients; a stream at its end is closed. A log that
    /// cannot be written loses output, never the container.
    fn pump_output(&mut self, ready: &[bool]) {
        let mut closed = Vec::new();
        for (i, is_ready) in ready.iter().enumerate() {
            if !is_ready {
                continue;
            }
            let (file, stream) = &mut self.streams[i];
            let result = match file.read(&mut self.buf) {
                Ok(0) | Err(_) => {
                    closed.push(i);
                    self.log.close(*stream)
                }
                Ok(n) => {
                    self.stdio.broadcast(*stream, &self.buf[..n]);
                    self.log.write(*stream, &self.buf[..n])
                }
            };
            if let Err(e) = result {
                self.log_errors += 1;
                if self.log_errors.is_power_of_two() {
                    eprintln!(
                        "writing the log failed ({} times): {e}; output is lost, the container runs on",
                        self.log_errors
                    );
                }
            }
        }
        for i in closed.into_iter().rev() {
            self.streams.remove(i);
        }
    }

    /// One exit the reaper reported: the main process's (leftovers are killed, output drained
    /// for a while), or an exec'd process's (its connection hears the code).
    fn child_exited(&mut self) -> std::io::Result<()> {
        let mut line = String::new();
        let mut byte = [0u8; 1];
        while self.reaped.read(&mut byte)? == 1 && byte[0] != b'\n' {
            line.push(byte[0] as char);
        }
        let mut parts = line.split(' ').map(|p| p.parse::<i32>().unwrap_or(0));
        let pid = parts.next().unwrap_or(0);
        let code = parts.next().unwrap_or(255);
        let sig = parts.next().filter(|s| *s != 0);
        if pid == self.main.as_raw() && self.exited.is_none() {
            self.exited = Some((code, sig));
            kill_leftovers(self.main);
            self.deadline = Some(Instant::now() + DRAIN_AFTER_EXIT);
        } else if let Some(conn) = self.execs.remove(&pid) {
            let _ = (&conn).write_all(format!("exit {code}\n").as_bytes());
        }
        Ok(())
    }

    /// The server's commands on the control socket: attach, exec, log reopening, limits.
    fn accept_commands(&mut self, bundle: &Path) {
        let Some(listener) = self.control.as_ref() else {
            return;
        };
        while let Ok((conn, _)) = listener.accept() {
            let ended = self.exited.is_some();
            let session = handle_command(
                bundle,
                conn,
                &mut self.log,
                &mut self.spec,
                ended,
                &self.reap_lock,
            );
            match session {
                Some(Session::Attach(client)) => self.stdio.add_client(client),
                Some(Session::Exec(pid, conn)) => {
                    self.execs.insert(pid, conn);
                }
                None => {}
            }
        }
    }

    /// The memory limit, checked every interval over the whole process tree: over it, every
    /// process is killed and the exit says OOMKilled.
    fn check_memory(&mut self) {
        if !self.watching() || Instant::now() < self.next_check {
            return;
        }
        self.next_check = Instant::now() + self.interval;
        if let Some(limit) = self.spec.limits.memory_bytes {
            let used = tree_memory(self.main);
            if used > limit {
                self.oom = Some(format!(
                    "the container's processes used {used} bytes of memory, over its limit of {limit}; they were killed"
                ));
                kill_leftovers(self.main);
            }
        }
    }

    /// The end: logs closed, attached clients and exec'd processes told, the control socket
    /// removed, and the exit recorded.
    fn finish(mut self, bundle: &Path) -> std::io::Result<()> {
        for (_, stream) in &self.streams {
            let _ = self.log.close(*stream);
        }
        // Attached clients get what is left of the output; closing them tells them it ended.
        self.stdio.finish();
        // Exec'd processes not reported yet were killed with the container.
        for conn in self.execs.values() {
            let _ = (&*conn).write_all(b"exit 137\n");
        }
        if let Some(l) = self.control.take() {
            drop(l);
            let _ = std::fs::remove_file(&self.spec.control_socket);
        }
        let (exit_code, signal) = self.exited.unwrap_or((255, None));
        let oom = self.oom.take();
        let exit = Exit {
            exit_code: if oom.is_some() { 137 } else { exit_code },
            signal,
            finished_at: now_nanos(),
            reason: oom.as_ref().map(|_| "OOMKilled".to_string()),
            message: oom,
            cpu_ns: reaped_cpu_ns(),
        };
        record_exit(bundle, &exit)
    }
}

/// The reaper thread: reaps every child (orphans of the container included, the monitor being
/// their subreaper) and reports each exit on a pipe the supervisor polls. With the lock that
/// spawning an exec'd process holds.
#[allow(clippy::type_complexity)]
fn spawn_reaper() -> std::io::Result<(std::fs::File, std::sync::Arc<std::sync::Mutex<()>>)> {
    let (wake_r, wake_w) = platform::pipe_cloexec()?;
    let reap_lock = std::sync::Arc::new(std::sync::Mutex::new(()));
    let reaper_lock = std::sync::Arc::clone(&reap_lock);
    std::thread::spawn(move || {
        let mut wake = std::fs::File::from(wake_w);
        loop {
            // Every exit is reported: the main process's, and those of processes exec'd
            // through this monitor (the others, reaped orphans, are ignored there).
            match platform::wait_for_exited_child() {
                Ok(pid) => {
                    let _held = reaper_lock.lock();
                    let status = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
                    if let Ok(status) = status
                        && let (Some(pid), Some((code, sig))) = (status.pid(), exit_code(status))
                    {
                        let _ = writeln!(wake, "{pid} {code} {}", sig.unwrap_or(0));
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                // No children (yet): nothing to wait for.
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    });
    Ok((std::fs::File::from(wake_r), reap_lock))
}

/// CPU time of the children this process has waited for: here, the container's whole tree
/// (its processes' own waits fold their children in).
fn reaped_cpu_ns() -> u64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_CHILDREN)
        .map(|u| {
            let ns = |t: nix::sys::time::TimeVal| {
                t.tv_sec() as u64 * 1_000_000_000 + t.tv_usec() as u64 * 1000
            };
            ns(u.user_time()) + ns(u.system_time())
        })
        .unwrap_or(0)
}

/// Writes the exit record: atomically through a new file, or, when the disk is full, into the
/// space reserved at start, renamed into place once complete.
fn record_exit(bundle: &Path, exit: &Exit) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(exit).map_err(std::io::Error::other)?;
    let target = bundle_file(bundle, EXIT_FILE);
    let pending = bundle_file(bundle, EXIT_PENDING_FILE);
    if write_atomic(&target, &bytes).is_ok() {
        let _ = std::fs::remove_file(&pending);
        return Ok(());
    }
    bytes.truncate(EXIT_RECORD_SPACE);
    let mut f = std::fs::OpenOptions::new().write(true).open(&pending)?;
    f.write_all(&bytes)?;
    drop(f);
    std::fs::rename(&pending, &target)
}

/// Memory the container holds: every process below this monitor (orphans come to it as a
/// subreaper), plus the main process.
fn tree_memory(main: Pid) -> u64 {
    let mut pids = platform::tree(std::process::id() as i32);
    if !pids.contains(&main.as_raw()) {
        pids.push(main.as_raw());
    }
    pids.iter().filter_map(|p| platform::rss_bytes(*p)).sum()
}

/// Kills what the container left behind: its process group and every descendant of this monitor.
fn kill_leftovers(main: Pid) {
    let _ = killpg(main, Signal::SIGKILL);
    let _ = kill(main, Signal::SIGKILL);
    for pid in platform::tree(std::process::id() as i32) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn exe(root: &Path, path: &str, mode: u32) {
        let p = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn executables_are_found_as_the_container_would_find_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        exe(root, "/usr/bin/tool", 0o755);
        exe(root, "/bin/data", 0o644);
        exe(root, "/work/run.sh", 0o700);
        let env = vec!["PATH=/nowhere:/bin:/usr/bin".to_string()];
        assert_eq!(
            find_executable(root, "/", "tool", &env).expect("on PATH"),
            "/usr/bin/tool"
        );
        assert_eq!(
            find_executable(root, "/work", "./run.sh", &env).expect("relative to cwd"),
            "/work/./run.sh"
        );
        let not_exec = find_executable(root, "/", "data", &env).expect_err("not executable");
        assert!(
            not_exec
                .to_string()
                .contains("not found in $PATH (/nowhere:/bin:/usr/bin)"),
            "{not_exec}"
        );
        let missing = find_executable(root, "/", "/bin/nothing", &env).expect_err("missing");
        assert!(
            missing.to_string().contains("no such executable file"),
            "{missing}"
        );
        assert!(matches!(
            find_executable(root, "/", "", &env),
            Err(MonitorError::Refused(_))
        ));
        // A link out of the root resolves inside it: the host's /bin/sh is not the container's.
        std::os::unix::fs::symlink("/bin/sh", root.join("usr/bin/escape")).expect("symlink");
        assert!(find_executable(root, "/", "escape", &env).is_err());
    }

    #[test]
    fn exit_codes_follow_the_shell_convention_for_signals() {
        let pid = Pid::from_raw(42);
        assert_eq!(exit_code(WaitStatus::Exited(pid, 3)), Some((3, None)));
        assert_eq!(
            exit_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some((137, Some(9)))
        );
        assert_eq!(exit_code(WaitStatus::StillAlive), None);
    }

    #[test]
    fn the_exit_record_is_written_and_the_reserved_space_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bundle = dir.path();
        std::fs::write(
            bundle_file(bundle, EXIT_PENDING_FILE),
            [b' '; EXIT_RECORD_SPACE],
        )
        .expect("reserve");
        let exit = Exit {
            exit_code: 137,
            signal: Some(9),
            finished_at: 5,
            reason: Some("OOMKilled".into()),
            message: None,
            cpu_ns: 7,
        };
        record_exit(bundle, &exit).expect("record");
        assert_eq!(read_exit(bundle), Some(exit));
        assert!(!bundle_file(bundle, EXIT_PENDING_FILE).exists());
    }

    #[test]
    fn a_spec_that_cannot_be_read_says_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = read_spec(dir.path()).expect_err("no spec");
        assert!(matches!(e, MonitorError::Io { .. }), "{e}");
        std::fs::write(bundle_file(dir.path(), PROCESS_FILE), "{").expect("write");
        let e = read_spec(dir.path()).expect_err("bad spec");
        assert!(e.to_string().starts_with("parsing the process spec"), "{e}");
    }
}
