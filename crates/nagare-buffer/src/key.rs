//! Chunk keys: `<buffer tag,time,service,$.kubernetes.namespace_name>`.
//!
//! Events whose keys differ never share a chunk. A chunk carries its full
//! [`ChunkKey`](nagare_core::ChunkKey): the tag (when `tag` is a key), the start of the time
//! slice (when `time` is a key) and the value of every record key, in the order written, named
//! as written (`service`, `$.kubernetes.namespace_name`). A missing record key (or a nil value)
//! is the empty string; numbers and booleans are formatted, maps and arrays are JSON, as
//! Fluentd's placeholders show them.
//!
//! Record keys are a top-level name (`service`) or a dotted path from the record root
//! (`$.kubernetes.namespace_name`, `$.a.b`). Bracket forms (`$['a']`) are refused at load.

use crate::config::TimeKey;
use bytes::Bytes;
use nagare_core::{ChunkKey, Event, Record, Tag, Value};

/// One record chunk key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordKey {
    /// As written in the config (the name outputs look it up by, e.g. `${service}`).
    pub name: String,
    /// The path: one element for `service`, several for `$.a.b`.
    pub path: Vec<Bytes>,
}

impl RecordKey {
    /// Parses `service` or `$.a.b`.
    pub fn parse(name: &str) -> Result<RecordKey, String> {
        let path: Vec<Bytes> = if let Some(rest) = name.strip_prefix("$.") {
            let parts: Vec<&str> = rest.split('.').collect();
            if parts.iter().any(|p| p.is_empty()) {
                return Err(format!("chunk key '{name}': empty path element"));
            }
            parts
                .into_iter()
                .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                .collect()
        } else if name.starts_with('$') {
            return Err(format!(
                "chunk key '{name}': only dotted record accessors ($.a.b) are supported"
            ));
        } else {
            if name.is_empty() || name.contains(|c: char| c.is_whitespace()) {
                return Err(format!("invalid chunk key '{name}'"));
            }
            vec![Bytes::copy_from_slice(name.as_bytes())]
        };
        Ok(RecordKey {
            name: name.to_string(),
            path,
        })
    }

    /// The key's value in `record`, as chunk-key bytes.
    pub fn value_in(&self, record: &Record) -> Bytes {
        lookup(record, &self.path)
            .map(|v| value_bytes(&v))
            .unwrap_or_default()
    }
}

/// `$.a.b` on a record: the first element is looked up without decoding the whole record.
pub fn lookup(record: &Record, path: &[Bytes]) -> Option<Value> {
    let (first, rest) = path.split_first()?;
    let mut v = record.get(first)?;
    for k in rest {
        v = match v {
            Value::Map(m) => m.get(k)?.clone(),
            _ => return None,
        };
    }
    Some(v)
}

fn value_bytes(v: &Value) -> Bytes {
    match v {
        Value::Str(b) | Value::Bin(b) => b.clone(),
        Value::Nil => Bytes::new(),
        other => Bytes::from(other.to_text().into_owned().into_bytes()),
    }
}

/// An event's timekey and record-key values, before they become a [`ChunkKey`].
type KeyParts = (Option<i64>, Vec<Bytes>);

/// The chunk keys of one buffer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChunkKeys {
    /// `tag` is a key.
    pub tag: bool,
    /// `time` is a key, with its settings.
    pub time: Option<TimeKey>,
    /// Record keys, in the order written.
    pub records: Vec<RecordKey>,
}

/// What the list `tag,time,service` names, before the `timekey` settings are known.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChunkKeyList {
    pub tag: bool,
    pub time: bool,
    pub records: Vec<RecordKey>,
}

impl ChunkKeyList {
    /// Parses the `<buffer ...>` argument: comma (or space) separated; `[]` is no keys.
    pub fn parse(arg: &str) -> Result<ChunkKeyList, String> {
        let arg = arg.trim();
        let arg = arg
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(arg);
        let mut out = ChunkKeyList::default();
        for k in arg
            .split([',', ' '])
            .map(|k| k.trim().trim_matches('"').trim_matches('\''))
            .filter(|k| !k.is_empty())
        {
            match k {
                "tag" if !out.tag => out.tag = true,
                "time" if !out.time => out.time = true,
                "tag" | "time" => return Err(format!("chunk key '{k}' given twice")),
                _ => {
                    let rk = RecordKey::parse(k)?;
                    if out.records.iter().any(|r| r.name == rk.name) {
                        return Err(format!("chunk key '{k}' given twice"));
                    }
                    out.records.push(rk);
                }
            }
        }
        Ok(out)
    }
}

impl ChunkKeys {
    /// `<buffer tag>`.
    pub fn tag() -> Self {
        ChunkKeys {
            tag: true,
            ..Default::default()
        }
    }

    /// No keys: every event goes to one chunk.
    pub fn none() -> Self {
        ChunkKeys::default()
    }

    /// Whether the key depends on the event (time or record keys), not only the tag.
    pub fn per_event(&self) -> bool {
        self.time.is_some() || !self.records.is_empty()
    }

    /// The key for events without per-event keys.
    pub fn key_for_tag(&self, tag: &Tag) -> ChunkKey {
        ChunkKey {
            tag: self.tag.then(|| tag.clone()),
            timekey: None,
            vars: Vec::new(),
        }
    }

