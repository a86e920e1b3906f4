//! The seed architecture end to end, with real processes:
//!
//! ```text
//! dockerlike (fluent-logger-golang, as Docker's driver) --corpus-->
//!   nagare-forwarder (examples/forwarder.conf) --> S3 (moto)
//!                     \--> HAProxy (TCP round robin, /health checks: the NLB stand-in)
//!                            --> nagare-aggregator A, B (examples/aggregator.conf)
//!                                  --> CloudWatch Logs (moto)
//! ```
//!
//! The example files run as written; only their `ENV` knobs are set (loopback, ports, data
//! dirs, the moto endpoint, host names) and an admin endpoint is added for HAProxy's health
//! checks. The corpus (`../shared/corpus/sample.jsonl`, counts from its manifest) is replayed
//! with its times moved to a day ago (same 5-minute slices relative to each other): CloudWatch
//! (and moto) reject events older than 14 days, and the S3 slices are then closed, so objects
//! are written at once instead of after the slice's end plus `timekey_wait`.
//!
//! * `full_chain_exact`: S3 holds every expected line exactly once (every object gunzips,
//!   every line is JSON, the key names the line's service and kind); CloudWatch holds exactly
//!   the error/fatal lines, one log group per service, in streams named after the two
//!   aggregators' host names.
//! * `full_chain_aggregator_killed`: the corpus in three parts; the aggregator that received
//!   data first is SIGKILLed after part 1 and restarted on the same port (same data dir) after
//!   part 2. Nothing is lost; duplicates (at-least-once) are counted and printed, not asserted.
//! * `print_default_config_reparses`: `--print-default-config` of both binaries, with and
//!   without the environment overrides, parses and validates.
//!
//! Needs moto (`NAGARE_MOTO_ENDPOINT` or `.ci/venv`, whose boto3 this test also uses to read
//! S3 and CloudWatch), HAProxy and the Go client: missing ones fail under `CI=true`.

use nagare_e2e::*;
use serde_json::Value as J;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The Go client's own watchdog (exit 2), below the bound the test puts on it.
const CLIENT_DEADLINE: &str = "60s";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(75);
/// How long the outputs get to show every expected line (a hang becomes a failure).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// After the counts are reached: nothing more may arrive (duplicates would).
const SETTLE: Duration = Duration::from_secs(3);
const REGION: &str = "us-east-1";

// ---- the corpus and what each output must hold ----------------------------------------------

/// One joined corpus line as the forwarder stores it.
struct Expected {
    /// Canonical JSON of the stored record: Docker's fields, `log` rejoined, the parsed JSON
    /// of `log` merged over them.
    json: String,
    service: String,
    /// `app` or `audit` (the S3 key's kind).
    kind: &'static str,
    /// Health checks are dropped by the forwarder.
    dropped: bool,
    /// `level` error or fatal: the aggregators keep these.
    error: bool,
}

struct Corpus {
    /// The corpus lines (wire records), times unchanged.
    wire: Vec<J>,
    /// Indices into `wire` after which no partial line is open (safe split points).
    boundaries: Vec<usize>,
    expected: Vec<Expected>,
    manifest: J,
}

