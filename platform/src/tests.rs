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
