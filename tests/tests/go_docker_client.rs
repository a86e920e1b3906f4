//! fluent-logger-golang configured as Docker's `fluentd` log driver (`target/interop/dockerlike`)
//! against `nagare-forwarder` (in_forward -> `@type file` JSON lines, tag and time injected).
//!
//! * `-count N` with `-ack` on and off and `-subsecond` on and off: every record exactly once;
//!   with `-ack` the client gets an ack per record (a missing or mismatched ack would make it
//!   hang or resend, so its `-deadline` turns that into exit code 2, never a hung test).
//! * `-corpus`: the 2,077 wire records of the Docker-driver corpus over 6 connections arrive
//!   exactly, with tag, time and every field (`log` included) identical to the corpus file,
//!   each connection's records in file order.

use nagare_e2e::*;
use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const COUNT: u64 = 1000;
/// The client's own watchdog (exit 2); well below the test's bound on the client.
const CLIENT_DEADLINE: &str = "60s";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn summary(stdout: &str) -> serde_json::Value {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("dockerlike summary is not JSON ({e}): {stdout}"))
}

/// Waits for `n` lines in `out`, stops the forwarder (SIGTERM, exit 0) and returns the file.
fn collect(fwd: &mut Proc, out: &std::path::Path, n: usize) -> Vec<OutLine> {
    let mut tail = JsonLinesTail::new(out);
    let mut seen = 0usize;
    wait_until(
        "all records in the output file",
        Duration::from_secs(60),
        || {
            tail.poll(|_| seen += 1);
            if seen >= n {
                Ok(())
            } else {
                Err(format!("{seen} of {n} lines"))
            }
        },
    );
    fwd.stop_ok();
    read_out_lines(out)
}

fn run_count(test: &str, ack: bool, subsecond: bool) {
    let Some(client) = dockerlike_client(test) else {
        return;
    };
    let dir = TempDir::new(test);
    let out = dir.join("out.jsonl");
    let config = format!("{}{}", forward_source("in_docker", 0), file_match(&out));
    let mut fwd = Proc::start(Role::Forwarder, "forwarder", dir.path(), &config);

    let mut cmd = Command::new(&client);
    cmd.args([
        "-addr",
        &fwd.addr().to_string(),
        "-count",
        &COUNT.to_string(),
    ])
    .args(["-deadline", CLIENT_DEADLINE]);
    if ack {
        cmd.arg("-ack");
    }
    if subsecond {
        cmd.arg("-subsecond");
    }
    let t0 = now_secs();
    let (status, stdout, stderr) = run_client(&mut cmd, CLIENT_TIMEOUT);
    let t1 = now_secs();
    let s = summary(&stdout);
    assert_eq!(
        status.code(),
        Some(0),
        "dockerlike exited with {status} (2 = its deadline fired: an ack never came)\nsummary {s}\nstderr {stderr}"
    );
    assert_eq!(s["sent"], COUNT, "summary {s}");
    assert_eq!(s["errors"], 0, "summary {s}");
    assert_eq!(s["ack"], ack, "summary {s}");
    assert_eq!(s["timed_out"], false, "summary {s}");

    let lines = collect(&mut fwd, &out, COUNT as usize);
    let mut by_seq = vec![0u32; COUNT as usize];
    let mut nonzero_nanos = 0usize;
    let mut container = None::<String>;
    for l in &lines {
        let log = l
            .str_field("log")
            .unwrap_or_else(|| panic!("record without log: {l:?}"));
        let inner: serde_json::Value = serde_json::from_str(log)
            .unwrap_or_else(|e| panic!("log is not the JSON the client sent ({e}): {log}"));
        let seq = inner["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("log without seq: {log}"));
        assert!(seq < COUNT, "seq {seq} out of range");
        by_seq[seq as usize] += 1;
        assert_eq!(inner["msg"], format!("hello {seq}"), "log of seq {seq}");
        let cid = l
            .str_field("container_id")
            .unwrap_or_else(|| panic!("no container_id: {l:?}"));
        assert_eq!(cid.len(), 64, "container_id {cid}");
        match &container {
            None => container = Some(cid.to_string()),
            Some(c) => assert_eq!(c, cid, "one container per run"),
        }
        assert_eq!(
            l.tag,
            &cid[..12],
            "Docker's default tag is the short container id"
        );
        assert_eq!(l.str_field("container_name"), Some("/app"));
        assert_eq!(l.str_field("source"), Some("stdout"));
        assert_eq!(
            l.record.len(),
            4,
            "container_id, container_name, source, log: {l:?}"
        );
        assert!(
            (t0.saturating_sub(1)..=t1 + 1).contains(&(l.secs as u64)),
            "time {} of seq {seq} outside the run [{t0}, {t1}]",
            l.secs
        );
        if l.nanos != 0 {
            nonzero_nanos += 1;
        }
    }
    let missing: Vec<usize> = (0..COUNT as usize)
        .filter(|&i| by_seq[i] == 0)
        .take(10)
        .collect();
    let dups: Vec<usize> = (0..COUNT as usize)
        .filter(|&i| by_seq[i] > 1)
        .take(10)
        .collect();
    assert!(missing.is_empty(), "missing seqs (first 10): {missing:?}");
    assert!(dups.is_empty(), "duplicated seqs (first 10): {dups:?}");
    assert_eq!(lines.len() as u64, COUNT);
    if subsecond {
        // EventTime with time.Now(): a thousand records all landing on a whole second is
        // practically impossible.
        assert!(
            nonzero_nanos > 0,
            "-subsecond sent EventTime, but every time arrived with 0 ns"
        );
    } else {
        assert_eq!(nonzero_nanos, 0, "integer time must arrive with 0 ns");
    }
}

#[test]
fn docker_no_ack_integer_time() {
    run_count("docker_no_ack_integer_time", false, false);
}

#[test]
fn docker_no_ack_subsecond() {
    run_count("docker_no_ack_subsecond", false, true);
}

#[test]
fn docker_ack_integer_time() {
    run_count("docker_ack_integer_time", true, false);
}

#[test]
fn docker_ack_subsecond() {
    run_count("docker_ack_subsecond", true, true);
}

/// One corpus line: the expected output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Expected {
    tag: String,
    time: u64,
    record: BTreeMap<String, String>,
}

