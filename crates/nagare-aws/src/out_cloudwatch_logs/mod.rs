//! `@type cloudwatch_logs`: events to CloudWatch Logs with `PutLogEvents`.
//!
//! ```text
//! chunk ──decode──> per event: group, stream, message ──> Batcher (batch.rs, pure)
//!                   (names.rs checks record-derived names;      │ sorted, 10,000 events,
//!                    invalid -> fallback group / secondary)     │ 1,048,576 B incl. 26/event,
//!                                                               v < 24 h, oversize handled
//!   Progress[chunk id] ──skip batches already accepted──> batch 0..n ──> Service (service.rs)
//!                                                          │ ensure group/stream (cached)
//!                                                          │ token bucket (ratelimit.rs)
//!                                                          │ PutLogEvents, retry (retry.rs)
//!                                                          v
//!                               accepted: mark done; rejectedLogEventsInfo counted by reason
//! ```
//!
//! # Only the failed request is retried
//!
//! A chunk may hold several batches (several groups or streams, or more than one request's
//! worth of events). Batching is a pure function of the chunk bytes and the settings, so a
//! chunk always gives the same batches in the same order. The output remembers, per chunk id,
//! which batch indices were accepted (and whether the chunk's one-off work — counting,
//! sending invalid or oversized events to the secondary — was done). When batch *k* fails
//! and the buffer later retries the chunk, `write` skips every batch already accepted and
//! starts again at the failed ones: nothing accepted is sent twice, nothing is skipped.
//! The memory is dropped when the chunk is fully delivered, and capped at
//! [`config::DEFAULT_PROGRESS_CAPACITY`] chunks (oldest forgotten first).
//!
//! **Across a restart** the memory is gone: a chunk that was partly delivered before the
//! process stopped (possible only with a file buffer, which keeps the chunk) is sent whole
//! again, so the batches accepted before the stop appear twice in CloudWatch. Delivery is
//! at-least-once across restarts and exactly-once within a process (barring a response lost
//! in flight, which no CloudWatch client can tell from a failure: AWS has no dedupe since
//! sequence tokens went away in 2023).
//!
//! # What never stops the output
//!
//! An oversized event is truncated, split or dropped (counted) before batching; a rejected
//! event (too old, too new, expired) is counted by reason and never retried; an invalid
//! record-derived name sends that event to the fallback group or the secondary. None of
//! them fails a batch. Throttling, 5xx and network errors are retried (first here, then by
//! the buffer); nothing is discarded while the buffer holds the chunk.
//!
//! # Metrics (label `plugin_id`)
//!
//! `nagare_cloudwatch_events_total` (accepted), `nagare_cloudwatch_requests_total`,
//! `nagare_cloudwatch_request_errors_total{reason}` (error kinds), `nagare_cloudwatch_retries_total`,
//! `nagare_cloudwatch_skipped_batches_total` (already accepted, not resent),
//! `nagare_cloudwatch_rejected_events_total{reason=too_old|too_new|expired}`,
//! `nagare_cloudwatch_oversize_events_total{reason=truncated|split|dropped}`,
//! `nagare_cloudwatch_invalid_utf8_total{reason=events|sequences}`,
//! `nagare_cloudwatch_invalid_names_total{reason=missing_group|invalid_group|missing_stream|invalid_stream}`,
//! `nagare_cloudwatch_rerouted_events_total{reason=fallback_group|secondary}`,
//! `nagare_cloudwatch_dropped_events_total{reason}`, `nagare_cloudwatch_created_total{reason=group|stream}`,
//! `nagare_cloudwatch_legacy_token_total{reason}`.

pub mod batch;
pub mod config;
pub mod errors;
pub mod names;
pub mod ratelimit;
pub mod retry;
pub mod service;

