//! `@type file` (minimal for now): appends one line per event to `path`, either Fluentd's
//! `out_file` format (`TIME<TAB>TAG<TAB>JSON`) or plain JSON lines (`<format> @type json`).
//! A write is committed once it is in the file (page cache); full buffering, time
//! placeholders in `path` and gzip come with the configuration issue.

use crate::plugin::OutputPlugin;
use crate::BuildCtx;
use nagare_config::{ConfigError, Section};
use nagare_core::ack::Committed;
use nagare_core::json::{write_record, JsonStats};
use nagare_core::{EmitError, EventStream};
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    OutFile,
    Json,
}

pub struct FileOutput {
    file: Mutex<Option<std::fs::File>>,
    format: Format,
    add_tag_and_time: bool,
}

pub fn build(sec: &Section, ctx: &mut BuildCtx) -> Result<Arc<dyn OutputPlugin>, ConfigError> {
    let _ = super::plugin_id(sec, ctx, "file");
    let mut p = sec.params();
    p.ignore("@type");
    p.ignore("@id");
    p.ignore("@log_level");
    let path = p.required_str("path")?;
    let _append = p.bool("append", true)?;
    let mut format = Format::OutFile;
    let mut add_tag_and_time = false;
    if let Some(f) = p.section("format")? {
        let mut fp = f.params();
        let ty = fp.str_or("@type", "out_file")?;
        format = match ty.as_str() {
            "json" => Format::Json,
            "out_file" => Format::OutFile,
            other => {
                return Err(ConfigError::new(
                    f.span.clone(),
                    format!("unsupported <format> @type '{other}' (json, out_file)"),
                ))
            }
        };
        fp.finish()?;
    }
    if let Some(inject) = p.section("inject")? {
        let mut ip = inject.params();
        add_tag_and_time = ip.str("tag_key")?.is_some() | ip.str("time_key")?.is_some();
        ip.finish()?;
    }
    let _ = p.section("buffer")?;
    p.finish()?;
    let file = if ctx.dry_run {
        None
    } else {
        if let Some(dir) = std::path::Path::new(&path).parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| {
                    ConfigError::new(sec.span.clone(), format!("cannot open {path}: {e}"))
                })?,
        )
    };
    Ok(Arc::new(FileOutput {
        file: Mutex::new(file),
        format,
        add_tag_and_time,
    }))
}

#[async_trait::async_trait]
impl OutputPlugin for FileOutput {
    async fn emit(&self, stream: EventStream) -> Result<Committed, EmitError> {
        let mut out = Vec::with_capacity(stream.record_bytes() * 2);
        let mut st = JsonStats::default();
        for e in &stream.events {
            if self.format == Format::OutFile {
                out.extend_from_slice(super::out_stdout::format_time(e.time).as_bytes());
                out.push(b'\t');
                out.extend_from_slice(stream.tag.as_bytes());
                out.push(b'\t');
                write_record(&mut out, e.record.as_bytes(), &mut st);
            } else if self.add_tag_and_time {
                let r = e
                    .record
                    .with_str_field(b"tag", stream.tag.as_bytes())
                    .with_str_field(
                        b"time",
                        format!("{}.{:09}", e.time.secs(), e.time.nanos()).as_bytes(),
                    );
                write_record(&mut out, r.as_bytes(), &mut st);
            } else {
                write_record(&mut out, e.record.as_bytes(), &mut st);
            }
            out.push(b'\n');
        }
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let f = f.as_mut().ok_or(EmitError::new("file_not_open"))?;
        f.write_all(&out)
            .map_err(|_| EmitError::new("file_write_failed"))?;
        Ok(Committed::new())
    }
}
