//! One in_forward connection: handshake, read, frame, decode, emit, ack.
//!
//! Invariants:
//! * An ack is written only with the [`Committed`] proof a successful emit returns; acks go
//!   out in message order.
//! * Events decoded from one read are batched into one emit per tag (at most
//!   `MAX_BATCH_EVENTS` events and `MAX_BATCH_TAGS` tags per batch); the acks of the batch go
//!   out together after it, in message order, each only if its message's group was committed.
//!   Events keep their order within a tag; across tags a read's events are emitted tag by tag.
//! * A decode error closes the connection without acking the bad message; events decoded
//!   before it in the same read are emitted and acked first (as fluentd does).
//! * A failed emit (buffer full, shutting down) closes the connection with no ack, so the
//!   client resends: back-pressure travels upstream.
//! * Memory per connection: the read buffer holds at most one frame (`chunk_size_limit`),
//!   plus the current batch; an incomplete frame with no progress for `partial_frame_timeout`
//!   closes the connection. Past its first 64 KiB a read buffer draws on
//!   `read_buffer_total_limit`, shared by all connections ([`BufferShare`]): without room the
//!   connection closes at once (`memory_limit`, no ack).

use super::config::{InForwardConfig, READ_BUFFER_FREE};
use super::dedupe::{Check, Claim, Dedupe};
use super::stats::InForwardStats;
use crate::codec::handshake::{random16, Helo, Ping, Pong, ServerSecurity};
use crate::codec::{parse_message, DecodeError, Framer, Parsed};
use bytes::BytesMut;
use nagare_core::ack::{Committed, PendingAck};
use nagare_core::ratelimit::LogLimiter;
use nagare_core::shutdown::Shutdown;
use nagare_core::{Event, EventSink, EventStream, Tag};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;

/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;
/// A batch is emitted once it holds this many events, even within one read.
const MAX_BATCH_EVENTS: usize = 8192;
/// ... or this many different tags.
const MAX_BATCH_TAGS: usize = 64;
/// Largest handshake frame accepted.
const MAX_HANDSHAKE_FRAME: usize = 64 * 1024;

/// A byte stream in_forward can serve, and how to close it abortively.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Sets SO_LINGER before an error close (`Some(0)` sends RST).
    fn set_linger(&self, _linger: Option<Duration>) {}
}

impl Transport for tokio::net::TcpStream {
    fn set_linger(&self, linger: Option<Duration>) {
        // A non-zero linger would block the runtime thread in close(); only RST is applied.
        if linger == Some(Duration::ZERO) {
            let _ = socket2::SockRef::from(self).set_linger(linger);
        }
    }
}

impl Transport for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn set_linger(&self, linger: Option<Duration>) {
        Transport::set_linger(self.get_ref().0, linger);
    }
}

#[cfg(unix)]
impl Transport for tokio::net::UnixStream {}

/// Who is on the other end.
#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    pub ip: Option<IpAddr>,
    /// Reverse-resolved name (only looked up when `source_hostname_key` is set).
    pub hostname: Option<String>,
}

impl Peer {
    pub fn ip(addr: SocketAddr) -> Peer {
        Peer {
            name: addr.to_string(),
            ip: Some(addr.ip()),
            hostname: None,
        }
    }
    pub fn unix() -> Peer {
        Peer {
            name: "unix".into(),
            ip: None,
            hostname: None,
        }
    }
}

/// Shared by every connection of one in_forward.
pub struct Ctx {
    pub cfg: Arc<InForwardConfig>,
    pub stats: InForwardStats,
    pub sink: Arc<dyn EventSink>,
    /// Committed (chunk, digest) pairs, shared by every connection.
    pub dedupe: Option<Arc<Dedupe>>,
    /// `read_buffer_total_limit` in KiB permits, shared by every connection.
    read_budget: Arc<Semaphore>,
    limiter: LogLimiter,
}

