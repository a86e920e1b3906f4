//! The real SDK against a scripted CloudWatch Logs endpoint on 127.0.0.1, for the answers
//! moto never gives: an AWS-shaped `rejectedLogEventsInfo`, the unmodelled
//! `ThrottlingException`, and the legacy `InvalidSequenceTokenException` /
//! `DataAlreadyAcceptedException` with their `expectedSequenceToken`.

mod cloudwatch_common;

use cloudwatch_common::*;
use nagare_core::{EventTime, Output, Record};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// (status, body) answers for the next PutLogEvents calls; then `{}`.
#[derive(Default)]
struct Script {
    answers: VecDeque<(u16, String)>,
    /// (X-Amz-Target, body) of every request.
    seen: Vec<(String, serde_json::Value)>,
}

async fn serve(script: Arc<Mutex<Script>>) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let script = script.clone();
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                loop {
                    let mut target = String::new();
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        let lower = l.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                        if lower.starts_with("x-amz-target:") {
                            target = l["x-amz-target:".len()..].trim().to_string();
                        }
                    }
                    let mut body = vec![0u8; len];
                    r.read_exact(&mut body).await.unwrap();
                    let (status, answer) = {
                        let mut s = script.lock().unwrap();
                        s.seen.push((
                            target.clone(),
                            serde_json::from_slice(&body).unwrap_or_default(),
                        ));
                        if target.ends_with("PutLogEvents") {
                            s.answers.pop_front().unwrap_or((200, "{}".into()))
                        } else {
                            (200, "{}".to_string())
                        }
                    };
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-RequestId: t\r\nContent-Length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if w.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

fn puts(script: &Arc<Mutex<Script>>) -> Vec<serde_json::Value> {
    script
        .lock()
        .unwrap()
        .seen
        .iter()
        .filter(|(t, _)| t.ends_with("PutLogEvents"))
        .map(|(_, b)| b.clone())
        .collect()
}

fn events(n: u32) -> Vec<(EventTime, Record)> {
    let t = now().secs();
    (0..n)
        .map(|i| {
            (
                EventTime::from_secs(t - 100 + i),
                Record::from_pairs(&[("service", "svc"), ("n", &i.to_string())]),
            )
        })
        .collect()
}

#[tokio::test]
async fn rejected_events_are_counted_exactly_by_reason() {
    let script = Arc::new(Mutex::new(Script::default()));
    script.lock().unwrap().answers.push_back((
        200,
        r#"{"nextSequenceToken":"1","rejectedLogEventsInfo":{"tooOldLogEventEndIndex":3,"expiredLogEventEndIndex":4,"tooNewLogEventStartIndex":8}}"#.into(),
    ));
    let ep = serve(script.clone()).await;
    let out = output(
        config("cw-wire-rejected", &ep, "agg"),
        &Recorder::default(),
        None,
    )
    .await;
    out.write(&chunk("t", &events(10))).await.unwrap();
    let s = out.stats();
    assert_eq!(s.rejected.get("too_old").get(), 3);
    assert_eq!(s.rejected.get("expired").get(), 1);
    assert_eq!(s.rejected.get("too_new").get(), 2);
    assert_eq!(s.events.get(), 4);
    assert_eq!(puts(&script).len(), 1);
}

#[tokio::test]
async fn the_unmodelled_throttling_exception_is_retried() {
    let script = Arc::new(Mutex::new(Script::default()));
    for _ in 0..2 {
        script.lock().unwrap().answers.push_back((
            400,
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.into(),
        ));
    }
    script.lock().unwrap().answers.push_back((
        500,
        r#"{"__type":"ServiceUnavailableException","message":"later"}"#.into(),
    ));
    let ep = serve(script.clone()).await;
    let mut cfg = config("cw-wire-throttle", &ep, "agg");
    cfg.retry.retry_wait = std::time::Duration::from_millis(5);
    cfg.retry.retry_limit = Some(2);
    let out = output(cfg, &Recorder::default(), None).await;
    // Two retries allowed in the write: the third failure hands the chunk back to the buffer.
    let ch = chunk("t", &events(3));
    let r = out.write(&ch).await;
    assert!(
        matches!(r, Err(nagare_core::WriteError::Retryable(_))),
        "{r:?}"
    );
    out.write(&ch).await.unwrap();
    let s = out.stats();
    assert_eq!(s.request_errors.get("throttled").get(), 2);
    assert_eq!(s.request_errors.get("unavailable").get(), 1);
    assert_eq!(s.events.get(), 3);
    assert_eq!(puts(&script).len(), 4);
}

