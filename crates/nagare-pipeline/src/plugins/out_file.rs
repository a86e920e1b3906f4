//! `@type file`: writes events to local files, one line per event.
//!
//! ```text
//! emit(stream) -> per event: path = template(event time, tag, chunk keys) -> format line
//!              -> per path: [gzip member] -> write(2) on a cached handle -> Ok = committed
//! ```
//!
//! * `path`: time placeholders from the **event** time, in UTC (`%Y %y %m %d %H %M %S %j %s
//!   %%`), `${tag}`, `${tag[N]}` / `${tag_parts[N]}`, and `${KEY}` for a record key listed as a
//!   chunk key in `<buffer KEY>` (as Fluentd's chunk-key placeholders). Substituted values
//!   cannot leave the directory: `/` becomes `_`, and `.`/`..` become `_`.
//!   The path is used as written: Fluentd appends `.%Y%m%d`, `_N` and `.log` (`.log.gz`);
//!   Nagare does not (write the suffix you want into `path`).
//! * `append` (Fluentd default `false`): `true` appends to an existing file; `false` never
//!   appends to a file this process did not create: if the path already exists when it is first
//!   opened, `_1`, `_2`, ... is put before the first `.` of the file name. (Fluentd writes one
//!   new file per buffer chunk; Nagare writes synchronously, so one file per emit would be
//!   thousands of tiny files.)
//! * `<format>`: `out_file` (default, as Fluentd: `TIME<TAB>TAG<TAB>JSON`; `output_time`,
//!   `output_tag`, `delimiter` TAB|SPACE|COMMA, `time_format`), `json`, `single_value`
//!   (`message_key`, `add_newline`), `ltsv` (`delimiter`, `label_delimiter`). The v0.12 form
//!   `format json` is accepted too.
//! * `<inject>`: `tag_key`, `time_key` (`time_type` `float` (default: written as the string
//!   `"SECS.NANOSECONDS"`, exact, where Fluentd writes a lossy JSON float), `unixtime`,
//!   `string` with `time_format`), `hostname_key` (+ `hostname`).
//! * `compress gzip`: each write is one gzip member appended to the file (a file of several
//!   members is still one valid gzip stream).
//! * `<buffer>` is accepted and validated (chunk keys, `timekey`, ...), but the output writes
//!   synchronously: an emit is committed once the bytes are in the file (the page cache; no
//!   fsync).
//! * Times are UTC; `localtime true` and other `timezone`s are refused at load.

use crate::plugin::OutputPlugin;
use crate::BuildCtx;
use flate2::write::GzEncoder;
use nagare_config::{ConfigError, Section};
use nagare_core::ack::Committed;
use nagare_core::civil::{civil_from_days, days_from_civil};
use nagare_core::json::{write_record, JsonStats};
use nagare_core::metrics::{Counter, ReasonCounters};
use nagare_core::ratelimit::LogLimiter;
use nagare_core::{EmitError, Event, EventStream, EventTime, Record, Value};
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Open files kept per output (least recently used closed first).
const MAX_OPEN_FILES: usize = 64;
/// Paths remembered as created by this process (for `append false`).
const MAX_REMEMBERED_PATHS: usize = 4096;

// ---- time formatting -------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum TimeItem {
    Lit(Vec<u8>),
    Year,
    Year2,
    Month,
    Day,
    DaySpace,
    YDay,
    Hour,
    Hour12,
    Min,
    Sec,
    /// Fraction digits (3 for `%L`, 9 for `%N`, `%3N`, `%6N`, ...).
    Frac(usize),
    /// `%z` (+0000) or `%:z` (+00:00).
    Zone(bool),
    ZoneName,
    Epoch,
    MonthName,
    WeekdayName,
    AmPm,
}

/// A compiled `strftime` subset, always in UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeFormat(Vec<TimeItem>);

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

