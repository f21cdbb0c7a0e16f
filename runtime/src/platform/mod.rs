//! The operating-system layer: the only module with `#[cfg(target_os = ...)]` and `unsafe`.
//!
//! Everything above this module is OS-neutral. Each function here has a Linux implementation
//! (`linux.rs`, exercised by the tests on Linux machines) and a macOS twin (`macos.rs`) with the same
//! signature, written against documented libc calls. The macOS file cannot be compiled on the Linux
//! machines the project is built and tested on, so it stays small and mirrors the Linux one closely.

use std::path::{Path, PathBuf};

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod linux;
#[cfg(target_os = "linux")]
use linux as imp;

#[cfg(target_os = "macos")]
#[allow(unsafe_code)]
mod macos;
#[cfg(target_os = "macos")]
use macos as imp;

/// One process as the process table reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    /// False for zombies: a process that exited but was not reaped is dead for every purpose here
    /// (on machines whose PID 1 does not reap, orphans stay zombies forever).
    pub alive: bool,
    /// Start time in an OS-specific unit; only ever compared for equality, to tell a pid that was
    /// reused from the process it used to name.
    pub start_time: u64,
}

/// What a process is started as inside a container root.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// Scheduling priority, 0 to 19.
    pub nice: i32,
    /// RLIMIT_NPROC, where the OS has it.
    pub nproc: Option<u64>,
    /// RLIMIT_NOFILE.
    pub nofile: Option<u64>,
}

/// Arranges for `cmd`, when spawned, to run with its root changed to `rootfs`, working directory
/// `cwd` (inside the root) and the given credentials, in a new process group whose id is its pid.
pub fn confine(
    cmd: &mut std::process::Command,
    rootfs: &Path,
    cwd: &Path,
    creds: &Credentials,
) -> std::io::Result<()> {
    imp::confine(cmd, rootfs, cwd, creds)
}

/// Makes `source` visible at `target` (which exists, a directory or a file like `source`).
pub fn bind_mount(source: &Path, target: &Path, readonly: bool) -> std::io::Result<()> {
    imp::bind_mount(source, target, readonly)
}

/// Unmounts `target`, detaching it lazily if it is busy.
pub fn unmount(target: &Path) -> std::io::Result<()> {
    imp::unmount(target)
}

/// Mount points at or below `dir`, deepest first (the order to unmount them in).
pub fn mounts_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut mounts = imp::mount_points()?;
    mounts.retain(|m| m.starts_with(dir));
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    Ok(mounts)
}

/// Direct children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    imp::children(pid)
}

/// Every live descendant of `root` (not including it), following child links: the cost grows
/// with the size of the tree, not of the process table.
pub fn tree(root: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut next = vec![root];
    while let Some(pid) = next.pop() {
        for child in children(pid) {
            if !found.contains(&child) && found.len() < 1_000_000 {
                found.push(child);
                next.push(child);
            }
        }
    }
    found
}

/// Resident memory of one process, in bytes.
pub fn rss_bytes(pid: i32) -> Option<u64> {
    imp::rss_bytes(pid)
}

/// Sets the scheduling priority of a running process (all its threads). On macOS the lowest
/// priority also puts the process in the background QoS class.
pub fn set_nice(pid: i32, nice: i32) -> std::io::Result<()> {
    imp::set_nice(pid, nice)
}

/// Changes RLIMIT_NPROC and RLIMIT_NOFILE of a running process where the OS allows it (Linux
/// prlimit); elsewhere only new processes get new rlimits.
pub fn set_rlimits(pid: i32, nproc: Option<u64>, nofile: Option<u64>) -> std::io::Result<()> {
    imp::set_rlimits(pid, nproc, nofile)
}

/// Live processes whose root directory is `rootfs`: every process of a container, even one that
/// escaped its process group and its parent. Empty where the OS cannot tell (macOS).
pub fn processes_in_root(rootfs: &Path) -> Vec<i32> {
    imp::processes_in_root(rootfs)
}

/// Makes orphaned descendants of this process its children, so that the monitor can reap and
/// kill them. A no-op where the OS has no such mechanism.
pub fn become_subreaper() -> std::io::Result<()> {
    imp::become_subreaper()
}

/// The whole process table.
pub fn process_table() -> std::io::Result<Vec<ProcInfo>> {
    imp::process_table()
}

/// One process, or `None` if there is no such pid.
pub fn process_info(pid: i32) -> Option<ProcInfo> {
    imp::process_info(pid)
}

