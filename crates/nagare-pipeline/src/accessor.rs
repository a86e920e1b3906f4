//! Record accessors: Fluentd's syntax for naming a field, possibly nested.
//!
//! | syntax | meaning |
//! | --- | --- |
//! | `log` | the top-level key `log` (dots are part of the key: `a.b` is one key) |
//! | `$.log.level` | `record["log"]["level"]` |
//! | `$.items[0].sku` | `record["items"][0]["sku"]`; negative indexes count from the end |
//! | `$['key.with.dots']["x"]` | bracket notation, single or double quotes |
//! | `$['items'][0]` | brackets mix keys and indexes |
//!
//! Lookups follow Ruby's `Hash#dig` as Fluentd's record_accessor helper does: a missing key, a
//! key used on an array or an index used on a string gives "not found" (never an error). Setting
//! and deleting never create intermediate maps (Fluentd's `set`/`delete` fail the same way).
//!
//! [`Accessor::get_record`] navigates a record that is still raw msgpack without decoding it:
//! only the value found is decoded (its strings are zero-copy slices of the record bytes).

use crate::parse::mp;
use bytes::Bytes;
use nagare_core::{Map, Record, Value};
use std::borrow::Cow;
use std::fmt;

/// One step of a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A map key.
    Key(Bytes),
    /// An array index (negative counts from the end); on a map, an integer key.
    Index(i64),
}

/// A parsed record accessor; see the module docs.
#[derive(Clone, PartialEq, Eq)]
pub struct Accessor {
    src: String,
    segs: Vec<Segment>,
}

/// Why an accessor did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid record accessor '{src}': {msg}")]
pub struct AccessorError {
    pub src: String,
    pub msg: String,
}

impl fmt::Debug for Accessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Accessor({})", self.src)
    }
}

impl fmt::Display for Accessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.src)
    }
}

/// What [`Accessor::lookup`] found: a string's bytes without decoding anything, or another
/// value.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup<'a> {
    Missing,
    /// A str or bin (borrowed from the record, decoded or not).
    Bytes(&'a [u8]),
    Value(Found<'a>),
}

/// A value found in a record: borrowed from a decoded map, or decoded on its own from raw bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Found<'a> {
    Ref(&'a Value),
    Owned(Value),
}

impl std::ops::Deref for Found<'_> {
    type Target = Value;
    fn deref(&self) -> &Value {
        match self {
            Found::Ref(v) => v,
            Found::Owned(v) => v,
        }
    }
}

impl Found<'_> {
    /// The value, owned (cheap for strings: a reference-counted slice).
    pub fn into_owned(self) -> Value {
        match self {
            Found::Ref(v) => v.clone(),
            Found::Owned(v) => v,
        }
    }
}

impl Accessor {
    /// Parses `src`; see the module docs for the syntax.
    pub fn parse(src: &str) -> Result<Accessor, AccessorError> {
        let err = |msg: &str| AccessorError {
            src: src.to_string(),
            msg: msg.to_string(),
        };
        let segs = if let Some(rest) = src.strip_prefix("$.") {
            parse_dot(rest).map_err(|m| err(&m))?
        } else if src.starts_with("$[") {
            parse_brackets(&src[1..]).map_err(|m| err(&m))?
        } else if src.is_empty() {
            return Err(err("empty key"));
        } else {
            vec![Segment::Key(Bytes::copy_from_slice(src.as_bytes()))]
        };
        if segs.is_empty() {
            return Err(err("empty path"));
        }
        Ok(Accessor {
            src: src.to_string(),
            segs,
        })
    }

    /// A top-level key accessor (no parsing: the whole string is the key).
    pub fn key(key: &str) -> Accessor {
        Accessor {
            src: key.to_string(),
            segs: vec![Segment::Key(Bytes::copy_from_slice(key.as_bytes()))],
        }
    }

    /// A nested path of keys (`["a", "b"]` is `$['a']['b']`).
    pub fn keys(keys: &[&str]) -> Accessor {
        Accessor {
            src: keys
                .iter()
                .map(|k| format!("['{k}']"))
                .fold("$".to_string(), |a, b| a + &b),
            segs: keys
                .iter()
                .map(|k| Segment::Key(Bytes::copy_from_slice(k.as_bytes())))
                .collect(),
        }
    }

    /// The text this accessor was parsed from.
    pub fn as_str(&self) -> &str {
        &self.src
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segs
    }

    /// The key, when this accessor names one top-level key.
    pub fn top_level_key(&self) -> Option<&Bytes> {
        match self.segs.as_slice() {
            [Segment::Key(k)] => Some(k),
            _ => None,
        }
    }

