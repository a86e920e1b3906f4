//! The flush loop: a ticker that queues due chunks and `flush_thread_count` workers that write
//! them, retrying with backoff; at shutdown, a drain bounded by a deadline.

use crate::memory::Buffer;
use crate::retry::RetryState;
use nagare_core::shutdown::Shutdown;
use nagare_core::{Output, WriteError};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Runs until `shutdown` fires, then drains what `flush_at_shutdown` asks within `drain`.
pub async fn run(
    buffer: Arc<Buffer>,
    output: Arc<dyn Output>,
    shutdown: Shutdown,
    drain: Duration,
    id: String,
) {
    let cfg = buffer.config().clone();
    let mut tasks = tokio::task::JoinSet::new();
    {
        let (b, mut sd) = (buffer.clone(), shutdown.clone());
        let tick = cfg
            .flush_interval
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let age = cfg.flush_interval;
        let lazy = cfg.flush_mode == crate::FlushMode::Lazy;
        tasks.spawn(async move {
            let mut iv = tokio::time::interval(tick);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = iv.tick() => { if !lazy { b.enqueue_older_than(age); } }
                    _ = sd.wait() => return,
                }
            }
        });
    }
    for _ in 0..cfg.flush_thread_count.max(1) {
        let (b, o, sd, id) = (buffer.clone(), output.clone(), shutdown.clone(), id.clone());
        tasks.spawn(async move { worker(b, o, sd, id).await });
    }
    while tasks.join_next().await.is_some() {}

    // Shutdown: flush what is left, bounded by the deadline.
    let deadline = Instant::now() + drain;
    if cfg.flush_at_shutdown {
        buffer.enqueue_older_than(Duration::ZERO);
    }
    let mut retry = RetryState::new();
    while let Some(chunk) = buffer.try_dequeue() {
        if Instant::now() >= deadline {
            buffer.takeback(chunk);
            break;
        }
        match tokio::time::timeout_at(deadline, output.write(&chunk)).await {
            Ok(Ok(())) => buffer.purge(&chunk),
            Ok(Err(WriteError::Unrecoverable(e))) => {
                tracing::error!(plugin_id = %id, chunk = %chunk.id.hex(), records = chunk.records, error = %e, "unrecoverable write error at shutdown; chunk dropped");
                buffer.discard(&chunk, "unrecoverable");
            }
            Ok(Err(WriteError::Retryable(e))) => {
                buffer.stats().retries.inc();
                let wait = retry
                    .next_wait(buffer.config())
                    .min(Duration::from_millis(500));
                tracing::warn!(plugin_id = %id, error = %e, "write failed during shutdown drain; retrying until the deadline");
                buffer.takeback(chunk);
                tokio::time::sleep_until((Instant::now() + wait).min(deadline)).await;
            }
            Err(_) => {
                buffer.takeback(chunk);
                break;
            }
        }
    }
    buffer.close();
    let left = buffer.held_records();
    if left > 0 {
        buffer
            .stats()
            .dropped_records
            .add("lost_at_shutdown", left as u64);
        tracing::error!(plugin_id = %id, records = left, "shutdown deadline reached: records still buffered in memory are lost (use a file buffer to keep them)");
    }
}

async fn worker(buffer: Arc<Buffer>, output: Arc<dyn Output>, mut shutdown: Shutdown, id: String) {
    let mut retry: Option<RetryState> = None;
    loop {
        let chunk = tokio::select! {
            c = buffer.dequeue() => match c { Some(c) => c, None => return },
            _ = shutdown.wait() => return,
        };
        let res = tokio::select! {
            r = output.write(&chunk) => r,
            _ = shutdown.wait() => { buffer.takeback(chunk); return; }
        };
        match res {
            Ok(()) => {
                buffer.purge(&chunk);
                retry = None;
            }
            Err(WriteError::Unrecoverable(e)) => {
                tracing::error!(plugin_id = %id, chunk = %chunk.id.hex(), records = chunk.records, error = %e, "unrecoverable write error; chunk dropped (no <secondary> configured)");
                buffer.discard(&chunk, "unrecoverable");
            }
            Err(WriteError::Retryable(e)) => {
                let r = retry.get_or_insert_with(RetryState::new);
                if r.exhausted(buffer.config()) {
                    tracing::error!(plugin_id = %id, chunk = %chunk.id.hex(), records = chunk.records, retries = r.steps, error = %e, "retries exhausted; chunk dropped (no <secondary> configured)");
                    buffer.discard(&chunk, "retry_exhausted");
                    retry = None;
                    continue;
                }
                let wait = r.next_wait(buffer.config());
                buffer.stats().retries.inc();
                tracing::warn!(plugin_id = %id, chunk = %chunk.id.hex(), retry = r.steps, wait_ms = wait.as_millis() as u64, error = %e, "write failed; will retry");
                buffer.takeback(chunk);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait() => return,
                }
            }
        }
    }
}
