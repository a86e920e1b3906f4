//! Configuration reload of the real binary under load (issue 9, point 3).
//!
//! `nagare-forwarder` runs `in_forward (port 0) -> record_transformer v=N -> out_file`. Several
//! connections send acked batches without pause, plus a thread that opens a new connection
//! per batch (a refused connection would show there). Meanwhile:
//!
//! 1. the config file is rewritten (`v 2`, another output file) and SIGHUP is sent;
//! 2. it is rewritten again (`v 3`, a third file) and `POST /api/config.reload` is called;
//! 3. it is rewritten with an unknown filter type and SIGHUP is sent: the reload fails, the
//!    v=3 pipeline keeps running, `nagare_config_reloads_total{result="failed"}` is 1.
//!
//! Then: no send failed (no refused or reset connection, no missing ack: the senders give up
//! at the first failure and never resend), every acked event is in the output files
//! **exactly once** (duplicates are counted and must be 0), and every batch sent after a
//! reload completed carries that reload's `v`.

use nagare_e2e::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bound on anything that must happen (a reload, a counter moving).
const LIVENESS: Duration = Duration::from_secs(60);
/// Events per batch.
const BATCH: u64 = 10;
/// Upper bound on batches per sender (the load loop is bounded).
const MAX_BATCHES: u64 = 20_000;
/// Long-lived connections.
const CONNS: u64 = 4;

fn config(v: u32, out: &Path, extra: &str) -> String {
    format!(
        r#"<system>
  shutdown_accept_period 0s
  shutdown_drain_timeout 5s
  admin_bind 127.0.0.1
  admin_port 0
</system>
{source}<filter **>
  @type record_transformer
  <record>
    v {v}
  </record>
</filter>
{extra}{out}"#,
        source = forward_source("rl_in", 0),
        out = file_match(out)
    )
}

