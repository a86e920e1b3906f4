//! [`S3Output`]: one object per chunk, placed so that nothing is overwritten and a retry does
//! not duplicate.
//!
//! ```text
//! write(chunk) -> encode (blocking pool, reused buffers) -> key -> put_new (create-only)
//!   Created                      -> done
//!   Exists (412 / EEXIST)        -> owner(key) == this chunk? -> done (an earlier attempt landed)
//!                                 -> %{index}: LIST the family, take the next free index, again
//!                                 -> per-chunk key: refuse (never overwrite), unrecoverable
//!   error                        -> classified (errors.rs); the key is remembered for the retry
//! ```
//!
//! A chunk keeps the key of its first attempt until it succeeds (`attempts`), so an attempt
//! that timed out after S3 stored it is found on the retry (412, then the `nagare-chunk-id`
//! metadata says it is ours) instead of being written again under the next index.

use super::config::{Endpoint, S3Config};
use super::errors::{ErrorClass, StoreError};
use super::format::{EncodeStats, Formatter, Scratch};
use super::key::{IndexAllocator, KeyInput, KeyMode, KeyTemplate, MAX_KEY_BYTES};
use super::store::{DiskStore, ObjectStore, Owner, PutOutcome, PutRequest, S3Store};
use bytes::Bytes;
use nagare_core::metrics::{self, Counter, ReasonCounters};
use nagare_core::ratelimit::LogLimiter;
use nagare_core::{Chunk, ChunkId, Output, WriteError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Keys tried for one chunk in one write before giving up (as a retryable error).
const MAX_KEY_TRIES: usize = 32;
/// Chunks whose attempted key is remembered (cleared beyond; costs only the dedupe).
const MAX_REMEMBERED: usize = 65_536;
/// Pooled buffers kept per output.
const POOL_SIZE: usize = 8;
/// Pooled body buffers larger than this are freed instead of kept.
const MAX_POOLED_BYTES: usize = 128 << 20;

struct Pool<T> {
    items: Mutex<Vec<T>>,
}

impl<T: Default> Pool<T> {
    fn new() -> Self {
        Pool {
            items: Mutex::new(Vec::new()),
        }
    }
    fn take(&self) -> T {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }
    fn put(&self, t: T) {
        let mut v = self.items.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < POOL_SIZE {
            v.push(t);
        }
    }
}

/// Counters, labelled with the plugin id.
struct Metrics {
    objects: Counter,
    records: Counter,
    uploaded_bytes: Counter,
    input_bytes: Counter,
    key_conflicts: Counter,
    recognised_retries: Counter,
    skipped_entries: Counter,
    invalid_utf8: Counter,
    errors: ReasonCounters,
}

impl Metrics {
    fn new(id: &str) -> Metrics {
        let l = [("plugin_id", id)];
        Metrics {
            objects: metrics::counter("nagare_s3_objects_total", "objects created", &l),
            records: metrics::counter("nagare_s3_records_total", "records written to objects", &l),
            uploaded_bytes: metrics::counter(
                "nagare_s3_uploaded_bytes_total",
                "object bytes created (after compression)",
                &l,
            ),
            input_bytes: metrics::counter(
                "nagare_s3_input_bytes_total",
                "chunk bytes (msgpack) encoded into objects",
                &l,
            ),
            key_conflicts: metrics::counter(
                "nagare_s3_key_conflicts_total",
                "conditional writes refused because the key existed (another writer took it)",
                &l,
            ),
            recognised_retries: metrics::counter(
                "nagare_s3_recognised_retries_total",
                "retries that found their own earlier upload (not written twice)",
                &l,
            ),
            skipped_entries: metrics::counter(
                "nagare_s3_skipped_entries_total",
                "chunk entries that were not [time, map] (dropped)",
                &l,
            ),
            invalid_utf8: metrics::counter(
                "nagare_s3_invalid_utf8_total",
                "invalid UTF-8 sequences written as U+FFFD",
                &l,
            ),
            errors: ReasonCounters::new(
                "nagare_s3_errors_total",
                "failed writes by class (transient, access, data)",
                &l,
            ),
        }
    }
}

/// The key a chunk was given on its first attempt.
#[derive(Clone)]
struct Attempt {
    key: String,
    family: Option<String>,
}

struct Inner {
    id: String,
    store: Arc<dyn ObjectStore>,
    key: KeyTemplate,
    fmt: Formatter,
    content_type: String,
    content_encoding: Option<String>,
    alloc: IndexAllocator,
    attempts: Mutex<HashMap<ChunkId, Attempt>>,
    scratch: Pool<Scratch>,
    bodies: Pool<Vec<u8>>,
    access_errors_retryable: bool,
    m: Metrics,
    log: LogLimiter,
}

/// `@type s3`.
#[derive(Clone)]
pub struct S3Output {
    inner: Arc<Inner>,
}

/// Why the output could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid s3 configuration: {0}")]
    Config(String),
    #[error("s3 bucket '{bucket}' is not usable: {source}")]
    Bucket {
        bucket: String,
        #[source]
        source: StoreError,
    },
}

