//! Shared by the `s3_*` test binaries: the two backends the same suite runs on (the on-disk
//! store and moto), the corpus as the forwarder would hand it to out_s3, chunk builders, a
//! flush driver with retries (what `nagare_buffer::flush` does, without timers), and readers
//! that decompress and check what landed.

#![allow(dead_code)]

#[path = "../common/moto.rs"]
pub mod moto;
#[allow(unused_imports)] // not every test binary that includes this module injects faults
pub use moto::FaultProxy;

use bytes::{Bytes, BytesMut};
use nagare_aws::out_s3::{Endpoint, ObjectStore, S3Config};
use nagare_core::{Chunk, ChunkId, ChunkKey, Event, EventTime, Output, Record, Tag, WriteError};
use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where objects go.
pub enum Backend {
    Disk(tempfile::TempDir),
    Moto(String),
}

impl Backend {
    pub fn disk() -> Backend {
        Backend::Disk(tempfile::tempdir().expect("tempdir"))
    }

    /// `None` when moto is unavailable outside CI (the caller skips; `moto()` printed why).
    pub fn moto() -> Option<Backend> {
        moto::moto().map(|m| Backend::Moto(m.endpoint.clone()))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Disk(_) => "disk",
            Backend::Moto(_) => "moto",
        }
    }

    /// Settings for `bucket` on this backend: test credentials, path style, the bucket created
    /// at start, SDK retries off (our retry logic is under test), short timeouts.
    pub fn config(&self, id: &str, bucket: &str) -> S3Config {
        let mut c = S3Config::new(id, bucket);
        match self {
            Backend::Disk(d) => c.endpoint = Endpoint::Disk(d.path().to_path_buf()),
            Backend::Moto(ep) => {
                c.endpoint = Endpoint::Url(ep.clone());
                c.force_path_style = true;
            }
        }
        c.region = Some("us-east-1".into());
        c.access_key_id = Some("testing".into());
        c.secret_access_key = Some(nagare_aws::Secret("testing".into()));
        c.auto_create_bucket = true;
        c.sdk_max_attempts = 1;
        c.request_timeout = Duration::from_secs(10);
        c.hostname = "host-a".into();
        c
    }
}

/// A unique, valid bucket name.
pub fn bucket(prefix: &str) -> String {
    moto::unique(prefix).to_lowercase().replace('_', "-")
}

// ---- the corpus ------------------------------------------------------------------------------

/// One log line as the forwarder hands it to out_s3: Docker's record with partials rejoined.
#[derive(Debug, Clone)]
pub struct Line {
    pub tag: String,
    pub service: String,
    pub time: u32,
    pub fields: Vec<(String, String)>,
}

impl Line {
    pub fn log(&self) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == "log")
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// Health-check access logs (dropped by the forwarder's grep, as configured).
    pub fn is_health(&self) -> bool {
        let l = self.log();
        l.contains("healthcheck.Check") || l.contains("grpc.health.v1.Health/Check")
    }

    pub fn record(&self) -> Record {
        Record::from_pairs(&self.fields)
    }

    /// The JSON line out_s3 must write for it, canonicalised.
    pub fn expected_json(&self) -> String {
        let m: serde_json::Map<String, serde_json::Value> = self
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        serde_json::Value::Object(m).to_string()
    }
}

pub fn corpus_path() -> PathBuf {
    moto::workspace_root().join("../shared/corpus/sample.jsonl")
}

/// The 2,000 corpus lines (2,077 wire records, partials rejoined as filter_concat does).
pub fn corpus() -> Vec<Line> {
    let text = std::fs::read_to_string(corpus_path()).expect("read ../shared/corpus/sample.jsonl");
    let mut out: Vec<Line> = Vec::new();
    let mut open: BTreeMap<String, usize> = BTreeMap::new();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(l).expect("corpus line");
        let tag = v["tag"].as_str().unwrap().to_string();
        let time = v["time"].as_u64().unwrap() as u32;
        let rec = v["record"].as_object().unwrap();
        let get = |k: &str| {
            rec.get(k)
                .and_then(|x| x.as_str())
                .unwrap_or("")
                .to_string()
        };
        let service = tag.split('.').nth(1).unwrap_or("").to_string();
        if get("partial_message") == "true" {
            let pid = get("partial_id");
            let last = get("partial_last") == "true";
            match open.get(&pid) {
                Some(&i) => {
                    let f = &mut out[i].fields;
                    let log = f.iter_mut().find(|(k, _)| k == "log").unwrap();
                    log.1.push_str(&get("log"));
                }
                None => {
                    let fields = rec
                        .iter()
                        .filter(|(k, _)| !k.starts_with("partial_"))
                        .map(|(k, x)| (k.clone(), x.as_str().unwrap_or("").to_string()))
                        .collect();
                    out.push(Line {
                        tag,
                        service,
                        time,
                        fields,
                    });
                    open.insert(pid.clone(), out.len() - 1);
                }
            }
            if last {
                open.remove(&pid);
            }
            continue;
        }
        let fields = rec
            .iter()
            .map(|(k, x)| (k.clone(), x.as_str().unwrap_or("").to_string()))
            .collect();
        out.push(Line {
            tag,
            service,
            time,
            fields,
        });
    }
    assert!(open.is_empty(), "unterminated partials in the corpus");
    out
}

