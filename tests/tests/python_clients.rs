//! PyPI fluent-logger (`tests/clients/fluent_sender.py`) against `nagare-forwarder`:
//! in_forward -> `@type file` JSON lines with the tag and time injected.
//!
//! For sync and async senders, with integer time (uint32 on the wire) and with
//! `nanosecond_precision` (EventTime): every record arrives exactly once (by `seq`), under the
//! right tag, with the right time (seconds for integer time, nanoseconds exact for EventTime)
//! and its fields intact.

use nagare_e2e::*;
use std::process::Command;
use std::time::Duration;

const COUNT: u64 = 2000;
const BASE_TIME: u32 = 1_700_000_000;
/// The nanoseconds `--nanosecond` sends (`EventTime(…, nanoseconds=123456789)`).
const NANOS: u32 = 123_456_789;

fn run(test: &str, mode: &str, nanosecond: bool) {
    let Some((py, script)) = python_client(test) else {
        return;
    };
    let dir = TempDir::new(test);
    let out = dir.join("out.jsonl");
    let config = format!("{}{}", forward_source("in_py", 0), file_match(&out));
    let mut fwd = Proc::start(Role::Forwarder, "forwarder", dir.path(), &config);
    let tag = format!("py.{mode}{}", if nanosecond { ".ns" } else { "" });

    let mut cmd = Command::new(&py);
    cmd.arg(&script)
        .args(["--host", "127.0.0.1", "--port", &fwd.port().to_string()])
        .args(["--tag", &tag, "--count", &COUNT.to_string(), "--mode", mode]);
    if nanosecond {
        cmd.arg("--nanosecond");
    }
    let (status, stdout, stderr) = run_client(&mut cmd, Duration::from_secs(120));
    assert!(
        status.success(),
        "fluent_sender.py failed ({status}): stdout {stdout} stderr {stderr}"
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("fluent_sender.py summary is not JSON ({e}): {stdout}"));
    assert_eq!(summary["sent"], COUNT, "summary: {summary}");
    assert_eq!(summary["errors"], 0, "summary: {summary}");

    // Wait until every record is in the file, then stop the forwarder cleanly and read the
    // final file: anything late (a duplicate) would be there too.
    let mut tail = JsonLinesTail::new(&out);
    let mut seen = 0u64;
    wait_until(
        "all records in the output file",
        Duration::from_secs(60),
        || {
            tail.poll(|_| seen += 1);
            if seen >= COUNT {
                Ok(())
            } else {
                Err(format!("{seen} of {COUNT} lines"))
            }
        },
    );
    fwd.stop_ok();

    let lines = read_out_lines(&out);
    let mut by_seq = vec![0u32; COUNT as usize];
    for l in &lines {
        let seq = l
            .seq()
            .unwrap_or_else(|| panic!("line without an integer seq: {l:?}"));
        assert!(seq < COUNT, "seq {seq} out of range: {l:?}");
        by_seq[seq as usize] += 1;
        assert_eq!(l.tag, tag, "tag of seq {seq}");
        let want_secs = BASE_TIME + seq as u32;
        let want_nanos = if nanosecond { NANOS } else { 0 };
        assert_eq!(
            (l.secs, l.nanos),
            (want_secs, want_nanos),
            "time of seq {seq}: {l:?}"
        );
        assert_eq!(
            l.str_field("kind"),
            Some("python"),
            "kind of seq {seq}: {l:?}"
        );
        let msg = format!("line {seq}");
        assert_eq!(
            l.str_field("msg"),
            Some(msg.as_str()),
            "msg of seq {seq}: {l:?}"
        );
        assert_eq!(l.record.len(), 3, "exactly seq, kind, msg: {l:?}");
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
}

#[test]
fn python_sync_integer_time() {
    run("python_sync_integer_time", "sync", false);
}

#[test]
fn python_sync_nanosecond_time() {
    run("python_sync_nanosecond_time", "sync", true);
}

#[test]
fn python_async_integer_time() {
    run("python_async_integer_time", "async", false);
}

#[test]
fn python_async_nanosecond_time() {
    run("python_async_nanosecond_time", "async", true);
}
