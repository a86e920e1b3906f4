//! Property tests: every mode the encoders write decodes back to the same tag, times, records
//! and chunk, through a [`Framer`] fed at random split points, several messages back to back.

use bytes::{Bytes, BytesMut};
use nagare_core::{Event, EventTime, Record};
use nagare_forward::codec::decode::Mode;
use nagare_forward::codec::encode::{
    parse_ack, write_ack, write_forward, write_message, write_packed_forward, EntryWriter, Options,
};
use nagare_forward::codec::handshake::{Ping, Pong};
use nagare_forward::codec::{
    compress, parse_message, DecodeLimits, Framer, Parsed, DEFAULT_MAX_FRAME,
};
use proptest::prelude::*;
use proptest::sample::Index;

/// How one message is written.
#[derive(Debug, Clone)]
enum Shape {
    Message {
        time_as_integer: bool,
    },
    Forward {
        time_as_integer: bool,
    },
    Packed {
        as_str: bool,
    },
    /// Gzip, one member per group of entries (fluentd's buffer gzips each emit separately).
    Compressed {
        as_str: bool,
        cuts: Vec<Index>,
        level: u32,
    },
}

#[derive(Debug, Clone)]
struct Msg {
    tag: Vec<u8>,
    events: Vec<Event>,
    chunk: Option<Vec<u8>>,
    shape: Shape,
}

fn value() -> impl Strategy<Value = rmpv::Value> {
    prop_oneof![
        ".{0,40}".prop_map(rmpv::Value::from),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(rmpv::Value::Binary),
        any::<i64>().prop_map(rmpv::Value::from),
        any::<u64>().prop_map(rmpv::Value::from),
    ]
}

fn record() -> impl Strategy<Value = Record> {
    proptest::collection::vec((".{0,12}", value()), 0..8).prop_map(|pairs| {
        let m = rmpv::Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (rmpv::Value::from(k), v))
                .collect(),
        );
        Record::from_value(&m).expect("a map")
    })
}

/// Any time; integer times are whole seconds and never 0 (0 means "now").
fn event(time_as_integer: bool) -> impl Strategy<Value = Event> {
    (any::<u32>(), 0u32..1_000_000_000, record()).prop_map(move |(secs, nanos, record)| {
        let time = if time_as_integer {
            EventTime::from_secs(secs.max(1))
        } else {
            EventTime::new(secs, nanos)
        };
        Event { time, record }
    })
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        any::<bool>().prop_map(|time_as_integer| Shape::Message { time_as_integer }),
        any::<bool>().prop_map(|time_as_integer| Shape::Forward { time_as_integer }),
        any::<bool>().prop_map(|as_str| Shape::Packed { as_str }),
        (
            any::<bool>(),
            proptest::collection::vec(any::<Index>(), 0..4),
            0u32..=9
        )
            .prop_map(|(as_str, cuts, level)| Shape::Compressed {
                as_str,
                cuts,
                level
            }),
    ]
}

fn message() -> impl Strategy<Value = Msg> {
    (
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        shape(),
    )
        .prop_flat_map(|(tag, chunk, shape)| {
            let (n, as_int) = match &shape {
                Shape::Message { time_as_integer } => (1..2usize, *time_as_integer),
                Shape::Forward { time_as_integer } => (0..6, *time_as_integer),
                _ => (0..6, false),
            };
            proptest::collection::vec(event(as_int), n).prop_map(move |events| Msg {
                tag: tag.clone(),
                events,
                chunk: chunk.clone(),
                shape: shape.clone(),
            })
        })
}

fn entries(events: &[Event]) -> BytesMut {
    let mut out = BytesMut::new();
    for e in events {
        EntryWriter::write(&mut out, e.time, &e.record, false);
    }
    out
}

