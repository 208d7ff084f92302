//! A login store URL (`store = "redis://..."` or `"rediss://..."`), checked, and the TLS
//! settings of a `rediss://` one. The URL may carry a password: only
//! [`RedisTarget::shown`] (the password as `***`) is ever printed.

use std::fmt;

use redis::{ErrorKind, RedisError};
use url::Url;

/// A checked `redis://` URL. The password, if any, never leaves it but to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    url: Url,
    shown: String,
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisTarget({})", self.shown)
    }
}

/// Why a store URL cannot be used. The URL may hold a password, so no variant keeps
/// any of its text, nor redis-rs's error (only its kind).
#[derive(Debug, thiserror::Error)]
pub enum RedisUrlError {
    #[error("not a valid Redis URL ({0})")]
    Invalid(#[source] url::ParseError),
    #[error("scheme `{scheme}` is not a Redis URL; use redis:// or rediss:// (TLS)")]
    Scheme { scheme: String },
    #[error("the Redis URL has no host")]
    NoHost,
    #[error("the path of a Redis URL is a database number, like /0, and nothing else")]
    NotADatabase,
    #[error("a Redis URL takes no query or fragment here")]
    QueryOrFragment,
    #[error("not a usable Redis URL ({kind})")]
    Unusable { kind: &'static str },
}

impl From<RedisError> for RedisUrlError {
    fn from(error: RedisError) -> Self {
        Self::Unusable {
            kind: error.kind_text(),
        }
    }
}

impl RedisTarget {
    /// Parses a store URL: `redis[s]://[user[:password]@]host[:port][/db]`. The errors
    /// never repeat the text, which may hold a password.
    pub fn parse(text: &str) -> Result<Self, RedisUrlError> {
        let url = Url::parse(text).map_err(RedisUrlError::Invalid)?;
        match url.scheme() {
            "redis" | "rediss" => {}
            other => {
                return Err(RedisUrlError::Scheme {
                    scheme: other.to_owned(),
                });
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(RedisUrlError::NoHost);
        }
        let db = url.path().trim_start_matches('/');
        if !db.is_empty() && db.parse::<u16>().is_err() {
            return Err(RedisUrlError::NotADatabase);
        }
        // redis-rs reads `#insecure` on a rediss:// URL as "verify nothing": refused here
        // with every other fragment and query.
        if url.query().is_some() || url.fragment().is_some() {
            return Err(RedisUrlError::QueryOrFragment);
        }
        let mut shown = url.clone();
        if shown.password().is_some() {
            // Cannot fail on a URL with a host.
            let _ = shown.set_password(Some("***"));
        }
        let target = Self {
            shown: shown.to_string(),
            url,
        };
        // What redis-rs itself would refuse (its message names no part of the URL).
        redis::Client::open(target.url.clone())?;
        Ok(target)
    }

    /// The URL with its password, if any, as `***`.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Whether the URL carries a password.
    pub fn has_password(&self) -> bool {
        self.url.password().is_some()
    }

    /// The URL itself, password included: for connecting only.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Whether the connection is TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.url.scheme() == "rediss"
    }

    /// A client for this URL; `tls` holds the CA and client certificate of a `rediss://`
    /// one (without it: the platform's roots, no client certificate).
    pub fn client(&self, tls: Option<&RedisTls>) -> Result<redis::Client, RedisUrlError> {
        let Some(tls) = tls.filter(|_| self.is_tls()) else {
            return Ok(redis::Client::open(self.url.clone())?);
        };
        let certificates = redis::TlsCertificates {
            client_tls: tls.client.as_ref().map(|client| redis::ClientTlsConfig {
                client_cert: client.cert_pem.clone(),
                client_key: client.key_pem.clone(),
            }),
            root_cert: tls.ca_pem.clone(),
        };
        Ok(redis::Client::build_with_tls(
            self.url.clone(),
            certificates,
        )?)
    }
}

/// What `store_tls` names, read: PEM bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// The CAs the server's certificate must chain to, instead of the platform's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// The client certificate to present.
    pub client: Option<RedisClientCert>,
}

/// A client certificate chain and its private key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisClientCert {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_cert", &self.client.is_some())
            .finish()
    }
}

impl fmt::Debug for RedisClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisClientCert(key redacted)")
    }
}

/// A short, fixed description of a redis-rs error kind.
trait KindText {
    fn kind_text(&self) -> &'static str;
}

impl KindText for RedisError {
    fn kind_text(&self) -> &'static str {
        match self.kind() {
            ErrorKind::InvalidClientConfig => "invalid client settings",
            ErrorKind::Io => "I/O error",
            _ => "refused by the client",
        }
    }
}
