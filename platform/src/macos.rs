//! macOS implementation of the platform layer.
//!
//! This file cannot run on the Linux machines darwin-cri is tested on; CI type-checks it for both
//! Apple targets (scripts/check-macos.sh). It is kept small, written only against documented
//! calls (chroot(2), clonefile(2), unmount(2), getmntinfo(3), proc_listallpids/proc_pidinfo from
//! libproc, sysctlbyname(3), mach_timebase_info), and mirrors `linux.rs` function for function;
//! the tests exercise the Linux twin.
//! Volumes are mounted by bindfs (over macFUSE or fuse-t, see `crate::mounts`) since macOS has
//! no bind mounts.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{ProcInfo, ProcUsage, cstring};

pub const OS: super::Os = super::Os::MacOs;
pub const LAYERED_ROOTS: bool = false;
pub const HAS_BIND_MOUNTS: bool = false;
pub const RESOLVER_DIR: Option<&str> = Some("/etc/resolver");
pub const CLONES_TREES: bool = true;

pub type RlimitResource = libc::c_int;

/// The lowest priority (nice 19) also puts the process in the background QoS class, where
/// macOS throttles its CPU and I/O the way it does for background work. Runs in the forked
/// child: one system call.
pub fn child_priority_class(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    if nice >= 19
        && unsafe { libc::setpriority(libc::PRIO_DARWIN_PROCESS, 0, libc::PRIO_DARWIN_BG) } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Most descriptors the child looks at; a process of darwin-cri holds far fewer (the server's
/// open-file limit in the launchd plist is 65536, but a fork happens with a few hundred open).
const MAX_INHERITED: usize = 4096;

pub fn inherit_only_stdio(cmd: &mut Command) {
    // The list is filled in the child, into memory allocated here before the fork.
    let mut fds: Vec<libc::proc_fdinfo> = Vec::with_capacity(MAX_INHERITED);
    // SAFETY: in the forked child before exec: getpid, proc_pidinfo (one system call writing at
    // most `bytes` bytes into the buffer allocated before the fork) and fcntl, all
    // async-signal-safe; nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            let bytes = (fds.capacity() * size_of::<libc::proc_fdinfo>()) as libc::c_int;
            let n = libc::proc_pidinfo(
                libc::getpid(),
                libc::PROC_PIDLISTFDS,
                0,
                fds.as_mut_ptr().cast(),
                bytes,
            );
            if n <= 0 {
                return Err(io::Error::last_os_error());
            }
            let count = (n as usize / size_of::<libc::proc_fdinfo>()).min(fds.capacity());
            fds.set_len(count);
            for info in &fds {
                if info.proc_fd > 2 {
                    libc::fcntl(info.proc_fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            Ok(())
        });
    }
}

/// macOS has no pipe2: pipe, then close-on-exec on each end. A fork on another thread between
/// the two calls would copy the ends unmarked; every process darwin-cri spawns goes through
/// [`inherit_only_stdio`], which marks them in the child.
pub fn pipe_cloexec() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    let (r, w) = nix::unistd::pipe()?;
    for fd in [&r, &w] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    }
    Ok((r, w))
}

/// APFS clones: one clonefile(2) call copies a whole tree copy-on-write. Across volumes (EXDEV)
/// or on a file system without clones (ENOTSUP) the caller copies instead.
pub fn clone_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let (s, d) = (cstring(src)?, cstring(dst)?);
    const CLONE_NOFOLLOW: u32 = 0x0001;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    if unsafe { libc::clonefile(s.as_ptr(), d.as_ptr(), CLONE_NOFOLLOW) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EXDEV) | Some(libc::ENOTSUP) => {
            Err(io::Error::new(io::ErrorKind::Unsupported, err))
        }
        _ => Err(err),
    }
}

/// macOS cannot name an open descriptor by path for mount: bindfs gets `source`, which
/// `open_nofollow` just checked.
pub fn bind_mount_fd(
    _fd: &std::os::fd::OwnedFd,
    source: &Path,
    target: &Path,
    readonly: bool,
) -> io::Result<()> {
    bind_mount(source, target, readonly)
}

