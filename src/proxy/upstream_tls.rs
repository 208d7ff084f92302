//! TLS to an https upstream: the rustls client config compile makes from the upstream's
//! settings (the CAs to trust, the name to verify and send as SNI, a client certificate
//! for mTLS), and the handshake the pool and the health probe run over a new TCP
//! connection.
//!
//! The certificate is always verified: there is no switch to turn that off. Without a
//! `ca_file` the platform's roots are trusted (`rustls-native-certs`, which honours
//! `SSL_CERT_FILE` as OpenSSL-based clients do). Only HTTP/1.1 is offered by ALPN: the
//! pool speaks it, and WebSocket upgrades need it. The crypto provider is `ring`, named
//! explicitly as the listener's is.

use std::fmt;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// What an https upstream's TLS is made from, read: PEM bytes and a name.
#[derive(Debug)]
pub struct UpstreamTlsSettings<'a> {
    /// The name the certificate must be valid for, also sent as SNI.
    pub server_name: &'a str,
    /// The CAs to trust instead of the platform's roots (`ca_file`).
    pub ca_pem: Option<&'a [u8]>,
    /// The client certificate chain and its key (`client_cert`, `client_key`).
    pub client: Option<(&'a [u8], &'a [u8])>,
}

/// Why an upstream's TLS settings cannot be used. Each names the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("{0:?} is not a DNS name or IP address a certificate can name")]
    ServerName(String),
    #[error("holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { key: &'static str },
    #[error("is not valid PEM: {message}")]
    BadPem { key: &'static str, message: String },
    #[error("holds no PEM private key (expected PKCS#8, PKCS#1 or SEC1)")]
    NoKey,
    #[error(
        "no root certificates could be loaded from the platform ({0}); install the \
         ca-certificates package, set SSL_CERT_FILE, or give the upstream a ca_file"
    )]
    NoPlatformRoots(String),
    #[error("the certificates cannot be used: {0}")]
    Unusable(#[source] rustls::Error),
}

impl UpstreamTlsError {
    /// The upstream's key the problem belongs to (`ca_file`, `client_cert`, ...).
    pub fn key(&self) -> &'static str {
        match self {
            Self::ServerName(_) => "tls_server_name",
            Self::NoCertificate { key } | Self::BadPem { key, .. } => key,
            Self::NoKey => "client_key",
            Self::NoPlatformRoots(_) => "url",
            Self::Unusable(_) => "client_cert",
        }
    }
}

/// How the gateway speaks TLS to one upstream. Cheap to clone.
#[derive(Clone)]
pub struct UpstreamTls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    /// A hash of everything it was made from: two are equal when they trust the same
    /// CAs, verify the same name and present the same certificate, so a reload that
    /// changes a file's contents (a rotated CA) gets a new pool, and one that changes
    /// nothing keeps the warm one.
    fingerprint: [u8; 32],
}

impl UpstreamTls {
    pub fn new(settings: &UpstreamTlsSettings<'_>) -> Result<Self, UpstreamTlsError> {
        let server_name = ServerName::try_from(settings.server_name.to_owned())
            .map_err(|_| UpstreamTlsError::ServerName(settings.server_name.to_owned()))?;
        let mut fingerprint = Sha256::new();
        fingerprint.update(settings.server_name.as_bytes());
        let mut roots = RootCertStore::empty();
        match settings.ca_pem {
            Some(pem) => {
                fingerprint.update(b"\0ca\0");
                fingerprint.update(pem);
                for certificate in certificates("ca_file", pem)? {
                    roots.add(certificate).map_err(UpstreamTlsError::Unusable)?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _ignored) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found
                        .errors
                        .first()
                        .map_or_else(|| "none found".to_owned(), ToString::to_string);
                    return Err(UpstreamTlsError::NoPlatformRoots(why));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(UpstreamTlsError::Unusable)?
            .with_root_certificates(roots);
        let mut config = match settings.client {
            Some((cert_pem, key_pem)) => {
                fingerprint.update(b"\0client\0");
                fingerprint.update(cert_pem);
                fingerprint.update(key_pem);
                let chain = certificates("client_cert", cert_pem)?;
                let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|error| match error {
                    rustls_pki_types::pem::Error::NoItemsFound => UpstreamTlsError::NoKey,
                    other => UpstreamTlsError::BadPem {
                        key: "client_key",
                        message: other.to_string(),
                    },
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(UpstreamTlsError::Unusable)?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            fingerprint: fingerprint.finalize().into(),
        })
    }

    /// The TLS handshake over `stream`: the certificate verified, SNI sent.
    pub async fn connect(&self, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.connector
            .connect(self.server_name.clone(), stream)
            .await
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for UpstreamTls {}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// The certificates of PEM text: at least one, and nothing unreadable.
fn certificates(
    key: &'static str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, UpstreamTlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| UpstreamTlsError::BadPem {
            key,
            message: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(UpstreamTlsError::NoCertificate { key });
    }
    Ok(certificates)
}
