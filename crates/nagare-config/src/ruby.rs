//! The safe subset of Fluentd's embedded Ruby (`"#{...}"` in double-quoted strings and in
//! YAML `!fluent/s`), evaluated by a tiny interpreter; nothing is ever executed.
//!
//! ```text
//! expr  := term ( '||' term )*                  first non-nil term, like Ruby
//! term  := ENV '[' STR ']'                      nil when unset (interpolates as "")
//!        | ENV '.' fetch '(' STR ')'             error when unset
//!        | ENV '.' fetch '(' STR ',' STR ')'     the default when unset
//!        | ( Socket '.' gethostname | hostname ) split?
//!        | worker_id                            always "0" (one worker)
//!        | STR
//! split := '.' split '(' STR ')' ( '[' INT ']' | '.' first | '.' last )
//! STR   := '...' | "..."                        no interpolation inside
//! ```
//!
//! An empty `#{}` is `""`, as in Ruby. Anything else is a [`ConfigError`] naming the
//! supported forms.

use std::collections::BTreeMap;

use crate::error::ConfigError;
use crate::tree::Span;

/// The environment embedded Ruby sees.
#[derive(Debug, Clone, Default)]
pub struct ParseOptions {
    /// Variables for `ENV[...]`; `None` reads the process environment.
    pub env: Option<BTreeMap<String, String>>,
    /// The value of `Socket.gethostname`; `None` uses `$NAGARE_HOSTNAME` when set, else the
    /// operating system's hostname.
    pub hostname: Option<String>,
}

impl ParseOptions {
    /// Options with a fixed environment (the process environment is not read) and hostname.
    pub fn fixed<K, V>(vars: impl IntoIterator<Item = (K, V)>, hostname: &str) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        ParseOptions {
            env: Some(
                vars.into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ),
            hostname: Some(hostname.to_string()),
        }
    }

    fn env_var(&self, name: &str) -> Option<String> {
        match &self.env {
            Some(vars) => vars.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
    }

    fn resolve_hostname(&self) -> Result<String, String> {
        if let Some(h) = &self.hostname {
            return Ok(h.clone());
        }
        // Set and not empty (as BuildCtx reads it): an empty value would name an empty
        // CloudWatch stream.
        if let Ok(h) = std::env::var("NAGARE_HOSTNAME") {
            if !h.is_empty() {
                return Ok(h);
            }
        }
        hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .map_err(|e| format!("cannot read the hostname: {e}"))
    }

    #[cfg(test)]
    pub(crate) fn for_tests(vars: &[(&str, &str)]) -> Self {
        Self::fixed(vars.iter().copied(), "web-1.example.com")
    }
}

/// What the error message lists.
pub(crate) const SUPPORTED: &str = "ENV['NAME'], ENV[\"NAME\"], ENV.fetch('NAME'), \
ENV.fetch('NAME', 'default'), Socket.gethostname, Socket.gethostname.split('.')[0], hostname, \
worker_id, and `a || b` of these";

/// Evaluates the code of one `#{...}` (without the braces); `span` is where the `#` is.
pub(crate) fn eval(code: &str, ctx: &ParseOptions, span: &Span) -> Result<String, ConfigError> {
    let unsupported = || {
        ConfigError::at(
            span,
            format!("embedded Ruby is not supported: #{{{code}}}; supported forms: {SUPPORTED}"),
        )
    };
    let tokens = tokenize(code).ok_or_else(unsupported)?;
    if tokens.is_empty() {
        return Ok(String::new());
    }
    let mut p = Parser {
        tokens: &tokens,
        at: 0,
        ctx,
    };
    let value = match p.expr() {
        Ok(v) if p.at == tokens.len() => v,
        Ok(_) | Err(Fail::Unsupported) => return Err(unsupported()),
        Err(Fail::Message(m)) => return Err(ConfigError::at(span, m)),
    };
    Ok(value.unwrap_or_default())
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Dot,
    LBracket,
    RBracket,
    LParen,
    RParen,
    Comma,
    OrOr,
}

