//! msgpack record bytes -> JSON text, directly (no intermediate value tree): the record writer
//! behind S3's JSON lines, CloudWatch messages, `stdout`, `file` and the filters. (A decoded
//! [`Value`](crate::Value) is written by `Value::write_json`, for placeholders and grep: the same
//! strings and numbers, but non-string keys as Fluentd's `to_s` shows them.)
//!
//! Strings that are not valid UTF-8 are written with U+FFFD replacements (and the caller is
//! told, so it can count them); `bin` is written as a string the same way; EventTime ext
//! values become float seconds (exact: up to nine decimals); other ext values become `null`.
//! Map keys that are not strings are written as their JSON text in quotes (cut to
//! [`MAX_KEY_TEXT`]). Escapes are serde_json's (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other
//! control bytes as `\u00XX`). Containers nested past [`MAX_DEPTH`] are written as `null`
//! (and a value whose rest nests too deep for the msgpack scanner is refused: `None`).
//!
//! Two ways in:
//! * [`Out`], a write cursor, with [`write_value_to`], [`write_key`], [`write_str`]: the
//!   S3 encoder's hot loop writes each line into a reused scratch through it.
//! * [`write_record`], [`write_value`], [`write_json_str`]: append to a `Vec<u8>`; the text
//!   is written into a per-thread scratch first and appended whole, so the vector is never
//!   grown and cut back per call.
//!
//! Strings are escaped eight bytes at a time (a word with nothing to escape is stored whole)
//! and validated as UTF-8 only when they hold a byte >= 0x80. `out_s3::format`'s tests keep
//! the simple writer this one replaced as a byte-for-byte reference.

use crate::msgpack::{read_array_len, read_map_len, read_str_or_bin, skip_complete};
use std::cell::RefCell;

/// A map key that is not a string is written as its JSON text in quotes, cut to this many
/// bytes: a key holding a map whose keys are maps... is escaped again at every level, which
/// doubles the backslashes per level (a few hundred input bytes could ask for gigabytes).
pub const MAX_KEY_TEXT: usize = 1024;

/// Containers nested deeper than this are written as `null` (stack safety: the writer recurses
/// once per level, three frames for a map key that is a map). The msgpack scanner's limit:
/// decoded input never nests deeper, and `filter_parser` refuses JSON that would (its depth
/// limit is derived from this one), so the `null` is a safety net, not a path records take.
pub const MAX_DEPTH: usize = crate::msgpack::MAX_DEPTH;

/// How much of a non-string key's JSON text to keep: at most [`MAX_KEY_TEXT`] bytes, cut at a
/// character boundary (the text is valid UTF-8: the writers replace anything else).
pub fn key_text_len(text: &[u8]) -> usize {
    if text.len() <= MAX_KEY_TEXT {
        return text.len();
    }
    let mut n = MAX_KEY_TEXT;
    while n > 0 && text[n] & 0xc0 == 0x80 {
        n -= 1;
    }
    n
}

/// Counts what had to be changed to make valid JSON.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JsonStats {
    /// Invalid UTF-8 sequences (each replaced with U+FFFD).
    pub invalid_utf8: usize,
}

/// The per-thread scratch of the `Vec` API is not kept past a call that grew its capacity
/// beyond this.
const SCRATCH_RETAIN_MAX: usize = 1 << 20;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a cursor over this thread's scratch and appends what it wrote to `out` when it
/// returns `Some`; nothing is appended on `None` (malformed input).
fn via_scratch(
    out: &mut Vec<u8>,
    stats: &mut JsonStats,
    f: impl FnOnce(&mut Out, &mut usize) -> Option<usize>,
) -> Option<usize> {
    // Taken out for the call (a nested call would find it empty and use a fresh one).
    let mut buf = SCRATCH.try_with(RefCell::take).unwrap_or_default();
    let mut invalid = 0;
    let mut w = Out::scratch(&mut buf);
    let r = f(&mut w, &mut invalid);
    if r.is_some() {
        out.extend_from_slice(w.text());
        stats.invalid_utf8 += invalid;
    }
    if buf.capacity() <= SCRATCH_RETAIN_MAX {
        let _ = SCRATCH.try_with(|s| s.replace(buf));
    }
    r
}

