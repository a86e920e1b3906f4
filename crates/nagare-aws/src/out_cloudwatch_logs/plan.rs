//! A chunk turned into requests: decode each `[time, record]` entry, resolve its group and
//! stream (checking record-derived names), write its message (the record as JSON, or
//! `message_keys`), then hand it to the pure [`Batcher`](super::batch::Batcher). Depends only
//! on the chunk bytes and the settings.

use super::batch::{self, Batch, BatchStats, Batcher};
use super::config::NameSource;
use super::names;
use super::Inner;
use nagare_core::json::{write_json_key, write_json_str, write_value, JsonStats};
use nagare_core::msgpack::{read_array_len, read_map_len, read_str_or_bin, skip_complete};
use nagare_core::{Chunk, Event, EventTime, Record};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// Where one entry of the chunk lives (to rebuild it for the secondary).
#[derive(Debug, Clone, Copy)]
pub(super) struct EntryPos {
    pub(super) time: EventTime,
    pub(super) rec_start: usize,
    pub(super) rec_end: usize,
}

/// A chunk turned into requests.
#[derive(Debug, Default)]
pub(super) struct ChunkPlan {
    pub(super) batches: Vec<Arc<Batch>>,
    pub(super) stats: BatchStats,
    pub(super) entries: Vec<EntryPos>,
    /// Origins to send to the secondary (or drop), with the reason.
    pub(super) dead: Vec<(u32, &'static str)>,
    /// Counts for the one-off accounting.
    pub(super) invalid_names: Vec<(&'static str, u64)>,
    pub(super) fallback: u64,
    pub(super) undecodable: u64,
    /// Retention for groups created from this chunk (`retention_in_days_key`).
    pub(super) retention: HashMap<Arc<str>, u32>,
}

/// Where a top-level pair of a record lies in the chunk.
#[derive(Debug, Clone, Copy)]
struct Pair {
    /// The key object.
    key: usize,
    /// The key's payload when it is a str or bin.
    name: Option<(usize, usize)>,
    /// The value object.
    value: (usize, usize),
}

type Pairs = Vec<Pair>;

/// End of the object at `pos`: strings and scalars directly, containers by the scanner.
#[inline]
fn skip(buf: &[u8], pos: usize) -> Option<usize> {
    match *buf.get(pos)? {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Some(pos + 1),
        0xa0..=0xbf | 0xd9..=0xdb | 0xc4..=0xc6 => {
            read_str_or_bin(&buf[pos..]).map(|(_, e)| pos + e)
        }
        _ => skip_complete(buf, pos).ok(),
    }
}

fn index_map(buf: &[u8], pos: usize, pairs: &mut Pairs) -> Option<usize> {
    pairs.clear();
    let (n, hl) = read_map_len(&buf[pos..])?;
    let mut p = pos + hl;
    for _ in 0..n {
        let kend = skip(buf, p)?;
        let name = read_str_or_bin(&buf[p..kend]).map(|(s, e)| (p + s, p + e));
        let vend = skip(buf, kend)?;
        pairs.push(Pair {
            key: p,
            name,
            value: (kend, vend),
        });
        p = vend;
    }
    Some(p)
}

/// The value of `key` (the last occurrence wins, as decoders that build hashes do).
fn find(buf: &[u8], pairs: &Pairs, key: &str) -> Option<(usize, usize)> {
    pairs
        .iter()
        .rev()
        .find(|p| p.name.is_some_and(|(s, e)| &buf[s..e] == key.as_bytes()))
        .map(|p| p.value)
}

/// A value as text, as Ruby's `to_s` shows it: strings as they are, nil as nothing, anything
/// else as JSON.
fn value_text<'a>(buf: &'a [u8], vs: usize, ve: usize) -> Option<Cow<'a, [u8]>> {
    match buf[vs] {
        0xc0 => None,
        0xa0..=0xbf | 0xd9..=0xdb | 0xc4..=0xc6 => {
            let (s, e) = read_str_or_bin(&buf[vs..ve])?;
            Some(Cow::Borrowed(&buf[vs + s..vs + e]))
        }
        _ => {
            let mut out = Vec::new();
            write_value(&mut out, buf, vs, &mut JsonStats::default())?;
            Some(Cow::Owned(out))
        }
    }
}

/// The entry time at `pos` and the position after it ([`EventTime::read_msgpack`], the
/// buffer's reader).
fn read_time(bytes: &bytes::Bytes, pos: usize) -> Option<(EventTime, usize)> {
    EventTime::read_msgpack(bytes.get(pos..)?).map(|(t, n)| (t, pos + n))
}

fn millis(t: EventTime) -> i64 {
    t.secs() as i64 * 1000 + (t.nanos() / 1_000_000) as i64
}

/// `YYYY-MM-DDTHH:MM:SS+0000`.
fn iso8601(t: EventTime, out: &mut Vec<u8>) {
    use std::io::Write;
    let (y, m, d, hh, mm, ss) = nagare_core::civil::civil_from_secs(t.secs() as i64);
    let _ = write!(out, "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}+0000");
}