fn rewrite(path: &Path, text: &str) {
    let tmp = path.with_extension("conf.tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

fn sighup(pid: u32) {
    let st = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -HUP {pid} failed");
}

fn post(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect admin");
    s.set_read_timeout(Some(LIVENESS)).unwrap();
    s.write_all(
        format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read admin reply");
    let status = out[9..12].parse().expect("status");
    let body = out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, body.to_string())
}

fn reloads(p: &Proc, result: &str) -> f64 {
    p.metrics_text()
        .ok()
        .and_then(|t| metric(&t, "nagare_config_reloads_total", &[("result", result)]))
        .unwrap_or(-1.0)
}

/// Steady acked load: `CONNS` long-lived connections plus one thread opening a new
/// connection per batch (a refused connect fails it). Senders give up at the first failure
/// (refused, reset, closed without ack): no resend ever happens.
struct Load {
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The reload phase a batch is sent under (set by the test once a reload completed).
    phase: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    /// Batches acked: (first seq, the phase when the batch was sent).
    sent: Arc<Mutex<Vec<(u64, u64)>>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let mut l = Load {
            threads: Vec::new(),
            phase: Arc::default(),
            stop: Arc::default(),
            acked: Arc::default(),
            sent: Arc::default(),
        };
        for c in 0..=CONNS {
            let (phase, stop, acked, sent) = (
                l.phase.clone(),
                l.stop.clone(),
                l.acked.clone(),
                l.sent.clone(),
            );
            l.threads.push(std::thread::spawn(move || {
                let per_batch_conn = c == CONNS;
                let mut s = ForwardSender::new(addr);
                for b in 0..MAX_BATCHES {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if per_batch_conn {
                        s = ForwardSender::new(addr);
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    s.max_attempts = 1;
                    s.ack_timeout = LIVENESS;
                    let start = (c * MAX_BATCHES + b) * BATCH;
                    let ph = phase.load(Ordering::SeqCst);
                    s.send_seqs("e2e.reload", start..start + BATCH);
                    sent.lock().unwrap().push((start, ph));
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        l
    }

    /// Waits (bounded) until `n` more batches were acked.
    fn progress(&self, what: &str, n: u64) {
        let target = self.acked.load(Ordering::SeqCst) + n;
        wait_until(what, LIVENESS, || {
            if self.acked.load(Ordering::SeqCst) >= target {
                Ok(())
            } else if self.threads.iter().any(|t| t.is_finished()) {
                Err("a sender stopped (failed)".into())
            } else {
                Err(format!(
                    "{} batches acked",
                    self.acked.load(Ordering::SeqCst)
                ))
            }
        });
    }

    /// Stops the senders; panics if one failed. Returns the batches acked.
    fn finish(self) -> Vec<(u64, u64)> {
        self.stop.store(true, Ordering::SeqCst);
        // Senders run with `max_attempts = 1`: a refused or reset connection or a missing ack
        // panics the sender (no resend is ever made), and that panic fails the test here.
        for t in self.threads {
            t.join()
                .expect("a sender failed (refused/reset connection or missing ack)");
        }
        let sent = self.sent.lock().unwrap().clone();
        sent
    }
}

/// Checks the output files: every acked event exactly once, and the `v` each batch carries
/// given the phase it was sent in (`expect(phase, v)`). Returns the duplicates (0).
fn check_outputs(files: &[&Path], sent: &[(u64, u64)], expect: impl Fn(u64, u64) -> bool) {
    let mut seen: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut per_file = Vec::new();
    for f in files {
        let lines = read_out_lines(f);
        per_file.push(lines.len());
        for l in lines {
            let seq = l.seq().expect("seq");
            let v: u64 = l
                .str_field("v")
                .and_then(|s| s.parse().ok())
                .expect("v field");
            seen.entry(seq).or_default().push(v);
        }
    }
    let events = sent.len() as u64 * BATCH;
    let missing: Vec<u64> = sent
        .iter()
        .flat_map(|(s, _)| *s..*s + BATCH)
        .filter(|s| !seen.contains_key(s))
        .take(10)
        .collect();
    let duplicates: usize = seen.values().map(|v| v.len() - 1).sum();
    eprintln!(
        "reload e2e: {} batches / {events} events acked; lines per file {per_file:?}; duplicates {duplicates}",
        sent.len()
    );
    assert!(missing.is_empty(), "acked events missing: {missing:?}...");
    assert_eq!(duplicates, 0, "events written more than once");
    assert_eq!(seen.len() as u64, events, "no event that was not sent");
    for (start, ph) in sent {
        let v = seen[start][0];
        assert!(expect(*ph, v), "batch {start} sent in phase {ph} has v={v}");
    }
}

fn print_reload_log(p: &Proc) {
    for l in std::fs::read_to_string(&p.log).unwrap().lines() {
        if l.contains("reload") {
            eprintln!("{}: {l}", p.name);
        }
    }
}

#[test]
fn sighup_and_post_reload_under_load_lose_nothing() {
    let dir = TempDir::new("reload");
    let files = [dir.join("v1.log"), dir.join("v2.log"), dir.join("v3.log")];
    let mut p = Proc::start(
        Role::Forwarder,
        "reload",
        dir.path(),
        &config(1, &files[0], ""),
    );
    let addr = p.input("rl_in");
    let admin = p.admin_addr().expect("admin endpoint");
    assert_eq!(reloads(&p, "ok"), 0.0);
    assert_eq!(reloads(&p, "failed"), 0.0);

    let load = Load::start(addr);
    let phase = load.phase.clone();
    let progress = |what: &str, n: u64| load.progress(what, n);
    progress("load before the first reload", 200);

    // 1. SIGHUP with v=2 and a new output file.
    rewrite(&p.config, &config(2, &files[1], ""));
    sighup(p.pid);
    wait_until("SIGHUP reload counted", LIVENESS, || {
        match reloads(&p, "ok") {
            1.0 => Ok(()),
            v => Err(format!("ok={v}\n{}", p.log_tail(20))),
        }
    });
    phase.store(1, Ordering::SeqCst);
    progress("load after the SIGHUP reload", 200);

    // 2. POST /api/config.reload with v=3.
    rewrite(&p.config, &config(3, &files[2], ""));
    let (st, body) = post(admin, "/api/config.reload");
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON reply");
    assert_eq!(v["ok"], true, "{body}");
    assert_eq!(v["kept_inputs"], serde_json::json!(["rl_in"]), "{body}");
    assert_eq!(v["inputs"][0]["addr"], addr.to_string(), "{body}");
    phase.store(2, Ordering::SeqCst);
    progress("load after the POST reload", 200);

    // 3. An invalid configuration on SIGHUP: refused, the v=3 pipeline keeps running.
    let bad = config(
        4,
        &files[0],
        "<filter **>\n  @type no_such_filter_type\n</filter>\n",
    );
    rewrite(&p.config, &bad);
    sighup(p.pid);
    wait_until("failed reload counted", LIVENESS, || {
        match reloads(&p, "failed") {
            1.0 => Ok(()),
            v => Err(format!("failed={v}")),
        }
    });
    let metrics = p.metrics_text().unwrap();
    assert_eq!(
        metric(&metrics, "nagare_config_last_reload_successful", &[]),
        Some(0.0)
    );
    assert_eq!(reloads(&p, "ok"), 2.0);
    let log = std::fs::read_to_string(&p.log).unwrap();
    let conf_name = p.config.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        log.lines()
            .any(|l| l.contains("no_such_filter_type") && l.contains(&format!("{conf_name}:"))),
        "the failed reload is logged with file:line\n{}",
        p.log_tail(20)
    );
    // The same invalid config through the admin endpoint: 422 with the error.
    let (st, body) = post(admin, "/api/config.reload");
    assert_eq!(st, 422, "{body}");
    assert!(body.contains("no_such_filter_type"), "{body}");
    progress("load after the failed reloads", 200);

    let sent = load.finish();
    p.stop_ok();
    print_reload_log(&p);
    let paths: Vec<&Path> = files.iter().map(|f| f.as_path()).collect();
    check_outputs(&paths, &sent, |ph, v| match ph {
        1 => v >= 2,
        2 => v == 3,
        _ => true,
    });
    for (i, f) in files.iter().enumerate() {
        for l in read_out_lines(f) {
            assert_eq!(
                l.str_field("v"),
                Some((i + 1).to_string().as_str()),
                "{} holds only v={}",
                f.display(),
                i + 1
            );
        }
    }
}

/// A forwarder whose out_forward holds events in a memory buffer (flushed every 2 s) is
/// reloaded with SIGHUP under load: the old output drains its buffer to the aggregator
/// before the new one takes over; nothing is lost or dropped.
#[test]
fn sighup_reload_drains_a_memory_buffer_under_load() {
    let dir = TempDir::new("reload-drain");
    let out = dir.join("agg-out.jsonl");
    let mut agg = Proc::start(
        Role::Aggregator,
        "agg",
        dir.path(),
        &format!("{}{}", forward_source("rl2_agg", 0), file_match(&out)),
    );
    let fwd_config = |v: u32| {
        format!(
            r#"<system>
  shutdown_accept_period 0s
  shutdown_drain_timeout 20s
  admin_bind 127.0.0.1
  admin_port 0
</system>
{source}<filter **>
  @type record_transformer
  <record>
    v {v}
  </record>
</filter>
<match **>
  @type forward
  @id rl2_out
  require_ack_response true
  <server>
    host 127.0.0.1
    port {port}
  </server>
  <buffer tag>
    @type memory
    flush_interval 2s
  </buffer>
</match>
"#,
            source = forward_source("rl2_in", 0),
            port = agg.port(),
        )
    };
    let mut fwd = Proc::start(Role::Forwarder, "fwd", dir.path(), &fwd_config(1));
    let load = Load::start(fwd.input("rl2_in"));
    load.progress("load before the reload", 300);
    rewrite(&fwd.config, &fwd_config(2));
    sighup(fwd.pid);
    wait_until("SIGHUP reload counted", LIVENESS, || {
        match reloads(&fwd, "ok") {
            1.0 => Ok(()),
            v => Err(format!("ok={v}\n{}", fwd.log_tail(20))),
        }
    });
    load.phase.store(1, Ordering::SeqCst);
    load.progress("load after the reload", 300);
    let sent = load.finish();
    let metrics = fwd.metrics_text().unwrap();
    let dropped: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("nagare_output_dropped_records_total"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum();
    assert_eq!(dropped, 0.0, "nothing dropped by the forwarder");
    fwd.stop_ok();
    print_reload_log(&fwd);
    agg.stop_ok();
    check_outputs(&[&out], &sent, |ph, v| ph == 0 || v == 2);
}
