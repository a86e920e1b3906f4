//! out_cloudwatch_logs against moto, with every `PutLogEvents` request recorded by an SDK
//! interceptor. moto does not enforce the batch size, event count, event size or 24 h span
//! limits (it does enforce time order), so each test asserts on the requests we sent as well
//! as on what moto stored.

mod cloudwatch_common;

use cloudwatch_common::moto::{moto, unique};
use cloudwatch_common::*;
use nagare_aws::out_cloudwatch_logs::OversizeAction;
use nagare_core::{EventTime, Output, Record};

fn rec(service: &str, log: &[u8]) -> Record {
    Record::from_pairs(&[("service", service.as_bytes()), ("log", log)])
}

/// Settings whose message is the raw `log` value (so sizes are exact).
fn raw_config(id: &str, endpoint: &str) -> nagare_aws::out_cloudwatch_logs::Config {
    let mut c = config(id, endpoint, "agg-test");
    c.message_keys = vec!["log".into()];
    c
}

fn sorted(mut v: Vec<(i64, String)>) -> Vec<(i64, String)> {
    v.sort();
    v
}

#[tokio::test]
async fn ten_thousand_and_one_events_are_two_requests() {
    let Some(m) = moto() else { return };
    let rec_ = Recorder::default();
    let out = output(raw_config("cw-10001", &m.endpoint), &rec_, None).await;
    let g = unique("cw-10001");
    let t = ago(600);
    let evs: Vec<(EventTime, Record)> = (0..10_001u32)
        .map(|i| {
            (
                EventTime::new(t.secs(), i * 1000),
                rec(&g, format!("e{i}").as_bytes()),
            )
        })
        .collect();
    out.write(&chunk("t", &evs)).await.unwrap();
    let sent = rec_.sent_to(&g);
    let sizes: Vec<usize> = sent.iter().map(|s| s.events.len()).collect();
    assert_eq!(sizes, vec![10_000, 1]);
    sent.iter().for_each(Sent::assert_within_aws_limits);
    let c = client(&m.endpoint, &Recorder::default()).await;
    assert_eq!(stored(&c, &g, "agg-test").await.len(), 10_001);
}

#[tokio::test]
async fn events_summing_just_over_one_mebibyte_are_split_at_the_byte() {
    let Some(m) = moto() else { return };
    let rec_ = Recorder::default();
    let out = output(raw_config("cw-bytes", &m.endpoint), &rec_, None).await;
    let g = unique("cw-bytes");
    let t = ago(600);
    // 4 x (262,118 + 26) = 1,048,576 exactly; one more byte in the last message.
    let mut evs: Vec<(EventTime, Record)> = (0..4u32)
        .map(|i| {
            (
                EventTime::new(t.secs() + i, 0),
                rec(&g, &vec![b'a' + i as u8; 262_118]),
            )
        })
        .collect();
    let first_three = chunk("t", &evs[..]);
    out.write(&first_three).await.unwrap();
    let sent = rec_.sent_to(&g);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].aws_bytes(),
        1_048_576,
        "exactly at the limit: one request"
    );
    evs[3].1 = rec(&g, &vec![b'z'; 262_119]);
    out.write(&chunk("t", &evs)).await.unwrap();
    let sent = rec_.sent_to(&g);
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[1].aws_bytes(), 3 * 262_144);
    assert_eq!(sent[2].aws_bytes(), 262_145);
    sent.iter().for_each(Sent::assert_within_aws_limits);
    let c = client(&m.endpoint, &Recorder::default()).await;
    assert_eq!(stored(&c, &g, "agg-test").await.len(), 8);
}

#[tokio::test]
async fn a_one_mebibyte_event_goes_alone_and_a_bigger_one_is_truncated() {
    let Some(m) = moto() else { return };
    let rec_ = Recorder::default();
    let out = output(raw_config("cw-1mb", &m.endpoint), &rec_, None).await;
    let g = unique("cw-1mb");
    let t = ago(600);
    let max = vec![b'm'; 1_048_550];
    let over = vec![b'o'; 1_048_551 + 1000];
    let evs = vec![
        (EventTime::new(t.secs(), 0), rec(&g, b"before")),
        (EventTime::new(t.secs() + 1, 0), rec(&g, &max)),
        (EventTime::new(t.secs() + 2, 0), rec(&g, &over)),
        (EventTime::new(t.secs() + 3, 0), rec(&g, b"after")),
    ];
    out.write(&chunk("t", &evs)).await.unwrap();
    let sent = rec_.sent_to(&g);
    sent.iter().for_each(Sent::assert_within_aws_limits);
    let sizes: Vec<usize> = sent.iter().map(|s| s.events.len()).collect();
    // The truncated event is 1,048,550 + 26 bytes: "after" no longer fits beside it.
    assert_eq!(sizes, vec![1, 1, 1, 1], "{sizes:?}");
    assert_eq!(sent[1].aws_bytes(), 1_048_576);
    assert!(sent[2].events[0].1.ends_with("[truncated]"));
    assert_eq!(sent[2].events[0].1.len(), 1_048_550);
    assert_eq!(out.stats().oversize.get("truncated").get(), 1);
    let c = client(&m.endpoint, &Recorder::default()).await;
    let got = stored(&c, &g, "agg-test").await;
    assert_eq!(got.len(), 4);
    assert_eq!(got[1].1.len(), 1_048_550);
}

