//! Fault survival: a server killed mid-work, a monitor killed, processes that escape their group,
//! a full disk, and a long run of pods that must leave no growth behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use darwin_cri_tests::v1 as cri;
use darwin_cri_tests::*;
use tonic::Code;

/// Stops and removes everything, as kubelet's garbage collection would.
async fn kubelet_cleanup(rt: &mut Rt) -> anyhow::Result<()> {
    for c in rt
        .list_containers(cri::ListContainersRequest::default())
        .await?
        .into_inner()
        .containers
    {
        rt.stop_container(cri::StopContainerRequest {
            container_id: c.id.clone(),
            timeout: 0,
        })
        .await?;
        rt.remove_container(cri::RemoveContainerRequest { container_id: c.id })
            .await?;
    }
    for p in rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items
    {
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: p.id.clone(),
        })
        .await?;
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: p.id,
        })
        .await?;
    }
    Ok(())
}

async fn assert_no_debris(server: &Server) -> anyhow::Result<()> {
    server.wait_removals().await?;
    server.wait_no_container_processes().await?;
    assert!(
        mounts_under(&server.root()).is_empty(),
        "{:?}",
        mounts_under(&server.root())
    );
    assert_eq!(
        std::fs::read_dir(server.root().join("pods"))?.count(),
        0,
        "pod directories left"
    );
    assert_eq!(
        std::fs::read_dir(server.root().join("images/leases"))?.count(),
        0,
        "leases left"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn server_killed_during_concurrent_pod_cycles() -> anyhow::Result<()> {
    let mut server = Server::start().await?;
    let mut tasks = Vec::new();
    // How many containers were started and left alone so far: the server is killed once some
    // are, not after a fixed time (on a loaded 2-core machine 1.5 s started none).
    let started = Arc::new(AtomicUsize::new(0));
    for i in 0..20 {
        let (mut rt, _) = server.client().await?;
        let logs = server.dir.path().join("logs");
        let started = started.clone();
        tasks.push(tokio::spawn(async move {
            // Containers that started and were never asked to stop: after the restart each must
            // still run (or, for `exit 3`, have exited with 3).
            let mut untouched = Vec::new();
            for round in 0.. {
                let name = format!("p{i}-{round}");
                let Ok(pod) = rt
                    .run_pod_sandbox(cri::RunPodSandboxRequest {
                        config: Some(pod_config(&name, &logs.join(&name))),
                        runtime_handler: String::new(),
                    })
                    .await
                else {
                    return untouched;
                };
                let pod = pod.into_inner().pod_sandbox_id;
                let script = if i % 2 == 0 { "sleep 1000" } else { "exit 3" };
                let Ok(id) = create(&mut rt, &pod, container_config("c", script)).await else {
                    return untouched;
                };
                if start(&mut rt, &id).await.is_err() {
                    return untouched;
                }
                if round % 2 == 0 {
                    untouched.push((id.clone(), i % 2 == 0));
                    started.fetch_add(1, Ordering::SeqCst);
                }
                if round % 2 == 1 {
                    let _ = rt
                        .stop_container(cri::StopContainerRequest {
                            container_id: id.clone(),
                            timeout: 0,
                        })
                        .await;
                    let _ = rt
                        .remove_container(cri::RemoveContainerRequest { container_id: id })
                        .await;
                    let _ = rt
                        .stop_pod_sandbox(cri::StopPodSandboxRequest {
                            pod_sandbox_id: pod.clone(),
                        })
                        .await;
                    let _ = rt
                        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                            pod_sandbox_id: pod,
                        })
                        .await;
                }
            }
            untouched
        }));
    }
    // Killed mid-cycle: after at least 10 containers were left running, while the other tasks
    // are still creating and removing.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while started.load(Ordering::SeqCst) < 10 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill();
    let mut untouched = Vec::new();
    for t in tasks {
        untouched.extend(t.await.unwrap_or_default());
    }
    server.restart().await?;
    let (mut rt, _) = server.client().await?;

    // What was started and never stopped survived the crash as it was.
    assert!(!untouched.is_empty());
    for (id, sleeps) in &untouched {
        let s = rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await?
            .into_inner()
            .status
            .expect("status");
        if *sleeps {
            assert_eq!(
                s.state,
                cri::ContainerState::ContainerRunning as i32,
                "{id} was lost: {s:?}"
            );
        } else {
            let s = wait_exited(&mut rt, id, Duration::from_secs(10)).await?;
            assert_eq!(s.exit_code, 3, "{id}: {s:?}");
        }
    }

    // Every container is accounted for, and every process below the root belongs to one.
    let containers = rt
        .list_containers(cri::ListContainersRequest::default())
        .await?
        .into_inner()
        .containers;
    assert!(!containers.is_empty());
    let mut running_pids = Vec::new();
    for c in &containers {
        let st = rt
            .container_status(cri::ContainerStatusRequest {
                container_id: c.id.clone(),
                verbose: true,
            })
            .await?
            .into_inner();
        let s = st.status.expect("status");
        let name = c
            .labels
            .get("io.kubernetes.container.name")
            .cloned()
            .unwrap_or_default();
        assert_eq!(name, "c");
        if s.state == cri::ContainerState::ContainerExited as i32 {
            assert!(
                [3, 137, 143].contains(&s.exit_code) || s.reason == "StartError",
                "{s:?}"
            );
        }
        if s.state == cri::ContainerState::ContainerRunning as i32 {
            let info: serde_json::Value = serde_json::from_str(&st.info["info"])?;
            running_pids.push(info["pid"].as_i64().unwrap_or(0) as i32);
            running_pids.push(info["monitorPid"].as_i64().unwrap_or(0) as i32);
        }
    }
    for pid in processes_under(&server.root().join("pods")) {
        assert!(
            running_pids.contains(&pid),
            "process {pid} belongs to no running container"
        );
    }
    kubelet_cleanup(&mut rt).await?;
    assert_no_debris(&server).await
}

