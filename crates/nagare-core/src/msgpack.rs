//! Allocation-free msgpack framing and small readers/writers.
//!
//! [`Scanner`] finds where one msgpack object ends in a growing buffer. It is resumable: it
//! remembers its position and the element counts still open at each nesting level, so feeding a
//! 2 MiB frame one byte at a time costs O(n) overall, not O(n^2). It never allocates from a
//! declared length: a length is only compared with the bytes present and with the caller's limit
//! (a `bin32` declaring 4 GiB fails at once when the limit is smaller, vector M09, and an
//! `array32` declaring 2^32-1 entries fails because each entry needs at least one byte, M10).

use bytes::{BufMut, BytesMut};
use thiserror::Error;

/// Why a byte stream is not acceptable msgpack.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScanError {
    /// Not msgpack at all (for example the reserved byte 0xc1), or truncated where a complete
    /// object was required.
    #[error("invalid msgpack: {0}")]
    Invalid(&'static str),
    /// The object would be larger than the limit (counting declared lengths).
    #[error("object of at least {needed} bytes exceeds the limit of {limit} bytes")]
    TooLarge { needed: u64, limit: usize },
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("msgpack nested deeper than {0} levels")]
    TooDeep(usize),
}

/// Maximum nesting depth accepted in one object.
pub const MAX_DEPTH: usize = 64;

/// Resumable scanner for one top-level msgpack object at the start of a buffer.
#[derive(Debug, Default)]
pub struct Scanner {
    pos: usize,
    /// Elements still expected at each open nesting level.
    stack: Vec<u64>,
    /// The buffer must hold at least this many bytes before scanning can make progress.
    need: usize,
}

enum Head {
    /// Header length, body length.
    Leaf(usize, u64),
    /// Header length, child elements.
    Container(usize, u64),
}

impl Scanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget progress: call after the object was consumed from the buffer.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.stack.clear();
        self.need = 0;
    }

    /// Bytes of the buffer known to be needed before the next call can progress.
    pub fn needed(&self) -> usize {
        self.need
    }

    /// Scans `buf` (which must start at the object and only grow between calls) and returns
    /// `Ok(Some(len))` once one whole object spans `buf[..len]`, `Ok(None)` when more bytes are
    /// needed, or an error when the object is invalid or would exceed `limit` bytes.
    pub fn scan(&mut self, buf: &[u8], limit: usize) -> Result<Option<usize>, ScanError> {
        if buf.len() < self.need {
            return Ok(None);
        }
        loop {
            let pos = self.pos;
            let Some(&b) = buf.get(pos) else {
                self.need = pos + 1;
                return Ok(None);
            };
            let head = match head_of(b, &buf[pos..]) {
                Ok(Some(h)) => h,
                Ok(None) => {
                    self.need = pos + header_len(b);
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            match head {
                Head::Leaf(hdr, body) => {
                    let end = pos as u64 + hdr as u64 + body;
                    if end > limit as u64 {
                        return Err(ScanError::TooLarge { needed: end, limit });
                    }
                    if end > buf.len() as u64 {
                        self.need = end as usize;
                        return Ok(None);
                    }
                    self.pos = end as usize;
                    if let Some(done) = self.complete_one() {
                        return Ok(Some(done));
                    }
                }
                Head::Container(hdr, children) => {
                    // Every child needs at least one byte.
                    let min_end = pos as u64 + hdr as u64 + children;
                    if min_end > limit as u64 {
                        return Err(ScanError::TooLarge {
                            needed: min_end,
                            limit,
                        });
                    }
                    self.pos = pos + hdr;
                    if children == 0 {
                        if let Some(done) = self.complete_one() {
                            return Ok(Some(done));
                        }
                    } else {
                        if self.stack.len() >= MAX_DEPTH {
                            return Err(ScanError::TooDeep(MAX_DEPTH));
                        }
                        self.stack.push(children);
                    }
                }
            }
        }
    }

    /// One element finished at `self.pos`; closes every container it completes. Returns the end
    /// of the top-level object when that was the last element.
    fn complete_one(&mut self) -> Option<usize> {
        loop {
            match self.stack.last_mut() {
                None => {
                    let end = self.pos;
                    self.reset();
                    return Some(end);
                }
                Some(top) => {
                    *top -= 1;
                    if *top > 0 {
                        return None;
                    }
                    self.stack.pop();
                }
            }
        }
    }
}

/// Length of the fixed header that starts with byte `b` (type byte plus length bytes).
#[inline]
fn header_len(b: u8) -> usize {
    match b {
        0xc4 | 0xd9 => 2,
        0xc5 | 0xda | 0xdc | 0xde => 3,
        0xc6 | 0xdb | 0xdd | 0xdf => 5,
        0xc7 => 3,
        0xc8 => 4,
        0xc9 => 6,
        _ => 1,
    }
}

#[inline]
fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64)
}

