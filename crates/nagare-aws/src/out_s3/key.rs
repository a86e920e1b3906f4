//! Object keys: `s3_object_key_format` compiled once, rendered per chunk.
//!
//! Rendering order (as fluent-plugin-s3): `%{path}` is inlined first, then every placeholder
//! of the whole template is expanded:
//!
//! | placeholder | value |
//! | --- | --- |
//! | `%{path}` | the `path` parameter (itself a template) |
//! | `%{time_slice}` | the chunk's time formatted with `time_slice_format` |
//! | `%{index}` | the object's sequence number within its key family, formatted with `index_format` (see [`IndexAllocator`]) |
//! | `%{file_extension}` | `gz`, `zst`, `json` or `txt` (from `store_as`) |
//! | `%{hex_random}` | `hex_random_length` hex digits derived from the chunk id (as fluent-plugin-s3: stable across retries) |
//! | `%{uuid_flush}` | a UUID derived from the chunk id (stable across retries; fluent-plugin-s3 draws a new one per attempt) |
//! | `%{hostname}` | this host's name (`NAGARE_HOSTNAME` overrides it) |
//! | `${chunk_id}` | the chunk id, 32 hex digits |
//! | `${tag}`, `${tag[N]}`, `${tag_parts[N]}` | the tag, or its Nth dot-separated part (negative N counts from the end) |
//! | `${KEY}` | the value of record chunk key `KEY` (`<buffer time,KEY>`) |
//! | `%Y %m %d %H %M %S ...` | strftime of the chunk's time |
//!
//! "The chunk's time" is the start of its time slice (`timekey`) when `time` is a chunk key,
//! else the time of the chunk's first event — never the wall clock, so a retried chunk renders
//! the same key.
//!
//! Values that come from data (tag parts, record chunk keys) are sanitised: `/`, `\` and
//! control characters become `_`, and a value of `.` or `..` becomes `_`, so data can add
//! neither prefix levels nor path traversal (the on-disk store maps keys to paths).

pub use nagare_core::civil::{civil_from_days, days_from_civil};
use nagare_core::{ChunkId, ChunkKey};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Longest key S3 accepts (bytes of UTF-8).
pub const MAX_KEY_BYTES: usize = 1024;

// ---- strftime ----------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum TItem {
    Lit(String),
    Year,
    Century,
    Year2,
    Month,
    Day,
    DaySpace,
    YDay,
    Hour,
    HourSpace,
    Hour12,
    Min,
    Sec,
    /// Fraction digits (`%L` = 3, `%N` = 9, `%6N` = 6).
    Frac(u8),
    /// `%z` (+0900) / `%:z` (+09:00).
    Zone(bool),
    ZoneName,
    Epoch,
    MonAbbr,
    MonFull,
    WdayAbbr,
    WdayFull,
    /// `%u` (1..7, Monday = 1).
    WdayMon1,
    /// `%w` (0..6, Sunday = 0).
    WdaySun0,
    AmPm,
}

/// A compiled strftime format (the subset Fluentd users write in keys and time formats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeFormat {
    items: Vec<TItem>,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Parses one strftime conversion starting after `%`; returns the items and the bytes used.
