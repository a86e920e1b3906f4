//! Fluentd tag patterns: `a.b`, `*` (one part), `**` (zero or more parts; `a.**` matches `a`),
//! `{x,y}` (alternatives), `/regex/`, and several patterns separated by spaces in one
//! directive. Semantics follow fluentd's `GlobMatchPattern`; its regex uses a look-ahead for
//! `a.**`, so we match globs with a small backtracking matcher instead of a regex.

use regex::bytes::Regex;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(Vec<u8>),
    /// `*`: any run of bytes without a dot.
    Star,
    /// `**` not preceded by a dot and not followed by one: anything.
    Any,
    /// `.**` (dot before): end of tag, or a dot and anything.
    DotAny,
    /// `**.` (dot after, at the very start): nothing, or anything ending in a dot.
    AnyDot,
}

#[derive(Debug, Clone)]
enum One {
    Glob(Vec<Vec<Tok>>),
    Regex(Regex),
}

/// A compiled `<match>`/`<filter>` argument.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    alts: Vec<One>,
}

/// A pattern that cannot be compiled.
#[derive(Debug, thiserror::Error)]
#[error("bad tag pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

/// Cap on the alternatives `{}` groups may expand into.
const MAX_EXPANSIONS: usize = 1024;

fn expand(p: &str) -> Result<Vec<String>, String> {
    // Expand the first top-level {...} group, recursively.
    let b = p.as_bytes();
    let mut depth = 0;
    let mut start = None;
    let mut escape = false;
    for (i, &c) in b.iter().enumerate() {
        if escape {
            escape = false;
            continue;
        }
        match c {
            b'\\' => escape = true,
            b'{' => {
                if depth == 0 {
                    start = Some(i);
                }
                depth += 1;
            }
            b'}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    let s = start.unwrap_or(0);
                    let inner = &p[s + 1..i];
                    let mut parts = Vec::new();
                    let (mut d, mut last, mut esc) = (0, 0, false);
                    for (j, ch) in inner.char_indices() {
                        if esc {
                            esc = false;
                            continue;
                        }
                        match ch {
                            '\\' => esc = true,
                            '{' => d += 1,
                            '}' => d -= 1,
                            ',' if d == 0 => {
                                parts.push(&inner[last..j]);
                                last = j + 1;
                            }
                            _ => {}
                        }
                    }
                    parts.push(&inner[last..]);
                    let mut out = Vec::new();
                    for part in parts {
                        for e in expand(&format!("{}{}{}", &p[..s], part, &p[i + 1..]))? {
                            out.push(e);
                            if out.len() > MAX_EXPANSIONS {
                                return Err("too many {..} alternatives".into());
                            }
                        }
                    }
                    return Ok(out);
                }
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '{'".into());
    }
    Ok(vec![p.to_string()])
}

fn tokenize(p: &str) -> Vec<Tok> {
    let b = p.as_bytes();
    let mut toks = Vec::new();
    let mut lit = Vec::new();
    let mut i = 0;
    let flush = |lit: &mut Vec<u8>, toks: &mut Vec<Tok>| {
        if !lit.is_empty() {
            toks.push(Tok::Lit(std::mem::take(lit)));
        }
    };
    while i < b.len() {
        let c = b[i];
        if c == b'\\' && i + 1 < b.len() {
            lit.push(b[i + 1]);
            i += 2;
        } else if c == b'*' && b.get(i + 1) == Some(&b'*') {
            let dot_before = lit.last() == Some(&b'.');
            if dot_before {
                lit.pop();
            }
            flush(&mut lit, &mut toks);
            let dot_after = b.get(i + 2) == Some(&b'.');
            if dot_before {
                toks.push(Tok::DotAny);
                i += 2;
            } else if dot_after && toks.is_empty() {
                toks.push(Tok::AnyDot);
                i += 3;
            } else if dot_after {
                // `x**.y`: anything ending with a dot.
                toks.push(Tok::Any);
                lit.push(b'.');
                i += 3;
            } else {
                toks.push(Tok::Any);
                i += 2;
            }
        } else if c == b'*' {
            flush(&mut lit, &mut toks);
            toks.push(Tok::Star);
            i += 1;
        } else {
            lit.push(c);
            i += 1;
        }
    }
    flush(&mut lit, &mut toks);
    toks
}

