//! The Docker corpus (`../shared/corpus/sample.jsonl`, or `NAGARE_CORPUS`) through the seed
//! examples, in process: `examples/forwarder.conf` is built as written (only its `ENV` knobs
//! set: 127.0.0.1, port 0, a temp data dir, the aggregator's address, and S3 on the embedded
//! on-disk store, `file://`); `examples/aggregator.conf` likewise, except that its CloudWatch
//! Logs `<match>` is swapped for a `@type file` stand-in, one file per service (the log group)
//! and host (the stream), so this test needs no AWS endpoint (tests/tests/full_chain.rs runs
//! the real output against moto). The forwarder's out_forward sends to the aggregator, and a
//! small sender replays the corpus as Docker's fluentd driver does: one connection per
//! `container_id`, in file order, Message mode `[tag, int32 time, record, {}]`.
//!
//! Checked against the manifest: every line reaches S3 once (gzipped JSON lines under
//! `applications/<service>/<kind>/...`) with its partial pieces rejoined byte for byte, the
//! health checks are dropped, `audit`/`app` as the rewrite rules say, every JSON line parsed
//! and the plain-text lines kept and counted; the aggregator writes exactly the error/fatal
//! lines, one file per service.

use bytes::BytesMut;
use nagare_config::ParseOptions;
use nagare_core::metrics::ReasonCounters;
use nagare_core::{EventTime, Record};
use nagare_pipeline::Pipeline;
use serde_json::Value as J;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

fn corpus() -> (PathBuf, J) {
    let path = std::env::var_os("NAGARE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/sample.jsonl")
        });
    let manifest = path.with_extension("manifest.json");
    let m: J = serde_json::from_slice(&std::fs::read(&manifest).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (set NAGARE_CORPUS to a corpus with its manifest)",
            manifest.display()
        )
    }))
    .unwrap();
    (path, m)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    App,
    Audit,
    Error,
    Health,
    Text,
}

/// One wire record of the corpus.
struct Wire {
    tag: String,
    time: u32,
    container: String,
    record: Vec<(String, String)>,
}

/// One log line (pieces joined), classified as the corpus generator does.
struct Line {
    service: String,
    log: String,
    kind: Kind,
}

fn classify(log: &str) -> Kind {
    match serde_json::from_str::<J>(log) {
        Err(_) => Kind::Text,
        Ok(j) => {
            if j.get("marker").and_then(J::as_str) == Some("AUDIT") {
                Kind::Audit
            } else if j
                .get("msg")
                .and_then(J::as_str)
                .is_some_and(|m| m.contains("healthcheck.Check") || m.contains("grpc.health"))
            {
                Kind::Health
            } else if matches!(j.get("level").and_then(J::as_str), Some("error" | "fatal")) {
                Kind::Error
            } else {
                Kind::App
            }
        }
    }
}

fn load(path: &Path) -> (Vec<Wire>, Vec<Line>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut wires = Vec::new();
    let mut lines = Vec::new();
    let mut pending: HashMap<(String, String), Vec<(u64, String)>> = HashMap::new();
    for l in text.lines() {
        let j: J = serde_json::from_str(l).unwrap();
        let tag = j["tag"].as_str().unwrap().to_string();
        let rec = j["record"].as_object().unwrap();
        let record: Vec<(String, String)> = rec
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let get = |k: &str| rec.get(k).and_then(J::as_str).unwrap_or("").to_string();
        let service = tag.split('.').nth(1).unwrap().to_string();
        let container = get("container_id");
        if rec.contains_key("partial_message") {
            let key = (container.clone(), get("partial_id"));
            let e = pending.entry(key.clone()).or_default();
            e.push((get("partial_ordinal").parse().unwrap(), get("log")));
            if get("partial_last") == "true" {
                let mut pieces = pending.remove(&key).unwrap();
                pieces.sort_by_key(|p| p.0);
                let log: String = pieces.into_iter().map(|p| p.1).collect();
                lines.push(Line {
                    service,
                    kind: classify(&log),
                    log,
                });
            }
        } else {
            let log = get("log");
            lines.push(Line {
                service,
                kind: classify(&log),
                log,
            });
        }
        wires.push(Wire {
            tag,
            time: j["time"].as_u64().unwrap() as u32,
            container,
            record,
        });
    }
    assert!(pending.is_empty(), "the corpus has no unterminated partial");
    (wires, lines)
}

