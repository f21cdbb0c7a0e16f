//! Pod and container lifecycle against the real binary: logs, exec, mounts, users, restarts.

use std::time::Duration;

use darwin_cri_tests::v1 as cri;
use darwin_cri_tests::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn pod_and_container_lifecycle_with_exact_logs() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "web").await?;

    let st = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: true,
        })
        .await?
        .into_inner();
    let s = st.status.expect("status");
    assert_eq!(s.state, cri::PodSandboxState::SandboxReady as i32);
    assert!(
        !s.network.expect("network").ip.is_empty(),
        "a pod always reports an IP"
    );
    assert_eq!(s.metadata.expect("metadata").name, "web");
    assert!(st.info["info"].contains("\"effectiveNetwork\":\"host\""));

    let script = "echo hello; echo oops >&2; printf 'no newline'; cat /etc/resolv.conf | head -1 >&2; exit 3";
    let cid = create(&mut rt, &pod, container_config("app", script)).await?;
    let listed = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: pod.clone(),
                state: Some(cri::ContainerStateValue {
                    state: cri::ContainerState::ContainerCreated as i32,
                }),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, cid);
    start(&mut rt, &cid).await?;
    let exited = wait_exited(&mut rt, &cid, Duration::from_secs(10)).await?;
    assert_eq!(exited.exit_code, 3);
    assert_eq!(exited.reason, "Error");
    assert!(exited.started_at > 0 && exited.finished_at >= exited.started_at);

    let log_path = server.dir.path().join("logs/web/app/0.log");
    assert_eq!(exited.log_path, log_path.display().to_string());
    let log = std::fs::read_to_string(&log_path)?;
    let mut records: Vec<(String, String, String)> = Vec::new();
    for line in log.lines() {
        let mut parts = line.splitn(4, ' ');
        let ts = parts.next().expect("timestamp");
        assert!(
            ts.ends_with('Z') && ts.contains('T') && ts.contains('.'),
            "RFC3339Nano timestamp: {ts}"
        );
        records.push((
            parts.next().expect("stream").into(),
            parts.next().expect("tag").into(),
            parts.next().unwrap_or_default().into(),
        ));
    }
    let stdout: Vec<_> = records
        .iter()
        .filter(|r| r.0 == "stdout")
        .cloned()
        .collect();
    let stderr: Vec<_> = records
        .iter()
        .filter(|r| r.0 == "stderr")
        .cloned()
        .collect();
    let rec = |s: &str, t: &str, c: &str| (s.to_string(), t.to_string(), c.to_string());
    assert_eq!(
        stdout,
        vec![
            rec("stdout", "F", "hello"),
            rec("stdout", "F", "no newline")
        ]
    );
    assert_eq!(
        stderr,
        vec![
            rec("stderr", "F", "oops"),
            rec(
                "stderr",
                "F",
                "search default.svc.cluster.local svc.cluster.local"
            )
        ]
    );

    // Exited containers are listed with their state; start again is refused.
    assert_eq!(
        start(&mut rt, &cid)
            .await
            .expect_err("restart refused")
            .code(),
        Code::FailedPrecondition
    );

    rt.remove_container(cri::RemoveContainerRequest {
        container_id: cid.clone(),
    })
    .await?;
    assert_eq!(
        status(&mut rt, &cid).await.expect_err("gone").code(),
        Code::NotFound
    );
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await?;
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                state: Some(cri::PodSandboxStateValue {
                    state: cri::PodSandboxState::SandboxNotready as i32,
                }),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await?;
    // Stop and Remove are idempotent.
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await?;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await?;
    assert!(!server.root().join("pods").join(&pod).exists());
    assert!(
        log_path.exists(),
        "kubelet owns the logs: they outlive the container"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_sync_exit_codes_users_and_timeout() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "exec").await?;

    let mut config = container_config("sleeper", "sleep 1000");
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            supplemental_groups: vec![3000],
            ..Default::default()
        }),
        ..Default::default()
    });
    config.envs = vec![cri::KeyValue {
        key: "GREETING".into(),
        value: "hi there".into(),
    }];
    let cid = create(&mut rt, &pod, config).await?;
    // Exec in a container that is not running is refused.
    assert_eq!(
        exec(&mut rt, &cid, &["true"], 5)
            .await
            .expect_err("not running")
            .code(),
        Code::FailedPrecondition
    );
    start(&mut rt, &cid).await?;

    let r = exec(
        &mut rt,
        &cid,
        &["sh", "-c", "echo out; echo err >&2; exit 7"],
        10,
    )
    .await?;
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 7)
    );
    let r = exec(&mut rt, &cid, &["id", "-u"], 10).await?;
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "1000");
    let r = exec(&mut rt, &cid, &["id", "-G"], 10).await?;
    let mut groups: Vec<String> = String::from_utf8_lossy(&r.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        vec!["1000", "2000", "3000"],
        "primary, /etc/group membership, supplemental"
    );
    let r = exec(
        &mut rt,
        &cid,
        &["sh", "-c", "echo \"$GREETING|$HOME|$HOSTNAME|$(pwd)\""],
        10,
    )
    .await?;
    assert_eq!(
        String::from_utf8_lossy(&r.stdout).trim(),
        "hi there|/home/app|exec|/"
    );
    let r = exec(&mut rt, &cid, &["cat", "/etc/hostname"], 10).await?;
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "exec");
    // The container's main process runs as the same user.
    let r = exec(
        &mut rt,
        &cid,
        &["sh", "-c", "ls /proc 2>/dev/null | head -1; echo ok"],
        10,
    )
    .await?;
    assert_eq!(r.exit_code, 0);

    // Output past the 7 MiB limit is dropped, and the command is not blocked by it.
    let r = exec(
        &mut rt,
        &cid,
        &["dd", "if=/dev/zero", "bs=1M", "count=20"],
        0,
    )
    .await?;
    assert_eq!((r.stdout.len(), r.exit_code), (7 << 20, 0));

    // A process an exec left behind, detached from everything, ends with the container.
    let r = exec(
        &mut rt,
        &cid,
        &["sh", "-c", "setsid sleep 999 >/dev/null 2>&1 </dev/null &"],
        10,
    )
    .await?;
    assert_eq!(r.exit_code, 0);

    // A command that is not there.
    let err = exec(&mut rt, &cid, &["no-such-command"], 10)
        .await
        .expect_err("missing command");
    assert!(err.message().contains("not found"), "{}", err.message());

    // Timeout: the command's whole tree is killed, and the output so far comes back.
    let started = std::time::Instant::now();
    let err = exec(
        &mut rt,
        &cid,
        &["sh", "-c", "echo before; sleep 600 & sleep 600"],
        1,
    )
    .await
    .expect_err("timed out");
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(err.message().contains("before"), "{}", err.message());
    assert!(started.elapsed() < Duration::from_secs(10));
    let leftover = wait_for(Duration::from_secs(5), "exec's sleeps to die", || async {
        let sleeps = processes_under(&server.root())
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| c.starts_with(b"sleep\x00600"))
                    .unwrap_or(false)
            })
            .count();
        (sleeps == 0).then_some(())
    })
    .await;
    assert!(leftover.is_ok(), "the timed-out exec left processes behind");

    // The main container is still there.
    let s = status(&mut rt, &cid).await?;
    assert_eq!(s.state, cri::ContainerState::ContainerRunning as i32);
    let image = s.image.clone().unwrap_or_default();
    assert_eq!(
        (image.image.as_str(), image.user_specified_image.as_str()),
        (BUSYBOX, BUSYBOX)
    );
    rt.stop_container(cri::StopContainerRequest {
        container_id: cid.clone(),
        timeout: 0,
    })
    .await?;
    server.wait_no_container_processes().await?;
    let user = s.user.and_then(|u| u.linux).expect("user");
    assert_eq!((user.uid, user.gid), (1000, 1000));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_kills_the_whole_tree_after_the_grace_period() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "stubborn").await?;
    let script =
        "trap '' TERM; (trap '' TERM; sleep 1000) & sleep 1000 & while true; do sleep 1; done";
    let cid = create(&mut rt, &pod, container_config("c", script)).await?;
    start(&mut rt, &cid).await?;
    wait_for(Duration::from_secs(5), "children", || async {
        (processes_under(&server.root()).len() >= 4).then_some(())
    })
    .await?;
    let t = std::time::Instant::now();
    rt.stop_container(cri::StopContainerRequest {
        container_id: cid.clone(),
        timeout: 1,
    })
    .await?;
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "the grace period was honoured"
    );
    let s = status(&mut rt, &cid).await?;
    assert_eq!(s.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "Error"));
    server.wait_no_container_processes().await?;

    // A container that exits on SIGTERM gets 143 and no wait.
    let cid = create(&mut rt, &pod, container_config("polite", "exec sleep 1000")).await?;
    start(&mut rt, &cid).await?;
    let t = std::time::Instant::now();
    rt.stop_container(cri::StopContainerRequest {
        container_id: cid.clone(),
        timeout: 30,
    })
    .await?;
    assert!(t.elapsed() < Duration::from_secs(10));
    let s = status(&mut rt, &cid).await?;
    assert_eq!((s.exit_code, s.reason.as_str()), (143, "Error"));
    // Stop again: success.
    rt.stop_container(cri::StopContainerRequest {
        container_id: cid.clone(),
        timeout: 1,
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn mounts_are_visible_inside_and_gone_after_remove() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "vol").await?;
    let data = server.dir.path().join("volume");
    std::fs::create_dir_all(data.join("sub"))?;
    std::fs::write(data.join("sub/file"), "volume content")?;
    std::fs::write(data.join("precious"), "keep me")?;
    let single = server.dir.path().join("termination-log");
    std::fs::write(&single, "")?;
    let hosts = server.dir.path().join("etc-hosts");
    std::fs::write(&hosts, "127.0.0.1 kubelet-hosts\n")?;
    let mut config = container_config("c", "sleep 1000");
    config.mounts = vec![
        cri::Mount {
            container_path: "/data".into(),
            host_path: data.display().to_string(),
            readonly: true,
            ..Default::default()
        },
        cri::Mount {
            container_path: "/dev/termination-log".into(),
            host_path: single.display().to_string(),
            ..Default::default()
        },
        cri::Mount {
            container_path: "/etc/hosts".into(),
            host_path: hosts.display().to_string(),
            readonly: true,
            ..Default::default()
        },
    ];
    let cid = create(&mut rt, &pod, config).await?;
    start(&mut rt, &cid).await?;
    let r = exec(&mut rt, &cid, &["cat", "/data/sub/file"], 10).await?;
    assert_eq!(r.stdout, b"volume content");
    let r = exec(&mut rt, &cid, &["sh", "-c", "echo x > /data/new"], 10).await?;
    assert_ne!(r.exit_code, 0, "a read-only mount refuses writes");
    let r = exec(
        &mut rt,
        &cid,
        &["sh", "-c", "echo done > /dev/termination-log"],
        10,
    )
    .await?;
    assert_eq!(r.exit_code, 0);
    assert_eq!(
        std::fs::read_to_string(&single)?,
        "done\n",
        "writes reach the host side"
    );
    let r = exec(&mut rt, &cid, &["cat", "/etc/hosts"], 10).await?;
    assert_eq!(r.stdout, b"127.0.0.1 kubelet-hosts\n");
    let s = status(&mut rt, &cid).await?;
    assert!(
        s.mounts
            .iter()
            .any(|m| m.container_path == "/dev/termination-log"
                && m.host_path == single.display().to_string())
    );
    let kubelet_mounts = mounts_under(&server.root())
        .into_iter()
        .filter(|m| {
            m.ends_with("data") || m.ends_with("dev/termination-log") || m.ends_with("etc/hosts")
        })
        .count();
    assert_eq!(kubelet_mounts, 3);

    rt.remove_container(cri::RemoveContainerRequest { container_id: cid })
        .await?;
    server.wait_removals().await?;
    assert!(
        mounts_under(&server.root()).is_empty(),
        "mounts removed with the container"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("precious"))?,
        "keep me",
        "the volume's files survive"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("sub/file"))?,
        "volume content"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn run_as_username_and_image_default_user() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "users").await?;
    let config = as_username(container_config("named", "id -u; id -g; id -un"), "app");
    let cid = create(&mut rt, &pod, config).await?;
    start(&mut rt, &cid).await?;
    let s = wait_exited(&mut rt, &cid, Duration::from_secs(10)).await?;
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));
    let log = std::fs::read_to_string(&s.log_path)?;
    let out: Vec<&str> = log
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default())
        .collect();
    assert_eq!(out, vec!["1000", "1000", "app"]);

    let cid = create(&mut rt, &pod, container_config("default", "id -u")).await?;
    start(&mut rt, &cid).await?;
    let s = wait_exited(&mut rt, &cid, Duration::from_secs(10)).await?;
    assert!(std::fs::read_to_string(&s.log_path)?.ends_with(" stdout F 0\n"));
    Ok(())
}

