//! out_s3 encoding cost: chunk entries (msgpack `[time, record]`, the corpus records cycled)
//! -> JSON lines -> gzip / zstd, one core. Throughput is in **input** bytes: the msgpack
//! entries the buffer hands the output (the JSON text is about 1.2x larger).
//!
//! Then, unless `NAGARE_BENCH_NO_MOTO` is set or moto is missing: whole-output events/s into
//! moto on 127.0.0.1 (four concurrent writers, 8 MiB chunks, gzip level 6), printed as
//! `moto: ...`.
//!
//!     cargo bench -p nagare-aws --bench s3_format
//!     NAGARE_BENCH_NO_MOTO=1 cargo bench -p nagare-aws --bench s3_format -- gzip

#[path = "../tests/common/moto.rs"]
#[allow(dead_code)]
mod moto;

use bytes::{Bytes, BytesMut};
use criterion::{black_box, Criterion, Throughput};
use nagare_aws::out_s3::format::{Formatter, Scratch};
use nagare_aws::out_s3::{Endpoint, Inject, LineFormat, S3Config, S3Output, StoreAs};
use nagare_core::{Chunk, ChunkId, ChunkKey, Event, EventTime, Output, Record, Tag};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Records of the corpus (Docker's string maps), as the buffer stores them.
fn corpus_records() -> Vec<Record> {
    let path = moto::workspace_root().join("../shared/corpus/sample.jsonl");
    let text = std::fs::read_to_string(&path).expect("../shared/corpus/sample.jsonl");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let pairs: Vec<(String, String)> = v["record"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, x)| (k.clone(), x.as_str().unwrap_or("").to_string()))
                .collect();
            Record::from_pairs(&pairs)
        })
        .collect()
}

/// About `target` bytes of packed entries, the corpus cycled.
fn entries(records: &[Record], target: usize) -> (Bytes, usize) {
    let mut b = BytesMut::new();
    let mut n = 0;
    while b.len() < target {
        let r = &records[n % records.len()];
        Event {
            time: EventTime::new(1_700_000_000 + n as u32 / 100, 0),
            record: r.clone(),
        }
        .write_entry(&mut b, false);
        n += 1;
    }
    (b.freeze(), n)
}

fn formatter(store_as: StoreAs, level: i32) -> Formatter {
    Formatter {
        line: LineFormat::Json,
        inject: Inject::default(),
        store_as,
        level,
    }
}

fn bench_format(c: &mut Criterion) {
    let records = corpus_records();
    let (input, n) = entries(&records, 8 << 20);
    let mut json = Vec::new();
    formatter(StoreAs::Json, 0)
        .encode(&input, "t", &mut Scratch::default(), &mut json)
        .unwrap();
    eprintln!(
        "input: {} records, {} msgpack bytes ({:.0} per record) -> {} JSON bytes ({:.0} per line)",
        n,
        input.len(),
        input.len() as f64 / n as f64,
        json.len(),
        json.len() as f64 / n as f64
    );
    let mut g = c.benchmark_group("s3_format");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Bytes(input.len() as u64));
    for (name, store_as, level) in [
        ("json_lines", StoreAs::Json, 0),
        ("json_gzip_1", StoreAs::Gzip, 1),
        ("json_gzip_6", StoreAs::Gzip, 6),
        ("json_zstd_3", StoreAs::Zstd, 3),
    ] {
        let f = formatter(store_as, level);
        let mut scratch = Scratch::default();
        let mut out = Vec::new();
        g.bench_function(name, |b| {
            b.iter(|| {
                f.encode(black_box(&input), "t", &mut scratch, &mut out).unwrap();
                black_box(out.len())
            })
        });
        if store_as == StoreAs::Gzip {
            eprintln!(
                "{name}: ratio {:.1} (JSON bytes / gzip bytes)",
                json.len() as f64 / out.len() as f64
            );
        }
    }
    // The reference point: flate2 on zlib-rs alone, over the already-rendered JSON (its
    // throughput is counted in JSON bytes, as the 258 / 888 MB/s figures are).
    g.throughput(Throughput::Bytes(json.len() as u64));
    for level in [1u32, 6] {
        let mut out = Vec::with_capacity(json.len());
        g.bench_function(format!("zlib_rs_alone_{level}_json_bytes"), |b| {
            b.iter(|| {
                out.clear();
                let mut e =
                    flate2::write::GzEncoder::new(&mut out, flate2::Compression::new(level));
                e.write_all(black_box(&json)).unwrap();
                e.finish().unwrap();
                black_box(out.len())
            })
        });
    }
    g.finish();
}

/// Whole-output events/s into moto: encode + conditional PutObject, four writers.
fn bench_moto() {
    let Some(m) = moto::moto() else {
        eprintln!("moto: skipped (not installed)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let records = corpus_records();
        let bucket = moto::unique("bench").to_lowercase();
        let mut c = S3Config::new("bench", &bucket);
        c.endpoint = Endpoint::Url(m.endpoint.clone());
        c.force_path_style = true;
        c.region = Some("us-east-1".into());
        c.access_key_id = Some("testing".into());
        c.secret_access_key = Some(nagare_aws::Secret("testing".into()));
        c.auto_create_bucket = true;
        c.request_timeout = Duration::from_secs(60);
        let out = Arc::new(S3Output::start(&c).await.unwrap());
        let (input, per_chunk) = entries(&records, 8 << 20);
        let chunks: Vec<Chunk> = (0..24)
            .map(|i| Chunk {
                id: ChunkId::random(),
                tag: Tag::new("docker.condor.x"),
                key: ChunkKey {
                    tag: Some(Tag::new(format!("docker.condor.{i}"))),
                    timekey: Some(1_700_000_000),
                    vars: Vec::new(),
                },
                bytes: input.clone(),
                records: per_chunk,
            })
            .collect();
        let t0 = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        let queue = Arc::new(std::sync::Mutex::new(chunks));
        for _ in 0..4 {
            let (q, o) = (queue.clone(), out.clone());
            set.spawn(async move {
                loop {
                    let Some(ch) = q.lock().unwrap().pop() else {
                        return;
                    };
                    o.write(&ch).await.unwrap();
                }
            });
        }
        while set.join_next().await.is_some() {}
        let secs = t0.elapsed().as_secs_f64();
        let events = 24 * per_chunk;
        eprintln!(
            "moto: {events} events ({} MiB msgpack) in 24 objects, 4 writers, gzip 6: {:.2} s = {:.0} events/s, {:.1} MB/s of input",
            24 * input.len() >> 20,
            secs,
            events as f64 / secs,
            (24 * input.len()) as f64 / secs / 1e6
        );
    });
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_format(&mut c);
    c.final_summary();
    let listing = std::env::args().any(|a| a == "--list" || a == "--test");
    if std::env::var_os("NAGARE_BENCH_NO_MOTO").is_none() && !listing {
        bench_moto();
    }
}
