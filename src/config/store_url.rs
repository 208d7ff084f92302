//! A login store URL (`store = "redis://..."`), checked. The URL may carry a password:
//! only [`RedisTarget::shown`] (the password as `***`) is ever printed.

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
    #[error(
        "TLS to Redis (rediss://) is not supported yet: use redis:// on a private network or \
         loopback"
    )]
    Tls,
    #[error("scheme `{scheme}` is not a Redis URL; use redis://")]
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
    /// Parses a store URL: `redis://[user[:password]@]host[:port][/db]`. The errors
    /// never repeat the text, which may hold a password.
    pub fn parse(text: &str) -> Result<Self, RedisUrlError> {
        let url = Url::parse(text).map_err(RedisUrlError::Invalid)?;
        match url.scheme() {
            "redis" => {}
            "rediss" => return Err(RedisUrlError::Tls),
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
