//! `<filter> @type grep`: keeps or drops events by regular expressions on fields.
//!
//! ```text
//! <regexp> key $.log.level  pattern /^(error|fatal)$/ </regexp>   keep only matching events
//! <exclude> key msg  pattern /healthcheck\.Check|grpc\.health/ </exclude>   drop matching events
//! <and> <regexp>...</regexp> <regexp>...</regexp> </and>   (or <exclude>s: drop if all match)
//! <or> <regexp>...</regexp> ... </or>   keep if any matches (or <exclude>s: drop if any matches)
//! regexp1 key pattern / exclude1 key pattern   (legacy, 1..20)
//! ```
//!
//! As Fluentd's `filter_grep.rb`: top-level `<regexp>`s must all match, top-level
//! `<exclude>`s drop on any match; `<and>`/`<or>` hold either `<regexp>`s or `<exclude>`s, not
//! both. Conditions are kept per key, as Fluentd's hashes keep them: a later condition on the
//! same key in the same group replaces the earlier one (a duplicate key among the top-level
//! conditions is an error). Keys are record accessors; the value is matched as text
//! (numbers formatted, maps and arrays as JSON, a missing field as the empty string) with an
//! unanchored search.
//!
//! Dropped events are counted in `nagare_filter_dropped_events_total{plugin_id, reason}` with
//! reason `grep_regexp` (a `<regexp>` condition failed) or `grep_exclude`.

use crate::accessor::{Accessor, Lookup};
use crate::parse::regexp::ruby_regex;
use crate::plugin::{ErrorEvent, Filter};
use crate::BuildCtx;
use nagare_config::{ConfigError, Params, Section, Span};
use nagare_core::metrics::{Counter, ReasonCounters};
use nagare_core::{EventStream, Record};
use regex::Regex;
use std::sync::Arc;

/// Fluentd's `REGEXP_MAX_NUM` for `regexpN` / `excludeN`.
pub const LEGACY_MAX: usize = 20;

pub const REASON_REGEXP: &str = "grep_regexp";
pub const REASON_EXCLUDE: &str = "grep_exclude";

/// One condition: a field and a pattern.
#[derive(Debug, Clone)]
pub struct Expression {
    key_name: String,
    key: Accessor,
    pattern: Regex,
}

impl Expression {
    pub fn new(key: &str, pattern: Regex) -> Result<Self, String> {
        Ok(Expression {
            key_name: key.to_string(),
            key: Accessor::parse(key).map_err(|e| e.to_string())?,
            pattern,
        })
    }

    /// Whether the field's text matches (a missing field is the empty string).
    pub fn matches(&self, rec: &Record) -> bool {
        match self.key.lookup(rec) {
            Lookup::Missing => self.pattern.is_match(""),
            Lookup::Bytes(b) => match std::str::from_utf8(b) {
                Ok(s) => self.pattern.is_match(s),
                // Fluentd scrubs invalid sequences with '?' and retries.
                Err(_) => self
                    .pattern
                    .is_match(&String::from_utf8_lossy(&crate::parse::scrub(b))),
            },
            Lookup::Value(v) => self.pattern.is_match(&v.to_text()),
        }
    }
}

/// Conditions keyed by key name, replacing on a repeated key (Fluentd's hashes).
#[derive(Default, Debug)]
struct Keyed(Vec<Expression>);

impl Keyed {
    fn put(&mut self, e: Expression) {
        match self.0.iter_mut().find(|x| x.key_name == e.key_name) {
            Some(slot) => *slot = e,
            None => self.0.push(e),
        }
    }
    fn has(&self, key: &str) -> bool {
        self.0.iter().any(|x| x.key_name == key)
    }
}

pub struct GrepFilter {
    regexp_and: Vec<Expression>,
    regexp_or: Vec<Expression>,
    exclude_and: Vec<Expression>,
    exclude_or: Vec<Expression>,
    dropped_regexp: Counter,
    dropped_exclude: Counter,
}

pub fn build(sec: &Section, ctx: &mut BuildCtx) -> Result<Arc<dyn Filter>, ConfigError> {
    let id = super::plugin_id(sec, ctx, "filter_grep");
    Ok(Arc::new(GrepFilter::from_section(sec, &id)?))
}

fn param_span(sec: &Section, key: &str) -> Span {
    sec.param(key).map_or(sec.span.clone(), |p| p.span.clone())
}

/// `<regexp>`/`<exclude>`: `key` and `pattern`.
fn condition(sec: &Section) -> Result<Expression, ConfigError> {
    let mut p = sec.params();
    let key = p.required_str("key")?;
    let pattern = p.required_str("pattern")?;
    p.finish()?;
    let re = ruby_regex(&pattern).map_err(|e| ConfigError::new(param_span(sec, "pattern"), e))?;
    Expression::new(&key, re).map_err(|e| ConfigError::new(param_span(sec, "key"), e))
}

fn conditions(p: &mut Params<'_>, name: &str) -> Result<Vec<(Expression, Span)>, ConfigError> {
    p.sections(name)
        .into_iter()
        .map(|s| condition(s).map(|e| (e, s.span.clone())))
        .collect()
}

