//! Limits without cgroups, UpdateContainerResources, ReopenContainerLog and GetContainerEvents.

use std::time::Duration;

use darwin_cri_tests::v1 as cri;
use darwin_cri_tests::*;
use tonic::Code;

fn verbose_pid(status: &cri::ContainerStatusResponse) -> i32 {
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).expect("verbose info");
    info["pid"].as_i64().expect("pid") as i32
}

async fn verbose(rt: &mut Rt, id: &str) -> anyhow::Result<cri::ContainerStatusResponse> {
    Ok(rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await?
        .into_inner())
}

/// Field 19 of /proc/PID/stat: the nice value.
fn nice_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or_default();
    rest.split_whitespace()
        .nth(16)
        .and_then(|n| n.parse().ok())
        .unwrap_or(-100)
}

fn annotated(name: &str, script: &str, annotations: &[(&str, &str)]) -> cri::ContainerConfig {
    let mut c = container_config(name, script);
    c.annotations = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_limit_kills_the_tree_as_oomkilled() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "mem").await?;
    // A child allocates 64 MiB against a 32 MiB limit; the parent itself is small.
    let hog = annotated(
        "hog",
        "dd if=/dev/zero of=/dev/null bs=64M count=100000 & wait",
        &[("darwin-cri.io/memory-limit", "32Mi")],
    );
    let id = create(&mut rt, &pod, hog).await?;
    start(&mut rt, &id).await?;
    let s = wait_exited(&mut rt, &id, Duration::from_secs(20)).await?;
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "OOMKilled"));
    assert!(s.message.contains("33554432"), "{}", s.message);
    let limit = s
        .resources
        .and_then(|r| r.linux)
        .map(|l| l.memory_limit_in_bytes);
    assert_eq!(limit, Some(32 << 20));

    // Under the limit, the same work runs to completion.
    let fine = annotated(
        "fine",
        "dd if=/dev/zero of=/dev/null bs=1M count=10 2>/dev/null; echo done",
        &[("darwin-cri.io/memory-limit", "256Mi")],
    );
    let id = create(&mut rt, &pod, fine).await?;
    start(&mut rt, &id).await?;
    let s = wait_exited(&mut rt, &id, Duration::from_secs(20)).await?;
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_and_rlimits_and_live_updates() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "cpu").await?;
    let config = annotated(
        "c",
        "ulimit -n; exec sleep 1000",
        &[
            ("darwin-cri.io/cpu-limit", "250m"),
            ("darwin-cri.io/nofile-limit", "64"),
        ],
    );
    let id = create(&mut rt, &pod, config).await?;
    start(&mut rt, &id).await?;
    let pid = verbose_pid(&verbose(&mut rt, &id).await?);
    wait_for(Duration::from_secs(5), "nice 8", || async {
        (nice_of(pid) == 8).then_some(())
    })
    .await?;
    let r = exec(&mut rt, &id, &["sh", "-c", "ulimit -n"], 10).await?;
    assert_eq!(
        String::from_utf8_lossy(&r.stdout).trim(),
        "64",
        "exec'd processes get the rlimits too"
    );

    // BestEffort shares: the lowest priority, applied to the running process.
    rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(cri::LinuxContainerResources {
            cpu_shares: 2,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await?;
    assert_eq!(nice_of(pid), 19);
    // A new memory limit below what the tree uses ends it.
    rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 4096,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await?;
    let s = wait_exited(&mut rt, &id, Duration::from_secs(10)).await?;
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "OOMKilled"));
    let log = std::fs::read_to_string(&s.log_path)?;
    assert!(log.contains(" stdout F 64\n"), "{log}");

    // Nonsense limits.
    let e = rt
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: -5,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("negative");
    assert_eq!(
        e.code(),
        Code::FailedPrecondition,
        "an exited container takes no update"
    );
    let live = create(&mut rt, &pod, container_config("live", "sleep 1000")).await?;
    let e = rt
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: live,
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: -5,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("negative");
    assert_eq!(e.code(), Code::InvalidArgument);
    for (key, value) in [
        ("darwin-cri.io/memory-limit", "0"),
        ("darwin-cri.io/memory-limit", "lots"),
        ("darwin-cri.io/cpu-limit", "-1"),
        ("darwin-cri.io/pids-limit", "1.5x"),
    ] {
        let e = create(&mut rt, &pod, annotated("bad", "true", &[(key, value)]))
            .await
            .expect_err("bad annotation");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(key), "{}", e.message());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn reopen_log_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "rotate").await?;
    let script = "i=0; while [ $i -lt 400 ]; do echo line $i; i=$((i+1)); sleep 0.005; done";
    let id = create(&mut rt, &pod, container_config("c", script)).await?;
    let e = rt
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .expect_err("not running");
    assert_eq!(e.code(), Code::FailedPrecondition);
    start(&mut rt, &id).await?;
    let log = server.dir.path().join("logs/rotate/c/0.log");
    let mut rotated = Vec::new();
    for n in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let old = log.with_extension(format!("log.{n}"));
        std::fs::rename(&log, &old)?;
        rt.reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await?;
        assert!(log.exists(), "a new file at the original path");
        rotated.push(old);
    }
    let s = wait_exited(&mut rt, &id, Duration::from_secs(30)).await?;
    assert_eq!(s.exit_code, 0);
    rotated.push(log);
    let mut numbers = Vec::new();
    for f in &rotated {
        for line in std::fs::read_to_string(f)?.lines() {
            let content = line.splitn(4, ' ').nth(3).unwrap_or_default();
            numbers.push(content.trim_start_matches("line ").parse::<u32>()?);
        }
    }
    assert_eq!(numbers, (0..400).collect::<Vec<_>>());
    assert!(
        rotated
            .iter()
            .all(|f| std::fs::metadata(f).map(|m| m.len() > 0).unwrap_or(false))
    );
    Ok(())
}

