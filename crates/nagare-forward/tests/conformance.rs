//! Conformance: every vector of `shared/forward-protocol.md` §6.1 (V01-V14, M01-M19), written
//! byte for byte to a live in_forward on 127.0.0.1, asserting the exact reply bytes (or that
//! none arrives within a short window), the committed events and the counters.
//!
//! The hex below is copied verbatim from §6.1 (generator output). Vectors with no hex there
//! (M13, M18, M19, the chunk variants of M02/M03) are built with the codec's encoders.

mod common;

use bytes::BytesMut;
use common::*;
use nagare_core::{EventTime, Record};
use nagare_forward::codec::encode::{write_message, write_packed_forward, Options};
use nagare_forward::codec::handshake::{
    shared_key_digest, ClientRule, ClientSecurity, Helo, IpNet, Pong, ServerSecurity,
};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const V01: &str = "93aa6170702e616363657373ce55ece6f881a76d657373616765a568656c6c6f";
const V02: &str = "94ac303132333435363738396162d255ece6f884ac636f6e7461696e65725f6964d94030313233343536373839616263636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363ae636f6e7461696e65725f6e616d65a42f776562a6736f75726365a67374646f7574a36c6f67a9474554202f2032303080";
const V03: &str = "94ac303132333435363738396162d255ece6f884ac636f6e7461696e65725f6964d94030313233343536373839616263636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363ae636f6e7461696e65725f6e616d65a42f776562a6736f75726365a67374646f7574a36c6f67a9474554202f20323030c0";
const V04: &str = "94aa6170702e616363657373d70055ece6f8075bcd1581a76d657373616765a568656c6c6f81a56368756e6bb841414543417751464267634943516f4c4441304f44773d3d";
const V04_REPLY: &str = "81a361636bb841414543417751464267634943516f4c4441304f44773d3d";
const V05: &str = "93aa6170702e616363657373c7080055ece6f8075bcd1581a76d657373616765a568656c6c6f";
const V06: &str = "93aa6170702e6163636573739292d70055ece6f80000000081a16e0192d70055ece6f80000000181a16e0282a56368756e6bb841414543417751464267634943516f4c4441304f44773d3da473697a6502";
const V07: &str = "92aa6170702e6163636573739292ce55ece6f881a16e0192ce55ece6f981a16e02";
const V08: &str = "93aa6170702e616363657373c41e92d70055ece6f80000000081a16e0192d70055ece6f80000000181a16e0282a473697a6502a56368756e6bb841414543417751464267634943516f4c4441304f44773d3d";
const V09: &str = "93aa6170702e616363657373db0000001e92d70055ece6f80000000081a16e0192d70055ece6f80000000181a16e0283a473697a6502aa636f6d70726573736564a474657874a56368756e6bb941414543417751464267634943516f4c4441304f44773d3d0a";
const V09_REPLY: &str = "81a361636bb941414543417751464267634943516f4c4441304f44773d3d0a";
const V10: &str = "93aa6170702e616363657373c4291f8b08000000000002039b749d21f4cdb31f0c40d0b8308f71129ccb08e4320100ae3704231e00000083a473697a6502aa636f6d70726573736564a4677a6970a56368756e6bb841414543417751464267634943516f4c4441304f44773d3d";
const V10B: &str = "93aa6170702e616363657373db000000291f8b08000000000002039b749d21f4cdb31f0c40d0b8308f71129ccb08e4320100ae3704231e00000083a473697a6502aa636f6d70726573736564a4677a6970a56368756e6bb941414543417751464267634943516f4c4441304f44773d3d0a";
const V11: &str = "93aa6170702e616363657373c4451f8b08000000000002039b749d21f4cdb31f0c40d0b8308f110043c3062b0f0000001f8b08000000000002039b749d21f4cdb31f0c0c0c8c8d0bf3980049bb6f8f0f00000081aa636f6d70726573736564a4677a6970";
const V12: &str = "93aa6170702e616363657373919292d70055ece6f8075bcd158081a36c6f67a17882a473697a6501ad666c75656e745f7369676e616c00";
const V13A: &str = "92a448454c4f83a56e6f6e6365c41000112233445566778899aabbccddeeffa461757468c410ffeeddccbbaa99887766554433221100a96b656570616c697665c3";
const V13B: &str = "96a450494e47b3666f727761726465722d312e6578616d706c65d9203031323334353637383961626364656630313233343536373839616263646566d9803633623732613066613733643834343161366566353737663834313732643239623431653731636565356332366437353432643534626164323838363936306335356134633037646366636265623632376332393164393162643032326430646539356564663261626432386132366130393465353936356333623237616162a5616c696365d9803632656166623133313332646338626139653761323165386462396432333439366165653466663736353931323031663334363131633363396463633337626231636239393734666432663330333031653032323939633035383037376439306562353538666332393530383263353430626239626539343161613035383561";
const V13C: &str = "95a4504f4e47c3a0b461676772656761746f722d312e6578616d706c65d9806665613839623133373362626337663939663030326134303232646161633262323334386365623936356331333164666237633066663364646463626365323231346662343231313535646339363063656531393435366235316539336630626136366461306432393062626135646438633437363261356237303335656339";
const V13D: &str = "95a4504f4e47c2b37368617265645f6b6579206d69736d61746368a0a0";
const V14A: &str = "c0";
const V14B: &str = "00";
const M01: &str = "93aa6170702e6163636573739292d70055ece6f8";
const M02: &str = "9301ce55ece6f881a16101";
const M03: &str = "93a174ce55ece6f8a96e6f742d612d6d6170";
const M04: &str = "81a16101";
const M05: &str = "93a174d705000000000000000081a16101";
const M06: &str = "93a174d6000000000081a16101";
const M07: &str = "93a174d6ff55ece6f881a16101";
const M08: &str = "93a174cb41d57b39be20000081a16101";
const M09: &str = "93a174c6ffffffff";
const M10: &str = "92a174ddffffffff";
const M11: &str = "c1";
const M12: &str = "93a174c4076e6f74677a697082aa636f6d70726573736564a4677a6970a56368756e6bb841414543417751464267634943516f4c4441304f44773d3d";
const M14: &str = "93a174c40c92d7000000000000000000c181a56368756e6bb841414543417751464267634943516f4c4441304f44773d3d";
const M15: &str = "92a174ce55ece6f8";
const M16: &str = "93a174c40081a56368756e6bb841414543417751464267634943516f4c4441304f44773d3d";
const M17: &str = "93a2fffece55ece6f881a16101";