impl GrepFilter {
    /// Builds from a `<filter>` section (also used by tests and benches).
    pub fn from_section(sec: &Section, id: &str) -> Result<GrepFilter, ConfigError> {
        let mut p = sec.params();
        let mut regexp_and = Keyed::default();
        let mut regexp_or = Keyed::default();
        let mut exclude_and = Keyed::default();
        let mut exclude_or = Keyed::default();
        for (kind, target) in [("regexp", &mut regexp_and), ("exclude", &mut exclude_or)] {
            for i in 1..=LEGACY_MAX {
                let name = format!("{kind}{i}");
                let Some(v) = p.str(&name)? else { continue };
                let span = param_span(sec, &name);
                let Some((key, pat)) = v.split_once(' ') else {
                    return Err(ConfigError::new(
                        span,
                        format!("{name} needs two values, a key and a pattern, like `{name} message ^ERROR`"),
                    ));
                };
                if target.has(key) {
                    return Err(ConfigError::new(
                        span,
                        format!("{name} repeats the key '{key}' of an earlier {kind}N"),
                    ));
                }
                // The legacy form is a bare pattern (no /.../ literal), as Regexp.compile.
                let re = crate::parse::regexp::compile_ruby(pat, false, false, false)
                    .map_err(|e| ConfigError::new(span.clone(), e))?;
                target.put(Expression::new(key, re).map_err(|e| ConfigError::new(span, e))?);
            }
        }
        for (name, target) in [("regexp", &mut regexp_and), ("exclude", &mut exclude_or)] {
            for (e, span) in conditions(&mut p, name)? {
                if target.has(&e.key_name) {
                    return Err(ConfigError::new(
                        span,
                        format!("duplicate key '{}' in top-level <{name}> conditions (combine the patterns with |, or use <or>)", e.key_name),
                    ));
                }
                target.put(e);
            }
        }
        for (group, reg, exc) in [
            ("and", &mut regexp_and, &mut exclude_and),
            ("or", &mut regexp_or, &mut exclude_or),
        ] {
            for g in p.sections(group) {
                let mut gp = g.params();
                let regexps = conditions(&mut gp, "regexp")?;
                let excludes = conditions(&mut gp, "exclude")?;
                gp.finish()?;
                if !regexps.is_empty() && !excludes.is_empty() {
                    return Err(ConfigError::new(
                        g.span.clone(),
                        format!("do not put both <regexp> and <exclude> in one <{group}>"),
                    ));
                }
                if regexps.is_empty() && excludes.is_empty() {
                    return Err(ConfigError::new(
                        g.span.clone(),
                        format!("<{group}> needs <regexp> or <exclude> sections"),
                    ));
                }
                regexps.into_iter().for_each(|(e, _)| reg.put(e));
                excludes.into_iter().for_each(|(e, _)| exc.put(e));
            }
        }
        p.finish()?;
        let dropped = ReasonCounters::new(
            "nagare_filter_dropped_events_total",
            "Events a filter removed without passing them to @ERROR, by reason",
            &[("plugin_id", id)],
        );
        Ok(GrepFilter {
            regexp_and: regexp_and.0,
            regexp_or: regexp_or.0,
            exclude_and: exclude_and.0,
            exclude_or: exclude_or.0,
            dropped_regexp: dropped.get(REASON_REGEXP),
            dropped_exclude: dropped.get(REASON_EXCLUDE),
        })
    }

    /// `None` to keep the record, or the reason it is dropped.
    pub fn verdict(&self, rec: &Record) -> Option<&'static str> {
        if self.regexp_and.iter().any(|e| !e.matches(rec)) {
            return Some(REASON_REGEXP);
        }
        if !self.regexp_or.is_empty() && !self.regexp_or.iter().any(|e| e.matches(rec)) {
            return Some(REASON_REGEXP);
        }
        if !self.exclude_and.is_empty() && self.exclude_and.iter().all(|e| e.matches(rec)) {
            return Some(REASON_EXCLUDE);
        }
        if self.exclude_or.iter().any(|e| e.matches(rec)) {
            return Some(REASON_EXCLUDE);
        }
        None
    }
}

