//! What only the S3 API has: object headers (Content-Type, Content-Encoding, metadata,
//! storage class, tagging), moto's conditional-write behaviour, multipart uploads and their
//! abort, and authentication failures (a moto with IAM checks on).

mod s3_common;

use aws_sdk_s3::types::StorageClass;
use nagare_aws::out_s3::upload::AbortOnDrop;
use nagare_aws::out_s3::{S3Config, S3Output, StoreAs};
use nagare_buffer::secondary::{SecondaryFile, SecondaryFileConfig};
use nagare_buffer::{Buffer, BufferConfig};
use nagare_core::{Event, EventTime, Output, Tag, WriteError};
use s3_common::*;
use std::sync::Arc;
use std::time::Duration;

async fn raw_client(endpoint: &str) -> aws_sdk_s3::Client {
    let cfg = nagare_aws::client::sdk_config(&nagare_aws::AwsSettings {
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint.to_string()),
        access_key_id: Some("testing".into()),
        secret_access_key: Some(nagare_aws::Secret("testing".into())),
        sdk_max_attempts: 1,
        ..Default::default()
    })
    .await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&cfg)
            .force_path_style(true)
            .build(),
    )
}

fn endpoint(b: &Backend) -> String {
    match b {
        Backend::Moto(e) => e.clone(),
        Backend::Disk(_) => unreachable!(),
    }
}

#[tokio::test]
async fn moto_enforces_if_none_match_on_put_and_complete() {
    // The guarantee rests on this; a moto that ignored it would make every race test vacuous.
    let Some(b) = Backend::moto() else { return };
    let c = raw_client(&endpoint(&b)).await;
    let bucket = bucket("inm");
    c.create_bucket().bucket(&bucket).send().await.unwrap();
    let put = |body: &'static [u8]| {
        c.put_object()
            .bucket(&bucket)
            .key("k")
            .if_none_match("*")
            .body(body.to_vec().into())
            .send()
    };
    put(b"1").await.unwrap();
    let e = put(b"2").await.unwrap_err();
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(412));
    let got = c
        .get_object()
        .bucket(&bucket)
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(&got.body.collect().await.unwrap().into_bytes()[..], b"1");
}

#[tokio::test]
async fn object_headers_metadata_storage_class_and_tagging() {
    let Some(b) = Backend::moto() else { return };
    let bucket = bucket("hdr");
    let mut c = b.config("s3-hdr", &bucket);
    c.storage_class = Some("STANDARD_IA".into());
    c.tagging = Some("team=logs&kind=app".into());
    c.sse = Some("AES256".into());
    c.acl = Some("bucket-owner-full-control".into());
    let out = S3Output::start(&c).await.unwrap();
    let lines = synthetic("condor", 1_700_000_000, 0, 10, "hdr");
    let refs: Vec<&Line> = lines.iter().collect();
    let ch = chunk("condor", 1_700_000_000, &refs);
    out.write(&ch).await.unwrap();
    let raw = raw_client(&endpoint(&b)).await;
    let h = raw
        .head_object()
        .bucket(&bucket)
        .key("2023111422_0.gz")
        .send()
        .await
        .unwrap();
    assert_eq!(h.content_type(), Some("application/x-gzip"));
    assert_eq!(h.content_encoding(), Some("gzip"));
    assert_eq!(
        h.metadata()
            .unwrap()
            .get("nagare-chunk-id")
            .map(String::as_str),
        Some(ch.id.hex().as_str())
    );
    assert_eq!(h.storage_class(), Some(&StorageClass::StandardIa));
    let t = raw
        .get_object_tagging()
        .bucket(&bucket)
        .key("2023111422_0.gz")
        .send()
        .await
        .unwrap();
    let mut tags: Vec<(String, String)> = t
        .tag_set()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        vec![
            ("kind".into(), "app".into()),
            ("team".into(), "logs".into())
        ]
    );
    // A text object gets text/plain and no Content-Encoding.
    let bucket2 = s3_common::bucket("hdr2");
    let mut c2 = b.config("s3-hdr2", &bucket2);
    c2.store_as = StoreAs::Text;
    S3Output::start(&c2)
        .await
        .unwrap()
        .write(&ch)
        .await
        .unwrap();
    let h = raw
        .head_object()
        .bucket(&bucket2)
        .key("2023111422_0.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(h.content_type(), Some("text/plain"));
    assert_eq!(h.content_encoding(), None);
}

