//! `@type concat` (fluent-plugin-concat): joins records that carry pieces of one line.
//!
//! Modes (exactly one):
//! * `use_partial_metadata true`: Docker's split lines (Docker >= 19.03 puts `partial_message`,
//!   `partial_id`, `partial_ordinal`, `partial_last` on every piece, as strings). Pieces are
//!   grouped by tag + `partial_id` (+ the value of `stream_identity_key`), ordered by
//!   `partial_ordinal`, and joined when the piece with `partial_last "true"` arrives; the joined
//!   record drops the `partial_*` fields unless `keep_partial_metadata`.
//!   `partial_metadata_format docker-journald` / `docker-journald-lowercase` use the journald
//!   driver's field names.
//! * `multiline_start_regexp` / `multiline_end_regexp` (+ `continuous_line_regexp`): stack
//!   traces written as separate lines, grouped by tag (+ `stream_identity_key`).
//! * `n_lines N`: every N records.
//!
//! ```text
//! filter(stream) --piece--> groups[tag, identity, partial_id] --complete--> joined record,
//!        |                       |  caps: max_line_size (truncate|drop),      in place of the
//!        |                       |        max_total_size, max_pending_groups  last piece
//!        |                       '--evicted (other tag) --> queue --.
//!   background task (Tasks): every second, groups idle >= flush_interval -> queue (timeout);
//!   at shutdown every group -> queue; the queue is emitted into timeout_label or this label
//!   (from the top; this concat passes those records through).
//! ```
//!
//! Nagare additions and differences (see `docs/plugins/concat.md`):
//! * **Memory caps.** `max_line_size` (16m): a joined line larger than this is truncated to it
//!   (`max_line_action truncate`, counted `line_truncated`) or dropped whole (`drop`, counted
//!   `line_dropped`); pieces beyond the cap are never kept. `max_total_size` (64m) bounds the
//!   bytes held over all pending groups plus flushes waiting to be emitted, and
//!   `max_pending_groups` (10,000) the number of groups: the oldest groups are flushed early,
//!   with what they have (`evicted_total_size`, `evicted_pending_groups`). [`ConcatFilter::held_bytes`]
//!   and the gauge `nagare_concat_held_bytes` show the current figure.
//! * **Timeout flushes go to `timeout_label`, else back into this label** (counted
//!   `timeout_flush`); Fluentd sends them to `@ERROR` when there is no `timeout_label`, where
//!   a config without `<label @ERROR>` loses them. The flushed record has the same shape as a
//!   joined one (partial fields removed unless `keep_partial_metadata`), and its time is the
//!   flush time unless `use_first_timestamp`, as in Fluentd.
//! * Pieces are acked to the client when they are taken into a group, as in Fluentd: a crash
//!   loses the pieces of lines not yet complete.
//!
//! Not supported (a clear error at load): `partial_key`/`partial_value` (Docker < 19.03),
//! `use_partial_cri_logtag`.

use crate::plugin::{ErrorEvent, Filter, Tasks};
use crate::router::LabelHandle;
use crate::BuildCtx;
use bytes::Bytes;
use nagare_config::{ConfigError, Section};
use nagare_core::metrics::{Gauge, ReasonCounters};
use nagare_core::ratelimit::LogLimiter;
use nagare_core::shutdown::Shutdown;
use nagare_core::{Event, EventStream, EventTime, Record, Tag, Value};
use regex::Regex;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// `flush_interval` default (fluent-plugin-concat: 60 s).
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(60);
/// Where to cut `p` to keep at most `n` bytes: `n`, or earlier when `n` falls inside a
/// well-formed UTF-8 character (back to its first byte), so a truncated line of text stays
/// text. Bytes that are not UTF-8 there (binary, already invalid) are cut at `n`. A character
/// that Docker itself split across two pieces is checked as far as this piece holds it.
fn utf8_cut(p: &[u8], n: usize) -> usize {
    if n >= p.len() || p[n] & 0xC0 != 0x80 {
        return n; // at the end, or at the start of a character (or of non-UTF-8 bytes)
    }
    // The lead byte: at most 3 continuation bytes back.
    let Some(start) = (n.saturating_sub(3)..n)
        .rev()
        .find(|&i| p[i] & 0xC0 != 0x80)
    else {
        return n;
    };
    let width = match p[start] {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return n,
    };
    if start + width <= n {
        return n; // the character ends before the cut: `p[n]` is a stray continuation byte
    }
    let end = (start + width).min(p.len());
    match std::str::from_utf8(&p[start..end]) {
        Ok(_) => start,
        // The piece ends inside the character, the bytes so far are a valid beginning.
        Err(e) if e.valid_up_to() == 0 && e.error_len().is_none() => start,
        Err(_) => n,
    }
}

/// `max_line_size` default.
pub const DEFAULT_MAX_LINE_SIZE: u64 = 16 << 20;
/// `max_total_size` default.
pub const DEFAULT_MAX_TOTAL_SIZE: u64 = 64 << 20;
/// `max_pending_groups` default.
pub const DEFAULT_MAX_PENDING_GROUPS: usize = 10_000;

tokio::task_local! {
    /// Set while a concat instance emits its own flushes: that instance passes them through.
    static BYPASS: usize;
}

static INSTANCES: AtomicUsize = AtomicUsize::new(1);

