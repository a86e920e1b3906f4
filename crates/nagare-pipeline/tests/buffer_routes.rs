//! Delivery through a running pipeline (in process): per-route isolation under `copy` with one
//! destination down for the whole test, acks only when every store committed, and the
//! `<secondary>` taking over (secondary_file, and any output type such as `@type file`).

mod support;

use nagare_core::metrics::counter;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

async fn run_pipeline(conf: &str) -> (nagare_pipeline::Running, nagare_core::shutdown::Trigger) {
    let root = nagare_config::parse_str(conf, Path::new("test.conf")).unwrap();
    let p = nagare_pipeline::Pipeline::build(&root).unwrap_or_else(|e| panic!("{e}"));
    let (trigger, sd) = nagare_core::shutdown::channel();
    (p.start(sd).await.unwrap(), trigger)
}

fn c(name: &'static str, id: &str) -> u64 {
    counter(name, "", &[("plugin_id", id)]).get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_route_never_delays_or_drops_the_other() {
    const N: u64 = 40_000;
    let counts = SeqCounts::new(N as usize);
    let recv = Receiver::start(counts.clone()).await;
    let conf = format!(
        r#"<system>
  shutdown_accept_period 0s
  shutdown_drain_timeout 1s
</system>
<source>
  @type forward
  bind 127.0.0.1
  port 0
</source>
<match **>
  @type copy
  <store>
    @type forward
    @id iso_good
    require_ack_response true
    heartbeat_type none
    <server>
      host 127.0.0.1
      port {good}
    </server>
    <buffer tag>
      flush_interval 200ms
    </buffer>
  </store>
  <store>
    @type forward
    @id iso_bad
    heartbeat_type none
    <server>
      host 127.0.0.1
      port {bad}
    </server>
    <buffer tag>
      flush_interval 200ms
      chunk_limit_size 256k
      total_limit_size 2m
      overflow_action drop_oldest_chunk
      retry_wait 100ms
      retry_forever true
    </buffer>
  </store>
</match>
"#,
        good = recv.addr.port(),
        bad = dead_port()
    );
    let (running, trigger) = run_pipeline(&conf).await;
    let mut s = Sender::new(Arc::new(Mutex::new(running.inputs[0].addr)));
    let mut acked_at = Vec::new();
    for b in 0..N / 500 {
        let (msg, chunk) = packed("iso.test", b * 500..(b + 1) * 500, 100);
        s.send_acked(&msg, &chunk, Instant::now() + Duration::from_secs(10))
            .await
            .unwrap();
        acked_at.push((b, Instant::now()));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(counts.wait_distinct(N, Duration::from_secs(30)).await);
    let worst = acked_at
        .iter()
        .map(|(b, at)| {
            (b * 500..(b + 1) * 500)
                .map(|s| counts.arrival(s).unwrap().saturating_duration_since(*at))
                .max()
                .unwrap()
        })
        .max()
        .unwrap();
    let dropped = counter(
        "nagare_output_dropped_records_total",
        "",
        &[("plugin_id", "iso_bad"), ("reason", "drop_oldest_chunk")],
    )
    .get();
    eprintln!(
        "isolation: good route got {N}/{N}, worst ack-to-delivery {worst:?}; failing route: {} retries, {dropped} records dropped by its own overflow policy",
        c("nagare_output_retries_total", "iso_bad")
    );
    assert_eq!(counts.duplicates(), 0);
    // Typically ~0.4 s (two flush intervals). The bound only has to tell "delayed by the
    // failing route" from "not": generous, so a loaded CI machine does not trip it.
    assert!(
        worst < Duration::from_secs(5),
        "the good route was delayed: {worst:?}"
    );
    assert!(c("nagare_output_retries_total", "iso_bad") > 0);
    assert!(
        dropped > 0,
        "the failing route overflowed under its own policy"
    );
    // The receiver counts a chunk when it arrives; the output counts it once the ack came
    // back and the chunk was purged: wait for that bookkeeping.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while c("nagare_output_records_written_total", "iso_good") < N
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c("nagare_output_records_written_total", "iso_good"), N);
    trigger.fire();
    running.wait().await;
    recv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ack_unless_every_store_committed() {
    let counts = SeqCounts::new(10_000);
    let recv = Receiver::start(counts.clone()).await;
    let conf = format!(
        r#"<system>
  shutdown_accept_period 0s
  shutdown_drain_timeout 1s
</system>
<source>
  @type forward
  bind 127.0.0.1
  port 0
</source>
<match **>
  @type copy
  <store>
    @type forward
    @id ack_roomy
    heartbeat_type none
    <server>
      host 127.0.0.1
      port {good}
    </server>
    <buffer tag>
      flush_interval 100ms
    </buffer>
  </store>
  <store>
    @type forward
    @id ack_full
    heartbeat_type none
    <server>
      host 127.0.0.1
      port {bad}
    </server>
    <buffer tag>
      chunk_limit_size 64k
      total_limit_size 256k
      overflow_action throw_exception
      retry_forever true
    </buffer>
  </store>
</match>
"#,
        good = recv.addr.port(),
        bad = dead_port()
    );
    let (running, trigger) = run_pipeline(&conf).await;
    let mut s = Sender::new(Arc::new(Mutex::new(running.inputs[0].addr)));
    // A refusal closes the connection at once; the timeout only bounds a slow ack, which
    // would be miscounted as a refusal (and fail the equalities below) if it were short.
    s.ack_timeout = Duration::from_secs(15);
    let mut acked = 0;
    let mut refused = 0;
    for b in 0..40u64 {
        let (msg, chunk) = packed("ack.test", b * 100..(b + 1) * 100, 100);
        match s.try_once(&msg, &chunk).await {
            Ok(()) => acked += 1,
            Err(_) => refused += 1,
        }
    }
    assert!(acked > 0 && refused > 0, "acked {acked}, refused {refused}");
    let refused_appends = counter(
        "nagare_buffer_refused_appends_total",
        "",
        &[("plugin_id", "ack_full"), ("reason", "buffer_full")],
    )
    .get();
    assert_eq!(
        refused_appends, refused,
        "every refusal is a full store, none was acked"
    );
    assert_eq!(
        c("nagare_buffer_appended_records_total", "ack_full"),
        acked * 100
    );
    trigger.fire();
    running.wait().await;
    recv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secondary_takes_over_after_the_retry_limit_and_for_unrecoverable_errors() {
    let dir = TempDir::new("secondary");
    let dumps = dir.path().join("dumps");
    let lines = dir.path().join("lines");
    let conf = format!(
        r#"<system>
  shutdown_accept_period 0s
  shutdown_drain_timeout 1s
</system>
<source>
  @type forward
  bind 127.0.0.1
  port 0
</source>
<match dump.**>
  @type forward
  @id sec_dump
  heartbeat_type none
  <server>
    host 127.0.0.1
    port {dead}
  </server>
  <buffer tag>
    flush_mode immediate
    retry_wait 50ms
    retry_max_times 2
  </buffer>
  <secondary>
    @type secondary_file
    directory {dumps}
    basename ${{tag}}.${{chunk_id}}.bin
  </secondary>
</match>
<match lines.**>
  @type forward
  @id sec_lines
  heartbeat_type none
  <server>
    host 127.0.0.1
    port {dead}
  </server>
  <buffer tag>
    flush_mode immediate
    retry_wait 50ms
    retry_max_times 1
  </buffer>
  <secondary>
    @type file
    path {lines}/${{tag}}.jsonl
    append true
    <format>
      @type json
    </format>
  </secondary>
</match>
"#,
        dead = dead_port(),
        dumps = dumps.display(),
        lines = lines.display()
    );
    let (running, trigger) = run_pipeline(&conf).await;
    let mut s = Sender::new(Arc::new(Mutex::new(running.inputs[0].addr)));
    for (tag, b) in [("dump.a", 0u64), ("dump.a", 1), ("lines.b", 2)] {
        let (msg, chunk) = packed(tag, b * 100..(b + 1) * 100, 0);
        s.send_acked(&msg, &chunk, Instant::now() + Duration::from_secs(10))
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while c("nagare_output_secondary_records_total", "sec_dump") < 200
        || c("nagare_output_secondary_records_total", "sec_lines") < 100
    {
        assert!(Instant::now() < deadline, "secondary never took over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut got = 0;
    for e in std::fs::read_dir(&dumps).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("dump.a.") && name.ends_with(".bin"),
            "{name}"
        );
        let events =
            nagare_buffer::entries::decode(&bytes::Bytes::from(std::fs::read(&p).unwrap()))
                .unwrap();
        got += events.len();
    }
    assert_eq!(got, 200);
    let text = std::fs::read_to_string(lines.join("lines.b.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 100);
    assert!(
        text.contains("\"seq\":250"),
        "{}",
        &text[..200.min(text.len())]
    );
    assert_eq!(
        counter(
            "nagare_output_dropped_records_total",
            "",
            &[("plugin_id", "sec_dump"), ("reason", "retry_exhausted")]
        )
        .get(),
        0,
        "nothing dropped: it went to the secondary"
    );
    trigger.fire();
    running.wait().await;
}
