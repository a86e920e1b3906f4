//! Resend deduplication.
//!
//! A forward-protocol client that did not get its ack resends the same message: the same
//! `chunk` id with the same payload (Docker's driver after a reconnect, our own out_forward
//! after an ack timeout). Ids alone are not unique across clients (Go before 1.20 leaves
//! `math/rand` unseeded), so a repeat is recognised by the pair (chunk id, 128-bit xxh3 digest
//! of the whole message). Pairs are remembered only once the message was committed and acked;
//! a message whose append failed is new work when it comes again.
//!
//! A copy can arrive on another connection while the first is still being committed (the
//! driver resends at once after a mismatched ack). The first copy holds a [`Claim`]; a second
//! copy waits for its outcome: acked and skipped if the first commits, new work if it fails
//! (or its connection drops mid-emit, which drops the claim).
//!
//! Bounds: pairs live in two generations; the current one takes inserts and becomes the
//! previous one when it holds `max_entries / 2` pairs or is `window / 2` old, and the previous
//! one is then dropped whole. So a pair is remembered for between half the window and the
//! window (and between `max_entries / 2` and `max_entries` later inserts), never more than
//! `max_entries` pairs are held, and an insert costs one hash-set insert (no per-entry
//! eviction, no clock read per entry).
//! Each entry costs a fixed amount ([`ENTRY_BYTES`]): only the 128-bit digest of the whole
//! message is kept (the message contains the `chunk` option, so equal digests mean the same id
//! and the same payload; a collision has probability about 2^-128). Memory is at most
//! `max_entries * ENTRY_BYTES`. The cache is per in_forward and shared by all its connections
//! (the driver reconnects before resending). It lives in memory: a restart forgets it (see
//! docs/docker-driver.md).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Default `dedupe_window`: longer than out_forward's default ack timeout (190 s).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(600);
/// Default `dedupe_max_entries`.
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;
/// Upper bound of one entry's memory (a 16-byte digest in a hash set, overhead and spare
/// capacity included), used for the documented bound.
pub const ENTRY_BYTES: usize = 48;

/// The 128-bit xxh3 digest of a whole message (which includes its `chunk` option).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Key(u128);

impl Key {
    /// `chunk` is the message's `chunk` option, `message` the whole frame (which contains
    /// it); the chunk is mixed in again so a key is never shared by two ids even if a caller
    /// passes a payload without the option.
    pub fn new(chunk: &[u8], message: &[u8]) -> Key {
        let d = xxhash_rust::xxh3::xxh3_128(message);
        let c = xxhash_rust::xxh3::xxh3_128(chunk);
        Key(d ^ c.rotate_left(64))
    }
}

/// The maps' hasher: foldhash seeded per map from process randomness. Keys are digests of
/// client-chosen bytes, so the seed keeps a client from steering them into one bucket; SipHash
/// (std's default) costs several times more per lookup for the same protection here.
type Seeded = foldhash::fast::RandomState;

struct State {
    current: HashSet<Key, Seeded>,
    previous: HashSet<Key, Seeded>,
    current_since: Instant,
    /// Messages being committed right now, by the connection holding the claim.
    pending: HashMap<Key, Arc<Notify>, Seeded>,
}

/// What to do with a message that carries a `chunk`.
pub enum Check {
    /// Already committed: ack again, store nothing.
    Duplicate,
    /// New: store it, then [`Claim::commit`] once committed (dropping the claim = failed).
    New(Claim),
    /// Another connection is committing the same message right now (only from
    /// [`Dedupe::try_check`]): commit what you hold first, then wait with [`Dedupe::check`].
    Pending,
}

/// The right to commit one message; other copies wait on it.
pub struct Claim {
    dedupe: Arc<Dedupe>,
    key: Key,
    done: bool,
}

impl Claim {
    pub fn key(&self) -> Key {
        self.key
    }

    /// The message was committed: remember it and wake copies waiting on it.
    pub fn commit(mut self) {
        self.done = true;
        self.dedupe.finish(self.key, true);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.done {
            self.dedupe.finish(self.key, false);
        }
    }
}

/// The remembered (chunk, digest) pairs of one in_forward.
pub struct Dedupe {
    window: Duration,
    max_entries: usize,
    state: Mutex<State>,
}