/// JSON with object keys sorted, recursively.
fn canonical(v: &J) -> String {
    fn sort(v: &J) -> J {
        match v {
            J::Object(m) => {
                let b: BTreeMap<&String, J> = m.iter().map(|(k, v)| (k, sort(v))).collect();
                J::Object(b.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            J::Array(a) => J::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string(&sort(v)).expect("JSON")
}

fn load_corpus(path: &Path, manifest: &Path) -> Corpus {
    let manifest: J = serde_json::from_str(&std::fs::read_to_string(manifest).expect("manifest"))
        .expect("manifest JSON");
    let text = std::fs::read_to_string(path).expect("corpus");
    let mut wire = Vec::new();
    let mut boundaries = Vec::new();
    // Joined lines in order of their first piece: (tag, fields).
    let mut lines: Vec<(String, serde_json::Map<String, J>)> = Vec::new();
    let mut open: HashMap<(String, String), usize> = HashMap::new();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: J = serde_json::from_str(l).expect("corpus line is JSON");
        let tag = v["tag"].as_str().expect("tag").to_string();
        let rec = v["record"].as_object().expect("record").clone();
        let get = |k: &str| rec.get(k).and_then(J::as_str).unwrap_or("").to_string();
        if get("partial_message") == "true" {
            let key = (get("container_id"), get("partial_id"));
            let i = match open.get(&key) {
                Some(&i) => {
                    let log = lines[i].1.get_mut("log").expect("log");
                    *log = J::String(format!("{}{}", log.as_str().unwrap_or(""), get("log")));
                    i
                }
                None => {
                    let fields = rec
                        .iter()
                        .filter(|(k, _)| !k.starts_with("partial_"))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    lines.push((tag, fields));
                    lines.len() - 1
                }
            };
            if get("partial_last") == "true" {
                open.remove(&key);
            } else {
                open.insert(key, i);
            }
        } else {
            lines.push((tag, rec));
        }
        wire.push(v);
        if open.is_empty() {
            boundaries.push(wire.len());
        }
    }
    assert!(open.is_empty(), "the corpus ends with an open partial line");
    let expected = lines
        .into_iter()
        .map(|(tag, mut m)| {
            let log = m.get("log").and_then(J::as_str).unwrap_or("").to_string();
            let (mut dropped, mut audit, mut error) = (false, false, false);
            if let Ok(J::Object(parsed)) = serde_json::from_str::<J>(&log) {
                let msg = parsed.get("msg").and_then(J::as_str).unwrap_or("");
                dropped = msg.contains("healthcheck.Check") || msg.contains("grpc.health");
                audit = parsed.get("marker").and_then(J::as_str) == Some("AUDIT");
                error = matches!(
                    parsed.get("level").and_then(J::as_str),
                    Some("error" | "fatal")
                );
                m.extend(parsed);
            }
            Expected {
                json: canonical(&J::Object(m)),
                service: tag
                    .split('.')
                    .nth(1)
                    .expect("docker.<service>.<id>")
                    .to_string(),
                kind: if audit { "audit" } else { "app" },
                dropped,
                error,
            }
        })
        .collect();
    Corpus {
        wire,
        boundaries,
        expected,
        manifest,
    }
}

/// Writes `wire[range]` with every time moved by `shift` seconds; returns the file.
fn write_part(dir: &TempDir, name: &str, wire: &[J], shift: i64) -> PathBuf {
    let mut out = String::new();
    for v in wire {
        let mut v = v.clone();
        let t = v["time"].as_i64().expect("integer time");
        v["time"] = J::from(t + shift);
        out.push_str(&serde_json::to_string(&v).expect("JSON"));
        out.push('\n');
    }
    dir.write(name, out)
}

// ---- reading S3 and CloudWatch (boto3 from the moto venv) ------------------------------------

/// Reads the bucket and the given streams of every log group, printing one JSON document:
/// `{"s3": {key: [line, ...] | {"error": ...}}, "cw": {group: {stream: [message, ...]}}}`.
const AWS_SCRIPT: &str = r#"
import gzip, json, sys
import boto3
from botocore.config import Config
ep, action = sys.argv[1], sys.argv[2]
kw = dict(endpoint_url=ep, region_name="us-east-1",
          aws_access_key_id="testing", aws_secret_access_key="testing")
s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **kw)
if action == "create-bucket":
    s3.create_bucket(Bucket=sys.argv[3])
    print("{}")
    sys.exit(0)
bucket, streams = sys.argv[3], set(sys.argv[4].split(","))
out = {"s3": {}, "cw": {}}
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
    for o in page.get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        try:
            text = gzip.decompress(body).decode("utf-8")
            out["s3"][o["Key"]] = text.split("\n")
        except Exception as e:
            out["s3"][o["Key"]] = {"error": repr(e)}
logs = boto3.client("logs", **kw)
for page in logs.get_paginator("describe_log_groups").paginate():
    for g in page["logGroups"]:
        group = g["logGroupName"]
        names = []
        for sp in logs.get_paginator("describe_log_streams").paginate(logGroupName=group):
            names += [s["logStreamName"] for s in sp["logStreams"] if s["logStreamName"] in streams]
        for st in names:
            events, token = [], None
            for _ in range(1000):
                args = dict(logGroupName=group, logStreamName=st, startFromHead=True)
                if token:
                    args["nextToken"] = token
                r = logs.get_log_events(**args)
                events += [e["message"] for e in r["events"]]
                if not r["events"] or r.get("nextForwardToken") in (None, token):
                    break
                token = r["nextForwardToken"]
            out["cw"].setdefault(group, {})[st] = events
print(json.dumps(out))
"#;

struct Aws {
    python: PathBuf,
    endpoint: String,
}

impl Aws {
    fn run(&self, args: &[&str]) -> J {
        let mut cmd = Command::new(&self.python);
        cmd.arg("-c")
            .arg(AWS_SCRIPT)
            .arg(&self.endpoint)
            .args(args)
            .env("AWS_EC2_METADATA_DISABLED", "true");
        let (status, stdout, stderr) = run_client(&mut cmd, Duration::from_secs(60));
        assert!(
            status.success(),
            "boto3 helper {args:?} failed with {status}: {stderr}"
        );
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("boto3 helper output is not JSON ({e}): {stderr}"))
    }
}

/// What the outputs hold, checked against the corpus.
#[derive(Debug, Default)]
struct Seen {
    objects: usize,
    s3_lines: usize,
    s3_problems: Vec<String>,
    /// canonical JSON -> copies in S3
    s3: HashMap<String, usize>,
    cw_events: usize,
    cw_problems: Vec<String>,
    /// canonical JSON -> copies in CloudWatch
    cw: HashMap<String, usize>,
    /// (group, stream) -> events
    streams: BTreeMap<(String, String), usize>,
}

fn note(v: &mut Vec<String>, s: String) {
    if v.len() < 10 {
        v.push(s);
    }
}

fn read_outputs(aws: &Aws, bucket: &str, streams: &[String], c: &Corpus, fwd_host: &str) -> Seen {
    let by_json: HashMap<&str, &Expected> =
        c.expected.iter().map(|e| (e.json.as_str(), e)).collect();
    let dump = aws.run(&["dump", bucket, &streams.join(",")]);
    let mut seen = Seen::default();
    for (key, body) in dump["s3"].as_object().expect("s3 map") {
        seen.objects += 1;
        let Some(lines) = body.as_array() else {
            note(
                &mut seen.s3_problems,
                format!("{key}: does not gunzip: {body}"),
            );
            continue;
        };
        // applications/<service>/<kind>/YYYY/MM/DD/HH/MM_<host>_<n>.gz
        let parts: Vec<&str> = key.split('/').collect();
        let file_ok = parts.len() == 8
            && parts[0] == "applications"
            && parts[7].ends_with(".gz")
            && parts[7].split('_').nth(1) == Some(fwd_host);
        if !file_ok {
            note(&mut seen.s3_problems, format!("{key}: not the seed layout"));
        }
        let n = lines.len();
        for (i, l) in lines.iter().enumerate() {
            let l = l.as_str().unwrap_or("");
            if l.is_empty() {
                if i + 1 != n {
                    note(&mut seen.s3_problems, format!("{key}: an empty line {i}"));
                }
                continue;
            }
            seen.s3_lines += 1;
            let Ok(v) = serde_json::from_str::<J>(l) else {
                note(
                    &mut seen.s3_problems,
                    format!("{key}: line {i} is not JSON"),
                );
                continue;
            };
            let j = canonical(&v);
            match by_json.get(j.as_str()) {
                Some(e) if e.dropped => note(
                    &mut seen.s3_problems,
                    format!("{key}: a health check stored"),
                ),
                Some(e) => {
                    if parts.len() == 8 && (parts[1] != e.service || parts[2] != e.kind) {
                        note(
                            &mut seen.s3_problems,
                            format!("{key}: a {}/{} line", e.service, e.kind),
                        );
                    }
                }
                None => note(
                    &mut seen.s3_problems,
                    format!("{key}: line {i} is no corpus line: {:.200}", l),
                ),
            }
            *seen.s3.entry(j).or_default() += 1;
        }
    }
    for (group, st) in dump["cw"].as_object().expect("cw map") {
        for (stream, events) in st.as_object().expect("streams") {
            let events = events.as_array().expect("events");
            seen.streams
                .insert((group.clone(), stream.clone()), events.len());
            for m in events {
                seen.cw_events += 1;
                let m = m.as_str().unwrap_or("");
                let Ok(v) = serde_json::from_str::<J>(m) else {
                    note(
                        &mut seen.cw_problems,
                        format!("{group}/{stream}: not JSON: {m:.200}"),
                    );
                    continue;
                };
                let j = canonical(&v);
                match by_json.get(j.as_str()) {
                    Some(e) if e.error && e.service == *group => {}
                    Some(e) => note(
                        &mut seen.cw_problems,
                        format!(
                            "{group}/{stream}: a {} line of {} (error: {})",
                            e.kind, e.service, e.error
                        ),
                    ),
                    None => note(
                        &mut seen.cw_problems,
                        format!("{group}/{stream}: no corpus line: {m:.200}"),
                    ),
                }
                *seen.cw.entry(j).or_default() += 1;
            }
        }
    }
    seen
}

/// (missing, duplicate copies) of `want` in `got`.
fn tally<'a>(
    want: impl Iterator<Item = &'a Expected>,
    got: &HashMap<String, usize>,
) -> (usize, usize) {
    let mut want_n: HashMap<&str, usize> = HashMap::new();
    for e in want {
        *want_n.entry(e.json.as_str()).or_default() += 1;
    }
    let (mut missing, mut dups) = (0, 0);
    for (j, n) in &want_n {
        let g = got.get(*j).copied().unwrap_or(0);
        missing += n.saturating_sub(g);
        dups += g.saturating_sub(*n);
    }
    (missing, dups)
}