use batch::{Batch, BatchStats, Batcher};
use config::{CloudWatchLogsConfig, InvalidConfig, NameSource};
use errors::{ApiError, ErrorKind};
use nagare_core::json::{write_json_str, write_value, JsonStats};
use nagare_core::metrics::{counter, Counter, ReasonCounters};
use nagare_core::msgpack::{read_array_len, read_map_len, read_str_or_bin, skip_complete};
use nagare_core::ratelimit::LogLimiter;
use nagare_core::{
    Chunk, ChunkId, Event, EventSink, EventStream, EventTime, Output, Record, Value, WriteError,
};
use ratelimit::TokenBucket;
use retry::Next;
use service::{LogsApi, PutOutcome, SdkLogs, Service, ServiceStats};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use batch::{Limits, OversizeAction, RejectReason, RejectedInfo};
/// The SDK crate, for callers that build clients or read back what was sent (tests).
pub use aws_sdk_cloudwatchlogs as sdk;
pub use config::CloudWatchLogsConfig as Config;

/// The output's counters.
#[derive(Debug, Clone)]
pub struct Stats {
    pub events: Counter,
    pub requests: Counter,
    pub request_errors: ReasonCounters,
    pub retries: Counter,
    pub skipped_batches: Counter,
    pub rejected: ReasonCounters,
    pub oversize: ReasonCounters,
    pub invalid_utf8: ReasonCounters,
    pub invalid_names: ReasonCounters,
    pub rerouted: ReasonCounters,
    pub dropped: ReasonCounters,
    pub service: ServiceStats,
}

impl Stats {
    pub fn new(id: &str) -> Self {
        let l = [("plugin_id", id)];
        Stats {
            events: counter(
                "nagare_cloudwatch_events_total",
                "Events CloudWatch Logs accepted",
                &l,
            ),
            requests: counter(
                "nagare_cloudwatch_requests_total",
                "PutLogEvents requests that succeeded",
                &l,
            ),
            request_errors: ReasonCounters::new(
                "nagare_cloudwatch_request_errors_total",
                "Failed CloudWatch Logs calls, by error kind",
                &l,
            ),
            retries: counter(
                "nagare_cloudwatch_retries_total",
                "PutLogEvents requests sent again inside a write",
                &l,
            ),
            skipped_batches: counter(
                "nagare_cloudwatch_skipped_batches_total",
                "Batches of a retried chunk not sent again because they were accepted before",
                &l,
            ),
            rejected: ReasonCounters::new(
                "nagare_cloudwatch_rejected_events_total",
                "Events CloudWatch Logs rejected in accepted requests (never retried)",
                &l,
            ),
            oversize: ReasonCounters::new(
                "nagare_cloudwatch_oversize_events_total",
                "Events over max_event_size, by what was done with them",
                &l,
            ),
            invalid_utf8: ReasonCounters::new(
                "nagare_cloudwatch_invalid_utf8_total",
                "Messages with invalid UTF-8 (events) and sequences replaced with U+FFFD",
                &l,
            ),
            invalid_names: ReasonCounters::new(
                "nagare_cloudwatch_invalid_names_total",
                "Events whose record-derived group or stream name was missing or invalid",
                &l,
            ),
            rerouted: ReasonCounters::new(
                "nagare_cloudwatch_rerouted_events_total",
                "Events sent to the fallback group or the secondary",
                &l,
            ),
            dropped: ReasonCounters::new(
                "nagare_cloudwatch_dropped_events_total",
                "Events not delivered anywhere, by reason",
                &l,
            ),
            service: ServiceStats {
                created: ReasonCounters::new(
                    "nagare_cloudwatch_created_total",
                    "Log groups and streams created",
                    &l,
                ),
                retention_failed: counter(
                    "nagare_cloudwatch_retention_failed_total",
                    "PutRetentionPolicy calls that failed",
                    &l,
                ),
                legacy: ReasonCounters::new(
                    "nagare_cloudwatch_legacy_token_total",
                    "Legacy sequence-token answers handled",
                    &l,
                ),
            },
        }
    }
}

/// Per-chunk memory of accepted batches (see the module docs).
#[derive(Debug, Default)]
struct ProgressMap {
    cap: usize,
    seq: u64,
    map: HashMap<ChunkId, Progress>,
}

