//! Events: a tag, a time and a record kept as the msgpack bytes it arrived in.
//!
//! Records are not decoded on the way in: the forward codec validates the map and keeps a
//! zero-copy [`Bytes`] slice of the original frame. Strings may not be UTF-8 (Docker passes
//! bytes through), so nothing here assumes text until a consumer asks for it.

use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;

/// A Fluentd tag. Kept as bytes: a peer may send non-UTF-8 (vector M17).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(Bytes);

impl Tag {
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Tag(bytes.into())
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
    /// The tag as text, with invalid UTF-8 replaced.
    pub fn to_str_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }
}

impl From<&str> for Tag {
    fn from(s: &str) -> Self {
        Tag(Bytes::copy_from_slice(s.as_bytes()))
    }
}
impl From<String> for Tag {
    fn from(s: String) -> Self {
        Tag(Bytes::from(s.into_bytes()))
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({:?})", self.to_str_lossy())
    }
}
impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_str_lossy())
    }
}

/// Fluentd's EventTime: unsigned 32-bit seconds and nanoseconds (good until 2106).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventTime {
    secs: u32,
    nanos: u32,
}

impl EventTime {
    /// Nanoseconds above 999,999,999 are folded into seconds.
    pub fn new(secs: u32, nanos: u32) -> Self {
        let extra = nanos / 1_000_000_000;
        EventTime {
            secs: secs.wrapping_add(extra),
            nanos: nanos % 1_000_000_000,
        }
    }
    pub fn from_secs(secs: u32) -> Self {
        EventTime { secs, nanos: 0 }
    }
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        EventTime::new(d.as_secs() as u32, d.subsec_nanos())
    }
    pub fn secs(&self) -> u32 {
        self.secs
    }
    pub fn nanos(&self) -> u32 {
        self.nanos
    }
    /// Seconds as a float, as Fluentd's `Time#to_f`.
    pub fn as_f64(&self) -> f64 {
        self.secs as f64 + self.nanos as f64 / 1e9
    }
    /// The 8 payload bytes of the msgpack ext type 0 encoding.
    pub fn to_ext_bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.secs.to_be_bytes());
        b[4..].copy_from_slice(&self.nanos.to_be_bytes());
        b
    }
    /// Append as msgpack: fixext8 type 0, or a plain integer when `as_integer`.
    pub fn write_msgpack(&self, out: &mut BytesMut, as_integer: bool) {
        if as_integer {
            out.put_u8(0xce);
            out.put_u32(self.secs);
        } else {
            out.put_slice(&[0xd7, 0x00]);
            out.put_slice(&self.to_ext_bytes());
        }
    }
}

impl fmt::Debug for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}", self.secs, self.nanos)
    }
}

/// A record: the bytes of one msgpack map, validated when it was decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct Record(Bytes);

