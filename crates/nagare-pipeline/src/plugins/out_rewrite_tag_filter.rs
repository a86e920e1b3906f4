//! `@type rewrite_tag_filter` (fluent-plugin-rewrite-tag-filter v2): an output that gives each
//! record a new tag from the first `<rule>` whose `pattern` matches (or, with `invert true`,
//! does not match) the value of `key`, and emits it again into its label (or `@label`) from the
//! top, filters included.
//!
//! ```text
//! <match docker.**>            emit(stream "docker.web.1")
//!   @type rewrite_tag_filter     per record: first rule that fires -> new tag (template)
//!   <rule> key marker            group records by new tag, keep per-tag order
//!          pattern /^AUDIT$/     new tag reaches THIS <match> again?
//!          tag ${tag}.audit        no  -> label.emit_stream_from(0, filters run)   (Fluentd)
//!   </rule>                        yes -> first <match> AFTER this one, no filters  (Nagare)
//! </match>
//! ```
//!
//! Differences from Fluentd, each on purpose (see `docs/migrating-from-fluentd.md`):
//!
//! * **Loops.** In Fluentd a new tag that the same `<match>` takes again is rewritten again,
//!   forever (fluent-plugin-rewrite-tag-filter#83: "nothing is emitted"). Here such a stream
//!   goes to the first `<match>` after this directive, without running the label's filters a
//!   second time, counted as `rewrite_loop_avoided`; `--dry-run` warns about the shape. Longer
//!   cycles through other directives are cut after [`MAX_REEMIT_DEPTH`] nested re-emits the
//!   same way (`rewrite_depth_exceeded`).
//! * **Records no rule matches** are dropped as in Fluentd, but counted
//!   (`nagare_rewrite_tag_filter_dropped_events_total{reason="no_rule_matched"}`) and logged
//!   (rate-limited), never silently; so are records whose new tag equals the old one
//!   (`tag_unchanged`, Fluentd drops those too) and records whose new tag renders empty.
//! * **Placeholders** are checked at load: an unknown `${...}`/`__...__` placeholder is an
//!   error (Fluentd warns per record and substitutes nothing).
//! * **`hostname_command`** runs nothing: `hostname` and `hostname -f` give the host name,
//!   `hostname -s` its first label; anything else is an error (set `NAGARE_HOSTNAME` instead).
//! * **`add_tag_prefix`** (from Fluentd's v0.12 `HandleTagNameMixin`) is accepted: the prefix
//!   and a dot are put in front of every new tag.
//!
//! Patterns are Ruby regular expressions as Fluentd configs write them (`/re/flags` or bare),
//! translated by [`crate::parse::regexp::ruby_regex`]; keys are record accessors
//! ([`crate::accessor::Accessor`]: `marker`, `$.kubernetes.namespace_name`, `$['a']['b']`).

use crate::accessor::{Accessor, Lookup};
use crate::parse::regexp::ruby_regex;
use crate::placeholder::{self, Syntax, Template};
use crate::plugin::{OutputPlugin, Tasks};
use crate::router::{LabelHandle, Router};
use crate::BuildCtx;
use nagare_config::{ConfigError, Section};
use nagare_core::ack::Committed;
use nagare_core::metrics::{Counter, ReasonCounters};
use nagare_core::ratelimit::LogLimiter;
use nagare_core::{EmitError, Event, EventStream, Record, Tag};
use regex::Regex;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Nested re-emits (rewrite -> rewrite -> ...) allowed before a stream is sent past the
/// directive that would re-emit it again.
pub const MAX_REEMIT_DEPTH: u32 = 16;

tokio::task_local! {
    /// How many rewrite re-emits the current emit is nested in.
    static REEMIT_DEPTH: u32;
}

/// The capture groups `$N` sees: `$0` and groups that did not take part render empty (as
/// Fluentd's table of `$~.captures`), `capitalize_regex_backreference` applied.
struct Groups<'c> {
    caps: &'c regex::Captures<'c>,
    /// With `capitalize`: the groups capitalized, by index.
    capitalized: Option<Vec<Option<Vec<u8>>>>,
}

impl placeholder::Captures for Groups<'_> {
    fn group(&self, i: usize) -> Option<&[u8]> {
        if i == 0 {
            return None;
        }
        match &self.capitalized {
            Some(c) => c.get(i)?.as_deref(),
            None => self.caps.get(i).map(|m| m.as_str().as_bytes()),
        }
    }
}

/// The value a rule tests, as text (Fluentd's `to_s`; "" when missing or nil), borrowed from
/// the record when it is a string (raw or decoded: nothing is decoded or copied).
fn key_text<'r>(found: &Lookup<'r>) -> Cow<'r, str> {
    match found {
        Lookup::Missing => Cow::Borrowed(""),
        &Lookup::Bytes(b) => as_text(b),
        Lookup::Value(v) => Cow::Owned(v.to_text().into_owned()),
    }
}