fn parse_conversion(s: &str) -> Result<(Vec<TItem>, usize), String> {
    let b = s.as_bytes();
    let mut used = 0;
    let mut colon = false;
    let mut width: Option<u8> = None;
    if b.first() == Some(&b':') {
        colon = true;
        used = 1;
    }
    if let Some(d) = b.get(used).filter(|d| d.is_ascii_digit()) {
        width = Some(d - b'0');
        used += 1;
    }
    let Some(&c) = b.get(used) else {
        return Err("a format ends with a lone '%'".into());
    };
    used += 1;
    use TItem::*;
    let items = match (c, colon, width) {
        (b'z', _, None) => vec![Zone(colon)],
        (b'N', false, w) => vec![Frac(w.unwrap_or(9).clamp(1, 9))],
        (_, true, _) | (_, _, Some(_)) => {
            return Err(format!("unsupported strftime conversion '%{}'", &s[..used]))
        }
        (b'Y', ..) => vec![Year],
        (b'C', ..) => vec![Century],
        (b'y', ..) => vec![Year2],
        (b'm', ..) => vec![Month],
        (b'd', ..) => vec![Day],
        (b'e', ..) => vec![DaySpace],
        (b'j', ..) => vec![YDay],
        (b'H', ..) => vec![Hour],
        (b'k', ..) => vec![HourSpace],
        (b'I', ..) => vec![Hour12],
        (b'M', ..) => vec![Min],
        (b'S', ..) => vec![Sec],
        (b'L', ..) => vec![Frac(3)],
        (b'Z', ..) => vec![ZoneName],
        (b's', ..) => vec![Epoch],
        (b'b', ..) | (b'h', ..) => vec![MonAbbr],
        (b'B', ..) => vec![MonFull],
        (b'a', ..) => vec![WdayAbbr],
        (b'A', ..) => vec![WdayFull],
        (b'u', ..) => vec![WdayMon1],
        (b'w', ..) => vec![WdaySun0],
        (b'p', ..) => vec![AmPm],
        (b'F', ..) => vec![Year, Lit("-".into()), Month, Lit("-".into()), Day],
        (b'T', ..) => vec![Hour, Lit(":".into()), Min, Lit(":".into()), Sec],
        (b'R', ..) => vec![Hour, Lit(":".into()), Min],
        (b'D', ..) => vec![Month, Lit("/".into()), Day, Lit("/".into()), Year2],
        (b'%', ..) => vec![Lit("%".into())],
        _ => {
            return Err(format!(
                "unsupported strftime conversion '%{}'",
                s.get(..used).unwrap_or("")
            ))
        }
    };
    Ok((items, used))
}

impl TimeFormat {
    /// Compiles `fmt`; an unknown conversion is an error (with its text).
    pub fn parse(fmt: &str) -> Result<TimeFormat, String> {
        let mut items = Vec::new();
        let mut lit = String::new();
        let mut rest = fmt;
        while let Some(p) = rest.find('%') {
            lit.push_str(&rest[..p]);
            let (its, used) = parse_conversion(&rest[p + 1..])?;
            for it in its {
                match it {
                    TItem::Lit(s) => lit.push_str(&s),
                    other => {
                        if !lit.is_empty() {
                            items.push(TItem::Lit(std::mem::take(&mut lit)));
                        }
                        items.push(other);
                    }
                }
            }
            rest = &rest[p + 1 + used..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            items.push(TItem::Lit(lit));
        }
        Ok(TimeFormat { items })
    }

    /// Whether the format has any conversion at all.
    pub fn is_constant(&self) -> bool {
        self.items.iter().all(|i| matches!(i, TItem::Lit(_)))
    }

    /// Formats `secs.nanos` (unix time) shifted by `zone` into `out`.
    pub fn format(&self, secs: i64, nanos: u32, zone: Zone, out: &mut String) {
        let local = secs + zone.offset_secs as i64;
        let days = local.div_euclid(86_400);
        let sod = local.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let (hh, mm, ss) = (sod / 3600, sod / 60 % 60, sod % 60);
        for it in &self.items {
            match it {
                TItem::Lit(s) => out.push_str(s),
                TItem::Year => {
                    let _ = write!(out, "{y:04}");
                }
                TItem::Century => {
                    let _ = write!(out, "{:02}", y.div_euclid(100));
                }
                TItem::Year2 => {
                    let _ = write!(out, "{:02}", y.rem_euclid(100));
                }
                TItem::Month => {
                    let _ = write!(out, "{m:02}");
                }
                TItem::Day => {
                    let _ = write!(out, "{d:02}");
                }
                TItem::DaySpace => {
                    let _ = write!(out, "{d:>2}");
                }
                TItem::YDay => {
                    let _ = write!(out, "{:03}", days - days_from_civil(y, 1, 1) + 1);
                }
                TItem::Hour => {
                    let _ = write!(out, "{hh:02}");
                }
                TItem::HourSpace => {
                    let _ = write!(out, "{hh:>2}");
                }
                TItem::Hour12 => {
                    let h = if hh % 12 == 0 { 12 } else { hh % 12 };
                    let _ = write!(out, "{h:02}");
                }
                TItem::Min => {
                    let _ = write!(out, "{mm:02}");
                }
                TItem::Sec => {
                    let _ = write!(out, "{ss:02}");
                }
                TItem::Frac(n) => {
                    let v = nanos / 10u32.pow(9 - *n as u32);
                    let _ = write!(out, "{v:0w$}", w = *n as usize);
                }
                TItem::Zone(colon) => {
                    let o = zone.offset_secs;
                    let sign = if o < 0 { '-' } else { '+' };
                    let a = o.unsigned_abs();
                    if *colon {
                        let _ = write!(out, "{sign}{:02}:{:02}", a / 3600, a / 60 % 60);
                    } else {
                        let _ = write!(out, "{sign}{:02}{:02}", a / 3600, a / 60 % 60);
                    }
                }
                TItem::ZoneName => {
                    if zone.offset_secs == 0 {
                        out.push_str("UTC");
                    } else {
                        TimeFormat {
                            items: vec![TItem::Zone(false)],
                        }
                        .format(secs, nanos, zone, out);
                    }
                }
                TItem::Epoch => {
                    let _ = write!(out, "{secs}");
                }
                TItem::MonAbbr => out.push_str(&MONTHS[(m - 1) as usize][..3]),
                TItem::MonFull => out.push_str(MONTHS[(m - 1) as usize]),
                TItem::WdayAbbr => out.push_str(&WDAYS[weekday(days)][..3]),
                TItem::WdayFull => out.push_str(WDAYS[weekday(days)]),
                TItem::WdayMon1 => {
                    let w = weekday(days);
                    let _ = write!(out, "{}", if w == 0 { 7 } else { w });
                }
                TItem::WdaySun0 => {
                    let _ = write!(out, "{}", weekday(days));
                }
                TItem::AmPm => out.push_str(if hh < 12 { "AM" } else { "PM" }),
            }
        }
    }
}

fn weekday(days: i64) -> usize {
    // 1970-01-01 was a Thursday.
    (days + 4).rem_euclid(7) as usize
}

/// A fixed UTC offset (`timekey_zone`, `timezone`): `UTC`, `Z`, `+09:00`, `-0700`, `+09`.
/// Named zones with daylight saving (`Asia/Tokyo`) are refused: a key layout that shifts
/// twice a year is a trap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Zone {
    pub offset_secs: i32,
}

