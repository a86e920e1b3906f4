//! `<buffer>` parameters: Fluentd's names and defaults, plus the few Nagare-only settings of the
//! file buffer (`fsync_policy`, `fsync_interval`). Parsing the config syntax happens in
//! `nagare-pipeline` (`buffer.rs`); this is the validated result.

use crate::key::ChunkKeys;
use std::path::PathBuf;
use std::time::Duration;

/// Default `chunk_limit_size` for the memory buffer (Fluentd: 8 MiB).
pub const DEFAULT_CHUNK_LIMIT_SIZE: usize = 8 * 1024 * 1024;
/// Default `total_limit_size` for the memory buffer (Fluentd: 512 MiB).
pub const DEFAULT_TOTAL_LIMIT_SIZE: usize = 512 * 1024 * 1024;
/// Default `chunk_limit_size` for the file buffer. Fluentd uses 256 MiB; Nagare uses 16 MiB
/// because a chunk is read into memory (and decompressed) when it is written, once per flush
/// thread: 256 MiB chunks would make a 512 MiB sidecar OOM with two flush threads.
pub const DEFAULT_FILE_CHUNK_LIMIT_SIZE: usize = 16 * 1024 * 1024;
/// Default `total_limit_size` for the file buffer (Fluentd: 64 GiB). Counts bytes on disk.
pub const DEFAULT_FILE_TOTAL_LIMIT_SIZE: usize = 64 * 1024 * 1024 * 1024;
/// Default `flush_interval` (Fluentd: 60 s).
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(60);
/// Default `retry_wait` (Fluentd: 1 s).
pub const DEFAULT_RETRY_WAIT: Duration = Duration::from_secs(1);
/// Default `retry_timeout` (Fluentd: 72 h).
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(72 * 3600);
/// Default `timekey_wait` (Fluentd: 600 s).
pub const DEFAULT_TIMEKEY_WAIT: Duration = Duration::from_secs(600);
/// Default `timekey` (Fluentd: 1 day).
pub const DEFAULT_TIMEKEY: Duration = Duration::from_secs(86400);
/// Default `chunk_full_threshold` (Fluentd: 0.95).
pub const DEFAULT_CHUNK_FULL_THRESHOLD: f64 = 0.95;
/// Default `retry_secondary_threshold` (Fluentd: 0.8).
pub const DEFAULT_RETRY_SECONDARY_THRESHOLD: f64 = 0.8;
/// Default `fsync_interval` of `fsync_policy interval`.
pub const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_secs(1);

/// `overflow_action`: what an append does when `total_limit_size` is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowAction {
    /// Refuse the append; the input closes the connection without ack, the client resends.
    ThrowException,
    /// Wait for space (back-pressure through the input's read loop).
    Block,
    /// Drop the oldest queued chunk (or, with nothing queued, the oldest staged one) to make
    /// room; counted as `dropped_records{reason="drop_oldest_chunk"}` and logged.
    DropOldestChunk,
}

/// `flush_mode`, resolved (`default` is `lazy` with a `time` chunk key, `interval` otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    /// Staged chunks are queued `flush_interval` after they were created.
    Interval,
    /// Every append queues its chunk(s) at once.
    Immediate,
    /// Only full chunks (and, with a `time` key, closed time slices) are queued.
    Lazy,
}

/// `retry_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryType {
    ExponentialBackoff,
    Periodic,
}

/// `compress`: how chunks are stored. Outputs always receive uncompressed entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compress {
    Text,
    /// Each append is stored as one gzip member (level 1); decompressed when the chunk is
    /// dequeued for writing.
    Gzip,
}

/// `fsync_policy` (Nagare-only) of the file buffer: when an append is made durable against
/// power loss. Every policy survives a process crash (kill -9, OOM kill): an append is in the
/// kernel's page cache before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` before the append returns (before the ack): survives power loss.
    Always,
    /// A background `fdatasync` of every written file every `fsync_interval` (files of chunks
    /// already written downstream and deleted are skipped): power loss may lose the
    /// acknowledged appends of the last interval.
    Interval(Duration),
    /// Never `fdatasync`; the kernel writes back on its own schedule.
    Never,
}

impl FsyncPolicy {
    pub fn name(&self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Interval(_) => "interval",
            FsyncPolicy::Never => "never",
        }
    }
}

/// Where chunks live.
#[derive(Debug, Clone, PartialEq)]
pub enum Storage {
    /// `@type memory`.
    Memory,
    /// `@type file`.
    File {
        /// `path`: this buffer's own directory (created if missing; one buffer per directory,
        /// enforced with a lock file).
        path: PathBuf,
        /// `fsync_policy` / `fsync_interval`.
        fsync: FsyncPolicy,
    },
}

/// `timekey`, `timekey_wait`, `timekey_zone` / `timekey_use_utc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeKey {
    /// Slice length in seconds (`timekey`).
    pub unit: i64,
    /// How long after a slice ends its chunk is queued (`timekey_wait`, lazy flushing).
    pub wait: Duration,
    /// UTC offset in seconds of the zone slices are aligned to (`timekey_zone +0900` is
    /// 32400). Nagare's default is UTC: see docs/buffers.md.
    pub utc_offset: i64,
}

impl TimeKey {
    /// Start (unix seconds) of the slice holding `secs`.
    pub fn slice(&self, secs: i64) -> i64 {
        let unit = self.unit.max(1);
        (secs + self.utc_offset).div_euclid(unit) * unit - self.utc_offset
    }
}

