//! in_forward server behaviour beyond the wire vectors: ack-after-commit, keepalive, tag
//! rewriting, source fields, limits, timeouts, Unix socket, TLS and shutdown.

mod common;

use bytes::BytesMut;
use common::*;
use nagare_core::ack::Committed;
use nagare_core::{EmitError, EventSink, EventStream, EventTime, Record};
use nagare_forward::codec::encode::{write_message, Options};
use nagare_forward::codec::handshake::{ClientSecurity, Helo, Pong, ServerSecurity};
use nagare_forward::server::{InForward, InForwardConfig, TlsServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

const V01: &str = "93aa6170702e616363657373ce55ece6f881a76d657373616765a568656c6c6f";
const V04: &str = "94aa6170702e616363657373d70055ece6f8075bcd1581a76d657373616765a568656c6c6f81a56368756e6bb841414543417751464267634943516f4c4441304f44773d3d";
const V04_REPLY: &str = "81a361636bb841414543417751464267634943516f4c4441304f44773d3d";
const M01: &str = "93aa6170702e6163636573739292d70055ece6f8";
const M07: &str = "93a174d6ff55ece6f881a16101";

fn hello() -> rmpv::Value {
    map(vec![("message", s("hello"))])
}

/// `[tag, SEC, {"k": "v"}, {"chunk": chunk}]`.
fn msg(tag: &str, chunk: &str) -> Vec<u8> {
    msg_with(tag, chunk, &[("k", "v")])
}

/// `[tag, SEC, record, {"chunk": chunk}]`.
fn msg_with(tag: &str, chunk: &str, record: &[(&str, &str)]) -> Vec<u8> {
    let mut out = BytesMut::new();
    let opts = Options {
        chunk: Some(chunk.as_bytes()),
        ..Default::default()
    };
    let rec = Record::from_pairs(record);
    write_message(
        &mut out,
        tag.as_bytes(),
        EventTime::from_secs(SEC),
        &rec,
        Some(&opts),
        false,
    );
    out.to_vec()
}

// ---- acks follow commits ------------------------------------------------------------------

#[tokio::test]
async fn ack_only_after_commit() {
    let srv = start(cfg("srv-ack-commit")).await;
    srv.sink.set_refuse(true);
    let mut c = srv.connect().await;
    send(&mut c, &h(V04)).await;
    expect_closed_silently(&mut c).await;
    counter_is("acks_withheld", &srv.stats.acks_withheld, 1).await;
    counter_is("closed refused", &srv.closed("refused"), 1).await;
    assert_eq!(srv.stats.acks_sent.get(), 0);
    assert_eq!(srv.sink.event_count(), 0);

    // The client resends once the pipeline accepts again.
    srv.sink.set_refuse(false);
    let mut c = srv.connect().await;
    send(&mut c, &h(V04)).await;
    expect_reply(&mut c, &h(V04_REPLY)).await;
    let evs = srv.events(1).await;
    assert_event(&evs[0], b"app.access", SEC, NSEC, hello());
    assert_eq!(srv.stats.acks_sent.get(), 1);
    srv.stop().await;
}

/// Commits everything except streams tagged `refuse`.
#[derive(Default)]
struct RefuseTag {
    kept: std::sync::Mutex<Vec<EventStream>>,
}

#[async_trait::async_trait]
impl EventSink for RefuseTag {
    async fn emit(&self, stream: EventStream) -> Result<Committed, EmitError> {
        if stream.tag.as_bytes() == b"refuse" {
            return Err(EmitError::new("refused_tag"));
        }
        self.kept.lock().unwrap().push(stream);
        Ok(Committed::new())
    }
}

/// An in_forward serving a [`RefuseTag`] sink; `stop` shuts it down and waits for it.
struct RefuseTagServer {
    addr: std::net::SocketAddr,
    stats: nagare_forward::server::InForwardStats,
    sink: Arc<RefuseTag>,
    stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>,
}

impl RefuseTagServer {
    async fn start(id: &str) -> RefuseTagServer {
        let srv = InForward::bind(cfg(id)).await.unwrap();
        let addr = srv.local_addr().unwrap();
        let stats = srv.stats().clone();
        let sink = Arc::new(RefuseTag::default());
        let (trigger, shutdown) = nagare_core::shutdown::channel();
        let handle = tokio::spawn(srv.run(sink.clone(), shutdown));
        let stop = Box::pin(async move {
            trigger.fire();
            tokio::time::timeout(LIVENESS, handle)
                .await
                .unwrap()
                .unwrap();
        });
        RefuseTagServer {
            addr,
            stats,
            sink,
            stop,
        }
    }
}

#[tokio::test]
async fn acks_of_committed_messages_survive_a_later_failed_emit_in_the_same_read() {
    let RefuseTagServer {
        addr,
        stats,
        sink,
        stop,
    } = RefuseTagServer::start("srv-ack-partial").await;

    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut all = msg("ok", "c1");
    all.extend(msg("refuse", "c2"));
    all.extend(msg("ok", "c3"));
    send(&mut c, &all).await;
    // One emit per tag for the read: `ok` (c1 and c3) is committed, `refuse` (c2) is not. The
    // acks of c1 and c3 go out, in message order, before the close; c2's is withheld and the
    // client resends it.
    let got = read_until_closed(&mut c).await;
    let mut want = ack_for(b"c1");
    want.extend(ack_for(b"c3"));
    assert_eq!(hex::encode(got), hex::encode(want));
    {
        let kept = sink.kept.lock().unwrap();
        assert_eq!(kept.len(), 1, "one emit for the `ok` tag");
        assert_eq!(kept[0].events.len(), 2);
    }
    counter_is("acks_withheld", &stats.acks_withheld, 1).await;
    assert_eq!(stats.acks_sent.get(), 2);
    // The refused tag first: the `ok` group after it is not offered to the pipeline once it
    // refused this read; counted, and no ack goes out.
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut all = msg("refuse", "c4");
    all.extend(msg("ok", "c5"));
    send(&mut c, &all).await;
    let got = read_until_closed(&mut c).await;
    assert!(got.is_empty(), "{}", hex::encode(got));
    counter_is(
        "not_emitted_after_refusal",
        &stats.events_dropped.get("not_emitted_after_refusal"),
        1,
    )
    .await;
    counter_is("acks_withheld", &stats.acks_withheld, 3).await;
    assert_eq!(stats.acks_sent.get(), 2);
    counter_is(
        "closed refused_tag",
        &stats.connections_closed.get("refused_tag"),
        2,
    )
    .await;
    stop.await;
}

#[tokio::test]
async fn tags_alternating_within_one_read_give_one_emit_per_tag_and_acks_in_order() {
    let RefuseTagServer {
        addr,
        stats,
        sink,
        stop,
    } = RefuseTagServer::start("srv-tag-groups").await;
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let order = ["a1", "b1", "a2", "b2", "a3", "c1"];
    let mut all = Vec::new();
    let mut want = Vec::new();
    for id in order {
        all.extend(msg_with(&id[..1], id, &[("id", id)]));
        want.extend(ack_for(id.as_bytes()));
    }
    send(&mut c, &all).await;
    expect_reply(&mut c, &want).await;
    {
        let kept = sink.kept.lock().unwrap();
        let shape: Vec<(String, usize)> = kept
            .iter()
            .map(|s| (s.tag.to_str_lossy().into_owned(), s.events.len()))
            .collect();
        // One write of a few hundred bytes over loopback arrives in one read: one emit per
        // tag, in the order the tags first appeared, events in order within each.
        let want_shape = [
            ("a".to_string(), 3),
            ("b".to_string(), 2),
            ("c".to_string(), 1),
        ];
        assert_eq!(shape, want_shape);
        let a: Vec<&[u8]> = kept[0]
            .events
            .iter()
            .map(|e| e.record.get_str(b"id").unwrap_or_default())
            .collect();
        assert_eq!(a, [&b"a1"[..], b"a2", b"a3"]);
    }
    assert_eq!(stats.acks_sent.get(), order.len() as u64);
    stop.await;
}

#[tokio::test]
async fn messages_before_a_decode_error_in_the_same_read_are_committed_and_acked() {
    let srv = start(cfg("srv-ack-before-error")).await;
    let mut c = srv.connect().await;
    let mut both = h(V04);
    both.push(0xc1);
    send(&mut c, &both).await;
    let got = read_until_closed(&mut c).await;
    assert_eq!(hex::encode(got), V04_REPLY);
    srv.events(1).await;
    counter_is("closed malformed", &srv.closed("malformed"), 1).await;
    srv.stop().await;
}

// ---- keepalive, tags, source fields, size warnings ----------------------------------------

/// Fluent Bit metrics (`fluent_signal: 1`): a cmetrics blob in Packed form, not log entries.
/// Acked without decoding the blob (even with `skip_invalid_event false`, which would close on
/// it as an invalid event), counted as `non_log_signal`; the connection stays open.
#[tokio::test]
async fn non_log_signal_is_acked_and_counted_even_without_skip_invalid_event() {
    let mut config = cfg("srv-signal");
    config.limits.skip_invalid_event = false;
    let srv = start(config).await;
    let mut blob = Vec::new();
    let metrics = rmpv::Value::Map(vec![
        (s("meta"), rmpv::Value::Map(vec![])),
        (s("metrics"), rmpv::Value::Array(vec![rmpv::Value::from(1)])),
    ]);
    rmpv::encode::write_value(&mut blob, &metrics).unwrap();
    let message = rmpv::Value::Array(vec![
        s("fluentbit.metrics"),
        rmpv::Value::Binary(blob),
        rmpv::Value::Map(vec![
            (s("chunk"), s("m1")),
            (s("size"), rmpv::Value::from(1)),
            (s("fluent_signal"), rmpv::Value::from(1)),
        ]),
    ]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &message).unwrap();
    let mut c = srv.connect().await;
    send(&mut c, &bytes).await;
    expect_reply(&mut c, &ack_for(b"m1")).await;
    counter_is("non_log_signal", &srv.rejected("non_log_signal"), 1).await;
    assert_eq!(srv.dropped("entry_not_a_pair").get(), 0);
    assert_eq!(srv.sink.event_count(), 0);
    // Still open: a log message after it is stored and acked.
    send(&mut c, &h(V04)).await;
    expect_reply(&mut c, &h(V04_REPLY)).await;
    assert_eq!(srv.events(1).await.len(), 1);
    srv.stop().await;
}

#[tokio::test]
async fn deny_keepalive_closes_after_first_message_and_its_ack() {
    let srv = start(InForwardConfig {
        deny_keepalive: true,
        ..cfg("srv-deny-keepalive")
    })
    .await;
    let mut c = srv.connect().await;
    send(&mut c, &h(V04)).await;
    let got = read_until_closed(&mut c).await;
    assert_eq!(hex::encode(got), V04_REPLY);
    // Without a chunk: processed, then closed.
    let mut c = srv.connect().await;
    send(&mut c, &h(V01)).await;
    expect_closed_silently(&mut c).await;
    srv.events(2).await;
    // A heartbeat nil is not a message: the connection stays open for one.
    let mut c = srv.connect().await;
    send(&mut c, &[0xc0]).await;
    expect_silence(&mut c).await;
    send(&mut c, &h(V04)).await;
    assert_eq!(hex::encode(read_until_closed(&mut c).await), V04_REPLY);
    srv.stop().await;
}

#[tokio::test]
async fn tag_overrides_the_incoming_tag() {
    let srv = start(InForwardConfig {
        tag: Some("fixed.tag".into()),
        ..cfg("srv-tag")
    })
    .await;
    let mut c = srv.connect().await;
    send(&mut c, &h(V01)).await;
    let evs = srv.events(1).await;
    assert_event(&evs[0], b"fixed.tag", SEC, 0, hello());
    srv.stop().await;
}

#[tokio::test]
async fn add_tag_prefix_prefixes_with_a_dot() {
    let srv = start(InForwardConfig {
        add_tag_prefix: Some("edge".into()),
        ..cfg("srv-tag-prefix")
    })
    .await;
    let mut c = srv.connect().await;
    send(&mut c, &h(V01)).await;
    let evs = srv.events(1).await;
    assert_event(&evs[0], b"edge.app.access", SEC, 0, hello());
    srv.stop().await;
}

#[tokio::test]
async fn source_address_key_adds_the_peer_ip() {
    let srv = start(InForwardConfig {
        source_address_key: Some("source_ip".into()),
        ..cfg("srv-source-addr")
    })
    .await;
    let mut c = srv.connect().await;
    send(&mut c, &h(V04)).await;
    expect_reply(&mut c, &h(V04_REPLY)).await;
    let evs = srv.events(1).await;
    assert_event(
        &evs[0],
        b"app.access",
        SEC,
        NSEC,
        map(vec![("message", s("hello")), ("source_ip", s("127.0.0.1"))]),
    );
    assert_eq!(
        evs[0].1.record.get_str(b"source_ip"),
        Some(&b"127.0.0.1"[..])
    );
    srv.stop().await;
}

#[tokio::test]
async fn chunk_size_warn_limit_counts_large_messages() {
    let srv = start(InForwardConfig {
        chunk_size_warn_limit: Some(20),
        ..cfg("srv-warn-limit")
    })
    .await;
    let mut c = srv.connect().await;
    send(&mut c, &h(M07)).await; // 13 bytes: under the limit
    srv.events(1).await;
    assert_eq!(srv.stats.large_messages_warned.get(), 0);
    send(&mut c, &h(V01)).await; // 32 bytes: over the limit, still accepted
    srv.events(2).await;
    assert_eq!(srv.stats.large_messages_warned.get(), 1);
    expect_silence(&mut c).await;
    srv.stop().await;
}

// ---- connection limits and timeouts -------------------------------------------------------

#[tokio::test]
async fn max_connections_closes_the_extra_connection() {
    let srv = start(InForwardConfig {
        max_connections: 1,
        ..cfg("srv-max-conns")
    })
    .await;
    let mut first = srv.connect().await;
    send(&mut first, &h(V01)).await;
    srv.events(1).await; // the first connection holds the only slot
    let mut extra = srv.connect().await;
    let _ = extra.write_all(&h(V04)).await;
    expect_closed_silently(&mut extra).await;
    counter_is("connection_limit", &srv.closed("connection_limit"), 1).await;
    // The first connection is unaffected.
    send(&mut first, &h(V04)).await;
    expect_reply(&mut first, &h(V04_REPLY)).await;
    // Once it goes, the slot is free again.
    drop(first);
    eventually("slot released", || srv.stats.connections_open.get() == 0).await;
    let mut next = srv.connect().await;
    send(&mut next, &h(V04)).await;
    expect_reply(&mut next, &h(V04_REPLY)).await;
    assert_eq!(srv.closed("connection_limit").get(), 1);
    srv.stop().await;
}

fn short_timeout(id: &str) -> InForwardConfig {
    InForwardConfig {
        partial_frame_timeout: Duration::from_millis(200),
        ..cfg(id)
    }
}

#[tokio::test]
async fn partial_frame_timeout_closes_a_stalled_frame() {
    let srv = start(short_timeout("srv-partial-timeout")).await;
    let mut c = srv.connect().await;
    send(&mut c, &h(M01)).await;
    expect_closed_silently(&mut c).await;
    counter_is(
        "partial_frame_timeout",
        &srv.closed("partial_frame_timeout"),
        1,
    )
    .await;
    assert_eq!(srv.sink.event_count(), 0);
    assert_eq!(srv.rejected("truncated_at_eof").get(), 0);
    srv.stop().await;
}

/// Connects and writes `bytes` from a task that ignores write errors (the server may close
/// first) and keeps the write half open; returns the read half.
async fn send_detached(srv: &Srv, bytes: Vec<u8>) -> tokio::net::tcp::OwnedReadHalf {
    let (r, mut w) = srv.connect().await.into_split();
    tokio::spawn(async move {
        let _ = w.write_all(&bytes).await;
        tokio::time::sleep(LIVENESS).await;
    });
    r
}

/// `read_buffer_total_limit`: past its first 64 KiB a connection's read buffer draws on a
/// limit shared by all connections. A message that needs more than is left closes its
/// connection at once, without ack; small messages on other connections are not affected;
/// the closed connection's share comes back.
#[tokio::test]
async fn read_buffer_total_limit_caps_large_partial_messages() {
    let srv = start(InForwardConfig {
        read_buffer_total_limit: 256 * 1024,
        ..cfg("srv-read-budget")
    })
    .await;
    let big = "x".repeat(600 * 1024);
    let mut a = send_detached(&srv, msg_with("app.big", "A", &[("log", &big)])).await;
    expect_closed_silently(&mut a).await;
    counter_is("memory_limit", &srv.closed("memory_limit"), 1).await;

    let mut c = srv.connect().await;
    send(&mut c, &msg("app.small", "C")).await;
    expect_reply(&mut c, &ack_for(b"C")).await;

    // 150 KiB needs 192 KiB of the 256: there only if the closed connection gave its share
    // back.
    let mid = "y".repeat(150 * 1024);
    let mut d = srv.connect().await;
    send(&mut d, &msg_with("app.mid", "D", &[("log", &mid)])).await;
    expect_reply(&mut d, &ack_for(b"D")).await;
    srv.events(2).await;
    srv.stop().await;
}

/// Two large messages that do not fit together: the second closes at once (no connection
/// waits while holding room, so none can block another), the first completes, and once its
/// connection has gone the room is there again.
#[tokio::test]
async fn a_large_message_without_room_closes_and_the_room_comes_back() {
    let srv = start(InForwardConfig {
        // Each 200 KiB message needs 192 KiB past its first 64: both do not fit in 288.
        read_buffer_total_limit: 288 * 1024,
        ..cfg("srv-read-budget-two")
    })
    .await;
    let body = "z".repeat(200 * 1024);
    let ma = msg_with("app.a", "A", &[("log", &body)]);
    let (ha, ta) = ma.split_at(ma.len() - 1000);
    let mut a = srv.connect().await;
    send(&mut a, ha).await;
    eventually("a holds its share", || {
        srv.stats.bytes.get() >= ha.len() as u64
    })
    .await;
    let mut b = send_detached(&srv, msg_with("app.b", "B", &[("log", &body)])).await;
    expect_closed_silently(&mut b).await;
    counter_is("memory_limit", &srv.closed("memory_limit"), 1).await;
    send(&mut a, ta).await;
    expect_reply(&mut a, &ack_for(b"A")).await;
    drop(a);
    eventually("a and b gone", || srv.stats.connections_open.get() == 0).await;
    let mut b2 = srv.connect().await;
    send(&mut b2, &msg_with("app.b", "B2", &[("log", &body)])).await;
    expect_reply(&mut b2, &ack_for(b"B2")).await;
    srv.events(2).await;
    srv.stop().await;
}

#[tokio::test]
async fn idle_connection_between_messages_is_not_closed() {
    let mut config = short_timeout("srv-idle");
    // The same V04 is sent twice: store both (resend dedupe is tested in dedupe.rs).
    config.dedupe_resends = false;
    let srv = start(config).await;
    let mut c = srv.connect().await;
    send(&mut c, &h(V04)).await;
    expect_reply(&mut c, &h(V04_REPLY)).await;
    // Idle for three timeouts between whole messages.
    tokio::time::sleep(Duration::from_millis(600)).await;
    send(&mut c, &h(V04)).await;
    expect_reply(&mut c, &h(V04_REPLY)).await;
    srv.events(2).await;
    assert_eq!(srv.stats.connections_closed.total(), 0);
    srv.stop().await;
}

#[tokio::test]
async fn slow_frame_that_keeps_progressing_is_not_closed() {
    // The timeout is "no progress for this long", not a deadline for the whole frame: 18
    // pieces 150 ms apart take 2.7 s, well past the 1 s timeout, while each gap stays far below
    // it (80 ms gaps against 200 ms could overrun on a loaded machine).
    let srv = start(InForwardConfig {
        partial_frame_timeout: Duration::from_secs(1),
        ..cfg("srv-slow-frame")
    })
    .await;
    let mut c = srv.connect().await;
    let v04 = h(V04);
    assert!(v04.len().div_ceil(4) as u64 * 150 > 2 * 1000);
    for piece in v04.chunks(4) {
        send(&mut c, piece).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    expect_reply(&mut c, &h(V04_REPLY)).await;
    assert_eq!(srv.stats.connections_closed.total(), 0);
    srv.stop().await;
}

#[tokio::test]
async fn handshake_timeout_closes_a_silent_client() {
    let srv = start(InForwardConfig {
        security: Some(ServerSecurity {
            self_hostname: "agg".into(),
            shared_key: b"k".to_vec(),
            allow_anonymous_source: true,
            ..Default::default()
        }),
        handshake_timeout: Duration::from_millis(200),
        ..cfg("srv-handshake-timeout")
    })
    .await;
    let mut c = srv.connect().await;
    let mut buf = BytesMut::new();
    Helo::decode(&read_object(&mut c, &mut buf).await).unwrap();
    expect_closed_silently(&mut c).await;
    counter_is("handshake_timeout", &srv.closed("handshake_timeout"), 1).await;
    assert_eq!(srv.closed("partial_frame_timeout").get(), 0);
    srv.stop().await;
}

#[tokio::test]
async fn zero_byte_connections_are_quietly_ignored() {
    // fluentd's transport heartbeat: connect, send nothing, close, every second.
    let srv = start(cfg("srv-zero-byte")).await;
    for _ in 0..5 {
        drop(srv.connect().await);
    }
    eventually("accepted", || srv.stats.connections_accepted.get() == 5).await;
    eventually("all gone", || srv.stats.connections_open.get() == 0).await;
    assert_eq!(srv.stats.connections_closed.total(), 0);
    assert_eq!(srv.stats.messages_rejected.total(), 0);
    srv.stop().await;
}

// ---- Unix socket --------------------------------------------------------------------------

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("nagare-forward-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(unix)]
#[tokio::test]
async fn unix_socket_serves_the_same_protocol() {
    let dir = TempDir::new("unix");
    let path = dir.path().join("in_forward.sock");
    let srv = start(InForwardConfig {
        unix_path: Some(path.clone()),
        ..cfg("srv-unix")
    })
    .await;
    let mut c = tokio::net::UnixStream::connect(&path).await.unwrap();
    send(&mut c, &h(V04)).await;
    expect_reply(&mut c, &h(V04_REPLY)).await;
    let evs = srv.events(1).await;
    assert_event(&evs[0], b"app.access", SEC, NSEC, hello());
    // TCP still works beside it.
    let mut t = srv.connect().await;
    send(&mut t, &h(V04)).await;
    expect_reply(&mut t, &h(V04_REPLY)).await;
    srv.stop().await;
}

/// The Unix socket shares `max_connections` with TCP: an extra connection is closed, counted
/// (and logged, rate-limited, like the TCP case).
#[cfg(unix)]
#[tokio::test]
async fn unix_socket_extra_connection_is_closed_at_the_limit() {
    let dir = TempDir::new("unix-limit");
    let path = dir.path().join("in_forward.sock");
    let srv = start(InForwardConfig {
        unix_path: Some(path.clone()),
        max_connections: 1,
        ..cfg("srv-unix-limit")
    })
    .await;
    let mut first = tokio::net::UnixStream::connect(&path).await.unwrap();
    send(&mut first, &h(V04)).await;
    expect_reply(&mut first, &h(V04_REPLY)).await; // holds the only slot
    let mut extra = tokio::net::UnixStream::connect(&path).await.unwrap();
    let _ = extra.write_all(&h(V04)).await;
    expect_closed_silently(&mut extra).await;
    counter_is("connection_limit", &srv.closed("connection_limit"), 1).await;
    send(&mut first, &h(V04)).await;
    expect_reply(&mut first, &h(V04_REPLY)).await;
    srv.stop().await;
}

// ---- TLS ----------------------------------------------------------------------------------

struct Pki {
    dir: TempDir,
}

impl Pki {
    /// A CA, a server certificate for `localhost` and a client certificate, both signed by
    /// the CA, plus an unrelated CA.
    fn new(name: &str) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let dir = TempDir::new(name);
        let write = |f: &str, s: String| std::fs::write(dir.path().join(f), s).unwrap();

        let ca = |cn: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, cn);
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let key = KeyPair::generate().unwrap();
            let cert = p.self_signed(&key).unwrap();
            (cert, key)
        };
        let (ca_cert, ca_key) = ca("nagare test CA");
        let (other_ca, _) = ca("some other CA");
        write("ca.pem", ca_cert.pem());
        write("other-ca.pem", other_ca.pem());

        let leaf = |names: Vec<String>, file: &str| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &ca_cert, &ca_key)
                .unwrap();
            write(&format!("{file}.pem"), cert.pem());
            write(&format!("{file}-key.pem"), key.serialize_pem());
        };
        leaf(vec!["localhost".into()], "server");
        leaf(vec!["forwarder-1.example".into()], "client");
        Pki { dir }
    }

    fn file(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    fn server(&self, client_cert_auth: bool) -> TlsServerConfig {
        TlsServerConfig {
            cert_path: self.file("server.pem"),
            private_key_path: self.file("server-key.pem"),
            ca_path: Some(self.file("ca.pem")),
            client_cert_auth,
        }
    }

    fn client(&self, trust: &str, with_cert: bool) -> tokio_rustls::TlsConnector {
        use nagare_forward::server::tls::{load_certs, load_key, load_roots, provider};
        let b = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(load_roots(&self.file(trust)).unwrap());
        let cfg = if with_cert {
            b.with_client_auth_cert(
                load_certs(&self.file("client.pem")).unwrap(),
                load_key(&self.file("client-key.pem")).unwrap(),
            )
            .unwrap()
        } else {
            b.with_no_client_auth()
        };
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    }
}

