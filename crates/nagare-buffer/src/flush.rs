//! The flush loop of one output: a ticker that queues due chunks (and, for file buffers, runs
//! the interval fsync and adopts reinjected chunks), `flush_thread_count` workers that write
//! queued chunks, one retry state for the output, the `<secondary>`, and at shutdown a drain
//! bounded by a deadline.
//!
//! ```text
//! dequeue -> write --Ok--------------------------------------------> purge
//!                  --Retryable--> retries left? --yes--> take back, wait (backoff), retry
//!                                               --no---> secondary? write this chunk and every
//!                                                        queued one there : quarantine (file) /
//!                                                        drop (memory) them, counted
//!                  --Unrecoverable--> secondary? write it there : quarantine / drop, counted
//! secondary write fails -> take back, wait, try the secondary again (never discarded)
//! ```
//!
//! Every output has its own loop and retry state: a failing destination only backs off its
//! own chunks (per-route isolation).

use crate::buffer::{Buffer, Quarantined, WallClock};
use crate::retry::RetryState;
use nagare_core::health;
use nagare_core::shutdown::Shutdown;
use nagare_core::{Chunk, ChunkId, Output, WriteError};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How often the file buffer looks for reinjected chunks in `incoming/`.
const ADOPT_EVERY: Duration = Duration::from_secs(5);
/// The longest a retry sleeps during the shutdown drain.
const DRAIN_MAX_WAIT: Duration = Duration::from_millis(500);
/// A memory buffer with a `<secondary>` keeps the last quarter of the drain, at most this
/// long, for writing what is left to the secondary (within the drain, never after it).
const SECONDARY_RESERVE_MAX: Duration = Duration::from_secs(5);

/// What cuts short a wait on an output outside `Output::write`'s own timeouts: the output's
/// shutdown signal (normal running; the drain takes over) or the drain's deadline.
enum Bound {
    Shutdown(Shutdown),
    Deadline(Instant),
}

impl Bound {
    /// `f`'s output, or `None` (and `f` dropped) when the bound came first.
    async fn run<F: std::future::Future>(&mut self, f: F) -> Option<F::Output> {
        match self {
            Bound::Shutdown(sd) => tokio::select! {
                r = f => Some(r),
                _ = sd.wait() => None,
            },
            Bound::Deadline(at) => tokio::time::timeout_at(*at, f).await.ok(),
        }
    }

    fn draining(&self) -> bool {
        matches!(self, Bound::Deadline(_))
    }
}

/// Runs until `shutdown` fires, then drains what `flush_at_shutdown` asks within `drain`.
pub async fn run(
    buffer: Arc<Buffer>,
    output: Arc<dyn Output>,
    shutdown: Shutdown,
    drain: Duration,
    id: String,
) {
    run_with(buffer, output, None, shutdown, drain, id).await
}

/// [`run`] with a `<secondary>`.
pub async fn run_with(
    buffer: Arc<Buffer>,
    output: Arc<dyn Output>,
    secondary: Option<Arc<dyn Output>>,
    shutdown: Shutdown,
    drain: Duration,
    id: String,
) {
    let f = Arc::new(Flusher {
        buffer: buffer.clone(),
        output,
        secondary,
        id,
        retry: Mutex::new(None),
        to_secondary: Mutex::new(HashSet::new()),
        clock: WallClock::System,
    });
    let cfg = buffer.config().clone();
    let mut tasks = tokio::task::JoinSet::new();
    {
        let (b, mut sd) = (buffer.clone(), shutdown.clone());
        let tick = cfg
            .flush_interval
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let fsync_every = b.fsync_interval();
        tasks.spawn(async move {
            let mut iv = tokio::time::interval(tick);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_sync = Instant::now();
            let mut last_adopt = Instant::now();
            loop {
                tokio::select! {
                    _ = iv.tick() => {
                        b.enqueue_due();
                        let (_, used) = b.usage();
                        health::buffer_usage(b.id(), used as u64, b.config().total_limit_size as u64);
                        if let Some(every) = fsync_every {
                            if last_sync.elapsed() >= every {
                                last_sync = Instant::now();
                                b.sync_dirty().await;
                            }
                        }
                        if b.is_persistent() && last_adopt.elapsed() >= ADOPT_EVERY {
                            last_adopt = Instant::now();
                            b.adopt_incoming();
                        }
                    }
                    _ = sd.wait() => return,
                }
            }
        });
    }
    for _ in 0..cfg.flush_thread_count.max(1) {
        let (f, sd) = (f.clone(), shutdown.clone());
        tasks.spawn(async move { f.worker(sd).await });
    }
    while tasks.join_next().await.is_some() {}
    // Normally done when the inputs were told to stop; again here for callers without that
    // signal: an append blocked on a full buffer must not outlive the drain.
    buffer.stop_waiting();
    f.drain(drain).await;
}