/// Bytes as text for the regex (invalid UTF-8 replaced, as Fluentd's `scrub`).
fn as_text(b: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

/// One `<rule>`.
#[derive(Debug, Clone)]
pub struct Rule {
    key: Accessor,
    /// The key as written.
    pub key_src: String,
    pattern: Regex,
    /// The pattern as written.
    pub pattern_src: String,
    /// Rewrite when the pattern does NOT match.
    pub invert: bool,
    tag: Template,
    /// The tag template as written.
    pub tag_src: String,
    /// The index of the first rule with the same `key` (the record is looked up once per key).
    key_slot: usize,
    /// Whether the new tag depends on the stream tag only (no capture groups, or an inverted
    /// rule, whose `$N` render empty): it is then cached per stream tag.
    cacheable: bool,
}

/// A parsed `rewrite_tag_filter` section (shared by the plugin and `--dry-run`).
#[derive(Debug, Clone)]
pub struct RewriteConfig {
    pub rules: Vec<Rule>,
    remove_tag_prefix: Option<Vec<u8>>,
    add_tag_prefix: Option<String>,
    hostname: String,
    capitalize: bool,
    /// `@label`: re-emit into this label instead of the directive's own.
    pub label: Option<String>,
}

const HOSTNAME_COMMANDS: &[&str] = &[
    "hostname",
    "hostname -f",
    "hostname --fqdn",
    "hostname -s",
    "hostname --short",
];

impl RewriteConfig {
    /// Reads the section (consuming its params; errors carry file:line:col).
    pub fn parse(sec: &Section, hostname: &str) -> Result<RewriteConfig, ConfigError> {
        let mut p = sec.params();
        p.ignore("@type");
        p.ignore("@id");
        p.ignore("@log_level");
        p.ignore("@label");
        let label = sec.param("@label").map(|l| l.value.trim().to_string());
        let capitalize = p.bool("capitalize_regex_backreference", false)?;
        let remove_tag_prefix = p.str("remove_tag_prefix")?.map(String::into_bytes);
        let add_tag_prefix = p.str("add_tag_prefix")?.filter(|s| !s.is_empty());
        // Read whether set or not, so that it is listed among the accepted parameters.
        let hostname_command = p.str("hostname_command")?;
        let hostname = match (sec.param("hostname_command"), hostname_command) {
            (Some(hc), Some(cmd)) => {
                let cmd = cmd.split_whitespace().collect::<Vec<_>>().join(" ");
                match cmd.as_str() {
                    "hostname" | "hostname -f" | "hostname --fqdn" => hostname.to_string(),
                    "hostname -s" | "hostname --short" => {
                        hostname.split('.').next().unwrap_or(hostname).to_string()
                    }
                    other => {
                        return Err(ConfigError::new(
                            hc.span.clone(),
                            format!(
                                "hostname_command '{other}' would run a shell command, which Nagare never does; accepted: {} (or set NAGARE_HOSTNAME to choose the name)",
                                HOSTNAME_COMMANDS.join(", ")
                            ),
                        ))
                    }
                }
            }
            _ => hostname.to_string(),
        };
        let mut rules = Vec::new();
        let mut seen: Vec<(String, bool, String)> = Vec::new();
        for r in p.sections("rule") {
            let mut rp = r.params();
            let key_src = rp.required_str("key")?;
            let pattern_src = rp.required_str("pattern")?;
            let tag_src = rp.required_str("tag")?;
            let invert = rp.bool("invert", false)?;
            rp.finish()?;
            let at = |what: &str| {
                r.param(what)
                    .map(|p| p.span.clone())
                    .unwrap_or(r.span.clone())
            };
            let key = Accessor::parse(&key_src)
                .map_err(|e| ConfigError::new(at("key"), e.to_string()))?;
            let pattern =
                ruby_regex(&pattern_src).map_err(|e| ConfigError::new(at("pattern"), e))?;
            let tag = Template::compile(&tag_src, &Syntax::REWRITE_TAG_FILTER)
                .map_err(|e| ConfigError::new(at("tag"), e))?;
            let key_slot = rules
                .iter()
                .position(|r: &Rule| r.key_src == key_src)
                .unwrap_or(rules.len());
            let cacheable = !tag.uses_record() && (invert || !tag.uses_event());
            let ident = (key_src.clone(), invert, pattern_src.clone());
            if seen.contains(&ident) {
                return Err(ConfigError::new(
                    r.span.clone(),
                    format!(
                        "duplicated rule (key {key_src}, pattern {pattern_src}{}) in {}",
                        if invert { ", invert" } else { "" },
                        sec.describe()
                    ),
                ));
            }
            seen.push(ident);
            rules.push(Rule {
                key,
                key_src,
                pattern,
                pattern_src,
                invert,
                tag,
                tag_src,
                key_slot,
                cacheable,
            });
        }
        if let Some(legacy) = sec.params.iter().find(|p| p.key.starts_with("rewriterule")) {
            return Err(ConfigError::new(
                legacy.span.clone(),
                format!(
                    "'{}' (rewriterule<N>) was dropped by rewrite_tag_filter v2: use <rule> sections with key, pattern and tag",
                    legacy.key
                ),
            ));
        }
        p.finish()?;
        if rules.is_empty() {
            return Err(ConfigError::new(
                sec.span.clone(),
                format!(
                    "rewrite_tag_filter in {} needs at least one <rule>",
                    sec.describe()
                ),
            ));
        }
        Ok(RewriteConfig {
            rules,
            remove_tag_prefix,
            add_tag_prefix,
            hostname,
            capitalize,
            label,
        })
    }

    /// The tag placeholders see (`remove_tag_prefix` applied).
    fn placeholder_tag<'t>(&self, tag: &'t [u8]) -> &'t [u8] {
        // Fluentd: tag.sub(/^#{Regexp.escape(prefix)}\.?/, '')
        match &self.remove_tag_prefix {
            Some(p) => match tag.strip_prefix(&p[..]) {
                Some(rest) => rest.strip_prefix(b".").unwrap_or(rest),
                None => tag,
            },
            None => tag,
        }
    }

    fn render(
        &self,
        rule: &Rule,
        tag: &[u8],
        captures: Option<&dyn placeholder::Captures>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(tag.len() + rule.tag_src.len() + 16);
        if let Some(p) = &self.add_tag_prefix {
            out.extend_from_slice(p.as_bytes());
            out.push(b'.');
        }
        let ctx = placeholder::Context {
            captures,
            ..placeholder::Context::new(self.placeholder_tag(tag), &self.hostname)
        };
        rule.tag.render_into(&ctx, &mut out);
        out
    }

    /// The new tag each rule would give a record of `tag` (capture groups as `x`), for
    /// `--dry-run`'s loop check.
    pub fn sample_tags(&self, tag: &str) -> Vec<String> {
        let groups: Vec<Option<&[u8]>> = std::iter::once(None)
            .chain(std::iter::repeat_n(Some(&b"x"[..]), MAX_SAMPLE_GROUPS))
            .collect();
        self.rules
            .iter()
            .map(|r| {
                String::from_utf8_lossy(&self.render(r, tag.as_bytes(), Some(&groups))).into_owned()
            })
            .collect()
    }

    /// Whether every record is caught by some rule. Recognised: an `invert true` rule whose
    /// key and pattern an earlier, non-inverted rule also uses (the usual "else" pair), when
    /// the pattern cannot match the empty string (a missing key then reaches the inverted rule).
    pub fn has_catch_all(&self) -> bool {
        self.rules.iter().enumerate().any(|(j, inv)| {
            inv.invert
                && self.rules[..j].iter().any(|r| {
                    !r.invert && r.key_src == inv.key_src && r.pattern_src == inv.pattern_src
                })
                && !inv.pattern.is_match("")
        })
    }

    /// The new tag for one record, or `None` when no rule fires. `cache` keeps the rendered
    /// tags of cacheable rules for this stream tag (see [`Rule::cacheable`]).
    fn rewrite(&self, tag: &[u8], record: &Record, cache: &mut TagRow) -> Option<Tag> {
        // The last key looked up: rules sharing a key (the usual "else" pair) look it up once.
        let mut last: Option<(usize, Lookup<'_>)> = None;
        for (i, rule) in self.rules.iter().enumerate() {
            let found = match last.take() {
                Some((slot, found)) if slot == rule.key_slot => found,
                _ => rule.key.lookup(record),
            };
            let value = key_text(&found);
            last = Some((rule.key_slot, found));
            if value.is_empty() && !rule.invert {
                continue;
            }
            if rule.invert {
                if rule.pattern.is_match(&value) {
                    continue;
                }
            } else if rule.cacheable {
                if !rule.pattern.is_match(&value) {
                    continue;
                }
            } else {
                let Some(caps) = rule.pattern.captures(&value) else {
                    continue;
                };
                let groups = Groups {
                    caps: &caps,
                    capitalized: self.capitalize.then(|| {
                        caps.iter()
                            .map(|m| m.map(|m| capitalize_bytes(m.as_str().as_bytes())))
                            .collect()
                    }),
                };
                return Some(Tag::new(self.render(rule, tag, Some(&groups))));
            }
            if let Some(t) = cached(cache, i) {
                return Some(t.clone());
            }
            // Inverted rules have no captures: `$N` renders empty, as in Fluentd.
            let t = Tag::new(self.render(rule, tag, None));
            cache_tag(cache, i, self.rules.len(), &t);
            return Some(t);
        }
        None
    }
}