// ---- the chain -------------------------------------------------------------------------------

fn metric_sum(text: &str, name: &str, plugin_id: &str) -> u64 {
    let prefix = format!("{name}{{plugin_id=\"{plugin_id}\"");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            l.rsplit_once(' ')
                .and_then(|(_, v)| v.trim().parse::<f64>().ok())
        })
        .sum::<f64>() as u64
}

fn admin_block(port: u16) -> String {
    format!("<system>\n  admin_bind 127.0.0.1\n  admin_port {port}\n</system>\n")
}

fn example(name: &str) -> String {
    let p = workspace_root().join("examples").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

struct Aggregator {
    name: String,
    host: String,
    port: u16,
    admin_port: u16,
    data: PathBuf,
    proc: Option<Proc>,
}

impl Aggregator {
    fn env<'a>(&'a self, moto: &'a str, port: &'a str, data: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("NAGARE_BIND", "127.0.0.1"),
            ("NAGARE_PORT", port),
            ("NAGARE_DATA_DIR", data),
            ("NAGARE_HOSTNAME", self.host.as_str()),
            ("NAGARE_CLOUDWATCH_ENDPOINT", moto),
            ("AWS_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
    }

    /// Starts it: the first time on ports the kernel picks (port 0), kept from then on; a
    /// restart comes back on the same ports (the NLB stand-in's backend list is fixed) and
    /// retries while they are busy.
    fn start(&mut self, dir: &Path, moto: &str, attempt: u32) {
        let config = format!(
            "{}{}",
            admin_block(self.admin_port),
            example("aggregator.conf")
        );
        let (port, data) = (self.port.to_string(), self.data.display().to_string());
        let env = self.env(moto, &port, &data);
        let name = format!("{}-{attempt}", self.name);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Proc::try_start_with_env(Role::Aggregator, &name, dir, &config, &env) {
                Ok(p) => {
                    self.port = p.port();
                    self.admin_port = p
                        .admin_addr()
                        .unwrap_or_else(|| panic!("{name}: no admin address"))
                        .port();
                    self.proc = Some(p);
                    return;
                }
                Err(e) if Instant::now() > deadline => panic!("{e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    fn received(&self) -> u64 {
        self.proc
            .as_ref()
            .and_then(|p| p.metrics_text().ok())
            .map(|t| metric_sum(&t, "nagare_input_events_total", "in_forwarders"))
            .unwrap_or(0)
    }
}

struct Chain {
    dir: TempDir,
    aws: Aws,
    moto: String,
    bucket: String,
    aggs: Vec<Aggregator>,
    _nlb: Nlb,
    fwd: Proc,
    fwd_host: String,
    client: PathBuf,
    corpus: Corpus,
    shift: i64,
}

impl Chain {
    /// Everything up and ready, nothing sent. `None` when a component is missing (outside CI).
    fn start(test: &str, run: &str) -> Option<Chain> {
        let client = dockerlike_client(test)?;
        let (corpus_path, manifest) = corpus(test)?;
        let haproxy = haproxy_binary(test)?;
        let moto = moto(test)?;
        let Some(python) = venv_python() else {
            missing(
                test,
                "the .ci/venv interpreter (boto3, to read moto) is missing",
                "run `sudo .ci/install-deps.sh` from the workspace root",
            );
            return None;
        };
        let corpus = load_corpus(&corpus_path, &manifest);
        assert_eq!(
            corpus.wire.len() as u64,
            corpus.manifest["wire_records"].as_u64().unwrap_or(0)
        );
        assert_eq!(
            corpus.expected.len() as u64,
            corpus.manifest["records"].as_u64().unwrap_or(0)
        );
        let aws = Aws {
            python,
            endpoint: moto.clone(),
        };
        let dir = TempDir::new(test);
        let id = format!("{}-{run}", std::process::id());
        let bucket = format!("nagare-e2e-{id}");
        aws.run(&["create-bucket", &bucket]);

        let mut aggs: Vec<Aggregator> = ["a", "b"]
            .iter()
            .map(|n| Aggregator {
                name: format!("aggregator-{n}"),
                host: format!("agg-{n}-{id}"),
                // Chosen by the kernel at the first start (see `Aggregator::start`).
                port: 0,
                admin_port: 0,
                data: dir.join(&format!("agg-{n}")),
                proc: None,
            })
            .collect();
        for a in &mut aggs {
            a.start(dir.path(), &moto, 1);
        }
        let targets: Vec<NlbTarget> = aggs
            .iter()
            .map(|a| NlbTarget {
                port: a.port,
                admin_port: a.admin_port,
            })
            .collect();
        let nlb = Nlb::start(&haproxy, dir.path(), &targets);

        let fwd_host = format!("fwd-{id}");
        let (lb_port, data) = (nlb.port.to_string(), dir.join("fwd").display().to_string());
        let config = format!("{}{}", admin_block(0), example("forwarder.conf"));
        let fwd = Proc::start_with_env(
            Role::Forwarder,
            "forwarder",
            dir.path(),
            &config,
            &[
                ("NAGARE_BIND", "127.0.0.1"),
                ("NAGARE_PORT", "0"),
                ("NAGARE_DATA_DIR", &data),
                ("NAGARE_HOSTNAME", &fwd_host),
                ("NAGARE_AGGREGATOR_HOST", "127.0.0.1"),
                ("NAGARE_AGGREGATOR_PORT", &lb_port),
                ("NAGARE_S3_BUCKET", &bucket),
                ("NAGARE_S3_ENDPOINT", &moto),
                ("NAGARE_S3_PATH_STYLE", "true"),
                ("NAGARE_S3_KEY_ID", "testing"),
                ("NAGARE_S3_SECRET_KEY", "testing"),
                ("AWS_REGION", REGION),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
        );
        // A day ago, whole 5-minute slices.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        let first = corpus.wire[0]["time"].as_i64().unwrap_or(0);
        let shift = ((now - 86_400 - first) / 300) * 300;
        Some(Chain {
            dir,
            aws,
            moto,
            bucket,
            aggs,
            _nlb: nlb,
            fwd,
            fwd_host,
            client,
            corpus,
            shift,
        })
    }

    /// Replays `wire[range]` with the Go client (no ack, as Docker's default); every record
    /// must be written.
    fn replay(&self, name: &str, range: std::ops::Range<usize>) {
        let part = write_part(
            &self.dir,
            name,
            &self.corpus.wire[range.clone()],
            self.shift,
        );
        let mut cmd = Command::new(&self.client);
        cmd.args(["-addr", &self.fwd.addr().to_string(), "-corpus"])
            .arg(&part)
            .args(["-deadline", CLIENT_DEADLINE]);
        let (status, stdout, stderr) = run_client(&mut cmd, CLIENT_TIMEOUT);
        assert_eq!(
            status.code(),
            Some(0),
            "dockerlike exited with {status}\nstdout {stdout}\nstderr {stderr}"
        );
        let s: J = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("no summary from dockerlike: {stdout}"));
        assert_eq!(s["sent"], range.len(), "summary {s}");
        assert_eq!(s["errors"], 0, "summary {s}");
    }

    fn streams(&self) -> Vec<String> {
        self.aggs.iter().map(|a| a.host.clone()).collect()
    }

    /// Waits until S3 and CloudWatch hold at least the expected numbers of lines, lets them
    /// settle, and reads them once more.
    fn wait_for_outputs(&self) -> Seen {
        let want_s3 = self.corpus.expected.iter().filter(|e| !e.dropped).count();
        let want_cw = self.corpus.expected.iter().filter(|e| e.error).count();
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        loop {
            let seen = read_outputs(
                &self.aws,
                &self.bucket,
                &self.streams(),
                &self.corpus,
                &self.fwd_host,
            );
            let s3_done =
                tally(self.corpus.expected.iter().filter(|e| !e.dropped), &seen.s3).0 == 0;
            let cw_done = tally(self.corpus.expected.iter().filter(|e| e.error), &seen.cw).0 == 0;
            if s3_done && cw_done {
                break;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .aggs
                    .iter()
                    .filter_map(|a| a.proc.as_ref())
                    .map(|p| format!("--- {} ---\n{}", p.name, p.log_tail(30)))
                    .collect();
                panic!(
                    "timed out after {DELIVERY_TIMEOUT:?}: S3 {} of {want_s3} lines in {} objects, \
                     CloudWatch {} of {want_cw} events {:?}\n--- forwarder ---\n{}\n{}",
                    seen.s3_lines,
                    seen.objects,
                    seen.cw_events,
                    seen.streams,
                    self.fwd.log_tail(30),
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        std::thread::sleep(SETTLE);
        read_outputs(
            &self.aws,
            &self.bucket,
            &self.streams(),
            &self.corpus,
            &self.fwd_host,
        )
    }

    /// Checks what both runs must show; returns CloudWatch's duplicate copies.
    fn check(&self, test: &str, seen: &Seen) -> usize {
        let m = &self.corpus.manifest;
        let k = |n: &str| m["kinds"][n].as_u64().unwrap_or(0) as usize;
        let records = m["records"].as_u64().unwrap_or(0) as usize;
        let want_s3 = records - k("health");
        assert!(
            seen.s3_problems.is_empty(),
            "{test}: S3: {:#?}",
            seen.s3_problems
        );
        let (s3_missing, s3_dups) =
            tally(self.corpus.expected.iter().filter(|e| !e.dropped), &seen.s3);
        assert_eq!(
            (seen.s3_lines, s3_missing, s3_dups),
            (want_s3, 0, 0),
            "{test}: S3 lines, missing, duplicates"
        );
        let audit = self
            .corpus
            .expected
            .iter()
            .filter(|e| !e.dropped && e.kind == "audit")
            .count();
        assert_eq!(audit, k("audit"));

        assert!(
            seen.cw_problems.is_empty(),
            "{test}: CloudWatch: {:#?}",
            seen.cw_problems
        );
        let (cw_missing, cw_dups) =
            tally(self.corpus.expected.iter().filter(|e| e.error), &seen.cw);
        assert_eq!(cw_missing, 0, "{test}: error lines missing from CloudWatch");
        assert_eq!(seen.cw_events, k("error") + cw_dups);
        // One group per service, with the manifest's error count (plus duplicates).
        let mut groups: BTreeMap<&str, usize> = BTreeMap::new();
        for ((g, s), n) in &seen.streams {
            assert!(
                self.aggs.iter().any(|a| a.host == *s),
                "{test}: stream {s} in {g} is not an aggregator host"
            );
            *groups.entry(g.as_str()).or_default() += n;
        }
        let want_groups: BTreeSet<String> = m["service_kinds"]
            .as_object()
            .map(|o| {
                o.keys()
                    .filter_map(|k| k.strip_suffix(".error").map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            groups
                .keys()
                .map(|g| g.to_string())
                .collect::<BTreeSet<_>>(),
            want_groups,
            "{test}: log groups"
        );
        if cw_dups == 0 {
            for (g, n) in &groups {
                assert_eq!(
                    *n as u64,
                    m["service_kinds"][format!("{g}.error")]
                        .as_u64()
                        .unwrap_or(0),
                    "{test}: group {g}"
                );
            }
        }
        eprintln!(
            "[{test}] S3: {} objects, {} lines ({} audit), each expected line once; \
             CloudWatch: {} events in {:?} (group, stream) -> events; duplicates {cw_dups}",
            seen.objects, seen.s3_lines, audit, seen.cw_events, seen.streams
        );
        cw_dups
    }

    fn stop(mut self) {
        self.fwd.stop_ok();
        for a in &mut self.aggs {
            if let Some(p) = a.proc.as_mut() {
                p.stop_ok();
            }
        }
    }
}

#[test]
fn full_chain_exact() {
    let test = "full_chain_exact";
    let Some(chain) = Chain::start(test, "exact") else {
        return;
    };
    let t0 = Instant::now();
    chain.replay("corpus.jsonl", 0..chain.corpus.wire.len());
    let seen = chain.wait_for_outputs();
    let dups = chain.check(test, &seen);
    assert_eq!(
        dups, 0,
        "{test}: no failure, so no duplicates in CloudWatch"
    );
    eprintln!("[{test}] delivered and checked in {:?}", t0.elapsed());
    chain.stop();
}

#[test]
fn full_chain_aggregator_killed() {
    let test = "full_chain_aggregator_killed";
    let Some(mut chain) = Chain::start(test, "killed") else {
        return;
    };
    let t0 = Instant::now();
    // Three parts, split where no partial line is open.
    let n = chain.corpus.wire.len();
    let split = |f: usize| {
        chain
            .corpus
            .boundaries
            .iter()
            .copied()
            .find(|&b| b >= n * f / 3)
            .unwrap_or(n)
    };
    let (s1, s2) = (split(1), split(2));
    assert!(
        0 < s1 && s1 < s2 && s2 < n,
        "split points {s1}, {s2} of {n}"
    );

    chain.replay("part1.jsonl", 0..s1);
    // The aggregator the forwarder is sending to (its connection through the NLB).
    let mut victim = None;
    wait_until(
        "an aggregator receiving events",
        Duration::from_secs(30),
        || {
            victim = chain.aggs.iter().position(|a| a.received() > 0);
            victim.map(|_| ()).ok_or_else(|| "none yet".to_string())
        },
    );
    let v = victim.expect("a victim");
    let got = chain.aggs[v].received();
    if let Some(p) = chain.aggs[v].proc.as_mut() {
        p.kill();
    }
    eprintln!(
        "[{test}] SIGKILL {} after it received {got} events",
        chain.aggs[v].host
    );
    chain.replay("part2.jsonl", s1..s2);
    // Restarted on the same port, with the same buffer directory and host name.
    let (dir, moto) = (chain.dir.path().to_path_buf(), chain.moto.clone());
    chain.aggs[v].start(&dir, &moto, 2);
    eprintln!(
        "[{test}] restarted {} on port {}",
        chain.aggs[v].host, chain.aggs[v].port
    );
    chain.replay("part3.jsonl", s2..n);

    let seen = chain.wait_for_outputs();
    let dups = chain.check(test, &seen);
    eprintln!(
        "[{test}] nothing lost after the kill; {dups} duplicate CloudWatch events (at-least-once); {:?}",
        t0.elapsed()
    );
    chain.stop();
}

#[test]
fn print_default_config_reparses() {
    for (role, bin) in [
        (Role::Forwarder, "nagare-forwarder"),
        (Role::Aggregator, "nagare-aggregator"),
    ] {
        let envs: [&[(&str, &str)]; 2] = [
            &[],
            &[
                ("NAGARE_FORWARD_TARGETS", "agg-1.internal:24224,10.0.0.7"),
                ("NAGARE_S3_BUCKET", "my-logs"),
                ("NAGARE_S3_ENDPOINT", ""),
                ("AWS_REGION", "eu-west-1"),
                ("NAGARE_CLOUDWATCH_ENDPOINT", "http://127.0.0.1:5000"),
            ],
        ];
        for env in envs {
            let mut cmd = Command::new(binary(bin));
            cmd.arg("--print-default-config")
                .env_remove("NAGARE_FORWARD_TARGETS")
                .envs(env.iter().copied());
            let (status, text, stderr) = run_client(&mut cmd, Duration::from_secs(30));
            assert!(status.success(), "{bin} {env:?}: {status}: {stderr}");
            let opts = nagare_config::ParseOptions::fixed(env.iter().copied(), "host-1");
            let root = nagare_config::parse_str_with(&text, Path::new("printed.conf"), &opts)
                .unwrap_or_else(|e| panic!("{bin} {env:?}: {e}\n{text}"));
            nagare_pipeline::Pipeline::validate(&root)
                .unwrap_or_else(|e| panic!("{bin} {env:?}: {e}\n{text}"));
            let forwards = text.contains("@id to_aggregators");
            assert_eq!(
                forwards,
                role == Role::Forwarder && !env.is_empty(),
                "{bin} {env:?}: the forward store"
            );
        }
    }
    // A bad target is refused with the variable's name.
    let mut cmd = Command::new(binary("nagare-forwarder"));
    cmd.arg("--print-default-config")
        .env("NAGARE_FORWARD_TARGETS", "agg:notaport");
    let (status, _, stderr) = run_client(&mut cmd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("NAGARE_FORWARD_TARGETS"), "{stderr}");
}
