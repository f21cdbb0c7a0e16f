//! Monitors started ahead (runtime::monitor::Waiting): StartContainer hands a waiting monitor
//! its container and another is started; a server that stops takes its waiting monitors with
//! it; with none kept, each start starts its own.

use std::time::Duration;

use darwin_cri_tests::v1::RemovePodSandboxRequest;
use darwin_cri_tests::*;

/// The server's children that wait for a container (`darwin-cri-monitor --wait`, still in the
/// server's session), alive.
fn waiting(server_pid: u32) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    let stat =
                        std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                    // "pid (comm) state ppid ...": comm may hold spaces, the rest follows ')'.
                    let rest: Vec<&str> = stat
                        .rsplit_once(')')
                        .map(|(_, r)| r.split_whitespace().collect())
                        .unwrap_or_default();
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    // Handed a container, a monitor leaves the server's session (its own).
                    rest.first().is_some_and(|s| *s != "Z")
                        && rest.get(1) == Some(&server_pid.to_string().as_str())
                        && rest.get(3) != Some(&pid.to_string().as_str())
                        && cmdline.split(|b| *b == 0).any(|a| a == b"--wait")
                })
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

async fn wait_waiting(server_pid: u32, n: usize) -> anyhow::Result<Vec<i32>> {
    wait_for(
        Duration::from_secs(10),
        &format!("{n} waiting monitors"),
        || async { (waiting(server_pid).len() == n).then(|| waiting(server_pid)) },
    )
    .await
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

#[tokio::test]
async fn a_start_takes_a_waiting_monitor_and_another_is_started() -> anyhow::Result<()> {
    let mut server = Server::start().await?;
    let server_pid = server.child.as_ref().map(|c| c.id()).unwrap_or(0);
    let before = wait_waiting(server_pid, 2).await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "ahead").await?;
    let id = create(
        &mut rt,
        &pod,
        container_config("c", "echo to-the-log; sleep 1000"),
    )
    .await?;
    start(&mut rt, &id).await?;
    let monitor = monitor_pid(&mut rt, &id).await?;
    assert!(before.contains(&monitor), "{monitor} not one of {before:?}");
    // It left the server's session and the waiting list; another waits in its place.
    let after = wait_waiting(server_pid, 2).await?;
    assert!(!after.contains(&monitor));
    let out = exec(&mut rt, &id, &["echo", "exec-ok"], 10).await?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "exec-ok");
    let log = server.dir.path().join("logs/ahead/c/0.log");
    wait_for(
        Duration::from_secs(5),
        "the container's output in its log",
        || async {
            std::fs::read_to_string(&log)
                .ok()?
                .contains("to-the-log")
                .then_some(())
        },
    )
    .await?;
    // A server that dies takes the waiting monitors with it (their stdin ends), not the
    // container's.
    server.kill();
    for pid in &after {
        wait_for(Duration::from_secs(5), "a waiting monitor gone", || async {
            (!alive(*pid)).then_some(())
        })
        .await?;
    }
    assert!(
        alive(monitor),
        "the container's monitor outlives the server"
    );
    server.restart().await?;
    let (mut rt, _) = server.client().await?;
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn with_none_kept_each_start_starts_its_own_monitor() -> anyhow::Result<()> {
    let server = Server::start_with_config("[runtime]\nwaiting_monitors = 0\n").await?;
    let server_pid = server.child.as_ref().map(|c| c.id()).unwrap_or(0);
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "own").await?;
    let id = create(&mut rt, &pod, container_config("c", "exit 7")).await?;
    start(&mut rt, &id).await?;
    let s = wait_exited(&mut rt, &id, Duration::from_secs(10)).await?;
    assert_eq!(s.exit_code, 7);
    assert!(waiting(server_pid).is_empty());
    Ok(())
}
