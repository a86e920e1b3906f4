//! Shared helpers for the buffer test files.
#![allow(dead_code)]

use bytes::BytesMut;
use nagare_buffer::{Buffer, BufferConfig, FsyncPolicy, Storage, WallClock};
use nagare_core::msgpack::{write_map_len, write_str, write_uint};
use nagare_core::{Chunk, Event, EventTime, Output, Record, WriteError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "nagare-buffer-test-{}-{name}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Which storage a conformance test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memory,
    File,
}

/// A buffer of `kind` with `cfg`'s settings; the TempDir (file) must outlive it.
pub fn open(kind: Kind, cfg: BufferConfig, id: &str) -> (Arc<Buffer>, Option<TempDir>) {
    let (cfg, dir) = with_storage(kind, cfg, id);
    let b = Buffer::open_with_clock(cfg, id, WallClock::tokio()).expect("open buffer");
    (Arc::new(b), dir)
}

pub fn with_storage(
    kind: Kind,
    mut cfg: BufferConfig,
    id: &str,
) -> (BufferConfig, Option<TempDir>) {
    match kind {
        Kind::Memory => {
            cfg.storage = Storage::Memory;
            (cfg, None)
        }
        Kind::File => {
            let dir = TempDir::new(id);
            cfg.storage = Storage::File {
                path: dir.path().join("buf"),
                fsync: FsyncPolicy::Never,
            };
            (cfg, Some(dir))
        }
    }
}

/// `{"seq": seq, "service": service}`.
pub fn rec(seq: u64, service: &str) -> Record {
    let mut b = BytesMut::new();
    write_map_len(&mut b, 2);
    write_str(&mut b, b"seq");
    write_uint(&mut b, seq);
    write_str(&mut b, b"service");
    write_str(&mut b, service.as_bytes());
    Record::from_msgpack(b.freeze()).unwrap()
}

pub fn ev(seq: u64, secs: u32, service: &str) -> Event {
    Event {
        time: EventTime::new(secs, 1),
        record: rec(seq, service),
    }
}

pub fn evs(range: std::ops::Range<u64>) -> Vec<Event> {
    range.map(|s| ev(s, 1_700_000_000, "api")).collect()
}

/// Events of about 430 bytes each (so file headers are small next to them).
pub fn bigs(range: std::ops::Range<u64>) -> Vec<Event> {
    let pad = "p".repeat(400);
    range.map(|s| ev(s, 1_700_000_000, &pad)).collect()
}

/// The `seq`s of a chunk's events, in order.
pub fn seqs(chunk: &Chunk) -> Vec<u64> {
    nagare_buffer::entries::decode(&chunk.bytes)
        .expect("entries decode")
        .iter()
        .map(|e| match e.record.get(b"seq") {
            Some(nagare_core::Value::UInt(n)) => n,
            Some(nagare_core::Value::Int(n)) => n as u64,
            other => panic!("seq missing: {other:?}"),
        })
        .collect()
}

/// Queues everything and takes every chunk out (purging each).
pub async fn take_all(b: &Buffer) -> Vec<Chunk> {
    b.enqueue_all();
    let mut out = Vec::new();
    while let Some(c) = b.try_dequeue().await {
        b.purge(&c);
        out.push(c);
    }
    out
}

/// An output that records what it gets and fails as told.
#[derive(Default)]
pub struct TestOutput {
    pub chunks: Mutex<Vec<Chunk>>,
    pub attempts: Mutex<Vec<Instant>>,
    /// Fail the next N writes (usize::MAX: always).
    pub fail: AtomicUsize,
    pub unrecoverable: std::sync::atomic::AtomicBool,
    pub notify: tokio::sync::Notify,
}

impl TestOutput {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub fn failing(n: usize) -> Arc<Self> {
        let o = Self::new();
        o.fail.store(n, Ordering::SeqCst);
        o
    }
    pub fn records(&self) -> usize {
        self.chunks.lock().unwrap().iter().map(|c| c.records).sum()
    }
    pub fn seqs(&self) -> Vec<u64> {
        self.chunks.lock().unwrap().iter().flat_map(seqs).collect()
    }
    pub async fn wait_records(&self, n: usize) {
        loop {
            let w = self.notify.notified();
            if self.records() >= n {
                return;
            }
            w.await;
        }
    }
}

#[async_trait::async_trait]
impl Output for TestOutput {
    async fn write(&self, chunk: &Chunk) -> Result<(), WriteError> {
        self.attempts.lock().unwrap().push(Instant::now());
        let f = self.fail.load(Ordering::SeqCst);
        if f > 0 {
            if f != usize::MAX {
                self.fail.store(f - 1, Ordering::SeqCst);
            }
            return Err(if self.unrecoverable.load(Ordering::SeqCst) {
                WriteError::Unrecoverable("test: bad data".into())
            } else {
                WriteError::Retryable("test: down".into())
            });
        }
        self.chunks.lock().unwrap().push(chunk.clone());
        self.notify.notify_waiters();
        Ok(())
    }
}
