//! Refusals, in process (pipelines built from config text, so the `<security>`, `<user>`,
//! `<client>` and `<transport tls>` parsing is exercised too):
//!
//! * a client with a wrong shared key, a wrong password (`user_auth`), and from a host no
//!   `<client>` lists (`allow_anonymous_source false`) gets `["PONG", false, reason, ...]`, the
//!   connection is closed, and `nagare_input_auth_failures_total{plugin_id, reason}` counts it;
//!   the right credentials on the same input are accepted (a control);
//! * a TLS client that does not trust the server's CA fails the TLS handshake (and one that
//!   does trust it gets its message acked);
//! * out_forward with the wrong shared_key never delivers, and its
//!   `nagare_forward_send_failures_total{reason="handshake_failed"}` rises.
//!
//! Metrics live in one registry per process: every test uses its own plugin ids.

use bytes::BytesMut;
use nagare_core::metrics::render_prometheus;
use nagare_core::shutdown::{self, Trigger};
use nagare_e2e::*;
use nagare_forward::codec::encode::parse_ack;
use nagare_forward::codec::handshake::{new_salt, ClientSecurity, Helo, Pong};
use nagare_forward::codec::Framer;
use nagare_pipeline::{BoundInput, Pipeline};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on anything that must happen (a reply, a close, a counter moving).
const LIVENESS: Duration = Duration::from_secs(15);

struct Started {
    inputs: Vec<BoundInput>,
    trigger: Trigger,
    running: nagare_pipeline::Running,
}

impl Started {
    fn input(&self, id: &str) -> &BoundInput {
        self.inputs
            .iter()
            .find(|i| i.id == id)
            .unwrap_or_else(|| panic!("no input {id}"))
    }
    async fn stop(self) {
        self.trigger.fire();
        tokio::time::timeout(Duration::from_secs(30), self.running.wait())
            .await
            .expect("pipeline stops after shutdown");
    }
}

async fn start(config: &str) -> Started {
    let root = nagare_config::parse_str(config, Path::new("refusals.conf"))
        .unwrap_or_else(|e| panic!("config error: {e}\n{config}"));
    let pipeline = Pipeline::build(&root).unwrap_or_else(|e| panic!("build error: {e}\n{config}"));
    let (trigger, sd) = shutdown::channel();
    let running = pipeline.start(sd).await.expect("pipeline starts");
    Started {
        inputs: running.inputs.clone(),
        trigger,
        running,
    }
}

