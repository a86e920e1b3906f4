//! Our out_forward into our in_forward, both as binaries.
//!
//! 1. `forward_chain_tls_shared_key_ack_one_million`: forwarder (in_forward -> out_forward with
//!    `<security>` shared_key, `transport tls` verifying a CA made here, `require_ack_response`,
//!    no heartbeats) -> aggregator (in_forward with the same `<security>` and `<transport tls>`
//!    -> file). A Rust sender pushes 1,000,000 events as acked PackedForward messages; every
//!    seq must reach the aggregator's file (duplicates are reported, not failed: the chain is
//!    at-least-once).
//! 2. `forward_failover_kill_and_restart_receiver`: forwarder with two `<server>`s (transport
//!    heartbeats, acks, retry forever) -> aggregators A and B. A is killed with SIGKILL in the
//!    middle of the stream and restarted on the same port; every seq must be in A ∪ B at least
//!    once, and the restarted A must be used again. Duplicates are counted and printed.

use nagare_e2e::*;
use std::path::Path;
use std::time::{Duration, Instant};

const SHARED_KEY: &str = "e2e-chain-secret";

fn forwarder_tls_config(agg_port: u16, ca: &Path) -> String {
    format!(
        r#"{source}
<match **>
  @type forward
  @id out_chain
  transport tls
  tls_cert_path {ca}
  tls_verify_hostname true
  require_ack_response true
  ack_response_timeout 30s
  heartbeat_type none
  <security>
    self_hostname forwarder.e2e
    shared_key {SHARED_KEY}
  </security>
  <server>
    host 127.0.0.1
    port {agg_port}
  </server>
  <buffer>
    chunk_limit_size 1m
    flush_interval 100ms
    total_limit_size 2g
    flush_thread_count 2
    retry_wait 200ms
    retry_max_interval 1s
    retry_forever true
  </buffer>
</match>
"#,
        source = forward_source("in_chain", 0),
        ca = ca.display(),
    )
}

fn aggregator_tls_config(pki: &Pki, out: &Path) -> String {
    format!(
        r#"<source>
  @type forward
  @id in_agg
  bind 127.0.0.1
  port 0
  <security>
    self_hostname aggregator.e2e
    shared_key {SHARED_KEY}
  </security>
  <transport tls>
    cert_path {cert}
    private_key_path {key}
  </transport>
</source>
{file}"#,
        cert = pki.server_cert.display(),
        key = pki.server_key.display(),
        file = file_match(out),
    )
}

/// Reads new lines from every tail into the tally.
fn poll_all(tails: &mut [JsonLinesTail], tally: &mut SeqTally) {
    for t in tails.iter_mut() {
        t.poll(|l| tally.add_line(l));
    }
}

