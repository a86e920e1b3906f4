//! `<filter> @type parser`: parses one field of each record (`key_name`, a record accessor)
//! with a `<parse>` section, or the v0.12 flat form (`format json`, `format /regex/`,
//! `time_format ...` directly in `<filter>`).
//!
//! Behaviour, as Fluentd's `filter_parser.rb` (v1.16+), event by event:
//!
//! | case | `emit_invalid_record_to_error` (default true) | `reserve_data true` | otherwise |
//! | --- | --- | --- | --- |
//! | parsed | - | original fields, then the parsed ones (parsed win) | the parsed fields only |
//! | field missing or nil | to errors, reason `key_missing` | the event also passes on unchanged | removed |
//! | not in the format (a plain-text line for `json`, no regexp match) | to errors, reason `parse_failed` | the event also passes on unchanged | removed |
//! | matched, but a value failed (a bad time, a non-string field, invalid UTF-8 for a text parser) | to errors, reason `parse_error` | removed (Fluentd raises) | removed |
//!
//! So with `reserve_data true` an unparsable line goes to `<label @ERROR>` *and* continues
//! down the pipeline, as in Fluentd. Errors go to `@ERROR` if there is one, else the router
//! counts them as dropped. Every failure is also counted here,
//! `nagare_filter_parser_failures_total{plugin_id, reason}`, whatever happened to the event
//! next, and events removed without going to errors are counted in
//! `nagare_filter_dropped_events_total{plugin_id, reason}`.
//!
//! * Time: the parsed time replaces the event time unless `reserve_time`. A parsed record
//!   without a time field gets the current time (`estimate_current_event`, default true, as in
//!   Fluentd): set `reserve_time true` to keep the time the event arrived with.
//! * `remove_key_name_field` deletes the field before the parsed fields are merged, so a
//!   parsed field of the same name wins. This matters for Docker: the app's JSON in `log` has
//!   its own `log` object, and it is the parsed object that stays (the corpus test checks it).
//! * `hash_value_field` puts the parsed fields under one key; `inject_key_prefix` prefixes their
//!   names.
//! * `replace_invalid_sequence`: for the text parsers (regexp, ltsv, logfmt), text that is not
//!   UTF-8 is parsed again with each invalid sequence replaced by `?` (without it such text is
//!   a `parse_error`, as Ruby raises). The JSON parser keeps such bytes as they are.
//!
//! Fast path: with the JSON parser on a top-level `key_name` (no `hash_value_field`,
//! `inject_key_prefix`, `types` or null options) and a record still in its wire bytes (no
//! earlier filter decoded it), the JSON is transcoded straight to msgpack and the new record
//! assembled from the old record's pairs and the parsed ones in one allocation: no decoded
//! tree, and nothing left for the buffer to encode. It gives the same bytes as the decoded
//! path (a corpus test checks this); later filters read the record without decoding it.

use crate::accessor::{Accessor, Found};
use crate::parse::json::{same_key, RawObject};
use crate::parse::{self, mp, Parsed, Parser, RawParsed};
use crate::plugin::{ErrorEvent, Filter};
use crate::BuildCtx;
use bytes::Bytes;
use nagare_config::{ConfigError, Params, Section};
use nagare_core::metrics::{Counter, ReasonCounters};
use nagare_core::ratelimit::LogLimiter;
use nagare_core::{Event, EventStream, EventTime, Map, Record, Value};
use std::cell::RefCell;
use std::sync::Arc;

/// Reasons used for errors and counters.
pub const REASON_KEY_MISSING: &str = "key_missing";
pub const REASON_PARSE_FAILED: &str = "parse_failed";
pub const REASON_PARSE_ERROR: &str = "parse_error";

pub struct ParserFilter {
    key: Accessor,
    parser: Parser,
    reserve_data: bool,
    reserve_time: bool,
    remove_key_name_field: bool,
    replace_invalid_sequence: bool,
    hash_value_field: Option<Bytes>,
    inject_key_prefix: Option<String>,
    emit_invalid_record_to_error: bool,
    /// The top-level key, when the raw fast path applies (see [`ParserFilter::raw_outcome`]).
    raw_key: Option<Bytes>,
    failures: [Counter; 3],
    dropped: [Counter; 3],
    /// Keeps the warning for dropped events from flooding the log.
    limiter: LogLimiter,
    id: String,
}

