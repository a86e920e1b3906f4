//! Plugin traits used by the router and the runtime.

use nagare_core::ack::Committed;
use nagare_core::shutdown::Shutdown;
use nagare_core::{EmitError, EventStream};
use std::future::Future;
use std::pin::Pin;

/// An output as the router sees it. `emit` returns the commit proof once the events are kept
/// (appended to the output's buffer, or written for unbuffered outputs).
#[async_trait::async_trait]
pub trait OutputPlugin: Send + Sync + 'static {
    async fn emit(&self, stream: EventStream) -> Result<Committed, EmitError>;
}

/// An event a plugin rejected, on its way to the `@ERROR` label (or counted and dropped when
/// there is none).
#[derive(Debug, Clone)]
pub struct ErrorEvent {
    pub tag: nagare_core::Tag,
    pub event: nagare_core::Event,
    /// A stable reason (metric label), e.g. `parse_failed`.
    pub reason: &'static str,
}

/// A filter changes the events of a stream in place: it may edit records, remove events, or
/// move events to `errors` (routed to `@ERROR`). An emptied stream stops there. Filters count
/// what they remove, with a reason.
pub trait Filter: Send + Sync + 'static {
    fn filter(&self, stream: &mut EventStream, errors: &mut Vec<ErrorEvent>);
}

/// A background task (flush loop, heartbeat) started with the output-phase shutdown signal.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Background tasks collected while building, started by the runtime: the outputs' (flush
/// loops), what to do when the inputs are told to stop (before the runtime waits for them),
/// and the filters' (concat's flusher), which stop before the outputs so that what they emit
/// at shutdown is still drained.
#[derive(Default)]
pub struct Tasks {
    pub(crate) outputs: Vec<Box<dyn FnOnce(Shutdown) -> Task + Send>>,
    pub(crate) on_inputs_stopping: Vec<Box<dyn FnOnce() + Send>>,
    pub(crate) filters: Vec<Box<dyn FnOnce(Shutdown) -> Task + Send>>,
}

impl Tasks {
    /// A filter's background task: told to stop once the inputs stopped, and awaited (for at
    /// most the drain timeout) before the outputs are told to drain, so the events it emits
    /// at shutdown reach buffers that still take and deliver them.
    pub fn add_filter<F, Fut>(&mut self, f: F)
    where
        F: FnOnce(Shutdown) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.filters.push(Box::new(move |sd| Box::pin(f(sd))));
    }

    /// Runs `f` when the inputs are told to stop, before the runtime waits for them (a buffer
    /// stops blocking appends here, so an input waiting in `emit` can finish).
    pub fn on_inputs_stopping(&mut self, f: impl FnOnce() + Send + 'static) {
        self.on_inputs_stopping.push(Box::new(f));
    }

    pub fn add<F, Fut>(&mut self, f: F)
    where
        F: FnOnce(Shutdown) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.outputs.push(Box::new(move |sd| Box::pin(f(sd))));
    }
}