/// A write cursor over a fully initialised buffer: `buf[..j]` is the text so far, the bytes
/// after it are scratch. A writer asks for room for its worst case ([`Out::room`]), then
/// stores by index into a plain slice: no length bookkeeping per byte, and fixed-size stores
/// may run past what they keep. (Safe code cannot write a vector's spare capacity: the buffer
/// is kept initialised instead and grows with `resize` only when a writer needs more room.)
pub struct Out<'a> {
    buf: &'a mut Vec<u8>,
    j: usize,
}

impl<'a> Out<'a> {
    /// Writes after the end of `buf`; [`Out::done`] cuts it back to the text.
    pub fn append(buf: &'a mut Vec<u8>) -> Out<'a> {
        let j = buf.len();
        Out { buf, j }
    }

    /// Writes from the start of `buf`, a reused scratch whose contents do not matter (never
    /// truncated: once grown, it is not filled again).
    pub fn scratch(buf: &'a mut Vec<u8>) -> Out<'a> {
        Out { buf, j: 0 }
    }

    /// Ends the writing: the buffer is cut back to the text (append mode).
    pub fn done(self) {
        self.buf.truncate(self.j);
    }

    /// The text written so far.
    pub fn text(&self) -> &[u8] {
        &self.buf[..self.j]
    }

    /// The length of the text so far.
    pub fn len(&self) -> usize {
        self.j
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.j == 0
    }

    /// The buffer from the cursor on, at least `n` bytes long.
    #[inline(always)]
    pub fn room(&mut self, n: usize) -> &mut [u8] {
        if self.buf.len() < self.j + n {
            self.grow(n);
        }
        &mut self.buf[self.j..]
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, n: usize) {
        self.buf.resize(self.j + n + 1024, 0);
    }

    #[inline(always)]
    pub fn push(&mut self, c: u8) {
        self.room(1)[0] = c;
        self.j += 1;
    }

    #[inline(always)]
    pub fn extend(&mut self, s: &[u8]) {
        let n = s.len();
        self.room(n)[..n].copy_from_slice(s);
        self.j += n;
    }
}

/// Bytes that need escaping inside a JSON string (ASCII only; 0 = copy as is).
static ESC: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[0x08] = b'b';
    t[0x0c] = b'f';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// "00" to "99".
static DIGITS2: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;
const LOWS: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// Longest part of a string escaped in one go: bounds the room asked for (6 bytes per byte).
const PIECE: usize = 4096;
/// Room asked for beyond 6 bytes per input byte: [`escape_into`]'s fixed-size stores (16),
/// the quotes and separators.
const SLACK: usize = 32;

/// The bytes of `w` that need escaping (`"`, `\\`, below 0x20), as their high bits. Exact per
/// byte (no carries between bytes); bytes >= 0x80 are never flagged.
#[inline(always)]
fn special_bytes(w: u64) -> u64 {
    let is_zero = |y: u64| !(((y & LOWS).wrapping_add(LOWS)) | y) & HIGHS;
    let below_0x20 = !(((w & LOWS).wrapping_add(ONES * 0x60)) | w) & HIGHS;
    is_zero(w ^ (ONES * b'"' as u64)) | is_zero(w ^ (ONES * b'\\' as u64)) | below_0x20
}

/// Writes the first `n` bytes of `w` (little-endian; `sp`: [`special_bytes`] of those) with
/// escapes at `d[k..]`, which has room for 6 bytes per byte and 16; returns the new cursor.
#[inline(always)]
fn escape_word(d: &mut [u8], k: usize, w: u64, sp: u64, n: usize) -> usize {
    // Flagged bytes below 0x20: neither bit 5 (set in `"`) nor bit 6 (set in `\`).
    let ctrl = sp & !((w << 2) | (w << 1));
    if ctrl == 0 {
        // Only `"` and `\` (JSON in a string: quotes at random places, where branches would
        // mispredict): two stores per byte, `\` then the byte, the cursor moves by one or two.
        // The bytes past `n` are zeros and not flagged: one byte each, taken off at the end.
        let o = &mut d[k..k + 16];
        let mut m = 0;
        for i in 0..8 {
            let b = (w >> (8 * i)) as u8;
            let s = ((sp >> (8 * i + 7)) & 1) as usize;
            o[m & 15] = b'\\';
            o[(m + s) & 15] = b;
            m += 1 + s;
        }
        return k + m - (8 - n);
    }
    let mut m = k;
    for i in 0..n {
        let b = (w >> (8 * i)) as u8;
        if (sp >> (8 * i + 7)) & 1 == 0 {
            d[m] = b;
            m += 1;
            continue;
        }
        let e = ESC[(b & 0x7f) as usize];
        if e == b'u' {
            d[m..m + 6].copy_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]);
            m += 6;
        } else {
            d[m] = b'\\';
            d[m + 1] = e;
            m += 2;
        }
    }
    m
}

