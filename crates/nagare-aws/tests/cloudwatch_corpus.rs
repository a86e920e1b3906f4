//! The corpus's error lines into moto as the aggregator writes them: exactly the 99
//! error/fatal lines, one log group per `service`, one stream per aggregator host name; then
//! two aggregators (two host names) writing at once: two streams per group, every event.
//!
//! Records are built as they reach the aggregator's CloudWatch output: the Docker fields
//! plus the JSON parsed out of `log` (what the forwarder's filter_parser does), error and
//! fatal lines only (the aggregator's grep). The corpus is from November 2023, older than
//! CloudWatch's 14-day window, so its times are shifted to end a minute ago, keeping their
//! spacing. The whole forwarder -> aggregator path is tested with the example configs in
//! `nagare-pipeline`; this test is about the output.

mod cloudwatch_common;

use bytes::Bytes;
use cloudwatch_common::moto::{moto, unique};
use cloudwatch_common::*;
use nagare_core::value::Map;
use nagare_core::{EventTime, Output, Record, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

struct Corpus {
    /// (time, record, service, the message as parsed JSON)
    errors: Vec<(EventTime, Record, String)>,
    manifest: serde_json::Value,
}

fn corpus() -> Option<Corpus> {
    let path = std::env::var_os("NAGARE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/sample.jsonl")
        });
    let Ok(text) = std::fs::read_to_string(&path) else {
        if cloudwatch_common::moto::ci() {
            panic!("CI=true but the corpus {} is missing", path.display());
        }
        eprintln!(
            "SKIPPED: corpus {} not found (set NAGARE_CORPUS)",
            path.display()
        );
        return None;
    };
    let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(path.with_file_name(format!("{stem}.manifest.json"))).unwrap(),
    )
    .unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = lines
        .iter()
        .map(|l| l["time"].as_u64().unwrap())
        .max()
        .unwrap();
    let now = EventTime::now().secs() as u64;
    let mut errors = Vec::new();
    for l in &lines {
        let r = &l["record"];
        if r.get("partial_message").is_some() {
            continue; // all split lines are audit lines (see the corpus README)
        }
        let log = r["log"].as_str().unwrap();
        let Ok(Value::Map(parsed)) = Value::from_json(&Bytes::copy_from_slice(log.as_bytes()))
        else {
            continue;
        };
        let level = parsed
            .get(b"level")
            .and_then(Value::as_bytes)
            .unwrap_or(b"");
        if level != b"error" && level != b"fatal" {
            continue;
        }
        let service =
            String::from_utf8(parsed.get(b"service").unwrap().as_bytes().unwrap().to_vec())
                .unwrap();
        let mut m = Map::new();
        for k in ["container_id", "container_name", "source"] {
            m.insert(k.as_bytes().to_vec(), Value::str(r[k].as_str().unwrap()));
        }
        for (k, v) in parsed.iter() {
            m.insert(k.as_bytes().unwrap().to_vec(), v.clone());
        }
        let t = l["time"].as_u64().unwrap();
        let shifted = (now - 60 - (last - t)) as u32;
        errors.push((EventTime::from_secs(shifted), Record::from_map(m), service));
    }
    Some(Corpus { errors, manifest })
}

/// The expected messages per service: each error record as JSON, in corpus order.
fn expected(c: &Corpus) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut out: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for (_, r, svc) in &c.errors {
        let mut json = Vec::new();
        nagare_core::json::write_record(&mut json, r.as_bytes(), &mut Default::default());
        out.entry(svc.clone())
            .or_default()
            .push(serde_json::from_slice(&json).unwrap());
    }
    out
}

fn sorted(mut v: Vec<serde_json::Value>) -> Vec<String> {
    let mut s: Vec<String> = v.drain(..).map(|x| x.to_string()).collect();
    s.sort();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_errors_one_group_per_service_one_stream_per_aggregator() {
    let Some(m) = moto() else { return };
    let Some(c) = corpus() else { return };
    assert_eq!(
        c.errors.len() as u64,
        c.manifest["kinds"]["error"].as_u64().unwrap()
    );
    assert_eq!(c.errors.len(), 99);
    let want = expected(&c);
    let client_ = client(&m.endpoint, &Recorder::default()).await;

    // One aggregator: chunks of 25 records, as its buffer would hand them over.
    let host = unique("agg-solo");
    let rec = Recorder::default();
    let out = output(config("cw-corpus-solo", &m.endpoint, &host), &rec, None).await;
    let events: Vec<(EventTime, Record)> =
        c.errors.iter().map(|(t, r, _)| (*t, r.clone())).collect();
    for part in events.chunks(25) {
        out.write(&chunk("docker.app", part)).await.unwrap();
    }
    let mut total = 0;
    for (svc, msgs) in &want {
        let kinds = &c.manifest["service_kinds"][format!("{svc}.error")];
        assert_eq!(msgs.len() as u64, kinds.as_u64().unwrap(), "{svc}");
        let got: Vec<serde_json::Value> = stored(&client_, svc, &host)
            .await
            .into_iter()
            .map(|(_, m)| serde_json::from_str(&m).unwrap())
            .collect();
        assert_eq!(sorted(got.clone()), sorted(msgs.clone()), "group {svc}");
        assert!(got
            .iter()
            .all(|v| v["service"] == svc.as_str()
                && (v["level"] == "error" || v["level"] == "fatal")));
        assert!(streams(&client_, svc).await.contains(&host));
        total += got.len();
    }
    assert_eq!(total, 99);
    assert_eq!(out.stats().events.get(), 99);
    assert_eq!(out.stats().request_errors.total(), 0);
    rec.sent().iter().for_each(Sent::assert_within_aws_limits);

    // Two aggregators with different host names, at once; the NLB spreads the forwarders'
    // chunks between them.
    let (ha, hb) = (unique("agg-a"), unique("agg-b"));
    let rec = Recorder::default();
    let a = output(config("cw-corpus-a", &m.endpoint, &ha), &rec, None).await;
    let b = output(config("cw-corpus-b", &m.endpoint, &hb), &rec, None).await;
    let parts: Vec<_> = events.chunks(10).map(|p| chunk("docker.app", p)).collect();
    let (ra, rb) = tokio::join!(
        async {
            for p in parts.iter().step_by(2) {
                a.write(p).await?;
            }
            Ok::<_, nagare_core::WriteError>(())
        },
        async {
            for p in parts.iter().skip(1).step_by(2) {
                b.write(p).await?;
            }
            Ok::<_, nagare_core::WriteError>(())
        }
    );
    ra.unwrap();
    rb.unwrap();
    let mut total = 0;
    for (svc, msgs) in &want {
        let names = streams(&client_, svc).await;
        assert!(
            names.contains(&ha) && names.contains(&hb),
            "{svc}: {names:?}"
        );
        let mut got = Vec::new();
        for h in [&ha, &hb] {
            let part: Vec<serde_json::Value> = stored(&client_, svc, h)
                .await
                .into_iter()
                .map(|(_, m)| serde_json::from_str(&m).unwrap())
                .collect();
            assert!(!part.is_empty(), "{svc}/{h} received events");
            got.extend(part);
        }
        assert_eq!(sorted(got.clone()), sorted(msgs.clone()), "group {svc}");
        total += got.len();
    }
    assert_eq!(total, 99);
    assert_eq!(a.stats().events.get() + b.stats().events.get(), 99);
    assert_eq!(
        a.stats().request_errors.total() + b.stats().request_errors.total(),
        0
    );
}
