//! Talking to CloudWatch Logs: the four calls the output makes ([`LogsApi`], implemented on
//! the AWS SDK by [`SdkLogs`]; tests substitute fakes), and [`Service`], which adds what the
//! output needs around them:
//!
//! * **creation with caches**: with `auto_create_stream`, the first batch for a (group,
//!   stream) creates the group (with `log_group_aws_tags`, then `retention_in_days`) and the
//!   stream; `ResourceAlreadyExistsException` is success; both are remembered, so later
//!   batches go straight to `PutLogEvents`. No `Describe*` call is ever made (those APIs have
//!   low, fixed quotas). Retention and tags are applied only to groups this process creates.
//! * **out-of-band deletion**: [`Service::forget`] drops a (group, stream) from the caches
//!   after `ResourceNotFoundException`, so the next attempt recreates it.
//! * **sequence tokens, legacy only**: none are sent. If an endpoint still answers
//!   `InvalidSequenceTokenException`, that stream switches to legacy mode: puts to it are
//!   serialised, the expected token is sent at once, and the next token is remembered.
//!   `DataAlreadyAcceptedException` means the batch was stored by an earlier attempt whose
//!   reply was lost: the batch counts as delivered (sending it again would duplicate it).

use super::batch::{LogEvent, RejectedInfo, StreamKey};
use super::errors::{from_sdk, ApiError, ErrorKind};
use nagare_core::metrics::{Counter, ReasonCounters};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// What `PutLogEvents` answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOutcome {
    pub rejected: RejectedInfo,
    pub next_sequence_token: Option<String>,
    /// A legacy endpoint said `DataAlreadyAcceptedException`.
    pub already_accepted: bool,
}

/// The CloudWatch Logs calls the output makes.
#[async_trait::async_trait]
pub trait LogsApi: Send + Sync + 'static {
    async fn put_log_events(
        &self,
        group: &str,
        stream: &str,
        events: &[LogEvent],
        sequence_token: Option<&str>,
    ) -> Result<PutOutcome, ApiError>;
    async fn create_log_group(
        &self,
        group: &str,
        tags: &[(String, String)],
    ) -> Result<(), ApiError>;
    async fn create_log_stream(&self, group: &str, stream: &str) -> Result<(), ApiError>;
    async fn put_retention_policy(&self, group: &str, days: u32) -> Result<(), ApiError>;
}

/// [`LogsApi`] on the AWS SDK client.
#[derive(Debug, Clone)]
pub struct SdkLogs {
    client: aws_sdk_cloudwatchlogs::Client,
}

impl SdkLogs {
    pub fn new(client: aws_sdk_cloudwatchlogs::Client) -> Self {
        SdkLogs { client }
    }
}

#[async_trait::async_trait]
impl LogsApi for SdkLogs {
    async fn put_log_events(
        &self,
        group: &str,
        stream: &str,
        events: &[LogEvent],
        sequence_token: Option<&str>,
    ) -> Result<PutOutcome, ApiError> {
        use aws_sdk_cloudwatchlogs::operation::put_log_events::PutLogEventsError as E;
        use aws_sdk_cloudwatchlogs::types::InputLogEvent;
        const OP: &str = "PutLogEvents";
        let mut list = Vec::with_capacity(events.len());
        for e in events {
            list.push(
                InputLogEvent::builder()
                    .timestamp(e.timestamp)
                    .message(e.message.clone())
                    .build()
                    .map_err(|x| ApiError::new(OP, ErrorKind::InvalidRequest, x.to_string()))?,
            );
        }
        let res = self
            .client
            .put_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .set_log_events(Some(list))
            .set_sequence_token(sequence_token.map(str::to_string))
            .send()
            .await;
        match res {
            Ok(out) => {
                let rejected = out
                    .rejected_log_events_info()
                    .map(|r| RejectedInfo {
                        too_old_end: r.too_old_log_event_end_index(),
                        too_new_start: r.too_new_log_event_start_index(),
                        expired_end: r.expired_log_event_end_index(),
                    })
                    .unwrap_or_default();
                Ok(PutOutcome {
                    rejected,
                    next_sequence_token: out.next_sequence_token().map(str::to_string),
                    already_accepted: false,
                })
            }
            Err(err) => {
                let token = match err.as_service_error() {
                    Some(E::InvalidSequenceTokenException(x)) => {
                        x.expected_sequence_token().map(str::to_string)
                    }
                    Some(E::DataAlreadyAcceptedException(x)) => {
                        x.expected_sequence_token().map(str::to_string)
                    }
                    _ => None,
                };
                Err(from_sdk(OP, &err).with_token(token))
            }
        }
    }

