//! The SPDY/3.1 transport (the `spdy` crate): the upgrade to SPDY, and the assembly of a
//! remote-command or port-forward session out of the streams the client opens (by their
//! `streamType`, `requestID` and `port` headers), handed to the shared handlers in
//! [`remotecommand`] and [`portforward`]. Every stream's [`StreamWriter`] is a [`Sink`].

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue, UPGRADE};
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use runtime::Runtime;
use spdy::frame::{goaway, header, rst};
use spdy::session::{IncomingStream, Session, StreamWriter};
use tokio::sync::mpsc;

use super::channel::{Gone, Sink};
use super::handshake::{header_values, negotiate, plain};
use super::portforward::{self, Pair};
use super::remotecommand::{self, Channels, StatusFormat};
use super::request::Request;

/// Remote-command subprotocols over SPDY, preferred first.
const REMOTE_COMMAND: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// The server's settings a SPDY session follows.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A session with no traffic for this long is closed.
    pub idle: Duration,
    /// How long the client has to open a session's streams (each port-forward pair's second).
    pub stream_creation: Duration,
}

impl Sink for StreamWriter {
    fn write(&mut self, data: Bytes) -> impl Future<Output = std::io::Result<()>> + Send {
        StreamWriter::write(self, data)
    }
}

/// Answers a SPDY/3.1 upgrade (the `X-Stream-Protocol-Version` negotiation) and serves the
/// session in the background.
pub fn upgrade(
    runtime: Arc<Runtime>,
    timeouts: Timeouts,
    mut req: hyper::Request<Incoming>,
    request: Request,
) -> Response<Full<Bytes>> {
    let port_forward = matches!(request, Request::PortForward { .. });
    let offered = header_values(req.headers(), "x-stream-protocol-version");
    let supported: &[&str] = if port_forward {
        &[portforward::PROTOCOL]
    } else {
        REMOTE_COMMAND
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
    tokio::spawn(async move {
        match upgraded.await {
            Ok(io) => serve(&runtime, timeouts, TokioIo::new(io), request, protocol).await,
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
    resp
}

/// Runs the session on the upgraded connection `io` and closes it with GOAWAY.
async fn serve<IO>(
    rt: &Arc<Runtime>,
    timeouts: Timeouts,
    io: IO,
    request: Request,
    protocol: &'static str,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let config = spdy::session::Config {
        idle_timeout: timeouts.idle,
        limits: Default::default(),
    };
    let (session, streams) = Session::start(io, config);
    let gone = Gone(session.client_gone());
    let status = match request {
        Request::PortForward { pod_id } => {
            serve_portforward(rt, &pod_id, streams, timeouts.stream_creation).await;
            goaway::OK
        }
        other => {
            match remotecommand_channels(streams, &other, protocol, timeouts.stream_creation).await
            {
                Ok((channels, held_open)) => {
                    remotecommand::serve(rt, other, channels, gone).await;
                    drop(held_open);
                    goaway::OK
                }
                Err(e) => {
                    tracing::warn!(error = %e, "streaming session refused");
                    goaway::PROTOCOL_ERROR
                }
            }
        }
    };
    session.close(status).await;
}

/// The streams a session of `request` in `protocol` has, by `streamType` name.
fn expected_streams(request: &Request, protocol: &str) -> BTreeSet<&'static str> {
    let (stdin, stdout, stderr, tty) = match request {
        Request::Exec { exec, .. } => (exec.stdin, exec.stdout, exec.stderr, exec.tty),
        Request::Attach {
            stdin,
            stdout,
            stderr,
            tty,
            ..
        } => (*stdin, *stdout, *stderr, *tty),
        Request::PortForward { .. } => (false, false, false, false),
    };
    let resize = tty && !matches!(protocol, "channel.k8s.io" | "v2.channel.k8s.io");
    [
        ("error", true),
        ("stdin", stdin),
        ("stdout", stdout),
        ("stderr", stderr && !tty),
        ("resize", resize),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(name, _)| name)
    .collect()
}

/// Waits (up to `timeout`) for the client to open every stream the session needs. A stream of
/// an unknown or repeated type ends the session.
///
/// Besides the channels, returns this side of the streams the session only reads (stdin,
/// resize), to be kept open until the session ends: client-go takes the end of the server's
/// side of stdin as the end of the session and stops sending.
async fn remotecommand_channels(
    mut streams: mpsc::Receiver<IncomingStream>,
    request: &Request,
    protocol: &str,
    timeout: Duration,
) -> Result<(Channels<StreamWriter>, Vec<StreamWriter>), String> {
    let mut wanted = expected_streams(request, protocol);
    let mut ch = Channels {
        format: StatusFormat::of(protocol),
        stdin: None,
        stdout: None,
        stderr: None,
        error: None,
        resize: None,
    };
    let mut held_open = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !wanted.is_empty() {
        let stream = match tokio::time::timeout_at(deadline, streams.recv()).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err("the client left before creating its streams".into()),
            Err(_) => {
                return Err(format!(
                    "timed out after {timeout:?} waiting for the client to create streams {wanted:?}"
                ));
            }
        };
        let kind = header(&stream.headers, "streamtype")
            .unwrap_or_default()
            .to_string();
        if !wanted.remove(kind.as_str()) {
            stream.writer.reset(rst::PROTOCOL_ERROR);
            return Err(format!("unexpected stream type {kind:?}"));
        }
        match kind.as_str() {
            "error" => ch.error = Some(stream.writer),
            "stdout" => ch.stdout = Some(stream.writer),
            "stderr" => ch.stderr = Some(stream.writer),
            "stdin" => {
                ch.stdin = Some(stream.data);
                held_open.push(stream.writer);
            }
            _ => {
                ch.resize = Some(stream.data);
                held_open.push(stream.writer);
            }
        }
    }
    // Streams opened later have no place in the session.
    tokio::spawn(async move {
        while let Some(s) = streams.recv().await {
            s.writer.reset(rst::PROTOCOL_ERROR);
        }
    });
    Ok((ch, held_open))
}

#[derive(Default)]
struct Half {
    data: Option<IncomingStream>,
    error: Option<IncomingStream>,
    since: Option<Instant>,
}

/// Serves a SPDY port-forward session: pairs streams by `requestID` (or, from clients too old
/// to send one, by stream id: data = error + 2) and forwards each pair once both arrived.
/// A pair whose second stream does not come within `timeout` is reset.
async fn serve_portforward(
    rt: &Arc<Runtime>,
    pod_id: &str,
    mut streams: mpsc::Receiver<IncomingStream>,
    timeout: Duration,
) {
    if let Err(e) = rt.pod(pod_id) {
        tracing::warn!(pod = pod_id, error = %e, "port-forward to an unknown pod");
        return;
    }
    let mut halves: HashMap<String, Half> = HashMap::new();
    let mut forwards = tokio::task::JoinSet::new();
    let mut sweep = tokio::time::interval(timeout.min(Duration::from_secs(1)));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = tokio::select! {
            s = streams.recv() => s,
            _ = sweep.tick(), if !halves.is_empty() => {
                halves.retain(|_, h| {
                    let keep = h.since.is_some_and(|t| t.elapsed() < timeout);
                    if !keep {
                        for s in [h.data.take(), h.error.take()].into_iter().flatten() {
                            s.writer.reset(rst::REFUSED_STREAM);
                        }
                    }
                    keep
                });
                continue;
            }
            Some(_) = forwards.join_next(), if !forwards.is_empty() => continue,
        };
        let Some(stream) = next else { break };
        let kind = header(&stream.headers, "streamtype")
            .unwrap_or_default()
            .to_string();
        let key = match header(&stream.headers, "requestid") {
            Some(id) => id.to_string(),
            None if kind == "data" => (stream.id.saturating_sub(2)).to_string(),
            None => stream.id.to_string(),
        };
        let half = halves.entry(key.clone()).or_default();
        half.since.get_or_insert_with(Instant::now);
        let slot = match kind.as_str() {
            "data" => &mut half.data,
            "error" => &mut half.error,
            other => {
                tracing::warn!(stream_type = other, "port-forward: unexpected stream type");
                stream.writer.reset(rst::PROTOCOL_ERROR);
                break;
            }
        };
        if slot.is_some() {
            stream.writer.reset(rst::PROTOCOL_ERROR);
            continue;
        }
        *slot = Some(stream);
        if half.data.is_some()
            && half.error.is_some()
            && let Some(Half {
                data: Some(data),
                error: Some(error),
                ..
            }) = halves.remove(&key)
        {
            let port_header = header(&data.headers, "port")
                .unwrap_or_default()
                .to_string();
            let pod = pod_id.to_string();
            let rt = Arc::clone(rt);
            forwards.spawn(async move {
                let mut error_sink = error.writer;
                match port_header.parse::<u16>() {
                    Ok(port) if port > 0 => {
                        portforward::forward(
                            &rt,
                            &pod,
                            Pair {
                                port,
                                data_in: data.data,
                                data_out: data.writer,
                                error: error_sink,
                            },
                        )
                        .await
                    }
                    _ => {
                        let _ = error_sink
                            .write(Bytes::from(format!(
                                "invalid port {port_header:?}: a port from 1 to 65535 is required"
                            )))
                            .await;
                    }
                }
            });
        }
    }
    // The client is gone: its connections end with it.
    forwards.shutdown().await;
}
