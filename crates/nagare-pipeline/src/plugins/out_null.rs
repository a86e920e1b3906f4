//! `@type null`: discards events, counting them (`nagare_output_records_written_total`).

use crate::plugin::OutputPlugin;
use crate::BuildCtx;
use nagare_config::{ConfigError, Section};
use nagare_core::ack::Committed;
use nagare_core::metrics::{counter, Counter};
use nagare_core::{EmitError, EventStream};
use std::sync::Arc;

pub struct NullOutput {
    records: Counter,
}

pub fn build(sec: &Section, ctx: &mut BuildCtx) -> Result<Arc<dyn OutputPlugin>, ConfigError> {
    let id = super::plugin_id(sec, ctx, "null");
    let mut p = sec.params();
    p.ignore("@type");
    p.ignore("@id");
    p.ignore("@log_level");
    // A `<buffer>` (Fluentd configs often carry one) is checked like any other and then
    // unused: nothing is buffered on the way to nowhere.
    crate::buffer::check_unused(&mut p, ctx, &id)?;
    p.finish()?;
    Ok(Arc::new(NullOutput {
        records: counter(
            "nagare_output_records_written_total",
            "Records written",
            &[("plugin_id", &id)],
        ),
    }))
}

#[async_trait::async_trait]
impl OutputPlugin for NullOutput {
    async fn emit(&self, stream: EventStream) -> Result<Committed, EmitError> {
        self.records.add(stream.len() as u64);
        Ok(Committed::new())
    }
}