impl Ctx {
    pub fn new(cfg: Arc<InForwardConfig>, stats: InForwardStats, sink: Arc<dyn EventSink>) -> Self {
        let dedupe = cfg
            .dedupe_resends
            .then(|| Arc::new(Dedupe::new(cfg.dedupe_window, cfg.dedupe_max_entries)));
        let kib = (cfg.read_buffer_total_limit / 1024).clamp(1, Semaphore::MAX_PERMITS);
        Ctx {
            cfg,
            stats,
            sink,
            dedupe,
            read_budget: Arc::new(Semaphore::new(kib)),
            limiter: LogLimiter::default(),
        }
    }

    /// A rate-limited warning naming the peer and the reason. The limit is per reason and
    /// peer *host* (a client that reconnects for every resend gets a new port each time).
    pub fn warn(&self, reason: &str, peer: &str, msg: &str) {
        let host = peer.rsplit_once(':').map(|(h, _)| h).unwrap_or(peer);
        if let Some(suppressed) = self.limiter.check(&format!("{reason}|{host}")) {
            tracing::warn!(plugin_id = %self.cfg.id, %peer, reason, suppressed, "in_forward: {msg}");
        }
    }

    /// `tag` replaces the incoming tag, then `add_tag_prefix` prefixes it (fluentd's order).
    fn rewrite_tag(&self, tag: Tag) -> Tag {
        let tag = match &self.cfg.tag {
            Some(t) => Tag::from(t.as_str()),
            None => tag,
        };
        match &self.cfg.add_tag_prefix {
            Some(p) => {
                let mut v = Vec::with_capacity(p.len() + 1 + tag.as_bytes().len());
                v.extend_from_slice(p.as_bytes());
                v.push(b'.');
                v.extend_from_slice(tag.as_bytes());
                Tag::new(v)
            }
            None => tag,
        }
    }
}

