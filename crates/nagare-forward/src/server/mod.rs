//! in_forward: the forward-protocol server.
//!
//! Listens on TCP (optionally TLS), a Unix socket, and UDP on the same port for heartbeats.
//! Each connection is served by one task (see [`conn`]): it reads, cuts frames, decodes,
//! hands events to the [`EventSink`] and writes acks only after the sink has committed them.

pub mod config;
pub mod conn;
pub mod dedupe;
pub mod stats;
pub mod tls;

pub use config::{InForwardConfig, TlsServerConfig};
pub use stats::InForwardStats;

use nagare_core::shutdown::Shutdown;
use nagare_core::EventSink;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;

/// A bound (not yet running) in_forward.
pub struct InForward {
    cfg: Arc<InForwardConfig>,
    stats: InForwardStats,
    tcp: Option<TcpListener>,
    udp: Option<UdpSocket>,
    #[cfg(unix)]
    unix: Option<tokio::net::UnixListener>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl InForward {
    /// Binds every listener the config asks for (TLS material is loaded here, so a bad
    /// certificate fails at startup, not at the first connection).
    pub async fn bind(cfg: InForwardConfig) -> io::Result<InForward> {
        let tls = cfg.tls.as_ref().map(tls::acceptor).transpose()?;
        let tcp = TcpListener::bind((cfg.bind.as_str(), cfg.port))
            .await
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("in_forward cannot bind {}:{}: {e}", cfg.bind, cfg.port),
                )
            })?;
        let addr = tcp.local_addr()?;
        let udp = match UdpSocket::bind(addr).await {
            Ok(u) => Some(u),
            Err(e) => {
                tracing::warn!(%addr, error = %e, "in_forward: UDP heartbeat port unavailable; heartbeats over UDP will not be answered");
                None
            }
        };
        #[cfg(unix)]
        let unix = match &cfg.unix_path {
            Some(p) => {
                let _ = std::fs::remove_file(p);
                let l = tokio::net::UnixListener::bind(p)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(cfg.unix_perm))?;
                Some(l)
            }
            None => None,
        };
        let stats = InForwardStats::new(&cfg.id);
        Ok(InForward {
            cfg: Arc::new(cfg),
            stats,
            tcp: Some(tcp),
            udp,
            #[cfg(unix)]
            unix,
            tls,
        })
    }

    /// The TCP address actually bound (the real port when `port` was 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn stats(&self) -> &InForwardStats {
        &self.stats
    }

    /// Serves until `shutdown` fires. Connections in progress finish the batch they are
    /// processing (emits complete and acks go out), then close.
    pub async fn run(self, sink: Arc<dyn EventSink>, shutdown: Shutdown) {
        let ctx = Arc::new(conn::Ctx::new(self.cfg.clone(), self.stats.clone(), sink));
        let limit = Arc::new(Semaphore::new(self.cfg.max_connections));
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(udp) = self.udp {
            tasks.spawn(udp_heartbeat(udp, self.stats.clone(), shutdown.clone()));
        }
        #[cfg(unix)]
        if let Some(unix) = self.unix {
            let (ctx, limit, sd) = (ctx.clone(), limit.clone(), shutdown.clone());
            tasks.spawn(async move { accept_unix(unix, ctx, limit, sd).await });
        }
        if let Some(tcp) = self.tcp {
            let (ctx, limit, sd, tls) = (
                ctx.clone(),
                limit.clone(),
                shutdown.clone(),
                self.tls.clone(),
            );
            tasks.spawn(async move { accept_tcp(tcp, tls, ctx, limit, sd).await });
        }
        while tasks.join_next().await.is_some() {}
    }
}

async fn accept_tcp(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ctx: Arc<conn::Ctx>,
    limit: Arc<Semaphore>,
    mut shutdown: Shutdown,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "in_forward: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        ctx.stats.connections_accepted.inc();
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            ctx.stats.connections_closed.inc("connection_limit");
            ctx.warn(
                "connection_limit",
                &peer.to_string(),
                "connection limit reached; closing new connection",
            );
            conn::Transport::set_linger(&stream, Some(std::time::Duration::ZERO));
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        if ctx.cfg.send_keepalive_packet {
            let _ = socket2::SockRef::from(&stream).set_keepalive(true);
        }
        let (ctx, sd, tls) = (ctx.clone(), shutdown.clone(), tls.clone());
        conns.spawn(async move {
            let _permit = permit;
            let peer = conn::Peer::ip(peer);
            match tls {
                None => conn::serve(stream, peer, ctx, sd).await,
                Some(acc) => {
                    match tokio::time::timeout(ctx.cfg.handshake_timeout, acc.accept(stream)).await
                    {
                        Ok(Ok(s)) => conn::serve(s, peer, ctx, sd).await,
                        Ok(Err(e)) => {
                            ctx.stats.connections_closed.inc("tls_handshake_failed");
                            ctx.warn("tls", &peer.name, &format!("TLS handshake failed: {e}"));
                        }
                        Err(_) => {
                            ctx.stats.connections_closed.inc("tls_handshake_timeout");
                            ctx.warn(
                                "tls_handshake_timeout",
                                &peer.name,
                                "TLS handshake timed out; closing connection",
                            );
                        }
                    }
                }
            }
        });
    }
    // Let connections finish their current batch (they watch the same shutdown signal).
    while conns.join_next().await.is_some() {}
}

#[cfg(unix)]
async fn accept_unix(
    listener: tokio::net::UnixListener,
    ctx: Arc<conn::Ctx>,
    limit: Arc<Semaphore>,
    mut shutdown: Shutdown,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        ctx.stats.connections_accepted.inc();
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            ctx.stats.connections_closed.inc("connection_limit");
            ctx.warn(
                "connection_limit",
                &conn::Peer::unix().name,
                "connection limit reached; closing new connection",
            );
            continue;
        };
        let (ctx, sd) = (ctx.clone(), shutdown.clone());
        conns.spawn(async move {
            let _permit = permit;
            conn::serve(stream, conn::Peer::unix(), ctx, sd).await
        });
    }
    while conns.join_next().await.is_some() {}
}

/// Answers every datagram with one `0x00` byte to its sender (fluentd's UDP heartbeat).
async fn udp_heartbeat(sock: UdpSocket, stats: InForwardStats, mut shutdown: Shutdown) {
    let mut buf = [0u8; 128];
    loop {
        let r = tokio::select! {
            r = sock.recv_from(&mut buf) => r,
            _ = shutdown.wait() => return,
        };
        if let Ok((_, from)) = r {
            if sock.send_to(&[0u8], from).await.is_ok() {
                stats.heartbeats_udp.inc();
            }
        }
    }
}
