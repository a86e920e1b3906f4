//! `@type cloudwatch_logs` settings: fluent-plugin-cloudwatch-logs' parameter names, plus
//! the few Nagare adds (marked *Nagare*). Validated once, by [`CloudWatchLogsConfig::validate`]
//! (called from `CloudWatchLogs::try_new`): a built output cannot hold an invalid setting.

use super::batch::{self, Limits, OversizeAction};
use super::names;
use super::retry::{self, RetryPolicy};
use crate::AwsSettings;
use std::time::Duration;

/// Default `max_events_per_batch` (the AWS maximum).
pub const DEFAULT_MAX_EVENTS_PER_BATCH: usize = batch::MAX_BATCH_EVENTS;
/// Default `time_key` for `include_time_key`.
pub const DEFAULT_TIME_KEY: &str = "time";
/// Default `concurrency`: `PutLogEvents` requests in flight per write.
pub const DEFAULT_CONCURRENCY: usize = 1;
/// Chunks whose per-batch progress is remembered between retries (oldest forgotten first).
pub const DEFAULT_PROGRESS_CAPACITY: usize = 4096;

/// Where the group (or stream) of an event comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameSource {
    /// `log_group_name` / `log_stream_name`.
    Static(String),
    /// `log_group_name_key` / `log_stream_name_key`: a top-level record key.
    Key(String),
    /// `use_tag_as_group` / `use_tag_as_stream`.
    Tag,
}

/// Settings of one cloudwatch_logs output.
#[derive(Debug, Clone)]
pub struct CloudWatchLogsConfig {
    /// `@id` (metrics label `plugin_id`).
    pub id: String,
    /// `region`, `endpoint`, `aws_key_id`, `aws_sec_key`, `<assume_role_credentials>`.
    pub aws: AwsSettings,
    /// `log_group_name` / `log_group_name_key` / `use_tag_as_group` (exactly one).
    pub group: NameSource,
    /// `remove_log_group_name_key`: drop the key from the message.
    pub remove_log_group_name_key: bool,
    /// `log_stream_name` / `log_stream_name_key` / `use_tag_as_stream` (exactly one; the
    /// aggregator's default is `log_stream_name` = the host name).
    pub stream: NameSource,
    /// `remove_log_stream_name_key`.
    pub remove_log_stream_name_key: bool,
    /// *Nagare* `log_group_name_prefix`: put before every group name taken from a record key
    /// or the tag (`/app/` + `condor`), so the names fall under one IAM resource prefix.
    /// Empty by default. Not with `log_group_name`; the fallback group is used as written.
    pub log_group_name_prefix: String,
    /// *Nagare* `fallback_log_group_name`: where events go whose record-derived group or
    /// stream name is missing or invalid (else the secondary, else they are dropped; always
    /// counted).
    pub fallback_log_group_name: Option<String>,
    /// *Nagare* `fallback_log_stream_name`: the stream used in the fallback group when the
    /// event's own stream name is unusable (the aggregator defaults it to the host name).
    pub fallback_log_stream_name: Option<String>,
    /// `auto_create_stream`: create missing groups and streams (cached; never `Describe*`).
    pub auto_create_stream: bool,
    /// `retention_in_days`: set on groups this output creates (allowed values only).
    pub retention_in_days: Option<u32>,
    /// `retention_in_days_key`: per-record retention for the group it creates.
    pub retention_in_days_key: Option<String>,
    /// `remove_retention_in_days_key`.
    pub remove_retention_in_days_key: bool,
    /// `log_group_aws_tags`: tags of groups this output creates.
    pub log_group_aws_tags: Vec<(String, String)>,
    /// `message_keys`: the message is these keys' values joined by a space (empty values
    /// skipped) instead of the whole record as JSON.
    pub message_keys: Vec<String>,
    /// `max_message_length`: cut messages to this many characters first.
    pub max_message_length: Option<usize>,
    /// `max_events_per_batch` (1..=10,000).
    pub max_events_per_batch: usize,
    /// *Nagare* `max_event_size`: one event's limit, message bytes + 26 (default 1 MiB; set
    /// `256k` for endpoints that still enforce the old limit).
    pub max_event_size: usize,
    /// *Nagare* `oversize_action`: `truncate` (default), `split` or `drop`.
    pub oversize_action: OversizeAction,
    /// *Nagare* `truncate_marker`: appended to truncated messages.
    pub truncate_marker: String,
    /// `include_time_key`: add the event time (ISO 8601, UTC) to the record as `time_key`.
    pub include_time_key: bool,
    /// `time_key`.
    pub time_key: String,
    /// `concurrency`: `PutLogEvents` requests in flight per write (no sequence tokens, so
    /// batches of one stream may go in parallel).
    pub concurrency: usize,
    /// *Nagare* `put_log_events_rate`: requests per second for the whole process (region and
    /// endpoint); `None` = unlimited.
    pub put_log_events_rate: Option<f64>,
    /// `put_log_events_retry_wait`, `put_log_events_retry_limit`,
    /// `put_log_events_disable_retry_limit`: retries inside one write.
    pub retry: RetryPolicy,
    /// `log_rejected_request`: log the events CloudWatch rejected (they are always counted).
    pub log_rejected_request: bool,
    /// *Nagare* `rejected_events_to_secondary`: send rejected events to the secondary.
    pub rejected_events_to_secondary: bool,
    /// Chunks whose progress is remembered (internal).
    pub progress_capacity: usize,
}