fn m(toks: &[Tok], s: &[u8]) -> bool {
    let Some((t, rest)) = toks.split_first() else {
        return s.is_empty();
    };
    match t {
        Tok::Lit(l) => s.starts_with(l) && m(rest, &s[l.len()..]),
        Tok::Star => {
            let max = s.iter().position(|&c| c == b'.').unwrap_or(s.len());
            (0..=max).any(|k| m(rest, &s[k..]))
        }
        Tok::Any => (0..=s.len()).any(|k| m(rest, &s[k..])),
        Tok::DotAny => {
            if s.is_empty() {
                m(rest, s)
            } else if s[0] == b'.' {
                (1..=s.len()).any(|k| m(rest, &s[k..])) || m(rest, &s[1..])
            } else {
                false
            }
        }
        Tok::AnyDot => m(rest, s) || (1..=s.len()).any(|k| s[k - 1] == b'.' && m(rest, &s[k..])),
    }
}

/// Fast paths for the shapes nearly every config uses (`**`, `a.b.**`, literals); the
/// backtracking matcher for the rest.
#[inline]
fn glob_matches(toks: &[Tok], tag: &[u8]) -> bool {
    match toks {
        [Tok::Any] => true,
        [Tok::Lit(l)] => tag == &l[..],
        [Tok::Lit(l), Tok::DotAny] => {
            tag.starts_with(l) && (tag.len() == l.len() || tag[l.len()] == b'.')
        }
        _ => m(toks, tag),
    }
}

impl Pattern {
    /// Compiles a directive argument (space-separated patterns).
    pub fn new(arg: &str) -> Result<Pattern, PatternError> {
        let err = |r: String| PatternError {
            pattern: arg.to_string(),
            reason: r,
        };
        let arg = if arg.trim().is_empty() { "**" } else { arg };
        let mut alts = Vec::new();
        for word in arg.split_whitespace() {
            if word.len() >= 2 && word.starts_with('/') && word.ends_with('/') {
                let re = Regex::new(&format!("^(?:{})$", &word[1..word.len() - 1]))
                    .map_err(|e| err(e.to_string()))?;
                alts.push(One::Regex(re));
            } else {
                let globs = expand(word).map_err(err)?;
                alts.push(One::Glob(globs.iter().map(|g| tokenize(g)).collect()));
            }
        }
        Ok(Pattern {
            source: arg.to_string(),
            alts,
        })
    }

    pub fn matches(&self, tag: &[u8]) -> bool {
        self.alts.iter().any(|a| match a {
            One::Regex(r) => r.is_match(tag),
            One::Glob(gs) => gs.iter().any(|g| glob_matches(g, tag)),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yes(p: &str, t: &str) -> bool {
        Pattern::new(p).unwrap().matches(t.as_bytes())
    }

    #[test]
    fn fluentd_glob_semantics() {
        assert!(yes("a", "a"));
        assert!(!yes("a", "b"));
        assert!(yes("a.*", "a.b"));
        assert!(!yes("a.*", "a"));
        assert!(!yes("a.*", "a.b.c"));
        assert!(yes("a.**", "a"));
        assert!(yes("a.**", "a.b.c"));
        assert!(!yes("a.**", "ab"));
        assert!(yes("**", "anything.at.all"));
        assert!(yes("**.c", "c"));
        assert!(yes("**.c", "a.b.c"));
        assert!(!yes("**.c", "a.bc"));
        assert!(yes("a.{b,c}.d", "a.c.d"));
        assert!(!yes("a.{b,c}.d", "a.e.d"));
        assert!(yes("a.{b,c.**}", "a.c.x.y"));
        assert!(yes("docker.** app.*", "app.x"));
        assert!(yes("/docker\\.[a-z]+/", "docker.web"));
        assert!(!yes("/docker\\.[a-z]+/", "docker.web.x"));
        assert!(yes("a.*.c", "a..c"));
    }
}
