//! The spine's benchmark: pod and container lifecycle latencies and memory, against the real
//! `darwin-cri` binary (release build) with an imported busybox image.
//!
//! Run: `cargo build --release --bin darwin-cri --bin darwin-cri-monitor && cargo bench -p darwin-cri-tests`
//! (as root). `BENCH_ITERATIONS` changes the number of iterations (default 200).

use std::time::{Duration, Instant};

use darwin_cri_tests::v1 as cri;
use darwin_cri_tests::*;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let iterations = env_or("BENCH_ITERATIONS", 200usize);
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let server_pid = server.child.as_ref().map(|c| c.id()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = status_kib_rss(server_pid);

    let sleeper = |name: &str| {
        let mut config = container_config(name, "");
        config.command = vec!["sleep".into(), "1000".into()];
        config
    };
    let (mut pod_start, mut create_start, mut to_running, mut stop_remove, mut exec_times) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Each call on its own, as critest -benchmark and cri-bench report them.
    let (mut creates, mut starts, mut stops, mut removes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Every other pod on the unconfined handler: container start with and without confinement
    // (Landlock, seccomp, capabilities) from one run.
    let (mut confined_start, mut unconfined_start) = (Vec::new(), Vec::new());
    let logs = server.dir.path().join("logs");
    for i in 0..iterations {
        let unconfined = i % 2 == 1;
        let t0 = Instant::now();
        let name = format!("bench-{i}");
        std::fs::create_dir_all(logs.join(&name))?;
        let pod = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(pod_config(&name, &logs.join(&name))),
                runtime_handler: if unconfined {
                    "darwin-unconfined".into()
                } else {
                    String::new()
                },
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        let t1 = Instant::now();
        let id = create(&mut rt, &pod, sleeper("c")).await?;
        let created = Instant::now();
        start(&mut rt, &id).await?;
        let t2 = Instant::now();
        let out = exec(&mut rt, &id, &["true"], 10).await?;
        anyhow::ensure!(out.exit_code == 0, "exec failed");
        let t3 = Instant::now();
        rt.stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 10,
        })
        .await?;
        let stopped = Instant::now();
        rt.remove_container(cri::RemoveContainerRequest { container_id: id })
            .await?;
        let removed = Instant::now();
        creates.push(created - t1);
        starts.push(t2 - created);
        stops.push(stopped - t3);
        removes.push(removed - stopped);
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await?;
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await?;
        pod_start.push(t1 - t0);
        create_start.push(t2 - t1);
        if unconfined {
            unconfined_start.push(t2 - t1);
        } else {
            confined_start.push(t2 - t1);
        }
        to_running.push(t2 - t0);
        exec_times.push(t3 - t2);
        stop_remove.push(t3.elapsed());
    }

    // Memory: 20 running containers, each with its monitor.
    let pod = run_pod(&mut rt, &server, "mem").await?;
    let mut ids = Vec::new();
    for i in 0..20 {
        let id = create(&mut rt, &pod, sleeper(&format!("m{i}"))).await?;
        start(&mut rt, &id).await?;
        ids.push(id);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut monitor_rss = Vec::new();
    for id in &ids {
        let pid = monitor_pid(&mut rt, id).await? as u32;
        monitor_rss.push((
            status_kib_rss(pid),
            status_kib(pid, "RssAnon"),
            status_kib(pid, "RssFile"),
            pss_kib(pid),
        ));
    }
    let busy_rss = status_kib_rss(server_pid);
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;

    println!(
        "darwin-cri spine benchmark: {iterations} iterations, busybox image, {} cores",
        num_cpus()
    );
    print_latencies("RunPodSandbox", pod_start);
    print_latencies("CreateContainer", creates);
    print_latencies("StartContainer", starts);
    print_latencies("CreateContainer+StartContainer", create_start);
    print_latencies("  confined (default handler)", confined_start);
    print_latencies("  unconfined (darwin-unconfined)", unconfined_start);
    print_latencies("pod+container to running", to_running);
    print_latencies("ExecSync (true)", exec_times);
    print_latencies("StopContainer (running sleep)", stops);
    print_latencies("RemoveContainer (stopped)", removes);
    print_latencies("Stop+Remove container and pod", stop_remove);
    monitor_rss.sort();
    println!("server RSS idle: {idle_rss} KiB; with 20 running containers: {busy_rss} KiB");
    let (rss, anon, file, pss) = monitor_rss[monitor_rss.len() / 2];
    println!(
        "monitor RSS (median of {}): {rss} KiB, of which anonymous {anon} KiB and file-backed {file} KiB \
         (pages of the darwin-cri binary and libc, shared with the server and the other monitors); \
         PSS {pss} KiB; max RSS {} KiB",
        monitor_rss.len(),
        monitor_rss.last().map(|m| m.0).unwrap_or(0)
    );
    Ok(())
}

fn status_kib_rss(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