    /// The key of one event.
    pub fn key_for(&self, tag: &Tag, ev: &Event) -> ChunkKey {
        let (timekey, vals) = self.parts(ev);
        self.assemble(tag, timekey, vals)
    }

    fn parts(&self, ev: &Event) -> (Option<i64>, Vec<Bytes>) {
        let timekey = self.time.map(|t| t.slice(ev.time.secs() as i64));
        let vals = self
            .records
            .iter()
            .map(|r| r.value_in(&ev.record))
            .collect();
        (timekey, vals)
    }

    fn assemble(&self, tag: &Tag, timekey: Option<i64>, vals: Vec<Bytes>) -> ChunkKey {
        ChunkKey {
            tag: self.tag.then(|| tag.clone()),
            timekey,
            vars: self
                .records
                .iter()
                .zip(vals)
                .map(|(r, v)| (r.name.clone(), v))
                .collect(),
        }
    }

    /// Splits a stream's events into groups by key, keeping arrival order within a group and
    /// the order groups first appear in.
    pub fn group<'a>(&self, tag: &Tag, events: &'a [Event]) -> Vec<(ChunkKey, Vec<&'a Event>)> {
        if !self.per_event() {
            return vec![(self.key_for_tag(tag), events.iter().collect())];
        }
        let mut parts: Vec<(KeyParts, Vec<&'a Event>)> = Vec::new();
        let mut last = usize::MAX;
        for e in events {
            let p = self.parts(e);
            if last != usize::MAX && parts[last].0 == p {
                parts[last].1.push(e);
                continue;
            }
            match parts.iter().position(|(k, _)| *k == p) {
                Some(i) => {
                    parts[i].1.push(e);
                    last = i;
                }
                None => {
                    parts.push((p, vec![e]));
                    last = parts.len() - 1;
                }
            }
        }
        parts
            .into_iter()
            .map(|((t, v), evs)| (self.assemble(tag, t, v), evs))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use nagare_core::EventTime;

    fn nested() -> Record {
        // {"service": "api", "k8s": {"ns": "prod", "n": 3}}
        let mut b = BytesMut::new();
        nagare_core::msgpack::write_map_len(&mut b, 2);
        nagare_core::msgpack::write_str(&mut b, b"service");
        nagare_core::msgpack::write_str(&mut b, b"api");
        nagare_core::msgpack::write_str(&mut b, b"k8s");
        nagare_core::msgpack::write_map_len(&mut b, 2);
        nagare_core::msgpack::write_str(&mut b, b"ns");
        nagare_core::msgpack::write_str(&mut b, b"prod");
        nagare_core::msgpack::write_str(&mut b, b"n");
        nagare_core::msgpack::write_uint(&mut b, 3);
        Record::from_msgpack(b.freeze()).unwrap()
    }

    #[test]
    fn record_keys_top_level_and_dotted() {
        let r = nested();
        let get = |k: &str| RecordKey::parse(k).unwrap().value_in(&r);
        assert_eq!(&get("service")[..], b"api");
        assert_eq!(&get("$.k8s.ns")[..], b"prod");
        assert_eq!(&get("$.k8s.n")[..], b"3");
        assert_eq!(&get("$.k8s.missing")[..], b"");
        assert_eq!(&get("$.service.x")[..], b"");
        assert!(RecordKey::parse("$['a']").is_err());
        assert!(RecordKey::parse("$.a..b").is_err());
    }

    #[test]
    fn key_list_parsing() {
        let l = ChunkKeyList::parse("tag, time,service,$.a.b").unwrap();
        assert!(l.tag && l.time);
        assert_eq!(l.records.len(), 2);
        assert_eq!(ChunkKeyList::parse("[]").unwrap(), ChunkKeyList::default());
        assert!(ChunkKeyList::parse("tag,tag").is_err());
    }

    #[test]
    fn timekey_slices_with_offsets() {
        let t = TimeKey {
            unit: 3600,
            wait: std::time::Duration::ZERO,
            utc_offset: 0,
        };
        assert_eq!(t.slice(7199), 3600);
        let day_jst = TimeKey {
            unit: 86400,
            wait: std::time::Duration::ZERO,
            utc_offset: 9 * 3600,
        };
        // 2023-11-14T15:00:00Z is midnight in +0900.
        assert_eq!(day_jst.slice(1_699_974_000 + 5), 1_699_974_000);
        assert_eq!(day_jst.slice(1_699_974_000 - 1), 1_699_974_000 - 86400);
    }

    #[test]
    fn grouping_keeps_order() {
        let keys = ChunkKeys {
            tag: true,
            time: Some(TimeKey {
                unit: 10,
                wait: std::time::Duration::ZERO,
                utc_offset: 0,
            }),
            records: vec![],
        };
        let evs: Vec<Event> = [1u32, 12, 3, 15, 25]
            .iter()
            .map(|s| Event {
                time: EventTime::from_secs(*s),
                record: Record::from_pairs(&[("s", s.to_string())]),
            })
            .collect();
        let g = keys.group(&Tag::from("t"), &evs);
        let shape: Vec<(Option<i64>, Vec<u32>)> = g
            .iter()
            .map(|(k, e)| (k.timekey, e.iter().map(|e| e.time.secs()).collect()))
            .collect();
        assert_eq!(
            shape,
            vec![
                (Some(0), vec![1, 3]),
                (Some(10), vec![12, 15]),
                (Some(20), vec![25])
            ]
        );
        assert_eq!(g[0].0.tag, Some(Tag::from("t")));
    }
}
