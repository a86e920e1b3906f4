//! Placeholder templates: `${tag}`, `${tag_parts[N]}`, `${record["k"]}`, `$1`, `__TAG__`, ...
//!
//! A template is compiled once, at load ([`Template::compile`]), into literal pieces and
//! placeholders; rendering ([`Template::render_into`], [`Template::render_value`]) walks that
//! list, with no parsing and no allocation beyond the output. Which placeholders a plugin
//! accepts is its [`Syntax`]; anything else in `${...}` is a load-time error (Fluentd only
//! warns per event and substitutes nothing).
//!
//! | placeholder | value |
//! | --- | --- |
//! | `${tag}`, `__TAG__` | the tag |
//! | `${tag_parts[N]}`, `__TAG_PARTS[N]__` | the N-th dot-separated part; negative N counts from the end |
//! | `${tag_prefix[N]}` | parts 0..=N joined (`a.b.c`: `a`, `a.b`, `a.b.c`) |
//! | `${tag_suffix[N]}` | parts N.. joined (`a.b.c`: `a.b.c`, `b.c`, `c`) |
//! | `${hostname}`, `__HOSTNAME__` | the host name |
//! | `${time}` | the event time as Ruby's `Time#to_s` (`2023-11-14 22:13:20 +0000`, UTC) |
//! | `${record["k"]}` | a top-level field; also `${record["a"]["b"]}` and `${record.dig("a","b")}` for nested ones (Fluentd needs `enable_ruby` for those) |
//! | `${k}` | a top-level field (v0.12 record_transformer; Fluentd v1 dropped it) |
//! | `$1`..`$N` | regex capture groups (rewrite_tag_filter) |
//!
//! Missing values (an index past the end, an absent field, a group that did not match) render
//! as nothing, as in Fluentd. Field values render as text: strings as their bytes, numbers and
//! booleans formatted, maps and arrays as JSON (Ruby would show `{"a"=>1}`).

use crate::accessor::{Accessor, Found};
use nagare_core::{EventTime, Record, Value};

/// Which placeholders a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syntax {
    /// `${record["k"]}` (and the nested forms).
    pub record: bool,
    /// `${k}` for any other name: a top-level field.
    pub bare_keys: bool,
    /// `${time}`.
    pub time: bool,
    /// `${tag_prefix[N]}`, `${tag_suffix[N]}`.
    pub tag_affixes: bool,
    /// `$1`..`$N`.
    pub captures: bool,
    /// `__TAG__`, `__HOSTNAME__`, `__TAG_PARTS[N]__`.
    pub underscore: bool,
    /// Negative `tag_parts` indexes (counting from the end). Without it a negative index or a
    /// range (`0..2`) is a load error, as rewrite_tag_filter only knows `0..`.
    pub negative_index: bool,
    /// An unknown `__UPPER_CASE__` word (Fluentd's `__[A-Z_]+__`) is a load error instead of
    /// literal text.
    pub strict_underscore: bool,
}

impl Syntax {
    /// filter_record_transformer (without `enable_ruby`).
    pub const RECORD_TRANSFORMER: Syntax = Syntax {
        record: true,
        bare_keys: true,
        time: true,
        tag_affixes: true,
        captures: false,
        underscore: false,
        negative_index: true,
        strict_underscore: false,
    };
    /// rewrite_tag_filter's `tag`.
    pub const REWRITE_TAG_FILTER: Syntax = Syntax {
        record: false,
        bare_keys: false,
        time: false,
        tag_affixes: false,
        captures: true,
        underscore: true,
        negative_index: false,
        strict_underscore: true,
    };
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Lit(Box<[u8]>),
    Tag,
    TagPart(i64),
    TagPrefix(i64),
    TagSuffix(i64),
    Hostname,
    Time,
    Record(Accessor),
    Capture(usize),
}

/// A compiled template; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    src: String,
    parts: Vec<Piece>,
}

/// Capture groups of a regex match, for `$N`.
pub trait Captures {
    /// Group `i` (0 is the whole match), if it took part in the match.
    fn group(&self, i: usize) -> Option<&[u8]>;
}

impl Captures for regex::Captures<'_> {
    fn group(&self, i: usize) -> Option<&[u8]> {
        self.get(i).map(|m| m.as_str().as_bytes())
    }
}

