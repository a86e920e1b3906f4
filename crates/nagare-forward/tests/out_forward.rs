//! out_forward against live in-process servers: ack, failover, resend with the same chunk id,
//! standby promotion, gzip, integer time, keepalive reuse, and the handshake as a client.

use bytes::{Bytes, BytesMut};
use nagare_core::shutdown::{channel, Trigger};
use nagare_core::sink::MemorySink;
use nagare_core::{Chunk, ChunkId, Event, EventTime, Output, Record, Tag};
use nagare_forward::client::{Compress, HeartbeatType, OutForward, OutForwardConfig, ServerSpec};
use nagare_forward::codec::handshake::ServerSecurity;
use nagare_forward::codec::{parse_message, DecodeLimits, Framer, Parsed};
use nagare_forward::server::{InForward, InForwardConfig, InForwardStats};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket};

fn chunk(n: usize, tag: &str) -> Chunk {
    let mut b = BytesMut::new();
    for i in 0..n {
        Event {
            time: EventTime::new(1_700_000_000 + i as u32, 123),
            record: Record::from_pairs(&[("seq", i.to_string())]),
        }
        .write_entry(&mut b, false);
    }
    Chunk {
        id: ChunkId::random(),
        tag: Tag::from(tag),
        key: Default::default(),
        bytes: b.freeze(),
        records: n,
    }
}

async fn server(
    id: &str,
    security: Option<ServerSecurity>,
) -> (SocketAddr, Arc<MemorySink>, InForwardStats, Trigger) {
    let srv = InForward::bind(InForwardConfig {
        id: id.into(),
        bind: "127.0.0.1".into(),
        port: 0,
        security,
        ..Default::default()
    })
    .await
    .unwrap();
    let addr = srv.local_addr().unwrap();
    let stats = srv.stats().clone();
    let sink = MemorySink::new();
    let (t, sd) = channel();
    tokio::spawn(srv.run(sink.clone(), sd));
    (addr, sink, stats, t)
}