/// `$N` for `--dry-run`'s sample tags: groups 1..=this render as `x`.
const MAX_SAMPLE_GROUPS: usize = 99;

/// Stream tags whose rendered new tags are kept per plugin and thread; past this the cache
/// starts over (a stream tag per container: thousands at most on one host).
pub const TAG_CACHE_MAX: usize = 4096;

/// Rendered new tags by rule (the row of one stream tag); `None`: not rendered yet.
type TagRow = Vec<Option<Tag>>;

/// The rows of one plugin instance, by stream tag.
type TagRows = HashMap<Tag, TagRow>;

thread_local! {
    /// Per plugin instance (by [`TagCache::id`]): stream tag -> rendered new tags. Per thread,
    /// so emits never wait on each other for it.
    static TAG_CACHE: RefCell<Vec<(u64, TagRows)>> = const { RefCell::new(Vec::new()) };
}

/// Rendered new tags by stream tag and rule, for rules whose tag only depends on the stream
/// tag: re-rendering (and allocating) a tag per event is most of the cost of `${tag}.app`.
struct TagCache {
    id: u64,
}

impl Default for TagCache {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TagCache {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl Drop for TagCache {
    fn drop(&mut self) {
        // This thread's entries go now; other threads' go when their cache starts over.
        let _ = TAG_CACHE.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                c.retain(|(id, _)| *id != self.id);
            }
        });
    }
}

