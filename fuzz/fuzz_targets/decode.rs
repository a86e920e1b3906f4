//! Arbitrary bytes through everything that parses untrusted input in the forward codec:
//!
//! * [`Framer`] + [`parse_message`] with small limits (4 KiB frames, 16 KiB decompressed), the
//!   bytes fed in two reads split at a point the fuzzer chooses. The outcome must not depend on
//!   the split: the same messages (tag, records, chunk, counts, mode) and the same error, as the
//!   codec promises ("a frame split at any byte boundary decodes the same").
//! * `handshake::{Helo, Ping, Pong}::decode` on the raw bytes and on every whole frame.
//!
//! Input layout: byte 0 chooses the split point (as a fraction of the rest) and
//! `skip_invalid_event` (its low bit); the rest is the stream.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use nagare_forward::codec::handshake::{Helo, Ping, Pong};
use nagare_forward::codec::{parse_message, DecodeError, DecodeLimits, Framer, Parsed};

/// What a decoded frame amounts to, without event times: integer time 0 and nil mean "now",
/// which differs between two runs.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Nil,
    Rejected(&'static str, Option<Vec<u8>>),
    Message {
        tag: Vec<u8>,
        records: Vec<Vec<u8>>,
        chunk: Option<Vec<u8>>,
        invalid: usize,
        signal: u8,
        mode: String,
    },
    Error(DecodeError),
}

fn handshake(frame: &[u8]) {
    let _ = Helo::decode(frame);
    let _ = Ping::decode(frame);
    let _ = Pong::decode(frame);
}

/// Frames and parses `parts` as successive reads of one connection, stopping at the first error
/// (the connection would be closed there).
fn run(parts: &[&[u8]], limits: &DecodeLimits) -> Vec<Outcome> {
    let mut framer = Framer::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for part in parts {
        buf.extend_from_slice(part);
        loop {
            let frame = match framer.next_frame(&mut buf, limits.max_frame) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    out.push(Outcome::Error(e));
                    return out;
                }
            };
            assert!(frame.len() <= limits.max_frame, "frame over the limit");
            handshake(&frame);
            match parse_message(frame, limits) {
                Ok(Parsed::Nil) => out.push(Outcome::Nil),
                Ok(Parsed::Rejected { reason, chunk }) => {
                    out.push(Outcome::Rejected(reason, chunk.map(|c| c.to_vec())))
                }
                Ok(Parsed::Message(m)) => out.push(Outcome::Message {
                    tag: m.tag.as_bytes().to_vec(),
                    records: m
                        .events
                        .iter()
                        .map(|e| e.record.as_bytes().to_vec())
                        .collect(),
                    chunk: m.chunk.map(|c| c.to_vec()),
                    invalid: m.invalid_events,
                    signal: m.signal,
                    mode: format!("{:?}", m.mode),
                }),
                Err(e) => {
                    out.push(Outcome::Error(e));
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, stream)) = data.split_first() else {
        return;
    };
    let limits = DecodeLimits {
        max_frame: 4096,
        max_decompressed: 16 * 1024,
        skip_invalid_event: ctl & 1 == 0,
    };
    let split = (ctl as usize >> 1) * stream.len() / 127;
    let whole = run(&[stream], &limits);
    let (a, b) = stream.split_at(split.min(stream.len()));
    let in_two = run(&[a, b], &limits);
    assert_eq!(
        whole, in_two,
        "outcome depends on where the stream was split (at {split})"
    );
    handshake(stream);
});
