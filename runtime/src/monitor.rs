//! The per-container monitor: the `darwin-cri` binary re-executed as `darwin-cri monitor BUNDLE`.
//!
//! The server is never the parent of a container. At StartContainer it starts a monitor, which
//! leaves the server's session (setsid), starts the container process in its root, tells the
//! server the pid on its stdout (one JSON line), then copies the container's stdout and stderr
//! into the CRI log file until the container exits. It records the exit atomically in
//! `BUNDLE/exit.json` and exits. The server may crash or restart meanwhile: nothing here depends
//! on it. On Linux the monitor is a child subreaper, so descendants that the container orphans
//! become its children; when the container's main process exits, every one of them is killed, as
//! the end of a Linux container's pid namespace would kill them.
//!
//! No async runtime here: a poll loop and one waiter thread keep the monitor's memory small.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use image_service::safe_path::resolve_in_root;
use nix::fcntl::{Flock, FlockArg};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;
use crate::logs::{LogWriter, Stream};
use crate::model::{ProcessSpec, now_nanos};
use platform::Credentials;

pub const PROCESS_FILE: &str = "process.json";
pub const STARTED_FILE: &str = "started.json";
pub const EXIT_FILE: &str = "exit.json";
/// Held (flock) by the monitor for its whole life: the server's test of whether it still runs,
/// immune to pid reuse, and a guard against two monitors for one container.
pub const LOCK_FILE: &str = "monitor.lock";
/// Space for the exit record, reserved at start: a full disk at exit cannot lose the exit code.
const EXIT_PENDING_FILE: &str = "exit.json.pending";
const EXIT_RECORD_SPACE: usize = 4096;

/// How long output held open by leftovers is still read after the main process exits.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// What the monitor tells the server once the container process runs (also kept in
/// `started.json` for a server that restarts before it read the handshake).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Started {
    pub pid: i32,
    /// The container process's start time (platform units), to tell it from a later process
    /// that reuses its pid (after a reboot, say).
    #[serde(default)]
    pub start_time: u64,
    pub started_at: i64,
    pub monitor_pid: i32,
    pub monitor_start_time: u64,
}

/// The handshake line: started, or why the container could not start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Handshake {
    Started(Started),
    Failed(String),
}

/// How the container ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Exit {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub finished_at: i64,
    /// Set when the monitor ended the container itself, e.g. "OOMKilled".
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// CPU time of every process the monitor reaped (the container's whole tree).
    #[serde(default)]
    pub cpu_ns: u64,
}

pub fn bundle_file(bundle: &Path, name: &str) -> PathBuf {
    bundle.join(name)
}