struct Flusher {
    buffer: Arc<Buffer>,
    output: Arc<dyn Output>,
    secondary: Option<Arc<dyn Output>>,
    id: String,
    /// The output's retry state (shared by its flush threads, as Fluentd's).
    retry: Mutex<Option<RetryState>>,
    /// Chunks whose next attempt goes to the secondary (a secondary write failed).
    to_secondary: Mutex<HashSet<ChunkId>>,
    clock: WallClock,
}

enum Target {
    Primary,
    Secondary,
}

impl Flusher {
    fn next_retry_at(&self) -> Option<Instant> {
        self.retry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|r| r.next_at)
            .filter(|at| *at > Instant::now())
    }

    fn target(&self, chunk: &Chunk) -> Target {
        if self.secondary.is_some()
            && self
                .to_secondary
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&chunk.id)
        {
            Target::Secondary
        } else {
            Target::Primary
        }
    }

    async fn worker(&self, mut shutdown: Shutdown) {
        loop {
            if let Some(at) = self.next_retry_at() {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = shutdown.wait() => return,
                }
            }
            let chunk = tokio::select! {
                c = self.buffer.dequeue() => match c { Some(c) => c, None => return },
                _ = shutdown.wait() => return,
            };
            let target = self.target(&chunk);
            let res = tokio::select! {
                r = self.write(&target, &chunk) => r,
                _ = shutdown.wait() => { self.buffer.takeback(chunk); return; }
            };
            self.handle(target, chunk, res, &mut Bound::Shutdown(shutdown.clone()))
                .await;
        }
    }

    async fn write(&self, target: &Target, chunk: &Chunk) -> Result<(), WriteError> {
        match (target, &self.secondary) {
            (Target::Secondary, Some(s)) => s.write(chunk).await,
            _ => self.output.write(chunk).await,
        }
    }

    fn reset_retry(&self) {
        let mut r = self.retry.lock().unwrap_or_else(|e| e.into_inner());
        if r.take().is_some() {
            tracing::info!(plugin_id = %self.id, "output recovered; retry state reset");
        }
        self.buffer.stats().retry_steps.set(0);
        self.buffer.stats().next_retry.set(0);
    }

    /// Schedules a retry; returns the wait. A failure of an attempt that started before the
    /// current wait ended (another flush thread) does not count as a new retry.
    fn schedule_retry(&self, draining: bool) -> Duration {
        let cfg = self.buffer.config();
        let mut g = self.retry.lock().unwrap_or_else(|e| e.into_inner());
        let r = g.get_or_insert_with(RetryState::new);
        let wait = match r.next_at {
            Some(at) if at > Instant::now() => at - Instant::now(),
            _ => {
                self.buffer.stats().retries.inc();
                r.next_wait(cfg)
            }
        };
        self.buffer.stats().retry_steps.set(r.steps as i64);
        self.buffer
            .stats()
            .next_retry
            .set((self.clock.now() + wait.as_secs_f64()) as i64);
        if draining {
            wait.min(DRAIN_MAX_WAIT)
        } else {
            wait
        }
    }

    fn exhausted(&self) -> bool {
        let mut g = self.retry.lock().unwrap_or_else(|e| e.into_inner());
        g.get_or_insert_with(RetryState::new)
            .exhausted(self.buffer.config(), self.secondary.is_some())
    }

    /// Deals with a write's result; the secondary writes it starts end at `bound`. Returns a
    /// wait the caller should respect (drain).
    async fn handle(
        &self,
        target: Target,
        chunk: Chunk,
        res: Result<(), WriteError>,
        bound: &mut Bound,
    ) -> Option<Duration> {
        let draining = bound.draining();
        let stats = self.buffer.stats();
        match (target, res) {
            (Target::Primary, Ok(())) => {
                self.buffer.purge(&chunk);
                self.reset_retry();
                health::output_succeeded(&self.id);
                None
            }
            (Target::Secondary, Ok(())) => {
                self.to_secondary
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&chunk.id);
                tracing::warn!(plugin_id = %self.id, chunk = %chunk.id.hex(), records = chunk.records, "chunk written to the secondary");
                self.buffer.purge_secondary(&chunk);
                None
            }
            (Target::Secondary, Err(e)) => {
                stats.secondary_errors.inc();
                let wait = self.schedule_retry(draining);
                tracing::error!(plugin_id = %self.id, chunk = %chunk.id.hex(), error = %e, wait_ms = wait.as_millis() as u64, "secondary write failed; the chunk is kept and retried");
                self.buffer.takeback(chunk);
                Some(wait)
            }
            (Target::Primary, Err(WriteError::Unrecoverable(e))) => {
                stats.write_errors.inc("unrecoverable");
                health::output_failed(&self.id, &e);
                tracing::error!(plugin_id = %self.id, chunk = %chunk.id.hex(), records = chunk.records, error = %e, "unrecoverable write error");
                self.give_up(chunk, "unrecoverable", bound).await
            }
            (Target::Primary, Err(WriteError::Retryable(e))) => {
                stats.write_errors.inc("retryable");
                health::output_failed(&self.id, &e);
                if self.exhausted() {
                    let steps = self
                        .retry
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .as_ref()
                        .map(|r| r.steps)
                        .unwrap_or(0);
                    tracing::error!(plugin_id = %self.id, chunk = %chunk.id.hex(), retries = steps, error = %e, "retry limit reached");
                    let wait = self.give_up(chunk, "retry_exhausted", bound).await;
                    if wait.is_none() {
                        self.evacuate_queue(bound).await;
                        self.reset_retry();
                    }
                    return wait;
                }
                let wait = self.schedule_retry(draining);
                health::retry_scheduled(&self.id, wait);
                tracing::warn!(plugin_id = %self.id, chunk = %chunk.id.hex(), wait_ms = wait.as_millis() as u64, error = %e, "write failed; will retry");
                self.buffer.takeback(chunk);
                Some(wait)
            }
        }
    }

    /// The primary cannot take `chunk`: the secondary (its write ends at `bound`), else
    /// quarantine (file) or drop (memory), counted. Returns a wait when the chunk was kept for
    /// another try.
    async fn give_up(&self, chunk: Chunk, reason: &str, bound: &mut Bound) -> Option<Duration> {
        let draining = bound.draining();
        if let Some(s) = &self.secondary {
            let Some(res) = bound.run(s.write(&chunk)).await else {
                // Shutdown (the drain retries it) or the drain deadline (kept on disk, or
                // counted as lost_at_shutdown by a memory buffer).
                tracing::warn!(plugin_id = %self.id, chunk = %chunk.id.hex(), records = chunk.records, "secondary write cut short by the shutdown or the drain deadline; the chunk is kept");
                self.buffer.takeback(chunk);
                return Some(Duration::ZERO);
            };
            return match res {
                Ok(()) => {
                    tracing::warn!(plugin_id = %self.id, chunk = %chunk.id.hex(), records = chunk.records, reason, "chunk written to the secondary");
                    self.buffer.purge_secondary(&chunk);
                    None
                }
                Err(e) => {
                    self.buffer.stats().secondary_errors.inc();
                    self.to_secondary
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(chunk.id);
                    let wait = self.schedule_retry(draining);
                    tracing::error!(plugin_id = %self.id, chunk = %chunk.id.hex(), error = %e, "secondary write failed; the chunk is kept and retried on the secondary");
                    self.buffer.takeback(chunk);
                    Some(wait)
                }
            };
        }
        match self.buffer.quarantine(&chunk, reason) {
            Quarantined::Moved(to) => {
                tracing::error!(plugin_id = %self.id, chunk = %chunk.id.hex(), records = chunk.records, reason, to = %to.display(), "no <secondary>: chunk moved to the buffer's quarantine folder (reinject it with `nagare-forwarder buffer reinject`)");
            }
            Quarantined::Failed(e) => {
                // The file stays where it is and the chunk in the queue: deleting it would
                // lose records that were never delivered nor set aside. Tried again after a
                // retry wait (quarantine may work by then); at shutdown it stays on disk.
                let wait = self.schedule_retry(draining);
                tracing::error!(plugin_id = %self.id, chunk = %chunk.id.hex(), records = chunk.records, reason, error = %e, wait_ms = wait.as_millis() as u64, "no <secondary> and the chunk cannot be moved to quarantine: its file is kept in the buffer and the chunk is retried");
                self.buffer.takeback(chunk);
                return Some(wait);
            }
            Quarantined::NotPersistent => {
                tracing::error!(plugin_id = %self.id, chunk = %chunk.id.hex(), records = chunk.records, reason, "no <secondary> and a memory buffer: chunk dropped");
                self.buffer.discard(&chunk, reason);
            }
        }
        None
    }

    /// After the retry limit: every chunk queued now goes the same way as the one that hit it
    /// (Fluentd clears the queue at the retry limit; Nagare writes it to the secondary or
    /// quarantines it, counted).
    async fn evacuate_queue(&self, bound: &mut Bound) {
        if self.secondary.is_none() {
            let (chunks, records) = self.buffer.evacuate_queued("retry_exhausted");
            if chunks > 0 {
                tracing::error!(plugin_id = %self.id, chunks, records, persistent = self.buffer.is_persistent(), "retry limit reached: queued chunks moved to quarantine (file buffer) or dropped (memory buffer)");
            }
            return;
        }
        for _ in 0..self.buffer.queue_len() {
            let Some(chunk) = self.buffer.try_dequeue().await else {
                break;
            };
            if self
                .give_up(chunk, "retry_exhausted", bound)
                .await
                .is_some()
            {
                break;
            }
        }
    }

    /// Shutdown: queue everything (`flush_at_shutdown`) and write until the deadline; then
    /// persist (file) or count what is left (memory; written to the secondary if there is
    /// one, within the same budget). Nothing here waits past `drain`.
    async fn drain(&self, drain: Duration) {
        let cfg = self.buffer.config().clone();
        let end = Instant::now() + drain;
        // A memory buffer with a secondary keeps the end of the budget for the secondary.
        let reserve = if !self.buffer.is_persistent() && self.secondary.is_some() {
            (drain / 4).min(SECONDARY_RESERVE_MAX)
        } else {
            Duration::ZERO
        };
        let deadline = end - reserve;
        if cfg.flush_at_shutdown {
            self.buffer.enqueue_all();
            let n = cfg.flush_thread_count.max(1);
            let mut set = Vec::new();
            for _ in 0..n {
                set.push(self.drain_worker(deadline));
            }
            futures_join_all(set).await;
        }
        if self.buffer.is_persistent() {
            self.buffer.close_and_persist().await;
            let (chunks, bytes) = self.buffer.usage();
            if chunks > 0 {
                tracing::info!(plugin_id = %self.id, chunks, bytes, records = self.buffer.held_records(), "file buffer persisted; chunks resume at the next start");
            }
            return;
        }
        if let Some(s) = &self.secondary {
            // A memory buffer with a secondary: what the primary's part of the drain left goes
            // there (local and fast) instead of being lost, until the drain's end.
            self.buffer.enqueue_all();
            while Instant::now() < end {
                let Some(chunk) = self.buffer.try_dequeue().await else {
                    break;
                };
                match tokio::time::timeout_at(end, s.write(&chunk)).await {
                    Ok(Ok(())) => self.buffer.purge_secondary(&chunk),
                    _ => {
                        self.buffer.takeback(chunk);
                        break;
                    }
                }
            }
        }
        self.buffer.close();
        let left = self.buffer.count_lost("lost_at_shutdown");
        if left > 0 {
            tracing::error!(plugin_id = %self.id, records = left, "shutdown deadline reached: records still buffered in memory are lost (use a file buffer to keep them)");
        }
    }

    async fn drain_worker(&self, deadline: Instant) {
        loop {
            if Instant::now() >= deadline {
                return;
            }
            if let Some(at) = self.next_retry_at() {
                tokio::time::sleep_until(at.min(deadline).min(Instant::now() + DRAIN_MAX_WAIT))
                    .await;
                continue;
            }
            let Some(chunk) = self.buffer.try_dequeue().await else {
                return;
            };
            let target = self.target(&chunk);
            let res = match tokio::time::timeout_at(deadline, self.write(&target, &chunk)).await {
                Ok(r) => r,
                Err(_) => {
                    self.buffer.takeback(chunk);
                    return;
                }
            };
            if let Some(wait) = self
                .handle(target, chunk, res, &mut Bound::Deadline(deadline))
                .await
            {
                tokio::time::sleep_until((Instant::now() + wait).min(deadline)).await;
            }
        }
    }
}

/// Polls futures to completion concurrently (no extra dependency for a join-all).
async fn futures_join_all<F: std::future::Future<Output = ()>>(futs: Vec<F>) {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        futs.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if futs.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}
