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
        let (time, tl) = EventTime::read_msgpack(&b[hl..]).ok_or_else(|| err("bad event time"))?;
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