/// `{"chunk": CHUNK_B64}`, the option map the vectors use.
const CHUNK_OPT: &str = "81a56368756e6bb841414543417751464267634943516f4c4441304f44773d3d";

fn hello() -> rmpv::Value {
    map(vec![("message", s("hello"))])
}

fn n(i: i64) -> rmpv::Value {
    map(vec![("n", rmpv::Value::from(i))])
}

fn a1() -> rmpv::Value {
    map(vec![("a", rmpv::Value::from(1))])
}

/// Sends `hex` on a fresh connection; returns the connection.
async fn send_new(srv: &Srv, hex: &str) -> TcpStream {
    let mut c = srv.connect().await;
    send(&mut c, &h(hex)).await;
    c
}

/// V01 on an existing connection arrives as the `total`-th event: the connection is alive.
async fn prove_open(srv: &Srv, c: &mut TcpStream, total: usize) {
    send(c, &h(V01)).await;
    let evs = srv.events(total).await;
    assert_event(&evs[total - 1], b"app.access", SEC, 0, hello());
    expect_silence(c).await;
}

fn docker_record() -> rmpv::Value {
    let id = format!("0123456789ab{}", "c".repeat(52));
    map(vec![
        ("container_id", s(&id)),
        ("container_name", s("/web")),
        ("source", s("stdout")),
        ("log", s("GET / 200")),
    ])
}

// ---- valid input --------------------------------------------------------------------------

#[tokio::test]
async fn v01_message_int_time() {
    let srv = start(cfg("conf-v01")).await;
    let mut c = send_new(&srv, V01).await;
    let evs = srv.events(1).await;
    assert_event(&evs[0], b"app.access", SEC, 0, hello());
    expect_silence(&mut c).await;
    assert_eq!(srv.stats.messages.get(), 1);
    assert_eq!(srv.stats.events.get(), 1);
    assert_eq!(srv.stats.acks_sent.get(), 0);
    srv.stop().await;
}

#[tokio::test]
async fn v02_docker_default_int32_time_empty_option() {
    let srv = start(cfg("conf-v02")).await;
    let mut c = send_new(&srv, V02).await;
    let evs = srv.events(1).await;
    assert_event(&evs[0], b"0123456789ab", SEC, 0, docker_record());
    assert_eq!(evs[0].1.record.get_str(b"log"), Some(&b"GET / 200"[..]));
    assert_eq!(
        evs[0].1.record.get_str(b"container_name"),
        Some(&b"/web"[..])
    );
    expect_silence(&mut c).await;
    srv.stop().await;
}

#[tokio::test]
async fn v03_old_docker_nil_option() {
    let srv = start(cfg("conf-v03")).await;
    let mut c = send_new(&srv, V03).await;
    let evs = srv.events(1).await;
    assert_event(&evs[0], b"0123456789ab", SEC, 0, docker_record());
    expect_silence(&mut c).await;
    srv.stop().await;
}

#[tokio::test]
async fn v04_event_time_fixext8_with_chunk_is_acked() {
    let srv = start(cfg("conf-v04")).await;
    let mut c = send_new(&srv, V04).await;
    expect_reply(&mut c, &h(V04_REPLY)).await;
    let evs = srv.events(1).await;
    assert_event(&evs[0], b"app.access", SEC, NSEC, hello());
    assert_eq!(srv.stats.acks_sent.get(), 1);
    assert_eq!(srv.stats.acks_withheld.get(), 0);
    srv.stop().await;
}

#[tokio::test]
async fn v05_event_time_ext8() {
    let srv = start(cfg("conf-v05")).await;
    let mut c = send_new(&srv, V05).await;
    let evs = srv.events(1).await;
    assert_event(&evs[0], b"app.access", SEC, NSEC, hello());
    expect_silence(&mut c).await;
    srv.stop().await;
}