    /// The value at this path in a decoded map.
    pub fn get<'a>(&self, map: &'a Map) -> Option<&'a Value> {
        let (first, rest) = self.segs.split_first()?;
        let mut cur = map_step(map, first)?;
        for s in rest {
            cur = value_step(cur, s)?;
        }
        Some(cur)
    }

    /// The value at this path, mutable.
    pub fn get_mut<'a>(&self, map: &'a mut Map) -> Option<&'a mut Value> {
        let (first, rest) = self.segs.split_first()?;
        let mut cur = map_step_mut(map, first)?;
        for s in rest {
            cur = value_step_mut(cur, s)?;
        }
        Some(cur)
    }

    /// The value at this path in a record, decoding only that value if the record is raw.
    pub fn get_record<'a>(&self, rec: &'a Record) -> Option<Found<'a>> {
        if let Some(m) = rec.decoded() {
            return self.get(m).map(Found::Ref);
        }
        let raw = rec.bytes();
        let mut pos = 0usize;
        for s in &self.segs {
            pos = raw_step(raw, pos, s)?;
        }
        Value::decode(raw, pos).ok().map(|(v, _)| Found::Owned(v))
    }

    /// The value at this path; strings are borrowed, never decoded or reference-counted (the
    /// fast path for matching text, as grep does).
    pub fn lookup<'a>(&self, rec: &'a Record) -> Lookup<'a> {
        if let Some(m) = rec.decoded() {
            return match self.get(m) {
                None => Lookup::Missing,
                Some(Value::Str(b) | Value::Bin(b)) => Lookup::Bytes(b),
                Some(v) => Lookup::Value(Found::Ref(v)),
            };
        }
        let raw = rec.bytes();
        let mut pos = 0usize;
        for s in &self.segs {
            match raw_step(raw, pos, s) {
                Some(p) => pos = p,
                None => return Lookup::Missing,
            }
        }
        if let Some((a, e)) = mp::str_at(raw, pos) {
            return Lookup::Bytes(&raw[a..e]);
        }
        match Value::decode(raw, pos) {
            Ok((v, _)) => Lookup::Value(Found::Owned(v)),
            Err(_) => Lookup::Missing,
        }
    }

    /// The value as text (as Ruby's `to_s`): `None` when missing.
    pub fn get_text<'a>(&self, rec: &'a Record) -> Option<Cow<'a, str>> {
        match self.get_record(rec)? {
            Found::Ref(v) => Some(v.to_text()),
            Found::Owned(v) => Some(Cow::Owned(v.to_text().into_owned())),
        }
    }

    /// Sets the value at this path: replaces an existing value, or adds the last key to an
    /// existing map. Returns false when the parent does not exist or is not a map/array.
    pub fn set(&self, map: &mut Map, value: Value) -> bool {
        let Some((last, parents)) = self.segs.split_last() else {
            return false;
        };
        if parents.is_empty() {
            return set_in_map(map, last, value);
        }
        let (first, rest) = parents.split_first().expect("non-empty");
        let Some(mut cur) = map_step_mut(map, first) else {
            return false;
        };
        for s in rest {
            match value_step_mut(cur, s) {
                Some(v) => cur = v,
                None => return false,
            }
        }
        match cur {
            Value::Map(m) => set_in_map(m, last, value),
            Value::Array(a) => match (last, array_index(a.len(), last)) {
                (_, Some(i)) => {
                    a[i] = value;
                    true
                }
                _ => false,
            },
            _ => false,
        }
    }

    /// Deletes the value at this path; returns it.
    pub fn delete(&self, map: &mut Map) -> Option<Value> {
        let (last, parents) = self.segs.split_last()?;
        if parents.is_empty() {
            return delete_in_map(map, last);
        }
        let (first, rest) = parents.split_first()?;
        let mut cur = map_step_mut(map, first)?;
        for s in rest {
            cur = value_step_mut(cur, s)?;
        }
        match cur {
            Value::Map(m) => delete_in_map(m, last),
            Value::Array(a) => {
                let i = array_index(a.len(), last)?;
                Some(a.remove(i))
            }
            _ => None,
        }
    }
}

fn key_matches(k: &Value, seg: &Segment) -> bool {
    match seg {
        Segment::Key(key) => k.as_bytes() == Some(&key[..]),
        Segment::Index(i) => match k {
            Value::Int(x) => x == i,
            Value::UInt(x) => *i >= 0 && *x == *i as u64,
            _ => false,
        },
    }
}

fn map_pos(map: &Map, seg: &Segment) -> Option<usize> {
    // The last occurrence wins, as in `Map::get`.
    map.0.iter().rposition(|(k, _)| key_matches(k, seg))
}

