//! Append + flush throughput of the memory and file buffers.
//!
//! One iteration appends 20,000 Docker-like events (about 446 bytes of msgpack each, 457 bytes
//! as a `[time, record]` entry) in batches of 100 (what in_forward hands over per read), then
//! queues every chunk, reads each back (`dequeue`: a file chunk is read from disk and its CRCs
//! checked) and purges it (a file chunk is deleted). Throughput is entry bytes; events/s is
//! bytes/s / 457 (or 20,000 / time per iteration). Run: `cargo bench -p nagare-buffer --bench buffer`.

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

fn run_once(rt: &tokio::runtime::Runtime, b: &Buffer, tag: &Tag, batches: &[Vec<Event>]) {
    rt.block_on(async {
        for batch in batches {
            b.append(tag, batch).await.expect("append");
        }
        b.enqueue_all();
        while let Some(c) = b.try_dequeue().await {
            b.purge(&c);
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
    let cases: Vec<(&str, Storage, Compress)> = vec![
        ("memory", Storage::Memory, Compress::Text),
        ("memory_gzip", Storage::Memory, Compress::Gzip),
        (
            "file_fsync_never",
            Storage::File {
                path: dir.join("never"),
                fsync: FsyncPolicy::Never,
            },
            Compress::Text,
        ),
        (
            "file_fsync_interval_1s",
            Storage::File {
                path: dir.join("interval"),
                fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
            },
            Compress::Text,
        ),
        (
            "file_fsync_always",
            Storage::File {
                path: dir.join("always"),
                fsync: FsyncPolicy::Always,
            },
            Compress::Text,
        ),
        (
            "file_gzip_fsync_interval_1s",
            Storage::File {
                path: dir.join("gzip"),
                fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
            },
            Compress::Gzip,
        ),
    ];
    for (name, storage, compress) in cases {
        let cfg = BufferConfig {
            storage,
            compress,
            chunk_limit_size: 8 * 1024 * 1024,
            total_limit_size: 1 << 30,
            ..Default::default()
        };
        let b = Buffer::open(cfg, &format!("bench-{name}")).unwrap();
        // The interval policy's fsync runs in the flush loop; here, once per iteration (20k
        // events take well under a second, so this is at least as often as `1s`).
        let interval = b.fsync_interval().is_some();
        g.bench_function(name, |bench| {
            bench.iter(|| {
                run_once(&rt, &b, &tag, &batches);
                if interval {
                    rt.block_on(b.sync_dirty());
                }
            })
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