impl Filter for GrepFilter {
    fn filter(&self, stream: &mut EventStream, _errors: &mut Vec<ErrorEvent>) {
        let (mut by_regexp, mut by_exclude) = (0u64, 0u64);
        stream.events.retain(|ev| match self.verdict(&ev.record) {
            None => true,
            Some(REASON_REGEXP) => {
                by_regexp += 1;
                false
            }
            Some(_) => {
                by_exclude += 1;
                false
            }
        });
        if by_regexp > 0 {
            self.dropped_regexp.add(by_regexp);
        }
        if by_exclude > 0 {
            self.dropped_exclude.add(by_exclude);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use nagare_core::{Event, EventTime, Map, Tag, Value};
    use std::path::Path;

    fn grep(body: &str) -> Result<GrepFilter, ConfigError> {
        let text = format!("<filter **>\n  @type grep\n{body}\n</filter>\n");
        let root = nagare_config::parse_str(&text, Path::new("t.conf")).unwrap();
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let id = format!(
            "test-{}",
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        GrepFilter::from_section(&root.children[0], &id)
    }

    fn rec(json: &str) -> Record {
        match Value::from_json(&Bytes::copy_from_slice(json.as_bytes())).unwrap() {
            Value::Map(m) => Record::from_map(m),
            _ => panic!(),
        }
    }

    fn raw(json: &str) -> Record {
        let mut out = bytes::BytesMut::new();
        Value::Map(rec(json).decoded().unwrap().clone()).encode(&mut out);
        Record::from_msgpack(out.freeze()).unwrap()
    }

    fn kept(g: &GrepFilter, recs: &[&str]) -> Vec<bool> {
        recs.iter()
            .map(|j| {
                let a = g.verdict(&rec(j)).is_none();
                assert_eq!(
                    a,
                    g.verdict(&raw(j)).is_none(),
                    "raw and decoded agree on {j}"
                );
                a
            })
            .collect()
    }

    #[test]
    fn regexp_and_exclude() {
        let g = grep(
            "<regexp>\nkey $.log.level\npattern /^(error|fatal)$/\n</regexp>\n<exclude>\nkey msg\npattern /healthcheck\\.Check|grpc\\.health/\n</exclude>",
        )
        .unwrap();
        assert_eq!(
            kept(
                &g,
                &[
                    r#"{"log":{"level":"error"},"msg":"boom"}"#,
                    r#"{"log":{"level":"info"},"msg":"boom"}"#,
                    r#"{"log":{"level":"fatal"},"msg":"grpc.health.v1.Health/Check ok"}"#,
                    r#"{"msg":"no level"}"#,
                ]
            ),
            [true, false, false, false]
        );
    }

    #[test]
    fn and_or_groups() {
        let g = grep("<or>\n<regexp>\nkey a\npattern x\n</regexp>\n<regexp>\nkey b\npattern y\n</regexp>\n</or>\n<and>\n<exclude>\nkey c\npattern 1\n</exclude>\n<exclude>\nkey d\npattern 2\n</exclude>\n</and>").unwrap();
        assert_eq!(
            kept(
                &g,
                &[
                    r#"{"a":"x"}"#,
                    r#"{"b":"y","c":1}"#,
                    r#"{"a":"x","c":1,"d":2}"#,
                    r#"{"a":"z","b":"z"}"#,
                ]
            ),
            [true, true, false, false]
        );
    }

    #[test]
    fn legacy_params_and_missing_fields() {
        let g = grep("regexp1 level ^(warn|error)$\nexclude1 msg ^$").unwrap();
        assert_eq!(
            kept(
                &g,
                &[
                    r#"{"level":"warn","msg":"x"}"#,
                    r#"{"level":"warn"}"#,
                    r#"{"level":"info","msg":"x"}"#,
                    r#"{"level":["warn"],"msg":"x"}"#,
                ]
            ),
            [true, false, false, false]
        );
        let g = grep("<regexp>\nkey n\npattern /^4\\d\\d$/\n</regexp>").unwrap();
        assert_eq!(kept(&g, &[r#"{"n":404}"#, r#"{"n":200}"#]), [true, false]);
    }

    #[test]
    fn drops_are_counted() {
        let g = grep("<exclude>\nkey msg\npattern health\n</exclude>\n<regexp>\nkey level\npattern .\n</regexp>").unwrap();
        let mut s = EventStream::new(
            Tag::from("t"),
            ["health ok", "real", "real"]
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let mut r = Map::new();
                    r.insert(Bytes::from_static(b"msg"), Value::str(m));
                    if i < 2 {
                        r.insert(Bytes::from_static(b"level"), Value::str("info"));
                    }
                    Event {
                        time: EventTime::from_secs(1),
                        record: Record::from_map(r),
                    }
                })
                .collect(),
        );
        g.filter(&mut s, &mut Vec::new());
        assert_eq!(s.len(), 1);
        assert_eq!(g.dropped_exclude.get(), 1);
        assert_eq!(g.dropped_regexp.get(), 1);
    }

    #[test]
    fn config_errors() {
        for (body, want) in [
            ("regexp1 onlykey", "needs two values"),
            ("<regexp>\nkey a\n</regexp>", "missing required parameter 'pattern'"),
            ("<regexp>\nkey a\npattern /(?=x)/\n</regexp>", "look-around"),
            ("<regexp>\nkey a\npattern x\n</regexp>\n<regexp>\nkey a\npattern y\n</regexp>", "duplicate key 'a'"),
            ("<and>\n<regexp>\nkey a\npattern x\n</regexp>\n<exclude>\nkey b\npattern y\n</exclude>\n</and>", "both <regexp> and <exclude>"),
            ("<exclude>\nkey $.a[\npattern x\n</exclude>", "accessor"),
            ("<regexp>\nkey a\npattern x\nflags i\n</regexp>", "unknown parameter 'flags'"),
        ] {
            let e = grep(body).err().unwrap_or_else(|| panic!("{body} should fail")).to_string();
            assert!(e.contains(want) && e.starts_with("t.conf:"), "{body}: {e}");
        }
    }
}