impl TimeFormat {
    /// `%Y %y %m %d %e %j %H %I %M %S %L %N %3N %6N %9N %z %:z %Z %s %b %a %p %F %T %%`.
    pub fn compile(f: &str) -> Result<TimeFormat, String> {
        let mut items = Vec::new();
        let mut lit = Vec::new();
        let mut chars = f.chars().peekable();
        let push = |items: &mut Vec<TimeItem>, lit: &mut Vec<u8>, it: TimeItem| {
            if !lit.is_empty() {
                items.push(TimeItem::Lit(std::mem::take(lit)));
            }
            items.push(it);
        };
        while let Some(c) = chars.next() {
            if c != '%' {
                let mut b = [0u8; 4];
                lit.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                continue;
            }
            let mut width = None;
            while let Some(d) = chars.peek().copied().filter(|d| d.is_ascii_digit()) {
                width = Some(width.unwrap_or(0) * 10 + d.to_digit(10).unwrap_or(0) as usize);
                chars.next();
            }
            let Some(d) = chars.next() else {
                return Err(format!("time format {f:?} ends with '%'"));
            };
            let it = match d {
                'Y' => TimeItem::Year,
                'y' => TimeItem::Year2,
                'm' => TimeItem::Month,
                'd' => TimeItem::Day,
                'e' => TimeItem::DaySpace,
                'j' => TimeItem::YDay,
                'H' => TimeItem::Hour,
                'I' => TimeItem::Hour12,
                'M' => TimeItem::Min,
                'S' => TimeItem::Sec,
                'L' => TimeItem::Frac(width.unwrap_or(3)),
                'N' => TimeItem::Frac(width.unwrap_or(9)),
                'z' => TimeItem::Zone(false),
                ':' if chars.peek() == Some(&'z') => {
                    chars.next();
                    TimeItem::Zone(true)
                }
                'Z' => TimeItem::ZoneName,
                's' => TimeItem::Epoch,
                'b' | 'h' => TimeItem::MonthName,
                'a' => TimeItem::WeekdayName,
                'p' => TimeItem::AmPm,
                'F' => {
                    for it in [TimeItem::Year, TimeItem::Lit(b"-".to_vec()), TimeItem::Month, TimeItem::Lit(b"-".to_vec())] {
                        push(&mut items, &mut lit, it);
                    }
                    TimeItem::Day
                }
                'T' => {
                    for it in [TimeItem::Hour, TimeItem::Lit(b":".to_vec()), TimeItem::Min, TimeItem::Lit(b":".to_vec())] {
                        push(&mut items, &mut lit, it);
                    }
                    TimeItem::Sec
                }
                '%' => {
                    lit.push(b'%');
                    continue;
                }
                other => {
                    return Err(format!(
                        "unsupported time directive %{other} in {f:?} (supported: %Y %y %m %d %e %j %H %I %M %S %L %N %z %:z %Z %s %b %a %p %F %T %%)"
                    ))
                }
            };
            push(&mut items, &mut lit, it);
        }
        if !lit.is_empty() {
            items.push(TimeItem::Lit(lit));
        }
        Ok(TimeFormat(items))
    }

    /// Fluentd's default time output: ISO 8601 with the offset (`2023-11-14T22:13:20+00:00`).
    pub fn iso8601() -> TimeFormat {
        TimeFormat::compile("%Y-%m-%dT%H:%M:%S%:z").unwrap_or(TimeFormat(Vec::new()))
    }

    /// Whether the format depends on anything finer than `f` (for path rendering caches).
    fn is_empty(&self) -> bool {
        self.0.iter().all(|i| matches!(i, TimeItem::Lit(_)))
    }

    pub fn write(&self, t: EventTime, out: &mut Vec<u8>) {
        let secs = t.secs() as i64;
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let num = |out: &mut Vec<u8>, v: i64, w: usize| {
            let _ = write!(out, "{v:0w$}");
        };
        for it in &self.0 {
            match it {
                TimeItem::Lit(l) => out.extend_from_slice(l),
                TimeItem::Year => num(out, y, 4),
                TimeItem::Year2 => num(out, y.rem_euclid(100), 2),
                TimeItem::Month => num(out, m, 2),
                TimeItem::Day => num(out, d, 2),
                TimeItem::DaySpace => {
                    let _ = write!(out, "{d:2}");
                }
                TimeItem::YDay => num(out, days - days_from_civil(y, 1, 1) + 1, 3),
                TimeItem::Hour => num(out, rem / 3600, 2),
                TimeItem::Hour12 => num(out, (rem / 3600 + 11) % 12 + 1, 2),
                TimeItem::Min => num(out, rem % 3600 / 60, 2),
                TimeItem::Sec => num(out, rem % 60, 2),
                TimeItem::Frac(w) => {
                    let s = format!("{:09}", t.nanos());
                    let w = (*w).clamp(1, 9);
                    out.extend_from_slice(&s.as_bytes()[..w]);
                }
                TimeItem::Zone(colon) => {
                    out.extend_from_slice(if *colon { b"+00:00" } else { b"+0000" })
                }
                TimeItem::ZoneName => out.extend_from_slice(b"UTC"),
                TimeItem::Epoch => {
                    let _ = write!(out, "{secs}");
                }
                TimeItem::MonthName => out.extend_from_slice(MONTHS[(m - 1) as usize].as_bytes()),
                TimeItem::WeekdayName => {
                    out.extend_from_slice(WEEKDAYS[days.rem_euclid(7) as usize].as_bytes())
                }
                TimeItem::AmPm => out.extend_from_slice(if rem < 43_200 { b"AM" } else { b"PM" }),
            }
        }
    }
}

/// Reads `utc`, `localtime`, `timezone`: only UTC is supported.
fn utc_only(p: &mut nagare_config::Params<'_>, sec: &Section) -> Result<(), ConfigError> {
    let _ = p.bool("utc", true)?;
    if p.bool("localtime", false)? {
        return Err(ConfigError::new(
            sec.param("localtime").map(|x| x.span.clone()).unwrap_or(sec.span.clone()),
            "localtime true is not supported: Nagare writes times in UTC (containers run in UTC); remove it or set utc true",
        ));
    }
    if let Some(tz) = p.str("timezone")? {
        if !matches!(
            tz.as_str(),
            "UTC" | "utc" | "Z" | "+00:00" | "+0000" | "-00:00" | "Etc/UTC"
        ) {
            return Err(ConfigError::new(
                sec.param("timezone")
                    .map(|x| x.span.clone())
                    .unwrap_or(sec.span.clone()),
                format!("timezone '{tz}' is not supported: Nagare writes times in UTC"),
            ));
        }
    }
    Ok(())
}