/// Decodes the header at the start of `s` (whose first byte is `b`). `Ok(None)` if the length
/// bytes are not all there yet.
#[inline(always)]
fn head_of(b: u8, s: &[u8]) -> Result<Option<Head>, ScanError> {
    let hl = header_len(b);
    if s.len() < hl {
        return Ok(None);
    }
    let h = match b {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Head::Leaf(1, 0),
        0x80..=0x8f => Head::Container(1, 2 * (b & 0x0f) as u64),
        0x90..=0x9f => Head::Container(1, (b & 0x0f) as u64),
        0xa0..=0xbf => Head::Leaf(1, (b & 0x1f) as u64),
        0xc1 => return Err(ScanError::Invalid("reserved byte 0xc1")),
        0xc4..=0xc6 | 0xd9..=0xdb => Head::Leaf(hl, be(&s[1..hl])),
        0xc7..=0xc9 => Head::Leaf(hl, be(&s[1..hl - 1])),
        0xca => Head::Leaf(1, 4),
        0xcb => Head::Leaf(1, 8),
        0xcc | 0xd0 => Head::Leaf(1, 1),
        0xcd | 0xd1 => Head::Leaf(1, 2),
        0xce | 0xd2 => Head::Leaf(1, 4),
        0xcf | 0xd3 => Head::Leaf(1, 8),
        0xd4 => Head::Leaf(1, 2),
        0xd5 => Head::Leaf(1, 3),
        0xd6 => Head::Leaf(1, 5),
        0xd7 => Head::Leaf(1, 9),
        0xd8 => Head::Leaf(1, 17),
        0xdc | 0xdd => Head::Container(hl, be(&s[1..hl])),
        0xde | 0xdf => Head::Container(hl, 2 * be(&s[1..hl])),
    };
    Ok(Some(h))
}

/// End offset of the complete object starting at `buf[pos]`.
///
/// Same answers as [`Scanner::scan`] over `buf[pos..]` with no size limit (including
/// [`ScanError::TooDeep`] past [`MAX_DEPTH`]), but without the resumable state: no allocation,
/// one pass.
#[inline]
pub fn skip_complete(buf: &[u8], pos: usize) -> Result<usize, ScanError> {
    skip_nested(buf, pos, 0)
}