    async fn create_log_group(
        &self,
        group: &str,
        tags: &[(String, String)],
    ) -> Result<(), ApiError> {
        let mut req = self.client.create_log_group().log_group_name(group);
        for (k, v) in tags {
            req = req.tags(k, v);
        }
        req.send()
            .await
            .map(|_| ())
            .map_err(|e| from_sdk("CreateLogGroup", &e))
    }

    async fn create_log_stream(&self, group: &str, stream: &str) -> Result<(), ApiError> {
        self.client
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(stream)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| from_sdk("CreateLogStream", &e))
    }

    async fn put_retention_policy(&self, group: &str, days: u32) -> Result<(), ApiError> {
        self.client
            .put_retention_policy()
            .log_group_name(group)
            .retention_in_days(days as i32)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| from_sdk("PutRetentionPolicy", &e))
    }
}

/// [`SdkLogs`] built on first use: the SDK configuration (credential chain, IMDS, STS) loads
/// asynchronously, while outputs are built synchronously from the configuration.
pub struct LazySdkLogs {
    settings: crate::AwsSettings,
    cell: tokio::sync::OnceCell<SdkLogs>,
}

impl LazySdkLogs {
    pub fn new(settings: crate::AwsSettings) -> Self {
        LazySdkLogs {
            settings,
            cell: tokio::sync::OnceCell::new(),
        }
    }

    async fn get(&self) -> &SdkLogs {
        self.cell
            .get_or_init(|| async {
                let sdk = crate::client::sdk_config(&self.settings).await;
                SdkLogs::new(aws_sdk_cloudwatchlogs::Client::new(&sdk))
            })
            .await
    }
}

#[async_trait::async_trait]
impl LogsApi for LazySdkLogs {
    async fn put_log_events(
        &self,
        group: &str,
        stream: &str,
        events: &[LogEvent],
        sequence_token: Option<&str>,
    ) -> Result<PutOutcome, ApiError> {
        self.get()
            .await
            .put_log_events(group, stream, events, sequence_token)
            .await
    }
    async fn create_log_group(
        &self,
        group: &str,
        tags: &[(String, String)],
    ) -> Result<(), ApiError> {
        self.get().await.create_log_group(group, tags).await
    }
    async fn create_log_stream(&self, group: &str, stream: &str) -> Result<(), ApiError> {
        self.get().await.create_log_stream(group, stream).await
    }
    async fn put_retention_policy(&self, group: &str, days: u32) -> Result<(), ApiError> {
        self.get().await.put_retention_policy(group, days).await
    }
}

/// Counters the service keeps (part of the output's metrics).
#[derive(Debug, Clone)]
pub struct ServiceStats {
    /// Groups and streams created (`reason` = `group` / `stream`).
    pub created: ReasonCounters,
    /// `PutRetentionPolicy` calls that failed (the group exists; logged, not retried).
    pub retention_failed: Counter,
    /// Legacy sequence-token answers handled (`reason` = `invalid_sequence_token` /
    /// `data_already_accepted`).
    pub legacy: ReasonCounters,
}

/// Creation of groups and streams (cached), and puts with legacy token handling.
pub struct Service {
    api: Arc<dyn LogsApi>,
    auto_create: bool,
    tags: Vec<(String, String)>,
    groups: Mutex<HashSet<Arc<str>>>,
    streams: Mutex<HashSet<StreamKey>>,
    legacy: Mutex<HashMap<StreamKey, Arc<tokio::sync::Mutex<Option<String>>>>>,
    stats: ServiceStats,
}

/// `InvalidSequenceTokenException` answers followed in one put before giving up.
const MAX_TOKEN_ROUNDS: usize = 4;

impl Service {
    pub fn new(
        api: Arc<dyn LogsApi>,
        auto_create: bool,
        tags: Vec<(String, String)>,
        stats: ServiceStats,
    ) -> Self {
        Service {
            api,
            auto_create,
            tags,
            groups: Mutex::new(HashSet::new()),
            streams: Mutex::new(HashSet::new()),
            legacy: Mutex::new(HashMap::new()),
            stats,
        }
    }

    pub fn auto_create(&self) -> bool {
        self.auto_create
    }