impl Captures for regex::bytes::Captures<'_> {
    fn group(&self, i: usize) -> Option<&[u8]> {
        self.get(i).map(|m| m.as_bytes())
    }
}

impl<const N: usize> Captures for [Option<&[u8]>; N] {
    fn group(&self, i: usize) -> Option<&[u8]> {
        self.get(i).copied().flatten()
    }
}

impl Captures for Vec<Option<&[u8]>> {
    fn group(&self, i: usize) -> Option<&[u8]> {
        self.get(i).copied().flatten()
    }
}

/// What a template is rendered against.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub tag: &'a [u8],
    pub hostname: &'a str,
    pub time: EventTime,
    pub record: Option<&'a Record>,
    pub captures: Option<&'a dyn Captures>,
}

impl<'a> Context<'a> {
    /// A context with a tag and host name only.
    pub fn new(tag: &'a [u8], hostname: &'a str) -> Self {
        Context {
            tag,
            hostname,
            time: EventTime::default(),
            record: None,
            captures: None,
        }
    }
}

impl Template {
    /// Compiles `src`; errors name the first placeholder `syntax` does not allow.
    pub fn compile(src: &str, syntax: &Syntax) -> Result<Template, String> {
        let b = src.as_bytes();
        let mut parts = Vec::new();
        let mut lit: Vec<u8> = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'$' && b.get(i + 1) == Some(&b'{') {
                let close = src[i + 2..].find('}').ok_or_else(|| {
                    format!("unterminated placeholder in '{src}': '${{' without '}}'")
                })?;
                let inner = &src[i + 2..i + 2 + close];
                let part = parse_placeholder(inner, syntax)
                    .map_err(|e| format!("placeholder ${{{inner}}} in '{src}': {e}"))?;
                flush(&mut lit, &mut parts);
                parts.push(part);
                i += close + 3;
                continue;
            }
            if syntax.captures && b[i] == b'$' && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                let n = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                let idx: usize = src[i + 1..i + 1 + n]
                    .parse()
                    .map_err(|_| format!("capture group number too large in '{src}'"))?;
                flush(&mut lit, &mut parts);
                parts.push(Piece::Capture(idx));
                i += 1 + n;
                continue;
            }
            if syntax.underscore && b[i..].starts_with(b"__") {
                if let Some((part, len)) = parse_underscore(&src[i..], syntax)? {
                    flush(&mut lit, &mut parts);
                    parts.push(part);
                    i += len;
                    continue;
                }
            }
            lit.push(b[i]);
            i += 1;
        }
        flush(&mut lit, &mut parts);
        Ok(Template {
            src: src.to_string(),
            parts,
        })
    }

    /// The text it was compiled from.
    pub fn as_str(&self) -> &str {
        &self.src
    }

    /// The text, when there are no placeholders.
    pub fn literal(&self) -> Option<&[u8]> {
        match self.parts.as_slice() {
            [] => Some(b""),
            [Piece::Lit(l)] => Some(l),
            _ => None,
        }
    }

    /// Whether the template is exactly one placeholder (auto_typecast keeps its type).
    pub fn is_single_placeholder(&self) -> bool {
        matches!(self.parts.as_slice(), [p] if !matches!(p, Piece::Lit(_)))
    }

    /// Whether rendering needs the record.
    pub fn uses_record(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Piece::Record(_)))
    }

    /// Whether rendering needs capture groups.
    pub fn uses_captures(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Piece::Capture(_)))
    }

    /// Whether the rendered text depends on the event (record fields, time, capture groups):
    /// when not, it is a function of the tag (and host name) alone and can be cached per tag.
    pub fn uses_event(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Piece::Record(_) | Piece::Time | Piece::Capture(_)))
    }

    /// Whether rendering depends on the tag.
    pub fn uses_tag(&self) -> bool {
        self.parts.iter().any(|p| {
            matches!(
                p,
                Piece::Tag | Piece::TagPart(_) | Piece::TagPrefix(_) | Piece::TagSuffix(_)
            )
        })
    }

    /// Appends the rendered text.
    pub fn render_into(&self, ctx: &Context<'_>, out: &mut Vec<u8>) {
        for p in &self.parts {
            match p {
                Piece::Lit(l) => out.extend_from_slice(l),
                Piece::Record(a) => {
                    if let Some(v) = ctx.record.and_then(|r| a.get_record(r)) {
                        write_value(&v, out);
                    }
                }
                Piece::Time => crate::parse::time::write_ruby_time(ctx.time, out),
                other => {
                    if let Some(b) = simple(other, ctx) {
                        out.extend_from_slice(b);
                    }
                }
            }
        }
    }

    /// The rendered text.
    pub fn render(&self, ctx: &Context<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.src.len() + 16);
        self.render_into(ctx, &mut out);
        out
    }

    /// The rendered value. With `typecast` (record_transformer's `auto_typecast`), a template
    /// that is exactly one field placeholder keeps the field's type (a missing field is nil).
    pub fn render_value(&self, ctx: &Context<'_>, typecast: bool) -> Value {
        if let Some(l) = self.literal() {
            return Value::Str(bytes::Bytes::copy_from_slice(l));
        }
        if typecast {
            match self.parts.as_slice() {
                [Piece::Record(a)] => {
                    return ctx
                        .record
                        .and_then(|r| a.get_record(r))
                        .map(Found::into_owned)
                        .unwrap_or(Value::Nil)
                }
                [p @ (Piece::TagPart(_)
                | Piece::TagPrefix(_)
                | Piece::TagSuffix(_)
                | Piece::Capture(_))] => {
                    return match simple(p, ctx) {
                        Some(b) => Value::Str(bytes::Bytes::copy_from_slice(b)),
                        None => Value::Nil,
                    }
                }
                _ => {}
            }
        }
        Value::Str(bytes::Bytes::from(self.render(ctx)))
    }
}

