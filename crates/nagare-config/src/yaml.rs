//! Fluentd's YAML syntax, built into the same [`Section`] tree as the classic syntax, following
//! Fluentd's `lib/fluent/config/yaml_parser/`.
//!
//! ```yaml
//! system:                      # -> <system> (nested maps become subsections)
//!   log_level: info
//! config:                      # a list of directives, in order
//!   - source:                  # -> <source>
//!       $type: forward         # -> @type forward   ($id, $label, $log_level likewise)
//!       port: 24224
//!   - match:
//!       $tag: docker.**        # -> <match docker.**>   (a list is joined with spaces)
//!       $type: copy
//!       store:                 # a list of maps -> one <store> per item
//!         - $type: "null"       # quoted: a bare null is YAML null
//!       buffer:                # a map -> <buffer tag,time>
//!         $arg: tag,time       #   (a list is joined with commas)
//!         flush_interval: 5s
//!   - label:
//!       $name: "@OUT"          # -> <label @OUT>
//!       config: [...]          # the label's own directive list
//!   - !include conf.d/*.yaml   # each file is a list of directives, spliced in
//! ```
//!
//! Values: strings as written; numbers and booleans as their YAML text (`10`, `1.5`, `true`);
//! `null` as `""`; a list of scalars as a compact JSON array; `!fluent/json` as compact JSON;
//! `!fluent/s "..."` as a double-quoted classic string (escapes and the embedded-Ruby subset).
//!
//! Spans: `serde_yaml_ng`'s `Value` carries no positions, so each key's span is found by
//! searching the text for `key:` forward from the previous key, in document order. This is
//! exact for ordinary block and flow YAML; for keys reached through anchors, aliases or `<<`
//! merges it can be off (it falls back to the enclosing key's span). Syntax errors carry the
//! YAML parser's own line and column.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_yaml_ng::value::TaggedValue;
use serde_yaml_ng::{Mapping, Value};

use crate::error::ConfigError;
use crate::include::Loader;
use crate::lexer::Cursor;
use crate::tree::{Param, Section, Span};
use crate::value::Json;

pub(crate) fn parse_yaml(
    text: &str,
    file: &Path,
    loader: &mut Loader<'_>,
) -> Result<Section, ConfigError> {
    let file = Arc::new(file.to_path_buf());
    let mut root = Section::new("ROOT", "", Span::new(&file, 1, 1));
    let doc = load(text, &file)?;
    let mut loc = Locator::new(text, Arc::clone(&file));
    let mut b = Builder { loader };
    match doc {
        Value::Null => {}
        Value::Mapping(map) => {
            for (k, v) in &map {
                let key = key_string(k, &root.span)?;
                let span = loc.key(&key).unwrap_or_else(|| root.span.clone());
                match key.as_str() {
                    "system" => {
                        let s = b.section("system", v, span, &mut loc)?;
                        root.children.push(s);
                    }
                    "config" => b.directives(v, &mut loc, &mut root.children, &span)?,
                    other => {
                        return Err(ConfigError::new(
                            span,
                            format!(
                                "unknown top-level key '{other}' (expected 'system' and 'config')"
                            ),
                        ))
                    }
                }
            }
        }
        _ => {
            return Err(ConfigError::new(
                root.span,
                "a YAML config must be a mapping with 'system' and/or 'config' keys",
            ))
        }
    }
    Ok(root)
}

fn load(text: &str, file: &Arc<PathBuf>) -> Result<Value, ConfigError> {
    let to_error = |e: serde_yaml_ng::Error| {
        let span = e.location().map_or_else(
            || Span::new(file, 1, 1),
            |l| {
                Span::new(
                    file,
                    u32::try_from(l.line()).unwrap_or(u32::MAX),
                    u32::try_from(l.column()).unwrap_or(u32::MAX),
                )
            },
        );
        ConfigError::new(span, format!("invalid YAML: {e}"))
    };
    let mut doc: Value = serde_yaml_ng::from_str(text).map_err(to_error)?;
    doc.apply_merge().map_err(to_error)?;
    Ok(doc)
}

struct Builder<'l, 'o> {
    loader: &'l mut Loader<'o>,
}

