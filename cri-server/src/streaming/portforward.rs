//! Port forwarding (`portforward.k8s.io`): each client connection is a pair of streams, data
//! and error, joined to a TCP connection to the port on the pod's network, which on darwin-cri
//! is the host's loopback: so only to a port that a process of the pod listens on, never to
//! another service of the host or another pod (issue #26, 15). Either transport (`spdy_transport`, `ws`) makes a [`Pair`] of each
//! connection the client asks for and hands it to [`forward`].

use std::sync::Arc;

use bytes::Bytes;
use runtime::Runtime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::channel::{Sink, Source};

pub const PROTOCOL: &str = "portforward.k8s.io";

/// One forwarded connection as the client sees it, over a transport whose output channels are
/// `S`.
#[derive(Debug)]
pub struct Pair<S> {
    pub port: u16,
    pub data_in: Source,
    pub data_out: S,
    pub error: S,
}

/// Joins one client connection to a TCP connection to `pair.port` on the pod's (the host's)
/// loopback, both directions, each end's half-close passed on to the other; refused, on the
/// error stream, unless a process of the pod listens on that port.
pub async fn forward<S: Sink>(rt: &Arc<Runtime>, pod_id: &str, pair: Pair<S>) {
    let Pair {
        port,
        mut data_in,
        mut data_out,
        mut error,
    } = pair;
    let listening = {
        let (rt, pod) = (Arc::clone(rt), pod_id.to_string());
        tokio::task::spawn_blocking(move || rt.pod_listening_ports(&pod))
            .await
            .unwrap_or_else(|e| Err(runtime::Error::Internal(format!("{e}"))))
    };
    let refused = match &listening {
        Ok(ports) if ports.contains(&port) => None,
        Ok(ports) => Some(format!(
            "no process of the pod listens on TCP port {port} (its ports: {ports:?}); \
             pods share the host's network, so port-forward reaches only the pod's own ports"
        )),
        Err(e) => Some(format!("cannot tell which ports the pod listens on: {e}")),
    };
    if let Some(why) = refused {
        tracing::warn!(pod = pod_id, port, "port-forward refused: {why}");
        let _ = error
            .write(Bytes::from(format!(
                "error forwarding port {port} to pod {pod_id}: {why}"
            )))
            .await;
        return;
    }
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