// ---- chunks ----------------------------------------------------------------------------------

/// Packed `[EventTime, record]` entries.
pub fn entries(lines: &[&Line]) -> Bytes {
    let mut b = BytesMut::new();
    for l in lines {
        Event {
            time: EventTime::new(l.time, 0),
            record: l.record(),
        }
        .write_entry(&mut b, false);
    }
    b.freeze()
}

/// A chunk keyed `<buffer time,service>` (what the buffer makes of the seed layout config).
pub fn chunk(service: &str, timekey: i64, lines: &[&Line]) -> Chunk {
    Chunk {
        id: ChunkId::random(),
        tag: Tag::new(lines.first().map(|l| l.tag.clone()).unwrap_or_default()),
        key: ChunkKey {
            tag: None,
            timekey: Some(timekey),
            vars: vec![("service".into(), Bytes::from(service.to_string()))],
        },
        bytes: entries(lines),
        records: lines.len(),
    }
}

/// Groups lines by (service, `slice`-second slice) and cuts chunks of at most `per_chunk`.
pub fn chunks_by_service_and_slice(lines: &[&Line], slice: i64, per_chunk: usize) -> Vec<Chunk> {
    let mut groups: BTreeMap<(String, i64), Vec<&Line>> = BTreeMap::new();
    for l in lines {
        let s = l.time as i64 - (l.time as i64).rem_euclid(slice);
        groups.entry((l.service.clone(), s)).or_default().push(l);
    }
    let mut out = Vec::new();
    for ((svc, s), ls) in groups {
        for part in ls.chunks(per_chunk) {
            out.push(chunk(&svc, s, part));
        }
    }
    out
}

/// Synthetic lines (unique `log` values) in one service and one slice.
pub fn synthetic(service: &str, time: u32, tagn: usize, n: usize, prefix: &str) -> Vec<Line> {
    (0..n)
        .map(|i| Line {
            tag: format!("docker.{service}.c{tagn}"),
            service: service.into(),
            time,
            fields: vec![
                ("container_id".into(), format!("c{tagn}")),
                ("source".into(), "stdout".into()),
                (
                    "log".into(),
                    format!("{prefix}-{i} {}", "payload ".repeat(i % 40)),
                ),
            ],
        })
        .collect()
}

// ---- driving an output like the flush loop ---------------------------------------------------

#[derive(Debug, Default)]
pub struct Outcome {
    pub written: usize,
    pub retryable_errors: usize,
    pub unrecoverable: Vec<String>,
    pub last_error: Option<String>,
}

