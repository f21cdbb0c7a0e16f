//! The Prometheus endpoint: `GET /metrics` on `metrics.address`, in the OpenMetrics text format
//! (which Prometheus scrapes and promtool checks), with prometheus-client.
//!
//! Counted as they happen: CRI calls by RPC and gRPC code, and their latency. Read from the
//! runtime at each scrape: containers and pods by state, monitor deaths and OOM kills, the
//! server's own CPU, memory, open files and start time, and build info.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use anyhow::Context as _;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use runtime::{ContainerState, PodState, Runtime};
use tonic::codegen::http;
use tracing::Instrument as _;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcCode {
    rpc: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rpc {
    rpc: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Build {
    version: String,
    cri_version: String,
    os: String,
    arch: String,
}

/// Every metric the endpoint serves.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    calls: Family<RpcCode, Counter>,
    latency: Family<Rpc, Histogram>,
    containers: Family<State, Gauge>,
    pods: Family<State, Gauge>,
    pulls: Counter,
    pull_failures: Family<Reason, Counter>,
    pull_bytes: Counter,
    pull_seconds: Histogram,
    oom_kills: Counter,
    monitor_deaths: Counter,
    cpu_seconds: Counter<f64, AtomicU64>,
    resident_bytes: Gauge,
    open_fds: Gauge,
    /// The file system of the root: the image store and container roots.
    fs_avail: Gauge,
    fs_size: Gauge,
    /// Roots made ahead (runtime::pool): how many are ready and the disk they take.
    pool_roots: Gauge,
    pool_bytes: Gauge,
    /// Set once at start; kept so the registry's handle has an owner that reads as intended.
    _start_time: Gauge,
    /// What the runtime's counters were at the last scrape, to advance ours by the difference.
    seen: Mutex<(u64, u64, f64)>,
    runtime: Arc<Runtime>,
}

impl Metrics {
    pub fn new(runtime: Arc<Runtime>) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("darwin_cri");
        let calls = Family::<RpcCode, Counter>::default();
        registry.register(
            "grpc_requests",
            "CRI calls by RPC and gRPC status code",
            calls.clone(),
        );
        let latency = Family::<Rpc, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register_with_unit(
            "grpc_request_duration",
            "Time to answer a CRI call (to the response headers for streams)",
            Unit::Seconds,
            latency.clone(),
        );
        let pulls = Counter::default();
        registry.register(
            "image_pulls",
            "PullImage calls that succeeded",
            pulls.clone(),
        );
        let pull_failures = Family::<Reason, Counter>::default();
        registry.register(
            "image_pull_failures",
            "PullImage calls that failed, by reason",
            pull_failures.clone(),
        );
        let pull_bytes = Counter::default();
        registry.register_with_unit(
            "image_pull",
            "Bytes fetched from registries by PullImage",
            Unit::Bytes,
            pull_bytes.clone(),
        );
        let pull_seconds = Histogram::new(exponential_buckets(0.001, 4.0, 12));
        registry.register_with_unit(
            "image_pull_duration",
            "Time PullImage took",
            Unit::Seconds,
            pull_seconds.clone(),
        );
        let containers = Family::<State, Gauge>::default();
        registry.register("containers", "Containers by state", containers.clone());
        let pods = Family::<State, Gauge>::default();
        registry.register("pod_sandboxes", "Pod sandboxes by state", pods.clone());
        let oom_kills = Counter::default();
        registry.register(
            "oom_kills",
            "Containers whose process tree the monitor killed for passing its memory limit",
            oom_kills.clone(),
        );
        let monitor_deaths = Counter::default();
        registry.register(
            "monitor_deaths",
            "Container monitors that died without recording their container's exit",
            monitor_deaths.clone(),
        );
        let cpu_seconds = Counter::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "process_cpu",
            "CPU time used by the darwin-cri server",
            Unit::Seconds,
            cpu_seconds.clone(),
        );
        let resident_bytes = Gauge::default();
        registry.register_with_unit(
            "process_resident_memory",
            "Resident memory of the darwin-cri server",
            Unit::Bytes,
            resident_bytes.clone(),
        );
        let open_fds = Gauge::default();
        registry.register(
            "process_open_fds",
            "Open file descriptors of the darwin-cri server",
            open_fds.clone(),
        );
        let fs_avail = Gauge::default();
        registry.register_with_unit(
            "image_filesystem_avail",
            "Space left for unprivileged writes on the file system of the image store and container roots",
            Unit::Bytes,
            fs_avail.clone(),
        );
        let fs_size = Gauge::default();
        registry.register_with_unit(
            "image_filesystem_size",
            "Size of the file system of the image store and container roots",
            Unit::Bytes,
            fs_size.clone(),
        );
        let pool_roots = Gauge::default();
        registry.register(
            "root_pool_roots",
            "Container roots made ahead and ready for CreateContainer, over all images",
            pool_roots.clone(),
        );
        let pool_bytes = Gauge::default();
        registry.register_with_unit(
            "root_pool",
            "Disk taken by the roots made ahead (ready and being made; bounded by runtime.root_pool.max_mib)",
            Unit::Bytes,
            pool_bytes.clone(),
        );
        let start_time = Gauge::default();
        registry.register_with_unit(
            "process_start_time",
            "When the darwin-cri server started, since the Unix epoch",
            Unit::Seconds,
            start_time.clone(),
        );
        start_time.set(runtime::now_nanos() / 1_000_000_000);
        let build = Family::<Build, Gauge>::default();
        build
            .get_or_create(&Build {
                version: env!("CARGO_PKG_VERSION").into(),
                cri_version: "v1".into(),
                os: std::env::consts::OS.into(),
                arch: std::env::consts::ARCH.into(),
            })
            .set(1);
        registry.register(
            "build_info",
            "darwin-cri's version and platform; always 1",
            build,
        );
        Arc::new(Metrics {
            registry: Mutex::new(registry),
            calls,
            latency,
            containers,
            pods,
            pulls,
            pull_failures,
            pull_bytes,
            pull_seconds,
            oom_kills,
            monitor_deaths,
            cpu_seconds,
            resident_bytes,
            open_fds,
            fs_avail,
            fs_size,
            pool_roots,
            pool_bytes,
            _start_time: start_time,
            seen: Mutex::new((0, 0, 0.0)),
            runtime,
        })
    }

    fn record(&self, rpc: &str, code: tonic::Code, seconds: f64) {
        self.calls
            .get_or_create(&RpcCode {
                rpc: rpc.to_string(),
                code: format!("{code:?}"),
            })
            .inc();
        self.latency
            .get_or_create(&Rpc {
                rpc: rpc.to_string(),
            })
            .observe(seconds);
    }

    /// One PullImage: `outcome` names the result (a failure's reason), `bytes` were fetched.
    pub fn record_pull(&self, outcome: &str, succeeded: bool, bytes: u64, seconds: f64) {
        if succeeded {
            self.pulls.inc();
        } else {
            self.pull_failures
                .get_or_create(&Reason {
                    reason: outcome.to_string(),
                })
                .inc();
        }
        self.pull_bytes.inc_by(bytes);
        self.pull_seconds.observe(seconds);
    }

    /// Reads the runtime and the process, then renders everything.
    pub fn render(&self) -> String {
        let mut by_state = std::collections::HashMap::<&str, i64>::new();
        for c in self.runtime.list_containers() {
            let name = match c.state {
                ContainerState::Created => "created",
                ContainerState::Running => "running",
                ContainerState::Exited => "exited",
                ContainerState::Unknown => "unknown",
            };
            *by_state.entry(name).or_default() += 1;
        }
        for state in ["created", "running", "exited", "unknown"] {
            self.containers
                .get_or_create(&State {
                    state: state.into(),
                })
                .set(by_state.get(state).copied().unwrap_or(0));
        }
        if let Ok(fs) = nix::sys::statvfs::statvfs(self.runtime.root()) {
            let block = fs.fragment_size() as i64;
            self.fs_avail.set(fs.blocks_available() as i64 * block);
            self.fs_size.set(fs.blocks() as i64 * block);
        }
        let pool = self.runtime.pool_usage();
        self.pool_roots.set(pool.roots as i64);
        self.pool_bytes.set(pool.bytes as i64);
        let pods = self.runtime.list_pods();
        let ready = pods.iter().filter(|p| p.state == PodState::Ready).count() as i64;
        self.pods
            .get_or_create(&State {
                state: "ready".into(),
            })
            .set(ready);
        self.pods
            .get_or_create(&State {
                state: "notready".into(),
            })
            .set(pods.len() as i64 - ready);

        let me = std::process::id() as i32;
        let own = platform::process_usage(me);
        let (ooms, deaths) = self.runtime.kill_counts();
        if let Ok(mut seen) = self.seen.lock() {
            self.oom_kills.inc_by(ooms.saturating_sub(seen.0));
            self.monitor_deaths.inc_by(deaths.saturating_sub(seen.1));
            let cpu = own.map(|u| u.cpu_ns as f64 / 1e9).unwrap_or(seen.2);
            if cpu > seen.2 {
                self.cpu_seconds.inc_by(cpu - seen.2);
            }
            *seen = (ooms.max(seen.0), deaths.max(seen.1), cpu.max(seen.2));
        }
        if let Some(u) = own {
            self.resident_bytes.set(u.rss_bytes as i64);
        }
        let fds = std::fs::read_dir("/dev/fd")
            .map(|d| d.count() as i64 - 1)
            .unwrap_or(0);
        self.open_fds.set(fds.max(0));

        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}

