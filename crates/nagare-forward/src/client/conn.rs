//! One client connection: connect (TCP, optionally TLS), the security handshake, sending a
//! message and reading its ack.

use super::config::{ClientSecurityConfig, OutForwardConfig, TlsClientConfig};
use crate::codec::encode::parse_ack;
use crate::codec::handshake::{new_salt, ClientSecurity, Helo, Pong};
use crate::codec::Framer;
use crate::server::tls::{load_certs, load_key, load_roots, provider};
use bytes::{Buf, BytesMut};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A byte stream to a node.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Largest reply frame accepted from a server (acks and PONGs are tiny).
const MAX_REPLY: usize = 64 * 1024;

/// Why a send failed; every variant is retryable on another node or later.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect to {0} failed: {1}")]
    Connect(String, String),
    #[error("handshake with {0} failed: {1}")]
    Handshake(String, String),
    #[error("write to {0} failed: {1}")]
    Write(String, String),
    #[error("no ack from {0} within {1:?}")]
    AckTimeout(String, Duration),
    #[error("connection to {0} closed before the ack")]
    AckEof(String),
    #[error("ack from {0} does not match the chunk sent")]
    AckMismatch(String),
}

impl SendError {
    pub fn reason(&self) -> &'static str {
        match self {
            SendError::Connect(..) => "connect_failed",
            SendError::Handshake(..) => "handshake_failed",
            SendError::Write(..) => "write_failed",
            SendError::AckTimeout(..) => "ack_timeout",
            SendError::AckEof(..) => "ack_eof",
            SendError::AckMismatch(..) => "ack_mismatch",
        }
    }
}

