//! The Prometheus endpoint: its text passes promtool, and a real Prometheus server scrapes it.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use darwin_cri_tests::v1 as cri;
use darwin_cri_tests::*;

/// Kills the child on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool_and_prometheus_scrapes_them() -> anyhow::Result<()> {
    let port = free_port()?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("metrics.toml");
    std::fs::write(
        &config,
        format!("[metrics]\naddress = \"127.0.0.1:{port}\"\n"),
    )?;
    let server = Server::start_with(vec!["--config".into(), config.display().to_string()]).await?;
    let (mut rt, _) = server.client().await?;

    // Some traffic: successes, a NotFound, running containers and an OOM kill.
    rt.version(cri::VersionRequest::default()).await?;
    let _ = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: "nope".into(),
            verbose: false,
        })
        .await;
    let pod = run_pod(&mut rt, &server, "metrics").await?;
    let id = create(&mut rt, &pod, container_config("sleeper", "sleep 1000")).await?;
    start(&mut rt, &id).await?;
    let mut hog = container_config("hog", "dd if=/dev/zero of=/dev/null bs=64M count=100000");
    hog.annotations = [("darwin-cri.io/memory-limit".to_string(), "16Mi".to_string())]
        .into_iter()
        .collect();
    let hog = create(&mut rt, &pod, hog).await?;
    start(&mut rt, &hog).await?;
    let s = wait_exited(&mut rt, &hog, Duration::from_secs(20)).await?;
    assert_eq!(s.reason, "OOMKilled");

    // The one door every call passes: a failure is logged once, in the call's span (its RPC and
    // the container it was about), with its gRPC code. An exec into the exited container is
    // refused with FailedPrecondition.
    let refused = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: hog.clone(),
            cmd: vec!["true".into()],
            timeout: 0,
        })
        .await
        .expect_err("exec into an exited container");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    let logged: Vec<String> = server
        .log()
        .lines()
        .filter(|l| l.contains("rpc=ExecSync") && l.contains(" failed"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        logged.len(),
        1,
        "one failure line for the call:\n{}",
        server.log()
    );
    assert!(
        logged[0].contains("WARN")
            && logged[0].contains(&format!("id={hog}"))
            && logged[0].contains("code=FailedPrecondition"),
        "{}",
        logged[0]
    );

    let (_, mut img) = server.client().await?;
    img.pull_image(cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: BUSYBOX.into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await?;
    let _ = img
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: "registry.example/absent:1".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;

    let body = http_get(port, "/metrics")?;
    for wanted in [
        "darwin_cri_grpc_requests_total{rpc=\"Version\",code=\"Ok\"} ",
        "darwin_cri_grpc_requests_total{rpc=\"ContainerStatus\",code=\"NotFound\"} 1",
        "darwin_cri_grpc_request_duration_seconds_bucket{le=",
        "darwin_cri_containers{state=\"running\"} 1",
        "darwin_cri_containers{state=\"exited\"} 1",
        "darwin_cri_pod_sandboxes{state=\"ready\"} 1",
        "darwin_cri_oom_kills_total 1",
        "darwin_cri_monitor_deaths_total 0",
        "darwin_cri_process_resident_memory_bytes ",
        "darwin_cri_process_cpu_seconds_total ",
        "darwin_cri_process_open_fds ",
        "darwin_cri_image_filesystem_avail_bytes ",
        "darwin_cri_image_filesystem_size_bytes ",
        "darwin_cri_process_start_time_seconds ",
        "darwin_cri_build_info{",
        "darwin_cri_image_pulls_total 1",
        "darwin_cri_image_pull_failures_total{reason=\"unreachable\"} 1",
        "darwin_cri_image_pull_bytes_total 0",
        "darwin_cri_image_pull_duration_seconds_count 2",
    ] {
        assert!(body.contains(wanted), "{wanted:?} missing from:\n{body}");
    }

    // promtool's own check of the exposition format and naming conventions.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("promtool (Debian's prometheus package) is needed: {e}"))?;
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())?;
    let out = promtool.wait_with_output()?;
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus scrapes the endpoint, and its query API returns our series.
    let prom_port = free_port()?;
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: darwin-cri\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )?;
    let _prometheus = Child(
        Command::new("prometheus")
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("prometheus (Debian's prometheus package) is needed: {e}")
            })?,
    );
    let answer = wait_for(
        Duration::from_secs(60),
        "Prometheus to return a darwin_cri series",
        || async {
            let body = http_get(
                prom_port,
                "/api/v1/query?query=darwin_cri_containers%7Bstate%3D%22running%22%7D",
            )
            .ok()?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let result = v["data"]["result"].as_array()?.first()?.clone();
            Some(result)
        },
    )
    .await?;
    assert_eq!(answer["metric"]["job"], "darwin-cri");
    assert_eq!(answer["value"][1], "1");
    Ok(())
}
