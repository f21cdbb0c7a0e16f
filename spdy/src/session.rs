//! A SPDY/3.1 session on an upgraded connection, server side: the client opens streams, this
//! side replies to each and hands it to the protocol handler as an [`IncomingStream`].
//!
//! Flow control: inbound data is acknowledged with WINDOW_UPDATE as the handler takes it, and
//! inbound data is back-pressured by reading no further frames while a stream's queue is full.
//! Outbound data honours the peer's windows once the peer shows it keeps them (it sent a
//! WINDOW_UPDATE or an initial window SETTING). kubectl's and kubelet's SPDY library
//! (moby/spdystream) keeps no windows and sends neither, so holding its data to 64 KiB would
//! stall every stream for good.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore, mpsc};

use crate::frame::{
    Decoder, Encoder, FLAG_FIN, Frame, FrameError, Headers, INITIAL_WINDOW, Limits,
    SETTINGS_INITIAL_WINDOW_SIZE, goaway, rst,
};

/// Largest DATA frame this side writes.
const MAX_CHUNK: usize = 32 * 1024;
/// Outbound data queued for the socket, across the session.
const QUEUED_BYTES: usize = 1 << 20;
/// Inbound DATA frames queued per stream before the session stops reading.
const INBOUND_QUEUE: usize = 8;
/// Streams one session may open.
const MAX_STREAMS: usize = 1024;
const MAX_WINDOW: i64 = 0x7fff_ffff;

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub idle_timeout: Duration,
    pub limits: Limits,
}

/// A stream the client opened, replied to.
#[derive(Debug)]
pub struct IncomingStream {
    pub id: u32,
    pub headers: Headers,
    /// The client's data; ends at its FIN or reset.
    pub data: mpsc::Receiver<Bytes>,
    pub writer: StreamWriter,
}

enum Out {
    Frame(Frame),
    /// A DATA frame holding this many bytes of the queue's budget.
    Data(Frame, u32),
    Shutdown,
}

struct Flow {
    /// Whether the peer keeps flow-control windows (see the module docs).
    enforced: bool,
    session: i64,
    initial: i64,
    streams: HashMap<u32, i64>,
    reset: std::collections::HashSet<u32>,
}

struct Shared {
    out: mpsc::UnboundedSender<Out>,
    queued: Semaphore,
    flow: Mutex<Flow>,
    flow_changed: Notify,
    closed: AtomicBool,
    started: Instant,
    last_activity_ms: AtomicU64,
}

impl Shared {
    fn touch(&self) {
        self.last_activity_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    fn send(&self, frame: Frame) {
        let _ = self.out.send(Out::Frame(frame));
    }

    fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
        self.flow_changed.notify_waiters();
    }
}

/// Writes one stream's data to the client. Dropping it ends the stream (FIN).
#[derive(Debug)]
pub struct StreamWriter {
    id: u32,
    shared: Arc<SharedHandle>,
    finished: bool,
}

/// `Shared` behind a Debug-able handle.
struct SharedHandle(Arc<Shared>);

impl std::fmt::Debug for SharedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session")
    }
}

fn closed_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the SPDY stream is closed")
}

impl StreamWriter {
    /// Sends `data`, in frames no larger than the peer's windows allow.
    pub async fn write(&mut self, mut data: Bytes) -> std::io::Result<()> {
        let shared = &self.shared.0;
        if self.finished {
            return Err(closed_error());
        }
        while !data.is_empty() {
            let n = loop {
                let notified = shared.flow_changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if shared.closed.load(Ordering::Acquire) {
                    return Err(closed_error());
                }
                {
                    let mut flow = shared.flow.lock().map_err(|_| closed_error())?;
                    if flow.reset.contains(&self.id) {
                        return Err(closed_error());
                    }
                    let want = data.len().min(MAX_CHUNK) as i64;
                    if !flow.enforced {
                        break want as usize;
                    }
                    let stream = flow.streams.get(&self.id).copied().unwrap_or(0);
                    let n = want.min(stream).min(flow.session);
                    if n > 0 {
                        flow.session -= n;
                        if let Some(w) = flow.streams.get_mut(&self.id) {
                            *w -= n;
                        }
                        break n as usize;
                    }
                }
                notified.await;
            };
            let permit = shared
                .queued
                .acquire_many(n as u32)
                .await
                .map_err(|_| closed_error())?;
            permit.forget();
            let chunk = data.split_to(n);
            shared
                .out
                .send(Out::Data(
                    Frame::Data {
                        stream_id: self.id,
                        flags: 0,
                        data: chunk,
                    },
                    n as u32,
                ))
                .map_err(|_| closed_error())?;
            shared.touch();
        }
        Ok(())
    }

