//! Event time in every encoding real peers send:
//! any msgpack int width (Docker sends int32 `0xd2`), EventTime ext 0 as fixext8 or ext8,
//! msgpack Timestamp ext -1 (32, 64 and 96 bit), float seconds (converted, never a crash),
//! and the v1.5 entry form `[EventTime, {metadata}]` (metadata is not kept). Integer `0` and
//! `nil` mean "now", as in fluentd.

use super::DecodeError;
use nagare_core::msgpack::skip_complete;
use nagare_core::EventTime;

/// Outcome of reading a time value.
#[derive(Debug, PartialEq, Eq)]
pub enum TimeValue {
    Time(EventTime),
    /// Not a time at all (a string, a map, a negative number...): the event is invalid.
    Invalid(&'static str),
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn from_int(v: i128) -> TimeValue {
    if v == 0 {
        TimeValue::Time(EventTime::now())
    } else if v < 0 || v > u32::MAX as i128 {
        TimeValue::Invalid("time_out_of_range")
    } else {
        TimeValue::Time(EventTime::from_secs(v as u32))
    }
}

fn from_float(f: f64) -> TimeValue {
    if f == 0.0 {
        // As integer 0: "now" (fluentd).
        return TimeValue::Time(EventTime::now());
    }
    if !f.is_finite() || f < 0.0 || f >= u32::MAX as f64 {
        return TimeValue::Invalid("time_out_of_range");
    }
    let secs = f.trunc();
    let nanos = ((f - secs) * 1e9).round() as u32;
    TimeValue::Time(EventTime::new(secs as u32, nanos.min(999_999_999)))
}

fn ext(ty: i8, data: &[u8]) -> Result<TimeValue, DecodeError> {
    match (ty, data.len()) {
        (0, 8) => Ok(TimeValue::Time(EventTime::new(
            be32(data),
            be32(&data[4..]),
        ))),
        (0, n) => Err(DecodeError::BadEventTime(n as u32)),
        (-1, 4) => Ok(from_int(be32(data) as i128)),
        (-1, 8) => {
            let v = u64::from_be_bytes(data.try_into().unwrap_or_default());
            let nanos = (v >> 34) as u32;
            let secs = v & 0x3_ffff_ffff;
            Ok(match from_int(secs as i128) {
                TimeValue::Time(t) => TimeValue::Time(EventTime::new(t.secs(), nanos)),
                other => other,
            })
        }
        (-1, 12) => {
            let nanos = be32(data);
            let secs = i64::from_be_bytes(data[4..12].try_into().unwrap_or_default());
            Ok(match from_int(secs as i128) {
                TimeValue::Time(t) => TimeValue::Time(EventTime::new(t.secs(), nanos)),
                other => other,
            })
        }
        (-1, _) => Ok(TimeValue::Invalid("bad_timestamp_ext")),
        (t, _) => Err(DecodeError::UnknownExtType(t)),
    }
}

/// Reads the time value that starts at `buf[pos]` (a complete object ends at `end`).
pub fn read_time(buf: &[u8], pos: usize, end: usize) -> Result<TimeValue, DecodeError> {
    let s = &buf[pos..end];
    let b = s[0];
    let tv = match b {
        0x00..=0x7f => from_int(b as i128),
        0xe0..=0xff => TimeValue::Invalid("time_out_of_range"),
        0xcc => from_int(s[1] as i128),
        0xcd => from_int(u16::from_be_bytes([s[1], s[2]]) as i128),
        0xce => from_int(be32(&s[1..]) as i128),
        0xcf => from_int(u64::from_be_bytes(s[1..9].try_into().unwrap_or_default()) as i128),
        0xd0 => from_int(s[1] as i8 as i128),
        0xd1 => from_int(i16::from_be_bytes([s[1], s[2]]) as i128),
        0xd2 => from_int(i32::from_be_bytes([s[1], s[2], s[3], s[4]]) as i128),
        0xd3 => from_int(i64::from_be_bytes(s[1..9].try_into().unwrap_or_default()) as i128),
        0xca => from_float(f32::from_be_bytes([s[1], s[2], s[3], s[4]]) as f64),
        0xcb => from_float(f64::from_be_bytes(s[1..9].try_into().unwrap_or_default())),
        0xc0 => TimeValue::Time(EventTime::now()),
        0xd4 => return ext(s[1] as i8, &s[2..3]),
        0xd5 => return ext(s[1] as i8, &s[2..4]),
        0xd6 => return ext(s[1] as i8, &s[2..6]),
        0xd7 => return ext(s[1] as i8, &s[2..10]),
        0xd8 => return ext(s[1] as i8, &s[2..18]),
        0xc7 => return ext(s[2] as i8, &s[3..]),
        0xc8 => return ext(s[3] as i8, &s[4..]),
        0xc9 => return ext(s[5] as i8, &s[6..]),
        // v1.5: [EventTime, {metadata}...]
        0x91..=0x9f | 0xdc | 0xdd => {
            let (n, hl) = nagare_core::msgpack::read_array_len(s)
                .ok_or(DecodeError::Malformed("bad array"))?;
            if n == 0 {
                return Ok(TimeValue::Invalid("empty_time_array"));
            }
            let first_end = skip_complete(s, hl)?;
            return match s[hl] {
                0x91..=0x9f | 0xdc | 0xdd => Ok(TimeValue::Invalid("nested_time_array")),
                _ => read_time(s, hl, first_end),
            };
        }
        _ => TimeValue::Invalid("time_not_a_number"),
    };
    Ok(tv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(bytes: &[u8]) -> Result<TimeValue, DecodeError> {
        read_time(bytes, 0, bytes.len())
    }
    const SEC: u32 = 1441588984;

    #[test]
    fn every_int_width() {
        let want = Ok(TimeValue::Time(EventTime::from_secs(SEC)));
        assert_eq!(t(&[0xce, 0x55, 0xec, 0xe6, 0xf8]), want);
        assert_eq!(t(&[0xd2, 0x55, 0xec, 0xe6, 0xf8]), want);
        assert_eq!(t(&[0xd3, 0, 0, 0, 0, 0x55, 0xec, 0xe6, 0xf8]), want);
        assert_eq!(t(&[0xcf, 0, 0, 0, 0, 0x55, 0xec, 0xe6, 0xf8]), want);
        assert_eq!(t(&[0x05]), Ok(TimeValue::Time(EventTime::from_secs(5))));
        assert_eq!(t(&[0xff]), Ok(TimeValue::Invalid("time_out_of_range")));
    }

    #[test]
    fn event_time_fixext8_and_ext8() {
        let want = Ok(TimeValue::Time(EventTime::new(SEC, 123456789)));
        let fix = [0xd7, 0x00, 0x55, 0xec, 0xe6, 0xf8, 0x07, 0x5b, 0xcd, 0x15];
        let e8 = [
            0xc7, 0x08, 0x00, 0x55, 0xec, 0xe6, 0xf8, 0x07, 0x5b, 0xcd, 0x15,
        ];
        assert_eq!(t(&fix), want);
        assert_eq!(t(&e8), want);
    }

    #[test]
    fn timestamp_ext_minus_one() {
        assert_eq!(
            t(&[0xd6, 0xff, 0x55, 0xec, 0xe6, 0xf8]),
            Ok(TimeValue::Time(EventTime::from_secs(SEC)))
        );
        // timestamp64: nanos 5 << 34 | secs
        let v: u64 = (5u64 << 34) | SEC as u64;
        let mut b = vec![0xd7, 0xff];
        b.extend_from_slice(&v.to_be_bytes());
        assert_eq!(t(&b), Ok(TimeValue::Time(EventTime::new(SEC, 5))));
        // timestamp96
        let mut b = vec![0xc7, 12, 0xff];
        b.extend_from_slice(&7u32.to_be_bytes());
        b.extend_from_slice(&(SEC as i64).to_be_bytes());
        assert_eq!(t(&b), Ok(TimeValue::Time(EventTime::new(SEC, 7))));
    }

    #[test]
    fn float_is_converted() {
        let b = [0xcb, 0x41, 0xd5, 0x7b, 0x39, 0xbe, 0x20, 0x00, 0x00];
        assert_eq!(t(&b), Ok(TimeValue::Time(EventTime::new(SEC, 500_000_000))));
    }

    #[test]
    fn unknown_ext_and_short_event_time_are_errors() {
        assert_eq!(
            t(&[0xd7, 0x05, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::UnknownExtType(5))
        );
        assert_eq!(
            t(&[0xd6, 0x00, 0, 0, 0, 0]),
            Err(DecodeError::BadEventTime(4))
        );
    }

    #[test]
    fn v15_array_time() {
        let b = [
            0x92, 0xd7, 0x00, 0x55, 0xec, 0xe6, 0xf8, 0x07, 0x5b, 0xcd, 0x15, 0x80,
        ];
        assert_eq!(t(&b), Ok(TimeValue::Time(EventTime::new(SEC, 123456789))));
    }
}