/// Writes `buf[a..e]` (any bytes) with JSON escapes at the start of `d`, which must hold
/// `6 * (e - a) + 16` bytes, eight bytes at a time: a word with nothing to escape is copied
/// whole (a fixed-size store), one with something goes through [`escape_word`]. Returns the
/// bytes written and whether there was a byte >= 0x80 (the caller validates UTF-8 only then:
/// most log text is ASCII). The bytes of `buf` before `e` let a short tail be read as one word.
#[inline(always)]
fn escape_into(d: &mut [u8], buf: &[u8], a: usize, e: usize) -> (usize, bool) {
    let s = &buf[a..e];
    let mut k = 0;
    let mut high = 0u64;
    let mut chunks = s.chunks_exact(8);
    for word in &mut chunks {
        let word = <[u8; 8]>::try_from(word).unwrap_or_default();
        let w = u64::from_le_bytes(word);
        high |= w;
        let sp = special_bytes(w);
        if sp == 0 {
            d[k..k + 8].copy_from_slice(&word);
            k += 8;
        } else {
            k = escape_word(d, k, w, sp, 8);
        }
    }
    let rest = chunks.remainder();
    let n = rest.len();
    if n > 0 {
        // The tail as a zero-padded word: the eight bytes of `buf` ending at `e` shifted
        // down when there are eight. The padding zeros would read as control bytes: they are
        // masked out.
        let w = match e.checked_sub(8).and_then(|i| buf.get(i..e)) {
            Some(last) => {
                u64::from_le_bytes(<[u8; 8]>::try_from(last).unwrap_or_default()) >> (8 * (8 - n))
            }
            None => rest.iter().rev().fold(0u64, |a, &b| (a << 8) | b as u64),
        };
        high |= w;
        let sp = special_bytes(w) & (u64::MAX >> (8 * (8 - n)));
        if sp == 0 {
            d[k..k + 8].copy_from_slice(&w.to_le_bytes());
            k += n;
        } else {
            k = escape_word(d, k, w, sp, n);
        }
    }
    (k, high & HIGHS != 0)
}

/// Appends `s` with escapes (no quotes), a [`PIECE`] at a time; returns whether it had a byte
/// >= 0x80.
fn escape_pieces(w: &mut Out, s: &[u8]) -> bool {
    let mut high = false;
    for piece in s.chunks(PIECE) {
        let d = w.room(6 * piece.len() + SLACK);
        let (n, h) = escape_into(d, piece, 0, piece.len());
        w.j += n;
        high |= h;
    }
    high
}