#[tokio::test]
async fn v06_forward_mode_with_chunk_and_size() {
    let srv = start(cfg("conf-v06")).await;
    let mut c = send_new(&srv, V06).await;
    expect_reply(&mut c, &h(V04_REPLY)).await;
    let evs = srv.events(2).await;
    assert_event(&evs[0], b"app.access", SEC, 0, n(1));
    assert_event(&evs[1], b"app.access", SEC, 1, n(2));
    srv.stop().await;
}

#[tokio::test]
async fn v07_forward_mode_no_option_int_times() {
    let srv = start(cfg("conf-v07")).await;
    let mut c = send_new(&srv, V07).await;
    let evs = srv.events(2).await;
    assert_event(&evs[0], b"app.access", SEC, 0, n(1));
    assert_event(&evs[1], b"app.access", SEC + 1, 0, n(2));
    expect_silence(&mut c).await;
    srv.stop().await;
}

#[tokio::test]
async fn v08_packed_forward_bin() {
    let srv = start(cfg("conf-v08")).await;
    let mut c = send_new(&srv, V08).await;
    expect_reply(&mut c, &h(V04_REPLY)).await;
    let evs = srv.events(2).await;
    assert_event(&evs[0], b"app.access", SEC, 0, n(1));
    assert_event(&evs[1], b"app.access", SEC, 1, n(2));
    srv.stop().await;
}

#[tokio::test]
async fn v09_packed_forward_str32_ruby_chunk_echoed_with_newline() {
    let srv = start(cfg("conf-v09")).await;
    let mut c = send_new(&srv, V09).await;
    expect_reply(&mut c, &h(V09_REPLY)).await;
    let evs = srv.events(2).await;
    assert_event(&evs[0], b"app.access", SEC, 0, n(1));
    assert_event(&evs[1], b"app.access", SEC, 1, n(2));
    srv.stop().await;
}

#[tokio::test]
async fn v10_compressed_packed_forward_bin_and_str32() {
    let srv = start(cfg("conf-v10")).await;
    let mut c = send_new(&srv, V10).await;
    expect_reply(&mut c, &h(V04_REPLY)).await;
    let evs = srv.events(2).await;
    assert_event(&evs[0], b"app.access", SEC, 0, n(1));
    assert_event(&evs[1], b"app.access", SEC, 1, n(2));
    // V10b: the same gzip carried in str32, as fluentd sends it; ack keeps the "\n".
    send(&mut c, &h(V10B)).await;
    expect_reply(&mut c, &h(V09_REPLY)).await;
    let evs = srv.events(4).await;
    assert_event(&evs[2], b"app.access", SEC, 0, n(1));
    assert_event(&evs[3], b"app.access", SEC, 1, n(2));
    srv.stop().await;
}

#[tokio::test]
async fn v11_multi_member_gzip_yields_both_events() {
    let srv = start(cfg("conf-v11")).await;
    let mut c = send_new(&srv, V11).await;
    let evs = srv.events(2).await;
    assert_event(&evs[0], b"app.access", SEC, 0, n(1));
    assert_event(&evs[1], b"app.access", SEC, 1, n(2));
    expect_silence(&mut c).await;
    srv.stop().await;
}

#[tokio::test]
async fn v12_forward_v15_metadata_entry() {
    let srv = start(cfg("conf-v12")).await;
    let mut c = send_new(&srv, V12).await;
    let evs = srv.events(1).await;
    assert_event(
        &evs[0],
        b"app.access",
        SEC,
        NSEC,
        map(vec![("log", s("x"))]),
    );
    expect_silence(&mut c).await;
    assert_eq!(srv.stats.events_dropped.total(), 0);
    srv.stop().await;
}

// ---- V13: the handshake, server side ------------------------------------------------------

const SALT: &[u8] = b"0123456789abcdef0123456789abcdef";

fn security() -> ServerSecurity {
    ServerSecurity {
        self_hostname: "aggregator-1.example".into(),
        shared_key: b"s3cr3t".to_vec(),
        user_auth: true,
        users: vec![("alice".into(), "pa55".into())],
        allow_anonymous_source: true,
        clients: vec![],
    }
}

fn forwarder() -> ClientSecurity {
    ClientSecurity {
        self_hostname: "forwarder-1.example".into(),
        shared_key: b"s3cr3t".to_vec(),
        username: "alice".into(),
        password: "pa55".into(),
    }
}

async fn secure_server(id: &str, sec: ServerSecurity) -> Srv {
    start(nagare_forward::server::InForwardConfig {
        security: Some(sec),
        ..cfg(id)
    })
    .await
}

/// Connects and reads the HELO, checking it is V13a with this server's random nonce/auth.
async fn helo(srv: &Srv) -> (TcpStream, BytesMut, Helo) {
    let mut c = srv.connect().await;
    let mut buf = BytesMut::new();
    let raw = read_object(&mut c, &mut buf).await;
    let helo = Helo::decode(&raw).expect("HELO decodes");
    assert_eq!(helo.nonce.len(), 16);
    assert_eq!(
        helo.auth.len(),
        16,
        "auth is always sent when security is on"
    );
    assert!(helo.keepalive);
    // V13a byte for byte, with this connection's nonce and auth (bin8, fluentd style).
    let v13a = V13A
        .replace(
            "00112233445566778899aabbccddeeff",
            &hex::encode(&helo.nonce),
        )
        .replace("ffeeddccbbaa99887766554433221100", &hex::encode(&helo.auth));
    assert_eq!(hex::encode(&raw), v13a);
    (c, buf, helo)
}

