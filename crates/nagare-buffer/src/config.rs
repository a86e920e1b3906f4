//! `<buffer>` parameters, Fluentd's names and defaults (memory buffer).

use std::time::Duration;

/// Default `chunk_limit_size` for the memory buffer (Fluentd: 8 MiB).
pub const DEFAULT_CHUNK_LIMIT_SIZE: usize = 8 * 1024 * 1024;
/// Default `total_limit_size` for the memory buffer (Fluentd: 512 MiB).
pub const DEFAULT_TOTAL_LIMIT_SIZE: usize = 512 * 1024 * 1024;
/// Default `flush_interval` (Fluentd: 60 s).
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(60);
/// Default `retry_wait` (Fluentd: 1 s).
pub const DEFAULT_RETRY_WAIT: Duration = Duration::from_secs(1);
/// Default `retry_timeout` (Fluentd: 72 h).
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(72 * 3600);

/// `overflow_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowAction {
    /// Refuse the append; the input closes the connection without ack.
    ThrowException,
    /// Wait for space (back-pressure through the input's read loop).
    Block,
    /// Drop the oldest queued chunk (counted) to make room.
    DropOldestChunk,
}

/// `flush_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    /// Every `flush_interval`.
    Interval,
    /// After every append.
    Immediate,
    /// Only when chunks are full (or, with time keys, when their timekey closes).
    Lazy,
}

/// `retry_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryType {
    ExponentialBackoff,
    Periodic,
}

/// `<buffer>` settings.
#[derive(Debug, Clone)]
pub struct BufferConfig {
    /// `chunk_limit_size`: a chunk is queued once it reaches this many bytes.
    pub chunk_limit_size: usize,
    /// `chunk_limit_records`: ... or this many records.
    pub chunk_limit_records: Option<usize>,
    /// `total_limit_size`: staged plus queued bytes.
    pub total_limit_size: usize,
    /// `queued_chunks_limit_size`: queue length that stops interval flushes from enqueueing
    /// more (defaults to `flush_thread_count`, as Fluentd).
    pub queued_chunks_limit_size: Option<usize>,
    /// `flush_mode`.
    pub flush_mode: FlushMode,
    /// `flush_interval`.
    pub flush_interval: Duration,
    /// `flush_thread_count`: concurrent writes.
    pub flush_thread_count: usize,
    /// `flush_at_shutdown`: write everything left when stopping (default true for memory).
    pub flush_at_shutdown: bool,
    /// `retry_type`.
    pub retry_type: RetryType,
    /// `retry_wait`: first wait (and the period for `periodic`).
    pub retry_wait: Duration,
    /// `retry_exponential_backoff_base`.
    pub retry_exponential_backoff_base: f64,
    /// `retry_max_interval`: cap on one wait.
    pub retry_max_interval: Option<Duration>,
    /// `retry_randomize`: jitter waits (0.875x-1.125x, as Fluentd).
    pub retry_randomize: bool,
    /// `retry_timeout`: give up on a chunk after retrying this long.
    pub retry_timeout: Duration,
    /// `retry_max_times`: ... or after this many retries.
    pub retry_max_times: Option<u32>,
    /// `retry_forever`: never give up.
    pub retry_forever: bool,
    /// `overflow_action`.
    pub overflow_action: OverflowAction,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            chunk_limit_size: DEFAULT_CHUNK_LIMIT_SIZE,
            chunk_limit_records: None,
            total_limit_size: DEFAULT_TOTAL_LIMIT_SIZE,
            queued_chunks_limit_size: None,
            flush_mode: FlushMode::Interval,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            flush_thread_count: 1,
            flush_at_shutdown: true,
            retry_type: RetryType::ExponentialBackoff,
            retry_wait: DEFAULT_RETRY_WAIT,
            retry_exponential_backoff_base: 2.0,
            retry_max_interval: None,
            retry_randomize: true,
            retry_timeout: DEFAULT_RETRY_TIMEOUT,
            retry_max_times: None,
            retry_forever: false,
            overflow_action: OverflowAction::ThrowException,
        }
    }
}
