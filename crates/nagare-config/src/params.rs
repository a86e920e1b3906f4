//! Typed, consuming access to a section's params and subsections.
//!
//! A plugin's builder takes every key it knows (`p.size("chunk_limit_size", DEFAULT)?`), every
//! subsection it knows (`p.section("buffer")?`), then calls [`Params::finish`], which rejects
//! anything left over with its span and the list of what would have been accepted. So a typo
//! (`flush_intervl`) is an error at startup, not a silently ignored setting.
//!
//! The framework parameters `@type` (and the legacy `type` when there is no `@type`), `@id`,
//! `@label` and `@log_level` start out used: the pipeline reads and checks them, not plugins.
//! A key given twice is read as its last value (as Fluentd); taking it marks both used.

use std::time::Duration;

use crate::error::ConfigError;
use crate::tree::{Param, Section};
use crate::value;

/// Consuming, typed view of one [`Section`]; see the module docs.
#[derive(Debug)]
pub struct Params<'a> {
    section: &'a Section,
    used: Vec<bool>,
    children_used: Vec<bool>,
    known: Vec<String>,
    known_sections: Vec<String>,
}

const FRAMEWORK_PARAMS: [&str; 4] = ["@type", "@id", "@label", "@log_level"];

impl<'a> Params<'a> {
    pub(crate) fn new(section: &'a Section) -> Self {
        let has_at_type = section.params.iter().any(|p| p.key == "@type");
        let used = section
            .params
            .iter()
            .map(|p| {
                FRAMEWORK_PARAMS.contains(&p.key.as_str()) || (p.key == "type" && !has_at_type)
            })
            .collect();
        Params {
            section,
            used,
            children_used: vec![false; section.children.len()],
            known: Vec::new(),
            known_sections: Vec::new(),
        }
    }