#[tokio::test]
async fn oversize_split_delivers_every_byte() {
    let Some(m) = moto() else { return };
    let rec_ = Recorder::default();
    let mut cfg = raw_config("cw-split", &m.endpoint);
    cfg.max_event_size = 256 * 1024; // an endpoint that still enforces 256 KiB
    cfg.oversize_action = OversizeAction::Split;
    let out = output(cfg, &rec_, None).await;
    let g = unique("cw-split");
    let big: String = "\u{20ac}abc".repeat(200_000); // 1.2 MB, 3-byte characters inside
    let evs = vec![(ago(60), rec(&g, big.as_bytes()))];
    out.write(&chunk("t", &evs)).await.unwrap();
    let sent = rec_.sent_to(&g);
    sent.iter().for_each(Sent::assert_within_aws_limits);
    let pieces: Vec<String> = sent
        .iter()
        .flat_map(|s| s.events.iter().map(|e| e.1.clone()))
        .collect();
    assert!(pieces.iter().all(|p| p.len() + 26 <= 256 * 1024));
    assert_eq!(pieces.concat(), big);
    let c = client(&m.endpoint, &Recorder::default()).await;
    let got: Vec<String> = stored(&c, &g, "agg-test")
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(got.concat(), big);
}

#[tokio::test]
async fn a_twenty_five_hour_span_is_cut_into_requests_under_24_hours() {
    let Some(m) = moto() else { return };
    let rec_ = Recorder::default();
    let out = output(raw_config("cw-span", &m.endpoint), &rec_, None).await;
    let g = unique("cw-span");
    let end = ago(60).secs();
    let evs: Vec<(EventTime, Record)> = (0..=25u32)
        .map(|h| {
            (
                EventTime::from_secs(end - 25 * 3600 + h * 3600),
                rec(&g, format!("h{h}").as_bytes()),
            )
        })
        .collect();
    out.write(&chunk("t", &evs)).await.unwrap();
    let sent = rec_.sent_to(&g);
    sent.iter().for_each(Sent::assert_within_aws_limits);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].span_ms(), 23 * 3600 * 1000);
    let c = client(&m.endpoint, &Recorder::default()).await;
    assert_eq!(stored(&c, &g, "agg-test").await.len(), 26);
}

#[tokio::test]
async fn unsorted_input_is_sent_sorted() {
    let Some(m) = moto() else { return };
    let rec_ = Recorder::default();
    let out = output(raw_config("cw-sort", &m.endpoint), &rec_, None).await;
    let g = unique("cw-sort");
    let t = ago(3600).secs();
    let order = [5u32, 1, 4, 1, 3, 9, 2, 6];
    let evs: Vec<(EventTime, Record)> = order
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                EventTime::from_secs(t + s),
                rec(&g, format!("{s}-{i}").as_bytes()),
            )
        })
        .collect();
    // moto itself refuses unsorted requests (InvalidParameterException): success proves it too.
    out.write(&chunk("t", &evs)).await.unwrap();
    let sent = rec_.sent_to(&g);
    assert_eq!(sent.len(), 1);
    let msgs: Vec<&str> = sent[0].events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        msgs,
        ["1-1", "1-3", "2-6", "3-4", "4-2", "5-0", "6-7", "9-5"]
    );
}

#[tokio::test]
async fn multibyte_and_invalid_utf8_are_sent_as_valid_utf8_and_sized_in_bytes() {
    let Some(m) = moto() else { return };
    let rec_ = Recorder::default();
    let out = output(raw_config("cw-utf8", &m.endpoint), &rec_, None).await;
    let g = unique("cw-utf8");
    let t = ago(600).secs();
    // 524,275 two-byte characters = 1,048,550 bytes: a full request on its own, not truncated.
    let wide = "\u{e9}".repeat(524_275);
    let evs = vec![
        (
            EventTime::from_secs(t),
            rec(&g, "caf\u{e9} \u{20ac} \u{1F600}".as_bytes()),
        ),
        (
            EventTime::from_secs(t + 1),
            rec(&g, b"bad \xff\xfe end \xe2\x82"),
        ),
        (EventTime::from_secs(t + 2), rec(&g, wide.as_bytes())),
        (EventTime::from_secs(t + 3), rec(&g, b"x")),
    ];
    out.write(&chunk("t", &evs)).await.unwrap();
    let sent = rec_.sent_to(&g);
    sent.iter().for_each(Sent::assert_within_aws_limits);
    let sizes: Vec<usize> = sent.iter().map(|s| s.events.len()).collect();
    assert_eq!(sizes, vec![2, 1, 1]);
    assert_eq!(sent[1].aws_bytes(), 1_048_576);
    assert_eq!(out.stats().oversize.get("truncated").get(), 0);
    assert_eq!(out.stats().invalid_utf8.get("events").get(), 1);
    // \xff, \xfe and the cut-off \xe2\x82: three sequences replaced.
    assert_eq!(out.stats().invalid_utf8.get("sequences").get(), 3);
    let c = client(&m.endpoint, &Recorder::default()).await;
    let got: Vec<String> = stored(&c, &g, "agg-test")
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(got[0], "caf\u{e9} \u{20ac} \u{1F600}");
    assert_eq!(got[1], "bad \u{FFFD}\u{FFFD} end \u{FFFD}");
    assert_eq!(got[2], wide);
}