impl TagCache {
    /// Runs `f` with the row of `tag` (a scratch row if the cache is busy or gone).
    fn with_row<R>(&self, tag: &Tag, mut f: impl FnMut(&mut TagRow) -> R) -> R {
        let done = TAG_CACHE.try_with(|c| {
            let mut c = c.try_borrow_mut().ok()?;
            let pos = match c.iter().position(|(id, _)| *id == self.id) {
                Some(p) => p,
                None => {
                    c.push((self.id, HashMap::new()));
                    c.len() - 1
                }
            };
            let map = &mut c[pos].1;
            if let Some(row) = map.get_mut(tag) {
                return Some(f(row));
            }
            if map.len() >= TAG_CACHE_MAX {
                map.clear();
            }
            Some(f(map.entry(tag.clone()).or_default()))
        });
        match done {
            Ok(Some(r)) => r,
            _ => f(&mut TagRow::new()),
        }
    }

    #[cfg(test)]
    fn row(&self, tag: &Tag) -> TagRow {
        TAG_CACHE.with(|c| {
            c.borrow()
                .iter()
                .find(|(id, _)| *id == self.id)
                .and_then(|(_, m)| m.get(tag).cloned())
                .unwrap_or_default()
        })
    }
}

/// Rule `i`'s cached tag.
fn cached(row: &TagRow, i: usize) -> Option<&Tag> {
    row.get(i)?.as_ref()
}

/// Caches rule `i`'s tag (`rules`: how many rules there are).
fn cache_tag(row: &mut TagRow, i: usize, rules: usize, t: &Tag) {
    if row.len() < rules {
        row.resize(rules, None);
    }
    if let Some(slot) = row.get_mut(i) {
        *slot = Some(t.clone());
    }
}

/// Ruby's `String#capitalize`: first character upper case, the rest lower case.
fn capitalize_bytes(b: &[u8]) -> Vec<u8> {
    let s = String::from_utf8_lossy(b);
    let mut c = s.chars();
    match c.next() {
        Some(f) => {
            let mut out: String = f.to_uppercase().collect();
            out.push_str(&c.as_str().to_lowercase());
            out.into_bytes()
        }
        None => Vec::new(),
    }
}

/// The running plugin.
pub struct RewriteTagFilter {
    cfg: RewriteConfig,
    id: String,
    /// The label re-emits go to.
    target: Arc<LabelHandle>,
    /// The label this directive is in (where looping streams continue).
    own: Arc<LabelHandle>,
    /// Whether `target` is the label this directive is in (loops are only possible then).
    same_label: bool,
    /// This directive's index among its label's `<match>`es.
    match_index: usize,
    dropped: ReasonCounters,
    rerouted: ReasonCounters,
    rewritten: Counter,
    limiter: LogLimiter,
    cache: TagCache,
}

pub fn build(
    sec: &Section,
    ctx: &mut BuildCtx,
    _tasks: &mut Tasks,
) -> Result<Arc<dyn OutputPlugin>, ConfigError> {
    Ok(Arc::new(RewriteTagFilter::new(sec, ctx)?))
}

impl RewriteTagFilter {
    fn new(sec: &Section, ctx: &mut BuildCtx) -> Result<RewriteTagFilter, ConfigError> {
        let id = super::plugin_id(sec, ctx, "rewrite_tag_filter");
        let cfg = RewriteConfig::parse(sec, &ctx.hostname)?;
        let (target, same_label) = match &cfg.label {
            Some(name) => match ctx.labels.get(name) {
                Some(h) => (h.clone(), Arc::ptr_eq(h, &ctx.current_label)),
                None => {
                    let span = sec
                        .param("@label")
                        .map(|p| p.span.clone())
                        .unwrap_or(sec.span.clone());
                    return Err(ConfigError::new(
                        span,
                        format!("unknown label '{name}' (no <label {name}> section)"),
                    ));
                }
            },
            None => (ctx.current_label.clone(), true),
        };
        Ok(RewriteTagFilter {
            dropped: ReasonCounters::new(
                "nagare_rewrite_tag_filter_dropped_events_total",
                "Records rewrite_tag_filter did not re-emit, by reason",
                &[("plugin_id", &id)],
            ),
            rerouted: ReasonCounters::new(
                "nagare_rewrite_tag_filter_rerouted_events_total",
                "Re-emitted records sent past their rewrite directive to avoid a loop, by reason",
                &[("plugin_id", &id)],
            ),
            rewritten: nagare_core::metrics::counter(
                "nagare_rewrite_tag_filter_rewritten_events_total",
                "Records re-emitted with a new tag",
                &[("plugin_id", &id)],
            ),
            cfg,
            id,
            target,
            own: ctx.current_label.clone(),
            same_label,
            match_index: ctx.current_match,
            limiter: LogLimiter::default(),
            cache: TagCache::default(),
        })
    }
}

impl RewriteTagFilter {
    fn drop_events(&self, reason: &'static str, tag: &Tag, n: usize) {
        if n == 0 {
            return;
        }
        self.dropped.add(reason, n as u64);
        if let Some(suppressed) = self.limiter.check(reason) {
            tracing::warn!(plugin_id = %self.id, %tag, events = n, reason, suppressed, "rewrite_tag_filter: records not re-emitted (dropped and counted)");
        }
    }

