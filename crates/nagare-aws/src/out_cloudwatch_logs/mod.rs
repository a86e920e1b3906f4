//! `@type cloudwatch_logs`: events to CloudWatch Logs with `PutLogEvents`.
//!
//! ```text
//! chunk ──decode──> per event: group, stream, message ──> Batcher (batch.rs, pure)
//!                   (names.rs checks record-derived names;      │ sorted, 10,000 events,
//!                    invalid -> fallback group / secondary)     │ 1,048,576 B incl. 26/event,
//!                                                               v < 24 h, oversize handled
//!   Progress[chunk id] ──skip batches already accepted──> batch 0..n ──> Service (service.rs)
//!                                                          │ ensure group/stream (cached)
//!                                                          │ token bucket (ratelimit.rs)
//!                                                          │ PutLogEvents, retry (retry.rs)
//!                                                          v
//!                               accepted: mark done; rejectedLogEventsInfo counted by reason
//! ```
//!
//! Files: `config.rs` (settings, validated once), `plan.rs` (chunk -> events with group,
//! stream and message), `batch.rs` (pure batching, oversize, UTF-8, `rejectedLogEventsInfo`),
//! `names.rs` (AWS name patterns, retention values), `service.rs` (the API calls, creation
//! caches, legacy tokens), `retry.rs` (in-write backoff), `ratelimit.rs`
//! (`put_log_events_rate`), `progress.rs` (accepted batches per chunk), `errors.rs` (error
//! kinds), `stats.rs` (counters), `tests.rs` (the output against a scripted fake API).
//!
//! # Only the failed request is retried
//!
//! A chunk may hold several batches (several groups or streams, or more than one request's
//! worth of events). Batching is a pure function of the chunk bytes and the settings, so a
//! chunk always gives the same batches in the same order. The output remembers, per chunk id,
//! which batch indices were accepted (and whether the chunk's one-off work — counting,
//! sending invalid or oversized events to the secondary — was done). When batch *k* fails
//! and the buffer later retries the chunk, `write` skips every batch already accepted and
//! starts again at the failed ones: nothing accepted is sent twice, nothing is skipped.
//! The memory is dropped when the chunk is fully delivered, and capped at
//! [`config::DEFAULT_PROGRESS_CAPACITY`] chunks (oldest forgotten first).
//!
//! **Across a restart** the memory is gone: a chunk that was partly delivered before the
//! process stopped (possible only with a file buffer, which keeps the chunk) is sent whole
//! again, so the batches accepted before the stop appear twice in CloudWatch. Delivery is
//! at-least-once across restarts and exactly-once within a process (barring a response lost
//! in flight, which no CloudWatch client can tell from a failure: AWS has no dedupe since
//! sequence tokens went away in 2023).
//!
//! # What never stops the output
//!
//! An oversized event is truncated, split or dropped (counted) before batching; a rejected
//! event (too old, too new, expired) is counted by reason and never retried; an invalid
//! record-derived name sends that event to the fallback group or the secondary. None of
//! them fails a batch. Throttling, 5xx and network errors are retried (first here, then by
//! the buffer); nothing is discarded while the buffer holds the chunk.
//!
//! # Metrics (label `plugin_id`)
//!
//! `nagare_cloudwatch_events_total` (accepted), `nagare_cloudwatch_requests_total`,
//! `nagare_cloudwatch_request_errors_total{reason}` (error kinds), `nagare_cloudwatch_retries_total`,
//! `nagare_cloudwatch_skipped_batches_total` (already accepted, not resent),
//! `nagare_cloudwatch_rejected_events_total{reason=too_old|too_new|expired}`,
//! `nagare_cloudwatch_oversize_events_total{reason=truncated|split|dropped}`,
//! `nagare_cloudwatch_invalid_utf8_total{reason=events|sequences}`,
//! `nagare_cloudwatch_invalid_names_total{reason=missing_group|invalid_group|missing_stream|invalid_stream}`,
//! `nagare_cloudwatch_rerouted_events_total{reason=fallback_group|secondary}`,
//! `nagare_cloudwatch_dropped_events_total{reason}`, `nagare_cloudwatch_created_total{reason=group|stream}`,
//! `nagare_cloudwatch_legacy_token_total{reason}`.

pub mod batch;
pub mod config;
pub mod errors;
pub mod names;
mod plan;
mod progress;
pub mod ratelimit;
pub mod retry;
pub mod service;
mod stats;

