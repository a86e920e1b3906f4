//! A decoded, mutable record value, for filters.
//!
//! Strings are [`Bytes`] slices of the frame they were decoded from (no copy), and stay bytes:
//! nothing assumes UTF-8 until text is needed. JSON parsed out of a field ([`Value::from_json`])
//! also borrows from the field's bytes wherever a string has no escapes.

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// A msgpack value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Bytes),
    Bin(Bytes),
    Array(Vec<Value>),
    Map(Map),
    Ext(i8, Bytes),
}

/// An ordered map (msgpack maps keep insertion order; keys are normally strings).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Map(pub Vec<(Value, Value)>);

impl Map {
    pub fn new() -> Self {
        Map(Vec::new())
    }
    pub fn with_capacity(n: usize) -> Self {
        Map(Vec::with_capacity(n))
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn position(&self, key: &[u8]) -> Option<usize> {
        // The last occurrence wins, as decoders that build hashes do.
        self.0.iter().rposition(|(k, _)| k.as_bytes() == Some(key))
    }
    pub fn get(&self, key: &[u8]) -> Option<&Value> {
        self.position(key).map(|i| &self.0[i].1)
    }
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut Value> {
        self.position(key).map(move |i| &mut self.0[i].1)
    }
    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.position(key).is_some()
    }
    /// Sets `key`, replacing an existing value in place (keeping its position).
    pub fn insert(&mut self, key: impl Into<Bytes>, value: Value) {
        let key = key.into();
        match self.position(&key) {
            Some(i) => self.0[i].1 = value,
            None => self.0.push((Value::Str(key), value)),
        }
    }
    pub fn remove(&mut self, key: &[u8]) -> Option<Value> {
        let mut out = None;
        while let Some(i) = self.position(key) {
            out.get_or_insert(self.0.remove(i).1);
        }
        out
    }
    pub fn iter(&self) -> impl Iterator<Item = (&Value, &Value)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
    pub fn retain(&mut self, mut f: impl FnMut(&Value, &Value) -> bool) {
        self.0.retain(|(k, v)| f(k, v));
    }
}

