//! Event time from a parsed field, as Fluentd's `time_type` / `time_format`.
//!
//! * `time_type float` (the JSON parser's default): a number, or a string `"secs.frac"`.
//! * `time_type unixtime`: whole seconds (a number or a numeric string).
//! * `time_type string` (the default elsewhere): `time_format`, a `strptime` subset:
//!   `%Y %y %m %d %e %j %H %I %M %S %L %N %p %z %:z %Z %b %B %h %a %A %s %T %F %D %R %%`
//!   (flags `-`, `_`, `0` are accepted and ignored, whitespace in the format matches any run of
//!   whitespace), or `%iso8601`; without `time_format`, a lenient reader of the forms Ruby's
//!   `Time.parse` is mostly fed: ISO 8601 (`T` or a space, fraction, zone `Z`/`+09:00`/`+0900`
//!   /`UTC`), and Apache's `%d/%b/%Y:%H:%M:%S %z`.
//!
//! Times without a zone are read in `timezone` (a fixed offset such as `+09:00`, or `UTC`), else
//! UTC: Nagare treats the host's local time as UTC (the containers it runs in are), where
//! Fluentd would use the process's `TZ`. Named zones (`Asia/Tokyo`) are refused at load: there
//! is no zone database.

use nagare_core::civil::{civil_from_days, days_from_civil};
use nagare_core::{EventTime, Value};

/// How a time field is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeType {
    String,
    Float,
    Unixtime,
}