fn map_step<'a>(map: &'a Map, seg: &Segment) -> Option<&'a Value> {
    map_pos(map, seg).map(|i| &map.0[i].1)
}

fn map_step_mut<'a>(map: &'a mut Map, seg: &Segment) -> Option<&'a mut Value> {
    map_pos(map, seg).map(move |i| &mut map.0[i].1)
}

fn array_index(len: usize, seg: &Segment) -> Option<usize> {
    match seg {
        Segment::Index(i) if *i >= 0 => ((*i as u64) < len as u64).then_some(*i as usize),
        Segment::Index(i) => {
            let back = i.unsigned_abs();
            (back <= len as u64).then(|| len - back as usize)
        }
        Segment::Key(_) => None,
    }
}

fn value_step<'a>(v: &'a Value, seg: &Segment) -> Option<&'a Value> {
    match v {
        Value::Map(m) => map_step(m, seg),
        Value::Array(a) => a.get(array_index(a.len(), seg)?),
        _ => None,
    }
}

fn value_step_mut<'a>(v: &'a mut Value, seg: &Segment) -> Option<&'a mut Value> {
    match v {
        Value::Map(m) => map_step_mut(m, seg),
        Value::Array(a) => {
            let i = array_index(a.len(), seg)?;
            a.get_mut(i)
        }
        _ => None,
    }
}

fn set_in_map(map: &mut Map, seg: &Segment, value: Value) -> bool {
    match map_pos(map, seg) {
        Some(i) => map.0[i].1 = value,
        None => {
            let k = match seg {
                Segment::Key(k) => Value::Str(k.clone()),
                Segment::Index(i) if *i >= 0 => Value::UInt(*i as u64),
                Segment::Index(i) => Value::Int(*i),
            };
            map.0.push((k, value));
        }
    }
    true
}

fn delete_in_map(map: &mut Map, seg: &Segment) -> Option<Value> {
    let mut out = None;
    while let Some(i) = map_pos(map, seg) {
        let v = map.0.remove(i).1;
        out.get_or_insert(v);
    }
    out
}

/// One step through raw msgpack: from the value at `pos` to the child `seg` names.
fn raw_step(raw: &Bytes, pos: usize, seg: &Segment) -> Option<usize> {
    if let Some((n, mut off)) = mp::map_at(raw, pos) {
        if let Segment::Key(key) = seg {
            return find_key(raw, n, off, key);
        }
        let mut found = None;
        for _ in 0..n {
            let kend = mp::skip(raw, off)?;
            let vend = mp::skip(raw, kend)?;
            let hit = match seg {
                Segment::Key(key) => mp::str_at(raw, off)
                    .is_some_and(|(a, e)| crate::parse::json::same_key(&raw[a..e], key)),
                Segment::Index(_) => {
                    Value::decode(raw, off).is_ok_and(|(k, _)| key_matches(&k, seg))
                }
            };
            if hit {
                found = Some(kend);
            }
            off = vend;
        }
        return found;
    }
    if let Some((n, mut off)) = mp::array_at(raw, pos) {
        let i = array_index(n, seg)?;
        for _ in 0..i {
            off = mp::skip(raw, off)?;
        }
        return Some(off);
    }
    None
}

/// The value position of the last pair whose key is the string `key`, among the `n` pairs
/// from `off` (what [`raw_step`]'s general loop finds, with fixstr keys and leaf values, the
/// usual record, handled inline).
fn find_key(raw: &[u8], n: usize, mut off: usize, key: &[u8]) -> Option<usize> {
    let mut found = None;
    for _ in 0..n {
        let kend = match *raw.get(off)? {
            c @ 0xa0..=0xbf => {
                let s = off + 1;
                let e = s + (c & 0x1f) as usize;
                if raw
                    .get(s..e)
                    .is_some_and(|k| crate::parse::json::same_key(k, key))
                {
                    found = Some(e);
                }
                e
            }
            _ => {
                let kend = mp::skip(raw, off)?;
                if mp::str_at(raw, off)
                    .is_some_and(|(a, e)| crate::parse::json::same_key(&raw[a..e], key))
                {
                    found = Some(kend);
                }
                kend
            }
        };
        off = skip_value(raw, kend)?;
    }
    // The last value's end may be past the buffer (truncated): the general loop's `skip`
    // refused that.
    (off <= raw.len()).then_some(())?;
    found
}