use batch::Batch;
use config::{CloudWatchLogsConfig, InvalidConfig};
use errors::{ApiError, ErrorKind};
use nagare_core::ratelimit::LogLimiter;
use nagare_core::{Chunk, EventSink, EventStream, Output, WriteError};
use plan::{ChunkPlan, EntryPos};
use progress::ProgressMap;
use ratelimit::TokenBucket;
use retry::Next;
use service::{LogsApi, PutOutcome, SdkLogs, Service};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The SDK crate, for callers that build clients or read back what was sent (tests).
pub use aws_sdk_cloudwatchlogs as sdk;
pub use batch::{Limits, OversizeAction, RejectReason, RejectedInfo};
pub use config::CloudWatchLogsConfig as Config;
pub use stats::Stats;

/// The cloudwatch_logs output.
pub struct CloudWatchLogs {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: CloudWatchLogsConfig,
    limits: Limits,
    service: Service,
    rate: Option<Arc<TokenBucket>>,
    dead_letter: Option<Arc<dyn EventSink>>,
    progress: Mutex<ProgressMap>,
    stats: Stats,
    logs: LogLimiter,
}

impl CloudWatchLogs {
    /// Builds the output on the AWS SDK (credentials, region and endpoint from `cfg.aws`).
    pub async fn connect(
        cfg: CloudWatchLogsConfig,
        dead_letter: Option<Arc<dyn EventSink>>,
    ) -> Result<Self, InvalidConfig> {
        cfg.validate()?;
        let sdk = crate::client::sdk_config(&cfg.aws).await;
        let client = aws_sdk_cloudwatchlogs::Client::new(&sdk);
        Self::try_new(cfg, Arc::new(SdkLogs::new(client)), dead_letter)
    }

    /// Builds the output now and its SDK client on first use (synchronous, for plugin
    /// builders: the credential chain loads asynchronously).
    pub fn new_lazy(
        cfg: CloudWatchLogsConfig,
        dead_letter: Option<Arc<dyn EventSink>>,
    ) -> Result<Self, InvalidConfig> {
        let api = Arc::new(service::LazySdkLogs::new(cfg.aws.clone()));
        Self::try_new(cfg, api, dead_letter)
    }

    /// Builds the output on any [`LogsApi`] (an SDK client with interceptors, a fake).
    pub fn try_new(
        cfg: CloudWatchLogsConfig,
        api: Arc<dyn LogsApi>,
        dead_letter: Option<Arc<dyn EventSink>>,
    ) -> Result<Self, InvalidConfig> {
        cfg.validate()?;
        let stats = Stats::new(&cfg.id);
        let rate = cfg.put_log_events_rate.map(|r| {
            let key = format!(
                "{}|{}",
                cfg.aws.region.as_deref().unwrap_or(""),
                cfg.aws.endpoint.as_deref().unwrap_or("")
            );
            ratelimit::shared(&key, r)
        });
        let service = Service::new(
            api,
            cfg.auto_create_stream,
            cfg.log_group_aws_tags.clone(),
            stats.service.clone(),
        );
        Ok(CloudWatchLogs {
            inner: Arc::new(Inner {
                limits: cfg.limits(),
                progress: Mutex::new(ProgressMap::new(cfg.progress_capacity)),
                cfg,
                service,
                rate,
                dead_letter,
                stats,
                logs: LogLimiter::default(),
            }),
        })
    }

    /// The output's counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Chunks with remembered progress (tests: empty once everything was delivered).
    pub fn chunks_in_progress(&self) -> usize {
        lock(&self.inner.progress).map.len()
    }

