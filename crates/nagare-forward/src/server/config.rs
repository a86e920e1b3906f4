//! in_forward settings (Fluentd's parameter names; see docs/plugins/in_forward.md).

use crate::codec::handshake::ServerSecurity;
use crate::codec::DecodeLimits;
use std::path::PathBuf;
use std::time::Duration;

/// Default TCP/UDP port.
pub const DEFAULT_PORT: u16 = 24224;
/// Default bind address.
pub const DEFAULT_BIND: &str = "0.0.0.0";
/// Default cap on simultaneous connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default time a half-received frame may wait for its next byte.
pub const DEFAULT_PARTIAL_FRAME_TIMEOUT: Duration = Duration::from_secs(60);
/// Default cap on the read buffers of all connections together, past each one's first
/// [`READ_BUFFER_FREE`] bytes (`read_buffer_total_limit`).
pub const DEFAULT_READ_BUFFER_TOTAL_LIMIT: usize = 256 * 1024 * 1024;
/// What a connection's read buffer may hold without drawing on the shared limit: small
/// messages (the Docker driver's) never wait for it.
pub const READ_BUFFER_FREE: usize = 64 * 1024;
/// Default time for a peer to finish the security handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// TLS for `<transport tls>`.
#[derive(Debug, Clone)]
pub struct TlsServerConfig {
    /// PEM certificate chain.
    pub cert_path: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1; unencrypted).
    pub private_key_path: PathBuf,
    /// PEM CA bundle used to verify client certificates when `client_cert_auth` is true.
    pub ca_path: Option<PathBuf>,
    /// Require and verify a client certificate (mutual TLS).
    pub client_cert_auth: bool,
}

/// Everything in_forward needs.
#[derive(Debug, Clone)]
pub struct InForwardConfig {
    /// `@id`: names the plugin in metrics and logs.
    pub id: String,
    /// `bind`: address for TCP and the UDP heartbeat.
    pub bind: String,
    /// `port`: TCP and UDP port (0 picks a free port; tests use it).
    pub port: u16,
    /// `unix_path`: also (or instead, with `port` unset) listen on a Unix socket (FireLens).
    pub unix_path: Option<PathBuf>,
    /// `unix_perm`: permissions of the Unix socket file.
    pub unix_perm: u32,
    /// Decoding limits: `chunk_size_limit`, `decompression_size_limit`, `skip_invalid_event`.
    pub limits: DecodeLimits,
    /// `chunk_size_warn_limit`: log (rate-limited) and count messages above this size.
    pub chunk_size_warn_limit: Option<usize>,
    /// `tag`: replace every incoming tag.
    pub tag: Option<String>,
    /// `add_tag_prefix`: prefix every incoming tag with `PREFIX.`.
    pub add_tag_prefix: Option<String>,
    /// `source_address_key`: add the peer's IP address to every record under this key.
    pub source_address_key: Option<String>,
    /// `source_hostname_key`: add the peer's host name (reverse DNS once per connection, at
    /// most 2 s; the IP when there is no name).
    pub source_hostname_key: Option<String>,
    /// `deny_keepalive`: close each connection after its first message (and its ack).
    pub deny_keepalive: bool,
    /// `send_keepalive_packet`: SO_KEEPALIVE on accepted sockets.
    pub send_keepalive_packet: bool,
    /// `linger_timeout`: SO_LINGER on close; 0 sends RST instead of leaving TIME_WAIT.
    pub linger_timeout: Option<Duration>,
    /// `max_connections`: connections beyond this are closed at once and counted.
    pub max_connections: usize,
    /// `partial_frame_timeout`: a connection holding an incomplete frame that receives nothing
    /// for this long is closed. Idle connections between messages are never closed: Docker
    /// keeps one connection per container for its whole life.
    pub partial_frame_timeout: Duration,
    /// `read_buffer_total_limit` (Nagare): the read buffers of all connections together, past
    /// each one's first 64 KiB. A connection whose message in progress needs more than is
    /// left is closed at once without ack (`memory_limit`; the client resends later): no
    /// connection waits while holding room, so none can block another. Caps what many large
    /// partial messages can hold: `max_connections` x `chunk_size_limit` alone is 128 GiB by
    /// default. At least `chunk_size_limit`.
    pub read_buffer_total_limit: usize,
    /// `<security>`: the HELO/PING/PONG handshake.
    pub security: Option<ServerSecurity>,
    /// `handshake_timeout`: time for a peer to send its PING.
    pub handshake_timeout: Duration,
    /// `<transport tls>`.
    pub tls: Option<TlsServerConfig>,
    /// `dedupe_resends`: ack a resent message (same `chunk`, same payload) that was already
    /// committed again without storing it twice. Nagare only; see `server::dedupe`.
    pub dedupe_resends: bool,
    /// `dedupe_window`: how long committed (chunk, digest) pairs are remembered.
    pub dedupe_window: Duration,
    /// `dedupe_max_entries`: how many pairs are remembered at most (about 48 bytes each).
    pub dedupe_max_entries: usize,
}

impl Default for InForwardConfig {
    fn default() -> Self {
        InForwardConfig {
            id: "in_forward".into(),
            bind: DEFAULT_BIND.into(),
            port: DEFAULT_PORT,
            unix_path: None,
            unix_perm: 0o644,
            limits: DecodeLimits::default(),
            chunk_size_warn_limit: None,
            tag: None,
            add_tag_prefix: None,
            source_address_key: None,
            source_hostname_key: None,
            deny_keepalive: false,
            send_keepalive_packet: false,
            linger_timeout: Some(Duration::ZERO),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            partial_frame_timeout: DEFAULT_PARTIAL_FRAME_TIMEOUT,
            read_buffer_total_limit: DEFAULT_READ_BUFFER_TOTAL_LIMIT,
            security: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            tls: None,
            dedupe_resends: true,
            dedupe_window: super::dedupe::DEFAULT_WINDOW,
            dedupe_max_entries: super::dedupe::DEFAULT_MAX_ENTRIES,
        }
    }
}