/// Sends the PING `client` builds and returns the PONG bytes.
async fn ping(
    c: &mut TcpStream,
    buf: &mut BytesMut,
    helo: &Helo,
    client: &ClientSecurity,
) -> Vec<u8> {
    let mut out = BytesMut::new();
    client.ping(helo, SALT).encode(&mut out);
    send(c, &out).await;
    read_object(c, buf).await
}

#[tokio::test]
async fn v13_handshake_ok_then_ack() {
    let srv = secure_server("conf-v13-ok", security()).await;
    let (mut c, mut buf, helo) = helo(&srv).await;
    let raw = ping(&mut c, &mut buf, &helo, &forwarder()).await;
    let pong = Pong::decode(&raw).expect("PONG decodes");
    assert!(pong.auth_result, "{pong:?}");
    assert_eq!(pong.reason, "");
    assert_eq!(pong.server_hostname, b"aggregator-1.example");
    forwarder()
        .verify_pong(&pong, &helo, SALT)
        .expect("PONG digest verifies");
    // V13c byte for byte, with the digest over this connection's nonce.
    let digest = shared_key_digest(SALT, b"aggregator-1.example", &helo.nonce, b"s3cr3t");
    let v13c = V13C.replace(&hex::encode("fea89b1373bbc7f99f002a4022daac2b2348ceb965c131dfb7c0ff3dddcbce2214fb421155dc960cee19456b51e93f0ba66da0d290bba5dd8c4762a5b7035ec9"), &hex::encode(&digest));
    assert_eq!(hex::encode(&raw), v13c);
    assert!(buf.is_empty());
    // Transport phase.
    send(&mut c, &h(V04)).await;
    expect_reply(&mut c, &h(V04_REPLY)).await;
    let evs = srv.events(1).await;
    assert_event(&evs[0], b"app.access", SEC, NSEC, hello());
    assert_eq!(srv.stats.auth_failures.total(), 0);
    srv.stop().await;
}

#[tokio::test]
async fn v13_ping_and_message_in_one_write() {
    // A client that pipelines its first message right behind the PING must still be served:
    // bytes left over after the handshake are processed without waiting for another read.
    let srv = start(nagare_forward::server::InForwardConfig {
        security: Some(security()),
        partial_frame_timeout: Duration::from_secs(30),
        ..cfg("conf-v13-pipelined")
    })
    .await;
    let (mut c, mut buf, helo) = helo(&srv).await;
    let mut out = BytesMut::new();
    forwarder().ping(&helo, SALT).encode(&mut out);
    out.extend_from_slice(&h(V04));
    send(&mut c, &out).await;
    let pong = Pong::decode(&read_object(&mut c, &mut buf).await).unwrap();
    assert!(pong.auth_result);
    let ack = read_exact(&mut c, h(V04_REPLY).len() - buf.len()).await;
    buf.extend_from_slice(&ack);
    assert_eq!(hex::encode(&buf), V04_REPLY);
    srv.events(1).await;
    srv.stop().await;
}

/// A refused handshake: the exact refusal PONG, then the server closes.
async fn refused(srv: &Srv, client: &ClientSecurity, reason: &str, label: &str) {
    let events_before = srv.sink.event_count();
    let (mut c, mut buf, helo) = helo(srv).await;
    let raw = ping(&mut c, &mut buf, &helo, client).await;
    let mut want = BytesMut::new();
    Pong::refusal(reason).encode(&mut want);
    assert_eq!(hex::encode(&raw), hex::encode(&want));
    let pong = Pong::decode(&raw).unwrap();
    assert!(!pong.auth_result);
    assert_eq!(pong.reason, reason);
    assert!(client.verify_pong(&pong, &helo, SALT).is_err());
    // Closed after the PONG; a message sent anyway is never processed.
    let _ = c.write_all(&h(V04)).await;
    assert!(buf.is_empty());
    expect_closed_silently(&mut c).await;
    counter_is(label, &srv.stats.auth_failures.get(label), 1).await;
    counter_is("closed auth_failed", &srv.closed("auth_failed"), 1).await;
    assert_eq!(srv.sink.event_count(), events_before);
}

#[tokio::test]
async fn v13d_wrong_shared_key_refused() {
    let srv = secure_server("conf-v13-key", security()).await;
    let client = ClientSecurity {
        shared_key: b"wrong".to_vec(),
        ..forwarder()
    };
    refused(&srv, &client, "shared_key mismatch", "shared_key_mismatch").await;
    // V13d is exactly this refusal.
    let mut want = BytesMut::new();
    Pong::refusal("shared_key mismatch").encode(&mut want);
    assert_eq!(hex::encode(&want), V13D);
    srv.stop().await;
}

#[tokio::test]
async fn v13b_replayed_ping_refused_with_v13d() {
    // V13b answers the fixed nonce of V13a; this server's nonce is random, so the captured
    // PING must be refused with exactly V13d.
    let srv = secure_server("conf-v13-replay", security()).await;
    let (mut c, mut buf, _helo) = helo(&srv).await;
    send(&mut c, &h(V13B)).await;
    let raw = read_object(&mut c, &mut buf).await;
    assert_eq!(hex::encode(&raw), V13D);
    expect_closed_silently(&mut c).await;
    counter_is(
        "shared_key_mismatch",
        &srv.stats.auth_failures.get("shared_key_mismatch"),
        1,
    )
    .await;
    srv.stop().await;
}

