//! The streaming server: the URLs that Exec, Attach and PortForward return, served on a
//! loopback address (kubelet proxies the client's connection to them).
//!
//! Each URL carries a single-use token from a CSPRNG that expires unused after
//! `streaming.token_ttl_seconds`; an unknown, used or expired token gets 404. The connection is
//! upgraded to SPDY/3.1 (`X-Stream-Protocol-Version`: v4/v3/v2.channel.k8s.io, channel.k8s.io,
//! portforward.k8s.io) or to WebSocket (`Sec-WebSocket-Protocol`: v5/v4.channel.k8s.io,
//! channel.k8s.io, base64.channel.k8s.io, v4.base64.channel.k8s.io, portforward.k8s.io), and
//! the same handlers ([`remotecommand`], [`portforward`]) serve either transport.

pub mod channel;
pub mod portforward;
pub mod remotecommand;
pub mod spdy;
pub mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderMap, HeaderValue, UPGRADE};
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use runtime::Runtime;
use runtime::exec::ExecRequest;

/// Tokens waiting to be used, at most; more requests are refused until some expire.
const MAX_PENDING: usize = 1000;

#[derive(Debug, Clone)]
pub struct Options {
    pub address: SocketAddr,
    pub token_ttl: Duration,
    pub idle_timeout: Duration,
    pub stream_creation_timeout: Duration,
}

/// What a token stands for.
#[derive(Debug, Clone)]
pub enum Request {
    Exec {
        container_id: String,
        exec: ExecRequest,
    },
    Attach {
        container_id: String,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        tty: bool,
    },
    PortForward {
        pod_id: String,
    },
}

impl Request {
    fn path(&self) -> &'static str {
        match self {
            Request::Exec { .. } => "exec",
            Request::Attach { .. } => "attach",
            Request::PortForward { .. } => "portforward",
        }
    }
}

/// Why no URL could be handed out.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("{MAX_PENDING} streaming requests already wait for their clients; try again later")]
    Busy,
    #[error("no random token: {0}")]
    Random(String),
}

pub struct Server {
    runtime: Arc<Runtime>,
    options: Options,
    base_url: String,
    pending: Mutex<HashMap<String, (Request, Instant)>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds the listener and serves it in the background.
    pub async fn start(runtime: Arc<Runtime>, options: Options) -> anyhow::Result<Arc<Server>> {
        use anyhow::Context;
        let listener = tokio::net::TcpListener::bind(options.address)
            .await
            .with_context(|| format!("binding the streaming server to {}", options.address))?;
        let bound = listener.local_addr()?;
        let server = Arc::new(Server {
            runtime,
            base_url: format!("http://{bound}"),
            options,
            pending: Mutex::new(HashMap::new()),
        });
        let serving = Arc::clone(&server);
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = conn.set_nodelay(true);
                let server = Arc::clone(&serving);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let server = Arc::clone(&server);
                        async move { Ok::<_, std::convert::Infallible>(server.handle(req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(conn), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Ok(server)
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Registers `request` and returns the URL its client connects to.
    pub fn url_for(&self, request: Request) -> Result<String, UrlError> {
        let token = new_token().map_err(|e| UrlError::Random(e.to_string()))?;
        let path = request.path();
        let mut pending = self.pending.lock().map_err(|_| UrlError::Busy)?;
        if pending.len() >= MAX_PENDING {
            let ttl = self.options.token_ttl;
            pending.retain(|_, (_, at)| at.elapsed() < ttl);
            if pending.len() >= MAX_PENDING {
                return Err(UrlError::Busy);
            }
        }
        pending.insert(token.clone(), (request, Instant::now()));
        Ok(format!("{}/{path}/{token}", self.base_url))
    }

    /// Takes the request behind `token`: each token is good once, and only until it expires.
    fn consume(&self, token: &str) -> Option<Request> {
        let mut pending = self.pending.lock().ok()?;
        let (request, at) = pending.remove(token)?;
        (at.elapsed() < self.options.token_ttl).then_some(request)
    }

    fn handle(self: Arc<Self>, mut req: hyper::Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let (kind, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if !matches!(kind, "exec" | "attach" | "portforward") || token.is_empty() {
            return plain(StatusCode::NOT_FOUND, "not found");
        }
        let Some(request) = self.consume(token) else {
            return plain(
                StatusCode::NOT_FOUND,
                "unknown, used or expired streaming token",
            );
        };
        if request.path() != kind {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("this token is for /{}, not /{kind}", request.path()),
            );
        }
        let upgrade = header_values(req.headers(), "upgrade");
        let is_spdy = upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1"));
        let is_ws = upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket"));
        let port_forward = matches!(request, Request::PortForward { .. });
        if is_spdy {
            let offered = header_values(req.headers(), "x-stream-protocol-version");
            let supported: &[&str] = if port_forward {
                &[portforward::PROTOCOL]
            } else {
                remotecommand::SPDY_PROTOCOLS
            };
            if offered.is_empty() {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "unable to upgrade: X-Stream-Protocol-Version is required",
                );
            }
            let Some(protocol) = negotiate(&offered, supported) else {
                let mut resp = plain(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"
                    ),
                );
                for p in supported {
                    resp.headers_mut().append(
                        "x-accepted-stream-protocol-versions",
                        HeaderValue::from_static(p),
                    );
                }
                return resp;
            };
            let upgraded = hyper::upgrade::on(&mut req);
            let server = Arc::clone(&self);
            tokio::spawn(async move {
                match upgraded.await {
                    Ok(io) => server.serve_spdy(TokioIo::new(io), request, protocol).await,
                    Err(e) => tracing::debug!(error = %e, "SPDY upgrade failed"),
                }
            });
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = resp.headers_mut();
            h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
            h.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            h.insert(
                "x-stream-protocol-version",
                HeaderValue::from_static(protocol),
            );
            return resp;
        }
        if is_ws {
            return ws::upgrade(self, req, request);
        }
        plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: the request asks for neither SPDY/3.1 nor websocket",
        )
    }

    async fn serve_spdy<IO>(self: Arc<Self>, io: IO, request: Request, protocol: &'static str)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        let config = spdy::session::Config {
            idle_timeout: self.options.idle_timeout,
            limits: Default::default(),
        };
        let (session, streams) = spdy::session::Session::start(io, config);
        let gone = session.client_gone();
        let status = match request {
            Request::PortForward { pod_id } => {
                portforward::serve_spdy(
                    &self.runtime,
                    &pod_id,
                    streams,
                    self.options.stream_creation_timeout,
                )
                .await;
                spdy::frame::goaway::OK
            }
            other => {
                match remotecommand::spdy_channels(
                    streams,
                    &other,
                    protocol,
                    self.options.stream_creation_timeout,
                )
                .await
                {
                    Ok(channels) => {
                        remotecommand::serve(&self.runtime, other, channels, gone).await;
                        spdy::frame::goaway::OK
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "streaming session refused");
                        spdy::frame::goaway::PROTOCOL_ERROR
                    }
                }
            }
        };
        session.close(status).await;
    }
}

/// The first protocol the client offers that the server supports.
fn negotiate(offered: &[String], supported: &[&'static str]) -> Option<&'static str> {
    offered.iter().find_map(|o| {
        supported
            .iter()
            .find(|s| s.eq_ignore_ascii_case(o))
            .copied()
    })
}

/// Every value of header `name`, comma-separated lists split.
fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// 32 bytes from the OS CSPRNG, URL-safe base64 without padding.
fn new_token() -> Result<String, getrandom::Error> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}
