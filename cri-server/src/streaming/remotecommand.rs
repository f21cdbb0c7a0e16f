//! Exec and attach over the remote-command protocols (`channel.k8s.io` up to
//! `v5.channel.k8s.io`): the client's stdin, stdout, stderr, error and resize channels joined
//! to an exec'd process or to a container's stdio through its monitor. Either transport
//! (`spdy_transport`, `ws`) gathers the client's channels into [`Channels`] and hands them to
//! [`serve`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use runtime::Runtime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::channel::{Gone, Sink, Source};
use super::request::Request;

/// How the end of a session is reported on the error channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFormat {
    /// v4 and v5: a Status object, also on success, carrying the exit code.
    Status,
    /// v1 to v3: the error text, nothing on success.
    Text,
}

impl StatusFormat {
    pub fn of(protocol: &str) -> Self {
        if protocol.starts_with("v4.") || protocol.starts_with("v5.") {
            StatusFormat::Status
        } else {
            StatusFormat::Text
        }
    }
}

/// The client's side of an exec or attach session, over a transport whose output channels are
/// `S`.
#[derive(Debug)]
pub struct Channels<S> {
    pub format: StatusFormat,
    pub stdin: Option<Source>,
    pub stdout: Option<S>,
    pub stderr: Option<S>,
    pub error: Option<S>,
    pub resize: Option<Source>,
}

enum Outcome {
    Exited(i32),
    Detached,
    Failed(String),
}

/// Runs the exec or attach `request` against the client's `channels`, and reports how it
/// ended on the error channel. `gone` resolves when the client disconnects: the exec'd process
/// is then killed (an attach only detaches).
pub async fn serve<S: Sink>(rt: &Arc<Runtime>, request: Request, mut ch: Channels<S>, gone: Gone) {
    let outcome = match request {
        Request::Exec { container_id, exec } => {
            run_exec(rt, &container_id, exec, &mut ch, gone).await
        }
        Request::Attach { container_id, .. } => run_attach(rt, &container_id, &mut ch, gone).await,
        Request::PortForward { .. } => Outcome::Failed("not a remote-command request".into()),
    };
    let Some(mut error) = ch.error.take() else {
        return;
    };
    let report = match (ch.format, outcome) {
        (StatusFormat::Status, Outcome::Exited(0) | Outcome::Detached) => {
            Some(r#"{"metadata":{},"status":"Success"}"#.to_string())
        }
        (StatusFormat::Status, Outcome::Exited(code)) => Some(
            serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            })
            .to_string(),
        ),
        (StatusFormat::Status, Outcome::Failed(message)) => Some(
            serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "InternalError",
                "code": 500,
            })
            .to_string(),
        ),
        (StatusFormat::Text, Outcome::Exited(0) | Outcome::Detached) => None,
        (StatusFormat::Text, Outcome::Exited(code)) => Some(format!(
            "command terminated with non-zero exit code: exit status {code}"
        )),
        (StatusFormat::Text, Outcome::Failed(message)) => Some(message),
    };
    if let Some(report) = report {
        let _ = error.write(Bytes::from(report)).await;
    }
}

/// Copies `from` into `to` until either ends.
fn pump_output<S: Sink>(
    mut from: impl AsyncRead + Unpin + Send + 'static,
    to: Option<S>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut to = to;
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(sink) = to.as_mut()
                        && sink.write(Bytes::copy_from_slice(&buf[..n])).await.is_err()
                    {
                        // The client stopped reading: keep draining so the process never
                        // blocks on a full pipe.
                        to = None;
                    }
                }
            }
        }
    })
}

/// A terminal size as clients send it on the resize channel: a stream of JSON objects.
#[derive(Debug, serde::Deserialize)]
struct TermSize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// Reads terminal sizes from `source` and applies each with `apply`.
fn pump_resizes(
    mut source: Source,
    mut apply: impl FnMut(u16, u16) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = source.recv().await {
            buf.extend_from_slice(&chunk);
            let mut taken = 0;
            let mut sizes = serde_json::Deserializer::from_slice(&buf).into_iter::<TermSize>();
            loop {
                match sizes.next() {
                    Some(Ok(size)) => {
                        taken = sizes.byte_offset();
                        apply(size.height, size.width);
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(_)) => {
                        // Not a size: drop what was sent so far.
                        taken = buf.len();
                        break;
                    }
                    None => {
                        taken = buf.len();
                        break;
                    }
                }
            }
            buf.drain(..taken);
            if buf.len() > 4096 {
                buf.clear();
            }
        }
    })
}

