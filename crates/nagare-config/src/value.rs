//! Parameter value types as Fluentd reads them: sizes, durations, booleans, integers, floats,
//! arrays, hashes; and an order-preserving JSON value used to normalise JSON parameters.
//!
//! Each parser returns `None` (or `Err(expected)`) on bad input; [`crate::Params`] turns that
//! into a [`crate::ConfigError`] naming the parameter, the expected form and the span.
//!
//! Where Nagare is stricter or saner than Fluentd (whose size and time parsers match the first
//! `digits+suffix` anywhere in the string, so `1.5m` is 5 MiB and `100ms` is 100 minutes):
//! fractions are honoured (`1.5m` = 1.5 MiB, `1.5h` = 90 minutes), `ms` means milliseconds, and
//! trailing garbage is an error.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// `true`/`yes`/`on` or `false`/`no`/`off` (any case). An empty value (a bare key) is `true`,
/// as in Fluentd; so is a value starting with `#`, Fluentd's rule for `key #comment`.
pub fn parse_bool(s: &str) -> Option<bool> {
    let s = s.trim();
    if s.is_empty() || s.starts_with('#') {
        return Some(true);
    }
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Some(true),
        "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A byte size: a number with an optional `k`, `m`, `g` or `t` suffix (any case, 1024-based,
/// optionally followed by `b`), e.g. `1024`, `512k`, `8m`, `1.5m`, `1g`, `8MB`. A number
/// without a suffix must be a whole number. Fractions of a byte are truncated.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let lower = s.to_ascii_lowercase();
    let body = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult) = match body.char_indices().last() {
        Some((i, 'k')) => (&body[..i], 1u64 << 10),
        Some((i, 'm')) => (&body[..i], 1 << 20),
        Some((i, 'g')) => (&body[..i], 1 << 30),
        Some((i, 't')) => (&body[..i], 1 << 40),
        _ if body.len() != lower.len() => return None, // a bare `b` suffix
        _ => return plain_digits(body).then(|| body.parse().ok()).flatten(),
    };
    if !plain_number(num) {
        return None;
    }
    if plain_digits(num) {
        return num.parse::<u64>().ok()?.checked_mul(mult);
    }
    let bytes = num.parse::<f64>().ok()? * mult as f64;
    (bytes.is_finite() && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// A duration: a number of seconds, or a number with an `s`, `m`, `h` or `d` suffix (or `ms`),
/// e.g. `30`, `0.5`, `30s`, `5m`, `1h`, `1d`, `1.5h`, `100ms`. Negative values are rejected.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else if let Some(n) = s.strip_suffix('d') {
        (n, 86400.0)
    } else {
        (s, 1.0)
    };
    if !plain_number(num) {
        return None;
    }
    Duration::try_from_secs_f64(num.parse::<f64>().ok()? * unit).ok()
}

/// A whole number with an optional sign; `_` separators are allowed between digits (`1_000`).
pub fn parse_int(s: &str) -> Option<i64> {
    let s = s.trim();
    let (sign, digits) = match s.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", s.strip_prefix('+').unwrap_or(s)),
    };
    if digits.starts_with('_') || digits.ends_with('_') || digits.contains("__") {
        return None;
    }
    let digits: String = digits.chars().filter(|c| *c != '_').collect();
    if !plain_digits(&digits) {
        return None;
    }
    format!("{sign}{digits}").parse().ok()
}

/// A finite floating-point number (`1`, `-0.5`, `1e3`).
pub fn parse_float(s: &str) -> Option<f64> {
    let s = s.trim();
    let ok_chars = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
    let v: f64 = if ok_chars {
        s.parse().ok()?
    } else {
        return None;
    };
    v.is_finite().then_some(v)
}

/// An array: a JSON array (`["a", "b"]`; non-string elements as compact JSON text) or a comma
/// list (`a, b`; elements trimmed, empty ones dropped). An empty value is an empty array.
pub fn parse_array(s: &str) -> Result<Vec<String>, String> {
    let t = s.trim();
    if t.starts_with('[') {
        return match Json::parse(t) {
            Ok(Json::Array(items)) => Ok(items.into_iter().map(Json::into_plain_string).collect()),
            Ok(_) => Err("a JSON array".into()),
            Err(e) => Err(format!("a JSON array ({e})")),
        };
    }
    Ok(t.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect())
}

/// A hash: a JSON object (keys in file order; non-string values as compact JSON text) or
/// `k1:v1,k2:v2` (split at the first `:` of each item, trimmed). An empty value is empty.
pub fn parse_hash(s: &str) -> Result<Vec<(String, String)>, String> {
    let t = s.trim();
    if t.starts_with('{') {
        return match Json::parse(t) {
            Ok(Json::Object(entries)) => Ok(entries
                .into_iter()
                .map(|(k, v)| (k, v.into_plain_string()))
                .collect()),
            Ok(_) => Err("a JSON object".into()),
            Err(e) => Err(format!("a JSON object ({e})")),
        };
    }
    t.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|item| match item.split_once(':') {
            Some((k, v)) => Ok((k.trim().to_string(), v.trim().to_string())),
            None => Err(format!("key:value pairs, but '{item}' has no ':'")),
        })
        .collect()
}