impl Builder<'_, '_> {
    /// A directive list (`config:` of the root, a label or a worker, or an included file).
    fn directives(
        &mut self,
        v: &Value,
        loc: &mut Locator<'_>,
        out: &mut Vec<Section>,
        at: &Span,
    ) -> Result<(), ConfigError> {
        let items = match v {
            Value::Null => return Ok(()),
            Value::Tagged(t) if t.tag == "include" => return self.include(t, loc, out, at),
            Value::Sequence(items) => items,
            _ => {
                return Err(ConfigError::at(
                    at,
                    "expected a list of directives (- source:, - match:, - filter:, - label:, !include)",
                ))
            }
        };
        for item in items {
            match item {
                Value::Tagged(t) if t.tag == "include" => self.include(t, loc, out, at)?,
                Value::Mapping(map) => {
                    for (k, v) in map {
                        let key = key_string(k, at)?;
                        let span = loc.key(&key).unwrap_or_else(|| at.clone());
                        let section = match key.as_str() {
                            "source" | "match" | "filter" => self.section(&key, v, span, loc)?,
                            "label" | "worker" => self.label(&key, v, span, loc)?,
                            other => {
                                return Err(ConfigError::new(
                                    span,
                                    format!(
                                        "unknown directive '{other}' (expected source, filter, match, label, worker or !include)"
                                    ),
                                ))
                            }
                        };
                        out.push(section);
                    }
                }
                _ => {
                    return Err(ConfigError::at(
                        at,
                        "each item of a directive list must be a mapping like '- match: {...}' or !include",
                    ))
                }
            }
        }
        Ok(())
    }

    /// `!include pattern`: each matching file (a directive list) is spliced into `out`.
    fn include(
        &mut self,
        t: &TaggedValue,
        loc: &mut Locator<'_>,
        out: &mut Vec<Section>,
        at: &Span,
    ) -> Result<(), ConfigError> {
        let span = loc.text("!include").unwrap_or_else(|| at.clone());
        let Value::String(pattern) = &t.value else {
            return Err(ConfigError::new(span, "!include needs a file path or glob"));
        };
        for path in self.loader.resolve(pattern, &loc.file, &span)? {
            let text = self.loader.enter(&path, &span)?;
            let file = Arc::new(path);
            let result = load(&text, &file).and_then(|doc| {
                let mut sub = Locator::new(&text, Arc::clone(&file));
                let start = Span::new(&file, 1, 1);
                if !matches!(doc, Value::Sequence(_) | Value::Null) {
                    return Err(ConfigError::new(
                        start,
                        "an included YAML file must be a list of directives (- source:, - match:, ...)",
                    ));
                }
                self.directives(&doc, &mut sub, out, &start)
            });
            self.loader.leave();
            result?;
        }
        Ok(())
    }

    /// `label:` (`$name`, `config`) or `worker:` (`$arg`, `config`).
    fn label(
        &mut self,
        name: &str,
        v: &Value,
        span: Span,
        loc: &mut Locator<'_>,
    ) -> Result<Section, ConfigError> {
        let mut section = Section::new(name, "", span);
        let Value::Mapping(map) = v else {
            return Err(ConfigError::at(
                &section.span,
                format!("<{name}> must be a mapping with '$name' and 'config'"),
            ));
        };
        for (k, v) in map {
            let key = key_string(k, &section.span)?;
            let kspan = loc.key(&key).unwrap_or_else(|| section.span.clone());
            match key.as_str() {
                "$name" | "$arg" => section.arg = self.arg(v, ",", &kspan)?,
                "config" => {
                    let mut children = Vec::new();
                    self.directives(v, loc, &mut children, &kspan)?;
                    section.children.extend(children);
                }
                other => {
                    return Err(ConfigError::new(
                        kspan,
                        format!("unexpected key '{other}' in <{name}> (expected $name and config)"),
                    ))
                }
            }
        }
        Ok(section)
    }