    fn fin(&mut self) {
        if !self.finished {
            self.finished = true;
            let shared = &self.shared.0;
            let reset = shared
                .flow
                .lock()
                .map(|mut f| {
                    f.streams.remove(&self.id);
                    f.reset.remove(&self.id)
                })
                .unwrap_or(true);
            if !reset {
                shared.send(Frame::Data {
                    stream_id: self.id,
                    flags: FLAG_FIN,
                    data: Bytes::new(),
                });
            }
        }
    }

    /// Ends the stream abnormally.
    pub fn reset(mut self, status: u32) {
        self.finished = true;
        if let Ok(mut f) = self.shared.0.flow.lock() {
            f.streams.remove(&self.id);
            f.reset.remove(&self.id);
        }
        self.shared.0.send(Frame::RstStream {
            stream_id: self.id,
            status,
        });
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        self.fin();
    }
}

/// The running session.
#[derive(Debug)]
pub struct Session {
    shared: Arc<SharedHandle>,
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
    gone: tokio::sync::watch::Receiver<bool>,
}

impl Session {
    /// Starts serving `io`; streams the client opens arrive on the returned receiver, which
    /// ends when the session does.
    pub fn start<IO>(io: IO, config: Config) -> (Session, mpsc::Receiver<IncomingStream>)
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            out: out_tx,
            queued: Semaphore::new(QUEUED_BYTES),
            flow: Mutex::new(Flow {
                enforced: false,
                session: i64::from(INITIAL_WINDOW),
                initial: i64::from(INITIAL_WINDOW),
                streams: HashMap::new(),
                reset: Default::default(),
            }),
            flow_changed: Notify::new(),
            closed: AtomicBool::new(false),
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
        });
        let (read_half, write_half) = tokio::io::split(io);
        let (streams_tx, streams_rx) = mpsc::channel(16);
        let writer = tokio::spawn(write_loop(write_half, out_rx, Arc::clone(&shared)));
        let (gone_tx, gone) = tokio::sync::watch::channel(false);
        let reader = tokio::spawn(read_loop(
            read_half,
            config,
            Arc::clone(&shared),
            streams_tx,
            gone_tx,
        ));
        (
            Session {
                shared: Arc::new(SharedHandle(shared)),
                reader,
                writer,
                gone,
            },
            streams_rx,
        )
    }

    /// Turns `true` once the client can send nothing more: it closed the connection, went
    /// away, idled out or broke the protocol.
    pub fn client_gone(&self) -> tokio::sync::watch::Receiver<bool> {
        self.gone.clone()
    }

    /// Ends the session: GOAWAY with `status`, then, once what was queued is written (within
    /// a few seconds), the connection closes.
    pub async fn close(self, status: u32) {
        let shared = &self.shared.0;
        shared.send(Frame::GoAway {
            last_good_stream_id: 0,
            status,
        });
        let _ = shared.out.send(Out::Shutdown);
        let mut writer = self.writer;
        if tokio::time::timeout(Duration::from_secs(5), &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
        shared.mark_closed();
        // What the client still sends is read (to its end, for a second at most) rather than
        // left unread, which would make the close a reset that can cut off the last frames on
        // their way through kubelet's proxy.
        let mut reader = self.reader;
        if tokio::time::timeout(Duration::from_secs(1), &mut reader)
            .await
            .is_err()
        {
            reader.abort();
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut io: W,
    mut rx: mpsc::UnboundedReceiver<Out>,
    shared: Arc<Shared>,
) {
    let mut encoder = Encoder::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut shutdown = false;
    while !shutdown {
        let Some(first) = rx.recv().await else { break };
        let mut release = 0u32;
        let mut next = Some(first);
        // Batch what is queued into one write.
        while let Some(out) = next.take() {
            match out {
                Out::Frame(f) => encoder.encode(&f, &mut buf),
                Out::Data(f, n) => {
                    encoder.encode(&f, &mut buf);
                    release += n;
                }
                Out::Shutdown => {
                    shutdown = true;
                    break;
                }
            }
            if buf.len() < 256 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        if io.write_all(&buf).await.is_err() {
            break;
        }
        buf.clear();
        shared.queued.add_permits(release as usize);
        shared.touch();
    }
    let _ = io.flush().await;
    let _ = io.shutdown().await;
    shared.mark_closed();
    shared.queued.close();
}

/// Inbound data of one stream goes through a forwarder task, so the session's reader never
/// waits for a handler: it goes on seeing WINDOW_UPDATE, RST_STREAM, PING and the end of the
/// connection while a process does not read its stdin.
type Inbound = mpsc::UnboundedSender<Bytes>;

/// Received data not yet taken by handlers, across the session, before the reader stops
/// decoding frames. A flow-controlling peer never gets near it (its windows are 64 KiB per
/// stream); spdystream keeps no windows and is held back here.
const PARKED_LIMIT: usize = 8 << 20;
/// Bytes read ahead from the socket while decoding is held back, to notice a client that left.
const READ_AHEAD: usize = 1 << 20;

/// Moves one stream's data to its handler, acknowledging it with WINDOW_UPDATE once taken.
fn forward_inbound(
    stream_id: u32,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    handler: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
    parked: Arc<Parked>,
) {
    tokio::spawn(async move {
        let mut unacked = 0u32;
        let mut handler = Some(handler);
        while let Some(data) = rx.recv().await {
            let len = data.len();
            if let Some(h) = handler.as_ref()
                && h.send(data).await.is_err()
            {
                // The handler no longer reads this stream: the rest is dropped.
                handler = None;
            }
            parked.release(len);
            unacked = unacked.saturating_add(len as u32);
            if unacked >= INITIAL_WINDOW / 2 {
                for id in [stream_id, 0] {
                    shared.send(Frame::WindowUpdate {
                        stream_id: id,
                        delta: unacked,
                    });
                }
                unacked = 0;
            }
        }
    });
}

/// The session's count of received, untaken bytes.
#[derive(Default)]
struct Parked {
    bytes: std::sync::atomic::AtomicUsize,
    taken: Notify,
}

impl Parked {
    fn add(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::AcqRel);
    }

    fn release(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::AcqRel);
        self.taken.notify_waiters();
    }

    fn over_limit(&self) -> bool {
        self.bytes.load(Ordering::Acquire) > PARKED_LIMIT
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut io: R,
    config: Config,
    shared: Arc<Shared>,
    streams: mpsc::Sender<IncomingStream>,
    gone: tokio::sync::watch::Sender<bool>,
) {
    let mut decoder = Decoder::new(config.limits);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut inbound: HashMap<u32, Inbound> = HashMap::new();
    let parked = Arc::new(Parked::default());
    let mut last_id = 0u32;
    let outcome: Result<(), FrameError> = 'session: loop {
        // Handlers are behind: decode nothing more until they take some, but keep reading a
        // little, so that a client that went away is noticed.
        while parked.over_limit() {
            let taken = parked.taken.notified();
            tokio::pin!(taken);
            taken.as_mut().enable();
            if !parked.over_limit() {
                break;
            }
            let idle_left = config.idle_timeout.saturating_sub(shared.idle_for());
            tokio::select! {
                () = &mut taken => {}
                read = io.read_buf(&mut buf), if buf.len() < READ_AHEAD => match read {
                    Ok(0) | Err(_) => break 'session Ok(()),
                    Ok(_) => shared.touch(),
                },
                () = tokio::time::sleep(idle_left) => {
                    if shared.idle_for() >= config.idle_timeout {
                        break 'session Ok(());
                    }
                }
            }
        }
        let frame = loop {
            match decoder.decode(&mut buf) {
                Ok(Some(f)) => break f,
                Ok(None) => {}
                Err(e) => break 'session Err(e),
            }
            let idle_left = config.idle_timeout.saturating_sub(shared.idle_for());
            match tokio::time::timeout(idle_left, io.read_buf(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break 'session Ok(()),
                Ok(Ok(_)) => shared.touch(),
                Err(_) if shared.idle_for() >= config.idle_timeout => {
                    tracing::debug!("SPDY session idle for {:?}: closing", config.idle_timeout);
                    shared.send(Frame::GoAway {
                        last_good_stream_id: last_id,
                        status: goaway::OK,
                    });
                    let _ = shared.out.send(Out::Shutdown);
                    break 'session Ok(());
                }
                Err(_) => {}
            }
        };
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                if stream_id == 0 || stream_id % 2 == 0 || stream_id <= last_id {
                    break 'session Err(FrameError::Protocol(format!(
                        "the client opened stream {stream_id} after {last_id}"
                    )));
                }
                last_id = stream_id;
                if inbound.len() >= MAX_STREAMS {
                    shared.send(Frame::RstStream {
                        stream_id,
                        status: rst::REFUSED_STREAM,
                    });
                    continue;
                }
                let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
                if flags & FLAG_FIN == 0 {
                    let (in_tx, in_rx) = mpsc::unbounded_channel();
                    forward_inbound(
                        stream_id,
                        in_rx,
                        tx,
                        Arc::clone(&shared),
                        Arc::clone(&parked),
                    );
                    inbound.insert(stream_id, in_tx);
                }
                if let Ok(mut flow) = shared.flow.lock() {
                    let initial = flow.initial;
                    flow.streams.insert(stream_id, initial);
                }
                shared.send(Frame::SynReply {
                    stream_id,
                    flags: 0,
                    headers: Vec::new(),
                });
                let stream = IncomingStream {
                    id: stream_id,
                    headers,
                    data: rx,
                    writer: StreamWriter {
                        id: stream_id,
                        shared: Arc::new(SharedHandle(Arc::clone(&shared))),
                        finished: false,
                    },
                };
                if let Err(refused) = streams.send(stream).await {
                    refused.0.writer.reset(rst::REFUSED_STREAM);
                    inbound.remove(&stream_id);
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if stream_id == 0 {
                    break 'session Err(FrameError::Protocol("DATA on stream 0".into()));
                }
                let Some(entry) = inbound.get(&stream_id) else {
                    if stream_id > last_id {
                        shared.send(Frame::RstStream {
                            stream_id,
                            status: rst::INVALID_STREAM,
                        });
                    }
                    continue;
                };
                if !data.is_empty() {
                    parked.add(data.len());
                    if let Err(unsent) = entry.send(data) {
                        parked.release(unsent.0.len());
                    }
                }
                if flags & FLAG_FIN != 0 {
                    inbound.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                inbound.remove(&stream_id);
                if let Ok(mut flow) = shared.flow.lock()
                    && flow.streams.remove(&stream_id).is_some()
                {
                    flow.reset.insert(stream_id);
                }
                shared.flow_changed.notify_waiters();
            }
            Frame::Settings { entries, .. } => {
                if let Ok(mut flow) = shared.flow.lock() {
                    for e in entries
                        .iter()
                        .filter(|e| e.id == SETTINGS_INITIAL_WINDOW_SIZE)
                    {
                        let value = i64::from(e.value).min(MAX_WINDOW);
                        let delta = value - flow.initial;
                        flow.initial = value;
                        flow.enforced = true;
                        for w in flow.streams.values_mut() {
                            *w += delta;
                        }
                    }
                }
                shared.flow_changed.notify_waiters();
            }
            Frame::WindowUpdate { stream_id, delta } => {
                if let Ok(mut flow) = shared.flow.lock() {
                    flow.enforced = true;
                    let delta = i64::from(delta);
                    if stream_id == 0 {
                        flow.session = (flow.session + delta).min(MAX_WINDOW);
                    } else if let Some(w) = flow.streams.get_mut(&stream_id) {
                        *w = (*w + delta).min(MAX_WINDOW);
                    }
                }
                shared.flow_changed.notify_waiters();
            }
            // Pings the client starts carry odd ids; this side starts none.
            Frame::Ping { id } if id % 2 == 1 => shared.send(Frame::Ping { id }),
            Frame::GoAway { .. } => break 'session Ok(()),
            Frame::Ping { .. }
            | Frame::Headers { .. }
            | Frame::SynReply { .. }
            | Frame::Unknown { .. } => {}
        }
    };
    if let Err(e) = outcome {
        tracing::warn!(error = %e, "ending a SPDY session");
        shared.send(Frame::GoAway {
            last_good_stream_id: last_id,
            status: goaway::PROTOCOL_ERROR,
        });
        let _ = shared.out.send(Out::Shutdown);
    }
    // Handlers see the end of every stream's input and of new streams.
    drop(inbound);
    drop(streams);
    let _ = gone.send(true);
}
