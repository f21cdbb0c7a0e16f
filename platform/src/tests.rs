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

/// connect(2) has bind's limit: reach a socket through a short link to its directory.
fn connect_long(path: &Path, tag: &str) -> io::Result<std::os::unix::net::UnixStream> {
    let short = std::env::temp_dir().join(format!("sl-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&short);
    std::os::unix::fs::symlink(path.parent().expect("dir"), &short)?;
    let r = std::os::unix::net::UnixStream::connect(short.join(path.file_name().expect("name")));
    let _ = std::fs::remove_file(&short);
    r
}

#[test]
fn sockets_in_deep_directories_are_bound_and_reachable_and_never_follow_links() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let deep = dir.path().join("d".repeat(60)).join("e".repeat(60));
    std::fs::create_dir_all(&deep).expect("mkdir");
    let scratch = dir.path().join("s");
    let path = deep.join("mDNSResponder");
    assert!(
        socket_path_problem(&path).is_some(),
        "the test path is over the limit"
    );
    let fd = open_dir_nofollow(&deep).expect("open");

    // A link the image left there is replaced, and what it pointed at is untouched.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "host file").expect("write");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::symlink(&victim, &path).expect("symlink");
    let listener = bind_unix_listener_in(&fd, "mDNSResponder", 0o666, &scratch).expect("bind");
    assert_eq!(std::fs::read_to_string(&victim).expect("read"), "host file");
    assert_eq!(
        std::fs::metadata(&victim)
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let mode = std::fs::symlink_metadata(&path)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o666);
    assert!(socket_inode_in(&fd, "mDNSResponder").is_some());
    connect_long(&path, "a").expect("connected through the long path");
    assert!(listener.accept().is_ok());

    // The macOS way: bound under the scratch directory and moved into place.
    let listener = bind_and_move(&fd, "moved", 0o666, &scratch).expect("bind and move");
    connect_long(&deep.join("moved"), "b").expect("connected to the moved socket");
    assert!(listener.accept().is_ok());
    assert_eq!(
        std::fs::read_dir(&scratch).expect("ls").count(),
        0,
        "nothing left in scratch"
    );

    // A directory in the way is refused, not removed.
    std::fs::create_dir(deep.join("busy")).expect("mkdir");
    std::fs::write(deep.join("busy/keep"), "x").expect("write");
    assert!(bind_unix_listener_in(&fd, "busy", 0o666, &scratch).is_err());
    assert!(deep.join("busy/keep").exists());
    assert!(
        open_dir_nofollow(&path).is_err(),
        "a socket is no directory"
    );
    std::os::unix::fs::symlink(&deep, dir.path().join("link")).expect("symlink");
    assert!(
        open_dir_nofollow(&dir.path().join("link")).is_err(),
        "a link is refused"
    );
}

#[test]
fn nofollow_opens_and_mounts_refuse_links_on_the_way() {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = dir.path().join("real/sub");
    std::fs::create_dir_all(&real).expect("mkdir");
    std::fs::write(real.join("f"), "x").expect("write");
    std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).expect("symlink");
    assert!(open_nofollow(&real).is_ok());
    assert!(open_nofollow(&real.join("f")).is_ok(), "files too");
    let through = dir.path().join("link/sub");
    let e = open_nofollow(&through).expect_err("a link on the way");
    assert!(
        matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)),
        "{e}"
    );
    assert!(
        open_nofollow(&dir.path().join("link")).is_err(),
        "a link as the last component"
    );
    if nix::unistd::geteuid().is_root() {
        let target = dir.path().join("target");
        std::fs::create_dir(&target).expect("mkdir");
        assert!(bind_mount_nofollow(&through, &target, true).is_err());
        bind_mount_nofollow(&real, &target, true).expect("mount");
        assert_eq!(
            std::fs::read_to_string(target.join("f")).expect("read"),
            "x"
        );
        unmount(&target).expect("unmount");
    }
}

#[test]
fn socket_path_limit_is_named() {
    assert!(socket_path_problem(Path::new("/var/run/darwin-cri/darwin-cri.sock")).is_none());
    let long = format!("/var/run/{}/s.sock", "x".repeat(120));
    let problem = socket_path_problem(Path::new(&long)).expect("too long");
    assert!(
        problem.contains(&MAX_SOCKET_PATH.to_string()) && problem.contains("103"),
        "{problem}"
    );
}

