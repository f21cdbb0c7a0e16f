//! `syscall-probe`: makes one system call that would change nothing if it got through, and
//! prints whether it was refused, for the confinement tests. Run inside a container through the
//! host's dynamic loader (the tests mount it and this binary's libraries as a volume).
//!
//! Each probe prints `allowed`, or `errno N` (EPERM 1 is "refused" by seccomp, Landlock or a
//! missing capability), or what it read.
// A probe of system calls has to make them itself.
#![allow(unsafe_code)]

// The probes are Linux system calls: the Linux twin's confinement tests use them; a Mac's
// Seatbelt is probed by scripts/mac-smoke.sh instead.
#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("syscall-probe: the probes are Linux system calls");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
fn main() {
    linux::main()
}

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::CString;

    use nix::libc;

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    fn report(rc: libc::c_long) {
        if rc < 0 {
            println!("errno {}", errno());
        } else {
            println!("allowed");
        }
    }

    /// Leaves the chroot the old way (a second chroot, then `..` past its root): false, with
    /// the error printed, when that is refused.
    fn leave_chroot() -> bool {
        let dir = CString::new("/tmp/escape").unwrap_or_default();
        // SAFETY: the calls take NUL-terminated strings that outlive them.
        unsafe {
            libc::mkdir(dir.as_ptr(), 0o755);
            if libc::chroot(dir.as_ptr()) != 0 {
                println!("chroot errno {}", errno());
                return false;
            }
            let up = CString::new("..").unwrap_or_default();
            for _ in 0..64 {
                libc::chdir(up.as_ptr());
            }
            let here = CString::new(".").unwrap_or_default();
            libc::chroot(here.as_ptr());
        }
        true
    }

    pub fn main() {
        let args: Vec<String> = std::env::args().collect();
        let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
        // SAFETY: each call takes integers or pointers to live local memory.
        unsafe {
            match arg(1).as_str() {
                // sethostname to the current name.
                "sethostname" => {
                    let mut buf = [0u8; 256];
                    libc::gethostname(buf.as_mut_ptr().cast(), buf.len());
                    let len = buf.iter().position(|b| *b == 0).unwrap_or(0);
                    report(libc::sethostname(buf.as_ptr().cast(), len) as libc::c_long);
                }
                // clock_settime to the current time.
                "clock_settime" => {
                    let mut now: libc::timespec = std::mem::zeroed();
                    libc::clock_gettime(libc::CLOCK_REALTIME, &mut now);
                    report(libc::clock_settime(libc::CLOCK_REALTIME, &now) as libc::c_long);
                }
                // reboot with a bad magic number: EINVAL when allowed, EPERM when refused.
                "reboot" => report(libc::syscall(
                    libc::SYS_reboot,
                    0xdead_beef_u32 as libc::c_long,
                    0x1234_5678_u32 as libc::c_long,
                    0,
                    0,
                )),
                // init_module with an empty image: EINVAL/ENOEXEC when allowed.
                "init_module" => {
                    let params = CString::new("").unwrap_or_default();
                    report(libc::syscall(
                        libc::SYS_init_module,
                        std::ptr::null::<u8>(),
                        0,
                        params.as_ptr(),
                    ));
                }
                // A tmpfs on a scratch directory (arg 2).
                "mount" => {
                    let target = CString::new(arg(2)).unwrap_or_default();
                    let fstype = CString::new("tmpfs").unwrap_or_default();
                    let rc = libc::mount(
                        fstype.as_ptr(),
                        target.as_ptr(),
                        fstype.as_ptr(),
                        0,
                        std::ptr::null(),
                    );
                    if rc == 0 {
                        libc::umount2(target.as_ptr(), libc::MNT_DETACH);
                    }
                    report(rc as libc::c_long);
                }
                // Signal 0 (a permission check, nothing delivered) to pid arg 2.
                "kill" => report(libc::kill(arg(2).parse().unwrap_or(0), 0) as libc::c_long),
                // Attach to pid arg 2 and detach at once.
                "ptrace" => {
                    let pid: libc::pid_t = arg(2).parse().unwrap_or(0);
                    let rc = libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0);
                    if rc == 0 {
                        let mut status = 0;
                        libc::waitpid(pid, &mut status, 0);
                        libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
                    }
                    report(rc);
                }
                // Leaves the chroot the old way (a second chroot, then `..` past its root) and reads
                // the host file arg 2.
                "escape" => {
                    if !leave_chroot() {
                        return;
                    }
                    match std::fs::read_to_string(arg(2)) {
                        Ok(text) => println!("read {text}"),
                        Err(e) => println!("errno {}", e.raw_os_error().unwrap_or(0)),
                    }
                }
                // A host file's content (arg 2), straight.
                "read" => match std::fs::read_to_string(arg(2)) {
                    Ok(text) => println!("read {text}"),
                    Err(e) => println!("errno {}", e.raw_os_error().unwrap_or(0)),
                },
                // The effective user id.
                "euid" => println!("euid {}", libc::geteuid()),
                // The effective capability set, as a hex mask.
                "caps" => {
                    #[repr(C)]
                    struct Header {
                        version: u32,
                        pid: i32,
                    }
                    #[repr(C)]
                    #[derive(Clone, Copy, Default)]
                    struct Data {
                        effective: u32,
                        permitted: u32,
                        inheritable: u32,
                    }
                    let mut header = Header {
                        version: 0x2008_0522,
                        pid: 0,
                    };
                    let mut data = [Data::default(); 2];
                    libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr());
                    let mask = u64::from(data[0].effective) | (u64::from(data[1].effective) << 32);
                    println!("caps {mask:x}");
                }
                // personality(0xffffffff) only queries: refused by Docker's default profile here.
                "personality" => report(libc::personality(0xffff_ffff) as libc::c_long),
                "mkdir" => {
                    let dir = CString::new(arg(2)).unwrap_or_default();
                    report(libc::mkdir(dir.as_ptr(), 0o755) as libc::c_long);
                }
                // getpid by its x32 number (nr | 0x40000000): ENOSYS where the kernel runs no
                // x32 programs, allowed where it does, EPERM when the filter refuses x32.
                "x32" => report(libc::syscall(libc::SYS_getpid | 0x4000_0000)),
                // clone(2) with CLONE_NEWUSER; with arg 2 "escaped", after leaving the chroot
                // (a chrooted process may not make a user namespace, whatever the filter says).
                "clone_newuser" => {
                    if arg(2) == "escaped" && !leave_chroot() {
                        return;
                    }
                    let rc = libc::syscall(
                        libc::SYS_clone,
                        (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
                        0,
                        0,
                        0,
                        0,
                    );
                    if rc == 0 {
                        libc::_exit(0);
                    }
                    if rc > 0 {
                        libc::waitpid(rc as libc::pid_t, std::ptr::null_mut(), 0);
                    }
                    report(rc);
                }
                // clone3(2) as fork: ENOSYS under RuntimeDefault (libc falls back to clone).
                "clone3" => {
                    let mut args = [0u64; 11]; // struct clone_args, version 2
                    args[4] = libc::SIGCHLD as u64; // exit_signal
                    let rc = libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), size_of_val(&args));
                    if rc == 0 {
                        libc::_exit(0);
                    }
                    if rc > 0 {
                        libc::waitpid(rc as libc::pid_t, std::ptr::null_mut(), 0);
                    }
                    report(rc);
                }
                // Runs program arg 2 (and its args) the way std does (posix_spawn or fork and
                // exec, through clone3 first in glibc): its exit status.
                "spawn" => match std::process::Command::new(arg(2)).args(&args[3..]).status() {
                    Ok(status) => println!("status {}", status.code().unwrap_or(-1)),
                    Err(e) => println!("errno {}", e.raw_os_error().unwrap_or(0)),
                },
                "mknod" => {
                    let path = CString::new(arg(2)).unwrap_or_default();
                    report(
                        libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 1))
                            as libc::c_long,
                    );
                }
                other => {
                    println!("unknown probe {other:?}");
                    std::process::exit(2);
                }
            }
        }
    }
}
