//! darwin-cri's operating-system layer: the only crate with `#[cfg(target_os = ...)]`, and the
//! only one with `unsafe`.
//!
//! Everything above this crate is OS-neutral. Each OS-specific function has a Linux
//! implementation (`linux.rs`, exercised by the tests on Linux machines) and a macOS twin
//! (`macos.rs`) of the same signature, written against documented calls; CI type-checks the macOS
//! twin for both Apple targets (scripts/check-macos.sh). What the twins share is written once,
//! here. Where macOS behaves a certain way in a chroot, the Linux twin is made to behave the
//! same, and says so.
//!
//! This crate depends on no other crate of the workspace: callers above it (image-service,
//! runtime, cri-server) build their own abstractions from these primitives.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

pub mod fdpass;
mod io_context;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as imp;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use macos as imp;

pub use io_context::{IoContext, IoError};

/// The operating systems darwin-cri runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    /// The Linux twin: where the tests run.
    Linux,
    /// The product's home.
    MacOs,
}

/// The operating system this build is for. Code above this crate that must differ by OS (a
/// default, a message naming the fix) asks this value instead of a `cfg`.
pub const OS: Os = imp::OS;

/// Whether the OS has bind mounts (Linux). macOS has none: volumes go through bindfs.
pub const HAS_BIND_MOUNTS: bool = imp::HAS_BIND_MOUNTS;

/// Whether [`clone_tree`] can clone a whole tree in one call (APFS `clonefile` on macOS).
pub const CLONES_TREES: bool = imp::CLONES_TREES;

/// Where the host reads per-domain DNS resolvers (resolver(5): `/etc/resolver/<domain>` on
/// macOS, whose programs resolve through mDNSResponder, not a chroot's resolv.conf). Linux
/// programs read the root's resolv.conf, so the twin has none.
pub const RESOLVER_DIR: Option<&str> = imp::RESOLVER_DIR;

/// The host's OS as OCI names it (`darwin`, `linux`): the one place Rust's names become OCI's.
pub fn oci_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    }
}

/// The host's CPU architecture as OCI (and Go) names it (`arm64`, `amd64`).
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// A path as a C string, for the calls below.
pub(crate) fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

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

/// What one process has used, as the process table tells it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcUsage {
    /// User and system CPU time of the process itself.
    pub cpu_ns: u64,
    /// CPU time of its exited children that it waited for (they are gone from the table).
    pub children_cpu_ns: u64,
    pub rss_bytes: u64,
    pub minor_faults: u64,
    pub major_faults: u64,
}

/// What a confined container's processes may do, one value for both systems: Seatbelt on macOS,
/// Landlock, seccomp and capabilities on the Linux twin. Applied between fork and exec, after the
/// root is changed; `None` in [`confine`] means unconfined (privileged pods).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Confinement {
    /// Host paths below which files may be read and run: the container root, its volumes.
    pub read: Vec<PathBuf>,
    /// Host paths below which files may be written, made and removed: the root unless it is
    /// read-only, writable volumes, the root's /dev and /tmp.
    pub write: Vec<PathBuf>,
    /// Host paths (inside the root) that may not be read at all (masked paths), and that may
    /// not be written (read-only paths). macOS: profile rules. Linux: the runtime mounts over
    /// them instead (Landlock only grants), so the twin ignores these two.
    pub deny: Vec<PathBuf>,
    pub read_only: Vec<PathBuf>,
    /// setuid and setgid bits and file capabilities grant nothing (PR_SET_NO_NEW_PRIVS on
    /// Linux; on macOS the root's volume is to be mounted nosuid).
    pub no_new_privs: bool,
    /// Capability names kept for a root process ("CHOWN", ...); a non-root process keeps none.
    /// Linux only.
    pub capabilities: Vec<String>,
    /// Also refuse what Docker's default seccomp profile refuses (Linux only).
    pub runtime_default_seccomp: bool,
    /// A seccomp profile to apply beside the built-in one, in seccompiler's JSON form with one
    /// filter named "main" (Linux only; see [`check_seccomp_profile`]).
    pub seccomp_profile: Option<String>,
    /// Network access (macOS profile; the Linux twin shares the host's network either way).
    pub network: bool,
    /// Mach services the process may look up (macOS).
    pub mach_services: Vec<String>,
    /// Start the process even where the kernel's Landlock lacks part of what the policy needs
    /// (`runtime.landlock_best_effort`; Linux only): what the kernel has is applied, the rest
    /// is named in a warning. Otherwise such a start is refused ([`landlock_shortfall`]).
    pub landlock_best_effort: bool,
}

