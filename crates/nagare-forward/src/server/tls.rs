//! `<transport tls>` for in_forward (rustls; optional client-certificate verification).

use super::config::TlsServerConfig;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use std::io;
use std::sync::Arc;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Reads a PEM certificate chain.
pub fn load_certs(path: &std::path::Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| {
            invalid(format!(
                "cannot read certificates from {}: {e}",
                path.display()
            ))
        })?
        .collect();
    let certs =
        certs.map_err(|e| invalid(format!("bad certificate in {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "no certificate found in {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads a PEM private key.
pub fn load_key(path: &std::path::Path) -> io::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        invalid(format!(
            "cannot read private key from {}: {e}",
            path.display()
        ))
    })
}

/// A root store from a PEM CA bundle.
pub fn load_roots(path: &std::path::Path) -> io::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(path)? {
        roots
            .add(c)
            .map_err(|e| invalid(format!("bad CA certificate in {}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// The rustls crypto provider every TLS config in Nagare uses (aws-lc-rs, the one the AWS SDK
/// uses too: one TLS stack).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the acceptor.
pub fn acceptor(cfg: &TlsServerConfig) -> io::Result<tokio_rustls::TlsAcceptor> {
    let certs = load_certs(&cfg.cert_path)?;
    let key = load_key(&cfg.private_key_path)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?;
    let builder = if cfg.client_cert_auth {
        let ca = cfg
            .ca_path
            .as_ref()
            .ok_or_else(|| invalid("client_cert_auth needs ca_path".into()))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(load_roots(ca)?),
            provider(),
        )
        .build()
        .map_err(|e| invalid(format!("client verifier: {e}")))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| invalid(format!("certificate and key do not match: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