    async fn reemit(
        &self,
        router: &Arc<Router>,
        stream: EventStream,
    ) -> Result<Committed, EmitError> {
        let depth = REEMIT_DEPTH.try_with(|d| *d).unwrap_or(0);
        let loops =
            self.same_label && router.route_of(stream.tag.as_bytes()) == Some(self.match_index);
        if loops || depth >= MAX_REEMIT_DEPTH {
            let reason = if loops {
                "rewrite_loop_avoided"
            } else {
                "rewrite_depth_exceeded"
            };
            self.rerouted.add(reason, stream.len() as u64);
            if let Some(suppressed) = self.limiter.check(reason) {
                tracing::info!(plugin_id = %self.id, tag = %stream.tag, events = stream.len(), reason, suppressed, "rewrite_tag_filter: new tag would come back to this directive; sending it to the next <match> instead");
            }
            // Always forward within this directive's own label, so guarded hops only move to
            // later directives and terminate.
            let own = if self.same_label {
                router.clone()
            } else {
                match self.own.get() {
                    Some(r) => r,
                    None => return Err(EmitError::new("label_not_running")),
                }
            };
            return own
                .emit_stream_from(stream, self.match_index + 1, true)
                .await;
        }
        REEMIT_DEPTH
            .scope(depth + 1, router.emit_stream_from(stream, 0, false))
            .await
    }
}

#[async_trait::async_trait]
impl OutputPlugin for RewriteTagFilter {
    async fn emit(&self, stream: EventStream) -> Result<Committed, EmitError> {
        let Some(router) = self.target.get() else {
            return Err(EmitError::new("label_not_running"));
        };
        let tag = stream.tag;
        let mut events = stream.events;
        let (tags, counts) = self.new_tags(&tag, &events);
        self.drop_events("no_rule_matched", &tag, counts[0]);
        self.drop_events("tag_unchanged", &tag, counts[1]);
        self.drop_events("empty_tag", &tag, counts[2]);
        let tags = match tags {
            NewTags::None => return Ok(Committed::new()),
            // Usually every event gets the same new tag: re-emit the vector unchanged.
            NewTags::All(t) => {
                self.rewritten.add(events.len() as u64);
                return self.reemit(&router, EventStream::new(t, events)).await;
            }
            NewTags::Each(tags) => tags,
        };
        // Per new tag, the events in arrival order (usually two or three groups).
        let mut groups: Vec<(Tag, Vec<Event>)> = Vec::new();
        for (ev, t) in events.drain(..).zip(tags) {
            let Some(new_tag) = t else { continue };
            match groups.iter_mut().find(|(t, _)| *t == new_tag) {
                Some((_, v)) => v.push(ev),
                None => groups.push((new_tag, vec![ev])),
            }
        }
        for (t, events) in groups {
            self.rewritten.add(events.len() as u64);
            self.reemit(&router, EventStream::new(t, events)).await?;
        }
        Ok(Committed::new())
    }
}

/// The new tags of a stream's events.
enum NewTags {
    /// No event is re-emitted.
    None,
    /// Every event gets this tag.
    All(Tag),
    /// Per event (`None`: not re-emitted).
    Each(Vec<Option<Tag>>),
}

impl RewriteTagFilter {
    /// The new tag of each event, and how many events are dropped: no rule matched, the tag
    /// is unchanged, the new tag is empty.
    fn new_tags(&self, tag: &Tag, events: &[Event]) -> (NewTags, [usize; 3]) {
        self.cache
            .with_row(tag, |row| self.new_tags_in(tag, events, row))
    }