/// moto answers `rejectedLogEventsInfo`, but with the index of the last too-old event and
/// the last too-new one, where AWS documents an exclusive end and an inclusive start (moto
/// 5.2.5, `logs/models.py`). Read with AWS's semantics, moto's answer undercounts each reason
/// by one; the exact counts are checked against an AWS-shaped answer in
/// `cloudwatch_wire.rs`. What moto shows for sure: the valid events are stored, the request
/// is not retried, and both reasons are counted.
#[tokio::test]
async fn too_old_and_too_new_events_are_counted_and_the_rest_delivered() {
    let Some(m) = moto() else { return };
    let rec_ = Recorder::default();
    let mut cfg = raw_config("cw-rejected", &m.endpoint);
    cfg.log_rejected_request = true;
    let out = output(cfg, &rec_, None).await;
    let g = unique("cw-rejected");
    let now = now().secs();
    let mut evs = Vec::new();
    for i in 0..3 {
        evs.push((
            EventTime::from_secs(now - 15 * 86_400 + i),
            rec(&g, format!("old{i}").as_bytes()),
        ));
    }
    for i in 0..4 {
        evs.push((
            EventTime::from_secs(now - 60 + i),
            rec(&g, format!("ok{i}").as_bytes()),
        ));
    }
    for i in 0..2 {
        evs.push((
            EventTime::from_secs(now + 3 * 3600 + i),
            rec(&g, format!("new{i}").as_bytes()),
        ));
    }
    out.write(&chunk("t", &evs)).await.unwrap();
    // Two requests (15 days ago and now are more than 24 h apart), each sent once: rejected
    // events are never retried.
    let sent = rec_.sent_to(&g);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent.iter().map(|s| s.events.len()).sum::<usize>(), 9);
    let c = client(&m.endpoint, &Recorder::default()).await;
    let got: Vec<String> = stored(&c, &g, "agg-test")
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(got, ["ok0", "ok1", "ok2", "ok3"]);
    let s = out.stats();
    let (old, new) = (
        s.rejected.get("too_old").get(),
        s.rejected.get("too_new").get(),
    );
    assert!((2..=3).contains(&old), "too_old {old}");
    assert!((1..=2).contains(&new), "too_new {new}");
    assert_eq!(s.rejected.get("expired").get(), 0);
}

#[tokio::test]
async fn a_group_deleted_out_of_band_is_recreated_with_retention_and_tags() {
    let Some(m) = moto() else { return };
    let rec_ = Recorder::default();
    let mut cfg = raw_config("cw-recreate", &m.endpoint);
    cfg.retention_in_days = Some(14);
    cfg.log_group_aws_tags = vec![("team".into(), "platform".into())];
    let out = output(cfg, &rec_, None).await;
    let g = unique("cw-recreate");
    let c = client(&m.endpoint, &Recorder::default()).await;
    out.write(&chunk("t", &[(ago(60), rec(&g, b"one"))]))
        .await
        .unwrap();
    let groups = c
        .describe_log_groups()
        .log_group_name_prefix(&g)
        .send()
        .await
        .unwrap();
    assert_eq!(groups.log_groups()[0].retention_in_days(), Some(14));
    // The deprecated call: the simplest one moto answers by group name.
    #[allow(deprecated)]
    let tags = c
        .list_tags_log_group()
        .log_group_name(&g)
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags.tags().and_then(|t| t.get("team")).map(String::as_str),
        Some("platform")
    );

    c.delete_log_group()
        .log_group_name(&g)
        .send()
        .await
        .unwrap();
    out.write(&chunk("t", &[(ago(30), rec(&g, b"two"))]))
        .await
        .unwrap();
    let got: Vec<String> = stored(&c, &g, "agg-test")
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(got, ["two"]);
    let s = out.stats();
    assert_eq!(s.service.created.get("group").get(), 2);
    assert_eq!(s.request_errors.get("resource_not_found").get(), 1);
    // A second output (another aggregator) finds the group: AlreadyExists is fine.
    let other = output(raw_config("cw-recreate-2", &m.endpoint), &rec_, None).await;
    other
        .write(&chunk("t", &[(ago(10), rec(&g, b"three"))]))
        .await
        .unwrap();
    assert_eq!(stored(&c, &g, "agg-test").await.len(), 2);
    assert_eq!(sorted(stored(&c, &g, "agg-test").await).len(), 2);
}
