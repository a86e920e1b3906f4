//! The S3 conformance suite: every case runs on the on-disk store (`s3_endpoint file:///...`)
//! and on moto (the real SDK over HTTP on 127.0.0.1), so both stores give the same keys and
//! the same guarantees.

mod s3_common;

use bytes::Bytes;
use nagare_aws::out_s3::{
    LineFormat, ObjectStore, Owner, PutOutcome, PutRequest, S3Config, S3Output, StartError,
    StoreAs, StoreError,
};
use nagare_core::{ChunkId, Output};
use s3_common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Runs `case` on the disk store and on moto (skipped loudly when moto is missing).
macro_rules! on_both {
    ($disk:ident, $moto:ident, $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $disk() {
            $case(Backend::disk()).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $moto() {
            let Some(b) = Backend::moto() else { return };
            $case(b).await;
        }
    };
}

fn counter(name: &'static str, id: &str) -> u64 {
    nagare_core::metrics::counter(name, "", &[("plugin_id", id)]).get()
}

/// The seed layout: `applications/<service>/app/%Y/%m/%d/%H/%M_<host>_<n>.gz`, 5-minute slices.
fn seed_layout(b: &Backend, id: &str, bucket: &str) -> S3Config {
    let mut c = b.config(id, bucket);
    c.path = "applications/${service}/app/%Y/%m/%d/%H/".into();
    c.object_key_format = "%{path}%M_%{hostname}_%{index}.%{file_extension}".into();
    c.timekey = Some(300);
    c
}

/// Splits a seed-layout key into (service, minute-of-slice path, host, index).
fn parse_seed_key(k: &str) -> Option<(String, String, String, u64)> {
    let rest = k.strip_prefix("applications/")?;
    let mut parts = rest.split('/');
    let service = parts.next()?.to_string();
    if parts.next()? != "app" {
        return None;
    }
    let (y, mo, d, h) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let file = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|c| c.is_ascii_digit());
    if !(digits(y, 4) && digits(mo, 2) && digits(d, 2) && digits(h, 2)) {
        return None;
    }
    let stem = file.strip_suffix(".gz")?;
    let mut f = stem.splitn(3, '_');
    let (min, host, idx) = (f.next()?, f.next()?, f.next()?);
    if !digits(min, 2) || min.parse::<u32>().ok()? % 5 != 0 {
        return None;
    }
    Some((
        service,
        format!("{y}/{mo}/{d}/{h}/{min}"),
        host.to_string(),
        idx.parse().ok()?,
    ))
}

fn slice_path(secs: i64) -> String {
    let mut s = String::new();
    nagare_aws::out_s3::key::TimeFormat::parse("%Y/%m/%d/%H/%M")
        .unwrap()
        .format(secs, 0, nagare_aws::out_s3::Zone::UTC, &mut s);
    s
}

// ---- 1. the corpus lands under the seed layout, each line once ---------------------------------