#[tokio::test]
async fn v13_wrong_password_refused() {
    let srv = secure_server("conf-v13-pw", security()).await;
    let client = ClientSecurity {
        password: "wrong".into(),
        ..forwarder()
    };
    refused(
        &srv,
        &client,
        "username/password mismatch",
        "password_mismatch",
    )
    .await;
    let client = ClientSecurity {
        username: "mallory".into(),
        ..forwarder()
    };
    let (mut c, mut buf, helo) = helo(&srv).await;
    let pong = Pong::decode(&ping(&mut c, &mut buf, &helo, &client).await).unwrap();
    assert_eq!(pong.reason, "username/password mismatch");
    counter_is(
        "password_mismatch",
        &srv.stats.auth_failures.get("password_mismatch"),
        2,
    )
    .await;
    srv.stop().await;
}

#[tokio::test]
async fn v13_unlisted_client_host_refused() {
    let sec = ServerSecurity {
        allow_anonymous_source: false,
        clients: vec![ClientRule {
            networks: vec![IpNet::parse("10.0.0.0/8").unwrap()],
            ..Default::default()
        }],
        ..security()
    };
    let srv = secure_server("conf-v13-anon", sec).await;
    refused(
        &srv,
        &forwarder(),
        "anonymous source host '127.0.0.1' denied",
        "anonymous_source_denied",
    )
    .await;
    srv.stop().await;
}

#[tokio::test]
async fn v13_listed_client_host_uses_its_shared_key() {
    let sec = ServerSecurity {
        allow_anonymous_source: false,
        clients: vec![ClientRule {
            networks: vec![IpNet::parse("127.0.0.0/8").unwrap()],
            shared_key: Some(b"per-client".to_vec()),
            users: vec!["alice".into()],
        }],
        ..security()
    };
    let srv = secure_server("conf-v13-rule", sec).await;
    let client = ClientSecurity {
        shared_key: b"per-client".to_vec(),
        ..forwarder()
    };
    let (mut c, mut buf, helo) = helo(&srv).await;
    let pong = Pong::decode(&ping(&mut c, &mut buf, &helo, &client).await).unwrap();
    assert!(pong.auth_result, "{pong:?}");
    client.verify_pong(&pong, &helo, SALT).unwrap();
    send(&mut c, &h(V04)).await;
    expect_reply(&mut c, &h(V04_REPLY)).await;
    // The global key is not accepted from this network.
    refused(
        &srv,
        &forwarder(),
        "shared_key mismatch",
        "shared_key_mismatch",
    )
    .await;
    srv.stop().await;
}

// ---- V14: heartbeats ----------------------------------------------------------------------

#[tokio::test]
async fn v14_tcp_nil_and_udp_heartbeat_on_the_same_port() {
    let srv = start(cfg("conf-v14")).await;
    let mut c = send_new(&srv, V14A).await;
    expect_silence(&mut c).await;
    assert_eq!(srv.sink.event_count(), 0);
    prove_open(&srv, &mut c, 1).await;

    // A transport heartbeat: connect and close without a byte.
    drop(srv.connect().await);

    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.send_to(&h(V14B), srv.addr).await.unwrap();
    let mut b = [0u8; 16];
    let (n, from) = tokio::time::timeout(LIVENESS, udp.recv_from(&mut b))
        .await
        .expect("UDP heartbeat answered")
        .unwrap();
    assert_eq!(hex::encode(&b[..n]), V14B);
    assert_eq!(from, srv.addr, "answered from the TCP port");
    counter_is("heartbeats_udp", &srv.stats.heartbeats_udp, 1).await;
    assert_eq!(srv.stats.connections_closed.total(), 0);
    srv.stop().await;
}

// ---- malformed and adversarial input ------------------------------------------------------

#[tokio::test]
async fn m01_truncated_frame_then_eof_is_dropped() {
    let srv = start(cfg("conf-m01")).await;
    let mut c = send_new(&srv, M01).await;
    expect_silence(&mut c).await; // buffering, no error
    c.shutdown().await.unwrap();
    expect_closed_silently(&mut c).await;
    counter_is("truncated_at_eof", &srv.rejected("truncated_at_eof"), 1).await;
    assert_eq!(srv.sink.event_count(), 0);
    assert_eq!(srv.stats.acks_sent.get(), 0);
    // The whole V06 on a new connection is processed.
    let mut c = send_new(&srv, V06).await;
    expect_reply(&mut c, &h(V04_REPLY)).await;
    let evs = srv.events(2).await;
    assert_event(&evs[0], b"app.access", SEC, 0, n(1));
    assert_event(&evs[1], b"app.access", SEC, 1, n(2));
    srv.stop().await;
}