/// macOS has no bind mounts; `mounts.mechanism = "bindfs"` (the default there) mounts volumes.
pub fn bind_mount(_source: &Path, _target: &Path, _readonly: bool) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "macOS has no bind mounts: set mounts.mechanism = \"bindfs\" (the default there)",
    ))
}

/// bindfs reads the source through the host's file system: the host's later mounts below it
/// show in the container whatever is asked (see `crate::set_propagation`); nothing mounted
/// inside reaches the host.
pub fn set_propagation(_target: &Path, propagation: crate::Propagation) -> io::Result<()> {
    match propagation {
        crate::Propagation::Bidirectional => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "mount propagation Bidirectional is not available on macOS (no shared subtrees)",
        )),
        _ => Ok(()),
    }
}

pub fn propagation_of(_path: &Path) -> io::Result<(bool, bool)> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "macOS has no shared subtrees",
    ))
}

pub fn unmount(target: &Path) -> io::Result<()> {
    let path = cstring(target)?;
    // SAFETY: path is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::unmount(path.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    // SAFETY: as above; MNT_FORCE for a FUSE mount whose daemon is gone or busy.
    if unsafe { libc::unmount(path.as_ptr(), libc::MNT_FORCE) } == 0 {
        return Ok(());
    }
    Err(io::Error::last_os_error())
}

pub fn mount_points() -> io::Result<Vec<PathBuf>> {
    let mut buf: *mut libc::statfs = std::ptr::null_mut();
    // SAFETY: getmntinfo stores a pointer to a libc-owned array of `n` statfs structs in buf.
    let n = unsafe { libc::getmntinfo(&mut buf, libc::MNT_NOWAIT) };
    if n <= 0 || buf.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: buf points to n initialised statfs structs, valid until the next getmntinfo call.
    let entries = unsafe { std::slice::from_raw_parts(buf, n as usize) };
    Ok(entries
        .iter()
        .map(|e| {
            // SAFETY: f_mntonname is a NUL-terminated C string inside the struct.
            let name = unsafe { CStr::from_ptr(e.f_mntonname.as_ptr()) };
            PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes()))
        })
        .collect())
}

pub fn become_subreaper() -> io::Result<()> {
    // macOS has no subreaper: orphans go to launchd, which reaps them. The monitor finds a
    // container's descendants through the process table instead.
    Ok(())
}

pub fn process_info(pid: i32) -> Option<ProcInfo> {
    // SAFETY: proc_bsdinfo is plain old data; zeroed is a valid value.
    let mut info: libc::proc_bsdinfo = unsafe { std::mem::zeroed() };
    let size = size_of::<libc::proc_bsdinfo>() as libc::c_int;
    // SAFETY: info is a writable buffer of exactly `size` bytes.
    let n = unsafe {
        libc::proc_pidinfo(
            pid,
            libc::PROC_PIDTBSDINFO,
            0,
            (&mut info as *mut libc::proc_bsdinfo).cast(),
            size,
        )
    };
    if n != size {
        return None;
    }
    const SZOMB: u32 = 5;
    Some(ProcInfo {
        pid,
        ppid: info.pbi_ppid as i32,
        pgid: info.pbi_pgid as i32,
        alive: info.pbi_status != SZOMB,
        start_time: info.pbi_start_tvsec * 1_000_000 + info.pbi_start_tvusec,
    })
}

/// Mach absolute time units to nanoseconds (1:1 on Intel, 125/3 on Apple silicon). The
/// timebase never changes while the system runs: it is asked once.
fn mach_to_ns(t: u64) -> u64 {
    static TIMEBASE: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    let (numer, denom) = *TIMEBASE.get_or_init(|| {
        let mut base = mach2::mach_time::mach_timebase_info { numer: 1, denom: 1 };
        // SAFETY: base is a valid, writable mach_timebase_info for the call.
        let rc = unsafe { mach2::mach_time::mach_timebase_info(&mut base) };
        if rc != 0 || base.denom == 0 {
            (1, 1)
        } else {
            (base.numer, base.denom)
        }
    });
    ((t as u128 * numer as u128) / denom as u128) as u64
}