#[test]
fn host_facts_name_this_machine() {
    let f = host_facts();
    assert_eq!(
        f.os,
        if cfg!(target_os = "macos") {
            "darwin"
        } else {
            "linux"
        }
    );
    assert!(
        !f.arch.is_empty() && f.cpus > 0 && f.memory_bytes > 0,
        "{f:?}"
    );
    assert!(!f.os_build.is_empty(), "{f:?}");
}

#[test]
fn system_version_and_os_release_parse() {
    let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
<key>ProductBuildVersion</key><string>24B83</string>
<key>ProductName</key><string>macOS</string>
<key>ProductVersion</key><string>15.1</string>
</dict></plist>"#;
    assert_eq!(
        parse_system_version(xml),
        Some(("15.1".to_string(), "24B83".to_string()))
    );
    assert_eq!(parse_system_version(b"<plist><dict>"), None);
    let os = "NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\n";
    assert_eq!(parse_os_release(os).as_deref(), Some("12"));
    assert_eq!(
        parse_os_release("VERSION=\"rolling\"").as_deref(),
        Some("rolling")
    );
}

#[test]
fn chroot_probe_and_filesystem_type_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = filesystem_type(dir.path()).expect("statfs");
    assert!(!fs.is_empty());
    let result = try_chroot(dir.path());
    if nix::unistd::geteuid().is_root() {
        result.expect("root may chroot here");
    } else {
        assert_eq!(
            result.expect_err("not root").raw_os_error(),
            Some(libc::EPERM)
        );
    }
    assert!(try_chroot(&dir.path().join("missing")).is_err());
}

#[test]
fn mounts_under_a_symlinked_path_are_found() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let real = dir.path().join("real");
    std::fs::create_dir_all(real.join("m")).expect("mkdir");
    std::os::unix::fs::symlink(&real, dir.path().join("link")).expect("symlink");
    bind_mount(dir.path(), &real.join("m"), true).expect("bind");
    let found = mounts_under(&dir.path().join("link"));
    unmount(&real.join("m")).expect("unmount");
    assert_eq!(
        found.expect("mounts").len(),
        1,
        "a path through a symlink still finds the mount"
    );
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

#[test]
fn the_seatbelt_profile_denies_by_default_and_quotes_paths() {
    let c = Confinement {
        read: vec![
            PathBuf::from("/r/c/rootfs"),
            PathBuf::from("/r/c/rootfs/cfg"),
        ],
        write: vec![PathBuf::from("/r/c/rootfs/data \"x\"")],
        deny: vec![PathBuf::from("/r/c/rootfs/secret")],
        read_only: vec![PathBuf::from("/r/c/rootfs/etc")],
        mach_services: vec!["com.apple.trustd".into()],
        network: false,
        ..Default::default()
    };
    let p = seatbelt_profile(&c);
    assert!(p.starts_with("(version 1)\n(deny default)\n"), "{p}");
    assert!(
        p.contains("(allow file-read* (subpath \"/r/c/rootfs\")"),
        "{p}"
    );
    assert!(
        p.contains("(allow file-write* (subpath \"/r/c/rootfs/data \\\"x\\\"\"))"),
        "quotes escaped: {p}"
    );
    assert!(p.contains("(deny file-read* file-write* (subpath \"/r/c/rootfs/secret\"))"));
    assert!(p.contains("(deny file-write* (subpath \"/r/c/rootfs/etc\"))"));
    assert!(p.contains("(allow mach-lookup (global-name \"com.apple.trustd\"))"));
    assert!(!p.contains("network"), "no network unless allowed: {p}");
    // Deny rules come after the allows they narrow (SBPL: the last matching rule wins).
    assert!(
        p.find("(deny file-write*").expect("deny") > p.find("(allow file-write*").expect("allow")
    );
    let with_net = seatbelt_profile(&Confinement { network: true, ..c });
    assert!(with_net.contains("(allow network*)"));
    // Nothing host-global is ever allowed.
    for never in [
        "system-set-time",
        "system-kext",
        "system-reboot",
        "nvram",
        "file-mount",
        "default",
    ] {
        assert!(
            !with_net.contains(&format!("(allow {never}")),
            "{never}: {with_net}"
        );
    }
}