/// Writes `buf[a..e]` as a JSON string, after a `,` when `comma` and followed by a `:` when
/// `colon`; invalid UTF-8 becomes U+FFFD (counted).
#[inline(always)]
pub fn write_str(
    w: &mut Out,
    buf: &[u8],
    a: usize,
    e: usize,
    invalid: &mut usize,
    comma: bool,
    colon: bool,
) {
    let start = w.j;
    let high = if e - a <= PIECE {
        // One room for it all; the separators are stored whether they are kept or not.
        let pre = comma as usize;
        let d = w.room(6 * (e - a) + SLACK);
        d[0] = b',';
        d[pre] = b'"';
        let (n, high) = escape_into(&mut d[pre + 1..], buf, a, e);
        d[pre + 1 + n] = b'"';
        d[pre + 2 + n] = b':';
        w.j += pre + 2 + n + colon as usize;
        high
    } else {
        if comma {
            w.push(b',');
        }
        w.push(b'"');
        let high = escape_pieces(w, &buf[a..e]);
        w.push(b'"');
        if colon {
            w.push(b':');
        }
        high
    };
    if high && std::str::from_utf8(&buf[a..e]).is_err() {
        // Not UTF-8: write it again with replacements (rare).
        w.j = start;
        if comma {
            w.push(b',');
        }
        w.push(b'"');
        let mut rest = &buf[a..e];
        loop {
            match std::str::from_utf8(rest) {
                Ok(_) => {
                    escape_pieces(w, rest);
                    break;
                }
                Err(err) => {
                    let (good, bad) = rest.split_at(err.valid_up_to());
                    escape_pieces(w, good);
                    w.extend("\u{FFFD}".as_bytes());
                    *invalid += 1;
                    rest = &bad[err.error_len().unwrap_or(bad.len())..];
                }
            }
        }
        w.push(b'"');
        if colon {
            w.push(b':');
        }
    }
}

/// Decimal digits of `v` (1-20).
#[inline(always)]
fn decimal_len(v: u64) -> usize {
    v.checked_ilog10().unwrap_or(0) as usize + 1
}

/// Writes the digits of `v` at the start of `d` (20 bytes at least), two at a time, from the
/// last; returns how many.
#[inline(always)]
fn put_u64(d: &mut [u8], mut v: u64) -> usize {
    let len = decimal_len(v);
    let d = &mut d[..len];
    let mut i = len;
    while v >= 100 {
        let r = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        d[i] = DIGITS2[r];
        d[i + 1] = DIGITS2[r + 1];
    }
    if v >= 10 {
        let r = v as usize * 2;
        d[0] = DIGITS2[r];
        d[1] = DIGITS2[r + 1];
    } else {
        d[0] = b'0' + v as u8;
    }
    len
}

/// Writes `v` in decimal.
pub fn write_u64(w: &mut Out, v: u64) {
    let n = put_u64(w.room(20), v);
    w.j += n;
}

fn write_i64(w: &mut Out, v: i64) {
    let d = w.room(21);
    let neg = (v < 0) as usize;
    d[0] = b'-';
    let n = put_u64(&mut d[neg..], v.unsigned_abs());
    w.j += neg + n;
}

/// Room for any finite f64 in `Display` form (the longest, -5e-324 written out in full, is
/// 327 characters).
const F64_ROOM: usize = 400;

fn write_f64(w: &mut Out, f: f64) {
    use std::io::Write;
    if f.is_finite() {
        let mut d = &mut w.room(F64_ROOM)[..F64_ROOM];
        let _ = write!(d, "{f}");
        let n = F64_ROOM - d.len();
        w.j += n;
        if f.fract() == 0.0 && f.abs() < 1e16 {
            w.extend(b".0");
        }
    } else {
        w.extend(b"null");
    }
}

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |a, &x| (a << 8) | x as u64)
}

/// [`write_value_to`] appending straight to a vector, `depth` deep (a non-string key's text,
/// before it is quoted; values inside a line that is not JSON, e.g. S3's LTSV). Unlike
/// [`write_value`], malformed input leaves its partial text behind.
pub fn write_value_vec(
    out: &mut Vec<u8>,
    buf: &[u8],
    pos: usize,
    invalid: &mut usize,
    depth: usize,
) -> Option<usize> {
    let mut w = Out::append(out);
    let r = write_value_to(&mut w, buf, pos, invalid, depth);
    w.done();
    r
}

