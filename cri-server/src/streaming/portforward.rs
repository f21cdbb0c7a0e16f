//! Port forwarding (`portforward.k8s.io`): each client connection is a pair of streams, data
//! and error, joined to a TCP connection to the port on the pod's network, which on darwin-cri
//! is the host's loopback.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use runtime::Runtime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::channel::{Sink, Source};
use super::spdy::frame::{header, rst};
use super::spdy::session::IncomingStream;

pub const PROTOCOL: &str = "portforward.k8s.io";

/// One forwarded connection as the client sees it.
#[derive(Debug)]
pub struct Pair {
    pub port: u16,
    pub data_in: Source,
    pub data_out: Sink,
    pub error: Sink,
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
pub async fn serve_spdy(
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
            forwards.spawn(async move {
                let mut error_sink = Sink::Spdy(error.writer);
                match port_header.parse::<u16>() {
                    Ok(port) if port > 0 => {
                        forward(
                            &pod,
                            Pair {
                                port,
                                data_in: data.data,
                                data_out: Sink::Spdy(data.writer),
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

/// Joins one client connection to a TCP connection to `pair.port` on the pod's (the host's)
/// loopback, both directions, each end's half-close passed on to the other.
pub async fn forward(pod_id: &str, pair: Pair) {
    let Pair {
        port,
        mut data_in,
        mut data_out,
        mut error,
    } = pair;
    let conn = match tokio::net::TcpStream::connect(("localhost", port)).await {
        Ok(c) => c,
        Err(e) => {
            let _ = error
                .write(Bytes::from(format!(
                    "error forwarding port {port} to pod {pod_id}: {e}"
                )))
                .await;
            return;
        }
    };
    let _ = conn.set_nodelay(true);
    let (mut rd, mut wr) = conn.into_split();
    let upstream = async move {
        while let Some(bytes) = data_in.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
        // Kept until the other direction ends, so the connection is not torn down early.
        std::future::pending::<()>().await;
    };
    let downstream = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if data_out
                        .write(Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        // Dropping the sink ends the client's side of the data stream.
        drop(data_out);
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}
