//! One output's buffer: staged chunks per chunk key, the queue, limits, overflow, and the two
//! storages (memory, file). The flush loop ([`crate::flush`]) drives it.

use crate::config::{BufferConfig, Compress, FlushMode, FsyncPolicy, OverflowAction, Storage};
use crate::file::format::{self, FrameHeader, Header};
use crate::file::store::{self, ChunkFileError, ChunkName, FileState, FileStore, StagedFile};
use crate::stats::BufferStats;
use bytes::{Bytes, BytesMut};
use nagare_core::{Chunk, ChunkId, ChunkKey, Event, Tag};
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What [`Buffer::quarantine`] did.
#[derive(Debug)]
pub enum Quarantined {
    /// The chunk's file is now at this path (the chunk left the buffer).
    Moved(PathBuf),
    /// A memory buffer (or a chunk not in flight): nothing was moved; the caller decides.
    NotPersistent,
    /// The move failed (no space, permissions): the file is where it was and the chunk is
    /// still in flight. Never delete it in this case.
    Failed(std::io::Error),
}

/// Why an append was refused. The input must not ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// `total_limit_size` reached and the overflow action refuses (`throw_exception`).
    #[error("buffer full")]
    Full,
    /// The buffer is closed (shutting down).
    #[error("buffer closed")]
    Closed,
    /// The file buffer could not write or sync.
    #[error("buffer i/o error")]
    Io,
}

impl AppendError {
    pub fn reason(&self) -> &'static str {
        match self {
            AppendError::Full => "buffer_full",
            AppendError::Closed => "shutting_down",
            AppendError::Io => "buffer_io_error",
        }
    }
}

/// Why a buffer could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid buffer settings: {0}")]
    Config(String),
    #[error("buffer path {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The wall clock used for time-key flushing. [`WallClock::Tokio`] follows tokio's clock, so
/// tests with `tokio::time::pause()` can move it.
#[derive(Debug, Clone)]
pub enum WallClock {
    System,
    Tokio { base_unix: f64, base: Instant },
}

impl WallClock {
    /// A clock anchored at the current wall time that advances with tokio's (paused) clock.
    pub fn tokio() -> Self {
        WallClock::Tokio {
            base_unix: system_now(),
            base: Instant::now(),
        }
    }
    /// Unix seconds.
    pub fn now(&self) -> f64 {
        match self {
            WallClock::System => system_now(),
            WallClock::Tokio { base_unix, base } => base_unix + base.elapsed().as_secs_f64(),
        }
    }
}

fn system_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// What the buffer knows about a chunk without reading it.
#[derive(Debug, Clone)]
struct Meta {
    id: ChunkId,
    seq: u64,
    records: usize,
    /// Uncompressed entry bytes.
    raw: usize,
    /// Bytes as stored (file length for file chunks).
    stored: usize,
}

enum StagedData {
    /// Uncompressed entries.
    Mem(BytesMut),
    /// Frames (gzip members) in memory.
    MemFramed(Vec<u8>),
    File(StagedFile),
}

struct Staged {
    meta: Meta,
    key: ChunkKey,
    tag: Tag,
    data: StagedData,
    created: Instant,
}

#[derive(Clone)]
enum QueuedData {
    Mem {
        bytes: Bytes,
        framed: bool,
        key: ChunkKey,
        tag: Tag,
    },
    File {
        path: PathBuf,
    },
}

#[derive(Clone)]
struct Queued {
    meta: Meta,
    data: QueuedData,
    /// Bytes held in memory while in flight (file chunks read back).
    loaded: usize,
    /// A damaged tail that could not be cut off was reported (counted, logged) already: a
    /// retry reads it again and must not count it twice.
    tail_reported: bool,
}

#[derive(Default)]
struct State {
    staged: HashMap<ChunkKey, Staged>,
    queue: VecDeque<Queued>,
    inflight: HashMap<ChunkId, Queued>,
    /// Stored bytes of staged + queued + in-flight chunks.
    bytes: usize,
    /// Bytes held in memory.
    mem_bytes: usize,
    closed: bool,
    /// Shutdown began ([`Buffer::stop_waiting`]): a full buffer refuses instead of blocking.
    stopping: bool,
    /// What a memory buffer still held was counted as lost (see [`Buffer::count_lost`]).
    loss_counted: bool,
    next_seq: u64,
    /// Scratch: entries of the frame being built.
    entries: BytesMut,
    /// Scratch: the frame (and gzip member) being built.
    frame: Vec<u8>,
    gz: Vec<u8>,
    /// Sealed files written since the last interval fsync, by chunk. A chunk written (or
    /// dropped) before that fsync leaves this list with its file: syncing a deleted file would
    /// force the writeback of data nobody needs any more (most chunks of a burst live well
    /// under the interval, and this way never reach the disk at all).
    unsynced: Vec<(ChunkId, Arc<File>)>,
    dir_dirty: bool,
}

/// Why `append_groups` refused.
enum Refusal {
    /// Full now; `block` may wait.
    Full,
    /// Larger than `total_limit_size`: waiting cannot help.
    NeverFits,
    Other(AppendError),
}

impl Refusal {
    fn error(self) -> AppendError {
        match self {
            Refusal::Full | Refusal::NeverFits => AppendError::Full,
            Refusal::Other(e) => e,
        }
    }
}

/// A dropped chunk's file, to delete once the buffer lock is released.
struct Discarded {
    path: PathBuf,
    /// Its handle from the unsynced list, if it was there: closed with this.
    _file: Option<Arc<File>>,
}

/// Takes the chunk `id`'s file off the list the next interval fsync syncs (its chunk was
/// written or dropped: nothing to sync any more); the caller decides when the handle closes.
fn take_unsynced(st: &mut State, id: ChunkId) -> Option<Arc<File>> {
    let i = st.unsynced.iter().position(|(c, _)| *c == id)?;
    Some(st.unsynced.swap_remove(i).1)
}

/// The files to sync now: the sealed ones not synced yet and the staged ones written since
/// the last sync (`all_staged`: every staged one), which count as synced from here on.
fn take_files_to_sync(st: &mut State, all_staged: bool) -> Vec<Arc<File>> {
    let mut files: Vec<Arc<File>> = std::mem::take(&mut st.unsynced)
        .into_iter()
        .map(|(_, f)| f)
        .collect();
    for s in st.staged.values_mut() {
        if let StagedData::File(f) = &mut s.data {
            if f.dirty || all_staged {
                f.dirty = false;
                files.push(f.file.clone());
            }
        }
    }
    files
}

