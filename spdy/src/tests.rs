use bytes::{Bytes, BytesMut};

use crate::frame::*;

/// SYN_STREAM(1, FIN, streamtype=error), SYN_STREAM(3, streamtype=stdin, port=8080),
/// DATA(3, FIN, "hello"), PING(1): the header blocks compressed by CPython's zlib with the
/// SPDY/3 dictionary and a sync flush per block, as Go's spdystream writes them.
const RECORDED: &str = "80030001010000280000000100000000000078f9e3c6a7c202a62346703a2b294a4dcc851625aca9a08006000000ffff80030001000000230000000300000000000002651c4ca9e21260768194d845e0cc6161606100000000ffff000000030100000568656c6c6f800300060000000400000001";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0))
        .collect()
}

fn decode_all(bytes: &[u8], step: usize) -> Result<Vec<Frame>, FrameError> {
    let mut d = Decoder::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in bytes.chunks(step.max(1)) {
        buf.extend_from_slice(chunk);
        while let Some(f) = d.decode(&mut buf)? {
            frames.push(f);
        }
    }
    assert!(buf.is_empty(), "bytes left over");
    Ok(frames)
}

#[test]
fn dictionary_is_the_spdy3_one() {
    let d = dictionary();
    assert_eq!(d.len(), 1423);
    let mut c = flate2::Compress::new(flate2::Compression::default(), true);
    assert_eq!(c.set_dictionary(d).expect("dictionary"), 0xe3c6_a7c2);
}

#[test]
fn recorded_frames_decode_in_any_split() {
    let bytes = unhex(RECORDED);
    let want = vec![
        Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            flags: FLAG_FIN,
            headers: vec![("streamtype".into(), "error".into())],
        },
        Frame::SynStream {
            stream_id: 3,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: vec![
                ("streamtype".into(), "stdin".into()),
                ("port".into(), "8080".into()),
            ],
        },
        Frame::Data {
            stream_id: 3,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"hello"),
        },
        Frame::Ping { id: 1 },
    ];
    for step in [1, 2, 7, 8, 9, bytes.len()] {
        assert_eq!(
            decode_all(&bytes, step).expect("valid"),
            want,
            "step {step}"
        );
    }
}

#[test]
fn every_frame_round_trips_through_one_compression_context() {
    let frames = vec![
        Frame::SynStream {
            stream_id: 5,
            associated_to: 0,
            priority: 3,
            flags: 0,
            headers: vec![
                ("streamtype".into(), "data".into()),
                ("requestid".into(), "0".into()),
            ],
        },
        Frame::SynReply {
            stream_id: 5,
            flags: 0,
            headers: vec![],
        },
        Frame::Headers {
            stream_id: 5,
            flags: FLAG_FIN,
            headers: vec![("x".into(), "a\0b".into())],
        },
        Frame::RstStream {
            stream_id: 7,
            status: rst::PROTOCOL_ERROR,
        },
        Frame::Settings {
            flags: 0,
            entries: vec![Setting {
                flags: 1,
                id: SETTINGS_INITIAL_WINDOW_SIZE,
                value: 1 << 20,
            }],
        },
        Frame::Ping { id: 2 },
        Frame::GoAway {
            last_good_stream_id: 5,
            status: goaway::OK,
        },
        Frame::WindowUpdate {
            stream_id: 0,
            delta: 32768,
        },
        Frame::Data {
            stream_id: 5,
            flags: 0,
            data: Bytes::from(vec![9u8; 70_000]),
        },
        // The same headers again: the second block refers back into the first.
        Frame::SynStream {
            stream_id: 9,
            associated_to: 0,
            priority: 0,
            flags: FLAG_FIN,
            headers: vec![
                ("streamtype".into(), "data".into()),
                ("requestid".into(), "0".into()),
            ],
        },
    ];
    let mut e = Encoder::new();
    let mut out = BytesMut::new();
    for f in &frames {
        e.encode(f, &mut out);
    }
    assert_eq!(decode_all(&out, 1000).expect("own frames"), frames);
}

#[test]
fn malformed_frames_are_errors() {
    let limits = Limits::default();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("version 2", vec![0x80, 0x02, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]),
        ("short ping", vec![0x80, 0x03, 0, 6, 0, 0, 0, 3, 0, 0, 1]),
        ("short rst", vec![0x80, 0x03, 0, 3, 0, 0, 0, 4, 0, 0, 0, 1]),
        (
            "settings count past the end",
            vec![0x80, 0x03, 0, 4, 0, 0, 0, 4, 0, 0, 0, 9],
        ),
        (
            "window update of 0",
            vec![0x80, 0x03, 0, 9, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0],
        ),
        (
            "control frame over the limit",
            vec![0x80, 0x03, 0, 1, 0, 0x01, 0, 1],
        ),
        ("data frame over the limit", vec![0, 0, 0, 1, 0, 0x20, 0, 0]),
        ("header block not zlib", {
            let mut f = vec![0x80, 0x03, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            f.extend_from_slice(&[1, 2, 3, 4]);
            f
        }),
        (
            "syn stream too short",
            vec![0x80, 0x03, 0, 1, 0, 0, 0, 4, 0, 0, 0, 1],
        ),
    ];
    for (what, bytes) in cases {
        let mut d = Decoder::new(limits);
        let mut buf = BytesMut::from(&bytes[..]);
        assert!(d.decode(&mut buf).is_err(), "{what} was accepted");
    }
    // A header block that inflates past the limit (a zlib bomb) is refused.
    let mut e = Encoder::new();
    let mut out = BytesMut::new();
    e.encode(
        &Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: vec![("x".into(), "a".repeat(300_000))],
        },
        &mut out,
    );
    let mut d = Decoder::new(Limits::default());
    assert!(matches!(
        d.decode(&mut out),
        Err(FrameError::TooLarge { .. })
    ));
    // Unknown control types are skipped, as the spec asks.
    let mut buf = BytesMut::from(&[0x80, 0x03, 0, 42, 0, 0, 0, 2, 1, 2][..]);
    assert_eq!(
        Decoder::new(limits).decode(&mut buf).expect("ignored"),
        Some(Frame::Unknown { kind: 42 })
    );
}