fn flush(lit: &mut Vec<u8>, parts: &mut Vec<Piece>) {
    if !lit.is_empty() {
        parts.push(Piece::Lit(std::mem::take(lit).into_boxed_slice()));
    }
}

fn simple<'a>(p: &Piece, ctx: &Context<'a>) -> Option<&'a [u8]> {
    let tag = TagView::new(ctx.tag);
    match p {
        Piece::Tag => Some(ctx.tag),
        Piece::TagPart(i) => tag.part(*i),
        Piece::TagPrefix(i) => tag.prefix(*i),
        Piece::TagSuffix(i) => tag.suffix(*i),
        Piece::Hostname => Some(ctx.hostname.as_bytes()),
        Piece::Capture(i) => ctx.captures.and_then(|c| c.group(*i)),
        Piece::Lit(_) | Piece::Time | Piece::Record(_) => None,
    }
}

fn write_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Str(b) | Value::Bin(b) => out.extend_from_slice(b),
        other => out.extend_from_slice(other.to_text().as_bytes()),
    }
}

fn index_in(inner: &str, name: &str) -> Option<Result<i64, String>> {
    let rest = inner.strip_prefix(name)?.strip_prefix('[')?;
    let n = rest.strip_suffix(']')?;
    Some(
        n.trim()
            .parse()
            .map_err(|_| format!("'{n}' is not an integer index")),
    )
}

/// `"k"` or `'k'` at the start of `s`: the key and the rest.
fn quoted(s: &str) -> Option<(&str, &str)> {
    let q = s.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let body = &s[1..];
    let end = body.find(q)?;
    Some((&body[..end], &body[end + 1..]))
}

/// `record["a"]`, `record["a"]["b"]`, `record.dig("a", "b")`; `None` for anything else.
fn record_path(inner: &str) -> Option<Accessor> {
    let rest = inner.strip_prefix("record")?;
    let mut keys = Vec::new();
    if let Some(args) = rest.strip_prefix(".dig(").and_then(|r| r.strip_suffix(')')) {
        let mut s = args.trim();
        loop {
            let (k, after) = quoted(s)?;
            keys.push(k);
            s = after.trim_start();
            match s.strip_prefix(',') {
                Some(r) => s = r.trim_start(),
                None if s.is_empty() => break,
                None => return None,
            }
        }
    } else {
        let mut s = rest;
        while !s.is_empty() {
            let (k, after) = s.strip_prefix('[').and_then(quoted)?;
            let after = after.strip_prefix(']')?;
            keys.push(k);
            s = after;
        }
        if keys.is_empty() {
            return None;
        }
    }
    if keys.len() == 1 {
        return Some(Accessor::key(keys[0]));
    }
    Some(Accessor::keys(&keys))
}