async fn corpus_lands_under_the_seed_layout(b: Backend) {
    let lines = corpus();
    assert_eq!(lines.len(), 2000, "corpus lines with partials rejoined");
    let kept: Vec<&Line> = lines.iter().filter(|l| !l.is_health()).collect();
    assert_eq!(
        lines.len() - kept.len(),
        304,
        "health checks in the manifest"
    );
    let bucket = bucket("corpus");
    let id = format!("s3-corpus-{}", b.name());
    let out = S3Output::start(&seed_layout(&b, &id, &bucket))
        .await
        .unwrap();
    let chunks = chunks_by_service_and_slice(&kept, 300, 40);
    let n_chunks = chunks.len();
    // Which slice each chunk's lines belong to, by their canonical JSON.
    // (Identical records can occur in several slices: a set per line.)
    let mut where_: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for c in &chunks {
        let svc = String::from_utf8(c.key.var("service").unwrap().to_vec()).unwrap();
        let sp = slice_path(c.key.timekey.unwrap());
        for l in kept
            .iter()
            .filter(|l| l.service == svc && slice_path(l.time as i64 - l.time as i64 % 300) == sp)
        {
            where_
                .entry(l.expected_json())
                .or_default()
                .insert((svc.clone(), sp.clone()));
        }
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
    assert_eq!(r.written, n_chunks);
    let objects = read_all(&*out.store(), "").await;
    assert_eq!(objects.len(), n_chunks, "one object per chunk");
    let mut per_family: BTreeMap<(String, String), BTreeSet<u64>> = BTreeMap::new();
    for (k, ls) in &objects {
        let (svc, sp, host, idx) =
            parse_seed_key(k).unwrap_or_else(|| panic!("key {k} is not the seed layout"));
        assert_eq!(host, "host-a");
        per_family
            .entry((svc.clone(), sp.clone()))
            .or_default()
            .insert(idx);
        for l in ls {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(
                where_
                    .get(&v.to_string())
                    .is_some_and(|s| s.contains(&(svc.clone(), sp.clone()))),
                "{k} holds a line of another service or slice"
            );
        }
    }
    // One process: indexes are dense from 0 in every (service, slice).
    for ((svc, sp), idx) in &per_family {
        let want: BTreeSet<u64> = (0..idx.len() as u64).collect();
        assert_eq!(idx, &want, "{svc} {sp}");
    }
    let expected: Vec<String> = kept.iter().map(|l| l.expected_json()).collect();
    assert_exactly_once(&objects, &expected);
    assert_eq!(counter("nagare_s3_objects_total", &id), n_chunks as u64);
    assert_eq!(counter("nagare_s3_records_total", &id), kept.len() as u64);
}
on_both!(
    disk_corpus_lands_under_the_seed_layout,
    moto_corpus_lands_under_the_seed_layout,
    corpus_lands_under_the_seed_layout
);

// ---- 2. two writers x four flush threads on one key family: nothing overwritten --------------

async fn two_outputs_four_threads_one_family(b: Backend) {
    let bucket = bucket("race");
    let mut all_lines = Vec::new();
    let mut handles = Vec::new();
    let t = 1_700_000_000u32;
    for w in 0..2 {
        let id = format!("s3-race-{}-{w}", b.name());
        // Separate outputs: separate index allocators, as two processes on one host.
        let out = S3Output::start(&seed_layout(&b, &id, &bucket))
            .await
            .unwrap();
        let lines = synthetic("condor", t, w, 800, &format!("writer{w}"));
        let refs: Vec<&Line> = lines.iter().collect();
        let chunks: Vec<_> = refs
            .chunks(20)
            .map(|c| chunk("condor", (t - t % 300) as i64, c))
            .collect();
        all_lines.extend(lines.iter().map(|l| l.expected_json()));
        handles.push(tokio::spawn(drive(
            Arc::new(out),
            chunks,
            4,
            Duration::from_millis(20),
            Duration::from_secs(60),
        )));
    }
    let mut written = 0;
    for h in handles {
        let r = h.await.unwrap();
        assert!(r.unrecoverable.is_empty(), "{:?}", r.unrecoverable);
        written += r.written;
    }
    assert_eq!(written, 80);
    let reader = S3Output::start(&seed_layout(&b, "s3-race-reader", &bucket))
        .await
        .unwrap();
    let objects = read_all(&*reader.store(), "applications/condor/").await;
    assert_eq!(
        objects.len(),
        80,
        "every chunk has its own object: none overwritten"
    );
    let idx: BTreeSet<u64> = objects
        .keys()
        .map(|k| parse_seed_key(k).unwrap().3)
        .collect();
    assert_eq!(idx.len(), 80);
    assert_exactly_once(&objects, &all_lines);
    let conflicts = counter(
        "nagare_s3_key_conflicts_total",
        &format!("s3-race-{}-0", b.name()),
    ) + counter(
        "nagare_s3_key_conflicts_total",
        &format!("s3-race-{}-1", b.name()),
    );
    eprintln!(
        "{}: {conflicts} key conflicts resolved, highest index {:?}",
        b.name(),
        idx.last()
    );
}
on_both!(
    disk_two_outputs_four_threads_one_family,
    moto_two_outputs_four_threads_one_family,
    two_outputs_four_threads_one_family
);

// ---- 3. a lost reply: the retry recognises its own object --------------------------------------

/// Performs the first `lose` puts, then reports a transient error as if the reply was lost.
struct LostReplies {
    inner: Arc<dyn ObjectStore>,
    lose: AtomicUsize,
}

#[async_trait::async_trait]
impl ObjectStore for LostReplies {
    fn describe(&self, key: &str) -> String {
        self.inner.describe(key)
    }
    async fn put_new(&self, req: &PutRequest<'_>) -> Result<PutOutcome, StoreError> {
        let r = self.inner.put_new(req).await;
        if self
            .lose
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError {
                class: nagare_aws::out_s3::ErrorClass::Transient,
                op: "PutObject",
                target: self.describe(req.key),
                code: "ConnectionError".into(),
                status: None,
                message: format!("reply lost (the put was {r:?})"),
            });
        }
        r
    }
    async fn owner(&self, key: &str, id: &str, body: &Bytes) -> Result<Owner, StoreError> {
        self.inner.owner(key, id, body).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn ensure_bucket(&self, create: bool) -> Result<(), StoreError> {
        self.inner.ensure_bucket(create).await
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        self.inner.get(key).await
    }
}

