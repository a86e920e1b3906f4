//! in_forward's counters, registered under the plugin's `@id`.

use nagare_core::metrics::{counter, gauge, Counter, Gauge, ReasonCounters};

/// Everything in_forward counts. Every message rejected, event dropped and connection closed
/// early is counted with a reason.
#[derive(Clone, Debug)]
pub struct InForwardStats {
    pub connections_accepted: Counter,
    pub connections_open: Gauge,
    /// Connections closed by us, by reason (`malformed`, `frame_too_large`, `emit_failed`,
    /// `auth_failed`, `connection_limit`, `partial_frame_timeout`, ...).
    pub connections_closed: ReasonCounters,
    pub messages: Counter,
    pub events: Counter,
    pub bytes: Counter,
    /// Messages refused as a whole, by reason.
    pub messages_rejected: ReasonCounters,
    /// Events dropped inside accepted messages, by reason.
    pub events_dropped: ReasonCounters,
    pub acks_sent: Counter,
    /// Acks not sent because the events were not committed.
    pub acks_withheld: Counter,
    /// Handshakes refused, by PONG reason.
    pub auth_failures: ReasonCounters,
    pub heartbeats_udp: Counter,
    /// Resent messages recognised as already committed (acked again, not stored twice).
    pub resends_deduplicated: Counter,
    /// Events in those messages.
    pub resent_events_skipped: Counter,
    /// (chunk, digest) pairs remembered now.
    pub dedupe_entries: Gauge,
    pub large_messages_warned: Counter,
}

impl InForwardStats {
    pub fn new(id: &str) -> Self {
        let l = [("plugin_id", id)];
        InForwardStats {
            connections_accepted: counter(
                "nagare_input_connections_accepted_total",
                "Connections accepted",
                &l,
            ),
            connections_open: gauge("nagare_input_connections_open", "Connections open now", &l),
            connections_closed: ReasonCounters::new(
                "nagare_input_connections_closed_total",
                "Connections closed by the server before the peer closed them, by reason",
                &l,
            ),
            messages: counter(
                "nagare_input_messages_total",
                "Forward messages decoded",
                &l,
            ),
            events: counter(
                "nagare_input_events_total",
                "Events accepted and committed",
                &l,
            ),
            bytes: counter("nagare_input_bytes_total", "Bytes read from peers", &l),
            messages_rejected: ReasonCounters::new(
                "nagare_input_messages_rejected_total",
                "Messages refused as a whole, by reason",
                &l,
            ),
            events_dropped: ReasonCounters::new(
                "nagare_input_events_dropped_total",
                "Events dropped inside otherwise valid messages, by reason",
                &l,
            ),
            acks_sent: counter("nagare_input_acks_sent_total", "Acks written", &l),
            acks_withheld: counter(
                "nagare_input_acks_withheld_total",
                "Acks not sent because the events were not committed",
                &l,
            ),
            auth_failures: ReasonCounters::new(
                "nagare_input_auth_failures_total",
                "Handshakes refused, by reason",
                &l,
            ),
            resends_deduplicated: counter(
                "nagare_input_resends_deduplicated_total",
                "Resent messages already committed: acked again, not stored twice",
                &l,
            ),
            resent_events_skipped: counter(
                "nagare_input_resent_events_skipped_total",
                "Events in resent messages that were not stored twice",
                &l,
            ),
            dedupe_entries: gauge(
                "nagare_input_dedupe_entries",
                "Committed (chunk, digest) pairs remembered for resend deduplication",
                &l,
            ),
            heartbeats_udp: counter(
                "nagare_input_udp_heartbeats_total",
                "UDP heartbeats answered",
                &l,
            ),
            large_messages_warned: counter(
                "nagare_input_large_messages_total",
                "Messages over chunk_size_warn_limit",
                &l,
            ),
        }
    }
}
