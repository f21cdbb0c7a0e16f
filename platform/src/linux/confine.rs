//! The Linux twin of the Seatbelt profile: Landlock for file access and signal scoping, seccomp
//! for the host-global calls (and Docker's defaults, and Localhost profiles), capabilities.

use std::io;
use std::path::{Path, PathBuf};

pub const HAS_SECCOMP: bool = true;

/// Calls that change the host for every process on it, not only the caller's container (under
/// containerd, namespaces and the default capabilities keep them from a container): refused with
/// EPERM in every confined container, whatever its seccomp profile.
const HOST_GLOBAL_CALLS: &[libc::c_long] = &[
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_reboot,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_syslog,
    libc::SYS_quotactl,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
];

/// What Docker's default profile refuses besides those (RuntimeDefault): kernel keyrings, BPF,
/// perf, namespaces, handles to files outside the root, other processes' memory.
const RUNTIME_DEFAULT_CALLS: &[libc::c_long] = &[
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kcmp,
    libc::SYS_vhangup,
    libc::SYS_personality,
];

/// Every namespace flag of clone(2) (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID,
/// NEWNET): RuntimeDefault refuses clone with any of them, as Docker's profile does for a
/// container without CAP_SYS_ADMIN, since it refuses unshare(2) outright. A user namespace needs
/// no capability, only a process outside a chroot, which root can leave (`chroot` and `..`).
const CLONE_NAMESPACES: u64 = 0x7E02_0000;

/// The x32 ABI's bit in a system call number. x32 calls carry x86_64's audit architecture, so a
/// filter keyed on x86_64 numbers would let `nr | 0x40000000` through where the kernel runs x32
/// programs (CONFIG_X86_X32_ABI, syscall.x32=y): every x32 call is refused instead, as
/// Docker's profile (through libseccomp) does.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Linux capability names in number order (capability.h): the index is the number.
pub const CAPABILITY_NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The number of capability `name` ("NET_ADMIN" or "CAP_NET_ADMIN", any case).
pub fn capability_number(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CAPABILITY_NAMES
        .iter()
        .position(|c| *c == bare)
        .map(|i| i as u32)
}

fn architecture() -> io::Result<seccompiler::TargetArch> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| {
            io::Error::new(io::ErrorKind::Unsupported, e.to_string())
        })
}

/// A filter answering `errno` to every call matching `rules`, allowing the rest.
fn refusing_rules(
    rules: std::collections::BTreeMap<libc::c_long, Vec<seccompiler::SeccompRule>>,
    errno: libc::c_int,
) -> io::Result<seccompiler::BpfProgram> {
    let filter = seccompiler::SeccompFilter::new(
        rules,
        seccompiler::SeccompAction::Allow,
        seccompiler::SeccompAction::Errno(errno as u32),
        architecture()?,
    )
    .map_err(|e| io::Error::other(format!("building the seccomp filter: {e}")))?;
    filter.try_into().map_err(|e: seccompiler::BackendError| {
        io::Error::other(format!("compiling the seccomp filter: {e}"))
    })
}

/// RuntimeDefault's rules for clone(2), as Docker's: refused (EPERM) when its flags (argument
/// 0) hold any namespace flag, one rule per flag (the rules of a call are alternatives).
fn clone_namespace_rules() -> io::Result<Vec<seccompiler::SeccompRule>> {
    use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};
    let bad = |e: seccompiler::BackendError| io::Error::other(format!("seccomp rule: {e}"));
    (0..64)
        .map(|bit| 1u64 << bit)
        .filter(|flag| CLONE_NAMESPACES & flag != 0)
        .map(|flag| {
            let set = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .map_err(bad)?;
            SeccompRule::new(vec![set]).map_err(bad)
        })
        .collect()
}

/// The filter that refuses x32 system calls ([`X32_SYSCALL_BIT`]) on x86_64; `None` elsewhere.
/// Hand-written: seccompiler's rules match whole call numbers, not a bit of them.
fn x32_filter() -> Option<seccompiler::BpfProgram> {
    use seccompiler::sock_filter;
    if std::env::consts::ARCH != "x86_64" {
        return None;
    }
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    let (ld, jeq, jset, ret) = (0x20, 0x15, 0x45, 0x06); // BPF_LD|W|ABS, JMP|JEQ|K, JMP|JSET|K, RET|K
    let op = |code: u16, k: u32, jt: u8, jf: u8| sock_filter { code, jt, jf, k };
    Some(vec![
        op(ld, 4, 0, 0),                  // the architecture
        op(jeq, AUDIT_ARCH_X86_64, 0, 3), // another one: allowed here (the other filter kills it)
        op(ld, 0, 0, 0),                  // the call number
        op(jset, X32_SYSCALL_BIT, 0, 1),  // x32?
        op(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32, 0, 0),
        op(ret, libc::SECCOMP_RET_ALLOW, 0, 0),
    ])
}