#[test]
fn the_seatbelt_profile_denies_setugid_files_and_narrows_ioctl_ipc_sockets_and_sysctl() {
    let c = Confinement {
        read: vec![PathBuf::from("/r/c/rootfs")],
        write: vec![PathBuf::from("/r/c/rootfs"), PathBuf::from("/vol/data")],
        network: true,
        ..Default::default()
    };
    let p = seatbelt_profile(&c);
    // file-write* includes file-write-setugid: denied after the write allows, writable
    // volumes included.
    let setugid = p.find("(deny file-write-setugid)\n").expect(&p);
    assert!(
        setugid > p.find("(allow file-write*").expect("allow"),
        "{p}"
    );
    for broad in [
        "(allow file-ioctl)",
        "(allow ipc-posix-shm*)",
        "(allow system-socket)",
    ] {
        assert!(!p.contains(broad), "{broad}: {p}");
    }
    // ioctl: the container's files and its terminal only.
    assert!(
        p.contains(
            "(allow file-ioctl (subpath \"/r/c/rootfs\") (subpath \"/r/c/rootfs\") \
             (subpath \"/vol/data\") (literal \"/dev/tty\") (literal \"/dev/ptmx\") \
             (regex #\"^/dev/ttys[0-9]+$\"))"
        ),
        "{p}"
    );
    // POSIX shared memory: only notify(3)'s, read-only; its names are the whole Mac's.
    assert!(
        p.contains(
            "(allow ipc-posix-shm-read* (ipc-posix-name \"apple.shm.notification_center\"))"
        ),
        "{p}"
    );
    assert!(!p.contains("ipc-posix-shm-write"), "{p}");
    // Sockets: unix, TCP and UDP; never AF_SYSTEM (32), AF_NDRV (27), AF_ROUTE (17) or raw.
    assert!(p.contains("(allow system-socket (socket-domain 1))"), "{p}");
    assert!(
        p.contains(
            "(allow system-socket (require-all (require-any (socket-domain 2) \
             (socket-domain 30)) (require-any (socket-type 1) (socket-type 2))))"
        ),
        "{p}"
    );
    for never in [
        "(socket-domain 32)",
        "(socket-domain 27)",
        "(socket-domain 17)",
        "(socket-type 3)",
    ] {
        assert!(!p.contains(never), "{never}: {p}");
    }
    // sysctl: readable, but not other processes' arguments and environment.
    let deny = p
        .find("(deny sysctl-read (sysctl-name-prefix \"kern.procargs\"))")
        .expect(&p);
    assert!(deny > p.find("(allow sysctl-read)").expect("allow"), "{p}");
    // Without network, no socket at all.
    let offline = seatbelt_profile(&Confinement {
        network: false,
        ..c
    });
    assert!(!offline.contains("system-socket"), "{offline}");
}

#[test]
fn the_parents_of_denied_and_read_only_paths_cannot_be_renamed() {
    let c = Confinement {
        read: vec![PathBuf::from("/r/c/rootfs"), PathBuf::from("/vol/cfg")],
        write: vec![PathBuf::from("/r/c/rootfs")],
        deny: vec![PathBuf::from("/r/c/rootfs/etc/secrets/key")],
        read_only: vec![
            PathBuf::from("/r/c/rootfs/etc/config"),
            PathBuf::from("/r/c/rootfs/top"),
        ],
        ..Default::default()
    };
    let p = seatbelt_profile(&c);
    // A rename of /etc or /etc/secrets would carry the file out from under its path rule: the
    // parents themselves are not writable (literal: what is in them still is), the root is not
    // named (the container cannot name it), and nothing outside the root is.
    let rule = "(deny file-write* (literal \"/r/c/rootfs/etc\") \
                (literal \"/r/c/rootfs/etc/secrets\"))\n";
    let at = p.find(rule).expect(&p);
    assert!(at > p.find("(allow file-write*").expect("allow"), "{p}");
    assert!(!p.contains("(literal \"/r/c/rootfs\")"), "{p}");
    assert!(!p.contains("(literal \"/r/c\")"), "{p}");
    // No denied path, no parent rule.
    let plain = seatbelt_profile(&Confinement {
        deny: Vec::new(),
        read_only: Vec::new(),
        ..c
    });
    assert!(!plain.contains("(literal \"/r/c/rootfs/etc\")"), "{plain}");
}

/// A stand-in for libsandbox that counts its calls.
struct CountingCompiler;

