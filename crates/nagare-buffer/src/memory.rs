//! The memory buffer.

use crate::config::{BufferConfig, FlushMode, OverflowAction};
use bytes::BytesMut;
use nagare_core::metrics::{counter, gauge, Counter, Gauge, ReasonCounters};
use nagare_core::{Chunk, ChunkId, Event, Tag};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Why an append was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// `total_limit_size` reached and the overflow action refuses (`throw_exception`).
    #[error("buffer full")]
    Full,
    /// The buffer is closed (shutting down).
    #[error("buffer closed")]
    Closed,
}

impl AppendError {
    pub fn reason(&self) -> &'static str {
        match self {
            AppendError::Full => "buffer_full",
            AppendError::Closed => "shutting_down",
        }
    }
}

/// Buffer metrics, under the owning output's `@id`.
#[derive(Clone, Debug)]
pub struct BufferStats {
    pub bytes: Gauge,
    pub queued_chunks: Gauge,
    pub staged_chunks: Gauge,
    pub appended_records: Counter,
    pub written_chunks: Counter,
    pub written_records: Counter,
    pub retries: Counter,
    pub overflows: Counter,
    /// Records dropped, by reason (`drop_oldest_chunk`, `retry_exhausted`, `unrecoverable`,
    /// `lost_at_shutdown`).
    pub dropped_records: ReasonCounters,
}

impl BufferStats {
    pub fn new(id: &str) -> Self {
        let l = [("plugin_id", id)];
        BufferStats {
            bytes: gauge("nagare_buffer_bytes", "Bytes staged and queued", &l),
            queued_chunks: gauge(
                "nagare_buffer_queued_chunks",
                "Chunks waiting to be written",
                &l,
            ),
            staged_chunks: gauge("nagare_buffer_staged_chunks", "Chunks being filled", &l),
            appended_records: counter(
                "nagare_buffer_appended_records_total",
                "Records appended",
                &l,
            ),
            written_chunks: counter("nagare_output_chunks_written_total", "Chunks written", &l),
            written_records: counter("nagare_output_records_written_total", "Records written", &l),
            retries: counter(
                "nagare_output_retries_total",
                "Failed writes that will be retried",
                &l,
            ),
            overflows: counter(
                "nagare_buffer_overflows_total",
                "Appends that found the buffer full",
                &l,
            ),
            dropped_records: ReasonCounters::new(
                "nagare_output_dropped_records_total",
                "Records dropped by the output, by reason",
                &l,
            ),
        }
    }
}

struct Staged {
    id: ChunkId,
    bytes: BytesMut,
    records: usize,
    created: Instant,
}

#[derive(Default)]
struct State {
    staged: HashMap<Tag, Staged>,
    queue: VecDeque<Chunk>,
    /// Staged + queued + in-flight bytes.
    bytes: usize,
    closed: bool,
}

/// One output's buffer.
pub struct Buffer {
    cfg: BufferConfig,
    state: Mutex<State>,
    work: Notify,
    space: Notify,
    stats: BufferStats,
}

impl Buffer {
    pub fn new(cfg: BufferConfig, id: &str) -> Self {
        Buffer {
            cfg,
            state: Mutex::new(State::default()),
            work: Notify::new(),
            space: Notify::new(),
            stats: BufferStats::new(id),
        }
    }

