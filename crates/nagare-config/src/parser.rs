//! The classic (`fluent.conf`) syntax: sections, params, comments and `@include`, following
//! Fluentd's v1 parser (`lib/fluent/config/v1_parser.rb`). The grammar is in the crate docs.

use std::path::Path;
use std::sync::Arc;

use crate::error::ConfigError;
use crate::include::Loader;
use crate::lexer::Cursor;
use crate::tree::{Param, Section, Span};

/// Params Fluentd itself reads; any other `@key` is reserved (see [`check_at_key`]).
const RESERVED_PARAMS: [&str; 4] = ["@type", "@id", "@label", "@log_level"];

/// Sections in which an unknown `@key` is an error (elsewhere Fluentd only warns).
const STRICT_AT_SECTIONS: [&str; 4] = ["match", "source", "filter", "system"];

pub(crate) fn parse_classic(
    text: &str,
    file: &Path,
    loader: &mut Loader<'_>,
) -> Result<Section, ConfigError> {
    let file = Arc::new(file.to_path_buf());
    let mut root = Section::new("ROOT", "", Span::new(&file, 1, 1));
    let mut cur = Cursor::new(text, file);
    parse_body(&mut cur, &mut root, None, true, loader)?;
    Ok(root)
}

/// Reads params and subsections into `section` until its close tag (`open` is where it
/// opened) or, for the root and included files (`open` is `None`), the end of the text.
/// `top_of_file` is true at the top level of a file, where the legacy `include` is allowed.
fn parse_body(
    cur: &mut Cursor<'_>,
    section: &mut Section,
    open: Option<&Span>,
    top_of_file: bool,
    loader: &mut Loader<'_>,
) -> Result<(), ConfigError> {
    loop {
        cur.skip_spacing();
        let here = cur.span();
        if cur.eof() {
            return match open {
                None => Ok(()),
                Some(open) => Err(ConfigError::at(
                    open,
                    format!(
                        "unclosed section {}: reached the end of {} without </{}>",
                        section.describe(),
                        cur.file().display(),
                        section.name
                    ),
                )),
            };
        }
        if cur.eat("</") {
            let name = cur.scan_name();
            cur.skip_blanks();
            if !cur.eat(">") {
                return Err(cur.error(format!("expected '>' to end the close tag </{name}")));
            }
            return match open {
                None => Err(ConfigError::at(
                    &here,
                    format!("unexpected </{name}>: no section is open here"),
                )),
                Some(open) if name != section.name => Err(ConfigError::at(
                    &here,
                    format!(
                        "mismatched close tag </{name}>: expected </{}> to close {} opened at {open}",
                        section.name,
                        section.describe()
                    ),
                )),
                Some(_) => cur.expect_line_end(&format!("</{name}>")),
            };
        }
        if cur.eat("<") {
            let child = parse_section(cur, here, loader)?;
            section.children.push(child);
            continue;
        }
        if top_of_file
            && cur.rest().starts_with("include")
            && matches!(cur.rest()[7..].chars().next(), Some(' ' | '\t'))
        {
            cur.eat("include");
            tracing::warn!(at = %here, "'include' is deprecated; use '@include'");
            parse_include(cur, section, &here, loader)?;
            continue;
        }

        let key = match cur.peek() {
            Some('"') => cur.scan_double_quoted(loader.opts)?,
            Some('\'') => cur.scan_single_quoted()?,
            _ => cur.scan_word().to_string(),
        };
        if key == "@include" {
            parse_include(cur, section, &here, loader)?;
            continue;
        }
        check_at_key(&key, section, open.is_none() || top_of_file, &here)?;
        cur.skip_blanks();
        let value = if matches!(cur.peek(), None | Some('\n')) {
            String::new() // a bare key: Fluentd's "without value" form, e.g. a boolean flag
        } else {
            parse_value(cur, loader)?
        };
        cur.expect_line_end(&format!("the value of '{key}'"))?;
        if let Some(prev) = section.params.iter().find(|p| p.key == key) {
            tracing::warn!(
                at = %here, first = %prev.span, key = %key, section = %section.describe(),
                "parameter set twice; the last value wins"
            );
        }
        section.params.push(Param {
            key,
            value,
            span: here,
        });
    }
}