impl Zone {
    pub const UTC: Zone = Zone { offset_secs: 0 };

    pub fn parse(s: &str) -> Result<Zone, String> {
        let t = s.trim();
        if t.is_empty() || t.eq_ignore_ascii_case("utc") || t == "Z" || t == "GMT" {
            return Ok(Zone::UTC);
        }
        let bad = || {
            format!("time zone '{s}' is not supported: use UTC or a fixed offset such as +09:00")
        };
        let (sign, rest) = match t.as_bytes()[0] {
            b'+' => (1, &t[1..]),
            b'-' => (-1, &t[1..]),
            _ => return Err(bad()),
        };
        let digits: String = rest.chars().filter(|c| *c != ':').collect();
        if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
            return Err(bad());
        }
        let h: i32 = digits[..2].parse().map_err(|_| bad())?;
        let m: i32 = if digits.len() == 4 {
            digits[2..].parse().map_err(|_| bad())?
        } else {
            0
        };
        if h > 23 || m > 59 {
            return Err(bad());
        }
        Ok(Zone {
            offset_secs: sign * (h * 3600 + m * 60),
        })
    }
}

/// fluent-plugin-s3's default `time_slice_format` for a `timekey` (seconds).
pub fn default_time_slice_format(timekey: Option<u64>) -> &'static str {
    match timekey {
        None => "%Y%m%d%H",
        Some(t) if t < 60 => "%Y%m%d%H%M%S",
        Some(t) if t < 3600 => "%Y%m%d%H%M",
        Some(t) if t < 86_400 => "%Y%m%d%H",
        Some(_) => "%Y%m%d",
    }
}

// ---- index_format --------------------------------------------------------------------------

/// `index_format`: one printf integer conversion (`%d`, `%03d`, `%x`, `%08X`, `%o`), with
/// optional literal text around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFormat {
    before: String,
    after: String,
    width: usize,
    zero: bool,
    radix: u32,
    upper: bool,
}