impl TimeType {
    pub fn from_name(s: &str) -> Option<TimeType> {
        match s {
            "string" => Some(TimeType::String),
            "float" => Some(TimeType::Float),
            "unixtime" => Some(TimeType::Unixtime),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Lit(u8),
    Ws,
    Year,
    Year2,
    Month,
    Day,
    YDay,
    Hour,
    Hour12,
    Min,
    Sec,
    Frac,
    Zone,
    MonthName,
    WeekdayName,
    AmPm,
    Epoch,
}

#[derive(Debug, Clone)]
enum Kind {
    Float,
    Unixtime,
    Format(Vec<Item>),
    Iso8601,
    Auto,
}

/// A compiled time reader; see the module docs.
#[derive(Debug, Clone)]
pub struct TimeParser {
    kind: Kind,
    /// Offset east of UTC, in seconds, for times that carry no zone.
    default_offset: i32,
}

impl TimeParser {
    /// `time_type`, `time_format` and `timezone` as Fluentd takes them.
    pub fn new(
        time_type: TimeType,
        time_format: Option<&str>,
        timezone: Option<&str>,
    ) -> Result<TimeParser, String> {
        let default_offset = match timezone {
            None => 0,
            Some(tz) => parse_zone_name(tz.trim()).ok_or_else(|| {
                format!("timezone '{tz}' is not supported: use a fixed offset like +09:00 or UTC (there is no zone database)")
            })?,
        };
        let kind = match (time_type, time_format) {
            (TimeType::Float, _) => Kind::Float,
            (TimeType::Unixtime, _) => Kind::Unixtime,
            (TimeType::String, None) => Kind::Auto,
            (TimeType::String, Some("%iso8601")) => Kind::Iso8601,
            (TimeType::String, Some(f)) => Kind::Format(compile(f)?),
        };
        Ok(TimeParser {
            kind,
            default_offset,
        })
    }

    /// Reads a field value. Strings are required for `time_type string`, as in Fluentd.
    pub fn parse(&self, v: &Value) -> Result<EventTime, String> {
        match (&self.kind, v) {
            (Kind::Float, Value::Float(f)) => from_f64(*f),
            (Kind::Float | Kind::Unixtime, Value::UInt(u)) => from_i64(*u as i64, 0),
            (Kind::Float | Kind::Unixtime, Value::Int(i)) => from_i64(*i, 0),
            (Kind::Unixtime, Value::Float(f)) => from_i64(f.trunc() as i64, 0),
            (Kind::Float | Kind::Unixtime, Value::Ext(0, d)) if d.len() == 8 => Ok(EventTime::new(
                u32::from_be_bytes([d[0], d[1], d[2], d[3]]),
                u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
            )),
            (_, Value::Str(s)) | (_, Value::Bin(s)) => self.parse_bytes(s),
            (Kind::Float | Kind::Unixtime, other) => Err(format!(
                "time value must be a string or a number, got {}",
                other.to_text()
            )),
            (_, other) => Err(format!(
                "time value must be a string, got {}",
                other.to_text()
            )),
        }
    }

    /// Reads a time from text.
    pub fn parse_bytes(&self, s: &[u8]) -> Result<EventTime, String> {
        let bad = || format!("invalid time '{}'", String::from_utf8_lossy(s));
        match &self.kind {
            Kind::Float => {
                // Ruby: value.to_s.split('.'): integer seconds, then up to 9 fraction digits.
                let t = trim(s);
                let (int, frac) = match t.iter().position(|&b| b == b'.') {
                    Some(i) => (&t[..i], &t[i + 1..]),
                    None => (t, &b""[..]),
                };
                let secs = parse_int_prefix(int).ok_or_else(bad)?;
                let digits: Vec<u8> = frac
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .take(9)
                    .copied()
                    .collect();
                let mut nanos = 0u32;
                for i in 0..9 {
                    nanos = nanos * 10 + digits.get(i).map(|d| (d - b'0') as u32).unwrap_or(0);
                }
                from_i64(secs, nanos)
            }
            Kind::Unixtime => from_i64(parse_int_prefix(trim(s)).ok_or_else(bad)?, 0),
            Kind::Format(items) => run_format(items, s, self.default_offset).ok_or_else(bad)?,
            Kind::Iso8601 => iso8601(s, self.default_offset, false).ok_or_else(bad)?,
            Kind::Auto => iso8601(s, self.default_offset, true)
                .or_else(|| run_format(&apache_format(), s, self.default_offset))
                .ok_or_else(bad)?,
        }
    }
}

fn apache_format() -> Vec<Item> {
    compile("%d/%b/%Y:%H:%M:%S %z").expect("static format")
}

fn trim(s: &[u8]) -> &[u8] {
    let a = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let e = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(a, |i| i + 1);
    &s[a..e]
}

/// Ruby's `String#to_i` on the leading digits, but `None` when there are none.
fn parse_int_prefix(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 {
        return None;
    }
    let v: i64 = std::str::from_utf8(&digits[..n]).ok()?.parse().ok()?;
    Some(if neg { -v } else { v })
}

fn from_f64(f: f64) -> Result<EventTime, String> {
    if !f.is_finite() {
        return Err(format!("invalid time {f}"));
    }
    let secs = f.floor();
    let nanos = ((f - secs) * 1e9).round().min(999_999_999.0) as u32;
    from_i64(secs as i64, nanos)
}

/// An EventTime from seconds since the epoch; errors outside 1970..2106.
pub fn from_i64(secs: i64, nanos: u32) -> Result<EventTime, String> {
    u32::try_from(secs)
        .map(|s| EventTime::new(s, nanos))
        .map_err(|_| format!("time {secs} is outside 1970-01-01..2106-02-07"))
}

fn compile(f: &str) -> Result<Vec<Item>, String> {
    let mut out = Vec::new();
    let b = f.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            out.push(Item::Ws);
            continue;
        }
        if c != b'%' {
            out.push(Item::Lit(c));
            i += 1;
            continue;
        }
        i += 1;
        while i < b.len() && matches!(b[i], b'-' | b'_' | b'0' | b'^' | b'#') {
            i += 1;
        }
        let Some(&d) = b.get(i) else {
            return Err(format!("time_format '{f}' ends with '%'"));
        };
        i += 1;
        match d {
            b'Y' => out.push(Item::Year),
            b'y' => out.push(Item::Year2),
            b'm' => out.push(Item::Month),
            b'd' | b'e' => out.push(Item::Day),
            b'j' => out.push(Item::YDay),
            b'H' | b'k' => out.push(Item::Hour),
            b'I' | b'l' => out.push(Item::Hour12),
            b'M' => out.push(Item::Min),
            b'S' => out.push(Item::Sec),
            b'L' | b'N' => out.push(Item::Frac),
            b'z' | b'Z' => out.push(Item::Zone),
            b':' if b.get(i) == Some(&b'z') => {
                i += 1;
                out.push(Item::Zone)
            }
            b'b' | b'B' | b'h' => out.push(Item::MonthName),
            b'a' | b'A' => out.push(Item::WeekdayName),
            b'p' | b'P' => out.push(Item::AmPm),
            b's' => out.push(Item::Epoch),
            b'T' => out.extend([Item::Hour, Item::Lit(b':'), Item::Min, Item::Lit(b':'), Item::Sec]),
            b'F' => out.extend([Item::Year, Item::Lit(b'-'), Item::Month, Item::Lit(b'-'), Item::Day]),
            b'D' | b'x' => out.extend([Item::Month, Item::Lit(b'/'), Item::Day, Item::Lit(b'/'), Item::Year2]),
            b'R' => out.extend([Item::Hour, Item::Lit(b':'), Item::Min]),
            b'n' | b't' => out.push(Item::Ws),
            b'%' => out.push(Item::Lit(b'%')),
            other => {
                return Err(format!(
                    "time_format '{f}': unsupported directive %{} (supported: %Y %y %m %d %e %j %H %I %M %S %L %N %p %z %:z %Z %b %B %h %a %A %s %T %F %D %R %%)",
                    other as char
                ))
            }
        }
    }
    Ok(out)
}