    fn new_tags_in(&self, tag: &Tag, events: &[Event], row: &mut TagRow) -> (NewTags, [usize; 3]) {
        let mut counts = [0usize; 3];
        let mut new_tag = |ev: &Event| match self.cfg.rewrite(tag.as_bytes(), &ev.record, row) {
            None => {
                counts[0] += 1;
                None
            }
            Some(t) if t.as_bytes().is_empty() => {
                counts[2] += 1;
                None
            }
            Some(t) if t == *tag => {
                counts[1] += 1;
                None
            }
            Some(t) => Some(t),
        };
        let mut out = NewTags::None;
        let mut each: Vec<Option<Tag>> = Vec::new();
        for (i, ev) in events.iter().enumerate() {
            let t = new_tag(ev);
            if i == 0 {
                match t {
                    Some(t) => out = NewTags::All(t),
                    None => each.push(None),
                }
                continue;
            }
            if let NewTags::All(first) = &out {
                if t.as_ref() == Some(first) {
                    continue;
                }
                each.reserve(events.len());
                each.resize(i, Some(first.clone()));
                out = NewTags::None;
            }
            each.push(t);
        }
        if !each.is_empty() && each.iter().any(Option::is_some) {
            out = NewTags::Each(each);
        }
        (out, counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::Pattern;
    use nagare_core::EventTime;
    use std::path::Path;
    use std::sync::Mutex;

    fn section(text: &str) -> Section {
        let root = nagare_config::parse_str(text, Path::new("t.conf")).unwrap();
        root.children[0].clone()
    }

    fn cfg(text: &str) -> RewriteConfig {
        RewriteConfig::parse(&section(text), "host-1.example.com").unwrap()
    }

    fn rec(pairs: &[(&str, &str)]) -> Record {
        Record::from_pairs(pairs)
    }

    fn new_tag(c: &RewriteConfig, tag: &str, r: &Record) -> Option<String> {
        c.rewrite(tag.as_bytes(), r, &mut TagRow::new())
            .map(|t| t.to_string())
    }

    #[test]
    fn first_matching_rule_wins_and_placeholders_render() {
        let c = cfg("<match docker.**>\n  @type rewrite_tag_filter\n  <rule>\n    key marker\n    pattern /^AUDIT$/\n    tag ${tag}.audit\n  </rule>\n  <rule>\n    key marker\n    pattern /^AUDIT$/\n    invert true\n    tag ${tag}.app\n  </rule>\n</match>\n");
        assert_eq!(
            new_tag(&c, "docker.web.1", &rec(&[("marker", "AUDIT")])).as_deref(),
            Some("docker.web.1.audit")
        );
        assert_eq!(
            new_tag(&c, "docker.web.1", &rec(&[("marker", "x")])).as_deref(),
            Some("docker.web.1.app")
        );
        // A missing key is "" for an inverted rule: caught by the else rule.
        assert_eq!(
            new_tag(&c, "docker.web.1", &rec(&[("log", "x")])).as_deref(),
            Some("docker.web.1.app")
        );
        assert!(c.has_catch_all());
    }

    #[test]
    fn backreferences_tag_parts_hostname_and_prefixes() {
        let c = cfg("<match apache.access>\n  @type rewrite_tag_filter\n  capitalize_regex_backreference yes\n  remove_tag_prefix apache\n  add_tag_prefix out\n  <rule>\n    key domain\n    pattern ^(mail)\\.(example)\\.com$\n    tag rewrited.${tag}.$2$1.__TAG_PARTS[0]__.${hostname}.$7\n  </rule>\n</match>\n");
        assert_eq!(
            new_tag(&c, "apache.access", &rec(&[("domain", "mail.example.com")])).as_deref(),
            Some("out.rewrited.access.ExampleMail.access.host-1.example.com.")
        );
        assert!(!c.has_catch_all());
        let short = cfg("<match a>\n  @type rewrite_tag_filter\n  hostname_command hostname -s\n  <rule>\n    key k\n    pattern .+\n    tag __HOSTNAME__.${tag_parts[1]}.${tag_parts[9]}\n  </rule>\n</match>\n");
        assert_eq!(
            new_tag(&short, "a.b", &rec(&[("k", "v")])).as_deref(),
            Some("host-1.b.")
        );
    }

    #[test]
    fn empty_values_skip_plain_rules_and_nested_keys_work() {
        let c = cfg("<match k8s.**>\n  @type rewrite_tag_filter\n  <rule>\n    key $['kubernetes']['namespace_name']\n    pattern ^(.+)$\n    tag $1.${tag}\n  </rule>\n  <rule>\n    key level\n    pattern /.*/\n    tag lvl\n  </rule>\n</match>\n");
        let mut r = Record::from_pairs::<&str, &str>(&[]);
        let mut inner = nagare_core::Map::new();
        inner.insert(&b"namespace_name"[..], nagare_core::Value::str("default"));
        r.map_mut()
            .insert(&b"kubernetes"[..], nagare_core::Value::Map(inner));
        assert_eq!(
            new_tag(&c, "k8s.var.log", &r).as_deref(),
            Some("default.k8s.var.log")
        );
        // `level` is "" -> a non-inverted rule never fires on an empty value, even /.*/.
        assert_eq!(new_tag(&c, "k8s.x", &rec(&[("level", "")])), None);
        // Numbers are matched as text.
        let mut n = Record::from_pairs::<&str, &str>(&[]);
        n.map_mut()
            .insert(&b"level"[..], nagare_core::Value::UInt(5));
        assert_eq!(new_tag(&c, "k8s.x", &n).as_deref(), Some("lvl"));
    }

    #[test]
    fn tag_cache_holds_tag_only_templates() {
        // Rule 0 renders a capture group (a record value): never cached. Rule 1 is inverted:
        // its `$1` is empty, so its tag depends on the stream tag only and is cached.
        let c = cfg("<match t.**>\n  @type rewrite_tag_filter\n  <rule>\n    key k\n    pattern ^(\\w+)$\n    tag out.$1\n  </rule>\n  <rule>\n    key k\n    pattern ^(\\w+)$\n    invert true\n    tag ${tag}.other$1.__TAG_PARTS[1]__\n  </rule>\n</match>\n");
        assert!(!c.rules[0].cacheable && c.rules[1].cacheable);
        let mut row = TagRow::new();
        let tag_of = |t: &str, k: &str, row: &mut TagRow| {
            c.rewrite(t.as_bytes(), &rec(&[("k", k)]), row)
                .map(|t| t.to_string())
        };
        assert_eq!(tag_of("t.x", "a", &mut row).as_deref(), Some("out.a"));
        assert!(row.iter().all(Option::is_none), "{row:?}");
        assert_eq!(tag_of("t.x", "b", &mut row).as_deref(), Some("out.b"));
        assert_eq!(
            tag_of("t.x", "a b", &mut row).as_deref(),
            Some("t.x.other.x")
        );
        assert_eq!(row.len(), 2);
        assert!(row[0].is_none());
        assert_eq!(
            row[1].as_ref().map(|t| t.to_string()).as_deref(),
            Some("t.x.other.x")
        );
        // The cached tag is used for the next record of that stream tag.
        assert_eq!(
            tag_of("t.x", "c d", &mut row).as_deref(),
            Some("t.x.other.x")
        );
    }

    #[test]
    fn tag_cache_is_per_stream_tag() {
        let mut ctx = BuildCtx::default();
        let rw = RewriteTagFilter::new(
            &section("<match docker.**>\n  @type rewrite_tag_filter\n  hostname_command hostname -s\n  <rule>\n    key marker\n    pattern /^AUDIT$/\n    tag ${tag}.audit\n  </rule>\n  <rule>\n    key marker\n    pattern /^AUDIT$/\n    invert true\n    tag ${tag_parts[1]}.__TAG__.${hostname}\n  </rule>\n</match>\n"),
            &mut ctx,
        )
        .unwrap();
        let events = [ev(&[("marker", "x")]), ev(&[("log", "y")])];
        let all = |t: &str| match rw.new_tags(&Tag::from(t), &events) {
            (NewTags::All(t), [0, 0, 0]) => t.to_string(),
            _ => panic!("{t}: not one new tag"),
        };
        let host = ctx
            .hostname
            .split('.')
            .next()
            .unwrap_or_default()
            .to_string();
        for _ in 0..2 {
            assert_eq!(all("docker.a.1"), format!("a.docker.a.1.{host}"));
            assert_eq!(all("docker.b.1"), format!("b.docker.b.1.{host}"));
        }
        let row = rw.cache.row(&Tag::from("docker.a.1"));
        assert_eq!(
            row.get(1).cloned().flatten().map(|t| t.to_string()),
            Some(format!("a.docker.a.1.{host}"))
        );
        // Mixed streams: each event its own tag, in order.
        let mixed = [ev(&[("marker", "AUDIT")]), ev(&[("marker", "x")])];
        match rw.new_tags(&Tag::from("docker.a.1"), &mixed) {
            (NewTags::Each(v), [0, 0, 0]) => assert_eq!(
                v.iter()
                    .map(|t| t.as_ref().map(|t| t.to_string()))
                    .collect::<Vec<_>>(),
                [
                    Some("docker.a.1.audit".to_string()),
                    Some(format!("a.docker.a.1.{host}"))
                ]
            ),
            _ => panic!("not per event"),
        }
    }

    #[test]
    fn config_errors_point_at_the_line() {
        let bad = |text: &str| {
            RewriteConfig::parse(&section(text), "h")
                .unwrap_err()
                .to_string()
        };
        let e = bad("<match a>\n  @type rewrite_tag_filter\n  <rule>\n    key k\n    pattern .+\n    tag ${tagg}\n  </rule>\n</match>\n");
        assert!(
            e.starts_with("t.conf:6:5:")
                && e.contains("placeholder ${tagg}")
                && e.contains("unknown placeholder"),
            "{e}"
        );
        let e = bad("<match a>\n  @type rewrite_tag_filter\n  <rule>\n    key k\n    pattern /(/\n    tag x\n  </rule>\n</match>\n");
        assert!(e.starts_with("t.conf:5:5:"), "{e}");
        let e = bad("<match a>\n  @type rewrite_tag_filter\n</match>\n");
        assert!(e.contains("at least one <rule>"), "{e}");
        let e = bad("<match a>\n  @type rewrite_tag_filter\n  hostname_command curl http://x\n  <rule>\n    key k\n    pattern .+\n    tag x\n  </rule>\n</match>\n");
        assert!(
            e.starts_with("t.conf:3:3:") && e.contains("never does"),
            "{e}"
        );
        let e = bad("<match a>\n  @type rewrite_tag_filter\n  rewriterule1 k .+ x\n</match>\n");
        assert!(e.contains("dropped by rewrite_tag_filter v2"), "{e}");
        let e = bad("<match a>\n  @type rewrite_tag_filter\n  <rule>\n    key k\n    pattern .+\n    tag ${tag_parts[0..2]}\n  </rule>\n</match>\n");
        assert!(e.contains("range"), "{e}");
        let e = bad("<match a>\n  @type rewrite_tag_filter\n  <rule>\n    key k\n    pattern .+\n    tag a\n  </rule>\n  <rule>\n    key k\n    pattern .+\n    tag b\n  </rule>\n</match>\n");
        assert!(
            e.starts_with("t.conf:8:3:") && e.contains("duplicated"),
            "{e}"
        );
        let e = bad("<match a>\n  @type rewrite_tag_filter\n  <rule>\n    key k\n    pattern .+\n    tag __FOO__\n  </rule>\n</match>\n");
        assert!(e.contains("__FOO__"), "{e}");
    }

    #[test]
    fn sample_tags_for_dry_run() {
        let c = cfg("<match docker.**>\n  @type rewrite_tag_filter\n  <rule>\n    key marker\n    pattern AUDIT\n    tag ${tag}.audit\n  </rule>\n  <rule>\n    key message\n    pattern (.+)\n    tag $1.app\n  </rule>\n</match>\n");
        assert_eq!(c.sample_tags("docker.x"), ["docker.x.audit", "x.app"]);
    }

    /// An output that keeps what it gets.
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
        fn tags(&self) -> Vec<(String, usize)> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .map(|s| (s.tag.to_string(), s.len()))
                .collect()
        }
    }

