//! Exec, attach and port-forward through the streaming server, with SPDY and WebSocket clients
//! written here, against the real binary and busybox containers.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use darwin_cri_tests::streaming::frame::Frame;
use darwin_cri_tests::streaming::{SpdyClient, spdy_session, text, upgrade};
use darwin_cri_tests::*;
use futures_util::{SinkExt, StreamExt};
use k8s_cri::v1 as cri;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn running(
    rt: &mut Rt,
    server: &Server,
    name: &str,
    config: cri::ContainerConfig,
) -> anyhow::Result<(String, String)> {
    let pod = run_pod(rt, server, name).await?;
    let id = create(rt, &pod, config).await?;
    start(rt, &id).await?;
    Ok((pod, id))
}

async fn exec_url(
    rt: &mut Rt,
    id: &str,
    cmd: &[&str],
    stdin: bool,
    tty: bool,
) -> anyhow::Result<String> {
    Ok(rt
        .exec(cri::ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin,
            stdout: true,
            stderr: !tty,
        })
        .await?
        .into_inner()
        .url)
}

/// The URL of an attach with stdout and the other streams as asked.
async fn attach_url(
    rt: &mut Rt,
    id: &str,
    stdin: bool,
    stderr: bool,
    tty: bool,
) -> anyhow::Result<String> {
    Ok(rt
        .attach(cri::AttachRequest {
            container_id: id.into(),
            stdin,
            stdout: true,
            stderr,
            tty,
        })
        .await?
        .into_inner()
        .url)
}