enum Name<'a> {
    Ok(Cow<'a, str>),
    Missing,
    Invalid,
}

impl Inner {
    fn resolve<'a>(
        &self,
        src: &'a NameSource,
        tag: &'a str,
        buf: &'a [u8],
        pairs: &Pairs,
        group: bool,
    ) -> Name<'a> {
        let name: Cow<'a, str> = match src {
            NameSource::Static(s) => return Name::Ok(Cow::Borrowed(s)),
            NameSource::Tag => Cow::Borrowed(tag),
            NameSource::Key(k) => {
                match find(buf, pairs, k).and_then(|(vs, ve)| value_text(buf, vs, ve)) {
                    None => return Name::Missing,
                    Some(Cow::Borrowed(b)) => match std::str::from_utf8(b) {
                        Ok(s) => Cow::Borrowed(s),
                        Err(_) => return Name::Invalid,
                    },
                    Some(Cow::Owned(v)) => match String::from_utf8(v) {
                        Ok(s) => Cow::Owned(s),
                        Err(_) => return Name::Invalid,
                    },
                }
            }
        };
        let prefix = &self.cfg.log_group_name_prefix;
        let name = if group && !prefix.is_empty() && !name.is_empty() {
            Cow::Owned(format!("{prefix}{name}"))
        } else {
            name
        };
        let ok = if group {
            names::validate_group(&name).is_ok()
        } else {
            names::validate_stream(&name).is_ok()
        };
        if ok {
            Name::Ok(name)
        } else {
            Name::Invalid
        }
    }

    /// Decodes the chunk and cuts the batches (pure: depends on the bytes and settings only).
    pub(super) fn plan(&self, chunk: &Chunk) -> ChunkPlan {
        let cfg = &self.cfg;
        let buf: &[u8] = &chunk.bytes;
        let tag = chunk.tag.to_str_lossy();
        let mut plan = ChunkPlan::default();
        let mut batcher = Batcher::new(self.limits.clone());
        let mut pairs: Pairs = Vec::with_capacity(16);
        // Each message is written into its own buffer, sized from the previous one.
        let mut msg_capacity = 256usize;
        let mut msg: Vec<u8> = Vec::with_capacity(msg_capacity);
        let mut names_count: HashMap<&'static str, u64> = HashMap::new();
        let mut utf8 = (0u64, 0u64);
        let remove: Vec<&str> = [
            (cfg.remove_log_group_name_key, &cfg.group),
            (cfg.remove_log_stream_name_key, &cfg.stream),
        ]
        .iter()
        .filter_map(|(rm, src)| match (rm, src) {
            (true, NameSource::Key(k)) => Some(k.as_str()),
            _ => None,
        })
        .chain(
            cfg.retention_in_days_key
                .as_deref()
                .filter(|_| cfg.remove_retention_in_days_key),
        )
        .collect();
        let mut pos = 0;
        while pos < buf.len() {
            let Ok(end) = skip_complete(buf, pos) else {
                // The rest cannot be framed: count what the chunk says is left.
                let left = chunk.records.saturating_sub(plan.entries.len()) as u64;
                plan.undecodable += left.max(1);
                break;
            };
            let entry = (|| {
                let (n, hl) = read_array_len(&buf[pos..end])?;
                if n < 2 {
                    return None;
                }
                let (time, rec) = read_time(&chunk.bytes, pos + hl)?;
                let rec_end = index_map(buf, rec, &mut pairs)?;
                Some(EntryPos {
                    time,
                    rec_start: rec,
                    rec_end,
                })
            })();
            pos = end;
            let Some(e) = entry else {
                plan.undecodable += 1;
                continue;
            };
            let origin = plan.entries.len() as u32;
            plan.entries.push(e);

            // Where it goes.
            let g = self.resolve(&cfg.group, &tag, buf, &pairs, true);
            let s = self.resolve(&cfg.stream, &tag, buf, &pairs, false);
            let group_bad = match &g {
                Name::Missing => Some("missing_group"),
                Name::Invalid => Some("invalid_group"),
                Name::Ok(_) => None,
            };
            let stream_bad = match &s {
                Name::Missing => Some("missing_stream"),
                Name::Invalid => Some("invalid_stream"),
                Name::Ok(_) => None,
            };
            for r in [group_bad, stream_bad].into_iter().flatten() {
                *names_count.entry(r).or_default() += 1;
            }
            let (group, stream): (Cow<str>, Cow<str>) = match (g, s) {
                (Name::Ok(g), Name::Ok(s)) => (g, s),
                (_, s) => {
                    let stream = match s {
                        Name::Ok(s) => Some(s),
                        _ => cfg.fallback_log_stream_name.as_deref().map(Cow::Borrowed),
                    };
                    match (&cfg.fallback_log_group_name, stream) {
                        (Some(fg), Some(fs)) => {
                            plan.fallback += 1;
                            (Cow::Borrowed(fg.as_str()), fs)
                        }
                        _ => {
                            plan.dead.push((origin, "invalid_name"));
                            continue;
                        }
                    }
                }
            };

            // Retention for a group created from this record.
            if let Some(k) = &cfg.retention_in_days_key {
                if !plan.retention.contains_key(&*group) {
                    if let Some(d) = find(buf, &pairs, k)
                        .and_then(|(vs, ve)| value_text(buf, vs, ve))
                        .and_then(|t| std::str::from_utf8(&t).ok()?.trim().parse::<u32>().ok())
                    {
                        if names::valid_retention(d) {
                            plan.retention.insert(Arc::from(&*group), d);
                        } else if self.logs.check("retention_key").is_some() {
                            tracing::warn!(plugin_id = %cfg.id, days = d, "retention_in_days_key value is not an allowed retention; ignored");
                        }
                    }
                }
            }

            // The message.
            msg.clear();
            let mut js = JsonStats::default();
            if cfg.message_keys.is_empty() {
                msg.push(b'{');
                let mut first = true;
                for pair in &pairs {
                    let name = pair.name.map(|(s, e)| &buf[s..e]);
                    if name.is_some_and(|k| remove.iter().any(|r| r.as_bytes() == k)) {
                        continue;
                    }
                    if !first {
                        msg.push(b',');
                    }
                    first = false;
                    // (The record was scanned whole: its keys are well-formed.)
                    if write_json_key(&mut msg, buf, pair.key, &mut js).is_none() {
                        msg.extend_from_slice(b"\"\":");
                    }
                    if write_value(&mut msg, buf, pair.value.0, &mut js).is_none() {
                        msg.extend_from_slice(b"null");
                    }
                }
                if cfg.include_time_key {
                    if !first {
                        msg.push(b',');
                    }
                    write_json_str(&mut msg, cfg.time_key.as_bytes(), &mut js);
                    msg.extend_from_slice(b":\"");
                    iso8601(e.time, &mut msg);
                    msg.push(b'"');
                }
                msg.push(b'}');
            } else {
                for k in &cfg.message_keys {
                    let v = if cfg.include_time_key && k == &cfg.time_key {
                        let mut t = Vec::new();
                        iso8601(e.time, &mut t);
                        Some(Cow::Owned(t))
                    } else {
                        find(buf, &pairs, k).and_then(|(vs, ve)| value_text(buf, vs, ve))
                    };
                    if let Some(v) = v.filter(|v| !v.is_empty()) {
                        if !msg.is_empty() {
                            msg.push(b' ');
                        }
                        msg.extend_from_slice(&v);
                    }
                }
            }
            // The message becomes the event's own String: move the bytes, no copy, when they
            // are valid UTF-8 (always, for JSON: the encoder replaces invalid sequences).
            let owned = std::mem::replace(&mut msg, Vec::with_capacity(msg_capacity));
            let (mut text, repaired) = match String::from_utf8(owned) {
                Ok(t) => (t, 0),
                Err(e) => {
                    let (t, n) = batch::repair_utf8(e.as_bytes());
                    (t.into_owned(), n)
                }
            };
            let bad_utf8 = (js.invalid_utf8 + repaired) as u64;
            if bad_utf8 > 0 {
                utf8.0 += 1;
                utf8.1 += bad_utf8;
            }
            if let Some(max) = cfg.max_message_length {
                if let Some((i, _)) = text.char_indices().nth(max) {
                    text.truncate(i);
                }
            }
            msg_capacity = (text.len() + text.len() / 8).clamp(64, 64 * 1024);
            if text.is_empty() {
                // CloudWatch refuses a whole request that holds an empty message
                // (InvalidParameterException), which would take the batch's other events with
                // it. fluent-plugin-cloudwatch-logs skips such records too.
                plan.dead.push((origin, "empty_message"));
                continue;
            }
            batcher.push(&group, &stream, millis(e.time), text, origin);
        }
        let p = batcher.finish();
        plan.stats = p.stats;
        plan.stats.invalid_utf8_events += utf8.0;
        plan.stats.invalid_utf8_sequences += utf8.1;
        plan.dead
            .extend(p.oversize_dropped.into_iter().map(|o| (o, "oversize")));
        plan.batches = p.batches.into_iter().map(Arc::new).collect();
        let mut v: Vec<(&'static str, u64)> = names_count.into_iter().collect();
        v.sort();
        plan.invalid_names = v;
        plan
    }

    /// Rebuilds entries of the chunk for the secondary (each origin once, in chunk order).
    pub(super) fn events_of(
        chunk: &Chunk,
        entries: &[EntryPos],
        origins: &mut Vec<u32>,
    ) -> Vec<Event> {
        origins.sort_unstable();
        origins.dedup();
        origins
            .iter()
            .filter_map(|o| entries.get(*o as usize))
            .map(|e| Event {
                time: e.time,
                record: Record::from_msgpack_unchecked(chunk.bytes.slice(e.rec_start..e.rec_end)),
            })
            .collect()
    }
}
