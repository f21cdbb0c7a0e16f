//! hostPort: the node's port forwarded to a container's port.
//!
//! Pods share the node's network (macOS has no network namespaces), so a container that listens
//! on its containerPort already listens on the node. A hostPort that differs from the
//! containerPort gets a forwarder: darwin-cri listens on the host port and relays each TCP
//! connection, and each UDP peer's datagrams, to the container's port on loopback. Where the two
//! are equal there is nothing to forward, but the port is still claimed, so that two pods asking
//! for one host port are refused at RunPodSandbox instead of the second one failing to bind
//! inside its container later. Forwarders live with the pod: they stop at StopPodSandbox and
//! are opened again for ready pods when the server restarts.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

use crate::model::{PortMapping, Protocol};
use crate::{Error, Result};

/// A UDP peer with no traffic for this long is forgotten, and its upstream socket closed.
const UDP_IDLE: Duration = Duration::from_secs(60);
/// UDP peers relayed at once per port; a datagram from one more peer is dropped.
const UDP_MAX_PEERS: usize = 1024;
/// Largest datagram relayed.
const UDP_MAX_DATAGRAM: usize = 65_535;

/// Which pod holds a host port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Claim {
    protocol: Protocol,
    port: u16,
}

#[derive(Debug)]
struct PodPorts {
    claims: Vec<(Claim, Option<IpAddr>)>,
    /// Aborted, with every connection they relay, when dropped: never read, only held.
    #[allow(dead_code)]
    forwarders: JoinSet<()>,
}

/// The host ports of every ready pod.
#[derive(Debug, Default)]
pub struct HostPorts {
    pods: Mutex<HashMap<String, PodPorts>>,
}

fn host_ip(m: &PortMapping) -> Result<Option<IpAddr>> {
    if m.host_ip.is_empty() {
        return Ok(None);
    }
    m.host_ip.parse().map(Some).map_err(|_| {
        Error::InvalidArgument(format!(
            "port mapping {}/{}: host IP {:?} is not an IP address",
            m.host_port, m.protocol, m.host_ip
        ))
    })
}

/// Two claims on one port clash unless both name different addresses.
fn clashes(a: Option<IpAddr>, b: Option<IpAddr>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

impl HostPorts {
    /// Claims the host ports of `mappings` for `pod_id` and starts their forwarders. Nothing is
    /// claimed when any of them is refused.
    pub fn open(&self, pod_id: &str, mappings: &[PortMapping]) -> Result<()> {
        let mut pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        let mut claims: Vec<(Claim, Option<IpAddr>)> = Vec::new();
        let mut forwards = Vec::new();
        for m in mappings.iter().filter(|m| m.host_port != 0) {
            if m.protocol == Protocol::Sctp {
                return Err(Error::InvalidArgument(format!(
                    "port mapping {}/SCTP: SCTP host ports are not available on darwin nodes",
                    m.host_port
                )));
            }
            if m.container_port == 0 {
                return Err(Error::InvalidArgument(format!(
                    "port mapping {}/{}: a host port needs a container port",
                    m.host_port, m.protocol
                )));
            }
            let ip = host_ip(m)?;
            let claim = Claim {
                protocol: m.protocol,
                port: m.host_port,
            };
            let taken_by = pods.iter().find_map(|(id, p)| {
                p.claims
                    .iter()
                    .any(|(c, other)| c == &claim && clashes(ip, *other))
                    .then_some(id)
            });
            if let Some(other) = taken_by {
                return Err(Error::FailedPrecondition(format!(
                    "host port {}/{} is already used by pod sandbox {other}",
                    m.host_port, m.protocol
                )));
            }
            if claims.iter().any(|(c, o)| c == &claim && clashes(ip, *o)) {
                return Err(Error::InvalidArgument(format!(
                    "host port {}/{} is asked for twice",
                    m.host_port, m.protocol
                )));
            }
            claims.push((claim, ip));
            if m.host_port != m.container_port {
                forwards.push((m.clone(), ip));
            }
        }
        if claims.is_empty() {
            return Ok(());
        }
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Internal("host ports are served from the async runtime".into()))?;
        let mut forwarders = JoinSet::new();
        for (m, ip) in forwards {
            let bind =
                SocketAddr::new(ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), m.host_port);
            let loopback = match ip {
                Some(IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
            };
            let target = SocketAddr::new(loopback, m.container_port);
            let cannot = |e: std::io::Error| {
                Error::FailedPrecondition(format!(
                    "host port {}/{} cannot be opened on {}: {e}",
                    m.host_port,
                    m.protocol,
                    bind.ip()
                ))
            };
            // Bound here, not in the task, so that a port another program holds fails the
            // RunPodSandbox that asks for it.
            match m.protocol {
                Protocol::Tcp => {
                    let std = std::net::TcpListener::bind(bind).map_err(cannot)?;
                    std.set_nonblocking(true).map_err(cannot)?;
                    let _guard = handle.enter();
                    let listener = TcpListener::from_std(std).map_err(cannot)?;
                    forwarders.spawn_on(forward_tcp(listener, target), &handle);
                }
                Protocol::Udp => {
                    let std = std::net::UdpSocket::bind(bind).map_err(cannot)?;
                    std.set_nonblocking(true).map_err(cannot)?;
                    let _guard = handle.enter();
                    let socket = UdpSocket::from_std(std).map_err(cannot)?;
                    forwarders.spawn_on(forward_udp(Arc::new(socket), target), &handle);
                }
                Protocol::Sctp => unreachable!("refused above"),
            }
            tracing::info!(pod = pod_id, host = %bind, container = %target, protocol = %m.protocol, "forwarding a host port");
        }
        pods.insert(pod_id.to_string(), PodPorts { claims, forwarders });
        Ok(())
    }

    /// Releases the pod's host ports and stops their forwarders and connections.
    pub fn close(&self, pod_id: &str) {
        let removed = self
            .pods
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(pod_id);
        drop(removed);
    }
}