    /// Makes sure the group and stream exist (no-op without `auto_create_stream`, or once
    /// cached). `retention` applies to a group created here.
    pub async fn ensure_stream(
        &self,
        key: &StreamKey,
        retention: Option<u32>,
    ) -> Result<(), ApiError> {
        if !self.auto_create || lock(&self.streams).contains(key) {
            return Ok(());
        }
        // A CreateLogGroup refused for lack of permission (groups made by Terraform, the
        // policy without logs:CreateLogGroup, as deploy/iam suggests): the group may exist,
        // so the stream is still created. If it does not, that refusal is the error to report.
        let mut group_denied = None;
        if !lock(&self.groups).contains(&key.group) {
            match self.api.create_log_group(&key.group, &self.tags).await {
                Ok(()) => {
                    self.stats.created.inc("group");
                    tracing::info!(group = %key.group, "created log group");
                    if let Some(days) = retention {
                        if let Err(e) = self.api.put_retention_policy(&key.group, days).await {
                            self.stats.retention_failed.inc();
                            tracing::warn!(group = %key.group, days, error = %e, "could not set the retention of a new log group");
                        }
                    }
                }
                Err(e) if e.kind == ErrorKind::ResourceAlreadyExists => {}
                Err(e) if e.kind == ErrorKind::Auth => {
                    tracing::debug!(group = %key.group, error = %e, "not allowed to create the log group; creating the stream in it");
                    group_denied = Some(e);
                }
                Err(e) => return Err(e),
            }
            if group_denied.is_none() {
                lock(&self.groups).insert(key.group.clone());
            }
        }
        match self.api.create_log_stream(&key.group, &key.stream).await {
            Ok(()) => {
                self.stats.created.inc("stream");
                tracing::info!(group = %key.group, stream = %key.stream, "created log stream");
            }
            Err(e) if e.kind == ErrorKind::ResourceAlreadyExists => {}
            Err(e) => {
                if e.kind == ErrorKind::ResourceNotFound {
                    lock(&self.groups).remove(&key.group);
                    if let Some(denied) = group_denied {
                        return Err(denied);
                    }
                }
                return Err(e);
            }
        }
        lock(&self.streams).insert(key.clone());
        Ok(())
    }

    /// Forgets a (group, stream) after `ResourceNotFoundException`: the group may be gone too.
    pub fn forget(&self, key: &StreamKey) {
        lock(&self.streams).retain(|k| k.group != key.group);
        lock(&self.groups).remove(&key.group);
    }

    fn legacy_slot(
        &self,
        key: &StreamKey,
        create: bool,
    ) -> Option<Arc<tokio::sync::Mutex<Option<String>>>> {
        let mut m = lock(&self.legacy);
        if create {
            Some(m.entry(key.clone()).or_default().clone())
        } else {
            m.get(key).cloned()
        }
    }

    /// One `PutLogEvents`, following legacy sequence-token answers.
    pub async fn put(&self, key: &StreamKey, events: &[LogEvent]) -> Result<PutOutcome, ApiError> {
        let mut guard = match self.legacy_slot(key, false) {
            Some(s) => Some(s.lock_owned().await),
            None => None,
        };
        let mut token: Option<String> = guard.as_ref().and_then(|g| (**g).clone());
        let mut last = None;
        for _ in 0..MAX_TOKEN_ROUNDS {
            match self
                .api
                .put_log_events(&key.group, &key.stream, events, token.as_deref())
                .await
            {
                Ok(out) => {
                    if let Some(g) = guard.as_mut() {
                        **g = out.next_sequence_token.clone();
                    }
                    return Ok(out);
                }
                Err(e) if e.kind == ErrorKind::InvalidSequenceToken => {
                    self.stats.legacy.inc("invalid_sequence_token");
                    if guard.is_none() {
                        tracing::warn!(group = %key.group, stream = %key.stream, "endpoint still uses sequence tokens: puts to this stream are serialised");
                        let slot = self.legacy_slot(key, true).expect("created");
                        guard = Some(slot.lock_owned().await);
                    }
                    token = e.expected_sequence_token.clone();
                    last = Some(e);
                }
                Err(e) if e.kind == ErrorKind::DataAlreadyAccepted => {
                    self.stats.legacy.inc("data_already_accepted");
                    if guard.is_none() {
                        let slot = self.legacy_slot(key, true).expect("created");
                        guard = Some(slot.lock_owned().await);
                    }
                    if let Some(g) = guard.as_mut() {
                        **g = e.expected_sequence_token.clone();
                    }
                    return Ok(PutOutcome {
                        next_sequence_token: e.expected_sequence_token,
                        already_accepted: true,
                        ..Default::default()
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            ApiError::new(
                "PutLogEvents",
                ErrorKind::InvalidSequenceToken,
                "token rounds exhausted",
            )
        }))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