pub fn process_usage(pid: i32) -> Option<ProcUsage> {
    usage(pid)
}

/// `proc_pid_rusage` already counts in nanoseconds (Mach time converted).
pub fn process_cpu_ns(pid: i32) -> Option<u64> {
    usage(pid).map(|u| u.cpu_ns)
}

fn usage(pid: i32) -> Option<ProcUsage> {
    // SAFETY: rusage_info_v2 is plain old data; zeroed is a valid value.
    let mut info: libc::rusage_info_v2 = unsafe { std::mem::zeroed() };
    let mut buffer = (&mut info as *mut libc::rusage_info_v2).cast::<libc::c_void>();
    // SAFETY: buffer points to a writable rusage_info_v2, the struct RUSAGE_INFO_V2 fills.
    if unsafe { libc::proc_pid_rusage(pid, libc::RUSAGE_INFO_V2, &mut buffer) } != 0 {
        return None;
    }
    Some(ProcUsage {
        cpu_ns: mach_to_ns(info.ri_user_time + info.ri_system_time),
        children_cpu_ns: mach_to_ns(info.ri_child_user_time + info.ri_child_system_time),
        rss_bytes: info.ri_resident_size,
        minor_faults: 0,
        major_faults: info.ri_pageins,
    })
}

pub fn process_usage_table() -> io::Result<Vec<(ProcInfo, ProcUsage)>> {
    Ok(process_table()?
        .into_iter()
        .filter_map(|p| usage(p.pid).map(|u| (p, u)))
        .collect())
}

pub fn process_table() -> io::Result<Vec<ProcInfo>> {
    // SAFETY: a null buffer asks for the number of pids.
    let n = unsafe { libc::proc_listallpids(std::ptr::null_mut(), 0) };
    if n <= 0 {
        return Err(io::Error::last_os_error());
    }
    let mut pids = vec![0 as libc::pid_t; n as usize + 64];
    let bytes = (pids.len() * size_of::<libc::pid_t>()) as libc::c_int;
    // SAFETY: pids is a writable buffer of `bytes` bytes.
    let n = unsafe { libc::proc_listallpids(pids.as_mut_ptr().cast(), bytes) };
    if n <= 0 {
        return Err(io::Error::last_os_error());
    }
    pids.truncate(n as usize);
    Ok(pids.into_iter().filter_map(process_info).collect())
}

pub fn children(pid: i32) -> Vec<i32> {
    let mut pids = vec![0 as libc::pid_t; 4096];
    let bytes = (pids.len() * size_of::<libc::pid_t>()) as libc::c_int;
    // SAFETY: pids is a writable buffer of `bytes` bytes; the call returns how many it filled.
    let n = unsafe { libc::proc_listchildpids(pid, pids.as_mut_ptr().cast(), bytes) };
    if n <= 0 {
        return Vec::new();
    }
    pids.truncate(n as usize);
    pids
}

pub fn rss_bytes(pid: i32) -> Option<u64> {
    // The physical footprint counts pages the process owns, not shared ones: the figure
    // Activity Monitor shows as Memory, and the closest to what a cgroup would charge.
    // SAFETY: rusage_info_v2 is plain old data; zeroed is a valid value.
    let mut info: libc::rusage_info_v2 = unsafe { std::mem::zeroed() };
    let mut buffer = (&mut info as *mut libc::rusage_info_v2).cast::<libc::c_void>();
    // SAFETY: buffer points to a writable rusage_info_v2, the struct RUSAGE_INFO_V2 fills.
    let rc = unsafe { libc::proc_pid_rusage(pid, libc::RUSAGE_INFO_V2, &mut buffer) };
    (rc == 0).then_some(info.ri_phys_footprint)
}