    fn ev(pairs: &[(&str, &str)]) -> Event {
        Event {
            time: EventTime::from_secs(1),
            record: rec(pairs),
        }
    }

    /// Builds `<match docker.**> rewrite` + `<match **> keep` in one label, as the seed
    /// config does, and returns the router and the kept streams.
    fn seed_router(rules: &str) -> (Arc<Router>, Arc<Keep>, Arc<LabelHandle>) {
        let handle = LabelHandle::new("ROOT");
        let mut ctx = BuildCtx {
            current_label: handle.clone(),
            current_match: 0,
            ..BuildCtx::default()
        };
        let text = format!(
            "<match docker.**>\n  @type rewrite_tag_filter\n  @id rw_test\n{rules}</match>\n"
        );
        let rw = build(&section(&text), &mut ctx, &mut Tasks::default()).unwrap();
        let keep = Arc::new(Keep::default());
        let mut r = Router::new("ROOT");
        r.matches.push((Pattern::new("docker.**").unwrap(), rw));
        r.matches.push((Pattern::new("**").unwrap(), keep.clone()));
        let r = Arc::new(r);
        handle.bind(&r);
        (r, keep, handle)
    }

    #[tokio::test]
    async fn seed_shape_loop_goes_to_the_next_match_and_unmatched_are_counted() {
        let (router, keep, _h) = seed_router("  <rule>\n    key marker\n    pattern AUDIT\n    tag ${tag}.audit\n  </rule>\n  <rule>\n    key message\n    pattern .+\n    tag ${tag}.app\n  </rule>\n");
        let s = EventStream::new(
            "docker.web.1".into(),
            vec![
                ev(&[("marker", "AUDIT"), ("message", "m")]),
                ev(&[("message", "hello")]),
                ev(&[("msg", "no message key")]),
                ev(&[("marker", "AUDIT")]),
            ],
        );
        router.emit_stream_from(s, 0, false).await.unwrap();
        assert_eq!(
            keep.tags(),
            [
                ("docker.web.1.audit".to_string(), 2),
                ("docker.web.1.app".to_string(), 1)
            ]
        );
        let rw = ReasonCounters::new(
            "nagare_rewrite_tag_filter_rerouted_events_total",
            "",
            &[("plugin_id", "rw_test")],
        );
        assert_eq!(rw.get("rewrite_loop_avoided").get(), 3);
        let dropped = ReasonCounters::new(
            "nagare_rewrite_tag_filter_dropped_events_total",
            "",
            &[("plugin_id", "rw_test")],
        );
        assert_eq!(dropped.get("no_rule_matched").get(), 1);
    }

