//! Transport-neutral channels: what the exec, attach and port-forward handlers read and write,
//! whether a SPDY stream or a WebSocket channel carries them. The transports implement [`Sink`]
//! and feed [`Source`]s; nothing here knows either of them.

use std::future::Future;

use bytes::Bytes;
use tokio::sync::mpsc;

/// Input from the client; ends when the client closes it.
pub type Source = mpsc::Receiver<Bytes>;

/// Output to the client, one channel of it. Dropping it closes it.
pub trait Sink: Send + 'static {
    /// Sends `data` to the client; an error once the client's side is closed.
    fn write(&mut self, data: Bytes) -> impl Future<Output = std::io::Result<()>> + Send;
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