fn tokenize(code: &str) -> Option<Vec<Tok>> {
    let mut out = Vec::new();
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        let tok = match c {
            ' ' | '\t' | '\r' | '\n' => continue,
            '.' => Tok::Dot,
            '[' => Tok::LBracket,
            ']' => Tok::RBracket,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            '|' if chars.next_if_eq(&'|').is_some() => Tok::OrOr,
            '\'' | '"' => {
                let mut s = String::new();
                loop {
                    match chars.next()? {
                        q if q == c => break,
                        '\\' => {
                            let e = chars.next()?;
                            match (c, e) {
                                (_, '\\') => s.push('\\'),
                                (_, q) if q == c => s.push(q),
                                ('"', 'n') => s.push('\n'),
                                ('"', 't') => s.push('\t'),
                                ('\'', other) => {
                                    s.push('\\');
                                    s.push(other);
                                }
                                _ => return None,
                            }
                        }
                        '#' if c == '"' && chars.peek() == Some(&'{') => return None,
                        other => s.push(other),
                    }
                }
                Tok::Str(s)
            }
            '-' | '0'..='9' => {
                let mut s = String::from(c);
                while let Some(d) = chars.next_if(char::is_ascii_digit) {
                    s.push(d);
                }
                Tok::Int(s.parse().ok()?)
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut s = String::from(c);
                while let Some(d) = chars.next_if(|d| d.is_ascii_alphanumeric() || *d == '_') {
                    s.push(d);
                }
                Tok::Ident(s)
            }
            _ => return None,
        };
        out.push(tok);
    }
    Some(out)
}

enum Fail {
    Unsupported,
    Message(String),
}

struct Parser<'a> {
    tokens: &'a [Tok],
    at: usize,
    ctx: &'a ParseOptions,
}