    #[tokio::test]
    async fn non_looping_reemit_goes_from_the_top() {
        // <match in.**> rewrite to out.* ; <match out.**> keep : no loop, normal re-emit.
        let handle = LabelHandle::new("ROOT");
        let mut ctx = BuildCtx {
            current_label: handle.clone(),
            ..BuildCtx::default()
        };
        let rw = build(
            &section("<match in.**>\n  @type rewrite_tag_filter\n  @id rw_top\n  <rule>\n    key k\n    pattern ^(\\w+)$\n    tag out.$1\n  </rule>\n</match>\n"),
            &mut ctx,
            &mut Tasks::default(),
        )
        .unwrap();
        let keep = Arc::new(Keep::default());
        let mut r = Router::new("ROOT");
        r.matches.push((Pattern::new("in.**").unwrap(), rw));
        r.matches
            .push((Pattern::new("out.**").unwrap(), keep.clone()));
        let r = Arc::new(r);
        handle.bind(&r);
        let s = EventStream::new(
            "in.x".into(),
            vec![
                ev(&[("k", "a")]),
                ev(&[("k", "b")]),
                ev(&[("k", "a")]),
                ev(&[("k", "in")]),
            ],
        );
        r.emit_stream_from(s, 0, false).await.unwrap();
        let mut got = keep.tags();
        got.sort();
        assert_eq!(
            got,
            [
                ("out.a".to_string(), 2),
                ("out.b".to_string(), 1),
                ("out.in".to_string(), 1)
            ]
        );
    }

    #[tokio::test]
    async fn cycles_through_two_directives_are_cut() {
        // a.** -> b.${tag} ; b.** -> a.${tag} : a cycle through two directives. Each
        // re-emit makes the tag longer, so neither sees its own output; the depth guard cuts it.
        let handle = LabelHandle::new("ROOT");
        let mut ctx = BuildCtx {
            current_label: handle.clone(),
            ..BuildCtx::default()
        };
        let a = build(
            &section("<match a.**>\n  @type rewrite_tag_filter\n  @id cyc_a\n  <rule>\n    key k\n    pattern .+\n    tag b.${tag}\n  </rule>\n</match>\n"),
            &mut ctx,
            &mut Tasks::default(),
        )
        .unwrap();
        ctx.current_match = 1;
        let b = build(
            &section("<match b.**>\n  @type rewrite_tag_filter\n  @id cyc_b\n  <rule>\n    key k\n    pattern .+\n    tag a.${tag}\n  </rule>\n</match>\n"),
            &mut ctx,
            &mut Tasks::default(),
        )
        .unwrap();
        let keep = Arc::new(Keep::default());
        let mut r = Router::new("ROOT");
        r.matches.push((Pattern::new("a.**").unwrap(), a));
        r.matches.push((Pattern::new("b.**").unwrap(), b));
        r.matches.push((Pattern::new("**").unwrap(), keep.clone()));
        let r = Arc::new(r);
        handle.bind(&r);
        r.emit_stream_from(
            EventStream::new("a.x".into(), vec![ev(&[("k", "v")])]),
            0,
            false,
        )
        .await
        .unwrap();
        let got = keep.tags();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, 1);
        let hops = got[0].0.split('.').count();
        assert!(
            hops > MAX_REEMIT_DEPTH as usize && hops < 2 * MAX_REEMIT_DEPTH as usize,
            "{got:?}"
        );
        let rerouted = |id: &str| {
            ReasonCounters::new(
                "nagare_rewrite_tag_filter_rerouted_events_total",
                "",
                &[("plugin_id", id)],
            )
            .get("rewrite_depth_exceeded")
            .get()
        };
        assert!(rerouted("cyc_a") + rerouted("cyc_b") >= 1);
    }
}
