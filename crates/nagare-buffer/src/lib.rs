//! Fluentd's buffered-output model, with its silent-loss paths designed out.
//!
//! ```text
//! append(tag, events) --group by chunk key--> staged chunk per key --full / due--> queue
//!   Ok = committed (in_forward may ack)                                             |
//!                              flush::run: dequeue -> Output::write -> purge | retry | secondary
//! ```
//!
//! * [`Buffer`]: one output's buffer. Events are appended to a *staged* chunk per chunk key
//!   ([`key`]: `tag`, `time`, record keys such as `service` or `$.kubernetes.namespace_name`);
//!   a staged chunk is queued when full (`chunk_limit_size`, `chunk_limit_records`,
//!   `chunk_full_threshold`), when due (`flush_mode interval`: `flush_interval` after it was
//!   created; with a `time` key: `timekey_wait` after its slice ended), at once
//!   (`flush_mode immediate`), or at shutdown (`flush_at_shutdown`).
//! * Storage: memory, or [`file`] (crash-safe, checksummed, quarantine instead of crash loops;
//!   the format and durability points are documented there). `compress gzip` stores each append
//!   as a gzip member; outputs always receive uncompressed entries in [`nagare_core::Chunk`].
//! * Commit point: [`Buffer::append`] returning `Ok`. When `total_limit_size` is reached,
//!   `overflow_action` decides: refuse (`throw_exception`: the input closes without ack), wait
//!   (`block`), or drop the oldest chunk (`drop_oldest_chunk`, counted).
//! * [`flush::run_with`]: `flush_thread_count` workers, one retry state per output ([`retry`]),
//!   the `<secondary>` ([`secondary`] is `secondary_file`), and the shutdown drain.
//! * [`stats`]: every gauge and counter, per output.
//!
//! Memory: a memory buffer holds at most `total_limit_size` (plus one append); a file buffer
//! holds only the chunks being written (`flush_thread_count` of them) whatever its backlog.

pub mod buffer;
pub mod compress;
pub mod config;
pub mod entries;
pub mod file;
pub mod flush;
pub mod key;
pub mod retry;
pub mod secondary;
pub mod stats;

pub use buffer::{AppendError, Buffer, OpenError, Quarantined, WallClock};
pub use config::{
    BufferConfig, Compress, FlushMode, FsyncPolicy, OverflowAction, RetryType, Storage, TimeKey,
};
pub use key::{ChunkKeyList, ChunkKeys, RecordKey};
pub use stats::BufferStats;