// ---- path templates --------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum PathSeg {
    Lit(String),
    Time(TimeFormat),
    Tag,
    TagPart(i64),
    Key(Vec<u8>),
}

#[derive(Debug, Clone)]
struct PathTemplate {
    segs: Vec<PathSeg>,
    per_event: bool,
}

fn sanitize(v: &[u8], out: &mut String) {
    let s = String::from_utf8_lossy(v);
    if s == "." || s == ".." {
        out.push('_');
        return;
    }
    for c in s.chars() {
        out.push(if c == '/' || c == '\0' || c == '\\' {
            '_'
        } else {
            c
        });
    }
}

impl PathTemplate {
    fn parse(path: &str, chunk_keys: &[String]) -> Result<PathTemplate, String> {
        let mut segs = Vec::new();
        let mut lit = String::new();
        let mut rest = path;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("${") {
                let end = after
                    .find('}')
                    .ok_or_else(|| format!("unclosed placeholder in path {path:?}"))?;
                let name = &after[..end];
                if !lit.is_empty() {
                    segs.push(PathSeg::Lit(std::mem::take(&mut lit)));
                }
                let index = nagare_core::Tag::parse_part_placeholder(name);
                segs.push(if name == "tag" {
                    PathSeg::Tag
                } else if let Some(i) = index {
                    PathSeg::TagPart(i.map_err(|e| format!("{e} in path {path:?}"))?)
                } else if chunk_keys.iter().any(|k| k == name) {
                    PathSeg::Key(name.as_bytes().to_vec())
                } else {
                    return Err(format!(
                        "placeholder ${{{name}}} in path {path:?} is not a chunk key: list it in <buffer ...> (e.g. <buffer tag,{name}>), or use ${{tag}}, ${{tag[N]}}"
                    ));
                });
                rest = &after[end + 1..];
                continue;
            }
            if rest.starts_with('%') {
                // A run of text with strftime directives up to the next `${`.
                let end = rest.find("${").unwrap_or(rest.len());
                if !lit.is_empty() {
                    segs.push(PathSeg::Lit(std::mem::take(&mut lit)));
                }
                segs.push(PathSeg::Time(TimeFormat::compile(&rest[..end])?));
                rest = &rest[end..];
                continue;
            }
            if rest.starts_with('*') {
                return Err(format!(
                    "'*' in path {path:?} is not supported (Fluentd puts a chunk id there); use ${{tag}} or time placeholders"
                ));
            }
            let c = rest.chars().next().unwrap_or(' ');
            lit.push(c);
            rest = &rest[c.len_utf8()..];
        }
        if !lit.is_empty() {
            segs.push(PathSeg::Lit(lit));
        }
        let per_event = segs.iter().any(|s| {
            matches!(s, PathSeg::Key(_)) || matches!(s, PathSeg::Time(f) if !f.is_empty())
        });
        Ok(PathTemplate { segs, per_event })
    }

    fn render(&self, tag: &[u8], ev: &Event) -> String {
        let mut out = String::new();
        for s in &self.segs {
            match s {
                PathSeg::Lit(l) => out.push_str(l),
                PathSeg::Time(f) => {
                    let mut b = Vec::new();
                    f.write(ev.time, &mut b);
                    out.push_str(&String::from_utf8_lossy(&b));
                }
                PathSeg::Tag => sanitize(tag, &mut out),
                PathSeg::TagPart(i) => {
                    if let Some(p) = nagare_core::Tag::part(tag, *i) {
                        sanitize(p, &mut out);
                    }
                }
                PathSeg::Key(k) => {
                    if let Some(v) = ev.record.get_str(k) {
                        sanitize(v, &mut out);
                    } else if let Some(v) = ev.record.get(k) {
                        sanitize(v.to_text().as_bytes(), &mut out);
                    }
                }
            }
        }
        out
    }
}

// ---- formats ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Format {
    OutFile {
        output_time: bool,
        output_tag: bool,
        delimiter: u8,
        time: TimeFormat,
    },
    Json {
        newline: bool,
    },
    SingleValue {
        key: Vec<u8>,
        newline: bool,
    },
    Ltsv {
        delimiter: String,
        label_delimiter: String,
        newline: bool,
    },
}

#[derive(Debug, Clone, Default)]
struct Inject {
    tag_key: Option<Vec<u8>>,
    time_key: Option<Vec<u8>>,
    time_type: InjectTime,
    hostname_key: Option<Vec<u8>>,
    hostname: String,
}

#[derive(Debug, Clone, Default)]
enum InjectTime {
    #[default]
    Float,
    Unixtime,
    String(TimeFormat),
}

impl Inject {
    fn is_empty(&self) -> bool {
        self.tag_key.is_none() && self.time_key.is_none() && self.hostname_key.is_none()
    }

