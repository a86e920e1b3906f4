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

    /// The `n`th dot-separated part of `tag`, as `${tag[N]}` renders it: a negative `n`
    /// counts from the end (`-1` is the last part); out of range is `None`.
    pub fn part(tag: &[u8], n: i64) -> Option<&[u8]> {
        let mut parts = tag.split(|&c| c == b'.');
        if n >= 0 {
            return parts.nth(usize::try_from(n).ok()?);
        }
        // From the end: -1 is the last part.
        parts.rev().nth(usize::try_from(-(n + 1)).ok()?)
    }

    /// The index of a `${tag[N]}` / `${tag_parts[N]}` placeholder, given its name (what is
    /// between `${` and `}`): `None` when the name is not one, an error when its index is not
    /// a whole number. The one parser for every output that renders such placeholders.
    pub fn parse_part_placeholder(name: &str) -> Option<Result<i64, String>> {
        let inner = name
            .strip_prefix("tag[")
            .or_else(|| name.strip_prefix("tag_parts["))?;
        Some(
            inner
                .strip_suffix(']')
                .and_then(|d| d.trim().parse().ok())
                .ok_or_else(|| {
                    format!("bad placeholder ${{{name}}}: expected ${{tag[N]}} with a whole number N (negative counts from the end)")
                }),
        )
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

    /// Reads a time at the start of `b` as buffer chunks and outputs store it: EventTime (ext
    /// type 0 as fixext8 or ext8), an integer (negative ones clamp to 0, big ones to
    /// `u32::MAX`) or a float (non-finite or negative: 0). Returns the time and the bytes it
    /// took; `None` for anything else or a truncated value.
    pub fn read_msgpack(b: &[u8]) -> Option<(EventTime, usize)> {
        fn be(b: &[u8]) -> u64 {
            b.iter().fold(0u64, |a, &x| (a << 8) | x as u64)
        }
        fn float_time(f: f64) -> EventTime {
            if !(f.is_finite() && f >= 0.0) {
                return EventTime::from_secs(0);
            }
            let secs = f.trunc().min(u32::MAX as f64) as u32;
            EventTime::new(secs, ((f - f.trunc()) * 1e9) as u32)
        }
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
            0xe0..=0xff => (secs(0), 1),
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
}

impl fmt::Debug for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}", self.secs, self.nanos)
    }
}

/// A record: one msgpack map, held as the bytes it arrived in and/or decoded for filters.
///
/// Records come off the wire as bytes (zero-copy slices of the frame). The first filter that
/// needs to change one calls [`Record::map_mut`], which decodes it once (strings stay slices);
/// later filters work on the same map, and the buffer encodes it once, straight into the chunk
/// ([`Event::write_entry`]). [`Record::as_bytes`] encodes on demand and caches the result.
#[derive(Clone)]
pub struct Record {
    raw: std::sync::OnceLock<Bytes>,
    map: Option<std::sync::Arc<crate::value::Map>>,
}

impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
impl Eq for Record {}

