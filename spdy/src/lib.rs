//! SPDY/3.1, the subset kubelet's streaming protocols speak: `kubectl exec`, `attach` and
//! `port-forward` (remotecommand `channel.k8s.io` to `v4.channel.k8s.io`, and
//! `portforward.k8s.io`) upgrade an HTTP connection to SPDY/3.1 and open one stream per channel.
//! No Rust crate serves SPDY, so this crate holds:
//!
//! - [`frame`]: every SPDY/3.1 frame (SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING,
//!   GOAWAY, HEADERS, WINDOW_UPDATE, DATA; other control types are read and ignored), decoded
//!   and encoded, with header blocks compressed by zlib primed with the SPDY/3 dictionary.
//! - [`session`]: the server side of a session on an upgraded connection: the client opens the
//!   streams (this side opens none and pushes nothing), each is replied to and handed over as a
//!   [`session::IncomingStream`]; per-stream and session flow control, PING replies, an idle
//!   timeout, GOAWAY at the end.
//!
//! Frames from the network are untrusted input: lengths are checked before use, frame sizes and
//! decompressed header blocks are bounded ([`frame::Limits`]), and a malformed frame is an
//! error (the session ends with GOAWAY PROTOCOL_ERROR), never a panic. The frame decoder has a
//! cargo-fuzz target in `fuzz/`.
//!
//! The crate knows nothing of exec, containers or gRPC: the darwin-cri streaming server builds
//! its remote-command and port-forward sessions on top of it, and the end-to-end tests use
//! [`frame`] to play the client.

pub mod frame;
pub mod session;

#[cfg(test)]
mod tests;
