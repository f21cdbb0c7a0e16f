//! Interactive exec: a process started in a running container whose stdio the caller streams
//! (kubectl exec), with a pseudo-terminal in TTY mode.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::platform;

/// What to start and which of its streams the caller wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

pub type Input = Box<dyn AsyncWrite + Send + Unpin>;
pub type Output = Box<dyn AsyncRead + Send + Unpin>;

/// A running exec process. Dropping it kills the process; [`ExecProcess::kill`] also ends
/// what it started.
pub struct ExecProcess {
    pid: i32,
    /// Waited for: the pid may name another process by now, the group id may not (it stays
    /// reserved while the group has members).
    reaped: bool,
    child: tokio::process::Child,
    /// The process's stdin (the terminal in TTY mode); `None` unless requested.
    pub stdin: Option<Input>,
    /// Its stdout (the terminal's output, stderr included, in TTY mode).
    pub stdout: Option<Output>,
    /// Its stderr; always `None` in TTY mode.
    pub stderr: Option<Output>,
    /// The terminal, to resize it; TTY mode only.
    pub terminal: Option<Arc<Terminal>>,
}

impl std::fmt::Debug for ExecProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecProcess")
            .field("pid", &self.pid)
            .field("tty", &self.terminal.is_some())
            .finish_non_exhaustive()
    }
}

impl ExecProcess {
    pub(crate) fn new(
        mut child: tokio::process::Child,
        master: Option<OwnedFd>,
        req: &ExecRequest,
    ) -> io::Result<Self> {
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let (stdin, stdout, stderr, terminal) = match master {
            Some(master) => {
                let (terminal, input, output) = Terminal::open(master)?;
                (
                    req.stdin.then_some(input),
                    Some(output),
                    None,
                    Some(Arc::new(terminal)),
                )
            }
            None => (
                child.stdin.take().map(|s| Box::new(s) as Input),
                child.stdout.take().map(|s| Box::new(s) as Output),
                child.stderr.take().map(|s| Box::new(s) as Output),
                None,
            ),
        };
        Ok(ExecProcess {
            pid,
            reaped: false,
            child,
            stdin,
            stdout,
            stderr,
            terminal,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits for the process to exit: its exit code, 128 + the signal that killed it.
    pub async fn wait(&mut self) -> io::Result<i32> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.wait().await?;
        self.reaped = true;
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }

    /// Kills the process, its process group (its session in TTY mode) and its descendants;
    /// once it was waited for, only what is left of its group.
    pub fn kill(&self) {
        if self.reaped {
            if self.pid > 0 {
                let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
            }
        } else {
            kill_exec_tree(self.pid);
        }
    }
}

/// Kills an exec'd process's group and the tree below it.
pub(crate) fn kill_exec_tree(pid: i32) {
    if pid <= 0 {
        return;
    }
    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    for d in platform::tree(pid) {
        let _ = kill(Pid::from_raw(d), Signal::SIGKILL);
    }
}

/// The controlling side of a pseudo-terminal.
#[derive(Debug)]
pub struct Terminal {
    fd: OwnedFd,
}

impl Terminal {
    /// Wraps `master`: returns the terminal (for resizes) and its async writer and reader.
    pub(crate) fn open(master: OwnedFd) -> io::Result<(Terminal, Input, Output)> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        // The flag is the open file's, so it holds for the copies below too.
        let flags = OFlag::from_bits_truncate(fcntl(&master, FcntlArg::F_GETFL)?);
        fcntl(&master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        // tokio's pipe types are plain non-blocking fds on the reactor; a pty's controlling
        // side behaves like a pipe pair, except that its end reads as EIO.
        let writer = tokio::net::unix::pipe::Sender::from_owned_fd_unchecked(master.try_clone()?)?;
        let reader =
            tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(master.try_clone()?)?;
        Ok((
            Terminal { fd: master },
            Box::new(writer),
            Box::new(TerminalOutput(reader)),
        ))
    }

    /// Sets the window size; the process gets SIGWINCH.
    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        platform::set_window_size(self.fd.as_fd(), rows, cols)
    }
}

/// A terminal's output, ending (instead of failing with EIO) once every holder of the terminal
/// side closed it.
struct TerminalOutput(tokio::net::unix::pipe::Receiver);

impl AsyncRead for TerminalOutput {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.0).poll_read(cx, buf)) {
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Poll::Ready(Ok(())),
            other => Poll::Ready(other),
        }
    }
}