pub fn background_thread() -> io::Result<()> {
    // SAFETY: setpriority takes plain integers; PRIO_DARWIN_THREAD with who 0 is the calling
    // thread, which PRIO_DARWIN_BG puts in the background class (low CPU and I/O priority).
    if unsafe { libc::setpriority(libc::PRIO_DARWIN_THREAD, 0, libc::PRIO_DARWIN_BG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn set_nice(pid: i32, nice: i32) -> io::Result<()> {
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, nice) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let bg = if nice >= 19 { libc::PRIO_DARWIN_BG } else { 0 };
    // SAFETY: as above; PRIO_DARWIN_PROCESS moves the process in or out of the background class.
    if unsafe { libc::setpriority(libc::PRIO_DARWIN_PROCESS, pid as libc::id_t, bg) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn set_rlimits(_pid: i32, _nproc: Option<u64>, _nofile: Option<u64>) -> io::Result<()> {
    // macOS cannot change another process's rlimits; new processes get the new values.
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "rlimits of a running process cannot change on macOS",
    ))
}

/// The root directory of a process (set by chroot), from PROC_PIDVNODEPATHINFO's pvi_rdir.
fn root_of(pid: i32) -> Option<PathBuf> {
    // SAFETY: proc_vnodepathinfo is plain old data; zeroed is a valid value.
    let mut info: libc::proc_vnodepathinfo = unsafe { std::mem::zeroed() };
    let size = size_of::<libc::proc_vnodepathinfo>() as libc::c_int;
    // SAFETY: info is a writable buffer of exactly `size` bytes.
    let n = unsafe {
        libc::proc_pidinfo(
            pid,
            libc::PROC_PIDVNODEPATHINFO,
            0,
            (&mut info as *mut libc::proc_vnodepathinfo).cast(),
            size,
        )
    };
    if n != size {
        return None;
    }
    // SAFETY: vip_path is a MAXPATHLEN (1024) byte buffer the kernel fills with a
    // NUL-terminated path; zeroed above, so a NUL is there even if it wrote nothing.
    let path = unsafe { CStr::from_ptr(info.pvi_rdir.vip_path.as_ptr().cast::<libc::c_char>()) };
    let bytes = path.to_bytes();
    (!bytes.is_empty()).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
}

pub fn processes_in_root(rootfs: &Path) -> Vec<i32> {
    let Ok(all) = process_table() else {
        return Vec::new();
    };
    all.into_iter()
        .filter(|p| p.alive && root_of(p.pid).as_deref() == Some(rootfs))
        .map(|p| p.pid)
        .collect()
}

/// No overlay, so no opaque directories.
pub fn is_overlay_opaque(_dir: &Path) -> bool {
    false
}

/// macOS has no layered filesystem a process can mount; APFS clones (`tree_cloner`) are its
/// copy-on-write mechanism.
pub fn layer_rootfs(
    _lowers: &[&Path],
    _dir: &Path,
    _rootfs: &Path,
    _nosuid: bool,
) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no layered filesystem on macOS; cloning",
    ))
}

pub fn wait_for_exited_child() -> io::Result<i32> {
    // SAFETY: siginfo_t is plain data for which all zeroes is a valid value; waitid(2) fills it
    // in, and with WNOWAIT leaves the child unreaped.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.si_pid)
}

pub fn release_free_memory() {
    // The macOS allocator returns free pages to the system itself (madvise on its magazines).
}

pub const MAX_SOCKET_PATH: usize = 103;

/// How `open_nofollow` opens each component (macOS has no O_PATH; the server is root). Never
/// blocking, should a component be a FIFO.
pub const OPEN_ANY: nix::fcntl::OFlag =
    nix::fcntl::OFlag::O_RDONLY.union(nix::fcntl::OFlag::O_NONBLOCK);

