//! SPDY/3.1 frames: decoding and encoding, with header blocks compressed by zlib primed with
//! the SPDY/3 dictionary (one compression context per direction for the whole session).
//!
//! This module depends on nothing else in the crate; the fuzz target and the end-to-end tests'
//! client use it as it is. Everything read is untrusted: lengths are checked before use, decompressed header blocks are
//! bounded, and a malformed frame is an error, never a panic.

use std::sync::OnceLock;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
/// Every stream's and the session's flow-control window at the start (SPDY/3.1).
pub const INITIAL_WINDOW: u32 = 64 * 1024;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

/// RST_STREAM status codes.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
}

/// GOAWAY status codes.
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
}

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

const HEADER_LEN: usize = 8;
const STREAM_ID_MASK: u32 = 0x7fff_ffff;

/// Name/value pairs of a header block; names are lower case. A value holding several values
/// separates them with NUL, as SPDY writes them.
pub type Headers = Vec<(String, String)>;

/// The value of header `name` (case-insensitive), if present.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame of a type this implementation does not know: the spec says to ignore it.
    Unknown {
        kind: u16,
    },
}

/// A frame that cannot be taken: the session ends with GOAWAY (PROTOCOL_ERROR).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
    #[error("SPDY frame of {len} bytes exceeds the limit of {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("SPDY header block: {0}")]
    Compression(String),
}

/// What one session accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Payload of a control frame (compressed headers included).
    pub max_control: usize,
    /// Payload of a data frame.
    pub max_data: usize,
    /// A header block once decompressed.
    pub max_header_block: usize,
    /// Name/value pairs in a header block.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_control: 64 * 1024,
            max_data: 1024 * 1024,
            max_header_block: 256 * 1024,
            max_headers: 256,
        }
    }
}

/// The SPDY/3 header compression dictionary: length-prefixed header names and values, then a
/// run of common status codes, dates and media types (1423 bytes; Adler-32 0xe3c6a7c2).
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
            "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
            "400 Bad Request401 Unauthorized403 Forbidden404 Not Found",
            "500 Internal Server Error501 Not Implemented503 Service Unavailable",
            "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
            "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
            "chunked,text/html,image/png,image/jpg,image/gif,application/xml,",
            "application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
            "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::with_capacity(1423);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

/// Reads frames from bytes as they arrive; holds the session's inbound decompression context.
pub struct Decoder {
    inflate: Decompress,
    limits: Limits,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").finish_non_exhaustive()
    }
}

impl Decoder {
    pub fn new(limits: Limits) -> Self {
        Decoder {
            inflate: Decompress::new(true),
            limits,
        }
    }

