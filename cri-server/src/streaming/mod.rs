//! The streaming server: the URLs that Exec, Attach and PortForward return, served on a
//! loopback address (kubelet proxies the client's connection to them).
//!
//! Each URL carries a single-use token from a CSPRNG that expires unused after
//! `streaming.token_ttl_seconds`; an unknown, used or expired token gets 404. The connection is
//! upgraded to SPDY/3.1 (`X-Stream-Protocol-Version`: v4/v3/v2.channel.k8s.io, channel.k8s.io,
//! portforward.k8s.io) or to WebSocket (`Sec-WebSocket-Protocol`: v5/v4.channel.k8s.io,
//! channel.k8s.io, base64.channel.k8s.io, v4.base64.channel.k8s.io, portforward.k8s.io), and
//! the same handlers ([`remotecommand`], [`portforward`]) serve either transport.
//!
//! The modules form a one-way graph (each imports only those below it):
//!
//! ```text
//! mod.rs (tokens, routing)
//!   -> spdy_transport (the `spdy` crate), ws (tokio-tungstenite): each upgrade, and the
//!      assembly of a session out of that transport's streams or channels
//!     -> remotecommand, portforward: the protocol logic both transports share
//!       -> channel (Source, Sink, Gone), request (what a token stands for)
//!   handshake (header lists, negotiation, plain-text answers): below the server and both
//!   transports
//! ```

pub mod channel;
pub mod handshake;
pub mod portforward;
pub mod remotecommand;
pub mod request;
pub mod spdy_transport;
pub mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use runtime::Runtime;

use handshake::{header_values, plain};
pub use request::Request;

/// Tokens waiting to be used, at most; more requests are refused until some expire.
const MAX_PENDING: usize = 1000;

#[derive(Debug, Clone)]
pub struct Options {
    pub address: SocketAddr,
    pub token_ttl: Duration,
    pub idle_timeout: Duration,
    pub stream_creation_timeout: Duration,
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

    fn handle(&self, req: hyper::Request<Incoming>) -> Response<Full<Bytes>> {
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
        if is_spdy {
            let timeouts = spdy_transport::Timeouts {
                idle: self.options.idle_timeout,
                stream_creation: self.options.stream_creation_timeout,
            };
            return spdy_transport::upgrade(Arc::clone(&self.runtime), timeouts, req, request);
        }
        if is_ws {
            return ws::upgrade(Arc::clone(&self.runtime), req, request);
        }
        plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: the request asks for neither SPDY/3.1 nor websocket",
        )
    }
}

/// 32 bytes from the OS CSPRNG, URL-safe base64 without padding.
fn new_token() -> Result<String, getrandom::Error> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}
