//! Transport-neutral channels: what the exec, attach and port-forward handlers read and write,
//! whether a SPDY stream or a WebSocket channel carries them.

use bytes::Bytes;
use tokio::sync::mpsc;

use super::spdy::session::StreamWriter;

/// Input from the client; ends when the client closes it.
pub type Source = mpsc::Receiver<Bytes>;

/// Output to the client. Dropping it closes it.
#[derive(Debug)]
pub enum Sink {
    Spdy(StreamWriter),
    WebSocket {
        channel: u8,
        out: mpsc::Sender<super::ws::Outgoing>,
    },
}

impl Sink {
    pub async fn write(&mut self, data: Bytes) -> std::io::Result<()> {
        match self {
            Sink::Spdy(w) => w.write(data).await,
            Sink::WebSocket { channel, out } => out
                .send(super::ws::Outgoing::Data(*channel, data))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::BrokenPipe,
                        "the WebSocket connection is closed",
                    )
                }),
        }
    }
}

/// Resolves, through [`Gone::wait`], once the client can send nothing more (it closed the
/// connection, went away, idled out or broke the protocol).
#[derive(Debug, Clone)]
pub struct Gone(pub tokio::sync::watch::Receiver<bool>);

impl Gone {
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|gone| *gone).await;
    }
}