/// Every seccomp filter of a confined container, in the order they are installed: host-global
/// calls (and Docker's refusals with RuntimeDefault, clone with namespace flags included),
/// x32 calls, clone3 with RuntimeDefault, and the container's own profile.
fn seccomp_filters(
    runtime_default: bool,
    profile: Option<&str>,
) -> io::Result<Vec<seccompiler::BpfProgram>> {
    let mut rules: std::collections::BTreeMap<libc::c_long, Vec<seccompiler::SeccompRule>> =
        HOST_GLOBAL_CALLS
            .iter()
            .map(|nr| (*nr, Vec::new()))
            .collect();
    if runtime_default {
        rules.extend(RUNTIME_DEFAULT_CALLS.iter().map(|nr| (*nr, Vec::new())));
        rules.insert(libc::SYS_clone, clone_namespace_rules()?);
    }
    let mut filters = vec![refusing_rules(rules, libc::EPERM)?];
    filters.extend(x32_filter());
    if runtime_default {
        // clone3's flags are in memory a filter cannot read: ENOSYS, whatever it asks, and glibc
        // falls back to clone(2), whose flags the rule above checks (Docker does the same).
        filters.push(refusing_rules(
            [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
            libc::ENOSYS,
        )?);
    }
    if let Some(json) = profile {
        filters.push(compile_profile(json)?);
    }
    Ok(filters)
}

/// The running kernel's Landlock ABI version, 0 without Landlock.
pub fn landlock_abi() -> Option<u32> {
    // SAFETY: landlock_create_ruleset with a null attribute, size 0 and the VERSION flag only
    // returns the ABI version (or an error); it reads no memory.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    Some(u32::try_from(v).unwrap_or(0))
}

fn compile_profile(json: &str) -> io::Result<seccompiler::BpfProgram> {
    let mut map = seccompiler::compile_from_json(json.as_bytes(), architecture()?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    map.remove("main").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the profile has no filter named \"main\"",
        )
    })
}

pub fn known_syscall(name: &str) -> bool {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return false;
    }
    let probe = format!(
        r#"{{"main": {{"mismatch_action": "allow", "match_action": "log", "filter": [{{"syscall": "{name}"}}]}}}}"#
    );
    compile_profile(&probe).is_ok()
}

pub fn check_seccomp_profile(json: &str) -> io::Result<()> {
    compile_profile(json).map(drop)
}

/// The capability sets' header and data for capset(2), version 3 (64 bits in two words).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// This process's permitted capability set, as a mask.
fn permitted_capabilities() -> io::Result<u64> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget writes two CapData values (version 3) into the array, which outlives the
    // call, and reads the header.
    if unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32))
}

/// A [`crate::Confinement`] made ready before the fork: the Landlock ruleset (a descriptor),
/// the compiled seccomp filters, the capability numbers. The child only makes system calls.
pub struct Confined {
    ruleset: std::os::fd::OwnedFd,
    filters: Vec<seccompiler::BpfProgram>,
    /// Capabilities dropped from the bounding set: every one not kept.
    drop: Vec<libc::c_ulong>,
    /// The kept set, for a root process's effective, permitted and inheritable sets.
    keep: u64,
    root: bool,
    no_new_privs: bool,
}

