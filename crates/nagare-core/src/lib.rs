//! Core types shared by every Nagare crate.
//!
//! * [`Tag`], [`EventTime`], [`Record`], [`Event`], [`EventStream`]: what flows through a pipeline.
//! * [`msgpack`]: a resumable, allocation-free msgpack scanner (frame boundaries, validation).
//! * [`EventSink`]: where an input hands events; `emit` returns once they are committed.
//! * [`ack::PendingAck`]: an ack that can only be produced after a commit; dropping it counts.
//! * [`metrics`]: counters and gauges with reasons, rendered as Prometheus text.
//! * [`ratelimit::LogLimiter`]: keeps repeated warnings from flooding the log.

pub mod ack;
pub mod civil;
pub mod event;
pub mod health;
pub mod json;
pub mod metrics;
pub mod msgpack;
pub mod output;
pub mod ratelimit;
pub mod shutdown;
pub mod sink;
pub mod value;

pub use event::{Event, EventStream, EventTime, Record, Tag};
pub use output::{Chunk, ChunkId, ChunkKey, Output, WriteError};
pub use sink::{EmitError, EventSink};
pub use value::{Map, Value};