    /// Any other section: `$`-keys, params, and subsections (maps, lists of maps).
    fn section(
        &mut self,
        name: &str,
        v: &Value,
        span: Span,
        loc: &mut Locator<'_>,
    ) -> Result<Section, ConfigError> {
        let mut section = Section::new(name, "", span);
        let map: &Mapping = match v {
            Value::Null => return Ok(section),
            Value::Mapping(map) => map,
            _ => {
                return Err(ConfigError::at(
                    &section.span,
                    format!("<{name}> must be a mapping of parameters"),
                ))
            }
        };
        for (k, v) in map {
            let key = key_string(k, &section.span)?;
            let kspan = loc.key(&key).unwrap_or_else(|| section.span.clone());
            let at_key = match key.as_str() {
                "$type" => Some("@type"),
                "$id" => Some("@id"),
                "$label" => Some("@label"),
                "$log_level" => Some("@log_level"),
                _ => None,
            };
            if let Some(at_key) = at_key {
                if key == "$type" && v.is_null() {
                    return Err(ConfigError::new(
                        kspan,
                        "'$type: null' is YAML's null, not a plugin name: write $type: \"null\"",
                    ));
                }
                let value = self.scalar(v, &kspan)?;
                section.params.push(Param {
                    key: at_key.to_string(),
                    value,
                    span: kspan,
                });
                continue;
            }
            match (key.as_str(), v) {
                ("$tag", _) => section.arg = self.arg(v, " ", &kspan)?,
                ("$arg" | "$name", _) => section.arg = self.arg(v, ",", &kspan)?,
                (_, Value::Mapping(_)) => {
                    let child = self.section(&key, v, kspan, loc)?;
                    section.children.push(child);
                }
                (_, Value::Sequence(items)) if matches!(items.first(), Some(Value::Mapping(_))) => {
                    for item in items {
                        if !item.is_mapping() {
                            return Err(ConfigError::at(
                                &kspan,
                                format!("'{key}' mixes sections (mappings) and plain values"),
                            ));
                        }
                        let item_span = first_key(item)
                            .and_then(|k| loc.peek_key(&k))
                            .unwrap_or_else(|| kspan.clone());
                        let child = self.section(&key, item, item_span, loc)?;
                        section.children.push(child);
                    }
                }
                _ => {
                    let value = self.scalar(v, &kspan)?;
                    section.params.push(Param {
                        key,
                        value,
                        span: kspan,
                    });
                }
            }
        }
        Ok(section)
    }

    /// A section argument: a scalar, or a list of scalars joined with `sep`.
    fn arg(&mut self, v: &Value, sep: &str, span: &Span) -> Result<String, ConfigError> {
        match v {
            Value::Sequence(items) => {
                let parts: Result<Vec<String>, ConfigError> =
                    items.iter().map(|i| self.scalar(i, span)).collect();
                Ok(parts?.join(sep))
            }
            _ => self.scalar(v, span),
        }
    }

    /// A param value as Fluentd's classic syntax would carry it.
    fn scalar(&mut self, v: &Value, span: &Span) -> Result<String, ConfigError> {
        match v {
            Value::Null => Ok(String::new()),
            Value::Bool(b) => Ok(b.to_string()),
            Value::Number(n) => Ok(n.to_string()),
            Value::String(s) => {
                if s.contains("#{") {
                    return Err(ConfigError::at(
                        span,
                        format!(
                            "embedded Ruby '#{{...}}' is only evaluated in !fluent/s strings: \
                             write !fluent/s \"{s}\""
                        ),
                    ));
                }
                Ok(s.clone())
            }
            Value::Sequence(_) => Ok(to_json(v, span)?.to_string()),
            Value::Mapping(_) => Err(ConfigError::at(
                span,
                "a mapping is not a value here (use !fluent/json for a JSON object)",
            )),
            Value::Tagged(t) if t.tag == "fluent/json" => Ok(to_json(&t.value, span)?.to_string()),
            Value::Tagged(t) if t.tag == "fluent/s" => {
                let Value::String(s) = &t.value else {
                    return Err(ConfigError::at(span, "!fluent/s needs a string"));
                };
                let file = Arc::clone(&span.file);
                let mut cur = Cursor::new(s, file);
                cur.scan_double_quoted_body(self.loader.opts, None)
                    .map_err(|e| ConfigError::at(span, format!("in !fluent/s: {}", e.message)))
            }
            Value::Tagged(t) if t.tag == "include" => Err(ConfigError::at(
                span,
                "!include is only supported as an item of a directive list",
            )),
            Value::Tagged(t) => Err(ConfigError::at(
                span,
                format!(
                    "unsupported YAML tag {} (supported: !include, !fluent/s, !fluent/json)",
                    t.tag
                ),
            )),
        }
    }
}

fn key_string(k: &Value, span: &Span) -> Result<String, ConfigError> {
    match k {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(ConfigError::at(
            span,
            "a mapping key must be a plain string",
        )),
    }
}

fn first_key(v: &Value) -> Option<String> {
    let (k, _) = v.as_mapping()?.iter().next()?;
    key_string(k, &Span::start_of(Path::new(""))).ok()
}

fn to_json(v: &Value, span: &Span) -> Result<Json, ConfigError> {
    Ok(match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Number(n) => {
            let num = if let Some(i) = n.as_i64() {
                Some(i.into())
            } else if let Some(u) = n.as_u64() {
                Some(u.into())
            } else {
                n.as_f64().and_then(serde_json::Number::from_f64)
            };
            Json::Number(num.ok_or_else(|| {
                ConfigError::at(span, format!("{n} cannot be represented in JSON"))
            })?)
        }
        Value::String(s) => Json::String(s.clone()),
        Value::Sequence(items) => Json::Array(
            items
                .iter()
                .map(|i| to_json(i, span))
                .collect::<Result<_, _>>()?,
        ),
        Value::Mapping(map) => Json::Object(
            map.iter()
                .map(|(k, v)| Ok((key_string(k, span)?, to_json(v, span)?)))
                .collect::<Result<_, ConfigError>>()?,
        ),
        Value::Tagged(t) => to_json(&t.value, span)?,
    })
}