/// macOS has no short alias for a directory that bind(2) follows: bind under `scratch`, set
/// the mode there, and rename into the directory.
pub fn bind_in_dir(
    dir: &std::os::fd::OwnedFd,
    name: &str,
    mode: u32,
    scratch: &Path,
) -> io::Result<std::os::unix::net::UnixListener> {
    super::bind_and_move(dir, name, mode, scratch)
}

fn sysctl_bytes(name: &str) -> Option<Vec<u8>> {
    let cname = CString::new(name).ok()?;
    let mut len: libc::size_t = 0;
    // SAFETY: a null buffer with a length pointer asks for the value's size only.
    let rc = unsafe {
        libc::sysctlbyname(
            cname.as_ptr(),
            std::ptr::null_mut(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        return None;
    }
    let mut buf = vec![0u8; len];
    // SAFETY: buf is writable for len bytes; the kernel writes at most len and updates it.
    let rc = unsafe {
        libc::sysctlbyname(
            cname.as_ptr(),
            buf.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        return None;
    }
    buf.truncate(len);
    Some(buf)
}

fn sysctl_string(name: &str) -> Option<String> {
    let bytes = sysctl_bytes(name)?;
    let s = CStr::from_bytes_until_nul(&bytes).ok()?;
    Some(s.to_string_lossy().trim().to_string())
}

fn sysctl_u64(name: &str) -> Option<u64> {
    let bytes = sysctl_bytes(name)?;
    Some(u64::from_ne_bytes(bytes.get(..8)?.try_into().ok()?))
}

pub fn host_facts() -> super::HostFacts {
    let (os_version, os_build) = std::fs::read("/System/Library/CoreServices/SystemVersion.plist")
        .ok()
        .and_then(|b| super::parse_system_version(&b))
        .unwrap_or_default();
    super::HostFacts {
        os: "darwin".into(),
        os_version,
        os_build,
        chip: sysctl_string("machdep.cpu.brand_string").unwrap_or_default(),
        memory_bytes: sysctl_u64("hw.memsize").unwrap_or(0),
        ..Default::default()
    }
}

pub fn filesystem_type(path: &Path) -> io::Result<String> {
    let p = cstring(path)?;
    // SAFETY: statfs is plain old data; zeroed is a valid value that statfs(2) overwrites.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: p is NUL-terminated and fs is a writable statfs for the call.
    if unsafe { libc::statfs(p.as_ptr(), &mut fs) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: f_fstypename is a NUL-terminated C string inside the struct.
    let name = unsafe { CStr::from_ptr(fs.f_fstypename.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

pub const HAS_SECCOMP: bool = false;

pub fn known_syscall(_name: &str) -> bool {
    false
}

pub fn check_seccomp_profile(_json: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "seccomp profiles are not available on darwin nodes (macOS confines with Seatbelt)",
    ))
}

/// macOS has no capabilities: root is root.
pub const CAPABILITY_NAMES: &[&str] = &[];

pub fn capability_number(_name: &str) -> Option<u32> {
    None
}

/// ps, top and pgrep read sysctl on macOS, which works in a chroot: no /proc to mount.
pub fn mount_proc(_target: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "macOS has no /proc; process tools use sysctl",
    ))
}

/// A process cannot remount a tree nosuid on macOS: the volume holding darwin-cri's root is to
/// be mounted nosuid as a whole (`darwin-cri doctor` checks it; install.sh can make one).
pub fn remount_nosuid(_path: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no per-tree nosuid on macOS: mount the volume holding darwin-cri's root nosuid",
    ))
}

// libsandbox's compiler and loader, which `sandbox_init` itself calls and `sandbox-exec`
// uses: private API, declared as Chromium declares it (sandbox/mac/seatbelt.cc), which compiles
// its profiles in one process and applies them in another the same way. `sandbox_init` (the
// deprecated public entry point Nix and Bazel use) compiles in the calling process, so it
// cannot run in the forked child of the multithreaded monitor.
// The compiled profile is opaque here: only libsandbox reads it (its layout differs between
// the declarations in circulation).
#[repr(C)]
struct SandboxProfile {
    _opaque: [u8; 0],
}

#[link(name = "sandbox")]
unsafe extern "C" {
    fn sandbox_create_params() -> *mut libc::c_void;
    fn sandbox_free_params(params: *mut libc::c_void);
    fn sandbox_compile_string(
        profile: *const libc::c_char,
        params: *mut libc::c_void,
        error: *mut *mut libc::c_char,
    ) -> *mut SandboxProfile;
    fn sandbox_free_profile(profile: *mut SandboxProfile);
    // Newer libsandbox builds take a container path as a second argument; a null one is what
    // the one-argument form means, and an argument a callee does not take is ignored.
    fn sandbox_apply(profile: *mut SandboxProfile, container: *const libc::c_char) -> libc::c_int;
}

/// libsandbox as a [`super::SeatbeltCompiler`]: compiled in the monitor before the fork, applied
/// in the child (docs/seatbelt.md; *unproven on a Mac*).
pub struct Libsandbox;

/// A profile compiled by `sandbox_compile_string`, freed with the command that holds it.
pub struct CompiledProfile(*mut SandboxProfile);

impl Drop for CompiledProfile {
    fn drop(&mut self) {
        // SAFETY: the pointer came from sandbox_compile_string and is freed once, here. In a
        // forked child the command (and this) is never dropped: exec replaces the image.
        unsafe { sandbox_free_profile(self.0) }
    }
}

impl super::SeatbeltCompiler for Libsandbox {
    type Compiled = CompiledProfile;

    fn compile(profile: &CStr) -> io::Result<CompiledProfile> {
        let mut error: *mut libc::c_char = std::ptr::null_mut();
        // SAFETY: the profile is a NUL-terminated string that outlives the call; params are
        // made and freed here; `error` is a valid out-pointer whose message is copied before
        // it is freed (libsandbox allocates it with malloc).
        unsafe {
            let params = sandbox_create_params();
            let compiled = sandbox_compile_string(profile.as_ptr(), params, &mut error);
            if !params.is_null() {
                sandbox_free_params(params);
            }
            if compiled.is_null() {
                let message = if error.is_null() {
                    "no message".to_string()
                } else {
                    let m = CStr::from_ptr(error).to_string_lossy().into_owned();
                    libc::free(error.cast());
                    m
                };
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("the container's Seatbelt profile does not compile: {message}"),
                ));
            }
            Ok(CompiledProfile(compiled))
        }
    }

    fn apply(compiled: &CompiledProfile) -> io::Result<()> {
        // SAFETY: the compiled profile was made before the fork and stays alive (the command
        // holds it) until exec; sandbox_apply hands it to the kernel.
        if unsafe { sandbox_apply(compiled.0, std::ptr::null()) } != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "sandbox_apply refused the container's Seatbelt profile",
            ));
        }
        Ok(())
    }
}

