//! The per-container monitor: the small `darwin-cri-monitor BUNDLE` binary installed beside
//! `darwin-cri` (or, where it is missing, the server's own binary as `darwin-cri monitor BUNDLE`).
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
//!
//! The module is split along that process boundary: [`client`] is what the server uses (start an
//! exec, attach, send a control command), `process` is the monitor itself (start, supervise,
//! control commands) with `stdio` (the attached clients), and this file holds what both sides
//! read and write: the bundle's files, the handshake, the exit record, the exec request. The
//! monitor side uses nothing of the server's (no async runtime, no gRPC, no TLS): that is what
//! lets `darwin-cri-monitor` (cri-server/src/bin) be a small binary of its own, whose pages and
//! relocations cost each container a fraction of the server binary's.
//!
//! Monitors outlive the server that started them, and an upgraded server talks to monitors that
//! an older one started: the handshake and `started.json` carry the monitor's [`PROTOCOL`], and
//! the control socket answers `version`. A monitor that predates the version (none in either
//! place) speaks protocol 1.

use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

mod client;
mod command;
mod control;
mod process;
mod stdio;
mod waiting;

pub use client::{is_unknown_command, open_attach, protocol_of, send_command, start_exec};
pub use command::find_executable;
pub use process::{run, run_waiting};
pub use waiting::Waiting;

/// The control protocol this build's monitor speaks. 1: `reopen`, `limits`, `attach`, `exec`
/// (monitors that do not say their version). 2: adds `version`, and the handshake and
/// `started.json` carry the number. A command that a monitor's version lacks is answered
/// `error unknown command "…"`; the server says which container and why instead of passing
/// that on.
pub const PROTOCOL: u32 = 2;

/// The version of monitors that say none.
fn protocol_one() -> u32 {
    1
}

/// The argument that starts a monitor ahead of its container ([`run_waiting`]).
pub const WAIT_ARG: &str = "--wait";

/// The small monitor binary's file name, looked for beside the server's executable.
pub const MONITOR_BINARY: &str = "darwin-cri-monitor";

/// How a monitor is started: `darwin-cri-monitor BUNDLE` from beside the server's executable,
/// or, when that is missing (a lone `darwin-cri` copied to a Mac), the server's own binary as
/// `darwin-cri monitor BUNDLE`, which works the same but costs each container more memory.
#[derive(Debug, Clone)]
pub struct MonitorProgram {
    exe: PathBuf,
    /// Whether `exe` is the server's binary, which needs the `monitor` subcommand.
    subcommand: bool,
}

impl MonitorProgram {
    /// The monitor for the server at `server_exe`: `darwin-cri-monitor` in the same directory
    /// when it is there, else the server itself.
    pub fn beside(server_exe: &Path) -> Self {
        let small = server_exe.with_file_name(MONITOR_BINARY);
        if small.is_file() {
            MonitorProgram {
                exe: small,
                subcommand: false,
            }
        } else {
            MonitorProgram {
                exe: server_exe.to_path_buf(),
                subcommand: true,
            }
        }
    }

    /// The monitor binary that will run.
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// Whether this is the small binary (not the server's own as a fallback).
    pub fn is_small(&self) -> bool {
        !self.subcommand
    }

    /// The command that starts a monitor for `bundle` (stdio left to the caller).
    pub fn command(&self, bundle: &Path) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.exe);
        if self.subcommand {
            cmd.arg("monitor");
        }
        cmd.arg(bundle);
        cmd
    }

    /// The command that starts a monitor ahead, to wait for its bundle on stdin
    /// ([`run_waiting`]).
    pub fn waiting_command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.exe);
        if self.subcommand {
            cmd.arg("monitor");
        }
        cmd.arg(WAIT_ARG);
        cmd
    }
}

pub const PROCESS_FILE: &str = "process.json";

pub const STARTED_FILE: &str = "started.json";

pub const EXIT_FILE: &str = "exit.json";

/// What monitors of earlier builds held (flock) for their whole life; a monitor now locks the
/// bundle directory itself ([`lock_bundle`]), which exists already: one file fewer to create at
/// each start. [`is_running`] still reads this file where a monitor of an earlier build made it.
pub const LOCK_FILE: &str = "monitor.lock";