/// [`skip_complete`] for an object that sits `depth` containers deep in the object being
/// validated, so the [`MAX_DEPTH`] limit counts from the outer object (the codec skips an
/// entry's time and record separately with `depth` 1, and gets the verdict a scan of the whole
/// entry would give).
pub fn skip_nested(buf: &[u8], pos: usize, depth: usize) -> Result<usize, ScanError> {
    const TRUNCATED: ScanError = ScanError::Invalid("truncated object");
    let s = buf.get(pos..).ok_or(TRUNCATED)?;
    let b = *s.first().ok_or(TRUNCATED)?;
    match head_of(b, s)?.ok_or(TRUNCATED)? {
        Head::Leaf(hdr, body) => {
            let end = hdr as u64 + body;
            if end > s.len() as u64 {
                return Err(TRUNCATED);
            }
            Ok(pos + end as usize)
        }
        Head::Container(hdr, children) => {
            let mut p = pos + hdr;
            if children == 0 {
                return Ok(p);
            }
            if depth >= MAX_DEPTH {
                return Err(ScanError::TooDeep(MAX_DEPTH));
            }
            // Every child takes at least one byte, so this loop ends within `buf.len()` steps
            // whatever the declared count.
            for _ in 0..children {
                p = match buf.get(p) {
                    // Fast path for the common leaves: fixstr, positive fixint.
                    Some(&c @ 0xa0..=0xbf) => {
                        let e = p + 1 + (c & 0x1f) as usize;
                        if e > buf.len() {
                            return Err(TRUNCATED);
                        }
                        e
                    }
                    Some(0x00..=0x7f) => p + 1,
                    _ => skip_nested(buf, p, depth + 1)?,
                };
            }
            Ok(p)
        }
    }
}

// ---- readers over complete buffers --------------------------------------------------------

/// Reads an array header; returns (count, offset after the header).
pub fn read_array_len(buf: &[u8]) -> Option<(u32, usize)> {
    match *buf.first()? {
        b @ 0x90..=0x9f => Some(((b & 0x0f) as u32, 1)),
        0xdc => Some((be(buf.get(1..3)?) as u32, 3)),
        0xdd => Some((be(buf.get(1..5)?) as u32, 5)),
        _ => None,
    }
}

/// Reads a map header; returns (pairs, offset after the header).
pub fn read_map_len(buf: &[u8]) -> Option<(u32, usize)> {
    match *buf.first()? {
        b @ 0x80..=0x8f => Some(((b & 0x0f) as u32, 1)),
        0xde => Some((be(buf.get(1..3)?) as u32, 3)),
        0xdf => Some((be(buf.get(1..5)?) as u32, 5)),
        _ => None,
    }
}

/// Reads a str or bin; returns (start, end) of the payload within `buf`.
pub fn read_str_or_bin(buf: &[u8]) -> Option<(usize, usize)> {
    let b = *buf.first()?;
    let (hl, len): (usize, usize) = match b {
        0xa0..=0xbf => (1, (b & 0x1f) as usize),
        0xc4 | 0xd9 => (2, be(buf.get(1..2)?) as usize),
        0xc5 | 0xda => (3, be(buf.get(1..3)?) as usize),
        0xc6 | 0xdb => (5, be(buf.get(1..5)?) as usize),
        _ => return None,
    };
    let end = hl.checked_add(len)?;
    if end > buf.len() {
        return None;
    }
    Some((hl, end))
}

/// Finds a top-level key in a map and returns its value when it is a str or bin.
pub fn map_get_str<'a>(map: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let (n, mut off) = read_map_len(map)?;
    for _ in 0..n {
        let kstart = off;
        let kend = skip_complete(map, off).ok()?;
        let vend = skip_complete(map, kend).ok()?;
        if let Some((s, e)) = read_str_or_bin(&map[kstart..kend]) {
            if &map[kstart + s..kstart + e] == key {
                let (vs, ve) = read_str_or_bin(&map[kend..vend])?;
                return Some(&map[kend + vs..kend + ve]);
            }
        }
        off = vend;
    }
    None
}

// ---- writers ------------------------------------------------------------------------------

pub fn write_array_len(out: &mut BytesMut, n: u32) {
    if n < 16 {
        out.put_u8(0x90 | n as u8);
    } else if n <= u16::MAX as u32 {
        out.put_u8(0xdc);
        out.put_u16(n as u16);
    } else {
        out.put_u8(0xdd);
        out.put_u32(n);
    }
}

pub fn write_map_len(out: &mut BytesMut, n: u32) {
    if n < 16 {
        out.put_u8(0x80 | n as u8);
    } else if n <= u16::MAX as u32 {
        out.put_u8(0xde);
        out.put_u16(n as u16);
    } else {
        out.put_u8(0xdf);
        out.put_u32(n);
    }
}

