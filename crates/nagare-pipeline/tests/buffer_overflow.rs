//! The output down for the whole test, a `nagare-forwarder` process fed far more than its
//! buffer holds: peak RSS (VmHWM) stays within `total_limit_size` plus a fixed overhead for the
//! memory buffer (and does not grow with the backlog for the file buffer); each
//! `overflow_action` behaves as documented and the counters match what the client saw.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const MIB: u64 = 1024 * 1024;
/// Fixed overhead allowed on top of `total_limit_size`: runtime, connection buffers (one 512 KiB
/// message decoded at a time), and glibc malloc's per-thread arenas, which keep freed chunk
/// memory for reuse (measured peaks: 37-60 MiB above the base with a 24 MiB buffer, i.e. 13-36
/// MiB of overhead; the highest with `drop_oldest_chunk`, which frees and allocates chunks
/// continuously).
const OVERHEAD: u64 = 64 * MIB;
const PAD: usize = 1000;
const BATCH: u64 = 500;

fn conf(dead: u16, buffer: &str) -> String {
    format!(
        r#"<system>
  admin_bind 127.0.0.1
  admin_port 0
  shutdown_accept_period 0s
  shutdown_drain_timeout 1s
</system>
<source>
  @type forward
  @id in
  bind 127.0.0.1
  port 0
</source>
<match **>
  @type forward
  @id out
  heartbeat_type none
  <server>
    host 127.0.0.1
    port {dead}
  </server>
  <buffer tag>
{buffer}
    chunk_limit_size 1m
    flush_interval 1s
    retry_wait 1s
    retry_max_interval 1s
    retry_forever true
  </buffer>
</match>
"#
    )
}

fn peak_rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

#[derive(Debug, Default)]
struct Outcome {
    acked: u64,
    refused: u64,
    timed_out: u64,
}

/// Sends `batches` messages of BATCH events, one attempt each.
async fn feed(fwd: &Fwd, batches: u64, ack_timeout: Duration, stop_after_timeouts: u64) -> Outcome {
    let mut s = Sender::new(Arc::new(Mutex::new(fwd.input)));
    s.ack_timeout = ack_timeout;
    let mut o = Outcome::default();
    for b in 0..batches {
        let (msg, chunk) = packed("overflow.test", b * BATCH..(b + 1) * BATCH, PAD);
        match s.try_once(&msg, &chunk).await {
            Ok(()) => o.acked += BATCH,
            Err(e) if e.contains("ack timeout") => {
                o.timed_out += 1;
                if o.timed_out >= stop_after_timeouts {
                    break;
                }
            }
            Err(_) => o.refused += 1,
        }
    }
    o
}

