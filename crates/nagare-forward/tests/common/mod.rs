//! Helpers shared by the in_forward integration tests: start a live server on 127.0.0.1:0,
//! write fixture bytes, read replies with a short window, poll counters.
//!
//! Timeouts here are liveness bounds (a broken server must not hang the suite), never
//! performance assertions.

#![allow(dead_code)]

use bytes::BytesMut;
use nagare_core::metrics::Counter;
use nagare_core::shutdown::Trigger;
use nagare_core::sink::MemorySink;
use nagare_core::{Event, Tag};
use nagare_forward::codec::Framer;
use nagare_forward::server::{InForward, InForwardConfig, InForwardStats};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// `SEC` of the vectors (2015-09-07T01:23:04Z).
pub const SEC: u32 = 1441588984;
/// `NSEC` of the vectors.
pub const NSEC: u32 = 123456789;
/// The chunk id every vector uses.
pub const CHUNK_B64: &str = "AAECAwQFBgcICQoLDA0ODw==";

/// How long "no reply" is watched for. A window, not a performance bound.
pub const QUIET: Duration = Duration::from_millis(300);
/// Upper bound for anything that must happen (a reply, a close, an emit).
pub const LIVENESS: Duration = Duration::from_secs(10);

/// Decodes a hex fixture.
pub fn h(s: &str) -> Vec<u8> {
    hex::decode(s).expect("valid hex fixture")
}

/// A running in_forward.
pub struct Srv {
    pub addr: SocketAddr,
    pub stats: InForwardStats,
    pub sink: Arc<MemorySink>,
    pub trigger: Trigger,
    pub handle: JoinHandle<()>,
}

impl Srv {
    pub async fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).await.expect("connect");
        s.set_nodelay(true).unwrap();
        s
    }

    /// Counter `connections_closed{reason}`.
    pub fn closed(&self, reason: &str) -> Counter {
        self.stats.connections_closed.get(reason)
    }
    pub fn rejected(&self, reason: &str) -> Counter {
        self.stats.messages_rejected.get(reason)
    }
    pub fn dropped(&self, reason: &str) -> Counter {
        self.stats.events_dropped.get(reason)
    }

    /// Waits until exactly `n` events were committed (and checks no more arrive later).
    pub async fn events(&self, n: usize) -> Vec<(Tag, Event)> {
        let got = self.sink.wait_for(n, LIVENESS).await;
        assert!(got >= n, "expected {n} events, got {got}");
        let evs = self.sink.events();
        assert_eq!(evs.len(), n, "expected exactly {n} events: {evs:?}");
        evs
    }

    pub async fn stop(self) {
        self.trigger.fire();
        tokio::time::timeout(LIVENESS, self.handle)
            .await
            .expect("run() returns after shutdown")
            .expect("server task did not panic");
    }
}

/// A config bound to 127.0.0.1 on a free port, with a unique id.
pub fn cfg(id: &str) -> InForwardConfig {
    InForwardConfig {
        id: id.into(),
        bind: "127.0.0.1".into(),
        port: 0,
        ..Default::default()
    }
}

/// Binds and runs a server with a fresh [`MemorySink`].
pub async fn start(cfg: InForwardConfig) -> Srv {
    let srv = InForward::bind(cfg).await.expect("bind");
    let addr = srv.local_addr().expect("tcp bound");
    let stats = srv.stats().clone();
    let sink = MemorySink::new();
    let (trigger, shutdown) = nagare_core::shutdown::channel();
    let handle = tokio::spawn(srv.run(sink.clone(), shutdown));
    Srv {
        addr,
        stats,
        sink,
        trigger,
        handle,
    }
}

/// Reads exactly `n` bytes (panics on EOF or after [`LIVENESS`]).
pub async fn read_exact<S: AsyncRead + Unpin>(s: &mut S, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    tokio::time::timeout(LIVENESS, s.read_exact(&mut b))
        .await
        .expect("reply within the liveness bound")
        .expect("reply before EOF");
    b
}