    /// The section these params belong to.
    pub fn section_ref(&self) -> &'a Section {
        self.section
    }

    /// Marks `key` used and returns its last occurrence.
    fn take(&mut self, key: &str) -> Option<&'a Param> {
        if !self.known.iter().any(|k| k == key) {
            self.known.push(key.to_string());
        }
        let mut last = None;
        for (i, p) in self.section.params.iter().enumerate() {
            if p.key == key {
                self.used[i] = true;
                last = Some(p);
            }
        }
        last
    }

    fn invalid(&self, p: &Param, expected: &str) -> ConfigError {
        ConfigError::at(
            &p.span,
            format!(
                "invalid value for '{}' in {}: expected {expected}, got '{}'",
                p.key,
                self.section.describe(),
                p.value
            ),
        )
    }

    fn typed<T>(
        &mut self,
        key: &str,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(p) => match parse(&p.value) {
                Some(v) => Ok(Some(v)),
                None => Err(self.invalid(p, expected)),
            },
        }
    }

    /// The value, if the key is present.
    pub fn str(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        Ok(self.take(key).map(|p| p.value.clone()))
    }

    /// The value, or `default`.
    pub fn str_or(&mut self, key: &str, default: &str) -> Result<String, ConfigError> {
        Ok(self.str(key)?.unwrap_or_else(|| default.to_string()))
    }

    /// The value; an error at the section's span when the key is missing.
    pub fn required_str(&mut self, key: &str) -> Result<String, ConfigError> {
        match self.str(key)? {
            Some(v) => Ok(v),
            None => Err(self.missing(key)),
        }
    }

    fn missing(&self, key: &str) -> ConfigError {
        ConfigError::at(
            &self.section.span,
            format!(
                "missing required parameter '{key}' in {}",
                self.section.describe()
            ),
        )
    }

    /// `true`/`yes`/`on`, `false`/`no`/`off`; a bare key (empty value) is `true`.
    pub fn bool(&mut self, key: &str, default: bool) -> Result<bool, ConfigError> {
        Ok(self
            .typed(
                key,
                "true or false (also yes/no, on/off)",
                value::parse_bool,
            )?
            .unwrap_or(default))
    }

    /// A whole number that fits `T`.
    pub fn int<T: TryFrom<i64>>(&mut self, key: &str, default: T) -> Result<T, ConfigError> {
        let Some(p) = self.take(key) else {
            return Ok(default);
        };
        let Some(n) = value::parse_int(&p.value) else {
            return Err(self.invalid(p, "a whole number"));
        };
        T::try_from(n).map_err(|_| {
            let (min, max) = range_of::<T>();
            self.invalid(p, &format!("a whole number from {min} to {max}"))
        })
    }

    /// A finite number.
    pub fn float(&mut self, key: &str, default: f64) -> Result<f64, ConfigError> {
        Ok(self
            .typed(key, "a number like 1.5", value::parse_float)?
            .unwrap_or(default))
    }

    /// A byte size (`1024`, `512k`, `8m`, `1.5m`, `1g`; 1024-based), or `default`.
    pub fn size(&mut self, key: &str, default: u64) -> Result<u64, ConfigError> {
        Ok(self.opt_size(key)?.unwrap_or(default))
    }

    /// A byte size, if present.
    pub fn opt_size(&mut self, key: &str) -> Result<Option<u64>, ConfigError> {
        self.typed(
            key,
            "a size like 8m or 1g (a number with an optional k, m, g or t suffix)",
            value::parse_size,
        )
    }

    /// A duration (`30`, `0.5`, `30s`, `5m`, `1h`, `1d`, `100ms`), or `default`.
    pub fn duration(&mut self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        Ok(self.opt_duration(key)?.unwrap_or(default))
    }

    /// A duration, if present.
    pub fn opt_duration(&mut self, key: &str) -> Result<Option<Duration>, ConfigError> {
        self.typed(
            key,
            "a duration like 30s, 5m, 1h, 1d or a number of seconds",
            value::parse_duration,
        )
    }

    /// A JSON array or a comma-separated list, if present.
    pub fn array(&mut self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(p) => value::parse_array(&p.value)
                .map(Some)
                .map_err(|e| self.invalid(p, &format!("{e} or a comma list like a,b,c"))),
        }
    }

    /// A JSON object or `k1:v1,k2:v2`, if present; keys in the order written.
    pub fn hash(&mut self, key: &str) -> Result<Option<Vec<(String, String)>>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(p) => value::parse_hash(&p.value).map(Some).map_err(|e| {
                self.invalid(p, &format!("{e}, like {{\"k1\":\"v1\"}} or k1:v1,k2:v2"))
            }),
        }
    }

    /// One of `allowed` (exact match), or `default`.
    pub fn enumeration(
        &mut self,
        key: &str,
        allowed: &[&str],
        default: &str,
    ) -> Result<String, ConfigError> {
        match self.take(key) {
            None => Ok(default.to_string()),
            Some(p) if allowed.contains(&p.value.as_str()) => Ok(p.value.clone()),
            Some(p) => Err(self.invalid(p, &format!("one of: {}", allowed.join(", ")))),
        }
    }

    /// Subsections named `name`, in file order, all marked used.
    pub fn sections(&mut self, name: &str) -> Vec<&'a Section> {
        if !self.known_sections.iter().any(|k| k == name) {
            self.known_sections.push(name.to_string());
        }
        let section = self.section;
        section
            .children
            .iter()
            .enumerate()
            .filter(|(_, c)| c.name == name)
            .map(|(i, c)| {
                self.children_used[i] = true;
                c
            })
            .collect()
    }

    /// The subsection named `name`, if any; an error (at the second one) if there are several.
    pub fn section(&mut self, name: &str) -> Result<Option<&'a Section>, ConfigError> {
        let found = self.sections(name);
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            [first, second, ..] => Err(ConfigError::at(
                &second.span,
                format!(
                    "at most one <{name}> section is allowed in {}; the first is at {}",
                    self.section.describe(),
                    first.span
                ),
            )),
        }
    }

    /// Marks `key` as known but unused (accepted for compatibility, no effect).
    pub fn ignore(&mut self, key: &str) {
        self.take(key);
    }

    /// Errors on the first param (in file order) or subsection that nothing took.
    pub fn finish(self) -> Result<(), ConfigError> {
        let where_ = self.section.describe();
        if let Some((_, p)) = self
            .section
            .params
            .iter()
            .enumerate()
            .find(|(i, _)| !self.used[*i])
        {
            let hint = suggestion(&p.key, &self.known);
            let list = if self.known.is_empty() {
                format!("{where_} takes no parameters")
            } else {
                format!("expected one of: {}", self.known.join(", "))
            };
            return Err(ConfigError::at(
                &p.span,
                format!("unknown parameter '{}' in {where_}{hint} ({list})", p.key),
            ));
        }
        if let Some((_, c)) = self
            .section
            .children
            .iter()
            .enumerate()
            .find(|(i, _)| !self.children_used[*i])
        {
            let hint = suggestion(&c.name, &self.known_sections);
            let list = if self.known_sections.is_empty() {
                format!("{where_} takes no subsections")
            } else {
                format!(
                    "expected one of: {}",
                    self.known_sections
                        .iter()
                        .map(|n| format!("<{n}>"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(ConfigError::at(
                &c.span,
                format!("unknown section <{}> in {where_}{hint} ({list})", c.name),
            ));
        }
        Ok(())
    }
}

fn range_of<T: TryFrom<i64>>() -> (i64, i64) {
    // The widest i64 range T accepts, found by bisection (T is only known through TryFrom).
    let fits = |v: i64| T::try_from(v).is_ok();
    let bound = |neg: bool| {
        let (mut ok, mut bad) = (0i64, if neg { i64::MIN } else { i64::MAX });
        if fits(bad) {
            return bad;
        }
        while ok.abs_diff(bad) > 1 {
            let mid = ok + (bad - ok) / 2;
            if fits(mid) {
                ok = mid;
            } else {
                bad = mid;
            }
        }
        ok
    };
    (bound(true), bound(false))
}

/// `: did you mean 'x'?` for a close known name.
fn suggestion(got: &str, known: &[String]) -> String {
    known
        .iter()
        .map(|k| (edit_distance(got, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| format!(": did you mean '{k}'?"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Span;
    use std::path::PathBuf;
    use std::sync::Arc;

    fn sec(params: &[(&str, &str)]) -> Section {
        let file = Arc::new(PathBuf::from("t.conf"));
        let mut s = Section::new("match", "**", Span::new(&file, 1, 1));
        for (i, (k, v)) in params.iter().enumerate() {
            s.params.push(Param {
                key: k.to_string(),
                value: v.to_string(),
                span: Span::new(&file, i as u32 + 2, 3),
            });
        }
        s
    }

    #[test]
    fn typed_getters_and_defaults() {
        let s = sec(&[
            ("n", "42"),
            ("flag", ""),
            ("size", "8m"),
            ("wait", "1.5s"),
            ("f", "0.25"),
            ("list", "a,b"),
            ("map", "k:v"),
            ("mode", "fast"),
        ]);
        let mut p = s.params();
        assert_eq!(p.int::<u16>("n", 0).unwrap(), 42);
        assert!(p.bool("flag", false).unwrap());
        assert!(!p.bool("absent", false).unwrap());
        assert_eq!(p.size("size", 0).unwrap(), 8 << 20);
        assert_eq!(
            p.duration("wait", Duration::ZERO).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(p.float("f", 1.0).unwrap(), 0.25);
        assert_eq!(p.array("list").unwrap().unwrap(), ["a", "b"]);
        assert_eq!(
            p.hash("map").unwrap().unwrap(),
            [("k".to_string(), "v".to_string())]
        );
        assert_eq!(
            p.enumeration("mode", &["fast", "slow"], "slow").unwrap(),
            "fast"
        );
        assert_eq!(
            p.enumeration("mode2", &["fast", "slow"], "slow").unwrap(),
            "slow"
        );
        assert_eq!(p.str_or("x", "d").unwrap(), "d");
        assert_eq!(p.opt_size("nope").unwrap(), None);
        p.finish().unwrap();
    }

    #[test]
    fn errors_name_key_section_expected_and_span() {
        let s = sec(&[("n", "70000"), ("size", "abc"), ("b", "maybe"), ("m", "x")]);
        let mut p = s.params();
        assert_eq!(
            p.int::<u16>("n", 0).unwrap_err().to_string(),
            "t.conf:2:3: invalid value for 'n' in <match **>: expected a whole number from 0 to 65535, got '70000'"
        );
        assert_eq!(
            p.size("size", 0).unwrap_err().to_string(),
            "t.conf:3:3: invalid value for 'size' in <match **>: expected a size like 8m or 1g (a number with an optional k, m, g or t suffix), got 'abc'"
        );
        assert!(p
            .bool("b", true)
            .unwrap_err()
            .to_string()
            .starts_with("t.conf:4:3: invalid value for 'b'"));
        assert_eq!(
            p.enumeration("m", &["a", "b"], "a")
                .unwrap_err()
                .to_string(),
            "t.conf:5:3: invalid value for 'm' in <match **>: expected one of: a, b, got 'x'"
        );
        assert_eq!(
            p.required_str("region").unwrap_err().to_string(),
            "t.conf:1:1: missing required parameter 'region' in <match **>"
        );
    }

    #[test]
    fn finish_rejects_leftovers_with_hint() {
        let s = sec(&[
            ("@type", "s3"),
            ("@id", "x"),
            ("flush_intervl", "1s"),
            ("a", "1"),
        ]);
        let mut p = s.params();
        p.str("a").unwrap();
        p.str("flush_interval").unwrap();
        assert_eq!(
            p.finish().unwrap_err().to_string(),
            "t.conf:4:3: unknown parameter 'flush_intervl' in <match **>: did you mean 'flush_interval'? (expected one of: a, flush_interval)"
        );
        let s = sec(&[("zzz", "1")]);
        assert_eq!(
            s.params().finish().unwrap_err().to_string(),
            "t.conf:2:3: unknown parameter 'zzz' in <match **> (<match **> takes no parameters)"
        );
    }

    #[test]
    fn last_duplicate_wins_and_both_are_used() {
        let s = sec(&[("k", "1"), ("k", "2")]);
        let mut p = s.params();
        assert_eq!(p.str("k").unwrap().as_deref(), Some("2"));
        p.finish().unwrap();
    }

    #[test]
    fn legacy_type_is_framework_only_without_at_type() {
        let s = sec(&[("type", "file")]);
        s.params().finish().unwrap();
        let s = sec(&[("@type", "x"), ("type", "file")]);
        assert!(s.params().finish().is_err());
    }

    #[test]
    fn subsections() {
        let file = Arc::new(PathBuf::from("t.conf"));
        let mut s = sec(&[]);
        s.children
            .push(Section::new("store", "", Span::new(&file, 5, 3)));
        s.children
            .push(Section::new("store", "", Span::new(&file, 8, 3)));
        s.children
            .push(Section::new("bufer", "", Span::new(&file, 9, 3)));
        let mut p = s.params();
        assert_eq!(p.sections("store").len(), 2);
        assert_eq!(
            p.section("store").unwrap_err().to_string(),
            "t.conf:8:3: at most one <store> section is allowed in <match **>; the first is at t.conf:5:3"
        );
        assert!(p.section("buffer").unwrap().is_none());
        assert_eq!(
            p.finish().unwrap_err().to_string(),
            "t.conf:9:3: unknown section <bufer> in <match **>: did you mean 'buffer'? (expected one of: <store>, <buffer>)"
        );
    }

    #[test]
    fn ranges() {
        assert_eq!(range_of::<u8>(), (0, 255));
        assert_eq!(range_of::<i16>(), (-32768, 32767));
        assert_eq!(range_of::<i64>(), (i64::MIN, i64::MAX));
    }
}
