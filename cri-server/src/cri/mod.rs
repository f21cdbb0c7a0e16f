//! The CRI v1 gRPC services: thin adapters from gRPC messages to the runtime's domain calls.
//! One module per RPC family; this one only wires them to tonic's traits.

mod container;
mod image;
mod info;
mod kubelet_annotations;
mod sandbox;
mod stats;
mod status;
mod streaming;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use runtime::Runtime;
use tonic::{Request, Response, Status};

use status::{IntoStatus, from_runtime, required};

/// Both CRI services over one runtime.
#[derive(Debug, Clone)]
pub struct Cri {
    runtime: Arc<Runtime>,
    /// The platform images are selected for, for Status's verbose info.
    platform: String,
    /// The Prometheus metrics, when the endpoint is on.
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Registry pulls into the runtime's image store.
    puller: image_service::Puller,
    /// Serves the URLs Exec, Attach and PortForward return.
    streaming: Arc<crate::streaming::Server>,
}

impl Cri {
    pub fn new(
        runtime: Arc<Runtime>,
        platform: String,
        metrics: Option<Arc<crate::metrics::Metrics>>,
        puller: image_service::Puller,
        streaming: Arc<crate::streaming::Server>,
    ) -> Cri {
        Cri {
            runtime,
            platform,
            metrics,
            puller,
            streaming,
        }
    }

    /// The filesystem that holds container roots, as stats name it.
    fn mountpoint(&self) -> String {
        self.runtime.root().join("pods").display().to_string()
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn ok<T>(t: T) -> Reply<T> {
    Ok(Response::new(t))
}

/// `value`, required: the id or reference a call is about, recorded in the call's span.
fn non_empty<'a>(value: &'a str, field: &str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(required(field))
    } else {
        crate::metrics::record_id(value);
        Ok(value)
    }
}

/// Runs `work` to its end even if the RPC is cancelled (kubelet's deadline passed, or it went
/// away): a half-done create or start must still clean up or record what it did.
/// The work's error becomes the call's status here (status.rs), once for every handler.
async fn detached<T: Send + 'static, E: IntoStatus + Send + 'static>(
    work: impl Future<Output = Result<T, E>> + Send + 'static,
) -> Result<T, Status> {
    let span = tracing::Span::current();
    tokio::spawn(tracing::Instrument::instrument(work, span))
        .await
        .map_err(|e| Status::internal(format!("worker failed: {e}")))?
        .map_err(IntoStatus::into_status)
}

/// Runs blocking image-store work off the async workers.
async fn blocking<T: Send + 'static, E: IntoStatus + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, Status> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| Status::internal(format!("worker failed: {e}")))?
        .map_err(IntoStatus::into_status)
}

