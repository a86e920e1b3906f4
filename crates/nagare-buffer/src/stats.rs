//! Buffer and flush metrics, registered under the owning output's `@id` (label `plugin_id`).
//!
//! | metric | kind | meaning |
//! | --- | --- | --- |
//! | `nagare_buffer_bytes` | gauge | staged + queued + in-flight bytes as stored (disk for file buffers) |
//! | `nagare_buffer_memory_bytes` | gauge | of those, bytes held in memory (file buffers: chunks being written) |
//! | `nagare_buffer_total_limit_bytes` | gauge | `total_limit_size` |
//! | `nagare_buffer_staged_chunks` | gauge | chunks being filled |
//! | `nagare_buffer_queued_chunks` | gauge | queue length (chunks waiting to be written) |
//! | `nagare_buffer_inflight_chunks` | gauge | chunks being written |
//! | `nagare_buffer_appended_records_total` | counter | records committed by appends |
//! | `nagare_buffer_overflows_total` | counter | appends that found the buffer full (any `overflow_action`) |
//! | `nagare_buffer_blocked_appends_total` | counter | appends that waited (`overflow_action block`) |
//! | `nagare_buffer_refused_appends_total{reason}` | counter | appends refused (`buffer_full`, `shutting_down`, `io_error`) |
//! | `nagare_buffer_recovered_chunks_total`, `..._records_total` | counter | chunks found on disk at startup and queued |
//! | `nagare_buffer_quarantined_chunks_total{reason}`, `..._records_total{reason}` | counter | chunks moved to `quarantine/<reason>/` (`corrupt`, `unreadable`, `retry_exhausted`, `unrecoverable`); `..._records_total{reason="damaged_tail"}`: records of a damaged last frame set aside in `quarantine/torn_tail/` |
//! | `nagare_buffer_quarantine_errors_total` | counter | chunk files that could not be moved to quarantine (they stay in the buffer directory) |
//! | `nagare_buffer_unknown_files` | gauge | files in the buffer directory at startup that are not chunk files (e.g. Fluentd's `buffer.*.log`): left alone, not delivered |
//! | `nagare_buffer_torn_tails_total` | counter | incomplete or damaged tails (last appends) cut off a chunk |
//! | `nagare_buffer_fsyncs_total` | counter | `fdatasync` calls on chunk files |
//! | `nagare_output_chunks_written_total`, `nagare_output_records_written_total` | counter | written by the primary output |
//! | `nagare_output_retries_total` | counter | failed writes that will be retried |
//! | `nagare_output_retry_steps` | gauge | retries in the current failure streak (0 = healthy) |
//! | `nagare_output_next_retry_timestamp_seconds` | gauge | unix time of the next retry (0 = none pending) |
//! | `nagare_output_write_errors_total{reason}` | counter | failed writes (`retryable`, `unrecoverable`) |
//! | `nagare_output_secondary_chunks_total`, `..._records_total` | counter | chunks written to the `<secondary>` |
//! | `nagare_output_secondary_errors_total` | counter | failed secondary writes (the chunk is kept and retried) |
//! | `nagare_output_dropped_records_total{reason}` | counter | records given up on: `drop_oldest_chunk`, `retry_exhausted`, `unrecoverable` (memory buffers without a secondary), `lost_at_shutdown` (memory buffers) |

use nagare_core::metrics::{counter, gauge, Counter, Gauge, ReasonCounters};

/// Every metric of one buffered output.
#[derive(Clone, Debug)]
pub struct BufferStats {
    pub bytes: Gauge,
    pub memory_bytes: Gauge,
    pub total_limit: Gauge,
    pub queued_chunks: Gauge,
    pub staged_chunks: Gauge,
    pub inflight_chunks: Gauge,
    pub appended_records: Counter,
    pub overflows: Counter,
    pub blocked_appends: Counter,
    pub refused_appends: ReasonCounters,
    pub recovered_chunks: Counter,
    pub recovered_records: Counter,
    pub quarantined_chunks: ReasonCounters,
    pub quarantined_records: ReasonCounters,
    pub torn_tails: Counter,
    /// Files in the buffer directory at startup that are not chunk files (left alone).
    pub unknown_files: Gauge,
    pub quarantine_errors: Counter,
    pub fsyncs: Counter,
    pub written_chunks: Counter,
    pub written_records: Counter,
    pub retries: Counter,
    pub retry_steps: Gauge,
    pub next_retry: Gauge,
    pub write_errors: ReasonCounters,
    pub secondary_chunks: Counter,
    pub secondary_records: Counter,
    pub secondary_errors: Counter,
    /// Records dropped, by reason (`drop_oldest_chunk`, `retry_exhausted`, `unrecoverable`,
    /// `lost_at_shutdown`).
    pub dropped_records: ReasonCounters,
}

