//! Linux implementation of the platform layer. On Linux darwin-cri exists to be tested: the same
//! chroot, bind-mount and process-table mechanics as on macOS, through Linux's interfaces.

use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{MntFlags, MsFlags};

use super::{ProcInfo, ProcUsage};

pub const OS: super::Os = super::Os::Linux;
pub const LAYERED_ROOTS: bool = true;
pub const HAS_BIND_MOUNTS: bool = true;
pub const RESOLVER_DIR: Option<&str> = None;
pub const CLONES_TREES: bool = false;

pub type RlimitResource = libc::__rlimit_resource_t;

/// Linux has no scheduling class beyond the nice value.
pub fn child_priority_class(_nice: i32) -> io::Result<()> {
    Ok(())
}

/// Every descriptor this process makes is close-on-exec from its creation: nothing to do.
pub fn inherit_only_stdio(_cmd: &mut Command) {}

pub fn pipe_cloexec() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// No single call clones a tree on Linux (reflinks are per file: see image-service's
/// CopyCloner).
pub fn clone_tree(_src: &Path, _dst: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no tree clone on Linux",
    ))
}

/// Binds what `fd` (opened from `_source`) names, through `/proc/self/fd/N`: a directory on the
/// way swapped for a link after the open can neither pass nor redirect the mount.
pub fn bind_mount_fd(
    fd: &std::os::fd::OwnedFd,
    _source: &Path,
    target: &Path,
    readonly: bool,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let via = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    bind_mount(&via, target, readonly)
}

pub fn bind_mount(source: &Path, target: &Path, readonly: bool) -> io::Result<()> {
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )?;
    if readonly && let Err(e) = read_only_tree(target) {
        let _ = unmount(target);
        return Err(e);
    }
    Ok(())
}

/// Makes the mount at `target` and every mount below it read-only. A recursive bind brings the
/// source's submounts along (a disk or a tmpfs mounted inside a volume's directory), and a
/// remount with MS_RDONLY changes only the top one: the submounts would stay writable. On macOS
/// `bindfs -o ro` serves the whole tree read-only, submounts included; the twin does the same.
fn read_only_tree(target: &Path) -> io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    let path = super::cstring(target)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads the NUL-terminated path and `attr` (its size passed), both
    // alive for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ENOSYS) {
        return Err(e);
    }
    // Before Linux 5.12: each mount of the tree remounted read-only, the top one first.
    let top = target.canonicalize()?;
    let mut points: Vec<PathBuf> = mount_points()?
        .into_iter()
        .filter(|m| m.starts_with(&top))
        .collect();
    points.sort_by_key(|m| m.components().count());
    points.dedup();
    for point in points {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        nix::mount::mount(None::<&str>, &point, None::<&str>, flags, None::<&str>)?;
    }
    Ok(())
}

pub fn set_propagation(target: &Path, propagation: crate::Propagation) -> io::Result<()> {
    let kind = match propagation {
        crate::Propagation::Private => MsFlags::MS_PRIVATE,
        crate::Propagation::HostToContainer => MsFlags::MS_SLAVE,
        crate::Propagation::Bidirectional => MsFlags::MS_SHARED,
    };
    nix::mount::mount(
        None::<&str>,
        target,
        None::<&str>,
        kind | MsFlags::MS_REC,
        None::<&str>,
    )?;
    Ok(())
}

pub fn propagation_of(path: &Path) -> io::Result<(bool, bool)> {
    let path = path.canonicalize()?;
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    propagation_in(&text, &path).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no mount holds {}", path.display()),
        )
    })
}

/// The (shared, slave) flags of the deepest mount in `mountinfo` holding `path`, the last one
/// listed for a mount point mounted over.
fn propagation_in(mountinfo: &str, path: &Path) -> Option<(bool, bool)> {
    let mut best: Option<(usize, bool, bool)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(point) = fields.get(4) else {
            continue;
        };
        let point = PathBuf::from(std::ffi::OsString::from_vec(unescape_octal(point)));
        if !path.starts_with(&point) {
            continue;
        }
        // Optional fields run from the seventh to the "-" separator.
        let optional = fields
            .iter()
            .skip(6)
            .take_while(|f| **f != "-")
            .collect::<Vec<_>>();
        let shared = optional.iter().any(|f| f.starts_with("shared:"));
        let slave = optional.iter().any(|f| f.starts_with("master:"));
        let depth = point.components().count();
        if best.is_none_or(|(d, _, _)| depth >= d) {
            best = Some((depth, shared, slave));
        }
    }
    best.map(|(_, shared, slave)| (shared, slave))
}

