//! `cri-smoke`: the first run of darwin-cri on a new host, step by step, as kubelet would drive
//! it: a pod, a container of the given image, ExecSync, its log, its stats, stop and removal.
//! Prints one line per step (ok or FAIL, the time it took, what was seen) and exits 1 if a step
//! failed. `scripts/mac-smoke.sh` makes the image and starts the server; CI runs the same on
//! Linux so that the script cannot rot.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use darwin_cri_tests::v1 as cri;
use darwin_cri_tests::{container_config, create, exec, pod_config, start, status, wait_for};

/// Command-line arguments: `--socket PATH --image NAME --logs DIR`.
#[derive(Debug)]
struct Args {
    socket: PathBuf,
    image: String,
    logs: PathBuf,
}

fn args() -> anyhow::Result<Args> {
    let mut socket = None;
    let mut image = None;
    let mut logs = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--socket" => socket = Some(PathBuf::from(value)),
            "--image" => image = Some(value),
            "--logs" => logs = Some(PathBuf::from(value)),
            other => bail!("unknown flag {other}: cri-smoke --socket PATH --image NAME --logs DIR"),
        }
    }
    Ok(Args {
        socket: socket.context("--socket is required")?,
        image: image.context("--image is required")?,
        logs: logs.context("--logs is required")?,
    })
}

/// The report: one line per step.
#[derive(Debug, Default)]
struct Report {
    failed: usize,
}

impl Report {
    fn line(&mut self, step: &str, took: Duration, result: &anyhow::Result<String>) {
        let ms = took.as_secs_f64() * 1000.0;
        match result {
            Ok(seen) => println!("ok    {step:<22} {ms:>8.1} ms  {seen}"),
            Err(e) => {
                self.failed += 1;
                println!("FAIL  {step:<22} {ms:>8.1} ms  {e:#}");
            }
        }
    }
}

