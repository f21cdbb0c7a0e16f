//! Streaming clients for the tests: SPDY/3.1 (as kubectl's moby/spdystream speaks it, plus an
//! option to keep flow-control windows) and WebSocket, over the URLs Exec/Attach/PortForward
//! return.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The server's SPDY framing (the `spdy` crate), used by the tests to write and read frames. The
/// recorded byte sequences in its unit tests and the kubectl interop test check it independently.
pub use spdy::frame;

use frame::{FLAG_FIN, Frame, Headers};

/// Splits `http://host:port/path` into the address and the path.
pub fn split_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url.strip_prefix("http://").context("an http:// URL")?;
    let (addr, path) = rest.split_once('/').context("a path")?;
    Ok((addr.to_string(), format!("/{path}")))
}

/// Sends an upgrade request and reads the response head: the status code, the head, and the
/// connection with whatever followed the head.
pub async fn upgrade(
    url: &str,
    extra_headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String, TcpStream, BytesMut)> {
    let (addr, path) = split_url(url)?;
    let mut conn = TcpStream::connect(&addr).await?;
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n");
    for (k, v) in extra_headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    conn.write_all(req.as_bytes()).await?;
    let mut buf = BytesMut::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if conn.read_buf(&mut buf).await? == 0 {
            bail!(
                "the server closed the connection: {:?}",
                String::from_utf8_lossy(&buf)
            );
        }
    };
    let head = String::from_utf8_lossy(&buf.split_to(end)).into_owned();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, head, conn, buf))
}

/// A SPDY client connection after the upgrade.
#[allow(missing_debug_implementations)]
pub struct SpdyClient {
    out: mpsc::UnboundedSender<Frame>,
    frames: mpsc::UnboundedReceiver<Frame>,
    next_id: u32,
    pub protocol: String,
    /// Acknowledge received data with WINDOW_UPDATE (a flow-controlling client).
    pub window_updates: bool,
}

impl SpdyClient {
    pub async fn connect(url: &str, protocols: &[&str]) -> anyhow::Result<SpdyClient> {
        let mut headers = vec![("Upgrade", "SPDY/3.1")];
        for p in protocols {
            headers.push(("X-Stream-Protocol-Version", p));
        }
        let (code, head, conn, rest) = upgrade(url, &headers).await?;
        if code != 101 {
            bail!("upgrade refused: {head}");
        }
        let protocol = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("x-stream-protocol-version")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        Ok(Self::over(conn, rest, protocol))
    }