pub fn unmount(target: &Path) -> io::Result<()> {
    match nix::mount::umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => {
            nix::mount::umount2(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Mount points from /proc/self/mountinfo (field 5), with its octal escapes decoded.
pub fn mount_points() -> io::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(std::ffi::OsString::from_vec(unescape_octal(field))))
        .collect())
}

fn unescape_octal(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

pub fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)?;
    Ok(())
}

fn parse_stat(pid: i32, text: &str) -> Option<ProcInfo> {
    // "pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime
    //  stime cutime cstime priority nice num_threads itrealvalue starttime ..."; comm may hold
    // spaces and parentheses, so fields are counted from the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = *fields.first()?;
    Some(ProcInfo {
        pid,
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        alive: state != "Z" && state != "X",
        start_time: fields.get(19)?.parse().ok()?,
    })
}

fn parse_usage(text: &str) -> Option<ProcUsage> {
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    let tick_ns = 1_000_000_000 / clock_ticks();
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    Some(ProcUsage {
        cpu_ns: (num(11)? + num(12)?) * tick_ns,
        children_cpu_ns: (num(13)? + num(14)?) * tick_ns,
        rss_bytes: num(21)? * page,
        minor_faults: num(7)?,
        major_faults: num(9)?,
    })
}

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as u64
}

pub fn process_usage(pid: i32) -> Option<ProcUsage> {
    let bytes = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_usage(&String::from_utf8_lossy(&bytes))
}

/// The CPU time of every thread of `pid` in nanoseconds, from the scheduler's own account
/// (`schedstat`, whose first field is the task's run time): exact where the stat file's clock
/// ticks (10 ms) round a small request's work down to nothing. `None` where the kernel keeps no
/// such account.
pub fn process_cpu_ns(pid: i32) -> Option<u64> {
    let mut total = 0;
    let mut any = false;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let ns = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse::<u64>().ok());
        if let Some(ns) = ns {
            total += ns;
            any = true;
        }
    }
    any.then_some(total)
}

/// Every pid in /proc.
fn pids() -> io::Result<impl Iterator<Item = i32>> {
    Ok(std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok())))
}

pub fn process_usage_table() -> io::Result<Vec<(ProcInfo, ProcUsage)>> {
    Ok(pids()?
        .filter_map(|pid| {
            let bytes = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
            let text = String::from_utf8_lossy(&bytes);
            Some((parse_stat(pid, &text)?, parse_usage(&text)?))
        })
        .collect())
}

pub fn process_info(pid: i32) -> Option<ProcInfo> {
    // Read as bytes: a command name may be any bytes, even a UTF-8 sequence cut at 15 bytes.
    let bytes = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &String::from_utf8_lossy(&bytes))
}

pub fn process_table() -> io::Result<Vec<ProcInfo>> {
    Ok(pids()?.filter_map(process_info).collect())
}

pub fn children(pid: i32) -> Vec<i32> {
    // Each thread lists the children it forked; a process's children are the union.
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out
}

pub fn rss_bytes(pid: i32) -> Option<u64> {
    // PSS: a page shared by several processes (a fork's copy-on-write pages, libraries) is
    // divided among them instead of counted once per process, so a tree's sum is what it
    // really holds, close to what a memory cgroup charges.
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

pub fn background_thread() -> io::Result<()> {
    // SAFETY: setpriority takes plain integers; who 0 is the calling thread on Linux.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn set_nice(pid: i32, nice: i32) -> io::Result<()> {
    // Linux priorities belong to threads: set every thread of the process.
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))?;
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<libc::id_t>().ok())
        else {
            continue;
        };
        // SAFETY: setpriority takes plain integers and touches no memory of ours.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e);
            }
        }
    }
    Ok(())
}