fn string_map(
    m: &serde_json::Map<String, serde_json::Value>,
    what: &str,
) -> BTreeMap<String, String> {
    m.iter()
        .map(|(k, v)| {
            let s = v
                .as_str()
                .unwrap_or_else(|| panic!("{what}: field {k} is not a string: {v}"));
            (k.clone(), s.to_string())
        })
        .collect()
}

fn corpus_replay(test: &str, ack: bool) {
    let Some(client) = dockerlike_client(test) else {
        return;
    };
    let Some((corpus, manifest)) = corpus(test) else {
        return;
    };
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).expect("read manifest"))
            .expect("manifest JSON");
    let text = std::fs::read_to_string(&corpus).expect("read corpus");
    let expected: Vec<Expected> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("corpus line is JSON");
            Expected {
                tag: v["tag"].as_str().expect("corpus tag").to_string(),
                time: v["time"].as_u64().expect("corpus time is integer seconds"),
                record: string_map(v["record"].as_object().expect("corpus record"), "corpus"),
            }
        })
        .collect();
    assert_eq!(
        Some(expected.len() as u64),
        manifest["wire_records"].as_u64(),
        "corpus lines vs the manifest's wire_records"
    );

    let dir = TempDir::new(test);
    let out = dir.join("out.jsonl");
    let config = format!("{}{}", forward_source("in_corpus", 0), file_match(&out));
    let mut fwd = Proc::start(Role::Forwarder, "forwarder", dir.path(), &config);
    let mut cmd = Command::new(&client);
    cmd.args(["-addr", &fwd.addr().to_string(), "-corpus"])
        .arg(&corpus)
        .args(["-deadline", CLIENT_DEADLINE]);
    if ack {
        cmd.arg("-ack");
    }
    let (status, stdout, stderr) = run_client(&mut cmd, CLIENT_TIMEOUT);
    let s = summary(&stdout);
    assert_eq!(
        status.code(),
        Some(0),
        "dockerlike -corpus exited with {status}\nsummary {s}\nstderr {stderr}"
    );
    assert_eq!(s["sent"], expected.len(), "summary {s}");
    assert_eq!(s["errors"], 0, "summary {s}");

    let lines = collect(&mut fwd, &out, expected.len());
    let got: Vec<Expected> = lines
        .iter()
        .map(|l| {
            assert_eq!(l.nanos, 0, "corpus times are whole seconds: {l:?}");
            Expected {
                tag: l.tag.clone(),
                time: l.secs as u64,
                record: string_map(&l.record, "output"),
            }
        })
        .collect();

    // The same multiset of (tag, time, record), `log` compared as decoded strings.
    let want_h = histogram(expected.iter().cloned());
    let got_h = histogram(got.iter().cloned());
    let mut problems = Vec::new();
    for (e, n) in &want_h {
        let g = got_h.get(e).copied().unwrap_or(0);
        if g != *n {
            problems.push(format!(
                "expected {n}x, got {g}x: {} {} {:.300?}",
                e.tag, e.time, e.record
            ));
        }
    }
    for (e, g) in &got_h {
        if !want_h.contains_key(e) {
            problems.push(format!(
                "unexpected {g}x: {} {} {:.300?}",
                e.tag, e.time, e.record
            ));
        }
    }
    problems.sort();
    assert!(
        problems.is_empty(),
        "{} differences between the corpus and the output (first 5):\n{}",
        problems.len(),
        problems
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(got.len(), expected.len());

    // Each connection (one per container) keeps file order.
    let mut per_container: HashMap<&str, Vec<&Expected>> = HashMap::new();
    for e in &expected {
        per_container
            .entry(e.record["container_id"].as_str())
            .or_default()
            .push(e);
    }
    let mut got_per_container: HashMap<&str, Vec<&Expected>> = HashMap::new();
    for g in &got {
        got_per_container
            .entry(g.record["container_id"].as_str())
            .or_default()
            .push(g);
    }
    assert_eq!(per_container.len(), 6, "the corpus has 6 containers");
    for (cid, want) in &per_container {
        let have = &got_per_container[cid];
        let first_diff = want.iter().zip(have.iter()).position(|(a, b)| a != b);
        assert!(
            first_diff.is_none(),
            "container {cid}: order differs from the corpus at record {first_diff:?}"
        );
    }
}

#[test]
fn docker_corpus_replay() {
    corpus_replay("docker_corpus_replay", false);
}

#[test]
fn docker_corpus_replay_with_ack() {
    corpus_replay("docker_corpus_replay_with_ack", true);
}
