//! out_forward: sends buffer chunks to forward-protocol servers.
//!
//! Each chunk goes out as one PackedForward message (`bin` entries; CompressedPackedForward
//! with `compress gzip`) with `size` and, with `require_ack_response`, `chunk` = base64 of the
//! chunk id. A resend of the same chunk (after an ack timeout, a broken connection or on
//! another node) carries the same id, so a receiver that remembers committed ids can drop the
//! repeat. Node choice follows fluentd: weights, standby promotion, failover to the next node
//! within one write, phi-accrual detection from heartbeats ([`config::HeartbeatType`]).

pub mod balancer;
pub mod config;
pub mod conn;
pub mod detector;

pub use config::{
    ClientSecurityConfig, Compress, HeartbeatType, OutForwardConfig, ServerSpec, TlsClientConfig,
};

use crate::codec::compress::{gzip, zstd};
use crate::codec::encode::{packed_forward_header_len, write_options, Options};
use crate::codec::time::{read_time, TimeValue};
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use conn::{Conn, SendError};
use detector::Detector;
use nagare_core::metrics::{counter, gauge, Counter, Gauge, ReasonCounters};
use nagare_core::msgpack::{skip_complete, write_array_len, write_bin_header, write_str};
use nagare_core::shutdown::Shutdown;
use nagare_core::{Chunk, Output, WriteError};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// out_forward metrics under its `@id`.
#[derive(Clone, Debug)]
pub struct OutForwardStats {
    pub chunks_sent: Counter,
    pub records_sent: Counter,
    pub bytes_sent: Counter,
    /// Failed attempts by reason (`connect_failed`, `ack_timeout`, ...).
    pub send_failures: ReasonCounters,
    /// A chunk that failed on one node and was tried on another in the same write.
    pub failovers: Counter,
    pub nodes_available: Gauge,
}

impl OutForwardStats {
    fn new(id: &str) -> Self {
        let l = [("plugin_id", id)];
        OutForwardStats {
            chunks_sent: counter(
                "nagare_forward_chunks_sent_total",
                "Chunks delivered (acked when require_ack_response)",
                &l,
            ),
            records_sent: counter("nagare_forward_records_sent_total", "Records delivered", &l),
            bytes_sent: counter(
                "nagare_forward_bytes_sent_total",
                "Payload bytes delivered",
                &l,
            ),
            send_failures: ReasonCounters::new(
                "nagare_forward_send_failures_total",
                "Failed send attempts, by reason",
                &l,
            ),
            failovers: counter(
                "nagare_forward_failovers_total",
                "Chunks retried on another node within one flush",
                &l,
            ),
            nodes_available: gauge(
                "nagare_forward_nodes_available",
                "Nodes currently available",
                &l,
            ),
        }
    }
}

struct NodeState {
    available: bool,
    detector: Detector,
    addrs: Vec<SocketAddr>,
    resolved_at: Option<Instant>,
    rr: usize,
}

struct Node {
    spec: ServerSpec,
    key: Vec<u8>,
    state: Mutex<NodeState>,
    pool: tokio::sync::Mutex<Vec<Conn>>,
}

/// The out_forward output.
pub struct OutForward {
    cfg: Arc<OutForwardConfig>,
    nodes: Vec<Arc<Node>>,
    balancer: balancer::Balancer,
    tls: Option<tokio_rustls::TlsConnector>,
    stats: OutForwardStats,
    epoch: Instant,
}

