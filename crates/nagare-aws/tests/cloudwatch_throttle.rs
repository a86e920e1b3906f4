//! 60 s of `ThrottlingException` on every `PutLogEvents` while events keep arriving, then
//! recovery: every event is delivered exactly once. The real memory buffer and flush loop
//! drive the output; faultproxy (`../shared/tools/faultproxy.py`) sits in front of moto; SDK
//! retries are off so our retry logic is what is tested.
//!
//! `NAGARE_CW_THROTTLE_SECS` shortens the throttled window for quick local runs (default 60).

mod cloudwatch_common;

use cloudwatch_common::moto::{moto, unique};
use cloudwatch_common::*;
use nagare_buffer::{Buffer, BufferConfig, OverflowAction};
use nagare_core::{Event, EventTime, Output, Record, Tag};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_seconds_of_throttling_then_every_event_exactly_once() {
    let Some(m) = moto() else { return };
    let Some(proxy) = FaultProxy::start(m.port) else {
        return;
    };
    let throttle_secs: u64 = std::env::var("NAGARE_CW_THROTTLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let started = Instant::now();
    let prefix = unique("cw-throttle");
    let groups: Vec<String> = (0..3).map(|i| format!("{prefix}-svc{i}")).collect();

    let rec = Recorder::default();
    let mut cfg = config("cw-throttle", &proxy.endpoint, "agg-throttle");
    cfg.concurrency = 2;
    cfg.retry.retry_wait = Duration::from_millis(100);
    cfg.retry.retry_limit = Some(2);
    let out = Arc::new(output(cfg, &rec, None).await);

    let bcfg = BufferConfig {
        chunk_limit_size: 512 * 1024,
        flush_interval: Duration::from_millis(500),
        flush_thread_count: 2,
        retry_forever: true,
        retry_wait: Duration::from_millis(500),
        retry_max_interval: Some(Duration::from_secs(3)),
        overflow_action: OverflowAction::Block,
        ..BufferConfig::default()
    };
    let buffer = Arc::new(Buffer::new(bcfg, "cw-throttle"));
    let (trigger, sd) = nagare_core::shutdown::channel();
    let flush = tokio::spawn(nagare_buffer::flush::run(
        buffer.clone(),
        out.clone() as Arc<dyn Output>,
        sd,
        Duration::from_secs(10),
        "cw-throttle".into(),
    ));

    // Producer: 2,000 events/s across three groups for the whole window and a little after.
    const PER_TICK: u64 = 200;
    let tag = Tag::from("docker.app");
    let produce_for = Duration::from_secs(throttle_secs + 4);
    let producer = {
        let (buffer, groups, tag) = (buffer.clone(), groups.clone(), tag.clone());
        tokio::spawn(async move {
            let mut seq = 0u64;
            let mut iv = tokio::time::interval(Duration::from_millis(100));
            let t0 = Instant::now();
            while t0.elapsed() < produce_for {
                iv.tick().await;
                let now = EventTime::now();
                let events: Vec<Event> = (0..PER_TICK)
                    .map(|i| {
                        let n = seq + i;
                        Event {
                            time: now,
                            record: Record::from_pairs(&[
                                ("service", groups[(n % 3) as usize].as_str()),
                                ("level", "error"),
                                ("seq", &n.to_string()),
                                ("msg", "a fairly ordinary error line with some text in it"),
                            ]),
                        }
                    })
                    .collect();
                buffer.append(&tag, &events).await.expect("append");
                seq += PER_TICK;
            }
            seq
        })
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.inject("PutLogEvents", 1_000_000_000, "throttle");
    let throttle_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(throttle_secs)).await;
    let hits = proxy.clear();
    let throttled = hits["injected"].as_u64().unwrap_or(0);
    // Recovery is bumpy too: a few dropped connections and 5xx.
    proxy.inject("PutLogEvents", 2, "reset");
    proxy.inject("PutLogEvents", 2, "unavailable");
    eprintln!(
        "throttled {throttled} requests over {:?}; backlog {} bytes",
        throttle_start.elapsed(),
        buffer.stats().bytes.get()
    );
    assert!(throttled > 10, "the throttle was hit: {hits}");
    let accepted_during_throttle = out.stats().events.get();

    let total = producer.await.unwrap();
    // A liveness bound for the recovery, generous for a loaded CI machine.
    let deadline = Instant::now() + Duration::from_secs(120);
    while out.stats().events.get() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let recovered_after = started.elapsed();
    trigger.fire();
    flush.await.unwrap();

    let s = out.stats();
    eprintln!(
        "produced {total}; accepted {} ({accepted_during_throttle} before the throttle ended); {} requests, {} in-write retries, {} buffer retries, {} batches skipped on retry; done after {recovered_after:?}",
        s.events.get(),
        s.requests.get(),
        s.retries.get(),
        buffer.stats().retries.get(),
        s.skipped_batches.get(),
    );
    assert_eq!(s.events.get(), total, "every event accepted");
    assert_eq!(buffer.stats().dropped_records.total(), 0, "nothing dropped");
    assert_eq!(out.chunks_in_progress(), 0);
    assert!(s.request_errors.get("throttled").get() >= throttled.min(1));

    // Exactly once, as moto stored it.
    let c = client(&m.endpoint, &Recorder::default()).await;
    let mut seen = HashSet::new();
    let mut stored_total = 0u64;
    for g in &groups {
        for (_, msg) in stored(&c, g, "agg-throttle").await {
            stored_total += 1;
            let v: serde_json::Value = serde_json::from_str(&msg).unwrap();
            let n: u64 = v["seq"].as_str().unwrap().parse().unwrap();
            assert!(seen.insert(n), "event {n} stored twice");
        }
    }
    assert_eq!(stored_total, total, "stored exactly the events produced");
    assert_eq!(seen.len() as u64, total);
    // And every request we sent was within the AWS limits.
    rec.sent().iter().for_each(Sent::assert_within_aws_limits);
    eprintln!("test took {:?}", started.elapsed());
}