/// Writes `chunks` with `workers` concurrent writers; a retryable error puts the chunk back
/// after a backoff (`retry_wait` doubling, capped at 2 s), as the buffer's flush loop does.
/// Stops at `deadline` with whatever is left unwritten.
pub async fn drive(
    out: Arc<dyn Output>,
    chunks: Vec<Chunk>,
    workers: usize,
    retry_wait: Duration,
    deadline: Duration,
) -> Outcome {
    let queue = Arc::new(Mutex::new(
        chunks
            .into_iter()
            .map(|c| (c, 0u32))
            .collect::<VecDeque<_>>(),
    ));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let result = Arc::new(Mutex::new(Outcome::default()));
    let end = Instant::now() + deadline;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (q, inf, res, out) = (
            queue.clone(),
            in_flight.clone(),
            result.clone(),
            out.clone(),
        );
        set.spawn(async move {
            loop {
                if Instant::now() > end {
                    return;
                }
                let next = {
                    let mut g = q.lock().unwrap();
                    let n = g.pop_front();
                    if n.is_some() {
                        inf.fetch_add(1, Ordering::SeqCst);
                    }
                    n
                };
                let Some((c, tries)) = next else {
                    if inf.load(Ordering::SeqCst) == 0 && q.lock().unwrap().is_empty() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                match out.write(&c).await {
                    Ok(()) => res.lock().unwrap().written += 1,
                    Err(WriteError::Retryable(e)) => {
                        {
                            let mut r = res.lock().unwrap();
                            r.retryable_errors += 1;
                            r.last_error = Some(e);
                        }
                        let wait = retry_wait
                            .saturating_mul(1 << tries.min(6))
                            .min(Duration::from_secs(2));
                        tokio::time::sleep(wait).await;
                        q.lock().unwrap().push_back((c, tries + 1));
                    }
                    Err(WriteError::Unrecoverable(e)) => {
                        let mut r = res.lock().unwrap();
                        r.unrecoverable.push(e.clone());
                        r.last_error = Some(e);
                    }
                }
                inf.fetch_sub(1, Ordering::SeqCst);
            }
        });
    }
    while set.join_next().await.is_some() {}
    let mut r = result.lock().unwrap();
    std::mem::take(&mut *r)
}

// ---- reading back ----------------------------------------------------------------------------

/// Decompresses an object by its key's extension.
pub fn decode(key: &str, body: &[u8]) -> String {
    let bytes = if key.ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(body)
            .read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("{key} does not gunzip: {e}"));
        out
    } else if key.ends_with(".zst") {
        zstd::stream::decode_all(body).unwrap_or_else(|e| panic!("{key}: bad zstd: {e}"))
    } else {
        body.to_vec()
    };
    String::from_utf8(bytes).unwrap_or_else(|e| panic!("{key} is not UTF-8: {e}"))
}

/// Every object under `prefix`: key -> its lines.
pub async fn read_all(store: &dyn ObjectStore, prefix: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for k in store.list(prefix).await.expect("list") {
        let body = store
            .get(&k)
            .await
            .expect("get")
            .expect("listed object exists");
        let text = decode(&k, &body);
        out.insert(k, text.lines().map(str::to_string).collect());
    }
    out
}

/// Asserts that the lines of `objects` are exactly `expected` (canonical JSON), each once;
/// every line must parse as JSON.
pub fn assert_exactly_once(objects: &BTreeMap<String, Vec<String>>, expected: &[String]) {
    let mut want: BTreeMap<&str, i64> = BTreeMap::new();
    for e in expected {
        *want.entry(e.as_str()).or_default() += 1;
    }
    let mut got: BTreeMap<String, i64> = BTreeMap::new();
    let mut total = 0usize;
    for (k, lines) in objects {
        for l in lines {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{k}: a line is not JSON ({e}): {l:.200}"));
            *got.entry(v.to_string()).or_default() += 1;
            total += 1;
        }
    }
    let missing: Vec<_> = want
        .iter()
        .filter(|(k, n)| got.get(**k).copied().unwrap_or(0) < **n)
        .map(|(k, _)| k.chars().take(120).collect::<String>())
        .take(3)
        .collect();
    let dup: Vec<_> = got
        .iter()
        .filter(|(k, n)| **n > want.get(k.as_str()).copied().unwrap_or(0))
        .map(|(k, n)| format!("{n}x {}", k.chars().take(120).collect::<String>()))
        .take(3)
        .collect();
    assert!(
        missing.is_empty(),
        "lines missing from the objects: {missing:?}"
    );
    assert!(dup.is_empty(), "lines duplicated or unexpected: {dup:?}");
    assert_eq!(total, expected.len(), "line count");
}

/// Spawns a dedicated moto (for tests that stop it or turn on authentication); `env` is set
/// in its environment before moto is imported.
pub fn dedicated_moto(env: &[(&str, &str)]) -> Option<(std::process::Child, u16)> {
    let Some(py) = moto::venv_python() else {
        if moto::ci() {
            panic!("CI=true but .ci/venv/bin/moto_server is missing (run .ci/install-deps.sh)");
        }
        eprintln!(
            "SKIPPED: moto not installed (.ci/venv/bin/moto_server); run .ci/install-deps.sh"
        );
        return None;
    };
    let (child, port) = moto::spawn_moto(&py, env).unwrap_or_else(|e| panic!("{e}"));
    Some((child, port))
}

/// Sends a signal to a child (`STOP`, `CONT`, `KILL`).
pub fn signal(child: &std::process::Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} {}", child.id());
}
