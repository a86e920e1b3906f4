//! Routing within one label: filters whose pattern matches run in config order, then the first
//! `<match>` whose pattern matches takes the events. Events no `<match>` takes are counted
//! (`reason="no_match"`) and logged (rate-limited); they are acked, since resending them could
//! never help, but never dropped silently.

use crate::pattern::Pattern;
use crate::plugin::{Filter, OutputPlugin};
use nagare_core::ack::Committed;
use nagare_core::metrics::ReasonCounters;
use nagare_core::ratelimit::LogLimiter;
use nagare_core::{EmitError, EventSink, EventStream};
use std::sync::Arc;

pub struct Router {
    pub label: String,
    pub filters: Vec<(Pattern, Arc<dyn Filter>)>,
    pub matches: Vec<(Pattern, Arc<dyn OutputPlugin>)>,
    dropped: ReasonCounters,
    limiter: LogLimiter,
}

impl Router {
    pub fn new(label: &str) -> Self {
        Router {
            label: label.to_string(),
            filters: Vec::new(),
            matches: Vec::new(),
            dropped: ReasonCounters::new(
                "nagare_router_dropped_events_total",
                "Events no <match> took, by label and reason",
                &[("label", label)],
            ),
            limiter: LogLimiter::default(),
        }
    }

    /// Which `<match>` (by index) a tag reaches, if any.
    pub fn route_of(&self, tag: &[u8]) -> Option<usize> {
        self.matches.iter().position(|(p, _)| p.matches(tag))
    }
}

#[async_trait::async_trait]
impl EventSink for Router {
    async fn emit(&self, mut stream: EventStream) -> Result<Committed, EmitError> {
        for (p, f) in &self.filters {
            if p.matches(stream.tag.as_bytes()) {
                match f.filter(stream) {
                    Some(s) if !s.is_empty() => stream = s,
                    _ => return Ok(Committed::new()),
                }
            }
        }
        match self.route_of(stream.tag.as_bytes()) {
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
