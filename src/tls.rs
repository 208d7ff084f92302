//! `[server.tls]`: the public listener's certificate and key, read into a rustls
//! `ServerConfig` at compile time (start and every reload).
//!
//! The config lives in the snapshot, and the listener reads the current one for each
//! handshake: a rotated certificate serves new connections at once while connections
//! already open keep the session they negotiated. A certificate or key that cannot be
//! used fails the compile, so a reload keeps the old pair serving.
//!
//! The crypto provider is `ring`, named explicitly rather than taken from a process
//! default, so no other TLS user in the process can change what the listener offers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN protocols offered, in the server's order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why the certificate or key cannot be served. Each names the file and the key path.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} is not valid PEM: {message}", path.display())]
    BadPem {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error(
        "{} holds no PEM private key (expected PKCS#8, PKCS#1 or SEC1: \
         -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)",
        path.display()
    )]
    NoKey { path: PathBuf },
    #[error("the certificate and key cannot be used together: {0}")]
    Unusable(#[source] rustls::Error),
}

impl TlsError {
    /// The config key the problem belongs to, for the diagnostic.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Read { key, .. } | Self::BadPem { key, .. } => key,
            Self::NoCertificate { .. } => CERT_KEY,
            Self::NoKey { .. } => KEY_KEY,
            Self::Unusable(_) => "server.tls",
        }
    }
}

const CERT_KEY: &str = "server.tls.cert_file";
const KEY_KEY: &str = "server.tls.key_file";

/// Reads the PEM certificate chain and key (paths relative to `config_dir`) into a
/// server config offering HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(
    config_dir: &Path,
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_path = config_dir.join(cert_file);
    let key_path = config_dir.join(key_file);
    let cert_pem = read(CERT_KEY, &cert_path)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::BadPem {
            key: CERT_KEY,
            path: cert_path.clone(),
            message: error.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path });
    }

    let key_pem = read(KEY_KEY, &key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| match error {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: key_path.clone(),
        },
        other => TlsError::BadPem {
            key: KEY_KEY,
            path: key_path.clone(),
            message: other.to_string(),
        },
    })?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Unusable)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Unusable)?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}