pub fn set_rlimits(pid: i32, nproc: Option<u64>, nofile: Option<u64>) -> io::Result<()> {
    for (resource, value) in [(libc::RLIMIT_NPROC, nproc), (libc::RLIMIT_NOFILE, nofile)] {
        let limit = match value {
            Some(v) => libc::rlimit {
                rlim_cur: v as libc::rlim_t,
                rlim_max: v as libc::rlim_t,
            },
            None => continue,
        };
        // SAFETY: limit is a valid rlimit that outlives the call; old_limit may be null.
        if unsafe { libc::prlimit(pid, resource, &limit, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

pub fn processes_in_root(rootfs: &Path) -> Vec<i32> {
    let Ok(pids) = pids() else { return Vec::new() };
    pids.filter(|pid| std::fs::read_link(format!("/proc/{pid}/root")).is_ok_and(|r| r == rootfs))
        .filter(|pid| process_info(*pid).is_some_and(|p| p.alive))
        .collect()
}

/// An overlayfs over the read-only snapshot and the layers above it (`lowers`, the uppermost
/// first): creating a container root costs one mount, however big the image. The upper and work
/// directories live in the container directory.
/// overlayfs marks an opaque directory with `trusted.overlay.opaque` (or `user.overlay.opaque`
/// on a userxattr mount) set to "y".
pub fn is_overlay_opaque(dir: &Path) -> bool {
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    [c"trusted.overlay.opaque", c"user.overlay.opaque"]
        .iter()
        .any(|name| {
            let mut value = [0u8; 4];
            // SAFETY: both strings are NUL-terminated and the buffer's length is passed.
            let n = unsafe {
                libc::lgetxattr(
                    path.as_ptr(),
                    name.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            n == 1 && value[0] == b'y'
        })
}

pub fn layer_rootfs(lowers: &[&Path], dir: &Path, rootfs: &Path, nosuid: bool) -> io::Result<()> {
    let upper = dir.join("upper");
    let work = dir.join("work");
    let mut paths = lowers.to_vec();
    paths.extend([upper.as_path(), work.as_path()]);
    // overlayfs options separate with ',' and ':' and escape with '\'; such paths fall back
    // to a copy rather than being escaped.
    if paths.iter().any(|p| {
        p.as_os_str()
            .as_bytes()
            .iter()
            .any(|b| matches!(b, b',' | b':' | b'\\'))
    }) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path unusable in overlay options",
        ));
    }
    for d in [&upper, &work, &rootfs.to_path_buf()] {
        std::fs::create_dir_all(d)?;
    }
    let lowerdir = lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let options = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    let flags = if nosuid {
        MsFlags::MS_NOSUID
    } else {
        MsFlags::empty()
    };
    nix::mount::mount(
        Some("overlay"),
        rootfs,
        Some("overlay"),
        flags,
        Some(options.as_str()),
    )?;
    Ok(())
}

pub fn wait_for_exited_child() -> io::Result<i32> {
    // SAFETY: siginfo_t is plain data for which all zeroes is a valid value; waitid(2) fills it
    // in, and with WNOWAIT leaves the child unreaped.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid succeeded for an exited child, so the pid field is set.
    Ok(unsafe { info.si_pid() })
}

pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

pub const MAX_SOCKET_PATH: usize = 107;

/// How `open_nofollow` opens each component: a handle that needs no read permission.
pub const OPEN_ANY: nix::fcntl::OFlag = nix::fcntl::OFlag::O_PATH;

/// Binds through `/proc/self/fd/N/<name>`, N the directory: a short path to a directory of any
/// depth, that no later change of the directory's path can redirect; the mode is then set on the
/// entry without following a link (a link swapped in meanwhile is an error, not a target).
/// Falls back to binding under `scratch` and renaming.
pub fn bind_in_dir(
    dir: &std::os::fd::OwnedFd,
    name: &str,
    mode: u32,
    scratch: &Path,
) -> io::Result<std::os::unix::net::UnixListener> {
    use nix::sys::stat::{FchmodatFlags, Mode, fchmodat};
    use std::os::fd::AsRawFd;
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    match std::os::unix::net::UnixListener::bind(&short) {
        Ok(l) => {
            fchmodat(
                dir,
                name,
                Mode::from_bits_truncate(mode as _),
                FchmodatFlags::NoFollowSymlink,
            )?;
            Ok(l)
        }
        Err(_) => super::bind_and_move(dir, name, mode, scratch),
    }
}

pub fn host_facts() -> super::HostFacts {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |text: &str, key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    super::HostFacts {
        os: "linux".into(),
        os_version: std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| super::parse_os_release(&t))
            .unwrap_or_default(),
        os_build: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        chip: field(&cpuinfo, "model name").unwrap_or_default(),
        memory_bytes: field(&meminfo, "MemTotal")
            .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0),
        ..Default::default()
    }
}

pub fn filesystem_type(path: &Path) -> io::Result<String> {
    let fs = nix::sys::statfs::statfs(path)?;
    let magic = fs.filesystem_type().0 as u64;
    Ok(match magic {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x794C_7630 => "overlay".into(),
        0x6573_5546 => "fuse".into(),
        0x6969 => "nfs".into(),
        0x2FC1_2FC1 => "zfs".into(),
        other => format!("0x{other:x}"),
    })
}

mod confine;
pub use confine::{
    CAPABILITY_NAMES, Confined, HAS_SECCOMP, capability_number, check_seccomp_profile,
    known_syscall, landlock_abi,
};

pub fn mount_proc(target: &Path) -> io::Result<()> {
    nix::mount::mount(
        Some("proc"),
        target,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )?;
    Ok(())
}

/// Mounts the tree at `path` on itself with setuid and setgid bits ignored, for a root that is
/// no mount of its own (a copied root).
pub fn remount_nosuid(path: &Path) -> io::Result<()> {
    nix::mount::mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID;
    if let Err(e) = nix::mount::mount(None::<&str>, path, None::<&str>, flags, None::<&str>) {
        let _ = unmount(path);
        return Err(e.into());
    }
    Ok(())
}

/// See [`crate::listening_tcp_ports`]: /proc/net/tcp{,6}'s listening sockets by inode, and the
/// processes' `socket:[inode]` descriptors.
pub fn listening_tcp_ports(pids: &[i32]) -> io::Result<Vec<u16>> {
    let mut listening = std::collections::HashMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match std::fs::read_to_string(table) {
            Ok(t) => t,
            // No IPv6 in this kernel.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        listening.extend(parse_listening(&text));
    }
    let mut ports = Vec::new();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let inode = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(port) = inode.and_then(|i| listening.get(&i)) {
                ports.push(*port);
            }
        }
    }
    Ok(ports)
}

