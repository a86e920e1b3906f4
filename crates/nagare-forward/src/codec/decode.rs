//! Framing and message parsing.

use super::compress::{gunzip_capped, unzstd_capped, GZIP_MAGIC, ZSTD_MAGIC};
use super::time::{read_time, TimeValue};
use super::{DecodeError, DecodeLimits};
use bytes::{Bytes, BytesMut};
use nagare_core::msgpack::{
    read_array_len, read_map_len, read_str_or_bin, skip_complete, skip_nested, ScanError, Scanner,
};
use nagare_core::{Event, Record, Tag};

/// Cuts whole msgpack objects off the front of a connection's read buffer.
#[derive(Debug, Default)]
pub struct Framer {
    scanner: Scanner,
}

impl Framer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Splits one complete object off `buf`: `Ok(None)` until it is all there. Errors when the
    /// object is not msgpack or would exceed `max_frame` bytes (declared lengths included).
    pub fn next_frame(
        &mut self,
        buf: &mut BytesMut,
        max_frame: usize,
    ) -> Result<Option<Bytes>, DecodeError> {
        match self.scanner.scan(buf, max_frame)? {
            Some(n) => Ok(Some(buf.split_to(n).freeze())),
            None => Ok(None),
        }
    }

    /// Bytes received of an object not yet complete.
    pub fn pending(&self, buf: &BytesMut) -> usize {
        buf.len()
    }
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub tag: Tag,
    pub events: Vec<Event>,
    /// The `chunk` option, echoed byte for byte in the ack.
    pub chunk: Option<Bytes>,
    /// Events dropped while decoding (skip_invalid_event), with the reason of the first.
    pub invalid_events: usize,
    pub invalid_reason: Option<&'static str>,
    /// `fluent_signal`: always 0 (logs) here; any other signal is
    /// [`Parsed::Rejected`] (`non_log_signal`) without decoding its entries.
    pub signal: u8,
    /// The transport mode the peer used.
    pub mode: Mode,
}

/// The four event modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Message,
    Forward,
    PackedForward,
    CompressedPackedForward,
}

/// What one frame turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Message(Message),
    /// msgpack `nil`: a keepalive/heartbeat no-op (V14).
    Nil,
    /// Not an acceptable message, but the stream is still in sync: count it and keep reading.
    /// When it carried a `chunk`, ack it: a resend could never succeed (M02, M04, M15, and a
    /// non-zero `fluent_signal`: metrics or traces, which a logs pipeline does not keep).
    Rejected {
        reason: &'static str,
        chunk: Option<Bytes>,
    },
}

struct Opts {
    chunk: Option<Bytes>,
    compressed: Option<Bytes>,
    signal: u8,
}

fn parse_options(frame: &Bytes, pos: usize, end: usize) -> Opts {
    let mut o = Opts {
        chunk: None,
        compressed: None,
        signal: 0,
    };
    let s = &frame[pos..end];
    let Some((n, mut off)) = read_map_len(s) else {
        // nil (old Docker) or anything else: no options.
        return o;
    };
    for _ in 0..n {
        let Ok(kend) = skip_complete(s, off) else {
            return o;
        };
        let Ok(vend) = skip_complete(s, kend) else {
            return o;
        };
        if let Some((ks, ke)) = read_str_or_bin(&s[off..kend]) {
            let key = &s[off + ks..off + ke];
            let val = &s[kend..vend];
            match key {
                b"chunk" => {
                    if let Some((vs, ve)) = read_str_or_bin(val) {
                        o.chunk = Some(frame.slice(pos + kend + vs..pos + kend + ve));
                    }
                }
                b"compressed" => {
                    if let Some((vs, ve)) = read_str_or_bin(val) {
                        o.compressed = Some(frame.slice(pos + kend + vs..pos + kend + ve));
                    }
                }
                b"fluent_signal" => {
                    if let Some(&b @ 0..=0x7f) = val.first() {
                        o.signal = b;
                    }
                }
                _ => {}
            }
        }
        off = vend;
    }
    o
}

/// Why an entry could not be added.
enum EntryError {
    /// The bytes do not hold one whole msgpack entry; the caller says what that means.
    Bytes(ScanError),
    /// The entry is msgpack but the event is refused (unknown ext type, invalid event...).
    Event(DecodeError),
}

/// Collects events, applying the skip_invalid_event policy.
struct Events<'l> {
    out: Vec<Event>,
    invalid: usize,
    reason: Option<&'static str>,
    limits: &'l DecodeLimits,
}

