//! CRI requests as kubelet sends them, and the calls the tests make over and over.

use super::*;

/// A pod config as kubelet sends it, minus the Linux section a darwin kubelet leaves out.
pub fn pod_config(name: &str, log_dir: &Path) -> cri::PodSandboxConfig {
    let uid = format!("uid-{name}");
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: uid.clone(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        }),
        labels: [
            ("io.kubernetes.pod.name".to_string(), name.to_string()),
            (
                "io.kubernetes.pod.namespace".to_string(),
                "default".to_string(),
            ),
            ("io.kubernetes.pod.uid".to_string(), uid),
            ("app".to_string(), name.to_string()),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

/// A container config running `sh -c script` from the busybox image.
pub fn container_config(name: &str, script: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: BUSYBOX.into(),
            ..Default::default()
        }),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}/0.log"),
        labels: [("io.kubernetes.container.name".to_string(), name.to_string())]
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

/// The runtime service client.
pub type Rt = RuntimeServiceClient<Channel>;

/// RunPodSandbox with [`pod_config`], its log directory under the server's temp dir.
pub async fn run_pod(rt: &mut Rt, server: &Server, name: &str) -> anyhow::Result<String> {
    let logs = server.dir.path().join("logs").join(name);
    std::fs::create_dir_all(&logs)?;
    let resp = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config(name, &logs)),
            runtime_handler: String::new(),
        })
        .await?;
    Ok(resp.into_inner().pod_sandbox_id)
}

/// CreateContainer in `pod`.
pub async fn create(
    rt: &mut Rt,
    pod: &str,
    config: cri::ContainerConfig,
) -> Result<String, tonic::Status> {
    Ok(rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: None,
        })
        .await?
        .into_inner()
        .container_id)
}

/// StartContainer.
pub async fn start(rt: &mut Rt, id: &str) -> Result<(), tonic::Status> {
    rt.start_container(cri::StartContainerRequest {
        container_id: id.into(),
    })
    .await
    .map(|_| ())
}

/// ContainerStatus.
pub async fn status(rt: &mut Rt, id: &str) -> Result<cri::ContainerStatus, tonic::Status> {
    Ok(rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .unwrap_or_default())
}

/// Polls ContainerStatus until the container has exited.
pub async fn wait_exited(
    rt: &mut Rt,
    id: &str,
    timeout: Duration,
) -> anyhow::Result<cri::ContainerStatus> {
    let rt2 = rt.clone();
    wait_for(timeout, "the container to exit", || {
        let mut rt = rt2.clone();
        let id = id.to_string();
        async move {
            let s = status(&mut rt, &id).await.ok()?;
            (s.state == cri::ContainerState::ContainerExited as i32).then_some(s)
        }
    })
    .await
}

/// ExecSync with a timeout in seconds.
pub async fn exec(
    rt: &mut Rt,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<cri::ExecSyncResponse, tonic::Status> {
    Ok(rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        })
        .await?
        .into_inner())
}

/// The pid of a container's monitor, from ContainerStatus's verbose info.
pub async fn monitor_pid(rt: &mut Rt, id: &str) -> anyhow::Result<i32> {
    verbose_pid(rt, id, "monitorPid").await
}

/// The pid of container `id`'s main process, from ContainerStatus' verbose info.
pub async fn main_pid(rt: &mut Rt, id: &str) -> anyhow::Result<i32> {
    verbose_pid(rt, id, "pid").await
}

/// ContainerStatus's verbose `info` of container `id`, parsed.
pub async fn verbose_info(rt: &mut Rt, id: &str) -> anyhow::Result<serde_json::Value> {
    let st = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await?
        .into_inner();
    Ok(serde_json::from_str(
        st.info.get("info").map(String::as_str).unwrap_or("{}"),
    )?)
}

async fn verbose_pid(rt: &mut Rt, id: &str, key: &str) -> anyhow::Result<i32> {
    let info = verbose_info(rt, id).await?;
    info[key]
        .as_i64()
        .map(|p| p as i32)
        .ok_or_else(|| anyhow::anyhow!("no {key} for {id}"))
}

/// `config` run as user `name` of the image (its /etc/passwd).
pub fn as_username(mut config: cri::ContainerConfig, name: &str) -> cri::ContainerConfig {
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_username: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

/// A server relaying `upstream` into container roots as the host's mDNSResponder, with one pod
/// and one running container (`sleep`): (server, client, pod, container, the container root's
/// real /var/run, where the relay's socket is).
pub async fn relayed_container(
    upstream: &Path,
) -> anyhow::Result<(Server, Rt, String, String, PathBuf)> {
    let server = Server::start_with_config(&format!(
        "[runtime]\nmdns_socket = {:?}\n",
        upstream.display().to_string()
    ))
    .await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "dns").await?;
    let cid = create(&mut rt, &pod, container_config("c", "exec sleep 1000")).await?;
    start(&mut rt, &cid).await?;
    let var_run = server
        .container_dir(&pod, &cid)
        .join("rootfs/var/run")
        .canonicalize()?;
    Ok((server, rt, pod, cid, var_run))
}