async fn read_frame<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    framer: &mut Framer,
) -> Option<bytes::Bytes> {
    let fut = async {
        loop {
            if let Some(f) = framer.next_frame(buf, 1 << 20).expect("msgpack reply") {
                return Some(f);
            }
            let mut tmp = [0u8; 4096];
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
    };
    tokio::time::timeout(LIVENESS, fut)
        .await
        .expect("a reply or a close within the liveness bound")
}

/// Whether the peer closes the connection (EOF or reset) within the liveness bound.
async fn closed_by_peer<S: AsyncRead + Unpin>(s: &mut S) -> bool {
    let mut tmp = [0u8; 256];
    matches!(
        tokio::time::timeout(LIVENESS, s.read(&mut tmp)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// Sends one acked message on `s` and returns whether the matching ack came back.
async fn send_and_ack<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    framer: &mut Framer,
    tag: &str,
) -> bool {
    let (msg, chunk) = packed_message(tag, 0..3);
    s.write_all(&msg).await.expect("write message");
    s.flush().await.expect("flush");
    match read_frame(s, buf, framer).await {
        Some(f) => parse_ack(&f) == Some(chunk.as_bytes()),
        None => false,
    }
}

/// Connects, runs HELO/PING/PONG with these credentials; returns the PONG and the stream.
async fn handshake(
    addr: SocketAddr,
    key: &str,
    user: &str,
    pass: &str,
) -> (Pong, TcpStream, BytesMut, Framer) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let (mut buf, mut framer) = (BytesMut::new(), Framer::new());
    let helo = Helo::decode(
        &read_frame(&mut s, &mut buf, &mut framer)
            .await
            .expect("HELO"),
    )
    .expect("HELO decodes");
    let client = ClientSecurity {
        self_hostname: "client.e2e".into(),
        shared_key: key.as_bytes().to_vec(),
        username: user.into(),
        password: pass.into(),
    };
    let mut out = BytesMut::new();
    client.ping(&helo, &new_salt()).encode(&mut out);
    s.write_all(&out).await.expect("write PING");
    let pong = Pong::decode(
        &read_frame(&mut s, &mut buf, &mut framer)
            .await
            .expect("PONG"),
    )
    .expect("PONG decodes");
    (pong, s, buf, framer)
}

/// Asserts a refusal: PONG false with `reason`, then the server closes the connection.
async fn assert_refused(addr: SocketAddr, key: &str, user: &str, pass: &str, reason: &str) {
    let (pong, mut s, _, _) = handshake(addr, key, user, pass).await;
    assert!(!pong.auth_result, "expected a refusal, got {pong:?}");
    assert_eq!(pong.reason, reason, "PONG reason");
    assert!(
        closed_by_peer(&mut s).await,
        "the server must close a refused connection"
    );
}

/// Asserts acceptance, and that a message is then acked.
async fn assert_accepted(addr: SocketAddr, key: &str, user: &str, pass: &str) {
    let (pong, mut s, mut buf, mut framer) = handshake(addr, key, user, pass).await;
    assert!(pong.auth_result, "expected acceptance, got {pong:?}");
    assert!(
        send_and_ack(&mut s, &mut buf, &mut framer, "e2e.auth").await,
        "no ack after a good handshake"
    );
}

fn auth_failures(plugin_id: &str, reason: &str) -> f64 {
    metric(
        &render_prometheus(),
        "nagare_input_auth_failures_total",
        &[("plugin_id", plugin_id), ("reason", reason)],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_shared_key_is_refused_and_counted() {
    let p = start(
        r#"
<source>
  @type forward
  @id ref_key_in
  bind 127.0.0.1
  port 0
  <security>
    self_hostname server.e2e
    shared_key right-key
  </security>
</source>
<match **>
  @type null
  @id ref_key_null
</match>
"#,
    )
    .await;
    let input = p.input("ref_key_in").clone();
    assert_refused(input.addr, "wrong-key", "", "", "shared_key mismatch").await;
    assert_eq!(
        input.stats.auth_failures.get("shared_key_mismatch").get(),
        1
    );
    assert_eq!(
        auth_failures("ref_key_in", "shared_key_mismatch"),
        1.0,
        "{}",
        render_prometheus()
    );
    assert_eq!(input.stats.events.get(), 0);

    assert_accepted(input.addr, "right-key", "", "").await;
    assert_eq!(input.stats.events.get(), 3);
    assert_eq!(
        input.stats.auth_failures.total(),
        1,
        "the good client is not counted as a failure"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_and_counted() {
    let p = start(
        r#"
<source>
  @type forward
  @id ref_pw_in
  bind 127.0.0.1
  port 0
  <security>
    self_hostname server.e2e
    shared_key pw-key
    user_auth true
    <user>
      username alice
      password wonderland
    </user>
  </security>
</source>
<match **>
  @type null
</match>
"#,
    )
    .await;
    let input = p.input("ref_pw_in").clone();
    assert_refused(
        input.addr,
        "pw-key",
        "alice",
        "looking-glass",
        "username/password mismatch",
    )
    .await;
    assert_refused(
        input.addr,
        "pw-key",
        "mallory",
        "wonderland",
        "username/password mismatch",
    )
    .await;
    assert_eq!(input.stats.auth_failures.get("password_mismatch").get(), 2);
    assert_eq!(
        auth_failures("ref_pw_in", "password_mismatch"),
        2.0,
        "{}",
        render_prometheus()
    );

    assert_accepted(input.addr, "pw-key", "alice", "wonderland").await;
    assert_eq!(input.stats.events.get(), 3);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisted_client_host_is_refused_and_counted() {
    // Two inputs: one lists only 10.0.0.0/8 (we connect from 127.0.0.1), one lists loopback.
    let p = start(
        r#"
<source>
  @type forward
  @id ref_host_in
  bind 127.0.0.1
  port 0
  <security>
    self_hostname server.e2e
    shared_key host-key
    allow_anonymous_source false
    <client>
      network 10.0.0.0/8
    </client>
  </security>
</source>
<source>
  @type forward
  @id ref_host_ok_in
  bind 127.0.0.1
  port 0
  <security>
    self_hostname server.e2e
    shared_key host-key
    allow_anonymous_source false
    <client>
      network 10.0.0.0/8
    </client>
    <client>
      network 127.0.0.0/8
    </client>
  </security>
</source>
<match **>
  @type null
</match>
"#,
    )
    .await;
    let denied = p.input("ref_host_in").clone();
    assert_refused(
        denied.addr,
        "host-key",
        "",
        "",
        "anonymous source host '127.0.0.1' denied",
    )
    .await;
    assert_eq!(
        denied
            .stats
            .auth_failures
            .get("anonymous_source_denied")
            .get(),
        1
    );
    assert_eq!(
        auth_failures("ref_host_in", "anonymous_source_denied"),
        1.0,
        "{}",
        render_prometheus()
    );
    assert_eq!(denied.stats.events.get(), 0);

    let allowed = p.input("ref_host_ok_in").clone();
    assert_accepted(allowed.addr, "host-key", "", "").await;
    assert_eq!(allowed.stats.events.get(), 3);
    assert_eq!(allowed.stats.auth_failures.total(), 0);
    p.stop().await;
}

fn tls_client(ca: &Path) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = nagare_forward::server::tls::load_roots(ca).expect("CA loads");
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_not_trusting_the_ca_fails() {
    let dir = TempDir::new("refusals_tls");
    let pki = Pki::generate(dir.path());
    let p = start(&format!(
        r#"
<source>
  @type forward
  @id ref_tls_in
  bind 127.0.0.1
  port 0
  <transport tls>
    cert_path {}
    private_key_path {}
  </transport>
</source>
<match **>
  @type null
</match>
"#,
        pki.server_cert.display(),
        pki.server_key.display()
    ))
    .await;
    let input = p.input("ref_tls_in").clone();
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("server name");

    let tcp = TcpStream::connect(input.addr).await.expect("connect");
    let r = tokio::time::timeout(
        LIVENESS,
        tls_client(&pki.other_ca).connect(name.clone(), tcp),
    )
    .await
    .expect("the TLS handshake ends within the liveness bound");
    let err = match r {
        Ok(_) => panic!("a client trusting another CA completed the TLS handshake"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("certificate") || err.contains("UnknownIssuer"),
        "expected a certificate error, got: {err}"
    );
    wait_until_async(
        "the server counts the failed TLS handshake",
        LIVENESS,
        || {
            let n = input
                .stats
                .connections_closed
                .get("tls_handshake_failed")
                .get();
            if n >= 1 {
                Ok(())
            } else {
                Err(format!("tls_handshake_failed = {n}"))
            }
        },
    )
    .await;
    assert_eq!(input.stats.events.get(), 0);

    // Control: trusting the right CA, the same input accepts and acks.
    let tcp = TcpStream::connect(input.addr).await.expect("connect");
    let mut tls = tokio::time::timeout(LIVENESS, tls_client(&pki.ca).connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("a client trusting the CA connects");
    let (mut buf, mut framer) = (BytesMut::new(), Framer::new());
    assert!(
        send_and_ack(&mut tls, &mut buf, &mut framer, "e2e.tls").await,
        "no ack over TLS"
    );
    assert_eq!(input.stats.events.get(), 3);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_forward_with_wrong_shared_key_never_delivers() {
    let receiver = start(
        r#"
<source>
  @type forward
  @id ref_recv_in
  bind 127.0.0.1
  port 0
  <security>
    self_hostname receiver.e2e
    shared_key the-right-key
  </security>
</source>
<match **>
  @type null
  @id ref_recv_null
</match>
"#,
    )
    .await;
    let recv = receiver.input("ref_recv_in").clone();
    let sender = start(&format!(
        r#"
<system>
  shutdown_drain_timeout 1s
</system>
<source>
  @type forward
  @id ref_send_in
  bind 127.0.0.1
  port 0
</source>
<match **>
  @type forward
  @id ref_out_wrong_key
  heartbeat_type none
  require_ack_response true
  ack_response_timeout 5s
  <security>
    self_hostname sender.e2e
    shared_key not-the-right-key
  </security>
  <server>
    host 127.0.0.1
    port {}
  </server>
  <buffer>
    flush_interval 100ms
    retry_wait 100ms
    retry_max_interval 300ms
    retry_forever true
  </buffer>
</match>
"#,
        recv.addr.port()
    ))
    .await;
    let input = sender.input("ref_send_in").clone();
    let mut s = TcpStream::connect(input.addr).await.expect("connect");
    let (mut buf, mut framer) = (BytesMut::new(), Framer::new());
    assert!(
        send_and_ack(&mut s, &mut buf, &mut framer, "e2e.wrongkey").await,
        "the forwarder's input acks once its buffer committed"
    );

    let failures = || {
        metric(
            &render_prometheus(),
            "nagare_forward_send_failures_total",
            &[
                ("plugin_id", "ref_out_wrong_key"),
                ("reason", "handshake_failed"),
            ],
        )
        .unwrap_or(0.0)
    };
    wait_until_async("out_forward counting handshake failures", LIVENESS, || {
        let n = failures();
        if n >= 3.0 {
            Ok(())
        } else {
            Err(format!("handshake_failed = {n}"))
        }
    })
    .await;
    let text = render_prometheus();
    assert_eq!(
        recv.stats.events.get(),
        0,
        "nothing may be delivered with a wrong key"
    );
    assert!(
        recv.stats.auth_failures.get("shared_key_mismatch").get() >= 3,
        "the receiver refuses each attempt for the key: {text}"
    );
    assert_eq!(
        metric(
            &text,
            "nagare_forward_records_sent_total",
            &[("plugin_id", "ref_out_wrong_key")]
        )
        .unwrap_or(0.0),
        0.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "nagare_output_records_written_total",
            &[("plugin_id", "ref_recv_null")]
        )
        .unwrap_or(0.0),
        0.0,
        "{text}"
    );
    drop(s);
    sender.stop().await;
    receiver.stop().await;
}
