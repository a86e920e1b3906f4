//! moto stopped (SIGSTOP) for 60 s mid-stream, behind the real buffer and flush loop: records
//! keep arriving and are buffered, writes time out and are retried; requests that reached the
//! frozen moto are applied when it resumes, after their client gave up — the retries find
//! those objects (same key, `If-None-Match`, then the `nagare-chunk-id` metadata) instead of
//! writing them again. Nothing lost, nothing duplicated. Runs about 75 s.

mod s3_common;

use nagare_aws::out_s3::S3Output;
use nagare_buffer::{Buffer, BufferConfig};
use nagare_core::{Event, EventTime, Output, Tag};
use s3_common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_stopped_for_60_s_mid_stream() {
    let Some((mut moto, port)) = dedicated_moto(&[]) else {
        return;
    };
    let started = Instant::now();
    let b = Backend::Moto(format!("http://127.0.0.1:{port}"));
    let bucket = bucket("outage");
    let mut c = b.config("s3-outage", &bucket);
    c.path = "outage/${tag}/".into();
    c.object_key_format = "%{path}%Y%m%d%H%M_%{hostname}_%{index}.%{file_extension}".into();
    c.request_timeout = Duration::from_secs(3);
    let s3 = S3Output::start(&c).await.unwrap();
    let out: Arc<dyn Output> = Arc::new(s3.clone());
    let bc = BufferConfig {
        flush_interval: Duration::from_millis(500),
        flush_thread_count: 4,
        retry_wait: Duration::from_millis(500),
        retry_max_interval: Some(Duration::from_secs(2)),
        retry_forever: true,
        ..Default::default()
    };
    let buffer = Arc::new(Buffer::new(bc, "s3-outage"));
    let (trigger, sd) = nagare_core::shutdown::channel();
    let flush = tokio::spawn(nagare_buffer::flush::run(
        buffer.clone(),
        out,
        sd,
        Duration::from_secs(5),
        "s3-outage".into(),
    ));
    // The stream: 10 records every 100 ms for 65 s, on two tags.
    let producer = {
        let buffer = buffer.clone();
        tokio::spawn(async move {
            let mut expected = Vec::new();
            let mut i = 0usize;
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(65) {
                let tagn = i % 2;
                let now = EventTime::now();
                let lines = synthetic("condor", now.secs(), tagn, 10, &format!("batch{i}"));
                let events: Vec<Event> = lines
                    .iter()
                    .map(|l| Event {
                        time: now,
                        record: l.record(),
                    })
                    .collect();
                buffer
                    .append(&Tag::new(format!("docker.condor.c{tagn}")), &events)
                    .await
                    .expect("the buffer has room for the whole outage");
                expected.extend(lines.iter().map(|l| l.expected_json()));
                i += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            expected
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(&moto, "STOP");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let held = buffer.held_records();
    assert!(
        held > 200,
        "records are buffered during the outage ({held})"
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    signal(&moto, "CONT");
    let expected = producer.await.unwrap();
    // A liveness bound for the drain (moto answers the queued requests first): generous for
    // a loaded CI machine.
    let deadline = Instant::now() + Duration::from_secs(90);
    while buffer.held_records() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        buffer.held_records(),
        0,
        "the backlog drained after moto resumed"
    );
    trigger.fire();
    let _ = flush.await;
    let objects = read_all(&*s3.store(), "outage/").await;
    assert_exactly_once(&objects, &expected);
    let m =
        |n: &'static str| nagare_core::metrics::counter(n, "", &[("plugin_id", "s3-outage")]).get();
    eprintln!(
        "outage: {} records in {} objects; {} retries recognised their own object, {} key conflicts, {} transient errors; {:.0} s",
        expected.len(),
        objects.len(),
        m("nagare_s3_recognised_retries_total"),
        m("nagare_s3_key_conflicts_total"),
        nagare_core::metrics::ReasonCounters::new("nagare_s3_errors_total", "", &[("plugin_id", "s3-outage")]).get("transient").get(),
        started.elapsed().as_secs_f64()
    );
    let _ = moto.kill();
}
