//! The output against a scripted fake of the CloudWatch Logs API: progress across retries,
//! legacy sequence tokens, recreation after out-of-band deletion, names, rejected events.

use super::batch::{LogEvent, RejectedInfo};
use super::config::{CloudWatchLogsConfig, NameSource};
use super::errors::{ApiError, ErrorKind};
use super::service::{LogsApi, PutOutcome};
use super::*;
use bytes::{Bytes, BytesMut};
use nagare_core::sink::MemorySink;
use nagare_core::{ChunkId, Event, EventTime, Record};
use nagare_core::{ChunkKey, Tag};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

type Streams = HashMap<String, HashMap<String, Vec<(i64, String)>>>;

#[derive(Default)]
struct FakeState {
    groups: Streams,
    /// (group, stream, events, token) of every put that reached the fake.
    puts: Vec<(String, String, usize, Option<String>)>,
    calls: Vec<String>,
    /// Failures for the next puts whose group contains the pattern ("" = any).
    fail: VecDeque<(String, ApiError)>,
    /// Answer like a pre-2023 endpoint.
    legacy: bool,
    expected: HashMap<(String, String), Option<String>>,
    used: HashSet<(String, String, Option<String>)>,
    tokens: u64,
    /// Store the next put but answer with a network error.
    lose_reply: usize,
    rejected: Option<RejectedInfo>,
    /// Refuse CreateLogGroup with AccessDenied (a policy without logs:CreateLogGroup).
    deny_create_group: bool,
}

#[derive(Default)]
struct Fake(Mutex<FakeState>);

impl Fake {
    fn st(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.0.lock().unwrap()
    }
    fn events(&self, g: &str, s: &str) -> Vec<(i64, String)> {
        self.st()
            .groups
            .get(g)
            .and_then(|m| m.get(s))
            .cloned()
            .unwrap_or_default()
    }
    fn add_stream(&self, g: &str, s: &str) {
        self.st()
            .groups
            .entry(g.into())
            .or_default()
            .entry(s.into())
            .or_default();
    }
}

fn err(kind: ErrorKind) -> ApiError {
    ApiError::new("PutLogEvents", kind, "scripted")
}

#[async_trait::async_trait]
impl LogsApi for Fake {
    async fn put_log_events(
        &self,
        group: &str,
        stream: &str,
        events: &[LogEvent],
        token: Option<&str>,
    ) -> Result<PutOutcome, ApiError> {
        let mut st = self.st();
        st.calls.push(format!("put {group}/{stream}"));
        st.puts.push((
            group.into(),
            stream.into(),
            events.len(),
            token.map(Into::into),
        ));
        if let Some(i) = st.fail.iter().position(|(p, _)| group.contains(p.as_str())) {
            let (_, e) = st.fail.remove(i).unwrap();
            return Err(e);
        }
        if events.iter().any(|e| e.message.is_empty()) {
            // As AWS: one empty message refuses the whole request.
            return Err(err(ErrorKind::InvalidRequest));
        }
        let key = (group.to_string(), stream.to_string());
        if !st.groups.get(group).is_some_and(|m| m.contains_key(stream)) {
            return Err(err(ErrorKind::ResourceNotFound));
        }
        let mut next = None;
        if st.legacy {
            let tok = token.map(str::to_string);
            let expected = st.expected.get(&key).cloned().flatten();
            if st
                .used
                .contains(&(group.into(), stream.into(), tok.clone()))
            {
                return Err(err(ErrorKind::DataAlreadyAccepted).with_token(expected));
            }
            if tok != expected {
                return Err(err(ErrorKind::InvalidSequenceToken).with_token(expected));
            }
            st.used.insert((group.into(), stream.into(), tok));
            st.tokens += 1;
            next = Some(format!("tok{}", st.tokens));
            st.expected.insert(key, next.clone());
        }
        let rejected = st.rejected.unwrap_or_default();
        let skip: HashSet<usize> = rejected
            .rejected(events.len())
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        let store = st.groups.get_mut(group).unwrap().get_mut(stream).unwrap();
        for (i, e) in events.iter().enumerate() {
            if !skip.contains(&i) {
                store.push((e.timestamp, e.message.clone()));
            }
        }
        if st.lose_reply > 0 {
            st.lose_reply -= 1;
            return Err(err(ErrorKind::Network));
        }
        Ok(PutOutcome {
            rejected,
            next_sequence_token: next,
            already_accepted: false,
        })
    }
    async fn create_log_group(
        &self,
        group: &str,
        tags: &[(String, String)],
    ) -> Result<(), ApiError> {
        let mut st = self.st();
        st.calls
            .push(format!("create_group {group} tags={}", tags.len()));
        if st.deny_create_group {
            return Err(ApiError::new("CreateLogGroup", ErrorKind::Auth, "scripted"));
        }
        if st.groups.contains_key(group) {
            return Err(err(ErrorKind::ResourceAlreadyExists));
        }
        st.groups.insert(group.into(), HashMap::new());
        Ok(())
    }
    async fn create_log_stream(&self, group: &str, stream: &str) -> Result<(), ApiError> {
        let mut st = self.st();
        st.calls.push(format!("create_stream {group}/{stream}"));
        let Some(g) = st.groups.get_mut(group) else {
            return Err(err(ErrorKind::ResourceNotFound));
        };
        if g.contains_key(stream) {
            return Err(err(ErrorKind::ResourceAlreadyExists));
        }
        g.insert(stream.into(), Vec::new());
        Ok(())
    }
    async fn put_retention_policy(&self, group: &str, days: u32) -> Result<(), ApiError> {
        self.st().calls.push(format!("retention {group} {days}"));
        Ok(())
    }
}