/// The one door every CRI call passes (a tower layer around the gRPC services, as containerd's
/// instrumented service is): a tracing span per call (`cri{rpc=StartContainer id=...}`; handlers
/// record the pod or container id they were given with [`record_id`]), each failure logged once
/// with its gRPC code and message, and with metrics, the call counted by method and code and timed
/// (`darwin_cri_grpc_requests_total`, `darwin_cri_grpc_request_duration_seconds`).
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer(pub Option<Arc<Metrics>>);

/// Records the pod or container id a call is about in its span (see [`GrpcMetricsLayer`]).
pub fn record_id(id: &str) {
    tracing::Span::current().record("id", tracing::field::display(id));
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let rpc = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let span = tracing::info_span!("cri", rpc = %rpc, id = tracing::field::Empty);
        // The handler's future is made and polled inside the span: what it logs carries the call.
        let fut = span.in_scope(|| self.inner.call(req));
        Box::pin(
            async move {
                let res = fut.await;
                // An error comes back at once, with its status in the headers; a success's
                // status follows the body in the trailers, and is OK.
                let status = match &res {
                    Ok(r) => tonic::Status::from_header_map(r.headers()),
                    Err(_) => Some(tonic::Status::unknown("the service failed")),
                };
                let code = status.as_ref().map_or(tonic::Code::Ok, tonic::Status::code);
                let seconds = started.elapsed().as_secs_f64();
                if let Some(s) = status.filter(|s| s.code() != tonic::Code::Ok) {
                    // NotFound is how kubelet asks whether something exists: not worth a warning.
                    if s.code() == tonic::Code::NotFound {
                        tracing::debug!(code = ?s.code(), error = s.message(), seconds, "failed");
                    } else {
                        tracing::warn!(code = ?s.code(), error = s.message(), seconds, "failed");
                    }
                }
                if let Some(m) = metrics {
                    m.record(&rpc, code, seconds);
                }
                res
            }
            .instrument(span),
        )
    }
}

