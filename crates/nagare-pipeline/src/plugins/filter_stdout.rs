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

pub fn build(sec: &Section, _ctx: &mut BuildCtx) -> Result<Arc<dyn Filter>, ConfigError> {
    // Its `@id`, or `filter_stdout`: no auto-id is taken, since auto-ids number the plugins
    // after it too (and name their buffer directories under `root_dir`).
    let id = sec
        .param("@id")
        .map(|p| p.value.clone())
        .unwrap_or_else(|| "filter_stdout".into());
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
