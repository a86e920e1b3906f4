//! Plugins, one file per `@type`, named as Fluentd names them.

pub mod filter_concat;
pub mod filter_grep;
pub mod filter_parser;
pub mod filter_record_transformer;
pub mod filter_stdout;
pub mod in_forward;
pub mod out_cloudwatch_logs;
pub mod out_copy;
pub mod out_file;
pub mod out_forward;
pub mod out_null;
pub mod out_rewrite_tag_filter;
pub mod out_s3;
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
        "cloudwatch_logs" => out_cloudwatch_logs::build(sec, ctx, tasks),
        "stdout" => out_stdout::build(sec, ctx),
        "null" => out_null::build(sec, ctx),
        "file" => out_file::build(sec, ctx),
        "copy" => out_copy::build(sec, ctx, tasks),
        "rewrite_tag_filter" => out_rewrite_tag_filter::build(sec, ctx, tasks),
        "s3" => out_s3::build(sec, ctx, tasks),
        other => Err(ConfigError::new(
            sec.span.clone(),
            format!(
                "unknown output @type '{other}' (available: forward, stdout, null, file, copy, rewrite_tag_filter)"
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
        "concat" => filter_concat::build(sec, ctx, tasks),
        "parser" => filter_parser::build(sec, ctx),
        "grep" => filter_grep::build(sec, ctx),
        "record_transformer" => filter_record_transformer::build(sec, ctx),
        other => Err(ConfigError::new(
            sec.span.clone(),
            format!("unknown filter @type '{other}' (available: stdout, concat, parser, grep, record_transformer)"),
        )),
    }
}

/// The plugin id: `@id`, or `<type>.<n>` in config order. Also records the plugin for
/// `/api/plugins.json`.
pub fn plugin_id(sec: &Section, ctx: &mut BuildCtx, ty: &str) -> String {
    let id = match sec.param("@id") {
        Some(p) => p.value.clone(),
        None => {
            ctx.auto_ids += 1;
            format!("{ty}.{}", ctx.auto_ids)
        }
    };
    let category = match sec.name.as_str() {
        "source" => "input",
        "filter" => "filter",
        _ => "output",
    };
    ctx.inventory.push(crate::admin::PluginInfo {
        id: id.clone(),
        category,
        type_name: sec.type_name().unwrap_or(ty).to_string(),
        config: sec
            .params
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect(),
    });
    id
}