/// The end of the value at `pos`, with the usual leaves (fixstr, small ints, nil, booleans)
/// inline. A fixstr's end may be past the buffer: the caller's next read finds out.
#[inline]
fn skip_value(raw: &[u8], pos: usize) -> Option<usize> {
    Some(match *raw.get(pos)? {
        c @ 0xa0..=0xbf => pos + 1 + (c & 0x1f) as usize,
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => pos + 1,
        _ => mp::skip(raw, pos)?,
    })
}

/// Whether the raw msgpack map `raw` has the top-level string key `key`: one scan that stops
/// at the first match, nothing decoded (false when `raw` is not a map, or is cut short before
/// the key).
pub fn raw_has_key(raw: &[u8], key: &[u8]) -> bool {
    let Some((n, mut off)) = mp::map_at(raw, 0) else {
        return false;
    };
    for _ in 0..n {
        let Some(&c) = raw.get(off) else {
            return false;
        };
        let kend = if (0xa0..=0xbf).contains(&c) {
            let s = off + 1;
            let e = s + (c & 0x1f) as usize;
            if raw
                .get(s..e)
                .is_some_and(|k| crate::parse::json::same_key(k, key))
            {
                return true;
            }
            e
        } else {
            let Some(kend) = mp::skip(raw, off) else {
                return false;
            };
            if mp::str_at(raw, off)
                .is_some_and(|(a, e)| crate::parse::json::same_key(&raw[a..e], key))
            {
                return true;
            }
            kend
        };
        match skip_value(raw, kend) {
            Some(v) => off = v,
            None => return false,
        }
    }
    false
}

fn parse_dot(rest: &str) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    for part in rest.split('.') {
        if let Some(b) = part.find('[') {
            if b > 0 {
                out.push(Segment::Key(Bytes::copy_from_slice(&part.as_bytes()[..b])));
            }
            let mut s = &part[b..];
            while !s.is_empty() {
                let inner = s
                    .strip_prefix('[')
                    .ok_or_else(|| format!("unexpected characters after ']' in '{part}'"))?;
                let end = inner
                    .find(']')
                    .ok_or_else(|| format!("'[' without ']' in '{part}'"))?;
                let idx = &inner[..end];
                if idx.is_empty() {
                    return Err("missing array index in '[]'".into());
                }
                let n: i64 = idx
                    .trim()
                    .parse()
                    .map_err(|_| format!("array index '{idx}' is not an integer (use bracket notation $['key'] for keys)"))?;
                out.push(Segment::Index(n));
                s = &inner[end + 1..];
            }
        } else if part.is_empty() {
            return Err("empty key in dot notation".into());
        } else if part.chars().any(char::is_whitespace) {
            return Err(format!(
                "whitespace is not allowed in dot notation ('{part}'); use bracket notation $['{part}']"
            ));
        } else {
            out.push(Segment::Key(Bytes::copy_from_slice(part.as_bytes())));
        }
    }
    Ok(out)
}

