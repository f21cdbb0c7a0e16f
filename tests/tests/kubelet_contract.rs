//! What this project's darwin kubelet sends in place of ContainerConfig.linux: the
//! `kubelet.darwin-cri.io/` annotations (kubelet/pkg/contract, docs/kubelet.md), through the CRI
//! socket into real containers.

use std::time::Duration;

use darwin_cri_tests::v1 as cri;
use darwin_cri_tests::*;
use tonic::Code;

fn from_kubelet(name: &str, script: &str, keys: &[(&str, &str)]) -> cri::ContainerConfig {
    let mut c = container_config(name, script);
    for (k, v) in keys {
        c.annotations
            .insert(format!("kubelet.darwin-cri.io/{k}"), v.to_string());
    }
    c
}

async fn run(
    rt: &mut Rt,
    pod: &str,
    c: cri::ContainerConfig,
) -> anyhow::Result<(i32, String, String)> {
    let id = create(rt, pod, c).await?;
    start(rt, &id).await?;
    let s = wait_exited(rt, &id, Duration::from_secs(20)).await?;
    let log = std::fs::read_to_string(&s.log_path).unwrap_or_default();
    Ok((s.exit_code, s.reason, log))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_darwin_kubelets_security_context_and_limits_are_enforced() -> anyhow::Result<()> {
    // Root as a Mac's node has it by default: refused unless allowed.
    let server = Server::start_with_config("[runtime]\nallow_root = false\n").await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "contract").await?;

    // runAsUser, runAsGroup and supplemental groups (fsGroup first), as the build pod asks.
    let (code, _, log) = run(
        &mut rt,
        &pod,
        from_kubelet(
            "ids",
            "id -u; id -g; id -G",
            &[
                ("run-as-user", "1000"),
                ("run-as-group", "1001"),
                ("supplemental-groups", "5000,12"),
            ],
        ),
    )
    .await?;
    assert_eq!(code, 0, "{log}");
    let lines: Vec<&str> = log
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(&lines[..2], ["1000", "1001"], "{log}");
    assert!(
        log.lines()
            .nth(2)
            .is_some_and(|l| l.contains("5000") && l.contains("12")),
        "{log}"
    );

    // readOnlyRootFilesystem.
    let (code, _, log) = run(
        &mut rt,
        &pod,
        from_kubelet(
            "ro",
            "touch /made-here && echo wrote || echo refused",
            &[("run-as-user", "1000"), ("readonly-rootfs", "true")],
        ),
    )
    .await?;
    assert_eq!(code, 0);
    assert!(log.contains("refused") && !log.contains("wrote"), "{log}");

    // The memory limit, enforced by darwin-cri's monitor.
    let (code, reason, log) = run(
        &mut rt,
        &pod,
        from_kubelet(
            "hog",
            "dd if=/dev/zero of=/dev/null bs=64M count=100000 & wait",
            &[("run-as-user", "1000"), ("memory-limit", "33554432")],
        ),
    )
    .await?;
    assert_eq!((code, reason.as_str()), (137, "OOMKilled"), "{log}");

    // runAsUser 0 from the kubelet is root, refused unless the operator allows root.
    let e = create(
        &mut rt,
        &pod,
        from_kubelet("root", "true", &[("run-as-user", "0")]),
    )
    .await
    .expect_err("root refused");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("runAsUser"), "{}", e.message());

    // Malformed or unknown keys are refused by name, before anything is made.
    for (k, v) in [
        ("run-as-user", "app"),
        ("memory-limit", "1Gi"),
        ("sysctls", "x"),
    ] {
        let e = create(&mut rt, &pod, from_kubelet("bad", "true", &[(k, v)]))
            .await
            .expect_err(k);
        assert_eq!(e.code(), Code::InvalidArgument, "{k}: {e:?}");
        assert!(e.message().contains(k), "{}", e.message());
    }

    // A Linux kubelet's own fields win: with ContainerConfig.linux present the keys are ignored.
    let mut linux = from_kubelet("linux", "id -u", &[("run-as-user", "0")]);
    linux.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let (code, _, log) = run(&mut rt, &pod, linux).await?;
    assert_eq!(code, 0);
    assert!(log.contains(" 1000\n"), "{log}");
    Ok(())
}