/// After `<`: `name [arg]>`, end of line, body, close tag.
fn parse_section(
    cur: &mut Cursor<'_>,
    here: Span,
    loader: &mut Loader<'_>,
) -> Result<Section, ConfigError> {
    let name = cur.scan_name();
    if name.is_empty() {
        return Err(
            cur.error("expected a section name (letters, digits, '_') after '<'".to_string())
        );
    }
    if !matches!(cur.peek(), Some(' ' | '\t' | '>')) {
        return Err(cur.error(format!(
            "unexpected character in section name <{name}: expected a space or '>'"
        )));
    }
    cur.skip_blanks();
    if cur.peek() == Some('#') {
        return Err(cur.error(format!("expected '>' to end <{name}>, found a comment")));
    }
    let arg = cur.scan_tag_arg();
    if !cur.eat(">") {
        return Err(cur.error(format!("expected '>' to end the <{name}> tag on this line")));
    }
    let tag = if arg.is_empty() {
        format!("<{name}>")
    } else {
        format!("<{name} {arg}>")
    };
    cur.expect_line_end(&tag)?;
    let mut section = Section::new(name, arg, here.clone());
    parse_body(cur, &mut section, Some(&here), false, loader)?;
    Ok(section)
}

/// A value after its key: quoted, JSON, or unquoted to the end of the line.
fn parse_value(cur: &mut Cursor<'_>, loader: &Loader<'_>) -> Result<String, ConfigError> {
    let start = cur.span();
    match cur.peek() {
        Some('"') => cur.scan_double_quoted(loader.opts),
        Some('\'') => cur.scan_single_quoted(),
        Some('[' | '{') => cur.scan_json(),
        _ => {
            let v = cur.scan_unquoted();
            if let Some(i) = v.find("#{") {
                let col = start.col + u32::try_from(v[..i].chars().count()).unwrap_or(0);
                return Err(ConfigError::new(
                    Span::new(&start.file, start.line, col),
                    format!(
                        "embedded Ruby '#{{...}}' is only evaluated inside double quotes: \
                         write \"{v}\" (or '{v}' to keep it literally)"
                    ),
                ));
            }
            Ok(v.to_string())
        }
    }
}

/// After `@include`/`include`: the path (quoted or not), then each matching file's contents
/// are parsed into `section` in place.
fn parse_include(
    cur: &mut Cursor<'_>,
    section: &mut Section,
    here: &Span,
    loader: &mut Loader<'_>,
) -> Result<(), ConfigError> {
    cur.skip_blanks();
    let pattern = match cur.peek() {
        Some('"') => cur.scan_double_quoted(loader.opts)?,
        Some('\'') => cur.scan_single_quoted()?,
        _ => cur.scan_unquoted().to_string(),
    };
    cur.expect_line_end("the @include path")?;
    if pattern.is_empty() {
        return Err(ConfigError::at(here, "@include needs a path"));
    }
    let including = cur.file().clone();
    for path in loader.resolve(&pattern, &including, here)? {
        let text = loader.enter(&path, here)?;
        let mut sub = Cursor::new(&text, Arc::new(path));
        let result = parse_body(&mut sub, section, None, true, loader);
        loader.leave();
        result?;
    }
    Ok(())
}