/// A chunk of `[time, record]` entries.
/// `(seconds, record pairs)`.
type Entry<'a> = (u32, Vec<(&'a str, &'a [u8])>);

fn chunk(events: &[Entry]) -> Chunk {
    let mut out = BytesMut::new();
    for (t, pairs) in events {
        let rec = Record::from_pairs(pairs);
        Event {
            time: EventTime::from_secs(*t),
            record: rec,
        }
        .write_entry(&mut out, false);
    }
    Chunk {
        id: ChunkId::random(),
        tag: Tag::from("app.test"),
        key: ChunkKey::default(),
        bytes: out.freeze(),
        records: events.len(),
    }
}

fn cfg(id: &str) -> CloudWatchLogsConfig {
    let mut c = CloudWatchLogsConfig::new(
        id,
        NameSource::Key("service".into()),
        NameSource::Static("agg-1".into()),
    );
    c.auto_create_stream = true;
    c.retry.retry_wait = Duration::from_millis(1);
    c
}

fn output(
    c: CloudWatchLogsConfig,
    fake: &Arc<Fake>,
    dl: Option<Arc<MemorySink>>,
) -> CloudWatchLogs {
    CloudWatchLogs::try_new(c, fake.clone(), dl.map(|d| d as Arc<dyn EventSink>)).unwrap()
}

const T0: u32 = 1_700_000_000;

#[tokio::test]
async fn a_retry_resends_only_the_batches_that_failed() {
    let fake = Arc::new(Fake::default());
    let mut c = cfg("cw-progress");
    c.retry.retry_limit = Some(0);
    let out = output(c, &fake, None);
    let ch = chunk(&[
        (T0, vec![("service", b"a"), ("log", b"1")]),
        (T0, vec![("service", b"b"), ("log", b"2")]),
        (T0, vec![("service", b"c"), ("log", b"3")]),
    ]);
    // Batch 1 (group b) is throttled once.
    fake.st()
        .fail
        .push_back(("b".into(), err(ErrorKind::Throttled)));
    let r = out.write(&ch).await;
    assert!(matches!(r, Err(WriteError::Retryable(_))), "{r:?}");
    assert_eq!(out.chunks_in_progress(), 1);
    // Batches a and c were accepted (concurrency 1 stops after b, so c is not sent yet).
    assert_eq!(fake.events("a", "agg-1").len(), 1);
    assert_eq!(fake.events("b", "agg-1").len(), 0);
    let puts_before = fake.st().puts.len();
    out.write(&ch).await.unwrap();
    let puts: Vec<String> = fake.st().puts[puts_before..]
        .iter()
        .map(|p| p.0.clone())
        .collect();
    assert_eq!(puts, vec!["b", "c"], "a must not be sent again");
    for g in ["a", "b", "c"] {
        assert_eq!(fake.events(g, "agg-1").len(), 1, "{g}");
    }
    assert_eq!(out.stats().skipped_batches.get(), 1);
    assert_eq!(out.stats().events.get(), 3);
    assert_eq!(out.chunks_in_progress(), 0);
}