fn reason_index(r: &str) -> usize {
    match r {
        REASON_KEY_MISSING => 0,
        REASON_PARSE_FAILED => 1,
        _ => 2,
    }
}

const REASONS: [&str; 3] = [REASON_KEY_MISSING, REASON_PARSE_FAILED, REASON_PARSE_ERROR];

pub fn build(sec: &Section, ctx: &mut BuildCtx) -> Result<Arc<dyn Filter>, ConfigError> {
    let id = super::plugin_id(sec, ctx, "filter_parser");
    let mut p = sec.params();
    let f = configure(&mut p, sec, &id)?;
    p.finish()?;
    Ok(Arc::new(f))
}

fn configure(p: &mut Params<'_>, sec: &Section, id: &str) -> Result<ParserFilter, ConfigError> {
    let key_name = p.required_str("key_name")?;
    let key = Accessor::parse(&key_name).map_err(|e| {
        ConfigError::new(
            sec.param("key_name")
                .map_or(sec.span.clone(), |x| x.span.clone()),
            e.to_string(),
        )
    })?;
    let reserve_data = p.bool("reserve_data", false)?;
    let reserve_time = p.bool("reserve_time", false)?;
    let remove_key_name_field = p.bool("remove_key_name_field", false)?;
    let replace_invalid_sequence = p.bool("replace_invalid_sequence", false)?;
    let hash_value_field = p
        .str("hash_value_field")?
        .map(|s| Bytes::from(s.into_bytes()));
    let inject_key_prefix = p.str("inject_key_prefix")?;
    let emit_invalid_record_to_error = p.bool("emit_invalid_record_to_error", true)?;
    let parses = p.sections("parse");
    let format = p.str("format")?;
    let parser = match (parses.as_slice(), format) {
        ([one], None) => Parser::from_section(one)?,
        ([], Some(fmt)) => {
            let fspan = sec
                .param("format")
                .map_or(sec.span.clone(), |x| x.span.clone());
            let fmt = fmt.trim();
            if fmt.starts_with('/') {
                Parser::from_params(p, "regexp", Some((fmt, &fspan)), &sec.span)?
            } else if parse::PARSER_TYPES.contains(&fmt) && fmt != "regexp" {
                Parser::from_params(p, fmt, None, &sec.span)?
            } else {
                return Err(ConfigError::new(
                    fspan,
                    format!("format '{fmt}' is not supported (available: json, none, ltsv, logfmt, or /regexp/)"),
                ));
            }
        }
        ([], None) => {
            return Err(ConfigError::new(
                sec.span.clone(),
                format!(
                    "{} needs a <parse> section (or the v0.12 form `format json`)",
                    sec.describe()
                ),
            ))
        }
        ([_, second, ..], _) => {
            return Err(ConfigError::new(
                second.span.clone(),
                "at most one <parse> section is allowed in a parser filter",
            ))
        }
        ([one], Some(_)) => {
            return Err(ConfigError::new(
                one.span.clone(),
                "both <parse> and the v0.12 `format` parameter are given: use one",
            ))
        }
    };
    let failures = ReasonCounters::new(
        "nagare_filter_parser_failures_total",
        "Events filter_parser could not parse, by reason (whatever happened to them next)",
        &[("plugin_id", id)],
    );
    let dropped = ReasonCounters::new(
        "nagare_filter_dropped_events_total",
        "Events a filter removed without passing them to @ERROR, by reason",
        &[("plugin_id", id)],
    );
    let raw_key = match key.top_level_key() {
        Some(k)
            if parser.supports_raw()
                && hash_value_field.is_none()
                && inject_key_prefix.is_none() =>
        {
            Some(k.clone())
        }
        _ => None,
    };
    Ok(ParserFilter {
        raw_key,
        key,
        parser,
        reserve_data,
        reserve_time,
        remove_key_name_field,
        replace_invalid_sequence,
        hash_value_field,
        inject_key_prefix,
        emit_invalid_record_to_error,
        failures: REASONS.map(|r| failures.get(r)),
        dropped: REASONS.map(|r| dropped.get(r)),
        limiter: LogLimiter::default(),
        id: id.to_string(),
    })
}

