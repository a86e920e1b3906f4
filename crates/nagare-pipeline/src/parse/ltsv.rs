//! `@type ltsv`: `label:value` fields separated by `delimiter` (default a tab) or
//! `delimiter_pattern`; `label_delimiter` defaults to `:`. A field without the label delimiter
//! has a nil value, as in Fluentd; empty fields are skipped.

use super::ParsedMap;
use bytes::Bytes;
use nagare_core::{Map, Value};
use regex::Regex;

#[derive(Debug, Clone)]
pub struct LtsvFormat {
    pub delimiter: String,
    pub delimiter_pattern: Option<Regex>,
    pub label_delimiter: String,
}

impl Default for LtsvFormat {
    fn default() -> Self {
        LtsvFormat {
            delimiter: "\t".into(),
            delimiter_pattern: None,
            label_delimiter: ":".into(),
        }
    }
}

impl LtsvFormat {
    pub fn parse(&self, src: &Bytes, text: &str) -> ParsedMap {
        let mut m = Map::new();
        let mut add = |field: &str| {
            if field.is_empty() {
                return;
            }
            match field.split_once(self.label_delimiter.as_str()) {
                Some((k, v)) => m.insert(
                    super::slice_of(src, k.as_bytes()),
                    Value::Str(super::slice_of(src, v.as_bytes())),
                ),
                None => m.insert(super::slice_of(src, field.as_bytes()), Value::Nil),
            }
        };
        match &self.delimiter_pattern {
            Some(re) => re.split(text).for_each(&mut add),
            None => text.split(self.delimiter.as_str()).for_each(&mut add),
        }
        ParsedMap::Map(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_values() {
        let src = Bytes::from_static(b"host:127.0.0.1\tpath:/a:b\tflag\t");
        let text = std::str::from_utf8(&src).unwrap();
        match LtsvFormat::default().parse(&src, text) {
            ParsedMap::Map(m) => {
                assert_eq!(m.get(b"host"), Some(&Value::str("127.0.0.1")));
                assert_eq!(m.get(b"path"), Some(&Value::str("/a:b")));
                assert_eq!(m.get(b"flag"), Some(&Value::Nil));
                assert_eq!(m.len(), 3);
            }
            _ => panic!(),
        }
        let f = LtsvFormat {
            delimiter_pattern: Some(Regex::new(" +").unwrap()),
            label_delimiter: "=".into(),
            ..Default::default()
        };
        let src = Bytes::from_static(b"a=1   b=2");
        match f.parse(&src, "a=1   b=2") {
            ParsedMap::Map(m) => assert_eq!(m.get(b"b"), Some(&Value::str("2"))),
            _ => panic!(),
        }
    }
}