/// Takes the monitor's lock on `bundle` (flock on the directory): held for the monitor's whole
/// life, the server's test of whether it still runs (immune to pid reuse) and a guard against
/// two monitors for one container. `None`: another monitor holds it.
pub fn lock_bundle(bundle: &Path) -> std::io::Result<Option<Flock<std::fs::File>>> {
    let dir = std::fs::File::open(bundle)?;
    match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

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
    /// The monitor's control protocol ([`PROTOCOL`] of the build that started it).
    #[serde(default = "protocol_one")]
    pub protocol: u32,
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

/// What a server asks to exec: sent after `exec`, with the process's stdio as descriptors (one,
/// the terminal, with `tty`; else stdin, stdout, stderr).
#[derive(Debug, Serialize, Deserialize)]
pub struct ExecStart {
    pub args: Vec<String>,
    pub tty: bool,
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

/// Whether a monitor holds `bundle`'s lock, i.e. still runs: the directory's, or the lock file
/// of a monitor of an earlier build where that file exists.
pub fn is_running(bundle: &Path) -> bool {
    let file = match std::fs::File::open(bundle_file(bundle, LOCK_FILE)) {
        Ok(old) => old,
        Err(_) => match std::fs::File::open(bundle) {
            Ok(dir) => dir,
            Err(_) => return false,
        },
    };
    Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err()
}

/// Why the monitor could not start a container's process or an exec'd one. The server sees its
/// text: in the handshake (`Handshake::Failed`) or the exec answer.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// A system call or file operation failed while doing `context`.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The process spec or an exec request could not be parsed.
    #[error("{context}: {source}")]
    Parse {
        context: String,
        #[source]
        source: serde_json::Error,
    },
    /// What was asked cannot be done as asked: no such executable, a request too long, the
    /// wrong number of descriptors.
    #[error("{0}")]
    Refused(String),
    /// Another monitor holds this container's lock.
    #[error("another monitor already runs this container")]
    AlreadyRunning,
}

impl MonitorError {
    fn io(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        MonitorError::Io {
            context: context.into(),
            source: source.into(),
        }
    }

    fn parse(context: impl Into<String>, source: serde_json::Error) -> Self {
        MonitorError::Parse {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_means_a_running_monitor() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!is_running(dir.path()), "nobody holds the directory");
        let held = lock_bundle(dir.path()).expect("lock").expect("free");
        assert!(is_running(dir.path()));
        assert!(
            lock_bundle(dir.path()).expect("lock").is_none(),
            "a second monitor"
        );
        drop(held);
        assert!(!is_running(dir.path()));
        assert!(!is_running(&dir.path().join("gone")), "no bundle");
    }

    #[test]
    fn the_lock_file_of_an_earlier_monitor_is_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = std::fs::File::create(bundle_file(dir.path(), LOCK_FILE)).expect("create");
        assert!(!is_running(dir.path()), "a lock file nobody holds");
        let held = Flock::lock(file, FlockArg::LockExclusiveNonblock).expect("lock");
        assert!(is_running(dir.path()));
        drop(held);
        assert!(!is_running(dir.path()));
    }

    #[test]
    fn the_small_monitor_is_preferred_and_the_server_is_the_fallback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = dir.path().join("darwin-cri");
        std::fs::write(&server, b"").expect("server");
        let bundle = Path::new("/b");
        let fallback = MonitorProgram::beside(&server);
        assert!(!fallback.is_small());
        let cmd = fallback.command(bundle);
        assert_eq!(cmd.get_program(), server.as_os_str());
        assert_eq!(cmd.get_args().collect::<Vec<_>>(), ["monitor", "/b"]);
        std::fs::write(dir.path().join(MONITOR_BINARY), b"").expect("monitor");
        let small = MonitorProgram::beside(&server);
        assert!(small.is_small());
        let cmd = small.command(bundle);
        assert_eq!(
            cmd.get_program(),
            dir.path().join(MONITOR_BINARY).as_os_str()
        );
        assert_eq!(cmd.get_args().collect::<Vec<_>>(), ["/b"]);
    }

    #[test]
    fn records_round_trip_and_bad_ones_read_as_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let started = Started {
            pid: 1,
            start_time: 2,
            started_at: 3,
            monitor_pid: 4,
            monitor_start_time: 5,
            protocol: PROTOCOL,
        };
        std::fs::write(
            bundle_file(dir.path(), STARTED_FILE),
            serde_json::to_vec(&started).expect("json"),
        )
        .expect("write");
        assert_eq!(read_started(dir.path()), Some(started));
        // What a monitor from before the version wrote: protocol 1.
        std::fs::write(
            bundle_file(dir.path(), STARTED_FILE),
            r#"{"pid":1,"start_time":2,"started_at":3,"monitor_pid":4,"monitor_start_time":5}"#,
        )
        .expect("write");
        assert_eq!(read_started(dir.path()).map(|s| s.protocol), Some(1));
        std::fs::write(bundle_file(dir.path(), EXIT_FILE), "{\"exit_code\":").expect("write");
        assert_eq!(read_exit(dir.path()), None);
        let line = serde_json::to_string(&Handshake::Failed("no such file".into())).expect("json");
        assert!(matches!(
            serde_json::from_str::<Handshake>(&line),
            Ok(Handshake::Failed(m)) if m == "no such file"
        ));
    }
}