/// Builds the rustls client config once.
pub fn tls_connector(cfg: &TlsClientConfig) -> io::Result<tokio_rustls::TlsConnector> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::other(e.to_string()))?;
    let builder = if cfg.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(insecure::AcceptAny(provider())))
    } else {
        let roots =
            match &cfg.ca_path {
                Some(p) => load_roots(p)?,
                None => return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "transport tls needs tls_cert_path (the CA to trust) or tls_insecure_mode true",
                )),
            };
        if cfg.verify_hostname {
            builder.with_root_certificates(roots)
        } else {
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| io::Error::other(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(insecure::AnyName(inner)))
        }
    };
    let config = match (&cfg.client_cert_path, &cfg.client_key_path) {
        (Some(c), Some(k)) => builder
            .with_client_auth_cert(load_certs(c)?, load_key(k)?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?,
        _ => builder.with_no_client_auth(),
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

mod insecure {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use std::sync::Arc;

    /// `tls_verify_hostname false`: the chain must verify against the trusted CAs; only a
    /// certificate issued for another name is accepted.
    #[derive(Debug)]
    pub struct AnyName(pub Arc<rustls::client::WebPkiServerVerifier>);

    impl ServerCertVerifier for AnyName {
        fn verify_server_cert(
            &self,
            end: &CertificateDer<'_>,
            inter: &[CertificateDer<'_>],
            name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            match self.0.verify_server_cert(end, inter, name, ocsp, now) {
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName,
                ))
                | Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(m, c, d)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(m, c, d)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }

    /// `tls_insecure_mode true`: accept any certificate (signatures are still checked).
    #[derive(Debug)]
    pub struct AcceptAny(pub Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

/// An open connection to a node.
pub struct Conn {
    io: Box<dyn Io>,
    framer: Framer,
    rbuf: BytesMut,
    pub created: Instant,
    pub last_used: Instant,
}

/// Connects to `addr` (named `host` for TLS and logs) and runs the handshake if configured.
pub async fn connect(
    addr: SocketAddr,
    host: &str,
    name: &str,
    cfg: &OutForwardConfig,
    tls: Option<&tokio_rustls::TlsConnector>,
    security: Option<(&ClientSecurityConfig, &[u8], &str, &str)>,
) -> Result<Conn, SendError> {
    let tcp = tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| {
            SendError::Connect(
                name.into(),
                format!("timed out after {:?}", cfg.connect_timeout),
            )
        })?
        .map_err(|e| SendError::Connect(name.into(), e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = match tls {
        None => Box::new(tcp),
        Some(c) => {
            let verify = cfg.tls.as_ref().is_none_or(|t| t.verify_hostname);
            let sni = if verify { host } else { "localhost" };
            let server_name =
                rustls::pki_types::ServerName::try_from(sni.to_string()).map_err(|e| {
                    SendError::Connect(name.into(), format!("bad TLS server name {host}: {e}"))
                })?;
            let s = tokio::time::timeout(cfg.connect_timeout, c.connect(server_name, tcp))
                .await
                .map_err(|_| SendError::Handshake(name.into(), "TLS handshake timed out".into()))?
                .map_err(|e| SendError::Handshake(name.into(), format!("TLS: {e}")))?;
            Box::new(s)
        }
    };
    let mut conn = Conn {
        io,
        framer: Framer::new(),
        rbuf: BytesMut::with_capacity(1024),
        created: Instant::now(),
        last_used: Instant::now(),
    };
    if let Some((sec, key, user, pass)) = security {
        tokio::time::timeout(cfg.hard_timeout, conn.handshake(sec, key, user, pass, name))
            .await
            .map_err(|_| SendError::Handshake(name.into(), "timed out".into()))??;
    }
    Ok(conn)
}

impl Conn {
    async fn read_frame(&mut self, name: &str) -> Result<bytes::Bytes, SendError> {
        loop {
            match self.framer.next_frame(&mut self.rbuf, MAX_REPLY) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => return Err(SendError::Handshake(name.into(), e.to_string())),
            }
            let n = self
                .io
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|e| SendError::Write(name.into(), e.to_string()))?;
            if n == 0 {
                return Err(SendError::AckEof(name.into()));
            }
        }
    }

    async fn handshake(
        &mut self,
        sec: &ClientSecurityConfig,
        key: &[u8],
        user: &str,
        pass: &str,
        name: &str,
    ) -> Result<(), SendError> {
        let hs = |e: String| SendError::Handshake(name.into(), e);
        let helo = Helo::decode(&self.read_frame(name).await?).map_err(|e| hs(e.to_string()))?;
        let client = ClientSecurity {
            self_hostname: sec.self_hostname.clone(),
            shared_key: key.to_vec(),
            username: user.into(),
            password: pass.into(),
        };
        let salt = new_salt();
        let mut out = BytesMut::new();
        client.ping(&helo, &salt).encode(&mut out);
        self.io
            .write_all(&out)
            .await
            .map_err(|e| hs(e.to_string()))?;
        let pong = Pong::decode(&self.read_frame(name).await?).map_err(|e| hs(e.to_string()))?;
        client
            .verify_pong(&pong, &helo, &salt)
            .map_err(|e| hs(e.to_string()))
    }

    /// Writes `parts` and, when `ack` is set, waits for `{"ack": ack}`.
    pub async fn send(
        &mut self,
        parts: &[&[u8]],
        ack: Option<&[u8]>,
        send_timeout: Duration,
        ack_timeout: Duration,
        name: &str,
    ) -> Result<(), SendError> {
        let write = async {
            for p in parts {
                let mut b: &[u8] = p;
                while b.has_remaining() {
                    let n = self.io.write(b).await?;
                    if n == 0 {
                        return Err(io::Error::from(io::ErrorKind::WriteZero));
                    }
                    b.advance(n);
                }
            }
            self.io.flush().await
        };
        tokio::time::timeout(send_timeout, write)
            .await
            .map_err(|_| {
                SendError::Write(name.into(), format!("timed out after {send_timeout:?}"))
            })?
            .map_err(|e| SendError::Write(name.into(), e.to_string()))?;
        self.last_used = Instant::now();
        let Some(want) = ack else { return Ok(()) };
        let frame = tokio::time::timeout(ack_timeout, self.read_frame(name))
            .await
            .map_err(|_| SendError::AckTimeout(name.into(), ack_timeout))??;
        match parse_ack(&frame) {
            Some(got) if got == want => Ok(()),
            _ => Err(SendError::AckMismatch(name.into())),
        }
    }

    /// A kept-alive connection is reusable only if nothing arrived on it while idle (EOF,
    /// RST or a stray ack mean it is stale: fluentd#4057).
    pub async fn is_clean(&mut self) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        let mut one = [0u8; 1];
        // A zero timeout polls the read exactly once.
        tokio::time::timeout(Duration::ZERO, self.io.read(&mut one))
            .await
            .is_err()
    }

    /// Closes cleanly.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
    }
}
