//! out_s3 encoding cost: chunk entries (msgpack `[time, record]`, the corpus records cycled,
//! `parsed` as the example forwarder delivers them, `typical` the same without the 54 giant
//! split audit lines, and `docker` as Docker sends them) -> JSON
//! lines -> gzip / zstd, one core. Throughput is in **input** bytes: the msgpack
//! entries the buffer hands the output (the JSON text is about 1.2x larger).
//!
//! Then, unless `NAGARE_BENCH_NO_MOTO` is set or moto is missing: whole-output events/s into
//! moto on 127.0.0.1 (four concurrent writers, 8 MiB chunks, gzip level 6), printed as
//! `moto: ...`.
//!
//!     cargo bench -p nagare-aws --bench s3_format
//!     NAGARE_BENCH_NO_MOTO=1 cargo bench -p nagare-aws --bench s3_format -- gzip

#[path = "../tests/common/moto.rs"]
mod moto;

use bytes::{Bytes, BytesMut};
use criterion::{black_box, Criterion, Throughput};
use nagare_aws::out_s3::format::{Formatter, Scratch};
use nagare_aws::out_s3::{Endpoint, Inject, LineFormat, S3Config, S3Output, StoreAs};
use nagare_core::{Chunk, ChunkId, ChunkKey, Event, EventTime, Output, Record, Tag};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The corpus lines: Docker's records (string maps, `log` a string), partials rejoined.
fn corpus_lines() -> Vec<Vec<(String, String)>> {
    let path = moto::workspace_root().join("../shared/corpus/sample.jsonl");
    let text = std::fs::read_to_string(&path).expect("../shared/corpus/sample.jsonl");
    let mut out: Vec<Vec<(String, String)>> = Vec::new();
    let mut open = std::collections::HashMap::new();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let rec: Vec<(String, String)> = v["record"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, x)| (k.clone(), x.as_str().unwrap_or("").to_string()))
            .collect();
        let get = |k: &str| rec.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if get("partial_message").as_deref() == Some("true") {
            let pid = get("partial_id").unwrap_or_default();
            match open.get(&pid) {
                Some(&i) => {
                    let line: &mut Vec<(String, String)> = &mut out[i];
                    if let Some(l) = line.iter_mut().find(|(k, _)| k == "log") {
                        l.1.push_str(&get("log").unwrap_or_default());
                    }
                }
                None => {
                    out.push(
                        rec.iter()
                            .filter(|(k, _)| !k.starts_with("partial_"))
                            .cloned()
                            .collect(),
                    );
                    open.insert(pid.clone(), out.len() - 1);
                }
            }
            if get("partial_last").as_deref() == Some("true") {
                open.remove(&pid);
            }
        } else {
            out.push(rec);
        }
    }
    out
}

fn to_rmpv(v: &serde_json::Value) -> rmpv::Value {
    match v {
        serde_json::Value::Null => rmpv::Value::Nil,
        serde_json::Value::Bool(b) => (*b).into(),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into(),
            (_, Some(u)) => u.into(),
            _ => n.as_f64().unwrap_or(0.0).into(),
        },
        serde_json::Value::String(s) => s.as_str().into(),
        serde_json::Value::Array(a) => rmpv::Value::Array(a.iter().map(to_rmpv).collect()),
        serde_json::Value::Object(m) => rmpv::Value::Map(
            m.iter()
                .map(|(k, v)| (k.as_str().into(), to_rmpv(v)))
                .collect(),
        ),
    }
}

/// The records out_s3 receives: `docker` = Docker's records as they arrive (the JSON log line
/// is a string, every quote escaped in the output); `parsed` = as `examples/forwarder.conf`
/// hands them over (partials rejoined, the JSON in `log` parsed into the record by
/// filter_parser, health checks dropped); `typical` = `parsed` without the giant split lines.
fn corpus_records(kind: &str) -> Vec<Record> {
    if kind == "typical" {
        // Without the 54 audit lines Docker split (16-40 KiB each: a third of the corpus'
        // bytes): events of the size the design's per-event budget assumes.
        return corpus_records("parsed")
            .into_iter()
            .filter(|r| r.as_bytes().len() < 4096)
            .collect();
    }
    let lines = corpus_lines();
    match kind {
        "docker" => lines.iter().map(|l| Record::from_pairs(l)).collect(),
        _ => lines
            .iter()
            .filter_map(|l| {
                let mut m: serde_json::Map<String, serde_json::Value> = l
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect();
                let log = m["log"].as_str().unwrap_or("").to_string();
                if let Ok(serde_json::Value::Object(parsed)) = serde_json::from_str(&log) {
                    let msg = parsed.get("msg").and_then(|x| x.as_str()).unwrap_or("");
                    if msg.contains("healthcheck.Check") || msg.contains("grpc.health") {
                        return None;
                    }
                    m.extend(parsed);
                }
                Record::from_value(&to_rmpv(&serde_json::Value::Object(m)))
            })
            .collect(),
    }
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
    for kind in ["parsed", "typical", "docker"] {
        bench_format_kind(c, kind);
    }
}