/// The Seatbelt (SBPL) profile of a confinement: deny by default; read the root and the
/// volumes, write where allowed; fork, exec, signals and process information within the
/// sandbox; sysctl reads but other processes' arguments and environment; the configured Mach
/// services; network when allowed. Nothing host-global (no other process, no system setting, no
/// mount, no kernel extension, no setuid or setgid file). Written here, not in macos.rs, so that
/// the Linux tests check the text (docs/seatbelt.md shows it and says why each rule is there).
///
/// SBPL: the last rule that matches an operation decides, so every deny follows the allows it
/// narrows.
pub fn seatbelt_profile(c: &Confinement) -> String {
    fn quote(p: &Path) -> String {
        let s = p.to_string_lossy();
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
    fn filters<'a>(kind: &str, paths: impl IntoIterator<Item = &'a PathBuf>) -> String {
        paths
            .into_iter()
            .map(|p| format!(" ({kind} {})", quote(p)))
            .collect()
    }
    let subpaths = |paths: &[PathBuf]| filters("subpath", paths);
    let mut out = String::from(
        "(version 1)\n\
         (deny default)\n\
         (deny process-info* nvram* iokit-get-properties)\n\
         (allow process-fork)\n\
         (allow process-exec)\n\
         (allow signal (target same-sandbox))\n\
         (allow process-info* (target same-sandbox))\n\
         (allow sysctl-read)\n\
         (deny sysctl-read (sysctl-name-prefix \"kern.procargs\"))\n\
         (allow pseudo-tty)\n\
         (allow ipc-posix-shm-read* (ipc-posix-name \"apple.shm.notification_center\"))\n\
         (allow ipc-posix-sem*)\n\
         (allow file-read-metadata)\n",
    );
    if !c.read.is_empty() || !c.write.is_empty() {
        out += &format!(
            "(allow file-read*{}{})\n",
            subpaths(&c.read),
            subpaths(&c.write)
        );
    }
    if !c.write.is_empty() {
        out += &format!("(allow file-write*{})\n", subpaths(&c.write));
    }
    // ioctl on the container's own files and on its terminal (a pty made by the monitor, on
    // the host's devfs), not on the host's other devices.
    out += &format!(
        "(allow file-ioctl{}{} (literal \"/dev/tty\") (literal \"/dev/ptmx\") \
         (regex #\"^/dev/ttys[0-9]+$\"))\n",
        subpaths(&c.read),
        subpaths(&c.write)
    );
    // No setuid or setgid file anywhere, writable volumes included (Nix does the same).
    out += "(deny file-write-setugid)\n";
    if !c.deny.is_empty() {
        out += &format!("(deny file-read* file-write*{})\n", subpaths(&c.deny));
    }
    if !c.read_only.is_empty() {
        out += &format!("(deny file-write*{})\n", subpaths(&c.read_only));
    }
    // The rules above match paths: renaming a writable parent of a denied path would move the
    // file out from under its rule. The parents themselves (up to the root, not what is in
    // them) may therefore not be written, renamed or removed.
    let parents = seatbelt_guarded_parents(c);
    if !parents.is_empty() {
        out += &format!("(deny file-write*{})\n", filters("literal", &parents));
    }
    if !c.mach_services.is_empty() {
        let names: String = c
            .mach_services
            .iter()
            .map(|s| format!(" (global-name {})", quote(Path::new(s))))
            .collect();
        out += &format!("(allow mach-lookup{names})\n");
    }
    if c.network {
        // Sockets of the kinds builds use: unix, and TCP and UDP over IPv4 and IPv6 (AF_UNIX 1,
        // AF_INET 2, AF_INET6 30, SOCK_STREAM 1, SOCK_DGRAM 2). Not raw IP, AF_NDRV (raw
        // frames), AF_ROUTE or AF_SYSTEM (kernel controls and events: utun interfaces, every
        // connection's statistics), which reach the whole Mac's network.
        out += "(allow network*)\n\
                (allow system-socket (socket-domain 1))\n\
                (allow system-socket (require-all (require-any (socket-domain 2) \
                (socket-domain 30)) (require-any (socket-type 1) (socket-type 2))))\n";
    }
    out
}

