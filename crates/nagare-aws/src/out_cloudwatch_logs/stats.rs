//! The output's counters (Prometheus names in the module docs of `mod.rs`).

use super::service::ServiceStats;
use nagare_core::metrics::{counter, Counter, ReasonCounters};

/// The output's counters.
#[derive(Debug, Clone)]
pub struct Stats {
    pub events: Counter,
    pub requests: Counter,
    pub request_errors: ReasonCounters,
    pub retries: Counter,
    pub skipped_batches: Counter,
    pub rejected: ReasonCounters,
    pub oversize: ReasonCounters,
    pub invalid_utf8: ReasonCounters,
    pub invalid_names: ReasonCounters,
    pub rerouted: ReasonCounters,
    pub dropped: ReasonCounters,
    pub service: ServiceStats,
}

impl Stats {
    pub fn new(id: &str) -> Self {
        let l = [("plugin_id", id)];
        Stats {
            events: counter(
                "nagare_cloudwatch_events_total",
                "Events CloudWatch Logs accepted",
                &l,
            ),
            requests: counter(
                "nagare_cloudwatch_requests_total",
                "PutLogEvents requests that succeeded",
                &l,
            ),
            request_errors: ReasonCounters::new(
                "nagare_cloudwatch_request_errors_total",
                "Failed CloudWatch Logs calls, by error kind",
                &l,
            ),
            retries: counter(
                "nagare_cloudwatch_retries_total",
                "PutLogEvents requests sent again inside a write",
                &l,
            ),
            skipped_batches: counter(
                "nagare_cloudwatch_skipped_batches_total",
                "Batches of a retried chunk not sent again because they were accepted before",
                &l,
            ),
            rejected: ReasonCounters::new(
                "nagare_cloudwatch_rejected_events_total",
                "Events CloudWatch Logs rejected in accepted requests (never retried)",
                &l,
            ),
            oversize: ReasonCounters::new(
                "nagare_cloudwatch_oversize_events_total",
                "Events over max_event_size, by what was done with them",
                &l,
            ),
            invalid_utf8: ReasonCounters::new(
                "nagare_cloudwatch_invalid_utf8_total",
                "Messages with invalid UTF-8 (events) and sequences replaced with U+FFFD",
                &l,
            ),
            invalid_names: ReasonCounters::new(
                "nagare_cloudwatch_invalid_names_total",
                "Events whose record-derived group or stream name was missing or invalid",
                &l,
            ),
            rerouted: ReasonCounters::new(
                "nagare_cloudwatch_rerouted_events_total",
                "Events sent to the fallback group or the secondary",
                &l,
            ),
            dropped: ReasonCounters::new(
                "nagare_cloudwatch_dropped_events_total",
                "Events not delivered anywhere, by reason",
                &l,
            ),
            service: ServiceStats {
                created: ReasonCounters::new(
                    "nagare_cloudwatch_created_total",
                    "Log groups and streams created",
                    &l,
                ),
                retention_failed: counter(
                    "nagare_cloudwatch_retention_failed_total",
                    "PutRetentionPolicy calls that failed",
                    &l,
                ),
                legacy: ReasonCounters::new(
                    "nagare_cloudwatch_legacy_token_total",
                    "Legacy sequence-token answers handled",
                    &l,
                ),
            },
        }
    }
}