/// Runs one step, reports it, and gives its value on to the next steps.
macro_rules! step {
    ($report:expr, $name:expr, $body:expr) => {{
        let started = Instant::now();
        let result: anyhow::Result<_> = async { $body }.await;
        let shown = result.as_ref().map(|(_, seen): &(_, String)| seen.clone());
        let shown = shown.map_err(|e| anyhow::anyhow!("{e:#}"));
        $report.line($name, started.elapsed(), &shown);
        result.map(|(value, _)| value)
    }};
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let mut report = Report::default();
    println!(
        "cri-smoke: {} with image {}",
        args.socket.display(),
        args.image
    );
    let (mut rt, mut img) = darwin_cri_tests::connect(&args.socket).await?;

    let _ = step!(report, "version", {
        let v = rt
            .version(cri::VersionRequest::default())
            .await?
            .into_inner();
        Ok((
            (),
            format!(
                "{} {} (CRI {})",
                v.runtime_name, v.runtime_version, v.runtime_api_version
            ),
        ))
    });
    let _ = step!(report, "image status", {
        let s = img
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: args.image.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await?
            .into_inner();
        let image = s.image.context("the image is not in the store")?;
        Ok(((), format!("{} ({} bytes)", image.id, image.size)))
    });
    let logs = args.logs.join("smoke");
    std::fs::create_dir_all(&logs)?;
    let pod = step!(report, "run pod", {
        let id = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(pod_config("smoke", &logs)),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        Ok((id.clone(), id))
    })?;
    let container = step!(report, "create container", {
        let mut config = container_config(
            "smoke",
            "echo hello from darwin-cri; while true; do sleep 1; done",
        );
        config.image = Some(cri::ImageSpec {
            image: args.image.clone(),
            ..Default::default()
        });
        let id = create(&mut rt, &pod, config).await?;
        Ok((id.clone(), id))
    });
    if let Ok(id) = &container {
        let _ = step!(report, "start container", {
            start(&mut rt, id).await?;
            let s = status(&mut rt, id).await?;
            if s.state != cri::ContainerState::ContainerRunning as i32 {
                bail!("state {} after start: {}", s.state, s.message);
            }
            Ok(((), "running".to_string()))
        });
        let _ = step!(report, "exec sync", {
            let out = exec(
                &mut rt,
                id,
                &["/bin/sh", "-c", "echo exec works; exit 3"],
                10,
            )
            .await?;
            let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if stdout != "exec works" || out.exit_code != 3 {
                bail!("stdout {stdout:?}, exit code {}", out.exit_code);
            }
            Ok(((), format!("stdout {stdout:?}, exit code 3")))
        });
        // Under the container's confinement (Seatbelt on a Mac, Landlock and seccomp on Linux)
        // the root's own files stay readable: on a Mac this is the first proof that the profile's
        // paths match what a chrooted process opens.
        let _ = step!(report, "confined read", {
            let out = exec(&mut rt, id, &["/bin/cat", "/etc/passwd"], 10).await?;
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            if out.exit_code != 0 || !stdout.contains("build:") {
                bail!(
                    "exit code {}, stdout {stdout:?}, stderr {:?}",
                    out.exit_code,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(((), "the root's /etc/passwd is readable".to_string()))
        });
        let _ = step!(report, "log", {
            let path = logs.join("smoke/0.log");
            let line = wait_for(Duration::from_secs(10), "the first log line", || {
                let path = path.clone();
                async move {
                    let text = std::fs::read_to_string(&path).ok()?;
                    text.lines()
                        .find(|l| l.ends_with(" stdout F hello from darwin-cri"))
                        .map(str::to_string)
                }
            })
            .await?;
            Ok(((), line))
        });
        let _ = step!(report, "stats", {
            let stats = rt
                .container_stats(cri::ContainerStatsRequest {
                    container_id: id.clone(),
                })
                .await?
                .into_inner()
                .stats
                .context("no stats")?;
            let memory = stats
                .memory
                .and_then(|m| m.working_set_bytes)
                .map(|v| v.value)
                .unwrap_or(0);
            let cpu = stats
                .cpu
                .and_then(|c| c.usage_core_nano_seconds)
                .map(|v| v.value)
                .unwrap_or(0);
            if memory == 0 {
                bail!("no memory reported");
            }
            Ok(((), format!("working set {memory} bytes, CPU {cpu} ns")))
        });
        let _ = step!(report, "stop container", {
            rt.stop_container(cri::StopContainerRequest {
                container_id: id.clone(),
                timeout: 5,
            })
            .await?;
            let s = status(&mut rt, id).await?;
            if s.state != cri::ContainerState::ContainerExited as i32 {
                bail!("state {} after stop", s.state);
            }
            Ok(((), format!("exit code {} ({})", s.exit_code, s.reason)))
        });
        let _ = step!(report, "remove container", {
            rt.remove_container(cri::RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await?;
            Ok(((), "removed".to_string()))
        });
    }
    let _ = step!(report, "root refused", {
        let mut config = container_config("as-root", "true");
        config.image = Some(cri::ImageSpec {
            image: args.image.clone(),
            ..Default::default()
        });
        config
            .annotations
            .insert("darwin-cri.io/run-as-user".into(), "root".into());
        match create(&mut rt, &pod, config).await {
            Ok(id) => bail!("a container annotated to run as root was created ({id})"),
            Err(e) => Ok(((), format!("{:?}: {}", e.code(), e.message()))),
        }
    });
    let _ = step!(report, "stop and remove pod", {
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await?;
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await?;
        let left = rt
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await?
            .into_inner()
            .items
            .len();
        if left != 0 {
            bail!("{left} pods still listed");
        }
        Ok(((), "none left".to_string()))
    });
    if report.failed > 0 {
        println!("cri-smoke: {} step(s) FAILED", report.failed);
        std::process::exit(1);
    }
    println!("cri-smoke: every step passed");
    Ok(())
}