#[tokio::test]
async fn with_concurrency_the_batches_around_a_failure_are_kept() {
    let fake = Arc::new(Fake::default());
    let mut c = cfg("cw-concurrency");
    c.retry.retry_limit = Some(0);
    c.concurrency = 4;
    let out = output(c, &fake, None);
    let entries: Vec<Entry> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .map(|g| (T0, vec![("service", g.as_bytes())]))
        .collect();
    let ch = chunk(&entries);
    fake.st()
        .fail
        .push_back(("c".into(), err(ErrorKind::Unavailable)));
    assert!(out.write(&ch).await.is_err());
    out.write(&ch).await.unwrap();
    for g in ["a", "b", "c", "d", "e", "f"] {
        assert_eq!(fake.events(g, "agg-1").len(), 1, "group {g}: exactly once");
    }
}

#[tokio::test]
async fn throttling_is_retried_inside_the_write() {
    let fake = Arc::new(Fake::default());
    let out = output(cfg("cw-inwrite"), &fake, None);
    let ch = chunk(&[(T0, vec![("service", b"a")])]);
    for _ in 0..2 {
        fake.st()
            .fail
            .push_back(("".into(), err(ErrorKind::Throttled)));
    }
    out.write(&ch).await.unwrap();
    assert_eq!(out.stats().retries.get(), 2);
    assert_eq!(out.stats().request_errors.get("throttled").get(), 2);
    assert_eq!(fake.events("a", "agg-1").len(), 1);
}

#[tokio::test]
async fn groups_and_streams_are_created_once_and_recreated_after_deletion() {
    let fake = Arc::new(Fake::default());
    let mut c = cfg("cw-create");
    c.retention_in_days = Some(14);
    c.log_group_aws_tags = vec![("team".into(), "core".into())];
    let out = output(c, &fake, None);
    fake.add_stream("a", "other"); // the group exists already: AlreadyExists is fine
    out.write(&chunk(&[(T0, vec![("service", b"a")])]))
        .await
        .unwrap();
    out.write(&chunk(&[(T0, vec![("service", b"b")])]))
        .await
        .unwrap();
    out.write(&chunk(&[(T0, vec![("service", b"a")])]))
        .await
        .unwrap();
    let calls = fake.st().calls.clone();
    assert_eq!(
        calls,
        vec![
            "create_group a tags=1",
            "create_stream a/agg-1",
            "put a/agg-1",
            "create_group b tags=1",
            "retention b 14",
            "create_stream b/agg-1",
            "put b/agg-1",
            "put a/agg-1",
        ]
    );
    // Deleted out of band: the next put finds nothing, the output recreates and resends.
    fake.st().groups.remove("a");
    out.write(&chunk(&[(T0, vec![("service", b"a")])]))
        .await
        .unwrap();
    assert_eq!(fake.events("a", "agg-1").len(), 1);
    assert_eq!(
        out.stats().request_errors.get("resource_not_found").get(),
        1
    );
}