async fn tls_connect(
    srv: &Srv,
    connector: &tokio_rustls::TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = srv.connect().await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(LIVENESS, connector.connect(name, tcp))
        .await
        .expect("TLS handshake finishes")
}

#[tokio::test]
async fn tls_client_trusting_the_ca_is_served() {
    let pki = Pki::new("tls-ok");
    let srv = start(InForwardConfig {
        tls: Some(pki.server(false)),
        ..cfg("srv-tls-ok")
    })
    .await;
    let mut c = tls_connect(&srv, &pki.client("ca.pem", false))
        .await
        .expect("TLS handshake");
    send(&mut c, &h(V04)).await;
    expect_reply(&mut c, &h(V04_REPLY)).await;
    let evs = srv.events(1).await;
    assert_event(&evs[0], b"app.access", SEC, NSEC, hello());
    srv.stop().await;
}

#[tokio::test]
async fn tls_client_not_trusting_the_ca_fails_the_handshake() {
    let pki = Pki::new("tls-untrusted");
    let srv = start(InForwardConfig {
        tls: Some(pki.server(false)),
        ..cfg("srv-tls-untrusted")
    })
    .await;
    let err = tls_connect(&srv, &pki.client("other-ca.pem", false))
        .await
        .err();
    assert!(
        err.is_some(),
        "handshake with an untrusted server certificate must fail"
    );
    counter_is(
        "tls_handshake_failed",
        &srv.closed("tls_handshake_failed"),
        1,
    )
    .await;
    assert_eq!(srv.sink.event_count(), 0);
    srv.stop().await;
}