async fn next_event(
    stream: &mut tonic::Streaming<cri::ContainerEventResponse>,
) -> anyhow::Result<cri::ContainerEventResponse> {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await??
        .ok_or_else(|| anyhow::anyhow!("event stream ended"))
}

#[tokio::test(flavor = "multi_thread")]
async fn container_events_reach_every_subscriber_in_order() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let mut first = rt
        .get_container_events(cri::GetEventsRequest {})
        .await?
        .into_inner();
    let mut second = rt
        .get_container_events(cri::GetEventsRequest {})
        .await?
        .into_inner();
    let pod = run_pod(&mut rt, &server, "events").await?;
    let id = create(&mut rt, &pod, container_config("c", "exit 2")).await?;
    start(&mut rt, &id).await?;
    wait_exited(&mut rt, &id, Duration::from_secs(10)).await?;
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await?;
    use cri::ContainerEventType as T;
    for stream in [&mut first, &mut second] {
        let mut kinds = Vec::new();
        for _ in 0..4 {
            let e = next_event(stream).await?;
            assert_eq!(e.container_id, id);
            assert_eq!(
                e.pod_sandbox_status.as_ref().map(|p| p.id.as_str()),
                Some(pod.as_str())
            );
            if e.container_event_type == T::ContainerStoppedEvent as i32 {
                let c = e
                    .containers_statuses
                    .iter()
                    .find(|c| c.id == id)
                    .expect("own status");
                assert_eq!(c.exit_code, 2);
            }
            if e.container_event_type == T::ContainerDeletedEvent as i32 {
                assert!(e.containers_statuses.iter().all(|c| c.id != id));
            }
            kinds.push(e.container_event_type);
        }
        assert_eq!(
            kinds,
            vec![
                T::ContainerCreatedEvent as i32,
                T::ContainerStartedEvent as i32,
                T::ContainerStoppedEvent as i32,
                T::ContainerDeletedEvent as i32
            ]
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_that_falls_behind_is_dropped_without_slowing_anyone() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("events.toml");
    std::fs::write(&config, "[runtime]\nevent_buffer = 4\n")?;
    let server = Server::start_with(vec!["--config".into(), config.display().to_string()]).await?;
    let (mut rt, _) = server.client().await?;
    let (mut slow_client, _) = connect_with_window(&server.socket(), Some(1024)).await?;
    let mut slow = slow_client
        .get_container_events(cri::GetEventsRequest {})
        .await?
        .into_inner();
    let mut live = rt
        .get_container_events(cri::GetEventsRequest {})
        .await?
        .into_inner();
    let reader = tokio::spawn(async move {
        let mut n = 0usize;
        while let Ok(Some(_)) = live.message().await {
            n += 1;
            if n == 400 {
                break;
            }
        }
        n
    });
    let pod = run_pod(&mut rt, &server, "burst").await?;
    let started = std::time::Instant::now();
    for i in 0..200 {
        let id = create(&mut rt, &pod, container_config(&format!("c{i}"), "true")).await?;
        rt.remove_container(cri::RemoveContainerRequest { container_id: id })
            .await?;
    }
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(30), reader).await??,
        400,
        "the reading subscriber got every event"
    );
    // The slow one gets what was buffered, then its stream ends.
    let mut got = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(10), slow.message()).await? {
        got += 1;
    }
    assert!(
        got < 400,
        "the slow subscriber was cut off after {got} events"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnected_subscribers_are_cleaned_up() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let subscribers = |rt: Rt| async move {
        let mut rt = rt;
        let st = rt
            .status(cri::StatusRequest { verbose: true })
            .await
            .ok()?
            .into_inner();
        let config: serde_json::Value = serde_json::from_str(st.info.get("config")?).ok()?;
        config["eventSubscribers"].as_u64()
    };
    let kept = rt
        .get_container_events(cri::GetEventsRequest {})
        .await?
        .into_inner();
    {
        let (mut other, _) = server.client().await?;
        let _gone = other
            .get_container_events(cri::GetEventsRequest {})
            .await?
            .into_inner();
        assert_eq!(subscribers(rt.clone()).await, Some(2));
    }
    // The next event finds the closed subscription and forgets it.
    let pod = run_pod(&mut rt, &server, "gone").await?;
    create(&mut rt, &pod, container_config("c", "true")).await?;
    let rt2 = rt.clone();
    wait_for(Duration::from_secs(5), "one subscriber", || {
        let rt = rt2.clone();
        async move { (subscribers(rt).await == Some(1)).then_some(()) }
    })
    .await?;
    drop(kept);
    Ok(())
}

