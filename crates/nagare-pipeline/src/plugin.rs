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

/// A filter: returns the stream to pass on (possibly changed), or `None` to stop it.
pub trait Filter: Send + Sync + 'static {
    fn filter(&self, stream: EventStream) -> Option<EventStream>;
}

/// A background task (flush loop, heartbeat) started with the output-phase shutdown signal.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Background tasks collected while building, started by the runtime.
#[derive(Default)]
pub struct Tasks(pub(crate) Vec<Box<dyn FnOnce(Shutdown) -> Task + Send>>);

impl Tasks {
    pub fn add<F, Fut>(&mut self, f: F)
    where
        F: FnOnce(Shutdown) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.0.push(Box::new(move |sd| Box::pin(f(sd))));
    }
}
