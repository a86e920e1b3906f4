//! Routing throughput: rewrite_tag_filter re-emitting Docker-style records, through the real
//! `Router` (label lookup, re-emit into `@ROUTED`, first `<match>` there).
//!
//! Records come from the corpus (`../shared/corpus/sample.jsonl`, `NAGARE_CORPUS` overrides;
//! split lines left out), one event per stream as the Docker driver sends them (Message
//! mode). The routes are the ones in `examples/forwarder.conf`: `<match docker.**>` with the
//! AUDIT / not-AUDIT rules and `@label @ROUTED`, and a counting `<match docker.**>` in
//! `@ROUTED`. Criterion reports elements/s = events per second on one core.
//!
//! * `rewrite/parsed`: records as filter_parser leaves them (decoded maps with `marker` at the
//!   top level), through rewrite_tag_filter only.
//! * `rewrite/raw`: records still raw msgpack (no `marker`: every record takes the inverted
//!   rule), the cost without the decode.
//! * `rewrite/batch100`: parsed records in streams of 100 (PackedForward from a forwarder).
//! * `rewrite/parser_grep_rewrite`: the forwarder's filter chain (concat pass-through, parser
//!   `format json` `reserve_data`, grep excluding health checks) then rewrite_tag_filter, all
//!   through the router: issue 3's "parser + grep + rewrite" figure.
//!
//! On a shared machine wall-clock figures swing with the load, so each case is also timed by
//! this thread's CPU time (`/proc/thread-self/stat`, utime + stime) over about 3 s and printed
//! as `cpu: NAME N events per CPU-second`: the per-core cost, whatever else runs.
//!
//! Run: `cargo bench -p nagare-pipeline --bench routing` (about 1 min). For profiling or a
//! quick CPU figure, `NAGARE_BENCH_CPU_ONLY=parser_grep_rewrite` (a comma-separated list of
//! case names) skips criterion and only runs the CPU-time measurement of those cases
//! (`NAGARE_BENCH_CPU_SECS=10` makes it longer).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use nagare_core::ack::Committed;
use nagare_core::{EmitError, Event, EventStream, EventTime, Record, Tag};
use nagare_pipeline::pattern::Pattern;
use nagare_pipeline::plugin::{Filter, OutputPlugin, Tasks};
use nagare_pipeline::router::{LabelHandle, Router};
use nagare_pipeline::{plugins, BuildCtx};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn corpus() -> Vec<(Tag, Event)> {
    let path = std::env::var_os("NAGARE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/sample.jsonl")
        });
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (set NAGARE_CORPUS)", path.display()));
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

fn section(conf: &str) -> nagare_config::Section {
    nagare_config::parse_str(conf, Path::new("bench.conf"))
        .unwrap()
        .children
        .remove(0)
}

#[derive(Default)]
struct Count(AtomicU64);

#[async_trait::async_trait]
impl OutputPlugin for Count {
    async fn emit(&self, s: EventStream) -> Result<Committed, EmitError> {
        self.0.fetch_add(s.len() as u64, Ordering::Relaxed);
        Ok(Committed::new())
    }
}

const REWRITE: &str = "<match docker.**>\n  @type rewrite_tag_filter\n  @id bench_rewrite\n  @label @ROUTED\n  <rule>\n    key marker\n    pattern /^AUDIT$/\n    tag ${tag}.audit\n  </rule>\n  <rule>\n    key marker\n    pattern /^AUDIT$/\n    invert true\n    tag ${tag}.app\n  </rule>\n</match>\n";

const FILTERS: &[&str] = &[
    "<filter docker.**>\n  @type concat\n  @id bench_concat\n  key log\n  use_partial_metadata true\n  separator \"\"\n</filter>\n",
    "<filter docker.**>\n  @type parser\n  @id bench_parser\n  key_name log\n  format json\n  reserve_data true\n  reserve_time true\n  emit_invalid_record_to_error false\n</filter>\n",
    "<filter docker.**>\n  @type grep\n  @id bench_grep\n  <exclude>\n    key msg\n    pattern /healthcheck\\.Check|grpc\\.health/\n  </exclude>\n</filter>\n",
];

/// ROOT's router, the counter, both routers (kept alive: handles are weak) and the filters.
type Routes = (
    Arc<Router>,
    Arc<Count>,
    Vec<Arc<Router>>,
    Vec<Arc<dyn Filter>>,
);

