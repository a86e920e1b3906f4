//! `@type json`: a hand-written JSON parser, in two forms.
//!
//! * [`transcode_object`] (filter_parser's fast path) turns an object straight into msgpack
//!   pieces: no tree is built, strings are copied once, and the record is then assembled with
//!   one allocation. On the corpus this roughly doubled filter_parser's throughput over parsing
//!   with `Value::from_json` (serde_json with a visitor, which alone took half the time).
//! * [`parse_value`] builds a [`Value`] (for records an earlier filter already decoded, and
//!   for arrays): strings without escapes are zero-copy slices of the field; maps and arrays
//!   are allocated once, at their exact size (members are collected on a per-thread scratch
//!   stack).
//!
//! Both look for the closing quote 8 bytes at a time, and neither checks strings for UTF-8:
//! they stay bytes, as Docker sends them (the JSON writers replace invalid sequences, and count
//! them, when they write text out). Raw control characters inside strings are accepted and
//! kept. Otherwise this is strict JSON (RFC 8259): no comments, no trailing commas, no NaN,
//! nothing after the value but whitespace, at most 128 levels of nesting (as serde_json).
//! Integers are `UInt` when non-negative and `Int` when negative; numbers beyond 64 bits become
//! floats (as serde_json). A lone UTF-16 surrogate escape becomes U+FFFD (serde_json refuses
//! the text).
//!
//! As Fluentd's JSON parser: a top-level array yields its first element when that is an
//! object (filter_parser keeps only the first record, fluent/fluentd#4100); anything that is not
//! an object, and text that is not JSON, is "not this format".

use super::{mp, ParsedMap};
use bytes::Bytes;
use nagare_core::{Map, Value};
use std::cell::RefCell;

#[derive(Debug, Clone, Default)]
pub struct JsonFormat;

impl JsonFormat {
    pub fn parse(&self, src: &Bytes) -> ParsedMap {
        match parse_value(src) {
            Ok(Value::Map(m)) => ParsedMap::Map(m),
            Ok(Value::Array(a)) => match a.into_iter().next() {
                Some(Value::Map(m)) => ParsedMap::Map(m),
                _ => ParsedMap::NoMatch,
            },
            _ => ParsedMap::NoMatch,
        }
    }
}

/// Why a text is not JSON: the byte offset where parsing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonError {
    pub offset: usize,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid JSON at byte {}", self.offset)
    }
}

impl std::error::Error for JsonError {}

/// Maximum nesting of arrays and objects: what a record built from the parsed object (itself,
/// or under `hash_value_field`, one level down) may hold and still be read back by Nagare's
/// msgpack scanner, the forward protocol's decoder (an aggregator) and the JSON writers
/// (`nagare_core::msgpack::MAX_DEPTH` counts the entry array and the record map too). A
/// deeper document is a parse failure (counted; `reserve_data` keeps the raw string), never a
/// record an aggregator would refuse or an output would write as `null`.
pub const MAX_DEPTH: u32 = (nagare_core::msgpack::MAX_DEPTH - 2) as u32;