/// RemoveContainer moves the container's directory into the trash and replies; a crash before the
/// background deletion leaves it there, mounts and all: the next start unmounts and deletes it.
#[tokio::test(flavor = "multi_thread")]
async fn what_a_crash_left_in_the_trash_is_unmounted_and_deleted_at_the_next_start()
-> anyhow::Result<()> {
    let mut server = Server::start().await?;
    server.kill();
    let left = server.root().join("trash").join("c0ffee.1-0");
    let mounted = left.join("rootfs/proc");
    std::fs::create_dir_all(&mounted)?;
    std::fs::write(left.join("rootfs/file"), b"x")?;
    mount_small_tmpfs(&mounted, 1 << 20)?;
    assert_eq!(mounts_under(&left), vec![mounted.clone()]);
    server.restart().await?;
    server.wait_removals().await?;
    assert!(!left.exists(), "deleted");
    assert!(mounts_under(&server.root()).is_empty(), "unmounted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_monitor_ends_its_container_with_a_reason() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "orphan").await?;
    let id = create(
        &mut rt,
        &pod,
        container_config("c", "sleep 1000 & sleep 1000"),
    )
    .await?;
    start(&mut rt, &id).await?;
    let monitor = monitor_pid(&mut rt, &id).await?;
    wait_for(Duration::from_secs(5), "both sleeps", || async {
        (processes_under(&server.root().join("pods")).len() >= 3).then_some(())
    })
    .await?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let s = wait_exited(&mut rt, &id, Duration::from_secs(10)).await?;
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "Error"));
    assert!(s.message.contains("monitor"), "{}", s.message);
    server.wait_no_container_processes().await?;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;
    assert_no_debris(&server).await
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_ends_processes_that_left_the_group_with_setsid_and_double_fork() -> anyhow::Result<()>
{
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "escape").await?;
    let script = "setsid sh -c 'sleep 1000 & exit 0'; setsid sh -c '(setsid sleep 1001 &) ; exit 0'; sleep 1002";
    let id = create(&mut rt, &pod, container_config("c", script)).await?;
    start(&mut rt, &id).await?;
    wait_for(Duration::from_secs(5), "the escaped sleeps", || async {
        let n = processes_under(&server.root().join("pods"))
            .iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| c.starts_with(b"sleep"))
                    .unwrap_or(false)
            })
            .count();
        (n >= 3).then_some(())
    })
    .await?;
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 1,
    })
    .await?;
    server.wait_no_container_processes().await?;

    // The same escapees, but the monitor dies first: the server still finds them by their root.
    let id = create(&mut rt, &pod, container_config("c2", script)).await?;
    start(&mut rt, &id).await?;
    let monitor = monitor_pid(&mut rt, &id).await?;
    wait_for(Duration::from_secs(5), "the escaped sleeps", || async {
        (processes_under(&server.root().join("pods")).len() >= 4).then_some(())
    })
    .await?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    wait_exited(&mut rt, &id, Duration::from_secs(10)).await?;
    server.wait_no_container_processes().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_resource_exhausted_and_nothing_is_half_made() -> anyhow::Result<()> {
    let server = Server::start_on_tmpfs(24 << 20).await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "full").await?;
    let pod_dir = server.root().join("pods").join(&pod).join("containers");
    // A container that ends while the disk is full: its exit code must survive that.
    let survivor = create(
        &mut rt,
        &pod,
        container_config("survivor", "sleep 2; exit 5"),
    )
    .await?;
    start(&mut rt, &survivor).await?;
    let survivor_dir = pod_dir.join(&survivor);
    // Fill the disk.
    let filler = server.root().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler)?;
        let chunk = vec![0u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&chunk[..4096]).is_ok() {}
    }
    let mounts_before = mounts_under(&server.root());
    let e = create(&mut rt, &pod, container_config("c", "true"))
        .await
        .expect_err("no space");
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert_eq!(
        std::fs::read_dir(&pod_dir)?.count(),
        1,
        "nothing half-created"
    );
    assert_eq!(mounts_under(&server.root()), mounts_before);
    assert_eq!(
        std::fs::read_dir(server.root().join("images/leases"))?.count(),
        1,
        "only the survivor's"
    );
    let s = wait_exited(&mut rt, &survivor, Duration::from_secs(10)).await?;
    assert_eq!(
        (s.exit_code, s.reason.as_str()),
        (5, "Error"),
        "the exit record on a full disk"
    );
    assert!(survivor_dir.join("exit.json").exists());
    // The server keeps serving; with space again, the same create works.
    rt.version(cri::VersionRequest::default()).await?;
    std::fs::remove_file(&filler)?;
    let id = create(&mut rt, &pod, container_config("c", "echo fine")).await?;
    start(&mut rt, &id).await?;
    assert_eq!(
        wait_exited(&mut rt, &id, Duration::from_secs(10))
            .await?
            .exit_code,
        0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_log_disk_loses_output_but_not_the_container() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let logs = server.dir.path().join("logs/tiny");
    std::fs::create_dir_all(&logs)?;
    mount_small_tmpfs(&logs, 64 * 1024)?;
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("tiny", &logs)),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let script =
        "i=0; while [ $i -lt 3000 ]; do echo some output line $i; i=$((i+1)); done; exit 7";
    let id = create(&mut rt, &pod, container_config("c", script)).await?;
    start(&mut rt, &id).await?;
    let s = wait_exited(&mut rt, &id, Duration::from_secs(30)).await?;
    assert_eq!(
        (s.exit_code, s.reason.as_str()),
        (7, "Error"),
        "the real exit code despite a full log disk"
    );
    assert!(std::fs::metadata(&s.log_path)?.len() > 0);
    rt.version(cri::VersionRequest::default()).await?;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;
    platform::unmount(&logs)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_pods_leave_no_growth_in_fds_or_memory() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let pid = server.child.as_ref().map(|c| c.id()).expect("server pid");
    let (mut rt, _) = server.client().await?;
    let cycle = |i: usize| {
        let mut rt = rt.clone();
        let server = &server;
        async move {
            let pod = run_pod(&mut rt, server, &format!("p{i}")).await?;
            let id = create(&mut rt, &pod, container_config("c", "exit 0")).await?;
            start(&mut rt, &id).await?;
            rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod,
            })
            .await?;
            anyhow::Ok(())
        }
    };
    // Warm up: thread pools, allocator arenas, the store's pages.
    for i in 0..100 {
        cycle(i).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fds, rss) = (fd_count(pid), status_kib(pid, "VmRSS"));
    for i in 100..1100 {
        cycle(i).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (fds_after, rss_after) = (fd_count(pid), status_kib(pid, "VmRSS"));
    assert!(fds_after <= fds + 2, "fds grew from {fds} to {fds_after}");
    assert!(
        rss_after <= rss + 4096,
        "RSS grew from {rss} KiB to {rss_after} KiB"
    );
    assert!(
        rt.list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await?
            .into_inner()
            .items
            .is_empty()
    );
    assert_no_debris(&server).await
}