/// Files (and whether the directory) to sync: before an append returns (`fsync_policy
/// always`), at each interval, at close.
#[derive(Default)]
struct ToSync {
    files: Vec<Arc<File>>,
    dir: bool,
}

/// One output's buffer. See the crate docs for the model.
pub struct Buffer {
    cfg: BufferConfig,
    id: String,
    state: Mutex<State>,
    work: Notify,
    space: Notify,
    stats: BufferStats,
    store: Option<FileStore>,
    clock: WallClock,
}

impl State {
    fn held_records(&self) -> usize {
        self.staged.values().map(|s| s.meta.records).sum::<usize>()
            + self.queue.iter().map(|q| q.meta.records).sum::<usize>()
            + self
                .inflight
                .values()
                .map(|q| q.meta.records)
                .sum::<usize>()
    }
}

/// A memory buffer dropped while it still holds records (its output's drain was cut short, e.g.
/// a reload stopping old outputs that overran the drain deadline) counts them as
/// `lost_at_shutdown` and says so, unless the drain already did.
impl Drop for Buffer {
    fn drop(&mut self) {
        let left = self.count_lost("lost_at_shutdown");
        if left > 0 {
            tracing::error!(plugin_id = %self.id, records = left, "memory buffer dropped while holding records: they are lost (counted as lost_at_shutdown)");
        }
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("id", &self.id)
            .field("storage", &self.cfg.storage)
            .finish()
    }
}

impl Buffer {
    /// A memory buffer (`cfg.storage` must be `Memory`; use [`Buffer::open`] for any storage).
    ///
    /// # Panics
    /// If `cfg` asks for a file buffer or is invalid.
    pub fn new(cfg: BufferConfig, id: &str) -> Self {
        assert!(
            !cfg.is_persistent(),
            "Buffer::new is for memory buffers; use Buffer::open"
        );
        Buffer::open(cfg, id).expect("valid memory buffer settings")
    }

    /// Opens a buffer. A file buffer takes its directory's lock and recovers what a previous
    /// run left: staged and queued chunks are queued again (frame headers are walked, payloads
    /// are not read), torn tails are cut off, corrupt files are quarantined. Nothing is loaded
    /// into memory.
    pub fn open(cfg: BufferConfig, id: &str) -> Result<Buffer, OpenError> {
        Self::open_with_clock(cfg, id, WallClock::System)
    }

    /// [`Buffer::open`] with a chosen wall clock (tests use [`WallClock::tokio`]).
    pub fn open_with_clock(
        cfg: BufferConfig,
        id: &str,
        clock: WallClock,
    ) -> Result<Buffer, OpenError> {
        cfg.validate().map_err(OpenError::Config)?;
        let stats = BufferStats::new(id);
        stats.total_limit.set(cfg.total_limit_size as i64);
        let store = match &cfg.storage {
            Storage::Memory => None,
            Storage::File { path, .. } => {
                Some(FileStore::open(path).map_err(|source| OpenError::Io {
                    path: path.clone(),
                    source,
                })?)
            }
        };
        let b = Buffer {
            cfg,
            id: id.to_string(),
            state: Mutex::new(State::default()),
            work: Notify::new(),
            space: Notify::new(),
            stats,
            store,
            clock,
        };
        if b.store.is_some() {
            b.recover().map_err(|source| OpenError::Io {
                path: b.path().unwrap_or_default(),
                source,
            })?;
        }
        Ok(b)
    }

    pub fn config(&self) -> &BufferConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &BufferStats {
        &self.stats
    }

    /// The owning output's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The file buffer's directory.
    pub fn path(&self) -> Option<PathBuf> {
        self.store.as_ref().map(|s| s.dir.clone())
    }