impl IndexFormat {
    pub fn parse(s: &str) -> Result<IndexFormat, String> {
        let bad =
            || format!("index_format '{s}' must hold one integer conversion such as %d or %03d");
        let p = s.find('%').ok_or_else(bad)?;
        let rest = &s[p + 1..];
        let zero = rest.starts_with('0');
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let width = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| bad())?
        };
        let conv = rest[digits.len()..].chars().next().ok_or_else(bad)?;
        let (radix, upper) = match conv {
            'd' | 'i' | 'u' => (10, false),
            'x' => (16, false),
            'X' => (16, true),
            'o' => (8, false),
            _ => return Err(bad()),
        };
        let after = rest[digits.len() + 1..].to_string();
        if after.contains('%') || width > 20 {
            return Err(bad());
        }
        Ok(IndexFormat {
            before: s[..p].to_string(),
            after,
            width,
            zero,
            radix,
            upper,
        })
    }

    pub fn write(&self, i: u64, out: &mut String) {
        out.push_str(&self.before);
        let w = self.width;
        let _ = match (self.radix, self.upper, self.zero) {
            (16, true, true) => write!(out, "{i:0w$X}"),
            (16, true, false) => write!(out, "{i:w$X}"),
            (16, false, true) => write!(out, "{i:0w$x}"),
            (16, false, false) => write!(out, "{i:w$x}"),
            (8, _, true) => write!(out, "{i:0w$o}"),
            (8, _, false) => write!(out, "{i:w$o}"),
            (_, _, true) => write!(out, "{i:0w$}"),
            (_, _, false) => write!(out, "{i:w$}"),
        };
        out.push_str(&self.after);
    }

    /// Reads an index written by [`IndexFormat::write`] at the start of `s`.
    fn read(&self, s: &str) -> Option<u64> {
        let s = s.strip_prefix(self.before.as_str())?;
        let s = s.trim_start_matches(' ');
        let n = s
            .bytes()
            .take_while(|b| (*b as char).is_digit(self.radix))
            .count();
        u64::from_str_radix(s.get(..n).filter(|d| !d.is_empty())?, self.radix).ok()
    }
}

// ---- the key template ----------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    Time(TimeFormat),
    TimeSlice,
    Index,
    HexRandom,
    UuidFlush,
    ChunkId,
    Tag,
    TagPart(i64),
    Var(String),
}

/// How a key format keeps objects apart, and what a retry does (see `docs/plugins/out_s3.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    /// `%{index}`: conditional PUT (`If-None-Match: *`); on 412 the next free index. A retried
    /// chunk reuses the key of its earlier attempt, and finding that key taken by itself (an
    /// attempt whose reply was lost) counts as success.
    Indexed,
    /// Keys unique per chunk (`${chunk_id}`, `%{uuid_flush}`, `%{hex_random}` of 32 digits):
    /// a retry renders the same key; the object already being there means it was written.
    PerChunk,
    /// `%{hex_random}` shorter than 32 digits and no `%{index}`: per-chunk, but two chunks can
    /// draw the same digits; such a collision is detected (never overwritten) and reported as
    /// an unrecoverable error.
    PerChunkShort,
}

/// Placeholder names `%{...}` understood by [`KeyTemplate::compile`].
pub const PERCENT_PLACEHOLDERS: &[&str] = &[
    "path",
    "time_slice",
    "index",
    "file_extension",
    "hex_random",
    "uuid_flush",
    "hostname",
];

/// What rendering a key needs to know about the chunk.
#[derive(Debug, Clone, Copy)]
pub struct KeyInput<'a> {
    /// Unix seconds: the time slice start, or the first event's time.
    pub time: i64,
    pub tag: &'a str,
    pub chunk_id: &'a ChunkId,
    pub key: &'a ChunkKey,
}

/// Constant parts a template is compiled with.
#[derive(Debug, Clone)]
pub struct KeyParams<'a> {
    pub path: &'a str,
    pub file_extension: &'a str,
    pub hostname: &'a str,
    pub time_slice_format: &'a str,
    pub index_format: &'a str,
    pub hex_random_length: usize,
    pub zone: Zone,
}

/// A compiled `s3_object_key_format`.
#[derive(Debug, Clone)]
pub struct KeyTemplate {
    segs: Vec<Seg>,
    time_slice: TimeFormat,
    index: IndexFormat,
    hex_len: usize,
    zone: Zone,
    mode: KeyMode,
    /// Record chunk keys the template reads (`${service}`).
    vars: Vec<String>,
    uses_tag: bool,
    uses_time: bool,
}