fn bench_format_kind(c: &mut Criterion, kind: &str) {
    let records = corpus_records(kind);
    let (input, n) = entries(&records, 8 << 20);
    let mut json = Vec::new();
    formatter(StoreAs::Json, 0)
        .encode(&input, "t", &mut Scratch::default(), &mut json)
        .unwrap();
    eprintln!(
        "{kind} input: {} records, {} msgpack bytes ({:.0} per record) -> {} JSON bytes ({:.0} per line)",
        n,
        input.len(),
        input.len() as f64 / n as f64,
        json.len(),
        json.len() as f64 / n as f64
    );
    let mut g = c.benchmark_group(format!("s3_format_{kind}"));
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
                f.encode(black_box(&input), "t", &mut scratch, &mut out)
                    .unwrap();
                black_box(out.len())
            })
        });
        if store_as == StoreAs::Gzip {
            eprintln!(
                "{kind} {name}: ratio {:.1} (JSON bytes / gzip bytes)",
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
    let records = corpus_records("parsed");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
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
            (24 * input.len()) >> 20,
            secs,
            events as f64 / secs,
            (24 * input.len()) as f64 / secs / 1e6
        );
    });
}

/// `NAGARE_S3_FIXED=<variant>:<iterations>[:parsed|docker]`: encode a fixed number of times and exit (for
/// `perf stat -e cycles:u`, which stays meaningful on a loaded machine where wall time does
/// not; the CPU time printed is the thread's own). Variants: json, gzip1..gzip9, zstd3, zlib1,
/// zlib6 (flate2 alone on the JSON), ld1..ld12 (libdeflate alone on the JSON).
fn fixed_run(spec: &str) {
    let mut parts = spec.split(':');
    let name = parts.next().unwrap_or("json");
    let iters: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(20);
    let kind = parts.next().unwrap_or("parsed");
    let records = corpus_records(kind);
    let (input, _) = entries(&records, 8 << 20);
    let mut json = Vec::new();
    formatter(StoreAs::Json, 0)
        .encode(&input, "t", &mut Scratch::default(), &mut json)
        .unwrap();
    let mut scratch = Scratch::default();
    let mut out = Vec::new();
    let mut ld_out = Vec::new();
    let t0 = Instant::now();
    let cpu0 = thread_cpu_ns();
    let mut bytes = 0usize;
    for _ in 0..iters {
        match name {
            _ if name.starts_with("ld") => {
                // libdeflate alone, gzip, on the rendered JSON (JSON bytes).
                let level: i32 = name[2..].parse().expect("ld<level>");
                let mut c = libdeflater::Compressor::new(
                    libdeflater::CompressionLvl::new(level).expect("libdeflate level 0-12"),
                );
                ld_out.resize(c.gzip_compress_bound(json.len()), 0);
                let n = c.gzip_compress(&json, &mut ld_out).unwrap();
                out.clear();
                out.extend_from_slice(&ld_out[..n]);
                bytes += json.len();
            }
            "zlib1" | "zlib6" => {
                out.clear();
                let level = if name == "zlib1" { 1 } else { 6 };
                let mut e =
                    flate2::write::GzEncoder::new(&mut out, flate2::Compression::new(level));
                e.write_all(&json).unwrap();
                e.finish().unwrap();
                bytes += json.len();
            }
            _ => {
                let f = match name {
                    "json" => formatter(StoreAs::Json, 0),
                    "zstd3" => formatter(StoreAs::Zstd, 3),
                    _ => match name.strip_prefix("gzip").and_then(|l| l.parse().ok()) {
                        Some(level) => formatter(StoreAs::Gzip, level),
                        None => panic!("unknown variant {name}"),
                    },
                };
                f.encode(&input, "t", &mut scratch, &mut out).unwrap();
                bytes += input.len();
            }
        }
        black_box(out.len());
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (thread_cpu_ns() - cpu0) as f64 / 1e9;
    eprintln!(
        "{name} {kind}: {iters} x {} bytes in {wall:.3} s wall, {cpu:.3} s CPU = {:.0} MB/s of CPU time; ratio {:.2} (JSON bytes / output bytes)",
        bytes / iters,
        bytes as f64 / cpu / 1e6,
        json.len() as f64 / out.len() as f64
    );
}

/// This thread's CPU time in ns (`/proc/thread-self/schedstat`, the scheduler's own account):
/// meaningful on a loaded machine where wall time is not. 0 where unavailable.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if let Ok(spec) = std::env::var("NAGARE_S3_FIXED") {
        fixed_run(&spec);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench_format(&mut c);
    c.final_summary();
    let listing = std::env::args().any(|a| a == "--list" || a == "--test");
    if std::env::var_os("NAGARE_BENCH_NO_MOTO").is_none() && !listing {
        bench_moto();
    }
}