/// A [`super::Confinement`] made ready before the fork: its Seatbelt profile, compiled.
pub struct Confined {
    profile: super::CompiledSeatbelt<Libsandbox>,
}

// SAFETY: the compiled profile is plain memory owned by this value, read by one thread at a
// time (the command's pre_exec closure, which std requires to be Send + Sync).
unsafe impl Send for CompiledProfile {}
unsafe impl Sync for CompiledProfile {}

impl Confined {
    pub fn prepare(c: &super::Confinement, _rootfs: &Path, _uid: u32) -> io::Result<Confined> {
        Ok(Confined {
            profile: super::CompiledSeatbelt::prepare(c)?,
        })
    }

    /// Nothing needs privilege: Seatbelt applies to any process.
    pub fn apply_as_root(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// The profile, once the process runs as its user: from here on it holds for the process
    /// and everything it starts (and a sandbox inside it is refused: docs/seatbelt.md). Only
    /// the compiled form is handed over: nothing is compiled or allocated in the child.
    pub fn apply_as_user(&mut self) -> io::Result<()> {
        self.profile.apply()
    }
}

/// No Landlock on macOS: Seatbelt confines.
pub fn landlock_abi() -> Option<u32> {
    None
}

/// See [`crate::listening_tcp_ports`]: each process's socket descriptors (`PROC_PIDLISTFDS`),
/// and for each, `proc_pidfdinfo(PROC_PIDFDSOCKETINFO)`'s `struct socket_fdinfo`
/// (<sys/proc_info.h>), which the libc crate does not define: read at its fixed offsets.
/// Unproven on a Mac (type-checked only); the offsets are those of the header's layout:
/// `proc_fileinfo` (24 bytes), then `socket_info`: `vinfo_stat` (136), `soi_so`, `soi_pcb` (8
/// each), `soi_type`, `soi_protocol`, `soi_family` (4 each), seven shorts and a u_short (16),
/// `soi_oobmark` (4), two `sockbuf_info` (24 each), `soi_kind` (at 232 in `socket_info`,
/// 256 in the whole), `rfu_1`, then the protocol union at 240 (264): `in_sockinfo`'s
/// `insi_fport` and `insi_lport` (at 268, in network order), and `tcp_sockinfo`'s
/// `tcpsi_state` right after the 80-byte `in_sockinfo` (at 344). 792 bytes in all.
pub fn listening_tcp_ports(pids: &[i32]) -> io::Result<Vec<u16>> {
    const PROC_PIDFDSOCKETINFO: libc::c_int = 3;
    const SOCKET_FDINFO_SIZE: usize = 792;
    const SOI_KIND: usize = 256;
    const INSI_LPORT: usize = 268;
    const TCPSI_STATE: usize = 344;
    const SOCKINFO_TCP: i32 = 2;
    const TSI_S_LISTEN: i32 = 1;
    let int_at = |buf: &[u8], at: usize| {
        i32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
    };
    let mut ports = Vec::new();
    for &pid in pids {
        let mut fds: Vec<libc::proc_fdinfo> = Vec::with_capacity(1024);
        let bytes = (fds.capacity() * size_of::<libc::proc_fdinfo>()) as libc::c_int;
        // SAFETY: the buffer holds `bytes` bytes of proc_fdinfo; the kernel writes at most that
        // and returns how many it wrote.
        let n = unsafe {
            libc::proc_pidinfo(
                pid,
                libc::PROC_PIDLISTFDS,
                0,
                fds.as_mut_ptr().cast(),
                bytes,
            )
        };
        if n <= 0 {
            continue;
        }
        let count = (n as usize / size_of::<libc::proc_fdinfo>()).min(fds.capacity());
        // SAFETY: the kernel initialised `count` entries.
        unsafe { fds.set_len(count) };
        for fd in fds
            .iter()
            .filter(|f| f.proc_fdtype as libc::c_int == libc::PROX_FDTYPE_SOCKET)
        {
            // u64s: aligned for the struct's 8-byte fields.
            let mut info = [0u64; SOCKET_FDINFO_SIZE / 8];
            // SAFETY: `info` is SOCKET_FDINFO_SIZE writable bytes; the kernel writes at most
            // that and returns how many.
            let got = unsafe {
                libc::proc_pidfdinfo(
                    pid,
                    fd.proc_fd,
                    PROC_PIDFDSOCKETINFO,
                    info.as_mut_ptr().cast(),
                    SOCKET_FDINFO_SIZE as libc::c_int,
                )
            };
            if got as usize != SOCKET_FDINFO_SIZE {
                continue;
            }
            // SAFETY: the array is plain memory of exactly SOCKET_FDINFO_SIZE bytes.
            let buf: &[u8] = unsafe {
                std::slice::from_raw_parts(info.as_ptr().cast::<u8>(), SOCKET_FDINFO_SIZE)
            };
            if int_at(buf, SOI_KIND) == SOCKINFO_TCP && int_at(buf, TCPSI_STATE) == TSI_S_LISTEN {
                ports.push(u16::from_be(int_at(buf, INSI_LPORT) as u16));
            }
        }
    }
    Ok(ports)
}