fn cfg(id: &str, addrs: &[SocketAddr]) -> OutForwardConfig {
    OutForwardConfig {
        id: id.into(),
        servers: addrs
            .iter()
            .map(|a| ServerSpec::new("127.0.0.1", a.port()))
            .collect(),
        require_ack_response: true,
        ack_response_timeout: Duration::from_secs(5),
        heartbeat_type: HeartbeatType::None,
        connect_timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

/// A port where connections are refused, reserved while the returned socket lives: bound but
/// never listening. (Binding a listener and dropping it freed the port, which another test of
/// this binary binding port 0 at the same time could take and accept on.)
fn dead_addr() -> (TcpSocket, SocketAddr) {
    let s = TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}

#[tokio::test]
async fn delivers_with_ack_and_records_arrive_intact() {
    let (addr, sink, stats, _t) = server("of-basic", None).await;
    let out = OutForward::new(cfg("of-basic-out", &[addr])).unwrap();
    let c = chunk(100, "app.x");
    out.write(&c).await.unwrap();
    assert_eq!(sink.event_count(), 100);
    assert_eq!(stats.acks_sent.get(), 1);
    let evs = sink.events();
    assert_eq!(evs[0].0.as_bytes(), b"app.x");
    assert_eq!(evs[7].1.record.get_str(b"seq"), Some(&b"7"[..]));
    assert_eq!(evs[7].1.time, EventTime::new(1_700_000_007, 123));
}

#[tokio::test]
async fn fails_over_to_the_next_node_within_one_write() {
    let (_reserved, dead) = dead_addr();
    let (addr, sink, _s, _t) = server("of-failover", None).await;
    let out = OutForward::new(cfg("of-failover-out", &[dead, addr])).unwrap();
    // The balancer walks a shuffled list of 12 slots (6 per node) round-robin, one slot per
    // write: 12 writes land first on every slot, so the dead node is tried first at least once
    // whatever the shuffle. Four writes missed it about 3 % of the time.
    for _ in 0..12 {
        out.write(&chunk(10, "t")).await.unwrap();
    }
    assert_eq!(sink.event_count(), 120);
    assert!(out.stats().send_failures.get("connect_failed").get() >= 1);
}

#[tokio::test]
async fn all_nodes_down_is_a_retryable_error() {
    let (_reserved, dead) = dead_addr();
    let out = OutForward::new(cfg("of-down-out", &[dead])).unwrap();
    let e = out.write(&chunk(1, "t")).await.unwrap_err();
    assert!(matches!(e, nagare_core::WriteError::Retryable(_)), "{e}");
}

/// A server that reads messages and never acks; it records the `chunk` options it saw.
async fn silent_server() -> (SocketAddr, Arc<Mutex<Vec<Bytes>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = l.accept().await {
            let seen = s2.clone();
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                let mut fr = Framer::new();
                loop {
                    if sock.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                    while let Ok(Some(f)) = fr.next_frame(&mut buf, 1 << 26) {
                        if let Ok(Parsed::Message(m)) = parse_message(f, &DecodeLimits::default()) {
                            seen.lock().unwrap().push(m.chunk.unwrap_or_default());
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn ack_timeout_resends_the_same_chunk_id_to_another_node() {
    let (silent, seen) = silent_server().await;
    let (good, sink, stats, _t) = server("of-acktimeout", None).await;
    let mut c = cfg("of-acktimeout-out", &[silent]);
    c.servers.push(ServerSpec::new("127.0.0.1", good.port()));
    c.servers[0].weight = 100;
    c.servers[1].weight = 1;
    // The timeout also bounds the good node's ack: 300 ms could expire on a loaded CI machine
    // and fail the write. The silent node is tried first ~99 % of the time, so this is what
    // the test costs.
    c.ack_response_timeout = Duration::from_secs(2);
    let out = OutForward::new(c).unwrap();
    // Whichever node the balancer picks first, the chunk ends up acked by the good one.
    let ch = chunk(5, "t");
    out.write(&ch).await.unwrap();
    assert_eq!(sink.event_count(), 5);
    assert_eq!(stats.acks_sent.get(), 1);
    let sent_to_silent = seen.lock().unwrap().clone();
    if !sent_to_silent.is_empty() {
        use base64::Engine;
        let want = base64::engine::general_purpose::STANDARD.encode(ch.id.0);
        assert_eq!(
            sent_to_silent[0],
            want.as_bytes(),
            "resend must carry the original chunk id"
        );
        assert_eq!(out.stats().send_failures.get("ack_timeout").get(), 1);
    }
}

#[tokio::test]
async fn standby_takes_over_only_when_the_regular_node_is_down() {
    let (a, sink_a, _sa, ta) = server("of-standby-a", None).await;
    let (b, sink_b, _sb, _tb) = server("of-standby-b", None).await;
    let mut c = cfg("of-standby-out", &[a, b]);
    c.servers[1].standby = true;
    c.heartbeat_type = HeartbeatType::Transport;
    c.heartbeat_interval = Duration::from_millis(100);
    // Generous: with 400 ms, a loaded machine stalling this runtime could detach A during the
    // first writes (sending one to the standby). Detection after A stops is polled below.
    c.hard_timeout = Duration::from_secs(2);
    c.recover_wait = Duration::from_millis(200);
    let out = Arc::new(OutForward::new(c).unwrap());
    let (_hb_t, hb_sd) = channel();
    let _hb = out.spawn_heartbeat(hb_sd);
    for _ in 0..5 {
        out.write(&chunk(1, "t")).await.unwrap();
    }
    assert_eq!((sink_a.event_count(), sink_b.event_count()), (5, 0));
    ta.fire();
    // Let the listener close and the heartbeat detector detach A.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while out.stats().nodes_available.get() > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "A was never detached after it stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..5 {
        out.write(&chunk(1, "t")).await.unwrap();
    }
    assert_eq!(sink_b.event_count(), 5, "standby must take over");
}

#[tokio::test]
async fn gzip_and_integer_time_decode_on_the_server() {
    let (addr, sink, _s, _t) = server("of-gzip", None).await;
    let mut c = cfg("of-gzip-out", &[addr]);
    c.compress = Compress::Gzip;
    c.time_as_integer = true;
    let out = OutForward::new(c).unwrap();
    out.write(&chunk(50, "t")).await.unwrap();
    let evs = sink.events();
    assert_eq!(evs.len(), 50);
    assert_eq!(evs[3].1.time, EventTime::from_secs(1_700_000_003));
}

#[tokio::test]
async fn zstd_decodes_on_the_server() {
    let (addr, sink, _s, _t) = server("of-zstd", None).await;
    let mut c = cfg("of-zstd-out", &[addr]);
    c.compress = Compress::Zstd;
    let out = OutForward::new(c).unwrap();
    out.write(&chunk(50, "t")).await.unwrap();
    assert_eq!(sink.events().len(), 50);
}

#[tokio::test]
async fn keepalive_reuses_one_connection() {
    let (addr, sink, stats, _t) = server("of-keepalive", None).await;
    let mut c = cfg("of-keepalive-out", &[addr]);
    c.keepalive = true;
    let out = OutForward::new(c).unwrap();
    for _ in 0..10 {
        out.write(&chunk(3, "t")).await.unwrap();
    }
    assert_eq!(sink.event_count(), 30);
    assert_eq!(stats.connections_accepted.get(), 1);
}

#[tokio::test]
async fn handshake_as_a_client_and_wrong_key_is_refused() {
    let sec = ServerSecurity {
        self_hostname: "agg.test".into(),
        shared_key: b"k3y".to_vec(),
        allow_anonymous_source: true,
        ..Default::default()
    };
    let (addr, sink, stats, _t) = server("of-hs", Some(sec)).await;
    let mut good = cfg("of-hs-good", &[addr]);
    good.security = Some(nagare_forward::client::ClientSecurityConfig {
        self_hostname: "fw.test".into(),
        shared_key: "k3y".into(),
    });
    OutForward::new(good.clone())
        .unwrap()
        .write(&chunk(2, "t"))
        .await
        .unwrap();
    assert_eq!(sink.event_count(), 2);
    let mut bad = good;
    bad.id = "of-hs-bad".into();
    bad.security.as_mut().unwrap().shared_key = "nope".into();
    let out = OutForward::new(bad).unwrap();
    assert!(out.write(&chunk(2, "t")).await.is_err());
    assert_eq!(out.stats().send_failures.get("handshake_failed").get(), 1);
    assert_eq!(stats.auth_failures.get("shared_key_mismatch").get(), 1);
    assert_eq!(sink.event_count(), 2);
}