const MONTHS: [&[u8]; 12] = [
    b"january",
    b"february",
    b"march",
    b"april",
    b"may",
    b"june",
    b"july",
    b"august",
    b"september",
    b"october",
    b"november",
    b"december",
];
const DAYS: [&[u8]; 7] = [
    b"sunday",
    b"monday",
    b"tuesday",
    b"wednesday",
    b"thursday",
    b"friday",
    b"saturday",
];

/// Up to `max` decimal digits at `pos`; `None` if there are none or the value does not fit
/// an `i64` (`%s` takes 19 digits, and 9999999999999999999 does not).
fn digits(s: &[u8], pos: &mut usize, max: usize) -> Option<i64> {
    let start = *pos;
    let mut v: i64 = 0;
    while *pos < s.len() && *pos - start < max && s[*pos].is_ascii_digit() {
        v = v.checked_mul(10)?.checked_add((s[*pos] - b'0') as i64)?;
        *pos += 1;
    }
    (*pos > start).then_some(v)
}

fn name(s: &[u8], pos: &mut usize, names: &[&[u8]]) -> Option<usize> {
    let rest = &s[*pos..];
    for (i, full) in names.iter().enumerate() {
        let lower =
            |n: usize| -> bool { rest.len() >= n && rest[..n].eq_ignore_ascii_case(&full[..n]) };
        if lower(full.len()) {
            *pos += full.len();
            return Some(i);
        }
        if lower(3) {
            *pos += 3;
            return Some(i);
        }
    }
    None
}

/// A zone at `s[*pos..]`: `Z`, `UTC`, `GMT`, `+09:00`, `+0900`, `+09`. Seconds east of UTC.
fn zone(s: &[u8], pos: &mut usize) -> Option<i32> {
    let rest = &s[*pos..];
    for (n, len) in [(&b"UTC"[..], 3), (b"GMT", 3)] {
        if rest.len() >= len && rest[..len].eq_ignore_ascii_case(n) {
            *pos += len;
            return Some(0);
        }
    }
    match rest.first()? {
        b'Z' | b'z' => {
            *pos += 1;
            Some(0)
        }
        sign @ (b'+' | b'-') => {
            let neg = *sign == b'-';
            let mut p = *pos + 1;
            let h = digits(s, &mut p, 2)?;
            let mut m = 0;
            if s.get(p) == Some(&b':') {
                p += 1;
                m = digits(s, &mut p, 2)?;
            } else if s.get(p).is_some_and(u8::is_ascii_digit) {
                m = digits(s, &mut p, 2)?;
            }
            if h > 23 || m > 59 {
                return None;
            }
            *pos = p;
            let off = (h * 3600 + m * 60) as i32;
            Some(if neg { -off } else { off })
        }
        _ => None,
    }
}

