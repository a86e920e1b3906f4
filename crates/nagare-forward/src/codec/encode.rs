//! Encoders for every mode, the option map and acks.
//!
//! PackedForward payloads are written as `bin` by default; `str32` (what fluentd's out_forward
//! sends) is available for peers that need it. Records are copied as the msgpack bytes they
//! already are: no re-encoding.

use bytes::{BufMut, BytesMut};
use nagare_core::msgpack::{
    write_array_len, write_bin_header, write_map_len, write_str, write_str_header, write_uint,
};
use nagare_core::{Event, EventTime, Record};

/// The option map (last element of a message). Absent fields are not written.
#[derive(Debug, Default, Clone, Copy)]
pub struct Options<'a> {
    pub chunk: Option<&'a [u8]>,
    pub size: Option<u64>,
    /// `"gzip"` for CompressedPackedForward, `"text"` for plain.
    pub compressed: Option<&'a str>,
}

impl Options<'_> {
    fn len(&self) -> u32 {
        self.chunk.is_some() as u32 + self.size.is_some() as u32 + self.compressed.is_some() as u32
    }
}

/// Writes the option map.
pub fn write_options(out: &mut BytesMut, o: &Options<'_>) {
    write_map_len(out, o.len());
    if let Some(s) = o.size {
        write_str(out, b"size");
        write_uint(out, s);
    }
    if let Some(c) = o.compressed {
        write_str(out, b"compressed");
        write_str(out, c.as_bytes());
    }
    if let Some(c) = o.chunk {
        write_str(out, b"chunk");
        write_str(out, c);
    }
}

/// `[tag, time, record, option?]`.
pub fn write_message(
    out: &mut BytesMut,
    tag: &[u8],
    time: EventTime,
    record: &Record,
    opts: Option<&Options<'_>>,
    time_as_integer: bool,
) {
    write_array_len(out, if opts.is_some() { 4 } else { 3 });
    write_str(out, tag);
    time.write_msgpack(out, time_as_integer);
    out.put_slice(record.as_bytes());
    if let Some(o) = opts {
        write_options(out, o);
    }
}

/// `[tag, [[time, record], ...], option?]`.
pub fn write_forward(
    out: &mut BytesMut,
    tag: &[u8],
    events: &[Event],
    opts: Option<&Options<'_>>,
    time_as_integer: bool,
) {
    write_array_len(out, if opts.is_some() { 3 } else { 2 });
    write_str(out, tag);
    write_array_len(out, events.len() as u32);
    for e in events {
        EntryWriter::write(out, e.time, &e.record, time_as_integer);
    }
    if let Some(o) = opts {
        write_options(out, o);
    }
}

/// `[tag, <entries as bin or str32>, option?]`. `entries` is a packed entry stream, gzipped
/// already when `opts.compressed` says `gzip`.
pub fn write_packed_forward(
    out: &mut BytesMut,
    tag: &[u8],
    entries: &[u8],
    opts: Option<&Options<'_>>,
    as_str: bool,
) {
    write_array_len(out, if opts.is_some() { 3 } else { 2 });
    write_str(out, tag);
    if as_str {
        out.put_u8(0xdb);
        out.put_u32(entries.len() as u32);
    } else {
        write_bin_header(out, entries.len());
    }
    out.put_slice(entries);
    if let Some(o) = opts {
        write_options(out, o);
    }
}

/// Length in bytes of the header [`write_packed_forward`] writes before the entries.
pub fn packed_forward_header_len(tag: &[u8], entries: usize, as_str: bool) -> usize {
    let tag_hdr = match tag.len() {
        0..=31 => 1,
        32..=255 => 2,
        256..=65535 => 3,
        _ => 5,
    };
    let bin_hdr = match entries {
        _ if as_str => 5,
        0..=255 => 2,
        256..=65535 => 3,
        _ => 5,
    };
    1 + tag_hdr + tag.len() + bin_hdr
}

/// `{"ack": chunk}` with the chunk as a str, byte for byte.
pub fn write_ack(out: &mut BytesMut, chunk: &[u8]) {
    write_map_len(out, 1);
    write_str(out, b"ack");
    write_str(out, chunk);
}