fn start(name: &str, dir: &std::path::Path, conf: &str) -> Fwd {
    tokio::task::block_in_place(|| Fwd::start(name, dir, conf))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_buffer_stays_bounded_and_each_overflow_action_counts() {
    let total = 24 * MIB;
    let dir = TempDir::new("overflow");
    let mut report = Vec::new();
    for action in ["throw_exception", "drop_oldest_chunk", "block"] {
        let fwd = start(
            action,
            dir.path(),
            &conf(
                dead_port(),
                &format!(
                    "    @type memory\n    total_limit_size {total}\n    overflow_action {action}"
                ),
            ),
        );
        let base = peak_rss(fwd.pid);
        // ~80 MB offered to a 24 MiB buffer. Only `block` should ever leave an ack pending
        // (that is how it is observed, so keep that wait short); elsewhere a timeout is a
        // failure, so a slow ack on a loaded machine must not look like one.
        let ack_timeout = if action == "block" {
            Duration::from_secs(4)
        } else {
            Duration::from_secs(15)
        };
        let o = feed(&fwd, 160, ack_timeout, 2).await;
        let peak = peak_rss(fwd.pid);
        let m = fwd.metrics();
        let g = |n: &str| metric(&m, n, &[("plugin_id", "out")]).unwrap_or(0.0) as u64;
        let r = |n: &str, reason: &str| {
            metric(&m, n, &[("plugin_id", "out"), ("reason", reason)]).unwrap_or(0.0) as u64
        };
        let appended = g("nagare_buffer_appended_records_total");
        let bytes = g("nagare_buffer_bytes");
        let overflows = g("nagare_buffer_overflows_total");
        report.push(format!(
            "{action}: {o:?}; appended {appended}, buffered {bytes} B, overflows {overflows}, rss base {} MiB peak {} MiB",
            base / MIB,
            peak / MIB
        ));
        assert!(
            bytes <= total,
            "{action}: {bytes} bytes buffered > total_limit_size"
        );
        assert!(
            peak <= base + total + OVERHEAD,
            "{action}: peak RSS {} MiB > base {} MiB + total_limit_size {} MiB + {} MiB",
            peak / MIB,
            base / MIB,
            total / MIB,
            OVERHEAD / MIB
        );
        assert!(overflows > 0, "{action}: the buffer never filled");
        assert_eq!(appended, o.acked, "{action}: acked = appended");
        match action {
            "throw_exception" => {
                assert!(o.refused > 0 && o.acked > 0);
                assert_eq!(
                    r("nagare_buffer_refused_appends_total", "buffer_full"),
                    o.refused
                );
                assert_eq!(overflows, o.refused);
                assert_eq!(
                    r("nagare_output_dropped_records_total", "drop_oldest_chunk"),
                    0
                );
            }
            "drop_oldest_chunk" => {
                assert_eq!(
                    (o.refused, o.timed_out),
                    (0, 0),
                    "drop_oldest_chunk never refuses"
                );
                let dropped = r("nagare_output_dropped_records_total", "drop_oldest_chunk");
                let held = appended - dropped;
                // Every record is either dropped (counted) or still held in the buffer.
                let entry = 1040..1060u64;
                assert!(
                    held * entry.start <= bytes && bytes <= held * entry.end,
                    "held {held} records in {bytes} bytes"
                );
                assert!(dropped > 0);
            }
            "block" => {
                assert!(
                    o.timed_out >= 1,
                    "block holds the sender (no ack while full)"
                );
                assert_eq!(o.refused, 0);
                assert!(g("nagare_buffer_blocked_appends_total") >= 1);
                assert_eq!(
                    r("nagare_output_dropped_records_total", "drop_oldest_chunk"),
                    0
                );
            }
            _ => unreachable!(),
        }
        drop(fwd);
    }
    eprintln!("overflow actions (output down):\n  {}", report.join("\n  "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_buffer_memory_does_not_grow_with_the_backlog() {
    let dir = TempDir::new("filerss");
    let buf = dir.path().join("buf");
    let fwd = start(
        "file",
        dir.path(),
        &conf(
            dead_port(),
            &format!(
                "    @type file\n    path {}\n    total_limit_size 1g",
                buf.display()
            ),
        ),
    );
    let base = peak_rss(fwd.pid);
    let t = Instant::now();
    // Every message must be acked: the timeout is a liveness bound (disk writes on a loaded
    // CI machine can stall for seconds), not a speed requirement.
    let o = feed(&fwd, 200, Duration::from_secs(30), 1).await;
    let peak = peak_rss(fwd.pid);
    let m = fwd.metrics();
    let bytes = metric(&m, "nagare_buffer_bytes", &[("plugin_id", "out")]).unwrap_or(0.0) as u64;
    let mem =
        metric(&m, "nagare_buffer_memory_bytes", &[("plugin_id", "out")]).unwrap_or(0.0) as u64;
    eprintln!(
        "file buffer, output down: {} events acked in {:?}, {} MiB on disk, {} B in memory, rss base {} MiB peak {} MiB",
        o.acked,
        t.elapsed(),
        bytes / MIB,
        mem,
        base / MIB,
        peak / MIB
    );
    assert_eq!(o.acked, 200 * BATCH);
    assert!(bytes > 90 * MIB, "the backlog is on disk: {bytes}");
    assert!(
        mem <= 2 * MIB,
        "only a chunk being retried is in memory: {mem}"
    );
    assert!(
        peak <= base + OVERHEAD,
        "peak RSS {} MiB grew with a {} MiB backlog (base {} MiB)",
        peak / MIB,
        bytes / MIB,
        base / MIB
    );
}