async fn port_forward_url(rt: &mut Rt, pod: &str, ports: &[u16]) -> anyhow::Result<String> {
    Ok(rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod.into(),
            port: ports.iter().map(|p| i32::from(*p)).collect(),
        })
        .await?
        .into_inner()
        .url)
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Live processes whose root is `rootfs` (the container's, exec'd ones included).
fn processes_in(rootfs: &std::path::Path) -> usize {
    processes_under(rootfs).len()
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_over_spdy() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let (pod, id) = running(
        &mut rt,
        &server,
        "spdy",
        container_config("c", "sleep 3600"),
    )
    .await?;

    // Output on both streams and the exit code in the v4 Status.
    let url = exec_url(
        &mut rt,
        &id,
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
        false,
        false,
    )
    .await?;
    let r = spdy_session(&url, None, true, false).await?;
    assert_eq!(r.stdout, b"out\n");
    assert_eq!(r.stderr, b"err\n");
    assert_eq!(r.exit_code(), Some(3), "{}", r.error);
    assert!(r.error.contains("NonZeroExitCode"), "{}", r.error);

    // The token was for one connection.
    let (code, head, ..) = upgrade(
        &url,
        &[
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
        ],
    )
    .await?;
    assert_eq!(code, 404, "{head}");

    // 1 MiB of stdin through cat comes back intact, from a client that keeps no windows (as
    // kubectl's) and from one that does.
    let input: Vec<u8> = (0..(1 << 20))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for window_updates in [false, true] {
        let url = exec_url(&mut rt, &id, &["cat"], true, false).await?;
        let r = spdy_session(&url, Some(&input), true, window_updates).await?;
        assert_eq!(
            r.stdout.len(),
            input.len(),
            "window updates: {window_updates}"
        );
        assert_eq!(sha(&r.stdout), sha(&input));
        assert_eq!(r.exit_code(), Some(0), "{}", r.error);
    }

    // The older protocol reports failure as text, success as nothing.
    let url = exec_url(&mut rt, &id, &["sh", "-c", "exit 7"], false, false).await?;
    let mut c = SpdyClient::connect(&url, &["v2.channel.k8s.io"]).await?;
    assert_eq!(c.protocol, "v2.channel.k8s.io");
    let error = c.open_streams(false, true, false).error;
    let (data, _) = c.collect(Duration::from_secs(20)).await?;
    let text = text(&data, error);
    assert!(text.contains("exit status 7"), "{text}");

    // A protocol the server does not speak is refused with the ones it does.
    let url = exec_url(&mut rt, &id, &["true"], false, false).await?;
    let (code, head, ..) = upgrade(
        &url,
        &[
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v9.channel.k8s.io"),
        ],
    )
    .await?;
    assert_eq!(code, 403, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-accepted-stream-protocol-versions: v4.channel.k8s.io"),
        "{head}"
    );

    // A client that goes away takes its process with it.
    let rootfs = server.container_dir(&pod, &id).join("rootfs");
    assert!(
        processes_in(&rootfs) >= 1,
        "the container's own process is seen"
    );
    let before = processes_in(&rootfs);
    let url = exec_url(&mut rt, &id, &["sleep", "1000"], true, false).await?;
    let mut c = SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await?;
    c.open_streams(true, true, false);
    wait_for(
        Duration::from_secs(10),
        "the exec'd sleep to start",
        || async { (processes_in(&rootfs) > before).then_some(()) },
    )
    .await?;
    drop(c);
    wait_for(
        Duration::from_secs(10),
        "the exec'd sleep to be killed",
        || async { (processes_in(&rootfs) == before).then_some(()) },
    )
    .await?;

    // The same for a client that sent megabytes the process never read.
    let url = exec_url(&mut rt, &id, &["sleep", "1000"], true, false).await?;
    let mut c = SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await?;
    let stdin = c.open_streams(true, true, false).stdin.context("stdin")?;
    c.send_all(stdin, &vec![b'y'; 2 << 20], false);
    wait_for(
        Duration::from_secs(10),
        "the exec'd sleep to start",
        || async { (processes_in(&rootfs) > before).then_some(()) },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(c);
    wait_for(
        Duration::from_secs(10),
        "the flooded exec's sleep to be killed",
        || async { (processes_in(&rootfs) == before).then_some(()) },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_with_a_tty_sees_resizes() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let (_pod, id) = running(&mut rt, &server, "tty", container_config("c", "sleep 3600")).await?;
    let url = exec_url(
        &mut rt,
        &id,
        &[
            "sh",
            "-c",
            "sleep 0.5; stty size; [ -t 0 ] && [ -t 1 ] && echo is-a-tty",
        ],
        true,
        true,
    )
    .await?;
    let mut c = SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await?;
    let streams = c.open_streams(true, false, true);
    c.send_all(
        streams.resize.context("resize")?,
        br#"{"Width":132,"Height":43}"#,
        false,
    );
    let (data, _) = c.collect(Duration::from_secs(20)).await?;
    let out = text(&data, streams.stdout);
    assert!(out.contains("43 132"), "{out:?}");
    assert!(out.contains("is-a-tty"), "{out:?}");
    let status = text(&data, streams.error);
    assert!(status.contains("Success"), "{status}");

    // tty and stderr together are refused at the CRI.
    let e = rt
        .exec(cri::ExecRequest {
            container_id: id.clone(),
            cmd: vec!["true".into()],
            tty: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        })
        .await
        .expect_err("tty with stderr");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    Ok(())
}

async fn ws_connect(
    url: &str,
    protocol: &str,
) -> anyhow::Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let mut req = url.replace("http://", "ws://").into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse()?);
    let (ws, resp) = tokio_tungstenite::connect_async(req).await?;
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some(protocol)
    );
    Ok(ws)
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_over_websocket() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let (_pod, id) = running(&mut rt, &server, "ws", container_config("c", "sleep 3600")).await?;

    // v5: stdin closed with the close signal; cat ends and its output comes back.
    let url = exec_url(&mut rt, &id, &["cat"], true, false).await?;
    let mut ws = ws_connect(&url, "v5.channel.k8s.io").await?;
    let payload = vec![b'x'; 200_000];
    for chunk in payload.chunks(30_000) {
        let mut m = vec![0u8];
        m.extend_from_slice(chunk);
        ws.send(Message::binary(m)).await?;
    }
    ws.send(Message::binary(vec![255u8, 0])).await?;
    let (mut stdout, mut status) = (Vec::new(), String::new());
    while let Some(Ok(m)) = tokio::time::timeout(Duration::from_secs(20), ws.next()).await? {
        match m {
            Message::Binary(b) if b.first() == Some(&1) => stdout.extend_from_slice(&b[1..]),
            Message::Binary(b) if b.first() == Some(&3) => {
                status.push_str(&String::from_utf8_lossy(&b[1..]))
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(stdout.len(), payload.len());
    assert!(status.contains("Success"), "{status}");

    // base64.channel.k8s.io: text frames, the exit as text.
    let url = exec_url(&mut rt, &id, &["sh", "-c", "echo hi; exit 3"], false, false).await?;
    let mut ws = ws_connect(&url, "base64.channel.k8s.io").await?;
    let (mut out, mut err) = (String::new(), String::new());
    while let Some(Ok(m)) = tokio::time::timeout(Duration::from_secs(20), ws.next()).await? {
        use base64::Engine;
        if let Message::Text(t) = &m {
            let decoded = base64::engine::general_purpose::STANDARD.decode(&t.as_str()[1..])?;
            match t.as_str().as_bytes()[0] {
                b'1' => out.push_str(&String::from_utf8_lossy(&decoded)),
                b'3' => err.push_str(&String::from_utf8_lossy(&decoded)),
                _ => {}
            }
        }
        if matches!(m, Message::Close(_)) {
            break;
        }
    }
    assert_eq!(out, "hi\n");
    assert!(err.contains("exit status 3"), "{err}");

    // A text message whose first character is not ASCII ends that session, not the server.
    let url = exec_url(&mut rt, &id, &["sleep", "5"], true, false).await?;
    let mut ws = ws_connect(&url, "base64.channel.k8s.io").await?;
    ws.send(Message::text("\u{e9}aGk=")).await?;
    while let Some(Ok(m)) = tokio::time::timeout(Duration::from_secs(20), ws.next()).await? {
        if matches!(m, Message::Close(_)) {
            break;
        }
    }
    rt.version(cri::VersionRequest::default()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_to_a_container() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let mut config = container_config(
        "c",
        "echo started; while read line; do echo got:$line; done; echo stdin-closed; sleep 0.2",
    );
    config.stdin = true;
    config.stdin_once = true;
    let (_pod, id) = running(&mut rt, &server, "attach", config).await?;
    let url = attach_url(&mut rt, &id, true, true, false).await?;
    let mut c = SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await?;
    let streams = c.open_streams(true, true, false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.send_all(streams.stdin.context("stdin")?, b"one\ntwo\n", true);
    let (data, _) = c.collect(Duration::from_secs(20)).await?;
    let out = text(&data, streams.stdout);
    assert!(out.contains("got:one\ngot:two\nstdin-closed\n"), "{out:?}");
    let status = text(&data, streams.error);
    assert!(status.contains("Success"), "{status}");
    let st = wait_exited(&mut rt, &id, Duration::from_secs(10)).await?;
    assert_eq!(st.exit_code, 0);
    // Everything went to the log too.
    let log = std::fs::read_to_string(&st.log_path)?;
    assert!(log.contains("got:two"), "{log}");

    // A container created without stdin has none to attach to.
    let (_pod, plain) = running(
        &mut rt,
        &server,
        "printer",
        container_config("c", "while true; do echo tick; sleep 0.1; done"),
    )
    .await?;
    let e = rt
        .attach(cri::AttachRequest {
            container_id: plain.clone(),
            stdin: true,
            stdout: true,
            ..Default::default()
        })
        .await
        .expect_err("stdin of a container without one");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // Its output can be followed over WebSocket.
    let url = attach_url(&mut rt, &plain, false, true, false).await?;
    let mut ws = ws_connect(&url, "v4.channel.k8s.io").await?;
    let mut seen = String::new();
    while !seen.contains("tick\ntick\n") {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await? {
            Some(Ok(Message::Binary(b))) if b.first() == Some(&1) => {
                seen.push_str(&String::from_utf8_lossy(&b[1..]))
            }
            Some(Ok(_)) => {}
            other => anyhow::bail!("attach ended early: {other:?} after {seen:?}"),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_to_httpd() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let port = free_port()?;
    let script = format!(
        "mkdir -p /www && echo hello-from-the-pod > /www/index.html && exec httpd -f -p 127.0.0.1:{port} -h /www"
    );
    let (pod, _id) = running(&mut rt, &server, "web", container_config("c", &script)).await?;
    wait_for(Duration::from_secs(10), "httpd to listen", || async move {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .await?;
    let request = b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n";

    // SPDY: two connections in one session, each a pair of streams; the client half-closes.
    let url = port_forward_url(&mut rt, &pod, &[port]).await?;
    let mut c = SpdyClient::connect(&url, &["portforward.k8s.io"]).await?;
    let p = port.to_string();
    let mut data_ids = Vec::new();
    for request_id in ["0", "1"] {
        let (_, data) = c.open_forward(&p, request_id);
        c.send_all(data, request, true);
        data_ids.push(data);
    }
    let got = c.read_to_fin(&data_ids, Duration::from_secs(20)).await?;
    for id in data_ids {
        let text = String::from_utf8_lossy(&got[&id]).into_owned();
        assert!(text.contains("hello-from-the-pod"), "{text}");
    }
    drop(c);

    // A closed port is reported on the error stream.
    let url = port_forward_url(&mut rt, &pod, &[]).await?;
    let mut c = SpdyClient::connect(&url, &["portforward.k8s.io"]).await?;
    let dead = free_port()?.to_string();
    let (error, _) = c.open_forward(&dead, "0");
    let text = text(
        &c.read_to_fin(&[error], Duration::from_secs(20)).await?,
        error,
    );
    assert!(
        text.contains(&format!("error forwarding port {dead}")),
        "{text}"
    );
    drop(c);

    // WebSocket: the port on each channel first, then the data.
    let url = port_forward_url(&mut rt, &pod, &[]).await?;
    let mut req =
        format!("{}?port={port}", url.replace("http://", "ws://")).into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "v4.channel.k8s.io".parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let mut m = vec![0u8];
    m.extend_from_slice(request);
    ws.send(Message::binary(m)).await?;
    let mut data = Vec::new();
    let mut prefixes = 0;
    while let Some(Ok(m)) = tokio::time::timeout(Duration::from_secs(20), ws.next()).await? {
        match m {
            Message::Binary(b) if b.len() == 3 && b[1..] == port.to_le_bytes() && prefixes < 2 => {
                prefixes += 1
            }
            Message::Binary(b) if b.first() == Some(&0) => {
                data.extend_from_slice(&b[1..]);
                if String::from_utf8_lossy(&data).contains("hello-from-the-pod") {
                    break;
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(prefixes, 2, "port prefixes on the data and error channels");
    assert!(String::from_utf8_lossy(&data).contains("hello-from-the-pod"));
    Ok(())
}

/// Issue #26, 15: every pod shares the host's network, and port-forward reached any port of the
/// host's loopback: a service of the host (here a listener of the test itself) or another pod's.
/// Only a port that a process of the pod listens on is forwarded, on either transport.
#[tokio::test(flavor = "multi_thread")]
async fn port_forward_reaches_only_the_pods_own_ports() -> anyhow::Result<()> {
    use std::io::Write;
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    // The host's service: answers anyone who connects.
    let host = std::net::TcpListener::bind("127.0.0.1:0")?;
    let host_port = host.local_addr()?.port();
    std::thread::spawn(move || {
        for conn in host.incoming().flatten() {
            let mut conn = conn;
            let _ = conn.write_all(b"host-secret\n");
        }
    });
    let port = free_port()?;
    let script = format!(
        "mkdir -p /www && echo pod-page > /www/index.html && exec httpd -f -p 127.0.0.1:{port} -h /www"
    );
    let (pod, _) = running(&mut rt, &server, "own", container_config("c", &script)).await?;
    // Another pod's port is no more this pod's than the host's.
    let other_port = free_port()?;
    let other = format!(
        "mkdir -p /www && echo other-page > /www/index.html && exec httpd -f -p 127.0.0.1:{other_port} -h /www"
    );
    running(&mut rt, &server, "other", container_config("c", &other)).await?;
    for p in [port, other_port] {
        wait_for(Duration::from_secs(10), "httpd to listen", || async move {
            std::net::TcpStream::connect(("127.0.0.1", p)).ok()
        })
        .await?;
    }
    let request = b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n";
    for refused in [host_port, other_port] {
        let url = port_forward_url(&mut rt, &pod, &[]).await?;
        let mut c = SpdyClient::connect(&url, &["portforward.k8s.io"]).await?;
        let (error, data) = c.open_forward(&refused.to_string(), "0");
        c.send_all(data, request, true);
        let got = c.read_to_fin(&[error], Duration::from_secs(20)).await?;
        let message = text(&got, error);
        assert!(
            message.contains(&format!("error forwarding port {refused}"))
                && message.contains("no process of the pod listens"),
            "{refused}: {message}"
        );
        drop(c);
        // WebSocket: the error channel says so, the data channel carries nothing of it.
        let url = port_forward_url(&mut rt, &pod, &[]).await?;
        let mut req =
            format!("{}?port={refused}", url.replace("http://", "ws://")).into_client_request()?;
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "v4.channel.k8s.io".parse()?);
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
        let mut m = vec![0u8];
        m.extend_from_slice(request);
        ws.send(Message::binary(m)).await?;
        let (mut data, mut error) = (Vec::new(), Vec::new());
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            match m {
                Message::Binary(b) if b.len() > 3 && b[0] == 0 => data.extend_from_slice(&b[1..]),
                Message::Binary(b) if b.len() > 3 && b[0] == 1 => error.extend_from_slice(&b[1..]),
                Message::Close(_) => break,
                _ => {}
            }
            if !error.is_empty() {
                break;
            }
        }
        let error = String::from_utf8_lossy(&error);
        assert!(
            error.contains("no process of the pod listens"),
            "{refused}: {error}"
        );
        assert!(!String::from_utf8_lossy(&data).contains("secret"));
    }
    // The pod's own port is forwarded.
    let url = port_forward_url(&mut rt, &pod, &[]).await?;
    let mut c = SpdyClient::connect(&url, &["portforward.k8s.io"]).await?;
    let (_, data) = c.open_forward(&port.to_string(), "0");
    c.send_all(data, request, true);
    let got = c.read_to_fin(&[data], Duration::from_secs(20)).await?;
    assert!(
        text(&got, data).contains("pod-page"),
        "{}",
        text(&got, data)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_frames_end_the_session_not_the_server() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let (_pod, id) = running(&mut rt, &server, "bad", container_config("c", "sleep 3600")).await?;
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        (
            "wrong version",
            vec![
                0x80, 0x02, 0x00, 0x01, 0, 0, 0, 10, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0,
            ],
        ),
        (
            "oversized control frame",
            vec![0x80, 0x03, 0x00, 0x01, 0, 0xff, 0xff, 0xff],
        ),
        ("header block that is not zlib", {
            let mut f = vec![
                0x80, 0x03, 0x00, 0x01, 0, 0, 0, 20, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0,
            ];
            f.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6]);
            f
        }),
        (
            "ping of the wrong length",
            vec![0x80, 0x03, 0x00, 0x06, 0, 0, 0, 3, 1, 2, 3],
        ),
        ("even stream id", {
            let mut enc = streaming::frame::Encoder::new();
            let mut b = bytes::BytesMut::new();
            enc.encode(
                &Frame::SynStream {
                    stream_id: 2,
                    associated_to: 0,
                    priority: 0,
                    flags: 0,
                    headers: vec![],
                },
                &mut b,
            );
            b.to_vec()
        }),
    ];
    for (what, bytes) in garbage {
        let url = exec_url(&mut rt, &id, &["sleep", "5"], false, false).await?;
        let (code, head, mut conn, _) = upgrade(
            &url,
            &[
                ("Upgrade", "SPDY/3.1"),
                ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
            ],
        )
        .await?;
        assert_eq!(code, 101, "{head}");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        conn.write_all(&bytes).await?;
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "{what}: the server kept the connection open");
        // The last frame before the close is a GOAWAY (type 7) with PROTOCOL_ERROR (1).
        assert!(
            rest.len() >= 16
                && rest[rest.len() - 16..rest.len() - 12] == [0x80, 0x03, 0x00, 0x07]
                && rest[rest.len() - 1] == 1,
            "{what}: {rest:?}"
        );
    }
    // An unknown stream type ends the session too.
    let url = exec_url(&mut rt, &id, &["true"], false, false).await?;
    let mut c = SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await?;
    c.open(&[("streamType", "telepathy")], true);
    let (_, frames) = c.collect(Duration::from_secs(10)).await?;
    assert!(
        frames.iter().any(|f| matches!(f, Frame::RstStream { .. })),
        "{frames:?}"
    );
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::GoAway { status: 1, .. })),
        "{frames:?}"
    );
    // And the server serves on.
    let url = exec_url(&mut rt, &id, &["echo", "still-here"], false, false).await?;
    let r = spdy_session(&url, None, true, false).await?;
    assert_eq!(r.stdout, b"still-here\n");
    c.send(Frame::Data {
        stream_id: 1,
        flags: 0,
        data: Bytes::new(),
    });
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_execs_leave_nothing_behind() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let (pod, id) = running(
        &mut rt,
        &server,
        "many",
        container_config("c", "sleep 3600"),
    )
    .await?;
    let pid = server.child.as_ref().map(|c| c.id()).unwrap_or(0);
    // One session first, so lazily made things (thread pools, the listener) are counted.
    let url = exec_url(&mut rt, &id, &["true"], false, false).await?;
    spdy_session(&url, None, true, false).await?;
    let fds_before = fd_count(pid);
    let rootfs = server.container_dir(&pod, &id).join("rootfs");
    assert!(
        processes_in(&rootfs) >= 1,
        "the container's own process is seen"
    );
    let processes_before = processes_in(&rootfs);
    let mut sessions = Vec::new();
    for i in 0..50 {
        let url = exec_url(
            &mut rt,
            &id,
            &["sh", "-c", &format!("sleep 0.2; echo session-{i}")],
            i % 2 == 0,
            false,
        )
        .await?;
        sessions.push(tokio::spawn(async move {
            let stdin = if i % 2 == 0 { Some(&b""[..]) } else { None };
            (i, spdy_session(&url, stdin, true, false).await)
        }));
    }
    for s in sessions {
        let (i, r) = s.await?;
        let r = r?;
        assert_eq!(String::from_utf8_lossy(&r.stdout), format!("session-{i}\n"));
        assert_eq!(r.exit_code(), Some(0));
    }
    wait_for(
        Duration::from_secs(10),
        "exec'd processes to be gone",
        || async { (processes_in(&rootfs) == processes_before).then_some(()) },
    )
    .await?;
    wait_for(
        Duration::from_secs(10),
        "the server's fds to return",
        || async { (fd_count(pid) <= fds_before + 2).then_some(()) },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_to_a_tty_container_resizes_its_terminal() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let mut config = container_config("c", "read x; stty size; echo done:$x");
    config.stdin = true;
    config.tty = true;
    let (_pod, id) = running(&mut rt, &server, "ttyattach", config).await?;
    let url = attach_url(&mut rt, &id, true, false, true).await?;
    let mut c = SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await?;
    let streams = c.open_streams(true, false, true);
    c.send_all(
        streams.resize.context("resize")?,
        br#"{"Width":90,"Height":30}"#,
        false,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.send_all(streams.stdin.context("stdin")?, b"go\n", false);
    let (data, _) = c.collect(Duration::from_secs(20)).await?;
    let out = text(&data, streams.stdout);
    assert!(out.contains("30 90"), "{out:?}");
    assert!(out.contains("done:go"), "{out:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_expire_and_idle_sessions_close() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("streaming.toml");
    std::fs::write(
        &config,
        "[streaming]\ntoken_ttl_seconds = 1\nidle_timeout_seconds = 2\n",
    )?;
    let server = Server::start_with(vec!["--config".into(), config.display().to_string()]).await?;
    let (mut rt, _) = server.client().await?;
    let (pod, id) = running(
        &mut rt,
        &server,
        "idle",
        container_config("c", "sleep 3600"),
    )
    .await?;

    let url = exec_url(&mut rt, &id, &["true"], false, false).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, head, ..) = upgrade(
        &url,
        &[
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
        ],
    )
    .await?;
    assert_eq!(code, 404, "an expired token: {head}");

    // A session with no traffic either way ends, and its process with it.
    let rootfs = server.container_dir(&pod, &id).join("rootfs");
    let before = processes_in(&rootfs);
    let url = exec_url(&mut rt, &id, &["sleep", "1000"], true, false).await?;
    let mut c = SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await?;
    c.open_streams(true, true, false);
    let started = std::time::Instant::now();
    let (_, frames) = c.collect(Duration::from_secs(20)).await?;
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed after {:?}",
        started.elapsed()
    );
    assert!(
        frames.iter().any(|f| matches!(f, Frame::GoAway { .. })),
        "{frames:?}"
    );
    wait_for(
        Duration::from_secs(10),
        "the idle session's process to be killed",
        || async { (processes_in(&rootfs) == before).then_some(()) },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_once_waits_for_a_client_with_stdin() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let mut config = container_config("c", "read line; echo got:$line");
    config.stdin = true;
    config.stdin_once = true;
    let (_pod, id) = running(&mut rt, &server, "once", config).await?;
    // A client without stdin comes and goes: the container's stdin stays open.
    let url = attach_url(&mut rt, &id, false, true, false).await?;
    let mut c = SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await?;
    c.open_streams(false, true, false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        status(&mut rt, &id).await?.state,
        cri::ContainerState::ContainerRunning as i32
    );
    // The first client with stdin gets the read.
    let url = attach_url(&mut rt, &id, true, true, false).await?;
    let mut c = SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await?;
    let streams = c.open_streams(true, true, false);
    c.send_all(streams.stdin.context("stdin")?, b"x\n", true);
    let (data, _) = c.collect(Duration::from_secs(20)).await?;
    let out = text(&data, streams.stdout);
    assert!(out.contains("got:x"), "{out:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_processes_belong_to_the_container() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let mut config = container_config("c", "sleep 3600");
    config
        .annotations
        .insert("darwin-cri.io/memory-limit".into(), "32Mi".into());
    let (_pod, id) = running(&mut rt, &server, "owned", config).await?;
    // Started by the container's monitor, not by the server.
    let monitor = monitor_pid(&mut rt, &id).await?;
    let url = exec_url(&mut rt, &id, &["sh", "-c", "echo $PPID"], false, false).await?;
    let r = spdy_session(&url, None, true, false).await?;
    assert_eq!(
        String::from_utf8_lossy(&r.stdout).trim(),
        monitor.to_string()
    );
    let out = exec(&mut rt, &id, &["sh", "-c", "echo $PPID"], 10).await?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        monitor.to_string()
    );
    // So the container's memory limit covers what exec starts.
    let _ = exec(
        &mut rt,
        &id,
        &[
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=64M",
            "count=100000",
        ],
        30,
    )
    .await;
    let s = wait_exited(&mut rt, &id, Duration::from_secs(20)).await?;
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "OOMKilled"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_failures_and_container_stops_are_reported_not_fatal() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let (_pod, id) = running(
        &mut rt,
        &server,
        "fails",
        container_config("c", "sleep 3600"),
    )
    .await?;
    let monitor = monitor_pid(&mut rt, &id).await?;
    // An executable whose interpreter is missing passes the lookup and fails at exec(2), after
    // the fork: the monitor reports it and lives on.
    exec(
        &mut rt,
        &id,
        &[
            "sh",
            "-c",
            "printf '#!/bin/no-such-shell\\n' > /tmp/x && chmod +x /tmp/x",
        ],
        10,
    )
    .await?;
    for _ in 0..20 {
        let e = exec(&mut rt, &id, &["/tmp/x"], 10)
            .await
            .expect_err("a missing interpreter");
        assert!(e.message().contains("No such file"), "{}", e.message());
    }
    assert_eq!(monitor_pid(&mut rt, &id).await?, monitor);
    assert_eq!(
        exec(&mut rt, &id, &["echo", "ok"], 10).await?.stdout,
        b"ok\n"
    );

    // An exec running when the container stops ends with the container: 137, not an error.
    let mut rt2 = rt.clone();
    let id2 = id.clone();
    let long = tokio::spawn(async move { exec(&mut rt2, &id2, &["sleep", "30"], 60).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await?;
    let out = tokio::time::timeout(Duration::from_secs(20), long).await???;
    assert_eq!(out.exit_code, 137);
    Ok(())
}