fn parse_placeholder(inner: &str, syntax: &Syntax) -> Result<Piece, String> {
    let allowed = || {
        let mut v = vec!["${tag}", "${tag_parts[N]}", "${hostname}"];
        if syntax.tag_affixes {
            v.extend(["${tag_prefix[N]}", "${tag_suffix[N]}"]);
        }
        if syntax.time {
            v.push("${time}");
        }
        if syntax.record {
            v.push("${record[\"key\"]}");
        }
        if syntax.bare_keys {
            v.push("${key}");
        }
        if syntax.underscore {
            v.extend(["__TAG__", "__TAG_PARTS[N]__", "__HOSTNAME__"]);
        }
        if syntax.captures {
            v.push("$1..$9");
        }
        v.join(", ")
    };
    match inner {
        "tag" => return Ok(Piece::Tag),
        "hostname" => return Ok(Piece::Hostname),
        "time" if syntax.time => return Ok(Piece::Time),
        _ => {}
    }
    if let Some(n) = index_in(inner, "tag_parts") {
        if !syntax.negative_index {
            return unsigned_index(inner).map(Piece::TagPart);
        }
        return n.map(Piece::TagPart);
    }
    if syntax.tag_affixes {
        if let Some(n) = index_in(inner, "tag_prefix") {
            return n.map(Piece::TagPrefix);
        }
        if let Some(n) = index_in(inner, "tag_suffix") {
            return n.map(Piece::TagSuffix);
        }
    }
    if syntax.record {
        if let Some(a) = record_path(inner) {
            return Ok(Piece::Record(a));
        }
    }
    let ruby_like = inner.chars().any(|c| {
        matches!(
            c,
            '[' | ']' | '(' | ')' | '.' | '"' | '\'' | ' ' | '+' | '#'
        )
    });
    if syntax.bare_keys && !inner.is_empty() && !ruby_like {
        return Ok(Piece::Record(Accessor::key(inner)));
    }
    Err(if ruby_like {
        format!(
            "Ruby expressions are not supported (enable_ruby is not available); use one of: {}",
            allowed()
        )
    } else {
        format!("unknown placeholder; use one of: {}", allowed())
    })
}

/// `tag_parts[N]` where only `N >= 0` is allowed (rewrite_tag_filter).
fn unsigned_index(inner: &str) -> Result<i64, String> {
    let n = inner
        .strip_prefix("tag_parts[")
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(inner);
    if n.contains("..") {
        return Err(
            "range in tag_parts is not supported (as in Fluentd's rewrite_tag_filter)".into(),
        );
    }
    n.parse::<u32>()
        .map(i64::from)
        .map_err(|_| format!("tag_parts index must be a whole number >= 0, got {n:?}"))
}

/// `__TAG__`, `__HOSTNAME__`, `__TAG_PARTS[N]__` at the start of `s`; `Ok(None)` for text
/// that is not one (with `strict_underscore`, an unknown `__UPPER_CASE__` word is an error).
fn parse_underscore(s: &str, syntax: &Syntax) -> Result<Option<(Piece, usize)>, String> {
    if s.starts_with("__TAG__") {
        return Ok(Some((Piece::Tag, 7)));
    }
    if s.starts_with("__HOSTNAME__") {
        return Ok(Some((Piece::Hostname, 12)));
    }
    if let Some(rest) = s.strip_prefix("__TAG_PARTS[") {
        if let Some(close) = rest.find("]__") {
            let inner = &rest[..close];
            let n = if syntax.negative_index {
                inner.trim().parse().ok()
            } else {
                Some(
                    unsigned_index(inner)
                        .map_err(|e| format!("{} in '{s}': {e}", &s[..close + 15]))?,
                )
            };
            if let Some(n) = n {
                return Ok(Some((Piece::TagPart(n), "__TAG_PARTS[".len() + close + 3)));
            }
        }
    }
    if syntax.strict_underscore {
        let body = &s[2..];
        let n = body
            .bytes()
            .take_while(|c| c.is_ascii_uppercase() || *c == b'_')
            .count();
        if n > 2 && body[..n].ends_with("__") {
            return Err(format!(
                "unknown placeholder {}; use one of: ${{tag}}, ${{tag_parts[N]}}, ${{hostname}}, __TAG__, __TAG_PARTS[N]__, __HOSTNAME__, $1..$9",
                &s[..n + 2]
            ));
        }
    }
    Ok(None)
}