fn big_lines(n: usize) -> Vec<Line> {
    // ~220 bytes per line (text store: no compression).
    synthetic("heron", 1_700_000_000, 0, n, "multipart")
}

fn multipart_config(b: &Backend, id: &str, bucket: &str) -> S3Config {
    let mut c = b.config(id, bucket);
    c.store_as = StoreAs::Text;
    c.multipart_threshold = 5 << 20;
    c.multipart_chunk_size = 5 << 20;
    c.multipart_concurrency = 2;
    c.request_timeout = Duration::from_secs(30);
    c
}

#[tokio::test]
async fn large_chunks_go_up_in_parts() {
    let Some(b) = Backend::moto() else { return };
    let bucket = bucket("mpu");
    let out = S3Output::start(&multipart_config(&b, "s3-mpu", &bucket))
        .await
        .unwrap();
    let lines = big_lines(55_000);
    let refs: Vec<&Line> = lines.iter().collect();
    let ch = chunk("heron", 1_700_000_000, &refs);
    out.write(&ch).await.unwrap();
    let objects = read_all(&*out.store(), "").await;
    assert_eq!(objects.len(), 1);
    let expected: Vec<String> = lines.iter().map(|l| l.expected_json()).collect();
    assert_exactly_once(&objects, &expected);
    let raw = raw_client(&endpoint(&b)).await;
    let h = raw
        .head_object()
        .bucket(&bucket)
        .key("2023111422_0.txt")
        .send()
        .await
        .unwrap();
    let size = h.content_length().unwrap();
    assert!(size > 10 << 20, "{size} bytes: more than two parts");
    let etag = h.e_tag().unwrap_or_default().to_string();
    assert!(
        etag.contains('-'),
        "a multipart ETag ends in -<parts>: {etag}"
    );
    // Another writer (its own index allocator) tries index 0 first: the completion is refused
    // with 412, the upload aborted, and the chunk lands at index 1.
    let again = S3Output::start(&multipart_config(&b, "s3-mpu2", &bucket))
        .await
        .unwrap();
    again
        .write(&chunk("heron", 1_700_000_000, &refs[..30_000]))
        .await
        .unwrap();
    assert_eq!(
        out.store().list("").await.unwrap(),
        vec![
            "2023111422_0.txt".to_string(),
            "2023111422_1.txt".to_string()
        ]
    );
    assert_eq!(
        nagare_core::metrics::counter(
            "nagare_s3_key_conflicts_total",
            "",
            &[("plugin_id", "s3-mpu2")]
        )
        .get(),
        1
    );
    let ups = raw
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(
        ups.uploads().is_empty(),
        "no upload left open: {:?}",
        ups.uploads()
    );
}

/// A multipart write cancelled mid-way (the drain deadline drops in-flight writes) runs no
/// failure path: the guard it holds aborts the upload when dropped.
#[tokio::test]
async fn a_cancelled_multipart_upload_is_aborted() {
    let Some(m) = moto::moto() else { return };
    let bucket = bucket("cancel");
    let raw = raw_client(&m.endpoint).await;
    raw.create_bucket().bucket(&bucket).send().await.unwrap();
    let up = raw
        .create_multipart_upload()
        .bucket(&bucket)
        .key("k.gz")
        .send()
        .await
        .unwrap();
    let open = || async {
        raw.list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .unwrap()
            .uploads()
            .len()
    };
    assert_eq!(open().await, 1);
    // Disarmed: nothing happens.
    let mut g = AbortOnDrop::new(&raw, &bucket, "k.gz", up.upload_id().unwrap());
    g.disarm();
    drop(g);
    // Armed, as a cancelled write leaves it.
    drop(AbortOnDrop::new(
        &raw,
        &bucket,
        "k.gz",
        up.upload_id().unwrap(),
    ));
    let mut left = open().await;
    for _ in 0..100 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = open().await;
    }
    assert_eq!(left, 0, "the cancelled upload was aborted");
}