impl Parser<'_> {
    fn next(&mut self) -> Option<&Tok> {
        let t = self.tokens.get(self.at);
        self.at += 1;
        t
    }

    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.at)
    }

    fn expect(&mut self, want: &Tok) -> Result<(), Fail> {
        match self.next() {
            Some(t) if t == want => Ok(()),
            _ => Err(Fail::Unsupported),
        }
    }

    fn ident(&mut self, want: &str) -> Result<(), Fail> {
        match self.next() {
            Some(Tok::Ident(s)) if s == want => Ok(()),
            _ => Err(Fail::Unsupported),
        }
    }

    fn string(&mut self) -> Result<String, Fail> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(s.clone()),
            _ => Err(Fail::Unsupported),
        }
    }

    fn expr(&mut self) -> Result<Option<String>, Fail> {
        let mut value = self.term()?;
        while self.peek() == Some(&Tok::OrOr) {
            self.at += 1;
            // Ruby's `||` short-circuits: a set ENV.fetch on the left hides an unset one on the right.
            let right_start = self.at;
            if value.is_some() {
                self.skip_term(right_start)?;
            } else {
                value = self.term()?;
            }
        }
        Ok(value)
    }

    /// Parses (validates) a term without evaluating it.
    fn skip_term(&mut self, start: usize) -> Result<(), Fail> {
        let ctx = ParseOptions::fixed([("", "")], "");
        let mut dry = Parser {
            tokens: self.tokens,
            at: start,
            ctx: &ctx,
        };
        match dry.term() {
            Ok(_) | Err(Fail::Message(_)) => {}
            Err(Fail::Unsupported) => return Err(Fail::Unsupported),
        }
        self.at = dry.at;
        Ok(())
    }

    fn term(&mut self) -> Result<Option<String>, Fail> {
        let Some(tok) = self.next().cloned() else {
            return Err(Fail::Unsupported);
        };
        match tok {
            Tok::Str(s) => Ok(Some(s)),
            Tok::Ident(id) if id == "ENV" => match self.next() {
                Some(Tok::LBracket) => {
                    let name = self.string()?;
                    self.expect(&Tok::RBracket)?;
                    Ok(self.ctx.env_var(&name))
                }
                Some(Tok::Dot) => {
                    self.ident("fetch")?;
                    self.expect(&Tok::LParen)?;
                    let name = self.string()?;
                    let default = match self.next() {
                        Some(Tok::RParen) => None,
                        Some(Tok::Comma) => {
                            let d = self.string()?;
                            self.expect(&Tok::RParen)?;
                            Some(d)
                        }
                        _ => return Err(Fail::Unsupported),
                    };
                    match (self.ctx.env_var(&name), default) {
                        (Some(v), _) => Ok(Some(v)),
                        (None, Some(d)) => Ok(Some(d)),
                        (None, None) => Err(Fail::Message(format!(
                            "environment variable '{name}' is not set \
                             (ENV.fetch('{name}') without a default requires it)"
                        ))),
                    }
                }
                _ => Err(Fail::Unsupported),
            },
            Tok::Ident(id) if id == "Socket" || id == "hostname" => {
                if id == "Socket" {
                    self.expect(&Tok::Dot)?;
                    self.ident("gethostname")?;
                }
                let host = self.ctx.resolve_hostname().map_err(Fail::Message)?;
                self.split_suffix(host)
            }
            Tok::Ident(id) if id == "worker_id" => Ok(Some("0".to_string())),
            _ => Err(Fail::Unsupported),
        }
    }

    fn split_suffix(&mut self, value: String) -> Result<Option<String>, Fail> {
        if self.peek() != Some(&Tok::Dot) {
            return Ok(Some(value));
        }
        self.at += 1;
        self.ident("split")?;
        self.expect(&Tok::LParen)?;
        let sep = self.string()?;
        self.expect(&Tok::RParen)?;
        if sep.is_empty() {
            return Err(Fail::Unsupported);
        }
        // Ruby's String#split drops trailing empty fields.
        let mut parts: Vec<&str> = value.split(sep.as_str()).collect();
        while parts.last() == Some(&"") {
            parts.pop();
        }
        let index = match self.next() {
            Some(Tok::LBracket) => {
                let Some(Tok::Int(i)) = self.next().cloned() else {
                    return Err(Fail::Unsupported);
                };
                self.expect(&Tok::RBracket)?;
                i
            }
            Some(Tok::Dot) => match self.next() {
                Some(Tok::Ident(m)) if m == "first" => 0,
                Some(Tok::Ident(m)) if m == "last" => -1,
                _ => return Err(Fail::Unsupported),
            },
            _ => return Err(Fail::Unsupported),
        };
        let len = i64::try_from(parts.len()).unwrap_or(i64::MAX);
        let index = if index < 0 { len + index } else { index };
        Ok(usize::try_from(index)
            .ok()
            .and_then(|i| parts.get(i))
            .map(|s| s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn run(code: &str) -> Result<String, String> {
        let ctx = ParseOptions::for_tests(&[("REGION", "eu-west-1"), ("EMPTY", "")]);
        eval(code, &ctx, &Span::start_of(Path::new("t.conf"))).map_err(|e| e.to_string())
    }

    #[test]
    fn env_forms() {
        assert_eq!(run("ENV['REGION']").unwrap(), "eu-west-1");
        assert_eq!(run(r#" ENV["REGION"] "#).unwrap(), "eu-west-1");
        assert_eq!(run("ENV['UNSET']").unwrap(), "");
        assert_eq!(run("ENV.fetch('REGION')").unwrap(), "eu-west-1");
        assert_eq!(run("ENV.fetch('UNSET', 'us-east-1')").unwrap(), "us-east-1");
        assert_eq!(run(r#"ENV.fetch("EMPTY", "x")"#).unwrap(), "");
        let err = run("ENV.fetch('UNSET')").unwrap_err();
        assert_eq!(
            err,
            "t.conf:1:1: environment variable 'UNSET' is not set (ENV.fetch('UNSET') without a default requires it)"
        );
    }

    #[test]
    fn or_takes_the_first_non_nil() {
        assert_eq!(run("ENV['UNSET'] || 'fallback'").unwrap(), "fallback");
        assert_eq!(run("ENV['EMPTY'] || 'fallback'").unwrap(), "");
        assert_eq!(
            run("ENV['REGION'] || ENV.fetch('UNSET')").unwrap(),
            "eu-west-1"
        );
        assert!(run("ENV['REGION'] || system('x')").is_err());
    }

    #[test]
    fn hostname_forms() {
        assert_eq!(run("Socket.gethostname").unwrap(), "web-1.example.com");
        assert_eq!(run("hostname").unwrap(), "web-1.example.com");
        assert_eq!(run("Socket.gethostname.split('.')[0]").unwrap(), "web-1");
        assert_eq!(
            run("Socket.gethostname.split(\".\").first").unwrap(),
            "web-1"
        );
        assert_eq!(run("Socket.gethostname.split('.')[-1]").unwrap(), "com");
        assert_eq!(run("Socket.gethostname.split('.')[9]").unwrap(), "");
        assert_eq!(run("worker_id").unwrap(), "0");
        assert_eq!(run("").unwrap(), "");
        assert_eq!(run(" 'lit' ").unwrap(), "lit");
    }

    #[test]
    fn anything_else_is_rejected_and_never_run() {
        for code in [
            "`rm -rf /`",
            "system('id')",
            "1+1",
            "ENV['A'].upcase",
            "File.read('/etc/passwd')",
            "ENV[\"#{x}\"]",
            "ENV['A'",
            "Socket.gethostname.split('')[0]",
        ] {
            let err = run(code).unwrap_err();
            assert!(
                err.starts_with("t.conf:1:1: embedded Ruby is not supported: #{")
                    && err.contains("supported forms: ENV['NAME']"),
                "{code}: {err}"
            );
        }
    }
}