#[tokio::test]
async fn m02_tag_not_a_string_rejected_connection_stays_open() {
    let srv = start(cfg("conf-m02")).await;
    let mut c = send_new(&srv, M02).await;
    expect_silence(&mut c).await;
    counter_is("tag_not_a_string", &srv.rejected("tag_not_a_string"), 1).await;
    prove_open(&srv, &mut c, 1).await;
    // With a chunk it is acked: a resend could never succeed.
    let with_chunk = format!("94{}{CHUNK_OPT}", &M02[2..]);
    send(&mut c, &h(&with_chunk)).await;
    expect_reply(&mut c, &h(V04_REPLY)).await;
    counter_is("tag_not_a_string", &srv.rejected("tag_not_a_string"), 2).await;
    assert_eq!(srv.sink.event_count(), 1);
    srv.stop().await;
}

#[tokio::test]
async fn m03_record_not_a_map_dropped_and_acked_with_chunk() {
    let srv = start(cfg("conf-m03")).await;
    let mut c = send_new(&srv, M03).await;
    expect_silence(&mut c).await;
    counter_is("record_not_a_map", &srv.dropped("record_not_a_map"), 1).await;
    assert_eq!(srv.sink.event_count(), 0);
    let with_chunk = format!("94{}{CHUNK_OPT}", &M03[2..]);
    send(&mut c, &h(&with_chunk)).await;
    expect_reply(&mut c, &h(V04_REPLY)).await;
    counter_is("record_not_a_map", &srv.dropped("record_not_a_map"), 2).await;
    prove_open(&srv, &mut c, 1).await;
    srv.stop().await;
}

#[tokio::test]
async fn m04_top_level_map_skipped_connection_stays_open() {
    let srv = start(cfg("conf-m04")).await;
    let mut c = send_new(&srv, M04).await;
    expect_silence(&mut c).await;
    counter_is("not_an_array", &srv.rejected("not_an_array"), 1).await;
    prove_open(&srv, &mut c, 1).await;
    srv.stop().await;
}

/// Sends `hex`, expects the connection closed with no reply and `connections_closed{reason}`.
async fn closes(srv: &Srv, hex: &str, reason: &str) {
    let mut c = send_new(srv, hex).await;
    expect_closed_silently(&mut c).await;
    counter_is(reason, &srv.closed(reason), 1).await;
    assert_eq!(srv.stats.connections_closed.total(), 1, "only {reason}");
    assert_eq!(srv.sink.event_count(), 0);
    assert_eq!(srv.stats.acks_sent.get(), 0);
}

#[tokio::test]
async fn m05_unknown_ext_type_closes() {
    let srv = start(cfg("conf-m05")).await;
    closes(&srv, M05, "unknown_ext_type").await;
    // The same message with a chunk is not acked either.
    let mut c = send_new(&srv, &format!("94{}{CHUNK_OPT}", &M05[2..])).await;
    expect_closed_silently(&mut c).await;
    counter_is("unknown_ext_type", &srv.closed("unknown_ext_type"), 2).await;
    srv.stop().await;
}

#[tokio::test]
async fn m06_event_time_wrong_length_closes() {
    let srv = start(cfg("conf-m06")).await;
    closes(&srv, M06, "bad_event_time").await;
    srv.stop().await;
}

#[tokio::test]
async fn m07_timestamp_ext_minus_one_accepted() {
    let srv = start(cfg("conf-m07")).await;
    let mut c = send_new(&srv, M07).await;
    let evs = srv.events(1).await;
    assert_event(&evs[0], b"t", SEC, 0, a1());
    expect_silence(&mut c).await;
    srv.stop().await;
}

#[tokio::test]
async fn m08_float_time_converted() {
    let srv = start(cfg("conf-m08")).await;
    let mut c = send_new(&srv, M08).await;
    let evs = srv.events(1).await;
    assert_event(&evs[0], b"t", SEC, 500_000_000, a1());
    expect_silence(&mut c).await;
    srv.stop().await;
}

/// A config whose partial-frame timeout is far beyond the read window, so a close can only
/// come from the declared-length check, not from waiting for bytes that never arrive.
fn patient(id: &str) -> nagare_forward::server::InForwardConfig {
    nagare_forward::server::InForwardConfig {
        partial_frame_timeout: Duration::from_secs(120),
        ..cfg(id)
    }
}

#[tokio::test]
async fn m09_bin32_declaring_4gib_closes_without_waiting() {
    let srv = start(patient("conf-m09")).await;
    assert_eq!(
        srv_limits_default(),
        nagare_forward::codec::DEFAULT_MAX_FRAME
    );
    // The connection stays open on our side: only the declared length can trigger the close.
    closes(&srv, M09, "frame_too_large").await;
    srv.stop().await;
}

#[tokio::test]
async fn m10_array32_declaring_2pow32_entries_closes_without_waiting() {
    let srv = start(patient("conf-m10")).await;
    closes(&srv, M10, "frame_too_large").await;
    srv.stop().await;
}

fn srv_limits_default() -> usize {
    nagare_forward::server::InForwardConfig::default()
        .limits
        .max_frame
}

#[tokio::test]
async fn m11_reserved_byte_closes() {
    let srv = start(cfg("conf-m11")).await;
    closes(&srv, M11, "malformed").await;
    srv.stop().await;
}

#[tokio::test]
async fn m12_gzip_flag_but_not_gzip_closes() {
    let srv = start(cfg("conf-m12")).await;
    closes(&srv, M12, "bad_compression").await;
    srv.stop().await;
}

