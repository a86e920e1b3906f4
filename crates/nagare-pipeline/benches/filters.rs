//! Filter throughput on Docker-style records from the corpus (`../shared/corpus/sample.jsonl`,
//! `NAGARE_CORPUS` overrides; a built-in sample stands in when it is missing).
//!
//! Records are raw msgpack, as in_forward hands them on, one event per stream as the Docker
//! driver sends them (Message mode); split lines are left out (concat rejoins them first).
//! Criterion reports elements/s: events per second on one core.
//!
//! * `decode_only`: `Record::map_mut` (the decode every mutating filter pays), for reference.
//! * `parser`: filter_parser, json, `key_name log`, `reserve_data`, `remove_key_name_field`.
//! * `parser_grep`: that, then filter_grep excluding health checks on `$.msg`.
//! * `parser_grep_seed`: the seed config's flat form (`format json`, `key_name log`), then grep.
//! * `record_transformer`: three fields from tag, hostname and a record field.
//!
//! After criterion's (wall-clock) figures, a summary measures the same pipelines in CPU time
//! (this thread's, from `/proc/thread-self/stat`) and reports the fastest batch, so the
//! events/s per core it prints mean something on a busy machine too; it includes dropping the
//! filtered events.
//!
//! Run: `cargo bench -p nagare-pipeline --bench filters` (about 45 s).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use nagare_core::{Event, EventStream, EventTime, Record, Tag};
use nagare_pipeline::plugin::{ErrorEvent, Filter};
use nagare_pipeline::plugins::filter_grep::GrepFilter;
use nagare_pipeline::plugins::filter_parser::ParserFilter;
use nagare_pipeline::plugins::filter_record_transformer::RecordTransformer;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn corpus() -> Vec<(Tag, Event)> {
    let path = std::env::var_os("NAGARE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/sample.jsonl")
        });
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        eprintln!(
            "corpus {} not found: using a built-in sample",
            path.display()
        );
        SAMPLE.to_string()
    });
    text.lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let rec = v["record"].as_object()?;
            if rec.contains_key("partial_message") {
                return None;
            }
            let pairs: Vec<(String, String)> = rec
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            Some((
                Tag::from(v["tag"].as_str()?),
                Event {
                    time: EventTime::from_secs(v["time"].as_u64()? as u32),
                    record: Record::from_pairs(&pairs),
                },
            ))
        })
        .collect()
}

const SAMPLE: &str = r#"{"tag": "docker.condor.8f219e9cb0eb", "time": 1700000000, "record": {"container_id": "8f219e9cb0eb53f16947ccf25ec84d8dbc74254770f58904dba41ecccc3fc162", "container_name": "/ecs-condor-app-2-6e53a130", "source": "stdout", "log": "{\"level\":\"info\",\"ts\":\"2023-11-15T07:13:20.903+0900\",\"service\":\"condor\",\"msg\":\"request and response log\",\"out\":\"stdout\",\"log\":{\"start_time\":\"2023-11-15T07:13:20.000+0900\",\"duration\":47959883,\"request\":{\"hostname\":\"api.condor.example\",\"method\":\"GET\",\"path\":\"/v1/orders\"},\"response\":{\"status\":200}}}"}}
{"tag": "docker.falcon.6f5da2cec255", "time": 1700000000, "record": {"container_id": "6f5da2cec255404e4fb440034d6608697a8d41bed440e50454f31af3176813e0", "container_name": "/ecs-falcon-app-2-2ea68ef7", "source": "stdout", "log": "{\"level\":\"info\",\"ts\":\"2023-11-15T07:13:20.072+0900\",\"service\":\"falcon\",\"msg\":\"grpc.health.v1.Health/Check ok\"}"}}
{"tag": "docker.heron.827283e0ad84", "time": 1700000000, "record": {"container_id": "827283e0ad84404e4fb440034d6608697a8d41bed440e50454f31af3176813e0", "container_name": "/ecs-heron-app-1-2ea68ef7", "source": "stderr", "log": "GC pause (G1 Evacuation Pause) 12.3ms"}}"#;

fn section(conf: &str) -> nagare_config::Section {
    nagare_config::parse_str(conf, Path::new("bench.conf"))
        .unwrap()
        .children
        .remove(0)
}

fn streams(input: &[(Tag, Event)]) -> Vec<EventStream> {
    input
        .iter()
        .map(|(t, e)| EventStream::new(t.clone(), vec![e.clone()]))
        .collect()
}

fn run(filters: &[&dyn Filter], mut ss: Vec<EventStream>) -> (Vec<EventStream>, Vec<ErrorEvent>) {
    let mut errors = Vec::new();
    for s in ss.iter_mut() {
        for f in filters {
            f.filter(s, &mut errors);
            if s.is_empty() {
                break;
            }
        }
    }
    (ss, errors)
}

