//! The container's stdio as the monitor serves it to attach clients.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::logs::Stream;

/// Output an attach client may have queued before it is dropped as too slow.
const CLIENT_BACKLOG: usize = 4 << 20;

/// Input queued for the container's stdin before clients are read no more.
const INPUT_BACKLOG: usize = 1 << 20;

/// One attach connection.
pub(super) struct Client {
    pub(super) conn: UnixStream,
    decoder: crate::attach::Decoder,
    pub(super) out: Vec<u8>,
    stdin_done: bool,
    /// It brought stdin (sent any input): with stdin_once, its departure ends the input.
    uses_stdin: bool,
}

/// The container's stdio as attach clients see it: output goes to every client, input from any
/// of them goes to the container's stdin (non-blocking, so a container that does not read its
/// stdin never stalls the monitor).
pub(super) struct AttachedStdio {
    pub(super) clients: Vec<Client>,
    pub(super) input: Option<std::fs::File>,
    pub(super) pending: Vec<u8>,
    close_input: bool,
    terminal: Option<OwnedFd>,
    stdin_once: bool,
}

impl AttachedStdio {
    pub(super) fn new(input: Option<OwnedFd>, terminal: Option<OwnedFd>, stdin_once: bool) -> Self {
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

    pub(super) fn add_client(&mut self, conn: UnixStream) {
        self.clients.push(Client {
            conn,
            decoder: Default::default(),
            out: Vec::new(),
            stdin_done: false,
            uses_stdin: false,
        });
    }

    /// Whether clients' input is read now: not while the container's stdin has a backlog.
    pub(super) fn accepting_input(&self) -> bool {
        self.pending.len() < INPUT_BACKLOG
    }

    pub(super) fn broadcast(&mut self, stream: Stream, bytes: &[u8]) {
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
    pub(super) fn serve_clients(&mut self, events: &[PollFlags]) {
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
    pub(super) fn write_input(&mut self) {
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
    pub(super) fn finish(&mut self) {
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
