//! `<buffer>` sections -> [`BufferConfig`], and the output wrapper that appends to a buffer.

use crate::plugin::OutputPlugin;
use nagare_buffer::{Buffer, BufferConfig, FlushMode, OverflowAction, RetryType};
use nagare_config::{ConfigError, Section};
use nagare_core::ack::Committed;
use nagare_core::{EmitError, EventStream};
use std::sync::Arc;

/// Parses `<buffer CHUNK_KEYS>`; `None` gives the defaults.
pub fn parse(sec: Option<&Section>) -> Result<BufferConfig, ConfigError> {
    let d = BufferConfig::default();
    let Some(sec) = sec else { return Ok(d) };
    for key in sec.arg.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        if key != "tag" {
            return Err(ConfigError::new(
                sec.span.clone(),
                format!("chunk key '{key}' is not supported by this output yet (supported: tag)"),
            ));
        }
    }
    let mut p = sec.params();
    let ty = p.str_or("@type", "memory")?;
    if ty != "memory" {
        return Err(ConfigError::new(
            sec.span.clone(),
            format!("buffer @type '{ty}' is not supported yet (memory)"),
        ));
    }
    let flush_thread_count: usize = p.int("flush_thread_count", d.flush_thread_count)?;
    let cfg = BufferConfig {
        chunk_limit_size: p.size("chunk_limit_size", d.chunk_limit_size as u64)? as usize,
        chunk_limit_records: p.opt_size("chunk_limit_records")?.map(|v| v as usize),
        total_limit_size: p.size("total_limit_size", d.total_limit_size as u64)? as usize,
        queued_chunks_limit_size: p.opt_size("queued_chunks_limit_size")?.map(|v| v as usize),
        flush_mode: match p
            .enumeration(
                "flush_mode",
                &["default", "interval", "immediate", "lazy"],
                "default",
            )?
            .as_str()
        {
            "immediate" => FlushMode::Immediate,
            "lazy" => FlushMode::Lazy,
            _ => FlushMode::Interval,
        },
        flush_interval: p.duration("flush_interval", d.flush_interval)?,
        flush_thread_count: flush_thread_count.max(1),
        flush_at_shutdown: p.bool("flush_at_shutdown", d.flush_at_shutdown)?,
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
        retry_wait: p.duration("retry_wait", d.retry_wait)?,
        retry_exponential_backoff_base: p.float(
            "retry_exponential_backoff_base",
            d.retry_exponential_backoff_base,
        )?,
        retry_max_interval: p.opt_duration("retry_max_interval")?,
        retry_randomize: p.bool("retry_randomize", d.retry_randomize)?,
        retry_timeout: p.duration("retry_timeout", d.retry_timeout)?,
        retry_max_times: p.opt_size("retry_max_times")?.map(|v| v as u32),
        retry_forever: p.bool("retry_forever", d.retry_forever)?,
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
    p.finish()?;
    Ok(cfg)
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