/// A value that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid msgpack value")]
pub struct InvalidValue;

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |a, &x| (a << 8) | x as u64)
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Str(Bytes::copy_from_slice(s.as_bytes()))
    }

    /// The bytes of a str or bin.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Str(b) | Value::Bin(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_map_mut(&mut self) -> Option<&mut Map> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The value as text, the way Fluentd's `to_s` would show it (for grep, placeholders):
    /// strings as they are (lossy UTF-8), numbers and booleans formatted, maps and arrays as
    /// JSON, nil as the empty string.
    pub fn to_text(&self) -> Cow<'_, str> {
        match self {
            Value::Str(b) | Value::Bin(b) => String::from_utf8_lossy(b),
            Value::Nil => Cow::Borrowed(""),
            Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Value::Int(i) => Cow::Owned(i.to_string()),
            Value::UInt(u) => Cow::Owned(u.to_string()),
            Value::Float(f) => Cow::Owned(f.to_string()),
            other => {
                let mut out = Vec::new();
                other.write_json(&mut out, &mut crate::json::JsonStats::default());
                Cow::Owned(String::from_utf8_lossy(&out).into_owned())
            }
        }
    }

    /// Decodes the value starting at `buf[pos]`; returns it and the end offset. Strings are
    /// zero-copy slices of `buf`.
    pub fn decode(buf: &Bytes, pos: usize) -> Result<(Value, usize), InvalidValue> {
        let s = buf.get(pos..).ok_or(InvalidValue)?;
        let b = *s.first().ok_or(InvalidValue)?;
        let need = |n: usize| {
            if s.len() >= n {
                Ok(())
            } else {
                Err(InvalidValue)
            }
        };
        Ok(match b {
            0x00..=0x7f => (Value::UInt(b as u64), pos + 1),
            0xe0..=0xff => (Value::Int(b as i8 as i64), pos + 1),
            0xc0 => (Value::Nil, pos + 1),
            0xc2 => (Value::Bool(false), pos + 1),
            0xc3 => (Value::Bool(true), pos + 1),
            0xcc..=0xcf => {
                let n = 1 << (b - 0xcc);
                need(1 + n)?;
                (Value::UInt(be(&s[1..1 + n])), pos + 1 + n)
            }
            0xd0 => {
                need(2)?;
                (Value::Int(s[1] as i8 as i64), pos + 2)
            }
            0xd1 => {
                need(3)?;
                (Value::Int(i16::from_be_bytes([s[1], s[2]]) as i64), pos + 3)
            }
            0xd2 => {
                need(5)?;
                (
                    Value::Int(i32::from_be_bytes([s[1], s[2], s[3], s[4]]) as i64),
                    pos + 5,
                )
            }
            0xd3 => {
                need(9)?;
                (Value::Int(be(&s[1..9]) as i64), pos + 9)
            }
            0xca => {
                need(5)?;
                (
                    Value::Float(f32::from_be_bytes([s[1], s[2], s[3], s[4]]) as f64),
                    pos + 5,
                )
            }
            0xcb => {
                need(9)?;
                (Value::Float(f64::from_bits(be(&s[1..9]))), pos + 9)
            }
            0xa0..=0xbf | 0xd9..=0xdb => {
                let (a, e) = crate::msgpack::read_str_or_bin(s).ok_or(InvalidValue)?;
                (Value::Str(buf.slice(pos + a..pos + e)), pos + e)
            }
            0xc4..=0xc6 => {
                let (a, e) = crate::msgpack::read_str_or_bin(s).ok_or(InvalidValue)?;
                (Value::Bin(buf.slice(pos + a..pos + e)), pos + e)
            }
            0x90..=0x9f | 0xdc | 0xdd => {
                let (n, hl) = crate::msgpack::read_array_len(s).ok_or(InvalidValue)?;
                let mut p = pos + hl;
                let mut v = Vec::with_capacity((n as usize).min(s.len()));
                for _ in 0..n {
                    let (x, e) = Value::decode(buf, p)?;
                    v.push(x);
                    p = e;
                }
                (Value::Array(v), p)
            }
            0x80..=0x8f | 0xde | 0xdf => {
                let (n, hl) = crate::msgpack::read_map_len(s).ok_or(InvalidValue)?;
                let mut p = pos + hl;
                let mut m = Map::with_capacity((n as usize).min(s.len() / 2));
                for _ in 0..n {
                    let (k, e) = Value::decode(buf, p)?;
                    let (v, e2) = Value::decode(buf, e)?;
                    m.0.push((k, v));
                    p = e2;
                }
                (Value::Map(m), p)
            }
            0xd4..=0xd8 | 0xc7..=0xc9 => {
                let end = crate::msgpack::skip_complete(buf, pos).map_err(|_| InvalidValue)?;
                let (ty, data_start) = match b {
                    0xd4..=0xd8 => (s[1] as i8, pos + 2),
                    0xc7 => (s[2] as i8, pos + 3),
                    0xc8 => (s[3] as i8, pos + 4),
                    _ => (s[5] as i8, pos + 6),
                };
                (Value::Ext(ty, buf.slice(data_start..end)), end)
            }
            0xc1 => return Err(InvalidValue),
        })
    }

    /// Appends the msgpack encoding.
    pub fn encode(&self, out: &mut BytesMut) {
        use crate::msgpack::*;
        match self {
            Value::Nil => out.put_u8(0xc0),
            Value::Bool(b) => write_bool(out, *b),
            Value::UInt(u) => write_uint(out, *u),
            Value::Int(i) if *i >= 0 => write_uint(out, *i as u64),
            Value::Int(i) => {
                let i = *i;
                if i >= -32 {
                    out.put_u8(i as i8 as u8);
                } else if i >= i8::MIN as i64 {
                    out.put_u8(0xd0);
                    out.put_i8(i as i8);
                } else if i >= i16::MIN as i64 {
                    out.put_u8(0xd1);
                    out.put_i16(i as i16);
                } else if i >= i32::MIN as i64 {
                    out.put_u8(0xd2);
                    out.put_i32(i as i32);
                } else {
                    out.put_u8(0xd3);
                    out.put_i64(i);
                }
            }
            Value::Float(f) => {
                out.put_u8(0xcb);
                out.put_f64(*f);
            }
            Value::Str(s) => write_str(out, s),
            Value::Bin(b) => write_bin(out, b),
            Value::Array(a) => {
                write_array_len(out, a.len() as u32);
                for v in a {
                    v.encode(out);
                }
            }
            Value::Map(m) => {
                write_map_len(out, m.0.len() as u32);
                for (k, v) in &m.0 {
                    k.encode(out);
                    v.encode(out);
                }
            }
            Value::Ext(ty, data) => {
                match data.len() {
                    1 => out.put_u8(0xd4),
                    2 => out.put_u8(0xd5),
                    4 => out.put_u8(0xd6),
                    8 => out.put_u8(0xd7),
                    16 => out.put_u8(0xd8),
                    n if n <= u8::MAX as usize => {
                        out.put_u8(0xc7);
                        out.put_u8(n as u8);
                    }
                    n if n <= u16::MAX as usize => {
                        out.put_u8(0xc8);
                        out.put_u16(n as u16);
                    }
                    n => {
                        out.put_u8(0xc9);
                        out.put_u32(n as u32);
                    }
                }
                out.put_i8(*ty);
                out.put_slice(data);
            }
        }
    }

    /// Writes the value as JSON.
    pub fn write_json(&self, out: &mut Vec<u8>, stats: &mut crate::json::JsonStats) {
        use std::io::Write;
        match self {
            Value::Nil => out.extend_from_slice(b"null"),
            Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::UInt(u) => {
                let _ = write!(out, "{u}");
            }
            Value::Float(f) if f.is_finite() => {
                let _ = write!(out, "{f}");
                if f.fract() == 0.0 && f.abs() < 1e16 {
                    out.extend_from_slice(b".0");
                }
            }
            Value::Float(_) => out.extend_from_slice(b"null"),
            Value::Str(s) | Value::Bin(s) => crate::json::write_json_str(out, s, stats),
            Value::Array(a) => {
                out.push(b'[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    v.write_json(out, stats);
                }
                out.push(b']');
            }
            Value::Map(m) => {
                out.push(b'{');
                for (i, (k, v)) in m.0.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    match k.as_bytes() {
                        Some(b) => crate::json::write_json_str(out, b, stats),
                        None => crate::json::write_json_str(out, k.to_text().as_bytes(), stats),
                    }
                    out.push(b':');
                    v.write_json(out, stats);
                }
                out.push(b'}');
            }
            Value::Ext(0, d) if d.len() == 8 => {
                // Exact seconds, as the record writer writes an EventTime.
                let mut w = crate::json::Out::append(out);
                crate::json::write_time_float(&mut w, be(&d[..4]), be(&d[4..]) as u32);
                w.done();
            }
            Value::Ext(..) => out.extend_from_slice(b"null"),
        }
    }

    /// Parses JSON text held in `src` (for example a record's `log` field). Strings without
    /// escapes are zero-copy slices of `src`.
    pub fn from_json(src: &Bytes) -> Result<Value, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(src);
        let v = Seed { src }.deserialize(&mut de)?;
        de.end()?;
        Ok(v)
    }
}