pub fn read_exit(bundle: &Path) -> Option<Exit> {
    let bytes = std::fs::read(bundle_file(bundle, EXIT_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn read_started(bundle: &Path) -> Option<Started> {
    let bytes = std::fs::read(bundle_file(bundle, STARTED_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Finds `name` as the container would: a path containing `/` is taken as is (relative to
/// `cwd`), anything else is searched in the container's `PATH`. Resolution stays inside `rootfs`.
/// Returns the path as the container sees it.
pub fn find_executable(
    rootfs: &Path,
    cwd: &str,
    name: &str,
    env: &[String],
) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |in_container: &str| -> bool {
        resolve_in_root(rootfs, Path::new(in_container))
            .and_then(std::fs::metadata)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.is_empty() {
        return Err("no command specified".into());
    }
    if name.contains('/') {
        let full = if name.starts_with('/') {
            name.to_string()
        } else {
            format!("{}/{name}", cwd.trim_end_matches('/'))
        };
        return if runnable(&full) {
            Ok(full)
        } else {
            Err(format!(
                "exec: {name:?}: no such executable file in the container"
            ))
        };
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| format!("{}/{name}", d.trim_end_matches('/')))
        .find(|c| runnable(c))
        .ok_or_else(|| format!("exec: {name:?}: executable file not found in $PATH ({path})"))
}

/// Builds the command for `spec`'s process (or `args` instead of its own), confined to its root;
/// with `terminal`, as a session leader whose stdin is its controlling terminal.
pub fn command_for(spec: &ProcessSpec, args: &[String], terminal: bool) -> Result<Command, String> {
    let program = find_executable(
        &spec.rootfs,
        &spec.cwd,
        args.first().map(String::as_str).unwrap_or(""),
        &spec.env,
    )?;
    let mut cmd = Command::new(program);
    cmd.arg0(args.first().map(String::as_str).unwrap_or_default());
    cmd.args(&args[1..]).env_clear();
    for kv in &spec.env {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let creds = Credentials {
        uid: spec.uid,
        gid: spec.gid,
        groups: spec.groups.clone(),
        nice: spec.limits.nice,
        nproc: spec.limits.pids,
        nofile: spec.limits.nofile,
        terminal,
    };
    platform::confine(&mut cmd, &spec.rootfs, Path::new(&spec.cwd), &creds)
        .map_err(|e| e.to_string())?;
    Ok(cmd)
}

use std::os::unix::process::CommandExt;

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
            let line = serde_json::to_string(&Handshake::Failed(e.clone())).unwrap_or_default();
            let _ = writeln!(handshake, "{line}");
            eprintln!("monitor {}: {e}", bundle.display());
            1
        }
    }
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
    _lock: Flock<std::fs::File>,
}

fn read_spec(bundle: &Path) -> Result<ProcessSpec, String> {
    std::fs::read(bundle_file(bundle, PROCESS_FILE))
        .map_err(|e| format!("reading the process spec: {e}"))
        .and_then(|b| {
            serde_json::from_slice(&b).map_err(|e| format!("parsing the process spec: {e}"))
        })
}

/// Whether a monitor holds `bundle`'s lock, i.e. still runs.
pub fn is_running(bundle: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .open(bundle_file(bundle, LOCK_FILE))
    else {
        return false;
    };
    Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err()
}

fn start(bundle: &Path) -> Result<Running, String> {
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(bundle_file(bundle, LOCK_FILE))
        .map_err(|e| format!("creating the monitor lock: {e}"))?;
    let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock)
        .map_err(|_| "another monitor already runs this container".to_string())?;
    if let Err(e) = platform::become_subreaper() {
        eprintln!("cannot become a subreaper: {e}");
    }
    let spec = read_spec(bundle)?;
    // Listening before the start is reported: once the server knows the container runs, log
    // reopening and limit updates work.
    let control = bind_control(&spec.control_socket);
    let mut cmd = command_for(&spec, &spec.args, spec.tty)?;
    let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| format!("dup: {e}"));
    let (stdout, stderr, input, terminal) = if spec.tty {
        let (master, slave) =
            platform::open_pty().map_err(|e| format!("opening a pseudo-terminal: {e}"))?;
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
        .map_err(|e| format!("starting {:?}: {e}", spec.args.first()))?;
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
    };
    // From here on a failure must not leave the container running untracked.
    let mut child = child;
    let recorded = serde_json::to_vec(&started)
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            write_atomic(&bundle_file(bundle, STARTED_FILE), &bytes)
                .map_err(|e| format!("recording the start: {e}"))
        })
        .and_then(|()| {
            // Room for the exit record now, while there may still be space on the disk.
            std::fs::write(
                bundle_file(bundle, EXIT_PENDING_FILE),
                [b' '; EXIT_RECORD_SPACE],
            )
            .map_err(|e| format!("reserving the exit record: {e}"))
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
        _lock: lock,
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    platform::pipe_cloexec().map_err(|e| format!("pipe: {e}"))
}

fn exit_code(status: WaitStatus) -> Option<(i32, Option<i32>)> {
    match status {
        WaitStatus::Exited(_, code) => Some((code, None)),
        WaitStatus::Signaled(_, sig, _) => Some((128 + sig as i32, Some(sig as i32))),
        _ => None,
    }
}

fn supervise(bundle: &Path, running: Running) -> std::io::Result<()> {
    let Running {
        child,
        stdout,
        stderr,
        input,
        terminal,
        mut spec,
        control,
        _lock,
        ..
    } = running;
    // A log that cannot be opened or written (disk full) loses output, never the container.
    let mut log =
        LogWriter::open(spec.log_path.as_deref(), spec.max_log_line).unwrap_or_else(|e| {
            eprintln!(
                "cannot open the log {:?}: {e}; output is discarded",
                spec.log_path
            );
            LogWriter::discard(spec.max_log_line)
        });
    let mut log_errors = 0u64;
    let main = Pid::from_raw(child.id() as i32);
    // std's Child is not used to wait: the waiter thread reaps every child (orphans included).
    drop(child);

    let (wake_r, wake_w) = platform::pipe_cloexec()?;
    // Held while an exec'd process is spawned: std reaps a child whose exec failed itself, and
    // must not find it reaped by this thread already.
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

    let mut streams: Vec<(std::fs::File, Stream)> = vec![(stdout.into(), Stream::Stdout)];
    if let Some(stderr) = stderr {
        streams.push((stderr.into(), Stream::Stderr));
    }
    let mut stdio = AttachedStdio::new(input, terminal, spec.stdin_once);
    // Processes exec'd through this monitor, by pid: the connection that hears their exit.
    let mut execs: std::collections::HashMap<i32, UnixStream> = Default::default();
    let mut wake = std::fs::File::from(wake_r);
    let mut exited: Option<(i32, Option<i32>)> = None;
    let mut deadline: Option<Instant> = None;
    let mut oom: Option<String> = None;
    let interval = Duration::from_millis(spec.limit_interval_ms.max(10));
    let mut next_check = Instant::now() + interval;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if exited.is_some() && streams.is_empty() {
            break;
        }
        let watching = exited.is_none() && oom.is_none() && spec.limits.memory_bytes.is_some();
        let wake_at = match (deadline, watching) {
            (Some(d), _) => Some(d),
            (None, true) => Some(next_check),
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
        let (ready, wake_ready, control_ready, client_ready, input_ready, exec_ready) = {
            let mut fds: Vec<PollFd> = streams
                .iter()
                .map(|(f, _)| PollFd::new(f.as_fd(), PollFlags::POLLIN))
                .collect();
            let n = fds.len();
            let wake_at = fds.len();
            // Also after the main process's exit: exec'd processes' exits still come.
            fds.push(PollFd::new(wake.as_fd(), PollFlags::POLLIN));
            let control_at = fds.len();
            if let Some(l) = control.as_ref() {
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            }
            let clients_at = fds.len();
            let accepting = stdio.accepting_input();
            for c in &stdio.clients {
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
            let exec_pids: Vec<i32> = execs.keys().copied().collect();
            for pid in &exec_pids {
                if let Some(conn) = execs.get(pid) {
                    fds.push(PollFd::new(conn.as_fd(), PollFlags::POLLIN));
                }
            }
            let input_at = fds.len();
            if let Some(input) = stdio.input.as_ref().filter(|_| !stdio.pending.is_empty()) {
                fds.push(PollFd::new(input.as_fd(), PollFlags::POLLOUT));
            }
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let any = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            let ready: Vec<bool> = fds[..n].iter().map(any).collect();
            let wake_ready = fds.get(wake_at).is_some_and(any);
            let control_ready = control.is_some() && fds.get(control_at).is_some_and(any);
            let exec_ready: Vec<i32> = exec_pids
                .iter()
                .zip(&fds[execs_at..input_at])
                .filter(|(_, f)| any(f))
                .map(|(pid, _)| *pid)
                .collect();
            let client_ready: Vec<PollFlags> = fds[clients_at..execs_at]
                .iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect();
            let input_ready = fds.get(input_at).is_some_and(any);
            (
                ready,
                wake_ready,
                control_ready,
                client_ready,
                input_ready,
                exec_ready,
            )
        };
        // The server asks to kill an exec'd process, or gave it up (closed its connection):
        // only this monitor knows the pid still names that process.
        for pid in exec_ready {
            let mut word = [0u8; 64];
            let gone = match execs.get(&pid).map(|c| (&*c).read(&mut word)) {
                Some(Ok(0)) | Some(Err(_)) => true,
                Some(Ok(_)) => false,
                None => continue,
            };
            if gone {
                execs.remove(&pid);
            }
            crate::exec::kill_exec_tree(pid);
        }
        stdio.serve_clients(&client_ready);
        if input_ready {
            stdio.write_input();
        }
        let mut closed = Vec::new();
        for (i, is_ready) in ready.into_iter().enumerate() {
            if !is_ready {
                continue;
            }
            let (file, stream) = &mut streams[i];
            let result = match file.read(&mut buf) {
                Ok(0) | Err(_) => {
                    closed.push(i);
                    log.close(*stream)
                }
                Ok(n) => {
                    stdio.broadcast(*stream, &buf[..n]);
                    log.write(*stream, &buf[..n])
                }
            };
            if let Err(e) = result {
                log_errors += 1;
                if log_errors.is_power_of_two() {
                    eprintln!(
                        "writing the log failed ({log_errors} times): {e}; output is lost, the container runs on"
                    );
                }
            }
        }
        for i in closed.into_iter().rev() {
            streams.remove(i);
        }
        if wake_ready {
            let mut line = String::new();
            let mut byte = [0u8; 1];
            while wake.read(&mut byte)? == 1 && byte[0] != b'\n' {
                line.push(byte[0] as char);
            }
            let mut parts = line.split(' ').map(|p| p.parse::<i32>().unwrap_or(0));
            let pid = parts.next().unwrap_or(0);
            let code = parts.next().unwrap_or(255);
            let sig = parts.next().filter(|s| *s != 0);
            if pid == main.as_raw() && exited.is_none() {
                exited = Some((code, sig));
                kill_leftovers(main);
                deadline = Some(Instant::now() + DRAIN_AFTER_EXIT);
            } else if let Some(conn) = execs.remove(&pid) {
                let _ = (&conn).write_all(format!("exit {code}\n").as_bytes());
            }
        }
        if control_ready && let Some(listener) = control.as_ref() {
            while let Ok((conn, _)) = listener.accept() {
                let ended = exited.is_some();
                match handle_command(bundle, conn, &mut log, &mut spec, ended, &reap_lock) {
                    Some(Session::Attach(client)) => stdio.add_client(client),
                    Some(Session::Exec(pid, conn)) => {
                        execs.insert(pid, conn);
                    }
                    None => {}
                }
            }
        }
        if watching && Instant::now() >= next_check {
            next_check = Instant::now() + interval;
            if let Some(limit) = spec.limits.memory_bytes {
                let used = tree_memory(main);
                if used > limit {
                    oom = Some(format!(
                        "the container's processes used {used} bytes of memory, over its limit of {limit}; they were killed"
                    ));
                    kill_leftovers(main);
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    for (_, stream) in &streams {
        let _ = log.close(*stream);
    }
    // Attached clients get what is left of the output; closing them tells them it ended.
    stdio.finish();
    // Exec'd processes not reported yet were killed with the container.
    for conn in execs.values() {
        let _ = (&*conn).write_all(b"exit 137\n");
    }
    if let Some(l) = control {
        drop(l);
        let _ = std::fs::remove_file(&spec.control_socket);
    }
    let (exit_code, signal) = exited.unwrap_or((255, None));
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

/// The control socket: one command per connection, one line each way.
fn bind_control(path: &Path) -> Option<UnixListener> {
    if path.as_os_str().is_empty() {
        return None;
    }
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match UnixListener::bind(path).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!(
                "cannot listen on {}: {e}; log reopening and limit updates are unavailable",
                path.display()
            );
            None
        }
    }
}

/// A control connection that outlives its command.
enum Session {
    /// Served with the container's stdio.
    Attach(UnixStream),
    /// Told when the process it started exits.
    Exec(i32, UnixStream),
}

/// What a server asks to exec: sent after `exec`, with the process's stdio as descriptors (one,
/// the terminal, with `tty`; else stdin, stdout, stderr).
#[derive(Debug, Serialize, Deserialize)]
pub struct ExecStart {
    pub args: Vec<String>,
    pub tty: bool,
}

/// Serves one control command. `attach` and `exec` connections are returned, past their
/// handshake, to be served on.
fn handle_command(
    bundle: &Path,
    conn: UnixStream,
    log: &mut LogWriter,
    spec: &mut ProcessSpec,
    ended: bool,
    reap_lock: &std::sync::Mutex<()>,
) -> Option<Session> {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(&conn);
    let reply = match std::io::BufRead::read_line(&mut reader, &mut line) {
        Err(e) => format!("error reading the command: {e}"),
        Ok(_) => match line.trim() {
            // Everything read before this point went to the old file; what follows goes to the
            // new one: the monitor is the only writer, so no line is lost or written twice.
            "reopen" => match log.reopen(spec.log_path.as_deref()) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("error reopening {:?}: {e}", spec.log_path),
            },
            "limits" => match read_spec(bundle) {
                Ok(new) => {
                    spec.limits = new.limits;
                    apply_limits(spec)
                }
                Err(e) => format!("error {e}"),
            },
            "attach" => {
                if (&conn).write_all(b"ok\n").is_ok() && conn.set_nonblocking(true).is_ok() {
                    return Some(Session::Attach(conn));
                }
                return None;
            }
            "exec" if ended => "error the container has exited".to_string(),
            "exec" => {
                return match start_exec_here(&conn, spec, reap_lock) {
                    Ok(pid) => {
                        let _ = (&conn).write_all(format!("ok {pid}\n").as_bytes());
                        let _ = conn.set_nonblocking(true);
                        Some(Session::Exec(pid, conn))
                    }
                    Err(e) => {
                        let _ = (&conn).write_all(format!("error {e}\n").as_bytes());
                        None
                    }
                };
            }
            other => format!("error unknown command {other:?}"),
        },
    };
    let _ = (&conn).write_all(format!("{reply}\n").as_bytes());
    None
}

/// Receives an [`ExecStart`] and its stdio on `conn` and starts the process in the container,
/// as a child of this monitor: its memory and CPU count with the container's, its limits apply,
/// and it ends with the container.
fn start_exec_here(
    conn: &UnixStream,
    spec: &ProcessSpec,
    reap_lock: &std::sync::Mutex<()>,
) -> Result<i32, String> {
    (&*conn)
        .write_all(b"ready\n")
        .map_err(|e| format!("answering: {e}"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let (n, mut fds) = platform::fdpass::recv_with_fds(conn, &mut buf)
        .map_err(|e| format!("receiving the process's stdio: {e}"))?;
    if n < 4 {
        return Err("a short exec request".into());
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > buf.len() - 4 {
        return Err(format!("an exec request of {len} bytes is too long"));
    }
    // The rest within one second in all: the monitor's loop waits meanwhile.
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut got = n;
    while got < 4 + len {
        if Instant::now() >= deadline {
            return Err("the exec request came too slowly".into());
        }
        match (&*conn).read(&mut buf[got..4 + len]) {
            Ok(0) => return Err("the exec request ended early".into()),
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the exec request: {e}")),
        }
    }
    let req: ExecStart = serde_json::from_slice(&buf[4..4 + len])
        .map_err(|e| format!("parsing the exec request: {e}"))?;
    let wanted = if req.tty { 1 } else { 3 };
    if fds.len() != wanted {
        return Err(format!("{} descriptors came, not {wanted}", fds.len()));
    }
    let mut cmd = command_for(spec, &req.args, req.tty)?;
    let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| format!("dup: {e}"));
    if req.tty {
        let term = fds.remove(0);
        cmd.stdin(Stdio::from(dup(&term)?))
            .stdout(Stdio::from(dup(&term)?))
            .stderr(Stdio::from(term));
    } else {
        let mut fds = fds.into_iter();
        let (Some(i), Some(o), Some(e)) = (fds.next(), fds.next(), fds.next()) else {
            return Err("missing descriptors".into());
        };
        cmd.stdin(Stdio::from(i))
            .stdout(Stdio::from(o))
            .stderr(Stdio::from(e));
    }
    let child = {
        let _held = reap_lock.lock();
        cmd.spawn()
            .map_err(|e| format!("starting {:?}: {e}", req.args.first()))?
    };
    // The waiter thread reaps it; its exit is reported on this connection.
    Ok(child.id() as i32)
}

/// Starts `args` in the container behind the monitor at `socket`, with `stdio` (one terminal
/// descriptor with `tty`, else stdin, stdout, stderr). Returns the connection that reports the
/// exit (`exit CODE`) and the process's pid.
pub fn start_exec(
    socket: &Path,
    args: &[String],
    tty: bool,
    stdio: &[std::os::fd::BorrowedFd<'_>],
) -> std::io::Result<(UnixStream, i32)> {
    let conn = UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    (&conn).write_all(b"exec\n")?;
    let line = read_line(&conn)?;
    if line != "ready" {
        return Err(std::io::Error::other(
            line.trim_start_matches("error ").to_string(),
        ));
    }
    let body = serde_json::to_vec(&ExecStart {
        args: args.to_vec(),
        tty,
    })
    .map_err(std::io::Error::other)?;
    if body.len() > 60 * 1024 {
        return Err(std::io::Error::other("the command is longer than 60 KiB"));
    }
    let mut msg = (body.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    platform::fdpass::send_with_fds(&conn, &msg, stdio)?;
    let line = read_line(&conn)?;
    match line.strip_prefix("ok ").and_then(|p| p.parse::<i32>().ok()) {
        Some(pid) => {
            conn.set_read_timeout(None)?;
            Ok((conn, pid))
        }
        None if line.is_empty() => Err(std::io::Error::other(
            "the monitor closed the connection without answering",
        )),
        None => Err(std::io::Error::other(
            line.trim_start_matches("error ").to_string(),
        )),
    }
}

/// One answer line, read byte by byte (nothing past it is consumed).
fn read_line(conn: &UnixStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 4096 {
        match (&*conn).read(&mut byte)? {
            0 => break,
            _ if byte[0] == b'\n' => break,
            _ => line.push(byte[0]),
        }
    }
    Ok(String::from_utf8_lossy(&line).trim().to_string())
}

/// Connects to a container's stdio through the monitor behind `socket`: past the handshake,
/// the connection carries [`crate::attach`] frames.
pub fn open_attach(socket: &Path) -> std::io::Result<UnixStream> {
    let mut conn = UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    conn.write_all(b"attach\n")?;
    expect_ok(&read_line(&conn)?)?;
    conn.set_read_timeout(None)?;
    conn.set_write_timeout(None)?;
    Ok(conn)
}

/// Applies changed CPU and rlimit settings to every process of the running container.
fn apply_limits(spec: &ProcessSpec) -> String {
    let me = std::process::id() as i32;
    let mut errors = Vec::new();
    for pid in platform::tree(me) {
        if let Err(e) = platform::set_nice(pid, spec.limits.nice) {
            errors.push(format!("nice of {pid}: {e}"));
        }
        if (spec.limits.pids.is_some() || spec.limits.nofile.is_some())
            && let Err(e) = platform::set_rlimits(pid, spec.limits.pids, spec.limits.nofile)
            && e.kind() != std::io::ErrorKind::Unsupported
        {
            errors.push(format!("rlimits of {pid}: {e}"));
        }
    }
    if errors.is_empty() {
        "ok".into()
    } else {
        format!("error {}", errors.join("; "))
    }
}

/// Asks the monitor behind `socket` to run `command`; its one-line answer, `ok` on success.
pub fn send_command(socket: &Path, command: &str, timeout: Duration) -> std::io::Result<()> {
    let mut conn = UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    conn.write_all(format!("{command}\n").as_bytes())?;
    expect_ok(&read_line(&conn)?)
}

/// A monitor's one-line answer: `ok`, or why not.
fn expect_ok(reply: &str) -> std::io::Result<()> {
    match reply {
        "ok" => Ok(()),
        "" => Err(std::io::Error::other(
            "the monitor closed the connection without answering",
        )),
        other => Err(std::io::Error::other(
            other.trim_start_matches("error ").to_string(),
        )),
    }
}

/// Kills what the container left behind: its process group and every descendant of this monitor.
fn kill_leftovers(main: Pid) {
    let _ = killpg(main, Signal::SIGKILL);
    let _ = kill(main, Signal::SIGKILL);
    for pid in platform::tree(std::process::id() as i32) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Output an attach client may have queued before it is dropped as too slow.
const CLIENT_BACKLOG: usize = 4 << 20;
/// Input queued for the container's stdin before clients are read no more.
const INPUT_BACKLOG: usize = 1 << 20;

/// One attach connection.
struct Client {
    conn: UnixStream,
    decoder: crate::attach::Decoder,
    out: Vec<u8>,
    stdin_done: bool,
    /// It brought stdin (sent any input): with stdin_once, its departure ends the input.
    uses_stdin: bool,
}

/// The container's stdio as attach clients see it: output goes to every client, input from any
/// of them goes to the container's stdin (non-blocking, so a container that does not read its
/// stdin never stalls the monitor).
struct AttachedStdio {
    clients: Vec<Client>,
    input: Option<std::fs::File>,
    pending: Vec<u8>,
    close_input: bool,
    terminal: Option<OwnedFd>,
    stdin_once: bool,
}

impl AttachedStdio {
    fn new(input: Option<OwnedFd>, terminal: Option<OwnedFd>, stdin_once: bool) -> Self {
        let input = input.map(std::fs::File::from).filter(|f| {
            use nix::fcntl::{FcntlArg, OFlag, fcntl};
            fcntl(f, FcntlArg::F_GETFL)
                .and_then(|flags| {
                    fcntl(
                        f,
                        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
                    )
                })
                .is_ok()
        });
        AttachedStdio {
            clients: Vec::new(),
            input,
            pending: Vec::new(),
            close_input: false,
            terminal,
            stdin_once,
        }
    }

    fn add_client(&mut self, conn: UnixStream) {
        self.clients.push(Client {
            conn,
            decoder: Default::default(),
            out: Vec::new(),
            stdin_done: false,
            uses_stdin: false,
        });
    }

    /// Whether clients' input is read now: not while the container's stdin has a backlog.
    fn accepting_input(&self) -> bool {
        self.pending.len() < INPUT_BACKLOG
    }

    fn broadcast(&mut self, stream: Stream, bytes: &[u8]) {
        if self.clients.is_empty() {
            return;
        }
        let frame = match stream {
            Stream::Stdout => crate::attach::Frame::Stdout(bytes.to_vec()),
            Stream::Stderr => crate::attach::Frame::Stderr(bytes.to_vec()),
        };
        for c in &mut self.clients {
            frame.encode_into(&mut c.out);
            flush_client(c);
        }
        self.clients.retain(|c| c.out.len() <= CLIENT_BACKLOG);
    }

    /// Serves every client by the events poll reported for it: its queued output when it
    /// takes more, its input only while the container's stdin has room (or to see it hang up).
    fn serve_clients(&mut self, events: &[PollFlags]) {
        let mut gone = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        let accepting = self.accepting_input();
        for (i, c) in self.clients.iter_mut().enumerate() {
            let ev = events.get(i).copied().unwrap_or(PollFlags::empty());
            if ev.contains(PollFlags::POLLOUT) && !flush_client(c) {
                gone.push(i);
                continue;
            }
            let hung_up = ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR);
            if !(hung_up || (accepting && ev.contains(PollFlags::POLLIN))) {
                continue;
            }
            match (&c.conn).read(&mut buf) {
                Ok(0) => gone.push(i),
                Ok(n) => {
                    c.decoder.push(&buf[..n]);
                    loop {
                        use crate::attach::Frame;
                        match c.decoder.next_frame() {
                            Ok(Some(Frame::Stdin(bytes))) => {
                                c.uses_stdin = true;
                                if !c.stdin_done && self.input.is_some() && !self.close_input {
                                    self.pending.extend_from_slice(&bytes);
                                }
                            }
                            Ok(Some(Frame::StdinClosed)) => {
                                c.stdin_done = true;
                                self.close_input |= self.stdin_once;
                            }
                            Ok(Some(Frame::Resize { rows, cols })) => {
                                if let Some(t) = self.terminal.as_ref() {
                                    let _ = platform::set_window_size(t.as_fd(), rows, cols);
                                }
                            }
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            Err(_) => {
                                gone.push(i);
                                break;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => gone.push(i),
            }
        }
        gone.dedup();
        for i in gone.into_iter().rev() {
            let c = self.clients.remove(i);
            // With stdin_once, the first stdin client's departure ends the container's input.
            self.close_input |= self.stdin_once && c.uses_stdin;
        }
        self.write_input();
    }

    /// Moves queued input into the container's stdin as far as it takes it.
    fn write_input(&mut self) {
        let Some(input) = self.input.as_mut() else {
            self.pending.clear();
            return;
        };
        while !self.pending.is_empty() {
            match input.write(&self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // The container closed its stdin: what it would not read is dropped.
                Err(_) => {
                    self.pending.clear();
                    self.input = None;
                    return;
                }
            }
        }
        if self.close_input {
            // A terminal has no end of input but the EOF character; a pipe is closed.
            if self.terminal.is_some() {
                let _ = input.write(&[4]);
            }
            self.input = None;
        }
    }

    /// Gives every client what is left of the output (within one second in all), then closes
    /// it.
    fn finish(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            self.clients
                .retain_mut(|c| !c.out.is_empty() && flush_client(c));
            let left = deadline.saturating_duration_since(Instant::now());
            if self.clients.is_empty() || left.is_zero() {
                break;
            }
            let mut fds: Vec<PollFd> = self
                .clients
                .iter()
                .map(|c| PollFd::new(c.conn.as_fd(), PollFlags::POLLOUT))
                .collect();
            let ms = left.as_millis().clamp(1, 1000) as i32;
            if poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::NONE),
            )
            .is_err()
            {
                break;
            }
        }
        for c in &self.clients {
            let _ = c.conn.shutdown(std::net::Shutdown::Both);
        }
        self.clients.clear();
    }
}

/// Writes what the client's connection takes now; false when the client is gone.
fn flush_client(c: &mut Client) -> bool {
    while !c.out.is_empty() {
        match (&c.conn).write(&c.out) {
            Ok(0) => return false,
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}
