//! DNS inside a container root on macOS.
//!
//! macOS programs resolve names through mDNSResponder, which they reach at the unix socket
//! `/var/run/mDNSResponder`; `/etc/resolv.conf` is not consulted by the system resolver. A
//! chrooted process looks for that socket inside its root, and a socket cannot be shared into
//! the root by bindfs or a link across file systems. So each running container gets a listener
//! at `<root>/var/run/mDNSResponder` that relays every connection to the host's socket,
//! descriptors included: the dns_sd client library hands mDNSResponder one end of a socket pair
//! (SCM_RIGHTS) for each request's replies, and the relay passes it on unchanged, after which
//! the daemon and the client talk over it directly.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use tokio::io::Interest;
use tokio::net::UnixStream;

use platform::fdpass;

/// Where the host's mDNSResponder listens.
pub const MDNS_SOCKET: &str = "/var/run/mDNSResponder";
/// Where a container's processes look for it: this directory of their root, this name.
pub const ROOT_DIR: &str = "/var/run";
pub const NAME: &str = "mDNSResponder";

/// A relay from a socket inside one container root to the host's mDNSResponder socket. Dropping
/// it stops the relay and its connections and removes the socket, if the entry is still it.
#[derive(Debug)]
pub struct DnsProxy {
    /// The directory the socket is in (the root's /var/run), held open: the socket is made and
    /// removed through it, never through a path the container could have changed.
    dir: OwnedFd,
    name: String,
    inode: Option<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl DnsProxy {
    /// Listens at `name` in `dir` (a directory inside a container root, opened with
    /// [`platform::open_dir_nofollow`]) and relays each connection to `upstream`. `scratch` is
    /// a short directory on the root's file system (see [`platform::bind_unix_listener_in`]).
    /// Must be called within a tokio runtime.
    pub fn start(
        upstream: &Path,
        dir: OwnedFd,
        name: &str,
        scratch: &Path,
    ) -> io::Result<DnsProxy> {
        // Container processes run as any user.
        let listener = platform::bind_unix_listener_in(&dir, name, 0o666, scratch)?;
        let inode = platform::socket_inode_in(&dir, name);
        listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(listener)?;
        let upstream = upstream.to_path_buf();
        let task = tokio::spawn(async move {
            // Owned here so that aborting the accept loop ends every relay with it.
            let mut relays = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((conn, _)) => {
                            let upstream = upstream.clone();
                            relays.spawn(async move {
                                if let Err(e) = relay(conn, &upstream).await {
                                    tracing::debug!(error = %e, "DNS relay ended");
                                }
                            });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "DNS proxy accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                    },
                    Some(_) = relays.join_next(), if !relays.is_empty() => {}
                }
            }
        });
        Ok(DnsProxy {
            dir,
            name: name.to_string(),
            inode,
            task,
        })
    }
}

impl Drop for DnsProxy {
    fn drop(&mut self) {
        self.task.abort();
        if self.inode.is_some() && platform::socket_inode_in(&self.dir, &self.name) == self.inode {
            let _ = nix::unistd::unlinkat(
                &self.dir,
                self.name.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

async fn relay(client: UnixStream, upstream: &Path) -> io::Result<()> {
    let server = UnixStream::connect(upstream).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("connecting to {}: {e}", upstream.display()),
        )
    })?;
    let (up, down) = tokio::join!(pump(&client, &server), pump(&server, &client));
    up.and(down)
}

/// Copies messages and their descriptors from `from` to `to` until `from` ends, then ends
/// `to`'s writing side so the peer sees the end too.
async fn pump(from: &UnixStream, to: &UnixStream) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        from.readable().await?;
        let (n, fds) =
            match from.try_io(Interest::READABLE, || fdpass::recv_with_fds(from, &mut buf)) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
        if n == 0 {
            let _ = nix::sys::socket::shutdown(
                std::os::fd::AsRawFd::as_raw_fd(to),
                nix::sys::socket::Shutdown::Write,
            );
            return Ok(());
        }
        let mut sent = 0;
        let mut pending: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
        while sent < n {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                fdpass::send_some_with_fds(to, &buf[sent..n], &pending)
            }) {
                Ok(k) => {
                    sent += k;
                    pending.clear();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A stand-in for mDNSResponder: answers "echo:<request>" on the connection, and on a
    /// descriptor passed with the request, "reply-on-fd:<request>".
    fn fake_daemon(path: &Path) -> std::thread::JoinHandle<()> {
        let listener = std::os::unix::net::UnixListener::bind(path).expect("bind");
        std::thread::spawn(move || {
            for conn in listener.incoming().take(2) {
                let conn = conn.expect("accept");
                let mut buf = [0u8; 256];
                let (n, fds) = fdpass::recv_with_fds(&conn, &mut buf).expect("recv");
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                for fd in fds {
                    let mut f = std::fs::File::from(fd);
                    f.write_all(format!("reply-on-fd:{req}").as_bytes())
                        .expect("write fd");
                }
                (&conn)
                    .write_all(format!("echo:{req}").as_bytes())
                    .expect("write");
            }
        })
    }

    #[tokio::test]
    async fn requests_and_descriptors_reach_the_host_daemon() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = dir.path().join("host.sock");
        let daemon = fake_daemon(&host);
        let run = dir.path().join("root/private/var/run");
        std::fs::create_dir_all(&run).expect("mkdir");
        let root_sock = run.join("mDNSResponder");
        let fd = platform::open_dir_nofollow(&run).expect("open");
        let proxy =
            DnsProxy::start(&host, fd, "mDNSResponder", &dir.path().join("s")).expect("start");

        let plain = root_sock.clone();
        let with_fd = root_sock.clone();
        let answers = tokio::task::spawn_blocking(move || {
            let mut c = std::os::unix::net::UnixStream::connect(&plain).expect("connect");
            c.write_all(b"q1").expect("write");
            c.shutdown(std::net::Shutdown::Write).expect("shutdown");
            let mut a = String::new();
            c.read_to_string(&mut a).expect("read");

            let c = std::os::unix::net::UnixStream::connect(&with_fd).expect("connect");
            let (mut mine, theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
            fdpass::send_with_fds(&c, b"q2", &[theirs.as_fd()]).expect("send fd");
            drop(theirs);
            let mut on_fd = [0u8; 64];
            let n = mine.read(&mut on_fd).expect("read fd");
            let mut b = String::new();
            (&c).read_to_string(&mut b).expect("read");
            (a, String::from_utf8_lossy(&on_fd[..n]).to_string(), b)
        })
        .await
        .expect("client");
        assert_eq!(answers.0, "echo:q1");
        assert_eq!(
            answers.1, "reply-on-fd:q2",
            "the passed descriptor reached the daemon"
        );
        assert_eq!(answers.2, "echo:q2");
        daemon.join().expect("daemon");
        drop(proxy);
        assert!(!root_sock.exists(), "the socket goes with the proxy");

        // A socket replaced by something else meanwhile is not the proxy's to remove.
        let fd = platform::open_dir_nofollow(&run).expect("open");
        let proxy =
            DnsProxy::start(&host, fd, "mDNSResponder", &dir.path().join("s")).expect("start");
        std::fs::remove_file(&root_sock).expect("rm");
        std::fs::write(&root_sock, "the container's file").expect("write");
        drop(proxy);
        assert_eq!(
            std::fs::read_to_string(&root_sock).expect("kept"),
            "the container's file"
        );
    }
}