/// A `timezone` value: `UTC`, `GMT`, `Z`, `+09:00` or `+0900` (Fluentd's numeric form).
fn parse_zone_name(tz: &str) -> Option<i32> {
    let b = tz.as_bytes();
    let numeric =
        matches!(b.first(), Some(b'+' | b'-')) && (b.len() == 5 || (b.len() == 6 && b[3] == b':'));
    if !numeric && !matches!(tz.to_ascii_uppercase().as_str(), "UTC" | "GMT" | "Z") {
        return None;
    }
    let mut p = 0;
    let off = zone(b, &mut p)?;
    (p == b.len()).then_some(off)
}

#[derive(Default)]
struct Fields {
    year: Option<i64>,
    month: Option<i64>,
    day: Option<i64>,
    yday: Option<i64>,
    hour: i64,
    pm: Option<bool>,
    min: i64,
    sec: i64,
    nanos: u32,
    offset: Option<i32>,
    epoch: Option<i64>,
}

fn run_format(items: &[Item], s: &[u8], default_offset: i32) -> Option<Result<EventTime, String>> {
    let mut f = Fields::default();
    let mut p = 0usize;
    for it in items {
        match it {
            Item::Lit(c) => {
                if s.get(p) != Some(c) {
                    return None;
                }
                p += 1;
            }
            Item::Ws => {
                while p < s.len() && s[p].is_ascii_whitespace() {
                    p += 1;
                }
            }
            Item::Year => {
                let neg = s.get(p) == Some(&b'-');
                if neg || s.get(p) == Some(&b'+') {
                    p += 1;
                }
                let y = digits(s, &mut p, 4)?;
                f.year = Some(if neg { -y } else { y });
            }
            Item::Year2 => {
                let y = digits(s, &mut p, 2)?;
                f.year = Some(if y < 69 { 2000 + y } else { 1900 + y });
            }
            Item::Month => f.month = Some(digits(s, &mut p, 2)?),
            Item::Day => {
                if s.get(p) == Some(&b' ') {
                    p += 1;
                }
                f.day = Some(digits(s, &mut p, 2)?)
            }
            Item::YDay => f.yday = Some(digits(s, &mut p, 3)?),
            Item::Hour | Item::Hour12 => f.hour = digits(s, &mut p, 2)?,
            Item::Min => f.min = digits(s, &mut p, 2)?,
            Item::Sec => f.sec = digits(s, &mut p, 2)?,
            Item::Frac => {
                let start = p;
                while p < s.len() && s[p].is_ascii_digit() {
                    p += 1;
                }
                if p == start {
                    return None;
                }
                let mut n = 0u32;
                for i in 0..9 {
                    n = n * 10
                        + s.get(start + i)
                            .filter(|_| start + i < p)
                            .map_or(0, |d| (d - b'0') as u32);
                }
                f.nanos = n;
            }
            Item::Zone => f.offset = Some(zone(s, &mut p)?),
            Item::MonthName => f.month = Some(name(s, &mut p, &MONTHS)? as i64 + 1),
            Item::WeekdayName => {
                name(s, &mut p, &DAYS)?;
            }
            Item::AmPm => {
                let r = s.get(p..p + 2)?;
                f.pm = Some(if r.eq_ignore_ascii_case(b"pm") {
                    true
                } else if r.eq_ignore_ascii_case(b"am") {
                    false
                } else {
                    return None;
                });
                p += 2;
            }
            Item::Epoch => {
                let neg = s.get(p) == Some(&b'-');
                if neg {
                    p += 1;
                }
                let v = digits(s, &mut p, 19)?;
                f.epoch = Some(if neg { -v } else { v });
            }
        }
    }
    if !trim(&s[p..]).is_empty() {
        return None;
    }
    Some(f.finish(default_offset))
}

