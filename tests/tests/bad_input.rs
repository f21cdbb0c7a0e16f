//! Every bad input of the spine: clear gRPC codes, nothing half-made left behind, no panic.

use std::path::PathBuf;

use darwin_cri_tests::v1 as cri;
use darwin_cri_tests::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn unknown_ids_duplicates_missing_images_and_bad_mounts() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, mut img) = server.client().await?;
    let logs = server.dir.path().join("logs");
    std::fs::create_dir_all(&logs)?;

    // Unknown ids: NotFound on status, success on stop/remove.
    let missing = "0123456789abcdef";
    let e = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: missing.into(),
            verbose: false,
        })
        .await
        .expect_err("unknown container");
    assert_eq!(e.code(), Code::NotFound);
    let e = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: missing.into(),
            verbose: false,
        })
        .await
        .expect_err("unknown pod");
    assert_eq!(e.code(), Code::NotFound);
    rt.stop_container(cri::StopContainerRequest {
        container_id: missing.into(),
        timeout: 1,
    })
    .await?;
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: missing.into(),
    })
    .await?;
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: missing.into(),
    })
    .await?;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: missing.into(),
    })
    .await?;

    // Empty and malformed requests.
    let e = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest::default())
        .await
        .expect_err("no config");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cri::PodSandboxConfig {
                metadata: Some(cri::PodSandboxMetadata::default()),
                ..Default::default()
            }),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("empty metadata");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("h", &logs)),
            runtime_handler: "kata".into(),
        })
        .await
        .expect_err("unknown handler");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = rt
        .create_container(cri::CreateContainerRequest::default())
        .await
        .expect_err("empty create");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = rt
        .container_status(cri::ContainerStatusRequest::default())
        .await
        .expect_err("empty id");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: missing.into(),
            cmd: vec!["true".into()],
            timeout: 1,
        })
        .await
        .expect_err("exec in nothing");
    assert_eq!(e.code(), Code::NotFound);

    // Duplicate pod name.
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("dup", &logs)),
            runtime_handler: "darwin".into(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let e = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("dup", &logs)),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("duplicate pod");
    assert_eq!(e.code(), Code::AlreadyExists);

    let create = |config: cri::ContainerConfig| cri::CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(config),
        sandbox_config: None,
    };
    let pod_dir = server.root().join("pods").join(&pod).join("containers");
    let entries = |dir: &std::path::Path| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);

    // Duplicate container name.
    rt.create_container(create(container_config("c", "true")))
        .await?;
    let baseline_mounts = mounts_under(&server.root());
    let e = rt
        .create_container(create(container_config("c", "true")))
        .await
        .expect_err("duplicate container");
    assert_eq!(e.code(), Code::AlreadyExists);
    assert_eq!(entries(&pod_dir), 1);

    // An image that is not there.
    let mut config = container_config("noimage", "true");
    config.image = Some(cri::ImageSpec {
        image: "registry.example/none:1".into(),
        ..Default::default()
    });
    let e = rt
        .create_container(create(config))
        .await
        .expect_err("no image");
    assert_eq!(e.code(), Code::NotFound);
    assert!(
        e.message().contains("registry.example/none:1"),
        "{}",
        e.message()
    );

    // Mounts: a missing source, and a container path that climbs out of the root.
    let real = server.dir.path().join("real");
    std::fs::create_dir_all(&real)?;
    for (host, container) in [
        (
            server.dir.path().join("missing").display().to_string(),
            "/data".to_string(),
        ),
        (real.display().to_string(), "../../etc".to_string()),
        (real.display().to_string(), "/data/../../../etc".to_string()),
    ] {
        let mut config = container_config("m", "true");
        config.mounts = vec![
            cri::Mount {
                container_path: "/ok".into(),
                host_path: real.display().to_string(),
                ..Default::default()
            },
            cri::Mount {
                container_path: container.clone(),
                host_path: host.clone(),
                ..Default::default()
            },
        ];
        let e = rt
            .create_container(create(config))
            .await
            .expect_err("bad mount");
        assert_eq!(
            e.code(),
            Code::InvalidArgument,
            "{host} -> {container}: {}",
            e.message()
        );
        assert_eq!(
            mounts_under(&server.root()),
            baseline_mounts,
            "nothing mounted"
        );
        assert_eq!(entries(&pod_dir), 1, "nothing left behind");
    }

    // A failure half-way (after the rootfs copy and a first mount): a file mounted where the
    // image has a directory. Everything made so far is undone.
    let file = server.dir.path().join("file");
    std::fs::write(&file, "f")?;
    let mut config = container_config("half", "true");
    config.mounts = vec![
        cri::Mount {
            container_path: "/ok".into(),
            host_path: real.display().to_string(),
            ..Default::default()
        },
        cri::Mount {
            container_path: "/etc".into(),
            host_path: file.display().to_string(),
            ..Default::default()
        },
    ];
    let e = rt
        .create_container(create(config))
        .await
        .expect_err("type clash");
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert_eq!(mounts_under(&server.root()), baseline_mounts);
    assert_eq!(entries(&pod_dir), 1);
    // The name of a failed create is free again.
    rt.create_container(create(container_config("half", "true")))
        .await?;

    // A command that does not exist: StartContainer fails, the container reports why.
    let mut config = container_config("nocmd", "");
    config.command = vec!["/no/such/binary".into()];
    let id = rt
        .create_container(create(config))
        .await?
        .into_inner()
        .container_id;
    let e = rt
        .start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect_err("start fails");
    assert!(e.message().contains("/no/such/binary"), "{}", e.message());
    let s = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id,
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .expect("status");
    assert_eq!(
        (s.state, s.reason.as_str()),
        (cri::ContainerState::ContainerExited as i32, "StartError")
    );

    // Images: a missing one is an empty ImageStatus, and removing it succeeds.
    let st = img
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: "nothing:here".into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await?
        .into_inner();
    assert!(st.image.is_none());
    img.remove_image(cri::RemoveImageRequest {
        image: Some(cri::ImageSpec {
            image: "nothing:here".into(),
            ..Default::default()
        }),
    })
    .await?;
    let e = img
        .image_status(cri::ImageStatusRequest::default())
        .await
        .expect_err("no image spec");
    assert_eq!(e.code(), Code::InvalidArgument);

    // Streaming requests for what does not exist, or with nothing to stream.
    let e = rt
        .exec(cri::ExecRequest {
            container_id: missing.into(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
        .await
        .expect_err("exec in a missing container");
    assert_eq!(e.code(), Code::NotFound, "{}", e.message());
    let e = rt
        .port_forward(cri::PortForwardRequest::default())
        .await
        .expect_err("port-forward without a pod");
    assert_eq!(e.code(), Code::InvalidArgument);

    // The server is still healthy.
    rt.version(cri::VersionRequest::default()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_pod_network_refuses_pod_network_pods() -> anyhow::Result<()> {
    let mut server = Server::start().await?;
    server.kill();
    std::fs::write(
        server.dir.path().join("strict.toml"),
        "[runtime]\nstrict_pod_network = true\n",
    )?;
    server.extra_args = vec![
        "--config".into(),
        server.dir.path().join("strict.toml").display().to_string(),
    ];
    server.restart().await?;
    let (mut rt, _) = server.client().await?;
    let logs = server.dir.path().join("logs");
    let e = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("p", &logs)),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("pod network refused");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("hostNetwork"), "{}", e.message());
    let mut config = pod_config("h", &logs);
    config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: cri::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let st = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod,
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .expect("status");
    let ns = st
        .linux
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .expect("namespaces");
    assert_eq!(ns.network, cri::NamespaceMode::Node as i32);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_server_on_the_same_socket_or_root_refuses_to_start() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let out = std::process::Command::new(binary())
        .args(server.args())
        .arg("serve")
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another darwin-cri"), "{err}");

    // Same socket, another root.
    let other_root = server.dir.path().join("other-root");
    let out = std::process::Command::new(binary())
        .args(["--root", &other_root.display().to_string(), "--state-dir"])
        .arg(server.dir.path().join("other-run"))
        .arg("--socket")
        .arg(server.socket())
        .arg("serve")
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already"), "{err}");

    // The first server still answers.
    let (mut rt, _) = server.client().await?;
    rt.version(cri::VersionRequest::default()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_socket_is_replaced() -> anyhow::Result<()> {
    let mut server = Server::start().await?;
    server.kill();
    assert!(
        server.socket().exists(),
        "SIGKILL leaves the socket file behind"
    );
    server.restart().await?;
    let (mut rt, _) = server.client().await?;
    let v = rt
        .version(cri::VersionRequest::default())
        .await?
        .into_inner();
    assert_eq!(
        (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
        ("darwin-cri", "v1")
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(server.socket())?.permissions());
    assert_eq!(mode & 0o777, 0o660);
    Ok(())
}

/// Issue #26, 11: with no mounts.allowed_host_paths (the default) a pod could mount `/`, the
/// socket directory and darwin-cri's own root and state; they are refused whatever the list
/// says, even through a symlink.
#[tokio::test(flavor = "multi_thread")]
async fn the_host_root_and_darwin_cris_own_directories_are_never_mounted() -> anyhow::Result<()> {
    let outer = tempfile::tempdir()?;
    let link = outer.path().join("to-root");
    for toml in ["", "[mounts]\nallowed_host_paths = [\"/\"]\n"] {
        let server = Server::start_with_config(toml).await?;
        let (mut rt, _) = server.client().await?;
        let pod = run_pod(&mut rt, &server, "mounts").await?;
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(server.root(), &link)?;
        let data = server.dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        let socket_dir = server.socket().parent().expect("dir").to_path_buf();
        for host in [
            PathBuf::from("/"),
            server.root(),
            server.root().join("pods"),
            socket_dir,
            server.dir.path().to_path_buf(),
            link.clone(),
        ] {
            let mut config = container_config("m", "true");
            config.mounts = vec![cri::Mount {
                container_path: "/host".into(),
                host_path: host.display().to_string(),
                ..Default::default()
            }];
            let e = create(&mut rt, &pod, config)
                .await
                .expect_err("refused source");
            assert_eq!(e.code(), Code::InvalidArgument, "{}: {e:?}", host.display());
            assert!(e.message().contains("never"), "{}", e.message());
        }
        let mut config = container_config("ok", "true");
        config.mounts = vec![cri::Mount {
            container_path: "/data".into(),
            host_path: data.display().to_string(),
            ..Default::default()
        }];
        create(&mut rt, &pod, config).await?;
    }
    Ok(())
}

/// Issue #26, 14: the CRI socket was chmod'ed after bind (reachable at 0777 less the umask for a
/// moment) and got no group; monitors' control sockets (which accept `exec`) got no mode at
/// all. The CRI socket is made 0660 with the configured group, monitor sockets 0600.
#[tokio::test(flavor = "multi_thread")]
async fn sockets_have_their_mode_and_group_from_the_start() -> anyhow::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let gid = 4242;
    let server = Server::start_with_config(&format!("socket_group = \"{gid}\"\n")).await?;
    let m = std::fs::metadata(server.socket())?;
    assert_eq!(
        (m.permissions().mode() & 0o7777, m.uid(), m.gid()),
        (0o660, 0, gid),
        "CRI socket"
    );
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "sockets").await?;
    let id = create(&mut rt, &pod, container_config("c", "sleep 1000")).await?;
    start(&mut rt, &id).await?;
    let monitors = server.dir.path().join("run/m");
    let sockets: Vec<_> = std::fs::read_dir(&monitors)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    let sockets: Vec<_> = sockets
        .into_iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket()))
        .collect();
    assert!(
        !sockets.is_empty(),
        "a monitor socket in {}",
        monitors.display()
    );
    for s in &sockets {
        let mode = std::fs::symlink_metadata(s)?.permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{}", s.display());
    }
    // Nothing but sockets left beside them (no scratch directories).
    assert_eq!(std::fs::read_dir(&monitors)?.count(), sockets.len());
    // A group that does not exist: a clear error at start.
    let e = Server::start_with_config("socket_group = \"no-such-group-darwin-cri\"\n")
        .await
        .expect_err("unknown group");
    assert!(format!("{e:#}").contains("socket_group"), "{e:#}");
    Ok(())
}