impl Confined {
    pub fn prepare(c: &crate::Confinement, _rootfs: &Path, uid: u32) -> io::Result<Confined> {
        use landlock::{
            ABI, Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
            Scope,
        };
        // What the kernel lacks of the policy is refused unless the operator opted into best
        // effort; then the landlock crate leaves out what this kernel has not (its default
        // compatibility level), and the monitor's log says what is lost.
        let kernel = landlock_abi().unwrap_or(0);
        let lost = crate::landlock_decision(kernel, c.landlock_best_effort)
            .map_err(|m| io::Error::new(io::ErrorKind::Unsupported, m))?;
        if !lost.is_empty() {
            tracing::warn!(
                abi = kernel,
                lost = lost.join("; "),
                "Landlock: best effort (runtime.landlock_best_effort)"
            );
        }
        let abi = ABI::V6;
        let all = AccessFs::from_all(abi);
        let read = AccessFs::from_read(abi);
        // Never device nodes: a root process could otherwise make /dev/mem in its root.
        let write = all & !(AccessFs::MakeChar | AccessFs::MakeBlock);
        let landlock = |e: landlock::RulesetError| io::Error::other(format!("Landlock: {e}"));
        let mut ruleset = Ruleset::default()
            .handle_access(all)
            .map_err(landlock)?
            // Signals and abstract unix sockets reach only processes of the same domain (or
            // nested ones); ptrace is scoped so by Landlock itself.
            .scope(Scope::from_all(abi))
            .map_err(landlock)?
            .create()
            .map_err(landlock)?;
        let open = |p: &PathBuf| {
            PathFd::new(p).map_err(|e| io::Error::other(format!("{}: {e}", p.display())))
        };
        // The root must open; a volume that cannot (a FUSE mount whose daemon died) is left
        // out: the container gets no access to it, which is what a dead mount gives anyway.
        let first = c.read.first().or(c.write.first());
        for (paths, access) in [(&c.read, read), (&c.write, write)] {
            for p in paths {
                // Landlock stats the descriptor: a dead FUSE mount answers ENOTCONN there.
                let usable = std::fs::metadata(p).and_then(|_| open(p));
                match usable {
                    Ok(fd) => {
                        ruleset = ruleset
                            .add_rule(PathBeneath::new(fd, access))
                            .map_err(landlock)?;
                    }
                    Err(e) if Some(p) == first => return Err(e),
                    Err(e) => tracing::warn!(path = %p.display(), error = %e, "no access granted"),
                }
            }
        }
        let ruleset: Option<std::os::fd::OwnedFd> = ruleset.into();
        let ruleset = ruleset.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "this kernel has no Landlock (Linux 5.13 or later, enabled in the LSM list): \
                 containers cannot be confined",
            )
        })?;
        let filters = seccomp_filters(c.runtime_default_seccomp, c.seccomp_profile.as_deref())?;
        let mut keep = 0u64;
        for name in &c.capabilities {
            let n = capability_number(name).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("unknown capability {name}"),
                )
            })?;
            keep |= 1 << n;
        }
        // Only what this process holds can be kept: capset(2) refuses (EPERM) to raise a
        // capability outside the caller's permitted set, so `add: [ALL]` (every capability by
        // name) would fail every start where darwin-cri itself runs with fewer (a container,
        // a systemd unit's CapabilityBoundingSet).
        keep &= permitted_capabilities()?;
        let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(CAPABILITY_NAMES.len() as u32 - 1);
        let drop = (0..=last)
            .filter(|n| keep & (1 << n) == 0)
            .map(|n| n as libc::c_ulong)
            .collect();
        Ok(Confined {
            ruleset,
            filters,
            drop,
            keep,
            root: uid == 0,
            no_new_privs: c.no_new_privs,
        })
    }

    /// In the child, still root: the bounding set, Landlock and seccomp (both may be applied
    /// without no_new_privs only with CAP_SYS_ADMIN, which the process still has).
    pub fn apply_as_root(&mut self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: prctl, landlock_restrict_self and seccomp take integers and pointers to
        // memory prepared before the fork (the filters) that outlives the calls.
        unsafe {
            for cap in &self.drop {
                if libc::prctl(libc::PR_CAPBSET_DROP, *cap, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::syscall(
                libc::SYS_landlock_restrict_self,
                self.ruleset.as_raw_fd(),
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            for filter in &self.filters {
                let prog = libc::sock_fprog {
                    len: filter.len() as libc::c_ushort,
                    filter: filter.as_ptr() as *mut libc::sock_filter,
                };
                if libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &prog as *const libc::sock_fprog,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }

    /// In the child, as the container's user: a root process keeps only the kept capabilities
    /// (a non-root one lost them all in setuid); no_new_privs when asked.
    pub fn apply_as_user(&mut self) -> io::Result<()> {
        // SAFETY: prctl and capset take integers and pointers to stack values that outlive the
        // calls.
        unsafe {
            if libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if self.root {
                let mut header = CapHeader {
                    version: CAPABILITY_VERSION_3,
                    pid: 0,
                };
                let word = |shift: u32| {
                    let bits = (self.keep >> shift) as u32;
                    CapData {
                        effective: bits,
                        permitted: bits,
                        inheritable: 0,
                    }
                };
                let data = [word(0), word(32)];
                if libc::syscall(
                    libc::SYS_capset,
                    &mut header as *mut CapHeader,
                    data.as_ptr(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            if self.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}