fn plain_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `12`, `1.5`, `.5`, `5.` (no sign, no exponent).
fn plain_number(s: &str) -> bool {
    let mut parts = s.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    match frac {
        None => plain_digits(int),
        Some(f) => digits(int) && digits(f) && !(int.is_empty() && f.is_empty()),
    }
}

/// A JSON value whose objects keep their keys in document order.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number, kept as written by serde_json.
    Number(serde_json::Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Json>),
    /// An object, keys in document order.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Parses JSON text.
    pub fn parse(text: &str) -> Result<Json, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// A string as itself; anything else as compact JSON.
    pub fn into_plain_string(self) -> String {
        match self {
            Json::String(s) => s,
            other => other.to_string(),
        }
    }
}

/// Compact JSON, as Fluentd's `JSON.dump`.
impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Number(n) => write!(f, "{n}"),
            Json::String(s) => write_json_string(f, s),
            Json::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Json::Object(entries) => {
                f.write_str("{")?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write_json_string(f, k)?;
                    write!(f, ":{v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

fn write_json_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if u32::from(c) < 0x20 => write!(f, "\\u{:04x}", u32::from(c))?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a non-finite number"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries: Vec<(String, Json)> = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Json>()? {
            // JSON.parse keeps the last of duplicate keys, at the first one's position.
            match entries.iter_mut().find(|(ek, _)| *ek == k) {
                Some(slot) => slot.1 = v,
                None => entries.push((k, v)),
            }
        }
        Ok(Json::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("512k"), Some(512 * 1024));
        assert_eq!(parse_size("8m"), Some(8 << 20));
        assert_eq!(parse_size("8M"), Some(8 << 20));
        assert_eq!(parse_size("8MB"), Some(8 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("2t"), Some(2 << 40));
        assert_eq!(parse_size("1.5m"), Some(1_572_864));
        assert_eq!(parse_size(" 4k "), Some(4096));
        for bad in [
            "",
            "abc",
            "1.5",
            "-1k",
            "k",
            "8x",
            "8 m",
            "1e3k",
            "8b",
            "99999999999t",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations() {
        let s = Duration::from_secs;
        assert_eq!(parse_duration("30"), Some(s(30)));
        assert_eq!(parse_duration("30s"), Some(s(30)));
        assert_eq!(parse_duration("5m"), Some(s(300)));
        assert_eq!(parse_duration("1h"), Some(s(3600)));
        assert_eq!(parse_duration("1d"), Some(s(86400)));
        assert_eq!(parse_duration("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5h"), Some(s(5400)));
        assert_eq!(parse_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_duration("0"), Some(s(0)));
        for bad in ["", "abc", "-1", "5 m", "1w", "1e3", "m", "5S"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn bools() {
        for t in ["true", "yes", "on", "TRUE", "", "#comment"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["false", "no", "off", "Off"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_bool("ture"), None);
        assert_eq!(parse_bool("1"), None);
    }

    #[test]
    fn ints_and_floats() {
        assert_eq!(parse_int("42"), Some(42));
        assert_eq!(parse_int("-7"), Some(-7));
        assert_eq!(parse_int("+7"), Some(7));
        assert_eq!(parse_int("1_000"), Some(1000));
        for bad in ["", "4.2", "0x10", "1__0", "_1", "a", "- 1"] {
            assert_eq!(parse_int(bad), None, "{bad}");
        }
        assert_eq!(parse_float("1.5"), Some(1.5));
        assert_eq!(parse_float("-2"), Some(-2.0));
        assert_eq!(parse_float("1e3"), Some(1000.0));
        for bad in ["", "nan", "inf", "1.5x"] {
            assert_eq!(parse_float(bad), None, "{bad}");
        }
    }

    #[test]
    fn arrays() {
        assert_eq!(parse_array("a, b ,c,").unwrap(), ["a", "b", "c"]);
        assert_eq!(
            parse_array(r#"["a", 1, {"k": "v"}]"#).unwrap(),
            ["a", "1", r#"{"k":"v"}"#]
        );
        assert!(parse_array("").unwrap().is_empty());
        assert!(parse_array("[1,").is_err());
    }

    #[test]
    fn hashes() {
        let h = |s| parse_hash(s).unwrap();
        assert_eq!(
            h("k1:v1, k2 : v:2"),
            [("k1".into(), "v1".into()), ("k2".into(), "v:2".into())]
        );
        assert_eq!(
            h(r#"{"z": "1", "a": 2, "n": null}"#),
            [
                ("z".into(), "1".into()),
                ("a".into(), "2".into()),
                ("n".into(), "null".into())
            ]
        );
        assert!(h("").is_empty());
        assert!(parse_hash("novalue").is_err());
        assert!(parse_hash("[1]").is_err());
    }

    #[test]
    fn json_keeps_order_and_escapes() {
        let j = Json::parse(r#"{"b":1,"a":[true,null,"x\"\n\u0001"],"b":2}"#).unwrap();
        assert_eq!(j.to_string(), r#"{"b":2,"a":[true,null,"x\"\n\u0001"]}"#);
        assert_eq!(Json::parse("1.50").unwrap().to_string(), "1.5");
    }
}