/// Raw deflate of `input` with `flush`, driven to completion.
fn deflate_step(c: &mut flate2::Compress, input: &[u8], flush: flate2::FlushCompress) -> Vec<u8> {
    let start = c.total_in();
    let mut out = Vec::with_capacity(4096);
    loop {
        if out.len() == out.capacity() {
            out.reserve(64 * 1024);
        }
        let consumed = (c.total_in() - start) as usize;
        let status = c.compress_vec(&input[consumed..], &mut out, flush).unwrap();
        let done_in = (c.total_in() - start) as usize == input.len();
        match flush {
            flate2::FlushCompress::Finish if status == flate2::Status::StreamEnd => return out,
            flate2::FlushCompress::Finish => {}
            _ if done_in && out.len() < out.capacity() => return out,
            _ => {}
        }
    }
}

/// One gzip member holding `blocks` x 256 KiB of zeros. Gzipping 64 MiB takes seconds in a
/// debug build, so the deflate stream is assembled: after a sync flush, every further
/// 256 KiB of zeros compresses to the same bytes, which are repeated; CRC32 is combined.
fn zeros_bomb(blocks: usize) -> Vec<u8> {
    const BLOCK: usize = 256 << 10;
    let zeros = vec![0u8; BLOCK];
    let mut c = flate2::Compress::new(flate2::Compression::best(), false);
    let first = deflate_step(&mut c, &zeros, flate2::FlushCompress::Sync);
    let steady = deflate_step(&mut c, &zeros, flate2::FlushCompress::Sync);
    assert_eq!(
        steady,
        deflate_step(&mut c, &zeros, flate2::FlushCompress::Sync)
    );
    let finish = deflate_step(&mut c, &[], flate2::FlushCompress::Finish);
    let mut block_crc = flate2::Crc::new();
    block_crc.update(&zeros);
    let mut crc = flate2::Crc::new();
    let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 0xff];
    gz.extend_from_slice(&first);
    crc.combine(&block_crc);
    for _ in 1..blocks {
        gz.extend_from_slice(&steady);
        crc.combine(&block_crc);
    }
    gz.extend_from_slice(&finish);
    gz.extend_from_slice(&crc.sum().to_le_bytes());
    gz.extend_from_slice(&((blocks * BLOCK) as u32).to_le_bytes());
    gz
}