impl Record {
    fn raw(bytes: Bytes) -> Self {
        let raw = std::sync::OnceLock::new();
        let _ = raw.set(bytes);
        Record { raw, map: None }
    }
    /// Wraps bytes already known to hold exactly one msgpack map (the codec checks this).
    pub fn from_msgpack_unchecked(bytes: Bytes) -> Self {
        Record::raw(bytes)
    }
    /// Checks that `bytes` is exactly one msgpack map.
    pub fn from_msgpack(bytes: Bytes) -> Result<Self, crate::msgpack::ScanError> {
        match bytes.first() {
            Some(0x80..=0x8f) | Some(0xde) | Some(0xdf) => {}
            _ => return Err(crate::msgpack::ScanError::Invalid("record is not a map")),
        }
        let end = crate::msgpack::skip_complete(&bytes, 0)?;
        if end != bytes.len() {
            return Err(crate::msgpack::ScanError::Invalid(
                "trailing bytes after record",
            ));
        }
        Ok(Record::raw(bytes))
    }
    /// A record from a decoded map.
    pub fn from_map(map: crate::value::Map) -> Self {
        Record {
            raw: std::sync::OnceLock::new(),
            map: Some(std::sync::Arc::new(map)),
        }
    }
    /// Builds a record from string pairs (tests, generated records).
    pub fn from_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Self {
        let mut out = BytesMut::new();
        crate::msgpack::write_map_len(&mut out, pairs.len() as u32);
        for (k, v) in pairs {
            crate::msgpack::write_str(&mut out, k.as_ref());
            crate::msgpack::write_str(&mut out, v.as_ref());
        }
        Record::raw(out.freeze())
    }
    /// Encodes an [`rmpv::Value`] map.
    pub fn from_value(v: &rmpv::Value) -> Option<Self> {
        if !v.is_map() {
            return None;
        }
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, v).ok()?;
        Some(Record::raw(Bytes::from(buf)))
    }
    /// The msgpack bytes (encoded now and cached if the record was changed by a filter).
    pub fn bytes(&self) -> &Bytes {
        self.raw.get_or_init(|| {
            let mut out = BytesMut::new();
            if let Some(m) = &self.map {
                crate::value::Value::Map((**m).clone()).encode(&mut out);
            } else {
                out.put_u8(0x80);
            }
            out.freeze()
        })
    }
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes()
    }
    /// The decoded map, for changing the record. Decodes once; drops the cached bytes.
    pub fn map_mut(&mut self) -> &mut crate::value::Map {
        if self.map.is_none() {
            let decoded = self
                .raw
                .get()
                .and_then(|b| crate::value::Value::decode(b, 0).ok())
                .and_then(|(v, _)| match v {
                    crate::value::Value::Map(m) => Some(m),
                    _ => None,
                })
                .unwrap_or_default();
            self.map = Some(std::sync::Arc::new(decoded));
        }
        self.raw = std::sync::OnceLock::new();
        let m = self.map.get_or_insert_with(Default::default);
        std::sync::Arc::make_mut(m)
    }
    /// The decoded map if a filter already decoded it.
    pub fn decoded(&self) -> Option<&crate::value::Map> {
        self.map.as_deref()
    }
    /// A top-level value, decoded on its own if the record is still bytes.
    pub fn get(&self, key: &[u8]) -> Option<crate::value::Value> {
        if let Some(m) = &self.map {
            return m.get(key).cloned();
        }
        let raw = self.raw.get()?;
        let (n, mut off) = crate::msgpack::read_map_len(raw)?;
        let mut found = None;
        for _ in 0..n {
            let kend = crate::msgpack::skip_complete(raw, off).ok()?;
            let vend = crate::msgpack::skip_complete(raw, kend).ok()?;
            if let Some((s, e)) = crate::msgpack::read_str_or_bin(&raw[off..kend]) {
                if &raw[off + s..off + e] == key {
                    found = Some(kend);
                }
            }
            off = vend;
        }
        crate::value::Value::decode(raw, found?)
            .ok()
            .map(|(v, _)| v)
    }
    /// Decodes the whole record (slow path: tests, tools).
    pub fn to_value(&self) -> rmpv::Value {
        let mut rd = self.as_bytes();
        rmpv::decode::read_value(&mut rd).unwrap_or(rmpv::Value::Nil)
    }
    /// The raw bytes of a top-level string (or bin) value.
    pub fn get_str(&self, key: &[u8]) -> Option<&[u8]> {
        if let Some(m) = &self.map {
            return m.get(key).and_then(crate::value::Value::as_bytes);
        }
        crate::msgpack::map_get_str(self.raw.get()?, key)
    }
    /// A copy with `key: value` (a str) set, as Fluentd's `record[key] = value`.
    pub fn with_str_field(&self, key: &[u8], value: &[u8]) -> Record {
        if let Some(m) = &self.map {
            let mut m = (**m).clone();
            m.insert(
                Bytes::copy_from_slice(key),
                crate::value::Value::Str(Bytes::copy_from_slice(value)),
            );
            return Record::from_map(m);
        }
        let raw = self.bytes();
        let (n, hl) = crate::msgpack::read_map_len(raw).unwrap_or((0, raw.len()));
        let mut out = BytesMut::with_capacity(raw.len() + key.len() + value.len() + 12);
        crate::msgpack::write_map_len(&mut out, n + 1);
        out.put_slice(&raw[hl.min(raw.len())..]);
        crate::msgpack::write_str(&mut out, key);
        crate::msgpack::write_str(&mut out, value);
        Record::raw(out.freeze())
    }
    /// Number of key/value pairs.
    pub fn len(&self) -> usize {
        if let Some(m) = &self.map {
            return m.len();
        }
        self.raw
            .get()
            .and_then(|r| crate::msgpack::read_map_len(r))
            .map(|(n, _)| n as usize)
            .unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Appends the msgpack encoding (without going through the cache).
    #[inline]
    pub fn write_msgpack(&self, out: &mut BytesMut) {
        match (self.raw.get(), &self.map) {
            (Some(b), _) => out.put_slice(b),
            (None, Some(m)) => {
                crate::msgpack::write_map_len(out, m.len() as u32);
                for (k, v) in &m.0 {
                    k.encode(out);
                    v.encode(out);
                }
            }
            (None, None) => out.put_u8(0x80),
        }
    }
    /// Exact length of [`Record::write_msgpack`]'s output.
    pub fn encoded_len(&self) -> usize {
        match (self.raw.get(), &self.map) {
            (Some(b), _) => b.len(),
            (None, Some(m)) => crate::value::map_encoded_len(m),
            (None, None) => 1,
        }
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
        self.record.write_msgpack(out);
    }

    /// Bytes [`Event::write_entry`] writes with EventTime.
    #[inline]
    pub fn entry_len(&self) -> usize {
        11 + self.record.encoded_len()
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
        self.events
            .iter()
            .map(|e| e.record.encoded_len() + 10)
            .sum()
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn tag_parts_count_from_either_end_and_placeholders_parse_once() {
        let t = b"docker.web.app";
        assert_eq!(Tag::part(t, 0), Some(&b"docker"[..]));
        assert_eq!(Tag::part(t, 2), Some(&b"app"[..]));
        assert_eq!(Tag::part(t, -1), Some(&b"app"[..]));
        assert_eq!(Tag::part(t, -3), Some(&b"docker"[..]));
        assert_eq!(Tag::part(t, 3), None);
        assert_eq!(Tag::part(t, -4), None);
        assert_eq!(Tag::parse_part_placeholder("tag[1]"), Some(Ok(1)));
        assert_eq!(Tag::parse_part_placeholder("tag_parts[-1]"), Some(Ok(-1)));
        assert!(matches!(
            Tag::parse_part_placeholder("tag[x]"),
            Some(Err(_))
        ));
        assert!(matches!(Tag::parse_part_placeholder("tag[1"), Some(Err(_))));
        assert_eq!(Tag::parse_part_placeholder("tag"), None);
        assert_eq!(Tag::parse_part_placeholder("service"), None);
    }
    #[test]
    fn read_msgpack_times() {
        let mut b = BytesMut::new();
        EventTime::new(1_700_000_000, 5).write_msgpack(&mut b, false);
        assert_eq!(
            EventTime::read_msgpack(&b),
            Some((EventTime::new(1_700_000_000, 5), 10))
        );
        let mut ext8 = vec![0xc7, 8, 0];
        ext8.extend_from_slice(&EventTime::new(7, 9).to_ext_bytes());
        assert_eq!(
            EventTime::read_msgpack(&ext8),
            Some((EventTime::new(7, 9), 11))
        );
        assert_eq!(
            EventTime::read_msgpack(&[0x2a]),
            Some((EventTime::from_secs(42), 1))
        );
        assert_eq!(
            EventTime::read_msgpack(&[0xce, 0x65, 0x53, 0xf1, 0x00]),
            Some((EventTime::from_secs(1_700_000_000), 5))
        );
        // Negative integers clamp to 0 (an int32 is not read as a huge unsigned number).
        assert_eq!(
            EventTime::read_msgpack(&[0xd2, 0xff, 0xff, 0xff, 0xfe]),
            Some((EventTime::from_secs(0), 5))
        );
        assert_eq!(
            EventTime::read_msgpack(&[0xff]),
            Some((EventTime::from_secs(0), 1))
        );
        let mut f = vec![0xcb];
        f.extend_from_slice(&1.5f64.to_bits().to_be_bytes());
        assert_eq!(
            EventTime::read_msgpack(&f),
            Some((EventTime::new(1, 500_000_000), 9))
        );
        let mut nan = vec![0xcb];
        nan.extend_from_slice(&f64::NAN.to_bits().to_be_bytes());
        assert_eq!(
            EventTime::read_msgpack(&nan),
            Some((EventTime::from_secs(0), 9))
        );
        // Truncated or not a time.
        assert_eq!(EventTime::read_msgpack(&b[..9]), None);
        assert_eq!(EventTime::read_msgpack(&[0xce, 1]), None);
        assert_eq!(EventTime::read_msgpack(&[0xa1, b'x']), None);
        assert_eq!(EventTime::read_msgpack(&[]), None);
    }

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
    fn map_mut_decodes_once_and_encodes_back() {
        let mut r = Record::from_pairs(&[("a", "1"), ("log", "x")]);
        r.map_mut()
            .insert(Bytes::from_static(b"b"), crate::value::Value::UInt(2));
        assert_eq!(r.len(), 3);
        assert_eq!(r.get_str(b"log"), Some(&b"x"[..]));
        let mut out = BytesMut::new();
        r.write_msgpack(&mut out);
        assert_eq!(out.len(), r.encoded_len());
        assert_eq!(&out[..], r.as_bytes());
        let again = Record::from_msgpack(r.bytes().clone()).unwrap();
        assert_eq!(again.get(b"b"), Some(crate::value::Value::UInt(2)));
        assert_eq!(again.get(b"a"), Some(crate::value::Value::str("1")));
    }

    #[test]
    fn record_from_msgpack_rejects_non_maps_and_trailing_bytes() {
        assert!(Record::from_msgpack(Bytes::from_static(&[0x90])).is_err());
        assert!(Record::from_msgpack(Bytes::from_static(&[0x80, 0x00])).is_err());
        assert!(Record::from_msgpack(Bytes::from_static(&[0x80])).is_ok());
    }
}
