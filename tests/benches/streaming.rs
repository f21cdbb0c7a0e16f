//! Streaming benchmark: exec round trip (the Exec RPC to the exit code, over SPDY as kubectl
//! speaks it) and port-forward throughput through the streaming server, against the release
//! `darwin-cri` binary.
//!
//! Run: `cargo build --release --bin darwin-cri --bin darwin-cri-monitor && cargo bench -p darwin-cri-tests --bench
//! streaming` (as root). `BENCH_ITERATIONS` (default 200) and `BENCH_MB` (default 256).

use std::time::{Duration, Instant};

use darwin_cri_tests::streaming::frame::{FLAG_FIN, Frame};
use darwin_cri_tests::streaming::{SpdyClient, spdy_session};
use darwin_cri_tests::v1 as cri;
use darwin_cri_tests::*;
use tokio::io::AsyncWriteExt;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (iterations, mb) = (env("BENCH_ITERATIONS", 200), env("BENCH_MB", 256));
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "bench").await?;
    let id = create(&mut rt, &pod, container_config("c", "sleep 100000")).await?;
    start(&mut rt, &id).await?;

    let mut samples = Vec::new();
    for _ in 0..iterations {
        let t0 = Instant::now();
        let url = rt
            .exec(cri::ExecRequest {
                container_id: id.clone(),
                cmd: vec!["true".into()],
                stdout: true,
                stderr: true,
                ..Default::default()
            })
            .await?
            .into_inner()
            .url;
        let r = spdy_session(&url, None, true, false).await?;
        anyhow::ensure!(r.exit_code() == Some(0), "exec failed: {}", r.error);
        samples.push(t0.elapsed());
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "exec round trip (Exec RPC to exit code, SPDY)  n={} p50={:.2} ms  p90={:.2} ms  p99={:.2} ms",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.9)),
        ms(percentile(&samples, 0.99)),
    );

    // Pods share the host's network: a server here is reachable on the pod's loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let total = mb << 20;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let chunk = vec![0x5au8; 256 * 1024];
                let mut sent = 0;
                while sent < total {
                    let n = chunk.len().min(total - sent);
                    if conn.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    sent += n;
                }
            });
        }
    });
    let mut rates = Vec::new();
    for _ in 0..3 {
        let url = rt
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod.clone(),
                port: vec![port as i32],
            })
            .await?
            .into_inner()
            .url;
        let mut c = SpdyClient::connect(&url, &["portforward.k8s.io"]).await?;
        let p = port.to_string();
        let t0 = Instant::now();
        let (_, data) = c.open_forward(&p, "0");
        // Counted, not kept: 256 MiB in a growing buffer would measure memcpy.
        let mut got = 0usize;
        while let Some(f) = c.next(Duration::from_secs(60)).await? {
            if let Frame::Data {
                stream_id,
                flags,
                data: d,
            } = f
                && stream_id == data
            {
                got += d.len();
                if flags & FLAG_FIN != 0 {
                    break;
                }
            }
        }
        anyhow::ensure!(got == total, "received {got} of {total} bytes");
        rates.push(total as f64 / t0.elapsed().as_secs_f64() / 1e6);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "port-forward download, {mb} MiB over SPDY     median {:.0} MB/s (runs: {:?})",
        rates[rates.len() / 2],
        rates.iter().map(|r| r.round()).collect::<Vec<_>>()
    );
    Ok(())
}