async fn run_exec<S: Sink>(
    rt: &Arc<Runtime>,
    container_id: &str,
    exec: runtime::exec::ExecRequest,
    ch: &mut Channels<S>,
    gone: Gone,
) -> Outcome {
    let mut process = match rt.exec(container_id, &exec).await {
        Ok(p) => p,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let stdin_task = match (ch.stdin.take(), process.stdin.take()) {
        (Some(mut source), Some(mut input)) => Some(tokio::spawn(async move {
            while let Some(bytes) = source.recv().await {
                if input.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            // The client's end of input: the process sees EOF (a pipe closes; a terminal
            // stays, as on a real one).
            let _ = input.shutdown().await;
        })),
        _ => None,
    };
    let mut outputs = Vec::new();
    if let Some(out) = process.stdout.take() {
        outputs.push(pump_output(out, ch.stdout.take()));
    }
    if let Some(err) = process.stderr.take() {
        outputs.push(pump_output(err, ch.stderr.take()));
    }
    let resize_task = match (ch.resize.take(), process.terminal.clone()) {
        (Some(source), Some(terminal)) => Some(pump_resizes(source, move |rows, cols| {
            let _ = terminal.resize(rows, cols);
        })),
        _ => None,
    };
    let code = tokio::select! {
        code = process.wait() => code,
        () = gone.clone().wait() => {
            process.kill();
            let _ = process.wait().await;
            Err(std::io::Error::other("the client went away"))
        }
    };
    // Output is read to its end and delivered, however slowly the client reads. What still
    // holds the output open a second after the exit (something the process started in its
    // group) is killed, so the end comes.
    let drain = async {
        for o in &mut outputs {
            let _ = o.await;
        }
    };
    tokio::pin!(drain);
    let drained = tokio::select! {
        () = &mut drain => true,
        () = tokio::time::sleep(Duration::from_secs(1)) => false,
    };
    if !drained {
        process.kill();
        tokio::select! {
            () = &mut drain => {}
            () = gone.wait() => {}
        }
    }
    for task in outputs.into_iter().chain(stdin_task).chain(resize_task) {
        task.abort();
    }
    match code {
        Ok(code) => Outcome::Exited(code),
        Err(e) => Outcome::Failed(format!("exec in container {container_id}: {e}")),
    }
}

async fn run_attach<S: Sink>(
    rt: &Arc<Runtime>,
    container_id: &str,
    ch: &mut Channels<S>,
    gone: Gone,
) -> Outcome {
    use runtime::attach::{Decoder, Frame};
    let conn = match rt.attach(container_id).await {
        Ok((conn, _tty)) => conn,
        Err(e) => return Outcome::Failed(format!("error attaching to container: {e}")),
    };
    let conn = match conn
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(conn))
    {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("error attaching to container: {e}")),
    };
    let (mut from_monitor, mut to_monitor) = conn.into_split();
    let mut stdin = ch.stdin.take();
    // Sizes are parsed as for exec, then sent to the monitor with the input.
    let (size_tx, size_rx) = mpsc::unbounded_channel::<(u16, u16)>();
    let resize_task = ch.resize.take().map(|source| {
        pump_resizes(source, move |rows, cols| {
            let _ = size_tx.send((rows, cols));
        })
    });
    let mut resize = Some(size_rx);
    let input = tokio::spawn(async move {
        // An empty first input marks this client as one that brings stdin: with stdin_once,
        // its departure closes the container's stdin.
        if stdin.is_some()
            && to_monitor
                .write_all(&Frame::Stdin(Vec::new()).encode())
                .await
                .is_err()
        {
            return;
        }
        loop {
            let frame = tokio::select! {
                bytes = async { stdin.as_mut()?.recv().await }, if stdin.is_some() => match bytes {
                    Some(b) => Frame::Stdin(b.to_vec()),
                    None => {
                        stdin = None;
                        Frame::StdinClosed
                    }
                },
                size = async { resize.as_mut()?.recv().await }, if resize.is_some() => match size {
                    Some((rows, cols)) => Frame::Resize { rows, cols },
                    None => {
                        resize = None;
                        continue;
                    }
                },
                else => break,
            };
            if to_monitor.write_all(&frame.encode()).await.is_err() {
                break;
            }
        }
        // Held open: closing it would end the attach from the monitor's side.
        std::future::pending::<()>().await;
    });
    let mut stdout = ch.stdout.take();
    let mut stderr = ch.stderr.take();
    let output = async {
        let mut decoder = Decoder::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from_monitor.read(&mut buf).await {
                Ok(0) | Err(_) => return Outcome::Detached,
                Ok(n) => decoder.push(&buf[..n]),
            }
            loop {
                let (sink, bytes) = match decoder.next_frame() {
                    Ok(Some(Frame::Stdout(b))) => (stdout.as_mut(), b),
                    Ok(Some(Frame::Stderr(b))) => (stderr.as_mut(), b),
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(e) => return Outcome::Failed(e.to_string()),
                };
                if let Some(sink) = sink {
                    let _ = sink.write(Bytes::from(bytes)).await;
                }
            }
        }
    };
    let outcome = tokio::select! {
        o = output => o,
        () = gone.wait() => Outcome::Detached,
    };
    input.abort();
    if let Some(t) = resize_task {
        t.abort();
    }
    outcome
}