/// The listening sockets (state `0A`) of a /proc/net/tcp or tcp6 table: inode → local port.
pub(crate) fn parse_listening(table: &str) -> Vec<(u64, u16)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() < 10 || f[3] != "0A" {
                return None;
            }
            let port = u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()?;
            Some((f[9].parse().ok()?, port))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let line = "42 (a) b) c) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        let info = parse_stat(42, line).expect("parses");
        assert_eq!(
            (info.ppid, info.pgid, info.alive, info.start_time),
            (7, 42, true, 987654)
        );
        let zombie = "43 (z) Z 1 43 43 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0";
        assert!(!parse_stat(43, zombie).expect("parses").alive);
    }

    #[test]
    fn the_deepest_mount_gives_the_propagation() {
        let info = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /data rw,relatime - tmpfs tmpfs rw
41 40 0:36 / /data/vol rw,relatime master:7 - tmpfs tmpfs rw
42 22 0:37 / /data\\040x rw shared:9 master:3 - tmpfs tmpfs rw
";
        let of = |p: &str| propagation_in(info, Path::new(p));
        assert_eq!(of("/etc"), Some((true, false)));
        assert_eq!(of("/data/a"), Some((false, false)));
        assert_eq!(of("/data/vol/x"), Some((false, true)));
        assert_eq!(of("/data x/y"), Some((true, true)));
        assert_eq!(
            of("/datax"),
            Some((true, false)),
            "a prefix of a name is no parent"
        );
        assert_eq!(propagation_in("", Path::new("/")), None);
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_octal(r"/a\040b\011c"), b"/a b\tc".to_vec());
        assert_eq!(unescape_octal(r"/x\04"), b"/x\\04".to_vec());
    }
}