#[tokio::test]
async fn legacy_sequence_token_answers_are_followed() {
    let script = Arc::new(Mutex::new(Script::default()));
    {
        let mut s = script.lock().unwrap();
        // First put: the endpoint wants a token.
        s.answers.push_back((400, r#"{"__type":"InvalidSequenceTokenException","message":"The given sequenceToken is invalid. The next expected sequenceToken is: 4955","expectedSequenceToken":"4955"}"#.into()));
        s.answers
            .push_back((200, r#"{"nextSequenceToken":"4956"}"#.into()));
        // Second chunk: its first attempt was stored but the answer was lost; the endpoint
        // says so on the resend.
        s.answers.push_back((400, r#"{"__type":"DataAlreadyAcceptedException","message":"already","expectedSequenceToken":"4957"}"#.into()));
        // Third chunk goes through with the token from that answer.
        s.answers
            .push_back((200, r#"{"nextSequenceToken":"4958"}"#.into()));
    }
    let ep = serve(script.clone()).await;
    let out = output(
        config("cw-wire-legacy", &ep, "agg"),
        &Recorder::default(),
        None,
    )
    .await;
    out.write(&chunk("t", &events(2))).await.unwrap();
    out.write(&chunk("t", &events(2))).await.unwrap();
    out.write(&chunk("t", &events(2))).await.unwrap();
    let tokens: Vec<Option<String>> = puts(&script)
        .iter()
        .map(|b| b["sequenceToken"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        tokens,
        vec![
            None,
            Some("4955".into()),
            Some("4956".into()),
            Some("4957".into())
        ]
    );
    let s = out.stats();
    assert_eq!(s.service.legacy.get("invalid_sequence_token").get(), 1);
    assert_eq!(s.service.legacy.get("data_already_accepted").get(), 1);
    assert_eq!(s.events.get(), 6, "DataAlreadyAccepted counts as delivered");
}

#[tokio::test]
async fn bad_credentials_are_unrecoverable() {
    let script = Arc::new(Mutex::new(Script::default()));
    script.lock().unwrap().answers.push_back((
        400,
        r#"{"__type":"UnrecognizedClientException","message":"The security token included in the request is invalid."}"#.into(),
    ));
    let ep = serve(script.clone()).await;
    let out = output(
        config("cw-wire-auth", &ep, "agg"),
        &Recorder::default(),
        None,
    )
    .await;
    let r = out.write(&chunk("t", &events(1))).await;
    assert!(
        matches!(r, Err(nagare_core::WriteError::Unrecoverable(_))),
        "{r:?}"
    );
}

#[tokio::test]
async fn after_a_partial_success_only_the_failed_requests_are_sent_again() {
    let script = Arc::new(Mutex::new(Script::default()));
    {
        let mut s = script.lock().unwrap();
        s.answers.push_back((200, "{}".into()));
        s.answers.push_back((
            400,
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.into(),
        ));
    }
    let ep = serve(script.clone()).await;
    let mut cfg = config("cw-wire-partial", &ep, "agg");
    cfg.retry.retry_limit = Some(0);
    let out = output(cfg, &Recorder::default(), None).await;
    let t = now().secs();
    let evs: Vec<(EventTime, Record)> = ["a", "b", "c"]
        .iter()
        .map(|g| {
            (
                EventTime::from_secs(t),
                Record::from_pairs(&[("service", *g)]),
            )
        })
        .collect();
    let ch = chunk("t", &evs);
    assert!(out.write(&ch).await.is_err());
    out.write(&ch).await.unwrap();
    let groups: Vec<String> = puts(&script)
        .iter()
        .map(|b| b["logGroupName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(groups, ["a", "b", "b", "c"], "a is not sent twice");
    assert_eq!(out.stats().skipped_batches.get(), 1);
    assert_eq!(out.stats().events.get(), 3);
}