/// Issue #26, 8: the root monitor created the log directory and opened the log following
/// symlinks, again at reopen: a pod that can write under kubelet's log root swapped its log
/// directory (or a container's directory, or the file) for a link and had root append the
/// container's output to a file elsewhere. And the log was world-readable (issue #25).
#[tokio::test(flavor = "multi_thread")]
async fn logs_are_never_written_through_links() -> anyhow::Result<()> {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let outside = tempfile::Builder::new()
        .prefix("darwin-cri-outside")
        .tempdir()?;
    std::fs::write(outside.path().join("0.log"), "original")?;
    let untouched = || -> anyhow::Result<()> {
        let names: Vec<_> = std::fs::read_dir(outside.path())?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        assert_eq!(names, vec![std::ffi::OsString::from("0.log")]);
        assert_eq!(
            std::fs::read_to_string(outside.path().join("0.log"))?,
            "original"
        );
        Ok(())
    };
    let run = |rt: &mut Rt, pod: String, name: &'static str, script: &'static str| {
        let mut rt = rt.clone();
        async move {
            let id = create(&mut rt, &pod, container_config(name, script)).await?;
            start(&mut rt, &id).await?;
            anyhow::Ok(id)
        }
    };

    // The pod's log directory is a link: nothing is written through it (the container still runs).
    let pod = run_pod(&mut rt, &server, "linked").await?;
    let logs = server.dir.path().join("logs/linked");
    std::fs::remove_dir(&logs)?;
    symlink(outside.path(), &logs)?;
    let id = run(&mut rt, pod.clone(), "c", "echo through-the-link").await?;
    assert_eq!(
        wait_exited(&mut rt, &id, Duration::from_secs(20))
            .await?
            .exit_code,
        0
    );
    untouched()?;

    // A container's directory, or the file, is a link.
    let pod = run_pod(&mut rt, &server, "inner").await?;
    let logs = server.dir.path().join("logs/inner");
    symlink(outside.path(), logs.join("d"))?;
    std::fs::create_dir_all(logs.join("f"))?;
    symlink(outside.path().join("0.log"), logs.join("f/0.log"))?;
    for name in ["d", "f"] {
        let id = run(&mut rt, pod.clone(), name, "echo through-the-link").await?;
        assert_eq!(
            wait_exited(&mut rt, &id, Duration::from_secs(20))
                .await?
                .exit_code,
            0
        );
    }
    untouched()?;

    // A good log: not world-readable; then the directory is swapped for a link and the log
    // reopened: refused, nothing written there.
    let id = run(
        &mut rt,
        pod.clone(),
        "r",
        "while true; do echo tick; sleep 0.1; done",
    )
    .await?;
    let log = logs.join("r/0.log");
    wait_for(Duration::from_secs(10), "the first line", || {
        let log = log.clone();
        async move {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|s| s.contains("tick"))
        }
    })
    .await?;
    let mode = std::fs::metadata(&log)?.permissions().mode();
    assert_eq!(mode & 0o777, 0o640, "log file mode {mode:o}");
    std::fs::rename(logs.join("r"), logs.join("r.old"))?;
    symlink(outside.path(), logs.join("r"))?;
    let e = rt
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await;
    assert!(e.is_err(), "reopen through a link: {e:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    untouched()?;
    Ok(())
}