#[derive(Debug, Clone)]
enum Mode {
    Partial {
        message: Bytes,
        id: Bytes,
        ordinal: Bytes,
        last: Bytes,
        /// The field whose presence marks a piece (journald omits `*_PARTIAL_MESSAGE` on the
        /// last piece, so its id field is the indicator there).
        indicator: Bytes,
    },
    Regexp {
        start: Option<Regex>,
        end: Option<Regex>,
        continuous: Option<Regex>,
    },
    Lines(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineAction {
    Truncate,
    Drop,
}

/// The parsed configuration.
#[derive(Debug, Clone)]
struct Config {
    key: Bytes,
    separator: Bytes,
    mode: Mode,
    stream_identity_key: Option<Bytes>,
    flush_interval: Duration,
    timeout_label: Option<String>,
    use_first_timestamp: bool,
    keep_partial_metadata: bool,
    max_line_size: usize,
    max_line_action: LineAction,
    max_total_size: usize,
    max_pending_groups: usize,
}

/// One line being put together.
struct Group {
    tag: Tag,
    seq: u64,
    first_time: EventTime,
    /// The first piece's record (copied, so it does not pin the frame it came in).
    base: Record,
    /// (ordinal, text), sorted by ordinal (arrival order among equals).
    pieces: Vec<(u64, Bytes)>,
    /// Text bytes held, separators included.
    text_bytes: usize,
    /// Everything this group accounts for (text + base record).
    held: usize,
    last_seen: Instant,
    /// Pieces with an ordinal above this were cut by `max_line_size` (truncate).
    cut: Option<u64>,
    truncated: bool,
    /// `max_line_action drop` fired: swallow the rest of this line.
    dropping: bool,
    /// Pieces taken (for `n_lines` and arrival ordinals).
    count: u64,
}

/// A flush waiting for the background task.
struct Queued {
    stream: EventStream,
    bytes: usize,
    to_timeout_label: bool,
}

#[derive(Default)]
struct State {
    groups: HashMap<Vec<u8>, Group>,
    /// seq -> group key, oldest first (for eviction).
    order: BTreeMap<u64, Vec<u8>>,
    seq: u64,
    pending_bytes: usize,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
}

impl State {
    fn held(&self) -> usize {
        self.pending_bytes + self.queued_bytes
    }
    fn remove(&mut self, key: &[u8]) -> Option<Group> {
        let g = self.groups.remove(key)?;
        self.order.remove(&g.seq);
        self.pending_bytes -= g.held;
        Some(g)
    }
}

/// The filter; see the module docs.
pub struct ConcatFilter {
    id: String,
    instance: usize,
    cfg: Config,
    state: Mutex<State>,
    counts: ReasonCounters,
    held_gauge: Gauge,
    groups_gauge: Gauge,
    notify: tokio::sync::Notify,
    own_label: Arc<LabelHandle>,
    timeout_label: Option<Arc<LabelHandle>>,
    limiter: LogLimiter,
}

fn partial_fields(format: &str) -> Mode {
    let names: [&str; 4] = match format {
        "docker-journald" => [
            "CONTAINER_PARTIAL_MESSAGE",
            "CONTAINER_PARTIAL_ID",
            "CONTAINER_PARTIAL_ORDINAL",
            "CONTAINER_PARTIAL_LAST",
        ],
        "docker-journald-lowercase" => [
            "container_partial_message",
            "container_partial_id",
            "container_partial_ordinal",
            "container_partial_last",
        ],
        _ => [
            "partial_message",
            "partial_id",
            "partial_ordinal",
            "partial_last",
        ],
    };
    let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    let indicator = if format == "docker-fluentd" {
        names[0]
    } else {
        names[1]
    };
    Mode::Partial {
        message: b(names[0]),
        id: b(names[1]),
        ordinal: b(names[2]),
        last: b(names[3]),
        indicator: b(indicator),
    }
}

fn regex_param(
    sec: &Section,
    key: &str,
    value: Option<String>,
) -> Result<Option<Regex>, ConfigError> {
    let Some(v) = value else { return Ok(None) };
    let span = sec
        .param(key)
        .map(|p| p.span.clone())
        .unwrap_or(sec.span.clone());
    crate::parse::regexp::ruby_regex(&v)
        .map(Some)
        .map_err(|e| ConfigError::new(span, format!("{key}: {e}")))
}

fn parse(sec: &Section, ctx: &mut BuildCtx) -> Result<Config, ConfigError> {
    let mut p = sec.params();
    p.ignore("@type");
    p.ignore("@id");
    p.ignore("@log_level");
    let key = p.required_str("key")?;
    let separator_given = sec.param("separator").is_some();
    let separator = p.str_or("separator", "\n")?;
    let n_lines_given = sec.param("n_lines").is_some();
    let n_lines = p.int("n_lines", 0usize)?;
    let n_lines: Option<usize> = n_lines_given.then_some(n_lines);
    let start = p.str("multiline_start_regexp")?;
    let end = p.str("multiline_end_regexp")?;
    let cont = p.str("continuous_line_regexp")?;
    let stream_identity_key = p.str("stream_identity_key")?;
    let flush_interval = p.duration("flush_interval", DEFAULT_FLUSH_INTERVAL)?;
    let timeout_label = p.str("timeout_label")?;
    let use_first_timestamp = p.bool("use_first_timestamp", false)?;
    let use_partial_metadata = p.bool("use_partial_metadata", false)?;
    let format = p.enumeration(
        "partial_metadata_format",
        &[
            "docker-fluentd",
            "docker-journald",
            "docker-journald-lowercase",
        ],
        "docker-fluentd",
    )?;
    let keep_partial_metadata = p.bool("keep_partial_metadata", false)?;
    for unsupported in ["partial_key", "partial_value", "keep_partial_key"] {
        if let Some(x) = sec.param(unsupported) {
            return Err(ConfigError::new(
                x.span.clone(),
                format!("concat: '{unsupported}' (the Docker < 19.03 partial mode) is not supported; Docker >= 19.03 sends partial metadata: use 'use_partial_metadata true'"),
            ));
        }
    }
    for unsupported in [
        "use_partial_cri_logtag",
        "partial_cri_logtag_key",
        "partial_cri_stream_key",
    ] {
        if let Some(x) = sec.param(unsupported) {
            return Err(ConfigError::new(
                x.span.clone(),
                format!("concat: '{unsupported}' (CRI log tags) is not supported yet"),
            ));
        }
    }
    let max_line_size = p.size("max_line_size", DEFAULT_MAX_LINE_SIZE)? as usize;
    let max_line_action = match p
        .enumeration("max_line_action", &["truncate", "drop"], "truncate")?
        .as_str()
    {
        "drop" => LineAction::Drop,
        _ => LineAction::Truncate,
    };
    let max_total_size = p.size("max_total_size", DEFAULT_MAX_TOTAL_SIZE)? as usize;
    let max_pending_groups: usize = p.int("max_pending_groups", DEFAULT_MAX_PENDING_GROUPS)?;
    p.finish()?;

    let err = |msg: &str| Err(ConfigError::new(sec.span.clone(), format!("concat: {msg}")));
    let regexp_mode = start.is_some() || end.is_some();
    let modes = [n_lines.is_some(), regexp_mode, use_partial_metadata]
        .iter()
        .filter(|m| **m)
        .count();
    if modes == 0 {
        return err("one of n_lines, multiline_start_regexp, multiline_end_regexp or use_partial_metadata is required");
    }
    if modes > 1 {
        return err("n_lines, multiline_start_regexp/multiline_end_regexp and use_partial_metadata are exclusive");
    }
    if cont.is_some() && !regexp_mode {
        return err("continuous_line_regexp needs multiline_start_regexp or multiline_end_regexp");
    }
    if max_line_size == 0 || max_total_size == 0 || max_pending_groups == 0 {
        return err("max_line_size, max_total_size and max_pending_groups must be above 0");
    }
    if max_line_size > max_total_size {
        return err("max_line_size must not exceed max_total_size");
    }
    let mode = if let Some(n) = n_lines {
        if n == 0 {
            return err("n_lines must be at least 1");
        }
        Mode::Lines(n)
    } else if use_partial_metadata {
        partial_fields(&format)
    } else {
        Mode::Regexp {
            start: regex_param(sec, "multiline_start_regexp", start)?,
            end: regex_param(sec, "multiline_end_regexp", end)?,
            continuous: regex_param(sec, "continuous_line_regexp", cont)?,
        }
    };
    if use_partial_metadata && !separator_given {
        ctx.warnings.push(format!(
            "{} ({}): concat with use_partial_metadata joins pieces with the default separator \"\\n\" (as Fluentd does); Docker splits lines mid-text, so set `separator \"\"` to rejoin them byte for byte",
            sec.describe(),
            sec.span
        ));
    }
    Ok(Config {
        key: Bytes::from(key.into_bytes()),
        separator: Bytes::from(separator.into_bytes()),
        mode,
        stream_identity_key: stream_identity_key.map(|s| Bytes::from(s.into_bytes())),
        flush_interval,
        timeout_label,
        use_first_timestamp,
        keep_partial_metadata,
        max_line_size,
        max_line_action,
        max_total_size,
        max_pending_groups,
    })
}

/// Builds the filter and its background task.
pub fn build(
    sec: &Section,
    ctx: &mut BuildCtx,
    tasks: &mut Tasks,
) -> Result<Arc<dyn Filter>, ConfigError> {
    Ok(build_concat(sec, ctx, tasks)?)
}

/// [`build`], returning the concrete type (tests and tools read [`ConcatFilter::held_bytes`]).
pub fn build_concat(
    sec: &Section,
    ctx: &mut BuildCtx,
    tasks: &mut Tasks,
) -> Result<Arc<ConcatFilter>, ConfigError> {
    let id = super::plugin_id(sec, ctx, "concat");
    let cfg = parse(sec, ctx)?;
    let timeout_label = match &cfg.timeout_label {
        Some(name) => Some(ctx.labels.get(name).cloned().ok_or_else(|| {
            let span = sec
                .param("timeout_label")
                .map(|p| p.span.clone())
                .unwrap_or(sec.span.clone());
            ConfigError::new(
                span,
                format!("unknown timeout_label '{name}' (no <label {name}> section)"),
            )
        })?),
        None => None,
    };
    let f = Arc::new(ConcatFilter {
        counts: ReasonCounters::new(
            "nagare_concat_events_total",
            "concat: lines joined, flushed early or cut, by reason",
            &[("plugin_id", &id)],
        ),
        held_gauge: nagare_core::metrics::gauge(
            "nagare_concat_held_bytes",
            "Bytes concat holds: pending pieces plus flushes not yet emitted",
            &[("plugin_id", &id)],
        ),
        groups_gauge: nagare_core::metrics::gauge(
            "nagare_concat_pending_groups",
            "Lines concat is putting together",
            &[("plugin_id", &id)],
        ),
        instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
        id,
        cfg,
        state: Mutex::new(State::default()),
        notify: tokio::sync::Notify::new(),
        own_label: ctx.current_label.clone(),
        timeout_label,
        limiter: LogLimiter::default(),
    });
    let bg = f.clone();
    tasks.add_filter(move |sd| bg.run(sd));
    Ok(f)
}

fn text_of(record: &Record, key: &[u8]) -> Option<Bytes> {
    if let Some(m) = record.decoded() {
        return m.get(key).map(|v| match v {
            Value::Str(b) | Value::Bin(b) => b.clone(),
            other => Bytes::from(other.to_text().into_owned().into_bytes()),
        });
    }
    record.get_str(key).map(Bytes::copy_from_slice).or_else(|| {
        record
            .get(key)
            .map(|v| Bytes::from(v.to_text().into_owned().into_bytes()))
    })
}

/// Whether the record has a top-level `key` (one scan of a raw record, no decode).
fn has_key(record: &Record, key: &[u8]) -> bool {
    if let Some(m) = record.decoded() {
        return m.contains_key(key);
    }
    crate::accessor::raw_has_key(record.bytes(), key)
}

impl ConcatFilter {
    /// Bytes held right now: pieces of pending lines plus flushes waiting to be emitted.
    pub fn held_bytes(&self) -> usize {
        self.lock().held()
    }

    /// Lines being put together right now.
    pub fn pending_groups(&self) -> usize {
        self.lock().groups.len()
    }

    /// A counter of this instance (`joined`, `timeout_flush`, `line_truncated`, ...).
    pub fn count(&self, reason: &str) -> u64 {
        self.counts.get(reason).get()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, st: &State) {
        self.held_gauge.set(st.held() as i64);
        self.groups_gauge.set(st.groups.len() as i64);
    }

    fn note(&self, reason: &'static str, n: u64, tag: &Tag) {
        if n == 0 {
            return;
        }
        self.counts.add(reason, n);
        if matches!(
            reason,
            "joined" | "timeout_flush" | "shutdown_flush" | "pieces_dropped"
        ) {
            return;
        }
        if let Some(suppressed) = self.limiter.check(reason) {
            tracing::warn!(plugin_id = %self.id, %tag, reason, count = n, suppressed, "concat: line flushed early, cut or dropped");
        }
    }

    /// Joins a group's pieces into a record.
    fn finish(&self, g: Group, time: EventTime) -> Event {
        let mut text = Vec::with_capacity(g.text_bytes);
        for (i, (_, p)) in g.pieces.iter().enumerate() {
            if i > 0 {
                text.extend_from_slice(&self.cfg.separator);
            }
            text.extend_from_slice(p);
        }
        let mut record = g.base;
        let m = record.map_mut();
        m.insert(self.cfg.key.clone(), Value::Str(Bytes::from(text)));
        if let Mode::Partial {
            message,
            id,
            ordinal,
            last,
            ..
        } = &self.cfg.mode
        {
            if !self.cfg.keep_partial_metadata {
                for f in [message, id, ordinal, last] {
                    m.remove(f);
                }
            }
        }
        let time = if self.cfg.use_first_timestamp {
            g.first_time
        } else {
            time
        };
        Event { time, record }
    }

    /// Completes a group: the joined event, or `None` for a dropped line.
    fn complete(&self, g: Group, time: EventTime, reason: &'static str) -> Option<Event> {
        let tag = g.tag.clone();
        if g.dropping {
            return None;
        }
        if g.truncated {
            self.note("line_truncated", 1, &tag);
        }
        self.note(reason, 1, &tag);
        Some(self.finish(g, time))
    }

    fn new_group(&self, st: &mut State, key: Vec<u8>, tag: &Tag, ev: &Event, now: Instant) {
        st.seq += 1;
        let base = Record::from_msgpack_unchecked(Bytes::copy_from_slice(ev.record.as_bytes()));
        let held = base.encoded_len();
        st.pending_bytes += held;
        st.order.insert(st.seq, key.clone());
        st.groups.insert(
            key,
            Group {
                tag: tag.clone(),
                seq: st.seq,
                first_time: ev.time,
                base,
                pieces: Vec::new(),
                text_bytes: 0,
                held,
                last_seen: now,
                cut: None,
                truncated: false,
                dropping: false,
                count: 0,
            },
        );
    }

    /// Adds one piece to group `key`, enforcing `max_line_size`.
    fn add_piece(
        &self,
        st: &mut State,
        key: &[u8],
        ordinal: Option<u64>,
        text: Bytes,
        now: Instant,
    ) {
        let sep = self.cfg.separator.len();
        let max = self.cfg.max_line_size;
        let action = self.cfg.max_line_action;
        let Some(g) = st.groups.get_mut(key) else {
            return;
        };
        g.count += 1;
        g.last_seen = now;
        let ord = ordinal.unwrap_or(g.count);
        let before = g.held;
        let mut newly_dropped = false;
        let mut pieces_dropped = 0u64;
        if g.dropping || g.cut.is_some_and(|c| ord > c) {
            pieces_dropped += 1;
        } else {
            let at = g.pieces.partition_point(|(o, _)| *o <= ord);
            let add = text.len() + if g.pieces.is_empty() { 0 } else { sep };
            g.pieces.insert(at, (ord, text));
            g.text_bytes += add;
            while g.text_bytes > max {
                if action == LineAction::Drop {
                    g.pieces.clear();
                    g.text_bytes = 0;
                    g.dropping = true;
                    newly_dropped = true;
                    break;
                }
                let Some((o, p)) = g.pieces.pop() else { break };
                g.text_bytes -= p.len() + if g.pieces.is_empty() { 0 } else { sep };
                g.cut = Some(g.cut.map_or(o, |c| c.min(o)));
                g.truncated = true;
                let lead = if g.pieces.is_empty() { 0 } else { sep };
                let room = utf8_cut(&p, max.saturating_sub(g.text_bytes + lead));
                if room > 0 && g.text_bytes + lead < max {
                    g.pieces.push((o, p.slice(..room.min(p.len()))));
                    g.text_bytes += lead + room.min(p.len());
                }
            }
        }
        g.held = g.text_bytes + g.base.encoded_len();
        let after = g.held;
        let tag = g.tag.clone();
        st.pending_bytes = st.pending_bytes + after - before;
        if newly_dropped {
            self.note("line_dropped", 1, &tag);
        }
        self.note("pieces_dropped", pieces_dropped, &tag);
    }

    /// Flushes the oldest groups while over `max_total_size` / `max_pending_groups`: into
    /// `out` when they have the stream's tag, else onto the queue.
    fn enforce_caps(&self, st: &mut State, tag: &Tag, out: &mut Vec<Event>, now_time: EventTime) {
        loop {
            let over_groups = st.groups.len() > self.cfg.max_pending_groups;
            let over_bytes = st.held() > self.cfg.max_total_size;
            if !over_groups && !over_bytes {
                break;
            }
            let Some((_, key)) = st.order.iter().next().map(|(s, k)| (*s, k.clone())) else {
                break;
            };
            let Some(g) = st.remove(&key) else { break };
            let reason = if over_groups {
                "evicted_pending_groups"
            } else {
                "evicted_total_size"
            };
            let gtag = g.tag.clone();
            if let Some(ev) = self.complete(g, now_time, reason) {
                if gtag == *tag {
                    out.push(ev);
                } else {
                    self.enqueue(st, EventStream::new(gtag, vec![ev]), false);
                }
            }
        }
        // Still over with no pending group left: the queue itself is too big (outputs are not
        // taking flushes). Drop the oldest queued flushes, counted.
        while st.held() > self.cfg.max_total_size {
            let Some(q) = st.queue.pop_front() else { break };
            st.queued_bytes -= q.bytes;
            self.note("overflow_dropped", q.stream.len() as u64, &q.stream.tag);
        }
    }

    fn enqueue(&self, st: &mut State, stream: EventStream, to_timeout_label: bool) {
        let bytes = stream.record_bytes();
        st.queued_bytes += bytes;
        st.queue.push_back(Queued {
            stream,
            bytes,
            to_timeout_label,
        });
        self.notify.notify_one();
    }

    fn group_key(&self, tag: &Tag, record: &Record, partial_id: Option<&[u8]>) -> Vec<u8> {
        let mut k = Vec::with_capacity(tag.as_bytes().len() + 80);
        k.extend_from_slice(tag.as_bytes());
        k.push(0);
        if let Some(sk) = &self.cfg.stream_identity_key {
            if let Some(v) = text_of(record, sk) {
                k.extend_from_slice(&v);
            }
        } else if partial_id.is_none() {
            k.extend_from_slice(b"default");
        }
        if let Some(pid) = partial_id {
            k.push(0);
            k.extend_from_slice(pid);
        }
        k
    }

    fn process_partial(
        &self,
        st: &mut State,
        tag: &Tag,
        ev: Event,
        out: &mut Vec<Event>,
        now: Instant,
    ) {
        let Mode::Partial {
            id, ordinal, last, ..
        } = &self.cfg.mode
        else {
            return;
        };
        let Some(text) = text_of(&ev.record, &self.cfg.key) else {
            out.push(ev);
            return;
        };
        let pid = text_of(&ev.record, id).unwrap_or_default();
        let ord = text_of(&ev.record, ordinal)
            .and_then(|o| std::str::from_utf8(&o).ok()?.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let is_last = text_of(&ev.record, last).is_some_and(|v| &v[..] == b"true");
        let key = self.group_key(tag, &ev.record, Some(&pid));
        if !st.groups.contains_key(&key) {
            self.new_group(st, key.clone(), tag, &ev, now);
        }
        self.add_piece(st, &key, Some(ord), text, now);
        if is_last {
            if let Some(g) = st.remove(&key) {
                if let Some(joined) = self.complete(g, ev.time, "joined") {
                    out.push(joined);
                }
            }
        }
    }

    fn flush_key(&self, st: &mut State, key: &[u8], time: EventTime, out: &mut Vec<Event>) {
        if let Some(g) = st.remove(key) {
            if let Some(e) = self.complete(g, time, "joined") {
                out.push(e);
            }
        }
    }

    fn process_lines(
        &self,
        st: &mut State,
        tag: &Tag,
        ev: Event,
        out: &mut Vec<Event>,
        now: Instant,
    ) {
        let Some(text) = text_of(&ev.record, &self.cfg.key) else {
            out.push(ev);
            return;
        };
        let key = self.group_key(tag, &ev.record, None);
        let time = ev.time;
        match &self.cfg.mode {
            Mode::Lines(n) => {
                if !st.groups.contains_key(&key) {
                    self.new_group(st, key.clone(), tag, &ev, now);
                }
                self.add_piece(st, &key, None, text, now);
                if st.groups.get(&key).is_some_and(|g| g.count >= *n as u64) {
                    self.flush_key(st, &key, time, out);
                }
            }
            Mode::Regexp {
                start,
                end,
                continuous,
            } => {
                let s = String::from_utf8_lossy(&text);
                let first = start.as_ref().is_some_and(|r| r.is_match(&s));
                let last = end.as_ref().is_some_and(|r| r.is_match(&s));
                let buffered = st.groups.contains_key(&key);
                if first {
                    if buffered {
                        self.flush_key(st, &key, time, out);
                    }
                    self.new_group(st, key.clone(), tag, &ev, now);
                    self.add_piece(st, &key, None, text, now);
                    if last {
                        self.flush_key(st, &key, time, out);
                    }
                } else if last {
                    if !buffered {
                        self.new_group(st, key.clone(), tag, &ev, now);
                    }
                    self.add_piece(st, &key, None, text, now);
                    self.flush_key(st, &key, time, out);
                } else if !buffered {
                    if start.is_none() {
                        self.new_group(st, key.clone(), tag, &ev, now);
                        self.add_piece(st, &key, None, text, now);
                    } else {
                        out.push(ev);
                    }
                } else if continuous.as_ref().is_none_or(|r| r.is_match(&s)) {
                    self.add_piece(st, &key, None, text, now);
                } else {
                    self.flush_key(st, &key, time, out);
                    out.push(ev);
                }
            }
            Mode::Partial { .. } => out.push(ev),
        }
    }

    /// Moves groups idle for `flush_interval` (or every group, at shutdown) onto the queue.
    fn collect_timeouts(&self, all: bool) {
        let now = Instant::now();
        let mut st = self.lock();
        let due: Vec<Vec<u8>> = st
            .groups
            .iter()
            .filter(|(_, g)| {
                all || (!self.cfg.flush_interval.is_zero()
                    && now.duration_since(g.last_seen) >= self.cfg.flush_interval)
            })
            .map(|(k, _)| k.clone())
            .collect();
        let reason = if all {
            "shutdown_flush"
        } else {
            "timeout_flush"
        };
        let mut by_seq: Vec<Group> = due.iter().filter_map(|k| st.remove(k)).collect();
        by_seq.sort_by_key(|g| g.seq);
        for g in by_seq {
            let tag = g.tag.clone();
            let time = if all { g.first_time } else { EventTime::now() };
            if let Some(ev) = self.complete(g, time, reason) {
                self.enqueue(&mut st, EventStream::new(tag, vec![ev]), true);
            }
        }
        self.publish(&st);
    }

    /// Emits queued flushes; a failed emit is put back and retried on the next tick.
    async fn drain_queue(&self) {
        loop {
            let Some(q) = self.lock().queue.pop_front() else {
                break;
            };
            let label = if q.to_timeout_label {
                self.timeout_label.as_ref().unwrap_or(&self.own_label)
            } else {
                &self.own_label
            };
            let Some(router) = label.get() else {
                self.lock().queue.push_front(q);
                break;
            };
            let (tag, n) = (q.stream.tag.clone(), q.stream.len());
            let res = BYPASS
                .scope(
                    self.instance,
                    router.emit_stream_from(q.stream.clone(), 0, false),
                )
                .await;
            let mut st = self.lock();
            match res {
                Ok(_) => {
                    st.queued_bytes -= q.bytes;
                    self.publish(&st);
                }
                Err(e) => {
                    st.queue.push_front(q);
                    drop(st);
                    self.counts.inc("flush_failed");
                    if let Some(suppressed) = self.limiter.check("flush_failed") {
                        tracing::warn!(plugin_id = %self.id, %tag, events = n, reason = e.reason, suppressed, "concat: emitting a flushed line failed; retrying");
                    }
                    break;
                }
            }
        }
    }

    async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        let tick = if self.cfg.flush_interval.is_zero() {
            Duration::from_secs(1)
        } else {
            self.cfg.flush_interval.min(Duration::from_secs(1))
        };
        let mut iv = tokio::time::interval(tick);
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = iv.tick() => self.collect_timeouts(false),
                _ = self.notify.notified() => {}
                _ = shutdown.wait() => {
                    self.collect_timeouts(true);
                    self.drain_queue().await;
                    let left = self.lock().queue.len();
                    if left > 0 {
                        tracing::error!(plugin_id = %self.id, lines = left, "concat: flushes not emitted at shutdown are lost");
                        self.counts.add("lost_at_shutdown", left as u64);
                    }
                    return;
                }
            }
            self.drain_queue().await;
        }
    }
}

