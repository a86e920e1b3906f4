//! out_cloudwatch_logs throughput.
//!
//! * `cloudwatch_plan`: a buffer chunk of Docker-style error records (about 420 bytes of
//!   msgpack each, three services) -> `PutLogEvents` requests: decode, group/stream names,
//!   JSON message, sort, cut at 10,000 events / 1,048,576 bytes / 24 h. Pure CPU.
//! * `cloudwatch_batcher`: the batcher alone, on ready messages.
//! * `cloudwatch_moto`: whole writes into moto (SDK, HTTP, moto's own time included), when
//!   moto is available (`NAGARE_MOTO_ENDPOINT`, or `.ci/venv`).
//!
//! `cargo bench -p nagare-aws --bench cloudwatch_batch`

#[path = "../tests/common/moto.rs"]
mod moto;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nagare_aws::out_cloudwatch_logs::batch::{Batcher, Limits};
use nagare_aws::out_cloudwatch_logs::config::{CloudWatchLogsConfig, NameSource};
use nagare_aws::out_cloudwatch_logs::CloudWatchLogs;
use nagare_core::{Chunk, ChunkId, ChunkKey, Event, EventTime, Output, Record, Tag};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SERVICES: [&str; 3] = ["condor", "falcon", "heron"];

fn record(i: usize, service: &str) -> Record {
    Record::from_pairs(&[
        (
            "container_id",
            "8f219e9cb0eb53f16947ccf25ec84d8dbc74254770f58904dba41ecccc3fc162",
        ),
        ("container_name", "/ecs-condor-app-2-6e53a130"),
        ("source", "stderr"),
        (
            "level",
            match i % 10 {
                0 => "fatal",
                _ => "error",
            },
        ),
        ("ts", "2023-11-15T07:13:20.903+0900"),
        ("service", service),
        (
            "msg",
            "failed to process request: upstream connect error or disconnect/reset before headers",
        ),
        (
            "error",
            &format!(
                "dial tcp 10.0.{}.{}:8080: connect: connection refused (request {i})",
                i % 250,
                i % 200
            ),
        ),
        ("caller", "handler/orders.go:214"),
    ])
}

fn chunk(n: usize, t0: u32) -> Chunk {
    let mut out = BytesMut::new();
    for i in 0..n {
        Event {
            time: EventTime::new(t0 + (i / 1000) as u32, (i % 1000) as u32 * 1_000_000),
            record: record(i, SERVICES[i % 3]),
        }
        .write_entry(&mut out, false);
    }
    Chunk {
        id: ChunkId::random(),
        tag: Tag::from("docker.app"),
        key: ChunkKey::default(),
        bytes: out.freeze(),
        records: n,
    }
}

fn cfg(id: &str) -> CloudWatchLogsConfig {
    CloudWatchLogsConfig::new(
        id,
        NameSource::Key("service".into()),
        NameSource::Static("agg-bench".into()),
    )
}

fn plan(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _g = rt.enter();
    let out = CloudWatchLogs::new_lazy(cfg("bench-plan"), None).unwrap();
    let mut g = c.benchmark_group("cloudwatch_plan");
    for n in [1_000usize, 20_000] {
        let ch = chunk(n, 1_700_000_000);
        eprintln!(
            "chunk of {n} records: {} bytes of msgpack ({} per record)",
            ch.bytes.len(),
            ch.bytes.len() / n
        );
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &ch, |b, ch| {
            b.iter(|| out.plan_batches(ch).len())
        });
    }
    g.finish();

    let msgs: Vec<String> = (0..20_000)
        .map(|i| format!("{{\"level\":\"error\",\"msg\":\"request {i} failed\",\"service\":\"condor\",\"detail\":\"{}\"}}", "x".repeat(i % 400)))
        .collect();
    let mut g = c.benchmark_group("cloudwatch_batcher");
    g.throughput(Throughput::Elements(msgs.len() as u64));
    g.bench_function("20000", |b| {
        b.iter(|| {
            let mut bt = Batcher::new(Limits::default());
            for (i, m) in msgs.iter().enumerate() {
                bt.push(
                    SERVICES[i % 3],
                    "agg",
                    ((i * 7919) % 5000) as i64,
                    m.clone(),
                    i as u32,
                );
            }
            bt.finish().batches.len()
        })
    });
    g.finish();
}

fn into_moto(c: &mut Criterion) {
    let Some(m) = moto::moto() else {
        eprintln!("cloudwatch_moto skipped: no moto");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("cloudwatch_moto");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for (n, concurrency) in [(10_000usize, 1usize), (10_000, 3)] {
        let mut conf = cfg(&format!("bench-moto-{concurrency}"));
        conf.aws.region = Some("us-east-1".into());
        conf.aws.endpoint = Some(m.endpoint.clone());
        conf.aws.access_key_id = Some("testing".into());
        conf.aws.secret_access_key = Some(nagare_aws::Secret("testing".into()));
        conf.auto_create_stream = true;
        conf.concurrency = concurrency;
        conf.stream = NameSource::Static(moto::unique("agg-bench"));
        let out = {
            let _g = rt.enter();
            Arc::new(CloudWatchLogs::new_lazy(conf, None).unwrap())
        };
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(
            BenchmarkId::new(format!("concurrency{concurrency}"), n),
            |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let ch = chunk(n, EventTime::now().secs() - 120);
                        let start = Instant::now();
                        rt.block_on(out.write(&ch)).unwrap();
                        total += start.elapsed();
                    }
                    total
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, plan, into_moto);
criterion_main!(benches);