fn encode(m: &Msg, out: &mut BytesMut) {
    let chunk = m.chunk.as_deref();
    let plain = Options {
        chunk,
        ..Default::default()
    };
    let plain = chunk.map(|_| &plain);
    match &m.shape {
        Shape::Message { time_as_integer } => {
            let e = &m.events[0];
            write_message(out, &m.tag, e.time, &e.record, plain, *time_as_integer)
        }
        Shape::Forward { time_as_integer } => {
            write_forward(out, &m.tag, &m.events, plain, *time_as_integer)
        }
        Shape::Packed { as_str } => {
            write_packed_forward(out, &m.tag, &entries(&m.events), plain, *as_str)
        }
        Shape::Compressed {
            as_str,
            cuts,
            level,
        } => {
            // Cut the event list into groups and gzip each group as its own member.
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(m.events.len() + 1)).collect();
            at.push(0);
            at.push(m.events.len());
            at.sort_unstable();
            let mut gz = Vec::new();
            for w in at.windows(2) {
                gz.extend(compress::gzip(&entries(&m.events[w[0]..w[1]]), *level));
            }
            let opts = Options {
                chunk,
                size: Some(m.events.len() as u64),
                compressed: Some("gzip"),
            };
            write_packed_forward(out, &m.tag, &gz, Some(&opts), *as_str)
        }
    }
}

fn expected_mode(s: &Shape) -> Mode {
    match s {
        Shape::Message { .. } => Mode::Message,
        Shape::Forward { .. } => Mode::Forward,
        Shape::Packed { .. } => Mode::PackedForward,
        Shape::Compressed { .. } => Mode::CompressedPackedForward,
    }
}

/// Feeds `bytes` to a [`Framer`] in pieces cut at `cuts`, collecting every frame.
fn frames(bytes: &[u8], cuts: &[Index]) -> Vec<Bytes> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    let mut framer = Framer::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for w in at.windows(2) {
        buf.extend_from_slice(&bytes[w[0]..w[1]]);
        while let Some(f) = framer
            .next_frame(&mut buf, DEFAULT_MAX_FRAME)
            .expect("valid msgpack")
        {
            out.push(f);
        }
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn every_mode_round_trips_through_the_framer(
        msgs in proptest::collection::vec(message(), 1..4),
        cuts in proptest::collection::vec(any::<Index>(), 0..12),
    ) {
        let mut wire = BytesMut::new();
        for m in &msgs {
            encode(m, &mut wire);
        }
        let frames = frames(&wire, &cuts);
        prop_assert_eq!(frames.len(), msgs.len());
        for (f, m) in frames.into_iter().zip(&msgs) {
            let got = match parse_message(f, &DecodeLimits::default()) {
                Ok(Parsed::Message(got)) => got,
                other => return Err(TestCaseError::fail(format!("{other:?} for {m:?}"))),
            };
            prop_assert_eq!(got.tag.as_bytes(), &m.tag[..]);
            prop_assert_eq!(&got.events, &m.events);
            prop_assert_eq!(got.chunk.as_deref(), m.chunk.as_deref());
            prop_assert_eq!(got.mode, expected_mode(&m.shape));
            prop_assert_eq!(got.invalid_events, 0);
        }
    }

    #[test]
    fn ack_round_trips(chunk in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut out = BytesMut::new();
        write_ack(&mut out, &chunk);
        let frames = frames(&out, &[]);
        prop_assert_eq!(frames.len(), 1);
        prop_assert_eq!(parse_ack(&frames[0]), Some(&chunk[..]));
    }

    #[test]
    fn handshake_messages_round_trip(
        fields in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 5),
        ok in any::<bool>(),
        reason in ".{0,40}",
    ) {
        let ping = Ping {
            hostname: fields[0].clone(),
            shared_key_salt: fields[1].clone(),
            shared_key_hexdigest: fields[2].clone(),
            username: fields[3].clone(),
            password_digest: fields[4].clone(),
        };
        let mut out = BytesMut::new();
        ping.encode(&mut out);
        prop_assert_eq!(Ping::decode(&out).unwrap(), ping);
        let pong = Pong {
            auth_result: ok,
            reason,
            server_hostname: fields[0].clone(),
            shared_key_hexdigest: fields[2].clone(),
        };
        let mut out = BytesMut::new();
        pong.encode(&mut out);
        prop_assert_eq!(Pong::decode(&out).unwrap(), pong);
    }
}