    pub fn config(&self) -> &BufferConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &BufferStats {
        &self.stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends events under `tag`. `Ok` is the commit point. With `overflow_action block` this
    /// waits for space.
    pub async fn append(&self, tag: &Tag, events: &[Event]) -> Result<(), AppendError> {
        loop {
            let waiter = self.space.notified();
            match self.try_append(tag, events) {
                Err(AppendError::Full) if self.cfg.overflow_action == OverflowAction::Block => {
                    waiter.await;
                }
                other => return other,
            }
        }
    }

    /// Appends without waiting.
    pub fn try_append(&self, tag: &Tag, events: &[Event]) -> Result<(), AppendError> {
        let need: usize = events.iter().map(Event::entry_len).sum();
        let mut st = self.lock();
        if st.closed {
            return Err(AppendError::Closed);
        }
        if st.bytes + need > self.cfg.total_limit_size {
            self.stats.overflows.inc();
            match self.cfg.overflow_action {
                OverflowAction::ThrowException | OverflowAction::Block => {
                    return Err(AppendError::Full)
                }
                OverflowAction::DropOldestChunk => {
                    while st.bytes + need > self.cfg.total_limit_size {
                        let Some(old) = st.queue.pop_front() else {
                            break;
                        };
                        st.bytes -= old.bytes.len();
                        self.stats
                            .dropped_records
                            .add("drop_oldest_chunk", old.records as u64);
                        tracing::warn!(chunk = %old.id.hex(), records = old.records, "buffer full: dropped the oldest chunk (overflow_action drop_oldest_chunk)");
                    }
                    if st.bytes + need > self.cfg.total_limit_size {
                        return Err(AppendError::Full);
                    }
                }
            }
        }
        let limit = self.cfg.chunk_limit_size;
        let max_records = self.cfg.chunk_limit_records.unwrap_or(usize::MAX);
        let mut queued = false;
        for e in events {
            let len = e.entry_len();
            let st = &mut *st;
            let full = st.staged.get(tag).is_some_and(|s| {
                s.records > 0 && (s.bytes.len() + len > limit || s.records >= max_records)
            });
            if full {
                if let Some(s) = st.staged.remove(tag) {
                    st.queue.push_back(seal(tag, s));
                    queued = true;
                }
            }
            let s = st.staged.entry(tag.clone()).or_insert_with(|| Staged {
                id: ChunkId::random(),
                bytes: BytesMut::with_capacity(limit.min(64 * 1024).max(len)),
                records: 0,
                created: Instant::now(),
            });
            e.write_entry(&mut s.bytes, false);
            s.records += 1;
        }
        st.bytes += need;
        if self.cfg.flush_mode == FlushMode::Immediate {
            if let Some(s) = st.staged.remove(tag) {
                st.queue.push_back(seal(tag, s));
                queued = true;
            }
        }
        self.stats.appended_records.add(events.len() as u64);
        self.update_gauges(&st);
        drop(st);
        if queued {
            self.work.notify_waiters();
            self.work.notify_one();
        }
        Ok(())
    }

    fn update_gauges(&self, st: &State) {
        self.stats.bytes.set(st.bytes as i64);
        self.stats.queued_chunks.set(st.queue.len() as i64);
        self.stats.staged_chunks.set(st.staged.len() as i64);
    }

    /// Moves staged chunks older than `age` (all of them with `Duration::ZERO`) to the queue.
    pub fn enqueue_older_than(&self, age: Duration) -> usize {
        let mut st = self.lock();
        let limit = self.cfg.queued_chunks_limit_size.unwrap_or(usize::MAX);
        let due: Vec<Tag> = st
            .staged
            .iter()
            .filter(|(_, s)| s.created.elapsed() >= age)
            .map(|(t, _)| t.clone())
            .collect();
        let mut n = 0;
        for t in due {
            if age > Duration::ZERO && st.queue.len() >= limit {
                break;
            }
            if let Some(s) = st.staged.remove(&t) {
                st.queue.push_back(seal(&t, s));
                n += 1;
            }
        }
        self.update_gauges(&st);
        drop(st);
        if n > 0 {
            self.work.notify_waiters();
        }
        n
    }

    /// The next queued chunk, waiting until one is queued. `None` once closed and empty.
    pub async fn dequeue(&self) -> Option<Chunk> {
        loop {
            let waiter = self.work.notified();
            tokio::pin!(waiter);
            waiter.as_mut().enable();
            {
                let mut st = self.lock();
                if let Some(c) = st.queue.pop_front() {
                    self.update_gauges(&st);
                    return Some(c);
                }
                if st.closed {
                    return None;
                }
            }
            waiter.await;
        }
    }

    /// The next queued chunk, if any, without waiting.
    pub fn try_dequeue(&self) -> Option<Chunk> {
        let mut st = self.lock();
        let c = st.queue.pop_front();
        self.update_gauges(&st);
        c
    }

    /// A chunk was written: release its bytes.
    pub fn purge(&self, chunk: &Chunk) {
        let mut st = self.lock();
        st.bytes = st.bytes.saturating_sub(chunk.bytes.len());
        self.update_gauges(&st);
        drop(st);
        self.stats.written_chunks.inc();
        self.stats.written_records.add(chunk.records as u64);
        self.space.notify_waiters();
    }

    /// A chunk is given up on (counted with `reason`): release its bytes.
    pub fn discard(&self, chunk: &Chunk, reason: &str) {
        let mut st = self.lock();
        st.bytes = st.bytes.saturating_sub(chunk.bytes.len());
        self.update_gauges(&st);
        drop(st);
        self.stats.dropped_records.add(reason, chunk.records as u64);
        self.space.notify_waiters();
    }

    /// A write failed: put the chunk back at the head of the queue.
    pub fn takeback(&self, chunk: Chunk) {
        let mut st = self.lock();
        st.queue.push_front(chunk);
        self.update_gauges(&st);
        drop(st);
        self.work.notify_one();
    }

    /// Refuse further appends; wake everything waiting.
    pub fn close(&self) {
        self.lock().closed = true;
        self.work.notify_waiters();
        self.space.notify_waiters();
    }

    /// (staged + queued chunks, bytes).
    pub fn usage(&self) -> (usize, usize) {
        let st = self.lock();
        (st.staged.len() + st.queue.len(), st.bytes)
    }

    /// Records still held (staged and queued), for shutdown accounting.
    pub fn held_records(&self) -> usize {
        let st = self.lock();
        st.staged.values().map(|s| s.records).sum::<usize>()
            + st.queue.iter().map(|c| c.records).sum::<usize>()
    }
}

fn seal(tag: &Tag, s: Staged) -> Chunk {
    Chunk {
        id: s.id,
        tag: tag.clone(),
        key: nagare_core::ChunkKey {
            tag: Some(tag.clone()),
            ..Default::default()
        },
        bytes: s.bytes.freeze(),
        records: s.records,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nagare_core::{EventTime, Record};

    fn ev(i: usize) -> Event {
        Event {
            time: EventTime::from_secs(1),
            record: Record::from_pairs(&[("n", i.to_string())]),
        }
    }

    #[tokio::test]
    async fn chunks_split_at_the_record_limit_and_keep_order() {
        let b = Buffer::new(
            BufferConfig {
                chunk_limit_records: Some(2),
                ..Default::default()
            },
            "t-buf-1",
        );
        let tag = Tag::from("a");
        let evs: Vec<Event> = (0..5).map(ev).collect();
        b.append(&tag, &evs).await.unwrap();
        b.enqueue_older_than(Duration::ZERO);
        let sizes: Vec<usize> = std::iter::from_fn(|| b.try_dequeue())
            .map(|c| c.records)
            .collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }

    #[tokio::test]
    async fn throw_exception_refuses_when_full_and_purge_frees_space() {
        let b = Buffer::new(
            BufferConfig {
                total_limit_size: 100,
                ..Default::default()
            },
            "t-buf-2",
        );
        let tag = Tag::from("a");
        let evs: Vec<Event> = (0..10).map(ev).collect();
        assert_eq!(b.append(&tag, &evs).await, Err(AppendError::Full));
        b.append(&tag, &evs[..3]).await.unwrap();
        b.enqueue_older_than(Duration::ZERO);
        let c = b.try_dequeue().unwrap();
        b.purge(&c);
        assert_eq!(b.usage(), (0, 0));
    }

    #[tokio::test]
    async fn drop_oldest_chunk_makes_room_and_counts() {
        let b = Buffer::new(
            BufferConfig {
                total_limit_size: 60,
                chunk_limit_records: Some(1),
                overflow_action: OverflowAction::DropOldestChunk,
                ..Default::default()
            },
            "t-buf-3",
        );
        let tag = Tag::from("a");
        for i in 0..5 {
            b.append(&tag, &[ev(i)]).await.unwrap();
        }
        assert!(b.stats().dropped_records.total() > 0);
        assert!(b.usage().1 <= 60);
    }
}