#[derive(Default)]
struct Scratch {
    pairs: Vec<(Value, Value)>,
    items: Vec<Value>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Parses one JSON value held in `src`; strings without escapes are slices of `src`.
pub fn parse_value(src: &Bytes) -> Result<Value, JsonError> {
    SCRATCH.with(|s| {
        let mut guard = s.try_borrow_mut();
        let mut local;
        let s: &mut Scratch = match guard.as_deref_mut() {
            Ok(s) => s,
            Err(_) => {
                local = Scratch::default();
                &mut local
            }
        };
        s.pairs.clear();
        s.items.clear();
        let mut p = P {
            src,
            b: src,
            pos: 0,
            depth: 0,
        };
        let v = p.value(s);
        let v = v.and_then(|v| {
            p.ws();
            if p.pos == p.b.len() {
                Ok(v)
            } else {
                Err(())
            }
        });
        // Keep the scratch stacks small after a huge document.
        if s.pairs.capacity() > 65_536 {
            s.pairs = Vec::new();
        }
        if s.items.capacity() > 65_536 {
            s.items = Vec::new();
        }
        v.map_err(|_| {
            s.pairs.clear();
            s.items.clear();
            JsonError { offset: p.pos }
        })
    })
}

struct P<'a> {
    src: &'a Bytes,
    b: &'a [u8],
    pos: usize,
    depth: u32,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `w` that is `"` or `\` (exact for the lowest such byte).
#[inline]
fn quote_or_backslash(w: u64) -> u64 {
    let q = w ^ (ONES * b'"' as u64);
    let bs = w ^ (ONES * b'\\' as u64);
    (q.wrapping_sub(ONES) & !q | bs.wrapping_sub(ONES) & !bs) & HIGHS
}

impl P<'_> {
    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.pos) {
            if matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    fn lit(&mut self, word: &[u8], v: Value) -> Result<Value, ()> {
        if self.b[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(v)
        } else {
            Err(())
        }
    }

    fn value(&mut self, s: &mut Scratch) -> Result<Value, ()> {
        self.ws();
        match *self.b.get(self.pos).ok_or(())? {
            b'{' => self.object(s),
            b'[' => self.array(s),
            b'"' => self.string().map(Value::Str),
            b't' => self.lit(b"true", Value::Bool(true)),
            b'f' => self.lit(b"false", Value::Bool(false)),
            b'n' => self.lit(b"null", Value::Nil),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(()),
        }
    }

    fn enter(&mut self) -> Result<(), ()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(());
        }
        self.pos += 1;
        Ok(())
    }

    fn object(&mut self, s: &mut Scratch) -> Result<Value, ()> {
        self.enter()?;
        let start = s.pairs.len();
        self.ws();
        if self.b.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(Value::Map(Map::new()));
        }
        loop {
            self.ws();
            if self.b.get(self.pos) != Some(&b'"') {
                return Err(());
            }
            let k = self.string()?;
            self.ws();
            if self.b.get(self.pos) != Some(&b':') {
                return Err(());
            }
            self.pos += 1;
            let v = self.value(s)?;
            s.pairs.push((Value::Str(k), v));
            self.ws();
            match self.b.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(()),
            }
        }
        self.depth -= 1;
        let pairs: Vec<(Value, Value)> = s.pairs.drain(start..).collect();
        Ok(Value::Map(Map(pairs)))
    }

    fn array(&mut self, s: &mut Scratch) -> Result<Value, ()> {
        self.enter()?;
        let start = s.items.len();
        self.ws();
        if self.b.get(self.pos) == Some(&b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(Value::Array(Vec::new()));
        }
        loop {
            let v = self.value(s)?;
            s.items.push(v);
            self.ws();
            match self.b.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(()),
            }
        }
        self.depth -= 1;
        Ok(Value::Array(s.items.drain(start..).collect()))
    }

    /// At the opening quote; returns the string's bytes.
    fn string(&mut self) -> Result<Bytes, ()> {
        let start = self.pos + 1;
        let i = find_special(self.b, start).ok_or(())?;
        if self.b[i] == b'"' {
            self.pos = i + 1;
            return Ok(self.src.slice(start..i));
        }
        let mut out = Vec::with_capacity(i - start + 16);
        self.pos = unescape(self.b, start, i, &mut out)?;
        Ok(Bytes::from(out))
    }

    fn number(&mut self) -> Result<Value, ()> {
        let (n, end) = scan_number(self.b, self.pos)?;
        self.pos = end;
        Ok(match n {
            Num::U(u) => Value::UInt(u),
            Num::I(i) => Value::Int(i),
            Num::F(f) => Value::Float(f),
        })
    }
}

enum Num {
    U(u64),
    I(i64),
    F(f64),
}

/// A JSON number at `start`: its value (as serde_json types it) and its end.
fn scan_number(b: &[u8], start: usize) -> Result<(Num, usize), ()> {
    let mut i = start;
    let neg = b.get(i) == Some(&b'-');
    if neg {
        i += 1;
    }
    let int_start = i;
    let mut v: u64 = 0;
    let mut overflow = false;
    while let Some(&c) = b.get(i) {
        if !c.is_ascii_digit() {
            break;
        }
        match v
            .checked_mul(10)
            .and_then(|x| x.checked_add((c - b'0') as u64))
        {
            Some(x) => v = x,
            None => overflow = true,
        }
        i += 1;
    }
    let digits = i - int_start;
    if digits == 0 || (digits > 1 && b[int_start] == b'0') {
        return Err(());
    }
    let mut float = false;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let f = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == f {
            return Err(());
        }
        float = true;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let e = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == e {
            return Err(());
        }
        float = true;
    }
    if float || overflow {
        let text = std::str::from_utf8(&b[start..i]).map_err(|_| ())?;
        return text.parse::<f64>().map(|f| (Num::F(f), i)).map_err(|_| ());
    }
    let n = match (neg, v) {
        (false, v) => Num::U(v),
        // As serde_json: `-0` is the float -0.0.
        (true, 0) => Num::F(-0.0),
        (true, v) if v <= i64::MAX as u64 + 1 => Num::I((v as i64).wrapping_neg()),
        (true, v) => Num::F(-(v as f64)),
    };
    Ok((n, i))
}

/// The first `"` or `\\` at or after `i`, looking at 8 bytes at a time.
#[inline]
fn find_special(b: &[u8], mut i: usize) -> Option<usize> {
    while i + 8 <= b.len() {
        let w = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let m = quote_or_backslash(w);
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b[i.min(b.len())..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\')
        .map(|p| i + p)
}

/// Appends the contents of the string starting at `start` whose first backslash is at `i`,
/// unescaped; returns the position after the closing quote.
fn unescape(b: &[u8], start: usize, mut i: usize, out: &mut Vec<u8>) -> Result<usize, ()> {
    out.extend_from_slice(&b[start..i]);
    loop {
        match *b.get(i).ok_or(())? {
            b'"' => return Ok(i + 1),
            b'\\' => {
                let e = *b.get(i + 1).ok_or(())?;
                i += 2;
                match e {
                    b'"' => out.push(b'"'),
                    b'\\' => out.push(b'\\'),
                    b'/' => out.push(b'/'),
                    b'b' => out.push(0x08),
                    b'f' => out.push(0x0c),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'u' => {
                        let hi = hex4(b, i)?;
                        i += 4;
                        let c = if (0xD800..0xDC00).contains(&hi)
                            && b.get(i) == Some(&b'\\')
                            && b.get(i + 1) == Some(&b'u')
                        {
                            match hex4(b, i + 2)? {
                                lo @ 0xDC00..=0xDFFF => {
                                    i += 6;
                                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                                }
                                _ => None,
                            }
                        } else {
                            char::from_u32(hi)
                        };
                        // A lone surrogate becomes U+FFFD (serde_json would refuse the line).
                        let c = c.unwrap_or('\u{FFFD}');
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                    _ => return Err(()),
                }
            }
            _ => {
                let next = find_special(b, i).ok_or(())?;
                out.extend_from_slice(&b[i..next]);
                i = next;
            }
        }
    }
}

fn hex4(b: &[u8], i: usize) -> Result<u32, ()> {
    let h = b.get(i..i + 4).ok_or(())?;
    let mut v = 0u32;
    for &c in h {
        v = v * 16 + (c as char).to_digit(16).ok_or(())?;
    }
    Ok(v)
}

/// A top-level JSON object transcoded straight to msgpack, for filter_parser's fast path:
/// `buf` holds each key and value encoded (minimal encodings, as [`Value::encode`]), `pairs`
/// their ranges in document order. A repeated key keeps its first place and takes the last
/// value, as a Ruby hash does. No [`Value`] tree is built: strings are copied once, into
/// `buf`, and the record is later assembled from these ranges with one allocation.
#[derive(Default, Debug)]
pub struct RawObject {
    pub buf: Vec<u8>,
    pub pairs: Vec<RawPair>,
    tmp: Vec<u8>,
}

/// Ranges in [`RawObject::buf`]: the key's bytes, the encoded key, the encoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPair {
    pub key: std::ops::Range<usize>,
    pub key_enc: std::ops::Range<usize>,
    pub val: std::ops::Range<usize>,
}

impl RawObject {
    /// Gives memory back after a large text, keeping up to `keep` bytes of buffer.
    pub fn shrink(&mut self, keep: usize) {
        if self.buf.capacity() > keep {
            self.buf = Vec::with_capacity(keep / 16);
        }
        if self.tmp.capacity() > keep {
            self.tmp = Vec::new();
        }
        if self.pairs.capacity() > 4096 {
            self.pairs = Vec::new();
        }
    }

    /// The key's bytes.
    pub fn key(&self, p: &RawPair) -> &[u8] {
        &self.buf[p.key.clone()]
    }

    /// The index of the pair with this key.
    pub fn find(&self, key: &[u8]) -> Option<usize> {
        self.pairs
            .iter()
            .position(|p| same_key(&self.buf[p.key.clone()], key))
    }
}

/// Key equality with cheap early outs (keys are short; most comparisons fail on the length
/// or the first byte, before a `memcmp` call).
#[inline]
pub fn same_key(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.first() == b.first() && a == b
}

/// What [`transcode_object`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transcoded {
    /// A JSON object: `obj` holds its members.
    Object,
    /// Valid or not, the text does not start with `{` (use [`parse_value`] for the rest).
    NotObject,
}

/// Transcodes a JSON object to msgpack pieces in `obj` (cleared first).
pub fn transcode_object(src: &[u8], obj: &mut RawObject) -> Result<Transcoded, JsonError> {
    let RawObject { buf, pairs, tmp } = obj;
    buf.clear();
    pairs.clear();
    let mut t = T {
        b: src,
        pos: 0,
        depth: 1,
        out: buf,
        tmp,
    };
    t.ws();
    if src.get(t.pos) != Some(&b'{') {
        return Ok(Transcoded::NotObject);
    }
    t.pos += 1;
    let r = (|| -> Result<(), ()> {
        t.ws();
        if src.get(t.pos) == Some(&b'}') {
            t.pos += 1;
        } else {
            loop {
                t.ws();
                if src.get(t.pos) != Some(&b'"') {
                    return Err(());
                }
                let ks = t.out.len();
                t.string()?;
                let ke = t.out.len();
                let (kp, _) = mp::str_at(t.out, ks).ok_or(())?;
                t.ws();
                if src.get(t.pos) != Some(&b':') {
                    return Err(());
                }
                t.pos += 1;
                let vs = t.out.len();
                t.value()?;
                let ve = t.out.len();
                let key = &t.out[kp..ke];
                match pairs
                    .iter_mut()
                    .find(|p| same_key(&t.out[p.key.clone()], key))
                {
                    Some(prev) => prev.val = vs..ve,
                    None => pairs.push(RawPair {
                        key: kp..ke,
                        key_enc: ks..ke,
                        val: vs..ve,
                    }),
                }
                t.ws();
                match src.get(t.pos) {
                    Some(b',') => t.pos += 1,
                    Some(b'}') => {
                        t.pos += 1;
                        break;
                    }
                    _ => return Err(()),
                }
            }
        }
        t.ws();
        if t.pos == src.len() {
            Ok(())
        } else {
            Err(())
        }
    })();
    r.map(|_| Transcoded::Object)
        .map_err(|_| JsonError { offset: t.pos })
}

struct T<'a> {
    b: &'a [u8],
    pos: usize,
    depth: u32,
    out: &'a mut Vec<u8>,
    tmp: &'a mut Vec<u8>,
}

impl T<'_> {
    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.pos) {
            if matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn lit(&mut self, word: &[u8], byte: u8) -> Result<(), ()> {
        if self.b[self.pos..].starts_with(word) {
            self.pos += word.len();
            self.out.push(byte);
            Ok(())
        } else {
            Err(())
        }
    }

    fn value(&mut self) -> Result<(), ()> {
        self.ws();
        match *self.b.get(self.pos).ok_or(())? {
            b'{' => self.container(true),
            b'[' => self.container(false),
            b'"' => self.string(),
            b't' => self.lit(b"true", 0xc3),
            b'f' => self.lit(b"false", 0xc2),
            b'n' => self.lit(b"null", 0xc0),
            b'-' | b'0'..=b'9' => {
                let (n, end) = scan_number(self.b, self.pos)?;
                self.pos = end;
                match n {
                    Num::U(u) => mp::uint(self.out, u),
                    Num::I(i) => mp::int(self.out, i),
                    Num::F(f) => mp::float(self.out, f),
                }
                Ok(())
            }
            _ => Err(()),
        }
    }

    fn container(&mut self, map: bool) -> Result<(), ()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(());
        }
        self.pos += 1;
        let close = if map { b'}' } else { b']' };
        let at = self.out.len();
        self.out.push(0);
        let mut n = 0usize;
        self.ws();
        if self.b.get(self.pos) == Some(&close) {
            self.pos += 1;
        } else {
            loop {
                if map {
                    self.ws();
                    if self.b.get(self.pos) != Some(&b'"') {
                        return Err(());
                    }
                    self.string()?;
                    self.ws();
                    if self.b.get(self.pos) != Some(&b':') {
                        return Err(());
                    }
                    self.pos += 1;
                }
                self.value()?;
                n += 1;
                self.ws();
                match self.b.get(self.pos) {
                    Some(b',') => self.pos += 1,
                    Some(&c) if c == close => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(()),
                }
            }
        }
        mp::fix_container_header(self.out, at, n, map);
        self.depth -= 1;
        Ok(())
    }

    fn string(&mut self) -> Result<(), ()> {
        let start = self.pos + 1;
        let i = find_special(self.b, start).ok_or(())?;
        if self.b[i] == b'"' {
            mp::write_str(self.out, &self.b[start..i]);
            self.pos = i + 1;
            return Ok(());
        }
        self.tmp.clear();
        self.pos = unescape(self.b, start, i, self.tmp)?;
        mp::write_str(self.out, self.tmp);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &'static [u8]) -> ParsedMap {
        JsonFormat.parse(&Bytes::from_static(s))
    }

    fn v(s: &str) -> Result<Value, JsonError> {
        parse_value(&Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn objects_arrays_and_the_rest() {
        match p(br#" {"a":"b","n":1} "#) {
            ParsedMap::Map(m) => assert_eq!(m.get(b"a"), Some(&Value::str("b"))),
            _ => panic!(),
        }
        match p(br#"[{"a":1},{"a":2}]"#) {
            ParsedMap::Map(m) => assert_eq!(m.get(b"a"), Some(&Value::UInt(1))),
            _ => panic!(),
        }
        for s in [
            &b"[1]"[..],
            b"[]",
            b"123",
            b"\"str\"",
            b"null",
            b"Starting application",
            b"{\"a\":",
            b"",
        ] {
            assert!(matches!(
                JsonFormat.parse(&Bytes::copy_from_slice(s)),
                ParsedMap::NoMatch
            ));
        }
        // Bytes that are not UTF-8 are kept, not refused.
        match p(b"{\"a\":\"\xff\"}") {
            ParsedMap::Map(m) => {
                assert_eq!(m.get(b"a").and_then(Value::as_bytes), Some(&b"\xff"[..]))
            }
            _ => panic!(),
        }
    }

    /// Same values as serde_json (through `Value::from_json`) on valid JSON.
    #[test]
    fn agrees_with_serde_json() {
        for s in [
            r#"{"level":"info","ts":"2023-11-15T07:13:20.903+0900","n":-3,"u":18446744073709551615,"big":18446744073709551616,"f":1.5e3,"z":-0,"fz":-0.0,"t":true,"x":[1.25,null,false,{}],"e":{},"a":[]}"#,
            r#"{"esc":"a\"b\\c\/d\b\f\n\r\t\u00e9\u65e5\ud83d\ude00 tail","long":"0123456789abcdefghij\"0123456789abcdefghij"}"#,
            r#"  [ {"k" : [ [ [ ] ] ] } , 2 ]  "#,
            r#""just a string""#,
            "-9223372036854775808",
            "-9223372036854775809",
            "0.1",
            "1E-7",
        ] {
            let ours = v(s).unwrap();
            let theirs = Value::from_json(&Bytes::copy_from_slice(s.as_bytes())).unwrap();
            assert_eq!(ours, theirs, "{s}");
        }
    }

    #[test]
    fn rejects_what_json_rejects() {
        for s in [
            "{",
            "}",
            "[1,]",
            "{\"a\":1,}",
            "{a:1}",
            "01",
            "1.",
            ".5",
            "1e",
            "-",
            "+1",
            "tru",
            "nul",
            "{\"a\" 1}",
            "\"open",
            "\"bad \\q escape\"",
            "\"\\u12\"",
            "[1] x",
            "NaN",
            "{\"a\":1}{}",
        ] {
            assert!(v(s).is_err(), "{s} should be refused");
        }
        let n = MAX_DEPTH as usize;
        let deep = "[".repeat(n + 1) + &"]".repeat(n + 1);
        assert!(v(&deep).is_err());
        let ok = "[".repeat(n) + &"]".repeat(n);
        assert!(v(&ok).is_ok());
    }

    /// The deepest object the parser takes, put under `hash_value_field` (one more level) in a
    /// record that sits in a forward entry (one more), is still read by the msgpack scanner
    /// the buffers and an aggregator's decoder use; one level more is refused by the parser.
    #[test]
    fn the_deepest_parsed_record_is_still_readable_downstream() {
        let n = MAX_DEPTH as usize;
        let doc = |depth: usize| "{\"a\":".repeat(depth - 1) + "{}" + &"}".repeat(depth - 1);
        assert!(parse_value(&Bytes::from(doc(n + 1))).is_err());
        let parsed = parse_value(&Bytes::from(doc(n))).unwrap();
        let record = Value::Map(Map(vec![(Value::Str(Bytes::from_static(b"h")), parsed)]));
        let mut buf = bytes::BytesMut::new();
        record.encode(&mut buf);
        assert_eq!(
            nagare_core::msgpack::skip_nested(&buf, 0, 1),
            Ok(buf.len()),
            "a record in a forward entry"
        );
    }

    #[test]
    fn unescaped_strings_borrow_and_lone_surrogates_are_replaced() {
        let src = Bytes::from_static(br#"{"key":"value","s":"\ud800x"}"#);
        let m = match parse_value(&src).unwrap() {
            Value::Map(m) => m,
            _ => panic!(),
        };
        let val = m.get(b"key").and_then(Value::as_bytes).unwrap();
        let base = src.as_ptr() as usize;
        assert!((base..base + src.len()).contains(&(val.as_ptr() as usize)));
        assert_eq!(m.get(b"s"), Some(&Value::str("\u{FFFD}x")));
        // Raw control characters are kept.
        assert_eq!(v("\"a\tb\"").unwrap(), Value::str("a\tb"));
    }

    #[test]
    fn scratch_survives_errors_and_nesting() {
        assert!(v(r#"{"a":[1,2,{"b":"#).is_err());
        assert_eq!(
            v(r#"{"a":[1,{"b":[2]}],"c":3}"#).unwrap(),
            Value::from_json(&Bytes::from_static(br#"{"a":[1,{"b":[2]}],"c":3}"#)).unwrap()
        );
    }

    fn transcoded(s: &str) -> Result<Value, JsonError> {
        let mut obj = RawObject::default();
        assert_eq!(
            transcode_object(s.as_bytes(), &mut obj)?,
            Transcoded::Object
        );
        let mut out = Vec::new();
        mp::map_header(&mut out, obj.pairs.len());
        for p in &obj.pairs {
            out.extend_from_slice(&obj.buf[p.key_enc.clone()]);
            out.extend_from_slice(&obj.buf[p.val.clone()]);
        }
        Ok(Value::decode(&Bytes::from(out), 0).unwrap().0)
    }

    #[test]
    fn transcoding_gives_the_same_values_and_bytes() {
        let many: String = (0..40)
            .map(|i| format!("\"k{i}\":[{i}]"))
            .collect::<Vec<_>>()
            .join(",");
        for s in [
            r#"{"level":"info","n":-3,"u":18446744073709551615,"f":1.5e3,"z":-0,"t":true,"x":[1.25,null,false,{}],"e":{},"a":[]}"#,
            r#"{"esc":"a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00 tail","log":{"request":{"path":"/v1"},"list":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}}"#,
            &format!("{{{many},\"deep\":{{{many}}}}}"),
            " { } ",
        ] {
            let ours = transcoded(s).unwrap();
            let theirs = parse_value(&Bytes::copy_from_slice(s.as_bytes())).unwrap();
            assert_eq!(ours, theirs, "{s}");
            let mut a = bytes::BytesMut::new();
            ours.encode(&mut a);
            let mut b = bytes::BytesMut::new();
            theirs.encode(&mut b);
            assert_eq!(a, b);
        }
        // A repeated key keeps its first place and takes the last value.
        assert_eq!(
            transcoded(r#"{"a":1,"b":2,"a":3}"#).unwrap(),
            parse_value(&Bytes::from_static(br#"{"a":3,"b":2}"#)).unwrap()
        );
        let mut obj = RawObject::default();
        for bad in [
            "{",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":1} x",
            "{\"a\":[1,]}",
            "{\"a\":\"open}",
        ] {
            assert!(transcode_object(bad.as_bytes(), &mut obj).is_err(), "{bad}");
        }
        for other in ["[{\"a\":1}]", "plain text", "", "\"s\""] {
            assert_eq!(
                transcode_object(other.as_bytes(), &mut obj).unwrap(),
                Transcoded::NotObject
            );
        }
    }
}
