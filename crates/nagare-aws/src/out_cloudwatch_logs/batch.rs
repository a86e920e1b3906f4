//! Pure batching: events in, `PutLogEvents` requests out. No I/O, no clock.
//!
//! Rules (AWS `PutLogEvents`, see `../shared/anchors.md` section b):
//!
//! * one request per (group, stream);
//! * events sorted by timestamp (a stable sort: equal timestamps keep chunk order, so the
//!   pieces of a split event stay in order);
//! * at most [`MAX_BATCH_EVENTS`] events (`max_events_per_batch` may lower it);
//! * at most [`MAX_BATCH_BYTES`] bytes, counted as the UTF-8 bytes of every message plus
//!   [`EVENT_OVERHEAD`] per event;
//! * a span (last timestamp - first) below 24 hours: an event 24 h or more after the first
//!   event of the batch starts a new batch (Fluentd's plugin draws the line at the same place);
//! * a new batch starts as soon as adding the next event would cross any of these.
//!
//! Events larger than the per-event limit (`max_event_size`, message bytes + 26, 1 MiB by
//! default as AWS allows since April 2025) are truncated with a marker, split into several
//! events, or dropped (`oversize_action`); each case is counted. Messages are always valid
//! UTF-8: invalid sequences are replaced with U+FFFD and counted.
//!
//! The output depends only on the input events and the [`Limits`]: a chunk always gives the
//! same batches in the same order, which is what lets a retried write skip the batches that
//! were already accepted (see `mod.rs`).

use std::borrow::Cow;
use std::sync::Arc;

/// Largest request: message bytes plus [`EVENT_OVERHEAD`] per event.
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// Bytes AWS adds to every event when it sizes a request.
pub const EVENT_OVERHEAD: usize = 26;
/// Most events in one request.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// A batch covers less than this many milliseconds (24 h).
pub const MAX_BATCH_SPAN_MS: i64 = 24 * 3600 * 1000;
/// Default per-event limit, overhead included: 1 MiB (AWS since April 2025), so the largest
/// message is 1,048,550 bytes and fills a request on its own.
pub const DEFAULT_MAX_EVENT_SIZE: usize = MAX_BATCH_BYTES;
/// Default marker appended to truncated messages.
pub const DEFAULT_TRUNCATE_MARKER: &str = "[truncated]";

/// `oversize_action`: what happens to an event over the per-event limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OversizeAction {
    /// Keep the first bytes (at a character boundary) and append the marker.
    Truncate,
    /// Cut into several events with the same timestamp, each within the limit.
    Split,
    /// Leave it out (counted; sent to the secondary when there is one).
    Drop,
}

impl OversizeAction {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "truncate" => Some(OversizeAction::Truncate),
            "split" => Some(OversizeAction::Split),
            "drop" => Some(OversizeAction::Drop),
            _ => None,
        }
    }
}

/// The limits a batch respects.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Events per request (1..=10,000).
    pub max_events: usize,
    /// Bytes per request, overhead included (at most 1,048,576).
    pub max_bytes: usize,
    /// A batch spans less than this (ms).
    pub max_span_ms: i64,
    /// One event, overhead included.
    pub max_event_size: usize,
    pub oversize: OversizeAction,
    pub truncate_marker: String,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_events: MAX_BATCH_EVENTS,
            max_bytes: MAX_BATCH_BYTES,
            max_span_ms: MAX_BATCH_SPAN_MS,
            max_event_size: DEFAULT_MAX_EVENT_SIZE,
            oversize: OversizeAction::Truncate,
            truncate_marker: DEFAULT_TRUNCATE_MARKER.to_string(),
        }
    }
}

impl Limits {
    /// Largest message, in UTF-8 bytes.
    pub fn max_message_bytes(&self) -> usize {
        self.max_event_size.min(self.max_bytes) - EVENT_OVERHEAD
    }
}

/// Where a batch goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    pub group: Arc<str>,
    pub stream: Arc<str>,
}

/// One CloudWatch event. `origin` is the index of the chunk entry it came from (several
/// events share it when an event was split).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub message: String,
    pub origin: u32,
}

impl LogEvent {
    /// Size as AWS counts it.
    pub fn size(&self) -> usize {
        self.message.len() + EVENT_OVERHEAD
    }
}