/// How a connection ended.
enum Close {
    /// The peer closed or reset.
    Peer,
    /// We close after writing everything owed (FIN).
    Graceful,
    /// We close because of bad input or a failed commit (counted with this reason); RST when
    /// `linger_timeout` is 0.
    Error(&'static str),
    /// As `Error`, but acks were just written: close with FIN so they are not discarded by a
    /// reset.
    ErrorAfterWrite(&'static str),
}

impl Close {
    fn after_write(self, wrote: bool) -> Close {
        match self {
            Close::Error(r) if wrote => Close::ErrorAfterWrite(r),
            other => other,
        }
    }
}

/// Serves one connection to the end.
pub async fn serve<S: Transport>(mut io: S, mut peer: Peer, ctx: Arc<Ctx>, mut shutdown: Shutdown) {
    ctx.stats.connections_open.add(1);
    if let (Some(_), Some(ip)) = (&ctx.cfg.source_hostname_key, peer.ip) {
        peer.hostname = reverse_lookup(ip).await;
    }
    let close = run(&mut io, &peer, &ctx, &mut shutdown).await;
    match close {
        Close::Peer => {}
        Close::Graceful => {
            let _ = io.shutdown().await;
        }
        Close::Error(reason) => {
            ctx.stats.connections_closed.inc(reason);
            io.set_linger(ctx.cfg.linger_timeout);
        }
        Close::ErrorAfterWrite(reason) => {
            ctx.stats.connections_closed.inc(reason);
            let _ = io.shutdown().await;
        }
    }
    ctx.stats.connections_open.add(-1);
}

/// The events of one read waiting to be emitted, one group per tag, and the acks that depend
/// on them in message order. A connection whose messages change tag from one message to the
/// next (a relay multiplexing containers) still gets one emit per tag per read, not one per
/// message: each emit is a trip through the filters and a `write` to every file buffer.
#[derive(Default)]
struct Batch {
    groups: Vec<Group>,
    /// Each message's ack with the group holding its events, or the group of the message it
    /// is a copy of (`None`: a message with nothing to keep, acked once the batch is flushed),
    /// in message order.
    acks: Vec<(Option<usize>, PendingAck)>,
    /// Resend-dedupe claims of messages with no events to keep, committed with the batch.
    bare_claims: Vec<Claim>,
    /// Events held across the groups.
    events: usize,
}

/// The events of one tag in a [`Batch`].
struct Group {
    tag: Tag,
    events: Vec<Event>,
    /// Resend-dedupe claims of the messages in this group, committed with it.
    claims: Vec<Claim>,
}

impl Batch {
    /// Whether a message with this dedupe key is already in the batch, and if so the group
    /// whose commit decides its fate (`Some(None)`: a bare claim, committed with the batch).
    fn claim_group(&self, key: super::dedupe::Key) -> Option<Option<usize>> {
        if self.bare_claims.iter().any(|c| c.key() == key) {
            return Some(None);
        }
        self.groups
            .iter()
            .position(|g| g.claims.iter().any(|c| c.key() == key))
            .map(Some)
    }

    /// Adds one message's events (to the group of its tag), claim and ack.
    fn add(
        &mut self,
        tag: Tag,
        mut events: Vec<Event>,
        claim: Option<Claim>,
        ack: Option<PendingAck>,
    ) {
        if events.is_empty() {
            self.bare_claims.extend(claim);
            self.acks.extend(ack.map(|a| (None, a)));
            return;
        }
        self.events += events.len();
        // Mostly the last group (one container per connection), so search from the end.
        let i = match self.groups.iter().rposition(|g| g.tag == tag) {
            Some(i) => {
                self.groups[i].events.append(&mut events);
                i
            }
            None => {
                self.groups.push(Group {
                    tag,
                    events,
                    claims: Vec::new(),
                });
                self.groups.len() - 1
            }
        };
        self.groups[i].claims.extend(claim);
        self.acks.extend(ack.map(|a| (Some(i), a)));
    }

    /// An ack for a message with nothing to keep (rejected with a chunk, a resend already
    /// committed: `group` `None`), or for a copy of a message earlier in this batch: `group`
    /// is then that message's group, so the copy is acked only if the original is committed.
    fn add_ack(&mut self, group: Option<usize>, ack: PendingAck) {
        self.acks.push((group, ack));
    }

    /// Past [`MAX_BATCH_EVENTS`] events or [`MAX_BATCH_TAGS`] tags: emit now.
    fn full(&self) -> bool {
        self.events >= MAX_BATCH_EVENTS || self.groups.len() >= MAX_BATCH_TAGS
    }

    /// Emits every group in turn, then writes into `out` the acks of the messages whose
    /// events were committed, in message order. After a refused emit the later groups are
    /// not emitted; their acks are withheld (counted) and their claims forgotten, so the
    /// client's resend is new work; the error says to close the connection.
    async fn flush(&mut self, ctx: &Ctx, out: &mut BytesMut) -> Result<(), Close> {
        // Per group: whether it was committed, and its proof (taken by its first ack).
        let mut committed = Vec::with_capacity(self.groups.len());
        let mut proofs: Vec<Option<Committed>> = Vec::with_capacity(self.groups.len());
        let mut refused = None;
        for g in self.groups.drain(..) {
            if refused.is_some() {
                // Not offered to the pipeline once it refused this read: counted here (their
                // acks, if any, are withheld and counted too, so acking clients resend them).
                ctx.stats
                    .events_dropped
                    .add("not_emitted_after_refusal", g.events.len() as u64);
                committed.push(false);
                proofs.push(None);
                continue;
            }
            let n = g.events.len() as u64;
            match ctx.sink.emit(EventStream::new(g.tag, g.events)).await {
                Ok(p) => {
                    ctx.stats.events.add(n);
                    for c in g.claims {
                        c.commit();
                    }
                    committed.push(true);
                    proofs.push(Some(p));
                }
                Err(e) => {
                    if let Some(suppressed) = ctx.limiter.check(e.reason) {
                        tracing::warn!(plugin_id = %ctx.cfg.id, reason = e.reason, events = n, suppressed, "in_forward: the pipeline refused a batch; it is not acked and the connection closes, so the client resends it");
                    }
                    committed.push(false);
                    proofs.push(None);
                    refused = Some(e.reason);
                }
            }
        }
        self.events = 0;
        // Nothing to keep (M16, rejected messages with a chunk, resends): nothing can be lost.
        for c in self.bare_claims.drain(..) {
            c.commit();
        }
        if let Some(d) = &ctx.dedupe {
            ctx.stats.dedupe_entries.set(d.len() as i64);
        }
        for (g, ack) in self.acks.drain(..) {
            match g {
                // Dropping the pending ack counts it as withheld.
                Some(i) if !committed[i] => drop(ack),
                // The group's proof goes to its first ack (nothing to keep: a fresh one).
                g => {
                    let proof = g.and_then(|i| proofs[i].take()).unwrap_or_default();
                    ack.commit(proof, out);
                    ctx.stats.acks_sent.inc();
                }
            }
        }
        match refused {
            Some(reason) => Err(Close::Error(reason)),
            None => Ok(()),
        }
    }
}

/// The share of `read_buffer_total_limit` one connection's read buffer holds, in KiB; given
/// back when the buffer shrinks and when the connection ends.
struct BufferShare {
    budget: Arc<Semaphore>,
    kib: usize,
}

impl BufferShare {
    fn new(ctx: &Ctx) -> Self {
        BufferShare {
            budget: ctx.read_budget.clone(),
            kib: 0,
        }
    }

    fn kib_for(bytes: usize) -> usize {
        bytes.saturating_sub(READ_BUFFER_FREE).div_ceil(1024)
    }

    /// Gives back what a buffer of `bytes` no longer needs.
    fn shrink_to(&mut self, bytes: usize) {
        let keep = Self::kib_for(bytes);
        if keep < self.kib {
            self.budget.add_permits(self.kib - keep);
            self.kib = keep;
        }
    }

    /// Takes what a buffer of `bytes` needs, or fails at once (`memory_limit`) when the
    /// shared limit has no room: never waiting while holding a share, connections cannot
    /// block each other, and the limit is never exceeded.
    fn grow_to(&mut self, bytes: usize) -> Result<(), Close> {
        let want = Self::kib_for(bytes).saturating_sub(self.kib);
        if want == 0 {
            return Ok(());
        }
        let n = u32::try_from(want).map_err(|_| Close::Error("memory_limit"))?;
        self.budget
            .try_acquire_many(n)
            .map_err(|_| Close::Error("memory_limit"))?
            .forget();
        self.kib += want;
        Ok(())
    }
}

impl Drop for BufferShare {
    fn drop(&mut self) {
        self.budget.add_permits(self.kib);
    }
}

/// Reads into `buf`, growing it for a large message. `share`: the connection's part of
/// `read_buffer_total_limit` (`None` during the handshake, whose frames are at most 64 KiB).
async fn read_more<S: Transport>(
    io: &mut S,
    buf: &mut BytesMut,
    mut share: Option<&mut BufferShare>,
    ctx: &Ctx,
    shutdown: &mut Shutdown,
    deadline: Option<Duration>,
) -> Result<usize, Close> {
    if let Some(share) = share.as_deref_mut() {
        share.shrink_to(buf.capacity());
    }
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        // Room for as much again as the partial message already held (at least a read's
        // worth): a large message grows the buffer geometrically. Growing by a fixed 64 KiB
        // copied the partial message once per read while earlier frames still shared the old
        // buffer (a PackedForward message of 450 KB was copied about 3 times over).
        // Never past what the largest allowed frame still needs.
        let room_left = ctx.cfg.limits.max_frame.saturating_sub(buf.len());
        let more = buf.len().min(room_left).max(READ_CHUNK);
        // Past its first 64 KiB, a buffer draws on the limit all connections share; without
        // room the connection closes without ack (the client resends later).
        if let Some(share) = share {
            share.grow_to(buf.len() + more)?;
        }
        buf.reserve(more);
    }
    let read = async {
        match deadline {
            Some(d) => tokio::time::timeout(d, io.read_buf(buf)).await.ok(),
            None => Some(io.read_buf(buf).await),
        }
    };
    let r = tokio::select! {
        r = read => r,
        _ = shutdown.wait() => return Err(Close::Graceful),
    };
    match r {
        None => Err(Close::Error("partial_frame_timeout")),
        Some(Ok(0)) | Some(Err(_)) => Err(Close::Peer),
        Some(Ok(n)) => {
            ctx.stats.bytes.add(n as u64);
            Ok(n)
        }
    }
}

async fn run<S: Transport>(io: &mut S, peer: &Peer, ctx: &Ctx, shutdown: &mut Shutdown) -> Close {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut share = BufferShare::new(ctx);
    let mut framer = Framer::new();
    if let Some(sec) = &ctx.cfg.security {
        if let Err(c) = handshake(io, &mut buf, &mut framer, peer, ctx, sec, shutdown).await {
            return c;
        }
    }
    let limits = &ctx.cfg.limits;
    let mut out = BytesMut::new();
    let mut batch = Batch::default();
    let mut messages = 0u64;
    // Bytes a client pipelined right behind its PING are already in `buf`: frame them before
    // waiting for another read, or a client waiting for their ack would stall.
    let mut unread = !buf.is_empty();
    loop {
        if !std::mem::take(&mut unread) {
            let deadline = (!buf.is_empty()).then_some(ctx.cfg.partial_frame_timeout);
            let r = read_more(io, &mut buf, Some(&mut share), ctx, shutdown, deadline).await;
            if let Err(c) = r {
                if matches!(c, Close::Error("memory_limit")) {
                    ctx.warn(
                        "memory_limit",
                        &peer.name,
                        &format!(
                            "read_buffer_total_limit reached: no room for a message of over \
                             {} bytes; closing the connection without ack",
                            buf.len()
                        ),
                    );
                }
                if !buf.is_empty() && matches!(c, Close::Peer) {
                    // M01: an incomplete message at EOF is dropped, not acked.
                    ctx.stats.messages_rejected.inc("truncated_at_eof");
                }
                return c;
            }
        }
        let mut failure = None;
        loop {
            let frame = match framer.next_frame(&mut buf, limits.max_frame) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            ctx.stats.messages.inc();
            if let Some(w) = ctx.cfg.chunk_size_warn_limit {
                if frame.len() > w {
                    ctx.stats.large_messages_warned.inc();
                    ctx.warn(
                        "large",
                        &peer.name,
                        &format!(
                            "message of {} bytes is over chunk_size_warn_limit {w}",
                            frame.len()
                        ),
                    );
                }
            }
            let raw = frame.clone();
            match parse_message(frame, limits) {
                Err(e) => {
                    failure = Some(e);
                    break;
                }
                Ok(Parsed::Nil) => {}
                Ok(Parsed::Rejected { reason, chunk }) => {
                    ctx.stats.messages_rejected.inc(reason);
                    ctx.warn(reason, &peer.name, &format!("message rejected: {reason}"));
                    if let Some(c) = chunk {
                        batch.add_ack(None, PendingAck::new(c, ctx.stats.acks_withheld.clone()));
                    }
                }
                Ok(Parsed::Message(m)) => {
                    messages += 1;
                    let mut claim = None;
                    if let (Some(d), Some(c)) = (&ctx.dedupe, &m.chunk) {
                        let key = super::dedupe::Key::new(c, &raw);
                        // A copy of a message still in this batch follows the original's fate:
                        // its ack waits on the original's group. (Claims of earlier reads are
                        // settled: every read ends with a flush, and a refusal closes.)
                        let in_batch = batch.claim_group(key);
                        let mut check = match in_batch {
                            Some(_) => Check::Duplicate,
                            None => d.try_check(key),
                        };
                        if let Check::Pending = check {
                            // Another connection is committing this very message. Commit what
                            // this one holds first (so two connections never wait on each
                            // other), then wait for the other's outcome.
                            if let Err(c) = batch.flush(ctx, &mut out).await {
                                let wrote = write_out(io, &mut out).await;
                                return c.after_write(wrote);
                            }
                            check = d.check(key).await;
                        }
                        claim = match check {
                            Check::New(claim) => Some(claim),
                            Check::Duplicate | Check::Pending => None,
                        };
                        if claim.is_none() {
                            // A resend of a message already committed (or being committed in
                            // this batch): ack it again, keep nothing twice.
                            ctx.stats.resends_deduplicated.inc();
                            ctx.stats.resent_events_skipped.add(m.events.len() as u64);
                            ctx.warn(
                                "duplicate_resend",
                                &peer.name,
                                "resent chunk already committed: acked again, not stored twice",
                            );
                            batch.add_ack(
                                in_batch.flatten(),
                                PendingAck::new(c.clone(), ctx.stats.acks_withheld.clone()),
                            );
                            continue;
                        }
                    }
                    if m.invalid_events > 0 {
                        let reason = m.invalid_reason.unwrap_or("invalid_event");
                        ctx.stats
                            .events_dropped
                            .add(reason, m.invalid_events as u64);
                        ctx.warn(
                            reason,
                            &peer.name,
                            &format!("{} invalid event(s) dropped: {reason}", m.invalid_events),
                        );
                    }
                    let tag = ctx.rewrite_tag(m.tag);
                    let mut events = m.events;
                    add_source_fields(ctx, peer, &mut events);
                    let ack = m
                        .chunk
                        .map(|c| PendingAck::new(c, ctx.stats.acks_withheld.clone()));
                    batch.add(tag, events, claim, ack);
                    if batch.full() {
                        if let Err(c) = batch.flush(ctx, &mut out).await {
                            let wrote = write_out(io, &mut out).await;
                            return c.after_write(wrote);
                        }
                    }
                }
            }
        }
        let flushed = batch.flush(ctx, &mut out).await;
        let wrote = !out.is_empty();
        if wrote {
            if io.write_all(&out).await.is_err() || io.flush().await.is_err() {
                return Close::Peer;
            }
            out.clear();
        }
        if let Err(c) = flushed {
            ctx.warn(
                "emit_failed",
                &peer.name,
                "events not committed; closing connection without ack",
            );
            return c.after_write(wrote);
        }
        if let Some(e) = failure {
            log_decode_error(ctx, peer, &e);
            return Close::Error(e.reason()).after_write(wrote);
        }
        if ctx.cfg.deny_keepalive && messages > 0 {
            return Close::Graceful;
        }
        if buf.is_empty() && buf.capacity() > 4 * READ_CHUNK {
            // Give back the memory of a large frame once it has been handled.
            buf = BytesMut::with_capacity(READ_CHUNK);
        }
    }
}

/// Best-effort write of acks already owed, before an error close. True if it wrote any.
async fn write_out<S: Transport>(io: &mut S, out: &mut BytesMut) -> bool {
    if out.is_empty() {
        return false;
    }
    let _ = io.write_all(out).await;
    let _ = io.flush().await;
    out.clear();
    true
}

fn log_decode_error(ctx: &Ctx, peer: &Peer, e: &DecodeError) {
    ctx.warn(e.reason(), &peer.name, &format!("closing connection: {e}"));
}

/// Time allowed for one reverse DNS lookup (once per connection).
const REVERSE_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The peer's name by reverse DNS, once per connection, bounded in time; `None` when there is
/// no name (the IP is used instead).
async fn reverse_lookup(ip: IpAddr) -> Option<String> {
    let lookup = tokio::task::spawn_blocking(move || dns_lookup::lookup_addr(&ip).ok());
    match tokio::time::timeout(REVERSE_LOOKUP_TIMEOUT, lookup).await {
        Ok(Ok(name)) => name.filter(|n| n.parse::<IpAddr>().is_err()),
        _ => None,
    }
}

fn add_source_fields(ctx: &Ctx, peer: &Peer, events: &mut [Event]) {
    if ctx.cfg.source_address_key.is_none() && ctx.cfg.source_hostname_key.is_none() {
        return;
    }
    let ip = peer.ip.map(|i| i.to_string()).unwrap_or_default();
    if let Some(key) = &ctx.cfg.source_address_key {
        for e in events.iter_mut() {
            e.record = e.record.with_str_field(key.as_bytes(), ip.as_bytes());
        }
    }
    if let Some(key) = &ctx.cfg.source_hostname_key {
        let name = peer.hostname.as_deref().unwrap_or(&ip);
        for e in events.iter_mut() {
            e.record = e.record.with_str_field(key.as_bytes(), name.as_bytes());
        }
    }
}

async fn handshake<S: Transport>(
    io: &mut S,
    buf: &mut BytesMut,
    framer: &mut Framer,
    peer: &Peer,
    ctx: &Ctx,
    sec: &ServerSecurity,
    shutdown: &mut Shutdown,
) -> Result<(), Close> {
    let helo = Helo {
        nonce: random16(),
        auth: random16(),
        keepalive: !ctx.cfg.deny_keepalive,
    };
    let mut out = BytesMut::new();
    helo.encode(&mut out);
    // Flush: over TLS, written bytes can otherwise wait in the session buffer.
    if io.write_all(&out).await.is_err() || io.flush().await.is_err() {
        return Err(Close::Peer);
    }
    let frame = loop {
        match framer.next_frame(buf, MAX_HANDSHAKE_FRAME) {
            Ok(Some(f)) => break f,
            Ok(None) => {}
            Err(e) => return Err(Close::Error(e.reason())),
        }
        // A transport heartbeat connects, handshakes and closes; EOF here is normal.
        read_more(
            io,
            buf,
            None,
            ctx,
            shutdown,
            Some(ctx.cfg.handshake_timeout),
        )
        .await
        .map_err(|c| match c {
            Close::Error("partial_frame_timeout") => Close::Error("handshake_timeout"),
            c => c,
        })?;
    };
    let verdict = match Ping::decode(&frame) {
        Ok(ping) => sec.check_ping(
            &ping,
            peer.ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            &helo.nonce,
            &helo.auth,
        ),
        Err(_) => Err("malformed PING".to_string()),
    };
    out.clear();
    match verdict {
        Ok(pong) => {
            pong.encode(&mut out);
            if io.write_all(&out).await.is_err() || io.flush().await.is_err() {
                return Err(Close::Peer);
            }
            Ok(())
        }
        Err(reason) => {
            let label = auth_label(&reason);
            ctx.stats.auth_failures.inc(label);
            ctx.stats.connections_closed.inc("auth_failed");
            ctx.warn(label, &peer.name, &format!("handshake refused: {reason}"));
            Pong::refusal(reason).encode(&mut out);
            let _ = io.write_all(&out).await;
            Err(Close::Graceful)
        }
    }
}

fn auth_label(reason: &str) -> &'static str {
    if reason.starts_with("shared_key") {
        "shared_key_mismatch"
    } else if reason.starts_with("username") {
        "password_mismatch"
    } else if reason.starts_with("anonymous") {
        "anonymous_source_denied"
    } else {
        "malformed_ping"
    }
}
