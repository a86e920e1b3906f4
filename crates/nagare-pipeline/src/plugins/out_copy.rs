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

#[async_trait::async_trait]
impl OutputPlugin for CopyOutput {
    async fn emit(&self, stream: EventStream) -> Result<Committed, EmitError> {
        let last = self.stores.len() - 1;
        let mut stream = Some(stream);
        for (i, (store, ignore)) in self.stores.iter().enumerate() {
            // Records share their bytes, so a copy per store is cheap (reference counts).
            let s = if i == last {
                stream
                    .take()
                    .unwrap_or_else(|| EventStream::new("".into(), vec![]))
            } else {
                stream
                    .clone()
                    .unwrap_or_else(|| EventStream::new("".into(), vec![]))
            };
            let events = s.len() as u64;
            match store.emit(s).await {
                Ok(_) => {}
                Err(e) if *ignore => {
                    self.ignored.add(e.reason, events);
                    if let Some(suppressed) = self.limiter.check(e.reason) {
                        tracing::warn!(plugin_id = %self.id, store = i, reason = e.reason, events, suppressed, "a copy store under ignore_error did not take these events: counted, not retried");
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Committed::new())
    }
}
