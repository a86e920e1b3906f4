//! Small msgpack helpers over complete buffers: writers into a `Vec<u8>` (the same, minimal
//! encodings as [`nagare_core::Value::encode`], so a record built here is byte-for-byte the
//! one the decoded path would produce) and a skip without recursion or allocation.

pub fn str_header(out: &mut Vec<u8>, n: usize) {
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n <= u8::MAX as usize {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else if n <= u16::MAX as usize {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

pub fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    str_header(out, s.len());
    out.extend_from_slice(s);
}

fn container_header(out: &mut Vec<u8>, n: usize, fix: u8, b16: u8, b32: u8) {
    if n < 16 {
        out.push(fix | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(b16);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(b32);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

pub fn map_header(out: &mut Vec<u8>, n: usize) {
    container_header(out, n, 0x80, 0xde, 0xdf)
}

pub fn array_header(out: &mut Vec<u8>, n: usize) {
    container_header(out, n, 0x90, 0xdc, 0xdd)
}

/// Replaces the one-byte placeholder at `at` with the header for `n` elements, moving what
/// follows when the header needs more than one byte.
pub fn fix_container_header(out: &mut Vec<u8>, at: usize, n: usize, map: bool) {
    let (fix, b16, b32) = if map {
        (0x80, 0xde, 0xdf)
    } else {
        (0x90, 0xdc, 0xdd)
    };
    if n < 16 {
        out[at] = fix | n as u8;
    } else if n <= u16::MAX as usize {
        out[at] = b16;
        out.splice(at + 1..at + 1, (n as u16).to_be_bytes());
    } else {
        out[at] = b32;
        out.splice(at + 1..at + 1, (n as u32).to_be_bytes());
    }
}

pub fn uint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0x7f => out.push(v as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, v as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

pub fn int(out: &mut Vec<u8>, i: i64) {
    if i >= 0 {
        uint(out, i as u64)
    } else if i >= -32 {
        out.push(i as i8 as u8);
    } else if i >= i8::MIN as i64 {
        out.extend_from_slice(&[0xd0, i as i8 as u8]);
    } else if i >= i16::MIN as i64 {
        out.push(0xd1);
        out.extend_from_slice(&(i as i16).to_be_bytes());
    } else if i >= i32::MIN as i64 {
        out.push(0xd2);
        out.extend_from_slice(&(i as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

pub fn float(out: &mut Vec<u8>, f: f64) {
    out.push(0xcb);
    out.extend_from_slice(&f.to_be_bytes());
}

fn be(b: &[u8]) -> usize {
    b.iter().fold(0usize, |a, &x| (a << 8) | x as usize)
}

/// The payload range of the str or bin at `pos`.
#[inline]
pub fn str_at(b: &[u8], pos: usize) -> Option<(usize, usize)> {
    let (hl, n) = match *b.get(pos)? {
        c @ 0xa0..=0xbf => (1, (c & 0x1f) as usize),
        0xc4 | 0xd9 => (2, be(b.get(pos + 1..pos + 2)?)),
        0xc5 | 0xda => (3, be(b.get(pos + 1..pos + 3)?)),
        0xc6 | 0xdb => (5, be(b.get(pos + 1..pos + 5)?)),
        _ => return None,
    };
    let s = pos + hl;
    let e = s.checked_add(n)?;
    (e <= b.len()).then_some((s, e))
}

/// The element count and the end of the header of the map at `pos`.
#[inline]
pub fn map_at(b: &[u8], pos: usize) -> Option<(usize, usize)> {
    match *b.get(pos)? {
        c @ 0x80..=0x8f => Some(((c & 0x0f) as usize, pos + 1)),
        0xde => Some((be(b.get(pos + 1..pos + 3)?), pos + 3)),
        0xdf => Some((be(b.get(pos + 1..pos + 5)?), pos + 5)),
        _ => None,
    }
}

/// The element count and the end of the header of the array at `pos`.
#[inline]
pub fn array_at(b: &[u8], pos: usize) -> Option<(usize, usize)> {
    match *b.get(pos)? {
        c @ 0x90..=0x9f => Some(((c & 0x0f) as usize, pos + 1)),
        0xdc => Some((be(b.get(pos + 1..pos + 3)?), pos + 3)),
        0xdd => Some((be(b.get(pos + 1..pos + 5)?), pos + 5)),
        _ => None,
    }
}

/// The end of the value starting at `pos` (`None` if truncated or invalid). Iterative: a
/// map of n pairs just adds 2n values still to skip, so there is no recursion and no stack.
pub fn skip(b: &[u8], mut pos: usize) -> Option<usize> {
    let mut todo: usize = 1;
    while todo > 0 {
        todo -= 1;
        let c = *b.get(pos)?;
        pos = match c {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => pos + 1,
            0xa0..=0xbf => pos + 1 + (c & 0x1f) as usize,
            0xd9 | 0xc4 => pos + 2 + *b.get(pos + 1)? as usize,
            0xda | 0xc5 => pos + 3 + be(b.get(pos + 1..pos + 3)?),
            0xdb | 0xc6 => pos + 5 + be(b.get(pos + 1..pos + 5)?),
            0xcc | 0xd0 => pos + 2,
            0xcd | 0xd1 => pos + 3,
            0xce | 0xd2 | 0xca => pos + 5,
            0xcf | 0xd3 | 0xcb => pos + 9,
            0xd4 => pos + 3,
            0xd5 => pos + 4,
            0xd6 => pos + 6,
            0xd7 => pos + 10,
            0xd8 => pos + 18,
            0xc7 => pos + 3 + *b.get(pos + 1)? as usize,
            0xc8 => pos + 4 + be(b.get(pos + 1..pos + 3)?),
            0xc9 => pos + 6 + be(b.get(pos + 1..pos + 5)?),
            0x80..=0x8f => {
                todo = todo.checked_add(2 * (c & 0x0f) as usize)?;
                pos + 1
            }
            0x90..=0x9f => {
                todo = todo.checked_add((c & 0x0f) as usize)?;
                pos + 1
            }
            0xdc..=0xdf => {
                let (n, p) = if c >= 0xde {
                    let (n, p) = map_at(b, pos)?;
                    (n.checked_mul(2)?, p)
                } else {
                    array_at(b, pos)?
                };
                // Each element takes at least one byte: a count beyond what is left is invalid.
                if n > b.len() - p {
                    return None;
                }
                todo = todo.checked_add(n)?;
                p
            }
            0xc1 => return None,
        };
        // A position past the end fails at the next `get` or below: no check per element.
    }
    (pos <= b.len()).then_some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use nagare_core::{Map, Value};

    #[test]
    fn writers_match_value_encode() {
        let mut big = Map::new();
        for i in 0..20u64 {
            big.insert(
                Bytes::from(format!("k{i}").into_bytes()),
                Value::UInt(i * 1000),
            );
        }
        let values = [
            Value::UInt(0),
            Value::UInt(200),
            Value::UInt(70_000),
            Value::UInt(5_000_000_000),
            Value::Int(-1),
            Value::Int(-100),
            Value::Int(-1000),
            Value::Int(-100_000),
            Value::Int(-10_000_000_000),
            Value::Float(1.5),
            Value::str("x".repeat(40).as_str()),
            Value::str("y".repeat(300).as_str()),
            Value::str("z".repeat(70_000).as_str()),
        ];
        for v in &values {
            let mut want = BytesMut::new();
            v.encode(&mut want);
            let mut got = Vec::new();
            match v {
                Value::UInt(u) => uint(&mut got, *u),
                Value::Int(i) => int(&mut got, *i),
                Value::Float(f) => float(&mut got, *f),
                Value::Str(s) => write_str(&mut got, s),
                _ => unreachable!(),
            }
            assert_eq!(&got[..], &want[..], "{v:?}");
            assert_eq!(skip(&got, 0), Some(got.len()));
        }
        let mut want = BytesMut::new();
        Value::Map(big.clone()).encode(&mut want);
        let mut got = vec![0u8];
        for (k, v) in big.iter() {
            write_str(&mut got, k.as_bytes().unwrap());
            if let Value::UInt(u) = v {
                uint(&mut got, *u);
            }
        }
        fix_container_header(&mut got, 0, big.len(), true);
        assert_eq!(&got[..], &want[..]);
        assert_eq!(skip(&got, 0), Some(got.len()));
        assert_eq!(skip(&got[..got.len() - 1], 0), None);
    }

    proptest::proptest! {
        /// On any bytes: no panic, and the same end as the codec's scanner when it accepts.
        #[test]
        fn skip_agrees_with_the_codec_scanner(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let ours = skip(&b, 0);
            if let Ok(end) = nagare_core::msgpack::skip_complete(&b, 0) {
                proptest::prop_assert_eq!(ours, Some(end));
            }
        }
    }
}
