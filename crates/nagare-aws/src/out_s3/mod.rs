//! `@type s3`: gzipped JSON-lines objects under per-service, per-time prefixes, never
//! overwritten, never duplicated by a retry.
//!
//! ```text
//! Chunk (msgpack [time, record]*, key: tag / timekey / record vars, id)
//!   -> format.rs   lines (json | single_value | ltsv) -> gzip | zstd | none, reused buffers
//!   -> key.rs      s3_object_key_format rendered from the chunk key (+ %{index} allocator)
//!   -> output.rs   create-only placement: 412 -> own earlier attempt? -> next index
//!   -> store.rs    S3Store (PutObject / multipart, upload.rs) | DiskStore (file:///...)
//!   -> errors.rs   transient -> retry; access -> buffer or <secondary>; data -> unrecoverable
//! ```
//!
//! Invariants:
//! * An object, once created, is never replaced: every write is conditional (S3
//!   `If-None-Match: *`, disk `link(2)`), including the multipart completion.
//! * A chunk's key is a function of the chunk (its key values, its first event's time, its id)
//!   plus, for `%{index}`, the first free index at its first attempt; a retry reuses the same
//!   key, so an attempt that landed without a reply is recognised, not repeated.
//! * The body of a chunk is a deterministic function of its bytes and the settings.
//!
//! Guarantees per key format are tabulated in `docs/plugins/out_s3.md`.

pub mod config;
pub mod errors;
pub mod format;
pub mod key;
pub mod output;
pub mod store;
pub mod upload;

pub use config::{Endpoint, S3Config};
pub use errors::{ErrorClass, StoreError};
pub use format::{Inject, LineFormat, StoreAs, TimeType};
pub use key::{KeyMode, Zone};
pub use output::{S3Output, StartError};
pub use store::{DiskStore, ObjectStore, Owner, PutOutcome, PutRequest, S3Store};
