//! `<buffer>` and `<secondary>` sections, and the emit wrapper of buffered outputs.
//!
//! A buffered output plugin does, in its `build`:
//!
//! ```ignore
//! let plan = buffer::BufferPlan::parse(&mut p, &buffer::Defaults::default(), ctx)?; // takes <buffer>, <secondary>
//! p.finish()?;
//! let out: Arc<dyn nagare_core::Output> = Arc::new(MyOutput::new(cfg)?);
//! let buffered = plan.start(out, &id, ctx, tasks)?; // opens/recovers, spawns the flush loop
//! Ok(buffered)                                      // Arc<Buffered>: what the router emits to
//! ```
//!
//! `Defaults` carries the output's own defaults (Fluentd's `config_set_default`): out_forward
//! chunks by `tag`; out_s3 would pass `chunk_keys: "time"` and `timekey: Some(3600s)`.
//! Chunks reach `Output::write` with their full `ChunkKey` (tag, timekey, record keys) and
//! **uncompressed** entries, whatever `compress` says.
//!
//! `<secondary>`: `@type secondary_file` (`directory`, `basename`, `compress`: the chunk's
//! msgpack entries, one durable file per chunk) or any output type (`@type file` with `path`,
//! `@type stdout`, another `forward`...): its chunks are decoded and emitted to it; the
//! primary's chunk keys are given to it so `${tag}` placeholders work.

use crate::plugin::{OutputPlugin, Tasks};
use crate::BuildCtx;
use nagare_buffer::secondary::{SecondaryFile, SecondaryFileConfig};
use nagare_buffer::{
    Buffer, BufferConfig, ChunkKeyList, ChunkKeys, Compress, FlushMode, FsyncPolicy,
    OverflowAction, RetryType, Storage, TimeKey,
};
use nagare_config::{ConfigError, Params, Section};
use nagare_core::ack::Committed;
use nagare_core::{Chunk, EmitError, EventStream, Output, WriteError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// An output's own buffer defaults (the rest are Fluentd's, by storage type).
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Chunk keys when `<buffer>` is absent or has no argument (`"tag"`, `"time"`, `""`).
    pub chunk_keys: &'static str,
    /// `timekey` default (Fluentd: 1 day; out_s3 uses 1 hour).
    pub timekey: Option<Duration>,
    /// `chunk_limit_size` default, instead of the storage's.
    pub chunk_limit_size: Option<usize>,
    /// `flush_interval` default, instead of 60 s.
    pub flush_interval: Option<Duration>,
    /// The output writes one tag per chunk (out_forward): `tag` must be a chunk key.
    pub require_tag: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            chunk_keys: "tag",
            timekey: None,
            chunk_limit_size: None,
            flush_interval: None,
            require_tag: false,
        }
    }
}

/// Parses `<buffer CHUNK_KEYS>` with the default defaults (validation; out_file uses it).
pub fn parse(sec: Option<&Section>) -> Result<BufferConfig, ConfigError> {
    parse_with(sec, &Defaults::default(), None, "output")
}

/// Checks the `<buffer>` of an output that does not buffer (null, stdout: Fluentd configs often
/// carry one) like a buffered output's, `<system> root_dir` included, and then ignores it.
pub fn check_unused(p: &mut Params<'_>, ctx: &BuildCtx, id: &str) -> Result<(), ConfigError> {
    if let Some(b) = p.section("buffer")? {
        parse_with(Some(b), &Defaults::default(), Some(ctx), id)?;
    }
    Ok(())
}