fn len_hdr(n: usize, small: usize) -> usize {
    if n < small {
        1
    } else if n <= u16::MAX as usize {
        3
    } else {
        5
    }
}

/// Exact msgpack length of a map, as [`Value::encode`] writes it.
pub fn map_encoded_len(m: &Map) -> usize {
    len_hdr(m.0.len(), 16)
        + m.0
            .iter()
            .map(|(k, v)| k.encoded_len() + v.encoded_len())
            .sum::<usize>()
}

impl Value {
    /// Exact length of [`Value::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        match self {
            Value::Nil | Value::Bool(_) => 1,
            Value::UInt(u) => match *u {
                0..=127 => 1,
                128..=0xff => 2,
                0x100..=0xffff => 3,
                0x1_0000..=0xffff_ffff => 5,
                _ => 9,
            },
            Value::Int(i) if *i >= 0 => Value::UInt(*i as u64).encoded_len(),
            Value::Int(i) => match *i {
                -32..=-1 => 1,
                -128..=-33 => 2,
                -32768..=-129 => 3,
                -2147483648..=-32769 => 5,
                _ => 9,
            },
            Value::Float(_) => 9,
            Value::Str(s) => {
                let n = s.len();
                n + if n < 32 {
                    1
                } else if n <= 255 {
                    2
                } else if n <= 65535 {
                    3
                } else {
                    5
                }
            }
            Value::Bin(b) => {
                let n = b.len();
                n + if n <= 255 {
                    2
                } else if n <= 65535 {
                    3
                } else {
                    5
                }
            }
            Value::Array(a) => {
                len_hdr(a.len(), 16) + a.iter().map(Value::encoded_len).sum::<usize>()
            }
            Value::Map(m) => map_encoded_len(m),
            Value::Ext(_, d) => {
                d.len()
                    + match d.len() {
                        1 | 2 | 4 | 8 | 16 => 2,
                        n if n <= 255 => 3,
                        n if n <= 65535 => 4,
                        _ => 6,
                    }
            }
        }
    }
}

