//! `<filter> @type record_transformer`: sets fields from templates, removes or keeps fields.
//!
//! ```text
//! <filter docker.**>
//!   @type record_transformer
//!   <record>
//!     host ${hostname}
//!     service ${tag_parts[1]}
//!     level ${record["level"]}
//!     meta {"tag":"${tag}","labels":["${tag_suffix[-1]}"]}
//!   </record>
//!   remove_keys $.log.request, container_id
//! </filter>
//! ```
//!
//! As Fluentd v1's `filter_record_transformer.rb` without `enable_ruby`:
//! * `<record>` values are templates ([`crate::placeholder`], syntax
//!   [`Syntax::RECORD_TRANSFORMER`]); a value starting with `{` or `[` is JSON whose strings
//!   (values and keys) are templates. Placeholders read the record as it came in.
//! * The new record is the old one (or, with `renew_record`, an empty one plus `keep_keys`)
//!   with the `<record>` fields set; then `renew_time_key` sets the event time from a field
//!   (seconds, as a float); then `remove_keys` (record accessors) are deleted.
//! * `auto_typecast` (default true, as in Fluentd v1): a value that is exactly one placeholder
//!   keeps the field's type (`${record["status"]}` stays an integer).
//! * `enable_ruby true` is refused at load: Nagare runs no Ruby. Placeholders it does not know
//!   are load errors too (Fluentd warns per event and writes nothing).
//!
//! Differences: `${time}` is UTC; `${k}` (v0.12's bare field names) and nested
//! `${record["a"]["b"]}` work without Ruby; maps render as JSON, not Ruby's `{"a"=>1}`;
//! `__FOO__` stays literal (Fluentd replaces it with nothing).

use crate::accessor::Accessor;
use crate::placeholder::{Context, Syntax, Template};
use crate::plugin::{ErrorEvent, Filter};
use crate::BuildCtx;
use bytes::Bytes;
use nagare_config::{ConfigError, Section};
use nagare_core::metrics::{Counter, ReasonCounters};
use nagare_core::{EventStream, EventTime, Map, Record, Value};
use std::sync::Arc;

pub const REASON_RENEW_TIME: &str = "renew_time_failed";

/// A `<record>` value: a template, or JSON holding templates.
#[derive(Debug, Clone)]
enum Tmpl {
    Lit(Value),
    Str(Template),
    Map(Vec<(Template, Tmpl)>),
    Array(Vec<Tmpl>),
}

pub struct RecordTransformer {
    fields: Vec<(Bytes, Tmpl)>,
    remove_keys: Vec<Accessor>,
    keep_keys: Vec<Bytes>,
    renew_record: bool,
    renew_time_key: Option<Bytes>,
    auto_typecast: bool,
    hostname: String,
    uses_time: bool,
    failed: Counter,
}

pub fn build(sec: &Section, ctx: &mut BuildCtx) -> Result<Arc<dyn Filter>, ConfigError> {
    let id = super::plugin_id(sec, ctx, "filter_record_transformer");
    Ok(Arc::new(RecordTransformer::from_section(
        sec,
        &id,
        &ctx.hostname,
    )?))
}

fn compile(s: &str) -> Result<Template, String> {
    Template::compile(s, &Syntax::RECORD_TRANSFORMER)
}