    /// Takes the next complete frame from the front of `buf`; `None` while it is incomplete.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let word = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        let len = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
        let control = word & 0x8000_0000 != 0;
        let limit = if control {
            self.limits.max_control
        } else {
            self.limits.max_data
        };
        if len > limit {
            return Err(FrameError::TooLarge { len, limit });
        }
        if buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let mut payload = buf.split_to(len).freeze();
        if !control {
            return Ok(Some(Frame::Data {
                stream_id: word & STREAM_ID_MASK,
                flags,
                data: payload,
            }));
        }
        let version = ((word >> 16) & 0x7fff) as u16;
        let kind = (word & 0xffff) as u16;
        if version != VERSION {
            return Err(FrameError::Protocol(format!(
                "unsupported SPDY version {version}"
            )));
        }
        let exact = |want: usize| -> Result<(), FrameError> {
            if len == want {
                Ok(())
            } else {
                Err(FrameError::Protocol(format!(
                    "control frame type {kind} has {len} bytes, not {want}"
                )))
            }
        };
        let at_least = |want: usize| -> Result<(), FrameError> {
            if len >= want {
                Ok(())
            } else {
                Err(FrameError::Protocol(format!(
                    "control frame type {kind} has {len} bytes, fewer than {want}"
                )))
            }
        };
        let frame = match kind {
            SYN_STREAM => {
                at_least(10)?;
                let stream_id = payload.get_u32() & STREAM_ID_MASK;
                let associated_to = payload.get_u32() & STREAM_ID_MASK;
                let priority = payload.get_u8() >> 5;
                let _slot = payload.get_u8();
                let headers = self.header_block(&payload)?;
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    flags,
                    headers,
                }
            }
            SYN_REPLY | HEADERS => {
                at_least(4)?;
                let stream_id = payload.get_u32() & STREAM_ID_MASK;
                let headers = self.header_block(&payload)?;
                if kind == SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            RST_STREAM => {
                exact(8)?;
                Frame::RstStream {
                    stream_id: payload.get_u32() & STREAM_ID_MASK,
                    status: payload.get_u32(),
                }
            }
            SETTINGS => {
                at_least(4)?;
                let count = payload.get_u32() as usize;
                if count > (len - 4) / 8 || len != 4 + count * 8 {
                    return Err(FrameError::Protocol(format!(
                        "SETTINGS of {len} bytes cannot hold {count} entries"
                    )));
                }
                let entries = (0..count)
                    .map(|_| {
                        let word = payload.get_u32();
                        Setting {
                            flags: (word >> 24) as u8,
                            id: word & 0x00ff_ffff,
                            value: payload.get_u32(),
                        }
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            PING => {
                exact(4)?;
                Frame::Ping {
                    id: payload.get_u32(),
                }
            }
            GOAWAY => {
                exact(8)?;
                Frame::GoAway {
                    last_good_stream_id: payload.get_u32() & STREAM_ID_MASK,
                    status: payload.get_u32(),
                }
            }
            WINDOW_UPDATE => {
                exact(8)?;
                let stream_id = payload.get_u32() & STREAM_ID_MASK;
                let delta = payload.get_u32() & STREAM_ID_MASK;
                if delta == 0 {
                    return Err(FrameError::Protocol(
                        "WINDOW_UPDATE with a delta of 0".into(),
                    ));
                }
                Frame::WindowUpdate { stream_id, delta }
            }
            other => Frame::Unknown { kind: other },
        };
        Ok(Some(frame))
    }

    /// Decompresses and parses one header block. Every block passes through the session's one
    /// zlib context, so a block is always inflated, even for a stream that is then refused.
    fn header_block(&mut self, compressed: &[u8]) -> Result<Headers, FrameError> {
        let max = self.limits.max_header_block;
        let mut out: Vec<u8> = Vec::with_capacity(1024.min(max));
        let mut input = compressed;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= max {
                    return Err(FrameError::TooLarge {
                        len: out.len(),
                        limit: max,
                    });
                }
                out.reserve((out.capacity() * 2).min(max) - out.len());
            }
            let before_in = self.inflate.total_in();
            let before_out = out.len();
            let result = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let consumed = (self.inflate.total_in() - before_in) as usize;
            input = &input[consumed.min(input.len())..];
            match result {
                Ok(Status::StreamEnd) => {
                    return Err(FrameError::Compression(
                        "the peer ended its compression stream".into(),
                    ));
                }
                Ok(_) => {
                    let progressed = consumed > 0 || out.len() > before_out;
                    if input.is_empty() && out.len() < out.capacity() {
                        break;
                    }
                    if !progressed && out.len() < out.capacity() {
                        return Err(FrameError::Compression("truncated header block".into()));
                    }
                }
                Err(e) => match e.needs_dictionary() {
                    Some(want) if want == adler32(dictionary()) => {
                        self.inflate.set_dictionary(dictionary()).map_err(|e| {
                            FrameError::Compression(format!("setting the dictionary: {e}"))
                        })?;
                    }
                    Some(want) => {
                        return Err(FrameError::Compression(format!(
                            "the peer compresses with an unknown dictionary (Adler-32 {want:#x})"
                        )));
                    }
                    None => return Err(FrameError::Compression(e.to_string())),
                },
            }
        }
        parse_headers(&out, &self.limits)
    }
}

