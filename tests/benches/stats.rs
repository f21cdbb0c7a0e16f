//! Stats benchmark: ListContainerStats with 100 and 500 running containers, and the server CPU
//! each statistics sample (one walk of the process table) costs.
//!
//! Run: `cargo build --release --bin darwin-cri --bin darwin-cri-monitor && cargo bench -p darwin-cri-tests --bench stats`
//! (as root). The server runs with `stats_interval_ms = 0`, so every call takes a fresh sample:
//! the worst case; with the default 1 s interval, calls within a second share one sample.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use darwin_cri_tests::v1 as cri;
use darwin_cri_tests::*;

fn scrape(port: u16) -> anyhow::Result<usize> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    Ok(body.len())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let calls = env_or("BENCH_ITERATIONS", 30usize);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!("[runtime]\nstats_interval_ms = 0\n[metrics]\naddress = \"127.0.0.1:{port}\"\n"),
    )?;
    let server = Server::start_with(vec!["--config".into(), config.display().to_string()]).await?;
    let pid = server.child.as_ref().map(|c| c.id()).unwrap_or(0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let (mut rt, _) = server.client().await?;
    let mut pods = Vec::new();
    let mut running = 0;
    for target in [100usize, 500] {
        while running < target {
            if running % 50 == 0 {
                pods.push(run_pod(&mut rt, &server, &format!("p{running}")).await?);
            }
            let mut config = container_config(&format!("c{running}"), "");
            config.command = vec!["sleep".into(), "100000".into()];
            let id = create(&mut rt, pods.last().expect("pod"), config).await?;
            start(&mut rt, &id).await?;
            running += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut lat = Vec::new();
        let before = cpu_ticks(pid as i32);
        for _ in 0..calls {
            let t = Instant::now();
            let n = rt
                .list_container_stats(cri::ListContainerStatsRequest::default())
                .await?
                .into_inner()
                .stats
                .len();
            lat.push(t.elapsed());
            anyhow::ensure!(n == target, "{n} stats for {target} containers");
        }
        let sample_ms = (cpu_ticks(pid as i32) - before) as f64 / hz * 1000.0 / calls as f64;
        lat.sort();
        let before = cpu_ticks(pid as i32);
        let mut bytes = 0;
        for _ in 0..calls {
            bytes = scrape(port)?;
        }
        let scrape_ms = (cpu_ticks(pid as i32) - before) as f64 / hz * 1000.0 / calls as f64;
        println!(
            "{target} running containers: ListContainerStats (fresh sample each) p50 {:.2} ms, p90 {:.2} ms; \
             server CPU {sample_ms:.2} ms per sample; /metrics scrape {scrape_ms:.2} ms CPU ({bytes} bytes)",
            lat[lat.len() / 2].as_secs_f64() * 1000.0,
            lat[lat.len() * 9 / 10].as_secs_f64() * 1000.0,
        );
    }
    for pod in pods {
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await?;
    }
    Ok(())
}
