//! Where inputs hand their events.

use crate::ack::Committed;
use crate::EventStream;
use thiserror::Error;

/// Why events could not be committed. The input must not ack; it closes the connection so the
/// client resends (back-pressure travels upstream).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("events not committed: {reason}")]
pub struct EmitError {
    /// A short, stable reason (also a metric label), e.g. `buffer_full`, `shutting_down`.
    pub reason: &'static str,
}

impl EmitError {
    pub fn new(reason: &'static str) -> Self {
        EmitError { reason }
    }
}

/// Receives event streams from inputs. `emit` returns the [`Committed`] proof only once every
/// route the events take has committed them (appended to its buffer); only that proof lets an
/// input write an ack.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync + 'static {
    async fn emit(&self, stream: EventStream) -> Result<Committed, EmitError>;
}

/// An in-memory sink: keeps every stream it commits (tests, `--dry-run` style tools). It can
/// be told to refuse emits, to exercise the no-ack path.
#[derive(Default)]
pub struct MemorySink {
    streams: std::sync::Mutex<Vec<EventStream>>,
    refuse: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl MemorySink {
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self::default())
    }
    /// Make later emits fail with `EmitError { reason: "refused" }` (or succeed again).
    pub fn set_refuse(&self, refuse: bool) {
        self.refuse
            .store(refuse, std::sync::atomic::Ordering::SeqCst);
    }
    /// Every stream committed so far.
    pub fn streams(&self) -> Vec<EventStream> {
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    /// Every event committed so far, with its tag.
    pub fn events(&self) -> Vec<(crate::Tag, crate::Event)> {
        self.streams()
            .into_iter()
            .flat_map(|s| {
                let tag = s.tag;
                s.events.into_iter().map(move |e| (tag.clone(), e))
            })
            .collect()
    }
    pub fn event_count(&self) -> usize {
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|s| s.events.len())
            .sum()
    }
    /// Waits until at least `n` events were committed, or `timeout` passes; returns the count.
    pub async fn wait_for(&self, n: usize, timeout: std::time::Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            let c = self.event_count();
            if c >= n {
                return c;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.event_count();
            }
        }
    }
}

#[async_trait::async_trait]
impl EventSink for MemorySink {
    async fn emit(&self, stream: EventStream) -> Result<Committed, EmitError> {
        if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(EmitError::new("refused"));
        }
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(stream);
        self.notify.notify_waiters();
        Ok(Committed::new())
    }
}

/// A sink whose target can be replaced while inputs keep running (configuration reload).
/// Emits hold a read lock for their whole duration; [`SwapSink::pause`] takes the write lock,
/// so it waits for emits in progress and holds new ones back until the new target is in place:
/// no event is routed to a pipeline that is being taken down.
pub struct SwapSink {
    inner: tokio::sync::RwLock<std::sync::Arc<dyn EventSink>>,
}

impl SwapSink {
    pub fn new(inner: std::sync::Arc<dyn EventSink>) -> std::sync::Arc<Self> {
        std::sync::Arc::new(SwapSink {
            inner: tokio::sync::RwLock::new(inner),
        })
    }

    /// Blocks new emits and waits for those in progress; the guard lets the caller do work
    /// (drain the old outputs) before installing the new target with
    /// [`SwapGuard::install`]. Dropping the guard without installing keeps the old target.
    pub async fn pause(&self) -> SwapGuard<'_> {
        SwapGuard {
            guard: self.inner.write().await,
        }
    }
}

/// Holds emits back while a reload is in progress.
pub struct SwapGuard<'a> {
    guard: tokio::sync::RwLockWriteGuard<'a, std::sync::Arc<dyn EventSink>>,
}

impl SwapGuard<'_> {
    /// Installs `next` and lets held-back emits through (to `next`).
    pub fn install(mut self, next: std::sync::Arc<dyn EventSink>) {
        *self.guard = next;
    }

    /// Replaces the target while emits stay held back, returning the previous one. A reload
    /// puts a placeholder in so the old pipeline can be dropped (its file buffers release
    /// their directory locks) before the new one is built.
    pub fn replace(
        &mut self,
        next: std::sync::Arc<dyn EventSink>,
    ) -> std::sync::Arc<dyn EventSink> {
        std::mem::replace(&mut *self.guard, next)
    }
}

#[async_trait::async_trait]
impl EventSink for SwapSink {
    async fn emit(&self, stream: EventStream) -> Result<Committed, EmitError> {
        let target = self.inner.read().await;
        target.emit(stream).await
    }
}

#[cfg(test)]
mod swap_tests {
    use super::*;

    #[tokio::test]
    async fn swap_routes_later_emits_to_the_new_target() {
        let a = MemorySink::new();
        let b = MemorySink::new();
        let s = SwapSink::new(a.clone());
        s.emit(EventStream::new("t".into(), vec![])).await.unwrap();
        s.pause().await.install(b.clone());
        s.emit(EventStream::new("t".into(), vec![])).await.unwrap();
        assert_eq!((a.streams().len(), b.streams().len()), (1, 1));
    }

    #[tokio::test]
    async fn emits_during_a_pause_wait_and_reach_the_installed_target() {
        let (a, b) = (MemorySink::new(), MemorySink::new());
        let s = SwapSink::new(a.clone());
        let mut guard = s.pause().await;
        let old = guard.replace(MemorySink::new());
        drop(old);
        let s2 = std::sync::Arc::clone(&s);
        let emit = tokio::spawn(async move { s2.emit(EventStream::new("t".into(), vec![])).await });
        tokio::task::yield_now().await;
        assert!(!emit.is_finished(), "an emit during a pause waits");
        guard.install(b.clone());
        emit.await.unwrap().unwrap();
        assert_eq!((a.streams().len(), b.streams().len()), (0, 1));
    }
}
