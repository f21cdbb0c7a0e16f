//! The macOS layer's mechanisms as they run on Linux: volumes through bindfs (FUSE) and their
//! repair after a crash, mount sources held to the allowed host paths, the jail layout every
//! root gets, and the mDNSResponder relay into container roots.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use darwin_cri_tests::v1 as cri;
use darwin_cri_tests::*;
use tonic::Code;

use platform::fdpass;

/// The bindfs processes serving mounts below `dir` (their command line names it).
fn bindfs_pids(dir: &Path) -> Vec<i32> {
    let out = std::process::Command::new("pgrep")
        .arg("-f")
        .arg(format!("^bindfs .*{}", dir.display()))
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn volume_mount(container_path: &str, host: &Path, readonly: bool) -> cri::Mount {
    cri::Mount {
        container_path: container_path.into(),
        host_path: host.display().to_string(),
        readonly,
        ..Default::default()
    }
}

#[tokio::test]
async fn bindfs_volumes_work_and_are_repaired_after_their_daemon_dies() -> anyhow::Result<()> {
    // Copied roots, as APFS clones are on macOS: on the file system of the server's directory,
    // where kubelet's files are, so file mounts are hard links as on a Mac.
    let mut server = Server::start_with_config(
        "[mounts]\nmechanism = \"bindfs\"\n[runtime]\nrootfs = \"copy\"\n",
    )
    .await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "fuse").await?;
    let data = server.dir.path().join("volume");
    std::fs::create_dir_all(&data)?;
    std::fs::write(data.join("file"), "through bindfs")?;
    let scratch = server.dir.path().join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let termination_log = server.dir.path().join("termination-log");
    std::fs::write(&termination_log, "")?;
    let hosts = server.dir.path().join("etc-hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n")?;
    let mut config = container_config("c", "sleep 1000");
    config.mounts = vec![
        volume_mount("/data", &data, true),
        volume_mount("/scratch", &scratch, false),
        volume_mount("/dev/termination-log", &termination_log, false),
        volume_mount("/etc/hosts", &hosts, true),
    ];
    let cid = create(&mut rt, &pod, config).await?;
    start(&mut rt, &cid).await?;
    let r = exec(&mut rt, &cid, &["cat", "/data/file"], 10).await?;
    assert_eq!(r.stdout, b"through bindfs");
    let r = exec(&mut rt, &cid, &["sh", "-c", "echo x > /data/new"], 10).await?;
    assert_ne!(r.exit_code, 0, "a read-only bindfs mount refuses writes");
    let r = exec(&mut rt, &cid, &["sh", "-c", "echo w > /scratch/out"], 10).await?;
    assert_eq!(r.exit_code, 0);
    assert_eq!(std::fs::read_to_string(scratch.join("out"))?, "w\n");
    // macOS cannot mount over a file: file mounts are hard links, and writes reach kubelet.
    let r = exec(
        &mut rt,
        &cid,
        &["sh", "-c", "echo done > /dev/termination-log"],
        10,
    )
    .await?;
    assert_eq!(r.exit_code, 0);
    assert_eq!(std::fs::read_to_string(&termination_log)?, "done\n");
    // A read-only file mount is no link to the host's file: even root's write stays inside.
    let r = exec(&mut rt, &cid, &["cat", "/etc/hosts"], 10).await?;
    assert_eq!(r.stdout, b"127.0.0.1 localhost\n");
    exec(
        &mut rt,
        &cid,
        &["sh", "-c", "echo 6.6.6.6 evil > /etc/hosts"],
        10,
    )
    .await?;
    assert_eq!(
        std::fs::read_to_string(&hosts)?,
        "127.0.0.1 localhost\n",
        "the host's file is untouched"
    );
    let fuse_mounts: Vec<PathBuf> = mounts_under(&server.root())
        .into_iter()
        .filter(|m| m.ends_with("data") || m.ends_with("scratch"))
        .collect();
    assert_eq!(fuse_mounts.len(), 2);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    for m in &fuse_mounts {
        let line = mountinfo
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(m.to_str().expect("utf-8")))
            .expect("in mountinfo");
        assert!(line.contains(" - fuse"), "{m:?} is a FUSE mount: {line}");
    }

    // A crash of the server and of one bindfs daemon: the mount is dead (ENOTCONN) until the
    // restarted server unmounts and makes it again.
    server.kill();
    let ours = bindfs_pids(server.dir.path());
    assert_eq!(ours.len(), 2, "one bindfs process per directory mount");
    for pid in &ours {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::SIGKILL)?;
    }
    let dead = fuse_mounts[0].clone();
    wait_for(Duration::from_secs(5), "the mount to go stale", || {
        let dead = dead.clone();
        async move {
            (std::fs::metadata(&dead).err()?.raw_os_error() == Some(nix::libc::ENOTCONN))
                .then_some(())
        }
    })
    .await?;
    server.restart().await?;
    let (mut rt, _) = server.client().await?;
    let r = exec(&mut rt, &cid, &["cat", "/data/file"], 10).await?;
    assert_eq!(
        r.stdout,
        b"through bindfs",
        "the volume is back: {}",
        server.log()
    );
    assert!(server.log().contains("unmounted a stale mount"));

    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;
    server.wait_removals().await?;
    assert!(mounts_under(&server.root()).is_empty());
    let left = bindfs_pids(server.dir.path());
    wait_for(Duration::from_secs(5), "bindfs processes to end", || {
        let left = left.clone();
        async move {
            left.iter()
                .all(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/stat"))
                        .map(|s| s.contains(") Z "))
                        .unwrap_or(true)
                })
                .then_some(())
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn mount_sources_outside_the_allowed_paths_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let allowed = dir.path().join("kubelet");
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(allowed.join("pods/vol"))?;
    std::fs::create_dir_all(&secrets)?;
    std::fs::write(secrets.join("key"), "secret")?;
    std::fs::write(allowed.join("pods/vol/ok"), "fine")?;
    std::os::unix::fs::symlink(&secrets, allowed.join("pods/escape"))?;
    let server = Server::start_with_config(&format!(
        "[mounts]\nallowed_host_paths = [{:?}]\n",
        allowed.display().to_string()
    ))
    .await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "allowed").await?;

    let mut config = container_config("escape", "sleep 1000");
    config.mounts = vec![volume_mount("/data", &allowed.join("pods/escape"), true)];
    let err = create(&mut rt, &pod, config).await.expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("symlink") && err.message().contains("allowed_host_paths"),
        "{}",
        err.message()
    );
    let mut config = container_config("outside", "sleep 1000");
    config.mounts = vec![volume_mount("/data", &secrets, true)];
    let err = create(&mut rt, &pod, config).await.expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("outside the allowed host paths"),
        "{}",
        err.message()
    );

    let mut config = container_config("inside", "sleep 1000");
    config.mounts = vec![volume_mount("/data", &allowed.join("pods/vol"), true)];
    let cid = create(&mut rt, &pod, config).await?;
    start(&mut rt, &cid).await?;
    let r = exec(&mut rt, &cid, &["cat", "/data/ok"], 10).await?;
    assert_eq!(r.stdout, b"fine");
    Ok(())
}

