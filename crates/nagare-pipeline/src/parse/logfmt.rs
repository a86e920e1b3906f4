//! `@type logfmt` (fluent-plugin-logfmt-parser in Fluentd): `key=value key2="quoted \" value"
//! flag`. Values stay strings (the Ruby `logfmt` gem also turns numbers into numbers: use
//! `types` for that); a bare key is `true`. Text with no `key=` pair at all is "not this
//! format", so a plain sentence is not silently turned into a record of `true` flags.

use super::ParsedMap;
use bytes::Bytes;
use nagare_core::{Map, Value};

#[derive(Debug, Clone, Default)]
pub struct LogfmtFormat;

impl LogfmtFormat {
    pub fn parse(&self, src: &Bytes, text: &str) -> ParsedMap {
        let b = text.as_bytes();
        let mut m = Map::new();
        let mut pairs = 0usize;
        let mut i = 0;
        while i < b.len() {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            let ks = i;
            while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' {
                i += 1;
            }
            if ks == i {
                if i < b.len() && b[i] == b'=' {
                    return ParsedMap::NoMatch; // `=value` with no key
                }
                continue;
            }
            let key = super::slice_of(src, &b[ks..i]);
            if i >= b.len() || b[i] != b'=' {
                m.insert(key, Value::Bool(true));
                continue;
            }
            i += 1;
            pairs += 1;
            if i < b.len() && b[i] == b'"' {
                i += 1;
                let vs = i;
                let mut escaped = false;
                let mut owned: Option<Vec<u8>> = None;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        let o = owned.get_or_insert_with(|| b[vs..i].to_vec());
                        o.push(b[i + 1]);
                        i += 2;
                        escaped = true;
                        continue;
                    }
                    if let Some(o) = owned.as_mut() {
                        o.push(b[i]);
                    }
                    i += 1;
                }
                if i >= b.len() {
                    return ParsedMap::NoMatch; // unterminated quote
                }
                let v = if escaped {
                    Bytes::from(owned.unwrap_or_default())
                } else {
                    super::slice_of(src, &b[vs..i])
                };
                i += 1;
                m.insert(key, Value::Str(v));
            } else {
                let vs = i;
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                m.insert(key, Value::Str(super::slice_of(src, &b[vs..i])));
            }
        }
        if pairs == 0 {
            return ParsedMap::NoMatch;
        }
        ParsedMap::Map(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &'static str) -> ParsedMap {
        LogfmtFormat.parse(&Bytes::from_static(s.as_bytes()), s)
    }

    #[test]
    fn pairs_quotes_and_flags() {
        match p(r#"level=info msg="hello \"world\"" dur=1.5s ok empty="""#) {
            ParsedMap::Map(m) => {
                assert_eq!(m.get(b"level"), Some(&Value::str("info")));
                assert_eq!(m.get(b"msg"), Some(&Value::str("hello \"world\"")));
                assert_eq!(m.get(b"dur"), Some(&Value::str("1.5s")));
                assert_eq!(m.get(b"ok"), Some(&Value::Bool(true)));
                assert_eq!(m.get(b"empty"), Some(&Value::str("")));
            }
            _ => panic!(),
        }
        assert!(matches!(p("just a sentence"), ParsedMap::NoMatch));
        assert!(matches!(p(r#"a="open"#), ParsedMap::NoMatch));
    }
}
