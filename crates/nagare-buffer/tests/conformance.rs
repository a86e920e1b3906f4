//! One buffer conformance suite, run against the memory buffer and the file buffer
//! (`memory::*` and `file::*`): chunk keys, limits, ordering per key, flush modes, retry
//! schedule (paused time), overflow actions, secondary, compression, shutdown.

mod common;

use common::*;
use nagare_buffer::secondary::{SecondaryFile, SecondaryFileConfig};
use nagare_buffer::{
    AppendError, BufferConfig, ChunkKeys, Compress, FlushMode, OverflowAction, RecordKey, TimeKey,
};
use nagare_core::{Output, Tag};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn id(kind: Kind, test: &str) -> String {
    format!("conf-{kind:?}-{test}").to_lowercase()
}

async fn chunk_keys_split_by_tag_time_and_record_keys(kind: Kind) {
    let cfg = BufferConfig {
        chunk_keys: ChunkKeys {
            tag: true,
            time: Some(TimeKey {
                unit: 300,
                wait: Duration::ZERO,
                utc_offset: 0,
            }),
            records: vec![
                RecordKey::parse("service").unwrap(),
                RecordKey::parse("$.missing.key").unwrap(),
            ],
        },
        ..Default::default()
    };
    let (b, _d) = open(kind, cfg, &id(kind, "keys"));
    let t0: u32 = 1_700_000_100; // a slice boundary
    let a = Tag::from("app.a");
    b.append(
        &a,
        &[ev(0, t0, "api"), ev(1, t0 + 1, "web"), ev(2, t0 + 2, "api")],
    )
    .await
    .unwrap();
    b.append(&a, &[ev(3, t0 + 300, "api")]).await.unwrap();
    b.append(&Tag::from("app.b"), &[ev(4, t0, "api")])
        .await
        .unwrap();
    let chunks = take_all(&b).await;
    let mut got: Vec<(String, i64, String, Vec<u64>)> = chunks
        .iter()
        .map(|c| {
            assert_eq!(c.key.var("$.missing.key"), Some(&b""[..]));
            (
                c.key.tag.as_ref().unwrap().to_string(),
                c.key.timekey.unwrap(),
                String::from_utf8(c.key.var("service").unwrap().to_vec()).unwrap(),
                seqs(c),
            )
        })
        .collect();
    got.sort();
    let s = t0 as i64 - (t0 as i64).rem_euclid(300);
    assert_eq!(
        got,
        vec![
            ("app.a".into(), s, "api".into(), vec![0, 2]),
            ("app.a".into(), s, "web".into(), vec![1]),
            ("app.a".into(), s + 300, "api".into(), vec![3]),
            ("app.b".into(), s, "api".into(), vec![4]),
        ]
    );
    for c in &chunks {
        assert_eq!(Some(&c.tag), c.key.tag.as_ref());
    }
}

async fn limits_split_chunks_and_keep_order_per_key(kind: Kind) {
    let one = bigs(0..1)[0].entry_len();
    let cfg = BufferConfig {
        chunk_limit_size: one * 3,
        chunk_limit_records: Some(5),
        flush_thread_count: 1,
        ..Default::default()
    };
    let (b, _d) = open(kind, cfg, &id(kind, "limits"));
    let t = Tag::from("x");
    for i in 0..4 {
        b.append(&t, &bigs(i * 5..i * 5 + 5)).await.unwrap();
    }
    let chunks = take_all(&b).await;
    // 3 records per chunk by size (the size limit is hit before the record limit).
    assert!(
        chunks.iter().all(|c| c.records <= 3),
        "{:?}",
        chunks.iter().map(|c| c.records).collect::<Vec<_>>()
    );
    assert!(chunks.iter().all(|c| c.bytes.len() <= one * 3));
    let all: Vec<u64> = chunks.iter().flat_map(seqs).collect();
    assert_eq!(all, (0..20).collect::<Vec<_>>());
    // The record limit alone.
    let cfg = BufferConfig {
        chunk_limit_records: Some(4),
        ..Default::default()
    };
    let (b, _d2) = open(kind, cfg, &id(kind, "limits-rec"));
    b.append(&t, &bigs(0..10)).await.unwrap();
    let sizes: Vec<usize> = take_all(&b).await.iter().map(|c| c.records).collect();
    assert_eq!(sizes, vec![4, 4, 2]);
}