/// A peer that connects and never starts the TLS handshake is closed after
/// `handshake_timeout`, counted (and logged) as `tls_handshake_timeout`.
#[tokio::test]
async fn tls_handshake_that_never_starts_times_out() {
    let pki = Pki::new("tls-timeout");
    let srv = start(InForwardConfig {
        tls: Some(pki.server(false)),
        handshake_timeout: Duration::from_millis(200),
        ..cfg("srv-tls-timeout")
    })
    .await;
    let mut c = srv.connect().await; // plain TCP, no ClientHello
    expect_closed_silently(&mut c).await;
    counter_is(
        "tls_handshake_timeout",
        &srv.closed("tls_handshake_timeout"),
        1,
    )
    .await;
    srv.stop().await;
}

/// Sends V04 over a connection the server should refuse; returns whatever came back.
async fn refused_exchange<S: AsyncRead + AsyncWrite + Unpin>(c: &mut S) -> Vec<u8> {
    let _ = c.write_all(&h(V04)).await;
    let _ = c.flush().await;
    read_until_closed(c).await
}

#[tokio::test]
async fn tls_client_cert_auth() {
    let pki = Pki::new("tls-mtls");
    let srv = start(InForwardConfig {
        tls: Some(pki.server(true)),
        ..cfg("srv-tls-mtls")
    })
    .await;
    // Without a certificate: refused (TLS 1.3 reports it after the client's side finished).
    match tls_connect(&srv, &pki.client("ca.pem", false)).await {
        Err(_) => {}
        Ok(mut c) => assert!(
            refused_exchange(&mut c).await.is_empty(),
            "no ack without a client cert"
        ),
    }
    counter_is(
        "tls_handshake_failed",
        &srv.closed("tls_handshake_failed"),
        1,
    )
    .await;
    assert_eq!(srv.sink.event_count(), 0);
    // With a certificate signed by the CA: served.
    let mut c = tls_connect(&srv, &pki.client("ca.pem", true))
        .await
        .expect("mutual TLS");
    send(&mut c, &h(V04)).await;
    expect_reply(&mut c, &h(V04_REPLY)).await;
    srv.events(1).await;
    srv.stop().await;
}