/// Transcodes the msgpack value at `buf[pos..]` (nested `depth` deep) into JSON at the
/// cursor; returns the end offset, or `None` for malformed msgpack (the cursor then holds a
/// partial text). Nesting past [`MAX_DEPTH`] is written as `null`.
pub fn write_value_to(
    w: &mut Out,
    buf: &[u8],
    pos: usize,
    invalid: &mut usize,
    depth: usize,
) -> Option<usize> {
    let b = *buf.get(pos)?;
    let s = &buf[pos..];
    let need = |n: usize| if s.len() >= n { Some(pos + n) } else { None };
    match b {
        0xa0..=0xbf => {
            // fixstr: the common case (keys and short values), decoded inline.
            let end = need(1 + (b & 0x1f) as usize)?;
            write_str(w, buf, pos + 1, end, invalid, false, false);
            Some(end)
        }
        0x00..=0x7f => {
            write_u64(w, b as u64);
            Some(pos + 1)
        }
        0xe0..=0xff => {
            write_i64(w, b as i8 as i64);
            Some(pos + 1)
        }
        0xc0 => {
            w.extend(b"null");
            Some(pos + 1)
        }
        0xc2 => {
            w.extend(b"false");
            Some(pos + 1)
        }
        0xc3 => {
            w.extend(b"true");
            Some(pos + 1)
        }
        0xcc..=0xcf => {
            let n = 1usize << (b - 0xcc);
            let end = need(1 + n)?;
            write_u64(w, be(&s[1..1 + n]));
            Some(end)
        }
        0xd0..=0xd3 => {
            let n = 1usize << (b - 0xd0);
            let end = need(1 + n)?;
            let v = be(&s[1..1 + n]);
            let shift = 64 - 8 * n as u32;
            write_i64(w, ((v << shift) as i64) >> shift);
            Some(end)
        }
        0xca => {
            let end = need(5)?;
            write_f64(w, f32::from_be_bytes([s[1], s[2], s[3], s[4]]) as f64);
            Some(end)
        }
        0xcb => {
            let end = need(9)?;
            write_f64(w, f64::from_be_bytes(s[1..9].try_into().ok()?));
            Some(end)
        }
        0xd9..=0xdb | 0xc4..=0xc6 => {
            let (a, e) = read_str_or_bin(s)?;
            write_str(w, buf, pos + a, pos + e, invalid, false, false);
            Some(pos + e)
        }
        0x90..=0x9f | 0xdc | 0xdd => {
            if depth >= MAX_DEPTH {
                w.extend(b"null");
                return skip_complete(buf, pos).ok();
            }
            let (n, hl) = read_array_len(s)?;
            w.push(b'[');
            let mut p = pos + hl;
            for i in 0..n {
                if i > 0 {
                    w.push(b',');
                }
                p = write_value_to(w, buf, p, invalid, depth + 1)?;
            }
            w.push(b']');
            Some(p)
        }
        0x80..=0x8f | 0xde | 0xdf => {
            if depth >= MAX_DEPTH {
                w.extend(b"null");
                return skip_complete(buf, pos).ok();
            }
            let (n, hl) = read_map_len(s)?;
            w.push(b'{');
            let mut p = pos + hl;
            for i in 0..n {
                p = write_key(w, buf, p, invalid, depth, i > 0)?;
                // A fixstr value (most of them) without the dispatch of a call.
                let vb = *buf.get(p)?;
                if let 0xa0..=0xbf = vb {
                    let end = p + 1 + (vb & 0x1f) as usize;
                    if end > buf.len() {
                        return None;
                    }
                    write_str(w, buf, p + 1, end, invalid, false, false);
                    p = end;
                } else {
                    p = write_value_to(w, buf, p, invalid, depth + 1)?;
                }
            }
            w.push(b'}');
            Some(p)
        }
        // fixext 1/2/4/8/16, ext 8/16/32: EventTime (type 0, 8 bytes) as float seconds.
        0xd4..=0xd8 | 0xc7..=0xc9 => {
            let end = skip_complete(buf, pos).ok()?;
            let (ty, data) = match b {
                0xd4..=0xd8 => (s[1], &s[2..end - pos]),
                0xc7 => (s[2], &s[3..end - pos]),
                0xc8 => (s[3], &s[4..end - pos]),
                _ => (s[5], &s[6..end - pos]),
            };
            if ty == 0 && data.len() == 8 {
                let secs = be(&data[..4]);
                let nanos = be(&data[4..]) as u32;
                write_time_float(w, secs, nanos);
            } else {
                w.extend(b"null");
            }
            Some(end)
        }
        _ => None,
    }
}