async fn overflow_throw_exception_refuses_and_counts(kind: Kind) {
    let one = bigs(0..1)[0].entry_len();
    let cfg = BufferConfig {
        chunk_limit_size: one * 4,
        total_limit_size: one * 10,
        ..Default::default()
    };
    let (b, _d) = open(kind, cfg, &id(kind, "throw"));
    let t = Tag::from("x");
    b.append(&t, &bigs(0..8)).await.unwrap();
    assert_eq!(b.append(&t, &bigs(8..12)).await, Err(AppendError::Full));
    assert_eq!(b.stats().overflows.get(), 1);
    assert_eq!(b.stats().refused_appends.get("buffer_full").get(), 1);
    // Writing frees space.
    b.enqueue_all();
    let c = b.try_dequeue().await.unwrap();
    b.purge(&c);
    b.append(&t, &bigs(8..12)).await.unwrap();
    assert_eq!(b.stats().appended_records.get(), 12);
}

async fn overflow_block_waits_for_space(kind: Kind) {
    let one = bigs(0..1)[0].entry_len();
    let cfg = BufferConfig {
        chunk_limit_size: one * 4,
        total_limit_size: one * 10,
        overflow_action: OverflowAction::Block,
        ..Default::default()
    };
    let (b, _d) = open(kind, cfg, &id(kind, "block"));
    let t = Tag::from("x");
    b.append(&t, &bigs(0..8)).await.unwrap();
    let b2 = b.clone();
    let t2 = t.clone();
    let pending = tokio::spawn(async move { b2.append(&t2, &bigs(8..12)).await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!pending.is_finished(), "block must wait while full");
    assert_eq!(b.stats().blocked_appends.get(), 1);
    b.enqueue_all();
    let c = b.try_dequeue().await.unwrap();
    b.purge(&c);
    pending.await.unwrap().unwrap();
    // Closing releases a blocked append with an error (shutdown).
    let b3 = b.clone();
    let blocked = tokio::spawn(async move { b3.append(&Tag::from("y"), &bigs(0..9)).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    b.close();
    assert_eq!(blocked.await.unwrap(), Err(AppendError::Closed));
}

async fn overflow_drop_oldest_chunk_drops_and_counts(kind: Kind) {
    let one = bigs(0..1)[0].entry_len();
    let cfg = BufferConfig {
        chunk_limit_records: Some(2),
        chunk_limit_size: one * 2,
        total_limit_size: one * 6 + 200,
        overflow_action: OverflowAction::DropOldestChunk,
        ..Default::default()
    };
    let (b, d) = open(kind, cfg, &id(kind, "dropold"));
    let t = Tag::from("x");
    for i in 0..10 {
        b.append(&t, &bigs(i * 2..i * 2 + 2)).await.unwrap();
    }
    let dropped = b.stats().dropped_records.get("drop_oldest_chunk").get();
    assert!(dropped > 0);
    assert!(b.usage().1 <= one * 6 + 200);
    if let Some(d) = &d {
        // The dropped chunks' files are gone (deleted after the append released the lock):
        // what is on disk is what the buffer still counts.
        let files = std::fs::read_dir(d.path().join("buf"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".queued") || n.ends_with(".staged"))
            .count();
        let counted = (b.stats().queued_chunks.get() + b.stats().staged_chunks.get()) as usize;
        assert_eq!(files, counted);
        assert!(files <= 4, "{files} chunk files for 6 events' room");
    }
    let kept: Vec<u64> = take_all(&b).await.iter().flat_map(seqs).collect();
    // The newest events are kept, the oldest dropped, and the counts add up.
    assert_eq!(*kept.last().unwrap(), 19);
    assert_eq!(kept.len() as u64 + dropped, 20);
    assert_eq!(kept, ((20 - kept.len() as u64)..20).collect::<Vec<_>>());
}

async fn flush_modes_interval_immediate_lazy(kind: Kind) {
    let t = Tag::from("x");
    // interval: queued flush_interval after creation.
    let cfg = BufferConfig {
        flush_interval: Duration::from_secs(10),
        ..Default::default()
    };
    let (b, _d) = open(kind, cfg, &id(kind, "interval"));
    b.append(&t, &evs(0..3)).await.unwrap();
    assert_eq!(b.enqueue_due(), 0);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(b.enqueue_due(), 1);
    // immediate: every append queued.
    let cfg = BufferConfig {
        flush_mode: FlushMode::Immediate,
        ..Default::default()
    };
    let (b, _d2) = open(kind, cfg, &id(kind, "immediate"));
    b.append(&t, &evs(0..3)).await.unwrap();
    b.append(&t, &evs(3..4)).await.unwrap();
    assert_eq!(b.queue_len(), 2);
    // lazy with a time key: queued once the slice ended plus timekey_wait (wall clock).
    let now = nagare_buffer::WallClock::tokio().now() as i64;
    let unit = 300;
    let slice = now - now % unit;
    let cfg = BufferConfig {
        flush_mode: FlushMode::Lazy,
        flush_interval: Duration::from_secs(1),
        chunk_keys: ChunkKeys {
            tag: true,
            time: Some(TimeKey {
                unit,
                wait: Duration::from_secs(30),
                utc_offset: 0,
            }),
            records: vec![],
        },
        ..Default::default()
    };
    let (b, _d3) = open(kind, cfg, &id(kind, "lazy"));
    b.append(&t, &[ev(0, now as u32, "api")]).await.unwrap();
    let due_in = (slice + unit + 30 - now) as u64;
    tokio::time::advance(Duration::from_secs(due_in - 1)).await;
    assert_eq!(b.enqueue_due(), 0, "not before timekey + timekey_wait");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(b.enqueue_due(), 1);
}

async fn retry_schedule_with_paused_time(kind: Kind) {
    let cfg = BufferConfig {
        flush_mode: FlushMode::Immediate,
        retry_randomize: false,
        retry_wait: Duration::from_secs(1),
        retry_max_interval: Some(Duration::from_secs(8)),
        ..Default::default()
    };
    let (b, _d) = open(kind, cfg, &id(kind, "retry"));
    let out = TestOutput::failing(5);
    let (trigger, sd) = nagare_core::shutdown::channel();
    let task = tokio::spawn(nagare_buffer::flush::run(
        b.clone(),
        out.clone(),
        sd,
        Duration::from_secs(1),
        id(kind, "retry"),
    ));
    b.append(&Tag::from("x"), &evs(0..3)).await.unwrap();
    out.wait_records(3).await;
    let at = out.attempts.lock().unwrap().clone();
    let gaps: Vec<u64> = at
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis() as u64)
        .collect();
    assert_eq!(gaps, vec![1000, 2000, 4000, 8000, 8000]);
    assert_eq!(b.stats().retries.get(), 5);
    assert_eq!(b.stats().retry_steps.get(), 0, "reset after the success");
    assert_eq!(b.stats().written_records.get(), 3);
    trigger.fire();
    task.await.unwrap();
}

async fn retry_limit_goes_to_the_secondary(kind: Kind) {
    let cfg = BufferConfig {
        flush_mode: FlushMode::Immediate,
        retry_randomize: false,
        retry_max_times: Some(2),
        ..Default::default()
    };
    let (b, dir) = open(kind, cfg, &id(kind, "secondary"));
    let sdir = common::TempDir::new("secondary-out");
    let out = TestOutput::failing(usize::MAX);
    let secondary = Arc::new(SecondaryFile::new(SecondaryFileConfig::new(sdir.path())));
    let (trigger, sd) = nagare_core::shutdown::channel();
    let task = tokio::spawn(nagare_buffer::flush::run_with(
        b.clone(),
        out.clone(),
        Some(secondary.clone() as Arc<dyn Output>),
        sd,
        Duration::from_secs(1),
        id(kind, "secondary"),
    ));
    b.append(&Tag::from("x"), &evs(0..3)).await.unwrap();
    while b.stats().secondary_chunks.get() < 1 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        out.attempts.lock().unwrap().len(),
        3,
        "first try + 2 retries"
    );
    assert_eq!(b.stats().secondary_records.get(), 3);
    let files: Vec<_> = std::fs::read_dir(sdir.path()).unwrap().collect();
    assert_eq!(files.len(), 1);
    let dump = std::fs::read(files[0].as_ref().unwrap().path()).unwrap();
    let back = nagare_buffer::entries::decode(&bytes::Bytes::from(dump)).unwrap();
    assert_eq!(back.len(), 3);
    // Unrecoverable: straight to the secondary, no retries.
    out.unrecoverable.store(true, Ordering::SeqCst);
    let before = out.attempts.lock().unwrap().len();
    b.append(&Tag::from("x"), &evs(3..5)).await.unwrap();
    while b.stats().secondary_chunks.get() < 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(out.attempts.lock().unwrap().len(), before + 1);
    assert_eq!(b.stats().dropped_records.total(), 0, "nothing dropped");
    trigger.fire();
    task.await.unwrap();
    drop(dir);
}

async fn retry_limit_without_secondary_is_counted(kind: Kind) {
    let cfg = BufferConfig {
        flush_mode: FlushMode::Immediate,
        retry_randomize: false,
        retry_max_times: Some(1),
        ..Default::default()
    };
    let (b, dir) = open(kind, cfg, &id(kind, "nosecondary"));
    let out = TestOutput::failing(usize::MAX);
    let (trigger, sd) = nagare_core::shutdown::channel();
    let task = tokio::spawn(nagare_buffer::flush::run(
        b.clone(),
        out.clone(),
        sd,
        Duration::from_secs(1),
        id(kind, "nosecondary"),
    ));
    b.append(&Tag::from("x"), &evs(0..3)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    match kind {
        Kind::Memory => {
            assert_eq!(b.stats().dropped_records.get("retry_exhausted").get(), 3)
        }
        Kind::File => {
            assert_eq!(
                b.stats().quarantined_records.get("retry_exhausted").get(),
                3
            );
            let q = dir
                .as_ref()
                .unwrap()
                .path()
                .join("buf/quarantine/retry_exhausted");
            assert_eq!(std::fs::read_dir(q).unwrap().count(), 1);
        }
    }
    assert_eq!(b.usage(), (0, 0));
    trigger.fire();
    task.await.unwrap();
}

async fn compressed_chunks_reach_outputs_uncompressed(kind: Kind) {
    let cfg = BufferConfig {
        compress: Compress::Gzip,
        ..Default::default()
    };
    let (b, _d) = open(kind, cfg, &id(kind, "gzip"));
    let t = Tag::from("x");
    let events = evs(0..200);
    for part in events.chunks(50) {
        b.append(&t, part).await.unwrap();
    }
    let stored = b.usage().1;
    let chunks = take_all(&b).await;
    assert_eq!(chunks.len(), 1);
    let mut plain = bytes::BytesMut::new();
    for e in &events {
        e.write_entry(&mut plain, false);
    }
    assert_eq!(chunks[0].bytes, plain.freeze());
    assert!(
        stored < chunks[0].bytes.len(),
        "stored {stored} bytes compressed"
    );
}

async fn shutdown_drain_flushes_or_keeps(kind: Kind) {
    let cfg = BufferConfig {
        flush_interval: Duration::from_secs(3600),
        flush_at_shutdown: true,
        ..Default::default()
    };
    let (b, _d) = open(kind, cfg, &id(kind, "drain"));
    let out = TestOutput::new();
    let (trigger, sd) = nagare_core::shutdown::channel();
    let task = tokio::spawn(nagare_buffer::flush::run(
        b.clone(),
        out.clone(),
        sd,
        Duration::from_secs(5),
        id(kind, "drain"),
    ));
    b.append(&Tag::from("x"), &evs(0..7)).await.unwrap();
    trigger.fire();
    task.await.unwrap();
    assert_eq!(out.records(), 7, "flush_at_shutdown writes staged chunks");
    // The output down at shutdown: memory counts the loss, file keeps the chunk.
    let cfg = BufferConfig {
        flush_at_shutdown: true,
        retry_randomize: false,
        ..Default::default()
    };
    let (b, d2) = open(kind, cfg.clone(), &id(kind, "drain-down"));
    let out = TestOutput::failing(usize::MAX);
    let (trigger, sd) = nagare_core::shutdown::channel();
    let task = tokio::spawn(nagare_buffer::flush::run(
        b.clone(),
        out.clone(),
        sd,
        Duration::from_secs(2),
        id(kind, "drain-down"),
    ));
    b.append(&Tag::from("x"), &evs(0..4)).await.unwrap();
    trigger.fire();
    task.await.unwrap();
    match kind {
        Kind::Memory => {
            let stats = b.stats().clone();
            assert_eq!(stats.dropped_records.get("lost_at_shutdown").get(), 4);
            // Dropping the buffer afterwards does not count the same records again...
            drop(b);
            assert_eq!(stats.dropped_records.get("lost_at_shutdown").get(), 4);
            // ...but a memory buffer dropped without a drain (its output task aborted) counts
            // what it held.
            let (b, _d) = open(kind, cfg.clone(), &id(kind, "drop-undrained"));
            b.append(&Tag::from("x"), &evs(0..3)).await.unwrap();
            let stats = b.stats().clone();
            drop(b);
            assert_eq!(stats.dropped_records.get("lost_at_shutdown").get(), 3);
        }
        Kind::File => {
            assert_eq!(b.stats().dropped_records.total(), 0);
            let path = b.path().unwrap();
            drop(b);
            let mut cfg2 = cfg;
            cfg2.storage = nagare_buffer::Storage::File {
                path,
                fsync: nagare_buffer::FsyncPolicy::Never,
            };
            let b = nagare_buffer::Buffer::open(cfg2, &id(kind, "drain-down-2")).unwrap();
            let got: Vec<u64> = take_all(&b).await.iter().flat_map(seqs).collect();
            assert_eq!(got, vec![0, 1, 2, 3], "kept for the next start");
        }
    }
    drop(d2);
}

/// Shutdown with `overflow_action block`, the output down and the buffer full: an append
/// waiting for space is refused (`shutting_down`, no ack) once shutdown begins, appends that
/// fit are still taken, and the flush loop's shutdown completes.
async fn shutdown_releases_an_append_blocked_on_a_full_buffer(kind: Kind) {
    let one = bigs(0..1)[0].entry_len();
    let cfg = BufferConfig {
        chunk_limit_size: one * 4,
        total_limit_size: one * 10,
        overflow_action: OverflowAction::Block,
        flush_at_shutdown: true,
        retry_randomize: false,
        ..Default::default()
    };
    let (b, _d) = open(kind, cfg, &id(kind, "block-shutdown"));
    let out = TestOutput::failing(usize::MAX);
    let (trigger, sd) = nagare_core::shutdown::channel();
    let task = tokio::spawn(nagare_buffer::flush::run(
        b.clone(),
        out.clone(),
        sd,
        Duration::from_secs(2),
        id(kind, "block-shutdown"),
    ));
    b.append(&Tag::from("x"), &bigs(0..8)).await.unwrap();
    let b2 = b.clone();
    let blocked = tokio::spawn(async move { b2.append(&Tag::from("x"), &bigs(8..12)).await });
    while b.stats().blocked_appends.get() < 1 {
        tokio::task::yield_now().await;
    }
    assert!(!blocked.is_finished());
    // What the pipeline does when its inputs are told to stop (before it waits for them).
    b.stop_waiting();
    assert_eq!(blocked.await.unwrap(), Err(AppendError::Closed));
    assert_eq!(b.stats().refused_appends.get("shutting_down").get(), 1);
    // Full appends are refused at once from now on; one that fits is still taken.
    assert_eq!(
        b.append(&Tag::from("x"), &bigs(12..15)).await,
        Err(AppendError::Closed)
    );
    b.append(&Tag::from("x"), &bigs(15..16)).await.unwrap();
    trigger.fire();
    task.await.unwrap();
}

/// An output whose writes never complete.
struct Stuck;

#[async_trait::async_trait]
impl Output for Stuck {
    async fn write(&self, _chunk: &nagare_core::Chunk) -> Result<(), nagare_core::WriteError> {
        std::future::pending().await
    }
}

/// A secondary whose writes never complete holds up neither the shutdown nor the drain: the
/// drain ends at its deadline (no time added after it), the chunk is kept (file) or counted as
/// lost_at_shutdown (memory).
async fn drain_keeps_its_deadline_with_a_stuck_secondary(kind: Kind) {
    for (phase, mode) in [
        ("running", FlushMode::Immediate),
        ("drain", FlushMode::Interval),
    ] {
        let name = id(kind, &format!("stuck-secondary-{phase}"));
        let cfg = BufferConfig {
            flush_mode: mode,
            flush_interval: Duration::from_secs(3600),
            flush_at_shutdown: true,
            retry_randomize: false,
            ..Default::default()
        };
        let (b, _d) = open(kind, cfg, &name);
        let out = TestOutput::failing(usize::MAX);
        out.unrecoverable.store(true, Ordering::SeqCst); // straight to the secondary
        let drain = Duration::from_secs(4);
        let (trigger, sd) = nagare_core::shutdown::channel();
        let task = tokio::spawn(nagare_buffer::flush::run_with(
            b.clone(),
            out.clone(),
            Some(Arc::new(Stuck) as Arc<dyn Output>),
            sd,
            drain,
            name.clone(),
        ));
        b.append(&Tag::from("x"), &evs(0..5)).await.unwrap();
        if mode == FlushMode::Immediate {
            // The flush thread is now waiting on the secondary.
            while out.attempts.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let t0 = tokio::time::Instant::now();
        trigger.fire();
        tokio::time::timeout(Duration::from_secs(3600), task)
            .await
            .unwrap_or_else(|_| panic!("{phase}: the shutdown hangs on the secondary"))
            .unwrap();
        assert!(t0.elapsed() <= drain, "{phase}: {:?}", t0.elapsed());
        match kind {
            Kind::Memory => assert_eq!(
                b.stats().dropped_records.get("lost_at_shutdown").get(),
                5,
                "{phase}"
            ),
            Kind::File => {
                assert_eq!(b.stats().dropped_records.total(), 0, "{phase}");
                assert_eq!(b.held_records(), 5, "{phase}: kept on disk");
            }
        }
    }
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    super::$name(super::Kind::Memory).await
                }
            )*
        }
        mod file {
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    super::$name(super::Kind::File).await
                }
            )*
        }
    };
}

suite!(
    chunk_keys_split_by_tag_time_and_record_keys,
    limits_split_chunks_and_keep_order_per_key,
    overflow_throw_exception_refuses_and_counts,
    overflow_block_waits_for_space,
    overflow_drop_oldest_chunk_drops_and_counts,
    flush_modes_interval_immediate_lazy,
    retry_schedule_with_paused_time,
    retry_limit_goes_to_the_secondary,
    retry_limit_without_secondary_is_counted,
    compressed_chunks_reach_outputs_uncompressed,
    shutdown_drain_flushes_or_keeps,
    shutdown_releases_an_append_blocked_on_a_full_buffer,
    drain_keeps_its_deadline_with_a_stuck_secondary,
);