/// One `PutLogEvents` request.
#[derive(Debug, Clone)]
pub struct Batch {
    pub key: StreamKey,
    /// Sorted by timestamp.
    pub events: Vec<LogEvent>,
    /// Message bytes plus overhead.
    pub bytes: usize,
}

impl Batch {
    /// Last timestamp - first.
    pub fn span_ms(&self) -> i64 {
        match (self.events.first(), self.events.last()) {
            (Some(a), Some(b)) => b.timestamp - a.timestamp,
            _ => 0,
        }
    }
}

/// What batching changed or left out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchStats {
    /// Events pushed.
    pub events_in: u64,
    /// Events truncated to the limit.
    pub truncated: u64,
    /// Events split, and the pieces they became.
    pub split: u64,
    pub split_pieces: u64,
    /// Events over the limit left out.
    pub dropped_oversize: u64,
    /// Messages that had invalid UTF-8, and the sequences replaced.
    pub invalid_utf8_events: u64,
    pub invalid_utf8_sequences: u64,
}

/// The result of batching a chunk.
#[derive(Debug, Default)]
pub struct Plan {
    pub batches: Vec<Batch>,
    pub stats: BatchStats,
    /// Origins of events dropped for being over the limit.
    pub oversize_dropped: Vec<u32>,
}

/// Text with invalid UTF-8 sequences replaced by U+FFFD, and how many were replaced.
pub fn repair_utf8(bytes: &[u8]) -> (Cow<'_, str>, usize) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (Cow::Borrowed(s), 0),
        Err(_) => {
            let mut out = String::with_capacity(bytes.len() + 8);
            let mut rest = bytes;
            let mut n = 0;
            loop {
                match std::str::from_utf8(rest) {
                    Ok(s) => {
                        out.push_str(s);
                        break;
                    }
                    Err(e) => {
                        let (good, bad) = rest.split_at(e.valid_up_to());
                        // `good` is valid by construction.
                        out.push_str(std::str::from_utf8(good).unwrap_or_default());
                        out.push('\u{FFFD}');
                        n += 1;
                        rest = &bad[e.error_len().unwrap_or(bad.len())..];
                    }
                }
            }
            (Cow::Owned(out), n)
        }
    }
}