fn parse_brackets(mut s: &str) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    while !s.is_empty() {
        let inner = s
            .strip_prefix('[')
            .ok_or_else(|| format!("expected '[' at '{s}'"))?;
        let q = inner.chars().next().ok_or("'[' at the end")?;
        if q == '\'' || q == '"' {
            let body = &inner[1..];
            let end = body
                .find(q)
                .ok_or_else(|| format!("unterminated quote in '{s}'"))?;
            let key = &body[..end];
            let after = &body[end + 1..];
            s = after
                .strip_prefix(']')
                .ok_or_else(|| format!("expected ']' after the quoted key '{key}'"))?;
            out.push(Segment::Key(Bytes::copy_from_slice(key.as_bytes())));
        } else {
            let end = inner
                .find(']')
                .ok_or_else(|| format!("'[' without ']' in '{s}'"))?;
            let idx = inner[..end].trim();
            let n: i64 = idx
                .parse()
                .map_err(|_| format!("'{idx}' is neither a quoted key nor an integer index"))?;
            out.push(Segment::Index(n));
            s = &inner[end + 1..];
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(json: &str) -> Map {
        match Value::from_json(&Bytes::copy_from_slice(json.as_bytes())).unwrap() {
            Value::Map(m) => m,
            _ => panic!("not a map"),
        }
    }

    fn raw_record(m: &Map) -> Record {
        let mut out = bytes::BytesMut::new();
        Value::Map(m.clone()).encode(&mut out);
        Record::from_msgpack(out.freeze()).unwrap()
    }

    #[test]
    fn raw_has_key_finds_top_level_keys_only() {
        let mut inner = Map::new();
        inner.insert(&b"partial_message"[..], Value::str("true"));
        let mut m = Map::new();
        m.insert(&b"log"[..], Value::str("x"));
        m.insert(&b"nested"[..], Value::Map(inner));
        m.insert(&b"n"[..], Value::UInt(300));
        m.insert(Bytes::from(b"k".repeat(40)), Value::str("long key"));
        let rec = Record::from_map(m);
        let raw = rec.as_bytes();
        assert!(raw_has_key(raw, b"log") && raw_has_key(raw, b"n"));
        assert!(raw_has_key(raw, &b"k".repeat(40)));
        assert!(!raw_has_key(raw, b"partial_message"));
        assert!(!raw_has_key(raw, b"missing"));
        assert!(!raw_has_key(&raw[..raw.len() - 1], b"missing"));
        assert!(!raw_has_key(b"\xa1x", b"x"));
    }

    #[test]
    fn syntax_forms() {
        let k = |s: &str| Segment::Key(Bytes::copy_from_slice(s.as_bytes()));
        assert_eq!(Accessor::parse("log").unwrap().segments(), &[k("log")]);
        assert_eq!(Accessor::parse("a.b").unwrap().segments(), &[k("a.b")]);
        assert_eq!(
            Accessor::parse("$.log.level").unwrap().segments(),
            &[k("log"), k("level")]
        );
        assert_eq!(
            Accessor::parse("$.a[0][-1].b").unwrap().segments(),
            &[k("a"), Segment::Index(0), Segment::Index(-1), k("b")]
        );
        assert_eq!(
            Accessor::parse("$['key.with.dots'][\"x y\"][2]")
                .unwrap()
                .segments(),
            &[k("key.with.dots"), k("x y"), Segment::Index(2)]
        );
        assert_eq!(
            Accessor::parse("$.key")
                .unwrap()
                .top_level_key()
                .map(|b| &b[..]),
            Some(&b"key"[..])
        );
        for bad in [
            "$.", "$.a..b", "$.a[", "$.a[x]", "$['a'", "$[a]", "$.a b", "$.a[0]x", "",
        ] {
            assert!(Accessor::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn get_on_maps_and_raw_records_agree() {
        let m = rec(r#"{"log":{"level":"warn","n":[1,{"x":"y"}]},"a.b":"dots","log2":"s"}"#);
        let r = raw_record(&m);
        for (path, want) in [
            ("$.log.level", Some(Value::str("warn"))),
            ("$['log']['level']", Some(Value::str("warn"))),
            ("$.log.n[0]", Some(Value::UInt(1))),
            ("$.log.n[-1].x", Some(Value::str("y"))),
            ("$.log.n[2]", None),
            ("$.log.n[-3]", None),
            ("a.b", Some(Value::str("dots"))),
            ("$['a.b']", Some(Value::str("dots"))),
            ("$.a.b", None),
            ("$.log2.x", None),
            ("$.log.level.deeper", None),
            ("missing", None),
        ] {
            let a = Accessor::parse(path).unwrap();
            assert_eq!(a.get(&m).cloned(), want, "{path} on a map");
            assert_eq!(
                a.get_record(&r).map(Found::into_owned),
                want,
                "{path} on raw bytes"
            );
        }
        assert_eq!(
            Accessor::parse("$.log").unwrap().get_text(&r).unwrap(),
            r#"{"level":"warn","n":[1,{"x":"y"}]}"#
        );
    }

    #[test]
    fn set_and_delete() {
        let mut m = rec(r#"{"a":{"b":1,"c":[1,2,3]},"top":"x"}"#);
        assert!(Accessor::parse("$.a.b")
            .unwrap()
            .set(&mut m, Value::UInt(5)));
        assert!(Accessor::parse("$.a.new")
            .unwrap()
            .set(&mut m, Value::str("n")));
        assert!(!Accessor::parse("$.nope.x").unwrap().set(&mut m, Value::Nil));
        assert!(Accessor::parse("$.a.c[-1]")
            .unwrap()
            .set(&mut m, Value::UInt(9)));
        let mut out = Vec::new();
        Value::Map(m.clone()).write_json(&mut out, &mut Default::default());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":{"b":5,"c":[1,2,9],"new":"n"},"top":"x"}"#
        );
        assert_eq!(
            Accessor::parse("$.a.c[0]").unwrap().delete(&mut m),
            Some(Value::UInt(1))
        );
        assert_eq!(
            Accessor::parse("top").unwrap().delete(&mut m),
            Some(Value::str("x"))
        );
        assert_eq!(Accessor::parse("$.a.zz").unwrap().delete(&mut m), None);
        let mut out = Vec::new();
        Value::Map(m).write_json(&mut out, &mut Default::default());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":{"b":5,"c":[2,9],"new":"n"}}"#
        );
    }
}
