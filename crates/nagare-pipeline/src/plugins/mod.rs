//! Plugins, one file per `@type`, named as Fluentd names them.

pub mod filter_stdout;
pub mod in_forward;
pub mod out_copy;
pub mod out_file;
pub mod out_forward;
pub mod out_null;
pub mod out_stdout;

use crate::plugin::{Filter, OutputPlugin, Tasks};
use crate::BuildCtx;
use nagare_config::{ConfigError, Section};
use std::sync::Arc;

/// Builds the output a `<match>` (or `<store>`) section describes.
pub fn build_output(
    sec: &Section,
    ctx: &mut BuildCtx,
    tasks: &mut Tasks,
) -> Result<Arc<dyn OutputPlugin>, ConfigError> {
    let ty = sec
        .type_name()
        .ok_or_else(|| ConfigError::new(sec.span.clone(), format!("<{}> needs @type", sec.name)))?;
    match ty {
        "forward" => out_forward::build(sec, ctx, tasks),
        "stdout" => out_stdout::build(sec, ctx),
        "null" => out_null::build(sec, ctx),
        "file" => out_file::build(sec, ctx),
        "copy" => out_copy::build(sec, ctx, tasks),
        other => Err(ConfigError::new(
            sec.span.clone(),
            format!(
                "unknown output @type '{other}' (available: forward, stdout, null, file, copy)"
            ),
        )),
    }
}

/// Builds the filter a `<filter>` section describes.
pub fn build_filter(
    sec: &Section,
    ctx: &mut BuildCtx,
    tasks: &mut Tasks,
) -> Result<Arc<dyn Filter>, ConfigError> {
    let _ = &tasks;
    let ty = sec
        .type_name()
        .ok_or_else(|| ConfigError::new(sec.span.clone(), "<filter> needs @type"))?;
    match ty {
        "stdout" => filter_stdout::build(sec, ctx),
        other => Err(ConfigError::new(
            sec.span.clone(),
            format!("unknown filter @type '{other}' (available: stdout)"),
        )),
    }
}

/// The plugin id: `@id`, or `<type>.<n>` in config order.
pub fn plugin_id(sec: &Section, ctx: &mut BuildCtx, ty: &str) -> String {
    match sec.param("@id") {
        Some(p) => p.value.clone(),
        None => {
            ctx.auto_ids += 1;
            format!("{ty}.{}", ctx.auto_ids)
        }
    }
}
