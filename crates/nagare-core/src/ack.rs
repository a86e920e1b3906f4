//! Acks through ownership.
//!
//! A [`PendingAck`] is created for every message that carries a `chunk` option. The only way to
//! get the reply bytes is [`PendingAck::commit`], which takes a [`Committed`] proof that only a
//! successful emit produces. A pending ack that is dropped (emit failed, connection closed,
//! task cancelled) is counted as withheld, so no path can ack data it did not keep, and none can
//! forget to account for it.

use bytes::{Bytes, BytesMut};

use crate::metrics::Counter;

/// Proof that events were committed by every route (returned by a successful emit).
#[derive(Debug)]
pub struct Committed(());

impl Committed {
    /// Only sinks (and the codec for messages with no events) create this.
    pub fn new() -> Self {
        Committed(())
    }
}

impl Default for Committed {
    fn default() -> Self {
        Self::new()
    }
}

/// An ack owed to a peer.
#[derive(Debug)]
pub struct PendingAck {
    chunk: Option<Bytes>,
    withheld: Counter,
}

impl PendingAck {
    pub fn new(chunk: Bytes, withheld: Counter) -> Self {
        PendingAck {
            chunk: Some(chunk),
            withheld,
        }
    }

    /// The chunk id this ack answers.
    pub fn chunk(&self) -> &[u8] {
        self.chunk.as_deref().unwrap_or_default()
    }

    /// Writes `{"ack": <chunk>}` (chunk echoed byte for byte as a msgpack str) into `out`.
    pub fn commit(mut self, _proof: Committed, out: &mut BytesMut) {
        let chunk = self.chunk.take().unwrap_or_default();
        crate::msgpack::write_map_len(out, 1);
        crate::msgpack::write_str(out, b"ack");
        crate::msgpack::write_str(out, &chunk);
    }
}

impl Drop for PendingAck {
    fn drop(&mut self) {
        if let Some(chunk) = self.chunk.take() {
            self.withheld.inc();
            tracing::debug!(chunk = %String::from_utf8_lossy(&chunk), "ack withheld: events not committed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_writes_ack_map_with_str_chunk() {
        let c = Counter::detached();
        let mut out = BytesMut::new();
        PendingAck::new(Bytes::from_static(b"AAECAwQFBgcICQoLDA0ODw==\n"), c.clone())
            .commit(Committed::new(), &mut out);
        assert_eq!(&out[..6], &[0x81, 0xa3, b'a', b'c', b'k', 0xb9]);
        assert_eq!(c.get(), 0);
    }

    #[test]
    fn dropped_ack_is_counted() {
        let c = Counter::detached();
        drop(PendingAck::new(Bytes::from_static(b"x"), c.clone()));
        assert_eq!(c.get(), 1);
    }
}