impl Filter for ConcatFilter {
    fn filter(&self, stream: &mut EventStream, _errors: &mut Vec<ErrorEvent>) {
        if BYPASS.try_with(|b| *b == self.instance).unwrap_or(false) {
            return;
        }
        if let Mode::Partial { indicator, .. } = &self.cfg.mode {
            // Fast path: most streams carry no piece at all.
            if !stream.events.iter().any(|e| has_key(&e.record, indicator)) {
                return;
            }
        }
        let now = Instant::now();
        let tag = stream.tag.clone();
        let events = std::mem::take(&mut stream.events);
        let mut out = Vec::with_capacity(events.len());
        let mut st = self.lock();
        for ev in events {
            match &self.cfg.mode {
                Mode::Partial { indicator, .. } => {
                    if !has_key(&ev.record, indicator) {
                        out.push(ev);
                        continue;
                    }
                    let time = ev.time;
                    self.process_partial(&mut st, &tag, ev, &mut out, now);
                    self.enforce_caps(&mut st, &tag, &mut out, time);
                }
                _ => {
                    let time = ev.time;
                    self.process_lines(&mut st, &tag, ev, &mut out, now);
                    self.enforce_caps(&mut st, &tag, &mut out, time);
                }
            }
        }
        self.publish(&st);
        stream.events = out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::Pattern;
    use crate::plugin::OutputPlugin;
    use crate::router::Router;
    use nagare_core::ack::Committed;
    use nagare_core::EmitError;
    use std::path::Path;

    fn section(text: &str) -> Section {
        nagare_config::parse_str(text, Path::new("t.conf"))
            .unwrap()
            .children[0]
            .clone()
    }

    #[derive(Default)]
    struct Keep(Mutex<Vec<EventStream>>);
    #[async_trait::async_trait]
    impl OutputPlugin for Keep {
        async fn emit(&self, s: EventStream) -> Result<Committed, EmitError> {
            self.0.lock().unwrap().push(s);
            Ok(Committed::new())
        }
    }
    impl Keep {
        fn events(&self) -> Vec<(Tag, Event)> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .flat_map(|s| s.events.iter().map(|e| (s.tag.clone(), e.clone())))
                .collect()
        }
    }

