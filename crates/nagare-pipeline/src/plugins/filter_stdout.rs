//! `<filter> @type stdout`: prints each event (as out_stdout does) and passes it on.

use crate::plugin::{ErrorEvent, Filter};
use crate::BuildCtx;
use nagare_config::{ConfigError, Section};
use nagare_core::metrics::Counter;
use nagare_core::EventStream;
use std::io::Write;
use std::sync::Arc;

pub struct StdoutFilter {
    invalid_utf8: Counter,
}

pub fn build(sec: &Section, ctx: &mut BuildCtx) -> Result<Arc<dyn Filter>, ConfigError> {
    let id = super::plugin_id(sec, ctx, "filter_stdout");
    let mut p = sec.params();
    let _ = p.section("format")?;
    p.finish()?;
    Ok(Arc::new(StdoutFilter {
        invalid_utf8: super::out_stdout::invalid_utf8_counter(&id),
    }))
}

impl Filter for StdoutFilter {
    fn filter(&self, stream: &mut EventStream, _errors: &mut Vec<ErrorEvent>) {
        let _ = std::io::stdout()
            .lock()
            .write_all(&super::out_stdout::lines(stream, &self.invalid_utf8));
    }
}
