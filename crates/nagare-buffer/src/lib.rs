//! Fluentd's buffered-output model.
//!
//! An output owns one [`Buffer`]: events are appended into a *staged* chunk per chunk key (the
//! tag, for now); a staged chunk moves to the *queue* when it reaches `chunk_limit_size` /
//! `chunk_limit_records` or when it is older than `flush_interval`; flush workers
//! ([`flush::run`]) take queued chunks, write them, and purge them on success or put them back
//! with a backoff ([`retry::RetryState`]) on a retryable error.
//!
//! Commit point: [`Buffer::append`] returning `Ok` means the events are in the buffer; that is
//! when in_forward may ack. When the buffer is full, `overflow_action` decides: refuse
//! (`throw_exception`, the input closes the connection without ack), wait (`block`), or drop
//! the oldest queued chunk (`drop_oldest_chunk`, counted).
//!
//! Memory: staged plus queued bytes never exceed `total_limit_size` (plus at most one append).

pub mod config;
pub mod flush;
pub mod memory;
pub mod retry;

pub use config::{BufferConfig, FlushMode, OverflowAction, RetryType};
pub use memory::{Buffer, BufferStats};