#[test]
fn forward_chain_tls_shared_key_ack_one_million() {
    const TOTAL: u64 = 1_000_000;
    const BATCH: u64 = 1000;
    let started = Instant::now();
    let dir = TempDir::new("chain_1m");
    let pki = Pki::generate(dir.path());
    let out = dir.join("aggregator.jsonl");
    let mut agg = Proc::start(
        Role::Aggregator,
        "aggregator",
        dir.path(),
        &aggregator_tls_config(&pki, &out),
    );
    let mut fwd = Proc::start(
        Role::Forwarder,
        "forwarder",
        dir.path(),
        &forwarder_tls_config(agg.port(), &pki.ca),
    );

    let mut tally = SeqTally::new(TOTAL as usize);
    let mut tails = [JsonLinesTail::new(&out)];
    let mut sender = ForwardSender::new(fwd.addr());
    let mut seq = 0;
    while seq < TOTAL {
        sender.send_seqs("e2e.chain", seq..seq + BATCH);
        seq += BATCH;
        if seq % 100_000 == 0 {
            // Keep the tally current so the final wait reads only the tail of the file.
            poll_all(&mut tails, &mut tally);
        }
    }
    let sent_at = started.elapsed();
    wait_until(
        "every seq in the aggregator's file",
        Duration::from_secs(150),
        || {
            poll_all(&mut tails, &mut tally);
            if tally.distinct() == TOTAL as usize {
                Ok(())
            } else {
                Err(format!(
                    "{} of {TOTAL} distinct seqs ({} lines); first missing {:?}",
                    tally.distinct(),
                    tally.lines,
                    tally.missing(5)
                ))
            }
        },
    );
    fwd.stop_ok();
    agg.stop_ok();
    poll_all(&mut tails, &mut tally);

    // Spot-check whole lines: tag, exact time and fields survive the chain.
    let mut checked = 0;
    let mut i = 0u64;
    JsonLinesTail::new(&out).poll(|l| {
        i += 1;
        if i % 997 == 0 {
            let line = OutLine::parse(l, &out);
            let s = line.seq().expect("seq");
            let t = seq_time(s);
            assert_eq!(line.tag, "e2e.chain");
            assert_eq!(
                (line.secs, line.nanos),
                (t.secs(), t.nanos()),
                "time of seq {s}"
            );
            assert_eq!(line.str_field("msg"), Some(format!("event {s}").as_str()));
            checked += 1;
        }
    });
    eprintln!(
        "forward chain (TLS + shared key + ack): {TOTAL} events sent in {sent_at:?} ({} sender resends), \
         {} lines in the aggregator file, {} distinct, {} duplicates, {} stray lines; {checked} lines fully checked; total {:?}",
        sender.resends,
        tally.lines,
        tally.distinct(),
        tally.duplicates(),
        tally.strays,
        started.elapsed()
    );
    assert_eq!(
        tally.strays, 0,
        "lines without a valid seq: {:?}",
        tally.stray_examples
    );
    assert_eq!(
        tally.missing_count(),
        0,
        "lost seqs (first 10): {:?}",
        tally.missing(10)
    );
}

fn failover_forwarder_config(a_port: u16, b_port: u16) -> String {
    format!(
        r#"{source}
<match **>
  @type forward
  @id out_failover
  heartbeat_type transport
  heartbeat_interval 500ms
  recover_wait 2s
  hard_timeout 3s
  require_ack_response true
  ack_response_timeout 5s
  <server>
    name a
    host 127.0.0.1
    port {a_port}
  </server>
  <server>
    name b
    host 127.0.0.1
    port {b_port}
  </server>
  <buffer>
    chunk_limit_size 64k
    flush_interval 100ms
    total_limit_size 1g
    flush_thread_count 2
    retry_wait 200ms
    retry_max_interval 1s
    retry_forever true
  </buffer>
</match>
"#,
        source = forward_source("in_failover", 0),
    )
}

fn plain_aggregator(port: u16, out: &Path) -> String {
    format!("{}{}", forward_source("in_agg", port), file_match(out))
}