impl BufferStats {
    pub fn new(id: &str) -> Self {
        let l = [("plugin_id", id)];
        BufferStats {
            bytes: gauge(
                "nagare_buffer_bytes",
                "Bytes staged, queued and in flight, as stored",
                &l,
            ),
            memory_bytes: gauge(
                "nagare_buffer_memory_bytes",
                "Buffered bytes held in memory",
                &l,
            ),
            total_limit: gauge(
                "nagare_buffer_total_limit_bytes",
                "The buffer's total_limit_size",
                &l,
            ),
            queued_chunks: gauge(
                "nagare_buffer_queued_chunks",
                "Chunks waiting to be written",
                &l,
            ),
            staged_chunks: gauge("nagare_buffer_staged_chunks", "Chunks being filled", &l),
            inflight_chunks: gauge("nagare_buffer_inflight_chunks", "Chunks being written", &l),
            appended_records: counter(
                "nagare_buffer_appended_records_total",
                "Records appended",
                &l,
            ),
            overflows: counter(
                "nagare_buffer_overflows_total",
                "Appends that found the buffer full",
                &l,
            ),
            blocked_appends: counter(
                "nagare_buffer_blocked_appends_total",
                "Appends that waited for space (overflow_action block)",
                &l,
            ),
            refused_appends: ReasonCounters::new(
                "nagare_buffer_refused_appends_total",
                "Appends refused, by reason",
                &l,
            ),
            recovered_chunks: counter(
                "nagare_buffer_recovered_chunks_total",
                "Chunks found on disk at startup and queued",
                &l,
            ),
            recovered_records: counter(
                "nagare_buffer_recovered_records_total",
                "Records in chunks found on disk at startup",
                &l,
            ),
            quarantined_chunks: ReasonCounters::new(
                "nagare_buffer_quarantined_chunks_total",
                "Chunks moved to the quarantine folder, by reason",
                &l,
            ),
            quarantined_records: ReasonCounters::new(
                "nagare_buffer_quarantined_records_total",
                "Records in chunks moved to the quarantine folder, by reason",
                &l,
            ),
            torn_tails: counter(
                "nagare_buffer_torn_tails_total",
                "Incomplete or damaged tails (last appends) cut off a chunk",
                &l,
            ),
            unknown_files: gauge(
                "nagare_buffer_unknown_files",
                "Files in the buffer directory at startup that are not chunk files (left alone, not delivered)",
                &l,
            ),
            quarantine_errors: counter(
                "nagare_buffer_quarantine_errors_total",
                "Chunk files that could not be moved to quarantine (they stay in the buffer directory)",
                &l,
            ),
            fsyncs: counter(
                "nagare_buffer_fsyncs_total",
                "fdatasync calls on chunk files",
                &l,
            ),
            written_chunks: counter("nagare_output_chunks_written_total", "Chunks written", &l),
            written_records: counter("nagare_output_records_written_total", "Records written", &l),
            retries: counter(
                "nagare_output_retries_total",
                "Failed writes that will be retried",
                &l,
            ),
            retry_steps: gauge(
                "nagare_output_retry_steps",
                "Retries in the current failure streak",
                &l,
            ),
            next_retry: gauge(
                "nagare_output_next_retry_timestamp_seconds",
                "Unix time of the next retry (0 when none is pending)",
                &l,
            ),
            write_errors: ReasonCounters::new(
                "nagare_output_write_errors_total",
                "Failed chunk writes, by kind",
                &l,
            ),
            secondary_chunks: counter(
                "nagare_output_secondary_chunks_total",
                "Chunks written to the secondary",
                &l,
            ),
            secondary_records: counter(
                "nagare_output_secondary_records_total",
                "Records written to the secondary",
                &l,
            ),
            secondary_errors: counter(
                "nagare_output_secondary_errors_total",
                "Failed secondary writes",
                &l,
            ),
            dropped_records: ReasonCounters::new(
                "nagare_output_dropped_records_total",
                "Records dropped by the output, by reason",
                &l,
            ),
        }
    }
}
