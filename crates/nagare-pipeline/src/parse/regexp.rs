//! `@type regexp`, and the translation of Ruby regular expressions (as Fluentd configs write
//! them) to the `regex` crate's syntax, shared by grep and rewrite_tag_filter.
//!
//! Ruby and Rust disagree on a few things, fixed up here so a pattern means what it meant in
//! Fluentd:
//! * `^` and `$` are line anchors in Ruby, always: patterns are compiled with `(?m)`.
//! * Ruby's `m` flag (`/.../m`, `(?m:...)`) lets `.` match a newline: Rust's `s` flag.
//! * `\d \w \s \h` are ASCII classes in Ruby; `\h` (hex digit) does not exist in Rust.
//! * `\Z` (end, or before a final newline) becomes `\n?\z`; `\/` is a plain slash.
//!
//! Not supported (the `regex` crate guarantees linear time, so it has none of these):
//! look-around (`(?=`, `(?!`, `(?<=`, `(?<!`), backreferences (`\1`, `\k<name>`), atomic
//! groups `(?>...)`, possessive quantifiers, `\G`. Such patterns are refused at load with the
//! crate's message and this hint.

use super::ParsedMap;
use bytes::Bytes;
use nagare_core::{Map, Value};
use regex::Regex;

/// A Fluentd `:regexp` parameter: `/pattern/flags` (flags `i`, `m`, `x`) or a bare pattern.
pub fn ruby_regex(value: &str) -> Result<Regex, String> {
    if let Some(body) = value.strip_prefix('/') {
        let close = body
            .rfind('/')
            .ok_or_else(|| format!("invalid regexp {value}: missing the closing '/'"))?;
        let flags = &body[close + 1..];
        if flags.len() > 3 || !flags.chars().all(|c| matches!(c, 'i' | 'm' | 'x')) {
            return Err(format!(
                "invalid regexp {value}: after the closing '/' only the flags i, m and x may follow, got '{flags}'"
            ));
        }
        compile_ruby(
            &body[..close],
            flags.contains('i'),
            flags.contains('m'),
            flags.contains('x'),
        )
    } else {
        compile_ruby(value, false, false, false)
    }
}

/// Compiles a Ruby pattern (without slashes) with Ruby's `i`, `m` (dot matches newline) and
/// `x` options.
pub fn compile_ruby(
    pattern: &str,
    ignore_case: bool,
    multiline: bool,
    extended: bool,
) -> Result<Regex, String> {
    let mut src = String::with_capacity(pattern.len() + 16);
    src.push_str("(?m");
    if ignore_case {
        src.push('i');
    }
    if multiline {
        src.push('s');
    }
    if extended {
        src.push('x');
    }
    src.push(')');
    translate(pattern, &mut src);
    Regex::new(&src).map_err(|e| {
        format!(
            "invalid regexp /{pattern}/: {e}\n(look-around, backreferences, atomic groups and possessive quantifiers are not supported)"
        )
    })
}

fn translate(p: &str, out: &mut String) {
    let mut chars = p.chars().peekable();
    let mut in_class = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(n) = chars.next() else {
                    out.push('\\');
                    break;
                };
                let class_body = |s: &str| -> String {
                    if in_class > 0 {
                        s.to_string()
                    } else {
                        format!("[{s}]")
                    }
                };
                match n {
                    'd' => out.push_str(&class_body("0-9")),
                    'w' => out.push_str(&class_body("a-zA-Z0-9_")),
                    's' => out.push_str(&class_body("\\t\\n\\x0B\\x0C\\r ")),
                    'h' => out.push_str(&class_body("0-9a-fA-F")),
                    'D' if in_class == 0 => out.push_str("[^0-9]"),
                    'W' if in_class == 0 => out.push_str("[^a-zA-Z0-9_]"),
                    'S' if in_class == 0 => out.push_str("[^\\t\\n\\x0B\\x0C\\r ]"),
                    'H' if in_class == 0 => out.push_str("[^0-9a-fA-F]"),
                    'H' => out.push_str("\\x00-/:-@G-`g-\\x{10FFFF}"),
                    'Z' => out.push_str("\\n?\\z"),
                    '/' => out.push('/'),
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                }
            }
            '[' => {
                in_class += 1;
                out.push('[');
                // A leading `]` or `^]` is literal.
                if chars.peek() == Some(&'^') {
                    out.push(chars.next().expect("peeked"));
                }
                if chars.peek() == Some(&']') {
                    chars.next();
                    out.push_str("\\]");
                }
            }
            ']' if in_class > 0 => {
                in_class -= 1;
                out.push(']');
            }
            '(' if in_class == 0 && chars.peek() == Some(&'?') => {
                out.push('(');
                out.push(chars.next().expect("peeked"));
                // Inline flags: Ruby's m is Rust's s.
                let mut flags = String::new();
                let mut look = chars.clone();
                let mut ok = false;
                for f in look.by_ref() {
                    match f {
                        'i' | 'm' | 'x' | '-' => flags.push(f),
                        ':' | ')' => {
                            ok = !flags.is_empty();
                            flags.push(f);
                            break;
                        }
                        _ => break,
                    }
                }
                if ok {
                    for _ in 0..flags.chars().count() {
                        chars.next();
                    }
                    out.push_str(&flags.replace('m', "s"));
                }
            }
            other => out.push(other),
        }
    }
}