impl OutForward {
    /// Validates the config and loads TLS material (errors here are startup errors).
    pub fn new(cfg: OutForwardConfig) -> io::Result<Self> {
        if cfg.servers.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "out_forward needs at least one <server>",
            ));
        }
        let tls = cfg.tls.as_ref().map(conn::tls_connector).transpose()?;
        let epoch = Instant::now();
        let hb = cfg.heartbeat_interval.as_secs_f64();
        let nodes = cfg
            .servers
            .iter()
            .map(|s| {
                let key = s
                    .shared_key
                    .clone()
                    .or_else(|| cfg.security.as_ref().map(|x| x.shared_key.clone()))
                    .unwrap_or_default()
                    .into_bytes();
                Arc::new(Node {
                    spec: s.clone(),
                    key,
                    state: Mutex::new(NodeState {
                        available: true,
                        detector: Detector::new(hb, 0.0),
                        addrs: Vec::new(),
                        resolved_at: None,
                        rr: 0,
                    }),
                    pool: tokio::sync::Mutex::new(Vec::new()),
                })
            })
            .collect::<Vec<_>>();
        let weights: Vec<u32> = cfg.servers.iter().map(|s| s.weight).collect();
        let stats = OutForwardStats::new(&cfg.id);
        stats.nodes_available.set(nodes.len() as i64);
        Ok(OutForward {
            balancer: balancer::Balancer::new(&weights),
            cfg: Arc::new(cfg),
            nodes,
            tls,
            stats,
            epoch,
        })
    }

    pub fn stats(&self) -> &OutForwardStats {
        &self.stats
    }

    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    fn eligible(&self) -> Vec<bool> {
        let weights: Vec<u32> = self.nodes.iter().map(|n| n.spec.weight).collect();
        let standby: Vec<bool> = self.nodes.iter().map(|n| n.spec.standby).collect();
        let available: Vec<bool> = self.nodes.iter().map(|n| self.lock(n).available).collect();
        balancer::eligible(&weights, &standby, &available)
    }

    fn lock<'a>(&self, n: &'a Node) -> std::sync::MutexGuard<'a, NodeState> {
        n.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn disable(&self, n: &Node, why: &str) {
        if self.cfg.heartbeat_type == HeartbeatType::None {
            // Without heartbeats nothing could bring the node back: keep it in rotation.
            return;
        }
        let mut st = self.lock(n);
        if st.available {
            st.available = false;
            st.detector.clear(self.now());
            st.resolved_at = None;
            self.stats.nodes_available.add(-1);
            tracing::warn!(plugin_id = %self.cfg.id, node = %n.spec.name, reason = why, "detached forwarding server");
        }
    }

    /// A heartbeat from `n` arrived.
    fn heartbeat(&self, n: &Node) {
        let now = self.now();
        let recover = (self.cfg.recover_wait.as_secs_f64()
            / self.cfg.heartbeat_interval.as_secs_f64().max(1e-3)) as usize;
        let mut st = self.lock(n);
        st.detector.add(now);
        if !st.available && st.detector.sample_size() > recover {
            st.available = true;
            self.stats.nodes_available.add(1);
            tracing::warn!(plugin_id = %self.cfg.id, node = %n.spec.name, "recovered forwarding server");
        }
    }

    /// Phi and hard-timeout checks, once per heartbeat interval.
    fn tick(&self) {
        let now = self.now();
        for n in &self.nodes {
            let (detach, why) = {
                let st = self.lock(n);
                if !st.available {
                    continue;
                }
                if st.detector.since_last(now) > self.cfg.hard_timeout.as_secs_f64() {
                    (true, "hard_timeout")
                } else if self.cfg.phi_failure_detector
                    && st.detector.phi(now) > self.cfg.phi_threshold
                {
                    (true, "phi_threshold")
                } else {
                    (false, "")
                }
            };
            if detach {
                self.disable(n, why);
            }
        }
    }

    async fn resolve(&self, n: &Node) -> Result<SocketAddr, SendError> {
        {
            let mut st = self.lock(n);
            let fresh = match (st.resolved_at, self.cfg.expire_dns_cache) {
                (Some(_), None) => true,
                (Some(t), Some(ttl)) => t.elapsed() < ttl,
                (None, _) => false,
            };
            if fresh && !st.addrs.is_empty() {
                let i = if self.cfg.dns_round_robin { st.rr } else { 0 };
                st.rr = st.rr.wrapping_add(1);
                return Ok(st.addrs[i % st.addrs.len()]);
            }
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((n.spec.host.as_str(), n.spec.port))
            .await
            .map_err(|e| {
                SendError::Connect(
                    n.spec.name.clone(),
                    format!("cannot resolve {}: {e}", n.spec.host),
                )
            })?
            .collect();
        let mut st = self.lock(n);
        if addrs.is_empty() {
            return Err(SendError::Connect(
                n.spec.name.clone(),
                format!("{} resolves to nothing", n.spec.host),
            ));
        }
        st.addrs = addrs;
        st.resolved_at = Some(Instant::now());
        let i = if self.cfg.dns_round_robin { st.rr } else { 0 };
        st.rr = st.rr.wrapping_add(1);
        Ok(st.addrs[i % st.addrs.len()])
    }

    async fn open(&self, n: &Node) -> Result<Conn, SendError> {
        let addr = self.resolve(n).await?;
        let sec = self.cfg.security.as_ref().map(|s| {
            (
                s,
                n.key.as_slice(),
                n.spec.username.as_str(),
                n.spec.password.as_str(),
            )
        });
        conn::connect(
            addr,
            &n.spec.host,
            &n.spec.name,
            &self.cfg,
            self.tls.as_ref(),
            sec,
        )
        .await
    }

    async fn checkout(&self, n: &Node) -> Result<Conn, SendError> {
        if self.cfg.keepalive {
            let mut pool = n.pool.lock().await;
            while let Some(mut c) = pool.pop() {
                let too_old = self
                    .cfg
                    .keepalive_max_age
                    .is_some_and(|a| c.created.elapsed() > a);
                let idle = self
                    .cfg
                    .keepalive_timeout
                    .is_some_and(|t| c.last_used.elapsed() > t);
                if !too_old && !idle && c.is_clean().await {
                    return Ok(c);
                }
                drop(c);
            }
        }
        self.open(n).await
    }

    async fn checkin(&self, n: &Node, c: Conn) {
        if self.cfg.keepalive {
            n.pool.lock().await.push(c);
        } else {
            c.close().await;
        }
    }

    /// The entries as they go on the wire (integer time for `time_as_integer`, gzipped for
    /// `compress gzip`).
    fn payload(&self, chunk: &Chunk) -> Bytes {
        let entries = if self.cfg.time_as_integer {
            integer_times(&chunk.bytes)
        } else {
            chunk.bytes.clone()
        };
        match self.cfg.compress {
            Compress::Text => entries,
            Compress::Gzip => Bytes::from(gzip(&entries, self.cfg.compression_level)),
            Compress::Zstd => Bytes::from(zstd(&entries, self.cfg.compression_level as i32)),
        }
    }

    /// Starts failure detection (a no-op for `heartbeat_type none`).
    pub fn spawn_heartbeat(
        self: &Arc<Self>,
        shutdown: Shutdown,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let me = self.clone();
        match self.cfg.heartbeat_type {
            HeartbeatType::None => None,
            HeartbeatType::Transport => Some(tokio::spawn(async move {
                me.transport_heartbeat(shutdown).await
            })),
            HeartbeatType::Udp => Some(tokio::spawn(
                async move { me.udp_heartbeat(shutdown).await },
            )),
        }
    }

    async fn transport_heartbeat(self: Arc<Self>, mut shutdown: Shutdown) {
        let mut iv = tokio::time::interval(self.cfg.heartbeat_interval);
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = iv.tick() => {}
                _ = shutdown.wait() => return,
            }
            let mut probes = tokio::task::JoinSet::new();
            for (i, _) in self.nodes.iter().enumerate() {
                let me = self.clone();
                probes.spawn(async move {
                    let n = me.nodes[i].clone();
                    let limit = me.cfg.heartbeat_interval.max(Duration::from_millis(500));
                    if let Ok(Ok(c)) = tokio::time::timeout(limit, me.open(&n)).await {
                        me.heartbeat(&n);
                        c.close().await;
                    }
                });
            }
            while probes.join_next().await.is_some() {}
            self.tick();
        }
    }

    async fn udp_heartbeat(self: Arc<Self>, mut shutdown: Shutdown) {
        let sock = match tokio::net::UdpSocket::bind("0.0.0.0:0").await {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::error!(plugin_id = %self.cfg.id, error = %e, "cannot open the UDP heartbeat socket; failure detection is off");
                return;
            }
        };
        let mut iv = tokio::time::interval(self.cfg.heartbeat_interval);
        let mut buf = [0u8; 16];
        loop {
            tokio::select! {
                _ = iv.tick() => {
                    for n in &self.nodes {
                        if let Ok(a) = self.resolve(n).await {
                            let _ = sock.send_to(&[0u8], a).await;
                        }
                    }
                    self.tick();
                }
                r = sock.recv_from(&mut buf) => {
                    if let Ok((_, from)) = r {
                        for n in &self.nodes {
                            let hit = self.lock(n).addrs.contains(&from);
                            if hit { self.heartbeat(n); }
                        }
                    }
                }
                _ = shutdown.wait() => return,
            }
        }
    }
}