/// Writes `s` as a msgpack str (bytes as they are, UTF-8 or not).
pub fn write_str(out: &mut BytesMut, s: &[u8]) {
    let n = s.len();
    if n < 32 {
        out.put_u8(0xa0 | n as u8);
    } else if n <= u8::MAX as usize {
        out.put_u8(0xd9);
        out.put_u8(n as u8);
    } else if n <= u16::MAX as usize {
        out.put_u8(0xda);
        out.put_u16(n as u16);
    } else {
        out.put_u8(0xdb);
        out.put_u32(n as u32);
    }
    out.put_slice(s);
}

/// Writes the header of a str of `n` bytes.
pub fn write_str_header(out: &mut BytesMut, n: usize) {
    if n < 32 {
        out.put_u8(0xa0 | n as u8);
    } else if n <= u8::MAX as usize {
        out.put_u8(0xd9);
        out.put_u8(n as u8);
    } else if n <= u16::MAX as usize {
        out.put_u8(0xda);
        out.put_u16(n as u16);
    } else {
        out.put_u8(0xdb);
        out.put_u32(n as u32);
    }
}

/// Writes `s` as a msgpack bin.
pub fn write_bin(out: &mut BytesMut, s: &[u8]) {
    write_bin_header(out, s.len());
    out.put_slice(s);
}

/// Writes the header of a bin of `n` bytes.
pub fn write_bin_header(out: &mut BytesMut, n: usize) {
    if n <= u8::MAX as usize {
        out.put_u8(0xc4);
        out.put_u8(n as u8);
    } else if n <= u16::MAX as usize {
        out.put_u8(0xc5);
        out.put_u16(n as u16);
    } else {
        out.put_u8(0xc6);
        out.put_u32(n as u32);
    }
}

pub fn write_uint(out: &mut BytesMut, v: u64) {
    if v < 128 {
        out.put_u8(v as u8);
    } else if v <= u8::MAX as u64 {
        out.put_u8(0xcc);
        out.put_u8(v as u8);
    } else if v <= u16::MAX as u64 {
        out.put_u8(0xcd);
        out.put_u16(v as u16);
    } else if v <= u32::MAX as u64 {
        out.put_u8(0xce);
        out.put_u32(v as u32);
    } else {
        out.put_u8(0xcf);
        out.put_u64(v);
    }
}