    fn apply(&self, tag: &[u8], ev: &Event) -> Record {
        let mut r = ev.record.clone();
        let m = r.map_mut();
        if let Some(k) = &self.hostname_key {
            m.insert(k.clone(), Value::str(&self.hostname));
        }
        if let Some(k) = &self.tag_key {
            m.insert(k.clone(), Value::Str(bytes::Bytes::copy_from_slice(tag)));
        }
        if let Some(k) = &self.time_key {
            let v = match &self.time_type {
                InjectTime::Float => {
                    Value::str(&format!("{}.{:09}", ev.time.secs(), ev.time.nanos()))
                }
                InjectTime::Unixtime => Value::UInt(ev.time.secs() as u64),
                InjectTime::String(f) => {
                    let mut b = Vec::new();
                    f.write(ev.time, &mut b);
                    Value::Str(b.into())
                }
            };
            m.insert(k.clone(), v);
        }
        r
    }
}

fn delimiter_of(v: &str) -> u8 {
    match v.to_ascii_uppercase().as_str() {
        "SPACE" | " " => b' ',
        "COMMA" | "," => b',',
        _ => b'\t',
    }
}

fn parse_format(ty: &str, f: Option<&Section>, span: &Section) -> Result<Format, ConfigError> {
    let empty = Section::new("format", "", span.span.clone());
    let sec = f.unwrap_or(&empty);
    let mut p = sec.params();
    p.ignore("@type");
    p.ignore("type");
    let out = match ty {
        "out_file" => {
            let time_format = p.str("time_format")?;
            let time_type = p.enumeration("time_type", &["string", "float", "unixtime"], "string")?;
            utc_only(&mut p, sec)?;
            let time = match (time_type.as_str(), time_format) {
                ("unixtime", _) => TimeFormat::compile("%s").map_err(|e| ConfigError::new(sec.span.clone(), e))?,
                ("float", _) => TimeFormat::compile("%s.%N").map_err(|e| ConfigError::new(sec.span.clone(), e))?,
                (_, Some(tf)) => TimeFormat::compile(&tf).map_err(|e| {
                    ConfigError::new(sec.param("time_format").map(|x| x.span.clone()).unwrap_or(sec.span.clone()), e)
                })?,
                (_, None) => TimeFormat::iso8601(),
            };
            Format::OutFile {
                output_time: p.bool("output_time", true)?,
                output_tag: p.bool("output_tag", true)?,
                delimiter: delimiter_of(&p.str_or("delimiter", "\t")?),
                time,
            }
        }
        "json" => {
            p.ignore("json_parser");
            Format::Json {
                newline: p.bool("add_newline", true)?,
            }
        }
        "single_value" => Format::SingleValue {
            key: p.str_or("message_key", "message")?.into_bytes(),
            newline: p.bool("add_newline", true)?,
        },
        "ltsv" => Format::Ltsv {
            delimiter: p.str_or("delimiter", "\t")?,
            label_delimiter: p.str_or("label_delimiter", ":")?,
            newline: p.bool("add_newline", true)?,
        },
        other => {
            return Err(ConfigError::new(
                sec.span.clone(),
                format!("unsupported <format> @type '{other}' for file output (out_file, json, single_value, ltsv)"),
            ))
        }
    };
    p.finish()?;
    Ok(out)
}

fn parse_inject(sec: &Section, ctx: &BuildCtx) -> Result<Inject, ConfigError> {
    let mut p = sec.params();
    let tag_key = p.str("tag_key")?.map(String::into_bytes);
    let time_key = p.str("time_key")?.map(String::into_bytes);
    let hostname_key = p.str("hostname_key")?.map(String::into_bytes);
    let hostname = p.str_or("hostname", &ctx.hostname)?;
    let time_type = p.enumeration("time_type", &["float", "unixtime", "string"], "float")?;
    let time_format = p.str("time_format")?;
    utc_only(&mut p, sec)?;
    p.ignore("worker_id_key");
    p.finish()?;
    let time_type = match time_type.as_str() {
        "unixtime" => InjectTime::Unixtime,
        "string" => InjectTime::String(match time_format {
            Some(tf) => {
                TimeFormat::compile(&tf).map_err(|e| ConfigError::new(sec.span.clone(), e))?
            }
            None => TimeFormat::iso8601(),
        }),
        _ => InjectTime::Float,
    };
    Ok(Inject {
        tag_key,
        time_key,
        time_type,
        hostname_key,
        hostname,
    })
}

// ---- the output ------------------------------------------------------------------------------

struct OpenFile {
    file: std::fs::File,
    used: u64,
}

#[derive(Default)]
struct Files {
    open: HashMap<String, OpenFile>,
    /// rendered path -> the file this process writes for it (`append false`).
    created: HashMap<String, PathBuf>,
    order: VecDeque<String>,
    tick: u64,
}

pub struct FileOutput {
    id: String,
    path: PathTemplate,
    append: bool,
    format: Format,
    inject: Inject,
    gzip: bool,
    files: Mutex<Files>,
    errors: ReasonCounters,
    invalid_utf8: Counter,
    limiter: LogLimiter,
}