/// Creates the minimal device set in `dev_dir`: each of null, zero, full, random, urandom and
/// tty that the host has, as a node with the host's device number (so the same code is right on
/// Linux and macOS, whose numbers differ), plus `shm/` (1777) and `pts/`.
pub fn populate_dev(dev_dir: &Path) -> std::io::Result<()> {
    use nix::sys::stat::{Mode, SFlag, mknod};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::create_dir_all(dev_dir)?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let Ok(host) = std::fs::metadata(Path::new("/dev").join(name)) else {
            continue;
        };
        let path = dev_dir.join(name);
        match mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            host.rdev() as _,
        ) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        // mknod honours the umask; the devices must be usable by any container user.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    }
    std::fs::create_dir_all(dev_dir.join("pts"))?;
    std::fs::create_dir_all(dev_dir.join("shm"))?;
    std::fs::set_permissions(dev_dir.join("shm"), std::fs::Permissions::from_mode(0o1777))
}

/// The fastest correct way to clone a directory tree on this OS.
pub fn tree_cloner() -> std::sync::Arc<dyn image_service::TreeCloner> {
    imp::tree_cloner()
}

/// Makes `dir/rootfs` a writable root whose initial content is `snapshot`'s, and returns it.
///
/// Where the OS offers a copy-on-write layer that needs no copy at all (overlayfs on Linux) it
/// is used unless `copy` is set; otherwise the tree is cloned with [`tree_cloner`] (APFS clones
/// on macOS, reflinks or a plain copy on Linux). A layered root is a mount below `dir`: it goes
/// with the other mounts when the container directory is removed.
pub fn clone_rootfs(snapshot: &Path, dir: &Path, copy: bool) -> std::io::Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    if !copy {
        match imp::layer_rootfs(snapshot, dir, &rootfs) {
            Ok(()) => return Ok(rootfs),
            Err(e) => {
                tracing::debug!(error = %e, "no copy-on-write layer for the rootfs; copying");
                for leftover in [dir.join("upper"), dir.join("work"), rootfs.clone()] {
                    let _ = std::fs::remove_dir_all(leftover);
                }
            }
        }
    }
    tree_cloner().clone_tree(snapshot, &rootfs)?;
    Ok(rootfs)
}

/// Whether `pid` names a live (not zombie) process that started at `start_time`.
pub fn is_alive(pid: i32, start_time: u64) -> bool {
    matches!(process_info(pid), Some(p) if p.alive && p.start_time == start_time)
}

/// Pids of every live descendant of `root` (not including it), found by walking parent links.
pub fn descendants(table: &[ProcInfo], root: i32) -> Vec<i32> {
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for p in table {
            if p.ppid == parent && p.alive && !found.contains(&p.pid) {
                found.push(p.pid);
            }
        }
        i += 1;
    }
    found.remove(0);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_follow_parent_links_and_skip_zombies() {
        let p = |pid, ppid, alive| ProcInfo {
            pid,
            ppid,
            pgid: pid,
            alive,
            start_time: 0,
        };
        let table = [
            p(10, 1, true),
            p(11, 10, true),
            p(12, 11, true),
            p(13, 10, false),
            p(14, 2, true),
        ];
        let mut d = descendants(&table, 10);
        d.sort();
        assert_eq!(d, vec![11, 12]);
    }

    #[test]
    fn own_process_is_alive_and_a_reused_start_time_is_not() {
        let me = std::process::id() as i32;
        let info = process_info(me).expect("own process is in the table");
        assert!(info.alive);
        assert!(is_alive(me, info.start_time));
        assert!(!is_alive(me, info.start_time + 1));
        assert!(process_table().expect("table").iter().any(|p| p.pid == me));
    }

    #[test]
    fn mounts_under_sees_a_bind_mount_and_unmount_removes_it() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        std::fs::create_dir(&src).expect("mkdir");
        std::fs::create_dir(&dst).expect("mkdir");
        std::fs::write(src.join("f"), "x").expect("write");
        bind_mount(&src, &dst, true).expect("bind");
        assert_eq!(mounts_under(dir.path()).expect("mounts"), vec![dst.clone()]);
        assert!(
            std::fs::write(dst.join("g"), "y").is_err(),
            "read-only mount refused a write"
        );
        assert_eq!(std::fs::read_to_string(dst.join("f")).expect("read"), "x");
        unmount(&dst).expect("unmount");
        assert!(mounts_under(dir.path()).expect("mounts").is_empty());
    }
}
