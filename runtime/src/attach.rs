//! The attach protocol between the server and a container's monitor.
//!
//! A client connects to the monitor's control socket and sends `attach\n`; the monitor answers
//! `ok\n` and from then on both sides exchange frames: one kind byte, a big-endian u32 length,
//! then that many bytes. The monitor sends the container's output; the client sends input,
//! the end of its input, and terminal resizes. The container's exit ends the connection.

/// Largest payload accepted in one frame; the monitor writes at most 64 KiB at a time.
pub const MAX_PAYLOAD: usize = 1 << 20;

const HEADER: usize = 5;

/// One attach frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client to monitor: bytes for the container's stdin.
    Stdin(Vec<u8>),
    /// Client to monitor: this client's input ended.
    StdinClosed,
    /// Client to monitor: the terminal is now this size.
    Resize {
        rows: u16,
        cols: u16,
    },
    /// Monitor to client: the container's output.
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

impl Frame {
    fn kind(&self) -> u8 {
        match self {
            Frame::Stdin(_) => 0,
            Frame::StdinClosed => 1,
            Frame::Resize { .. } => 2,
            Frame::Stdout(_) => 3,
            Frame::Stderr(_) => 4,
        }
    }

    /// Appends the encoded frame to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let resize;
        let payload: &[u8] = match self {
            Frame::Stdin(b) | Frame::Stdout(b) | Frame::Stderr(b) => b,
            Frame::StdinClosed => &[],
            Frame::Resize { rows, cols } => {
                resize = [rows.to_be_bytes(), cols.to_be_bytes()].concat();
                &resize
            }
        };
        out.push(self.kind());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

/// A malformed frame: the connection carrying it is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed attach frame: {0}")]
pub struct FrameError(pub String);

/// Takes frames out of a byte stream that arrives in arbitrary pieces.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet taken as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `None` until one has fully arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < HEADER {
            return Ok(None);
        }
        let kind = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(FrameError(format!(
                "a payload of {len} bytes exceeds {MAX_PAYLOAD}"
            )));
        }
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let payload: Vec<u8> = self.buf[HEADER..HEADER + len].to_vec();
        self.buf.drain(..HEADER + len);
        let frame = match kind {
            0 => Frame::Stdin(payload),
            1 => Frame::StdinClosed,
            2 if payload.len() == 4 => Frame::Resize {
                rows: u16::from_be_bytes([payload[0], payload[1]]),
                cols: u16::from_be_bytes([payload[2], payload[3]]),
            },
            3 => Frame::Stdout(payload),
            4 => Frame::Stderr(payload),
            other => {
                return Err(FrameError(format!(
                    "kind {other} with {len} bytes is unknown"
                )));
            }
        };
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_any_split() {
        let frames = vec![
            Frame::Stdin(b"hello".to_vec()),
            Frame::Resize {
                rows: 40,
                cols: 120,
            },
            Frame::StdinClosed,
            Frame::Stdout(vec![7; 70_000]),
            Frame::Stderr(Vec::new()),
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        for step in [1, 3, 4096, bytes.len()] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for chunk in bytes.chunks(step) {
                d.push(chunk);
                while let Some(f) = d.next_frame().expect("valid") {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "split every {step} bytes");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut d = Decoder::default();
        d.push(&[9, 0, 0, 0, 0]);
        assert!(d.next_frame().is_err());
        let mut d = Decoder::default();
        d.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert!(d.next_frame().is_err(), "oversized");
        let mut d = Decoder::default();
        d.push(&[2, 0, 0, 0, 1, 0]);
        assert!(d.next_frame().is_err(), "short resize");
    }
}