    /// The batches `chunk` gives (pure; for tests and benchmarks).
    pub fn plan_batches(&self, chunk: &Chunk) -> Vec<Arc<Batch>> {
        self.inner.plan(chunk).batches
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    /// Sends events to the secondary, or counts them as dropped. Returns how many went.
    async fn dead_letter(
        &self,
        chunk: &Chunk,
        entries: &[EntryPos],
        mut origins: Vec<u32>,
        reason: &'static str,
    ) {
        if origins.is_empty() {
            return;
        }
        let events = Self::events_of(chunk, entries, &mut origins);
        let n = events.len() as u64;
        match &self.dead_letter {
            Some(dl) => match dl.emit(EventStream::new(chunk.tag.clone(), events)).await {
                Ok(_) => self.stats.rerouted.add("secondary", n),
                Err(e) => {
                    self.stats.dropped.add("secondary_failed", n);
                    tracing::error!(plugin_id = %self.cfg.id, events = n, reason, error = %e, "secondary refused events; dropped");
                }
            },
            None => {
                self.stats.dropped.add(reason, n);
                if self.logs.check(reason).is_some() {
                    tracing::warn!(plugin_id = %self.cfg.id, events = n, reason, "events dropped (no <secondary>)");
                }
            }
        }
    }

    /// The one-off work of a chunk: counters and events that do not go to CloudWatch.
    async fn prelude(&self, chunk: &Chunk, plan: &ChunkPlan) {
        let s = &self.stats;
        let b = &plan.stats;
        s.oversize.add("truncated", b.truncated);
        s.oversize.add("split", b.split);
        s.oversize.add("dropped", b.dropped_oversize);
        s.invalid_utf8.add("events", b.invalid_utf8_events);
        s.invalid_utf8.add("sequences", b.invalid_utf8_sequences);
        for (r, n) in &plan.invalid_names {
            s.invalid_names.add(r, *n);
        }
        s.rerouted.add("fallback_group", plan.fallback);
        if plan.undecodable > 0 {
            s.dropped.add("undecodable", plan.undecodable);
            tracing::error!(plugin_id = %self.cfg.id, chunk = %chunk.id.hex(), entries = plan.undecodable, "undecodable chunk entries dropped");
        }
        if !plan.invalid_names.is_empty() && self.logs.check("names").is_some() {
            tracing::warn!(plugin_id = %self.cfg.id, counts = ?plan.invalid_names, fallback = plan.fallback, "events with a missing or invalid group/stream name");
        }
        for reason in ["invalid_name", "oversize", "empty_message"] {
            let origins: Vec<u32> = plan
                .dead
                .iter()
                .filter(|(_, r)| *r == reason)
                .map(|(o, _)| *o)
                .collect();
            self.dead_letter(chunk, &plan.entries, origins, reason)
                .await;
        }
    }

    /// Sends one batch, retrying inside the write as the policy allows.
    async fn send_batch(
        self: Arc<Self>,
        batch: Arc<Batch>,
        retention: Option<u32>,
    ) -> Result<PutOutcome, (ApiError, Next)> {
        let mut backoff = self.cfg.retry.backoff();
        let mut recreated = false;
        loop {
            let res = async {
                self.service
                    .ensure_stream(&batch.key, retention.or(self.cfg.retention_in_days))
                    .await?;
                if let Some(rl) = &self.rate {
                    rl.acquire().await;
                }
                self.service.put(&batch.key, &batch.events).await
            }
            .await;
            let e = match res {
                Ok(out) => {
                    self.stats.requests.inc();
                    return Ok(out);
                }
                Err(e) => e,
            };
            self.stats.request_errors.inc(e.kind.label());
            if e.kind == ErrorKind::ResourceNotFound && self.service.auto_create() && !recreated {
                recreated = true;
                tracing::warn!(plugin_id = %self.cfg.id, group = %batch.key.group, stream = %batch.key.stream, "log group or stream is gone; recreating it");
                self.service.forget(&batch.key);
                continue;
            }
            match self.cfg.retry.next(&e, &mut backoff) {
                Next::RetryAfter(wait) => {
                    self.stats.retries.inc();
                    if self.logs.check(e.kind.label()).is_some() {
                        tracing::warn!(plugin_id = %self.cfg.id, group = %batch.key.group, stream = %batch.key.stream, error = %e, wait_ms = wait.as_millis() as u64, "PutLogEvents failed; retrying this request");
                    }
                    tokio::time::sleep(wait).await;
                }
                next => return Err((e, next)),
            }
        }
    }

    /// Counts (and maybe reroutes) the events CloudWatch rejected in an accepted request.
    async fn handle_rejected(
        &self,
        chunk: &Chunk,
        plan: &ChunkPlan,
        batch: &Batch,
        out: &PutOutcome,
    ) {
        let rejected = out.rejected.rejected(batch.events.len());
        let accepted = (batch.events.len() - rejected.len()) as u64;
        self.stats.events.add(accepted);
        if rejected.is_empty() {
            return;
        }
        let mut by: HashMap<RejectReason, u64> = HashMap::new();
        for (_, r) in &rejected {
            *by.entry(*r).or_default() += 1;
        }
        for (r, n) in &by {
            self.stats.rejected.add(r.label(), *n);
        }
        if self.cfg.log_rejected_request {
            tracing::warn!(plugin_id = %self.cfg.id, group = %batch.key.group, stream = %batch.key.stream, too_old = by.get(&RejectReason::TooOld).copied().unwrap_or(0), too_new = by.get(&RejectReason::TooNew).copied().unwrap_or(0), expired = by.get(&RejectReason::Expired).copied().unwrap_or(0), "CloudWatch Logs rejected events");
        }
        if self.cfg.rejected_events_to_secondary && self.dead_letter.is_some() {
            let origins = rejected
                .iter()
                .map(|(i, _)| batch.events[*i].origin)
                .collect();
            self.dead_letter(chunk, &plan.entries, origins, "rejected")
                .await;
        }
    }

    async fn write(self: &Arc<Self>, chunk: &Chunk) -> Result<(), WriteError> {
        let plan = self.plan(chunk);
        let n = plan.batches.len();
        let progress = lock(&self.progress).begin(chunk.id, n);
        if !progress.prelude_done {
            self.prelude(chunk, &plan).await;
            lock(&self.progress).mark_prelude(chunk.id);
        }
        let pending: Vec<usize> = (0..n).filter(|i| !progress.done[*i]).collect();
        let skipped = (n - pending.len()) as u64;
        if skipped > 0 {
            self.stats.skipped_batches.add(skipped);
            tracing::debug!(plugin_id = %self.cfg.id, chunk = %chunk.id.hex(), skipped, "retry: batches accepted before are not sent again");
        }
        let mut queue = pending.into_iter();
        let mut running = tokio::task::JoinSet::new();
        let mut failure: Option<(ApiError, Next)> = None;
        loop {
            while failure.is_none() && running.len() < self.cfg.concurrency {
                let Some(i) = queue.next() else { break };
                let batch = plan.batches[i].clone();
                let retention = plan.retention.get(&batch.key.group).copied();
                let me = self.clone();
                let id = chunk.id;
                running.spawn(async move {
                    let res = me.clone().send_batch(batch, retention).await;
                    if res.is_ok() {
                        // Recorded here, not after the join: if the write is cancelled
                        // (shutdown) an accepted batch is still known as accepted.
                        lock(&me.progress).mark(id, i);
                    }
                    (i, res)
                });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (i, res) = match joined {
                Ok(x) => x,
                Err(e) => {
                    failure.get_or_insert((
                        ApiError::new(
                            "PutLogEvents",
                            ErrorKind::Other,
                            format!("task failed: {e}"),
                        ),
                        Next::Yield,
                    ));
                    continue;
                }
            };
            match res {
                Ok(out) => {
                    self.handle_rejected(chunk, &plan, &plan.batches[i], &out)
                        .await;
                }
                Err((e, Next::Fail)) if e.kind == ErrorKind::InvalidRequest => {
                    // The request itself is refused; retrying cannot help. Only this batch.
                    let batch = &plan.batches[i];
                    tracing::error!(plugin_id = %self.cfg.id, group = %batch.key.group, stream = %batch.key.stream, events = batch.events.len(), error = %e, "CloudWatch Logs refused a request");
                    lock(&self.progress).mark(chunk.id, i);
                    let origins = batch.events.iter().map(|e| e.origin).collect();
                    self.dead_letter(chunk, &plan.entries, origins, "invalid_request")
                        .await;
                }
                Err(f) => {
                    failure.get_or_insert(f);
                }
            }
        }
        match failure {
            None => {
                lock(&self.progress).map.remove(&chunk.id);
                Ok(())
            }
            Some((e, Next::Fail)) => {
                lock(&self.progress).map.remove(&chunk.id);
                Err(WriteError::Unrecoverable(e.to_string()))
            }
            Some((e, _)) => Err(WriteError::Retryable(e.to_string())),
        }
    }
}

#[async_trait::async_trait]
impl Output for CloudWatchLogs {
    async fn write(&self, chunk: &Chunk) -> Result<(), WriteError> {
        self.inner.write(chunk).await
    }
}

#[cfg(test)]
mod tests;
