//! `@type copy`: every `<store>` gets the events; the emit commits only when every store
//! committed (a store with `ignore_error true` may fail without failing the copy, counted).

use crate::plugin::{OutputPlugin, Tasks};
use crate::BuildCtx;
use nagare_config::{ConfigError, Section};
use nagare_core::ack::Committed;
use nagare_core::metrics::ReasonCounters;
use nagare_core::ratelimit::LogLimiter;
use nagare_core::{EmitError, EventStream};
use std::sync::Arc;

pub struct CopyOutput {
    id: String,
    stores: Vec<(Arc<dyn OutputPlugin>, bool)>,
    /// Events a store under `ignore_error` did not take, by the store's reason.
    ignored: ReasonCounters,
    limiter: LogLimiter,
}

pub fn build(
    sec: &Section,
    ctx: &mut BuildCtx,
    tasks: &mut Tasks,
) -> Result<Arc<dyn OutputPlugin>, ConfigError> {
    let id = super::plugin_id(sec, ctx, "copy");
    let mut p = sec.params();
    p.ignore("@type");
    p.ignore("@id");
    p.ignore("@log_level");
    let _mode = p.enumeration(
        "copy_mode",
        &["no_copy", "shallow", "deep", "marshal"],
        "no_copy",
    )?;
    let mut stores = Vec::new();
    for s in p.sections("store") {
        let ignore = s.arg.split_whitespace().any(|w| w == "ignore_error");
        stores.push((super::build_output(s, ctx, tasks)?, ignore));
    }
    p.finish()?;
    if stores.is_empty() {
        return Err(ConfigError::new(
            sec.span.clone(),
            "copy needs at least one <store>",
        ));
    }
    Ok(Arc::new(CopyOutput {
        ignored: ReasonCounters::new(
            "nagare_copy_store_errors_ignored_total",
            "Events a copy store under ignore_error failed to take",
            &[("plugin_id", &id)],
        ),
        id,
        stores,
        limiter: LogLimiter::default(),
    }))
}

impl CopyOutput {
    /// One store's emit; a failure under `ignore_error` is counted, logged and swallowed.
    async fn emit_to(&self, i: usize, stream: EventStream) -> Result<(), EmitError> {
        let (store, ignore) = &self.stores[i];
        let events = stream.len() as u64;
        match store.emit(stream).await {
            Ok(_) => Ok(()),
            Err(e) if *ignore => {
                self.ignored.add(e.reason, events);
                if let Some(suppressed) = self.limiter.check(e.reason) {
                    tracing::warn!(plugin_id = %self.id, store = i, reason = e.reason, events, suppressed, "a copy store under ignore_error did not take these events: counted, not retried");
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait::async_trait]
impl OutputPlugin for CopyOutput {
    async fn emit(&self, stream: EventStream) -> Result<Committed, EmitError> {
        // Records share their bytes, so a copy per store is cheap (reference counts); the last
        // store takes the stream itself.
        let last = self.stores.len() - 1;
        for i in 0..last {
            self.emit_to(i, stream.clone()).await?;
        }
        self.emit_to(last, stream).await?;
        Ok(Committed::new())
    }
}
