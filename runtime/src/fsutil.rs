//! Small filesystem helpers shared by the runtime and the monitor.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// Writes `bytes` to `path` through a temporary file and a rename, so readers see the old
/// content or the new, never a torn file, even if this process is killed half-way. No fsync: a
/// crash of the whole machine ends every container anyway.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Removes `dir` and everything in it, after unmounting every mount below it. It refuses to
/// delete anything while a mount remains, since deleting through a bind mount would delete the
/// host's files.
pub fn remove_tree(dir: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    for m in platform::mounts_under(dir)? {
        if let Err(e) = platform::unmount(&m) {
            tracing::warn!(mount = %m.display(), error = %e, "unmount failed");
        }
    }
    let left = platform::mounts_under(dir)?;
    if !left.is_empty() {
        return Err(std::io::Error::other(format!(
            "{} still has mounts below it ({}); not removing it",
            dir.display(),
            left[0].display()
        )));
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A listening unix socket at `path` that exists only with its final `mode` and group (`gid`;
/// `None` leaves the creator's): bound inside a new directory of mode 0700 beside it, its owner,
/// group and mode set there, then renamed into place, so no other user can connect in the
/// window a bind followed by a chmod leaves open (issue #26, 14; a bound socket keeps working
/// under its new name on macOS and Linux alike). Nothing with the umask, which is the whole
/// process's and would race its other threads. An entry at `path` is replaced.
///
/// Where the directory holding `path` is this user's own and closed to everyone else (mode
/// 0700, as the monitors' socket directory is), nobody else can reach the socket in that window:
/// it is bound in place, which spares a directory's creation and removal at every container
/// start.
pub fn bind_socket(
    path: &Path,
    mode: u32,
    gid: Option<u32>,
) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let private_dir = std::fs::metadata(dir).is_ok_and(|m| {
        m.is_dir() && m.uid() == nix::unistd::geteuid().as_raw() && m.mode() & 0o077 == 0
    });
    if private_dir && platform::socket_path_problem(path).is_none() {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = std::os::unix::net::UnixListener::bind(path)?;
        if let Some(gid) = gid {
            std::os::unix::fs::lchown(path, None, Some(gid))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        return Ok(listener);
    }
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let private = dir.join(format!(".b{}-{n}", std::process::id()));
    let short = private.join("s");
    if let Some(problem) = platform::socket_path_problem(&short) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{problem} (the socket is bound there first, then renamed to {})",
                path.display()
            ),
        ));
    }
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let made = (|| -> std::io::Result<std::os::unix::net::UnixListener> {
        let listener = std::os::unix::net::UnixListener::bind(&short)?;
        if let Some(gid) = gid {
            std::os::unix::fs::lchown(&short, None, Some(gid))?;
        }
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&short, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&short);
    let _ = std::fs::remove_dir(&private);
    made
}

