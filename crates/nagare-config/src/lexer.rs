//! Character-level scanning for the classic syntax: a [`Cursor`] that knows its line and column,
//! and the three value forms that can span lines (double-quoted, single-quoted, JSON).
//!
//! Whitespace is `' '`, `'\t'` and `'\r'` within a line (so CRLF files work); `'\n'` ends a line.
//! A comment is `#` to the end of the line, where a `#` starts a comment only at the start of
//! a line's content or after whitespace (Fluentd: `a#b` is a value, `a #b` is `a` and a comment).

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::ConfigError;
use crate::ruby::{self, ParseOptions};
use crate::tree::Span;
use crate::value::Json;

/// A position-tracking reader over one file's text.
pub(crate) struct Cursor<'t> {
    text: &'t str,
    pos: usize,
    line: u32,
    line_start: usize,
    file: Arc<PathBuf>,
}

impl<'t> Cursor<'t> {
    pub(crate) fn new(text: &'t str, file: Arc<PathBuf>) -> Self {
        Cursor {
            text,
            pos: 0,
            line: 1,
            line_start: 0,
            file,
        }
    }

    pub(crate) fn file(&self) -> &Arc<PathBuf> {
        &self.file
    }

    pub(crate) fn rest(&self) -> &'t str {
        &self.text[self.pos..]
    }

    pub(crate) fn eof(&self) -> bool {
        self.pos >= self.text.len()
    }

    pub(crate) fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    pub(crate) fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.line_start = self.pos;
        }
        Some(c)
    }

    /// Consumes `s` if the rest starts with it (`s` must not contain `'\n'`).
    pub(crate) fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    /// The span of the current position.
    pub(crate) fn span(&self) -> Span {
        let col = self.text[self.line_start..self.pos].chars().count() + 1;
        Span::new(
            &self.file,
            self.line,
            u32::try_from(col).unwrap_or(u32::MAX),
        )
    }

    pub(crate) fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.span(), message)
    }

    /// Skips spaces, tabs and `'\r'` (not newlines).
    pub(crate) fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\r')) {
            self.bump();
        }
    }

    /// Skips whitespace, newlines and comments.
    pub(crate) fn skip_spacing(&mut self) {
        loop {
            match self.peek() {
                Some(' ' | '\t' | '\r' | '\n') => {
                    self.bump();
                }
                Some('#') => self.skip_to_newline(),
                _ => return,
            }
        }
    }

    fn skip_to_newline(&mut self) {
        while !matches!(self.peek(), None | Some('\n')) {
            self.bump();
        }
    }

    /// Requires the rest of the line to be blank or a comment, and consumes it and the newline.
    pub(crate) fn expect_line_end(&mut self, after: &str) -> Result<(), ConfigError> {
        self.skip_blanks();
        match self.peek() {
            None => Ok(()),
            Some('\n') => {
                self.bump();
                Ok(())
            }
            Some('#') => {
                self.skip_to_newline();
                self.bump();
                Ok(())
            }
            Some(c) => Err(self.error(format!(
                "unexpected '{c}' after {after}: expected the end of the line"
            ))),
        }
    }

    /// A run of characters up to whitespace (a classic-syntax key).
    pub(crate) fn scan_word(&mut self) -> &'t str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                break;
            }
            self.bump();
        }
        &self.text[start..self.pos]
    }

    /// A section tag's argument: everything up to `>` on this line (not consumed), trimmed.
    pub(crate) fn scan_tag_arg(&mut self) -> &'t str {
        let start = self.pos;
        while !matches!(self.peek(), None | Some('>' | '\n')) {
            self.bump();
        }
        self.text[start..self.pos].trim()
    }

    /// `[a-zA-Z0-9_]+` (a section name), possibly empty.
    pub(crate) fn scan_name(&mut self) -> &'t str {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_') {
            self.bump();
        }
        &self.text[start..self.pos]
    }

    /// The unquoted value: to the end of the line or to a comment (`#` after whitespace),
    /// trimmed. A `#` not preceded by whitespace is part of the value.
    pub(crate) fn scan_unquoted(&mut self) -> &'t str {
        let start = self.pos;
        let mut end = self.pos;
        loop {
            match self.peek() {
                None | Some('\n') => break,
                Some(' ' | '\t' | '\r') => {
                    self.skip_blanks();
                    if matches!(self.peek(), None | Some('\n' | '#')) {
                        break;
                    }
                }
                Some(_) => {
                    self.bump();
                    end = self.pos;
                }
            }
        }
        if self.peek() == Some('#') {
            self.skip_to_newline();
        }
        &self.text[start..end]
    }

    /// A single-quoted string; the cursor is on the opening quote. Only `\'` and `\\` are
    /// escapes; everything else, newlines included, is literal.
    pub(crate) fn scan_single_quoted(&mut self) -> Result<String, ConfigError> {
        let open = self.span();
        self.bump();
        let mut out = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(ConfigError::new(
                        open,
                        "unterminated single-quoted string: expected a closing '",
                    ))
                }
                Some('\'') => return Ok(out),
                Some('\\') if matches!(self.peek(), Some('\'' | '\\')) => {
                    out.extend(self.bump());
                }
                Some(c) => out.push(c),
            }
        }
    }

    /// A double-quoted string; the cursor is on the opening quote. Escapes and `#{...}` are
    /// evaluated (see [`Cursor::scan_double_quoted_body`]).
    pub(crate) fn scan_double_quoted(
        &mut self,
        ruby: &ParseOptions,
    ) -> Result<String, ConfigError> {
        let open = self.span();
        self.bump();
        self.scan_double_quoted_body(ruby, Some(open))
    }

    /// The inside of a double-quoted string, up to the closing `"` (when `open` is given) or
    /// to the end of the text (for YAML's `!fluent/s`).
    ///
    /// Escapes (as Fluentd): `\"` `\'` `\\` `\n` `\t` `\r` `\f` `\b` `\0`; a backslash before a
    /// newline joins the lines; before any other symbol (`\#`, `\$`, `\[`, ...) it is dropped;
    /// before any other letter or digit it is an error. `#{...}` is evaluated by [`ruby`].
    pub(crate) fn scan_double_quoted_body(
        &mut self,
        ruby: &ParseOptions,
        open: Option<Span>,
    ) -> Result<String, ConfigError> {
        let mut out = String::new();
        loop {
            let here = self.span();
            match self.bump() {
                None => match open {
                    Some(open) => {
                        return Err(ConfigError::new(
                            open,
                            "unterminated double-quoted string: expected a closing \"",
                        ))
                    }
                    None => return Ok(out),
                },
                Some('"') if open.is_some() => return Ok(out),
                Some('\\') => match self.bump() {
                    None => {
                        return Err(ConfigError::new(here, "a backslash ends the string"));
                    }
                    Some('\n') => {}
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('f') => out.push('\u{c}'),
                    Some('b') => out.push('\u{8}'),
                    Some('0') => out.push('\0'),
                    Some(c) if c.is_ascii_alphanumeric() => {
                        return Err(ConfigError::new(
                            here,
                            format!(
                                "unknown escape '\\{c}' in a double-quoted string \
                                 (known: \\\" \\\\ \\n \\t \\r \\f \\b \\0; write \\\\ for a backslash)"
                            ),
                        ));
                    }
                    Some(c) => out.push(c),
                },
                Some('#') if self.peek() == Some('{') => {
                    self.bump();
                    let code = self.scan_ruby_code(&here)?;
                    out.push_str(&ruby::eval(code, ruby, &here)?);
                }
                Some(c) => out.push(c),
            }
        }
    }

    /// The code of `#{...}` after the `#{`, up to the matching `}` (which is consumed); braces
    /// nest and quoted strings inside the code are skipped.
    fn scan_ruby_code(&mut self, open: &Span) -> Result<&'t str, ConfigError> {
        let start = self.pos;
        let mut depth = 0usize;
        loop {
            let Some(c) = self.peek() else {
                return Err(ConfigError::at(
                    open,
                    "unterminated embedded Ruby: expected '}' to close '#{'",
                ));
            };
            match c {
                '}' if depth == 0 => {
                    let code = &self.text[start..self.pos];
                    self.bump();
                    return Ok(code);
                }
                '}' => depth -= 1,
                '{' => depth += 1,
                '\'' | '"' => {
                    self.bump();
                    while let Some(q) = self.bump() {
                        if q == '\\' {
                            self.bump();
                        } else if q == c {
                            break;
                        }
                    }
                    continue;
                }
                _ => {}
            }
            self.bump();
        }
    }

    /// A JSON array or object that may span lines; the cursor is on `[` or `{`. `#` outside
    /// JSON strings starts a comment to the end of the line. Returns the value as compact JSON
    /// (keys in file order), as Fluentd stores it.
    pub(crate) fn scan_json(&mut self) -> Result<String, ConfigError> {
        let open = self.span();
        let what = if self.peek() == Some('[') {
            "array"
        } else {
            "object"
        };
        let mut buf = String::new();
        let mut depth = 0usize;
        loop {
            let Some(c) = self.bump() else {
                return Err(ConfigError::new(
                    open,
                    format!("unterminated JSON {what}: its brackets never balance"),
                ));
            };
            match c {
                '[' | '{' => depth += 1,
                ']' | '}' => depth = depth.saturating_sub(1),
                '#' => {
                    self.skip_to_newline();
                    continue;
                }
                '"' => {
                    buf.push(c);
                    loop {
                        match self.bump() {
                            None => {
                                return Err(ConfigError::new(
                                    open,
                                    format!("unterminated string in JSON {what}"),
                                ))
                            }
                            Some('\\') => {
                                buf.push('\\');
                                buf.extend(self.bump());
                            }
                            Some('"') => break,
                            Some(s) => buf.push(s),
                        }
                    }
                }
                _ => {}
            }
            buf.push(c);
            if depth == 0 {
                break;
            }
        }
        match Json::parse(&buf) {
            Ok(json) => Ok(json.to_string()),
            Err(e) => Err(ConfigError::new(
                open,
                format!("invalid JSON {what}: {e} (a value starting with '[' or '{{' must be JSON; quote it otherwise)"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(text: &str) -> Cursor<'_> {
        Cursor::new(text, Arc::new(PathBuf::from("t.conf")))
    }

    #[test]
    fn spans_count_lines_and_characters() {
        let mut c = cursor("ab\nçd\n");
        assert_eq!(c.span().to_string(), "t.conf:1:1");
        c.bump();
        c.bump();
        c.bump();
        c.bump();
        assert_eq!(c.span().to_string(), "t.conf:2:2");
    }

    #[test]
    fn unquoted_stops_at_comment_after_whitespace_only() {
        let mut c = cursor("a#b c #comment\nnext");
        assert_eq!(c.scan_unquoted(), "a#b c");
        assert_eq!(c.peek(), Some('\n'));
        let mut c = cursor("#not_comment  \n");
        assert_eq!(c.scan_unquoted(), "#not_comment");
        let mut c = cursor("a  b\tc  ");
        assert_eq!(c.scan_unquoted(), "a  b\tc");
    }

    #[test]
    fn single_quoted_keeps_backslashes_except_quote_and_backslash() {
        let mut c = cursor(r"'a\n\'b\\c#{x}'");
        assert_eq!(c.scan_single_quoted().unwrap(), r"a\n'b\c#{x}");
        let mut c = cursor("'multi\nline'");
        assert_eq!(c.scan_single_quoted().unwrap(), "multi\nline");
        let err = cursor("'open").scan_single_quoted().unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.conf:1:1: unterminated single-quoted string: expected a closing '"
        );
    }

    #[test]
    fn double_quoted_escapes() {
        let ctx = ParseOptions::for_tests(&[]);
        let mut c = cursor(
            r#""q\" b\\ n\n t\t r\r \# \$ \[ x\
y""#,
        );
        assert_eq!(
            c.scan_double_quoted(&ctx).unwrap(),
            "q\" b\\ n\n t\t r\r # $ [ xy"
        );
        let err = cursor(r#""\z""#).scan_double_quoted(&ctx).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("t.conf:1:2: unknown escape '\\z'"),
            "{err}"
        );
        let err = cursor("\"open\n").scan_double_quoted(&ctx).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("t.conf:1:1: unterminated double-quoted"),
            "{err}"
        );
    }

    #[test]
    fn json_spans_lines_and_skips_comments() {
        let mut c = cursor("[\"a\", # one\n \"b#c\",\n 1]  # tail\nnext");
        assert_eq!(c.scan_json().unwrap(), r##"["a","b#c",1]"##);
        c.expect_line_end("the value").unwrap();
        assert_eq!(c.rest(), "next");
        let mut c = cursor("{\"z\": 1,\n \"a\": {\"k\": [true, null]}}");
        assert_eq!(c.scan_json().unwrap(), r#"{"z":1,"a":{"k":[true,null]}}"#);
        let err = cursor("[1,\n2\n").scan_json().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("t.conf:1:1: unterminated JSON array"),
            "{err}"
        );
        let err = cursor("{t}").scan_json().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("t.conf:1:1: invalid JSON object"),
            "{err}"
        );
    }
}