#[tokio::test]
async fn every_root_gets_the_jail_layout_and_a_writable_home() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "jail").await?;
    let config = as_username(container_config("build", "sleep 1000"), "app");
    let cid = create(&mut rt, &pod, config).await?;
    start(&mut rt, &cid).await?;
    let script = "set -e; id -u; echo $HOME; \
        defaults=$HOME/Library/Preferences/com.example.plist; echo prefs > $defaults; cat $defaults; \
        echo derived > $HOME/Library/Developer/d; echo t > /tmp/t; echo pt > /private/tmp/pt; \
        echo v > /var/tmp/v; echo s > /Users/Shared/s; \
        for d in /Library/Preferences /Library/Caches /Library/Developer /private/var/run /private/var/folders /private/etc; do test -d $d; done; \
        ls /private/tmp/pt; ! touch /Library/Preferences/x 2>/dev/null";
    let r = exec(&mut rt, &cid, &["sh", "-c", script], 10).await?;
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "1000\n/home/app\nprefs\n/private/tmp/pt\n",
        "stderr: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(
        r.exit_code,
        0,
        "stderr: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn the_hosts_mdnsresponder_is_relayed_into_running_containers() -> anyhow::Result<()> {
    let daemon_dir = tempfile::tempdir()?;
    let upstream = daemon_dir.path().join("mDNSResponder");
    let listener = std::os::unix::net::UnixListener::bind(&upstream)?;
    // A stand-in for mDNSResponder: answers each request, on the connection and on a passed
    // descriptor if one came with it.
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut buf = [0u8; 128];
            let Ok((n, fds)) = fdpass::recv_with_fds(&conn, &mut buf) else {
                continue;
            };
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            for fd in fds {
                let _ = std::fs::File::from(fd).write_all(format!("fd:{req}").as_bytes());
            }
            let _ = (&conn).write_all(format!("answer:{req}").as_bytes());
        }
    });
    let (server, mut rt, pod, cid, var_run) = relayed_container(&upstream).await?;
    let r = exec(
        &mut rt,
        &cid,
        &["sh", "-c", "test -S /var/run/mDNSResponder && echo socket"],
        10,
    )
    .await?;
    assert_eq!(
        r.stdout,
        b"socket\n",
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );

    // What a chrooted client does: connect to the path inside its root, send a request with
    // the descriptor its replies are to come back on.
    let in_root = var_run.join("mDNSResponder");
    let (reply, on_fd) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<(String, String)> {
            let link = std::env::temp_dir().join(format!("mdns-test-{}", std::process::id()));
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(in_root.parent().expect("dir"), &link)?;
            let conn = std::os::unix::net::UnixStream::connect(link.join("mDNSResponder"));
            std::fs::remove_file(&link)?;
            let conn = conn?;
            let (mut mine, theirs) = std::os::unix::net::UnixStream::pair()?;
            fdpass::send_with_fds(&conn, b"query", &[std::os::fd::AsFd::as_fd(&theirs)])?;
            drop(theirs);
            let mut on_fd = String::new();
            mine.read_to_string(&mut on_fd)?;
            let mut reply = String::new();
            (&conn).read_to_string(&mut reply)?;
            Ok((reply, on_fd))
        })
        .await??;
    assert_eq!(reply, "answer:query");
    assert_eq!(on_fd, "fd:query", "the descriptor went through the relay");

    // A volume at /var/run is the host's directory: nothing is made or removed in it.
    let host_run = server.dir.path().join("host-run");
    std::fs::create_dir_all(&host_run)?;
    std::fs::write(host_run.join("mDNSResponder"), "the host's file")?;
    let mut config = container_config("vol", "sleep 1000");
    config.mounts = vec![volume_mount("/var/run", &host_run, false)];
    let vol = create(&mut rt, &pod, config).await?;
    start(&mut rt, &vol).await?;
    assert_eq!(
        std::fs::read_to_string(host_run.join("mDNSResponder"))?,
        "the host's file"
    );
    rt.stop_container(cri::StopContainerRequest {
        container_id: vol,
        timeout: 0,
    })
    .await?;
    assert_eq!(
        std::fs::read_to_string(host_run.join("mDNSResponder"))?,
        "the host's file"
    );
    assert!(server.log().contains("not the container's own directory"));

    rt.stop_container(cri::StopContainerRequest {
        container_id: cid.clone(),
        timeout: 0,
    })
    .await?;
    wait_for(Duration::from_secs(5), "the relay socket to go", || {
        let gone = !var_run.join("mDNSResponder").exists();
        async move { gone.then_some(()) }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn roots_of_one_image_and_user_share_one_prepared_layer() -> anyhow::Result<()> {
    let mut server = Server::start().await?;
    let (mut rt, mut img) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "layers").await?;
    let mut ids = Vec::new();
    for (name, user) in [("a", None), ("b", None), ("c", Some("app"))] {
        let config = container_config(name, "sleep 1000");
        let config = match user {
            Some(u) => as_username(config, u),
            None => config,
        };
        let id = create(&mut rt, &pod, config).await?;
        start(&mut rt, &id).await?;
        let r = exec(
            &mut rt,
            &id,
            &["sh", "-c", "test -c /dev/null && test -k /tmp && test -d /Library/Preferences && test -w $HOME && echo prepared"],
            10,
        )
        .await?;
        assert_eq!(
            r.stdout,
            b"prepared\n",
            "{}",
            String::from_utf8_lossy(&r.stderr)
        );
        ids.push(id);
    }
    let layers = server.root().join("layers");
    let count = || std::fs::read_dir(&layers).map(|d| d.count()).unwrap_or(0);
    assert_eq!(
        count(),
        2,
        "one layer for the image's default user, one for app"
    );
    // A container's own layer holds only its own files, not the shared preparation.
    let upper = server.container_dir(&pod, &ids[0]).join("upper");
    for shared in ["Library", "dev", "private", "Users"] {
        assert!(
            !upper.join(shared).exists(),
            "{shared} is in the shared layer"
        );
    }

    // Layers of an image that is gone are removed when the server starts.
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;
    img.remove_image(cri::RemoveImageRequest {
        image: Some(cri::ImageSpec {
            image: BUSYBOX.into(),
            ..Default::default()
        }),
    })
    .await?;
    server.kill();
    server.restart().await?;
    assert_eq!(count(), 0, "{}", server.log());
    Ok(())
}