pub fn write_bool(out: &mut BytesMut, v: bool) {
    out.put_u8(if v { 0xc3 } else { 0xc2 });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(v: &rmpv::Value) -> Vec<u8> {
        let mut b = Vec::new();
        rmpv::encode::write_value(&mut b, v).unwrap();
        b
    }

    #[test]
    fn scanner_finds_end_of_nested_object() {
        let v = rmpv::Value::Array(vec![
            "tag".into(),
            rmpv::Value::Map(vec![(
                "a".into(),
                rmpv::Value::Array(vec![1.into(), 2.into()]),
            )]),
            rmpv::Value::Array(vec![]),
        ]);
        let mut b = enc(&v);
        let n = b.len();
        b.extend_from_slice(&[0xc0, 0xc0]);
        assert_eq!(Scanner::new().scan(&b, usize::MAX), Ok(Some(n)));
    }

    #[test]
    fn scanner_resumes_byte_by_byte() {
        let v = rmpv::Value::Array(vec![
            "x".repeat(300).into(),
            rmpv::Value::Binary(vec![7; 70_000]),
            rmpv::Value::Ext(0, vec![1; 8]),
        ]);
        let b = enc(&v);
        let mut sc = Scanner::new();
        for i in 1..b.len() {
            assert_eq!(sc.scan(&b[..i], usize::MAX), Ok(None), "at {i}");
        }
        assert_eq!(sc.scan(&b, usize::MAX), Ok(Some(b.len())));
    }

    #[test]
    fn scanner_limit_rejects_declared_4gib_bin_without_waiting() {
        let m09 = [0x93, 0xa1, 0x74, 0xc6, 0xff, 0xff, 0xff, 0xff];
        let r = Scanner::new().scan(&m09, 1 << 20);
        assert!(matches!(r, Err(ScanError::TooLarge { .. })), "{r:?}");
    }

    #[test]
    fn scanner_limit_rejects_declared_huge_array() {
        let m10 = [0x92, 0xa1, 0x74, 0xdd, 0xff, 0xff, 0xff, 0xff];
        let r = Scanner::new().scan(&m10, 1 << 20);
        assert!(matches!(r, Err(ScanError::TooLarge { .. })), "{r:?}");
    }

    #[test]
    fn scanner_rejects_reserved_byte() {
        assert!(matches!(
            Scanner::new().scan(&[0xc1], 10),
            Err(ScanError::Invalid(_))
        ));
    }

    #[test]
    fn scanner_depth_is_capped() {
        let b = vec![0x91; 1000];
        assert_eq!(
            Scanner::new().scan(&b, usize::MAX),
            Err(ScanError::TooDeep(MAX_DEPTH))
        );
    }

    fn arb_value() -> impl Strategy<Value = rmpv::Value> {
        let leaf = prop_oneof![
            Just(rmpv::Value::Nil),
            any::<bool>().prop_map(rmpv::Value::from),
            any::<i64>().prop_map(rmpv::Value::from),
            any::<u64>().prop_map(rmpv::Value::from),
            any::<f64>().prop_map(rmpv::Value::from),
            ".{0,40}".prop_map(rmpv::Value::from),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(rmpv::Value::Binary),
            (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..20))
                .prop_map(|(t, d)| rmpv::Value::Ext(t, d)),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..20).prop_map(rmpv::Value::Array),
                proptest::collection::vec((inner.clone(), inner), 0..10).prop_map(rmpv::Value::Map),
            ]
        })
    }

    #[test]
    fn skip_complete_depth_limit_matches_the_scanner() {
        for n in [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1] {
            let mut b = vec![0x91; n];
            b.push(0xc0);
            let scanned = Scanner::new().scan(&b, usize::MAX).map(|o| o.unwrap());
            assert_eq!(skip_complete(&b, 0), scanned, "{n} levels");
            // Skipping the inner object at depth 1 gives the verdict for the whole.
            assert_eq!(skip_nested(&b, 1, 1), scanned, "{n} levels, nested");
        }
    }

    proptest! {
        #[test]
        fn skip_complete_agrees_with_scanner_on_any_bytes(
            b in proptest::collection::vec(any::<u8>(), 0..64),
            pos in 0usize..70,
        ) {
            let want = match Scanner::new().scan(&b[pos.min(b.len())..], usize::MAX) {
                Ok(Some(n)) => Ok(pos + n),
                Ok(None) => Err(ScanError::Invalid("truncated object")),
                Err(e) => Err(e),
            };
            prop_assert_eq!(skip_complete(&b, pos), want);
        }

        #[test]
        fn skip_complete_agrees_with_scanner_on_values(v in arb_value(), junk in any::<u8>()) {
            let mut b = enc(&v);
            let n = b.len();
            b.push(junk);
            prop_assert_eq!(skip_complete(&b, 0), Ok(n));
            prop_assert_eq!(skip_complete(&b[..n - 1], 0), Err(ScanError::Invalid("truncated object")));
        }

        #[test]
        fn scanner_agrees_with_rmpv_at_any_split(v in arb_value(), cut in 0usize..10_000) {
            let b = enc(&v);
            let cut = cut % (b.len() + 1);
            let mut sc = Scanner::new();
            let first = sc.scan(&b[..cut], usize::MAX).unwrap();
            if cut < b.len() {
                prop_assert_eq!(first, None);
                prop_assert_eq!(sc.scan(&b, usize::MAX).unwrap(), Some(b.len()));
            } else {
                prop_assert_eq!(first, Some(b.len()));
            }
        }
    }
}