/// Rewrites packed entries with integer-second times.
fn integer_times(entries: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(entries.len());
    let mut p = 0;
    while p < entries.len() {
        let Ok(end) = skip_complete(entries, p) else {
            break;
        };
        // Entries come from our own buffer: [time, record].
        let tp = p + 1;
        let Ok(te) = skip_complete(entries, tp) else {
            break;
        };
        let secs = match read_time(entries, tp, te) {
            Ok(TimeValue::Time(t)) => t.secs(),
            _ => 0,
        };
        out.put_u8(0x92);
        out.put_u8(0xce);
        out.put_u32(secs);
        out.put_slice(&entries[te..end]);
        p = end;
    }
    out.freeze()
}

#[async_trait::async_trait]
impl Output for OutForward {
    async fn write(&self, chunk: &Chunk) -> Result<(), WriteError> {
        let candidates = self.balancer.candidates(&self.eligible());
        if candidates.is_empty() {
            self.stats.send_failures.inc("no_nodes_available");
            return Err(WriteError::Retryable("no nodes are available".into()));
        }
        let payload = self.payload(chunk);
        let chunk_id = base64::engine::general_purpose::STANDARD.encode(chunk.id.0);
        let ack = self.cfg.require_ack_response.then_some(chunk_id.as_bytes());
        let opts = Options {
            chunk: ack,
            size: Some(chunk.records as u64),
            compressed: match self.cfg.compress {
                Compress::Text => None,
                Compress::Gzip => Some("gzip"),
                Compress::Zstd => Some("zstd"),
            },
        };
        let mut head = BytesMut::with_capacity(packed_forward_header_len(
            chunk.tag.as_bytes(),
            payload.len(),
            false,
        ));
        write_array_len(&mut head, 3);
        write_str(&mut head, chunk.tag.as_bytes());
        write_bin_header(&mut head, payload.len());
        let mut tail = BytesMut::with_capacity(64);
        write_options(&mut tail, &opts);
        let parts: [&[u8]; 3] = [&head, &payload, &tail];

        let mut last = None;
        for (k, &i) in candidates.iter().enumerate() {
            let n = &self.nodes[i];
            if k > 0 {
                self.stats.failovers.inc();
            }
            let attempt = async {
                let mut c = self.checkout(n).await?;
                match c
                    .send(
                        &parts,
                        ack,
                        self.cfg.send_timeout,
                        self.cfg.ack_response_timeout,
                        &n.spec.name,
                    )
                    .await
                {
                    Ok(()) => {
                        self.checkin(n, c).await;
                        Ok(())
                    }
                    // A connection whose ack failed is never reused (fluentd#4057).
                    Err(e) => Err(e),
                }
            };
            match attempt.await {
                Ok(()) => {
                    self.stats.chunks_sent.inc();
                    self.stats.records_sent.add(chunk.records as u64);
                    self.stats.bytes_sent.add(payload.len() as u64);
                    return Ok(());
                }
                Err(e) => {
                    self.stats.send_failures.inc(e.reason());
                    tracing::warn!(plugin_id = %self.cfg.id, node = %n.spec.name, chunk = %chunk_id, error = %e, "send failed");
                    self.disable(n, e.reason());
                    last = Some(e);
                }
            }
        }
        Err(WriteError::Retryable(
            last.map(|e| e.to_string())
                .unwrap_or_else(|| "no nodes are available".into()),
        ))
    }
}