/// kubelet and critest open a container's log right after StartContainer: it exists by then
/// (the monitor opens it before reporting the start), not world-readable.
#[tokio::test(flavor = "multi_thread")]
async fn the_log_file_exists_when_start_returns() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "logs").await?;
    for i in 0..20 {
        let config = container_config(&format!("quiet-{i}"), "sleep 1000");
        let log = server.dir.path().join("logs/logs").join(&config.log_path);
        let cid = create(&mut rt, &pod, config).await?;
        start(&mut rt, &cid).await?;
        let meta = std::fs::metadata(&log)
            .map_err(|e| anyhow::anyhow!("{} right after start: {e}", log.display()))?;
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_without_a_user_is_refused() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "group").await?;
    let mut config = container_config("group-only", "id -g");
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_group: Some(cri::Int64Value { value: 1000 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let e = create(&mut rt, &pod, config.clone())
        .await
        .expect_err("a group alone is refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("run_as_group"), "{e:?}");
    // With the user it names, the group applies.
    if let Some(sc) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        sc.run_as_user = Some(cri::Int64Value { value: 1000 });
        sc.run_as_group = Some(cri::Int64Value { value: 2000 });
    }
    let cid = create(&mut rt, &pod, config).await?;
    start(&mut rt, &cid).await?;
    let s = wait_exited(&mut rt, &cid, Duration::from_secs(10)).await?;
    assert!(
        std::fs::read_to_string(&s.log_path)?.ends_with(" stdout F 2000\n"),
        "{s:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn server_killed_and_restarted_keeps_containers_and_their_exit_codes() -> anyhow::Result<()> {
    let mut server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "survivor").await?;
    let long = create(
        &mut rt,
        &pod,
        container_config("long", "sleep 3; echo late; exit 5"),
    )
    .await?;
    let short = create(&mut rt, &pod, container_config("short", "sleep 1; exit 4")).await?;
    let forever = create(&mut rt, &pod, container_config("forever", "sleep 1000")).await?;
    for id in [&long, &short, &forever] {
        start(&mut rt, id).await?;
    }
    server.kill();
    // The short one exits while the server is down.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.restart().await?;
    let (mut rt, _) = server.client().await?;

    let s = status(&mut rt, &short).await?;
    assert_eq!(
        (s.state, s.exit_code, s.reason.as_str()),
        (cri::ContainerState::ContainerExited as i32, 4, "Error")
    );
    let s = status(&mut rt, &long).await?;
    assert_eq!(
        s.state,
        cri::ContainerState::ContainerRunning as i32,
        "still running after the restart"
    );
    let s = wait_exited(&mut rt, &long, Duration::from_secs(10)).await?;
    assert_eq!(s.exit_code, 5);
    assert!(
        std::fs::read_to_string(&s.log_path)?.contains(" stdout F late\n"),
        "logging went on without the server"
    );

    // A running container adopted after the restart can still be stopped and exec'd into.
    let r = exec(&mut rt, &forever, &["echo", "alive"], 10).await?;
    assert_eq!(r.stdout, b"alive\n");
    let (exe, protocol) = monitor_of(&mut rt, &forever).await?;
    assert!(exe.ends_with("/darwin-cri-monitor"), "{exe}");
    assert_eq!(protocol, 2, "the monitor says its protocol");
    rt.stop_container(cri::StopContainerRequest {
        container_id: forever.clone(),
        timeout: 5,
    })
    .await?;
    assert_eq!(status(&mut rt, &forever).await?.exit_code, 143);

    // Graceful shutdown leaves containers running.
    let again = create(&mut rt, &pod, container_config("again", "sleep 1000")).await?;
    start(&mut rt, &again).await?;
    if let Some(child) = server.child.as_mut() {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let status = child.wait()?;
        assert!(status.success(), "SIGTERM is a clean shutdown: {status}");
    }
    server.child = None;
    server.restart().await?;
    let (mut rt, _) = server.client().await?;
    assert_eq!(
        status(&mut rt, &again).await?.state,
        cri::ContainerState::ContainerRunning as i32
    );
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;
    server.wait_no_container_processes().await?;
    assert!(
        std::fs::read_dir(server.root().join("pods"))?
            .next()
            .is_none(),
        "no debris"
    );
    Ok(())
}

/// Each container's root is its own: writes in one are seen neither by the image nor by a second
/// container, whether roots are layered (overlayfs) or copied.
async fn roots_are_private(server: &Server) -> anyhow::Result<()> {
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, server, "private").await?;
    let a = create(
        &mut rt,
        &pod,
        container_config("a", "echo changed > /etc/passwd; rm /bin/ls; echo ok"),
    )
    .await?;
    start(&mut rt, &a).await?;
    let s = wait_exited(&mut rt, &a, Duration::from_secs(10)).await?;
    assert_eq!(s.exit_code, 0);
    let b = create(
        &mut rt,
        &pod,
        container_config("b", "head -1 /etc/passwd; ls / >/dev/null && echo ls-ok"),
    )
    .await?;
    start(&mut rt, &b).await?;
    let s = wait_exited(&mut rt, &b, Duration::from_secs(10)).await?;
    let log = std::fs::read_to_string(&s.log_path)?;
    assert!(
        log.contains(" stdout F root:x:0:0:root:/root:/bin/sh\n"),
        "{log}"
    );
    assert!(log.contains(" stdout F ls-ok\n"), "{log}");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;
    server.wait_removals().await?;
    assert!(mounts_under(&server.root()).is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn container_roots_are_private_when_layered() -> anyhow::Result<()> {
    let server = Server::start().await?;
    roots_are_private(&server).await
}

#[tokio::test(flavor = "multi_thread")]
async fn container_roots_are_private_when_copied() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("copy.toml");
    std::fs::write(&config, "[runtime]\nrootfs = \"copy\"\n")?;
    let server = Server::start_with(vec!["--config".into(), config.display().to_string()]).await?;
    roots_are_private(&server).await?;
    // A copied root has no mount of its own (its /proc and the masks over it aside).
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "copied").await?;
    create(&mut rt, &pod, container_config("c", "true")).await?;
    let mounts = mounts_under(&server.root());
    assert!(
        mounts
            .iter()
            .all(|m| m.to_string_lossy().contains("/rootfs/proc")),
        "{mounts:?}"
    );
    Ok(())
}