/// The largest index `<= at` that is a character boundary of `s`.
pub fn floor_char_boundary(s: &str, at: usize) -> usize {
    if at >= s.len() {
        return s.len();
    }
    let mut i = at;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Collects events per (group, stream), then cuts them into batches.
#[derive(Debug)]
pub struct Batcher {
    limits: Limits,
    keys: Vec<(StreamKey, Vec<LogEvent>)>,
    last: usize,
    stats: BatchStats,
    dropped: Vec<u32>,
}

impl Batcher {
    pub fn new(limits: Limits) -> Self {
        Batcher {
            limits,
            keys: Vec::new(),
            last: usize::MAX,
            stats: BatchStats::default(),
            dropped: Vec::new(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn slot(&mut self, group: &str, stream: &str) -> usize {
        if let Some((k, _)) = self.keys.get(self.last) {
            if &*k.group == group && &*k.stream == stream {
                return self.last;
            }
        }
        let i = match self
            .keys
            .iter()
            .position(|(k, _)| &*k.group == group && &*k.stream == stream)
        {
            Some(i) => i,
            None => {
                self.keys.push((
                    StreamKey {
                        group: Arc::from(group),
                        stream: Arc::from(stream),
                    },
                    Vec::new(),
                ));
                self.keys.len() - 1
            }
        };
        self.last = i;
        i
    }

    /// Adds a message given as bytes (repaired to UTF-8 and counted when needed).
    pub fn push_bytes(
        &mut self,
        group: &str,
        stream: &str,
        timestamp: i64,
        message: &[u8],
        origin: u32,
    ) {
        let (text, bad) = repair_utf8(message);
        if bad > 0 {
            self.stats.invalid_utf8_events += 1;
            self.stats.invalid_utf8_sequences += bad as u64;
        }
        self.push(group, stream, timestamp, text.into_owned(), origin);
    }

    /// Adds a message (already valid UTF-8).
    pub fn push(
        &mut self,
        group: &str,
        stream: &str,
        timestamp: i64,
        mut message: String,
        origin: u32,
    ) {
        self.stats.events_in += 1;
        let max = self.limits.max_message_bytes();
        let slot = self.slot(group, stream);
        if message.len() <= max {
            self.keys[slot].1.push(LogEvent {
                timestamp,
                message,
                origin,
            });
            return;
        }
        match self.limits.oversize {
            OversizeAction::Truncate => {
                let marker = &self.limits.truncate_marker;
                let cut = floor_char_boundary(&message, max.saturating_sub(marker.len()));
                message.truncate(cut);
                message.push_str(marker);
                self.stats.truncated += 1;
                self.keys[slot].1.push(LogEvent {
                    timestamp,
                    message,
                    origin,
                });
            }
            OversizeAction::Split => {
                self.stats.split += 1;
                let mut rest: &str = &message;
                let events = &mut self.keys[slot].1;
                while !rest.is_empty() {
                    let mut cut = floor_char_boundary(rest, max);
                    if cut == 0 {
                        // A limit smaller than one character: take the character anyway.
                        cut = rest.chars().next().map_or(rest.len(), char::len_utf8);
                    }
                    events.push(LogEvent {
                        timestamp,
                        message: rest[..cut].to_string(),
                        origin,
                    });
                    self.stats.split_pieces += 1;
                    rest = &rest[cut..];
                }
            }
            OversizeAction::Drop => {
                self.stats.dropped_oversize += 1;
                self.dropped.push(origin);
            }
        }
    }

    /// Sorts each (group, stream) by time and cuts the batches; keys keep the order in which
    /// they first appeared.
    pub fn finish(self) -> Plan {
        let mut batches = Vec::new();
        for (key, mut events) in self.keys {
            events.sort_by_key(|e| e.timestamp);
            cut_batches(&self.limits, key, events, &mut batches);
        }
        Plan {
            batches,
            stats: self.stats,
            oversize_dropped: self.dropped,
        }
    }
}

/// Cuts time-sorted events of one (group, stream) into batches within `limits`.
pub fn cut_batches(limits: &Limits, key: StreamKey, events: Vec<LogEvent>, out: &mut Vec<Batch>) {
    let max_events = limits.max_events.clamp(1, MAX_BATCH_EVENTS);
    let max_bytes = limits.max_bytes.min(MAX_BATCH_BYTES);
    let mut cur: Vec<LogEvent> = Vec::new();
    let mut bytes = 0usize;
    let mut first_ts = 0i64;
    for ev in events {
        let size = ev.size();
        let full = !cur.is_empty()
            && (cur.len() >= max_events
                || bytes + size > max_bytes
                || ev.timestamp - first_ts >= limits.max_span_ms);
        if full {
            out.push(Batch {
                key: key.clone(),
                events: std::mem::take(&mut cur),
                bytes,
            });
            bytes = 0;
        }
        if cur.is_empty() {
            first_ts = ev.timestamp;
            cur.reserve(max_events.min(1024));
        }
        bytes += size;
        cur.push(ev);
    }
    if !cur.is_empty() {
        out.push(Batch {
            key,
            events: cur,
            bytes,
        });
    }
}

/// Why CloudWatch refused an event of an accepted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// More than 14 days old (`tooOldLogEventEndIndex`).
    TooOld,
    /// More than 2 hours in the future (`tooNewLogEventStartIndex`).
    TooNew,
    /// Older than the group's retention (`expiredLogEventEndIndex`).
    Expired,
}

impl RejectReason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::TooOld => "too_old",
            RejectReason::TooNew => "too_new",
            RejectReason::Expired => "expired",
        }
    }
}

/// `rejectedLogEventsInfo` as AWS documents it: `tooOldLogEventEndIndex` and
/// `expiredLogEventEndIndex` are exclusive ends, `tooNewLogEventStartIndex` an inclusive start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RejectedInfo {
    pub too_old_end: Option<i32>,
    pub too_new_start: Option<i32>,
    pub expired_end: Option<i32>,
}

impl RejectedInfo {
    pub fn is_empty(&self) -> bool {
        self.too_old_end.is_none() && self.too_new_start.is_none() && self.expired_end.is_none()
    }