/// `<buffer>` settings.
#[derive(Debug, Clone)]
pub struct BufferConfig {
    /// `@type` and its storage settings.
    pub storage: Storage,
    /// The chunk keys (`<buffer tag,time,service>`), with `timekey` settings.
    pub chunk_keys: ChunkKeys,
    /// `chunk_limit_size`: a chunk is queued before its **uncompressed** entries would exceed
    /// this many bytes (so an output never gets a larger chunk, except for one oversized event).
    pub chunk_limit_size: usize,
    /// `chunk_limit_records`: ... or this many records.
    pub chunk_limit_records: Option<usize>,
    /// `chunk_full_threshold`: a chunk at this fraction of `chunk_limit_size` is queued.
    pub chunk_full_threshold: f64,
    /// `total_limit_size`: staged + queued + in-flight bytes as stored (compressed size with
    /// `compress gzip`; on disk for the file buffer).
    pub total_limit_size: usize,
    /// `queued_chunks_limit_size`: interval flushes stop queueing staged chunks while the queue
    /// is this long (Fluentd: defaults to `flush_thread_count`).
    pub queued_chunks_limit_size: Option<usize>,
    /// `compress`.
    pub compress: Compress,
    /// `flush_mode`, resolved.
    pub flush_mode: FlushMode,
    /// `flush_interval`.
    pub flush_interval: Duration,
    /// `flush_thread_count`: concurrent writes.
    pub flush_thread_count: usize,
    /// `flush_at_shutdown`: queue and write everything when stopping (Fluentd: true for
    /// memory, false for file buffers).
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
    /// `retry_timeout`: give up after retrying this long.
    pub retry_timeout: Duration,
    /// `retry_max_times`: ... or after this many retries.
    pub retry_max_times: Option<u32>,
    /// `retry_forever`: never give up (unrecoverable errors still go to the secondary).
    pub retry_forever: bool,
    /// `retry_secondary_threshold`: with a `<secondary>`, switch to it after this fraction of
    /// `retry_timeout`.
    pub retry_secondary_threshold: f64,
    /// `overflow_action`.
    pub overflow_action: OverflowAction,
}

impl Default for BufferConfig {
    /// The memory buffer with Fluentd's defaults, chunked by tag.
    fn default() -> Self {
        BufferConfig {
            storage: Storage::Memory,
            chunk_keys: ChunkKeys::tag(),
            chunk_limit_size: DEFAULT_CHUNK_LIMIT_SIZE,
            chunk_limit_records: None,
            chunk_full_threshold: DEFAULT_CHUNK_FULL_THRESHOLD,
            total_limit_size: DEFAULT_TOTAL_LIMIT_SIZE,
            queued_chunks_limit_size: None,
            compress: Compress::Text,
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
            retry_secondary_threshold: DEFAULT_RETRY_SECONDARY_THRESHOLD,
            overflow_action: OverflowAction::ThrowException,
        }
    }
}

impl BufferConfig {
    /// The file buffer at `path` with its defaults (16 MiB chunks, 64 GiB total,
    /// `flush_at_shutdown false`, `fsync_policy interval` every second).
    pub fn file(path: impl Into<PathBuf>) -> Self {
        BufferConfig {
            storage: Storage::File {
                path: path.into(),
                fsync: FsyncPolicy::Interval(DEFAULT_FSYNC_INTERVAL),
            },
            chunk_limit_size: DEFAULT_FILE_CHUNK_LIMIT_SIZE,
            total_limit_size: DEFAULT_FILE_TOTAL_LIMIT_SIZE,
            flush_at_shutdown: false,
            ..Default::default()
        }
    }

    /// Whether chunks are kept on disk.
    pub fn is_persistent(&self) -> bool {
        matches!(self.storage, Storage::File { .. })
    }

    /// The queue length at which interval flushes stop queueing.
    pub fn queue_limit(&self) -> usize {
        self.queued_chunks_limit_size
            .unwrap_or(self.flush_thread_count.max(1))
    }

    /// Checks values no parser can express (called by [`crate::Buffer::open`]).
    pub fn validate(&self) -> Result<(), String> {
        if self.chunk_limit_size == 0 {
            return Err("chunk_limit_size must be > 0".into());
        }
        if self.total_limit_size < self.chunk_limit_size {
            return Err(format!(
                "total_limit_size ({}) must be at least chunk_limit_size ({})",
                self.total_limit_size, self.chunk_limit_size
            ));
        }
        if self.chunk_limit_records == Some(0) {
            return Err("chunk_limit_records must be > 0".into());
        }
        if !(self.chunk_full_threshold > 0.0 && self.chunk_full_threshold <= 1.0) {
            return Err("chunk_full_threshold must be in (0, 1]".into());
        }
        if !(self.retry_secondary_threshold > 0.0 && self.retry_secondary_threshold <= 1.0) {
            return Err("retry_secondary_threshold must be in (0, 1]".into());
        }
        if self.retry_exponential_backoff_base < 1.0 {
            return Err("retry_exponential_backoff_base must be >= 1".into());
        }
        if let Some(t) = &self.chunk_keys.time {
            if t.unit <= 0 {
                return Err("timekey must be > 0".into());
            }
        }
        if let Storage::File {
            fsync: FsyncPolicy::Interval(d),
            ..
        } = &self.storage
        {
            if d.is_zero() {
                return Err("fsync_interval must be > 0 (use fsync_policy always)".into());
            }
        }
        Ok(())
    }
}
