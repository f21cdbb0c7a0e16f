//! File descriptors passed over a unix socket (SCM_RIGHTS) with a message: how the server hands
//! an exec'd process's stdio to the container's monitor. The same on Linux and macOS.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

#[cfg(any(target_os = "linux", target_os = "android"))]
const RECV_FLAGS: MsgFlags = MsgFlags::MSG_CMSG_CLOEXEC;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const RECV_FLAGS: MsgFlags = MsgFlags::empty();

/// Most descriptors one message carries.
pub const MAX_FDS: usize = 4;

/// Sends `bytes` with `fds` attached to their first byte.
pub fn send_with_fds(sock: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let sent = send_some_with_fds(sock, bytes, fds)?;
    // The rest, if the socket took only part, goes without the descriptors.
    io::Write::write_all(&mut &*sock, &bytes[sent..])
}

/// Sends what the socket takes of `bytes` (at least one byte, or an error such as
/// `WouldBlock` on a non-blocking socket) with `fds` attached to the first byte.
pub fn send_some_with_fds(
    sock: &impl AsFd,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    Ok(sendmsg::<()>(
        sock.as_fd().as_raw_fd(),
        &[IoSlice::new(bytes)],
        cmsgs,
        MsgFlags::empty(),
        None,
    )?)
}

/// Receives up to `buf.len()` bytes and the descriptors attached to them.
pub fn recv_with_fds(sock: &impl AsFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_fd().as_raw_fd(),
        &mut iov,
        Some(&mut space),
        RECV_FLAGS,
    )?;
    let mut fds = Vec::new();
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                // SAFETY: the kernel just installed these descriptors in this process for this
                // message; nothing else owns them, so each is wrapped exactly once.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    // Where the OS has no MSG_CMSG_CLOEXEC (macOS) they arrive without close-on-exec until
    // here: a process spawned by another thread in between would inherit them. The monitor
    // forks only on this thread; in the server that costs a DNS client's descriptor being held
    // open by a new monitor, which is harmless.
    for fd in &fds {
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    }
    if truncated {
        return Err(io::Error::other("more descriptors were sent than expected"));
    }
    Ok((msg.bytes, fds))
}