    /// Whether chunks are kept on disk.
    pub fn is_persistent(&self) -> bool {
        self.store.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fsync_policy(&self) -> FsyncPolicy {
        match &self.cfg.storage {
            Storage::File { fsync, .. } => *fsync,
            Storage::Memory => FsyncPolicy::Never,
        }
    }

    // ---- appending -------------------------------------------------------------------------

    /// Appends events under `tag`. `Ok` is the commit point: the events are in the buffer (in
    /// the page cache for a file buffer, on disk with `fsync_policy always`). With
    /// `overflow_action block` this waits for space, until [`Buffer::stop_waiting`] (shutdown)
    /// or [`Buffer::close`]: then it is refused (`shutting_down`).
    pub async fn append(&self, tag: &Tag, events: &[Event]) -> Result<(), AppendError> {
        if events.is_empty() {
            return Ok(());
        }
        let groups = self.cfg.chunk_keys.group(tag, events);
        let mut blocked = false;
        loop {
            let waiter = self.space.notified();
            tokio::pin!(waiter);
            waiter.as_mut().enable();
            match self.append_groups(tag, events, &groups) {
                Err(Refusal::Full) if self.cfg.overflow_action == OverflowAction::Block => {
                    if !blocked {
                        blocked = true;
                        self.stats.blocked_appends.inc();
                    }
                    waiter.await;
                }
                Err(r) => {
                    let e = r.error();
                    self.stats.refused_appends.inc(e.reason());
                    return Err(e);
                }
                Ok(sync) => {
                    if !sync.files.is_empty() || sync.dir {
                        self.sync_now(sync).await.map_err(|e| {
                            tracing::error!(plugin_id = %self.id, error = %e, "fsync of a buffer chunk failed; the append is not acknowledged");
                            self.stats.refused_appends.inc(AppendError::Io.reason());
                            AppendError::Io
                        })?;
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Appends without waiting (no `block`, no fsync: for callers outside a runtime).
    pub fn try_append(&self, tag: &Tag, events: &[Event]) -> Result<(), AppendError> {
        let groups = self.cfg.chunk_keys.group(tag, events);
        self.append_groups(tag, events, &groups)
            .map(|_| ())
            .map_err(Refusal::error)
    }

    fn append_groups(
        &self,
        tag: &Tag,
        events: &[Event],
        groups: &[(ChunkKey, Vec<&Event>)],
    ) -> Result<ToSync, Refusal> {
        let mut need: usize = events.iter().map(Event::entry_len).sum();
        let mut st = self.lock();
        if st.closed {
            return Err(Refusal::Other(AppendError::Closed));
        }
        if self.store.is_some() || self.cfg.compress == Compress::Gzip {
            // Frame headers, and the file header of each chunk this append starts.
            for (key, _) in groups {
                need += format::FRAME_HEADER_LEN;
                if self.store.is_some() && !st.staged.contains_key(key) {
                    need += Header::encoded_len(key.tag.as_ref().unwrap_or(tag), key);
                }
            }
        }
        if need > self.cfg.total_limit_size {
            // Can never fit: refuse at once, whatever the overflow action.
            self.stats.overflows.inc();
            return Err(Refusal::NeverFits);
        }
        // Files of chunks dropped to make room: deleted once the lock is released.
        let mut discarded = Vec::new();
        if st.bytes + need > self.cfg.total_limit_size {
            self.stats.overflows.inc();
            match self.cfg.overflow_action {
                OverflowAction::Block if st.stopping => {
                    // Shutting down: nothing frees space for a blocked append any more (the
                    // outputs drain only once the inputs stopped), so refuse it (no ack; the
                    // client resends) instead of holding up the shutdown.
                    return Err(Refusal::Other(AppendError::Closed));
                }
                OverflowAction::ThrowException | OverflowAction::Block => {
                    return Err(Refusal::Full)
                }
                OverflowAction::DropOldestChunk => {
                    while st.bytes + need > self.cfg.total_limit_size {
                        if !self.drop_oldest(&mut st, &mut discarded) {
                            break;
                        }
                    }
                    if st.bytes + need > self.cfg.total_limit_size {
                        self.update_gauges(&st);
                        drop(st);
                        self.delete_discarded(discarded);
                        return Err(Refusal::Full);
                    }
                }
            }
        }
        let mut sync = ToSync::default();
        let mut queued = false;
        let mut result = Ok(());
        for (key, evs) in groups {
            match self.append_group(&mut st, key, tag, evs, &mut sync) {
                Ok(q) => queued |= q,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() && self.cfg.flush_mode == FlushMode::Immediate {
            for (key, _) in groups {
                queued |= self.seal(&mut st, key);
            }
        }
        if result.is_ok() {
            self.stats.appended_records.add(events.len() as u64);
        }
        self.update_gauges(&st);
        drop(st);
        self.delete_discarded(discarded);
        if queued {
            self.work.notify_waiters();
            self.work.notify_one();
        }
        result.map(|_| sync).map_err(Refusal::Other)
    }

    /// Appends one key's events, sealing chunks as they fill. Returns whether a chunk was
    /// queued.
    fn append_group(
        &self,
        st: &mut State,
        key: &ChunkKey,
        tag: &Tag,
        evs: &[&Event],
        sync: &mut ToSync,
    ) -> Result<bool, AppendError> {
        let limit = self.cfg.chunk_limit_size;
        let max_records = self.cfg.chunk_limit_records.unwrap_or(usize::MAX);
        let full_at = (limit as f64 * self.cfg.chunk_full_threshold) as usize;
        let mut queued = false;
        let mut i = 0;
        while i < evs.len() {
            if !st.staged.contains_key(key) {
                let s = self.new_staged(st, key, tag)?;
                if let StagedData::File(f) = &s.data {
                    if self.fsync_policy() == FsyncPolicy::Always {
                        sync.dir = true;
                        sync.files.push(f.file.clone());
                    }
                }
                st.bytes += s.meta.stored;
                st.staged.insert(key.clone(), s);
            }
            let State {
                staged,
                entries,
                frame,
                gz,
                bytes,
                mem_bytes,
                ..
            } = st;
            let s = staged.get_mut(key).expect("staged chunk exists");
            let (mut raw, mut n) = (s.meta.raw, 0usize);
            entries.clear();
            let direct = matches!(s.data, StagedData::Mem(_));
            // An uncompressed frame is built in place: its header reserved, the entries
            // written after it, the header sealed over them (no copy of the entries).
            let in_place = !direct && self.cfg.compress != Compress::Gzip;
            if in_place {
                entries.resize(format::FRAME_HEADER_LEN, 0);
            }
            while i < evs.len() {
                let len = evs[i].entry_len();
                let recs = s.meta.records + n;
                if recs > 0 && (raw + len > limit || recs >= max_records) {
                    break;
                }
                match &mut s.data {
                    StagedData::Mem(b) => evs[i].write_entry(b, false),
                    _ => evs[i].write_entry(entries, false),
                }
                raw += len;
                n += 1;
                i += 1;
            }
            if n > 0 {
                let stored_delta = if direct {
                    raw - s.meta.raw
                } else {
                    let frame: &[u8] = if in_place {
                        format::seal_frame(entries, n as u32);
                        entries
                    } else {
                        frame.clear();
                        gz.clear();
                        crate::compress::gzip_into(gz, entries);
                        format::write_frame(frame, gz, entries.len(), n as u32);
                        frame
                    };
                    match &mut s.data {
                        StagedData::MemFramed(v) => v.extend_from_slice(frame),
                        StagedData::File(f) => {
                            let store = self.store.as_ref().expect("file buffer has a store");
                            if let Err(e) = store.append(f, frame) {
                                tracing::error!(plugin_id = %self.id, path = %f.path.display(), error = %e, "cannot append to a buffer chunk file; the append is refused");
                                return Err(AppendError::Io);
                            }
                            if self.fsync_policy() == FsyncPolicy::Always
                                && !sync.files.iter().any(|x| Arc::ptr_eq(x, &f.file))
                            {
                                sync.files.push(f.file.clone());
                            }
                        }
                        StagedData::Mem(_) => unreachable!("direct"),
                    }
                    frame.len()
                };
                s.meta.records += n;
                s.meta.raw = raw;
                s.meta.stored += stored_delta;
                *bytes += stored_delta;
                if !matches!(s.data, StagedData::File(_)) {
                    *mem_bytes += stored_delta;
                }
            }
            let full = i < evs.len() || s.meta.raw >= full_at || s.meta.records >= max_records;
            if full {
                queued |= self.seal(st, key);
            }
        }
        Ok(queued)
    }

    fn new_staged(&self, st: &mut State, key: &ChunkKey, tag: &Tag) -> Result<Staged, AppendError> {
        let id = ChunkId::random();
        let seq = st.next_seq;
        st.next_seq += 1;
        let tag = key.tag.clone().unwrap_or_else(|| tag.clone());
        let (data, stored) = match &self.store {
            None => match self.cfg.compress {
                Compress::Text => (
                    StagedData::Mem(BytesMut::with_capacity(
                        self.cfg.chunk_limit_size.min(64 * 1024),
                    )),
                    0,
                ),
                Compress::Gzip => (StagedData::MemFramed(Vec::new()), 0),
            },
            Some(store) => {
                let header = Header {
                    id,
                    created_ms: (self.clock.now() * 1000.0) as u64,
                    gzip: self.cfg.compress == Compress::Gzip,
                    tag: tag.clone(),
                    key: key.clone(),
                };
                let f = store.create(seq, &header).map_err(|e| {
                    tracing::error!(plugin_id = %self.id, dir = %store.dir.display(), error = %e, "cannot create a buffer chunk file; the append is refused");
                    AppendError::Io
                })?;
                st.dir_dirty = true;
                let len = f.len as usize;
                (StagedData::File(f), len)
            }
        };
        Ok(Staged {
            meta: Meta {
                id,
                seq,
                records: 0,
                raw: 0,
                stored,
            },
            key: key.clone(),
            tag,
            data,
            created: Instant::now(),
        })
    }

    /// Moves the staged chunk of `key` to the queue. Returns whether one was queued.
    fn seal(&self, st: &mut State, key: &ChunkKey) -> bool {
        let Some(s) = st.staged.remove(key) else {
            return false;
        };
        if s.meta.records == 0 {
            // Only a header (an append that failed right after creating the file).
            st.bytes = st.bytes.saturating_sub(s.meta.stored);
            if let (StagedData::File(f), Some(store)) = (&s.data, &self.store) {
                let _ = store.remove(&f.path);
            }
            return false;
        }
        let data = match s.data {
            StagedData::Mem(b) => QueuedData::Mem {
                bytes: b.freeze(),
                framed: false,
                key: s.key,
                tag: s.tag,
            },
            StagedData::MemFramed(v) => QueuedData::Mem {
                bytes: Bytes::from(v),
                framed: true,
                key: s.key,
                tag: s.tag,
            },
            StagedData::File(f) => {
                let store = self.store.as_ref().expect("file buffer has a store");
                let path = match store.seal(
                    &f,
                    s.meta.seq,
                    s.meta.id,
                    s.meta.records as u64,
                    s.meta.raw as u64,
                ) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(plugin_id = %self.id, path = %f.path.display(), error = %e, "cannot rename a sealed chunk; it stays under its staged name");
                        f.path.clone()
                    }
                };
                st.dir_dirty = true;
                if f.dirty && matches!(self.fsync_policy(), FsyncPolicy::Interval(_)) {
                    st.unsynced.push((s.meta.id, f.file.clone()));
                }
                QueuedData::File { path }
            }
        };
        st.queue.push_back(Queued {
            meta: s.meta,
            data,
            loaded: 0,
            tail_reported: false,
        });
        true
    }

    /// Drops the oldest queued chunk (sealing the oldest staged one first if nothing is
    /// queued); false when there is nothing to drop. The chunk leaves the accounting at once;
    /// its file goes into `discarded`, for [`Buffer::delete_discarded`] after the lock is
    /// released (unlinking a file of megabytes and closing its last handle frees its pages and
    /// blocks: not under the lock every append takes). Until then the disk holds the dropped
    /// files beside the new data (briefly more than `total_limit_size`); a crash in between
    /// leaves the file to be delivered after the restart, although it was counted as dropped.
    fn drop_oldest(&self, st: &mut State, discarded: &mut Vec<Discarded>) -> bool {
        if st.queue.is_empty() {
            let oldest = st
                .staged
                .iter()
                .min_by_key(|(_, s)| s.meta.seq)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    self.seal(st, &k);
                }
                None => return false,
            }
        }
        let Some(old) = st.queue.pop_front() else {
            return false;
        };
        self.release(st, &old);
        if let (QueuedData::File { path }, Some(_)) = (&old.data, &self.store) {
            discarded.push(Discarded {
                path: path.clone(),
                _file: take_unsynced(st, old.meta.id),
            });
        }
        self.stats
            .dropped_records
            .add("drop_oldest_chunk", old.meta.records as u64);
        tracing::warn!(plugin_id = %self.id, chunk = %old.meta.id.hex(), records = old.meta.records, "buffer full: dropped the oldest chunk (overflow_action drop_oldest_chunk)");
        true
    }

    /// Deletes the files of dropped chunks (outside the lock); each file's last handle, if the
    /// unsynced list held it, closes after its unlink.
    fn delete_discarded(&self, discarded: Vec<Discarded>) {
        let Some(store) = &self.store else { return };
        for d in discarded {
            if let Err(e) = store.remove(&d.path) {
                tracing::error!(plugin_id = %self.id, path = %d.path.display(), error = %e, "cannot delete a dropped chunk file");
            }
        }
    }

    /// Releases a chunk's bytes from the accounting.
    fn release(&self, st: &mut State, q: &Queued) {
        st.bytes = st.bytes.saturating_sub(q.meta.stored);
        let mem = match q.data {
            QueuedData::Mem { .. } => q.meta.stored,
            QueuedData::File { .. } => q.loaded,
        };
        st.mem_bytes = st.mem_bytes.saturating_sub(mem);
    }

    fn update_gauges(&self, st: &State) {
        self.stats.bytes.set(st.bytes as i64);
        self.stats.memory_bytes.set(st.mem_bytes as i64);
        self.stats.queued_chunks.set(st.queue.len() as i64);
        self.stats.staged_chunks.set(st.staged.len() as i64);
        self.stats.inflight_chunks.set(st.inflight.len() as i64);
    }

    // ---- queueing ----------------------------------------------------------------------------

    /// Queues the staged chunks that are due: with `flush_mode interval`, those created
    /// `flush_interval` ago or earlier (while the queue is shorter than
    /// `queued_chunks_limit_size`); with a `time` key, those whose slice ended `timekey_wait`
    /// ago (`timekey + timekey_unit + timekey_wait <= now`, as Fluentd). Returns how many.
    pub fn enqueue_due(&self) -> usize {
        let mut st = self.lock();
        let wall = self.clock.now();
        let interval = self.cfg.flush_mode == FlushMode::Interval;
        let qlimit = self.cfg.queue_limit();
        let mut due: Vec<(u64, ChunkKey, bool)> = Vec::new();
        for (k, s) in &st.staged {
            let by_time = match (self.cfg.chunk_keys.time, k.timekey) {
                (Some(t), Some(tk)) => (tk + t.unit) as f64 + t.wait.as_secs_f64() <= wall,
                _ => false,
            };
            let by_interval = interval && s.created.elapsed() >= self.cfg.flush_interval;
            if by_time || by_interval {
                due.push((s.meta.seq, k.clone(), by_time));
            }
        }
        due.sort_by_key(|d| d.0);
        let mut n = 0;
        for (_, k, by_time) in due {
            if !by_time && st.queue.len() >= qlimit {
                continue;
            }
            if self.seal(&mut st, &k) {
                n += 1;
            }
        }
        self.update_gauges(&st);
        drop(st);
        if n > 0 {
            self.work.notify_waiters();
            self.work.notify_one();
        }
        n
    }

    /// Queues every staged chunk (shutdown with `flush_at_shutdown`, tests).
    pub fn enqueue_all(&self) -> usize {
        let mut st = self.lock();
        let mut keys: Vec<(u64, ChunkKey)> = st
            .staged
            .iter()
            .map(|(k, s)| (s.meta.seq, k.clone()))
            .collect();
        keys.sort_by_key(|k| k.0);
        let mut n = 0;
        for (_, k) in keys {
            if self.seal(&mut st, &k) {
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

    /// Compatibility: `enqueue_older_than(Duration::ZERO)` queues everything, any other age
    /// queues what [`Buffer::enqueue_due`] would.
    pub fn enqueue_older_than(&self, age: Duration) -> usize {
        if age.is_zero() {
            self.enqueue_all()
        } else {
            self.enqueue_due()
        }
    }

    // ---- dequeueing --------------------------------------------------------------------------

    /// The next queued chunk, waiting until one is queued. `None` once closed and empty.
    /// Cancel-safe: a chunk being read back when the future is dropped returns to the queue.
    pub async fn dequeue(&self) -> Option<Chunk> {
        loop {
            let waiter = self.work.notified();
            tokio::pin!(waiter);
            waiter.as_mut().enable();
            match self.pop() {
                Popped::Chunk(q) => {
                    if let Some(c) = self.materialize(*q).await {
                        return Some(c);
                    }
                    continue;
                }
                Popped::Closed => return None,
                Popped::Empty => waiter.await,
            }
        }
    }

    /// The next queued chunk, if any, without waiting for one to be queued.
    pub async fn try_dequeue(&self) -> Option<Chunk> {
        loop {
            match self.pop() {
                Popped::Chunk(q) => {
                    if let Some(c) = self.materialize(*q).await {
                        return Some(c);
                    }
                }
                Popped::Closed | Popped::Empty => return None,
            }
        }
    }

    fn pop(&self) -> Popped {
        let mut st = self.lock();
        match st.queue.pop_front() {
            Some(q) => {
                st.inflight.insert(q.meta.id, q.clone());
                self.update_gauges(&st);
                Popped::Chunk(Box::new(q))
            }
            None if st.closed => Popped::Closed,
            None => Popped::Empty,
        }
    }

    /// Turns a popped chunk into a [`Chunk`]; `None` when it could not be read (quarantined).
    async fn materialize(&self, q: Queued) -> Option<Chunk> {
        let mut guard = ReturnOnDrop {
            buffer: self,
            id: q.meta.id,
            armed: true,
        };
        let out = match &q.data {
            QueuedData::Mem {
                bytes,
                framed,
                key,
                tag,
            } => {
                let bytes = if *framed {
                    match decode_frames(bytes) {
                        Ok(b) => b,
                        Err(e) => {
                            guard.armed = false;
                            self.lost_chunk(&q, "corrupt", &e);
                            return None;
                        }
                    }
                } else {
                    bytes.clone()
                };
                Chunk {
                    id: q.meta.id,
                    tag: tag.clone(),
                    key: key.clone(),
                    bytes,
                    records: q.meta.records,
                }
            }
            QueuedData::File { path } => {
                let p = path.clone();
                let dir = self.store.as_ref().map(|s| s.dir.clone());
                let read = tokio::task::spawn_blocking(move || {
                    let r = store::read_chunk(&p)?;
                    // A damaged tail's bytes are set aside before the chunk (and its file) can
                    // be written and deleted.
                    let saved = match (&r.damaged, r.torn_at, dir) {
                        (Some(_), Some(at), Some(dir)) => Some(store::cut_tail(&dir, &p, at)),
                        _ => None,
                    };
                    Ok((r, saved))
                })
                .await
                .unwrap_or_else(|e| Err(ChunkFileError::Io(std::io::Error::other(e.to_string()))));
                match read {
                    Ok((r, saved)) => {
                        match (r.torn_at, &r.damaged) {
                            (Some(_), Some(_)) if q.tail_reported => {}
                            (Some(at), Some(why)) => {
                                // Records the damaged frames declared (the name's count, or
                                // the scan's at recovery, minus what was read).
                                let lost = (q.meta.records as u64).saturating_sub(r.records);
                                self.stats.torn_tails.inc();
                                self.stats.quarantined_records.add("damaged_tail", lost);
                                match &saved {
                                    Some(Ok(to)) => {
                                        tracing::error!(plugin_id = %self.id, path = %path.display(), offset = at, damage = %why, records_lost = lost, records_kept = r.records, saved_to = %to.display(), "chunk ends with a damaged tail (a power loss before the last appends reached the disk?): cut off and saved; delivering the whole frames before it");
                                    }
                                    Some(Err(e)) => {
                                        // The tail stays in the file (a retry reads the same
                                        // frames) and goes with it once the chunk is
                                        // delivered: said here, counted once.
                                        self.stats.quarantine_errors.inc();
                                        if let Some(e) = self.lock().inflight.get_mut(&q.meta.id) {
                                            e.tail_reported = true;
                                        }
                                        tracing::error!(plugin_id = %self.id, path = %path.display(), offset = at, damage = %why, records_lost = lost, records_kept = r.records, error = %e, "chunk ends with a damaged tail (a power loss before the last appends reached the disk?) that could not be saved to quarantine: delivering the whole frames before it; the damaged bytes are deleted with the chunk");
                                    }
                                    None => {}
                                }
                            }
                            (Some(at), None) => {
                                self.stats.torn_tails.inc();
                                tracing::warn!(plugin_id = %self.id, path = %path.display(), offset = at, "chunk ends with an incomplete append (never acknowledged); delivering the whole frames before it");
                            }
                            _ => {}
                        }
                        if r.header.id != q.meta.id {
                            guard.armed = false;
                            self.lost_chunk(&q, "corrupt", "header id differs from the file name");
                            return None;
                        }
                        let len = r.bytes.len();
                        {
                            let mut st = self.lock();
                            if let Some(e) = st.inflight.get_mut(&q.meta.id) {
                                e.loaded = len;
                            }
                            st.mem_bytes += len;
                            self.update_gauges(&st);
                        }
                        Chunk {
                            id: q.meta.id,
                            tag: r.header.tag,
                            key: r.header.key,
                            bytes: Bytes::from(r.bytes),
                            records: r.records as usize,
                        }
                    }
                    Err(ChunkFileError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                        guard.armed = false;
                        let mut st = self.lock();
                        st.inflight.remove(&q.meta.id);
                        self.release(&mut st, &q);
                        self.update_gauges(&st);
                        drop(st);
                        self.stats
                            .dropped_records
                            .add("missing_file", q.meta.records as u64);
                        tracing::error!(plugin_id = %self.id, path = %path.display(), records = q.meta.records, "a queued chunk file disappeared; its records are lost");
                        self.space.notify_waiters();
                        return None;
                    }
                    Err(e) => {
                        guard.armed = false;
                        let reason = if matches!(e, ChunkFileError::Io(_)) {
                            "unreadable"
                        } else {
                            "corrupt"
                        };
                        self.lost_chunk(&q, reason, &e.to_string());
                        return None;
                    }
                }
            }
        };
        guard.armed = false;
        Some(out)
    }

    /// A popped chunk that cannot be read: quarantined (file) or dropped (memory), counted.
    fn lost_chunk(&self, q: &Queued, reason: &str, why: &str) {
        let mut st = self.lock();
        st.inflight.remove(&q.meta.id);
        self.release(&mut st, q);
        self.update_gauges(&st);
        drop(st);
        match (&q.data, &self.store) {
            (QueuedData::File { path }, Some(store)) => {
                self.quarantine_path(store, path, reason, q.meta.records as u64, why)
            }
            _ => {
                self.stats
                    .dropped_records
                    .add(reason, q.meta.records as u64);
                tracing::error!(plugin_id = %self.id, chunk = %q.meta.id.hex(), records = q.meta.records, error = why, "memory chunk failed verification; dropped");
            }
        }
        self.space.notify_waiters();
    }

    fn return_to_queue(&self, id: ChunkId) {
        let mut st = self.lock();
        if let Some(mut q) = st.inflight.remove(&id) {
            st.mem_bytes = st.mem_bytes.saturating_sub(q.loaded);
            q.loaded = 0;
            st.queue.push_front(q);
        }
        self.update_gauges(&st);
        drop(st);
        self.work.notify_one();
    }

    // ---- after a write -------------------------------------------------------------------------

    fn finish(&self, chunk: &Chunk) -> Option<Queued> {
        let mut st = self.lock();
        let q = st.inflight.remove(&chunk.id)?;
        self.release(&mut st, &q);
        let mut unsynced = None;
        if let (QueuedData::File { path }, Some(store)) = (&q.data, &self.store) {
            if let Err(e) = store.remove(path) {
                tracing::error!(plugin_id = %self.id, path = %path.display(), error = %e, "cannot delete a written chunk file (it will be written again after a restart)");
            }
            st.dir_dirty = true;
            unsynced = take_unsynced(&mut st, chunk.id);
        }
        self.update_gauges(&st);
        drop(st);
        // The last handle of the deleted file closes here, outside the lock: its pages are
        // dropped without being written.
        drop(unsynced);
        self.space.notify_waiters();
        Some(q)
    }

    /// A chunk was written by the primary output: release it.
    pub fn purge(&self, chunk: &Chunk) {
        if self.finish(chunk).is_some() {
            self.stats.written_chunks.inc();
            self.stats.written_records.add(chunk.records as u64);
        }
    }

    /// A chunk was written by the secondary: release it.
    pub fn purge_secondary(&self, chunk: &Chunk) {
        if self.finish(chunk).is_some() {
            self.stats.secondary_chunks.inc();
            self.stats.secondary_records.add(chunk.records as u64);
        }
    }

    /// A chunk is given up on (counted with `reason`): release it.
    pub fn discard(&self, chunk: &Chunk, reason: &str) {
        if self.finish(chunk).is_some() {
            self.stats.dropped_records.add(reason, chunk.records as u64);
        }
    }

    /// Moves an in-flight chunk's file to `quarantine/<reason>/` (file buffers). On
    /// [`Quarantined::Failed`] the file and the chunk (still in flight: take it back) stay.
    pub fn quarantine(&self, chunk: &Chunk, reason: &str) -> Quarantined {
        let Some(store) = self.store.as_ref() else {
            return Quarantined::NotPersistent;
        };
        let mut st = self.lock();
        let Some(q) = st.inflight.get(&chunk.id).cloned() else {
            return Quarantined::NotPersistent;
        };
        let QueuedData::File { path } = &q.data else {
            return Quarantined::NotPersistent;
        };
        match store.quarantine(path, reason) {
            Ok(to) => {
                st.inflight.remove(&chunk.id);
                self.release(&mut st, &q);
                self.update_gauges(&st);
                drop(st);
                self.stats.quarantined_chunks.inc(reason);
                self.stats
                    .quarantined_records
                    .add(reason, chunk.records as u64);
                self.space.notify_waiters();
                Quarantined::Moved(to)
            }
            Err(e) => {
                self.stats.quarantine_errors.inc();
                tracing::error!(plugin_id = %self.id, path = %path.display(), error = %e, "cannot move a chunk to quarantine; its file stays in the buffer directory");
                Quarantined::Failed(e)
            }
        }
    }

    /// A write failed: put the chunk back at the head of the queue.
    pub fn takeback(&self, chunk: Chunk) {
        self.return_to_queue(chunk.id);
    }

    /// Gives up on every queued chunk without reading it (retry limit reached and no
    /// `<secondary>`): a file buffer moves them to `quarantine/<reason>/` (the CLI can
    /// reinject them), a memory buffer drops them; counted either way. Returns (chunks,
    /// records).
    pub fn evacuate_queued(&self, reason: &str) -> (usize, usize) {
        let mut st = self.lock();
        let queued: Vec<Queued> = st.queue.drain(..).collect();
        let (mut chunks, mut records) = (0, 0);
        for q in &queued {
            self.release(&mut st, q);
            chunks += 1;
            records += q.meta.records;
        }
        self.update_gauges(&st);
        drop(st);
        for q in &queued {
            match (&q.data, &self.store) {
                (QueuedData::File { path }, Some(store)) => self.quarantine_path(
                    store,
                    path,
                    reason,
                    q.meta.records as u64,
                    "queued behind a chunk that reached the retry limit",
                ),
                _ => self
                    .stats
                    .dropped_records
                    .add(reason, q.meta.records as u64),
            }
        }
        self.space.notify_waiters();
        (chunks, records)
    }

    // ---- durability ----------------------------------------------------------------------------

    async fn sync_now(&self, sync: ToSync) -> std::io::Result<()> {
        let dir = self.store.as_ref().map(|s| s.dir.clone());
        let n = sync.files.len() as u64 + sync.dir as u64;
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            for f in &sync.files {
                f.sync_data()?;
            }
            if let (true, Some(d)) = (sync.dir, dir) {
                File::open(d)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        self.stats.fsyncs.add(n);
        res
    }

    /// `fsync_policy interval`: syncs every chunk file written since the last call, and the
    /// directory. The flush loop calls it every `fsync_interval`.
    pub async fn sync_dirty(&self) {
        if self.store.is_none() || self.fsync_policy() == FsyncPolicy::Never {
            return;
        }
        let sync = {
            let mut st = self.lock();
            let files = take_files_to_sync(&mut st, false);
            let dir = std::mem::take(&mut st.dir_dirty);
            ToSync { files, dir }
        };
        if sync.files.is_empty() && !sync.dir {
            return;
        }
        if let Err(e) = self.sync_now(sync).await {
            tracing::error!(plugin_id = %self.id, error = %e, "fsync of buffer chunk files failed");
        }
    }

    /// Interval of the background fsync, if any.
    pub fn fsync_interval(&self) -> Option<Duration> {
        match self.fsync_policy() {
            FsyncPolicy::Interval(d) if self.store.is_some() => Some(d),
            _ => None,
        }
    }

    // ---- lifecycle -----------------------------------------------------------------------------

    /// Shutdown began (the inputs are told to stop): from now on an append that finds the
    /// buffer full is refused (`shutting_down`) instead of waiting for space (`overflow_action
    /// block`), and the appends waiting now wake up and are refused. Appends that fit are still
    /// taken (the inputs finish the batch they are reading). Idempotent.
    pub fn stop_waiting(&self) {
        self.lock().stopping = true;
        self.space.notify_waiters();
    }

    /// Refuse further appends; wake everything waiting.
    pub fn close(&self) {
        self.lock().closed = true;
        self.work.notify_waiters();
        self.space.notify_waiters();
    }

    /// Closes and makes what the file buffer holds durable (staged chunks stay staged and are
    /// queued at the next start).
    pub async fn close_and_persist(&self) {
        self.close();
        if self.store.is_none() {
            return;
        }
        let sync = {
            let mut st = self.lock();
            let files = take_files_to_sync(&mut st, true);
            st.dir_dirty = false;
            ToSync { files, dir: true }
        };
        if self.fsync_policy() != FsyncPolicy::Never {
            if let Err(e) = self.sync_now(sync).await {
                tracing::error!(plugin_id = %self.id, error = %e, "final fsync of the file buffer failed");
            }
        }
    }

    /// (staged + queued + in-flight chunks, stored bytes).
    pub fn usage(&self) -> (usize, usize) {
        let st = self.lock();
        (
            st.staged.len() + st.queue.len() + st.inflight.len(),
            st.bytes,
        )
    }

    /// Queue length.
    pub fn queue_len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Records still held (staged, queued and in flight).
    pub fn held_records(&self) -> usize {
        self.lock().held_records()
    }

    /// Counts the records a memory buffer still holds as dropped with `reason`, once (later
    /// calls, and the count at drop, add nothing); returns how many. File buffers keep what
    /// they hold on disk: 0.
    pub fn count_lost(&self, reason: &'static str) -> usize {
        if self.is_persistent() {
            return 0;
        }
        let mut st = self.lock();
        if std::mem::replace(&mut st.loss_counted, true) {
            return 0;
        }
        let left = st.held_records();
        if left > 0 {
            self.stats.dropped_records.add(reason, left as u64);
        }
        left
    }

    // ---- recovery ------------------------------------------------------------------------------

    fn recover(&self) -> std::io::Result<()> {
        let store = self.store.as_ref().expect("file buffer");
        let (found, unknown) = store.list_all()?;
        self.stats.unknown_files.set(unknown.len() as i64);
        if let Some(sample) = unknown.first() {
            tracing::warn!(plugin_id = %self.id, dir = %store.dir.display(), files = unknown.len(), sample = %sample, "file buffer: files the buffer does not recognise are left alone and not delivered (a previous Fluentd's buffer.*.log/.meta chunks are not read: replay them with Fluentd, or move them away)");
        }
        let mut st = self.lock();
        for f in &found {
            st.next_seq = st.next_seq.max(f.name.seq + 1);
        }
        let mut recovered = 0usize;
        let mut records = 0usize;
        for f in found {
            if let Some(q) = self.recover_one(store, &f.path, f.name) {
                recovered += 1;
                records += q.meta.records;
                st.bytes += q.meta.stored;
                st.queue.push_back(q);
            }
        }
        drop(st);
        self.adopt_incoming();
        let st = self.lock();
        self.update_gauges(&st);
        drop(st);
        if recovered > 0 {
            tracing::info!(plugin_id = %self.id, chunks = recovered, records, "file buffer: resumed chunks from a previous run");
        }
        Ok(())
    }

    /// Recovers one file: trusts a queued name whose length matches, walks frame headers
    /// otherwise. Returns the queued entry, or `None` if the file was removed or quarantined.
    fn recover_one(
        &self,
        store: &FileStore,
        path: &std::path::Path,
        name: ChunkName,
    ) -> Option<Queued> {
        if let FileState::Queued { records, raw, len } = name.state {
            if std::fs::metadata(path).map(|m| m.len()).ok() == Some(len) {
                self.stats.recovered_chunks.inc();
                self.stats.recovered_records.add(records);
                return Some(Queued {
                    meta: Meta {
                        id: name.id,
                        seq: name.seq,
                        records: records as usize,
                        raw: raw as usize,
                        stored: len as usize,
                    },
                    data: QueuedData::File {
                        path: path.to_path_buf(),
                    },
                    loaded: 0,
                    tail_reported: false,
                });
            }
        }
        match store::scan(path) {
            Ok(s) if s.frames == 0 && s.damaged.is_some() => {
                // Nothing good before the damage: the whole file goes to quarantine, as before
                // (the tail may hold acknowledged appends: never delete it).
                let why = s.damaged.clone().unwrap_or_default();
                self.quarantine_path(store, path, "corrupt", 0, &why);
                None
            }
            Ok(s) => {
                let mut len = s.file_len;
                if s.torn() {
                    self.stats.torn_tails.inc();
                    match store.cut_tail(path, s.valid_len) {
                        Ok(to) if s.damaged.is_some() => {
                            // After a power loss with fsync_policy interval/never: the file's
                            // size reached the disk, the last appends' blocks did not (zeros).
                            // Those appends may have been acknowledged (the documented loss of
                            // the last interval); the whole frames before them are kept.
                            tracing::error!(plugin_id = %self.id, path = %path.display(), cut_bytes = s.file_len - s.valid_len, saved_to = %to.display(), frames_kept = s.frames, records_kept = s.records, damage = s.damaged.as_deref().unwrap_or(""), "chunk ends with a damaged tail (a power loss before the last appends reached the disk?): cut off, the frames before it are delivered")
                        }
                        Ok(to) => {
                            tracing::warn!(plugin_id = %self.id, path = %path.display(), cut_bytes = s.file_len - s.valid_len, saved_to = %to.display(), "chunk ended with an incomplete append (a crash during a write; it was never acknowledged): cut off")
                        }
                        Err(e) => {
                            tracing::error!(plugin_id = %self.id, path = %path.display(), error = %e, "cannot cut the torn tail off a chunk; its whole frames will still be delivered")
                        }
                    }
                    len = s.valid_len;
                }
                if s.frames == 0 {
                    let _ = store.remove(path);
                    return None;
                }
                if s.header.id != name.id {
                    self.quarantine_path(
                        store,
                        path,
                        "corrupt",
                        s.records,
                        "header id differs from the file name",
                    );
                    return None;
                }
                let qname = ChunkName {
                    seq: name.seq,
                    id: name.id,
                    state: FileState::Queued {
                        records: s.records,
                        raw: s.raw,
                        len,
                    },
                };
                let to = store.seal_path(path, &qname).unwrap_or_else(|e| {
                    tracing::error!(plugin_id = %self.id, path = %path.display(), error = %e, "cannot rename a recovered chunk");
                    path.to_path_buf()
                });
                self.stats.recovered_chunks.inc();
                self.stats.recovered_records.add(s.records);
                Some(Queued {
                    meta: Meta {
                        id: name.id,
                        seq: name.seq,
                        records: s.records as usize,
                        raw: s.raw as usize,
                        stored: len as usize,
                    },
                    data: QueuedData::File { path: to },
                    loaded: 0,
                    tail_reported: false,
                })
            }
            Err(ChunkFileError::NoHeader) => {
                // Created, never appended to: nothing in it was acknowledged.
                let _ = store.remove(path);
                None
            }
            Err(e) => {
                let records = match name.state {
                    FileState::Queued { records, .. } => records,
                    // No count in the name: what the frame headers declare, damaged or not.
                    FileState::Staged => crate::file::tools::inspect(path)
                        .map(|(r, _)| r.good_records() + r.bad_records())
                        .unwrap_or(0),
                };
                let reason = if matches!(e, ChunkFileError::Io(_)) {
                    "unreadable"
                } else {
                    "corrupt"
                };
                self.quarantine_path(store, path, reason, records, &e.to_string());
                None
            }
        }
    }

    /// Moves a chunk file that left the buffer's accounting to `quarantine/<reason>/`, counted
    /// and logged. If the move fails the file stays where it is (not deleted, not counted as
    /// quarantined): the next start finds it again.
    fn quarantine_path(
        &self,
        store: &FileStore,
        path: &std::path::Path,
        reason: &str,
        records: u64,
        why: &str,
    ) {
        match store.quarantine(path, reason) {
            Ok(to) => {
                self.stats.quarantined_chunks.inc(reason);
                self.stats.quarantined_records.add(reason, records);
                tracing::error!(plugin_id = %self.id, path = %path.display(), to = %to.display(), records, reason, cause = why, "chunk file moved to quarantine (inspect or reinject it with `nagare-forwarder buffer`); the rest of the buffer continues")
            }
            Err(e) => {
                self.stats.quarantine_errors.inc();
                tracing::error!(plugin_id = %self.id, path = %path.display(), error = %e, reason, cause = why, "chunk file could not be moved to quarantine; left in place and skipped until the next start")
            }
        }
    }

    /// Adopts chunk files put in `incoming/` (by `nagare-forwarder buffer reinject`): each is
    /// verified (frame headers), renamed into the buffer and queued. Returns how many.
    pub fn adopt_incoming(&self) -> usize {
        let Some(store) = &self.store else { return 0 };
        let Ok(found) = store.incoming() else {
            return 0;
        };
        let mut n = 0;
        for f in found {
            let mut st = self.lock();
            if st.closed {
                break;
            }
            let seq = st.next_seq;
            st.next_seq += 1;
            let scanned = match store::scan(&f.path) {
                Ok(s) if !s.torn() && s.frames > 0 && s.header.id == f.name.id => s,
                Ok(_) => {
                    drop(st);
                    self.quarantine_path(
                        store,
                        &f.path,
                        "corrupt",
                        0,
                        "reinjected chunk is torn, empty or misnamed",
                    );
                    continue;
                }
                Err(e) => {
                    drop(st);
                    self.quarantine_path(store, &f.path, "corrupt", 0, &e.to_string());
                    continue;
                }
            };
            let name = ChunkName {
                seq,
                id: f.name.id,
                state: FileState::Queued {
                    records: scanned.records,
                    raw: scanned.raw,
                    len: scanned.file_len,
                },
            };
            let Ok(to) = store.seal_path(&f.path, &name) else {
                continue;
            };
            st.bytes += scanned.file_len as usize;
            st.queue.push_back(Queued {
                meta: Meta {
                    id: f.name.id,
                    seq,
                    records: scanned.records as usize,
                    raw: scanned.raw as usize,
                    stored: scanned.file_len as usize,
                },
                data: QueuedData::File { path: to },
                loaded: 0,
                tail_reported: false,
            });
            self.update_gauges(&st);
            drop(st);
            tracing::info!(plugin_id = %self.id, chunk = %f.name.id.hex(), records = scanned.records, "adopted a reinjected chunk");
            n += 1;
        }
        if n > 0 {
            self.work.notify_waiters();
            self.work.notify_one();
        }
        n
    }
}

enum Popped {
    Chunk(Box<Queued>),
    Empty,
    Closed,
}

struct ReturnOnDrop<'a> {
    buffer: &'a Buffer,
    id: ChunkId,
    armed: bool,
}

impl Drop for ReturnOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.buffer.return_to_queue(self.id);
        }
    }
}

/// Frames held in memory (`compress gzip` memory chunks) back to entries.
fn decode_frames(bytes: &Bytes) -> Result<Bytes, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let fh = FrameHeader::parse(&bytes[pos..]).map_err(|e| e.to_string())?;
        let start = pos + format::FRAME_HEADER_LEN;
        let end = start + fh.stored_len;
        if end > bytes.len() {
            return Err("frame past the end of the chunk".into());
        }
        if !fh.verify(&bytes[pos..start], &bytes[start..end]) {
            return Err("frame checksum mismatch".into());
        }
        crate::compress::gunzip_exact(&bytes[start..end], fh.raw_len, &mut out)?;
        pos = end;
    }
    Ok(Bytes::from(out))
}
