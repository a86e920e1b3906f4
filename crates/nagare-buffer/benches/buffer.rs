//! Append + flush throughput of the memory and file buffers.
//!
//! One iteration appends 20,000 Docker-like events (about 446 bytes of msgpack each, 457 bytes
//! as a `[time, record]` entry) in batches of 100 (what in_forward hands over per read), then
//! queues every chunk, reads each back (`dequeue`: a file chunk is read from disk and its CRCs
//! checked) and purges it (a file chunk is deleted). Throughput is entry bytes; events/s is
//! bytes/s / 457 (or 20,000 / time per iteration). The interval policy is measured twice: synced
//! after the chunks were written (nothing left to write back) and before they are read back (a
//! backlog: every chunk written back). Run: `cargo bench -p nagare-buffer --bench buffer`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nagare_buffer::{Buffer, BufferConfig, Compress, FsyncPolicy, Storage};
use nagare_core::{Event, EventTime, Record, Tag};
use std::time::Duration;

const EVENTS: usize = 20_000;
const BATCH: usize = 100;

fn docker_event(i: usize) -> Event {
    let log = format!(
        "{{\"level\":\"info\",\"ts\":\"2024-05-01T12:00:00.{i:06}Z\",\"msg\":\"request served\",\"method\":\"GET\",\"path\":\"/api/v1/orders/{i}\",\"status\":200,\"duration_ms\":12.5,\"user_agent\":\"Mozilla/5.0 (X11; Linux x86_64)\",\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"span_id\":\"00f067aa0ba902b7\",\"bytes\":{i}}}"
    );
    Event {
        time: EventTime::new(
            1_714_564_800 + (i / 1000) as u32,
            (i % 1000) as u32 * 1_000_000,
        ),
        record: Record::from_pairs(&[
            (
                "container_id",
                "8f2c3e0a9b1d4c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6",
            ),
            (
                "container_name",
                "/ecs-orders-api-12-orders-api-a8f9c0d1e2f3",
            ),
            ("source", "stdout"),
            ("log", log.as_str()),
        ]),
    }
}

/// When the interval fsync runs in an iteration.
#[derive(Clone, Copy, PartialEq)]
enum Sync {
    No,
    /// After the chunks were written and deleted: the output keeps up (nothing to write back).
    AfterPurge,
    /// Before the chunks are read back: a queue older than the interval (all written back).
    BeforeRead,
}

fn run_once(
    rt: &tokio::runtime::Runtime,
    b: &Buffer,
    tag: &Tag,
    batches: &[Vec<Event>],
    sync: Sync,
) {
    rt.block_on(async {
        for batch in batches {
            b.append(tag, batch).await.expect("append");
        }
        b.enqueue_all();
        if sync == Sync::BeforeRead {
            b.sync_dirty().await;
        }
        while let Some(c) = b.try_dequeue().await {
            b.purge(&c);
        }
        if sync == Sync::AfterPurge {
            b.sync_dirty().await;
        }
    });
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let events: Vec<Event> = (0..EVENTS).map(docker_event).collect();
    let bytes: usize = events.iter().map(Event::entry_len).sum();
    let batches: Vec<Vec<Event>> = events.chunks(BATCH).map(|c| c.to_vec()).collect();
    let tag = Tag::from("docker.orders-api");
    let dir = std::env::temp_dir().join(format!("nagare-buffer-bench-{}", std::process::id()));
    let mut g = c.benchmark_group("buffer_append_flush");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    let interval = |d: &str| Storage::File {
        path: dir.join(d),
        fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
    };
    // The interval policy's fsync runs in the flush loop; here, once per iteration (20k events
    // take well under a second, so this is at least as often as `1s`), at the point `Sync`
    // says.
    let cases: Vec<(&str, Storage, Compress, Sync)> = vec![
        ("memory", Storage::Memory, Compress::Text, Sync::No),
        ("memory_gzip", Storage::Memory, Compress::Gzip, Sync::No),
        (
            "file_fsync_never",
            Storage::File {
                path: dir.join("never"),
                fsync: FsyncPolicy::Never,
            },
            Compress::Text,
            Sync::No,
        ),
        (
            "file_fsync_interval_1s",
            interval("interval"),
            Compress::Text,
            Sync::AfterPurge,
        ),
        (
            "file_fsync_interval_1s_backlog",
            interval("backlog"),
            Compress::Text,
            Sync::BeforeRead,
        ),
        (
            "file_fsync_always",
            Storage::File {
                path: dir.join("always"),
                fsync: FsyncPolicy::Always,
            },
            Compress::Text,
            Sync::No,
        ),
        (
            "file_gzip_fsync_interval_1s_backlog",
            interval("gzip"),
            Compress::Gzip,
            Sync::BeforeRead,
        ),
    ];
    for (name, storage, compress, sync) in cases {
        let cfg = BufferConfig {
            storage,
            compress,
            chunk_limit_size: 8 * 1024 * 1024,
            total_limit_size: 1 << 30,
            ..Default::default()
        };
        let b = Buffer::open(cfg, &format!("bench-{name}")).unwrap();
        g.bench_function(name, |bench| {
            bench.iter(|| run_once(&rt, &b, &tag, &batches, sync))
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
