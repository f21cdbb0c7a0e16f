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

    // The server is the pod's own (port-forward reaches only ports a process of the pod listens
    // on: pods share the host's network, and the host's other ports are not the pod's to give).
    let port = free_port()?;
    let total = mb << 20;
    let script = format!(
        "mkdir -p /www && dd if=/dev/zero of=/www/big bs=1048576 count={mb} 2>/dev/null && exec httpd -f -p 127.0.0.1:{port} -h /www"
    );
    let web = create(&mut rt, &pod, container_config("web", &script)).await?;
    start(&mut rt, &web).await?;
    wait_for(Duration::from_secs(60), "httpd to listen", || async move {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .await?;
    let request = b"GET /big HTTP/1.0\r\nHost: pod\r\n\r\n";
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
        c.send_all(data, request, true);
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
        // The file and the HTTP response's header.
        anyhow::ensure!(got >= total, "received {got} of {total} bytes");
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