/// ROOT (filters + rewrite) and @ROUTED (a counting match).
fn routes(with_filters: bool) -> Routes {
    let root_h = LabelHandle::new("ROOT");
    let routed_h = LabelHandle::new("@ROUTED");
    let mut ctx = BuildCtx {
        current_label: root_h.clone(),
        ..BuildCtx::default()
    };
    ctx.labels.insert("@ROUTED".into(), routed_h.clone());
    let mut tasks = Tasks::default();
    let mut root = Router::new("ROOT");
    let mut filters = Vec::new();
    if with_filters {
        for f in FILTERS {
            let f = plugins::build_filter(&section(f), &mut ctx, &mut tasks).unwrap();
            filters.push(f.clone());
            root.filters.push((Pattern::new("docker.**").unwrap(), f));
        }
    }
    let rw = plugins::build_output(&section(REWRITE), &mut ctx, &mut tasks).unwrap();
    root.matches.push((Pattern::new("docker.**").unwrap(), rw));
    let count = Arc::new(Count::default());
    let mut routed = Router::new("@ROUTED");
    routed
        .matches
        .push((Pattern::new("docker.**").unwrap(), count.clone()));
    let (root, routed) = (Arc::new(root), Arc::new(routed));
    root_h.bind(&root);
    routed_h.bind(&routed);
    (root.clone(), count, vec![root, routed], filters)
}

/// The records as filter_parser leaves them (decoded, JSON fields at the top level).
fn parsed(input: &[(Tag, Event)]) -> Vec<(Tag, Event)> {
    let mut ctx = BuildCtx::default();
    let parser =
        plugins::build_filter(&section(FILTERS[1]), &mut ctx, &mut Tasks::default()).unwrap();
    input
        .iter()
        .map(|(t, e)| {
            let mut s = EventStream::new(t.clone(), vec![e.clone()]);
            parser.filter(&mut s, &mut Vec::new());
            (t.clone(), s.events.remove(0))
        })
        .collect()
}

fn streams(input: &[(Tag, Event)], per: usize) -> Vec<EventStream> {
    let mut out = Vec::new();
    // Streams of `per` events with one tag each (consecutive records of the same tag).
    let mut by_tag: Vec<(Tag, Vec<Event>)> = Vec::new();
    for (t, e) in input {
        match by_tag.iter_mut().find(|(x, _)| x == t) {
            Some((_, v)) => v.push(e.clone()),
            None => by_tag.push((t.clone(), vec![e.clone()])),
        }
    }
    for (t, events) in by_tag {
        for c in events.chunks(per) {
            out.push(EventStream::new(t.clone(), c.to_vec()));
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let raw = corpus();
    let parsed_events = parsed(&raw);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("rewrite");
    g.measurement_time(Duration::from_secs(6));
    g.throughput(Throughput::Elements(raw.len() as u64));
    type Case<'a> = (&'static str, &'a [(Tag, Event)], usize, bool);
    let cases: [Case<'_>; 4] = [
        ("parsed", &parsed_events, 1, false),
        ("raw", &raw, 1, false),
        ("batch100", &parsed_events, 100, false),
        ("parser_grep_rewrite", &raw, 1, true),
    ];
    let cpu_only = std::env::var("NAGARE_BENCH_CPU_ONLY").ok();
    for (name, input, per, with_filters) in cases {
        if cpu_only
            .as_deref()
            .is_some_and(|only| !only.split(',').any(|c| c.trim() == name))
        {
            continue;
        }
        let (router, count, _keep, _filters) = routes(with_filters);
        let template = streams(input, per);
        rt.block_on(async {
            for s in template.clone() {
                router.emit_stream_from(s, 0, false).await.unwrap();
            }
        });
        assert!(
            count.0.load(Ordering::Relaxed) > 0,
            "{name}: nothing routed"
        );
        if cpu_only.is_none() {
            g.bench_function(name, |b| {
                b.iter_batched(
                    || template.clone(),
                    |ss| {
                        rt.block_on(async {
                            for s in ss {
                                router.emit_stream_from(s, 0, false).await.unwrap();
                            }
                        })
                    },
                    BatchSize::LargeInput,
                )
            });
        }
        let rate = cpu_rate(|| {
            let ss = template.clone();
            rt.block_on(async {
                for s in ss {
                    router.emit_stream_from(s, 0, false).await.unwrap();
                }
            });
            input.len()
        });
        eprintln!("cpu: rewrite/{name} {rate:.0} events per CPU-second");
    }
    g.finish();
}

/// This thread's CPU time (user + system), from `/proc/thread-self/stat`, in clock ticks.
fn thread_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // After `(comm) `: state is field 3, utime field 14, stime field 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Runs `batch` (which returns the events it handled) for at least 3 s of wall time
/// (`NAGARE_BENCH_CPU_SECS` overrides) and
/// returns events per second of this thread's CPU time (0 when /proc is unavailable).
fn cpu_rate(mut batch: impl FnMut() -> usize) -> f64 {
    const TICKS_PER_SEC: f64 = 100.0; // USER_HZ on Linux
    let (Some(start), t0) = (thread_cpu_ticks(), std::time::Instant::now()) else {
        return 0.0;
    };
    let secs = std::env::var("NAGARE_BENCH_CPU_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut events = 0usize;
    while t0.elapsed() < Duration::from_secs(secs) {
        events += batch();
    }
    let ticks = thread_cpu_ticks()
        .unwrap_or(start)
        .saturating_sub(start)
        .max(1);
    events as f64 / (ticks as f64 / TICKS_PER_SEC)
}

criterion_group!(benches, bench);
criterion_main!(benches);