impl Fields {
    fn finish(self, default_offset: i32) -> Result<EventTime, String> {
        if let Some(e) = self.epoch {
            return from_i64(e, self.nanos);
        }
        let mut hour = self.hour;
        if let Some(pm) = self.pm {
            if !(1..=12).contains(&hour) {
                return Err(format!("hour {hour} with AM/PM"));
            }
            hour = hour % 12 + if pm { 12 } else { 0 };
        }
        let year = match self.year {
            Some(y) => y,
            None => civil_from_days(EventTime::now().secs() as i64 / 86_400).0,
        };
        let days = match (self.yday, self.month, self.day) {
            (Some(yd), _, _) if (1..=366).contains(&yd) => days_from_civil(year, 1, 1) + yd - 1,
            (Some(yd), _, _) => return Err(format!("day of year {yd} out of range")),
            (None, m, d) => {
                let (m, d) = (m.unwrap_or(1), d.unwrap_or(1));
                if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
                    return Err(format!("invalid date {year}-{m}-{d}"));
                }
                days_from_civil(year, m, d)
            }
        };
        if hour > 24 || self.min > 59 || self.sec > 60 {
            return Err(format!(
                "invalid time of day {hour}:{}:{}",
                self.min, self.sec
            ));
        }
        let offset = self.offset.unwrap_or(default_offset) as i64;
        from_i64(
            days * 86_400 + hour * 3600 + self.min * 60 + self.sec - offset,
            self.nanos,
        )
    }
}

/// ISO 8601 / RFC 3339: `YYYY-MM-DDTHH:MM:SS[.frac][zone]`; `lenient` also takes a space
/// before the time or the zone, a date alone, and `UTC`/`GMT`.
fn iso8601(s: &[u8], default_offset: i32, lenient: bool) -> Option<Result<EventTime, String>> {
    let s = trim(s);
    let mut f = Fields::default();
    let mut p = 0;
    let y = digits(s, &mut p, 4)?;
    (p == 4 && s.get(p) == Some(&b'-')).then_some(())?;
    p += 1;
    f.year = Some(y);
    f.month = Some(digits(s, &mut p, 2)?);
    (s.get(p) == Some(&b'-')).then_some(())?;
    p += 1;
    f.day = Some(digits(s, &mut p, 2)?);
    if p == s.len() {
        return lenient.then(|| f.finish(default_offset));
    }
    match s[p] {
        b'T' | b't' => p += 1,
        b' ' if lenient => p += 1,
        _ => return None,
    }
    f.hour = digits(s, &mut p, 2)?;
    (s.get(p) == Some(&b':')).then_some(())?;
    p += 1;
    f.min = digits(s, &mut p, 2)?;
    if s.get(p) == Some(&b':') {
        p += 1;
        f.sec = digits(s, &mut p, 2)?;
    }
    if matches!(s.get(p), Some(b'.') | Some(b',')) {
        p += 1;
        let start = p;
        while p < s.len() && s[p].is_ascii_digit() {
            p += 1;
        }
        if p == start {
            return None;
        }
        let mut n = 0u32;
        for i in 0..9 {
            n = n * 10
                + if start + i < p {
                    (s[start + i] - b'0') as u32
                } else {
                    0
                };
        }
        f.nanos = n;
    }
    if lenient && s.get(p) == Some(&b' ') {
        p += 1;
    }
    if p < s.len() {
        f.offset = Some(zone(s, &mut p)?);
    }
    (p == s.len()).then(|| f.finish(default_offset))
}