async fn forward_tcp(listener: TcpListener, target: SocketAddr) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((mut inbound, _)) => {
                    connections.spawn(async move {
                        match TcpStream::connect(target).await {
                            Ok(mut outbound) => {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            }
                            Err(e) => tracing::debug!(%target, error = %e, "host port: the container's port does not answer"),
                        }
                    });
                }
                // Out of descriptors and the like: wait rather than spin.
                Err(e) => {
                    tracing::warn!(%target, error = %e, "host port: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

async fn forward_udp(socket: Arc<UdpSocket>, target: SocketAddr) {
    // One upstream socket per peer, so that the container's replies find their way back.
    let mut peers: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut relays: JoinSet<SocketAddr> = JoinSet::new();
    let mut buf = vec![0u8; UDP_MAX_DATAGRAM];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((n, peer)) = received else { continue };
                let upstream = match peers.get(&peer) {
                    Some(u) => Arc::clone(u),
                    None => {
                        if peers.len() >= UDP_MAX_PEERS {
                            continue;
                        }
                        let local = if target.is_ipv6() { "[::1]:0" } else { "127.0.0.1:0" };
                        let Ok(u) = UdpSocket::bind(local).await else { continue };
                        if u.connect(target).await.is_err() {
                            continue;
                        }
                        let u = Arc::new(u);
                        peers.insert(peer, Arc::clone(&u));
                        relays.spawn(reply_udp(Arc::clone(&u), Arc::clone(&socket), peer));
                        u
                    }
                };
                let _ = upstream.send(&buf[..n]).await;
            }
            Some(done) = relays.join_next() => {
                if let Ok(peer) = done {
                    peers.remove(&peer);
                }
            }
        }
    }
}

/// Relays the container's replies to one peer until it has been idle for [`UDP_IDLE`].
async fn reply_udp(
    upstream: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
) -> SocketAddr {
    let mut buf = vec![0u8; UDP_MAX_DATAGRAM];
    while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, upstream.recv(&mut buf)).await {
        let _ = socket.send_to(&buf[..n], peer).await;
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn mapping(protocol: Protocol, host_port: u16, container_port: u16) -> PortMapping {
        PortMapping {
            protocol,
            container_port,
            host_port,
            host_ip: String::new(),
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    #[tokio::test]
    async fn tcp_and_udp_are_forwarded_and_a_second_claim_is_refused() {
        let backend = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let container_port = backend.local_addr().expect("addr").port();
        let udp_backend = UdpSocket::bind(("127.0.0.1", container_port))
            .await
            .expect("udp bind");
        let host_port = free_port();
        let ports = HostPorts::default();
        ports
            .open(
                "a",
                &[
                    mapping(Protocol::Tcp, host_port, container_port),
                    mapping(Protocol::Udp, host_port, container_port),
                ],
            )
            .expect("open");

        tokio::spawn(async move {
            let (mut s, _) = backend.accept().await.expect("accept");
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.expect("read");
            s.write_all(&b).await.expect("echo");
        });
        let mut c = TcpStream::connect(("127.0.0.1", host_port))
            .await
            .expect("connect");
        c.write_all(b"ping").await.expect("write");
        let mut b = [0u8; 4];
        c.read_exact(&mut b).await.expect("read");
        assert_eq!(&b, b"ping");

        tokio::spawn(async move {
            let mut b = [0u8; 16];
            let (n, from) = udp_backend.recv_from(&mut b).await.expect("recv");
            udp_backend.send_to(&b[..n], from).await.expect("reply");
        });
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        client
            .send_to(b"dgram", ("127.0.0.1", host_port))
            .await
            .expect("send");
        let mut b = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut b))
            .await
            .expect("a reply in time")
            .expect("recv");
        assert_eq!(&b[..n], b"dgram");

        let err = ports
            .open("b", &[mapping(Protocol::Tcp, host_port, host_port)])
            .expect_err("a port held by pod a");
        assert!(
            err.to_string().contains("already used by pod sandbox a"),
            "{err}"
        );
        ports
            .open("b", &[mapping(Protocol::Sctp, 0, 5)])
            .expect("no host port, nothing to claim");

        ports.close("a");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            TcpStream::connect(("127.0.0.1", host_port)).await.is_err(),
            "the forwarder stops with its pod"
        );
        ports
            .open("b", &[mapping(Protocol::Tcp, host_port, host_port)])
            .expect("free again");
    }
}
