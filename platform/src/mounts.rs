//! File systems and mounts: container roots (layers, clones), bind mounts and their
//! propagation, /proc, nosuid, unmounting, and what file system a path is on.

use super::*;

/// Clones the tree at `src` to `dst` (which must not exist) in one copy-on-write operation
/// (APFS `clonefile` on macOS). An error of kind [`io::ErrorKind::Unsupported`] means no such
/// clone is possible here (another OS, another file system, across volumes): copy instead.
pub fn clone_tree(src: &Path, dst: &Path) -> io::Result<()> {
    imp::clone_tree(src, dst)
}

/// Makes `source` visible at `target` (which exists, a directory or a file like `source`).
pub fn bind_mount(source: &Path, target: &Path, readonly: bool) -> io::Result<()> {
    imp::bind_mount(source, target, readonly)
}

/// Opens absolute `path` one component at a time without following links: an error (ELOOP) if a
/// directory on the way or the last component is a symlink. What it opens is what the path named
/// when it was checked, whatever is swapped in afterwards.
pub fn open_nofollow(path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::{Mode, SFlag, fstat};
    let mut fd = open_dir_nofollow(Path::new("/"))?;
    let names: Vec<_> = path
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    for (i, name) in names.iter().enumerate() {
        let mut flags = imp::OPEN_ANY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        if i + 1 < names.len() {
            flags |= OFlag::O_DIRECTORY;
        }
        fd = openat(&fd, *name, flags, Mode::empty())?;
    }
    // O_PATH opens a link itself rather than refusing it.
    if SFlag::from_bits_truncate(fstat(&fd)?.st_mode as _) & SFlag::S_IFMT == SFlag::S_IFLNK {
        return Err(nix::errno::Errno::ELOOP.into());
    }
    Ok(fd)
}

/// [`bind_mount`] of exactly what `source` names now: opened with [`open_nofollow`] and, on Linux,
/// mounted through `/proc/self/fd/N`, so a directory on the way swapped for a link in the
/// meantime can neither pass nor redirect the mount.
pub fn bind_mount_nofollow(source: &Path, target: &Path, readonly: bool) -> io::Result<()> {
    let fd = open_nofollow(source)?;
    imp::bind_mount_fd(&fd, source, target, readonly)
}

/// How mounts made later on one side of a volume reach the other: the CRI's MountPropagation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Propagation {
    /// Neither way (rprivate).
    #[default]
    Private,
    /// The host's mounts below the source appear in the container (rslave).
    HostToContainer,
    /// Both ways (rshared): a privileged container's mounts below the volume reach the host.
    Bidirectional,
}

/// Gives the volume mounted at `target` its propagation. On Linux a recursive change of the
/// bind mount's propagation type. macOS has no shared subtrees: a bindfs volume reads the
/// source's directories through the host's file system, so the host's later mounts below the
/// source show in the container (HostToContainer, and what Private gives there too), and nothing
/// a container mounts reaches the host, so Bidirectional is refused (Unsupported).
pub fn set_propagation(target: &Path, propagation: Propagation) -> io::Result<()> {
    imp::set_propagation(target, propagation)
}

/// Whether the mount that holds `path` is shared (`shared:N` in mountinfo) and whether it is a
/// slave (`master:N`): HostToContainer needs one of them, Bidirectional a shared one, as
/// containerd checks. Unsupported on macOS.
pub fn propagation_of(path: &Path) -> io::Result<(bool, bool)> {
    imp::propagation_of(path)
}

/// Unmounts `target`, detaching it lazily if it is busy.
pub fn unmount(target: &Path) -> io::Result<()> {
    imp::unmount(target)
}

/// Mount points at or below `dir`, deepest first (the order to unmount them in).
pub fn mounts_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    // The mount table holds real paths (macOS: /private/var/..., or a symlinked data disk);
    // comparing with a path through a symlink would find nothing and let a removal run
    // through live bind mounts.
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut mounts = imp::mount_points()?;
    mounts.retain(|m| m.starts_with(&dir));
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    Ok(mounts)
}

/// Makes `dir/rootfs` a copy-on-write layer (its changes in `dir/upper`, overlayfs' work
/// directory in `dir/work`) over `lowers`, the uppermost first: one mount, however big the
/// trees. Linux only; macOS has no layered file system a process can mount (an error of kind
/// Unsupported there; its copy-on-write is [`clone_tree`]).
/// With `nosuid`, setuid and setgid bits in the root grant nothing.
pub fn layer_rootfs(lowers: &[&Path], dir: &Path, rootfs: &Path, nosuid: bool) -> io::Result<()> {
    imp::layer_rootfs(lowers, dir, rootfs, nosuid)
}

/// Whether `dir`, in an overlayfs upper directory, is marked opaque (it hides the lower layers'
/// content of the same directory). Always false on macOS, which has no overlay.
pub fn is_overlay_opaque(dir: &Path) -> bool {
    imp::is_overlay_opaque(dir)
}

/// Mounts a /proc at `target` (a directory in a container root), nosuid, nodev and noexec:
/// process tools (ps, top, pgrep) read it on Linux, as they read sysctl on macOS, where there is
/// nothing to mount (an error of kind Unsupported). With no PID namespace it shows the host's
/// processes, as macOS's ps in a chroot does.
pub fn mount_proc(target: &Path) -> io::Result<()> {
    imp::mount_proc(target)
}

/// Makes the tree at `path` (a container root that is no mount of its own) ignore setuid and
/// setgid bits: a nosuid bind mount on Linux. macOS cannot (darwin-cri's whole root should be on
/// a volume mounted nosuid: doctor checks); an error of kind Unsupported there.
pub fn remount_nosuid(path: &Path) -> io::Result<()> {
    imp::remount_nosuid(path)
}

/// Whether this process may change a child's root: forks a child that calls chroot(2) on `dir`
/// and exits, and reports the error the call gave.
#[allow(unsafe_code)]
pub fn try_chroot(dir: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    let root = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // Never executed: the child exits from pre_exec once chroot has answered.
    let mut cmd = std::process::Command::new("/");
    // SAFETY: the closure runs in the forked child and calls only chroot(2) and _exit(2), both
    // async-signal-safe, on a string prepared before the fork. (With System Integrity
    // Protection on, macOS answers EPERM even for root.)
    unsafe {
        cmd.pre_exec(move || {
            if libc::chroot(root.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            libc::_exit(0)
        });
    }
    let status = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "the chroot probe ended with {status}"
        )))
    }
}

/// The name of the file system `path` is on: "apfs", "ext4", "overlay", "tmpfs", ...
pub fn filesystem_type(path: &Path) -> io::Result<String> {
    imp::filesystem_type(path)
}