    /// Frames over `conn`, `rest` being bytes already read from it.
    pub fn over(conn: TcpStream, rest: BytesMut, protocol: String) -> SpdyClient {
        let (mut rd, mut wr) = conn.into_split();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Frame>();
        tokio::spawn(async move {
            let mut enc = frame::Encoder::new();
            let mut buf = BytesMut::new();
            while let Some(f) = out_rx.recv().await {
                enc.encode(&f, &mut buf);
                if wr.write_all(&buf).await.is_err() {
                    return;
                }
                buf.clear();
            }
            let _ = wr.shutdown().await;
        });
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut dec = frame::Decoder::new(frame::Limits::default());
            let mut buf = rest;
            loop {
                match dec.decode(&mut buf) {
                    Ok(Some(f)) => {
                        if in_tx.send(f).is_err() {
                            return;
                        }
                        continue;
                    }
                    Ok(None) => {}
                    Err(_) => return,
                }
                match rd.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
        SpdyClient {
            out: out_tx,
            frames: in_rx,
            next_id: 1,
            protocol,
            window_updates: false,
        }
    }

    /// Opens a stream with these headers; returns its id.
    pub fn open(&mut self, headers: &[(&str, &str)], fin: bool) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        let headers: Headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let _ = self.out.send(Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: if fin { FLAG_FIN } else { 0 },
            headers,
        });
        id
    }

    pub fn send(&self, frame: Frame) {
        let _ = self.out.send(frame);
    }

    /// Sends `data` on stream `id` in frames of at most 32 KiB (as io.Copy would), then FIN.
    pub fn send_all(&self, id: u32, data: &[u8], fin: bool) {
        for chunk in data.chunks(32 * 1024) {
            self.send(Frame::Data {
                stream_id: id,
                flags: 0,
                data: Bytes::copy_from_slice(chunk),
            });
        }
        if fin {
            self.send(Frame::Data {
                stream_id: id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            });
        }
    }

    /// The next frame from the server, `None` once the connection ended.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<Option<Frame>> {
        let f = tokio::time::timeout(timeout, self.frames.recv())
            .await
            .context("waiting for a frame")?;
        if self.window_updates
            && let Some(Frame::Data {
                stream_id, data, ..
            }) = &f
            && !data.is_empty()
        {
            for id in [0, *stream_id] {
                self.send(Frame::WindowUpdate {
                    stream_id: id,
                    delta: data.len() as u32,
                });
            }
        }
        Ok(f)
    }

    /// Opens a remote-command session's streams as kubectl does: error, stdin (if asked),
    /// stdout, stderr (if asked), resize (if asked). Only stdin and resize stay open this side.
    pub fn open_streams(&mut self, stdin: bool, stderr: bool, resize: bool) -> Streams {
        let error = self.open(&[("streamType", "error")], true);
        let stdin = stdin.then(|| self.open(&[("streamType", "stdin")], false));
        let stdout = self.open(&[("streamType", "stdout")], true);
        let stderr = stderr.then(|| self.open(&[("streamType", "stderr")], true));
        let resize = resize.then(|| self.open(&[("streamType", "resize")], false));
        Streams {
            error,
            stdin,
            stdout,
            stderr,
            resize,
        }
    }

    /// Opens one port-forward connection to `port`: its error stream, then its data stream.
    pub fn open_forward(&mut self, port: &str, request_id: &str) -> (u32, u32) {
        let error = self.open(
            &[
                ("streamType", "error"),
                ("port", port),
                ("requestID", request_id),
            ],
            true,
        );
        let data = self.open(
            &[
                ("streamType", "data"),
                ("port", port),
                ("requestID", request_id),
            ],
            false,
        );
        (error, data)
    }

    /// Reads until each of `ids` has ended (FIN): the data each carried.
    pub async fn read_to_fin(
        &mut self,
        ids: &[u32],
        timeout: Duration,
    ) -> anyhow::Result<HashMap<u32, Vec<u8>>> {
        let mut got: HashMap<u32, Vec<u8>> = ids.iter().map(|id| (*id, Vec::new())).collect();
        let mut open = ids.len();
        while open > 0 {
            match self.next(timeout).await? {
                Some(Frame::Data {
                    stream_id,
                    flags,
                    data,
                }) if ids.contains(&stream_id) => {
                    got.entry(stream_id).or_default().extend_from_slice(&data);
                    if flags & FLAG_FIN != 0 {
                        open -= 1;
                    }
                }
                Some(_) => {}
                None => bail!("the session ended before streams {ids:?} did: {got:?}"),
            }
        }
        Ok(got)
    }

    /// Reads until the server closes the connection: data by stream, and every frame seen.
    pub async fn collect(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<(HashMap<u32, Vec<u8>>, Vec<Frame>)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut data: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(f) = self.next(left).await? else {
                break;
            };
            if let Frame::Data {
                stream_id, data: d, ..
            } = &f
            {
                data.entry(*stream_id).or_default().extend_from_slice(d);
            }
            let done = matches!(f, Frame::GoAway { .. });
            seen.push(f);
            if done {
                break;
            }
        }
        Ok((data, seen))
    }
}

/// The streams [`SpdyClient::open_streams`] opened.
#[derive(Debug, Clone, Copy)]
pub struct Streams {
    pub error: u32,
    pub stdin: Option<u32>,
    pub stdout: u32,
    pub stderr: Option<u32>,
    pub resize: Option<u32>,
}

/// What stream `id` carried, as text.
pub fn text(data: &HashMap<u32, Vec<u8>>, id: u32) -> String {
    String::from_utf8_lossy(data.get(&id).map(Vec::as_slice).unwrap_or_default()).into_owned()
}

/// What an exec session printed and how it ended.
#[derive(Debug, Default)]
pub struct ExecResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub error: String,
}

impl ExecResult {
    /// The exit code a v4 Status carries (0 for Success).
    pub fn exit_code(&self) -> Option<i32> {
        let v: serde_json::Value = serde_json::from_str(&self.error).ok()?;
        if v["status"] == "Success" {
            return Some(0);
        }
        v["details"]["causes"]
            .as_array()?
            .iter()
            .find(|c| c["reason"] == "ExitCode")?["message"]
            .as_str()?
            .parse()
            .ok()
    }
}

/// Runs an exec or attach session over SPDY as kubectl does: error, stdin, stdout, stderr
/// streams (as requested), `stdin` written and closed, then everything read to the end.
pub async fn spdy_session(
    url: &str,
    stdin: Option<&[u8]>,
    stderr: bool,
    window_updates: bool,
) -> anyhow::Result<ExecResult> {
    let mut c = SpdyClient::connect(url, &["v4.channel.k8s.io"]).await?;
    c.window_updates = window_updates;
    let streams = c.open_streams(stdin.is_some(), stderr, false);
    if let (Some(id), Some(bytes)) = (streams.stdin, stdin) {
        c.send_all(id, bytes, true);
    }
    let (data, _) = c.collect(Duration::from_secs(60)).await?;
    let take = |id: Option<u32>| id.and_then(|i| data.get(&i).cloned()).unwrap_or_default();
    Ok(ExecResult {
        stdout: take(Some(streams.stdout)),
        stderr: take(streams.stderr),
        error: text(&data, streams.error),
    })
}
