//! The WebSocket transport: each message carries one channel's bytes after a channel byte
//! (binary protocols) or a channel digit before base64 text (`base64.channel.k8s.io`). Exec
//! and attach use channels 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; `v5.channel.k8s.io`
//! adds the close signal (channel 255, then the channel the client closes). Port-forward uses
//! channels 2i (data) and 2i+1 (error) for the i-th `port` query parameter, each opened by the
//! port number, little-endian.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use runtime::Runtime;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Message, Role, WebSocketConfig};

use super::channel::{Gone, Sink};
use super::handshake::{header_values, negotiate, plain};
use super::portforward::{self, Pair};
use super::remotecommand::{self, Channels, StatusFormat};
use super::request::Request;

const REMOTE_COMMAND: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
const PORT_FORWARD: &[&str] = &[
    "portforward.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
];
const CLOSE_SIGNAL: u8 = 255;

/// What the handlers send.
#[derive(Debug)]
enum Outgoing {
    Data(u8, Bytes),
}

/// One channel's output: messages for the session's writer.
#[derive(Debug)]
struct ChannelSink {
    channel: u8,
    out: mpsc::Sender<Outgoing>,
}

impl Sink for ChannelSink {
    async fn write(&mut self, data: Bytes) -> std::io::Result<()> {
        self.out
            .send(Outgoing::Data(self.channel, data))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "the WebSocket connection is closed",
                )
            })
    }
}

/// Answers a WebSocket upgrade and serves the session in the background.
pub fn upgrade(
    runtime: Arc<Runtime>,
    mut req: hyper::Request<Incoming>,
    request: Request,
) -> Response<Full<Bytes>> {
    let headers = req.headers();
    let key = headers
        .get("sec-websocket-key")
        .and_then(|k| k.to_str().ok())
        .map(str::to_string);
    let version_ok = headers
        .get("sec-websocket-version")
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = key.filter(|_| version_ok) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade needs Sec-WebSocket-Key and Sec-WebSocket-Version 13",
        );
    };
    let port_forward = matches!(request, Request::PortForward { .. });
    let ports: Vec<u16> = if port_forward {
        let query = req.uri().query().unwrap_or_default();
        let ports: Result<Vec<u16>, String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| *k == "port")
            .map(|(_, v)| match v.parse::<u16>() {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(v.to_string()),
            })
            .collect();
        match ports {
            // Two channels per port, numbered from 0 in one byte.
            Ok(p) if p.len() > 127 => {
                return plain(StatusCode::BAD_REQUEST, "at most 127 ports per connection");
            }
            Ok(p) if !p.is_empty() => p,
            Ok(_) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "query parameter \"port\" is required",
                );
            }
            Err(bad) => {
                return plain(StatusCode::BAD_REQUEST, &format!("invalid port {bad:?}"));
            }
        }
    } else {
        Vec::new()
    };
    let offered = header_values(headers, "sec-websocket-protocol");
    let supported = if port_forward {
        PORT_FORWARD
    } else {
        REMOTE_COMMAND
    };
    let protocol = if offered.is_empty() {
        None
    } else {
        match negotiate(&offered, supported) {
            Some(p) => Some(p),
            None => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "none of the WebSocket protocols {offered:?} is supported; this server speaks {supported:?}"
                    ),
                );
            }
        }
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgraded = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(io) = upgraded.await else { return };
        let config = WebSocketConfig::default()
            .max_message_size(Some(16 << 20))
            .max_frame_size(Some(16 << 20));
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, Some(config)).await;
        serve(runtime, ws, request, protocol.unwrap_or(""), ports).await;
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        hyper::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        hyper::header::UPGRADE,
        HeaderValue::from_static("websocket"),
    );
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    if let Some(p) = protocol {
        h.insert("sec-websocket-protocol", HeaderValue::from_static(p));
    }
    resp
}

