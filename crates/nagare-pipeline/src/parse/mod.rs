//! Parsers, as Fluentd's `<parse>` section configures them: `@type json | regexp | none | ltsv |
//! logfmt`, plus what every parser shares:
//!
//! | param | default | meaning |
//! | --- | --- | --- |
//! | `time_key` | `time` (json, regexp, ltsv, logfmt), none for `none` | field holding the event time |
//! | `time_type` | `float` for json (`string` once `time_format` is set), else `string` | see [`time`] |
//! | `time_format` | none | `strptime` subset or `%iso8601`; see [`time`] |
//! | `timezone` | UTC | fixed offset for times without a zone |
//! | `keep_time_key` | false | leave the time field in the record |
//! | `types` | none | `k:integer,f:float,b:bool,s:string,t:time[:fmt],a:array[:delim]` |
//! | `null_value_pattern` | none | string values matching it become nil |
//! | `null_empty_string` | false | empty strings become nil |
//! | `estimate_current_event` | true | no time field: the event time is "now" |
//!
//! A parse has three outcomes, mirroring what Fluentd's parsers do: a record (with the time
//! found in it, if any), "not this format" ([`Parsed::NoMatch`], Fluentd's `yield nil, nil`:
//! filter_parser's `reserve_data` keeps the original record), or an error
//! ([`Parsed::Error`], Fluentd raises: the record never passes). For the text parsers (regexp,
//! ltsv, logfmt), text that is not UTF-8 is reported as such ([`Parsed::InvalidSequence`]) so
//! filter_parser's `replace_invalid_sequence` can retry on a scrubbed copy; JSON keeps bytes.
//!
//! [`Parser::parse_raw`] is the JSON fast path: the object is transcoded straight to msgpack
//! pieces ([`json::RawObject`]) instead of a [`Value`] tree.

pub mod json;
pub mod logfmt;
pub mod ltsv;
pub mod mp;
pub mod none;
pub mod regexp;
pub mod time;

use bytes::Bytes;
use nagare_config::{ConfigError, Params, Section, Span};
use nagare_core::{EventTime, Map, Value};
use regex::Regex;
use time::{TimeParser, TimeType};

/// What a format made of the text, before time and type handling.
#[derive(Debug)]
pub enum ParsedMap {
    Map(Map),
    NoMatch,
    InvalidSequence,
}

/// The outcome of [`Parser::parse`].
#[derive(Debug)]
pub enum Parsed {
    /// A record, and the time read from `time_key` (None: the record has no time field; the
    /// caller applies [`Parser::estimate_current_event`]).
    Record {
        time: Option<EventTime>,
        record: Map,
    },
    /// The text is not in this format.
    NoMatch,
    /// The text is not valid UTF-8 and this format needs text.
    InvalidSequence,
    /// The text matched but a value could not be converted (a bad time).
    Error(String),
}

/// The outcome of [`Parser::parse_raw`].
#[derive(Debug)]
pub enum RawParsed {
    /// A JSON object, transcoded into the [`json::RawObject`] (the time field taken out
    /// unless `keep_time_key`), and the time read from it.
    Object { time: Option<EventTime> },
    /// Not an object at the top level: use [`Parser::parse`] (arrays, or not this format).
    Fallback,
    /// Not JSON.
    NoMatch,
    /// The time field could not be read.
    Error(String),
}

#[derive(Debug, Clone)]
enum Format {
    Json(json::JsonFormat),
    Regexp(regexp::RegexpFormat),
    None(none::NoneFormat),
    Ltsv(ltsv::LtsvFormat),
    Logfmt(logfmt::LogfmtFormat),
}

#[derive(Debug, Clone)]
enum Conv {
    String,
    Integer,
    Float,
    Bool,
    Time(TimeParser),
    Array(String),
}

/// A configured parser; build it once, call [`Parser::parse`] per event.
#[derive(Debug, Clone)]
pub struct Parser {
    type_name: &'static str,
    format: Format,
    time_key: Option<Bytes>,
    keep_time_key: bool,
    time_parser: TimeParser,
    types: Vec<(Bytes, Conv)>,
    null_value_pattern: Option<Regex>,
    null_empty_string: bool,
    estimate_current_event: bool,
}