/// The executable of container `id`'s monitor and the protocol it said it speaks.
async fn monitor_of(rt: &mut Rt, id: &str) -> anyhow::Result<(String, i64)> {
    let pid = monitor_pid(rt, id).await?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))?;
    let info = verbose_info(rt, id).await?;
    Ok((
        exe.display().to_string(),
        info["monitorProtocol"].as_i64().unwrap_or(0),
    ))
}

/// A server swapped for another binary talks to the monitors the first one started, and a
/// darwin-cri installed without darwin-cri-monitor beside it monitors containers itself.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_server_binary_keeps_the_old_monitors_and_a_lone_one_monitors_itself()
-> anyhow::Result<()> {
    let mut server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "upgrade").await?;
    let before = create(&mut rt, &pod, container_config("before", "sleep 1000")).await?;
    start(&mut rt, &before).await?;
    let (exe, _) = monitor_of(&mut rt, &before).await?;
    assert!(exe.ends_with("/darwin-cri-monitor"), "{exe}");

    // The "upgrade": the same server from another directory, with no monitor binary beside it.
    let lone_dir = server.dir.path().join("lone");
    std::fs::create_dir(&lone_dir)?;
    let lone = lone_dir.join("darwin-cri");
    if std::fs::hard_link(&server.binary, &lone).is_err() {
        std::fs::copy(&server.binary, &lone)?;
    }
    server.kill();
    server.binary = lone.clone();
    server.restart().await?;
    let (mut rt, _) = server.client().await?;
    let r = exec(&mut rt, &before, &["echo", "still"], 10).await?;
    assert_eq!(
        r.stdout, b"still\n",
        "exec through the monitor the old server started"
    );

    let after = create(&mut rt, &pod, container_config("after", "sleep 1000")).await?;
    start(&mut rt, &after).await?;
    let (exe, protocol) = monitor_of(&mut rt, &after).await?;
    assert_eq!(
        exe,
        lone.display().to_string(),
        "the fallback: darwin-cri monitor"
    );
    assert_eq!(protocol, 2);
    let r = exec(&mut rt, &after, &["echo", "fallback"], 10).await?;
    assert_eq!(r.stdout, b"fallback\n");
    assert!(
        server
            .log()
            .contains("small monitor binary is not installed"),
        "the server says why containers cost more: {}",
        server.log()
    );
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;
    server.wait_no_container_processes().await?;
    Ok(())
}