#[tonic::async_trait]
impl RuntimeService for Cri {
    async fn version(&self, _: Request<cri::VersionRequest>) -> Reply<cri::VersionResponse> {
        ok(info::version())
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<cri::RunPodSandboxRequest>,
    ) -> Reply<cri::RunPodSandboxResponse> {
        let req = req.into_inner();
        let spec = sandbox::pod_spec(
            req.config.ok_or_else(|| required("config"))?,
            req.runtime_handler,
        )?;
        let rt = Arc::clone(&self.runtime);
        let pod_sandbox_id = blocking(move || rt.run_pod(spec)).await?;
        ok(cri::RunPodSandboxResponse { pod_sandbox_id })
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<cri::StopPodSandboxRequest>,
    ) -> Reply<cri::StopPodSandboxResponse> {
        let id = req.into_inner().pod_sandbox_id;
        non_empty(&id, "pod_sandbox_id")?;
        let rt = Arc::clone(&self.runtime);
        detached(async move { rt.stop_pod(&id).await }).await?;
        ok(cri::StopPodSandboxResponse {})
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> Reply<cri::RemovePodSandboxResponse> {
        let id = req.into_inner().pod_sandbox_id;
        non_empty(&id, "pod_sandbox_id")?;
        let rt = Arc::clone(&self.runtime);
        detached(async move { rt.remove_pod(&id).await }).await?;
        ok(cri::RemovePodSandboxResponse {})
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> Reply<cri::PodSandboxStatusResponse> {
        let req = req.into_inner();
        let pod = self
            .runtime
            .pod(non_empty(&req.pod_sandbox_id, "pod_sandbox_id")?)
            .map_err(from_runtime)?;
        ok(sandbox::status(&pod, self.runtime.node_ip(), req.verbose))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<cri::ListPodSandboxRequest>,
    ) -> Reply<cri::ListPodSandboxResponse> {
        ok(sandbox::list(
            self.runtime.list_pods(),
            req.into_inner().filter,
        ))
    }

    async fn create_container(
        &self,
        req: Request<cri::CreateContainerRequest>,
    ) -> Reply<cri::CreateContainerResponse> {
        let req = req.into_inner();
        let pod_id = non_empty(&req.pod_sandbox_id, "pod_sandbox_id")?.to_string();
        let spec = container::container_spec(req.config.ok_or_else(|| required("config"))?)?;
        let rt = Arc::clone(&self.runtime);
        let container_id =
            detached(async move { rt.create_container(&pod_id, spec).await }).await?;
        ok(cri::CreateContainerResponse { container_id })
    }

    async fn start_container(
        &self,
        req: Request<cri::StartContainerRequest>,
    ) -> Reply<cri::StartContainerResponse> {
        let id = req.into_inner().container_id;
        non_empty(&id, "container_id")?;
        let rt = Arc::clone(&self.runtime);
        detached(async move { rt.start_container(&id).await }).await?;
        ok(cri::StartContainerResponse {})
    }

    async fn stop_container(
        &self,
        req: Request<cri::StopContainerRequest>,
    ) -> Reply<cri::StopContainerResponse> {
        let req = req.into_inner();
        non_empty(&req.container_id, "container_id")?;
        let rt = Arc::clone(&self.runtime);
        detached(async move { rt.stop_container(&req.container_id, req.timeout).await }).await?;
        ok(cri::StopContainerResponse {})
    }

    async fn remove_container(
        &self,
        req: Request<cri::RemoveContainerRequest>,
    ) -> Reply<cri::RemoveContainerResponse> {
        let id = req.into_inner().container_id;
        non_empty(&id, "container_id")?;
        let rt = Arc::clone(&self.runtime);
        detached(async move { rt.remove_container(&id).await }).await?;
        ok(cri::RemoveContainerResponse {})
    }

    async fn list_containers(
        &self,
        req: Request<cri::ListContainersRequest>,
    ) -> Reply<cri::ListContainersResponse> {
        ok(container::list(&self.runtime, req.into_inner().filter))
    }

    async fn container_status(
        &self,
        req: Request<cri::ContainerStatusRequest>,
    ) -> Reply<cri::ContainerStatusResponse> {
        let req = req.into_inner();
        let c = self
            .runtime
            .container(non_empty(&req.container_id, "container_id")?)
            .map_err(from_runtime)?;
        ok(container::status(&c, req.verbose))
    }

    async fn update_container_resources(
        &self,
        req: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Reply<cri::UpdateContainerResourcesResponse> {
        let req = req.into_inner();
        let id = non_empty(&req.container_id, "container_id")?.to_string();
        // A darwin kubelet sends no Linux resources: the darwin-cri.io/ annotations of the
        // request then say the new limits (none: nothing changes).
        let resources = req.linux.as_ref().map(container::linux_resources);
        let annotations = req.annotations.into_iter().collect();
        let rt = Arc::clone(&self.runtime);
        detached(async move {
            rt.update_resources(&id, resources.as_ref(), &annotations)
                .await
        })
        .await?;
        ok(cri::UpdateContainerResourcesResponse {})
    }

    async fn reopen_container_log(
        &self,
        req: Request<cri::ReopenContainerLogRequest>,
    ) -> Reply<cri::ReopenContainerLogResponse> {
        let id = req.into_inner().container_id;
        self.runtime
            .reopen_log(non_empty(&id, "container_id")?)
            .await
            .map_err(from_runtime)?;
        ok(cri::ReopenContainerLogResponse {})
    }

    async fn exec_sync(&self, req: Request<cri::ExecSyncRequest>) -> Reply<cri::ExecSyncResponse> {
        let req = req.into_inner();
        let id = non_empty(&req.container_id, "container_id")?;
        if req.timeout < 0 {
            return Err(Status::invalid_argument("timeout must not be negative"));
        }
        let timeout = (req.timeout > 0).then(|| Duration::from_secs(req.timeout as u64));
        let out = self
            .runtime
            .exec_sync(id, &req.cmd, timeout)
            .await
            .map_err(from_runtime)?;
        ok(cri::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        })
    }

    async fn exec(&self, req: Request<cri::ExecRequest>) -> Reply<cri::ExecResponse> {
        ok(self.exec_url(req.into_inner())?)
    }

    async fn attach(&self, req: Request<cri::AttachRequest>) -> Reply<cri::AttachResponse> {
        ok(self.attach_url(req.into_inner())?)
    }

    async fn port_forward(
        &self,
        req: Request<cri::PortForwardRequest>,
    ) -> Reply<cri::PortForwardResponse> {
        ok(self.port_forward_url(req.into_inner())?)
    }

    async fn container_stats(
        &self,
        req: Request<cri::ContainerStatsRequest>,
    ) -> Reply<cri::ContainerStatsResponse> {
        let id = req.into_inner().container_id;
        let c = self
            .runtime
            .container(non_empty(&id, "container_id")?)
            .map_err(from_runtime)?;
        let usage = self.runtime.usage().await;
        let u = usage.containers.get(&c.id).copied().unwrap_or_default();
        ok(cri::ContainerStatsResponse {
            stats: Some(stats::container_stats(&c, &u, &self.mountpoint())),
        })
    }

    async fn list_container_stats(
        &self,
        req: Request<cri::ListContainerStatsRequest>,
    ) -> Reply<cri::ListContainerStatsResponse> {
        let filter = req.into_inner().filter;
        let usage = self.runtime.usage().await;
        let containers = self.runtime.list_containers();
        ok(cri::ListContainerStatsResponse {
            stats: stats::list_container_stats(
                &containers,
                &usage,
                filter.as_ref(),
                &self.mountpoint(),
            ),
        })
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<cri::PodSandboxStatsRequest>,
    ) -> Reply<cri::PodSandboxStatsResponse> {
        let id = req.into_inner().pod_sandbox_id;
        let pod = self
            .runtime
            .pod(non_empty(&id, "pod_sandbox_id")?)
            .map_err(from_runtime)?;
        let usage = self.runtime.usage().await;
        let containers = self.runtime.list_containers();
        let mine: Vec<&runtime::Container> =
            containers.iter().filter(|c| c.pod_id == pod.id).collect();
        ok(cri::PodSandboxStatsResponse {
            stats: Some(stats::pod_stats(&pod, &mine, &usage, &self.mountpoint())),
        })
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Reply<cri::ListPodSandboxStatsResponse> {
        let filter = req.into_inner().filter.unwrap_or_default();
        let usage = self.runtime.usage().await;
        let containers = self.runtime.list_containers();
        let mountpoint = self.mountpoint();
        let by_pod = stats::by_pod(&containers);
        let stats = self
            .runtime
            .list_pods()
            .iter()
            .filter(|p| filter.id.is_empty() || p.id.starts_with(&filter.id))
            .filter(|p| sandbox::labels_match(&p.spec.labels, &filter.label_selector))
            .map(|p| {
                let mine = by_pod
                    .get(p.id.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                stats::pod_stats(p, mine, &usage, &mountpoint)
            })
            .collect();
        ok(cri::ListPodSandboxStatsResponse { stats })
    }

    async fn update_runtime_config(
        &self,
        req: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Reply<cri::UpdateRuntimeConfigResponse> {
        // The pod CIDR is for CNI, which darwin-cri does not use: pods share the host's network
        // and report the node's address. It is kept and shown in the verbose Status.
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        self.runtime.set_pod_cidr(&cidr).map_err(from_runtime)?;
        ok(cri::UpdateRuntimeConfigResponse {})
    }

    async fn status(&self, req: Request<cri::StatusRequest>) -> Reply<cri::StatusResponse> {
        ok(info::status(self, req.into_inner().verbose))
    }

    async fn checkpoint_container(
        &self,
        _: Request<cri::CheckpointContainerRequest>,
    ) -> Reply<cri::CheckpointContainerResponse> {
        Err(Status::unimplemented(
            "CheckpointContainer is not supported: macOS has no CRIU equivalent",
        ))
    }

    type GetContainerEventsStream = Pin<
        Box<
            dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>>
                + Send
                + 'static,
        >,
    >;

    async fn get_container_events(
        &self,
        _: Request<cri::GetEventsRequest>,
    ) -> Reply<Self::GetContainerEventsStream> {
        let events = self.runtime.subscribe();
        let rt = Arc::clone(&self.runtime);
        // The subscription ends when the runtime drops it (the subscriber fell behind) or when
        // the client goes away (tonic drops this stream, and with it the receiver).
        let stream = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::ReceiverStream::new(events),
            move |event| Ok(container::event(&rt, event)),
        );
        ok(Box::pin(stream))
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Reply<cri::ListMetricDescriptorsResponse> {
        ok(cri::ListMetricDescriptorsResponse {
            descriptors: stats::descriptors(),
        })
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Reply<cri::ListPodSandboxMetricsResponse> {
        let usage = self.runtime.usage().await;
        let containers = self.runtime.list_containers();
        let by_pod = stats::by_pod(&containers);
        let pod_metrics = self
            .runtime
            .list_pods()
            .iter()
            .map(|p| {
                let mine = by_pod
                    .get(p.id.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                stats::pod_metrics(p, mine, &usage)
            })
            .collect();
        ok(cri::ListPodSandboxMetricsResponse { pod_metrics })
    }

    async fn runtime_config(
        &self,
        _: Request<cri::RuntimeConfigRequest>,
    ) -> Reply<cri::RuntimeConfigResponse> {
        ok(info::runtime_config())
    }
}

#[tonic::async_trait]
impl ImageService for Cri {
    async fn list_images(
        &self,
        req: Request<cri::ListImagesRequest>,
    ) -> Reply<cri::ListImagesResponse> {
        let wanted = req
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|i| i.image)
            .filter(|s| !s.is_empty());
        let store = Arc::clone(self.runtime.images());
        let images = blocking(move || -> Result<Vec<_>, image_service::Error> {
            match wanted {
                Some(r) => Ok(store.resolve(&r)?.into_iter().collect()),
                None => store.list(),
            }
        })
        .await?;
        ok(cri::ListImagesResponse {
            images: images.iter().map(image::image).collect(),
        })
    }

    async fn image_status(
        &self,
        req: Request<cri::ImageStatusRequest>,
    ) -> Reply<cri::ImageStatusResponse> {
        let req = req.into_inner();
        let reference = req.image.map(|i| i.image).unwrap_or_default();
        non_empty(&reference, "image.image")?;
        let store = Arc::clone(self.runtime.images());
        // A missing image is an empty response, not an error: kubelet then pulls it.
        let found = blocking(move || store.resolve(&reference)).await?;
        ok(image::status(found.as_ref(), req.verbose))
    }

    async fn pull_image(
        &self,
        req: Request<cri::PullImageRequest>,
    ) -> Reply<cri::PullImageResponse> {
        let req = req.into_inner();
        let reference = req.image.map(|i| i.image).unwrap_or_default();
        non_empty(&reference, "image.image")?;
        let credentials = image::credentials(req.auth.as_ref())?;
        let (puller, metrics) = (self.puller.clone(), self.metrics.clone());
        let runtime = Arc::clone(&self.runtime);
        // A pull kubelet gave up on still completes: the next PullImage finds it done.
        detached(async move {
            let pulled = image::pull(puller, metrics, reference, credentials).await?;
            // Roots of a big image are made ahead, off the path of its first CreateContainer.
            runtime.image_pulled(&pulled.get_ref().image_ref);
            Ok::<_, Status>(pulled)
        })
        .await
    }

    async fn remove_image(
        &self,
        req: Request<cri::RemoveImageRequest>,
    ) -> Reply<cri::RemoveImageResponse> {
        let reference = req.into_inner().image.map(|i| i.image).unwrap_or_default();
        non_empty(&reference, "image.image")?;
        let store = Arc::clone(self.runtime.images());
        // Removing an image that is not there succeeds, as kubelet expects.
        blocking(move || store.remove(&reference)).await?;
        self.runtime.images_removed();
        ok(cri::RemoveImageResponse {})
    }

    async fn image_fs_info(
        &self,
        _: Request<cri::ImageFsInfoRequest>,
    ) -> Reply<cri::ImageFsInfoResponse> {
        let store = Arc::clone(self.runtime.images());
        let (mountpoint, usage) = blocking(move || {
            Ok::<_, image_service::Error>((store.root().display().to_string(), store.fs_usage()?))
        })
        .await?;
        ok(image::fs_info(mountpoint, usage))
    }
}