impl Record {
    /// Wraps bytes already known to hold exactly one msgpack map (the codec checks this).
    pub fn from_msgpack_unchecked(bytes: Bytes) -> Self {
        Record(bytes)
    }
    /// Checks that `bytes` is exactly one msgpack map.
    pub fn from_msgpack(bytes: Bytes) -> Result<Self, crate::msgpack::ScanError> {
        match bytes.first() {
            Some(0x80..=0x8f) | Some(0xde) | Some(0xdf) => {}
            _ => return Err(crate::msgpack::ScanError::Invalid("record is not a map")),
        }
        let end = crate::msgpack::skip_complete(&bytes, 0)?;
        if end != bytes.len() {
            return Err(crate::msgpack::ScanError::Invalid("trailing bytes after record"));
        }
        Ok(Record(bytes))
    }
    /// Builds a record from string pairs (tests, generated records).
    pub fn from_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Self {
        let mut out = BytesMut::new();
        crate::msgpack::write_map_len(&mut out, pairs.len() as u32);
        for (k, v) in pairs {
            crate::msgpack::write_str(&mut out, k.as_ref());
            crate::msgpack::write_str(&mut out, v.as_ref());
        }
        Record(out.freeze())
    }
    /// Encodes an [`rmpv::Value`] map.
    pub fn from_value(v: &rmpv::Value) -> Option<Self> {
        if !v.is_map() {
            return None;
        }
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, v).ok()?;
        Some(Record(Bytes::from(buf)))
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
    /// Decodes the whole record (slow path: filters, tests, text outputs).
    pub fn to_value(&self) -> rmpv::Value {
        let mut rd = &self.0[..];
        rmpv::decode::read_value(&mut rd).unwrap_or(rmpv::Value::Nil)
    }
    /// The raw bytes of a top-level string (or bin) value, found without decoding the record.
    pub fn get_str(&self, key: &[u8]) -> Option<&[u8]> {
        crate::msgpack::map_get_str(&self.0, key)
    }
    /// A copy with `key: value` (a str) appended, as Fluentd's `record[key] = value`. An
    /// existing `key` is not removed; decoders keep the last value.
    pub fn with_str_field(&self, key: &[u8], value: &[u8]) -> Record {
        let (n, hl) = crate::msgpack::read_map_len(&self.0).unwrap_or((0, self.0.len()));
        let mut out = BytesMut::with_capacity(self.0.len() + key.len() + value.len() + 12);
        crate::msgpack::write_map_len(&mut out, n + 1);
        out.put_slice(&self.0[hl.min(self.0.len())..]);
        crate::msgpack::write_str(&mut out, key);
        crate::msgpack::write_str(&mut out, value);
        Record(out.freeze())
    }
    /// Number of key/value pairs.
    pub fn len(&self) -> usize {
        crate::msgpack::read_map_len(&self.0).map(|(n, _)| n as usize).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Record({})", self.to_value())
    }
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub time: EventTime,
    pub record: Record,
}

impl Event {
    /// Appends the packed-forward entry `[time, record]` (time as EventTime ext, or integer
    /// seconds when `time_as_integer`).
    #[inline]
    pub fn write_entry(&self, out: &mut BytesMut, time_as_integer: bool) {
        out.put_u8(0x92);
        self.time.write_msgpack(out, time_as_integer);
        out.put_slice(self.record.as_bytes());
    }

    /// Bytes [`Event::write_entry`] writes with EventTime.
    #[inline]
    pub fn entry_len(&self) -> usize {
        11 + self.record.as_bytes().len()
    }
}

/// Events sharing one tag, in arrival order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventStream {
    pub tag: Tag,
    pub events: Vec<Event>,
}

impl EventStream {
    pub fn new(tag: Tag, events: Vec<Event>) -> Self {
        EventStream { tag, events }
    }
    pub fn len(&self) -> usize {
        self.events.len()
    }
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
    /// Bytes of record payload (an estimate of the memory the stream holds).
    pub fn record_bytes(&self) -> usize {
        self.events.iter().map(|e| e.record.as_bytes().len() + 10).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_time_folds_nanos() {
        let t = EventTime::new(1, 2_500_000_000);
        assert_eq!((t.secs(), t.nanos()), (3, 500_000_000));
    }

    #[test]
    fn record_get_str_finds_fields_without_decoding() {
        let r = Record::from_pairs(&[("a", "1"), ("log", "hello")]);
        assert_eq!(r.get_str(b"log"), Some(&b"hello"[..]));
        assert_eq!(r.get_str(b"nope"), None);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn with_str_field_appends_and_grows_the_header() {
        let pairs: Vec<(String, String)> = (0..15).map(|i| (format!("k{i}"), "v".into())).collect();
        let r = Record::from_pairs(&pairs).with_str_field(b"host", b"10.0.0.1");
        assert_eq!(r.len(), 16);
        assert_eq!(r.get_str(b"host"), Some(&b"10.0.0.1"[..]));
        assert!(Record::from_msgpack(r.bytes().clone()).is_ok());
    }

    #[test]
    fn record_from_msgpack_rejects_non_maps_and_trailing_bytes() {
        assert!(Record::from_msgpack(Bytes::from_static(&[0x90])).is_err());
        assert!(Record::from_msgpack(Bytes::from_static(&[0x80, 0x00])).is_err());
        assert!(Record::from_msgpack(Bytes::from_static(&[0x80])).is_ok());
    }
}