/// The parser types Nagare has.
pub const PARSER_TYPES: &[&str] = &["json", "regexp", "none", "ltsv", "logfmt"];

fn span_of(p: &Params<'_>, key: &str, fallback: &Span) -> Span {
    p.section_ref()
        .param(key)
        .map(|x| x.span.clone())
        .unwrap_or_else(|| fallback.clone())
}

impl Parser {
    /// Builds from a `<parse>` section (its `@type` and parameters; unknown ones are errors).
    pub fn from_section(sec: &Section) -> Result<Parser, ConfigError> {
        let ty = sec.type_name().ok_or_else(|| {
            ConfigError::new(
                sec.span.clone(),
                format!("<parse> needs @type (one of: {})", PARSER_TYPES.join(", ")),
            )
        })?;
        let mut p = sec.params();
        let parser = Parser::from_params(&mut p, ty, None, &sec.span)?;
        p.finish()?;
        Ok(parser)
    }

    /// Builds from parameters of any section: a `<parse>` section's, or a plugin's own for
    /// the v0.12 flat form (`format json`). `expression` overrides the `expression` parameter
    /// (the flat form's `format /regex/`). The caller calls `finish`.
    pub fn from_params(
        p: &mut Params<'_>,
        ty: &str,
        expression: Option<(&str, &Span)>,
        span: &Span,
    ) -> Result<Parser, ConfigError> {
        let (type_name, format, default_time_key, mut time_type): (_, _, Option<&str>, _) = match ty
        {
            "json" => {
                // Fluentd's choice of JSON library, and its IO buffer: no effect here.
                p.ignore("json_parser");
                p.ignore("stream_buffer_size");
                (
                    "json",
                    Format::Json(json::JsonFormat),
                    Some("time"),
                    TimeType::Float,
                )
            }
            "regexp" => {
                let ignorecase = p.bool("ignorecase", false)?;
                let multiline = p.bool("multiline", false)?;
                let (expr, espan) = match expression {
                    Some((e, s)) => (e.to_string(), s.clone()),
                    None => {
                        let e = p.required_str("expression")?;
                        (e, span_of(p, "expression", span))
                    }
                };
                let re = if expr.starts_with('/') {
                    let with_flags = format!(
                        "{expr}{}{}",
                        if ignorecase && !expr.ends_with('i') {
                            "i"
                        } else {
                            ""
                        },
                        if multiline && !expr.ends_with('m') {
                            "m"
                        } else {
                            ""
                        }
                    );
                    regexp::ruby_regex(&with_flags).or_else(|_| regexp::ruby_regex(&expr))
                } else {
                    regexp::compile_ruby(&expr, ignorecase, multiline, false)
                }
                .map_err(|e| ConfigError::new(espan.clone(), e))?;
                let f = regexp::RegexpFormat::new(re).map_err(|e| ConfigError::new(espan, e))?;
                ("regexp", Format::Regexp(f), Some("time"), TimeType::String)
            }
            "none" => {
                let key = p.str_or("message_key", none::DEFAULT_MESSAGE_KEY)?;
                (
                    "none",
                    Format::None(none::NoneFormat {
                        message_key: Bytes::from(key.into_bytes()),
                    }),
                    None,
                    TimeType::String,
                )
            }
            "ltsv" => {
                let delimiter = p.str_or("delimiter", "\t")?;
                let label_delimiter = p.str_or("label_delimiter", ":")?;
                let delimiter_pattern =
                    match p.str("delimiter_pattern")? {
                        Some(d) => Some(regexp::ruby_regex(&d).map_err(|e| {
                            ConfigError::new(span_of(p, "delimiter_pattern", span), e)
                        })?),
                        None => None,
                    };
                if delimiter.is_empty() || label_delimiter.is_empty() {
                    return Err(ConfigError::new(
                        span.clone(),
                        "ltsv delimiter and label_delimiter must not be empty",
                    ));
                }
                (
                    "ltsv",
                    Format::Ltsv(ltsv::LtsvFormat {
                        delimiter,
                        delimiter_pattern,
                        label_delimiter,
                    }),
                    Some("time"),
                    TimeType::String,
                )
            }
            "logfmt" => (
                "logfmt",
                Format::Logfmt(logfmt::LogfmtFormat),
                Some("time"),
                TimeType::String,
            ),
            other => {
                return Err(ConfigError::new(
                    span.clone(),
                    format!(
                        "unknown parser @type '{other}' (available: {})",
                        PARSER_TYPES.join(", ")
                    ),
                ))
            }
        };
        let time_key = p.str("time_key")?.or(default_time_key.map(str::to_string));
        let time_format = p.str("time_format")?;
        if let Some(tt) = p.str("time_type")? {
            time_type = TimeType::from_name(&tt).ok_or_else(|| {
                ConfigError::new(
                    span_of(p, "time_type", span),
                    format!("invalid time_type '{tt}': expected string, float or unixtime (mixed is not supported)"),
                )
            })?;
        } else if time_format.is_some() {
            // Fluentd's JSON parser: a time_format means the time is a string.
            time_type = TimeType::String;
        }
        let timezone = p.str("timezone")?;
        // Fluentd reads string times without a zone in the host zone unless `utc true` or a
        // `timezone` is set (`localtime && timezone.nil? && !utc`). Nagare reads them as UTC
        // (containers run in UTC), so a config that asks for the host zone is refused where
        // it would change the result, as out_file refuses `localtime true`.
        let utc = p.bool("utc", false)?;
        let localtime = p.bool("localtime", true)?;
        let asked = |k: &str| p.section_ref().param(k).is_some();
        let asks_local = (asked("localtime") && localtime) || (asked("utc") && !utc);
        if asks_local && !utc && timezone.is_none() && time_type == TimeType::String {
            let key = if asked("localtime") {
                "localtime"
            } else {
                "utc"
            };
            return Err(ConfigError::new(
                span_of(p, key, span),
                format!("{key} {} is not supported: Nagare reads times without a zone as UTC (containers run in UTC); remove it, set utc true, or set timezone to a fixed offset such as +09:00", if key == "utc" { "false" } else { "true" }),
            ));
        }
        let time_parser = TimeParser::new(time_type, time_format.as_deref(), timezone.as_deref())
            .map_err(|e| {
            let key = if time_format.is_some() {
                "time_format"
            } else {
                "timezone"
            };
            ConfigError::new(span_of(p, key, span), e)
        })?;
        let keep_time_key = p.bool("keep_time_key", false)?;
        let types = match p.hash("types")? {
            None => Vec::new(),
            Some(pairs) => pairs
                .into_iter()
                .map(|(k, v)| {
                    conv_of(&v)
                        .map(|c| (Bytes::from(k.clone().into_bytes()), c))
                        .map_err(|e| {
                            ConfigError::new(
                                span_of(p, "types", span),
                                format!("types: field '{k}': {e}"),
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let null_value_pattern = match p.str("null_value_pattern")? {
            Some(s) => Some(
                regexp::ruby_regex(&s)
                    .map_err(|e| ConfigError::new(span_of(p, "null_value_pattern", span), e))?,
            ),
            None => None,
        };
        let null_empty_string = p.bool("null_empty_string", false)?;
        let estimate_current_event = p.bool("estimate_current_event", true)?;
        // A parse timeout guards Ruby's backtracking regexps; the regex crate runs in linear time.
        p.ignore("timeout");
        Ok(Parser {
            type_name,
            format,
            time_key: time_key.map(|k| Bytes::from(k.into_bytes())),
            keep_time_key,
            time_parser,
            types,
            null_value_pattern,
            null_empty_string,
            estimate_current_event,
        })
    }

    /// A JSON parser with Fluentd's defaults (for tests and tools).
    pub fn json() -> Parser {
        Parser {
            type_name: "json",
            format: Format::Json(json::JsonFormat),
            time_key: Some(Bytes::from_static(b"time")),
            keep_time_key: false,
            time_parser: TimeParser::new(TimeType::Float, None, None).expect("static"),
            types: Vec::new(),
            null_value_pattern: None,
            null_empty_string: false,
            estimate_current_event: true,
        }
    }

    /// `json`, `regexp`, ...
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// Whether a record without a time field gets the current time (Fluentd's default).
    pub fn estimate_current_event(&self) -> bool {
        self.estimate_current_event
    }

    /// Whether [`Parser::parse_raw`] applies: JSON without value conversions (`types`,
    /// `null_value_pattern`, `null_empty_string`).
    pub fn supports_raw(&self) -> bool {
        matches!(self.format, Format::Json(_))
            && self.types.is_empty()
            && self.null_value_pattern.is_none()
            && !self.null_empty_string
    }

    /// The fast path for JSON objects: transcodes `text` straight to msgpack pieces in `obj`,
    /// building no [`Value`]s; same results as [`Parser::parse`]. Only when
    /// [`Parser::supports_raw`].
    pub fn parse_raw(&self, text: &[u8], obj: &mut json::RawObject) -> RawParsed {
        match json::transcode_object(text, obj) {
            Err(_) => return RawParsed::NoMatch,
            // Only a top-level array can still hold a record; anything else is not JSON or
            // not an object, which the decoded path would say too.
            Ok(json::Transcoded::NotObject) => {
                let first = text
                    .iter()
                    .find(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'));
                return if first == Some(&b'[') {
                    RawParsed::Fallback
                } else {
                    RawParsed::NoMatch
                };
            }
            Ok(json::Transcoded::Object) => {}
        }
        let Some(k) = &self.time_key else {
            return RawParsed::Object { time: None };
        };
        let Some(i) = obj.find(k) else {
            return RawParsed::Object { time: None };
        };
        let enc = Bytes::copy_from_slice(&obj.buf[obj.pairs[i].val.clone()]);
        let Ok((v, _)) = Value::decode(&enc, 0) else {
            return RawParsed::Error("undecodable time value".into());
        };
        if !self.keep_time_key {
            obj.pairs.remove(i);
        }
        match self.time_parser.parse(&v) {
            Ok(t) => RawParsed::Object { time: Some(t) },
            Err(e) => RawParsed::Error(e),
        }
    }

    /// Parses one text.
    pub fn parse(&self, text: &Bytes) -> Parsed {
        let pm = match &self.format {
            Format::Json(f) => f.parse(text),
            Format::None(f) => f.parse(text),
            Format::Regexp(f) => match std::str::from_utf8(text) {
                Ok(s) => f.parse(text, s),
                Err(_) => ParsedMap::InvalidSequence,
            },
            Format::Ltsv(f) => match std::str::from_utf8(text) {
                Ok(s) => f.parse(text, s),
                Err(_) => ParsedMap::InvalidSequence,
            },
            Format::Logfmt(f) => match std::str::from_utf8(text) {
                Ok(s) => f.parse(text, s),
                Err(_) => ParsedMap::InvalidSequence,
            },
        };
        let mut record = match pm {
            ParsedMap::Map(m) => m,
            ParsedMap::NoMatch => return Parsed::NoMatch,
            ParsedMap::InvalidSequence => return Parsed::InvalidSequence,
        };
        let time = match &self.time_key {
            None => None,
            Some(k) => {
                let v = if self.keep_time_key {
                    record.get(k).cloned()
                } else {
                    record.remove(k)
                };
                match v {
                    None => None,
                    Some(v) => match self.time_parser.parse(&v) {
                        Ok(t) => Some(t),
                        Err(e) => return Parsed::Error(e),
                    },
                }
            }
        };
        if !self.types.is_empty() || self.null_value_pattern.is_some() || self.null_empty_string {
            self.convert(&mut record);
        }
        Parsed::Record { time, record }
    }

    fn convert(&self, record: &mut Map) {
        for (k, v) in record.0.iter_mut() {
            if matches!(v, Value::Nil) {
                continue;
            }
            if let Value::Str(s) = v {
                let null = (self.null_empty_string && s.is_empty())
                    || self
                        .null_value_pattern
                        .as_ref()
                        .is_some_and(|re| re.is_match(&String::from_utf8_lossy(s)));
                if null {
                    *v = Value::Nil;
                    continue;
                }
            }
            let Some(kb) = k.as_bytes() else { continue };
            if let Some((_, c)) = self.types.iter().find(|(n, _)| &n[..] == kb) {
                *v = convert(c, v);
            }
        }
    }
}

fn conv_of(spec: &str) -> Result<Conv, String> {
    let (ty, opt) = match spec.split_once(':') {
        Some((t, o)) => (t.trim(), Some(o)),
        None => (spec.trim(), None),
    };
    Ok(match ty {
        "string" => Conv::String,
        "integer" => Conv::Integer,
        "float" => Conv::Float,
        "bool" => Conv::Bool,
        "array" => Conv::Array(opt.unwrap_or(",").to_string()),
        "time" => {
            let (mut tz, mut fmt) = (None, opt);
            if let Some(o) = opt {
                if let Some((z, f)) = o.split_once(':') {
                    if TimeParser::new(TimeType::String, None, Some(z)).is_ok() {
                        tz = Some(z);
                        fmt = Some(f);
                    }
                }
            }
            let tp = match fmt {
                Some(f) => match TimeType::from_name(f) {
                    Some(tt) if tt != TimeType::String => TimeParser::new(tt, None, tz)?,
                    _ => TimeParser::new(TimeType::String, Some(f), tz)?,
                },
                None => TimeParser::new(TimeType::String, None, tz)?,
            };
            Conv::Time(tp)
        }
        other => {
            return Err(format!(
                "unknown type '{other}' (expected string, integer, float, bool, time or array)"
            ))
        }
    })
}

/// Ruby's `String#to_i`: leading whitespace, sign, digits (underscores between digits); 0 if none.
fn ruby_to_i(s: &[u8]) -> i64 {
    let s = &s[s.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
    let (neg, rest) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut v: i64 = 0;
    let mut prev_digit = false;
    for &b in rest {
        match b {
            b'0'..=b'9' => {
                v = v.saturating_mul(10).saturating_add((b - b'0') as i64);
                prev_digit = true;
            }
            b'_' if prev_digit => prev_digit = false,
            _ => break,
        }
    }
    if neg {
        -v
    } else {
        v
    }
}

/// Ruby's `String#to_f`: the longest leading float; 0.0 if none.
fn ruby_to_f(s: &[u8]) -> f64 {
    let t = String::from_utf8_lossy(s);
    let t = t.trim_start();
    let b = t.as_bytes();
    let mut best = 0.0;
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i = 1;
    }
    while i < b.len() && (b[i].is_ascii_digit() || matches!(b[i], b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        i += 1;
        if let Ok(f) = t[..i].parse::<f64>() {
            best = f;
        }
    }
    best
}

fn convert(c: &Conv, v: &Value) -> Value {
    match c {
        Conv::String => match v {
            Value::Str(_) => v.clone(),
            other => Value::Str(Bytes::from(other.to_text().into_owned().into_bytes())),
        },
        Conv::Integer => match v {
            Value::Int(_) | Value::UInt(_) => v.clone(),
            Value::Float(f) => Value::Int(f.trunc() as i64),
            Value::Str(s) | Value::Bin(s) => Value::Int(ruby_to_i(s)),
            _ => Value::Int(0),
        },
        Conv::Float => match v {
            Value::Float(_) => v.clone(),
            Value::Int(i) => Value::Float(*i as f64),
            Value::UInt(u) => Value::Float(*u as f64),
            Value::Str(s) | Value::Bin(s) => Value::Float(ruby_to_f(s)),
            _ => Value::Float(0.0),
        },
        Conv::Bool => {
            let t = v.to_text().to_ascii_lowercase();
            Value::Bool(matches!(t.as_str(), "true" | "yes" | "1"))
        }
        Conv::Time(tp) => match tp.parse(v) {
            Ok(t) => Value::Ext(0, Bytes::copy_from_slice(&t.to_ext_bytes())),
            Err(_) => Value::Nil,
        },
        Conv::Array(delim) => {
            let text = v.to_text();
            let mut parts: Vec<Value> = text.split(delim.as_str()).map(Value::str).collect();
            while parts.last().is_some_and(|p| p.as_bytes() == Some(b"")) {
                parts.pop();
            }
            Value::Array(parts)
        }
    }
}

/// A zero-copy slice of `src` when `s` points into it, else a copy.
pub(crate) fn slice_of(src: &Bytes, s: &[u8]) -> Bytes {
    let base = src.as_ptr() as usize;
    let p = s.as_ptr() as usize;
    if s.is_empty() {
        Bytes::new()
    } else if p >= base && p + s.len() <= base + src.len() {
        src.slice_ref(s)
    } else {
        Bytes::copy_from_slice(s)
    }
}

/// Ruby's `String#scrub('?')`: each invalid UTF-8 sequence becomes `?`.
pub fn scrub(text: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.extend_from_slice(s.as_bytes());
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.extend_from_slice(good);
                out.push(b'?');
                rest = &bad[e.error_len().unwrap_or(bad.len())..];
            }
        }
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parser(conf: &str) -> Result<Parser, ConfigError> {
        let text = format!("<parse>\n{conf}\n</parse>\n");
        let root = nagare_config::parse_str(&text, Path::new("t.conf")).unwrap();
        Parser::from_section(&root.children[0])
    }

    fn record(p: &Parser, text: &str) -> (Option<EventTime>, Map) {
        match p.parse(&Bytes::copy_from_slice(text.as_bytes())) {
            Parsed::Record { time, record } => (time, record),
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn json_time_key_and_types() {
        let p = parser("@type json\ntypes n:integer,f:float,b:bool,s:string,a:array").unwrap();
        let (t, m) = record(
            &p,
            r#"{"time":1700000000.5,"n":"12abc","f":"1.5x","b":"YES","s":7,"a":"x,y,,"}"#,
        );
        assert_eq!(t, Some(EventTime::new(1_700_000_000, 500_000_000)));
        assert!(!m.contains_key(b"time"));
        assert_eq!(m.get(b"n"), Some(&Value::Int(12)));
        assert_eq!(m.get(b"f"), Some(&Value::Float(1.5)));
        assert_eq!(m.get(b"b"), Some(&Value::Bool(true)));
        assert_eq!(m.get(b"s"), Some(&Value::str("7")));
        assert_eq!(
            m.get(b"a"),
            Some(&Value::Array(vec![Value::str("x"), Value::str("y")]))
        );
        let (t, _) = record(&p, r#"{"msg":"no time"}"#);
        assert_eq!(t, None);
        assert!(p.estimate_current_event());
    }

    #[test]
    fn json_time_format_makes_time_a_string() {
        let p = parser(
            "@type json\ntime_key ts\ntime_format %Y-%m-%dT%H:%M:%S.%L%z\nkeep_time_key true",
        )
        .unwrap();
        let (t, m) = record(&p, r#"{"ts":"2023-11-15T07:13:20.903+0900"}"#);
        assert_eq!(t, Some(EventTime::new(1_700_000_000, 903_000_000)));
        assert!(m.contains_key(b"ts"));
        assert!(matches!(
            p.parse(&Bytes::from_static(br#"{"ts":"yesterday"}"#)),
            Parsed::Error(_)
        ));
    }

    #[test]
    fn regexp_with_apache_time() {
        let p = parser(
            "@type regexp\nexpression /^(?<host>[^ ]*) [^ ]* (?<user>[^ ]*) \\[(?<time>[^\\]]*)\\] \"(?<method>\\S+)(?: +(?<path>[^ ]*) +\\S*)?\" (?<code>[^ ]*) (?<size>[^ ]*)$/\ntime_format %d/%b/%Y:%H:%M:%S %z\ntypes code:integer",
        )
        .unwrap();
        let (t, m) = record(
            &p,
            r#"192.168.0.1 - - [28/Feb/2013:12:00:00 +0900] "GET / HTTP/1.1" 200 777"#,
        );
        assert_eq!(t, Some(EventTime::from_secs(1_362_020_400)));
        assert_eq!(m.get(b"host"), Some(&Value::str("192.168.0.1")));
        assert_eq!(m.get(b"code"), Some(&Value::Int(200)));
        assert_eq!(m.get(b"size"), Some(&Value::str("777")));
        assert!(matches!(
            p.parse(&Bytes::from_static(b"garbage")),
            Parsed::NoMatch
        ));
        assert!(matches!(
            p.parse(&Bytes::from_static(b"\xff\xfe")),
            Parsed::InvalidSequence
        ));
    }

    #[test]
    fn nulls() {
        let p = parser("@type ltsv\nnull_value_pattern /^-$/\nnull_empty_string true").unwrap();
        let (_, m) = record(&p, "a:-\tb:\tc:x");
        assert_eq!(m.get(b"a"), Some(&Value::Nil));
        assert_eq!(m.get(b"b"), Some(&Value::Nil));
        assert_eq!(m.get(b"c"), Some(&Value::str("x")));
    }

    #[test]
    fn none_has_no_time_key() {
        let p = parser("@type none\nmessage_key log").unwrap();
        let (t, m) = record(&p, r#"{"time":1}"#);
        assert_eq!(t, None);
        assert_eq!(m.get(b"log"), Some(&Value::str(r#"{"time":1}"#)));
    }

    #[test]
    fn time_type_conversion_in_types() {
        let p = parser("@type json\ntypes t:time:+0900:%Y-%m-%d %H:%M:%S,u:time:unixtime").unwrap();
        let (_, m) = record(&p, r#"{"t":"2023-11-15 07:13:20","u":"1700000000","x":1}"#);
        let ext = Value::Ext(
            0,
            Bytes::copy_from_slice(&EventTime::from_secs(1_700_000_000).to_ext_bytes()),
        );
        assert_eq!(m.get(b"t"), Some(&ext));
        assert_eq!(m.get(b"u"), Some(&ext));
    }

    #[test]
    fn config_errors_point_at_the_parameter() {
        let e = parser("@type regexp\nexpression /(?<a>x)(?=y)/")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.conf:3:"), "{e}");
        let e = parser("@type regexp\nexpression /no named/")
            .unwrap_err()
            .to_string();
        assert!(e.contains("named captures"), "{e}");
        let e = parser("@type json\ntime_format %Y %Q")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.conf:3:") && e.contains("%Q"), "{e}");
        let e = parser("@type json\ntypes a:decimal")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown type 'decimal'"), "{e}");
        let e = parser("@type csv").unwrap_err().to_string();
        assert!(e.contains("unknown parser @type 'csv'"), "{e}");
        let e = parser("@type json\ntime_kye t").unwrap_err().to_string();
        assert!(e.contains("did you mean 'time_key'"), "{e}");
        let e = parser("@type json\ntime_type mixed")
            .unwrap_err()
            .to_string();
        assert!(e.contains("time_type"), "{e}");
    }

    #[test]
    fn host_local_time_is_refused_for_string_times() {
        let refused = |conf: &str| match parser(conf) {
            Ok(_) => panic!("{conf}: loaded"),
            Err(e) => e.to_string(),
        };
        let e = refused(
            "@type regexp\nexpression /(?<time>.*)/\ntime_format %Y-%m-%d %H:%M:%S\nlocaltime true",
        );
        assert!(
            e.starts_with("t.conf:5:") && e.contains("localtime true is not supported"),
            "{e}"
        );
        let e = refused("@type json\ntime_format %Y-%m-%d %H:%M:%S\nutc false");
        assert!(
            e.starts_with("t.conf:4:") && e.contains("utc false is not supported"),
            "{e}"
        );
        // Where the host zone would not be used in Fluentd either, the load goes on.
        parser("@type json\ntime_format %Y-%m-%d %H:%M:%S\nlocaltime true\nutc true").unwrap();
        parser("@type json\ntime_format %Y-%m-%d %H:%M:%S\nlocaltime true\ntimezone +09:00")
            .unwrap();
        parser("@type json\nlocaltime true").unwrap(); // float times carry no zone
        parser("@type json\ntime_format %Y-%m-%d %H:%M:%S\nlocaltime false").unwrap();
        parser("@type json\ntime_format %Y-%m-%d %H:%M:%S\nutc true").unwrap();
    }

    #[test]
    fn ruby_number_prefixes() {
        assert_eq!(ruby_to_i(b"  -1_000x"), -1000);
        assert_eq!(ruby_to_i(b"abc"), 0);
        assert_eq!(ruby_to_f(b"1.5e3ms"), 1500.0);
        assert_eq!(ruby_to_f(b"x"), 0.0);
        assert_eq!(&scrub(b"a\xffb")[..], b"a?b");
    }
}