#[tokio::test]
async fn streams_are_created_in_existing_groups_without_the_right_to_create_groups() {
    let fake = Arc::new(Fake::default());
    fake.st().deny_create_group = true;
    fake.st().groups.insert("a".into(), HashMap::new()); // made by Terraform
    let out = output(cfg("cw-denied-group"), &fake, None);
    out.write(&chunk(&[(T0, vec![("service", b"a")])]))
        .await
        .unwrap();
    assert_eq!(fake.events("a", "agg-1").len(), 1);
    // A group that does not exist: the refusal to create it is the error, unrecoverable.
    let r = out.write(&chunk(&[(T0, vec![("service", b"b")])])).await;
    match r {
        Err(WriteError::Unrecoverable(e)) => {
            assert!(e.to_string().contains("CreateLogGroup"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn without_auto_create_a_missing_stream_is_retried_not_dropped() {
    let fake = Arc::new(Fake::default());
    let mut c = cfg("cw-nocreate");
    c.auto_create_stream = false;
    c.retry.retry_limit = Some(1);
    let out = output(c, &fake, None);
    let ch = chunk(&[(T0, vec![("service", b"a")])]);
    assert!(matches!(
        out.write(&ch).await,
        Err(WriteError::Retryable(_))
    ));
    fake.add_stream("a", "agg-1");
    out.write(&ch).await.unwrap();
    assert_eq!(fake.events("a", "agg-1").len(), 1);
    assert!(!fake.st().calls.iter().any(|c| c.starts_with("create")));
}

#[tokio::test]
async fn legacy_sequence_tokens_lose_nothing_and_duplicate_nothing() {
    let fake = Arc::new(Fake::default());
    fake.st().legacy = true;
    let out = output(cfg("cw-legacy"), &fake, None);
    // The first put is stored but its reply is lost: the resend gets DataAlreadyAccepted,
    // which counts as delivered.
    fake.st().lose_reply = 1;
    out.write(&chunk(&[(T0, vec![("service", b"a"), ("n", b"1")])]))
        .await
        .unwrap();
    // Later puts carry the expected token.
    out.write(&chunk(&[(T0 + 1, vec![("service", b"a"), ("n", b"2")])]))
        .await
        .unwrap();
    // Someone else writes to the stream: the token we hold goes stale.
    {
        let mut st = fake.st();
        st.tokens += 1;
        let k = ("a".to_string(), "agg-1".to_string());
        let t = Some(format!("tok{}", st.tokens));
        st.expected.insert(k, t);
    }
    out.write(&chunk(&[(T0 + 2, vec![("service", b"a"), ("n", b"3")])]))
        .await
        .unwrap();
    let got: Vec<String> = fake.events("a", "agg-1").into_iter().map(|e| e.1).collect();
    assert_eq!(
        got,
        vec![
            r#"{"service":"a","n":"1"}"#,
            r#"{"service":"a","n":"2"}"#,
            r#"{"service":"a","n":"3"}"#
        ]
    );
    let legacy = &out.stats().service.legacy;
    assert_eq!(legacy.get("data_already_accepted").get(), 1);
    assert_eq!(legacy.get("invalid_sequence_token").get(), 1);
}

#[tokio::test]
async fn invalid_record_names_go_to_the_fallback_group_or_the_secondary() {
    let entries: Vec<Entry> = vec![
        (T0, vec![("service", b"ok")]),
        (T0, vec![("service", b"bad name")]),
        (T0, vec![("other", b"x")]),
        (T0, vec![("service", b"\xff")]),
    ];
    // Fallback group.
    let fake = Arc::new(Fake::default());
    let mut c = cfg("cw-names-fallback");
    c.fallback_log_group_name = Some("unrouted".into());
    let out = output(c, &fake, None);
    out.write(&chunk(&entries)).await.unwrap();
    assert_eq!(fake.events("ok", "agg-1").len(), 1);
    assert_eq!(fake.events("unrouted", "agg-1").len(), 3);
    let s = out.stats();
    assert_eq!(s.invalid_names.get("invalid_group").get(), 2);
    assert_eq!(s.invalid_names.get("missing_group").get(), 1);
    assert_eq!(s.rerouted.get("fallback_group").get(), 3);

    // Secondary.
    let fake = Arc::new(Fake::default());
    let dl = MemorySink::new();
    let out = output(cfg("cw-names-secondary"), &fake, Some(dl.clone()));
    out.write(&chunk(&entries)).await.unwrap();
    assert_eq!(dl.event_count(), 3);
    assert_eq!(out.stats().rerouted.get("secondary").get(), 3);
    // The secondary gets the original records, untouched.
    let recs: Vec<Option<Vec<u8>>> = dl
        .events()
        .iter()
        .map(|(_, e)| e.record.get_str(b"service").map(<[u8]>::to_vec))
        .collect();
    assert_eq!(
        recs,
        vec![Some(b"bad name".to_vec()), None, Some(b"\xff".to_vec())]
    );

    // Neither: counted as dropped.
    let fake = Arc::new(Fake::default());
    let out = output(cfg("cw-names-drop"), &fake, None);
    out.write(&chunk(&entries)).await.unwrap();
    assert_eq!(out.stats().dropped.get("invalid_name").get(), 3);
}

#[tokio::test]
async fn rejected_events_are_counted_by_reason_and_never_retried() {
    let fake = Arc::new(Fake::default());
    fake.st().rejected = Some(RejectedInfo {
        too_old_end: Some(2),
        too_new_start: Some(4),
        expired_end: Some(3),
    });
    let dl = MemorySink::new();
    let mut c = cfg("cw-rejected");
    c.rejected_events_to_secondary = true;
    let out = output(c, &fake, Some(dl.clone()));
    let entries: Vec<Entry> = (0..6)
        .map(|i| (T0 + i, vec![("service", b"a" as &[u8])]))
        .collect();
    out.write(&chunk(&entries)).await.unwrap();
    let s = out.stats();
    assert_eq!(s.rejected.get("too_old").get(), 2);
    assert_eq!(s.rejected.get("expired").get(), 1);
    assert_eq!(s.rejected.get("too_new").get(), 2);
    assert_eq!(s.events.get(), 1);
    assert_eq!(fake.st().puts.len(), 1, "never retried");
    assert_eq!(dl.event_count(), 5);
}

#[tokio::test]
async fn oversized_events_never_fail_a_batch() {
    let big = vec![b'x'; 300];
    for (action, expect_events, dl_events) in [
        (OversizeAction::Truncate, 2, 0),
        (OversizeAction::Split, 3, 0),
        (OversizeAction::Drop, 1, 1),
    ] {
        let fake = Arc::new(Fake::default());
        let dl = MemorySink::new();
        let mut c = cfg(&format!("cw-oversize-{action:?}"));
        c.max_event_size = 150 + 26;
        c.oversize_action = action;
        c.message_keys = vec!["log".into()];
        let out = output(c, &fake, Some(dl.clone()));
        out.write(&chunk(&[
            (T0, vec![("service", b"a"), ("log", b"small")]),
            (T0 + 1, vec![("service", b"a"), ("log", &big)]),
        ]))
        .await
        .unwrap();
        let got = fake.events("a", "agg-1");
        assert_eq!(got.len(), expect_events, "{action:?}");
        assert!(got.iter().all(|e| e.1.len() <= 150));
        assert_eq!(dl.event_count(), dl_events);
    }
}

#[tokio::test]
async fn auth_errors_are_unrecoverable_and_bad_requests_drop_only_their_batch() {
    let fake = Arc::new(Fake::default());
    let out = output(cfg("cw-auth"), &fake, None);
    fake.st().fail.push_back(("".into(), err(ErrorKind::Auth)));
    let r = out.write(&chunk(&[(T0, vec![("service", b"a")])])).await;
    assert!(matches!(r, Err(WriteError::Unrecoverable(_))), "{r:?}");
    assert_eq!(out.chunks_in_progress(), 0);

    let fake = Arc::new(Fake::default());
    let out = output(cfg("cw-badreq"), &fake, None);
    fake.st()
        .fail
        .push_back(("a".into(), err(ErrorKind::InvalidRequest)));
    out.write(&chunk(&[
        (T0, vec![("service", b"a")]),
        (T0, vec![("service", b"b")]),
    ]))
    .await
    .unwrap();
    assert_eq!(fake.events("b", "agg-1").len(), 1);
    assert_eq!(out.stats().dropped.get("invalid_request").get(), 1);
}

#[tokio::test]
async fn messages_follow_the_fluentd_plugin_options() {
    let fake = Arc::new(Fake::default());
    let mut c = cfg("cw-format");
    c.remove_log_group_name_key = true;
    c.include_time_key = true;
    let out = output(c, &fake, None);
    out.write(&chunk(&[(
        T0,
        vec![("service", b"a"), ("msg", b"caf\xc3\xa9 \"q\" \xff")],
    )]))
    .await
    .unwrap();
    let got = fake.events("a", "agg-1");
    assert_eq!(got[0].0, T0 as i64 * 1000);
    assert_eq!(
        got[0].1,
        "{\"msg\":\"caf\u{e9} \\\"q\\\" \u{FFFD}\",\"time\":\"2023-11-14T22:13:20+0000\"}"
    );
    assert_eq!(out.stats().invalid_utf8.get("events").get(), 1);

    let fake = Arc::new(Fake::default());
    let mut c = cfg("cw-format-keys");
    c.message_keys = vec!["level".into(), "missing".into(), "msg".into()];
    c.max_message_length = Some(9);
    let out = output(c, &fake, None);
    out.write(&chunk(&[(
        T0,
        vec![
            ("service", b"a"),
            ("level", b"error"),
            ("msg", b"boom\xe2\x82\xac!"),
        ],
    )]))
    .await
    .unwrap();
    // "error boom€!" cut to 9 characters.
    assert_eq!(fake.events("a", "agg-1")[0].1, "error boo");
}

#[tokio::test]
async fn records_without_the_message_keys_are_skipped_not_sent() {
    let records: &[Entry] = &[
        (T0, vec![("service", b"a"), ("log", b"first")]),
        (T0, vec![("service", b"a"), ("other", b"x")]),
        (T0, vec![("service", b"a"), ("log", b"")]),
        (T0, vec![("service", b"a"), ("log", b"last")]),
    ];
    let fake = Arc::new(Fake::default());
    let mut c = cfg("cw-empty");
    c.message_keys = vec!["log".into()];
    let out = output(c, &fake, None);
    out.write(&chunk(records)).await.unwrap();
    let got: Vec<String> = fake.events("a", "agg-1").into_iter().map(|e| e.1).collect();
    assert_eq!(got, ["first", "last"]);
    assert_eq!(out.stats().dropped.get("empty_message").get(), 2);
    assert_eq!(out.stats().dropped.get("invalid_request").get(), 0);

    // With a secondary, the skipped records go there.
    let fake = Arc::new(Fake::default());
    let dl = MemorySink::new();
    let mut c = cfg("cw-empty-secondary");
    c.message_keys = vec!["log".into()];
    let out = output(c, &fake, Some(dl.clone()));
    out.write(&chunk(records)).await.unwrap();
    assert_eq!(fake.events("a", "agg-1").len(), 2);
    assert_eq!(dl.event_count(), 2);
    assert_eq!(out.stats().rerouted.get("secondary").get(), 2);
    assert_eq!(out.stats().dropped.get("empty_message").get(), 0);
}

#[tokio::test]
async fn the_group_prefix_goes_before_record_derived_names_only() {
    let fake = Arc::new(Fake::default());
    let mut c = cfg("cw-prefix");
    c.log_group_name_prefix = "/app/".into();
    c.fallback_log_group_name = Some("/app/unattributed".into());
    let out = output(c, &fake, None);
    out.write(&chunk(&[
        (T0, vec![("service", b"condor")]),
        (T0, vec![("other", b"x")]),
        (T0, vec![("service", b"")]),
    ]))
    .await
    .unwrap();
    assert_eq!(fake.events("/app/condor", "agg-1").len(), 1);
    assert_eq!(fake.events("/app/unattributed", "agg-1").len(), 2);
    assert!(fake.st().groups.keys().all(|g| g.starts_with("/app/")));

    let mut c = cfg("cw-prefix-static");
    c.group = NameSource::Static("/app/x".into());
    c.log_group_name_prefix = "/app/".into();
    assert!(c.validate().is_err());
    let mut c = cfg("cw-prefix-bad");
    c.log_group_name_prefix = "app:".into();
    assert!(c.validate().is_err());
}

#[tokio::test]
async fn stream_from_tag_and_key() {
    let fake = Arc::new(Fake::default());
    let mut c = cfg("cw-tag");
    c.group = NameSource::Tag;
    c.stream = NameSource::Key("host".into());
    c.remove_log_stream_name_key = true;
    let out = output(c, &fake, None);
    out.write(&chunk(&[(T0, vec![("host", b"h1"), ("m", b"x")])]))
        .await
        .unwrap();
    assert_eq!(fake.events("app.test", "h1")[0].1, r#"{"m":"x"}"#);
}

#[test]
fn plans_are_deterministic_for_a_chunk() {
    let fake = Arc::new(Fake::default());
    let out = output(cfg("cw-plan"), &fake, None);
    let entries: Vec<Entry> = (0..50)
        .map(|i| {
            (
                T0 + (i * 37) % 11,
                vec![("service", if i % 3 == 0 { b"a" as &[u8] } else { b"b" })],
            )
        })
        .collect();
    let ch = chunk(&entries);
    let a = out.plan_batches(&ch);
    let b = out.plan_batches(&ch);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.key, y.key);
        assert_eq!(x.events, y.events);
    }
    let _ = Bytes::new();
}