/// Reads the exact reply `want` and checks nothing else follows within [`QUIET`].
pub async fn expect_reply<S: AsyncRead + Unpin>(s: &mut S, want: &[u8]) {
    let got = read_exact(s, want.len()).await;
    assert_eq!(hex::encode(&got), hex::encode(want), "reply bytes");
    expect_silence(s).await;
}

/// Nothing arrives for [`QUIET`] and the connection is still open.
pub async fn expect_silence<S: AsyncRead + Unpin>(s: &mut S) {
    let mut b = [0u8; 256];
    match tokio::time::timeout(QUIET, s.read(&mut b)).await {
        Err(_) => {}
        Ok(Ok(0)) => panic!("connection closed, expected it to stay open"),
        Ok(Ok(n)) => panic!("unexpected reply: {}", hex::encode(&b[..n])),
        Ok(Err(e)) => panic!("connection failed, expected it to stay open: {e}"),
    }
}

/// The server closes the connection (FIN or RST) without sending a single byte first.
pub async fn expect_closed_silently<S: AsyncRead + Unpin>(s: &mut S) {
    let got = read_until_closed(s).await;
    assert!(
        got.is_empty(),
        "expected no reply before close, got {}",
        hex::encode(&got)
    );
}

/// Reads everything until the server closes; returns what arrived.
pub async fn read_until_closed<S: AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut all = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        match tokio::time::timeout(LIVENESS, s.read(&mut b)).await {
            Err(_) => panic!(
                "connection still open after {LIVENESS:?}; got {}",
                hex::encode(&all)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return all,
            Ok(Ok(n)) => all.extend_from_slice(&b[..n]),
        }
    }
}

/// Reads one whole msgpack object (handshake messages).
pub async fn read_object<S: AsyncRead + Unpin>(s: &mut S, buf: &mut BytesMut) -> Vec<u8> {
    let mut framer = Framer::new();
    loop {
        if let Some(f) = framer
            .next_frame(buf, 1 << 20)
            .expect("msgpack from server")
        {
            return f.to_vec();
        }
        let n = tokio::time::timeout(LIVENESS, s.read_buf(buf))
            .await
            .expect("server message within the liveness bound")
            .expect("read");
        assert!(
            n > 0,
            "EOF before a whole message; have {}",
            hex::encode(&buf[..])
        );
    }
}

pub async fn send<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) {
    s.write_all(bytes).await.expect("write");
    s.flush().await.expect("flush");
}

/// Polls `f` until it holds (counters are bumped by the server task, possibly just after the
/// client observed the effect).
pub async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + LIVENESS;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for `counter` to reach exactly `n`.
pub async fn counter_is(what: &str, c: &Counter, n: u64) {
    eventually(&format!("{what} == {n} (now {})", c.get()), || c.get() >= n).await;
    assert_eq!(c.get(), n, "{what}");
}

/// A msgpack str value.
pub fn s(v: &str) -> rmpv::Value {
    rmpv::Value::from(v)
}

/// A record map from (key, value) pairs, for comparing with `Record::to_value()`.
pub fn map(pairs: Vec<(&str, rmpv::Value)>) -> rmpv::Value {
    rmpv::Value::Map(pairs.into_iter().map(|(k, v)| (s(k), v)).collect())
}

/// Asserts one event's tag, time and record.
pub fn assert_event(ev: &(Tag, Event), tag: &[u8], secs: u32, nanos: u32, record: rmpv::Value) {
    assert_eq!(ev.0.as_bytes(), tag, "tag");
    assert_eq!((ev.1.time.secs(), ev.1.time.nanos()), (secs, nanos), "time");
    assert_eq!(ev.1.record.to_value(), record, "record");
}

/// The ack reply for `chunk`: `{"ack": chunk}` with the chunk as a str.
pub fn ack_for(chunk: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    nagare_forward::codec::encode::write_ack(&mut out, chunk);
    out.to_vec()
}
