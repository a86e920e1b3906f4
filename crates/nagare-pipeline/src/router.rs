//! Routing within one label: filters whose pattern matches run in config order, then the first
//! `<match>` whose pattern matches takes the events. Events no `<match>` takes are counted
//! (`reason="no_match"`) and logged (rate-limited); they are acked, since resending them could
//! never help, but never dropped silently.

use crate::pattern::Pattern;
use crate::plugin::{ErrorEvent, Filter, OutputPlugin};
use nagare_core::ack::Committed;
use nagare_core::metrics::ReasonCounters;
use nagare_core::ratelimit::LogLimiter;
use nagare_core::{EmitError, EventSink, EventStream};
use std::sync::Arc;

pub struct Router {
    pub label: String,
    pub filters: Vec<(Pattern, Arc<dyn Filter>)>,
    pub matches: Vec<(Pattern, Arc<dyn OutputPlugin>)>,
    /// Where rejected events go (`<label @ERROR>`), if defined.
    pub error_label: Option<Arc<LabelHandle>>,
    /// For each filter (same index), how many `<match>`es come before it in the config: a
    /// filter only applies to events taken by a `<match>` placed after it (Fluentd's order).
    /// Filters without an entry count as placed before every `<match>`.
    pub filter_positions: Vec<usize>,
    dropped: ReasonCounters,
    limiter: LogLimiter,
}

/// A late-bound reference to a label's router, for plugins that emit into a label built after
/// them (rewrite_tag_filter re-emits into its own label; `@ERROR`; concat's `timeout_label`).
#[derive(Default)]
pub struct LabelHandle {
    pub name: String,
    router: std::sync::OnceLock<std::sync::Weak<Router>>,
}

impl LabelHandle {
    pub fn new(name: &str) -> Arc<Self> {
        Arc::new(LabelHandle {
            name: name.to_string(),
            router: std::sync::OnceLock::new(),
        })
    }
    pub fn bind(&self, r: &Arc<Router>) {
        let _ = self.router.set(Arc::downgrade(r));
    }
    /// The router, once the pipeline is built (and while it runs).
    pub fn get(&self) -> Option<Arc<Router>> {
        self.router.get().and_then(std::sync::Weak::upgrade)
    }
}

impl Router {
    pub fn new(label: &str) -> Self {
        Router {
            label: label.to_string(),
            filters: Vec::new(),
            matches: Vec::new(),
            error_label: None,
            filter_positions: Vec::new(),
            dropped: ReasonCounters::new(
                "nagare_router_dropped_events_total",
                "Events no <match> took, by label and reason",
                &[("label", label)],
            ),
            limiter: LogLimiter::default(),
        }
    }

    /// Adds a filter placed after the `<match>`es added so far.
    pub fn add_filter(&mut self, p: Pattern, f: Arc<dyn Filter>) {
        self.filter_positions.resize(self.filters.len(), 0);
        self.filter_positions.push(self.matches.len());
        self.filters.push((p, f));
    }

    /// Which `<match>` (by index) a tag reaches, if any.
    pub fn route_of(&self, tag: &[u8]) -> Option<usize> {
        self.route_from(tag, 0)
    }

    /// The first `<match>` at index >= `first` that takes `tag`.
    pub fn route_from(&self, tag: &[u8], first: usize) -> Option<usize> {
        self.matches
            .iter()
            .enumerate()
            .skip(first)
            .find(|(_, (p, _))| p.matches(tag))
            .map(|(i, _)| i)
    }

    /// Sends rejected events to `@ERROR`, or counts and logs them when there is no such label.
    pub async fn emit_errors(&self, errors: Vec<ErrorEvent>) -> Result<(), EmitError> {
        if errors.is_empty() {
            return Ok(());
        }
        if let Some(r) = self.error_label.as_ref().and_then(|h| h.get()) {
            for e in errors {
                r.emit_stream_from(EventStream::new(e.tag, vec![e.event]), 0, false)
                    .await?;
            }
            return Ok(());
        }
        for e in &errors {
            self.dropped.inc(e.reason);
        }
        if let Some(suppressed) = self.limiter.check(errors[0].reason) {
            tracing::warn!(label = %self.label, reason = errors[0].reason, events = errors.len(), suppressed, "events rejected by a plugin and no <label @ERROR>: dropped and counted");
        }
        Ok(())
    }

    /// Runs the filters (unless `skip_filters`), then the first `<match>` at index >= `first`.
    /// Boxed: re-emitting plugins (rewrite_tag_filter, `@ERROR`) make this recursive.
    pub fn emit_stream_from(
        &self,
        stream: EventStream,
        first: usize,
        skip_filters: bool,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Committed, EmitError>> + Send + '_>,
    > {
        Box::pin(self.emit_inner(stream, first, skip_filters))
    }

    async fn emit_inner(
        &self,
        mut stream: EventStream,
        first: usize,
        skip_filters: bool,
    ) -> Result<Committed, EmitError> {
        let target = self.route_from(stream.tag.as_bytes(), first);
        if !skip_filters {
            let mut errors = Vec::new();
            for (i, (p, f)) in self.filters.iter().enumerate() {
                let pos = self.filter_positions.get(i).copied().unwrap_or(0);
                if target.is_some_and(|m| pos > m) {
                    // Placed after the <match> that takes these events: not on their path.
                    break;
                }
                if p.matches(stream.tag.as_bytes()) {
                    f.filter(&mut stream, &mut errors);
                    if stream.is_empty() {
                        break;
                    }
                }
            }
            self.emit_errors(errors).await?;
            if stream.is_empty() {
                return Ok(Committed::new());
            }
        }
        match target {
            Some(i) => self.matches[i].1.emit(stream).await,
            None => {
                self.dropped.add("no_match", stream.len() as u64);
                if let Some(suppressed) = self.limiter.check(&stream.tag.to_str_lossy()) {
                    tracing::warn!(label = %self.label, tag = %stream.tag, events = stream.len(), suppressed, "no <match> for tag; events dropped and counted");
                }
                Ok(Committed::new())
            }
        }
    }
}

#[async_trait::async_trait]
impl EventSink for Router {
    async fn emit(&self, stream: EventStream) -> Result<Committed, EmitError> {
        self.emit_stream_from(stream, 0, false).await
    }
}