/// Fluentd reserves the `@` prefix: `@type`, `@id`, `@label`, `@log_level` (and `@include`).
/// Any other `@key` is an error at the top level and in `<match>`, `<source>`, `<filter>` and
/// `<system>`; Fluentd accepts it deeper, for now, with a warning.
fn check_at_key(
    key: &str,
    section: &Section,
    top_level: bool,
    span: &Span,
) -> Result<(), ConfigError> {
    if !key.starts_with('@') || RESERVED_PARAMS.contains(&key) {
        return Ok(());
    }
    if top_level || STRICT_AT_SECTIONS.contains(&section.name.as_str()) {
        return Err(ConfigError::at(
            span,
            format!(
                "'@' is reserved for {}, @include: '{key}' is not one of them",
                RESERVED_PARAMS.join(", ")
            ),
        ));
    }
    tracing::warn!(at = %span, key, "'@' is a reserved prefix; Fluentd will reject this key");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruby::ParseOptions;

    fn parse(text: &str) -> Result<Section, String> {
        let opts = ParseOptions::for_tests(&[("REGION", "eu-west-1")]);
        let mut loader = Loader::new(&opts, Path::new("t.conf"));
        parse_classic(text, Path::new("t.conf"), &mut loader).map_err(|e| e.to_string())
    }

    fn kv(s: &Section) -> Vec<(&str, &str)> {
        s.params
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect()
    }

    #[test]
    fn params_values_and_spans() {
        let root = parse(concat!(
            "# comment\n",
            "  k1 v1\n",
            "k2   a  b  c   # trailing comment\n",
            "flag\n",
            "k3 a#b\n",
            "k4 #not_comment\n",
            "k5 \"x # y\"  # c\n",
            "k6 'lit #{x}'\n",
            "k7 [\"a\",\n  \"b\"]\n",
            "k8 ${tag}.audit\n",
            "k9 \"#{ENV['REGION']}-x\"\n",
            "k10\r\n",
        ))
        .unwrap();
        assert_eq!(
            kv(&root),
            [
                ("k1", "v1"),
                ("k2", "a  b  c"),
                ("flag", ""),
                ("k3", "a#b"),
                ("k4", "#not_comment"),
                ("k5", "x # y"),
                ("k6", "lit #{x}"),
                ("k7", r#"["a","b"]"#),
                ("k8", "${tag}.audit"),
                ("k9", "eu-west-1-x"),
                ("k10", ""),
            ]
        );
        assert_eq!(root.params[0].span.to_string(), "t.conf:2:3");
        assert_eq!(root.params[8].span.to_string(), "t.conf:11:1"); // after the 2-line JSON
    }

    #[test]
    fn sections_nest_with_args() {
        let root = parse(concat!(
            "<match   a.** b.**  >\n",
            "  @type copy\n",
            "  <store>\n",
            "    <buffer tag,time>\n",
            "    </buffer>\n",
            "  </store>\n",
            "</match>  # done\n",
            "<label @OUT>\n",
            "</label>\n",
        ))
        .unwrap();
        let m = &root.children[0];
        assert_eq!((m.name.as_str(), m.arg.as_str()), ("match", "a.** b.**"));
        assert_eq!(m.type_name(), Some("copy"));
        assert_eq!(m.span.to_string(), "t.conf:1:1");
        let buffer = &m.children[0].children[0];
        assert_eq!(
            (buffer.name.as_str(), buffer.arg.as_str()),
            ("buffer", "tag,time")
        );
        assert_eq!(buffer.span.to_string(), "t.conf:4:5");
        assert_eq!(root.children[1].arg, "@OUT");
    }

    #[test]
    fn structural_errors_have_spans() {
        let cases: &[(&str, &str)] = &[
            (
                "<match **>\n  @type null\n",
                "t.conf:1:1: unclosed section <match **>: reached the end of t.conf without </match>",
            ),
            (
                "<match **>\n  <buffer>\n  </match>\n",
                "t.conf:3:3: mismatched close tag </match>: expected </buffer> to close <buffer> opened at t.conf:2:3",
            ),
            ("</match>\n", "t.conf:1:1: unexpected </match>: no section is open here"),
            ("<test></test>\n", "t.conf:1:7: unexpected '<' after <test>: expected the end of the line"),
            ("<test #a>\n</test>\n", "t.conf:1:7: expected '>' to end <test>, found a comment"),
            ("<match foo\n</match>\n", "t.conf:1:11: expected '>' to end the <match> tag on this line"),
            ("k1 \"a\" 1\n", "t.conf:1:8: unexpected '1' after the value of 'k1': expected the end of the line"),
            ("<>\n", "t.conf:1:2: expected a section name (letters, digits, '_') after '<'"),
            ("@k v\n", "t.conf:1:1: '@' is reserved for @type, @id, @label, @log_level, @include: '@k' is not one of them"),
            ("region #{ENV['X']}\n", "t.conf:1:8: embedded Ruby '#{...}' is only evaluated inside double quotes: write \"#{ENV['X']}\" (or '#{ENV['X']}' to keep it literally)"),
            ("k \"#{`id`}\"\n", "t.conf:1:4: embedded Ruby is not supported: #{`id`}; supported forms: ENV['NAME'], ENV[\"NAME\"], ENV.fetch('NAME'), ENV.fetch('NAME', 'default'), Socket.gethostname, Socket.gethostname.split('.')[0], hostname, worker_id, and `a || b` of these"),
            ("k [1,\n2,\n", "t.conf:1:3: unterminated JSON array: its brackets never balance"),
            ("k {t\n", "t.conf:1:3: unterminated JSON object: its brackets never balance"),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).unwrap_err(), *want, "{text:?}");
        }
    }

    #[test]
    fn at_keys_are_allowed_in_nested_sections() {
        let root = parse("<match **>\n  <record>\n    @k v\n  </record>\n</match>\n").unwrap();
        assert_eq!(kv(&root.children[0].children[0]), [("@k", "v")]);
    }

    #[test]
    fn include_word_inside_sections_is_a_param() {
        let root = parse("<elem>\n  include normal_parameter\n</elem>\n").unwrap();
        assert_eq!(kv(&root.children[0]), [("include", "normal_parameter")]);
    }

    #[test]
    fn missing_include_is_an_error() {
        let err = parse("@include nope/missing.conf\n").unwrap_err();
        assert_eq!(
            err,
            "t.conf:1:1: include of 'nope/missing.conf': no such file"
        );
    }
}