/// Serves `/metrics` on `address` until the process ends.
pub async fn serve(address: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listening for metrics on {address}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let metrics = Arc::clone(&metrics);
                        async move { Ok::<_, std::convert::Infallible>(respond(&req, &metrics)) }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

/// The same exposition in the classic Prometheus text format (0.0.4), for clients that do not
/// ask for OpenMetrics (promtool, curl): counter families take their `_total` name in HELP and
/// TYPE, and the OpenMetrics-only `# UNIT` and `# EOF` lines go.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

fn respond<B>(
    req: &http::Request<B>,
    metrics: &Metrics,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    let openmetrics = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let (status, content_type, body) = if req.uri().path() == "/metrics" && openmetrics {
        (
            http::StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        )
    } else if req.uri().path() == "/metrics" {
        (
            http::StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            to_prometheus_text(&metrics.render()),
        )
    } else {
        (
            http::StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics\n".to_string(),
        )
    };
    let mut response = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counters_by_their_samples() {
        let om = "# HELP x_calls Calls.\n# TYPE x_calls counter\nx_calls_total{a=\"b\"} 1\n# HELP x_up Up.\n# TYPE x_up gauge\n# UNIT x_up seconds\nx_up 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP x_calls_total Calls.\n# TYPE x_calls_total counter\nx_calls_total{a=\"b\"} 1\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n"
        );
    }
}