/// Docker's bytes for one record: `[tag, int32 time, record, {}]`.
fn docker_message(out: &mut BytesMut, w: &Wire) {
    let record = Record::from_pairs(&w.record);
    let start = out.len();
    let opts = nagare_forward::codec::encode::Options::default();
    nagare_forward::codec::encode::write_message(
        out,
        w.tag.as_bytes(),
        EventTime::from_secs(w.time),
        &record,
        Some(&opts),
        true,
    );
    // write_message writes integer time as uint32 (0xce); Docker's Go client writes int32.
    let tag_header = match w.tag.len() {
        0..=31 => 1,
        32..=255 => 2,
        256..=65535 => 3,
        _ => 5,
    };
    let at = start + 1 + tag_header + w.tag.len();
    assert_eq!(out[at], 0xce);
    out[at] = 0xd2;
}

/// Every line of every object under the embedded S3 store's bucket directory `bucket`,
/// gunzipped and parsed, with the tag the key implies: `docker.<service>.?.<kind>` from
/// `applications/<service>/<kind>/YYYY/MM/DD/HH/MM_<host>_<n>.gz` (the container id is not
/// in the key: `?`). Temporary files (`.nagare-tmp/`) are skipped.
fn read_s3(bucket: &Path) -> Vec<(PathBuf, serde_json::Map<String, J>)> {
    use std::io::Read;
    let mut out = Vec::new();
    let mut stack = vec![bucket.join("applications")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p
                .strip_prefix(bucket)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let parts: Vec<&str> = rel.split('/').collect();
            assert_eq!(parts.len(), 8, "{rel}: not the seed layout");
            assert!(rel.ends_with(".gz"), "{rel}");
            let tag = format!("docker.{}.?.{}", parts[1], parts[2]);
            let mut text = String::new();
            flate2::read::MultiGzDecoder::new(std::fs::File::open(&p).unwrap())
                .read_to_string(&mut text)
                .unwrap_or_else(|e| panic!("{rel} does not gunzip: {e}"));
            for l in text.lines() {
                let J::Object(mut m) = serde_json::from_str::<J>(l).unwrap() else {
                    panic!("not an object: {l}")
                };
                assert!(!m.contains_key("tag"), "{rel}: the example injects no tag");
                m.insert("tag".into(), J::String(tag.clone()));
                out.push((p.clone(), m));
            }
        }
    }
    out
}

async fn wait_for_s3(bucket: &Path, n: usize) -> Vec<(PathBuf, serde_json::Map<String, J>)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = read_s3(bucket);
        if got.len() >= n || tokio::time::Instant::now() > deadline {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let got = read_s3(bucket);
            assert_eq!(got.len(), n, "S3: lines under {}", bucket.display());
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// examples/aggregator.conf with its `@type cloudwatch_logs` `<match>` replaced by JSON-lines
/// files, `<data>/cloudwatch/<service>/<host>.jsonl` (tag and time injected).
fn aggregator_with_file_standin() -> String {
    let text = std::fs::read_to_string(example("aggregator.conf")).unwrap();
    let at = text
        .find("@type cloudwatch_logs")
        .expect("the CloudWatch output");
    let a = text[..at].rfind("<match").expect("its <match>");
    let b = at + text[at..].find("</match>").expect("its </match>") + "</match>".len();
    let standin = r##"<match docker.**>
  @type file
  @id cloudwatch_standin
  path "#{ENV.fetch('NAGARE_DATA_DIR')}/cloudwatch/${service}/#{Socket.gethostname}.jsonl"
  append true
  <format>
    @type json
  </format>
  <inject>
    tag_key tag
    time_key time
  </inject>
  <buffer tag,service>
    flush_interval 1s
  </buffer>
</match>"##;
    format!("{}{standin}{}", &text[..a], &text[b..])
}

/// Every line of every file under `dir`, parsed, with the file it came from.
fn read_tree(dir: &Path) -> Vec<(PathBuf, serde_json::Map<String, J>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            // Only whole lines: the file output may be appending while we read, and a torn
            // last line is not JSON yet.
            let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            for l in whole.lines() {
                let J::Object(m) = serde_json::from_str::<J>(l).unwrap() else {
                    panic!("not an object: {l}")
                };
                out.push((p.clone(), m));
            }
        }
    }
    out
}

