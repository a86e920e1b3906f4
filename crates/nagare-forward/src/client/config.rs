//! out_forward settings (Fluentd's parameter names; see docs/plugins/out_forward.md).

use std::path::PathBuf;
use std::time::Duration;

/// Default `<server>` port.
pub const DEFAULT_PORT: u16 = 24224;
/// Default `<server>` weight.
pub const DEFAULT_WEIGHT: u32 = 60;
/// Default `ack_response_timeout` (Fluentd: 190 s, covering Linux SYN retries).
pub const DEFAULT_ACK_RESPONSE_TIMEOUT: Duration = Duration::from_secs(190);
/// Default `heartbeat_interval`.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Default `phi_threshold`.
pub const DEFAULT_PHI_THRESHOLD: f64 = 16.0;
/// Default `hard_timeout`.
pub const DEFAULT_HARD_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `recover_wait`.
pub const DEFAULT_RECOVER_WAIT: Duration = Duration::from_secs(10);
/// Default `send_timeout`.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `connect_timeout` (Fluentd: none; we bound it so a black-holed node cannot stall
/// a flush for the kernel's SYN retry time).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `keepalive_max_age`: recycle kept-alive connections so a scaled-out NLB target
/// group gets its share of traffic.
pub const DEFAULT_KEEPALIVE_MAX_AGE: Duration = Duration::from_secs(300);

/// One `<server>`.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// `host`: name or address (an NLB name may resolve to several addresses).
    pub host: String,
    /// `port`.
    pub port: u16,
    /// `weight`: share of chunks (0 = never used).
    pub weight: u32,
    /// `standby`: used only when regular nodes are unavailable.
    pub standby: bool,
    /// `name`: for logs and metrics (default `host:port`).
    pub name: String,
    /// `shared_key`: overrides `<security>`'s.
    pub shared_key: Option<String>,
    /// `username` / `password` for `user_auth` servers.
    pub username: String,
    pub password: String,
}

impl ServerSpec {
    pub fn new(host: &str, port: u16) -> Self {
        ServerSpec {
            host: host.into(),
            port,
            weight: DEFAULT_WEIGHT,
            standby: false,
            name: format!("{host}:{port}"),
            shared_key: None,
            username: String::new(),
            password: String::new(),
        }
    }
}

/// `heartbeat_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatType {
    /// Connect (and handshake) then close, every interval (Fluentd's default).
    Transport,
    /// A 0x00 datagram to the node's port, answered by 0x00.
    Udp,
    /// No failure detection: nodes are always considered available. Best behind an NLB,
    /// where a heartbeat only proves the load balancer is up; use `require_ack_response`.
    None,
}

/// `compress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compress {
    Text,
    Gzip,
    /// fluentd >= 1.19 `compress zstd` (experimental there).
    Zstd,
}

/// `<transport tls>` for the client side.
#[derive(Debug, Clone, Default)]
pub struct TlsClientConfig {
    /// `tls_cert_path`: PEM CA certificates to trust.
    pub ca_path: Option<PathBuf>,
    /// `tls_client_cert_path`: client certificate for mutual TLS.
    pub client_cert_path: Option<PathBuf>,
    /// `tls_client_private_key_path`.
    pub client_key_path: Option<PathBuf>,
    /// `tls_insecure_mode`: skip certificate verification (tests only).
    pub insecure: bool,
    /// `tls_verify_hostname`: check the certificate matches `host`.
    pub verify_hostname: bool,
}

/// `<security>` on the client side.
#[derive(Debug, Clone, Default)]
pub struct ClientSecurityConfig {
    pub self_hostname: String,
    pub shared_key: String,
}

/// Everything out_forward needs (the buffer is configured separately).
#[derive(Debug, Clone)]
pub struct OutForwardConfig {
    /// `@id`.
    pub id: String,
    /// `<server>` sections.
    pub servers: Vec<ServerSpec>,
    /// `require_ack_response`: wait for the receiver's ack before a chunk counts as written.
    pub require_ack_response: bool,
    /// `ack_response_timeout`: after this, the node is disabled and the chunk resent (with the
    /// same chunk id, so a deduplicating receiver drops the repeat).
    pub ack_response_timeout: Duration,
    /// `heartbeat_type`.
    pub heartbeat_type: HeartbeatType,
    /// `heartbeat_interval`.
    pub heartbeat_interval: Duration,
    /// `phi_failure_detector`.
    pub phi_failure_detector: bool,
    /// `phi_threshold`.
    pub phi_threshold: f64,
    /// `hard_timeout`: a node silent this long is detached.
    pub hard_timeout: Duration,
    /// `recover_wait`: heartbeats needed (as time) before a detached node is used again.
    pub recover_wait: Duration,
    /// `keepalive`: reuse connections across chunks.
    pub keepalive: bool,
    /// `keepalive_timeout`: close kept-alive connections idle this long (None = never).
    pub keepalive_timeout: Option<Duration>,
    /// `keepalive_max_age`: close kept-alive connections older than this (None = never).
    pub keepalive_max_age: Option<Duration>,
    /// `compress`: `gzip` sends CompressedPackedForward.
    pub compress: Compress,
    /// `compression_level` for gzip (1-9).
    pub compression_level: u32,
    /// `time_as_integer`: send integer seconds for v0.12 receivers.
    pub time_as_integer: bool,
    /// `send_timeout`: bound on writing one chunk.
    pub send_timeout: Duration,
    /// `connect_timeout`.
    pub connect_timeout: Duration,
    /// `expire_dns_cache`: re-resolve after this long (None = cache forever, 0 = every time).
    pub expire_dns_cache: Option<Duration>,
    /// `dns_round_robin`: rotate through every address a name resolves to.
    pub dns_round_robin: bool,
    /// `<security>`.
    pub security: Option<ClientSecurityConfig>,
    /// `transport tls`.
    pub tls: Option<TlsClientConfig>,
}

impl Default for OutForwardConfig {
    fn default() -> Self {
        OutForwardConfig {
            id: "out_forward".into(),
            servers: Vec::new(),
            require_ack_response: false,
            ack_response_timeout: DEFAULT_ACK_RESPONSE_TIMEOUT,
            heartbeat_type: HeartbeatType::Transport,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            phi_failure_detector: true,
            phi_threshold: DEFAULT_PHI_THRESHOLD,
            hard_timeout: DEFAULT_HARD_TIMEOUT,
            recover_wait: DEFAULT_RECOVER_WAIT,
            keepalive: false,
            keepalive_timeout: None,
            keepalive_max_age: Some(DEFAULT_KEEPALIVE_MAX_AGE),
            compress: Compress::Text,
            compression_level: 6,
            time_as_integer: false,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            expire_dns_cache: None,
            dns_round_robin: false,
            security: None,
            tls: None,
        }
    }
}