    /// A label with the concat filter and a keeping `<match **>`; returns the filter, the
    /// router, the output and the tasks (not started).
    fn setup(params: &str) -> (Arc<ConcatFilter>, Arc<Router>, Arc<Keep>, Tasks) {
        let handle = LabelHandle::new("ROOT");
        let mut ctx = BuildCtx {
            current_label: handle.clone(),
            ..BuildCtx::default()
        };
        let mut tasks = Tasks::default();
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let text =
            format!("<filter **>\n  @type concat\n  @id concat_unit_{n}\n{params}</filter>\n");
        let f = build_concat(&section(&text), &mut ctx, &mut tasks).unwrap();
        let keep = Arc::new(Keep::default());
        let mut r = Router::new("ROOT");
        r.filters.push((Pattern::new("**").unwrap(), f.clone()));
        r.matches.push((Pattern::new("**").unwrap(), keep.clone()));
        let r = Arc::new(r);
        handle.bind(&r);
        (f, r, keep, tasks)
    }

    const DOCKER: &str = "  key log\n  use_partial_metadata true\n  separator \"\"\n";

    fn piece(id: &str, ord: u32, last: bool, text: &[u8]) -> Event {
        Event {
            time: EventTime::from_secs(100),
            record: Record::from_pairs(&[
                (&b"container_id"[..], &b"c1"[..]),
                (b"source", b"stdout"),
                (b"log", text),
                (b"partial_message", b"true"),
                (b"partial_id", id.as_bytes()),
                (b"partial_ordinal", ord.to_string().as_bytes()),
                (b"partial_last", if last { b"true" } else { b"false" }),
            ]),
        }
    }