async fn wait_for_lines(
    dir: &Path,
    n: usize,
    what: &str,
) -> Vec<(PathBuf, serde_json::Map<String, J>)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = read_tree(dir);
        if got.len() >= n || tokio::time::Instant::now() > deadline {
            // Settle: nothing more should arrive.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let got = read_tree(dir);
            assert_eq!(got.len(), n, "{what}: lines in {}", dir.display());
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn counter(name: &'static str, id: &str, reason: &str) -> u64 {
    ReasonCounters::new(name, "", &[("plugin_id", id)])
        .get(reason)
        .get()
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_through_the_forwarder_and_aggregator_examples() {
    let (corpus, m) = corpus();
    let (wires, lines) = load(&corpus);
    let records = m["records"].as_u64().unwrap() as usize;
    let pieces = m["partial_pieces"].as_u64().unwrap() as usize;
    let kinds = &m["kinds"];
    let k = |name: &str| kinds[name].as_u64().unwrap() as usize;
    assert_eq!(lines.len(), records);
    assert_eq!(wires.len(), m["wire_records"].as_u64().unwrap() as usize);
    if records == 2000 {
        // The figures issue 3 quotes for the default sample.
        assert_eq!(
            (pieces, k("health"), k("audit"), k("error"), k("text")),
            (131, 304, 289, 99, 87)
        );
    }
    let mut by_kind: BTreeMap<Kind, usize> = BTreeMap::new();
    for l in &lines {
        *by_kind.entry(l.kind).or_default() += 1;
    }
    assert_eq!(
        by_kind.values().copied().collect::<Vec<_>>(),
        [k("app"), k("audit"), k("error"), k("health"), k("text")],
        "the test's classification matches the manifest"
    );

    let t0 = std::time::Instant::now();
    let tmp = std::env::temp_dir().join(format!("nagare-corpus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let (agg_dir, fwd_dir) = (tmp.join("agg"), tmp.join("fwd"));

    // The aggregator, as written in examples/aggregator.conf.
    let agg_opts = ParseOptions::fixed(
        [
            ("NAGARE_BIND", "127.0.0.1"),
            ("NAGARE_PORT", "0"),
            ("NAGARE_DATA_DIR", agg_dir.to_str().unwrap()),
        ],
        "agg-test",
    );
    let root = nagare_config::parse_str_with(
        &aggregator_with_file_standin(),
        &example("aggregator.conf"),
        &agg_opts,
    )
    .unwrap();
    let (agg_trigger, agg_sd) = nagare_core::shutdown::channel();
    let agg = Pipeline::build(&root).unwrap().start(agg_sd).await.unwrap();
    let agg_port = agg.inputs[0].addr.port().to_string();

    // The forwarder, as written in examples/forwarder.conf, sending to that aggregator; S3 is
    // the embedded on-disk store.
    let s3_endpoint = format!("file://{}", tmp.join("s3").display());
    let bucket_dir = tmp.join("s3").join("nagare-logs");
    let fwd_opts = ParseOptions::fixed(
        [
            ("NAGARE_BIND", "127.0.0.1"),
            ("NAGARE_PORT", "0"),
            ("NAGARE_DATA_DIR", fwd_dir.to_str().unwrap()),
            ("NAGARE_AGGREGATOR_HOST", "127.0.0.1"),
            ("NAGARE_AGGREGATOR_PORT", agg_port.as_str()),
            ("NAGARE_S3_ENDPOINT", s3_endpoint.as_str()),
            ("NAGARE_S3_BUCKET", "nagare-logs"),
            ("NAGARE_S3_AUTO_CREATE", "true"),
            ("AWS_REGION", "us-east-1"),
        ],
        "fwd-test",
    );
    let root = nagare_config::parse_file_with(&example("forwarder.conf"), &fwd_opts).unwrap();
    let (fwd_trigger, fwd_sd) = nagare_core::shutdown::channel();
    let fwd = Pipeline::build(&root).unwrap().start(fwd_sd).await.unwrap();
    let fwd_addr = fwd.inputs[0].addr;

    // Docker: one connection per container, records in file order.
    let mut per_container: Vec<(String, BytesMut)> = Vec::new();
    for w in &wires {
        let i = match per_container.iter().position(|(c, _)| *c == w.container) {
            Some(i) => i,
            None => {
                per_container.push((w.container.clone(), BytesMut::new()));
                per_container.len() - 1
            }
        };
        // One write per record, as the driver does: keep each message's bytes apart.
        let mut one = BytesMut::new();
        docker_message(&mut one, w);
        per_container[i].1.extend_from_slice(&one);
    }
    let mut senders = Vec::new();
    for (_, bytes) in per_container {
        senders.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(fwd_addr).await.unwrap();
            for piece in bytes.chunks(4096) {
                s.write_all(piece).await.unwrap();
            }
            s.flush().await.unwrap();
            // Keep the connection until the forwarder has read everything (it never replies
            // without `chunk`): closing early is fine too, but this is what Docker does.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }));
    }
    for s in senders {
        s.await.unwrap();
    }

    eprintln!("sent in {:?}", t0.elapsed());
    // S3: every line but the health checks.
    let expected_s3 = records - k("health");
    let s3 = wait_for_s3(&bucket_dir, expected_s3).await;
    let mut tags: BTreeMap<&str, usize> = BTreeMap::new();
    let mut unparsed = 0;
    let mut logs: Vec<String> = Vec::new();
    for (path, r) in &s3 {
        let tag = r["tag"].as_str().unwrap();
        let suffix = tag.rsplit('.').next().unwrap();
        *tags.entry(suffix).or_default() += 1;
        // The key is applications/<service>/<kind>/...: the record's service (JSON lines).
        let service = tag.split('.').nth(1).unwrap();
        if let Some(svc) = r.get("service").and_then(J::as_str) {
            assert_eq!(svc, service, "{}", path.display());
        }
        for f in [
            "partial_message",
            "partial_id",
            "partial_ordinal",
            "partial_last",
        ] {
            assert!(!r.contains_key(f), "{f} left in a joined record");
        }
        assert!(r.contains_key("container_id") && r.contains_key("source"));
        if !r.contains_key("level") {
            unparsed += 1;
        }
        // Docker's `log` string stays unless the app's JSON had its own `log` (then an object).
        match &r["log"] {
            J::String(s) => logs.push(s.clone()),
            J::Object(_) => {}
            other => panic!("log is {other}"),
        }
        if suffix == "audit" {
            assert_eq!(r["marker"], "AUDIT");
        } else {
            assert_ne!(r.get("marker").and_then(J::as_str), Some("AUDIT"));
        }
    }
    assert_eq!(tags.get("audit").copied().unwrap_or(0), k("audit"));
    assert_eq!(
        tags.get("app").copied().unwrap_or(0),
        expected_s3 - k("audit")
    );
    assert_eq!(tags.len(), 2, "{tags:?}");
    // Every JSON line was parsed; the plain-text lines were kept (as .app), unparsed.
    assert_eq!(unparsed, k("text"));
    assert_eq!(
        counter(
            "nagare_filter_parser_failures_total",
            "parse_json_log",
            "parse_failed"
        ),
        k("text") as u64
    );
    // Rejoined byte for byte: the `log` strings are exactly the corpus lines whose JSON has
    // no `log` of its own (audit, error) plus the text lines, the 54 split audit lines included.
    let mut want: Vec<String> = lines
        .iter()
        .filter(|l| matches!(l.kind, Kind::Audit | Kind::Error | Kind::Text))
        .map(|l| l.log.clone())
        .collect();
    want.sort();
    logs.sort();
    assert_eq!(logs.len(), want.len());
    assert!(logs == want, "rejoined lines differ from the corpus");
    let split = m["split_lines"].as_u64().unwrap();
    assert_eq!(
        counter("nagare_concat_events_total", "rejoin_partials", "joined"),
        split
    );
    assert_eq!(
        counter(
            "nagare_concat_events_total",
            "rejoin_partials",
            "timeout_flush"
        ),
        0
    );
    assert_eq!(
        counter(
            "nagare_filter_dropped_events_total",
            "drop_health_checks",
            "grep_exclude"
        ),
        k("health") as u64
    );
    assert_eq!(
        counter(
            "nagare_rewrite_tag_filter_dropped_events_total",
            "route_audit",
            "no_rule_matched"
        ),
        0
    );
    // Per service, from the paths.
    let mut per_service: BTreeMap<String, usize> = BTreeMap::new();
    for (_, r) in &s3 {
        *per_service
            .entry(
                r["tag"]
                    .as_str()
                    .unwrap()
                    .split('.')
                    .nth(1)
                    .unwrap()
                    .to_string(),
            )
            .or_default() += 1;
    }
    let mut want_per_service: BTreeMap<String, usize> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.kind != Kind::Health) {
        *want_per_service.entry(l.service.clone()).or_default() += 1;
    }
    assert_eq!(per_service, want_per_service);
    for (svc, n) in &per_service {
        let health = m["service_kinds"][format!("{svc}.health")]
            .as_u64()
            .unwrap() as usize;
        assert_eq!(
            *n,
            m["services"][svc].as_u64().unwrap() as usize - health,
            "{svc}"
        );
    }

    eprintln!("S3 checked at {:?}", t0.elapsed());
    // The aggregator: exactly the error/fatal lines, one file per service (the log group).
    let cw = wait_for_lines(
        &agg_dir.join("cloudwatch"),
        k("error"),
        "CloudWatch stand-in",
    )
    .await;
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    for (path, r) in &cw {
        let service = r["service"].as_str().unwrap();
        assert!(matches!(r["level"].as_str(), Some("error" | "fatal")));
        assert_eq!(
            path,
            &agg_dir
                .join("cloudwatch")
                .join(service)
                .join("agg-test.jsonl")
        );
        assert!(r["tag"].as_str().unwrap().ends_with(".app"));
        *groups.entry(service.to_string()).or_default() += 1;
    }
    let want_groups: BTreeMap<String, usize> = m["service_kinds"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.ends_with(".error"))
        .map(|(k, v)| {
            (
                k.trim_end_matches(".error").to_string(),
                v.as_u64().unwrap() as usize,
            )
        })
        .collect();
    assert_eq!(groups, want_groups);
    if records == 2000 {
        assert_eq!(
            groups.values().copied().collect::<Vec<_>>(),
            [34, 33, 32],
            "condor, falcon, heron"
        );
    }
    eprintln!(
        "corpus: {} wire records -> {} lines; S3 {} ({} audit, {} app, {} text kept unparsed); aggregator {} {:?}",
        wires.len(),
        records,
        s3.len(),
        k("audit"),
        expected_s3 - k("audit"),
        unparsed,
        cw.len(),
        groups
    );

    eprintln!("aggregator checked at {:?}", t0.elapsed());
    fwd_trigger.fire();
    fwd.wait().await;
    agg_trigger.fire();
    agg.wait().await;
    eprintln!("stopped at {:?}", t0.elapsed());
    let _ = std::fs::remove_dir_all(&tmp);
}