/// `@type regexp`: named captures become fields (strings); groups that did not take part are
/// left out, as Fluentd does. No match is "not this format".
#[derive(Debug, Clone)]
pub struct RegexpFormat {
    pub(crate) regex: Regex,
    names: Vec<(usize, Bytes)>,
}

impl RegexpFormat {
    pub fn new(regex: Regex) -> Result<Self, String> {
        let names: Vec<(usize, Bytes)> = regex
            .capture_names()
            .enumerate()
            .filter_map(|(i, n)| n.map(|n| (i, Bytes::copy_from_slice(n.as_bytes()))))
            .collect();
        if names.is_empty() {
            return Err(format!(
                "expression {} has no named captures like (?<name>...), so it can produce no fields",
                regex.as_str()
            ));
        }
        Ok(RegexpFormat { regex, names })
    }

    pub fn parse(&self, src: &Bytes, text: &str) -> ParsedMap {
        let Some(caps) = self.regex.captures(text) else {
            return ParsedMap::NoMatch;
        };
        let mut m = Map::with_capacity(self.names.len());
        for (i, name) in &self.names {
            if let Some(g) = caps.get(*i) {
                let v = super::slice_of(src, g.as_str().as_bytes());
                m.0.push((Value::Str(name.clone()), Value::Str(v)));
            }
        }
        ParsedMap::Map(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruby_semantics() {
        let r = ruby_regex("/^b$/").unwrap();
        assert!(r.is_match("a\nb\nc"), "^ and $ are line anchors in Ruby");
        let r = ruby_regex("/a.c/").unwrap();
        assert!(!r.is_match("a\nc"));
        let r = ruby_regex("/a.c/m").unwrap();
        assert!(r.is_match("a\nc"), "Ruby's m lets . match a newline");
        let r = ruby_regex("/(?m:a.c)/").unwrap();
        assert!(r.is_match("a\nc"));
        let r = ruby_regex("/ERROR/i").unwrap();
        assert!(r.is_match("an error"));
        let r = ruby_regex(r"/^\h+[\h-]*$/").unwrap();
        assert!(r.is_match("dead-beef") && !r.is_match("xyz"));
        let r = ruby_regex(r"/\d+/").unwrap();
        assert!(!r.is_match("٣"), "\\d is ASCII");
        let r = ruby_regex(r"/a\/b/").unwrap();
        assert!(r.is_match("a/b"));
        let r = ruby_regex(r"/end\Z/").unwrap();
        assert!(r.is_match("the end\n") && r.is_match("the end"));
        let r = ruby_regex("healthcheck.Check").unwrap();
        assert!(r.is_match("GET healthcheck.Check ok"));
        let r = ruby_regex(r"/[]a]/").unwrap();
        assert!(r.is_match("]"));
        let r = ruby_regex("/(?<name>[^ ]+) (?<rest>.*)/").unwrap();
        assert_eq!(&r.captures("a b c").unwrap()["rest"], "b c");
    }

    #[test]
    fn unsupported_patterns_are_refused_with_a_hint() {
        for p in ["/(?=x)/", r"/(a)\1/", "/(?>a)/", "/a/q", "/unterminated"] {
            let e = ruby_regex(p).unwrap_err();
            assert!(e.contains("invalid regexp"), "{p}: {e}");
        }
    }

    #[test]
    fn regexp_format_keeps_only_participating_groups() {
        let f = RegexpFormat::new(ruby_regex("/^(?<a>x)?(?<b>y+)$/").unwrap()).unwrap();
        let src = Bytes::from_static(b"yy");
        match f.parse(&src, "yy") {
            ParsedMap::Map(m) => {
                assert_eq!(m.len(), 1);
                assert_eq!(m.get(b"b"), Some(&Value::str("yy")));
            }
            _ => panic!("should match"),
        }
        assert!(matches!(f.parse(&src, "zz"), ParsedMap::NoMatch));
        assert!(RegexpFormat::new(ruby_regex("/x/").unwrap()).is_err());
    }
}