    fn whole(text: &str) -> Event {
        Event {
            time: EventTime::from_secs(100),
            record: Record::from_pairs(&[("container_id", "c1"), ("log", text)]),
        }
    }

    fn run(f: &ConcatFilter, tag: &str, events: Vec<Event>) -> Vec<Event> {
        let mut s = EventStream::new(tag.into(), events);
        f.filter(&mut s, &mut Vec::new());
        s.events
    }

    fn log_of(e: &Event) -> Vec<u8> {
        e.record.get_str(b"log").unwrap().to_vec()
    }

    #[test]
    fn interleaved_ids_out_of_order_ordinals_and_passthrough() {
        let (f, _r, _k, _t) = setup(DOCKER);
        let out = run(
            &f,
            "docker.a",
            vec![
                piece("A", 2, false, b"a2-"),
                whole("plain"),
                piece("B", 1, false, b"b1-"),
                piece("A", 1, false, b"a1-"),
                piece("B", 2, true, b"b2"),
                piece("A", 3, true, b"a3"),
            ],
        );
        let logs: Vec<Vec<u8>> = out.iter().map(log_of).collect();
        assert_eq!(
            logs,
            [b"plain".to_vec(), b"b1-b2".to_vec(), b"a1-a2-a3".to_vec()]
        );
        // The joined record keeps the other fields and drops the partial metadata.
        let j = &out[1].record;
        assert_eq!(j.get_str(b"container_id"), Some(&b"c1"[..]));
        assert_eq!(j.get_str(b"partial_id"), None);
        assert_eq!(j.get_str(b"partial_last"), None);
        assert_eq!(f.held_bytes(), 0);
        assert_eq!(f.pending_groups(), 0);
        assert_eq!(f.count("joined"), 2);
    }