/// Parses an ack reply; returns the chunk id it acknowledges.
pub fn parse_ack(frame: &[u8]) -> Option<&[u8]> {
    use nagare_core::msgpack::{read_map_len, read_str_or_bin, skip_complete};
    let (n, mut off) = read_map_len(frame)?;
    for _ in 0..n {
        let kend = skip_complete(frame, off).ok()?;
        let vend = skip_complete(frame, kend).ok()?;
        if let Some((ks, ke)) = read_str_or_bin(&frame[off..kend]) {
            if &frame[off + ks..off + ke] == b"ack" {
                let (vs, ve) = read_str_or_bin(&frame[kend..vend])?;
                return Some(&frame[kend + vs..kend + ve]);
            }
        }
        off = vend;
    }
    None
}

/// Appends `[time, record]` entries to a packed stream.
pub struct EntryWriter;

impl EntryWriter {
    #[inline]
    pub fn write(out: &mut BytesMut, time: EventTime, record: &Record, time_as_integer: bool) {
        Event {
            time,
            record: record.clone(),
        }
        .write_entry(out, time_as_integer)
    }
}

/// Writes a str header then the bytes (re-exported for callers building option values).
pub fn write_str_with_header(out: &mut BytesMut, s: &[u8]) {
    write_str_header(out, s.len());
    out.put_slice(s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{parse_message, DecodeLimits, Framer, Parsed};

    fn round_trip(bytes: BytesMut) -> crate::codec::Message {
        let mut b = bytes;
        let f = Framer::new()
            .next_frame(&mut b, usize::MAX)
            .unwrap()
            .unwrap();
        match parse_message(f, &DecodeLimits::default()).unwrap() {
            Parsed::Message(m) => m,
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn v04_exact_bytes() {
        let mut out = BytesMut::new();
        let r = Record::from_pairs(&[("message", "hello")]);
        let o = Options {
            chunk: Some(b"AAECAwQFBgcICQoLDA0ODw=="),
            ..Default::default()
        };
        write_message(
            &mut out,
            b"app.access",
            EventTime::new(1441588984, 123456789),
            &r,
            Some(&o),
            false,
        );
        assert_eq!(hex::encode(&out), "94aa6170702e616363657373d70055ece6f8075bcd1581a76d657373616765a568656c6c6f81a56368756e6bb841414543417751464267634943516f4c4441304f44773d3d");
    }

    #[test]
    fn ack_round_trip() {
        let mut out = BytesMut::new();
        write_ack(&mut out, b"abc\n");
        assert_eq!(hex::encode(&out), "81a361636ba4616263 0a".replace(' ', ""));
        assert_eq!(parse_ack(&out), Some(&b"abc\n"[..]));
    }

    #[test]
    fn forward_and_packed_round_trip() {
        let evs: Vec<Event> = (0..3)
            .map(|i| Event {
                time: EventTime::new(100 + i, i),
                record: Record::from_pairs(&[("n", i.to_string())]),
            })
            .collect();
        let mut out = BytesMut::new();
        write_forward(&mut out, b"t", &evs, None, false);
        assert_eq!(round_trip(out).events, evs);

        let mut entries = BytesMut::new();
        for e in &evs {
            EntryWriter::write(&mut entries, e.time, &e.record, false);
        }
        for as_str in [false, true] {
            let mut out = BytesMut::new();
            write_packed_forward(&mut out, b"t", &entries, None, as_str);
            assert_eq!(
                packed_forward_header_len(b"t", entries.len(), as_str),
                out.len() - entries.len()
            );
            assert_eq!(round_trip(out).events, evs);
        }
        let gz = crate::codec::compress::gzip(&entries, 1);
        let mut out = BytesMut::new();
        let o = Options {
            compressed: Some("gzip"),
            ..Default::default()
        };
        write_packed_forward(&mut out, b"t", &gz, Some(&o), false);
        assert_eq!(round_trip(out).events, evs);
    }
}
