//! Behaviours kubelet and the CRI validation suites expect: clear answers when a container is
//! not running, RemoveImage as containerd does it.

use std::time::Duration;

use darwin_cri_tests::v1 as cri;
use darwin_cri_tests::*;
use tonic::Code;

/// An exec that races its container's exit is refused with FailedPrecondition and the exit's
/// facts, never with the OS error of a monitor socket that went away.
#[tokio::test(flavor = "multi_thread")]
async fn exec_racing_an_exit_never_answers_an_os_error() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "race").await?;
    let rounds = env_or("RACE_ROUNDS", 200usize);
    let mut refused = 0;
    for i in 0..rounds {
        let id = create(&mut rt, &pod, container_config(&format!("c{i}"), "exit 3")).await?;
        start(&mut rt, &id).await?;
        // Exec until the container is gone: early ones may still get in.
        for _ in 0..200 {
            match exec(&mut rt, &id, &["true"], 10).await {
                Ok(_) => continue,
                Err(e) => {
                    let msg = e.message();
                    assert_eq!(e.code(), Code::FailedPrecondition, "round {i}: {e:?}");
                    assert!(
                        !msg.contains("os error") && !msg.contains("Connection"),
                        "round {i}: an OS error reached the client: {msg}"
                    );
                    assert!(
                        msg.contains(&format!("container {id} is not running (exited at "))
                            && msg.contains(", code 3)"),
                        "round {i}: {msg}"
                    );
                    refused += 1;
                    break;
                }
            }
        }
        rt.remove_container(cri::RemoveContainerRequest { container_id: id })
            .await?;
    }
    assert_eq!(refused, rounds, "every container ended and said so");

    // Attach to an exited container: the same answer.
    let id = create(&mut rt, &pod, container_config("attach", "exit 4")).await?;
    start(&mut rt, &id).await?;
    wait_exited(&mut rt, &id, Duration::from_secs(10)).await?;
    let e = rt
        .attach(cri::AttachRequest {
            container_id: id.clone(),
            stdout: true,
            ..Default::default()
        })
        .await
        .expect_err("exited");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains(", code 4)"), "{}", e.message());
    Ok(())
}

/// The server's log has no terminal colour codes when its output is not a terminal (a file
/// under launchd).
#[tokio::test(flavor = "multi_thread")]
async fn the_log_has_no_colour_codes_off_a_terminal() -> anyhow::Result<()> {
    let server = Server::start_with_config("[log]\nlevel = \"debug\"\n").await?;
    let (mut rt, _) = server.client().await?;
    run_pod(&mut rt, &server, "quiet").await?;
    let log = server.log();
    assert!(log.contains("INFO") || log.contains("DEBUG"), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in the log: {log:?}");
    Ok(())
}

/// Every root has a /proc (the Linux twin; macOS's ps and top read sysctl in a chroot): process
/// tools work and a `top` container runs until stopped; the kernel's settings and memory stay
/// out of reach.
#[tokio::test(flavor = "multi_thread")]
async fn process_tools_work_and_proc_is_masked() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "top").await?;
    let mut config = container_config("top", "");
    config.command = vec!["top".into(), "-b".into(), "-d".into(), "1".into()];
    let id = create(&mut rt, &pod, config).await?;
    start(&mut rt, &id).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = status(&mut rt, &id).await?;
    assert_eq!(
        s.state,
        cri::ContainerState::ContainerRunning as i32,
        "top keeps running: {s:?}"
    );
    let r = exec(&mut rt, &id, &["ps"], 10).await?;
    assert!(
        String::from_utf8_lossy(&r.stdout).contains("top -b"),
        "ps lists the container's processes: {}",
        String::from_utf8_lossy(&r.stdout)
    );
    let r = exec(&mut rt, &id, &["pidof", "top"], 10).await?;
    assert_eq!(r.exit_code, 0, "pidof finds top");
    let hostname = nix::unistd::gethostname()?;
    let r = exec(
        &mut rt,
        &id,
        &[
            "sh",
            "-c",
            "cat /proc/sys/kernel/hostname > /proc/sys/kernel/hostname",
        ],
        10,
    )
    .await?;
    assert_ne!(r.exit_code, 0, "/proc/sys is read-only");
    assert_eq!(nix::unistd::gethostname()?, hostname);
    // /proc/1/root leads to the host's root: Landlock keeps it closed, even to root.
    let r = exec(&mut rt, &id, &["cat", "/proc/1/root/etc/hostname"], 10).await?;
    assert_ne!(r.exit_code, 0, "read the host through /proc/1/root: {r:?}");
    // Whichever of the masked files this kernel has reads as empty.
    let masked = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
    ]
    .into_iter()
    .filter(|p| std::path::Path::new(p).exists())
    .collect::<Vec<_>>();
    assert!(
        !masked.is_empty(),
        "this kernel has none of the masked files"
    );
    for path in masked {
        let r = exec(&mut rt, &id, &["sh", "-c", &format!("wc -c < {path}")], 10).await?;
        assert_eq!(
            String::from_utf8_lossy(&r.stdout).trim(),
            "0",
            "{path} masked: {r:?}"
        );
    }
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 5,
    })
    .await?;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;
    assert!(
        mounts_under(&server.root()).is_empty(),
        "/proc and its masks go with the container"
    );
    Ok(())
}