impl KeyTemplate {
    /// Compiles `format` (with `%{path}` inlined). Errors name the offending placeholder.
    pub fn compile(format: &str, p: &KeyParams<'_>) -> Result<KeyTemplate, String> {
        if p.hex_random_length == 0 || p.hex_random_length > 32 {
            return Err(format!(
                "hex_random_length {} is out of range 1..=32",
                p.hex_random_length
            ));
        }
        let full = format.replace("%{path}", p.path);
        let mut segs: Vec<Seg> = Vec::new();
        let mut lit = String::new();
        let flush = |lit: &mut String, segs: &mut Vec<Seg>| {
            if !lit.is_empty() {
                segs.push(Seg::Lit(std::mem::take(lit)));
            }
        };
        let mut rest = full.as_str();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("%{") {
                let end = r
                    .find('}')
                    .ok_or_else(|| format!("unterminated placeholder in '{format}'"))?;
                let name = &r[..end];
                match name {
                    "time_slice" => {
                        flush(&mut lit, &mut segs);
                        segs.push(Seg::TimeSlice)
                    }
                    "index" => {
                        flush(&mut lit, &mut segs);
                        segs.push(Seg::Index)
                    }
                    "hex_random" => {
                        flush(&mut lit, &mut segs);
                        segs.push(Seg::HexRandom)
                    }
                    "uuid_flush" => {
                        flush(&mut lit, &mut segs);
                        segs.push(Seg::UuidFlush)
                    }
                    "file_extension" => lit.push_str(p.file_extension),
                    "hostname" => lit.push_str(&sanitize(p.hostname.as_bytes())),
                    other => {
                        return Err(format!(
                            "unknown placeholder %{{{other}}} in s3_object_key_format (known: {})",
                            PERCENT_PLACEHOLDERS
                                .iter()
                                .map(|n| format!("%{{{n}}}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    }
                }
                rest = &r[end + 1..];
            } else if let Some(r) = rest.strip_prefix("${") {
                let end = r
                    .find('}')
                    .ok_or_else(|| format!("unterminated placeholder in '{format}'"))?;
                let name = r[..end].trim();
                flush(&mut lit, &mut segs);
                segs.push(parse_dollar(name)?);
                rest = &r[end + 1..];
            } else if rest.starts_with('%') {
                let (items, used) = parse_conversion(&rest[1..])?;
                for it in items {
                    match it {
                        TItem::Lit(s) => lit.push_str(&s),
                        other => {
                            flush(&mut lit, &mut segs);
                            match segs.last_mut() {
                                Some(Seg::Time(tf)) => tf.items.push(other),
                                _ => segs.push(Seg::Time(TimeFormat { items: vec![other] })),
                            }
                        }
                    }
                }
                rest = &rest[1 + used..];
            } else {
                let n = rest
                    .find(['%', '$'])
                    .map(|n| if n == 0 { 1 } else { n })
                    .unwrap_or(rest.len());
                lit.push_str(&rest[..n]);
                rest = &rest[n..];
            }
        }
        flush(&mut lit, &mut segs);
        let has = |f: &dyn Fn(&Seg) -> bool| segs.iter().any(f);
        let mode = if has(&|s| matches!(s, Seg::Index)) {
            KeyMode::Indexed
        } else if has(&|s| matches!(s, Seg::ChunkId | Seg::UuidFlush))
            || (has(&|s| matches!(s, Seg::HexRandom)) && p.hex_random_length == 32)
        {
            KeyMode::PerChunk
        } else if has(&|s| matches!(s, Seg::HexRandom)) {
            KeyMode::PerChunkShort
        } else {
            return Err(format!(
                "s3_object_key_format '{format}' gives every chunk of a time slice the same key: \
                 add %{{index}}, ${{chunk_id}}, %{{uuid_flush}} or %{{hex_random}}"
            ));
        };
        let vars = segs
            .iter()
            .filter_map(|s| match s {
                Seg::Var(v) => Some(v.clone()),
                _ => None,
            })
            .collect();
        let uses_tag = has(&|s| matches!(s, Seg::Tag | Seg::TagPart(_)));
        let uses_time = has(&|s| matches!(s, Seg::Time(_) | Seg::TimeSlice));
        Ok(KeyTemplate {
            time_slice: TimeFormat::parse(p.time_slice_format)
                .map_err(|e| format!("time_slice_format: {e}"))?,
            index: IndexFormat::parse(p.index_format)?,
            hex_len: p.hex_random_length,
            zone: p.zone,
            mode,
            vars,
            uses_tag,
            uses_time,
            segs,
        })
    }

    pub fn mode(&self) -> KeyMode {
        self.mode
    }

    /// Record chunk keys the template reads.
    pub fn vars(&self) -> &[String] {
        &self.vars
    }

    pub fn uses_tag(&self) -> bool {
        self.uses_tag
    }

    pub fn uses_time(&self) -> bool {
        self.uses_time
    }

    /// Renders the key for `index` (ignored without `%{index}`).
    pub fn render(&self, input: &KeyInput<'_>, index: u64) -> String {
        let mut out = String::with_capacity(128);
        self.render_into(input, Some(index), usize::MAX, &mut out);
        out
    }

    /// The key family: the key with `%{index}` left open (the allocator's map key).
    pub fn family(&self, input: &KeyInput<'_>) -> String {
        let mut out = String::with_capacity(128);
        self.render_into(input, None, usize::MAX, &mut out);
        out
    }

    /// Everything before the first `%{index}`: the prefix to list when looking for the highest
    /// index in use.
    pub fn index_prefix(&self, input: &KeyInput<'_>) -> String {
        let first = self
            .segs
            .iter()
            .position(|s| matches!(s, Seg::Index))
            .unwrap_or(self.segs.len());
        let mut out = String::with_capacity(128);
        self.render_into(input, Some(0), first, &mut out);
        out
    }

    /// The index `key` was rendered with, if it belongs to `input`'s family.
    pub fn parse_index(&self, input: &KeyInput<'_>, prefix: &str, key: &str) -> Option<u64> {
        let i = self.index.read(key.strip_prefix(prefix)?)?;
        (self.render(input, i) == key).then_some(i)
    }

    fn render_into(&self, input: &KeyInput<'_>, index: Option<u64>, upto: usize, out: &mut String) {
        for seg in self.segs.iter().take(upto) {
            match seg {
                Seg::Lit(s) => out.push_str(s),
                Seg::Time(tf) => tf.format(input.time, 0, self.zone, out),
                Seg::TimeSlice => self.time_slice.format(input.time, 0, self.zone, out),
                Seg::Index => match index {
                    Some(i) => self.index.write(i, out),
                    None => out.push('\0'),
                },
                Seg::HexRandom => {
                    let h = input.chunk_id.hex();
                    out.extend(h.chars().rev().take(self.hex_len));
                }
                Seg::UuidFlush => write_uuid(input.chunk_id, out),
                Seg::ChunkId => out.push_str(&input.chunk_id.hex()),
                Seg::Tag => out.push_str(&sanitize(input.tag.as_bytes())),
                Seg::TagPart(n) => {
                    if let Some(p) = nagare_core::Tag::part(input.tag.as_bytes(), *n) {
                        out.push_str(&sanitize(p));
                    }
                }
                Seg::Var(name) => {
                    if let Some(v) = input.key.var(name) {
                        out.push_str(&sanitize(v));
                    }
                }
            }
        }
    }
}

fn parse_dollar(name: &str) -> Result<Seg, String> {
    if name == "tag" {
        return Ok(Seg::Tag);
    }
    if name == "chunk_id" {
        return Ok(Seg::ChunkId);
    }
    if let Some(n) = nagare_core::Tag::parse_part_placeholder(name) {
        return n.map(Seg::TagPart);
    }
    if name.is_empty() {
        return Err("empty placeholder ${}".into());
    }
    Ok(Seg::Var(name.to_string()))
}

/// A UUID (version 4 layout) made from the chunk id.
fn write_uuid(id: &ChunkId, out: &mut String) {
    let mut b = id.0;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        let _ = write!(out, "{x:02x}");
    }
}

/// Makes a data value safe as (part of) one key segment.
pub fn sanitize(v: &[u8]) -> std::borrow::Cow<'_, str> {
    let s = String::from_utf8_lossy(v);
    if s == "." || s == ".." {
        return "_".into();
    }
    if s.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
        return s
            .chars()
            .map(|c| {
                if c == '/' || c == '\\' || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect::<String>()
            .into();
    }
    s
}

// ---- index allocation ----------------------------------------------------------------------

/// Hands out `%{index}` values per key family, so the flush threads of one process never
/// race for the same key; other processes and hosts are kept apart by the conditional PUT.
#[derive(Debug, Default)]
pub struct IndexAllocator {
    next: Mutex<HashMap<String, u64>>,
}

/// Families remembered before the map is cleared (old time slices are not written again;
/// forgetting one costs at most one 412 and one LIST).
const MAX_FAMILIES: usize = 4096;

impl IndexAllocator {
    /// The next index for `family`.
    pub fn take(&self, family: &str) -> u64 {
        let mut m = self.next.lock().unwrap_or_else(|e| e.into_inner());
        if !m.contains_key(family) && m.len() >= MAX_FAMILIES {
            m.clear();
        }
        let e = m.entry(family.to_string()).or_insert(0);
        let i = *e;
        *e += 1;
        i
    }

    /// Records that indexes below `n` are taken (after a 412 and a LIST).
    pub fn raise_to(&self, family: &str, n: u64) {
        let mut m = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(family.to_string()).or_insert(0);
        *e = (*e).max(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use nagare_core::Tag;

    fn params<'a>(path: &'a str, slice: &'a str) -> KeyParams<'a> {
        KeyParams {
            path,
            file_extension: "gz",
            hostname: "host-a",
            time_slice_format: slice,
            index_format: "%d",
            hex_random_length: 4,
            zone: Zone::UTC,
        }
    }

    fn ck(service: &str, timekey: i64) -> ChunkKey {
        ChunkKey {
            tag: Some(Tag::new("app.condor")),
            timekey: Some(timekey),
            vars: vec![("service".into(), Bytes::from(service.to_string()))],
        }
    }

    #[test]
    fn strftime_and_civil_dates() {
        let f = TimeFormat::parse("%Y-%m-%dT%H:%M:%S.%L%z %j %a %b %s %%").unwrap();
        let mut s = String::new();
        f.format(1_700_000_000, 123_456_789, Zone::UTC, &mut s);
        assert_eq!(s, "2023-11-14T22:13:20.123+0000 318 Tue Nov 1700000000 %");
        let mut s = String::new();
        f.format(1_700_000_000, 0, Zone::parse("+09:00").unwrap(), &mut s);
        assert!(s.starts_with("2023-11-15T07:13:20.000+0900"), "{s}");
        for d in [-800_000, -1, 0, 59, 365, 11_016, 19_675, 2_932_896] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        assert!(TimeFormat::parse("%Q").is_err());
        assert!(Zone::parse("Asia/Tokyo").is_err());
        assert_eq!(
            Zone::parse("-0730").unwrap().offset_secs,
            -(7 * 3600 + 1800)
        );
    }

    #[test]
    fn the_fluent_plugin_s3_default_format() {
        let t = KeyTemplate::compile(
            "%{path}%{time_slice}_%{index}.%{file_extension}",
            &params("logs/", "%Y%m%d%H"),
        )
        .unwrap();
        assert_eq!(t.mode(), KeyMode::Indexed);
        let id = ChunkId([7; 16]);
        let k = ck("condor", 1_700_000_000);
        let inp = KeyInput {
            time: 1_700_000_000,
            tag: "app.condor",
            chunk_id: &id,
            key: &k,
        };
        assert_eq!(t.render(&inp, 0), "logs/2023111422_0.gz");
        assert_eq!(t.render(&inp, 12), "logs/2023111422_12.gz");
        assert_eq!(t.index_prefix(&inp), "logs/2023111422_");
        assert_eq!(t.family(&inp), "logs/2023111422_\0.gz");
        assert_eq!(
            t.parse_index(&inp, "logs/2023111422_", "logs/2023111422_12.gz"),
            Some(12)
        );
        assert_eq!(
            t.parse_index(&inp, "logs/2023111422_", "logs/2023111422_12.gz.bak"),
            None
        );
    }

    #[test]
    fn the_seed_layout_with_five_minute_slices() {
        // applications/<service>/app/%Y/%m/%d/%H/%M_<host>_<n>.gz
        let t = KeyTemplate::compile(
            "%{path}%M_%{hostname}_%{index}.%{file_extension}",
            &params("applications/${service}/app/%Y/%m/%d/%H/", "%Y%m%d%H%M"),
        )
        .unwrap();
        let id = ChunkId([1; 16]);
        let slice: i64 = 1_700_000_100 / 300 * 300;
        let k = ck("condor", slice);
        let inp = KeyInput {
            time: slice,
            tag: "app.condor",
            chunk_id: &id,
            key: &k,
        };
        assert_eq!(
            t.render(&inp, 3),
            "applications/condor/app/2023/11/14/22/15_host-a_3.gz"
        );
        assert_eq!(t.vars(), &["service".to_string()]);
        assert!(t.uses_time());
    }

    #[test]
    fn per_chunk_placeholders_are_stable_and_distinct() {
        let t = KeyTemplate::compile(
            "${tag}/${tag[1]}/${tag[-1]}/%{hex_random}/%{uuid_flush}/${chunk_id}",
            &params("", "%Y"),
        )
        .unwrap();
        assert_eq!(t.mode(), KeyMode::PerChunk);
        let id = ChunkId([0xab, 0xcd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34]);
        let k = ChunkKey::default();
        let inp = KeyInput {
            time: 0,
            tag: "docker.condor.x1",
            chunk_id: &id,
            key: &k,
        };
        assert_eq!(
            t.render(&inp, 0),
            "docker.condor.x1/condor/x1/4321/abcd0000-0000-4000-8000-000000001234/abcd0000000000000000000000001234"
        );
        let short = KeyTemplate::compile("a/%{hex_random}", &params("", "%Y")).unwrap();
        assert_eq!(short.mode(), KeyMode::PerChunkShort);
    }

    #[test]
    fn data_cannot_escape_its_segment() {
        assert_eq!(sanitize(b"a/../b"), "a_.._b");
        assert_eq!(sanitize(b".."), "_");
        assert_eq!(sanitize(b"x\ny\xff"), "x_y\u{FFFD}");
        let t = KeyTemplate::compile("${service}/%{index}", &params("", "%Y")).unwrap();
        let id = ChunkId([0; 16]);
        let k = ck("../../etc", 0);
        let inp = KeyInput {
            time: 0,
            tag: "t",
            chunk_id: &id,
            key: &k,
        };
        assert_eq!(t.render(&inp, 0), ".._.._etc/0");
    }

    #[test]
    fn config_errors_are_named() {
        let e = KeyTemplate::compile("%{path}%{time_slice}.gz", &params("", "%Y")).unwrap_err();
        assert!(e.contains("same key"), "{e}");
        let e = KeyTemplate::compile("%{nope}_%{index}", &params("", "%Y")).unwrap_err();
        assert!(e.contains("%{nope}"), "{e}");
        let e = KeyTemplate::compile(
            "%{index}",
            &KeyParams {
                index_format: "%s",
                ..params("", "%Y")
            },
        )
        .unwrap_err();
        assert!(e.contains("index_format"), "{e}");
    }

    #[test]
    fn index_formats_round_trip() {
        for f in ["%d", "%03d", "%x", "%04X", "%o", "n%02d-"] {
            let fmt = IndexFormat::parse(f).unwrap();
            for i in [0u64, 7, 10, 255, 4096] {
                let mut s = String::new();
                fmt.write(i, &mut s);
                assert_eq!(fmt.read(&s), Some(i), "{f} {s}");
            }
        }
        let mut s = String::new();
        IndexFormat::parse("%03d").unwrap().write(7, &mut s);
        assert_eq!(s, "007");
    }

    #[test]
    fn the_allocator_never_hands_out_an_index_twice() {
        let a = std::sync::Arc::new(IndexAllocator::default());
        let mut hs = Vec::new();
        for _ in 0..4 {
            let a = a.clone();
            hs.push(std::thread::spawn(move || {
                (0..1000).map(|_| a.take("f")).collect::<Vec<_>>()
            }));
        }
        let mut all: Vec<u64> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 4000);
        a.raise_to("f", 10_000);
        assert_eq!(a.take("f"), 10_000);
    }
}
