//! msgpack record bytes -> JSON text, directly (no intermediate value tree).
//!
//! Strings that are not valid UTF-8 are written with U+FFFD replacements (and the caller is
//! told, so it can count them); `bin` is written as a string the same way; EventTime ext
//! values become float seconds; other ext values become `null`. Map keys that are not strings
//! are written as their JSON text in quotes.

use crate::msgpack::skip_complete;
use std::io::Write;

/// A map key that is not a string is written as its JSON text in quotes, cut to this many
/// bytes: a key holding a map whose keys are maps... is escaped again at every level, which
/// doubles the backslashes per level (a few hundred input bytes could ask for gigabytes).
pub const MAX_KEY_TEXT: usize = 1024;

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
    /// Strings with invalid UTF-8 sequences (replaced with U+FFFD).
    pub invalid_utf8: usize,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `s` as a JSON string (with quotes).
pub fn write_json_str(out: &mut Vec<u8>, s: &[u8], stats: &mut JsonStats) {
    out.push(b'"');
    let mut rest = s;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                escape_into(out, valid.as_bytes());
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                escape_into(out, good);
                out.extend_from_slice("\u{FFFD}".as_bytes());
                stats.invalid_utf8 += 1;
                let skip = e.error_len().unwrap_or(bad.len());
                rest = &bad[skip..];
            }
        }
    }
    out.push(b'"');
}

#[inline]
fn escape_into(out: &mut Vec<u8>, s: &[u8]) {
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                out.extend_from_slice(&s[start..i]);
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 15) as usize],
                ]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
}

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |a, &x| (a << 8) | x as u64)
}

fn write_f64(out: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        let _ = write!(out, "{f}");
        if f.fract() == 0.0 && f.abs() < 1e16 {
            out.extend_from_slice(b".0");
        }
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Transcodes the msgpack value at `buf[pos..]` into `out`; returns the end offset.
pub fn write_value(
    out: &mut Vec<u8>,
    buf: &[u8],
    pos: usize,
    stats: &mut JsonStats,
) -> Option<usize> {
    let b = *buf.get(pos)?;
    let s = &buf[pos..];
    let end = skip_complete(buf, pos).ok()?;
    match b {
        0x00..=0x7f => {
            let _ = write!(out, "{b}");
        }
        0xe0..=0xff => {
            let _ = write!(out, "{}", b as i8);
        }
        0xc0 => out.extend_from_slice(b"null"),
        0xc2 => out.extend_from_slice(b"false"),
        0xc3 => out.extend_from_slice(b"true"),
        0xcc..=0xcf => {
            let _ = write!(out, "{}", be(&s[1..end - pos]));
        }
        0xd0 => {
            let _ = write!(out, "{}", s[1] as i8);
        }
        0xd1 => {
            let _ = write!(out, "{}", i16::from_be_bytes([s[1], s[2]]));
        }
        0xd2 => {
            let _ = write!(out, "{}", i32::from_be_bytes([s[1], s[2], s[3], s[4]]));
        }
        0xd3 => {
            let _ = write!(out, "{}", i64::from_be_bytes(s[1..9].try_into().ok()?));
        }
        0xca => write_f64(out, f32::from_be_bytes([s[1], s[2], s[3], s[4]]) as f64),
        0xcb => write_f64(out, f64::from_be_bytes(s[1..9].try_into().ok()?)),
        0xa0..=0xbf | 0xd9..=0xdb | 0xc4..=0xc6 => {
            let (a, e) = crate::msgpack::read_str_or_bin(s)?;
            write_json_str(out, &s[a..e], stats);
        }
        0x90..=0x9f | 0xdc | 0xdd => {
            let (n, hl) = crate::msgpack::read_array_len(s)?;
            out.push(b'[');
            let mut p = pos + hl;
            for i in 0..n {
                if i > 0 {
                    out.push(b',');
                }
                p = write_value(out, buf, p, stats)?;
            }
            out.push(b']');
        }
        0x80..=0x8f | 0xde | 0xdf => {
            let (n, hl) = crate::msgpack::read_map_len(s)?;
            out.push(b'{');
            let mut p = pos + hl;
            for i in 0..n {
                if i > 0 {
                    out.push(b',');
                }
                let kb = *buf.get(p)?;
                if matches!(kb, 0xa0..=0xbf | 0xd9..=0xdb | 0xc4..=0xc6) {
                    p = write_value(out, buf, p, stats)?;
                } else {
                    let mut tmp = Vec::new();
                    p = write_value(&mut tmp, buf, p, stats)?;
                    write_json_str(out, &tmp[..key_text_len(&tmp)], stats);
                }
                out.push(b':');
                p = write_value(out, buf, p, stats)?;
            }
            out.push(b'}');
        }
        // ext: EventTime (type 0, 8 bytes) as float seconds; anything else null.
        0xd7 if s[1] == 0 => {
            let secs = be(&s[2..6]) as f64;
            let nanos = be(&s[6..10]) as f64;
            write_f64(out, secs + nanos / 1e9);
        }
        _ => out.extend_from_slice(b"null"),
    }
    Some(end)
}

/// Writes a whole record (a msgpack map) as one JSON object.
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
}