impl CloudWatchLogsConfig {
    /// Settings with the defaults, writing to a fixed group and stream.
    pub fn new(id: &str, group: NameSource, stream: NameSource) -> Self {
        CloudWatchLogsConfig {
            id: id.to_string(),
            aws: AwsSettings {
                sdk_max_attempts: 1,
                operation_timeout: Some(Duration::from_secs(60)),
                ..Default::default()
            },
            group,
            remove_log_group_name_key: false,
            stream,
            remove_log_stream_name_key: false,
            log_group_name_prefix: String::new(),
            fallback_log_group_name: None,
            fallback_log_stream_name: None,
            auto_create_stream: false,
            retention_in_days: None,
            retention_in_days_key: None,
            remove_retention_in_days_key: false,
            log_group_aws_tags: Vec::new(),
            message_keys: Vec::new(),
            max_message_length: None,
            max_events_per_batch: DEFAULT_MAX_EVENTS_PER_BATCH,
            max_event_size: batch::DEFAULT_MAX_EVENT_SIZE,
            oversize_action: OversizeAction::Truncate,
            truncate_marker: batch::DEFAULT_TRUNCATE_MARKER.to_string(),
            include_time_key: false,
            time_key: DEFAULT_TIME_KEY.to_string(),
            concurrency: DEFAULT_CONCURRENCY,
            put_log_events_rate: None,
            retry: RetryPolicy {
                retry_wait: retry::DEFAULT_RETRY_WAIT,
                retry_limit: Some(retry::DEFAULT_RETRY_LIMIT),
            },
            log_rejected_request: false,
            rejected_events_to_secondary: false,
            progress_capacity: DEFAULT_PROGRESS_CAPACITY,
        }
    }

    /// The batch limits these settings give.
    pub fn limits(&self) -> Limits {
        Limits {
            max_events: self.max_events_per_batch,
            max_bytes: batch::MAX_BATCH_BYTES,
            max_span_ms: batch::MAX_BATCH_SPAN_MS,
            max_event_size: self.max_event_size,
            oversize: self.oversize_action,
            truncate_marker: self.truncate_marker.clone(),
        }
    }

