//! The benchmarks, as CRI calls through one client: the same requests for either runtime.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use darwin_cri_tests::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

#[derive(Debug, Clone)]
pub struct Client {
    pub rt: RuntimeServiceClient<Channel>,
    pub img: ImageServiceClient<Channel>,
    /// The container image, by name.
    pub image: String,
    pub logs: PathBuf,
}

/// Host-network namespaces, as kubelet sends them for a hostNetwork pod.
fn namespaces() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Node as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

pub fn pod_config(name: &str, logs: &std::path::Path) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "bench".into(),
            attempt: 0,
        }),
        log_directory: logs.join(name).display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn container_config(name: &str, image: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A running pod with `containers` containers.
#[derive(Debug, Clone)]
pub struct Pod {
    pub id: String,
    pub containers: Vec<String>,
}

impl Client {
    pub async fn pull(&mut self, image: &str) -> anyhow::Result<String> {
        Ok(self
            .img
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?
            .into_inner()
            .image_ref)
    }

    pub async fn remove_image(&mut self, image: &str) -> anyhow::Result<()> {
        self.img
            .remove_image(cri::RemoveImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
            })
            .await?;
        Ok(())
    }

    /// CreateContainer + StartContainer of container `name` of `image` in pod `pod`: its id.
    async fn create_and_start(
        &mut self,
        pod: &str,
        config: &cri::PodSandboxConfig,
        name: &str,
        image: &str,
    ) -> anyhow::Result<String> {
        let cid = self.create(pod, config, name, image).await?;
        self.start(&cid).await?;
        Ok(cid)
    }

    /// CreateContainer of container `name` of `image` in pod `pod`: its id.
    async fn create(
        &mut self,
        pod: &str,
        config: &cri::PodSandboxConfig,
        name: &str,
        image: &str,
    ) -> anyhow::Result<String> {
        Ok(self
            .rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.to_string(),
                config: Some(container_config(name, image)),
                sandbox_config: Some(config.clone()),
            })
            .await?
            .into_inner()
            .container_id)
    }

    async fn start(&mut self, cid: &str) -> anyhow::Result<()> {
        self.rt
            .start_container(cri::StartContainerRequest {
                container_id: cid.to_string(),
            })
            .await?;
        Ok(())
    }

    /// RunPodSandbox: the pod's id and configuration.
    async fn run_pod(&mut self, name: &str) -> anyhow::Result<(String, cri::PodSandboxConfig)> {
        std::fs::create_dir_all(self.logs.join(name))?;
        let config = pod_config(name, &self.logs);
        let id = self
            .rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        Ok((id, config))
    }

    /// RunPodSandbox, then CreateContainer + StartContainer for each container.
    pub async fn start_pod(&mut self, name: &str, containers: usize) -> anyhow::Result<Pod> {
        let (id, config) = self.run_pod(name).await?;
        let mut ids = Vec::new();
        for c in 0..containers {
            let image = self.image.clone();
            ids.push(
                self.create_and_start(&id, &config, &format!("c{c}"), &image)
                    .await?,
            );
        }
        Ok(Pod {
            id,
            containers: ids,
        })
    }

    /// A pod with one container of `image`: the time of CreateContainer + StartContainer alone
    /// (the container's root is made at create, so the image's size shows there).
    pub async fn container_start(
        &mut self,
        name: &str,
        image: &str,
    ) -> anyhow::Result<(Pod, Duration)> {
        let (id, config) = self.run_pod(name).await?;
        let t = Instant::now();
        let cid = self.create_and_start(&id, &config, "c0", image).await?;
        let took = t.elapsed();
        Ok((
            Pod {
                id,
                containers: vec![cid],
            },
            took,
        ))
    }

    /// StopContainer (no grace), RemoveContainer, StopPodSandbox, RemovePodSandbox.
    pub async fn remove_pod(&mut self, pod: &Pod) -> anyhow::Result<()> {
        for c in &pod.containers {
            self.rt
                .stop_container(cri::StopContainerRequest {
                    container_id: c.clone(),
                    timeout: 0,
                })
                .await?;
            self.rt
                .remove_container(cri::RemoveContainerRequest {
                    container_id: c.clone(),
                })
                .await?;
        }
        self.rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            })
            .await?;
        self.rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            })
            .await?;
        Ok(())
    }

    /// One pod with one container, each call timed on its own: CreateContainer,
    /// StartContainer, and RemoveContainer of the stopped container (StopContainer and the pod's
    /// own calls untimed).
    pub async fn container_calls(&mut self, name: &str) -> anyhow::Result<[Duration; 3]> {
        let (id, config) = self.run_pod(name).await?;
        let image = self.image.clone();
        let t = Instant::now();
        let cid = self.create(&id, &config, "c0", &image).await?;
        let created = t.elapsed();
        let t = Instant::now();
        self.start(&cid).await?;
        let started = t.elapsed();
        self.rt
            .stop_container(cri::StopContainerRequest {
                container_id: cid.clone(),
                timeout: 0,
            })
            .await?;
        let t = Instant::now();
        self.rt
            .remove_container(cri::RemoveContainerRequest {
                container_id: cid.clone(),
            })
            .await?;
        let removed = t.elapsed();
        self.remove_pod(&Pod {
            id,
            containers: Vec::new(),
        })
        .await?;
        Ok([created, started, removed])
    }

    /// One pod with one container, from nothing to running; removed afterwards (untimed).
    pub async fn pod_start(&mut self, name: &str) -> anyhow::Result<Duration> {
        let t = Instant::now();
        let pod = self.start_pod(name, 1).await?;
        let took = t.elapsed();
        self.remove_pod(&pod).await?;
        Ok(took)
    }

    pub async fn exec_sync(&mut self, container: &str) -> anyhow::Result<Duration> {
        let t = Instant::now();
        let out = self
            .rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: container.into(),
                cmd: vec!["true".into()],
                timeout: 10,
            })
            .await?
            .into_inner();
        anyhow::ensure!(out.exit_code == 0, "exec failed: {out:?}");
        Ok(t.elapsed())
    }

    pub async fn list_containers(&mut self) -> anyhow::Result<(Duration, usize)> {
        let t = Instant::now();
        let n = self
            .rt
            .list_containers(cri::ListContainersRequest::default())
            .await?
            .into_inner()
            .containers
            .len();
        Ok((t.elapsed(), n))
    }

    pub async fn list_container_stats(&mut self) -> anyhow::Result<(Duration, usize)> {
        let t = Instant::now();
        let n = self
            .rt
            .list_container_stats(cri::ListContainerStatsRequest::default())
            .await?
            .into_inner()
            .stats
            .len();
        Ok((t.elapsed(), n))
    }
}
