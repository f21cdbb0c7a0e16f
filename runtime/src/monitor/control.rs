//! The monitor's control socket: one command per connection, one line each way. `version` (the
//! [`PROTOCOL`] it speaks), `reopen` (the log, after kubelet rotated it), `limits` (re-read from
//! the bundle and applied), `attach` and `exec` (connections kept and served on by the supervise
//! loop).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::command::{command_for, read_spec};
use super::*;
use crate::logs::LogWriter;
use crate::model::ProcessSpec;

/// The control socket: one command per connection, one line each way. Made with mode 0600 from
/// the start (root's only: `exec` starts processes in the container, `attach` reads its output)
/// in a directory of mode 0700 (issue #26, 14).
pub(super) fn bind_control(path: &Path) -> Option<UnixListener> {
    if path.as_os_str().is_empty() {
        return None;
    }
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir);
    }
    match crate::fsutil::bind_socket(path, 0o600, None)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
    {
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
pub(super) enum Session {
    /// Served with the container's stdio.
    Attach(UnixStream),
    /// Told when the process it started exits.
    Exec(i32, UnixStream),
}

/// Serves one control command. `attach` and `exec` connections are returned, past their
/// handshake, to be served on.
pub(super) fn handle_command(
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
            "version" => format!("ok {PROTOCOL}"),
            // Everything read before this point went to the old file; what follows goes to the
            // new one: the monitor is the only writer, so no line is lost or written twice.
            "reopen" => match log.reopen(spec.log_target()) {
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
pub(super) fn start_exec_here(
    conn: &UnixStream,
    spec: &ProcessSpec,
    reap_lock: &std::sync::Mutex<()>,
) -> Result<i32, MonitorError> {
    (&*conn)
        .write_all(b"ready\n")
        .map_err(|e| MonitorError::io("answering", e))?;
    let mut buf = vec![0u8; 64 * 1024];
    let (n, mut fds) = platform::fdpass::recv_with_fds(conn, &mut buf)
        .map_err(|e| MonitorError::io("receiving the process's stdio", e))?;
    if n < 4 {
        return Err(MonitorError::Refused("a short exec request".into()));
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > buf.len() - 4 {
        return Err(MonitorError::Refused(format!(
            "an exec request of {len} bytes is too long"
        )));
    }
    // The rest within one second in all: the monitor's loop waits meanwhile.
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut got = n;
    while got < 4 + len {
        if Instant::now() >= deadline {
            return Err(MonitorError::Refused(
                "the exec request came too slowly".into(),
            ));
        }
        match (&*conn).read(&mut buf[got..4 + len]) {
            Ok(0) => return Err(MonitorError::Refused("the exec request ended early".into())),
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(MonitorError::io("reading the exec request", e)),
        }
    }
    let req: ExecStart = serde_json::from_slice(&buf[4..4 + len])
        .map_err(|e| MonitorError::parse("parsing the exec request", e))?;
    let wanted = if req.tty { 1 } else { 3 };
    if fds.len() != wanted {
        return Err(MonitorError::Refused(format!(
            "{} descriptors came, not {wanted}",
            fds.len()
        )));
    }
    let mut cmd = command_for(spec, &req.args, req.tty)?;
    let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| MonitorError::io("dup", e));
    if req.tty {
        let term = fds.remove(0);
        cmd.stdin(Stdio::from(dup(&term)?))
            .stdout(Stdio::from(dup(&term)?))
            .stderr(Stdio::from(term));
    } else {
        let mut fds = fds.into_iter();
        let (Some(i), Some(o), Some(e)) = (fds.next(), fds.next(), fds.next()) else {
            return Err(MonitorError::Refused("missing descriptors".into()));
        };
        cmd.stdin(Stdio::from(i))
            .stdout(Stdio::from(o))
            .stderr(Stdio::from(e));
    }
    let child = {
        let _held = reap_lock.lock();
        cmd.spawn()
            .map_err(|e| MonitorError::io(format!("starting {:?}", req.args.first()), e))?
    };
    // The waiter thread reaps it; its exit is reported on this connection.
    Ok(child.id() as i32)
}

/// Applies changed CPU and rlimit settings to every process of the running container.
pub(super) fn apply_limits(spec: &ProcessSpec) -> String {
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