/// Opens directory `path` inside the container root `root`, creating what is missing (mode
/// 0755), component by component beneath the descriptor of the one before (`openat` with
/// `O_NOFOLLOW`), never through a path string a container could change between a check and the
/// open (issue #26, 9). A symlink on the way is the image's to decide (`/var/run` is often a link
/// to `/run`): its target is read (`readlinkat`) and walked the same way, an absolute one from
/// the root's descriptor, and `..` never climbs above the root, as if the root were `/`. At most
/// 40 links are followed (the kernel's own limit). The directory must be on the root's own file
/// system: a volume mounted there is the host's directory, not the container's.
pub fn open_dir_in_root(root: &Path, path: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::errno::Errno;
    use nix::fcntl::{OFlag, openat, readlinkat};
    use nix::sys::stat::{Mode, fstat, mkdirat};
    use std::collections::VecDeque;
    use std::ffi::OsString;
    use std::os::fd::OwnedFd;
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let root_fd: OwnedFd = nix::fcntl::open(root, dir_flags | OFlag::O_NOFOLLOW, Mode::empty())?;
    let root_dev = fstat(&root_fd)?.st_dev;
    let components = |p: &Path| -> Vec<OsString> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some(OsString::from("..")),
                _ => None,
            })
            .collect()
    };
    let mut todo: VecDeque<OsString> = components(path).into();
    // The directories walked through, below the root: `..` goes back to the last of them.
    let mut above: Vec<OwnedFd> = Vec::new();
    let mut cur = root_fd.try_clone()?;
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            if let Some(parent) = above.pop() {
                cur = parent;
            }
            continue;
        }
        match openat(
            &cur,
            name.as_os_str(),
            dir_flags | OFlag::O_NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(fd) => {
                above.push(std::mem::replace(&mut cur, fd));
                continue;
            }
            Err(Errno::ENOENT) => {
                match mkdirat(&cur, name.as_os_str(), Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            // A link (ELOOP; some systems say ENOTDIR with O_DIRECTORY) or not a directory.
            Err(e @ (Errno::ELOOP | Errno::ENOTDIR | Errno::EMLINK)) => {
                let target = match readlinkat(&cur, name.as_os_str()) {
                    Ok(t) => t,
                    Err(_) => {
                        return Err(std::io::Error::other(format!(
                            "{:?} in {} inside the container root is not a directory ({e})",
                            name,
                            path.display()
                        )));
                    }
                };
                links += 1;
                if links > 40 {
                    return Err(Errno::ELOOP.into());
                }
                let target = PathBuf::from(target);
                if target.is_absolute() {
                    above.clear();
                    cur = root_fd.try_clone()?;
                }
                for c in components(&target).into_iter().rev() {
                    todo.push_front(c);
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        // Made just now (or by someone else meanwhile): opened on the next turn.
        todo.push_front(name);
        links += 1;
        if links > 80 {
            return Err(Errno::ELOOP.into());
        }
    }
    if fstat(&cur)?.st_dev != root_dev {
        return Err(std::io::Error::other(format!(
            "{} is a mount in the container root, not the container's own directory",
            path.display()
        )));
    }
    Ok(cur)
}

/// The path inside a container root that `path` names, relative and lexically clean, or `None`
/// when `..` would climb above the root (`../../etc`).
pub fn clean_in_root(path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_that_climb_out_are_refused() {
        assert_eq!(
            clean_in_root("/etc/hosts"),
            Some(PathBuf::from("etc/hosts"))
        );
        assert_eq!(clean_in_root("/a/b/../c/./d"), Some(PathBuf::from("a/c/d")));
        assert_eq!(clean_in_root("../../etc"), None);
        assert_eq!(clean_in_root("/data/../../etc"), None);
        assert_eq!(clean_in_root("/"), Some(PathBuf::new()));
    }

    /// Issue #26, 9: the relay's directory was resolved, then opened by path with a check on its
    /// last component only: a container that can write a parent could swap it between the two.
    #[test]
    fn directories_in_a_root_are_walked_beneath_descriptors() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("run")).expect("mkdir");
        std::fs::create_dir_all(root.join("var")).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        symlink("../run", root.join("var/run")).expect("symlink");
        let ino = |fd: &std::os::fd::OwnedFd| nix::sys::stat::fstat(fd).expect("fstat").st_ino;
        let meta =
            |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).expect("stat"));
        // The image's link is followed inside the root.
        let fd = open_dir_in_root(&root, Path::new("/var/run")).expect("open");
        assert_eq!(ino(&fd), meta(&root.join("run")));
        // A link out of the root (absolute, or climbing) stays inside: /etc of the root, made.
        symlink(&outside, root.join("abs")).expect("symlink");
        symlink("../../../../../outside", root.join("rel")).expect("symlink");
        let fd = open_dir_in_root(&root, Path::new("/abs/x")).expect("open");
        assert_eq!(
            ino(&fd),
            meta(&root.join(outside.strip_prefix("/").expect("abs")).join("x"))
        );
        let fd = open_dir_in_root(&root, Path::new("/rel")).expect("open");
        assert_eq!(ino(&fd), meta(&root.join("outside")));
        assert_eq!(
            std::fs::read_dir(&outside).expect("ls").count(),
            0,
            "nothing made outside"
        );
        // Missing directories are made; a file on the way is an error; a loop ends.
        let fd = open_dir_in_root(&root, Path::new("/a/b/c")).expect("open");
        assert_eq!(ino(&fd), meta(&root.join("a/b/c")));
        std::fs::write(root.join("file"), "").expect("write");
        assert!(open_dir_in_root(&root, Path::new("/file/x")).is_err());
        symlink("loop", root.join("loop")).expect("symlink");
        assert!(open_dir_in_root(&root, Path::new("/loop")).is_err());
    }

    #[test]
    fn sockets_are_made_with_their_final_mode_and_group() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.sock");
        std::fs::write(&path, "stale").expect("write");
        let gid = 4242;
        let l = bind_socket(&path, 0o660, Some(gid)).expect("bind");
        let m = std::fs::symlink_metadata(&path).expect("stat");
        assert_eq!((m.permissions().mode() & 0o7777, m.gid()), (0o660, gid));
        std::os::unix::net::UnixStream::connect(&path).expect("connect");
        drop(l);
        bind_socket(&dir.path().join("b.sock"), 0o600, None).expect("bind");
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("ls").count(),
            2,
            "no scratch left"
        );
        // A directory others can enter: bound aside in a private one, then renamed.
        let open = dir.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = open.join("c.sock");
        let l = bind_socket(&path, 0o660, Some(gid)).expect("bind");
        let m = std::fs::symlink_metadata(&path).expect("stat");
        assert_eq!((m.permissions().mode() & 0o7777, m.gid()), (0o660, gid));
        std::os::unix::net::UnixStream::connect(&path).expect("connect");
        drop(l);
        assert_eq!(
            std::fs::read_dir(&open).expect("ls").count(),
            1,
            "no scratch left"
        );
    }

    #[test]
    fn atomic_write_replaces_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("s.json");
        write_atomic(&p, b"1").expect("write");
        write_atomic(&p, b"22").expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"22");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