enum Outcome {
    Parsed(Option<EventTime>, Map),
    /// Parsed on the raw path: the record is already replaced.
    ParsedRaw(Option<EventTime>),
    /// Fluentd's `yield nil, nil` or a missing key: `reserve_data` keeps the record.
    Unparsed(&'static str),
    /// Fluentd raises: the record never passes.
    Failed(&'static str),
}

impl ParserFilter {
    fn outcome(&self, ev: &mut Event) -> Outcome {
        // With reserve_data the record is decoded anyway (to merge into): decode it first, so
        // the field is found in the map instead of scanning the raw bytes twice.
        let found = if self.reserve_data {
            self.key.get(ev.record.map_mut()).map(Found::Ref)
        } else {
            self.key.get_record(&ev.record)
        };
        let text = match found.as_deref() {
            None | Some(Value::Nil) => return Outcome::Unparsed(REASON_KEY_MISSING),
            Some(Value::Str(b) | Value::Bin(b)) => b.clone(),
            Some(_) => return Outcome::Failed(REASON_PARSE_ERROR),
        };
        let mut parsed = self.parser.parse(&text);
        if matches!(parsed, Parsed::InvalidSequence) && self.replace_invalid_sequence {
            parsed = self.parser.parse(&parse::scrub(&text));
        }
        match parsed {
            Parsed::Record { time, record } => Outcome::Parsed(time, record),
            Parsed::NoMatch => Outcome::Unparsed(REASON_PARSE_FAILED),
            // Invalid bytes make Fluentd's JSON library fail like any bad JSON (`yield nil`),
            // while Ruby regexps raise an ArgumentError.
            Parsed::InvalidSequence if self.parser.type_name() == "json" => {
                Outcome::Unparsed(REASON_PARSE_FAILED)
            }
            Parsed::InvalidSequence | Parsed::Error(_) => Outcome::Failed(REASON_PARSE_ERROR),
        }
    }

    /// Fluentd's `handle_parsed`: prefix, nest, merge.
    fn apply(&self, ev: &mut Event, mut values: Map, parsed: bool) {
        if !parsed && self.hash_value_field.is_none() {
            return; // `record.merge({})`: nothing changes
        }
        if let Some(prefix) = &self.inject_key_prefix {
            for (k, _) in values.0.iter_mut() {
                if let Some(b) = k.as_bytes() {
                    let mut n = Vec::with_capacity(prefix.len() + b.len());
                    n.extend_from_slice(prefix.as_bytes());
                    n.extend_from_slice(b);
                    *k = Value::Str(Bytes::from(n));
                }
            }
        }
        if let Some(h) = &self.hash_value_field {
            let mut m = Map::with_capacity(1);
            m.0.push((Value::Str(h.clone()), Value::Map(values)));
            values = m;
        }
        if self.reserve_data {
            let rec = ev.record.map_mut();
            if parsed && self.remove_key_name_field {
                self.key.delete(rec);
            }
            rec.0.reserve(values.len());
            for (k, v) in values.0 {
                match k {
                    Value::Str(k) => rec.insert(k, v),
                    other => rec.0.push((other, v)),
                }
            }
        } else {
            ev.record = Record::from_map(values);
        }
    }
}

/// A pair of the incoming record: where its key's bytes are (if a string), where the pair
/// and its value start, where it ends, and what the merge does with it.
struct OrigPair {
    key: Option<(usize, usize)>,
    start: usize,
    val: usize,
    end: usize,
    fate: Fate,
}

#[derive(Clone, Copy)]
enum Fate {
    Kept,
    Removed,
    Replaced(usize),
}

/// Per-thread scratch space for the raw path.
#[derive(Default)]
struct RawScratch {
    obj: RawObject,
    /// The record's pairs.
    orig: Vec<OrigPair>,
    used: Vec<bool>,
}

/// Scratch space kept per thread between events; a huge line's buffers are given back.
const SCRATCH_KEEP: usize = 1 << 20;

thread_local! {
    static RAW: RefCell<RawScratch> = RefCell::new(RawScratch::default());
}

impl ParserFilter {
    /// The fast path, for a JSON parser on a top-level key of a record still in its wire
    /// bytes: the JSON is transcoded straight to msgpack and the new record assembled from
    /// the old record's pairs and the parsed ones with one allocation (no `Value` tree, no
    /// decode of the record, nothing left for the buffer to encode). Same results as the
    /// decoded path; `None` where that path must decide (not a JSON object, odd records).
    fn raw_outcome(&self, ev: &mut Event, key: &[u8]) -> Option<Outcome> {
        RAW.with(|cell| {
            let mut guard = cell.try_borrow_mut().ok()?;
            let s = &mut *guard;
            s.obj.shrink(SCRATCH_KEEP);
            let raw = ev.record.bytes();
            let (n, mut p) = mp::map_at(raw, 0)?;
            s.orig.clear();
            let mut found = None;
            for i in 0..n {
                let k = mp::str_at(raw, p);
                let ke = mp::skip(raw, p)?;
                let ve = mp::skip(raw, ke)?;
                if k.is_some_and(|(a, e)| same_key(&raw[a..e], key)) {
                    found = Some(i);
                }
                s.orig.push(OrigPair {
                    key: k,
                    start: p,
                    val: ke,
                    end: ve,
                    fate: Fate::Kept,
                });
                p = ve;
            }
            let Some(fi) = found else {
                return Some(Outcome::Unparsed(REASON_KEY_MISSING));
            };
            let (vs, ve) = (s.orig[fi].val, s.orig[fi].end);
            let text = match mp::str_at(raw, vs) {
                Some((a, e)) => &raw[a..e],
                None if raw[vs] == 0xc0 => return Some(Outcome::Unparsed(REASON_KEY_MISSING)),
                None => return Some(Outcome::Failed(REASON_PARSE_ERROR)),
            };
            debug_assert!(ve <= raw.len());
            let time = match self.parser.parse_raw(text, &mut s.obj) {
                RawParsed::Object { time } => time,
                RawParsed::Fallback => return None,
                RawParsed::NoMatch => return Some(Outcome::Unparsed(REASON_PARSE_FAILED)),
                RawParsed::Error(_) => return Some(Outcome::Failed(REASON_PARSE_ERROR)),
            };
            let obj = &s.obj;
            let mut out;
            if self.reserve_data {
                // Which parsed pair replaces each original one (Ruby's `merge`: in place).
                s.used.clear();
                s.used.resize(obj.pairs.len(), false);
                let mut count = 0usize;
                let mut size = 0usize;
                for o in s.orig.iter_mut() {
                    let kb = o.key.map(|(a, e)| &raw[a..e]);
                    if self.remove_key_name_field && kb.is_some_and(|k| same_key(k, key)) {
                        o.fate = Fate::Removed;
                        continue;
                    }
                    count += 1;
                    match kb.and_then(|kb| obj.find(kb)) {
                        Some(j) => {
                            s.used[j] = true;
                            o.fate = Fate::Replaced(j);
                            size += o.val - o.start + obj.pairs[j].val.len();
                        }
                        None => {
                            o.fate = Fate::Kept;
                            size += o.end - o.start;
                        }
                    }
                }
                for (j, pp) in obj.pairs.iter().enumerate() {
                    if !s.used[j] {
                        count += 1;
                        size += pp.key_enc.len() + pp.val.len();
                    }
                }
                out = Vec::with_capacity(header_len(count) + size);
                mp::map_header(&mut out, count);
                for o in &s.orig {
                    match o.fate {
                        Fate::Removed => {}
                        Fate::Kept => out.extend_from_slice(&raw[o.start..o.end]),
                        Fate::Replaced(j) => {
                            out.extend_from_slice(&raw[o.start..o.val]);
                            out.extend_from_slice(&obj.buf[obj.pairs[j].val.clone()]);
                        }
                    }
                }
                for (j, pp) in obj.pairs.iter().enumerate() {
                    if !s.used[j] {
                        out.extend_from_slice(&obj.buf[pp.key_enc.clone()]);
                        out.extend_from_slice(&obj.buf[pp.val.clone()]);
                    }
                }
            } else {
                let size: usize = obj
                    .pairs
                    .iter()
                    .map(|pp| pp.key_enc.len() + pp.val.len())
                    .sum();
                out = Vec::with_capacity(header_len(obj.pairs.len()) + size);
                mp::map_header(&mut out, obj.pairs.len());
                for pp in &obj.pairs {
                    out.extend_from_slice(&obj.buf[pp.key_enc.clone()]);
                    out.extend_from_slice(&obj.buf[pp.val.clone()]);
                }
            }
            debug_assert_eq!(out.len(), out.capacity());
            ev.record = Record::from_msgpack_unchecked(Bytes::from(out));
            Some(Outcome::ParsedRaw(time))
        })
    }
}

fn header_len(n: usize) -> usize {
    match n {
        0..=15 => 1,
        16..=0xffff => 3,
        _ => 5,
    }
}

impl Filter for ParserFilter {
    fn filter(&self, stream: &mut EventStream, errors: &mut Vec<ErrorEvent>) {
        let mut now: Option<EventTime> = None;
        let mut failed = [0u64; 3];
        let mut dropped = [0u64; 3];
        let tag = &stream.tag;
        let mut set_time = |ev: &mut Event, t: Option<EventTime>| {
            if !self.reserve_time {
                match t {
                    Some(t) => ev.time = t,
                    None if self.parser.estimate_current_event() => {
                        ev.time = *now.get_or_insert_with(EventTime::now)
                    }
                    None => {}
                }
            }
        };
        stream.events.retain_mut(|ev| {
            let outcome = match self
                .raw_key
                .as_ref()
                .filter(|_| ev.record.decoded().is_none())
            {
                Some(key) => self.raw_outcome(ev, key),
                None => None,
            };
            match outcome.unwrap_or_else(|| self.outcome(ev)) {
                Outcome::ParsedRaw(t) => {
                    set_time(ev, t);
                    true
                }
                Outcome::Parsed(t, values) => {
                    set_time(ev, t);
                    self.apply(ev, values, true);
                    true
                }
                Outcome::Unparsed(reason) => {
                    let i = reason_index(reason);
                    failed[i] += 1;
                    if self.emit_invalid_record_to_error {
                        errors.push(ErrorEvent {
                            tag: tag.clone(),
                            event: ev.clone(),
                            reason,
                        });
                    } else if !self.reserve_data {
                        dropped[i] += 1;
                    }
                    if self.reserve_data {
                        // `record.merge({})`, or `{hash_value_field => {}}` merged in.
                        self.apply(ev, Map::new(), false);
                    }
                    self.reserve_data
                }
                Outcome::Failed(reason) => {
                    let i = reason_index(reason);
                    failed[i] += 1;
                    if self.emit_invalid_record_to_error {
                        errors.push(ErrorEvent {
                            tag: tag.clone(),
                            event: ev.clone(),
                            reason,
                        });
                    } else {
                        dropped[i] += 1;
                    }
                    false
                }
            }
        });
        for i in 0..3 {
            if failed[i] > 0 {
                self.failures[i].add(failed[i]);
            }
            if dropped[i] > 0 {
                self.dropped[i].add(dropped[i]);
                let reason = REASONS[i];
                if let Some(suppressed) = self.limiter.check(reason) {
                    tracing::warn!(plugin_id = %self.id, %tag, reason, events = dropped[i], suppressed, "filter_parser: events dropped (emit_invalid_record_to_error is false)");
                }
            }
        }
    }
}

impl ParserFilter {
    /// Builds from a section (tests, benches).
    pub fn from_section(sec: &Section, id: &str) -> Result<ParserFilter, ConfigError> {
        let mut p = sec.params();
        let f = configure(&mut p, sec, id)?;
        p.finish()?;
        Ok(f)
    }

    /// The accessor of `key_name`.
    pub fn key(&self) -> &Accessor {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nagare_core::{Record, Tag};
    use std::path::Path;

    fn filter(body: &str) -> Result<ParserFilter, ConfigError> {
        let text = format!("<filter **>\n  @type parser\n{body}\n</filter>\n");
        let root = nagare_config::parse_str(&text, Path::new("t.conf")).unwrap();
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let id = format!(
            "test-{}",
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        ParserFilter::from_section(&root.children[0], &id)
    }

    fn stream(records: Vec<Record>) -> EventStream {
        EventStream::new(
            Tag::from("docker.app.1"),
            records
                .into_iter()
                .map(|record| Event {
                    time: EventTime::from_secs(1_700_000_000),
                    record,
                })
                .collect(),
        )
    }

    fn json_of(r: &Record) -> String {
        let mut out = Vec::new();
        nagare_core::json::write_record(&mut out, r.as_bytes(), &mut Default::default());
        String::from_utf8(out).unwrap()
    }

    fn run(f: &ParserFilter, records: Vec<Record>) -> (EventStream, Vec<ErrorEvent>) {
        let mut s = stream(records);
        let mut errors = Vec::new();
        f.filter(&mut s, &mut errors);
        (s, errors)
    }

    #[test]
    fn v012_flat_form_as_seed_configs_write_it() {
        let f = filter("format json\nkey_name log").unwrap();
        let (s, errors) = run(
            &f,
            vec![
                Record::from_pairs(&[
                    ("log", r#"{"level":"info","msg":"hi"}"#),
                    ("source", "stdout"),
                ]),
                Record::from_pairs(&[("log", "Starting application"), ("source", "stdout")]),
            ],
        );
        assert_eq!(s.len(), 1);
        assert_eq!(
            json_of(&s.events[0].record),
            r#"{"level":"info","msg":"hi"}"#
        );
        assert_ne!(
            s.events[0].time,
            EventTime::from_secs(1_700_000_000),
            "estimate_current_event"
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].reason, REASON_PARSE_FAILED);
        assert_eq!(
            errors[0].event.record.get_str(b"log"),
            Some(&b"Starting application"[..])
        );
        let f = filter("format /^(?<a>\\w+) (?<b>\\w+)$/\nkey_name m\ntime_key t").unwrap();
        let (s, _) = run(&f, vec![Record::from_pairs(&[("m", "x y")])]);
        assert_eq!(json_of(&s.events[0].record), r#"{"a":"x","b":"y"}"#);
    }

    #[test]
    fn reserve_data_with_remove_key_keeps_the_parsed_log() {
        let f = filter(
            "key_name log\nreserve_data true\nremove_key_name_field true\nreserve_time true\n<parse>\n@type json\n</parse>",
        )
        .unwrap();
        let (s, errors) = run(
            &f,
            vec![
                Record::from_pairs(&[
                    ("container_id", "c1"),
                    (
                        "log",
                        r#"{"level":"info","log":{"status":200},"source":"app"}"#,
                    ),
                    ("source", "stdout"),
                ]),
                Record::from_pairs(&[("log", "plain text"), ("source", "stderr")]),
                Record::from_pairs(&[("source", "stderr")]),
            ],
        );
        assert_eq!(s.len(), 3, "reserve_data keeps unparsable records");
        assert_eq!(
            json_of(&s.events[0].record),
            r#"{"container_id":"c1","source":"app","level":"info","log":{"status":200}}"#
        );
        assert_eq!(s.events[0].time, EventTime::from_secs(1_700_000_000));
        assert_eq!(
            json_of(&s.events[1].record),
            r#"{"log":"plain text","source":"stderr"}"#
        );
        let reasons: Vec<_> = errors.iter().map(|e| e.reason).collect();
        assert_eq!(reasons, [REASON_PARSE_FAILED, REASON_KEY_MISSING]);
    }

    #[test]
    fn without_error_emission_failures_are_dropped_and_counted() {
        let f = filter(
            "key_name log\nemit_invalid_record_to_error false\n<parse>\n@type json\n</parse>",
        )
        .unwrap();
        let (s, errors) = run(
            &f,
            vec![
                Record::from_pairs(&[("log", "nope")]),
                Record::from_pairs(&[("x", "y")]),
                Record::from_pairs(&[("log", r#"{"a":1}"#)]),
            ],
        );
        assert_eq!(s.len(), 1);
        assert!(errors.is_empty());
        assert_eq!(f.dropped[1].get(), 1);
        assert_eq!(f.dropped[0].get(), 1);
        assert_eq!(f.failures[1].get(), 1);
    }

    #[test]
    fn time_hash_value_field_and_prefix() {
        let f = filter(
            "key_name $.payload.raw\nhash_value_field parsed\ninject_key_prefix p_\nreserve_data true\n<parse>\n@type ltsv\ntime_format %s\n</parse>",
        )
        .unwrap();
        let mut m = Map::new();
        let mut payload = Map::new();
        payload.insert(
            Bytes::from_static(b"raw"),
            Value::str("time:1600000000\tk:v"),
        );
        m.insert(Bytes::from_static(b"payload"), Value::Map(payload));
        let (s, _) = run(&f, vec![Record::from_map(m)]);
        assert_eq!(s.events[0].time, EventTime::from_secs(1_600_000_000));
        assert_eq!(
            json_of(&s.events[0].record),
            r#"{"payload":{"raw":"time:1600000000\tk:v"},"parsed":{"p_k":"v"}}"#
        );
        // A bad time is an error even with reserve_data (Fluentd raises).
        let (s, errors) = run(
            &f,
            vec![Record::from_map({
                let mut m = Map::new();
                let mut payload = Map::new();
                payload.insert(Bytes::from_static(b"raw"), Value::str("time:soon"));
                m.insert(Bytes::from_static(b"payload"), Value::Map(payload));
                m
            })],
        );
        assert!(s.is_empty());
        assert_eq!(errors[0].reason, REASON_PARSE_ERROR);
    }

    #[test]
    fn invalid_sequences() {
        let bad = Record::from_pairs(&[(&b"m"[..], &b"a\xffb c"[..])]);
        let f = filter(
            "key_name m\n<parse>\n@type regexp\nexpression /^(?<x>\\S+) (?<y>\\S+)$/\n</parse>",
        )
        .unwrap();
        let (s, errors) = run(&f, vec![bad.clone()]);
        assert!(s.is_empty());
        assert_eq!(errors[0].reason, REASON_PARSE_ERROR);
        let f = filter("key_name m\nreplace_invalid_sequence true\n<parse>\n@type regexp\nexpression /^(?<x>\\S+) (?<y>\\S+)$/\n</parse>").unwrap();
        let (s, errors) = run(&f, vec![bad]);
        assert!(errors.is_empty());
        assert_eq!(json_of(&s.events[0].record), r#"{"x":"a?b","y":"c"}"#);
    }

    #[test]
    fn config_errors() {
        let e = filter("key_name log").err().unwrap().to_string();
        assert!(e.contains("needs a <parse> section"), "{e}");
        let e = filter("<parse>\n@type json\n</parse>")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("missing required parameter 'key_name'"), "{e}");
        let e = filter("key_name log\nformat apache2")
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("t.conf:4:") && e.contains("apache2"), "{e}");
        let e = filter("key_name log\nformat json\n<parse>\n@type json\n</parse>")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("both <parse>"), "{e}");
        let e = filter("key_name log\ntime_format %s\n<parse>\n@type json\n</parse>")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown parameter 'time_format'"), "{e}");
        let e = filter("key_name $.a[\n<parse>\n@type json\n</parse>")
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("t.conf:3:") && e.contains("accessor"), "{e}");
    }
}