static COMPILED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static APPLIED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl SeatbeltCompiler for CountingCompiler {
    type Compiled = String;
    fn compile(profile: &std::ffi::CStr) -> io::Result<String> {
        COMPILED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(profile.to_string_lossy().into_owned())
    }
    fn apply(compiled: &String) -> io::Result<()> {
        assert!(compiled.starts_with("(version 1)"));
        APPLIED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn the_seatbelt_profile_is_compiled_before_the_fork_and_only_applied_after() {
    use std::sync::atomic::Ordering::SeqCst;
    let c = Confinement {
        read: vec![PathBuf::from("/r/c/rootfs")],
        ..Default::default()
    };
    // prepare runs in the monitor, before the fork: the profile is generated and compiled
    // there, so the forked child of the multithreaded monitor allocates nothing.
    let prepared = CompiledSeatbelt::<CountingCompiler>::prepare(&c).expect("compiles");
    assert_eq!(COMPILED.load(SeqCst), 1);
    assert_eq!(APPLIED.load(SeqCst), 0);
    // The child only applies what was compiled (twice here: each exec'd process of a
    // container applies the same compiled profile).
    prepared.apply().expect("applies");
    prepared.apply().expect("applies");
    assert_eq!(COMPILED.load(SeqCst), 1, "nothing compiled after the fork");
    assert_eq!(APPLIED.load(SeqCst), 2);
    // A profile that cannot be made fails in prepare, before any fork.
    let bad = Confinement {
        read: vec![PathBuf::from("/r/c/nul\0byte")],
        ..Default::default()
    };
    assert!(CompiledSeatbelt::<CountingCompiler>::prepare(&bad).is_err());
    assert_eq!(COMPILED.load(SeqCst), 1);
}

#[test]
fn landlock_short_of_the_policy_is_refused_unless_the_operator_chose_best_effort() {
    // Everything the policy needs: ABI 6 (Linux 6.12) and later.
    for abi in [6, 7, 8] {
        assert_eq!(landlock_decision(abi, false), Ok(Vec::new()), "ABI {abi}");
    }
    // ABI 5 (Linux 6.10, 6.11): no signal or abstract socket scoping.
    let e = landlock_decision(5, false).expect_err("refused");
    assert!(
        e.contains("ABI is 5") && e.contains("signal") && e.contains("landlock_best_effort"),
        "{e}"
    );
    assert!(!e.contains("truncat"), "{e}");
    // ABI 2 (before 6.2): no truncation control either.
    let e = landlock_decision(2, false).expect_err("refused");
    assert!(
        e.contains("truncat") && e.contains("ioctl") && e.contains("signal"),
        "{e}"
    );
    // Best effort: started, what is lost named for the log.
    let lost = landlock_decision(4, true).expect("best effort");
    assert_eq!(lost.len(), 2, "{lost:?}");
    assert!(lost.iter().any(|l| l.contains("signal")), "{lost:?}");
    assert_eq!(landlock_decision(1, true).expect("best effort").len(), 4);
    // No Landlock at all: refused even with best effort.
    let e = landlock_decision(0, true).expect_err("no Landlock");
    assert!(e.contains("ABI is 0"), "{e}");
    // This kernel's ABI is known on Linux, absent on macOS.
    assert_eq!(landlock_abi().is_some(), matches!(OS, Os::Linux));
}

#[test]
fn a_read_only_bind_mount_is_read_only_in_its_submounts_too() {
    if !nix::unistd::geteuid().is_root() || !HAS_BIND_MOUNTS {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let sub = src.join("sub");
    let dst = dir.path().join("dst");
    std::fs::create_dir_all(&sub).expect("mkdir");
    std::fs::create_dir(&dst).expect("mkdir");
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&sub)
        .status()
        .expect("mount");
    assert!(status.success(), "mount -t tmpfs: {status}");
    let result = std::panic::catch_unwind(|| {
        bind_mount(&src, &dst, true).expect("bind");
        let inner = std::fs::write(dst.join("sub/f"), "x");
        let _ = unmount(&dst.join("sub"));
        let _ = unmount(&dst);
        let e = inner.expect_err("the submount is read-only too");
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
        // The source's own mount is untouched.
        std::fs::write(sub.join("f"), "x").expect("the source stays writable");
    });
    let _ = unmount(&sub);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