    #[test]
    fn empty_final_piece_and_same_id_on_two_tags() {
        let (f, _r, _k, _t) = setup(DOCKER);
        let a = vec![0x41u8; 16384];
        let out = run(
            &f,
            "docker.x",
            vec![piece("P", 1, false, &a), piece("P", 2, false, &a)],
        );
        assert!(out.is_empty());
        // The same partial_id under another tag is another line.
        let other = run(&f, "docker.y", vec![piece("P", 1, true, b"y")]);
        assert_eq!(log_of(&other[0]), b"y");
        let out = run(&f, "docker.x", vec![piece("P", 3, true, b"")]);
        assert_eq!(out.len(), 1);
        assert_eq!(log_of(&out[0]).len(), 32768);
        assert!(log_of(&out[0]).iter().all(|&c| c == 0x41));
    }

    #[test]
    fn keep_partial_metadata_and_separator_default() {
        let (f, _r, _k, _t) =
            setup("  key log\n  use_partial_metadata true\n  keep_partial_metadata true\n");
        let out = run(
            &f,
            "t",
            vec![piece("Q", 1, false, b"x"), piece("Q", 2, true, b"y")],
        );
        assert_eq!(log_of(&out[0]), b"x\ny");
        assert_eq!(out[0].record.get_str(b"partial_id"), Some(&b"Q"[..]));
    }