#[derive(Debug, Clone)]
struct Progress {
    done: Vec<bool>,
    prelude_done: bool,
    seq: u64,
}

impl ProgressMap {
    fn begin(&mut self, id: ChunkId, batches: usize) -> Progress {
        self.seq += 1;
        let seq = self.seq;
        if !self.map.contains_key(&id) && self.map.len() >= self.cap.max(1) {
            if let Some(oldest) = self.map.iter().min_by_key(|(_, p)| p.seq).map(|(k, _)| *k) {
                self.map.remove(&oldest);
                tracing::warn!(chunk = %oldest.hex(), "forgot the progress of an old chunk (progress capacity reached); a retry of it resends its accepted batches");
            }
        }
        let p = self.map.entry(id).or_insert_with(|| Progress {
            done: vec![false; batches],
            prelude_done: false,
            seq,
        });
        if p.done.len() != batches {
            tracing::warn!(chunk = %id.hex(), "chunk gave a different batch plan on retry; sending all of it");
            *p = Progress {
                done: vec![false; batches],
                prelude_done: p.prelude_done,
                seq,
            };
        }
        p.seq = seq;
        p.clone()
    }
    fn mark(&mut self, id: ChunkId, batch: usize) {
        if let Some(p) = self.map.get_mut(&id) {
            if let Some(d) = p.done.get_mut(batch) {
                *d = true;
            }
        }
    }
    fn mark_prelude(&mut self, id: ChunkId) {
        if let Some(p) = self.map.get_mut(&id) {
            p.prelude_done = true;
        }
    }
}

/// Where one entry of the chunk lives (to rebuild it for the secondary).
#[derive(Debug, Clone, Copy)]
struct EntryPos {
    time: EventTime,
    rec_start: usize,
    rec_end: usize,
}