#[tokio::test]
async fn tls_with_security_handshake() {
    let pki = Pki::new("tls-sec");
    let srv = start(InForwardConfig {
        tls: Some(pki.server(false)),
        security: Some(ServerSecurity {
            self_hostname: "aggregator-1.example".into(),
            shared_key: b"s3cr3t".to_vec(),
            allow_anonymous_source: true,
            ..Default::default()
        }),
        ..cfg("srv-tls-sec")
    })
    .await;
    let mut c = tls_connect(&srv, &pki.client("ca.pem", false))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    let helo = Helo::decode(&read_object(&mut c, &mut buf).await).unwrap();
    let client = ClientSecurity {
        self_hostname: "forwarder-1.example".into(),
        shared_key: b"s3cr3t".to_vec(),
        ..Default::default()
    };
    let salt = nagare_forward::codec::handshake::new_salt();
    let mut out = BytesMut::new();
    client.ping(&helo, &salt).encode(&mut out);
    send(&mut c, &out).await;
    let pong = Pong::decode(&read_object(&mut c, &mut buf).await).unwrap();
    client.verify_pong(&pong, &helo, &salt).unwrap();
    send(&mut c, &h(V04)).await;
    expect_reply(&mut c, &h(V04_REPLY)).await;
    srv.stop().await;
}

// ---- shutdown -----------------------------------------------------------------------------

#[tokio::test]
async fn shutdown_makes_run_return_and_closes_connections() {
    let srv = start(cfg("srv-shutdown")).await;
    let mut idle = srv.connect().await;
    send(&mut idle, &h(V04)).await;
    expect_reply(&mut idle, &h(V04_REPLY)).await;
    let mut half = srv.connect().await;
    send(&mut half, &h(M01)).await;
    eventually("both open", || srv.stats.connections_open.get() == 2).await;
    let addr = srv.addr;
    srv.stop().await; // asserts run() returns
    expect_closed_silently(&mut idle).await;
    expect_closed_silently(&mut half).await;
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