/// A JSON `<record>` value (document order kept, as Ruby's `JSON.parse`): its strings, keys
/// included, are templates.
fn tmpl_of_json(v: Value) -> Result<Tmpl, String> {
    Ok(match v {
        Value::Str(s) => {
            let t = compile(&String::from_utf8_lossy(&s))?;
            match t.literal() {
                Some(_) => Tmpl::Lit(Value::Str(s)),
                None => Tmpl::Str(t),
            }
        }
        Value::Map(m) => Tmpl::Map(
            m.0.into_iter()
                .map(|(k, v)| Ok((compile(&k.to_text())?, tmpl_of_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        Value::Array(a) => Tmpl::Array(a.into_iter().map(tmpl_of_json).collect::<Result<_, _>>()?),
        other => Tmpl::Lit(other),
    })
}

fn uses_time(t: &Tmpl) -> bool {
    match t {
        Tmpl::Lit(_) => false,
        Tmpl::Str(t) => t.as_str().contains("${time}"),
        Tmpl::Map(m) => m
            .iter()
            .any(|(k, v)| k.as_str().contains("${time}") || uses_time(v)),
        Tmpl::Array(a) => a.iter().any(uses_time),
    }
}

impl RecordTransformer {
    /// Builds from a `<filter>` section.
    pub fn from_section(sec: &Section, id: &str, hostname: &str) -> Result<Self, ConfigError> {
        let mut p = sec.params();
        let span = |key: &str| sec.param(key).map_or(sec.span.clone(), |x| x.span.clone());
        if p.bool("enable_ruby", false)? {
            return Err(ConfigError::new(
                span("enable_ruby"),
                "enable_ruby is not supported: Nagare runs no Ruby. Use the placeholders ${tag}, ${tag_parts[N]}, ${tag_prefix[N]}, ${tag_suffix[N]}, ${hostname}, ${time}, ${record[\"key\"]} (nested: ${record[\"a\"][\"b\"]}) or ${key}",
            ));
        }
        let auto_typecast = p.bool("auto_typecast", true)?;
        let renew_record = p.bool("renew_record", false)?;
        let renew_time_key = p
            .str("renew_time_key")?
            .map(|s| Bytes::from(s.into_bytes()));
        let remove_keys = p
            .array("remove_keys")?
            .unwrap_or_default()
            .iter()
            .map(|k| {
                Accessor::parse(k).map_err(|e| ConfigError::new(span("remove_keys"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let keep_keys: Vec<Bytes> = p
            .array("keep_keys")?
            .unwrap_or_default()
            .into_iter()
            .map(|k| Bytes::from(k.into_bytes()))
            .collect();
        if !keep_keys.is_empty() && !renew_record {
            return Err(ConfigError::new(
                span("keep_keys"),
                "keep_keys needs renew_record true (without it every key is kept anyway)",
            ));
        }
        let mut fields: Vec<(Bytes, Tmpl)> = Vec::new();
        for rs in p.sections("record") {
            let mut rp = rs.params();
            for param in &rs.params {
                let _ = rp.str(&param.key)?;
                let v = param.value.as_str();
                let t = if v.starts_with('{') || v.starts_with('[') {
                    match Value::from_json(&Bytes::copy_from_slice(v.as_bytes())) {
                        Ok(j) => tmpl_of_json(j),
                        // Fluentd: "failed to parse as json. Assuming it is a string".
                        Err(_) => compile(v).map(Tmpl::Str),
                    }
                } else {
                    compile(v).map(|t| match t.literal() {
                        Some(l) => Tmpl::Lit(Value::Str(Bytes::copy_from_slice(l))),
                        None => Tmpl::Str(t),
                    })
                }
                .map_err(|e| ConfigError::new(param.span.clone(), e))?;
                let key = Bytes::copy_from_slice(param.key.as_bytes());
                match fields.iter_mut().find(|(k, _)| *k == key) {
                    Some(slot) => slot.1 = t,
                    None => fields.push((key, t)),
                }
            }
            rp.finish()?;
        }
        p.finish()?;
        let uses_time = fields.iter().any(|(_, t)| uses_time(t));
        Ok(RecordTransformer {
            fields,
            remove_keys,
            keep_keys,
            renew_record,
            renew_time_key,
            auto_typecast,
            hostname: hostname.to_string(),
            uses_time,
            failed: ReasonCounters::new(
                "nagare_filter_failed_events_total",
                "Events a filter could not transform, sent to @ERROR, by reason",
                &[("plugin_id", id)],
            )
            .get(REASON_RENEW_TIME),
        })
    }

    fn render(&self, t: &Tmpl, ctx: &Context<'_>) -> Value {
        match t {
            Tmpl::Lit(v) => v.clone(),
            Tmpl::Str(t) => t.render_value(ctx, self.auto_typecast),
            Tmpl::Map(m) => {
                let mut out = Map::with_capacity(m.len());
                for (k, v) in m {
                    let k = Bytes::from(k.render(ctx));
                    let v = self.render(v, ctx);
                    out.insert(k, v);
                }
                Value::Map(out)
            }
            Tmpl::Array(a) => Value::Array(a.iter().map(|v| self.render(v, ctx)).collect()),
        }
    }
}

/// Ruby's `Time.at(v.to_f)`.
fn time_of(v: &Value) -> Option<EventTime> {
    let f = match v {
        Value::Float(f) => *f,
        Value::Int(i) => *i as f64,
        Value::UInt(u) => *u as f64,
        Value::Str(s) | Value::Bin(s) => std::str::from_utf8(s)
            .ok()?
            .trim()
            .parse::<f64>()
            .unwrap_or(0.0),
        Value::Nil => 0.0,
        _ => return None,
    };
    if !(0.0..4_294_967_296.0).contains(&f) {
        return None;
    }
    let secs = f.floor();
    Some(EventTime::new(
        secs as u32,
        (((f - secs) * 1e9).round() as u32).min(999_999_999),
    ))
}

impl Filter for RecordTransformer {
    fn filter(&self, stream: &mut EventStream, errors: &mut Vec<ErrorEvent>) {
        let tag = stream.tag.clone();
        let mut values: Vec<(Bytes, Value)> = Vec::with_capacity(self.fields.len());
        let mut failed = 0u64;
        stream.events.retain_mut(|ev| {
            values.clear();
            {
                let ctx = Context {
                    tag: tag.as_bytes(),
                    hostname: &self.hostname,
                    time: if self.uses_time {
                        ev.time
                    } else {
                        EventTime::default()
                    },
                    record: Some(&ev.record),
                    captures: None,
                };
                for (k, t) in &self.fields {
                    values.push((k.clone(), self.render(t, &ctx)));
                }
            }
            // Only kept when it may be needed: holding it makes `map_mut` copy the map.
            let original = self.renew_time_key.is_some().then(|| ev.clone());
            let map: &mut Map = if self.renew_record {
                let mut m = Map::with_capacity(self.keep_keys.len() + values.len());
                for k in &self.keep_keys {
                    if let Some(v) = ev.record.get(k) {
                        m.insert(k.clone(), v);
                    }
                }
                ev.record = Record::from_map(m);
                ev.record.map_mut()
            } else {
                ev.record.map_mut()
            };
            for (k, v) in values.drain(..) {
                map.insert(k, v);
            }
            if let Some(k) = &self.renew_time_key {
                if let Some(v) = map.get(k) {
                    match time_of(v) {
                        Some(t) => ev.time = t,
                        None => {
                            failed += 1;
                            if let Some(event) = original {
                                errors.push(ErrorEvent {
                                    tag: tag.clone(),
                                    event,
                                    reason: REASON_RENEW_TIME,
                                });
                            }
                            return false;
                        }
                    }
                }
            }
            let map = ev.record.map_mut();
            for a in &self.remove_keys {
                a.delete(map);
            }
            true
        });
        if failed > 0 {
            self.failed.add(failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nagare_core::{Event, Tag};
    use std::path::Path;

    fn rt(body: &str) -> Result<RecordTransformer, ConfigError> {
        let text = format!("<filter **>\n  @type record_transformer\n{body}\n</filter>\n");
        let root = nagare_config::parse_str(&text, Path::new("t.conf")).unwrap();
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let id = format!(
            "test-{}",
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        RecordTransformer::from_section(&root.children[0], &id, "host-1")
    }

    fn run(f: &RecordTransformer, json: &str) -> (EventStream, Vec<ErrorEvent>) {
        let m = match Value::from_json(&Bytes::copy_from_slice(json.as_bytes())).unwrap() {
            Value::Map(m) => m,
            _ => panic!(),
        };
        let mut raw = bytes::BytesMut::new();
        Value::Map(m).encode(&mut raw);
        let mut s = EventStream::new(
            Tag::from("docker.condor.8f21"),
            vec![Event {
                time: EventTime::from_secs(1_700_000_000),
                record: Record::from_msgpack(raw.freeze()).unwrap(),
            }],
        );
        let mut errors = Vec::new();
        f.filter(&mut s, &mut errors);
        (s, errors)
    }

    fn json_of(r: &Record) -> String {
        let mut out = Vec::new();
        nagare_core::json::write_record(&mut out, r.as_bytes(), &mut Default::default());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn placeholders_and_json_values() {
        let f = rt(r#"<record>
  host ${hostname}
  service ${tag_parts[1]}
  status ${record["status"]}
  status_s s=${status}
  when ${time}
  meta {"tag":"${tag}","parts":["${tag_prefix[1]}","${tag_suffix[-1]}"],"n":1}
  broken "{not json ${tag}"
</record>"#)
        .unwrap();
        let (s, _) = run(&f, r#"{"status":200,"msg":"x"}"#);
        assert_eq!(
            json_of(&s.events[0].record),
            r#"{"status":200,"msg":"x","host":"host-1","service":"condor","status_s":"s=200","when":"2023-11-14 22:13:20 +0000","meta":{"tag":"docker.condor.8f21","parts":["docker.condor","8f21"],"n":1},"broken":"{not json docker.condor.8f21"}"#
        );
    }

    #[test]
    fn typecast_off_stringifies() {
        let f = rt("auto_typecast false\n<record>\ns ${record[\"status\"]}\n</record>").unwrap();
        let (s, _) = run(&f, r#"{"status":200}"#);
        assert_eq!(json_of(&s.events[0].record), r#"{"status":200,"s":"200"}"#);
    }

    #[test]
    fn renew_keep_remove_and_time() {
        let f = rt("renew_record true\nkeep_keys level,missing\nrenew_time_key t\nremove_keys $.nested.drop,t\n<record>\nt ${record[\"epoch\"]}\nnested {\"keep\":\"k\",\"drop\":\"d\"}\n</record>").unwrap();
        let (s, errors) = run(&f, r#"{"level":"info","epoch":1600000000.5,"other":1}"#);
        assert!(errors.is_empty());
        assert_eq!(s.events[0].time, EventTime::new(1_600_000_000, 500_000_000));
        assert_eq!(
            json_of(&s.events[0].record),
            r#"{"level":"info","nested":{"keep":"k"}}"#
        );
        let (s, errors) = run(&f, r#"{"epoch":{"bad":1}}"#);
        assert!(s.is_empty());
        assert_eq!(errors[0].reason, REASON_RENEW_TIME);
    }

    #[test]
    fn config_errors() {
        for (body, want) in [
            ("enable_ruby true", "enable_ruby is not supported"),
            ("keep_keys a", "renew_record"),
            (
                "<record>\nx ${record['a'].upcase}\n</record>",
                "Ruby expressions",
            ),
            ("<record>\nx ${tag_parts[one]}\n</record>", "not an integer"),
            ("remove_keys $.a[", "accessor"),
            ("renew_recrd true", "did you mean 'renew_record'"),
        ] {
            let e = rt(body)
                .err()
                .unwrap_or_else(|| panic!("{body}"))
                .to_string();
            assert!(e.contains(want) && e.starts_with("t.conf:"), "{body}: {e}");
        }
    }
}