/// Finds keys in the text, moving forward in document order (see the module docs).
struct Locator<'t> {
    text: &'t str,
    pos: usize,
    file: Arc<PathBuf>,
    line_starts: Vec<usize>,
}

impl<'t> Locator<'t> {
    fn new(text: &'t str, file: Arc<PathBuf>) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Locator {
            text,
            pos: 0,
            file,
            line_starts,
        }
    }

    /// The span of the next `key:` and moves past it.
    fn key(&mut self, key: &str) -> Option<Span> {
        let (start, end) = self.find_key(key)?;
        self.pos = end;
        Some(self.span_at(start))
    }

    /// The span of the next `key:`, without moving.
    fn peek_key(&self, key: &str) -> Option<Span> {
        self.find_key(key).map(|(start, _)| self.span_at(start))
    }

    /// The span of the next occurrence of `s` outside comments, moving past it.
    fn text(&mut self, s: &str) -> Option<Span> {
        let mut from = self.pos;
        while let Some(rel) = self.text[from..].find(s) {
            let i = from + rel;
            from = i + s.len();
            if !self.in_comment(i) {
                self.pos = from;
                return Some(self.span_at(i));
            }
        }
        None
    }

    fn find_key(&self, key: &str) -> Option<(usize, usize)> {
        if key.is_empty() {
            return None;
        }
        let bytes = self.text.as_bytes();
        let mut from = self.pos;
        while let Some(rel) = self.text[from..].find(key) {
            let i = from + rel;
            from = i + key.len();
            let before = self.text[..i].chars().next_back();
            if !matches!(
                before,
                None | Some(' ' | '\t' | '\n' | '\r' | '-' | '{' | ',' | '?' | '"' | '\'')
            ) {
                continue;
            }
            let mut j = i + key.len();
            if let Some(q @ ('"' | '\'')) = before {
                if self.text[j..].starts_with(q) {
                    j += 1;
                } else {
                    continue;
                }
            }
            while matches!(bytes.get(j), Some(b' ' | b'\t')) {
                j += 1;
            }
            if bytes.get(j) != Some(&b':') {
                continue;
            }
            if !matches!(
                bytes.get(j + 1),
                None | Some(b' ' | b'\t' | b'\n' | b'\r' | b',' | b'}')
            ) {
                continue;
            }
            if self.in_comment(i) {
                continue;
            }
            return Some((i, j + 1));
        }
        None
    }

    /// Whether `i` is inside a `#` comment (a `#` at the line start or after whitespace).
    fn in_comment(&self, i: usize) -> bool {
        let line_start = self.line_starts[self.line_index(i)];
        let line = &self.text[line_start..i];
        line.starts_with('#') || line.contains(" #") || line.contains("\t#")
    }

    fn line_index(&self, i: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= i) - 1
    }

    fn span_at(&self, i: usize) -> Span {
        let li = self.line_index(i);
        let col = self.text[self.line_starts[li]..i].chars().count() + 1;
        Span::new(
            &self.file,
            u32::try_from(li + 1).unwrap_or(u32::MAX),
            u32::try_from(col).unwrap_or(u32::MAX),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruby::ParseOptions;

    fn parse(text: &str) -> Result<Section, String> {
        let opts = ParseOptions::for_tests(&[("REGION", "eu-west-1")]);
        let mut loader = Loader::new(&opts, Path::new("t.yaml"));
        parse_yaml(text, Path::new("t.yaml"), &mut loader).map_err(|e| e.to_string())
    }

    fn kv(s: &Section) -> Vec<(&str, &str)> {
        s.params
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect()
    }

    #[test]
    fn directives_params_and_spans() {
        let root = parse(concat!(
            "system:\n",
            "  log_level: info\n",
            "config:\n",
            "  - source:\n",
            "      $type: forward\n",
            "      port: 24224\n",
            "      bind: 0.0.0.0\n",
            "  - match:\n",
            "      $tag: [a.**, b.**]\n",
            "      $type: copy\n",
            "      store:\n",
            "        - $type: file\n",
            "          path: /tmp/a\n",
            "        - $type: \"null\"\n",
            "      buffer:\n",
            "        $arg: [tag, time]\n",
            "        flush_interval: 1.5\n",
            "        flush_at_shutdown: true\n",
            "        retry_max_times:\n",
            "        keys: [a, 1]\n",
            "        json: !fluent/json {b: 1, a: [x]}\n",
            "        host: !fluent/s \"#{ENV['REGION']}\\t#{Socket.gethostname}\"\n",
        ))
        .unwrap();
        let system = &root.children[0];
        assert_eq!(system.name, "system");
        assert_eq!(kv(system), [("log_level", "info")]);
        assert_eq!(system.span.to_string(), "t.yaml:1:1");
        let source = &root.children[1];
        assert_eq!(
            kv(source),
            [("@type", "forward"), ("port", "24224"), ("bind", "0.0.0.0")]
        );
        assert_eq!(source.span.to_string(), "t.yaml:4:5");
        assert_eq!(source.params[1].span.to_string(), "t.yaml:6:7");
        let m = &root.children[2];
        assert_eq!(m.arg, "a.** b.**");
        assert_eq!(m.children[0].name, "store");
        assert_eq!(m.children[0].span.to_string(), "t.yaml:12:11");
        assert_eq!(kv(&m.children[0]), [("@type", "file"), ("path", "/tmp/a")]);
        assert_eq!(m.children[1].span.to_string(), "t.yaml:14:11");
        let buffer = &m.children[2];
        assert_eq!(buffer.arg, "tag,time");
        assert_eq!(buffer.span.to_string(), "t.yaml:15:7");
        assert_eq!(
            kv(buffer),
            [
                ("flush_interval", "1.5"),
                ("flush_at_shutdown", "true"),
                ("retry_max_times", ""),
                ("keys", r#"["a",1]"#),
                ("json", r#"{"b":1,"a":["x"]}"#),
                ("host", "eu-west-1\tweb-1.example.com"),
            ]
        );
        assert_eq!(buffer.params[5].span.to_string(), "t.yaml:22:9");
    }

    #[test]
    fn labels_nest_directives() {
        let root = parse(concat!(
            "config:\n",
            "  - label:\n",
            "      $name: \"@OUT\"\n",
            "      config:\n",
            "        - match:\n",
            "            $tag: \"**\"\n",
            "            $type: stdout\n",
        ))
        .unwrap();
        let label = &root.children[0];
        assert_eq!((label.name.as_str(), label.arg.as_str()), ("label", "@OUT"));
        assert_eq!(label.children[0].arg, "**");
        assert_eq!(label.children[0].span.to_string(), "t.yaml:5:11");
    }

    #[test]
    fn errors() {
        let cases: &[(&str, &str)] = &[
            ("config:\n  - bogus: {}\n", "t.yaml:2:5: unknown directive 'bogus' (expected source, filter, match, label, worker or !include)"),
            ("other: 1\n", "t.yaml:1:1: unknown top-level key 'other' (expected 'system' and 'config')"),
            ("config:\n  - match:\n      region: \"#{ENV['X']}\"\n", "t.yaml:3:7: embedded Ruby '#{...}' is only evaluated in !fluent/s strings: write !fluent/s \"#{ENV['X']}\""),
            ("config:\n  - match:\n      region: !fluent/s \"#{`id`}\"\n", "t.yaml:3:7: in !fluent/s: embedded Ruby is not supported: #{`id`}; supported forms: ENV['NAME'], ENV[\"NAME\"], ENV.fetch('NAME'), ENV.fetch('NAME', 'default'), Socket.gethostname, Socket.gethostname.split('.')[0], hostname, worker_id, and `a || b` of these"),
            ("config:\n  - match:\n      x: !custom 1\n", "t.yaml:3:7: unsupported YAML tag !custom (supported: !include, !fluent/s, !fluent/json)"),
            ("config:\n  - match:\n      $type: null\n", "t.yaml:3:7: '$type: null' is YAML's null, not a plugin name: write $type: \"null\""),
            ("config:\n  - match: [\n", "t.yaml:3:1: invalid YAML: did not find expected node content at line 3 column 1, while parsing a flow node"),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).unwrap_err(), *want, "{text:?}");
        }
    }

    #[test]
    fn locator_skips_comments_and_values() {
        let text = "a: x # b: no\n# b: no\nc: \"b: no\"\nb: yes\n";
        let mut loc = Locator::new(text, Arc::new(PathBuf::from("t.yaml")));
        assert_eq!(loc.key("b").unwrap().to_string(), "t.yaml:4:1");
    }

    #[test]
    fn empty_documents() {
        assert!(parse("").unwrap().children.is_empty());
        assert!(parse("config:\n").unwrap().children.is_empty());
    }
}