impl Dedupe {
    pub fn new(window: Duration, max_entries: usize) -> Self {
        Dedupe {
            window,
            max_entries: max_entries.max(1),
            state: Mutex::new(State {
                current: HashSet::default(),
                previous: HashSet::default(),
                current_since: Instant::now(),
                pending: HashMap::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rotates generations when the current one is full or old; drops both when the previous
    /// one is older than the window.
    fn rotate(&self, st: &mut State, now: Instant) {
        let age = now.duration_since(st.current_since);
        if age >= self.window {
            st.previous.clear();
            st.current.clear();
            st.current_since = now;
        } else if st.current.len() >= (self.max_entries / 2).max(1) || age >= self.window / 2 {
            if self.max_entries < 2 {
                // Room for one pair only: no previous generation.
                st.current.clear();
            } else {
                st.previous = std::mem::take(&mut st.current);
            }
            st.current_since = now;
        }
    }

    fn seen(st: &State, key: &Key) -> bool {
        st.current.contains(key) || st.previous.contains(key)
    }

    fn try_inner(self: &Arc<Self>, key: Key) -> Result<Check, Arc<Notify>> {
        let mut st = self.lock();
        self.rotate(&mut st, Instant::now());
        if Self::seen(&st, &key) {
            return Ok(Check::Duplicate);
        }
        match st.pending.get(&key) {
            Some(n) => Err(n.clone()),
            None => {
                st.pending.insert(key, Arc::new(Notify::new()));
                Ok(Check::New(Claim {
                    dedupe: self.clone(),
                    key,
                    done: false,
                }))
            }
        }
    }

    /// Duplicate, new with a claim, or pending elsewhere, without waiting.
    pub fn try_check(self: &Arc<Self>, key: Key) -> Check {
        self.try_inner(key).unwrap_or(Check::Pending)
    }

    /// Duplicate, or new with a claim. Waits while another connection is committing the same
    /// message (re-checking at least every 100 ms). The caller must hold no uncommitted claim
    /// (two connections waiting on each other's claims would never finish).
    pub async fn check(self: &Arc<Self>, key: Key) -> Check {
        loop {
            match self.try_inner(key) {
                Ok(c) => return c,
                Err(notify) => {
                    let _ =
                        tokio::time::timeout(Duration::from_millis(100), notify.notified()).await;
                }
            }
        }
    }

    fn finish(&self, key: Key, committed: bool) {
        let mut st = self.lock();
        if committed {
            self.rotate(&mut st, Instant::now());
            st.current.insert(key);
        }
        if let Some(n) = st.pending.remove(&key) {
            n.notify_waiters();
        }
    }

    /// Messages being committed now.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Whether `key` was committed within the window.
    #[cfg(test)]
    pub fn contains(&self, key: &Key) -> bool {
        let mut st = self.lock();
        self.rotate(&mut st, Instant::now());
        Self::seen(&st, key)
    }

    /// Remembers committed keys.
    #[cfg(test)]
    pub fn insert_all(&self, keys: &[Key]) {
        let mut st = self.lock();
        for k in keys {
            self.rotate(&mut st, Instant::now());
            st.current.insert(*k);
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        let st = self.lock();
        st.current.len() + st.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_id_same_payload_is_a_repeat_different_payload_is_not() {
        let d = Dedupe::new(Duration::from_secs(60), 10);
        let a = Key::new(b"id1", b"payload");
        d.insert_all(&[a]);
        assert!(d.contains(&Key::new(b"id1", b"payload")));
        assert!(!d.contains(&Key::new(b"id1", b"other payload")));
        assert!(!d.contains(&Key::new(b"id2", b"payload")));
    }

    #[test]
    fn count_bound_evicts_the_oldest() {
        // Two generations of max_entries / 2 = 2: never more than 4 held, the newest 2 always.
        let d = Dedupe::new(Duration::from_secs(60), 4);
        let keys: Vec<Key> = (0..7)
            .map(|i| Key::new(format!("{i}").as_bytes(), b"p"))
            .collect();
        for k in &keys {
            d.insert_all(&[*k]);
            assert!(d.len() <= 4);
        }
        assert!(!d.contains(&keys[0]));
        assert!(!d.contains(&keys[1]));
        assert!(d.contains(&keys[5]));
        assert!(d.contains(&keys[6]));
    }

    #[test]
    fn window_bound_forgets() {
        let d = Dedupe::new(Duration::from_millis(50), 100);
        let k = Key::new(b"x", b"p");
        d.insert_all(&[k]);
        assert!(d.contains(&k));
        std::thread::sleep(Duration::from_millis(80));
        assert!(!d.contains(&k));
        assert!(d.is_empty());
    }

    #[tokio::test]
    async fn a_copy_waits_for_the_first_and_is_a_duplicate_once_it_commits() {
        let d = Arc::new(Dedupe::new(Duration::from_secs(60), 10));
        let k = Key::new(b"c", b"m");
        let Check::New(claim) = d.check(k).await else {
            panic!("first is new")
        };
        let d2 = d.clone();
        let waiter = tokio::spawn(async move { matches!(d2.check(k).await, Check::Duplicate) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiter.is_finished(),
            "the copy must wait while the first is pending"
        );
        claim.commit();
        assert!(waiter.await.unwrap());
        assert_eq!(d.pending(), 0);
    }

    #[tokio::test]
    async fn a_copy_becomes_new_work_when_the_first_fails() {
        let d = Arc::new(Dedupe::new(Duration::from_secs(60), 10));
        let k = Key::new(b"c", b"m");
        let Check::New(claim) = d.check(k).await else {
            panic!("first is new")
        };
        let d2 = d.clone();
        let waiter = tokio::spawn(async move { matches!(d2.check(k).await, Check::New(_)) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(claim);
        assert!(waiter.await.unwrap());
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_distinct_ids() {
        let d = Dedupe::new(Duration::from_secs(600), 1000);
        for i in 0..100_000u32 {
            d.insert_all(&[Key::new(&i.to_be_bytes(), b"payload")]);
        }
        assert_eq!(d.len(), 1000);
        assert!(d.len() <= 1000);
    }
}