/// The directories between the container root (the first read path) and each denied or
/// read-only path: those [`seatbelt_profile`] keeps from being renamed, in order.
fn seatbelt_guarded_parents(c: &Confinement) -> Vec<PathBuf> {
    let Some(root) = c.read.first().or(c.write.first()) else {
        return Vec::new();
    };
    let mut parents = std::collections::BTreeSet::new();
    for path in c.deny.iter().chain(&c.read_only) {
        for parent in path.ancestors().skip(1) {
            if parent == root.as_path() || !parent.starts_with(root) {
                break;
            }
            parents.insert(parent.to_path_buf());
        }
    }
    parents.into_iter().collect()
}

/// Seatbelt's two steps as libsandbox has them: compiling a profile (which allocates, and may
/// load code) and applying the compiled form (one system call). The monitor is multithreaded,
/// and a forked child of a multithreaded process may only make async-signal-safe calls before
/// exec: another thread may have held the allocator's lock at the fork. So the profile is
/// compiled in the parent, before the fork, and the child only applies it.
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
pub(crate) trait SeatbeltCompiler {
    type Compiled;
    /// In the parent, before the fork.
    fn compile(profile: &std::ffi::CStr) -> io::Result<Self::Compiled>;
    /// In the forked child: allocates nothing.
    fn apply(compiled: &Self::Compiled) -> io::Result<()>;
}

/// A confinement's Seatbelt profile, compiled before the fork (see [`SeatbeltCompiler`]).
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
pub(crate) struct CompiledSeatbelt<B: SeatbeltCompiler> {
    compiled: B::Compiled,
}

#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
impl<B: SeatbeltCompiler> CompiledSeatbelt<B> {
    /// Generates and compiles the profile: every error (a NUL in a path, a rule the compiler
    /// refuses) is reported here, in the parent.
    pub(crate) fn prepare(c: &Confinement) -> io::Result<Self> {
        let text = CString::new(seatbelt_profile(c)).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a path in the profile holds a NUL byte",
            )
        })?;
        Ok(CompiledSeatbelt {
            compiled: B::compile(&text)?,
        })
    }

    /// Applies the compiled profile (the forked child's only Seatbelt call).
    pub(crate) fn apply(&self) -> io::Result<()> {
        B::apply(&self.compiled)
    }
}

/// The Landlock ABI version the Linux twin's policy needs in full: 6 (Linux 6.12), for the
/// scoping of signals and abstract unix sockets.
pub const LANDLOCK_ABI_NEEDED: u32 = 6;

/// What a confined container loses on a kernel whose Landlock ABI is `abi` (0: no Landlock),
/// one line per missing part; empty when the kernel has all the policy needs. Plain data, so
/// that the decision is tested for any kernel on any kernel.
pub fn landlock_shortfall(abi: u32) -> Vec<&'static str> {
    let mut lost = Vec::new();
    if abi == 0 {
        lost.push("every file-system rule (no Landlock: Linux 5.13 or later, in the LSM list)");
        return lost;
    }
    if abi < 2 {
        lost.push(
            "renames and links across directories (ABI 2, Linux 5.19): refused in every \
             container instead of checked",
        );
    }
    if abi < 3 {
        lost.push(
            "truncation (ABI 3, Linux 6.2): truncate(2) of files outside the write set is not \
             refused",
        );
    }
    if abi < 5 {
        lost.push("ioctl on device files (ABI 5, Linux 6.10): not checked");
    }
    if abi < 6 {
        lost.push(
            "signal and abstract unix socket scoping (ABI 6, Linux 6.12): processes outside \
             the container can be signalled (same uid; root: any) and the host's abstract \
             sockets reached",
        );
    }
    lost
}

