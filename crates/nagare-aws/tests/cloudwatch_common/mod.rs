//! Shared by the `cloudwatch_*` test binaries: an SDK client on moto that records every
//! `PutLogEvents` request it sends (moto does not enforce the batch limits, so the tests
//! inspect what we send), chunk builders, a reader of what moto stored, and faultproxy.

#![allow(dead_code)]

#[path = "../common/moto.rs"]
pub mod moto;
#[allow(unused_imports)] // not every test binary that includes this module injects faults
pub use moto::FaultProxy;

use aws_sdk_cloudwatchlogs::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_cloudwatchlogs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_cloudwatchlogs::error::BoxError;
use bytes::BytesMut;
use nagare_aws::out_cloudwatch_logs::config::{CloudWatchLogsConfig, NameSource};
use nagare_aws::out_cloudwatch_logs::service::SdkLogs;
use nagare_aws::out_cloudwatch_logs::CloudWatchLogs;
use nagare_aws::{AwsSettings, Secret};
use nagare_core::{Chunk, ChunkId, ChunkKey, Event, EventSink, EventTime, Record, Tag};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One `PutLogEvents` request as it left the SDK.
#[derive(Debug, Clone)]
pub struct Sent {
    pub group: String,
    pub stream: String,
    /// (timestamp ms, message)
    pub events: Vec<(i64, String)>,
}

impl Sent {
    /// Size as AWS counts it: UTF-8 message bytes + 26 per event.
    pub fn aws_bytes(&self) -> usize {
        self.events.iter().map(|(_, m)| m.len() + 26).sum()
    }
    pub fn span_ms(&self) -> i64 {
        match (self.events.first(), self.events.last()) {
            (Some(a), Some(b)) => b.0 - a.0,
            _ => 0,
        }
    }
    /// Every limit AWS enforces on a request.
    pub fn assert_within_aws_limits(&self) {
        assert!(!self.events.is_empty());
        assert!(self.events.len() <= 10_000, "{} events", self.events.len());
        assert!(self.aws_bytes() <= 1_048_576, "{} bytes", self.aws_bytes());
        assert!(
            self.events.windows(2).all(|w| w[0].0 <= w[1].0),
            "not in time order"
        );
        assert!(
            self.span_ms() < 24 * 3600 * 1000,
            "span {} ms",
            self.span_ms()
        );
        for (_, m) in &self.events {
            assert!(m.len() + 26 <= 1_048_576, "event of {} bytes", m.len());
        }
    }
}

/// Records the body of every `PutLogEvents` request (SDK interceptor).
#[derive(Debug, Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<Sent>>>);

impl Recorder {
    pub fn sent(&self) -> Vec<Sent> {
        self.0.lock().unwrap().clone()
    }
    pub fn sent_to(&self, group: &str) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|s| s.group == group)
            .collect()
    }
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "nagare-test-recorder"
    }
    fn read_before_transmit(
        &self,
        ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let req = ctx.request();
        let target = req.headers().get("x-amz-target").unwrap_or("");
        if !target.ends_with("PutLogEvents") {
            return Ok(());
        }
        let body = req.body().bytes().expect("in-memory body");
        let v: serde_json::Value = serde_json::from_slice(body)?;
        let events = v["logEvents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["timestamp"].as_i64().unwrap(),
                    e["message"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        self.0.lock().unwrap().push(Sent {
            group: v["logGroupName"].as_str().unwrap().to_string(),
            stream: v["logStreamName"].as_str().unwrap().to_string(),
            events,
        });
        Ok(())
    }
}

/// Settings for `endpoint` with test keys, SDK retries off (our retry logic is under test).
pub fn aws(endpoint: &str) -> AwsSettings {
    AwsSettings {
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint.to_string()),
        access_key_id: Some("testing".into()),
        secret_access_key: Some(Secret("testing".into())),
        sdk_max_attempts: 1,
        operation_timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    }
}

/// An SDK client for `endpoint`, with the recorder.
pub async fn client(endpoint: &str, rec: &Recorder) -> aws_sdk_cloudwatchlogs::Client {
    let sdk = nagare_aws::client::sdk_config(&aws(endpoint)).await;
    let conf = aws_sdk_cloudwatchlogs::config::Builder::from(&sdk)
        .interceptor(rec.clone())
        .build();
    aws_sdk_cloudwatchlogs::Client::from_conf(conf)
}

/// Default test settings: group from `service`, the given stream, auto-create.
pub fn config(id: &str, endpoint: &str, stream: &str) -> CloudWatchLogsConfig {
    let mut c = CloudWatchLogsConfig::new(
        id,
        NameSource::Key("service".into()),
        NameSource::Static(stream.into()),
    );
    c.aws = aws(endpoint);
    c.auto_create_stream = true;
    c
}

/// The output on a recording SDK client.
pub async fn output(
    cfg: CloudWatchLogsConfig,
    rec: &Recorder,
    dead_letter: Option<Arc<dyn EventSink>>,
) -> CloudWatchLogs {
    let endpoint = cfg.aws.endpoint.clone().unwrap();
    let c = client(&endpoint, rec).await;
    CloudWatchLogs::try_new(cfg, Arc::new(SdkLogs::new(c)), dead_letter).unwrap()
}

/// A chunk of `[time, record]` entries (EventTime ext).
pub fn chunk(tag: &str, events: &[(EventTime, Record)]) -> Chunk {
    let mut out = BytesMut::new();
    for (t, r) in events {
        Event {
            time: *t,
            record: r.clone(),
        }
        .write_entry(&mut out, false);
    }
    Chunk {
        id: ChunkId::random(),
        tag: Tag::from(tag),
        key: ChunkKey::default(),
        bytes: out.freeze(),
        records: events.len(),
    }
}

/// Now, as EventTime (events must be within CloudWatch's -14 d .. +2 h window).
pub fn now() -> EventTime {
    EventTime::now()
}

/// `now - secs` seconds.
pub fn ago(secs: u32) -> EventTime {
    EventTime::new(now().secs() - secs, now().nanos())
}

/// Every event moto stored in a stream, oldest first.
pub async fn stored(
    c: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let r = c
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .start_from_head(true)
            .limit(10_000)
            .set_next_token(token.clone())
            .send()
            .await
            .expect("GetLogEvents");
        let evs = r.events();
        for e in evs {
            out.push((
                e.timestamp().unwrap_or_default(),
                e.message().unwrap_or_default().to_string(),
            ));
        }
        let next = r.next_forward_token().map(str::to_string);
        if evs.is_empty() || next.is_none() || next == token {
            break;
        }
        token = next;
    }
    out
}

/// Stream names of a group.
pub async fn streams(c: &aws_sdk_cloudwatchlogs::Client, group: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let r = c
            .describe_log_streams()
            .log_group_name(group)
            .set_next_token(token)
            .send()
            .await
            .expect("DescribeLogStreams");
        out.extend(
            r.log_streams()
                .iter()
                .filter_map(|s| s.log_stream_name().map(str::to_string)),
        );
        token = r.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    out
}
