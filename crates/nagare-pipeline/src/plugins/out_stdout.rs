//! `@type stdout`: one line per event, `TIME TAG: JSON` as Fluentd prints it.

use crate::plugin::OutputPlugin;
use crate::BuildCtx;
use nagare_config::{ConfigError, Section};
use nagare_core::ack::Committed;
use nagare_core::json::{write_record, JsonStats};
use nagare_core::metrics::Counter;
use nagare_core::{EmitError, EventStream, EventTime};
use std::io::Write;
use std::sync::Arc;

pub struct StdoutOutput {
    invalid_utf8: Counter,
}

/// `nagare_stdout_invalid_utf8_total{plugin_id}` (out_stdout and filter_stdout).
pub fn invalid_utf8_counter(id: &str) -> Counter {
    nagare_core::metrics::counter(
        "nagare_stdout_invalid_utf8_total",
        "Invalid UTF-8 sequences printed by @type stdout as U+FFFD",
        &[("plugin_id", id)],
    )
}

pub fn build(sec: &Section, ctx: &mut BuildCtx) -> Result<Arc<dyn OutputPlugin>, ConfigError> {
    let id = super::plugin_id(sec, ctx, "stdout");
    let mut p = sec.params();
    p.ignore("@type");
    p.ignore("@id");
    p.ignore("@log_level");
    // Fluentd configs often carry these: the line format is always Fluentd's default
    // (`TIME TAG: JSON`), and lines are written as events come (a `<buffer>` is checked, unused).
    let _ = p.section("format")?;
    crate::buffer::check_unused(&mut p, ctx, &id)?;
    p.finish()?;
    Ok(Arc::new(StdoutOutput {
        invalid_utf8: invalid_utf8_counter(&id),
    }))
}

/// `YYYY-MM-DD HH:MM:SS.NNNNNNNNN +0000`.
pub fn format_time(t: EventTime) -> String {
    let (y, m, d, hh, mm, ss) = nagare_core::civil::civil_from_secs(t.secs() as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}.{:09} +0000",
        t.nanos()
    )
}

/// `TIME TAG: JSON` lines for every event of `stream` (out_stdout and filter_stdout); the invalid UTF-8
/// sequences replaced are counted into `invalid_utf8`.
pub fn lines(stream: &EventStream, invalid_utf8: &Counter) -> Vec<u8> {
    let mut out = Vec::with_capacity(stream.record_bytes() * 2);
    let mut st = JsonStats::default();
    for e in &stream.events {
        out.extend_from_slice(format_time(e.time).as_bytes());
        out.push(b' ');
        out.extend_from_slice(stream.tag.as_bytes());
        out.extend_from_slice(b": ");
        write_record(&mut out, e.record.as_bytes(), &mut st);
        out.push(b'\n');
    }
    if st.invalid_utf8 > 0 {
        invalid_utf8.add(st.invalid_utf8 as u64);
    }
    out
}

#[async_trait::async_trait]
impl OutputPlugin for StdoutOutput {
    async fn emit(&self, stream: EventStream) -> Result<Committed, EmitError> {
        let out = lines(&stream, &self.invalid_utf8);
        let mut so = std::io::stdout().lock();
        so.write_all(&out)
            .map_err(|_| EmitError::new("stdout_write_failed"))?;
        let _ = so.flush();
        Ok(Committed::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(
            format_time(EventTime::new(1441588984, 123456789)),
            "2015-09-07 01:23:04.123456789 +0000"
        );
    }

    /// An unused `<buffer @type file>` without `path` is accepted under `<system> root_dir`
    /// (as for buffered outputs) and refused without it.
    #[test]
    fn unused_file_buffer_uses_root_dir() {
        let conf = |system: &str| {
            format!(
                "{system}<match a.**>\n  @type stdout\n  <buffer>\n    @type file\n  </buffer>\n</match>\n<match **>\n  @type null\n  <buffer>\n    @type file\n  </buffer>\n</match>\n"
            )
        };
        let check = |text: &str| {
            let root = nagare_config::parse_str(text, std::path::Path::new("t.conf")).unwrap();
            crate::Pipeline::validate(&root).map(|_| ())
        };
        check(&conf(
            "<system>\n  root_dir /tmp/nagare-unused\n</system>\n",
        ))
        .unwrap();
        let e = check(&conf("")).unwrap_err();
        assert!(e.to_string().contains("root_dir"), "{e}");
    }

    #[test]
    fn invalid_utf8_is_replaced_and_counted() {
        let c = invalid_utf8_counter("stdout-utf8-test");
        let ev = nagare_core::Event {
            time: EventTime::new(1, 0),
            record: nagare_core::Record::from_pairs(&[(&b"msg"[..], &b"a\xffb\xfe"[..])]),
        };
        let out = lines(&EventStream::new("t".into(), vec![ev]), &c);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with("t: {\"msg\":\"a\u{FFFD}b\u{FFFD}\"}\n"),
            "{text}"
        );
        assert_eq!(c.get(), 2);
    }
}