impl<'l> Events<'l> {
    fn invalid(&mut self, reason: &'static str) -> Result<(), DecodeError> {
        if !self.limits.skip_invalid_event {
            return Err(DecodeError::InvalidEvent(reason));
        }
        self.invalid += 1;
        self.reason.get_or_insert(reason);
        Ok(())
    }

    /// Adds the event whose time spans `buf[tp..te]` and record `buf[rp..re]`.
    fn push(
        &mut self,
        buf: &Bytes,
        tp: usize,
        te: usize,
        rp: usize,
        re: usize,
    ) -> Result<(), DecodeError> {
        let time = match read_time(buf, tp, te)? {
            TimeValue::Time(t) => t,
            TimeValue::Invalid(r) => return self.invalid(r),
        };
        if read_map_len(&buf[rp..re]).is_none() {
            return self.invalid("record_not_a_map");
        }
        self.out.push(Event {
            time,
            record: Record::from_msgpack_unchecked(buf.slice(rp..re)),
        });
        Ok(())
    }

    /// Adds the `[time, record]` entry that starts at `buf[pos]` and returns where it ends.
    /// One pass: the time and the record are each walked once, and before anything is pushed.
    fn push_entry_at(&mut self, buf: &Bytes, pos: usize) -> Result<usize, EntryError> {
        match read_array_len(buf.get(pos..).unwrap_or_default()) {
            Some((2, hl)) => {
                let tp = pos + hl;
                // Depth 1: inside the entry array, as a scan of the whole entry would count.
                let te = skip_nested(buf, tp, 1).map_err(EntryError::Bytes)?;
                let re = skip_nested(buf, te, 1).map_err(EntryError::Bytes)?;
                self.push(buf, tp, te, te, re).map_err(EntryError::Event)?;
                Ok(re)
            }
            _ => {
                let end = skip_complete(buf, pos).map_err(EntryError::Bytes)?;
                self.invalid("entry_not_a_pair")
                    .map_err(EntryError::Event)?;
                Ok(end)
            }
        }
    }
}

fn tag_of(frame: &Bytes, pos: usize, end: usize) -> Option<Tag> {
    let (s, e) = read_str_or_bin(&frame[pos..end])?;
    Some(Tag::new(frame.slice(pos + s..pos + e)))
}

