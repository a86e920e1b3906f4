//! `@type none`: the whole text in one field (`message_key`, default `message`).

use super::ParsedMap;
use bytes::Bytes;
use nagare_core::{Map, Value};

/// Fluentd's default `message_key`.
pub const DEFAULT_MESSAGE_KEY: &str = "message";

#[derive(Debug, Clone)]
pub struct NoneFormat {
    pub message_key: Bytes,
}

impl NoneFormat {
    pub fn parse(&self, src: &Bytes) -> ParsedMap {
        let mut m = Map::with_capacity(1);
        m.0.push((
            Value::Str(self.message_key.clone()),
            Value::Str(src.clone()),
        ));
        ParsedMap::Map(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_text_in_one_field() {
        let f = NoneFormat {
            message_key: Bytes::from_static(b"msg"),
        };
        match f.parse(&Bytes::from_static(b"not json at all")) {
            ParsedMap::Map(m) => assert_eq!(m.get(b"msg"), Some(&Value::str("not json at all"))),
            _ => panic!(),
        }
    }
}
