//! Per-chunk memory of accepted batches: what lets a retried write skip them (the rules are
//! in the module docs of `mod.rs`).

use nagare_core::ChunkId;
use std::collections::HashMap;

/// Per-chunk memory of accepted batches (see the module docs).
#[derive(Debug, Default)]
pub(super) struct ProgressMap {
    pub(super) cap: usize,
    seq: u64,
    pub(super) map: HashMap<ChunkId, Progress>,
}

#[derive(Debug, Clone)]
pub(super) struct Progress {
    pub(super) done: Vec<bool>,
    pub(super) prelude_done: bool,
    seq: u64,
}

impl ProgressMap {
    pub(super) fn new(cap: usize) -> Self {
        ProgressMap {
            cap,
            ..Default::default()
        }
    }

    pub(super) fn begin(&mut self, id: ChunkId, batches: usize) -> Progress {
        self.seq += 1;
        let seq = self.seq;
        if !self.map.contains_key(&id) && self.map.len() >= self.cap.max(1) {
            if let Some(oldest) = self.map.iter().min_by_key(|(_, p)| p.seq).map(|(k, _)| *k) {
                self.map.remove(&oldest);
                tracing::warn!(chunk = %oldest.hex(), "forgot the progress of an old chunk (progress capacity reached); a retry of it resends its accepted batches");
            }
        }
        let p = self.map.entry(id).or_insert_with(|| Progress {
            done: vec![false; batches],
            prelude_done: false,
            seq,
        });
        if p.done.len() != batches {
            tracing::warn!(chunk = %id.hex(), "chunk gave a different batch plan on retry; sending all of it");
            *p = Progress {
                done: vec![false; batches],
                prelude_done: p.prelude_done,
                seq,
            };
        }
        p.seq = seq;
        p.clone()
    }
    pub(super) fn mark(&mut self, id: ChunkId, batch: usize) {
        if let Some(p) = self.map.get_mut(&id) {
            if let Some(d) = p.done.get_mut(batch) {
                *d = true;
            }
        }
    }
    pub(super) fn mark_prelude(&mut self, id: ChunkId) {
        if let Some(p) = self.map.get_mut(&id) {
            p.prelude_done = true;
        }
    }
}