async fn lost_replies_are_not_written_twice(b: Backend) {
    for (n, format) in [
        "%{path}%{time_slice}_%{index}.%{file_extension}",
        "%{path}${chunk_id}.%{file_extension}",
        "%{path}%{time_slice}-%{uuid_flush}.%{file_extension}",
    ]
    .iter()
    .enumerate()
    {
        let bucket = bucket("lost");
        let id = format!("s3-lost-{}-{n}", b.name());
        let mut c = b.config(&id, &bucket);
        c.path = "lost/".into();
        c.object_key_format = format.to_string();
        let real = S3Output::start(&c).await.unwrap();
        let flaky = Arc::new(LostReplies {
            inner: real.store(),
            lose: AtomicUsize::new(5),
        });
        let out = S3Output::with_store(&c, flaky).unwrap();
        let lines = synthetic("heron", 1_700_000_000, 0, 200, "lost");
        let refs: Vec<&Line> = lines.iter().collect();
        let chunks: Vec<_> = refs
            .chunks(20)
            .map(|c| chunk("heron", 1_700_000_000, c))
            .collect();
        let r = drive(
            Arc::new(out),
            chunks,
            4,
            Duration::from_millis(10),
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(
            (r.written, r.retryable_errors),
            (10, 5),
            "{format}: {:?}",
            r.last_error
        );
        let objects = read_all(&*real.store(), "lost/").await;
        assert_eq!(
            objects.len(),
            10,
            "{format}: {:?}",
            objects.keys().collect::<Vec<_>>()
        );
        let expected: Vec<String> = lines.iter().map(|l| l.expected_json()).collect();
        assert_exactly_once(&objects, &expected);
        assert_eq!(
            counter("nagare_s3_recognised_retries_total", &id),
            5,
            "{format}"
        );
    }
}
on_both!(
    disk_lost_replies_are_not_written_twice,
    moto_lost_replies_are_not_written_twice,
    lost_replies_are_not_written_twice
);

// ---- 4. another writer's objects: one 412, one LIST, then past them -----------------------------

async fn taken_indexes_are_skipped_with_one_listing(b: Backend) {
    let bucket = bucket("skip");
    let mk = |id: &str| {
        let mut c = b.config(id, &bucket);
        c.path = "skip/".into();
        c.index_format = "%03d".into();
        c
    };
    let lines = synthetic("falcon", 1_700_000_000, 0, 70, "skip");
    let refs: Vec<&Line> = lines.iter().collect();
    let first = S3Output::start(&mk(&format!("s3-skip-a-{}", b.name())))
        .await
        .unwrap();
    for c in refs[..50].chunks(10) {
        first
            .write(&chunk("falcon", 1_700_000_000, c))
            .await
            .unwrap();
    }
    let id = format!("s3-skip-b-{}", b.name());
    let second = S3Output::start(&mk(&id)).await.unwrap();
    for c in refs[50..].chunks(10) {
        second
            .write(&chunk("falcon", 1_700_000_000, c))
            .await
            .unwrap();
    }
    let keys: Vec<String> = first.store().list("skip/").await.unwrap();
    assert_eq!(
        keys,
        (0..7)
            .map(|i| format!("skip/2023111422_{i:03}.gz"))
            .collect::<Vec<_>>()
    );
    assert_eq!(counter("nagare_s3_key_conflicts_total", &id), 1);
}
on_both!(
    disk_taken_indexes_are_skipped_with_one_listing,
    moto_taken_indexes_are_skipped_with_one_listing,
    taken_indexes_are_skipped_with_one_listing
);

// ---- 5. store_as and <format> -----------------------------------------------------------------

async fn store_as_and_formats(b: Backend) {
    let lines = synthetic("condor", 1_700_000_000, 0, 30, "fmt");
    let refs: Vec<&Line> = lines.iter().collect();
    let expected: Vec<String> = lines.iter().map(|l| l.expected_json()).collect();
    for (n, store_as) in [StoreAs::Gzip, StoreAs::Zstd, StoreAs::Json, StoreAs::Text]
        .into_iter()
        .enumerate()
    {
        let bucket = bucket("fmt");
        let mut c = b.config(&format!("s3-fmt-{}-{n}", b.name()), &bucket);
        c.store_as = store_as;
        let out = S3Output::start(&c).await.unwrap();
        out.write(&chunk("condor", 1_700_000_000, &refs))
            .await
            .unwrap();
        assert_eq!(
            out.pooled_body_buffers(),
            1,
            "the body buffer came back to the pool"
        );
        let objects = read_all(&*out.store(), "").await;
        let key = objects.keys().next().unwrap();
        assert_eq!(key, &format!("2023111422_0.{}", store_as.extension()));
        assert_exactly_once(&objects, &expected);
    }
    // single_value and ltsv, uncompressed.
    for (n, (line, want)) in [
        (
            LineFormat::SingleValue {
                message_key: "log".into(),
                add_newline: true,
            },
            lines[3].log().to_string(),
        ),
        (
            LineFormat::Ltsv {
                delimiter: "\t".into(),
                label_delimiter: ":".into(),
                add_newline: true,
            },
            format!("container_id:c0\tsource:stdout\tlog:{}", lines[3].log()),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let bucket = bucket("line");
        let mut c = b.config(&format!("s3-line-{}-{n}", b.name()), &bucket);
        c.store_as = StoreAs::Text;
        c.line = line;
        let out = S3Output::start(&c).await.unwrap();
        out.write(&chunk("condor", 1_700_000_000, &refs))
            .await
            .unwrap();
        let objects = read_all(&*out.store(), "").await;
        let ls = objects.values().next().unwrap();
        assert_eq!(ls.len(), 30);
        assert_eq!(ls[3], want);
    }
}
on_both!(
    disk_store_as_and_formats,
    moto_store_as_and_formats,
    store_as_and_formats
);

// ---- 6. a missing bucket: a clear error naming it; the data waits, then lands ------------------

async fn missing_bucket(b: Backend) {
    let bucket = bucket("missing");
    let id = format!("s3-missing-{}", b.name());
    let mut c = b.config(&id, &bucket);
    c.auto_create_bucket = false;
    c.check_bucket = true;
    let e = match S3Output::start(&c).await {
        Err(e) => e,
        Ok(_) => panic!("started without the bucket"),
    };
    assert!(matches!(e, StartError::Bucket { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains(&bucket) && msg.contains("NoSuchBucket"),
        "{msg}"
    );
    // check_bucket false: the write fails loudly, naming the bucket; retryable (no secondary).
    c.check_bucket = false;
    let out = S3Output::start(&c).await.unwrap();
    let lines = synthetic("condor", 1_700_000_000, 0, 40, "missing");
    let refs: Vec<&Line> = lines.iter().collect();
    let chunks: Vec<_> = refs
        .chunks(10)
        .map(|c| chunk("condor", 1_700_000_000, c))
        .collect();
    let r = drive(
        Arc::new(out.clone()),
        chunks.clone(),
        2,
        Duration::from_millis(100),
        Duration::from_millis(700),
    )
    .await;
    assert_eq!(r.written, 0);
    assert!(r.unrecoverable.is_empty());
    let err = r.last_error.unwrap();
    assert!(
        err.contains(&bucket) && err.contains("NoSuchBucket"),
        "{err}"
    );
    assert!(err.contains("stays in the buffer"), "{err}");
    // With a <secondary>, the same error is unrecoverable (the chunk goes there).
    c.access_errors_retryable = false;
    let to_secondary = S3Output::start(&c).await.unwrap();
    match to_secondary.write(&chunks[0]).await {
        Err(nagare_core::WriteError::Unrecoverable(m)) => assert!(m.contains(&bucket), "{m}"),
        other => panic!("{other:?}"),
    }
    // The operator creates the bucket: the retried chunks land, once each.
    out.store().ensure_bucket(true).await.unwrap();
    let r = drive(
        Arc::new(out.clone()),
        chunks,
        2,
        Duration::from_millis(10),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(r.written, 4);
    let objects = read_all(&*out.store(), "").await;
    let expected: Vec<String> = lines.iter().map(|l| l.expected_json()).collect();
    assert_exactly_once(&objects, &expected);
}
on_both!(disk_missing_bucket, moto_missing_bucket, missing_bucket);

// ---- 7. a short %{hex_random} collision is refused, never overwritten --------------------------

async fn short_hex_random_collision_is_refused(b: Backend) {
    let bucket = bucket("hex");
    let mut c = b.config(&format!("s3-hex-{}", b.name()), &bucket);
    c.object_key_format = "%{path}%{time_slice}-%{hex_random}.%{file_extension}".into();
    let out = S3Output::start(&c).await.unwrap();
    let lines = synthetic("condor", 1_700_000_000, 0, 2, "hex");
    let mut a = chunk("condor", 1_700_000_000, &[&lines[0]]);
    let mut bb = chunk("condor", 1_700_000_000, &[&lines[1]]);
    // Same last two bytes -> the same four reversed hex digits.
    a.id = ChunkId([1; 16]);
    bb.id = ChunkId([2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1]);
    out.write(&a).await.unwrap();
    match out.write(&bb).await {
        Err(nagare_core::WriteError::Unrecoverable(m)) => {
            assert!(
                m.contains("KeyCollision") && m.contains("refusing to overwrite"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    let objects = read_all(&*out.store(), "").await;
    assert_eq!(objects.len(), 1);
    assert_exactly_once(&objects, &[lines[0].expected_json()]);
}
on_both!(
    disk_short_hex_random_collision_is_refused,
    moto_short_hex_random_collision_is_refused,
    short_hex_random_collision_is_refused
);
