//! The macOS layer's costs, as they run on Linux: a container start with volumes by bind mounts
//! and by bindfs (FUSE, as on macOS), reading through each, and a round trip through the
//! mDNSResponder relay against the same daemon reached directly.
//!
//! Run: `cargo build --release --bin darwin-cri --bin darwin-cri-monitor && cargo bench -p darwin-cri-tests --bench
//! macos_layer` (as root, with bindfs installed). `BENCH_ITERATIONS` (default 30).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use darwin_cri_tests::v1 as cri;
use darwin_cri_tests::*;

fn volumes(server: &Server, n: usize) -> anyhow::Result<Vec<cri::Mount>> {
    (0..n)
        .map(|i| {
            let dir = server.dir.path().join(format!("vol{i}"));
            std::fs::create_dir_all(&dir)?;
            Ok(cri::Mount {
                container_path: format!("/vol{i}"),
                host_path: dir.display().to_string(),
                readonly: i > 0,
                ..Default::default()
            })
        })
        .collect()
}

/// CreateContainer+StartContainer with 3 volumes, and MB/s reading a 256 MiB file through one.
async fn mounts(mechanism: &str, iterations: usize) -> anyhow::Result<()> {
    let server =
        Server::start_with_config(&format!("[mounts]\nmechanism = \"{mechanism}\"\n")).await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "bench").await?;
    let mounts = volumes(&server, 3)?;
    let mut starts = Vec::new();
    for i in 0..iterations {
        let mut config = container_config(&format!("c{i}"), "exec sleep 1000");
        config.mounts = mounts.clone();
        let t0 = Instant::now();
        let id = create(&mut rt, &pod, config).await?;
        start(&mut rt, &id).await?;
        starts.push(t0.elapsed());
        rt.remove_container(cri::RemoveContainerRequest { container_id: id })
            .await?;
    }
    print_latencies(&format!("create+start, 3 {mechanism} volumes"), starts);

    let big = server.dir.path().join("vol0/big");
    std::fs::write(&big, vec![7u8; 256 << 20])?;
    let mut config = container_config("reader", "exec sleep 1000");
    config.mounts = mounts;
    let id = create(&mut rt, &pod, config).await?;
    start(&mut rt, &id).await?;
    let mut rates = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        let r = exec(
            &mut rt,
            &id,
            &["dd", "if=/vol0/big", "of=/dev/null", "bs=1M"],
            60,
        )
        .await?;
        anyhow::ensure!(
            r.exit_code == 0,
            "dd: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        rates.push(256.0 * 1.048576 / t0.elapsed().as_secs_f64());
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    println!(
        "read 256 MiB through a {mechanism} volume: median {:.0} MB/s (runs {:.0}, {:.0}, {:.0})",
        rates[1], rates[0], rates[1], rates[2]
    );
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;
    Ok(())
}

/// One request and its answer on a fresh connection, as a dns_sd client makes them.
fn round_trip(
    connect: &dyn Fn() -> std::io::Result<std::os::unix::net::UnixStream>,
) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let mut c = connect()?;
    c.write_all(b"query")?;
    c.shutdown(std::net::Shutdown::Write)?;
    let mut answer = Vec::new();
    c.read_to_end(&mut answer)?;
    anyhow::ensure!(answer == b"answer", "{answer:?}");
    Ok(t0.elapsed())
}

async fn dns_relay(iterations: usize) -> anyhow::Result<()> {
    let daemon_dir = tempfile::tempdir()?;
    let upstream = daemon_dir.path().join("mDNSResponder");
    let listener = std::os::unix::net::UnixListener::bind(&upstream)?;
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut req = Vec::new();
            let _ = conn.read_to_end(&mut req);
            let _ = conn.write_all(b"answer");
        }
    });
    let (_server, mut rt, pod, _, var_run) = relayed_container(&upstream).await?;
    let link = std::env::temp_dir().join(format!("mdns-bench-{}", std::process::id()));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&var_run, &link)?;
    let relayed = link.join("mDNSResponder");
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    for _ in 0..iterations * 10 {
        direct.push(round_trip(&|| {
            std::os::unix::net::UnixStream::connect(&upstream)
        })?);
        through.push(round_trip(&|| {
            std::os::unix::net::UnixStream::connect(&relayed)
        })?);
    }
    std::fs::remove_file(&link)?;
    print_latencies("mDNSResponder round trip, direct", direct);
    print_latencies("mDNSResponder round trip, relayed", through);
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let iterations = env_or("BENCH_ITERATIONS", 30usize);
    mounts("bind", iterations).await?;
    mounts("bindfs", iterations).await?;
    dns_relay(iterations).await?;
    Ok(())
}