/// A tag's dot-separated parts, as Ruby's `tag.split('.')` gives them (trailing empty parts
/// dropped), without allocating.
#[derive(Debug, Clone, Copy)]
pub struct TagView<'a> {
    tag: &'a [u8],
    /// End of the last non-empty part.
    end: usize,
}

impl<'a> TagView<'a> {
    pub fn new(tag: &'a [u8]) -> Self {
        let mut end = tag.len();
        while end > 0 && tag[end - 1] == b'.' {
            end -= 1;
        }
        TagView { tag, end }
    }

    fn spans(&self) -> impl Iterator<Item = (usize, usize)> + 'a {
        let t = &self.tag[..self.end];
        let mut start = 0usize;
        let mut done = t.is_empty();
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            match t[start..].iter().position(|&b| b == b'.') {
                Some(i) => {
                    let s = (start, start + i);
                    start += i + 1;
                    Some(s)
                }
                None => {
                    done = true;
                    Some((start, t.len()))
                }
            }
        })
    }

    /// Number of parts.
    pub fn len(&self) -> usize {
        if self.end == 0 {
            0
        } else {
            1 + self.tag[..self.end].iter().filter(|&&b| b == b'.').count()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.end == 0
    }

    fn index(&self, i: i64) -> Option<usize> {
        let n = self.len() as i64;
        let i = if i < 0 { n + i } else { i };
        (0..n).contains(&i).then_some(i as usize)
    }

    fn span(&self, i: i64) -> Option<(usize, usize)> {
        let i = self.index(i)?;
        self.spans().nth(i)
    }

    /// Piece `i` (negative counts from the end).
    pub fn part(&self, i: i64) -> Option<&'a [u8]> {
        self.span(i).map(|(s, e)| &self.tag[s..e])
    }

    /// Parts `0..=i` joined with dots.
    pub fn prefix(&self, i: i64) -> Option<&'a [u8]> {
        self.span(i).map(|(_, e)| &self.tag[..e])
    }

    /// Parts `i..` joined with dots.
    pub fn suffix(&self, i: i64) -> Option<&'a [u8]> {
        self.span(i).map(|(s, _)| &self.tag[s..self.end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(src: &str) -> Template {
        Template::compile(src, &Syntax::RECORD_TRANSFORMER).unwrap()
    }

    #[test]
    fn tag_views_follow_ruby_split() {
        let t = TagView::new(b"docker.condor.8f21");
        assert_eq!(t.len(), 3);
        assert_eq!(t.part(0), Some(&b"docker"[..]));
        assert_eq!(t.part(-1), Some(&b"8f21"[..]));
        assert_eq!(t.part(3), None);
        assert_eq!(t.part(-4), None);
        assert_eq!(t.prefix(1), Some(&b"docker.condor"[..]));
        assert_eq!(t.suffix(1), Some(&b"condor.8f21"[..]));
        assert_eq!(t.suffix(-1), Some(&b"8f21"[..]));
        let t = TagView::new(b"a..b.");
        assert_eq!(t.len(), 3);
        assert_eq!(t.part(1), Some(&b""[..]));
        assert_eq!(t.suffix(0), Some(&b"a..b"[..]));
        assert!(TagView::new(b"").is_empty());
    }

    #[test]
    fn renders_every_placeholder() {
        let rec = Record::from_pairs(&[("service", "condor"), ("level", "warn")]);
        let ctx = Context {
            tag: b"docker.condor.8f21",
            hostname: "host-1",
            time: EventTime::from_secs(1_700_000_000),
            record: Some(&rec),
            captures: None,
        };
        let t = rt("${tag}|${tag_parts[1]}|${tag_parts[-1]}|${tag_prefix[0]}|${tag_suffix[-2]}|${hostname}|${time}|${record[\"service\"]}|${level}|${missing}|${tag_parts[9]}");
        assert_eq!(
            String::from_utf8(t.render(&ctx)).unwrap(),
            "docker.condor.8f21|condor|8f21|docker|condor.8f21|host-1|2023-11-14 22:13:20 +0000|condor|warn||"
        );
        assert_eq!(rt("plain").literal(), Some(&b"plain"[..]));
        assert_eq!(
            rt("cost $5 __TAG__").literal(),
            Some(&b"cost $5 __TAG__"[..])
        );
    }

    #[test]
    fn typecast_keeps_field_types() {
        let mut m = nagare_core::Map::new();
        m.insert(bytes::Bytes::from_static(b"n"), Value::UInt(7));
        m.insert(
            bytes::Bytes::from_static(b"o"),
            Value::Map({
                let mut o = nagare_core::Map::new();
                o.insert(bytes::Bytes::from_static(b"x"), Value::Bool(true));
                o
            }),
        );
        let rec = Record::from_map(m);
        let ctx = Context {
            record: Some(&rec),
            ..Context::new(b"a.b", "h")
        };
        assert_eq!(
            rt("${record[\"n\"]}").render_value(&ctx, true),
            Value::UInt(7)
        );
        assert_eq!(rt("${n}").render_value(&ctx, false), Value::str("7"));
        assert_eq!(rt("${nope}").render_value(&ctx, true), Value::Nil);
        assert_eq!(
            rt("${record[\"o\"][\"x\"]}").render_value(&ctx, true),
            Value::Bool(true)
        );
        assert_eq!(
            rt("${record.dig(\"o\", \"x\")}").render_value(&ctx, true),
            Value::Bool(true)
        );
        assert_eq!(rt("n=${n}").render_value(&ctx, true), Value::str("n=7"));
        assert_eq!(
            rt("${o}").render_value(&ctx, false),
            Value::str("{\"x\":true}")
        );
    }

    #[test]
    fn rewrite_tag_filter_syntax() {
        let t = Template::compile(
            "$1.${tag}.__TAG_PARTS[0]__.__HOSTNAME__.$2",
            &Syntax::REWRITE_TAG_FILTER,
        )
        .unwrap();
        assert!(t.uses_captures() && t.uses_tag() && !t.uses_record());
        let re = regex::Regex::new("^(\\w+)(x)?").unwrap();
        let caps = re.captures("audit").unwrap();
        let ctx = Context {
            captures: Some(&caps),
            ..Context::new(b"docker.app", "h1")
        };
        assert_eq!(t.render(&ctx), b"audit.docker.app.docker.h1.");
        let groups: [Option<&[u8]>; 2] = [None, Some(b"g1")];
        let ctx = Context {
            captures: Some(&groups),
            ..Context::new(b"t", "h")
        };
        let t = Template::compile("x.$1", &Syntax::REWRITE_TAG_FILTER).unwrap();
        assert_eq!(t.render(&ctx), b"x.g1");
        assert!(Template::compile("${record[\"k\"]}", &Syntax::REWRITE_TAG_FILTER).is_err());
        // rewrite_tag_filter: indexes from 0 only, unknown __WORDS__ are errors.
        for (bad, want) in [
            ("${tag_parts[-1]}", "whole number >= 0"),
            ("__TAG_PARTS[-1]__", "whole number >= 0"),
            ("${tag_parts[0..2]}", "range"),
            ("a.__FOO__", "unknown placeholder __FOO__"),
        ] {
            let e = Template::compile(bad, &Syntax::REWRITE_TAG_FILTER).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
        assert!(Template::compile("${tag_parts[-1]}", &Syntax::RECORD_TRANSFORMER).is_ok());
        assert!(Template::compile("a.__FOO__", &Syntax::RECORD_TRANSFORMER).is_ok());
        let t = Template::compile("x.${tag}.__HOSTNAME__", &Syntax::REWRITE_TAG_FILTER).unwrap();
        assert!(!t.uses_event() && t.uses_tag());
        assert!(Template::compile("$1", &Syntax::REWRITE_TAG_FILTER)
            .unwrap()
            .uses_event());
        assert!(Template::compile("${time}", &Syntax::REWRITE_TAG_FILTER).is_err());
    }

    #[test]
    fn errors() {
        for bad in [
            "${tag",
            "${tag_parts[x]}",
            "${record['a'].upcase}",
            "${Time.now}",
            "${}",
        ] {
            let e = Template::compile(bad, &Syntax::RECORD_TRANSFORMER).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
        let e = Template::compile("${tag.upcase}", &Syntax::RECORD_TRANSFORMER).unwrap_err();
        assert!(e.contains("Ruby expressions are not supported"), "{e}");
    }
}