/// Whether confined containers may start on a kernel whose Landlock ABI is `abi`: `Ok` with
/// what is lost (for a warning; empty on a kernel with everything), or `Err` naming what is
/// missing and the fix. A shortfall is refused unless the operator opted into best effort
/// (`runtime.landlock_best_effort`); no Landlock at all is refused either way.
pub fn landlock_decision(abi: u32, best_effort: bool) -> Result<Vec<&'static str>, String> {
    let lost = landlock_shortfall(abi);
    if lost.is_empty() || (best_effort && abi > 0) {
        return Ok(lost);
    }
    let fix = if abi == 0 {
        "enable Landlock (lsm=landlock,... on the kernel command line) or run a newer kernel"
    } else {
        "run Linux 6.12 or later, or set runtime.landlock_best_effort = true to start \
         containers with what this kernel has"
    };
    Err(format!(
        "this kernel's Landlock ABI is {abi}; confined containers need {LANDLOCK_ABI_NEEDED}, \
         and would lose: {}. Fix: {fix}",
        lost.join("; ")
    ))
}

/// The running kernel's Landlock ABI version (0: none), or `None` where there is no Landlock
/// (macOS confines with Seatbelt).
pub fn landlock_abi() -> Option<u32> {
    imp::landlock_abi()
}

/// Whether seccomp profiles (Localhost) can be applied here: Linux only.
pub const HAS_SECCOMP: bool = imp::HAS_SECCOMP;

/// Whether seccomp knows system call `name` on this machine's architecture (Docker profiles name
/// calls of every architecture; the others are left out, as libseccomp does). False on macOS.
pub fn known_syscall(name: &str) -> bool {
    imp::known_syscall(name)
}

/// Checks a profile in seccompiler's JSON form (one filter named "main") for this machine's
/// architecture: the error says what is wrong with it.
pub fn check_seccomp_profile(json: &str) -> io::Result<()> {
    imp::check_seccomp_profile(json)
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
    /// Start the process as the leader of a new session whose controlling terminal is its stdin
    /// (a pty's terminal side), as a TTY session needs for job control and window-size signals.
    /// Otherwise it starts in a new process group.
    pub terminal: bool,
}

