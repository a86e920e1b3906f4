//! Fluentd tag patterns: `a.b`, `*` (one part), `**` (zero or more parts; `a.**` matches `a`),
//! `{x,y}` (alternatives), `/regex/`, and several patterns separated by spaces in one
//! directive. Semantics follow fluentd's `GlobMatchPattern`; its regex uses a look-ahead for
//! `a.**`, so we match globs with a small backtracking matcher instead of a regex.

use regex::bytes::Regex;

/// One piece of fluentd's `GlobMatchPattern` regex, matched in order against the whole tag.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(Vec<u8>),
    /// `*`: any run of bytes without a dot (`[^.]*`).
    Star,
    /// `**` not followed by a dot: anything (`.*`).
    Any,
    /// After `a.` when `**` follows: the end of the tag or a dot comes next, nothing is
    /// consumed (fluentd's `(?![^.])`); the dot before `**` is not a literal.
    DotOrEnd,
    /// `**.`: the start of the tag, or anything ending in a dot (`(?:.*\.|\A)`).
    AnyDotOrStart,
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

/// Translates a glob (after `{}` expansion) the way fluentd's `GlobMatchPattern#initialize`
/// builds its regex: a `.` is held back until the next character; `.` then `**` becomes
/// `(?![^.])`, `**.` becomes `(?:.*\.|\A)`, another `**` `.*`, `*` `[^.]*`.
fn tokenize(p: &str) -> Vec<Tok> {
    let b = p.as_bytes();
    let mut toks = Vec::new();
    let mut lit = Vec::new();
    // An unescaped `.` seen but not yet emitted (fluentd's `dot`).
    let mut dot = false;
    let mut i = 0;
    let flush = |lit: &mut Vec<u8>, toks: &mut Vec<Tok>| {
        if !lit.is_empty() {
            toks.push(Tok::Lit(std::mem::take(lit)));
        }
    };
    while i < b.len() {
        let c = b[i];
        if c == b'*' && b.get(i + 1) == Some(&b'*') {
            flush(&mut lit, &mut toks);
            if std::mem::take(&mut dot) {
                toks.push(Tok::DotOrEnd);
            }
            if b.get(i + 2) == Some(&b'.') {
                toks.push(Tok::AnyDotOrStart);
                i += 3;
            } else {
                toks.push(Tok::Any);
                i += 2;
            }
            continue;
        }
        if std::mem::take(&mut dot) {
            lit.push(b'.');
        }
        if c == b'\\' && i + 1 < b.len() {
            lit.push(b[i + 1]);
            i += 2;
        } else if c == b'.' {
            dot = true;
            i += 1;
        } else if c == b'*' {
            flush(&mut lit, &mut toks);
            toks.push(Tok::Star);
            i += 1;
        } else {
            lit.push(c);
            i += 1;
        }
    }
    if dot {
        lit.push(b'.');
    }
    flush(&mut lit, &mut toks);
    toks
}

/// Backtracking match of `toks` against `tag[pos..]` (anchored at both ends, as fluentd's
/// `\A...\z`).
fn m(toks: &[Tok], tag: &[u8], pos: usize) -> bool {
    let Some((t, rest)) = toks.split_first() else {
        return pos == tag.len();
    };
    let s = &tag[pos..];
    match t {
        Tok::Lit(l) => s.starts_with(l) && m(rest, tag, pos + l.len()),
        Tok::Star => {
            let max = s.iter().position(|&c| c == b'.').unwrap_or(s.len());
            (0..=max).any(|k| m(rest, tag, pos + k))
        }
        Tok::Any => (0..=s.len()).any(|k| m(rest, tag, pos + k)),
        Tok::DotOrEnd => matches!(s.first(), None | Some(b'.')) && m(rest, tag, pos),
        Tok::AnyDotOrStart => {
            (pos == 0 && m(rest, tag, pos))
                || (1..=s.len()).any(|k| s[k - 1] == b'.' && m(rest, tag, pos + k))
        }
    }
}

/// Fast paths for the shapes nearly every config uses (`**`, `a.b.**`, literals); the
/// backtracking matcher for the rest.
#[inline]
fn glob_matches(toks: &[Tok], tag: &[u8]) -> bool {
    match toks {
        [Tok::Any] => true,
        [Tok::Lit(l)] => tag == &l[..],
        [Tok::Lit(l), Tok::DotOrEnd, Tok::Any] => {
            tag.starts_with(l) && (tag.len() == l.len() || tag[l.len()] == b'.')
        }
        _ => m(toks, tag, 0),
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
        // `**` between two parts matches zero or more parts.
        assert!(yes("a.**.b", "a.b"));
        assert!(yes("a.**.b", "a.x.y.b"));
        assert!(!yes("a.**.b", "a.xb"));
        assert!(!yes("a.**.b", "ab"));
        assert!(!yes("a.**.b", "a.b.c"));
        assert!(yes("kube.**.error", "kube.error"));
        assert!(yes("kube.**.error", "kube.x.y.error"));
        assert!(!yes("kube.**.error", "kube.xerror"));
        assert!(yes("a.**.*", "a.b"));
        assert!(yes("**.b", "b"));
        assert!(yes("**.b", "a.b"));
        assert!(!yes("**.b", "ab"));
        assert!(yes("x**.y", "xfoo.y"));
        assert!(!yes("x**.y", "xy"));
        assert!(yes("a.**b", "a.b"));
        assert!(yes("a.**b", "a.xb"));
        assert!(!yes("a.**b", "ab"));
        assert!(yes("a.**", "a."));
        // An escaped dot is a literal, not the dot before `**`.
        assert!(yes("a\\.**", "a.xyz"));
        assert!(yes("a\\.**", "a."));
    }

    #[test]
    fn tokens_follow_fluentd_regex() {
        assert_eq!(
            tokenize("a.**.b"),
            vec![
                Tok::Lit(b"a".to_vec()),
                Tok::DotOrEnd,
                Tok::AnyDotOrStart,
                Tok::Lit(b"b".to_vec()),
            ]
        );
        assert_eq!(
            tokenize("a.b.**"),
            vec![Tok::Lit(b"a.b".to_vec()), Tok::DotOrEnd, Tok::Any]
        );
    }
}