fn benches(c: &mut Criterion) {
    let input = corpus();
    let docker_parser = ParserFilter::from_section(
        &section("<filter docker.**>\n@type parser\nkey_name log\nreserve_data true\nremove_key_name_field true\n<parse>\n@type json\n</parse>\n</filter>\n"),
        "bench_parser",
    )
    .unwrap();
    let seed_parser = ParserFilter::from_section(
        &section("<filter docker.**>\n@type parser\nformat json\nkey_name log\n</filter>\n"),
        "bench_seed_parser",
    )
    .unwrap();
    let grep = GrepFilter::from_section(
        &section("<filter docker.**>\n@type grep\n<exclude>\nkey $.msg\npattern /healthcheck\\.Check|grpc\\.health/\n</exclude>\n</filter>\n"),
        "bench_grep",
    )
    .unwrap();
    let transformer = RecordTransformer::from_section(
        &section("<filter docker.**>\n@type record_transformer\n<record>\nhost ${hostname}\nservice ${tag_parts[1]}\nstream ${record[\"source\"]}\n</record>\n</filter>\n"),
        "bench_rt",
        "bench-host",
    )
    .unwrap();

    let mut g = c.benchmark_group("filters");
    g.throughput(Throughput::Elements(input.len() as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g.bench_function("decode_only", |b| {
        b.iter_batched(
            || streams(&input),
            |mut ss| {
                for s in ss.iter_mut() {
                    for e in s.events.iter_mut() {
                        std::hint::black_box(e.record.map_mut());
                    }
                }
                ss
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("parser", |b| {
        b.iter_batched(
            || streams(&input),
            |ss| run(&[&docker_parser], ss),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("parser_grep", |b| {
        b.iter_batched(
            || streams(&input),
            |ss| run(&[&docker_parser, &grep], ss),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("parser_grep_seed", |b| {
        b.iter_batched(
            || streams(&input),
            |ss| run(&[&seed_parser, &grep], ss),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("record_transformer", |b| {
        b.iter_batched(
            || streams(&input),
            |ss| run(&[&transformer], ss),
            BatchSize::LargeInput,
        )
    });
    g.finish();

    if std::env::args().any(|a| a == "--profile-time" || a == "--list") {
        return; // profiling one benchmark: no summary in the profile
    }
    println!("\nSummary, one core, incl. dropping the output: CPU time over all batches, and the");
    println!(
        "fastest batch of {} events by the clock (the least disturbed by other load):",
        input.len()
    );
    cpu_summary("decode_only", &[], &input, true);
    cpu_summary("parser", &[&docker_parser], &input, false);
    cpu_summary("parser_grep", &[&docker_parser, &grep], &input, false);
    cpu_summary("parser_grep_seed", &[&seed_parser, &grep], &input, false);
    cpu_summary("record_transformer", &[&transformer], &input, false);
}

/// This thread's user+system CPU time, in 1/100 s (USER_HZ).
fn cpu_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let Some(rest) = s.rfind(')').map(|i| &s[i + 2..]) else {
        return 0;
    };
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| {
        f.get(i - 3)
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0)
    };
    n(14) + n(15)
}

fn cpu_summary(name: &str, filters: &[&dyn Filter], input: &[(Tag, Event)], decode: bool) {
    const BATCHES: usize = 20;
    let (mut ticks, mut events) = (0u64, 0u64);
    let mut best = f64::MAX;
    while ticks < 250 {
        let batches: Vec<Vec<EventStream>> = (0..BATCHES).map(|_| streams(input)).collect();
        let t0 = cpu_ticks();
        for b in batches {
            let start = std::time::Instant::now();
            if decode {
                let mut b = b;
                for s in b.iter_mut() {
                    for e in s.events.iter_mut() {
                        std::hint::black_box(e.record.map_mut());
                    }
                }
                drop(b);
            } else {
                drop(std::hint::black_box(run(filters, b)));
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        ticks += cpu_ticks() - t0;
        events += (BATCHES * input.len()) as u64;
        if cpu_ticks() == 0 {
            println!("  {name}: /proc/thread-self/stat unavailable");
            return;
        }
    }
    let secs = ticks as f64 / 100.0;
    println!(
        "  {name:<20} {:>9.0} events/s CPU time ({:.2} us/event over {events} events); best batch {:>9.0} events/s ({:.2} us/event)",
        events as f64 / secs,
        secs * 1e6 / events as f64,
        input.len() as f64 / best,
        best * 1e6 / input.len() as f64,
    );
}

criterion_group!(filters, benches);
criterion_main!(filters);