/// RuntimeReady, NetworkReady and the extra RootNosuid condition from Status, by type.
async fn conditions(rt: &mut Rt) -> anyhow::Result<Vec<cri::RuntimeCondition>> {
    Ok(rt
        .status(cri::StatusRequest { verbose: false })
        .await?
        .into_inner()
        .status
        .unwrap_or_default()
        .conditions)
}

fn condition<'a>(all: &'a [cri::RuntimeCondition], kind: &str) -> &'a cri::RuntimeCondition {
    all.iter()
        .find(|c| c.r#type == kind)
        .unwrap_or_else(|| panic!("no {kind} in {all:?}"))
}

/// Issue #26, 16: RuntimeReady and NetworkReady were always true, whatever the node's state, and
/// UpdateRuntimeConfig's pod CIDR was dropped. A full root and a monitor that cannot run make
/// RuntimeReady false (kubelet then marks the node NotReady instead of failing every start);
/// the pod CIDR is kept and shown.
#[tokio::test(flavor = "multi_thread")]
async fn status_reports_a_full_root_and_a_monitor_that_cannot_run() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut server = Server::start_on_tmpfs(24 << 20).await?;
    let (mut rt, _) = server.client().await?;
    let all = conditions(&mut rt).await?;
    assert!(condition(&all, "RuntimeReady").status, "{all:?}");
    assert!(condition(&all, "NetworkReady").status, "{all:?}");
    // A tmpfs mounted without nosuid.
    assert_eq!(
        condition(&all, "RootNosuid").reason,
        "RootNotNosuid",
        "{all:?}"
    );

    // The root's file system fills up, then is freed.
    let filler = server.root().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler)?;
        let chunk = vec![0u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&chunk[..4096]).is_ok() {}
    }
    let all = conditions(&mut rt).await?;
    let ready = condition(&all, "RuntimeReady");
    assert!(!ready.status, "{all:?}");
    assert_eq!(ready.reason, "RootFilesystemFull");
    assert!(
        ready.message.contains(&server.root().display().to_string()),
        "{}",
        ready.message
    );
    std::fs::remove_file(&filler)?;
    assert!(condition(&conditions(&mut rt).await?, "RuntimeReady").status);

    // The pod CIDR kubelet sends is kept (verbose Status); a malformed one is refused.
    let update = |cidr: &str| cri::UpdateRuntimeConfigRequest {
        runtime_config: Some(cri::RuntimeConfig {
            network_config: Some(cri::NetworkConfig {
                pod_cidr: cidr.into(),
            }),
        }),
    };
    rt.update_runtime_config(update("10.244.1.0/24")).await?;
    let verbose = rt
        .status(cri::StatusRequest { verbose: true })
        .await?
        .into_inner();
    let config: serde_json::Value = serde_json::from_str(&verbose.info["config"])?;
    assert_eq!(config["podCIDR"], "10.244.1.0/24", "{config}");
    let e = rt
        .update_runtime_config(update("10.244.1.0/99"))
        .await
        .expect_err("not a CIDR");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // The monitor binary beside the server cannot be run: RuntimeReady false, and back.
    let dir = server.dir.path().join("bin");
    std::fs::create_dir(&dir)?;
    for name in ["darwin-cri", "darwin-cri-monitor"] {
        std::fs::copy(server.binary.with_file_name(name), dir.join(name))?;
    }
    server.kill();
    server.binary = dir.join("darwin-cri");
    server.restart().await?;
    let (mut rt, _) = server.client().await?;
    assert!(condition(&conditions(&mut rt).await?, "RuntimeReady").status);
    let monitor = dir.join("darwin-cri-monitor");
    std::fs::set_permissions(&monitor, std::fs::Permissions::from_mode(0o644))?;
    let all = conditions(&mut rt).await?;
    let ready = condition(&all, "RuntimeReady");
    assert!(!ready.status, "{all:?}");
    assert_eq!(ready.reason, "MonitorCannotStart");
    assert!(
        ready.message.contains("darwin-cri-monitor"),
        "{}",
        ready.message
    );
    std::fs::set_permissions(&monitor, std::fs::Permissions::from_mode(0o755))?;
    assert!(condition(&conditions(&mut rt).await?, "RuntimeReady").status);
    Ok(())
}