struct Seed<'a> {
    src: &'a Bytes,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl Seed<'_> {
    fn slice(&self, s: &[u8]) -> Bytes {
        let base = self.src.as_ptr() as usize;
        let p = s.as_ptr() as usize;
        if p >= base && p + s.len() <= base + self.src.len() {
            self.src.slice_ref(s)
        } else {
            Bytes::copy_from_slice(s)
        }
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(if v >= 0 {
            Value::UInt(v as u64)
        } else {
            Value::Int(v)
        })
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Value, E> {
        Ok(Value::Str(self.slice(v.as_bytes())))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(Bytes::copy_from_slice(v.as_bytes())))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(Bytes::from(v.into_bytes())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(Seed { src: self.src })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(k) = map.next_key_seed(Seed { src: self.src })? {
            let v = map.next_value_seed(Seed { src: self.src })?;
            out.0.push((k, v));
        }
        Ok(Value::Map(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_time_is_written_as_exact_seconds() {
        let mut d = 1_700_000_000u32.to_be_bytes().to_vec();
        d.extend_from_slice(&120_000_000u32.to_be_bytes());
        let mut out = Vec::new();
        Value::Ext(0, Bytes::from(d)).write_json(&mut out, &mut Default::default());
        assert_eq!(out, b"1700000000.12");
    }

    #[test]
    fn decode_encode_round_trip() {
        let v = rmpv::Value::Map(vec![
            ("s".into(), "x".into()),
            ("i".into(), (-300).into()),
            ("u".into(), 70000.into()),
            ("f".into(), 1.25.into()),
            ("b".into(), rmpv::Value::Binary(vec![1, 2])),
            (
                "a".into(),
                rmpv::Value::Array(vec![rmpv::Value::Nil, true.into()]),
            ),
            ("e".into(), rmpv::Value::Ext(0, vec![0; 8])),
        ]);
        let mut raw = Vec::new();
        rmpv::encode::write_value(&mut raw, &v).unwrap();
        let raw = Bytes::from(raw);
        let (ours, end) = Value::decode(&raw, 0).unwrap();
        assert_eq!(end, raw.len());
        let mut back = BytesMut::new();
        ours.encode(&mut back);
        assert_eq!(&back[..], &raw[..]);
        assert_eq!(ours.encoded_len(), raw.len());
    }

    #[test]
    fn json_borrows_unescaped_strings() {
        let src = Bytes::from_static(br#"{"level":"error","msg":"a\"b","n":-3,"x":[1.5,null]}"#);
        let v = Value::from_json(&src).unwrap();
        let m = v.as_map().unwrap();
        assert_eq!(
            m.get(b"level").and_then(Value::as_bytes),
            Some(&b"error"[..])
        );
        assert_eq!(m.get(b"msg").and_then(Value::as_bytes), Some(&b"a\"b"[..]));
        assert_eq!(m.get(b"n"), Some(&Value::Int(-3)));
        assert!(Value::from_json(&Bytes::from_static(b"{\"a\":1} trailing")).is_err());
    }

    #[test]
    fn map_insert_replaces_and_remove_removes_all() {
        let mut m = Map::new();
        m.insert(Bytes::from_static(b"a"), Value::UInt(1));
        m.insert(Bytes::from_static(b"b"), Value::UInt(2));
        m.insert(Bytes::from_static(b"a"), Value::UInt(3));
        assert_eq!(m.len(), 2);
        assert_eq!(m.get(b"a"), Some(&Value::UInt(3)));
        assert_eq!(m.remove(b"a"), Some(Value::UInt(3)));
        assert!(!m.contains_key(b"a"));
    }
}