/// Parses a Fluentd zone: `+0900`, `-05:30`, `UTC`, `Z`.
fn parse_zone(z: &str) -> Option<i64> {
    let z = z.trim();
    if z.eq_ignore_ascii_case("utc") || z == "Z" || z.eq_ignore_ascii_case("gmt") {
        return Some(0);
    }
    let (sign, rest) = match z.as_bytes().first()? {
        b'+' => (1, &z[1..]),
        b'-' => (-1, &z[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let h: i64 = digits[..2].parse().ok()?;
    let m: i64 = digits[2..].parse().ok()?;
    if h > 23 || m > 59 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60))
}

/// The buffer directory for `path`: a directory as given, or for a Fluentd file pattern
/// (`/var/log/td-agent/buffer/s3.*.buffer`) the directory `s3._.buffer` beside it.
fn buffer_dir(path: &str) -> PathBuf {
    let p = Path::new(path);
    match p.file_name().map(|n| n.to_string_lossy().into_owned()) {
        Some(name) if name.contains('*') => p
            .parent()
            .unwrap_or(Path::new("."))
            .join(name.replace('*', "_")),
        _ => p.to_path_buf(),
    }
}

/// Parses `<buffer CHUNK_KEYS>` with an output's defaults. `ctx` gives `root_dir` for file
/// buffers without `path`; `id` names the buffer directory then.
pub fn parse_with(
    sec: Option<&Section>,
    d: &Defaults,
    ctx: Option<&BuildCtx>,
    id: &str,
) -> Result<BufferConfig, ConfigError> {
    let empty;
    let sec = match sec {
        Some(s) => s,
        None => {
            empty = Section::new(
                "buffer",
                "",
                nagare_config::Span::start_of(Path::new("<default>")),
            );
            &empty
        }
    };
    let err = |m: String| ConfigError::new(sec.span.clone(), m);
    let arg = if sec.arg.trim().is_empty() {
        d.chunk_keys
    } else {
        sec.arg.as_str()
    };
    let list = ChunkKeyList::parse(arg).map_err(err)?;
    if d.require_tag && !list.tag {
        return Err(err(format!(
            "this output sends one tag per chunk: its <buffer> chunk keys must include tag (got '{arg}')"
        )));
    }
    let mut p = sec.params();
    let ty = p.enumeration("@type", &["memory", "file"], "memory")?;
    let base = if ty == "file" {
        let path = match p.str("path")? {
            Some(path) => buffer_dir(&path),
            None => match ctx.and_then(|c| c.root_dir.as_ref()) {
                Some(root) => root.join("buffer").join(id),
                None => {
                    return Err(err(
                        "<buffer> @type file needs `path` (a directory of its own), or <system> root_dir"
                            .into(),
                    ))
                }
            },
        };
        BufferConfig::file(path)
    } else {
        p.ignore("path");
        BufferConfig::default()
    };
    let fsync = if ty == "file" {
        let policy = p.enumeration("fsync_policy", &["always", "interval", "never"], "interval")?;
        let interval = p.duration(
            "fsync_interval",
            nagare_buffer::config::DEFAULT_FSYNC_INTERVAL,
        )?;
        Some(match policy.as_str() {
            "always" => FsyncPolicy::Always,
            "never" => FsyncPolicy::Never,
            _ => FsyncPolicy::Interval(interval),
        })
    } else {
        None
    };
    let time = if list.time {
        let unit = p.duration(
            "timekey",
            d.timekey.unwrap_or(nagare_buffer::config::DEFAULT_TIMEKEY),
        )?;
        let wait = p.duration("timekey_wait", nagare_buffer::config::DEFAULT_TIMEKEY_WAIT)?;
        let use_utc = p.bool("timekey_use_utc", false)?;
        let zone = p.str("timekey_zone")?;
        let utc_offset = match (&zone, use_utc) {
            (Some(z), false) => parse_zone(z).ok_or_else(|| {
                err(format!(
                    "timekey_zone '{z}': use a fixed offset such as +0900 or -05:30 (named zones are not supported)"
                ))
            })?,
            _ => 0,
        };
        if unit.as_secs() == 0 {
            return Err(err("timekey must be at least 1s".into()));
        }
        Some(TimeKey {
            unit: unit.as_secs() as i64,
            wait,
            utc_offset,
        })
    } else {
        for k in ["timekey", "timekey_wait", "timekey_use_utc", "timekey_zone"] {
            if sec.param(k).is_some() {
                return Err(err(format!(
                    "'{k}' needs `time` among the chunk keys (<buffer tag,time>)"
                )));
            }
        }
        None
    };
    let chunk_keys = ChunkKeys {
        tag: list.tag,
        time,
        records: list.records,
    };
    let flush_thread_count: usize = p.int("flush_thread_count", base.flush_thread_count)?;
    let chunk_limit_default = d.chunk_limit_size.unwrap_or(base.chunk_limit_size);
    let mode = p.enumeration(
        "flush_mode",
        &["default", "interval", "immediate", "lazy"],
        "default",
    )?;
    let flush_mode = match mode.as_str() {
        "immediate" => FlushMode::Immediate,
        "lazy" => FlushMode::Lazy,
        "interval" => FlushMode::Interval,
        _ if chunk_keys.time.is_some() => FlushMode::Lazy,
        _ => FlushMode::Interval,
    };
    let chunk_limit_size = p.size("chunk_limit_size", chunk_limit_default as u64)? as usize;
    let mut total_limit_size = p.size("total_limit_size", base.total_limit_size as u64)? as usize;
    if let Some(q) = p.opt_size("queue_limit_length")? {
        // v0.12: total = queue_limit_length chunks.
        if sec.param("total_limit_size").is_none() {
            total_limit_size = chunk_limit_size.saturating_mul(q as usize);
        }
    }
    let compress = match p
        .enumeration("compress", &["text", "gzip"], "text")?
        .as_str()
    {
        "gzip" => Compress::Gzip,
        _ => Compress::Text,
    };
    let mut cfg = BufferConfig {
        storage: base.storage.clone(),
        chunk_keys,
        chunk_limit_size,
        chunk_limit_records: p.opt_size("chunk_limit_records")?.map(|v| v as usize),
        chunk_full_threshold: p.float("chunk_full_threshold", base.chunk_full_threshold)?,
        total_limit_size,
        queued_chunks_limit_size: p.opt_size("queued_chunks_limit_size")?.map(|v| v as usize),
        compress,
        flush_mode,
        flush_interval: p.duration(
            "flush_interval",
            d.flush_interval.unwrap_or(base.flush_interval),
        )?,
        flush_thread_count: flush_thread_count.max(1),
        flush_at_shutdown: p.bool("flush_at_shutdown", base.flush_at_shutdown)?,
        retry_type: match p
            .enumeration(
                "retry_type",
                &["exponential_backoff", "periodic"],
                "exponential_backoff",
            )?
            .as_str()
        {
            "periodic" => RetryType::Periodic,
            _ => RetryType::ExponentialBackoff,
        },
        retry_wait: p.duration("retry_wait", base.retry_wait)?,
        retry_exponential_backoff_base: p.float(
            "retry_exponential_backoff_base",
            base.retry_exponential_backoff_base,
        )?,
        retry_max_interval: p.opt_duration("retry_max_interval")?,
        retry_randomize: p.bool("retry_randomize", base.retry_randomize)?,
        retry_timeout: p.duration("retry_timeout", base.retry_timeout)?,
        retry_max_times: p.opt_size("retry_max_times")?.map(|v| v as u32),
        retry_forever: p.bool("retry_forever", base.retry_forever)?,
        retry_secondary_threshold: p
            .float("retry_secondary_threshold", base.retry_secondary_threshold)?,
        overflow_action: match p
            .enumeration(
                "overflow_action",
                &["throw_exception", "block", "drop_oldest_chunk"],
                "throw_exception",
            )?
            .as_str()
        {
            "block" => OverflowAction::Block,
            "drop_oldest_chunk" => OverflowAction::DropOldestChunk,
            _ => OverflowAction::ThrowException,
        },
    };
    if let (Some(f), Storage::File { path, .. }) = (fsync, &cfg.storage) {
        cfg.storage = Storage::File {
            path: path.clone(),
            fsync: f,
        };
    }
    // Accepted from Fluentd configs, no effect in Nagare (documented in docs/buffers.md).
    for k in [
        "flush_thread_interval",
        "flush_thread_burst_interval",
        "delayed_commit_timeout",
        "disable_chunk_backup",
        "path_suffix",
        "retry_randomize_width",
    ] {
        p.ignore(k);
    }
    p.finish()?;
    cfg.validate().map_err(err)?;
    Ok(cfg)
}

enum SecondaryPlan {
    File(SecondaryFileConfig),
    Output(Section),
}

/// A parsed `<buffer>` + `<secondary>`, ready to start once the output exists.
pub struct BufferPlan {
    pub config: BufferConfig,
    secondary: Option<SecondaryPlan>,
    span: nagare_config::Span,
}

impl BufferPlan {
    /// Takes `<buffer>` and `<secondary>` from an output's params.
    pub fn parse(
        p: &mut Params<'_>,
        defaults: &Defaults,
        ctx: &mut BuildCtx,
        id: &str,
    ) -> Result<BufferPlan, ConfigError> {
        let span = p.section_ref().span.clone();
        let bsec = p.section("buffer")?;
        let config = parse_with(bsec, defaults, Some(ctx), id)?;
        let secondary = match p.section("secondary")? {
            None => None,
            Some(s) => Some(parse_secondary(s, bsec)?),
        };
        Ok(BufferPlan {
            config,
            secondary,
            span,
        })
    }

    /// Opens the buffer (a file buffer recovers here), builds the secondary, adds the flush
    /// loop to `tasks`, and returns what the router emits to. With `--dry-run` nothing is
    /// opened (a memory buffer stands in).
    pub fn start(
        self,
        output: Arc<dyn Output>,
        id: &str,
        ctx: &mut BuildCtx,
        tasks: &mut Tasks,
    ) -> Result<Arc<Buffered>, ConfigError> {
        let secondary: Option<Arc<dyn Output>> = match self.secondary {
            None => None,
            Some(SecondaryPlan::File(c)) => Some(Arc::new(SecondaryFile::new(c))),
            Some(SecondaryPlan::Output(sec)) => {
                let plugin = crate::plugins::build_output(&sec, ctx, tasks)?;
                Some(Arc::new(EmitSecondary { plugin }))
            }
        };
        let mut cfg = self.config;
        if ctx.dry_run {
            cfg.storage = Storage::Memory;
        }
        let buffer = Arc::new(
            Buffer::open(cfg, id)
                .map_err(|e| ConfigError::new(self.span.clone(), e.to_string()))?,
        );
        let drain = ctx.drain_timeout;
        {
            let (b, id) = (buffer.clone(), id.to_string());
            tasks
                .add(move |sd| nagare_buffer::flush::run_with(b, output, secondary, sd, drain, id));
        }
        {
            // At shutdown an append blocked on a full buffer (`overflow_action block`) is
            // refused as soon as the inputs are told to stop: the outputs drain only after the
            // inputs finished, so waiting for space would hang the shutdown.
            let b = buffer.clone();
            tasks.on_inputs_stopping(move || b.stop_waiting());
        }
        Ok(Arc::new(Buffered { buffer }))
    }
}

fn parse_secondary(s: &Section, primary: Option<&Section>) -> Result<SecondaryPlan, ConfigError> {
    match s.type_name() {
        Some("secondary_file") => {
            let mut p = s.params();
            let mut c = SecondaryFileConfig::new(p.required_str("directory")?);
            c.basename = p.str_or("basename", "dump.bin")?;
            c.compress = match p
                .enumeration("compress", &["text", "gzip"], "text")?
                .as_str()
            {
                "gzip" => Compress::Gzip,
                _ => Compress::Text,
            };
            if p.bool("append", false)? {
                return Err(ConfigError::new(
                    s.span.clone(),
                    "secondary_file: append true is not supported (each chunk is written to its own file, durably)",
                ));
            }
            p.finish()?;
            Ok(SecondaryPlan::File(c))
        }
        Some(_) => {
            let mut sec = s.clone();
            if !sec.children.iter().any(|c| c.name == "buffer") {
                // The primary's chunk keys, so `${tag}` / `${service}` placeholders resolve.
                let arg = primary.map(|b| b.arg.clone()).unwrap_or_default();
                sec.children
                    .push(Section::new("buffer", arg, s.span.clone()));
            }
            Ok(SecondaryPlan::Output(sec))
        }
        None => Err(ConfigError::new(s.span.clone(), "<secondary> needs @type")),
    }
}

/// A secondary built from any output type: chunks are decoded and emitted to it.
struct EmitSecondary {
    plugin: Arc<dyn OutputPlugin>,
}

#[async_trait::async_trait]
impl Output for EmitSecondary {
    async fn write(&self, chunk: &Chunk) -> Result<(), WriteError> {
        let events = nagare_buffer::entries::decode(&chunk.bytes)
            .map_err(|e| WriteError::Unrecoverable(e.to_string()))?;
        self.plugin
            .emit(EventStream::new(chunk.tag.clone(), events))
            .await
            .map(|_| ())
            .map_err(|e| WriteError::Retryable(e.to_string()))
    }
}

/// An output whose emit appends to its buffer (the commit point).
pub struct Buffered {
    pub buffer: Arc<Buffer>,
}

#[async_trait::async_trait]
impl OutputPlugin for Buffered {
    async fn emit(&self, stream: EventStream) -> Result<Committed, EmitError> {
        self.buffer
            .append(&stream.tag, &stream.events)
            .await
            .map_err(|e| EmitError::new(e.reason()))?;
        Ok(Committed::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sec(text: &str) -> Section {
        let root = nagare_config::parse_str(text, Path::new("t.conf")).unwrap();
        root.children[0].children[0].clone()
    }

    fn parse_one(text: &str) -> Result<BufferConfig, ConfigError> {
        parse(Some(&sec(text)))
    }

    #[test]
    fn defaults_by_storage_and_chunk_keys() {
        let c = parse_one("<match **>\n <buffer>\n </buffer>\n</match>\n").unwrap();
        assert_eq!(c.chunk_keys, ChunkKeys::tag());
        assert_eq!(c.flush_mode, FlushMode::Interval);
        assert!(c.flush_at_shutdown);
        let c = parse_one(
            "<match **>\n <buffer time,service,$.k8s.ns>\n  @type file\n  path /tmp/x/buf.*.log\n  timekey 300\n  timekey_wait 10s\n  timekey_zone +0900\n </buffer>\n</match>\n",
        )
        .unwrap();
        assert_eq!(c.flush_mode, FlushMode::Lazy);
        assert!(!c.flush_at_shutdown);
        assert_eq!(c.chunk_limit_size, 16 * 1024 * 1024);
        let t = c.chunk_keys.time.unwrap();
        assert_eq!((t.unit, t.wait.as_secs(), t.utc_offset), (300, 10, 32400));
        assert_eq!(c.chunk_keys.records.len(), 2);
        match &c.storage {
            Storage::File { path, fsync } => {
                assert_eq!(path, Path::new("/tmp/x/buf._.log"));
                assert_eq!(fsync.name(), "interval");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let e =
            parse_one("<match **>\n <buffer>\n  @type file\n </buffer>\n</match>\n").unwrap_err();
        assert!(e.to_string().contains("needs `path`"), "{e}");
        let e = parse_one("<match **>\n <buffer tag>\n  timekey 1h\n </buffer>\n</match>\n")
            .unwrap_err();
        assert!(e.to_string().contains("needs `time`"), "{e}");
        let e = parse_one(
            "<match **>\n <buffer time>\n  timekey_zone Asia/Tokyo\n </buffer>\n</match>\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("fixed offset"), "{e}");
        let e = parse_one("<match **>\n <buffer>\n  fsync_policy always\n </buffer>\n</match>\n")
            .unwrap_err();
        assert!(e.to_string().contains("fsync_policy"), "{e}");
        let e = parse_one("<match **>\n <buffer>\n  chunk_limit_size 10m\n  total_limit_size 1m\n </buffer>\n</match>\n").unwrap_err();
        assert!(e.to_string().contains("total_limit_size"), "{e}");
        let d = Defaults {
            require_tag: true,
            ..Defaults::default()
        };
        let e = parse_with(
            Some(&sec("<match **>\n <buffer time>\n </buffer>\n</match>\n")),
            &d,
            None,
            "x",
        )
        .unwrap_err();
        assert!(e.to_string().contains("must include tag"), "{e}");
    }

    #[test]
    fn zones() {
        assert_eq!(parse_zone("+0900"), Some(32400));
        assert_eq!(parse_zone("-05:30"), Some(-19800));
        assert_eq!(parse_zone("UTC"), Some(0));
        assert_eq!(parse_zone("JST"), None);
    }
}