/// A chunk turned into requests.
#[derive(Debug, Default)]
struct ChunkPlan {
    batches: Vec<Arc<Batch>>,
    stats: BatchStats,
    entries: Vec<EntryPos>,
    /// Origins to send to the secondary (or drop), with the reason.
    dead: Vec<(u32, &'static str)>,
    /// Counts for the one-off accounting.
    invalid_names: Vec<(&'static str, u64)>,
    fallback: u64,
    undecodable: u64,
    /// Retention for groups created from this chunk (`retention_in_days_key`).
    retention: HashMap<Arc<str>, u32>,
}

/// The cloudwatch_logs output.
pub struct CloudWatchLogs {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: CloudWatchLogsConfig,
    limits: Limits,
    service: Service,
    rate: Option<Arc<TokenBucket>>,
    dead_letter: Option<Arc<dyn EventSink>>,
    progress: Mutex<ProgressMap>,
    stats: Stats,
    logs: LogLimiter,
}

impl CloudWatchLogs {
    /// Builds the output on the AWS SDK (credentials, region and endpoint from `cfg.aws`).
    pub async fn connect(
        cfg: CloudWatchLogsConfig,
        dead_letter: Option<Arc<dyn EventSink>>,
    ) -> Result<Self, InvalidConfig> {
        cfg.validate()?;
        let sdk = crate::client::sdk_config(&cfg.aws).await;
        let client = aws_sdk_cloudwatchlogs::Client::new(&sdk);
        Self::try_new(cfg, Arc::new(SdkLogs::new(client)), dead_letter)
    }

    /// Builds the output now and its SDK client on first use (synchronous, for plugin
    /// builders: the credential chain loads asynchronously).
    pub fn new_lazy(
        cfg: CloudWatchLogsConfig,
        dead_letter: Option<Arc<dyn EventSink>>,
    ) -> Result<Self, InvalidConfig> {
        let api = Arc::new(service::LazySdkLogs::new(cfg.aws.clone()));
        Self::try_new(cfg, api, dead_letter)
    }

    /// Builds the output on any [`LogsApi`] (an SDK client with interceptors, a fake).
    pub fn try_new(
        cfg: CloudWatchLogsConfig,
        api: Arc<dyn LogsApi>,
        dead_letter: Option<Arc<dyn EventSink>>,
    ) -> Result<Self, InvalidConfig> {
        cfg.validate()?;
        let stats = Stats::new(&cfg.id);
        let rate = cfg.put_log_events_rate.map(|r| {
            let key = format!(
                "{}|{}",
                cfg.aws.region.as_deref().unwrap_or(""),
                cfg.aws.endpoint.as_deref().unwrap_or("")
            );
            ratelimit::shared(&key, r)
        });
        let service = Service::new(
            api,
            cfg.auto_create_stream,
            cfg.log_group_aws_tags.clone(),
            stats.service.clone(),
        );
        Ok(CloudWatchLogs {
            inner: Arc::new(Inner {
                limits: cfg.limits(),
                progress: Mutex::new(ProgressMap {
                    cap: cfg.progress_capacity,
                    ..Default::default()
                }),
                cfg,
                service,
                rate,
                dead_letter,
                stats,
                logs: LogLimiter::default(),
            }),
        })
    }

    /// The output's counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Chunks with remembered progress (tests: empty once everything was delivered).
    pub fn chunks_in_progress(&self) -> usize {
        lock(&self.inner.progress).map.len()
    }

    /// The batches `chunk` gives (pure; for tests and benchmarks).
    pub fn plan_batches(&self, chunk: &Chunk) -> Vec<Arc<Batch>> {
        self.inner.plan(chunk).batches
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

fn read_time(bytes: &bytes::Bytes, pos: usize) -> Option<(EventTime, usize)> {
    let (v, end) = Value::decode(bytes, pos).ok()?;
    let t = match v {
        Value::Ext(0, d) if d.len() == 8 => EventTime::new(
            u32::from_be_bytes([d[0], d[1], d[2], d[3]]),
            u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
        ),
        Value::UInt(u) => EventTime::from_secs(u.min(u32::MAX as u64) as u32),
        Value::Int(i) => EventTime::from_secs(i.clamp(0, u32::MAX as i64) as u32),
        Value::Float(f) if f.is_finite() && f >= 0.0 => {
            EventTime::new(f.trunc() as u32, (f.fract() * 1e9) as u32)
        }
        _ => return None,
    };
    Some((t, end))
}

fn millis(t: EventTime) -> i64 {
    t.secs() as i64 * 1000 + (t.nanos() / 1_000_000) as i64
}

/// `YYYY-MM-DDTHH:MM:SS+0000`.
fn iso8601(t: EventTime, out: &mut Vec<u8>) {
    use std::io::Write;
    let secs = t.secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
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
    fn plan(&self, chunk: &Chunk) -> ChunkPlan {
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
                    match name {
                        Some(k) => write_json_str(&mut msg, k, &mut js),
                        None => {
                            // A non-string key: its JSON text, quoted (as nagare_core::json).
                            let mut tmp = Vec::new();
                            write_value(&mut tmp, buf, pair.key, &mut js);
                            write_json_str(&mut msg, &tmp, &mut js);
                        }
                    }
                    msg.push(b':');
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
    fn events_of(chunk: &Chunk, entries: &[EntryPos], origins: &mut Vec<u32>) -> Vec<Event> {
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

    /// Sends events to the secondary, or counts them as dropped. Returns how many went.
    async fn dead_letter(
        &self,
        chunk: &Chunk,
        entries: &[EntryPos],
        mut origins: Vec<u32>,
        reason: &'static str,
    ) {
        if origins.is_empty() {
            return;
        }
        let events = Self::events_of(chunk, entries, &mut origins);
        let n = events.len() as u64;
        match &self.dead_letter {
            Some(dl) => match dl.emit(EventStream::new(chunk.tag.clone(), events)).await {
                Ok(_) => self.stats.rerouted.add("secondary", n),
                Err(e) => {
                    self.stats.dropped.add("secondary_failed", n);
                    tracing::error!(plugin_id = %self.cfg.id, events = n, reason, error = %e, "secondary refused events; dropped");
                }
            },
            None => {
                self.stats.dropped.add(reason, n);
                if self.logs.check(reason).is_some() {
                    tracing::warn!(plugin_id = %self.cfg.id, events = n, reason, "events dropped (no <secondary>)");
                }
            }
        }
    }

    /// The one-off work of a chunk: counters and events that do not go to CloudWatch.
    async fn prelude(&self, chunk: &Chunk, plan: &ChunkPlan) {
        let s = &self.stats;
        let b = &plan.stats;
        s.oversize.add("truncated", b.truncated);
        s.oversize.add("split", b.split);
        s.oversize.add("dropped", b.dropped_oversize);
        s.invalid_utf8.add("events", b.invalid_utf8_events);
        s.invalid_utf8.add("sequences", b.invalid_utf8_sequences);
        for (r, n) in &plan.invalid_names {
            s.invalid_names.add(r, *n);
        }
        s.rerouted.add("fallback_group", plan.fallback);
        if plan.undecodable > 0 {
            s.dropped.add("undecodable", plan.undecodable);
            tracing::error!(plugin_id = %self.cfg.id, chunk = %chunk.id.hex(), entries = plan.undecodable, "undecodable chunk entries dropped");
        }
        if !plan.invalid_names.is_empty() && self.logs.check("names").is_some() {
            tracing::warn!(plugin_id = %self.cfg.id, counts = ?plan.invalid_names, fallback = plan.fallback, "events with a missing or invalid group/stream name");
        }
        for reason in ["invalid_name", "oversize"] {
            let origins: Vec<u32> = plan
                .dead
                .iter()
                .filter(|(_, r)| *r == reason)
                .map(|(o, _)| *o)
                .collect();
            self.dead_letter(chunk, &plan.entries, origins, reason)
                .await;
        }
    }

    /// Sends one batch, retrying inside the write as the policy allows.
    async fn send_batch(
        self: Arc<Self>,
        batch: Arc<Batch>,
        retention: Option<u32>,
    ) -> Result<PutOutcome, (ApiError, Next)> {
        let mut backoff = self.cfg.retry.backoff();
        let mut recreated = false;
        loop {
            let res = async {
                self.service
                    .ensure_stream(&batch.key, retention.or(self.cfg.retention_in_days))
                    .await?;
                if let Some(rl) = &self.rate {
                    rl.acquire().await;
                }
                self.service.put(&batch.key, &batch.events).await
            }
            .await;
            let e = match res {
                Ok(out) => {
                    self.stats.requests.inc();
                    return Ok(out);
                }
                Err(e) => e,
            };
            self.stats.request_errors.inc(e.kind.label());
            if e.kind == ErrorKind::ResourceNotFound && self.service.auto_create() && !recreated {
                recreated = true;
                tracing::warn!(plugin_id = %self.cfg.id, group = %batch.key.group, stream = %batch.key.stream, "log group or stream is gone; recreating it");
                self.service.forget(&batch.key);
                continue;
            }
            match self.cfg.retry.next(&e, &mut backoff) {
                Next::RetryAfter(wait) => {
                    self.stats.retries.inc();
                    if self.logs.check(e.kind.label()).is_some() {
                        tracing::warn!(plugin_id = %self.cfg.id, group = %batch.key.group, stream = %batch.key.stream, error = %e, wait_ms = wait.as_millis() as u64, "PutLogEvents failed; retrying this request");
                    }
                    tokio::time::sleep(wait).await;
                }
                next => return Err((e, next)),
            }
        }
    }

    /// Counts (and maybe reroutes) the events CloudWatch rejected in an accepted request.
    async fn handle_rejected(
        &self,
        chunk: &Chunk,
        plan: &ChunkPlan,
        batch: &Batch,
        out: &PutOutcome,
    ) {
        let rejected = out.rejected.rejected(batch.events.len());
        let accepted = (batch.events.len() - rejected.len()) as u64;
        self.stats.events.add(accepted);
        if rejected.is_empty() {
            return;
        }
        let mut by: HashMap<RejectReason, u64> = HashMap::new();
        for (_, r) in &rejected {
            *by.entry(*r).or_default() += 1;
        }
        for (r, n) in &by {
            self.stats.rejected.add(r.label(), *n);
        }
        if self.cfg.log_rejected_request {
            tracing::warn!(plugin_id = %self.cfg.id, group = %batch.key.group, stream = %batch.key.stream, too_old = by.get(&RejectReason::TooOld).copied().unwrap_or(0), too_new = by.get(&RejectReason::TooNew).copied().unwrap_or(0), expired = by.get(&RejectReason::Expired).copied().unwrap_or(0), "CloudWatch Logs rejected events");
        }
        if self.cfg.rejected_events_to_secondary && self.dead_letter.is_some() {
            let origins = rejected
                .iter()
                .map(|(i, _)| batch.events[*i].origin)
                .collect();
            self.dead_letter(chunk, &plan.entries, origins, "rejected")
                .await;
        }
    }

    async fn write(self: &Arc<Self>, chunk: &Chunk) -> Result<(), WriteError> {
        let plan = self.plan(chunk);
        let n = plan.batches.len();
        let progress = lock(&self.progress).begin(chunk.id, n);
        if !progress.prelude_done {
            self.prelude(chunk, &plan).await;
            lock(&self.progress).mark_prelude(chunk.id);
        }
        let pending: Vec<usize> = (0..n).filter(|i| !progress.done[*i]).collect();
        let skipped = (n - pending.len()) as u64;
        if skipped > 0 {
            self.stats.skipped_batches.add(skipped);
            tracing::debug!(plugin_id = %self.cfg.id, chunk = %chunk.id.hex(), skipped, "retry: batches accepted before are not sent again");
        }
        let mut queue = pending.into_iter();
        let mut running = tokio::task::JoinSet::new();
        let mut failure: Option<(ApiError, Next)> = None;
        loop {
            while failure.is_none() && running.len() < self.cfg.concurrency {
                let Some(i) = queue.next() else { break };
                let batch = plan.batches[i].clone();
                let retention = plan.retention.get(&batch.key.group).copied();
                let me = self.clone();
                running.spawn(async move { (i, me.send_batch(batch, retention).await) });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (i, res) = match joined {
                Ok(x) => x,
                Err(e) => {
                    failure.get_or_insert((
                        ApiError::new(
                            "PutLogEvents",
                            ErrorKind::Other,
                            format!("task failed: {e}"),
                        ),
                        Next::Yield,
                    ));
                    continue;
                }
            };
            match res {
                Ok(out) => {
                    lock(&self.progress).mark(chunk.id, i);
                    self.handle_rejected(chunk, &plan, &plan.batches[i], &out)
                        .await;
                }
                Err((e, Next::Fail)) if e.kind == ErrorKind::InvalidRequest => {
                    // The request itself is refused; retrying cannot help. Only this batch.
                    let batch = &plan.batches[i];
                    tracing::error!(plugin_id = %self.cfg.id, group = %batch.key.group, stream = %batch.key.stream, events = batch.events.len(), error = %e, "CloudWatch Logs refused a request");
                    lock(&self.progress).mark(chunk.id, i);
                    let origins = batch.events.iter().map(|e| e.origin).collect();
                    self.dead_letter(chunk, &plan.entries, origins, "invalid_request")
                        .await;
                }
                Err(f) => {
                    failure.get_or_insert(f);
                }
            }
        }
        match failure {
            None => {
                lock(&self.progress).map.remove(&chunk.id);
                Ok(())
            }
            Some((e, Next::Fail)) => {
                lock(&self.progress).map.remove(&chunk.id);
                Err(WriteError::Unrecoverable(e.to_string()))
            }
            Some((e, _)) => Err(WriteError::Retryable(e.to_string())),
        }
    }
}

#[async_trait::async_trait]
impl Output for CloudWatchLogs {
    async fn write(&self, chunk: &Chunk) -> Result<(), WriteError> {
        self.inner.write(chunk).await
    }
}

#[cfg(test)]
mod tests;
