//! Limits benchmark: how fast a memory limit is enforced, and what watching it costs.
//!
//! Run: `cargo build --release --bin darwin-cri --bin darwin-cri-monitor && cargo bench -p darwin-cri-tests --bench limits`
//! (as root). `BENCH_ITERATIONS` (default 30) kill measurements, `BENCH_WATCH_SECONDS`
//! (default 10) of watching 20 limited containers.

use std::time::Duration;

use darwin_cri_tests::v1 as cri;
use darwin_cri_tests::*;

fn limited(name: &str, script: &str, limit: &str) -> cri::ContainerConfig {
    let mut c = container_config(name, script);
    c.annotations = [("darwin-cri.io/memory-limit".to_string(), limit.to_string())]
        .into_iter()
        .collect();
    c
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let iterations = env_or("BENCH_ITERATIONS", 30usize);
    let watch = env_or("BENCH_WATCH_SECONDS", 10u64);
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "limits").await?;

    // Time from start to the kill of a tree that passes its limit at once: dd allocates 64 MiB
    // against 32 MiB as its first act and keeps it. The figure includes dd's own allocation
    // time (one block without a limit, below) and the wait for the monitor's next check (250 ms
    // interval by default).
    let mut kill = Vec::new();
    let mut baseline = Vec::new();
    for i in 0..iterations {
        for (limit, out) in [("32Mi", &mut kill), ("1Gi", &mut baseline)] {
            // Under the limit dd copies one block and ends: the time to allocate and fill it.
            let count = if limit == "32Mi" { 1_000_000 } else { 1 };
            let script = format!("exec dd if=/dev/zero of=/dev/null bs=64M count={count}");
            let script = script.as_str();
            let id = create(
                &mut rt,
                &pod,
                limited(&format!("k{i}-{limit}"), script, limit),
            )
            .await?;
            start(&mut rt, &id).await?;
            let s = wait_exited(&mut rt, &id, Duration::from_secs(30)).await?;
            anyhow::ensure!(
                (limit == "32Mi") == (s.reason == "OOMKilled"),
                "unexpected end: {} {}",
                s.reason,
                s.message
            );
            out.push(Duration::from_nanos(
                (s.finished_at - s.started_at).max(0) as u64
            ));
            rt.remove_container(cri::RemoveContainerRequest { container_id: id })
                .await?;
        }
    }
    kill.sort();
    baseline.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "memory limit kill: start to exit p50 {:.1} ms, p90 {:.1} ms (the same dd under a 1 GiB limit: p50 {:.1} ms), n={}",
        ms(kill[kill.len() / 2]),
        ms(kill[kill.len() * 9 / 10]),
        ms(baseline[baseline.len() / 2]),
        kill.len()
    );

    // Monitor CPU while watching: 20 limited containers idling.
    let mut monitors = Vec::new();
    for i in 0..20 {
        let id = create(
            &mut rt,
            &pod,
            limited(&format!("w{i}"), "exec sleep 1000", "1Gi"),
        )
        .await?;
        start(&mut rt, &id).await?;
        let st = rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id,
                verbose: true,
            })
            .await?
            .into_inner();
        let info: serde_json::Value = serde_json::from_str(&st.info["info"])?;
        monitors.push(info["monitorPid"].as_i64().unwrap_or(0) as i32);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before: u64 = monitors.iter().map(|p| cpu_ticks(*p)).sum();
    tokio::time::sleep(Duration::from_secs(watch)).await;
    let after: u64 = monitors.iter().map(|p| cpu_ticks(*p)).sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let per_container = (after - before) as f64 / hz / watch as f64 / monitors.len() as f64 * 100.0;
    println!(
        "monitor CPU while watching a memory limit (250 ms interval): {per_container:.4}% of a core per container \
         ({} ticks over {watch} s for {} monitors; tick = {:.0} ms)",
        after - before,
        monitors.len(),
        1000.0 / hz
    );
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;
    Ok(())
}
