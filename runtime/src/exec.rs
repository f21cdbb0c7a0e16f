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

/// A running exec process: a child of the container's monitor (so its memory and CPU count
/// with the container's and its limits apply), whose stdio this side holds. Dropping it before
/// it exits kills it.
pub struct ExecProcess {
    pid: i32,
    /// Waited for: the pid may name another process by now, the group id may not (it stays
    /// reserved while the group has members).
    reaped: bool,
    /// The monitor's connection that reports the exit.
    exit: tokio::net::UnixStream,
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

/// This side of an exec'd process's stdio, made before the process.
#[derive(Debug)]
pub(crate) struct Stdio {
    /// What the process gets: the terminal side of a pty, or stdin, stdout, stderr.
    pub theirs: Vec<OwnedFd>,
    ours: Ours,
}

#[derive(Debug)]
enum Ours {
    Terminal(OwnedFd),
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    },
}

fn nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

impl Stdio {
    /// A pty in TTY mode; otherwise a pipe for each requested stream and /dev/null for the rest.
    pub(crate) fn new(req: &ExecRequest) -> io::Result<Stdio> {
        if req.tty {
            let (master, slave) = platform::open_pty()?;
            return Ok(Stdio {
                theirs: vec![slave],
                ours: Ours::Terminal(master),
            });
        }
        let null = |write: bool| -> io::Result<OwnedFd> {
            Ok(std::fs::OpenOptions::new()
                .read(!write)
                .write(write)
                .open("/dev/null")?
                .into())
        };
        let pipe = || -> io::Result<(OwnedFd, OwnedFd)> { platform::pipe_cloexec() };
        let (stdin_theirs, stdin) = if req.stdin {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            (null(false)?, None)
        };
        let out = |wanted: bool| -> io::Result<(OwnedFd, Option<OwnedFd>)> {
            if wanted {
                let (r, w) = pipe()?;
                Ok((w, Some(r)))
            } else {
                Ok((null(true)?, None))
            }
        };
        let (stdout_theirs, stdout) = out(req.stdout)?;
        let (stderr_theirs, stderr) = out(req.stderr)?;
        Ok(Stdio {
            theirs: vec![stdin_theirs, stdout_theirs, stderr_theirs],
            ours: Ours::Pipes {
                stdin,
                stdout,
                stderr,
            },
        })
    }
}

impl ExecProcess {
    /// The process `pid` the monitor started, `exit` the monitor's connection that reports its
    /// exit, and this side of its stdio.
    pub(crate) fn new(
        pid: i32,
        exit: std::os::unix::net::UnixStream,
        stdio: Stdio,
        req: &ExecRequest,
    ) -> io::Result<Self> {
        use tokio::net::unix::pipe;
        exit.set_nonblocking(true)?;
        let exit = tokio::net::UnixStream::from_std(exit)?;
        let reader = |fd: OwnedFd| -> io::Result<Output> {
            nonblocking(&fd)?;
            Ok(Box::new(pipe::Receiver::from_owned_fd_unchecked(fd)?))
        };
        let (stdin, stdout, stderr, terminal) = match stdio.ours {
            Ours::Terminal(master) => {
                let (terminal, input, output) = Terminal::open(master)?;
                (
                    req.stdin.then_some(input),
                    Some(output),
                    None,
                    Some(Arc::new(terminal)),
                )
            }
            Ours::Pipes {
                stdin,
                stdout,
                stderr,
            } => (
                stdin
                    .map(|fd| -> io::Result<Input> {
                        nonblocking(&fd)?;
                        Ok(Box::new(pipe::Sender::from_owned_fd_unchecked(fd)?))
                    })
                    .transpose()?,
                stdout.map(reader).transpose()?,
                stderr.map(reader).transpose()?,
                None,
            ),
        };
        Ok(ExecProcess {
            pid,
            reaped: false,
            exit,
            stdin,
            stdout,
            stderr,
            terminal,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits for the process to exit: its exit code, 128 + the signal that killed it. An error
    /// when the container ended first (its monitor went away).
    pub async fn wait(&mut self) -> io::Result<i32> {
        use tokio::io::AsyncReadExt;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while line.len() < 64 {
            match self.exit.read(&mut byte).await? {
                0 => break,
                _ if byte[0] == b'\n' => break,
                _ => line.push(byte[0]),
            }
        }
        let text = String::from_utf8_lossy(&line);
        match text
            .strip_prefix("exit ")
            .and_then(|c| c.trim().parse().ok())
        {
            Some(code) => {
                self.reaped = true;
                Ok(code)
            }
            None => Err(io::Error::other(
                "the container ended before the process did",
            )),
        }
    }

    /// Kills the process, its process group (its session in TTY mode) and its descendants:
    /// the monitor does, as only it knows whether the pid still names the process. Once the
    /// process was waited for, what is left of its group is killed here (the group id stays
    /// reserved while it has members). Dropping the process kills it too: the monitor takes
    /// a closed connection as the end.
    pub fn kill(&self) {
        if self.reaped {
            if self.pid > 0 {
                let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
            }
        } else {
            let _ = self.exit.try_write(b"kill\n");
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