/// Appends `t` as Ruby's `Time#to_s` shows it (`2023-11-14 22:13:20 +0000`), in UTC.
pub fn write_ruby_time(t: EventTime, out: &mut Vec<u8>) {
    use std::io::Write;
    let secs = t.secs() as i64;
    let (y, m, d) = civil_from_days(secs / 86_400);
    let r = secs % 86_400;
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} +0000",
        r / 3600,
        r % 3600 / 60,
        r % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ty: TimeType, f: Option<&str>) -> TimeParser {
        TimeParser::new(ty, f, None).unwrap()
    }
    fn secs(r: Result<EventTime, String>) -> (u32, u32) {
        let t = r.unwrap();
        (t.secs(), t.nanos())
    }

    #[test]
    fn strptime_subset() {
        let t = p(TimeType::String, Some("%d/%b/%Y:%H:%M:%S %z"));
        assert_eq!(
            secs(t.parse_bytes(b"28/Feb/2013:12:00:00 +0900")),
            (1_362_020_400, 0)
        );
        let t = p(TimeType::String, Some("%Y-%m-%dT%H:%M:%S.%L%z"));
        assert_eq!(
            secs(t.parse_bytes(b"2023-11-15T07:13:20.903+0900")),
            (1_700_000_000, 903_000_000)
        );
        let t = p(TimeType::String, Some("%F %T.%N %Z"));
        assert_eq!(
            secs(t.parse_bytes(b"2023-11-14 22:13:20.000000001 UTC")),
            (1_700_000_000, 1)
        );
        let t = p(TimeType::String, Some("%s"));
        assert_eq!(secs(t.parse_bytes(b"1700000000")), (1_700_000_000, 0));
        // 19 digits beyond i64: a parse error, not an overflow.
        assert!(t.parse_bytes(b"9999999999999999999").is_err());
        assert!(t.parse_bytes(b"-9999999999999999999").is_err());
        let t = p(TimeType::String, Some("%Y %j %I:%M %p"));
        assert_eq!(
            secs(t.parse_bytes(b"2023 318 10:13 PM")),
            (1_700_000_000 - 20, 0)
        );
        let t = p(TimeType::String, Some("%b %e %H:%M:%S %Y"));
        assert_eq!(
            secs(t.parse_bytes(b"Nov  14 22:13:20 2023")),
            (1_700_000_000, 0)
        );
        assert!(t.parse_bytes(b"Nov 14 22:13:20 2023 junk").is_err());
        assert!(t.parse_bytes(b"Foo 14 22:13:20 2023").is_err());
        assert!(TimeParser::new(TimeType::String, Some("%Q"), None).is_err());
    }

    #[test]
    fn zones_and_default_offset() {
        let t =
            TimeParser::new(TimeType::String, Some("%Y-%m-%d %H:%M:%S"), Some("+09:00")).unwrap();
        assert_eq!(
            secs(t.parse_bytes(b"2023-11-15 07:13:20")),
            (1_700_000_000, 0)
        );
        assert!(TimeParser::new(TimeType::String, None, Some("Asia/Tokyo")).is_err());
        let t = p(TimeType::String, Some("%iso8601"));
        assert_eq!(
            secs(t.parse_bytes(b"2023-11-15T07:13:20+09:00")),
            (1_700_000_000, 0)
        );
        assert_eq!(
            secs(t.parse_bytes(b"2023-11-14T22:13:20.5Z")),
            (1_700_000_000, 500_000_000)
        );
        assert!(t.parse_bytes(b"2023-11-14 22:13:20Z").is_err());
    }

    #[test]
    fn auto_reads_common_forms() {
        let t = p(TimeType::String, None);
        for s in [
            "2023-11-14T22:13:20Z",
            "2023-11-14 22:13:20 UTC",
            "2023-11-15 07:13:20 +0900",
            "2023-11-15T07:13:20.000+09:00",
            "15/Nov/2023:07:13:20 +0900",
        ] {
            assert_eq!(secs(t.parse_bytes(s.as_bytes())), (1_700_000_000, 0), "{s}");
        }
        assert!(t.parse_bytes(b"yesterday").is_err());
    }

    #[test]
    fn numeric_types() {
        let f = p(TimeType::Float, None);
        assert_eq!(
            secs(f.parse(&Value::Float(1_700_000_000.25))),
            (1_700_000_000, 250_000_000)
        );
        assert_eq!(
            secs(f.parse(&Value::str("1700000000.123456789123"))),
            (1_700_000_000, 123_456_789)
        );
        assert_eq!(secs(f.parse(&Value::UInt(5))), (5, 0));
        assert!(f.parse(&Value::Int(-5)).is_err());
        assert!(f.parse(&Value::str("abc")).is_err());
        let u = p(TimeType::Unixtime, None);
        assert_eq!(secs(u.parse(&Value::str("1700000000"))), (1_700_000_000, 0));
        assert_eq!(secs(u.parse(&Value::Float(1.9))), (1, 0));
        let s = p(TimeType::String, Some("%s"));
        assert!(
            s.parse(&Value::UInt(1)).is_err(),
            "string time_type needs a string"
        );
    }

    #[test]
    fn ruby_time_to_s() {
        let mut out = Vec::new();
        write_ruby_time(EventTime::from_secs(1_700_000_000), &mut out);
        assert_eq!(out, b"2023-11-14 22:13:20 +0000");
    }
}
