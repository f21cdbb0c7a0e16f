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