    #[test]
    fn five_megabyte_line_in_16k_pieces_is_rejoined_byte_identical() {
        let (f, _r, _k, _t) = setup(DOCKER);
        let line: Vec<u8> = (0..5 * 1024 * 1024u32)
            .map(|i| b"0123456789abcdefghijklmnopqrstuvwxyz{}\":,"[(i % 41) as usize])
            .collect();
        let chunks: Vec<&[u8]> = line.chunks(16384).collect();
        let n = chunks.len();
        let mut got = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            got.extend(run(
                &f,
                "docker.big",
                vec![piece("BIG", i as u32 + 1, i + 1 == n, c)],
            ));
            if i + 1 < n {
                assert!(f.held_bytes() >= (i + 1) * 16384);
            }
        }
        assert_eq!(got.len(), 1);
        assert_eq!(log_of(&got[0]), line);
        assert_eq!(f.held_bytes(), 0);
    }

    #[test]
    fn truncate_does_not_split_a_utf8_character() {
        // 'é' is 2 bytes: 9 bytes of room hold 4 of them, not 4 and a half.
        let (f, _r, _k, _t) =
            setup("  key log\n  use_partial_metadata true\n  separator \"\"\n  max_line_size 9\n");
        let line = "é".repeat(10);
        let out = run(&f, "t", vec![piece("U", 1, true, line.as_bytes())]);
        assert_eq!(log_of(&out[0]), "é".repeat(4).as_bytes());
        assert_eq!(f.count("line_truncated"), 1);
        // Across pieces: 8 bytes end inside the second '€' (4 + 3 + 1 of 3).
        let (f, _r, _k, _t) =
            setup("  key log\n  use_partial_metadata true\n  separator \"\"\n  max_line_size 8\n");
        let out = run(
            &f,
            "t",
            vec![
                piece("V", 1, false, "éé".as_bytes()),
                piece("V", 2, true, "€€".as_bytes()),
            ],
        );
        assert_eq!(log_of(&out[0]), "éé€".as_bytes());
        // Binary data is cut at the byte limit, as before.
        let (f, _r, _k, _t) =
            setup("  key log\n  use_partial_metadata true\n  separator \"\"\n  max_line_size 3\n");
        let out = run(
            &f,
            "t",
            vec![piece("B", 1, true, &[0x80, 0x80, 0x80, 0x80, 0x80])],
        );
        assert_eq!(log_of(&out[0]), [0x80, 0x80, 0x80]);
    }

    #[test]
    fn utf8_cut_points() {
        let s = "aé€😀".as_bytes(); // 1 + 2 + 3 + 4 bytes
        assert_eq!(utf8_cut(s, 0), 0);
        assert_eq!(utf8_cut(s, 1), 1);
        assert_eq!(utf8_cut(s, 2), 1);
        assert_eq!(utf8_cut(s, 4), 3);
        assert_eq!(utf8_cut(s, 5), 3);
        assert_eq!(utf8_cut(s, 6), 6);
        assert_eq!(utf8_cut(s, 9), 6);
        assert_eq!(utf8_cut(s, 10), 10);
        assert_eq!(utf8_cut(s, 99), 99);
        // A piece that ends inside a character (Docker splits at 16 KiB): still backed off.
        assert_eq!(utf8_cut(&"ab€".as_bytes()[..4], 3), 2);
        // Invalid: a lead byte whose continuation is not one.
        assert_eq!(utf8_cut(&[b'a', 0xE2, 0x82, b'x'], 2), 2);
        // An overlong lead (0xC0) or a stray continuation run: cut at the limit.
        assert_eq!(utf8_cut(&[0xC0, 0x80, 0x80], 1), 1);
        assert_eq!(utf8_cut(&[0x80, 0x80, 0x80, 0x80, 0x80], 3), 3);
    }

    #[test]
    fn max_line_size_truncates_or_drops() {
        let (f, _r, _k, _t) =
            setup("  key log\n  use_partial_metadata true\n  separator \"\"\n  max_line_size 10\n");
        let out = run(
            &f,
            "t",
            vec![
                piece("T", 2, false, b"6789abc"),
                piece("T", 1, false, b"012345"),
                piece("T", 3, false, b"zzzz"),
                piece("T", 4, true, b"zzzz"),
            ],
        );
        assert_eq!(log_of(&out[0]), b"0123456789");
        assert_eq!(f.count("line_truncated"), 1);
        let (f, _r, _k, _t) = setup("  key log\n  use_partial_metadata true\n  separator \"\"\n  max_line_size 10\n  max_line_action drop\n");
        let out = run(
            &f,
            "t",
            vec![
                piece("D", 1, false, b"0123456"),
                piece("D", 2, false, b"0123456"),
                piece("D", 3, true, b"0"),
                whole("after"),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(log_of(&out[0]), b"after");
        assert_eq!(f.count("line_dropped"), 1);
        assert_eq!(f.held_bytes(), 0);
    }

    #[tokio::test]
    async fn flood_of_unterminated_partials_stays_under_the_cap() {
        let cap = 1 << 20;
        let (f, _r, keep, tasks) = setup(&format!(
            "{DOCKER}  max_total_size {cap}\n  max_line_size 256k\n  max_pending_groups 1000\n"
        ));
        let (_trigger, sd) = nagare_core::shutdown::channel();
        for t in tasks.filters {
            tokio::spawn(t(sd.clone()));
        }
        let piece_text = vec![b'x'; 16384];
        let mut max_seen = 0;
        let mut emitted = 0;
        // 4,000 lines that never end, 8 pieces each (512 MiB offered), on two tags.
        for line in 0..4000u32 {
            let tag = if line % 2 == 0 {
                "docker.a"
            } else {
                "docker.b"
            };
            for ord in 1..=8 {
                let out = run(
                    &f,
                    tag,
                    vec![piece(&format!("L{line}"), ord, false, &piece_text)],
                );
                emitted += out.len();
                max_seen = max_seen.max(f.held_bytes());
                // Let the background task emit evicted lines of the other tag.
                tokio::task::yield_now().await;
            }
        }
        tokio::task::yield_now().await;
        emitted += keep.events().len();
        assert!(max_seen <= cap, "held {max_seen} > cap {cap}");
        assert!(emitted > 0);
        let evicted = f.count("evicted_total_size") + f.count("evicted_pending_groups");
        assert!(evicted > 3000, "{evicted}");
        // One endless line: capped by max_line_size.
        for ord in 1..=200 {
            run(
                &f,
                "docker.c",
                vec![piece("ENDLESS", ord, false, &piece_text)],
            );
            assert!(f.held_bytes() <= cap);
            tokio::task::yield_now().await;
        }
        assert!(
            f.count("pieces_dropped") > 0,
            "truncated {} dropped {} evicted {} {}",
            f.count("line_truncated"),
            f.count("pieces_dropped"),
            f.count("evicted_total_size"),
            f.pending_groups()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn never_ending_partials_are_flushed_after_the_timeout_and_counted() {
        let (f, r, keep, tasks) = setup(&format!("{DOCKER}  flush_interval 5s\n"));
        let (trigger, sd) = nagare_core::shutdown::channel();
        let mut handles = Vec::new();
        for t in tasks.filters {
            handles.push(tokio::spawn(t(sd.clone())));
        }
        r.emit_stream_from(
            EventStream::new(
                "docker.t".into(),
                vec![
                    piece("N", 1, false, b"never "),
                    piece("N", 2, false, b"ends"),
                ],
            ),
            0,
            false,
        )
        .await
        .unwrap();
        assert!(keep.events().is_empty());
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(keep.events().is_empty(), "not yet: 3s < 5s");
        tokio::time::sleep(Duration::from_secs(4)).await;
        let got = keep.events();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0.to_string(), "docker.t");
        assert_eq!(log_of(&got[0].1), b"never ends");
        assert_eq!(got[0].1.record.get_str(b"partial_id"), None);
        assert_eq!(f.count("timeout_flush"), 1);
        assert_eq!(f.held_bytes(), 0);
        // At shutdown, pending groups are flushed too.
        r.emit_stream_from(
            EventStream::new("docker.t".into(), vec![piece("S", 1, false, b"half")]),
            0,
            false,
        )
        .await
        .unwrap();
        trigger.fire();
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(keep.events().len(), 2);
        assert_eq!(f.count("shutdown_flush"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_flushes_go_to_the_timeout_label() {
        let (root_h, t_h) = (LabelHandle::new("ROOT"), LabelHandle::new("@TIMEOUT"));
        let mut ctx = BuildCtx {
            current_label: root_h.clone(),
            ..BuildCtx::default()
        };
        ctx.labels.insert("@TIMEOUT".into(), t_h.clone());
        let mut tasks = Tasks::default();
        let f = build_concat(
            &section(&format!("<filter **>\n  @type concat\n  @id concat_unit_tl\n{DOCKER}  flush_interval 2s\n  timeout_label @TIMEOUT\n</filter>\n")),
            &mut ctx,
            &mut tasks,
        )
        .unwrap();
        let (main, late) = (Arc::new(Keep::default()), Arc::new(Keep::default()));
        let mut r = Router::new("ROOT");
        r.filters.push((Pattern::new("**").unwrap(), f.clone()));
        r.matches.push((Pattern::new("**").unwrap(), main.clone()));
        let mut t = Router::new("@TIMEOUT");
        t.matches.push((Pattern::new("**").unwrap(), late.clone()));
        let (r, t) = (Arc::new(r), Arc::new(t));
        root_h.bind(&r);
        t_h.bind(&t);
        let (_trigger, sd) = nagare_core::shutdown::channel();
        for task in tasks.filters {
            tokio::spawn(task(sd.clone()));
        }
        r.emit_stream_from(
            EventStream::new("docker.t".into(), vec![piece("X", 1, false, b"cut")]),
            0,
            false,
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(main.events().is_empty());
        let got = late.events();
        assert_eq!(got.len(), 1);
        assert_eq!(log_of(&got[0].1), b"cut");
        assert_eq!(f.count("timeout_flush"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn evicted_groups_of_other_tags_are_emitted_by_the_task() {
        let (f, r, keep, tasks) = setup(&format!("{DOCKER}  max_pending_groups 1\n"));
        let (_trigger, sd) = nagare_core::shutdown::channel();
        for t in tasks.filters {
            tokio::spawn(t(sd.clone()));
        }
        r.emit_stream_from(
            EventStream::new("a".into(), vec![piece("1", 1, false, b"one")]),
            0,
            false,
        )
        .await
        .unwrap();
        r.emit_stream_from(
            EventStream::new("b".into(), vec![piece("2", 1, false, b"two")]),
            0,
            false,
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let got = keep.events();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.to_string(), "a");
        assert_eq!(log_of(&got[0].1), b"one");
        assert_eq!(f.count("evicted_pending_groups"), 1);
        assert_eq!(f.pending_groups(), 1);
    }

    #[test]
    fn multiline_start_and_continuous_lines() {
        let (f, _r, _k, _t) = setup("  key log\n  stream_identity_key container_id\n  multiline_start_regexp /^\\d{4}-/\n  continuous_line_regexp /^\\s/\n");
        let out = run(
            &f,
            "java",
            vec![
                whole("banner"),
                whole("2024-01-01 boom"),
                whole("\tat a.b(C.java:1)"),
                whole("\tat d.e(F.java:2)"),
                whole("2024-01-01 next"),
                whole("not continuous"),
            ],
        );
        let logs: Vec<String> = out
            .iter()
            .map(|e| String::from_utf8(log_of(e)).unwrap())
            .collect();
        assert_eq!(
            logs,
            [
                "banner",
                "2024-01-01 boom\n\tat a.b(C.java:1)\n\tat d.e(F.java:2)",
                "2024-01-01 next",
                "not continuous"
            ]
        );
        let (f, _r, _k, _t) = setup("  key log\n  n_lines 2\n");
        let out = run(&f, "x", vec![whole("1"), whole("2"), whole("3")]);
        assert_eq!(out.len(), 1);
        assert_eq!(log_of(&out[0]), b"1\n2");
        assert_eq!(f.pending_groups(), 1);
    }

    #[test]
    fn config_errors() {
        let bad = |p: &str| {
            let mut ctx = BuildCtx::default();
            build_concat(
                &section(&format!("<filter **>\n  @type concat\n{p}</filter>\n")),
                &mut ctx,
                &mut Tasks::default(),
            )
            .err()
            .unwrap()
            .to_string()
        };
        assert!(bad("  use_partial_metadata true\n").contains("missing required parameter 'key'"));
        assert!(bad("  key log\n").contains("is required"));
        assert!(bad("  key log\n  n_lines 2\n  use_partial_metadata true\n").contains("exclusive"));
        let e = bad("  key log\n  partial_key partial_message\n  partial_value true\n");
        assert!(
            e.starts_with("t.conf:4:3:") && e.contains("use_partial_metadata"),
            "{e}"
        );
        assert!(
            bad("  key log\n  use_partial_metadata true\n  timeout_label @NOPE\n")
                .contains("unknown timeout_label")
        );
        assert!(bad(
            "  key log\n  use_partial_metadata true\n  max_line_size 2m\n  max_total_size 1m\n"
        )
        .contains("max_line_size"));
        let mut ctx = BuildCtx::default();
        build_concat(
            &section(
                "<filter **>\n  @type concat\n  key log\n  use_partial_metadata true\n</filter>\n",
            ),
            &mut ctx,
            &mut Tasks::default(),
        )
        .unwrap();
        assert!(ctx.warnings[0].contains("separator"), "{:?}", ctx.warnings);
    }
}
