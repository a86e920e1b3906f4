//! Reading a chunk's packed `[time, record]*` entries back into events (secondaries, the
//! `buffer inspect` tool, tests). Records stay zero-copy slices of the chunk's bytes.

use bytes::Bytes;
use nagare_core::msgpack::{read_array_len, skip_complete};
use nagare_core::{Event, EventTime, Record};

/// Why entries could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunk entry at byte {offset}: {reason}")]
pub struct EntryError {
    pub offset: usize,
    pub reason: &'static str,
}

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |a, &x| (a << 8) | x as u64)
}

/// Reads an EventTime (ext 0, as fixext8 or ext8) or an integer / float time.
fn read_time(b: &[u8]) -> Option<(EventTime, usize)> {
    let t = *b.first()?;
    let secs = |v: u64| EventTime::from_secs(v.min(u32::MAX as u64) as u32);
    Some(match t {
        0xd7 if b.len() >= 10 && b[1] == 0 => (
            EventTime::new(be(&b[2..6]) as u32, be(&b[6..10]) as u32),
            10,
        ),
        0xc7 if b.len() >= 11 && b[1] == 8 && b[2] == 0 => (
            EventTime::new(be(&b[3..7]) as u32, be(&b[7..11]) as u32),
            11,
        ),
        0x00..=0x7f => (secs(t as u64), 1),
        0xcc if b.len() >= 2 => (secs(b[1] as u64), 2),
        0xcd if b.len() >= 3 => (secs(be(&b[1..3])), 3),
        0xce if b.len() >= 5 => (secs(be(&b[1..5])), 5),
        0xcf if b.len() >= 9 => (secs(be(&b[1..9])), 9),
        0xd0..=0xd3 => {
            let n = 1usize << (t - 0xd0);
            if b.len() < 1 + n {
                return None;
            }
            let v = be(&b[1..1 + n]);
            let signed = (v << (64 - 8 * n)) as i64 >> (64 - 8 * n);
            (secs(signed.max(0) as u64), 1 + n)
        }
        0xca if b.len() >= 5 => {
            let f = f32::from_bits(be(&b[1..5]) as u32) as f64;
            (float_time(f), 5)
        }
        0xcb if b.len() >= 9 => (float_time(f64::from_bits(be(&b[1..9]))), 9),
        _ => return None,
    })
}

fn float_time(f: f64) -> EventTime {
    if !(f.is_finite() && f >= 0.0) {
        return EventTime::from_secs(0);
    }
    let secs = f.trunc().min(u32::MAX as f64) as u32;
    EventTime::new(secs, ((f - f.trunc()) * 1e9) as u32)
}

/// Iterates entries; each item is an event or the error that ends the iteration.
pub struct Entries {
    bytes: Bytes,
    pos: usize,
    failed: bool,
}

impl Entries {
    pub fn new(bytes: Bytes) -> Self {
        Entries {
            bytes,
            pos: 0,
            failed: false,
        }
    }

    fn next_entry(&mut self) -> Result<Event, EntryError> {
        let b = &self.bytes[self.pos..];
        let err = |reason| EntryError {
            offset: self.pos,
            reason,
        };
        let (n, hl) = read_array_len(b).ok_or_else(|| err("entry is not an array"))?;
        if n != 2 && n != 3 {
            return Err(err("entry is not [time, record]"));
        }
        let (time, tl) = read_time(&b[hl..]).ok_or_else(|| err("bad event time"))?;
        let rstart = hl + tl;
        let rend = skip_complete(b, rstart).map_err(|_| err("truncated record"))?;
        match b.get(rstart) {
            Some(0x80..=0x8f) | Some(0xde) | Some(0xdf) => {}
            _ => return Err(err("record is not a map")),
        }
        let mut end = rend;
        if n == 3 {
            end = skip_complete(b, end).map_err(|_| err("truncated entry"))?;
        }
        let record =
            Record::from_msgpack_unchecked(self.bytes.slice(self.pos + rstart..self.pos + rend));
        self.pos += end;
        Ok(Event { time, record })
    }
}

impl Iterator for Entries {
    type Item = Result<Event, EntryError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.bytes.len() {
            return None;
        }
        let r = self.next_entry();
        self.failed = r.is_err();
        Some(r)
    }
}

/// Every event of a chunk's bytes.
pub fn decode(bytes: &Bytes) -> Result<Vec<Event>, EntryError> {
    Entries::new(bytes.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn round_trip_both_time_encodings() {
        let evs: Vec<Event> = (0..3)
            .map(|i| Event {
                time: EventTime::new(1_700_000_000 + i, 5),
                record: Record::from_pairs(&[("i", i.to_string())]),
            })
            .collect();
        let mut b = BytesMut::new();
        evs[0].write_entry(&mut b, false);
        evs[1].write_entry(&mut b, true);
        evs[2].write_entry(&mut b, false);
        let back = decode(&b.freeze()).unwrap();
        assert_eq!(back[0], evs[0]);
        assert_eq!(back[1].time, EventTime::from_secs(1_700_000_001));
        assert_eq!(back[2], evs[2]);
    }

    #[test]
    fn truncated_entries_are_errors() {
        let mut b = BytesMut::new();
        Event {
            time: EventTime::from_secs(1),
            record: Record::from_pairs(&[("a", "b")]),
        }
        .write_entry(&mut b, false);
        let cut = b.freeze().slice(..8);
        assert!(decode(&cut).is_err());
    }
}
