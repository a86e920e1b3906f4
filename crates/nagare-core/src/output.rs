//! What a buffer hands an output.

use crate::Tag;
use bytes::Bytes;
use std::fmt;
use thiserror::Error;

/// A chunk's unique id: 16 random bytes. Doubles as the forward protocol `chunk` option
/// (base64), so a resend of the same chunk carries the same id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 16]);

impl ChunkId {
    pub fn random() -> Self {
        ChunkId(rand_bytes())
    }
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn rand_bytes() -> [u8; 16] {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS once per process and per-instance keys; mixing in a
    // sequence number and the time makes every id distinct within and across processes.
    let mut out = [0u8; 16];
    for (i, half) in out.chunks_mut(8).enumerate() {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        h.write_usize(i);
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.hex())
    }
}

/// What a chunk is keyed by (`<buffer tag,time,service>`): events with different keys never
/// share a chunk. Outputs use it for placeholders (`${tag}`, `%Y/%m/%d` from `timekey`,
/// `${service}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkKey {
    /// The tag, when `tag` is a chunk key.
    pub tag: Option<Tag>,
    /// Start of the time slice (unix seconds), when `time` is a chunk key.
    pub timekey: Option<i64>,
    /// Record-key values, in the order of the chunk keys (`service`, `$.kubernetes.ns`).
    /// A missing key has an empty value.
    pub vars: Vec<(String, Bytes)>,
}

impl ChunkKey {
    /// The value of a record chunk key.
    pub fn var(&self, name: &str) -> Option<&[u8]> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| &v[..])
    }
}

/// A unit of delivery: the packed msgpack `[time, record]*` entries of one chunk key.
#[derive(Clone, Debug)]
pub struct Chunk {
    pub id: ChunkId,
    /// The events' tag (the chunk key's tag when `tag` is a chunk key; otherwise the tag of
    /// the first event appended).
    pub tag: Tag,
    /// The chunk key.
    pub key: ChunkKey,
    /// Packed entries (uncompressed msgpack), sendable as PackedForward without re-encoding.
    pub bytes: Bytes,
    pub records: usize,
}

/// Why a write failed, and what the buffer should do about it.
#[derive(Debug, Error)]
pub enum WriteError {
    /// Try again later (network error, throttling, 5xx, ack timeout).
    #[error("retryable: {0}")]
    Retryable(String),
    /// Retrying cannot help (bad credentials, invalid data): hand to the secondary.
    #[error("unrecoverable: {0}")]
    Unrecoverable(String),
}

/// A destination that takes whole chunks.
#[async_trait::async_trait]
pub trait Output: Send + Sync + 'static {
    /// May be called again with the same chunk after a retryable error: it must be idempotent
    /// per `chunk.id` wherever the destination allows.
    async fn write(&self, chunk: &Chunk) -> Result<(), WriteError>;
}