impl S3Output {
    /// Validates `cfg`, builds the store and, with `check_bucket`/`auto_create_bucket`, checks
    /// (or creates) the bucket.
    pub async fn start(cfg: &S3Config) -> Result<S3Output, StartError> {
        let c = cfg.compile().map_err(StartError::Config)?;
        let store: Arc<dyn ObjectStore> = match &cfg.endpoint {
            Endpoint::Disk(root) => Arc::new(DiskStore::new(root, &cfg.bucket)),
            _ => Arc::new(
                S3Store::connect(
                    &cfg.aws_settings(),
                    cfg.force_path_style,
                    &cfg.bucket,
                    c.options.clone(),
                    c.multipart,
                )
                .await,
            ),
        };
        if cfg.check_bucket || cfg.auto_create_bucket {
            store
                .ensure_bucket(cfg.auto_create_bucket)
                .await
                .map_err(|source| StartError::Bucket {
                    bucket: cfg.bucket.clone(),
                    source,
                })?;
        }
        Self::with_store(cfg, store)
    }

    /// Like [`S3Output::start`], from synchronous code (plugin building): runs on a helper
    /// thread with its own runtime, so it works inside or outside a runtime of any flavour.
    pub fn start_blocking(cfg: &S3Config) -> Result<S3Output, StartError> {
        let cfg = cfg.clone();
        std::thread::scope(|s| {
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| StartError::Config(format!("cannot start a runtime: {e}")))?;
                rt.block_on(S3Output::start(&cfg))
            })
            .join()
            .unwrap_or_else(|_| Err(StartError::Config("s3 output start panicked".into())))
        })
    }

    /// An output over any store (tests wrap stores to inject faults).
    pub fn with_store(cfg: &S3Config, store: Arc<dyn ObjectStore>) -> Result<S3Output, StartError> {
        let c = cfg.compile().map_err(StartError::Config)?;
        Ok(S3Output {
            inner: Arc::new(Inner {
                id: cfg.id.clone(),
                store,
                key: c.key,
                fmt: c.formatter,
                content_type: c.content_type,
                content_encoding: c.content_encoding,
                alloc: IndexAllocator::default(),
                attempts: Mutex::new(HashMap::new()),
                scratch: Pool::new(),
                bodies: Pool::new(),
                access_errors_retryable: cfg.access_errors_retryable,
                m: Metrics::new(&cfg.id),
                log: LogLimiter::new(Duration::from_secs(60), 5),
            }),
        })
    }

    /// The store (tests read objects back through it).
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.inner.store.clone()
    }

    /// Body buffers waiting in the pool for the next chunk (a written body comes back to the
    /// pool once the store let go of it; tests check that it does).
    #[doc(hidden)]
    pub fn pooled_body_buffers(&self) -> usize {
        self.inner
            .bodies
            .items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// The compiled key template.
    pub fn key_template(&self) -> &KeyTemplate {
        &self.inner.key
    }

    /// Encodes a chunk on the blocking pool with pooled buffers.
    async fn encode(&self, chunk: &Chunk, tag: &str) -> Result<(Vec<u8>, EncodeStats), StoreError> {
        let inner = self.inner.clone();
        let bytes = chunk.bytes.clone();
        let tag = tag.to_string();
        let r = tokio::task::spawn_blocking(move || {
            let mut sc = inner.scratch.take();
            let mut out = inner.bodies.take();
            let r = inner.fmt.encode(&bytes, &tag, &mut sc, &mut out);
            inner.scratch.put(sc);
            r.map(|st| (out, st))
        })
        .await;
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError {
                class: ErrorClass::Data,
                op: "encode",
                target: String::new(),
                code: "EncodeError".into(),
                status: None,
                message: e.to_string(),
            }),
            Err(e) => Err(StoreError {
                class: ErrorClass::Transient,
                op: "encode",
                target: String::new(),
                code: "TaskFailed".into(),
                status: None,
                message: e.to_string(),
            }),
        }
    }

    fn reclaim(&self, body: Bytes) {
        if let Ok(m) = body.try_into_mut() {
            let mut v = Vec::from(m);
            if v.capacity() <= MAX_POOLED_BYTES {
                v.clear();
                self.inner.bodies.put(v);
            }
        }
    }

    fn remembered(&self, id: &ChunkId) -> Option<Attempt> {
        self.inner
            .attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    fn remember(&self, id: ChunkId, a: Attempt) {
        let mut m = self
            .inner
            .attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_REMEMBERED && !m.contains_key(&id) {
            m.clear();
        }
        m.insert(id, a);
    }

    fn forget(&self, id: &ChunkId) {
        self.inner
            .attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Creates the object for `chunk`; returns its key.
    async fn place(
        &self,
        input: &KeyInput<'_>,
        chunk_id: &ChunkId,
        id_hex: &str,
        body: &Bytes,
    ) -> Result<String, StoreError> {
        let inner = &self.inner;
        let mode = inner.key.mode();
        let mut conflicts_in_a_row = 0u32;
        for _ in 0..MAX_KEY_TRIES {
            let a = match self.remembered(chunk_id) {
                Some(a) => a,
                None => {
                    let a = match mode {
                        KeyMode::Indexed => {
                            let family = inner.key.family(input);
                            let i = inner.alloc.take(&family);
                            Attempt {
                                key: inner.key.render(input, i),
                                family: Some(family),
                            }
                        }
                        _ => Attempt {
                            key: inner.key.render(input, 0),
                            family: None,
                        },
                    };
                    self.remember(*chunk_id, a.clone());
                    a
                }
            };
            if a.key.len() > MAX_KEY_BYTES {
                self.forget(chunk_id);
                return Err(StoreError {
                    class: ErrorClass::Data,
                    op: "render key",
                    target: inner.store.describe(&a.key),
                    code: "KeyTooLongError".into(),
                    status: None,
                    message: format!("the key is {} bytes; S3 allows 1024", a.key.len()),
                });
            }
            let req = PutRequest {
                key: &a.key,
                body: body.clone(),
                chunk_id: id_hex,
                content_type: &inner.content_type,
                content_encoding: inner.content_encoding.as_deref(),
            };
            match inner.store.put_new(&req).await {
                Ok(PutOutcome::Created) => {
                    self.forget(chunk_id);
                    return Ok(a.key);
                }
                Ok(PutOutcome::Exists) => {
                    // Ours from an earlier attempt whose reply was lost (a timeout, a reset,
                    // an SDK-level retry)?
                    match inner.store.owner(&a.key, id_hex, body).await? {
                        Owner::Us => {
                            inner.m.recognised_retries.inc();
                            tracing::info!(plugin_id = %inner.id, key = %a.key, chunk = %id_hex, "an earlier attempt of this chunk had already created the object; not writing it again");
                            self.forget(chunk_id);
                            return Ok(a.key);
                        }
                        Owner::Unknown if mode == KeyMode::PerChunk => {
                            // The key holds the whole chunk id: nobody else renders it.
                            self.forget(chunk_id);
                            return Ok(a.key);
                        }
                        _ => {}
                    }
                    inner.m.key_conflicts.inc();
                    self.forget(chunk_id);
                    match (mode, a.family) {
                        (KeyMode::Indexed, Some(family)) => {
                            conflicts_in_a_row += 1;
                            self.skip_taken_indexes(input, &family).await;
                            if conflicts_in_a_row > 8 {
                                tokio::time::sleep(Duration::from_millis(
                                    10 * conflicts_in_a_row as u64,
                                ))
                                .await;
                            }
                        }
                        _ => {
                            return Err(StoreError {
                                class: ErrorClass::Data,
                                op: "put",
                                target: inner.store.describe(&a.key),
                                code: "KeyCollision".into(),
                                status: Some(412),
                                message: "the key already holds an object written by another chunk; \
                                          refusing to overwrite it (use a longer hex_random_length, \
                                          ${chunk_id} or %{index})"
                                    .into(),
                            });
                        }
                    }
                }
                Err(e) if e.status == Some(409) || e.code == "ConditionalRequestConflict" => {
                    // A concurrent conditional write to the same key is in progress: the same
                    // key again shortly (it ends in Created or Exists).
                    conflicts_in_a_row += 1;
                    tokio::time::sleep(Duration::from_millis(50 * conflicts_in_a_row as u64)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError {
            class: ErrorClass::Transient,
            op: "put",
            target: inner.store.describe(&inner.key.index_prefix(input)),
            code: "NoFreeKey".into(),
            status: None,
            message: format!("{MAX_KEY_TRIES} keys in a row were taken by other writers"),
        })
    }

    /// After a 412: list the family's prefix and move the allocator past every index in use
    /// (one LIST instead of one refused upload per taken index).
    async fn skip_taken_indexes(&self, input: &KeyInput<'_>, family: &str) {
        let inner = &self.inner;
        let prefix = inner.key.index_prefix(input);
        match inner.store.list(&prefix).await {
            Ok(keys) => {
                if let Some(max) = keys
                    .iter()
                    .filter_map(|k| inner.key.parse_index(input, &prefix, k))
                    .max()
                {
                    inner.alloc.raise_to(family, max + 1);
                }
            }
            Err(e) => {
                if let Some(n) = inner.log.check("list") {
                    tracing::warn!(plugin_id = %inner.id, error = %e, suppressed = n, "cannot list the key prefix after a conflict; trying the next index");
                }
            }
        }
    }

    fn fail(&self, e: StoreError, chunk: &Chunk) -> WriteError {
        let inner = &self.inner;
        inner.m.errors.inc(e.class.label());
        let msg = e.to_string();
        match e.class {
            ErrorClass::Transient => WriteError::Retryable(msg),
            ErrorClass::Access => {
                if let Some(n) = inner.log.check(&e.code) {
                    tracing::error!(plugin_id = %inner.id, target = %e.target, code = %e.code, chunk = %chunk.id.hex(), records = chunk.records, suppressed = n, kept_in_buffer = inner.access_errors_retryable, "S3 refuses the write: {msg}");
                }
                if inner.access_errors_retryable {
                    WriteError::Retryable(format!(
                        "{msg} (no <secondary>: the chunk stays in the buffer and is retried)"
                    ))
                } else {
                    WriteError::Unrecoverable(msg)
                }
            }
            ErrorClass::Data => {
                tracing::error!(plugin_id = %inner.id, target = %e.target, code = %e.code, chunk = %chunk.id.hex(), records = chunk.records, "S3 write cannot succeed: {msg}");
                WriteError::Unrecoverable(msg)
            }
        }
    }
}

#[async_trait::async_trait]
impl Output for S3Output {
    async fn write(&self, chunk: &Chunk) -> Result<(), WriteError> {
        let inner = &self.inner;
        let tag = chunk
            .key
            .tag
            .as_ref()
            .unwrap_or(&chunk.tag)
            .to_str_lossy()
            .into_owned();
        let (body, st) = self
            .encode(chunk, &tag)
            .await
            .map_err(|e| self.fail(e, chunk))?;
        // Counted once the chunk is done with (written, or nothing to write): a failed upload
        // is retried and would count the same entries again.
        let count_encode = || {
            inner.m.skipped_entries.add(st.skipped as u64);
            inner.m.invalid_utf8.add(st.invalid_utf8 as u64);
            if st.skipped > 0 {
                tracing::warn!(plugin_id = %inner.id, chunk = %chunk.id.hex(), skipped = st.skipped, records = st.records, "chunk entries that are not [time, map] were dropped");
            }
        };
        if st.records == 0 {
            self.reclaim(Bytes::from(body));
            count_encode();
            return Ok(());
        }
        let time = chunk
            .key
            .timekey
            .or_else(|| super::format::first_event_time(&chunk.bytes).map(|t| t as i64))
            .unwrap_or(0);
        let input = KeyInput {
            time,
            tag: &tag,
            chunk_id: &chunk.id,
            key: &chunk.key,
        };
        let body = Bytes::from(body);
        let id_hex = chunk.id.hex();
        let size = body.len();
        let res = self.place(&input, &chunk.id, &id_hex, &body).await;
        self.reclaim(body);
        match res {
            Ok(key) => {
                count_encode();
                inner.m.objects.inc();
                inner.m.records.add(st.records as u64);
                inner.m.uploaded_bytes.add(size as u64);
                inner.m.input_bytes.add(chunk.bytes.len() as u64);
                tracing::debug!(plugin_id = %inner.id, key = %key, records = st.records, bytes = size, "object created");
                Ok(())
            }
            Err(e) => Err(self.fail(e, chunk)),
        }
    }
}