pub fn build(sec: &Section, ctx: &mut BuildCtx) -> Result<Arc<dyn OutputPlugin>, ConfigError> {
    let id = super::plugin_id(sec, ctx, "file");
    let mut p = sec.params();
    p.ignore("@type");
    p.ignore("@id");
    p.ignore("@log_level");
    let path_src = p.required_str("path")?;
    let append = p.bool("append", false)?;
    let gzip = match p.str("compress")?.as_deref() {
        None | Some("text") => false,
        Some("gzip") | Some("gz") => true,
        Some(other) => {
            return Err(ConfigError::new(
                sec.param("compress")
                    .map(|x| x.span.clone())
                    .unwrap_or(sec.span.clone()),
                format!("unsupported compress '{other}' (text, gzip)"),
            ))
        }
    };
    utc_only(&mut p, sec)?;
    p.ignore("path_suffix");
    p.ignore("symlink_path");
    p.ignore("recompress");
    let legacy_format = p.str("format")?;
    let format_sec = p.section("format")?;
    let ty = match (format_sec, &legacy_format) {
        (Some(f), _) => f.type_name().unwrap_or("out_file").to_string(),
        (None, Some(l)) => l.clone(),
        (None, None) => "out_file".to_string(),
    };
    let format = parse_format(&ty, format_sec, sec)?;
    let inject = match p.section("inject")? {
        Some(i) => parse_inject(i, ctx)?,
        None => Inject::default(),
    };
    // <buffer CHUNK_KEYS>: validated; `time` and record keys are chunk keys for the path.
    let mut chunk_keys = Vec::new();
    if let Some(b) = p.section("buffer")? {
        chunk_keys = b
            .arg
            .split(',')
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect();
        crate::buffer::parse(Some(b))?;
    }
    let _ = p.section("secondary")?;
    p.finish()?;
    let path = PathTemplate::parse(&path_src, &chunk_keys).map_err(|e| {
        ConfigError::new(
            sec.param("path")
                .map(|x| x.span.clone())
                .unwrap_or(sec.span.clone()),
            e,
        )
    })?;
    Ok(Arc::new(FileOutput {
        errors: ReasonCounters::new(
            "nagare_file_write_errors_total",
            "Failed file output writes, by reason",
            &[("plugin_id", &id)],
        ),
        invalid_utf8: nagare_core::metrics::counter(
            "nagare_file_invalid_utf8_total",
            "Invalid UTF-8 sequences written by @type file as U+FFFD",
            &[("plugin_id", &id)],
        ),
        id,
        path,
        append,
        format,
        inject,
        gzip,
        files: Mutex::new(Files::default()),
        limiter: LogLimiter::default(),
    }))
}

/// `dir/name.ext` -> `dir/name_N.ext` (before the first dot of the file name).
fn with_index(path: &str, n: usize) -> PathBuf {
    let p = Path::new(path);
    let name = p
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (stem, ext) = match name.find('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name.as_str(), ""),
    };
    p.with_file_name(format!("{stem}_{n}{ext}"))
}