/// Parses one complete frame (as cut by [`Framer`]).
pub fn parse_message(frame: Bytes, limits: &DecodeLimits) -> Result<Parsed, DecodeError> {
    if frame.first() == Some(&0xc0) {
        return Ok(Parsed::Nil);
    }
    let Some((n, hl)) = read_array_len(&frame) else {
        return Ok(Parsed::Rejected {
            reason: "not_an_array",
            chunk: None,
        });
    };
    // Offsets of the top-level elements (at most 4 are meaningful).
    if !(2..=4).contains(&n) {
        return Ok(Parsed::Rejected {
            reason: "bad_message_length",
            chunk: None,
        });
    }
    let mut bounds = [(0usize, 0usize); 4];
    let mut pos = hl;
    for b in bounds.iter_mut().take(n as usize) {
        let end = skip_complete(&frame, pos)?;
        *b = (pos, end);
        pos = end;
    }
    let n = n as usize;
    let (ep, ee) = bounds[1];
    let mode = match frame[ep] {
        0xa0..=0xbf | 0xd9..=0xdb | 0xc4..=0xc6 => Mode::PackedForward,
        0x90..=0x9f | 0xdc | 0xdd => Mode::Forward,
        _ => Mode::Message,
    };
    let opt_index = match mode {
        Mode::Message => 3,
        _ => 2,
    };
    let opts = if n > opt_index {
        parse_options(&frame, bounds[opt_index].0, bounds[opt_index].1)
    } else {
        parse_options(&frame, 0, 0)
    };
    if mode == Mode::Message && n < 3 {
        return Ok(Parsed::Rejected {
            reason: "message_too_short",
            chunk: None,
        });
    }
    if mode != Mode::Message && n > 3 {
        return Ok(Parsed::Rejected {
            reason: "bad_message_length",
            chunk: opts.chunk,
        });
    }
    let Some(tag) = tag_of(&frame, bounds[0].0, bounds[0].1) else {
        return Ok(Parsed::Rejected {
            reason: "tag_not_a_string",
            chunk: opts.chunk,
        });
    };
    if opts.signal != 0 {
        // Fluent Bit metrics or traces (a cmetrics/ctraces blob, not `[time, record]`
        // entries): a logs-only pipeline keeps nothing, so the entries are not decoded (they
        // would fail as invalid events, and close the connection with `skip_invalid_event
        // false`). Counted and acked: a resend could never succeed.
        return Ok(Parsed::Rejected {
            reason: "non_log_signal",
            chunk: opts.chunk,
        });
    }
    let mut ev = Events {
        out: Vec::new(),
        invalid: 0,
        reason: None,
        limits,
    };
    let mut mode = mode;
    match mode {
        Mode::Message => {
            let (rp, re) = bounds[2];
            // One event: allocate exactly once (Docker sends every log line like this).
            ev.out.reserve_exact(1);
            ev.push(&frame, ep, ee, rp, re)?;
        }
        Mode::Forward => {
            let (cnt, ahl) =
                read_array_len(&frame[ep..ee]).ok_or(DecodeError::Malformed("bad array"))?;
            ev.out.reserve((cnt as usize).min(1024));
            let mut p = ep + ahl;
            for _ in 0..cnt {
                p = ev.push_entry_at(&frame, p).map_err(|e| match e {
                    EntryError::Bytes(e) => DecodeError::from(e),
                    EntryError::Event(e) => e,
                })?;
            }
        }
        Mode::PackedForward | Mode::CompressedPackedForward => {
            let (s, e) =
                read_str_or_bin(&frame[ep..ee]).ok_or(DecodeError::Malformed("bad str"))?;
            let payload = frame.slice(ep + s..ep + e);
            #[derive(PartialEq)]
            enum Codec {
                Plain,
                Gzip,
                Zstd,
            }
            // The magic bytes win over the option, as in Fluent Bit.
            let sniffed = if payload.starts_with(&GZIP_MAGIC) {
                Codec::Gzip
            } else if payload.starts_with(&ZSTD_MAGIC) {
                Codec::Zstd
            } else {
                Codec::Plain
            };
            let codec = match opts.compressed.as_deref() {
                None | Some(b"text") | Some(b"") => sniffed,
                Some(b"gzip") if sniffed == Codec::Zstd => Codec::Zstd,
                Some(b"gzip") => Codec::Gzip,
                Some(b"zstd") if sniffed == Codec::Gzip => Codec::Gzip,
                Some(b"zstd") => Codec::Zstd,
                Some(other) => {
                    return Err(DecodeError::UnknownCompression(
                        String::from_utf8_lossy(other).into_owned(),
                    ))
                }
            };
            let stream = match codec {
                Codec::Plain => payload,
                Codec::Gzip => {
                    mode = Mode::CompressedPackedForward;
                    Bytes::from(gunzip_capped(&payload, limits.max_decompressed)?)
                }
                Codec::Zstd => {
                    mode = Mode::CompressedPackedForward;
                    Bytes::from(unzstd_capped(&payload, limits.max_decompressed)?)
                }
            };
            let mut p = 0;
            while p < stream.len() {
                // All-or-nothing: garbage anywhere in the stream rejects the whole message (M14).
                p = ev.push_entry_at(&stream, p).map_err(|e| match e {
                    EntryError::Bytes(_) => DecodeError::Malformed("broken entry stream"),
                    EntryError::Event(e) => e,
                })?;
            }
        }
    }
    Ok(Parsed::Message(Message {
        tag,
        events: ev.out,
        chunk: opts.chunk,
        invalid_events: ev.invalid,
        invalid_reason: ev.reason,
        signal: opts.signal,
        mode,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_hex(h: &str) -> Result<Parsed, DecodeError> {
        let b = hex::decode(h).unwrap();
        let mut buf = BytesMut::from(&b[..]);
        let frame = Framer::new()
            .next_frame(&mut buf, 1 << 20)?
            .expect("complete");
        assert!(buf.is_empty());
        parse_message(frame, &DecodeLimits::default())
    }

    fn msg(p: Result<Parsed, DecodeError>) -> Message {
        match p {
            Ok(Parsed::Message(m)) => m,
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn v01_message() {
        let m = msg(parse_hex(
            "93aa6170702e616363657373ce55ece6f881a76d657373616765a568656c6c6f",
        ));
        assert_eq!(m.tag.as_bytes(), b"app.access");
        assert_eq!(m.events.len(), 1);
        assert_eq!(m.mode, Mode::Message);
        assert!(m.chunk.is_none());
    }

    #[test]
    fn v09_packed_str32_with_ruby_chunk() {
        let m = msg(parse_hex("93aa6170702e616363657373db0000001e92d70055ece6f80000000081a16e0192d70055ece6f80000000181a16e0283a473697a6502aa636f6d70726573736564a474657874a56368756e6bb941414543417751464267634943516f4c4441304f44773d3d0a"));
        assert_eq!(m.events.len(), 2);
        assert_eq!(m.chunk.as_deref(), Some(&b"AAECAwQFBgcICQoLDA0ODw==\n"[..]));
        assert_eq!(m.mode, Mode::PackedForward);
    }

    #[test]
    fn v11_multi_member_gzip() {
        let m = msg(parse_hex("93aa6170702e616363657373c4451f8b08000000000002039b749d21f4cdb31f0c40d0b8308f110043c3062b0f0000001f8b08000000000002039b749d21f4cdb31f0c0c0c8c8d0bf3980049bb6f8f0f00000081aa636f6d70726573736564a4677a6970"));
        assert_eq!(m.events.len(), 2);
        assert_eq!(m.mode, Mode::CompressedPackedForward);
    }

    #[test]
    fn m03_record_not_a_map_is_dropped_and_counted() {
        let m = msg(parse_hex("93a174ce55ece6f8a96e6f742d612d6d6170"));
        assert!(m.events.is_empty());
        assert_eq!(m.invalid_events, 1);
    }

    #[test]
    fn m14_garbage_in_packed_stream_rejects_whole_message() {
        let r = parse_hex("93a174c40c92d7000000000000000000c181a56368756e6bb841414543417751464267634943516f4c4441304f44773d3d");
        assert!(matches!(r, Err(DecodeError::Malformed(_))), "{r:?}");
    }

    /// `[tag, bin(blob), {"chunk": "m1", "fluent_signal": signal}]`, the blob a map like a
    /// cmetrics payload (not `[time, record]` entries).
    fn signal_message(signal: u8) -> Bytes {
        use rmpv::Value;
        let mut blob = Vec::new();
        let metrics = Value::Map(vec![
            (Value::from("meta"), Value::Map(vec![])),
            (Value::from("metrics"), Value::Array(vec![Value::from(1)])),
        ]);
        rmpv::encode::write_value(&mut blob, &metrics).unwrap();
        let msg = Value::Array(vec![
            Value::from("fluentbit.metrics"),
            Value::Binary(blob),
            Value::Map(vec![
                (Value::from("chunk"), Value::from("m1")),
                (Value::from("fluent_signal"), Value::from(signal)),
            ]),
        ]);
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &msg).unwrap();
        Bytes::from(out)
    }

    #[test]
    fn non_log_signal_is_rejected_with_its_chunk_without_decoding_entries() {
        for skip_invalid_event in [true, false] {
            let limits = DecodeLimits {
                skip_invalid_event,
                ..Default::default()
            };
            for signal in [1, 2] {
                assert_eq!(
                    parse_message(signal_message(signal), &limits),
                    Ok(Parsed::Rejected {
                        reason: "non_log_signal",
                        chunk: Some(Bytes::from_static(b"m1")),
                    }),
                    "signal {signal}, skip_invalid_event {skip_invalid_event}"
                );
            }
        }
    }

    /// A packed entry may nest as deep as a scan of the whole entry allows (MAX_DEPTH open
    /// containers, the entry array included), even though time and record are skipped apart.
    #[test]
    fn packed_entry_depth_limit_counts_the_entry_array() {
        let packed = |levels: usize| {
            // [t, {"a": [[...[nil]...]]}] with `levels` nested arrays.
            let mut entry = vec![
                0x92, 0xd7, 0x00, 0x55, 0xec, 0xe6, 0xf8, 0, 0, 0, 0, 0x81, 0xa1, b'a',
            ];
            entry.extend(std::iter::repeat_n(0x91, levels));
            entry.push(0xc0);
            let mut out = BytesMut::new();
            crate::codec::encode::write_packed_forward(&mut out, b"t", &entry, None, false);
            let f = Framer::new()
                .next_frame(&mut out, 1 << 20)
                .unwrap()
                .unwrap();
            parse_message(f, &DecodeLimits::default())
        };
        // entry array + record map + 62 arrays = 64 open containers: accepted.
        let max = nagare_core::msgpack::MAX_DEPTH - 2;
        assert_eq!(msg(packed(max)).events.len(), 1);
        assert_eq!(
            packed(max + 1),
            Err(DecodeError::Malformed("broken entry stream"))
        );
    }
}
