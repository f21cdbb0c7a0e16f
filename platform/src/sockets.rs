//! Unix sockets in places a container could reach: path length limits, and listeners made
//! beneath a directory's descriptor without following links.

use super::*;

/// Longest unix socket path `bind(2)` and `connect(2)` take, in bytes without the NUL
/// (`sun_path` is 104 bytes on macOS, 108 on Linux).
pub const MAX_SOCKET_PATH: usize = imp::MAX_SOCKET_PATH;

/// Why `path` cannot be a unix socket path on this OS, if it cannot.
pub fn socket_path_problem(path: &Path) -> Option<String> {
    let len = path.as_os_str().len();
    (len > MAX_SOCKET_PATH).then(|| {
        format!(
            "{} is {len} bytes long; unix socket paths are limited to {MAX_SOCKET_PATH} bytes \
             here (103 on macOS): choose a shorter path",
            path.display()
        )
    })
}

/// Opens directory `path` for the `*at` calls below, refusing a symlink as its last component:
/// what is made and removed in it stays in that directory whatever later happens to the path.
pub fn open_dir_nofollow(path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::OFlag;
    Ok(nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?)
}

/// The inode number of entry `name` in `dir` if it is a socket (the entry itself, not what a
/// link points at).
pub fn socket_inode_in(dir: &std::os::fd::OwnedFd, name: &str) -> Option<u64> {
    use nix::sys::stat::{SFlag, fstatat};
    let st = fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
    (SFlag::from_bits_truncate(st.st_mode as _) & SFlag::S_IFMT == SFlag::S_IFSOCK)
        .then_some(st.st_ino as u64)
}

/// A listening unix socket named `name` in `dir` with permissions `mode`, however long the
/// directory's path is (a container root's `/var/run` easily passes the limit). An entry of that
/// name that is not a directory is replaced: the entry itself, never what a link points at.
///
/// Bound through a short name for the directory (Linux: `/proc/self/fd/N`) or, where there is
/// none (macOS), under `scratch` (short, on the same file system as `dir`) and renamed into
/// `dir`: a bound socket keeps working under its new name.
pub fn bind_unix_listener_in(
    dir: &std::os::fd::OwnedFd,
    name: &str,
    mode: u32,
    scratch: &Path,
) -> io::Result<std::os::unix::net::UnixListener> {
    use nix::sys::stat::{SFlag, fstatat};
    use nix::unistd::{UnlinkatFlags, unlinkat};
    match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if SFlag::from_bits_truncate(st.st_mode as _) & SFlag::S_IFMT == SFlag::S_IFDIR => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("a directory named {name} is in the way"),
            ));
        }
        Ok(_) => unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?,
        Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    imp::bind_in_dir(dir, name, mode, scratch)
}

/// Binds under `scratch`, sets the mode there (a directory only this process writes to), and
/// renames the socket into `dir` (see [`bind_unix_listener_in`]).
pub(crate) fn bind_and_move(
    dir: &std::os::fd::OwnedFd,
    name: &str,
    mode: u32,
    scratch: &Path,
) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    std::fs::create_dir_all(scratch)?;
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let short = scratch.join(format!("{}-{n}.sock", std::process::id()));
    if let Some(problem) = socket_path_problem(&short) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, problem));
    }
    let _ = std::fs::remove_file(&short);
    let listener = std::os::unix::net::UnixListener::bind(&short)?;
    let moved =
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(mode)).and_then(|()| {
            Ok(nix::fcntl::renameat(
                nix::fcntl::AT_FDCWD,
                &short,
                dir,
                name,
            )?)
        });
    if let Err(e) = moved {
        let _ = std::fs::remove_file(&short);
        return Err(io::Error::new(
            e.kind(),
            format!(
                "moving a socket from {} into its directory (bound elsewhere first; both must \
                 be on one file system): {e}",
                short.display()
            ),
        ));
    }
    Ok(listener)
}
