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

fn refusing(calls: &[libc::c_long]) -> io::Result<seccompiler::BpfProgram> {
    let rules = calls.iter().map(|nr| (*nr, Vec::new())).collect();
    let filter = seccompiler::SeccompFilter::new(
        rules,
        seccompiler::SeccompAction::Allow,
        seccompiler::SeccompAction::Errno(libc::EPERM as u32),
        architecture()?,
    )
    .map_err(|e| io::Error::other(format!("building the seccomp filter: {e}")))?;
    filter.try_into().map_err(|e: seccompiler::BackendError| {
        io::Error::other(format!("compiling the seccomp filter: {e}"))
    })
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
        let mut calls = HOST_GLOBAL_CALLS.to_vec();
        if c.runtime_default_seccomp {
            calls.extend_from_slice(RUNTIME_DEFAULT_CALLS);
        }
        let mut filters = vec![refusing(&calls)?];
        if let Some(json) = &c.seccomp_profile {
            filters.push(compile_profile(json)?);
        }
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