/// Arranges for `cmd`, when spawned, to run with its root changed to `rootfs`, working directory
/// `cwd` (inside the root) and the given credentials, in a new process group whose id is its pid
/// (a new session too, with `creds.terminal`). It inherits no descriptor but its stdio
/// ([`inherit_only_stdio`]).
pub fn confine(
    cmd: &mut std::process::Command,
    rootfs: &Path,
    cwd: &Path,
    creds: &Credentials,
    confinement: Option<&Confinement>,
) -> io::Result<()> {
    // Everything the child does is prepared here, before the fork: the child only makes
    // system calls on memory that exists already.
    let mut confined = confinement
        .map(|c| imp::Confined::prepare(c, rootfs, creds.uid))
        .transpose()?;
    let root = cstring(rootfs)?;
    let dir = cstring(cwd)?;
    let groups: Vec<libc::gid_t> = creds.groups.clone();
    let (uid, gid, nice) = (creds.uid, creds.gid, creds.nice);
    let rlimits: Vec<(imp::RlimitResource, libc::rlim_t)> = [
        (libc::RLIMIT_NPROC, creds.nproc),
        (libc::RLIMIT_NOFILE, creds.nofile),
    ]
    .into_iter()
    .filter_map(|(r, v)| v.map(|v| (r, v as libc::rlim_t)))
    .collect();
    let terminal = creds.terminal;
    if !terminal {
        cmd.process_group(0);
    }
    inherit_only_stdio(cmd);
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (setsid, ioctl, setpriority, setrlimit, chroot, chdir, setgroups, setgid,
    // setuid) on memory prepared before the fork; it allocates nothing. On macOS chroot(2)
    // requires System Integrity Protection to allow it.
    unsafe {
        cmd.pre_exec(move || {
            // A new session (and group) with stdin, the pty's terminal side, as its controlling
            // terminal; std's own setpgid is skipped above, as setsid refuses a group leader.
            if terminal && (libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) != 0) {
                return Err(io::Error::last_os_error());
            }
            if nice != 0 && libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0 {
                return Err(io::Error::last_os_error());
            }
            imp::child_priority_class(nice)?;
            for (resource, value) in &rlimits {
                let limit = libc::rlimit {
                    rlim_cur: *value,
                    rlim_max: *value,
                };
                if libc::setrlimit(*resource, &limit) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::chroot(root.as_ptr()) != 0 || libc::chdir(dir.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setgroups(groups.len() as _, groups.as_ptr()) != 0 || libc::setgid(gid) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Confined before the user changes: the restrictions that need privilege to apply
            // (capability bounding set, Landlock without no_new_privs) are applied as root.
            if let Some(c) = confined.as_mut() {
                c.apply_as_root()?;
            }
            if libc::setuid(uid) != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(c) = confined.as_mut() {
                c.apply_as_user()?;
            }
            Ok(())
        });
    }
    Ok(())
}

/// Makes the process `cmd` spawns inherit no descriptor but its stdin, stdout and stderr, even
/// one that another thread of this process created without close-on-exec a moment before the
/// fork.
///
/// Linux creates every descriptor close-on-exec atomically (`pipe2`, `MSG_CMSG_CLOEXEC`,
/// `O_CLOEXEC`), so there is nothing to do. macOS has no `pipe2` and no `MSG_CMSG_CLOEXEC`: a
/// pipe or a received descriptor is close-on-exec only once a second call has marked it, and a
/// fork on another thread in between copies it unmarked into the child, which would then hold a
/// pipe's end open (its reader never sees EOF) for as long as it runs. There the child marks
/// every descriptor above stderr close-on-exec itself, between fork and exec.
pub fn inherit_only_stdio(cmd: &mut std::process::Command) {
    imp::inherit_only_stdio(cmd)
}

/// A pipe (read end, write end), both ends close-on-exec: atomically where the OS can (Linux
/// `pipe2`); on macOS with `pipe` and `fcntl`, whose window [`inherit_only_stdio`] closes for
/// every process darwin-cri spawns.
pub fn pipe_cloexec() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    imp::pipe_cloexec()
}

/// Clones the tree at `src` to `dst` (which must not exist) in one copy-on-write operation
/// (APFS `clonefile` on macOS). An error of kind [`io::ErrorKind::Unsupported`] means no such
/// clone is possible here (another OS, another file system, across volumes): copy instead.
pub fn clone_tree(src: &Path, dst: &Path) -> io::Result<()> {
    imp::clone_tree(src, dst)
}

/// Sets the window size of the terminal behind `fd` (a pty), which signals SIGWINCH to the
/// terminal's foreground process group.
#[allow(unsafe_code)]
pub fn set_window_size(fd: std::os::fd::BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which is valid for the call; the fd
    // is borrowed, so it stays open meanwhile. The same on Linux and macOS.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ as _, &size) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new pseudo-terminal: (controlling side, terminal side), both close-on-exec. The terminal
/// side becomes a TTY process's stdin, stdout and stderr.
pub fn open_pty() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    let pty = nix::pty::openpty(None, None)?;
    // openpty(3) has no close-on-exec flag; until these calls a concurrent fork elsewhere in
    // the server could inherit the pair, which costs nothing worse than a late EOF there.
    for fd in [&pty.master, &pty.slave] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    }
    Ok((pty.master, pty.slave))
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

/// Memory one process holds, in bytes, shared pages counted in proportion (Linux: PSS; macOS:
/// the physical footprint).
pub fn rss_bytes(pid: i32) -> Option<u64> {
    imp::rss_bytes(pid)
}

/// Sets the scheduling priority of a running process (all its threads). On macOS the lowest
/// priority also puts the process in the background QoS class.
pub fn set_nice(pid: i32, nice: i32) -> io::Result<()> {
    imp::set_nice(pid, nice)
}

/// Changes RLIMIT_NPROC and RLIMIT_NOFILE of a running process where the OS allows it (Linux
/// prlimit); elsewhere only new processes get new rlimits.
pub fn set_rlimits(pid: i32, nproc: Option<u64>, nofile: Option<u64>) -> io::Result<()> {
    imp::set_rlimits(pid, nproc, nofile)
}

/// Live processes whose root directory is `rootfs`: every process of a container, even one that
/// escaped its process group and its parent. Empty where the OS cannot tell (macOS).
pub fn processes_in_root(rootfs: &Path) -> Vec<i32> {
    imp::processes_in_root(rootfs)
}

/// Makes orphaned descendants of this process its children, so that the monitor can reap and
/// kill them. A no-op where the OS has no such mechanism.
pub fn become_subreaper() -> io::Result<()> {
    imp::become_subreaper()
}

/// Hands memory the allocator keeps free back to the OS, after work that allocates much and
/// briefly (an image pull's buffers and decompressors in pool threads' arenas).
pub fn release_free_memory() {
    imp::release_free_memory()
}

/// Waits until a child of this process has exited and returns its pid, leaving it unreaped (so
/// that whoever reaps it decides when, under a lock if need be).
pub fn wait_for_exited_child() -> io::Result<i32> {
    imp::wait_for_exited_child()
}

/// The whole process table.
pub fn process_table() -> io::Result<Vec<ProcInfo>> {
    imp::process_table()
}

/// One process's own CPU time (all its threads) in nanoseconds, exactly: the process table's
/// figure is in clock ticks on Linux (10 ms), which round a small request's work to nothing.
/// Asked only for the processes of containers, not the whole table.
pub fn process_cpu_ns(pid: i32) -> Option<u64> {
    imp::process_cpu_ns(pid)
}

/// The whole process table with each process's usage: one walk for every container's stats.
pub fn process_usage_table() -> io::Result<Vec<(ProcInfo, ProcUsage)>> {
    imp::process_usage_table()
}

/// One process's usage.
pub fn process_usage(pid: i32) -> Option<ProcUsage> {
    imp::process_usage(pid)
}

/// One process, or `None` if there is no such pid.
pub fn process_info(pid: i32) -> Option<ProcInfo> {
    imp::process_info(pid)
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

/// Every capability this OS has, in number order (Linux's; none on macOS).
pub fn capability_names() -> &'static [&'static str] {
    imp::CAPABILITY_NAMES
}

/// The number of Linux capability `name` ("NET_ADMIN", "CAP_NET_ADMIN"); `None` if there is no
/// such capability, or on macOS, which has none.
pub fn capability_number(name: &str) -> Option<u32> {
    imp::capability_number(name)
}

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
fn bind_and_move(
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

/// What the host is, for the image platform matcher, `darwin-cri doctor` and the node
/// reporter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// "darwin" or "linux".
    pub os: String,
    /// Product version: "15.1" (macOS), "12" (Debian's VERSION_ID).
    pub os_version: String,
    /// Build: "24B83" (macOS), the kernel release elsewhere.
    pub os_build: String,
    /// "arm64" or "amd64".
    pub arch: String,
    /// The processor's marketing name: "Apple M2 Pro", "Intel(R) Xeon(R) ...".
    pub chip: String,
    pub memory_bytes: u64,
    pub cpus: u32,
}

/// The running host's facts; fields the OS does not tell are left empty.
pub fn host_facts() -> HostFacts {
    let mut facts = imp::host_facts();
    facts.arch = oci_arch().into();
    facts.cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(0);
    facts
}

/// ProductVersion and ProductBuildVersion from the bytes of macOS's
/// /System/Library/CoreServices/SystemVersion.plist (XML or binary).
pub fn parse_system_version(bytes: &[u8]) -> Option<(String, String)> {
    let dict = plist::Value::from_reader(io::Cursor::new(bytes)).ok()?;
    let dict = dict.as_dictionary()?;
    let get = |k: &str| dict.get(k).and_then(|v| v.as_string()).map(str::to_string);
    Some((
        get("ProductVersion")?,
        get("ProductBuildVersion").unwrap_or_default(),
    ))
}

/// `VERSION_ID` (else `VERSION`) of an os-release(5) file.
pub fn parse_os_release(text: &str) -> Option<String> {
    let value = |key: &str| {
        text.lines().find_map(|l| {
            let v = l.strip_prefix(key)?.strip_prefix('=')?;
            Some(v.trim().trim_matches('"').to_string())
        })
    };
    value("VERSION_ID").or_else(|| value("VERSION"))
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

/// The TCP ports on which one of `pids` holds a listening socket (IPv4 or IPv6, any local
/// address), for port-forwarding only to ports a pod's own processes serve (issue #26, 15).
/// Processes that are gone or cannot be read are skipped.
///
/// macOS: each process's descriptors (`PROC_PIDLISTFDS`) and each socket's state
/// (`proc_pidfdinfo` with `PROC_PIDFDSOCKETINFO`), as lsof does. Linux twin: the listening
/// sockets of /proc/net/tcp and tcp6 (state 0A) by inode, matched to the `socket:[inode]`
/// descriptors of /proc/PID/fd.
pub fn listening_tcp_ports(pids: &[i32]) -> io::Result<Vec<u16>> {
    let mut ports = imp::listening_tcp_ports(pids)?;
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

#[cfg(test)]
mod tests;
