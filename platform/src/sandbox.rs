//! The confinement of a container's process, one policy for both OSes: the Seatbelt profile
//! (macOS), Landlock, seccomp and capabilities (the Linux twin), and the credentials and limits
//! the process starts with ([`confine`]).

use super::*;

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

/// Every capability this OS has, in number order (Linux's; none on macOS).
pub fn capability_names() -> &'static [&'static str] {
    imp::CAPABILITY_NAMES
}

/// The number of Linux capability `name` ("NET_ADMIN", "CAP_NET_ADMIN"); `None` if there is no
/// such capability, or on macOS, which has none.
pub fn capability_number(name: &str) -> Option<u32> {
    imp::capability_number(name)
}
