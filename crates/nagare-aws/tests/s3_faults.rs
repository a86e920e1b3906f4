//! Faults through `../shared/tools/faultproxy.py` in front of moto: bursts of `SlowDown`
//! (503), `InternalError` (500) and dropped connections. Every chunk is retried until it lands;
//! the corpus ends up in S3 exactly once.

mod s3_common;

use nagare_aws::out_s3::S3Output;
use s3_common::*;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowdown_500_and_reset_bursts_lose_and_duplicate_nothing() {
    let Some(m) = moto::moto() else { return };
    let Some(proxy) = FaultProxy::start(m.port) else {
        return;
    };
    let b = Backend::Moto(proxy.endpoint.clone());
    let bucket = bucket("faults");
    let mut c = b.config("s3-faults", &bucket);
    c.path = "applications/${service}/app/%Y/%m/%d/%H/".into();
    c.object_key_format = "%{path}%M_%{hostname}_%{index}.%{file_extension}".into();
    c.request_timeout = Duration::from_secs(5);
    let out = S3Output::start(&c).await.unwrap();
    let lines = corpus();
    let kept: Vec<&Line> = lines.iter().filter(|l| !l.is_health()).collect();
    let chunks = chunks_by_service_and_slice(&kept, 300, 40);
    let n = chunks.len();
    let put = format!("PUT /{bucket}/");
    for (kind, count) in [("slowdown", 6), ("s3-500", 6), ("reset", 4)] {
        proxy.inject(&put, count, kind);
    }
    let r = drive(
        Arc::new(out.clone()),
        chunks,
        4,
        Duration::from_millis(50),
        Duration::from_secs(60),
    )
    .await;
    assert!(r.unrecoverable.is_empty(), "{:?}", r.unrecoverable);
    assert_eq!(r.written, n);
    assert_eq!(
        r.retryable_errors, 16,
        "each injected fault failed one attempt"
    );
    let hits = proxy.hits();
    assert_eq!(hits["injected"], 16, "{hits}");
    let objects = read_all(&*out.store(), "applications/").await;
    assert_eq!(objects.len(), n);
    let expected: Vec<String> = kept.iter().map(|l| l.expected_json()).collect();
    assert_exactly_once(&objects, &expected);
}