#[test]
fn forward_failover_kill_and_restart_receiver() {
    const BATCH: u64 = 500;
    const KILL_AFTER: u64 = 50_000;
    const RESTART_AT: u64 = 120_000;
    const TOTAL: u64 = 200_000;
    let started = Instant::now();
    let dir = TempDir::new("failover");
    let (a1_out, a2_out, b_out) = (
        dir.join("a1.jsonl"),
        dir.join("a2.jsonl"),
        dir.join("b.jsonl"),
    );
    let mut a = Proc::start(
        Role::Aggregator,
        "aggregator-a",
        dir.path(),
        &plain_aggregator(0, &a1_out),
    );
    let a_port = a.port();
    let mut b = Proc::start(
        Role::Aggregator,
        "aggregator-b",
        dir.path(),
        &plain_aggregator(0, &b_out),
    );
    let mut fwd = Proc::start(
        Role::Forwarder,
        "forwarder",
        dir.path(),
        &failover_forwarder_config(a_port, b.port()),
    );

    let mut tally = SeqTally::new(TOTAL as usize);
    let mut a1 = JsonLinesTail::new(&a1_out);
    let mut a1_lines = 0u64;
    let mut sender = ForwardSender::new(fwd.addr());
    let mut seq = 0u64;

    // Phase 1: stream until A has written some events (and at least KILL_AFTER were sent).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        sender.send_seqs("e2e.failover", seq..seq + BATCH);
        seq += BATCH;
        a1.poll(|l| {
            a1_lines += 1;
            tally.add_line(l)
        });
        if seq >= KILL_AFTER && a1_lines > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "aggregator A received nothing after {seq} events were sent"
        );
        if seq >= KILL_AFTER {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    a.kill();
    let killed_at = seq;
    a1.poll(|l| {
        a1_lines += 1;
        tally.add_line(l)
    });

    // Phase 2: keep sending while A is down.
    while seq < RESTART_AT {
        sender.send_seqs("e2e.failover", seq..seq + BATCH);
        seq += BATCH;
    }

    // Restart A on the same port (retrying briefly in case the port is not free yet).
    let mut restarted = None;
    for attempt in 0..20 {
        match Proc::try_start(
            Role::Aggregator,
            "aggregator-a2",
            dir.path(),
            &plain_aggregator(a_port, &a2_out),
        ) {
            Ok(p) => {
                restarted = Some(p);
                break;
            }
            Err(e) if attempt == 19 => panic!("cannot restart aggregator A on port {a_port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
    let mut a2 = restarted.expect("restarted");
    assert_eq!(a2.port(), a_port);
    let restarted_at = seq;

    // Phase 3: the rest, then more (paced) until the forwarder uses A again after recover_wait.
    let mut a2_tail = JsonLinesTail::new(&a2_out);
    let mut a2_lines = 0u64;
    while seq < TOTAL {
        sender.send_seqs("e2e.failover", seq..seq + BATCH);
        seq += BATCH;
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        a2_tail.poll(|l| {
            a2_lines += 1;
            tally.extend_to(seq as usize);
            tally.add_line(l)
        });
        if a2_lines > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted aggregator A never received events ({seq} sent); forwarder log:\n{}",
            fwd.log_tail(30)
        );
        sender.send_seqs("e2e.failover", seq..seq + BATCH);
        seq += BATCH;
        tally.extend_to(seq as usize);
        std::thread::sleep(Duration::from_millis(50));
    }
    let total = seq;
    tally.extend_to(total as usize);

    let mut b_tail = JsonLinesTail::new(&b_out);
    let mut b_lines = 0u64;
    wait_until("every seq in A ∪ B", Duration::from_secs(120), || {
        a2_tail.poll(|l| {
            a2_lines += 1;
            tally.add_line(l)
        });
        b_tail.poll(|l| {
            b_lines += 1;
            tally.add_line(l)
        });
        if tally.distinct() == total as usize {
            Ok(())
        } else {
            Err(format!(
                "{} of {total} distinct seqs; first missing {:?}",
                tally.distinct(),
                tally.missing(5)
            ))
        }
    });
    fwd.stop_ok();
    a2.stop_ok();
    b.stop_ok();
    a2_tail.poll(|l| {
        a2_lines += 1;
        tally.add_line(l)
    });
    b_tail.poll(|l| {
        b_lines += 1;
        tally.add_line(l)
    });
    eprintln!(
        "failover: {total} events sent ({} sender resends); A killed after {killed_at} sent, restarted at {restarted_at}; \
         lines: A(before kill) {a1_lines}, A(restarted) {a2_lines}, B {b_lines}; distinct {}, duplicates {} (allowed: at-least-once); \
         total {:?}",
        sender.resends,
        tally.distinct(),
        tally.duplicates(),
        started.elapsed()
    );
    assert_eq!(
        tally.strays, 0,
        "lines without a valid seq: {:?}",
        tally.stray_examples
    );
    assert_eq!(
        tally.missing_count(),
        0,
        "lost seqs (first 10): {:?}",
        tally.missing(10)
    );
    assert!(b_lines > 0, "B never received anything");
}