#[test]
fn zeros_bomb_is_valid_gzip() {
    // The construction, checked end to end (CRC and size included) on a small instance.
    let small = zeros_bomb(5);
    let out = nagare_forward::codec::compress::gunzip_capped(&small, 5 << 18).unwrap();
    assert_eq!(out.len(), 5 << 18);
    assert!(out.iter().all(|&b| b == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m13_gzip_bomb_stops_at_the_decompression_limit() {
    let mut config = cfg("conf-m13");
    config.limits.max_decompressed = 16 << 20;
    // The same V04 is sent twice on purpose: store both (resend dedupe is tested elsewhere).
    config.dedupe_resends = false;
    let srv = start(config).await;

    // 64 MiB of zeros, gzipped, wrapped as V10 (bin, size, compressed gzip, chunk).
    let bomb = zeros_bomb(256);
    assert!(bomb.len() < 100_000, "bomb is {} bytes", bomb.len());
    let mut msg = BytesMut::new();
    let opts = Options {
        chunk: Some(CHUNK_B64.as_bytes()),
        size: Some(2),
        compressed: Some("gzip"),
    };
    write_packed_forward(&mut msg, b"app.access", &bomb, Some(&opts), false);

    let mut bystander = srv.connect().await;
    let mut c = srv.connect().await;
    send(&mut c, &msg).await;
    send(&mut bystander, &h(V04)).await;
    expect_closed_silently(&mut c).await;
    counter_is(
        "decompressed_too_large",
        &srv.closed("decompressed_too_large"),
        1,
    )
    .await;
    // The bystander is unaffected, during and after.
    expect_reply(&mut bystander, &h(V04_REPLY)).await;
    send(&mut bystander, &h(V04)).await;
    expect_reply(&mut bystander, &h(V04_REPLY)).await;
    let evs = srv.events(2).await;
    assert_event(&evs[0], b"app.access", SEC, NSEC, hello());
    assert_eq!(srv.stats.acks_sent.get(), 2);
    assert_eq!(srv.stats.connections_closed.total(), 1);
    srv.stop().await;
}

#[tokio::test]
async fn m14_garbage_in_packed_stream_rejects_whole_message() {
    let srv = start(cfg("conf-m14")).await;
    closes(&srv, M14, "malformed").await;
    srv.stop().await;
}

#[tokio::test]
async fn m15_message_too_short_rejected_connection_stays_open() {
    let srv = start(cfg("conf-m15")).await;
    let mut c = send_new(&srv, M15).await;
    expect_silence(&mut c).await;
    counter_is("message_too_short", &srv.rejected("message_too_short"), 1).await;
    prove_open(&srv, &mut c, 1).await;
    srv.stop().await;
}

#[tokio::test]
async fn m16_empty_packed_stream_still_acked() {
    let srv = start(cfg("conf-m16")).await;
    let mut c = send_new(&srv, M16).await;
    expect_reply(&mut c, &h(V04_REPLY)).await;
    assert_eq!(srv.sink.event_count(), 0);
    assert_eq!(srv.sink.streams().len(), 0, "no empty emit");
    assert_eq!(srv.stats.acks_sent.get(), 1);
    srv.stop().await;
}

#[tokio::test]
async fn m17_invalid_utf8_tag_kept_as_bytes() {
    let srv = start(cfg("conf-m17")).await;
    let mut c = send_new(&srv, M17).await;
    let evs = srv.events(1).await;
    assert_event(&evs[0], &[0xff, 0xfe], SEC, 0, a1());
    expect_silence(&mut c).await;
    srv.stop().await;
}

/// `[tag, SEC, {"log": <len bytes>}, {"chunk": id}]`.
fn big_message(len: usize, chunk: &str) -> Vec<u8> {
    let log: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let record = Record::from_pairs(&[("log", log.as_str())]);
    let mut out = BytesMut::new();
    let opts = Options {
        chunk: Some(chunk.as_bytes()),
        ..Default::default()
    };
    write_message(
        &mut out,
        b"big",
        EventTime::from_secs(SEC),
        &record,
        Some(&opts),
        true,
    );
    out.to_vec()
}

/// Writes `bytes` in pieces of `piece` bytes from a blocking socket (fast even in debug) and
/// returns the ack.
async fn send_in_pieces(srv: &Srv, bytes: Vec<u8>, piece: usize, ack_len: usize) -> Vec<u8> {
    let addr = srv.addr;
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(LIVENESS)).unwrap();
        for p in bytes.chunks(piece) {
            s.write_all(p).unwrap();
        }
        let mut ack = vec![0u8; ack_len];
        s.read_exact(&mut ack).unwrap();
        ack
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m18_large_record_single_write_and_byte_writes_identical() {
    // The same chunked message is sent several ways on purpose: store every copy.
    let mut config = cfg("conf-m18");
    config.dedupe_resends = false;
    let srv = start(config).await;
    let two_mib = big_message(2 << 20, "whole");
    let ack = send_in_pieces(
        &srv,
        two_mib.clone(),
        two_mib.len(),
        ack_for(b"whole").len(),
    )
    .await;
    assert_eq!(ack, ack_for(b"whole"));
    let ack = send_in_pieces(&srv, two_mib.clone(), 1009, ack_for(b"whole").len()).await;
    assert_eq!(ack, ack_for(b"whole"));
    let evs = srv.events(2).await;
    assert_eq!(evs[0], evs[1]);
    assert_eq!(
        evs[0].1.record.get_str(b"log").map(<[u8]>::len),
        Some(2 << 20)
    );
    assert_eq!(evs[0].1.time, EventTime::from_secs(SEC));

    // 1-byte writes (256 KiB keeps this quick in debug builds) against one write.
    let small = big_message(256 << 10, "bytes");
    let ack = send_in_pieces(&srv, small.clone(), small.len(), ack_for(b"bytes").len()).await;
    assert_eq!(ack, ack_for(b"bytes"));
    let ack = send_in_pieces(&srv, small, 1, ack_for(b"bytes").len()).await;
    assert_eq!(ack, ack_for(b"bytes"));
    let evs = srv.events(4).await;
    assert_eq!(evs[2], evs[3]);
    assert_eq!(
        evs[2].1.record.get_str(b"log").map(<[u8]>::len),
        Some(256 << 10)
    );
    assert_eq!(srv.stats.connections_closed.total(), 0);
    srv.stop().await;
}

#[tokio::test]
async fn m19_pipelined_messages_acked_in_order() {
    let srv = start(cfg("conf-m19")).await;
    let mut c = srv.connect().await;
    let mut both = h(V04);
    both.extend(h(V09));
    send(&mut c, &both).await;
    let mut want = h(V04_REPLY);
    want.extend(h(V09_REPLY));
    expect_reply(&mut c, &want).await;
    let evs = srv.events(3).await;
    assert_event(&evs[0], b"app.access", SEC, NSEC, hello());
    assert_event(&evs[1], b"app.access", SEC, 0, n(1));

    // Different tags in one write: one emit per tag, acks still in message order, events in
    // order within each tag (a's c1 before c3; b's may come before or after them).
    let mut three = BytesMut::new();
    for (tag, chunk) in [(&b"a"[..], "c1"), (b"b", "c2"), (b"a", "c3")] {
        let opts = Options {
            chunk: Some(chunk.as_bytes()),
            ..Default::default()
        };
        let rec = Record::from_pairs(&[("chunk", chunk)]);
        write_message(
            &mut three,
            tag,
            EventTime::new(SEC, 7),
            &rec,
            Some(&opts),
            false,
        );
    }
    send(&mut c, &three).await;
    let mut want = ack_for(b"c1");
    want.extend(ack_for(b"c2"));
    want.extend(ack_for(b"c3"));
    expect_reply(&mut c, &want).await;
    let evs = srv.events(6).await;
    let of = |tag: &[u8]| -> Vec<Vec<u8>> {
        evs[3..]
            .iter()
            .filter(|e| e.0.as_bytes() == tag)
            .map(|e| e.1.record.get_str(b"chunk").unwrap_or_default().to_vec())
            .collect()
    };
    assert_eq!(of(b"a"), [b"c1".to_vec(), b"c3".to_vec()]);
    assert_eq!(of(b"b"), [b"c2".to_vec()]);
    assert_eq!(srv.stats.acks_sent.get(), 5);
    srv.stop().await;
}