async fn serve<IO>(
    runtime: Arc<Runtime>,
    ws: WebSocketStream<IO>,
    request: Request,
    protocol: &'static str,
    ports: Vec<u16>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let base64 = protocol.contains("base64");
    let close_signal = protocol.starts_with("v5.");
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Outgoing>(64);
    // Ends once every sink is dropped: all output is out.
    let writer = tokio::spawn(async move {
        while let Some(Outgoing::Data(channel, data)) = out_rx.recv().await {
            let message = if base64 {
                let mut text = String::with_capacity(1 + data.len() * 4 / 3 + 4);
                text.push(char::from(b'0' + channel));
                base64::engine::general_purpose::STANDARD.encode_string(&data, &mut text);
                Message::text(text)
            } else {
                let mut bytes = Vec::with_capacity(1 + data.len());
                bytes.push(channel);
                bytes.extend_from_slice(&data);
                Message::binary(bytes)
            };
            if sink.send(message).await.is_err() {
                return;
            }
        }
        // A normal closure (1000) is the end of the session; a close without a code reads as
        // an error to client-go.
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
    });

    // Inbound channels: the client's input.
    let inputs: Vec<u8> = if ports.is_empty() {
        vec![0, 4]
    } else {
        (0..ports.len() as u8).map(|i| 2 * i).collect()
    };
    let mut senders: HashMap<u8, mpsc::Sender<Bytes>> = HashMap::new();
    let mut receivers: HashMap<u8, mpsc::Receiver<Bytes>> = HashMap::new();
    for ch in inputs {
        let (tx, rx) = mpsc::channel(8);
        senders.insert(ch, tx);
        receivers.insert(ch, rx);
    }
    let (gone_tx, gone_rx) = tokio::sync::watch::channel(false);
    let port_count = ports.len();
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            let (channel, data) = match message {
                Message::Binary(b) if !b.is_empty() => (b[0], b.slice(1..)),
                Message::Text(t) if base64 && !t.is_empty() => {
                    // Bytes, not chars: the first may be any UTF-8 character.
                    let t = t.as_bytes();
                    let channel = t[0].wrapping_sub(b'0');
                    match base64::engine::general_purpose::STANDARD.decode(&t[1..]) {
                        Ok(d) => (channel, Bytes::from(d)),
                        Err(_) => break,
                    }
                }
                Message::Close(_) => break,
                _ => continue,
            };
            if close_signal && channel == CLOSE_SIGNAL {
                if let Some(closed) = data.first() {
                    senders.remove(closed);
                }
                continue;
            }
            match senders.get(&channel) {
                Some(tx) if !data.is_empty() => {
                    let _ = tx.send(data).await;
                }
                Some(_) => {}
                // Data for a channel the client may not write: a broken client.
                None if !server_channel(channel, port_count) => break,
                None => {}
            }
        }
        let _ = gone_tx.send(true);
    });
    let gone = Gone(gone_rx);
    let sink_for = |channel: u8| ChannelSink {
        channel,
        out: out_tx.clone(),
    };
    match request {
        Request::PortForward { pod_id } => {
            let mut forwards = tokio::task::JoinSet::new();
            for (i, port) in ports.iter().copied().enumerate() {
                let (data_ch, error_ch) = (2 * i as u8, 2 * i as u8 + 1);
                let mut data_out = sink_for(data_ch);
                let mut error = sink_for(error_ch);
                let prefix = Bytes::copy_from_slice(&port.to_le_bytes());
                let _ = data_out.write(prefix.clone()).await;
                let _ = error.write(prefix).await;
                let Some(data_in) = receivers.remove(&data_ch) else {
                    continue;
                };
                let pod = pod_id.clone();
                let runtime = Arc::clone(&runtime);
                forwards.spawn(async move {
                    portforward::forward(
                        &runtime,
                        &pod,
                        Pair {
                            port,
                            data_in,
                            data_out,
                            error,
                        },
                    )
                    .await;
                });
            }
            tokio::select! {
                _ = async { while forwards.join_next().await.is_some() {} } => {}
                () = gone.wait() => forwards.shutdown().await,
            }
        }
        other => {
            let channels = Channels {
                format: StatusFormat::of(protocol),
                stdin: receivers.remove(&0),
                stdout: Some(sink_for(1)),
                stderr: Some(sink_for(2)),
                error: Some(sink_for(3)),
                resize: receivers.remove(&4),
            };
            remotecommand::serve(&runtime, other, channels, gone).await;
        }
    }
    drop(out_tx);
    let mut writer = writer;
    if tokio::time::timeout(Duration::from_secs(5), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    reader.abort();
}

/// Whether `channel` is one the server writes (so input on it is merely ignored).
fn server_channel(channel: u8, ports: usize) -> bool {
    if ports == 0 {
        channel <= 4
    } else {
        usize::from(channel) < 2 * ports
    }
}