/// A map key with its `:` (and a `,` before it when `comma`): strings as they are, anything
/// else as its JSON text in quotes.
#[inline]
pub fn write_key(
    w: &mut Out,
    buf: &[u8],
    p: usize,
    invalid: &mut usize,
    depth: usize,
    comma: bool,
) -> Option<usize> {
    let kb = *buf.get(p)?;
    if let 0xa0..=0xbf = kb {
        // A fixstr: nearly every key. Straight to the string writer, no dispatch.
        let end = p + 1 + (kb & 0x1f) as usize;
        if end > buf.len() {
            return None;
        }
        write_str(w, buf, p + 1, end, invalid, comma, true);
        return Some(end);
    }
    if comma {
        w.push(b',');
    }
    let end = if matches!(kb, 0xd9..=0xdb | 0xc4..=0xc6) {
        write_value_to(w, buf, p, invalid, depth + 1)?
    } else {
        let mut tmp = Vec::new();
        let end = write_value_vec(&mut tmp, buf, p, invalid, depth + 1)?;
        let n = key_text_len(&tmp);
        write_str(w, &tmp, 0, n, invalid, false, false);
        end
    };
    w.push(b':');
    Some(end)
}

/// Writes an EventTime as seconds with its exact nanoseconds, trailing zeros dropped
/// (`1.5`, `1700000000.123456789`; `5.0` without nanoseconds).
pub fn write_time_float(w: &mut Out, secs: u64, nanos: u32) {
    write_u64(w, secs);
    if nanos == 0 {
        w.extend(b".0");
        return;
    }
    let d = &mut w.room(10)[..10];
    d[0] = b'.';
    let mut n = nanos;
    for i in (1..10).rev() {
        d[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let len = 9 - d[1..].iter().rev().take_while(|c| **c == b'0').count();
    w.j += 1 + len;
}

/// Appends `s` as a JSON string (with quotes).
pub fn write_json_str(out: &mut Vec<u8>, s: &[u8], stats: &mut JsonStats) {
    via_scratch(out, stats, |w, invalid| {
        write_str(w, s, 0, s.len(), invalid, false, false);
        Some(0)
    });
}

/// Appends the msgpack value at `buf[pos..]` as JSON; returns its end offset, or `None` (and
/// appends nothing) when it is not well-formed msgpack.
pub fn write_value(
    out: &mut Vec<u8>,
    buf: &[u8],
    pos: usize,
    stats: &mut JsonStats,
) -> Option<usize> {
    via_scratch(out, stats, |w, invalid| {
        write_value_to(w, buf, pos, invalid, 0)
    })
}

/// Appends the map key at `buf[pos..]` with its `:` (strings as they are, anything else as
/// its JSON text, cut to [`MAX_KEY_TEXT`] and quoted, as [`write_key`] writes nested keys);
/// returns its end offset, or `None` (and appends nothing) when it is not well-formed msgpack.
pub fn write_json_key(
    out: &mut Vec<u8>,
    buf: &[u8],
    pos: usize,
    stats: &mut JsonStats,
) -> Option<usize> {
    via_scratch(out, stats, |w, invalid| {
        write_key(w, buf, pos, invalid, 0, false)
    })
}

/// Appends a whole record (a msgpack map) as one JSON object; `false` (nothing appended) when
/// it is not well-formed msgpack.
pub fn write_record(out: &mut Vec<u8>, record: &[u8], stats: &mut JsonStats) -> bool {
    write_value(out, record, 0, stats).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: &rmpv::Value) -> String {
        let mut b = Vec::new();
        rmpv::encode::write_value(&mut b, v).unwrap();
        let mut out = Vec::new();
        write_record(&mut out, &b, &mut JsonStats::default());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn keys_that_are_maps_of_maps_stay_bounded() {
        // Each level's key text is escaped again by the level above: without the cap the
        // backslashes doubled per level (2^60 here; records nest at most 64 deep).
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(|| {
                let mut v = rmpv::Value::from("q\"\"\"\"");
                for _ in 0..60 {
                    v = rmpv::Value::Map(vec![(v, rmpv::Value::from(1))]);
                }
                let v = rmpv::Value::Map(vec![("k".into(), v)]);
                let mut b = Vec::new();
                rmpv::encode::write_value(&mut b, &v).unwrap();
                let mut out = Vec::new();
                assert!(write_record(&mut out, &b, &mut JsonStats::default()));
                assert!(out.len() < 64 * 1024, "{} bytes", out.len());
                let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
                assert!(line["k"].is_object());
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn transcodes_nested_values_and_escapes() {
        let v = rmpv::Value::Map(vec![
            ("a".into(), "x\"y\n\u{1}".into()),
            ("n".into(), rmpv::Value::from(-5)),
            ("f".into(), rmpv::Value::from(1.5)),
            (
                "l".into(),
                rmpv::Value::Array(vec![true.into(), rmpv::Value::Nil, 300.into()]),
            ),
            (rmpv::Value::from(7), "k".into()),
        ]);
        let s = json(&v);
        assert_eq!(
            s,
            r#"{"a":"x\"y\n\u0001","n":-5,"f":1.5,"l":[true,null,300],"7":"k"}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(parsed["l"][2], 300);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_counted() {
        let mut out = Vec::new();
        let mut st = JsonStats::default();
        write_json_str(&mut out, b"a\xffb", &mut st);
        assert_eq!(String::from_utf8(out).unwrap(), "\"a\u{FFFD}b\"");
        assert_eq!(st.invalid_utf8, 1);
    }

    #[test]
    fn escaping_matches_serde_json_for_every_ascii_byte_at_every_offset() {
        for b in 0u8..0x80 {
            for pre in 0..17 {
                let s: String = "a".repeat(pre) + &(b as char).to_string() + "é\"tail\\";
                let mut out = Vec::new();
                write_json_str(&mut out, s.as_bytes(), &mut JsonStats::default());
                let back: String = serde_json::from_slice(&out).unwrap();
                assert_eq!(back, s, "byte {b:#x} at {pre}");
            }
        }
    }

    #[test]
    fn invalid_utf8_is_replaced_like_from_utf8_lossy() {
        for s in [
            &b"a\xffb"[..],
            b"\xe2\x82",
            b"x\xe2\x82y\xf0\x9f\x98",
            b"\xed\xa0\x80z",
            b"\xc0\xaf",
        ] {
            let mut out = Vec::new();
            let mut st = JsonStats::default();
            write_json_str(&mut out, s, &mut st);
            let v: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(v, String::from_utf8_lossy(s));
            assert!(st.invalid_utf8 > 0);
        }
    }

    #[test]
    fn the_vec_api_appends_whole_values_only() {
        let mut out = b"prefix ".to_vec();
        let mut st = JsonStats::default();
        // A map that promises two pairs and holds one: nothing is appended.
        assert_eq!(
            write_value(&mut out, &[0x82, 0xa1, b'k', 0x01], 0, &mut st),
            None
        );
        assert!(!write_record(&mut out, &[0xc1], &mut st));
        assert_eq!(out, b"prefix ");
        // Then a good one after it, and a string with an invalid byte (counted once).
        assert_eq!(
            write_value(&mut out, &[0x81, 0xa1, b'k', 0xa2, b'a', 0xff], 0, &mut st),
            Some(6)
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "prefix {\"k\":\"a\u{FFFD}\"}"
        );
        assert_eq!(st.invalid_utf8, 1);
    }

    #[test]
    fn event_time_values_are_written_as_exact_seconds() {
        let mut rec = vec![0x82, 0xa1, b'a', 0xd7, 0x00];
        rec.extend_from_slice(&1_700_000_000u32.to_be_bytes());
        rec.extend_from_slice(&123_456_789u32.to_be_bytes());
        rec.extend_from_slice(&[0xa1, b'b', 0xd7, 0x00]);
        rec.extend_from_slice(&5u32.to_be_bytes());
        rec.extend_from_slice(&0u32.to_be_bytes());
        let mut out = Vec::new();
        assert!(write_record(&mut out, &rec, &mut JsonStats::default()));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":1700000000.123456789,"b":5.0}"#
        );
    }

    #[test]
    fn short_escapes_are_serde_jsons() {
        let mut out = Vec::new();
        write_json_str(
            &mut out,
            b"\x08\x0c\n\r\t\x01\x1f\"\\/",
            &mut JsonStats::default(),
        );
        let want = serde_json::to_string("\u{8}\u{c}\n\r\t\u{1}\u{1f}\"\\/").unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    /// Map keys that are maps at every level, [`MAX_DEPTH`] deep (the deepest recursion: three
    /// frames a level), fit a tokio worker's 2 MiB stack even unoptimised; containers past
    /// [`MAX_DEPTH`] are written as `null`.
    #[test]
    fn the_deepest_records_fit_a_worker_stack() {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let write = |rec: &[u8]| {
                    let mut v = Vec::new();
                    let mut w = Out::append(&mut v);
                    let r = write_value_to(&mut w, rec, 0, &mut 0, 0);
                    w.done();
                    assert_eq!(r, Some(rec.len()));
                    String::from_utf8(v).unwrap()
                };
                // {{{...{}: 1}: 1}: 1}: a fixmap of one pair per level, each key the next map.
                let mut keys = vec![0x81; MAX_DEPTH];
                keys.push(0x80);
                keys.extend(std::iter::repeat_n(0x01, MAX_DEPTH));
                assert!(write(&keys).starts_with("{\""));
                // [[[...]]] one level past the limit: the innermost container becomes null.
                for levels in [MAX_DEPTH, MAX_DEPTH + 1] {
                    let mut arrays = vec![0x91; levels - 1];
                    arrays.push(0x90);
                    let text = write(&arrays);
                    let want = if levels > MAX_DEPTH {
                        format!("{}null{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH))
                    } else {
                        format!("{}{}", "[".repeat(levels), "]".repeat(levels))
                    };
                    assert_eq!(text, want, "{levels} levels");
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn keys_are_written_with_their_colon_and_cut_like_nested_ones() {
        let mut out = b"{".to_vec();
        let mut st = JsonStats::default();
        assert_eq!(write_json_key(&mut out, &[0xa1, b'k'], 0, &mut st), Some(2));
        assert_eq!(write_json_key(&mut out, &[0x07], 0, &mut st), Some(1));
        // An array key of 2,000 `"`: its text is cut at MAX_KEY_TEXT before it is quoted.
        let mut long = vec![0xdc, 0x07, 0xd0];
        for _ in 0..2000 {
            long.extend_from_slice(&[0xa1, b'"']);
        }
        assert_eq!(
            write_json_key(&mut out, &long, 0, &mut st),
            Some(long.len())
        );
        assert_eq!(
            write_json_key(&mut out, &[0xd9, 0x05, b'a'], 0, &mut st),
            None
        );
        // Nothing from the malformed one: the text ends with the long key's colon.
        let text = String::from_utf8(out).unwrap();
        let rest = text.strip_prefix("{\"k\":\"7\":").unwrap();
        let key: String = serde_json::from_str(rest.strip_suffix(':').unwrap()).unwrap();
        assert!(key.starts_with(r#"["\"","\"","#), "{key}");
        assert!(
            (MAX_KEY_TEXT - 8..=MAX_KEY_TEXT).contains(&key.len()),
            "{}",
            key.len()
        );
    }
}