    /// The rejected events of a request of `n` events, each with one reason (too old wins
    /// over expired for an event both cover).
    pub fn rejected(&self, n: usize) -> Vec<(usize, RejectReason)> {
        let clamp = |v: Option<i32>| v.map(|i| (i.max(0) as usize).min(n));
        let old_end = clamp(self.too_old_end).unwrap_or(0);
        let exp_end = clamp(self.expired_end).unwrap_or(0);
        let new_start = clamp(self.too_new_start).unwrap_or(n);
        let mut out = Vec::new();
        for i in 0..n {
            if i < old_end {
                out.push((i, RejectReason::TooOld));
            } else if i < exp_end {
                out.push((i, RejectReason::Expired));
            } else if i >= new_start {
                out.push((i, RejectReason::TooNew));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: i64, msg: &str) -> (i64, String) {
        (ts, msg.to_string())
    }

    fn plan(limits: Limits, events: Vec<(i64, String)>) -> Plan {
        let mut b = Batcher::new(limits);
        for (i, (ts, m)) in events.into_iter().enumerate() {
            b.push("g", "s", ts, m, i as u32);
        }
        b.finish()
    }

    /// Every invariant AWS enforces, checked on a batch.
    pub(crate) fn assert_valid(b: &Batch, limits: &Limits) {
        assert!(!b.events.is_empty());
        assert!(b.events.len() <= MAX_BATCH_EVENTS);
        let bytes: usize = b.events.iter().map(LogEvent::size).sum();
        assert_eq!(bytes, b.bytes);
        assert!(bytes <= MAX_BATCH_BYTES, "{bytes}");
        assert!(b
            .events
            .windows(2)
            .all(|w| w[0].timestamp <= w[1].timestamp));
        assert!(b.span_ms() < MAX_BATCH_SPAN_MS);
        for e in &b.events {
            assert!(e.size() <= limits.max_event_size);
        }
    }

    #[test]
    fn ten_thousand_and_one_events_make_two_batches() {
        let p = plan(
            Limits::default(),
            (0..10_001).map(|i| ev(1_000 + i, "x")).collect(),
        );
        assert_eq!(p.batches.len(), 2);
        assert_eq!(p.batches[0].events.len(), 10_000);
        assert_eq!(p.batches[1].events.len(), 1);
        assert_eq!(p.batches[1].events[0].timestamp, 11_000);
    }

    #[test]
    fn max_events_per_batch_is_honoured() {
        let l = Limits {
            max_events: 3,
            ..Limits::default()
        };
        let p = plan(l, (0..7).map(|i| ev(i, "x")).collect());
        let sizes: Vec<usize> = p.batches.iter().map(|b| b.events.len()).collect();
        assert_eq!(sizes, vec![3, 3, 1]);
    }

    #[test]
    fn bytes_exactly_at_the_limit_fit_and_one_more_byte_splits() {
        // 4 events of (262,118 + 26) = 262,144 bytes: exactly 1,048,576.
        let m = "a".repeat(262_118);
        let p = plan(Limits::default(), (0..4).map(|i| (i, m.clone())).collect());
        assert_eq!(p.batches.len(), 1);
        assert_eq!(p.batches[0].bytes, MAX_BATCH_BYTES);
        // One byte more in the last message: just over, so the last event moves on.
        let mut evs: Vec<(i64, String)> = (0..4).map(|i| (i, m.clone())).collect();
        evs[3].1.push('b');
        let p = plan(Limits::default(), evs);
        assert_eq!(p.batches.len(), 2);
        assert_eq!(p.batches[0].events.len(), 3);
        assert_eq!(p.batches[0].bytes, 3 * 262_144);
        assert_eq!(p.batches[1].bytes, 262_145);
    }

    #[test]
    fn bytes_count_utf8_not_characters() {
        // "é" is 2 bytes: 524,275 of them = 1,048,550 bytes + 26 = a full batch.
        let m = "\u{e9}".repeat(524_275);
        assert_eq!(m.len(), 1_048_550);
        let p = plan(Limits::default(), vec![(1, m.clone()), (2, "x".into())]);
        assert_eq!(p.batches.len(), 2);
        assert_eq!(p.batches[0].bytes, MAX_BATCH_BYTES);
        assert_eq!(p.stats.truncated, 0);
    }

    #[test]
    fn a_one_mebibyte_event_fills_a_batch_alone() {
        let m = "z".repeat(1_048_550);
        let p = plan(
            Limits::default(),
            vec![(1, "a".into()), (2, m), (3, "b".into())],
        );
        let sizes: Vec<usize> = p.batches.iter().map(|b| b.events.len()).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
        assert_eq!(p.batches[1].bytes, MAX_BATCH_BYTES);
    }

    #[test]
    fn oversize_truncate_keeps_a_char_boundary_and_adds_the_marker() {
        // 1,048,551 bytes: one over.
        // The cut for the 11-byte marker falls at 1,048,539: inside the 3-byte euro sign.
        let m = format!("{}\u{20ac}{}", "y".repeat(1_048_538), "y".repeat(10));
        assert_eq!(m.len(), 1_048_551);
        let p = plan(Limits::default(), vec![(5, m)]);
        assert_eq!(p.stats.truncated, 1);
        let e = &p.batches[0].events[0];
        assert!(e.message.ends_with(DEFAULT_TRUNCATE_MARKER));
        assert_eq!(e.message.len(), 1_048_538 + DEFAULT_TRUNCATE_MARKER.len());
        assert!(e.message[..1_048_538].bytes().all(|b| b == b'y'));
        assert_valid(&p.batches[0], &Limits::default());
    }

    #[test]
    fn oversize_split_keeps_every_byte_in_order() {
        let l = Limits {
            max_event_size: 100 + EVENT_OVERHEAD,
            oversize: OversizeAction::Split,
            ..Limits::default()
        };
        let m: String = (0..250)
            .map(|i| if i % 7 == 0 { '\u{e9}' } else { 'a' })
            .collect();
        let p = plan(l.clone(), vec![(9, m.clone()), (1, "first".into())]);
        assert_eq!(p.stats.split, 1);
        let evs = &p.batches[0].events;
        assert_eq!(evs[0].message, "first");
        let joined: String = evs[1..].iter().map(|e| e.message.as_str()).collect();
        assert_eq!(joined, m);
        assert_eq!(p.stats.split_pieces, (evs.len() - 1) as u64);
        assert!(evs.iter().all(|e| e.message.len() <= 100));
        assert!(evs[1..].iter().all(|e| e.timestamp == 9 && e.origin == 0));
    }

    #[test]
    fn oversize_drop_is_counted_and_remembered() {
        let l = Limits {
            max_event_size: 10 + EVENT_OVERHEAD,
            oversize: OversizeAction::Drop,
            ..Limits::default()
        };
        let p = plan(l, vec![(1, "short".into()), (2, "x".repeat(11))]);
        assert_eq!(p.stats.dropped_oversize, 1);
        assert_eq!(p.oversize_dropped, vec![1]);
        assert_eq!(p.batches.len(), 1);
        assert_eq!(p.batches[0].events.len(), 1);
    }

    #[test]
    fn a_twenty_five_hour_span_is_cut_below_24_hours() {
        let h = 3_600_000i64;
        let evs: Vec<(i64, String)> = (0..=25).map(|i| (i * h, format!("h{i}"))).collect();
        let p = plan(Limits::default(), evs);
        assert_eq!(p.batches.len(), 2);
        // 0..=23 h (span 23 h), then 24 h and 25 h.
        assert_eq!(p.batches[0].events.len(), 24);
        assert_eq!(p.batches[0].span_ms(), 23 * h);
        assert_eq!(p.batches[1].events[0].timestamp, 24 * h);
        // Exactly 24 h apart is not allowed in one batch; 24 h - 1 ms is.
        let p = plan(
            Limits::default(),
            vec![(0, "a".into()), (24 * h, "b".into())],
        );
        assert_eq!(p.batches.len(), 2);
        let p = plan(
            Limits::default(),
            vec![(0, "a".into()), (24 * h - 1, "b".into())],
        );
        assert_eq!(p.batches.len(), 1);
    }

    #[test]
    fn unsorted_input_is_sorted_stably() {
        let p = plan(
            Limits::default(),
            vec![ev(30, "c"), ev(10, "a1"), ev(20, "b"), ev(10, "a2")],
        );
        let m: Vec<&str> = p.batches[0]
            .events
            .iter()
            .map(|e| e.message.as_str())
            .collect();
        assert_eq!(m, vec!["a1", "a2", "b", "c"]);
    }

    #[test]
    fn streams_are_batched_separately_in_first_seen_order() {
        let mut b = Batcher::new(Limits::default());
        b.push("g1", "s", 3, "a".into(), 0);
        b.push("g2", "s", 1, "b".into(), 1);
        b.push("g1", "t", 2, "c".into(), 2);
        b.push("g1", "s", 0, "d".into(), 3);
        let p = b.finish();
        let keys: Vec<(String, String, usize)> = p
            .batches
            .iter()
            .map(|b| {
                (
                    b.key.group.to_string(),
                    b.key.stream.to_string(),
                    b.events.len(),
                )
            })
            .collect();
        assert_eq!(
            keys,
            vec![
                ("g1".into(), "s".into(), 2),
                ("g2".into(), "s".into(), 1),
                ("g1".into(), "t".into(), 1)
            ]
        );
        assert_eq!(p.batches[0].events[0].message, "d");
    }

    #[test]
    fn invalid_utf8_is_replaced_and_counted() {
        let mut b = Batcher::new(Limits::default());
        b.push_bytes("g", "s", 1, b"ok \xff\xfe and \xe2\x82", 0);
        b.push_bytes("g", "s", 2, "caf\u{e9} \u{1F600}".as_bytes(), 1);
        let p = b.finish();
        assert_eq!(p.stats.invalid_utf8_events, 1);
        assert_eq!(p.stats.invalid_utf8_sequences, 3);
        assert_eq!(
            p.batches[0].events[0].message,
            "ok \u{FFFD}\u{FFFD} and \u{FFFD}"
        );
        assert_eq!(p.batches[0].events[1].message, "caf\u{e9} \u{1F600}");
        assert_eq!(p.batches[0].events[1].size(), 10 + 26);
    }

    #[test]
    fn batching_is_deterministic() {
        let evs: Vec<(i64, String)> = (0..5000)
            .map(|i| ((i * 7919) % 1000, "m".repeat((i % 300) as usize)))
            .collect();
        let a = plan(Limits::default(), evs.clone());
        let b = plan(Limits::default(), evs);
        assert_eq!(a.batches.len(), b.batches.len());
        for (x, y) in a.batches.iter().zip(&b.batches) {
            assert_eq!(x.events, y.events);
        }
    }

    #[test]
    fn rejected_info_follows_aws_index_semantics() {
        let info = RejectedInfo {
            too_old_end: Some(2),
            too_new_start: Some(8),
            expired_end: Some(3),
        };
        let r = info.rejected(10);
        assert_eq!(
            r,
            vec![
                (0, RejectReason::TooOld),
                (1, RejectReason::TooOld),
                (2, RejectReason::Expired),
                (8, RejectReason::TooNew),
                (9, RejectReason::TooNew),
            ]
        );
        assert!(RejectedInfo::default().rejected(5).is_empty());
        // Out-of-range indices are clamped.
        let wild = RejectedInfo {
            too_old_end: Some(99),
            too_new_start: Some(-1),
            expired_end: None,
        };
        assert_eq!(wild.rejected(3).len(), 3);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn every_batch_is_valid_and_nothing_is_lost(
                evs in proptest::collection::vec((0i64..200_000_000, 0usize..300_000), 0..120),
                max_events in 1usize..50,
            ) {
                let l = Limits { max_events, ..Limits::default() };
                let input: Vec<(i64, String)> =
                    evs.iter().map(|(t, n)| (*t, "q".repeat(*n))).collect();
                let p = plan(l.clone(), input.clone());
                let mut seen = 0;
                for b in &p.batches {
                    assert_valid(b, &l);
                    prop_assert!(b.events.len() <= max_events);
                    seen += b.events.len();
                }
                prop_assert_eq!(seen, input.len());
                // Concatenated batches are globally sorted (one stream).
                let ts: Vec<i64> = p.batches.iter().flat_map(|b| b.events.iter().map(|e| e.timestamp)).collect();
                prop_assert!(ts.windows(2).all(|w| w[0] <= w[1]));
            }
        }
    }
}