impl FileOutput {
    fn format_event(&self, tag: &[u8], ev: &Event, out: &mut Vec<u8>, st: &mut JsonStats) {
        let injected;
        let record = if self.inject.is_empty() {
            &ev.record
        } else {
            injected = self.inject.apply(tag, ev);
            &injected
        };
        match &self.format {
            Format::OutFile {
                output_time,
                output_tag,
                delimiter,
                time,
            } => {
                if *output_time {
                    time.write(ev.time, out);
                    out.push(*delimiter);
                }
                if *output_tag {
                    out.extend_from_slice(tag);
                    out.push(*delimiter);
                }
                write_record(out, record.as_bytes(), st);
                out.push(b'\n');
            }
            Format::Json { newline } => {
                write_record(out, record.as_bytes(), st);
                if *newline {
                    out.push(b'\n');
                }
            }
            Format::SingleValue { key, newline } => {
                if let Some(v) = record.get_str(key) {
                    out.extend_from_slice(v);
                } else if let Some(v) = record.get(key) {
                    out.extend_from_slice(v.to_text().as_bytes());
                }
                if *newline {
                    out.push(b'\n');
                }
            }
            Format::Ltsv {
                delimiter,
                label_delimiter,
                newline,
            } => {
                let mut r = record.clone();
                for (i, (k, v)) in r.map_mut().iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(delimiter.as_bytes());
                    }
                    out.extend_from_slice(k.to_text().as_bytes());
                    out.extend_from_slice(label_delimiter.as_bytes());
                    out.extend_from_slice(v.to_text().as_bytes());
                }
                if *newline {
                    out.push(b'\n');
                }
            }
        }
    }

    fn open(&self, files: &mut Files, rendered: &str) -> std::io::Result<()> {
        if files.open.contains_key(rendered) {
            return Ok(());
        }
        if files.open.len() >= MAX_OPEN_FILES {
            // Close the least recently used handle.
            if let Some((k, _)) = files
                .open
                .iter()
                .min_by_key(|(_, f)| f.used)
                .map(|(k, f)| (k.clone(), f.used))
            {
                files.open.remove(&k);
                files.order.retain(|x| x != &k);
            }
        }
        if let Some(dir) = Path::new(rendered)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)?;
        }
        let file = if self.append {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(rendered)?
        } else if let Some(actual) = files.created.get(rendered) {
            std::fs::OpenOptions::new().append(true).open(actual)?
        } else {
            let mut n = 0usize;
            loop {
                let candidate = if n == 0 {
                    PathBuf::from(rendered)
                } else {
                    with_index(rendered, n)
                };
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&candidate)
                {
                    Ok(f) => {
                        if files.created.len() >= MAX_REMEMBERED_PATHS {
                            files.created.clear();
                        }
                        files.created.insert(rendered.to_string(), candidate);
                        break f;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100_000 => {
                        n += 1
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        files
            .open
            .insert(rendered.to_string(), OpenFile { file, used: 0 });
        files.order.push_back(rendered.to_string());
        Ok(())
    }

    /// Appends `data` to the file of `rendered`; returns the file's length before, for
    /// [`Self::cut_back`]. A failed write is cut back itself: no partial line (or partial gzip
    /// member, which would hide every member after it from most readers) stays behind.
    fn write_path(&self, files: &mut Files, rendered: &str, data: &[u8]) -> std::io::Result<u64> {
        self.open(files, rendered)?;
        files.tick += 1;
        let tick = files.tick;
        let f = files
            .open
            .get_mut(rendered)
            .ok_or(std::io::ErrorKind::NotFound)?;
        f.used = tick;
        let before = f.file.metadata()?.len();
        let res = if self.gzip {
            let mut enc = GzEncoder::new(
                Vec::with_capacity(data.len() / 4 + 64),
                flate2::Compression::new(6),
            );
            enc.write_all(data)?;
            let gz = enc.finish()?;
            f.file.write_all(&gz)
        } else {
            f.file.write_all(data)
        };
        if res.is_err() {
            let _ = f.file.set_len(before);
            // Reopen next time (the file may have been removed or the disk full).
            files.open.remove(rendered);
        }
        res.map(|()| before)
    }

    /// Cuts the file of `rendered` back to `len`: an emit that failed part-way takes back what
    /// it wrote to its other paths, so the buffer's retry writes every line once. (As Fluentd's
    /// out_file, this process is taken to be the file's only writer.)
    fn cut_back(&self, files: &Files, rendered: &str, len: u64) {
        let path = match files.created.get(rendered) {
            Some(actual) if !self.append => actual.clone(),
            _ => PathBuf::from(rendered),
        };
        let r = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(len));
        if let Err(e) = r {
            tracing::warn!(plugin_id = %self.id, path = %path.display(), error = %e, "file output: could not take back the lines of a failed write; the retry writes them again");
        }
    }
}

#[async_trait::async_trait]
impl OutputPlugin for FileOutput {
    async fn emit(&self, stream: EventStream) -> Result<Committed, EmitError> {
        let tag = stream.tag.as_bytes();
        let mut st = JsonStats::default();
        // Per rendered path, the formatted lines (in event order).
        let mut batches: Vec<(String, Vec<u8>)> = Vec::new();
        let fixed = (!self.path.per_event).then(|| {
            stream
                .events
                .first()
                .map(|e| self.path.render(tag, e))
                .unwrap_or_default()
        });
        for ev in &stream.events {
            let rendered = match &fixed {
                Some(p) => p.clone(),
                None => self.path.render(tag, ev),
            };
            let buf = match batches.iter_mut().position(|(p, _)| *p == rendered) {
                Some(i) => &mut batches[i].1,
                None => {
                    batches.push((rendered, Vec::with_capacity(stream.record_bytes() * 2)));
                    &mut batches.last_mut().expect("pushed").1
                }
            };
            self.format_event(tag, ev, buf, &mut st);
        }
        if st.invalid_utf8 > 0 {
            self.invalid_utf8.add(st.invalid_utf8 as u64);
        }
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let mut written: Vec<(String, u64)> = Vec::new();
        for (path, data) in batches {
            match self.write_path(&mut files, &path, &data) {
                Ok(before) => written.push((path, before)),
                Err(e) => {
                    self.errors.inc("write_failed");
                    if let Some(suppressed) = self.limiter.check("write_failed") {
                        tracing::warn!(plugin_id = %self.id, path, error = %e, suppressed, "file output: write failed");
                    }
                    for (p, len) in &written {
                        self.cut_back(&files, p, *len);
                    }
                    return Err(EmitError::new("file_write_failed"));
                }
            }
        }
        Ok(Committed::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn out(text: &str) -> Arc<dyn OutputPlugin> {
        let root = nagare_config::parse_str(text, Path::new("t.conf")).unwrap();
        build(&root.children[0], &mut BuildCtx::default()).unwrap()
    }

    fn err(text: &str) -> String {
        let root = nagare_config::parse_str(text, Path::new("t.conf")).unwrap();
        build(&root.children[0], &mut BuildCtx::default())
            .err()
            .unwrap()
            .to_string()
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nagare-out-file-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn ev(secs: u32, pairs: &[(&str, &str)]) -> Event {
        Event {
            time: EventTime::new(secs, 5),
            record: Record::from_pairs(pairs),
        }
    }

    #[test]
    fn time_formats() {
        let f =
            TimeFormat::compile("%Y/%m/%d %H:%M:%S.%L %z %:z %j %s %b %a %e|%y %I%p %3N %6N %%")
                .unwrap();
        let mut b = Vec::new();
        f.write(EventTime::new(1_700_000_000, 123_456_789), &mut b);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "2023/11/14 22:13:20.123 +0000 +00:00 318 1700000000 Nov Tue 14|23 10PM 123 123456 %"
        );
        let mut b = Vec::new();
        TimeFormat::iso8601().write(EventTime::from_secs(0), &mut b);
        assert_eq!(b, b"1970-01-01T00:00:00+00:00");
        assert!(TimeFormat::compile("%Q").is_err());
    }

    #[tokio::test]
    async fn out_file_format_time_placeholders_and_tag_paths() {
        let d = tmp("fmt");
        let o = out(&format!(
            "<match **>\n  @type file\n  path {}/${{tag}}/%Y%m%d%H.log\n  <buffer tag,time>\n    timekey 1h\n    flush_interval 1s\n  </buffer>\n</match>\n",
            d.display()
        ));
        o.emit(EventStream::new(
            "app.web".into(),
            vec![
                ev(1_700_000_000, &[("a", "1")]),
                ev(1_700_003_600, &[("a", "2")]),
            ],
        ))
        .await
        .unwrap();
        let h1 = std::fs::read_to_string(d.join("app.web/2023111422.log")).unwrap();
        assert_eq!(h1, "2023-11-14T22:13:20+00:00\tapp.web\t{\"a\":\"1\"}\n");
        let h2 = std::fs::read_to_string(d.join("app.web/2023111423.log")).unwrap();
        assert!(h2.contains("{\"a\":\"2\"}"));
    }

    /// An emit that writes two files and fails on the second takes back what it wrote to the
    /// first: the retry writes every line once.
    #[tokio::test]
    async fn a_failed_emit_leaves_no_lines_behind_for_the_retry_to_duplicate() {
        let d = tmp("partial");
        let o = out(&format!(
            "<match **>\n  @type file\n  path {}/%H/x.log\n  append true\n  <buffer>\n  </buffer>\n</match>\n",
            d.display()
        ));
        // The second hour's directory cannot be made: a plain file is in its place.
        std::fs::write(d.join("23"), b"").unwrap();
        let stream = || {
            EventStream::new(
                "t".into(),
                vec![
                    ev(1_700_000_000, &[("a", "1")]),
                    ev(1_700_003_600, &[("a", "2")]),
                ],
            )
        };
        assert!(o.emit(stream()).await.is_err());
        assert_eq!(std::fs::read(d.join("22/x.log")).unwrap(), b"");
        std::fs::remove_file(d.join("23")).unwrap();
        o.emit(stream()).await.unwrap();
        let h22 = std::fs::read_to_string(d.join("22/x.log")).unwrap();
        assert_eq!(h22.lines().count(), 1, "{h22}");
        let h23 = std::fs::read_to_string(d.join("23/x.log")).unwrap();
        assert_eq!(h23.lines().count(), 1, "{h23}");
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced_and_counted() {
        let d = tmp("utf8");
        let o = out(&format!(
            "<match **>\n  @type file\n  @id file_utf8_test\n  path {}/out.log\n  append true\n  <buffer>\n  </buffer>\n</match>\n",
            d.display()
        ));
        let bad = Event {
            time: EventTime::new(1_700_000_000, 0),
            record: Record::from_pairs(&[(&b"msg"[..], &b"a\xffb"[..])]),
        };
        o.emit(EventStream::new("t".into(), vec![bad]))
            .await
            .unwrap();
        let text = std::fs::read_to_string(d.join("out.log")).unwrap();
        assert!(text.ends_with("{\"msg\":\"a\u{FFFD}b\"}\n"), "{text}");
        let c = nagare_core::metrics::counter(
            "nagare_file_invalid_utf8_total",
            "",
            &[("plugin_id", "file_utf8_test")],
        );
        assert_eq!(c.get(), 1);
    }

    #[tokio::test]
    async fn tag_parts_count_from_either_end_as_in_out_s3() {
        let d = tmp("tagparts");
        let o = out(&format!(
            "<match **>\n  @type file\n  path {}/${{tag[1]}}/${{tag_parts[-1]}}.log\n  append true\n  <buffer tag>\n  </buffer>\n</match>\n",
            d.display()
        ));
        o.emit(EventStream::new(
            "docker.web.app".into(),
            vec![ev(1, &[("a", "1")])],
        ))
        .await
        .unwrap();
        assert!(d.join("web/app.log").exists());
        assert!(
            err("<match **>\n  @type file\n  path /x/${tag[one]}.log\n</match>\n")
                .contains("bad placeholder ${tag[one]}")
        );
    }

    #[tokio::test]
    async fn chunk_key_paths_are_sanitised() {
        let d = tmp("keys");
        let o = out(&format!(
            "<match **>\n  @type file\n  path {}/${{service}}.jsonl\n  append true\n  <format>\n    @type json\n  </format>\n  <buffer tag,service>\n  </buffer>\n</match>\n",
            d.display()
        ));
        o.emit(EventStream::new(
            "t".into(),
            vec![
                ev(1, &[("service", "condor"), ("n", "1")]),
                ev(1, &[("service", "../../etc"), ("n", "2")]),
                ev(1, &[("service", "condor"), ("n", "3")]),
            ],
        ))
        .await
        .unwrap();
        let c = std::fs::read_to_string(d.join("condor.jsonl")).unwrap();
        assert_eq!(c.lines().count(), 2);
        assert!(d.join(".._.._etc.jsonl").exists());
        assert!(
            err("<match **>\n  @type file\n  path /x/${service}.log\n</match>\n")
                .contains("not a chunk key")
        );
    }

    #[tokio::test]
    async fn append_false_never_appends_to_an_existing_file() {
        let d = tmp("append");
        let p = d.join("out.jsonl");
        std::fs::write(&p, "old\n").unwrap();
        let text = format!("<match **>\n  @type file\n  path {}\n  <format>\n    @type json\n  </format>\n</match>\n", p.display());
        let o = out(&text);
        for i in 0..2 {
            o.emit(EventStream::new(
                "t".into(),
                vec![ev(1, &[("i", &i.to_string())])],
            ))
            .await
            .unwrap();
        }
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old\n");
        assert_eq!(
            std::fs::read_to_string(d.join("out_1.jsonl")).unwrap(),
            "{\"i\":\"0\"}\n{\"i\":\"1\"}\n"
        );
        // A second output (another process run) picks the next free name.
        let o2 = out(&text);
        o2.emit(EventStream::new("t".into(), vec![ev(1, &[("i", "x")])]))
            .await
            .unwrap();
        assert!(d.join("out_2.jsonl").exists());
        // append true appends.
        let o3 = out(&text.replace("  <format>", "  append true\n  <format>"));
        o3.emit(EventStream::new("t".into(), vec![ev(1, &[("i", "y")])]))
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old\n{\"i\":\"y\"}\n");
    }

    #[tokio::test]
    async fn inject_single_value_ltsv_and_gzip() {
        let d = tmp("misc");
        let o = out(&format!(
            "<match **>\n  @type file\n  path {}/j.jsonl\n  <format>\n    @type json\n  </format>\n  <inject>\n    tag_key tag\n    time_key time\n    hostname_key host\n    hostname h1\n  </inject>\n</match>\n",
            d.display()
        ));
        o.emit(EventStream::new("a.b".into(), vec![ev(7, &[("k", "v")])]))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("j.jsonl")).unwrap(),
            "{\"k\":\"v\",\"host\":\"h1\",\"tag\":\"a.b\",\"time\":\"7.000000005\"}\n"
        );
        let o = out(&format!(
            "<match **>\n  @type file\n  path {}/u.jsonl\n  format json\n  <inject>\n    time_key t\n    time_type unixtime\n  </inject>\n</match>\n",
            d.display()
        ));
        o.emit(EventStream::new("a".into(), vec![ev(7, &[("k", "v")])]))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("u.jsonl")).unwrap(),
            "{\"k\":\"v\",\"t\":7}\n"
        );
        let o = out(&format!(
            "<match **>\n  @type file\n  path {}/s.txt\n  <format>\n    @type single_value\n    message_key log\n  </format>\n</match>\n",
            d.display()
        ));
        o.emit(EventStream::new(
            "a".into(),
            vec![ev(1, &[("log", "line one")]), ev(1, &[("x", "y")])],
        ))
        .await
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("s.txt")).unwrap(),
            "line one\n\n"
        );
        let o = out(&format!(
            "<match **>\n  @type file\n  path {}/l.ltsv\n  <format>\n    @type ltsv\n  </format>\n</match>\n",
            d.display()
        ));
        o.emit(EventStream::new(
            "a".into(),
            vec![ev(1, &[("a", "1"), ("b", "2")])],
        ))
        .await
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("l.ltsv")).unwrap(),
            "a:1\tb:2\n"
        );
        let o = out(&format!(
            "<match **>\n  @type file\n  path {}/g.jsonl.gz\n  compress gzip\n  append true\n  <format>\n    @type json\n  </format>\n</match>\n",
            d.display()
        ));
        for i in 0..3 {
            o.emit(EventStream::new(
                "a".into(),
                vec![ev(1, &[("i", &i.to_string())])],
            ))
            .await
            .unwrap();
        }
        let raw = std::fs::read(d.join("g.jsonl.gz")).unwrap();
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "{\"i\":\"0\"}\n{\"i\":\"1\"}\n{\"i\":\"2\"}\n");
    }

    #[test]
    fn config_errors() {
        assert!(
            err("<match **>\n  @type file\n  path /x\n  localtime true\n</match>\n")
                .contains("UTC")
        );
        assert!(err("<match **>\n  @type file\n  path /x/*.log\n</match>\n").contains("'*'"));
        assert!(err("<match **>\n  @type file\n  path /x\n  <format>\n    @type csv\n  </format>\n</match>\n").contains("csv"));
        let e = err("<match **>\n  @type file\n  path /x\n  <buffer>\n    flush_intervl 1s\n  </buffer>\n</match>\n");
        assert!(
            e.starts_with("t.conf:5:5:") && e.contains("flush_interval"),
            "{e}"
        );
        assert!(err("<match **>\n  @type file\n  path /x/%Q\n</match>\n").contains("%Q"));
    }
}