fn parse_headers(mut block: &[u8], limits: &Limits) -> Result<Headers, FrameError> {
    let bad = |what: &str| FrameError::Protocol(format!("header block: {what}"));
    let read_u32 = |block: &mut &[u8]| -> Result<usize, FrameError> {
        if block.len() < 4 {
            return Err(bad("truncated"));
        }
        Ok(block.get_u32() as usize)
    };
    let count = read_u32(&mut block)?;
    if count > limits.max_headers {
        return Err(bad(&format!(
            "{count} pairs exceed the limit of {}",
            limits.max_headers
        )));
    }
    let mut headers = Headers::with_capacity(count);
    for _ in 0..count {
        let field = |block: &mut &[u8]| -> Result<String, FrameError> {
            let len = read_u32(block)?;
            if len > block.len() {
                return Err(bad("a length runs past the end"));
            }
            let text = String::from_utf8_lossy(&block[..len]).into_owned();
            block.advance(len);
            Ok(text)
        };
        let name = field(&mut block)?;
        if name.is_empty() {
            return Err(bad("an empty header name"));
        }
        let value = field(&mut block)?;
        headers.push((name.to_ascii_lowercase(), value));
    }
    if !block.is_empty() {
        return Err(bad("bytes after the last pair"));
    }
    Ok(headers)
}

/// Writes frames; holds the session's outbound compression context.
pub struct Encoder {
    deflate: Compress,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").finish_non_exhaustive()
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // Cannot fail on a fresh stream; a failure would only cost compression ratio.
        let _ = deflate.set_dictionary(dictionary());
        Encoder { deflate }
    }

    /// Appends `frame`, encoded, to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) {
        let control = |out: &mut BytesMut, kind: u16, flags: u8, payload: &[u8]| {
            out.put_u16(0x8000 | VERSION);
            out.put_u16(kind);
            out.put_u8(flags);
            put_u24(out, payload.len());
            out.put_slice(payload);
        };
        let mut p = BytesMut::new();
        match frame {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                p.put_u32(stream_id & STREAM_ID_MASK);
                p.put_u32(associated_to & STREAM_ID_MASK);
                p.put_u8((priority & 0x7) << 5);
                p.put_u8(0);
                self.header_block(headers, &mut p);
                control(out, SYN_STREAM, *flags, &p);
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            }
            | Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                p.put_u32(stream_id & STREAM_ID_MASK);
                self.header_block(headers, &mut p);
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                control(out, kind, *flags, &p);
            }
            Frame::RstStream { stream_id, status } => {
                p.put_u32(stream_id & STREAM_ID_MASK);
                p.put_u32(*status);
                control(out, RST_STREAM, 0, &p);
            }
            Frame::Settings { flags, entries } => {
                p.put_u32(entries.len() as u32);
                for e in entries {
                    p.put_u32((u32::from(e.flags) << 24) | (e.id & 0x00ff_ffff));
                    p.put_u32(e.value);
                }
                control(out, SETTINGS, *flags, &p);
            }
            Frame::Ping { id } => control(out, PING, 0, &id.to_be_bytes()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                p.put_u32(last_good_stream_id & STREAM_ID_MASK);
                p.put_u32(*status);
                control(out, GOAWAY, 0, &p);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                p.put_u32(stream_id & STREAM_ID_MASK);
                p.put_u32(delta & STREAM_ID_MASK);
                control(out, WINDOW_UPDATE, 0, &p);
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_u8(*flags);
                put_u24(out, data.len());
                out.put_slice(data);
            }
            Frame::Unknown { .. } => {}
        }
    }

    fn header_block(&mut self, headers: &Headers, out: &mut BytesMut) {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            for field in [name.to_ascii_lowercase().as_bytes(), value.as_bytes()] {
                raw.extend_from_slice(&(field.len() as u32).to_be_bytes());
                raw.extend_from_slice(field);
            }
        }
        let mut compressed: Vec<u8> = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            let before = self.deflate.total_in();
            if compressed.len() == compressed.capacity() {
                compressed.reserve(256);
            }
            // A sync flush ends each block on a byte boundary, so the peer can inflate it whole.
            let _ = self
                .deflate
                .compress_vec(input, &mut compressed, FlushCompress::Sync);
            let consumed = (self.deflate.total_in() - before) as usize;
            input = &input[consumed.min(input.len())..];
            if input.is_empty() && compressed.len() < compressed.capacity() {
                break;
            }
        }
        out.put_slice(&compressed);
    }
}

fn put_u24(out: &mut BytesMut, len: usize) {
    let len = len.min(0x00ff_ffff) as u32;
    out.put_u8((len >> 16) as u8);
    out.put_u16(len as u16);
}