    /// Checks every setting; the message names the parameter.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let bad = |m: String| Err(InvalidConfig(m));
        match &self.group {
            NameSource::Static(g) => {
                if let Err(e) = names::validate_group(g) {
                    return bad(format!(
                        "log_group_name '{g}' {e} (allowed: [.-_/#A-Za-z0-9], 1-512)"
                    ));
                }
            }
            NameSource::Key(k) if k.is_empty() => return bad("log_group_name_key is empty".into()),
            _ => {}
        }
        match &self.stream {
            NameSource::Static(s) => {
                if let Err(e) = names::validate_stream(s) {
                    return bad(format!("log_stream_name '{s}' {e} (no ':' or '*', 1-512)"));
                }
            }
            NameSource::Key(k) if k.is_empty() => return bad("log_stream_name_key is empty".into()),
            _ => {}
        }
        let prefix = &self.log_group_name_prefix;
        if !prefix.is_empty() {
            if matches!(self.group, NameSource::Static(_)) {
                return bad(
                    "log_group_name_prefix applies to log_group_name_key and use_tag_as_group; \
                     write it into log_group_name instead"
                        .into(),
                );
            }
            if let Err(e) = names::validate_group(prefix) {
                return bad(format!(
                    "log_group_name_prefix '{prefix}' {e} (allowed: [.-_/#A-Za-z0-9], 1-511)"
                ));
            }
            if prefix.len() >= names::MAX_NAME_LEN {
                return bad(format!(
                    "log_group_name_prefix is {} characters: no room for a name",
                    prefix.len()
                ));
            }
        }
        if let Some(g) = &self.fallback_log_group_name {
            if let Err(e) = names::validate_group(g) {
                return bad(format!("fallback_log_group_name '{g}' {e}"));
            }
        }
        if let Some(s) = &self.fallback_log_stream_name {
            if let Err(e) = names::validate_stream(s) {
                return bad(format!("fallback_log_stream_name '{s}' {e}"));
            }
        }
        if let Some(d) = self.retention_in_days {
            if !names::valid_retention(d) {
                return bad(format!(
                    "retention_in_days {d} is not one CloudWatch Logs accepts ({:?})",
                    names::RETENTION_DAYS
                ));
            }
        }
        if (self.retention_in_days.is_some()
            || self.retention_in_days_key.is_some()
            || !self.log_group_aws_tags.is_empty())
            && !self.auto_create_stream
        {
            tracing::warn!(plugin_id = %self.id, "retention_in_days / log_group_aws_tags only apply to groups this output creates: set auto_create_stream true");
        }
        for (k, v) in &self.log_group_aws_tags {
            if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 {
                return bad(format!(
                    "log_group_aws_tags: tag '{k}' must have a 1-128 character key and a value of at most 256"
                ));
            }
        }
        if self.log_group_aws_tags.len() > 50 {
            return bad("log_group_aws_tags: at most 50 tags".into());
        }
        if !(1..=batch::MAX_BATCH_EVENTS).contains(&self.max_events_per_batch) {
            return bad(format!(
                "max_events_per_batch {} must be 1..={}",
                self.max_events_per_batch,
                batch::MAX_BATCH_EVENTS
            ));
        }
        if self.max_event_size <= batch::EVENT_OVERHEAD
            || self.max_event_size > batch::MAX_BATCH_BYTES
        {
            return bad(format!(
                "max_event_size {} must be {}..={} (message bytes + {} per event)",
                self.max_event_size,
                batch::EVENT_OVERHEAD + 1,
                batch::MAX_BATCH_BYTES,
                batch::EVENT_OVERHEAD
            ));
        }
        if self.oversize_action == OversizeAction::Truncate
            && self.truncate_marker.len() >= self.limits().max_message_bytes()
        {
            return bad("truncate_marker is longer than max_event_size allows".into());
        }
        if self.max_message_length == Some(0) {
            return bad("max_message_length must be at least 1".into());
        }
        if self.concurrency == 0 {
            return bad("concurrency must be at least 1".into());
        }
        if let Some(r) = self.put_log_events_rate {
            if !(r.is_finite() && r > 0.0) {
                return bad(format!("put_log_events_rate {r} must be > 0"));
            }
        }
        if self.include_time_key && self.time_key.is_empty() {
            return bad("time_key is empty".into());
        }
        Ok(())
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cloudwatch_logs: {0}")]
pub struct InvalidConfig(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> CloudWatchLogsConfig {
        CloudWatchLogsConfig::new(
            "t",
            NameSource::Key("service".into()),
            NameSource::Static("host-1".into()),
        )
    }

    #[test]
    fn defaults_are_valid() {
        base().validate().unwrap();
        assert_eq!(base().limits().max_message_bytes(), 1_048_550);
    }

    #[test]
    fn static_names_are_checked_at_load() {
        let mut c = base();
        c.group = NameSource::Static("bad group".into());
        assert!(c.validate().unwrap_err().0.contains("log_group_name"));
        let mut c = base();
        c.stream = NameSource::Static("a:b".into());
        assert!(c.validate().unwrap_err().0.contains("log_stream_name"));
        let mut c = base();
        c.fallback_log_group_name = Some("x*".into());
        assert!(c.validate().is_err());
    }

    #[test]
    fn retention_and_limits_are_checked() {
        let mut c = base();
        c.retention_in_days = Some(10);
        assert!(c.validate().unwrap_err().0.contains("retention_in_days 10"));
        c.retention_in_days = Some(30);
        c.validate().unwrap();
        let mut c = base();
        c.max_events_per_batch = 10_001;
        assert!(c.validate().is_err());
        let mut c = base();
        c.max_event_size = 2 * 1024 * 1024;
        assert!(c.validate().is_err());
        c.max_event_size = 256 * 1024;
        c.validate().unwrap();
        let mut c = base();
        c.put_log_events_rate = Some(0.0);
        assert!(c.validate().is_err());
        let mut c = base();
        c.concurrency = 0;
        assert!(c.validate().is_err());
    }
}