#[tokio::test]
async fn a_failed_part_aborts_the_upload_and_the_retry_completes() {
    let Some(m) = moto::moto() else { return };
    let Some(proxy) = FaultProxy::start(m.port) else {
        return;
    };
    let b = Backend::Moto(proxy.endpoint.clone());
    let bucket = bucket("abort");
    let out = S3Output::start(&multipart_config(&b, "s3-abort", &bucket))
        .await
        .unwrap();
    let lines = big_lines(30_000);
    let refs: Vec<&Line> = lines.iter().collect();
    let ch = chunk("heron", 1_700_000_000, &refs);
    proxy.inject("partNumber=2", 1, "s3-500");
    match out.write(&ch).await {
        Err(WriteError::Retryable(e)) => assert!(
            e.contains("UploadPart") && e.contains("InternalError"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
    let raw = raw_client(&m.endpoint).await;
    let ups = raw
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(
        ups.uploads().is_empty(),
        "the failed upload was aborted: {:?}",
        ups.uploads()
    );
    assert!(out.store().list("").await.unwrap().is_empty());
    out.write(&ch).await.unwrap();
    let objects = read_all(&*out.store(), "").await;
    let expected: Vec<String> = lines.iter().map(|l| l.expected_json()).collect();
    assert_exactly_once(&objects, &expected);
    assert_eq!(proxy.hits()["injected"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_name_the_bucket_and_keep_the_data() {
    // A moto that authenticates every request after the first (which creates the bucket).
    let Some((mut moto, port)) = dedicated_moto(&[("INITIAL_NO_AUTH_ACTION_COUNT", "1")]) else {
        return;
    };
    let ep = format!("http://127.0.0.1:{port}");
    let bucket = bucket("creds");
    raw_client(&ep)
        .await
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let b = Backend::Moto(ep);
    let mut c = b.config("s3-creds", &bucket);
    c.auto_create_bucket = false;
    c.check_bucket = true;
    c.access_key_id = Some("AKIANOTAREALKEY00000".into());
    let e = match S3Output::start(&c).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started with bad credentials"),
    };
    assert!(e.contains(&bucket) && e.contains("403"), "{e}");
    // Without the startup check, the writes fail; the chunks stay in the buffer.
    c.check_bucket = false;
    let out: Arc<dyn Output> = Arc::new(S3Output::start(&c).await.unwrap());
    let bc = BufferConfig {
        flush_interval: Duration::from_millis(100),
        retry_wait: Duration::from_millis(100),
        retry_max_interval: Some(Duration::from_millis(300)),
        flush_thread_count: 2,
        ..Default::default()
    };
    let buffer = Arc::new(Buffer::new(bc.clone(), "s3-creds"));
    let events: Vec<Event> = synthetic("condor", 1_700_000_000, 0, 50, "creds")
        .iter()
        .map(|l| Event {
            time: EventTime::new(l.time, 0),
            record: l.record(),
        })
        .collect();
    buffer
        .append(&Tag::new("docker.condor.c0"), &events)
        .await
        .unwrap();
    let (trigger, sd) = nagare_core::shutdown::channel();
    let run = tokio::spawn(nagare_buffer::flush::run(
        buffer.clone(),
        out.clone(),
        sd,
        Duration::from_millis(200),
        "s3-creds".into(),
    ));
    let errors = nagare_core::metrics::ReasonCounters::new(
        "nagare_s3_errors_total",
        "",
        &[("plugin_id", "s3-creds")],
    );
    // Two attempts take ~0.3 s, but each is a request to moto, slow on a loaded machine: poll
    // (bounded) instead of checking after a fixed 2 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while errors.get("access").get() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(errors.get("access").get() >= 2, "retried, loudly");
    assert_eq!(buffer.held_records(), 50, "kept in the buffer");
    trigger.fire();
    let _ = run.await;
    // With a <secondary>: the same error hands the chunk to it.
    c.id = "s3-creds-2".into();
    c.access_errors_retryable = false;
    let out2: Arc<dyn Output> = Arc::new(S3Output::start(&c).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let secondary: Arc<dyn Output> =
        Arc::new(SecondaryFile::new(SecondaryFileConfig::new(dir.path())));
    let buffer2 = Arc::new(Buffer::new(bc, "s3-creds-2"));
    buffer2
        .append(&Tag::new("docker.condor.c0"), &events)
        .await
        .unwrap();
    let (trigger, sd) = nagare_core::shutdown::channel();
    let run = tokio::spawn(nagare_buffer::flush::run_with(
        buffer2.clone(),
        out2,
        Some(secondary),
        sd,
        Duration::from_millis(200),
        "s3-creds-2".into(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while buffer2.held_records() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    trigger.fire();
    let _ = run.await;
    assert_eq!(buffer2.held_records(), 0);
    let dumps = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(dumps, 1, "the chunk went to the secondary");
    let _ = moto.kill();
}
