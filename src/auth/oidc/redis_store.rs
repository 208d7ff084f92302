//! The Redis store: login states and auth codes shared by gateway replicas.
//!
//! - Keys are `fluxlit:oidc:<provider>:<used|code|session>:<sha256 hex>` (the caller
//!   hashes the state, code or session id), so one Redis can serve several providers
//!   and other programs.
//! - `put_once` is `SET key value PX ttl NX`: stored unless the key exists, with its
//!   time to live. `take` is `GETDEL key` (Redis 6.2 or newer): read and deleted in one
//!   step on the server, so of two replicas redeeming one code, one gets it. Sessions
//!   are read with `GET`, renewed with `SET ... PX ttl XX` (never re-creating one a
//!   logout deleted) and ended with `DEL`.
//! - One multiplexed connection ([`ConnectionManager`]), opened at the first request
//!   (compiling a config never waits on the network) and re-opened by itself after an
//!   outage or a refused password. Every call is bounded by [`CALL_TIMEOUT`]: a Redis
//!   that is down or hangs makes the login answer 503 within it, not hang. Tokens
//!   already minted do not touch the store and keep working.
//!
//! The URL may carry a password: it is kept only to connect. `Debug`, logs, errors and
//! `/snapshot` show [`RedisTarget::shown`], where the password is `***`.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Value};

use super::store::{Slot, Store, StoreError, StoreStatus};
pub use crate::config::store_url::{RedisTarget, RedisTls, RedisUrlError};

/// The longest one Redis call (connecting included) may take before the login answers
/// 503.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(1500);
/// Each connection attempt gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A command on an open connection gives up after this.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Attempts after the first when a connection is (re)opened; the next request starts
/// a new round when they all fail, so a Redis that comes back is used again.
const CONNECT_RETRIES: usize = 1;

/// Login states and auth codes in Redis, shared by every gateway using the same URL.
pub struct RedisStore {
    target: RedisTarget,
    /// `fluxlit:oidc:<provider>:`.
    prefix: String,
    client: redis::Client,
    connection: Mutex<Option<ConnectionManager>>,
    /// Why the last call failed, until one succeeds (for `/snapshot`).
    last_error: Mutex<Option<String>>,
    /// Whether the last call failed: outages are logged when they start and end, not once
    /// per request.
    failing: AtomicBool,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.target.shown())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for `provider`'s entries at `target` (over TLS with `tls` for a
    /// `rediss://` one). Nothing is connected until the first request.
    pub fn new(
        provider: &str,
        target: RedisTarget,
        tls: Option<&RedisTls>,
    ) -> Result<Self, RedisUrlError> {
        let client = target.client(tls)?;
        Ok(Self {
            prefix: key_prefix(provider),
            target,
            client,
            connection: Mutex::new(None),
            last_error: Mutex::new(None),
            failing: AtomicBool::new(false),
        })
    }

    pub fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// The key of an entry: `<prefix><slot>:<hashed key>`.
    pub fn key(&self, slot: Slot, key: &str) -> String {
        format!("{}{}:{key}", self.prefix, slot.prefix())
    }

    /// The connection manager, made at the first call (it needs the runtime). It opens
    /// its connection on first use and again after I/O errors, by itself.
    fn connection(&self) -> Result<ConnectionManager, RedisError> {
        let mut slot = self
            .connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(CONNECT_RETRIES)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(self.client.clone(), config)?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Drops the connection manager: the next call makes a new one. For failures the
    /// manager does not recover from by itself (a refused password stays refused until
    /// it reconnects, which it does only after I/O errors).
    fn forget_connection(&self) {
        *self
            .connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }

    /// Runs one command within [`CALL_TIMEOUT`]; failures become
    /// [`StoreError::Unavailable`], with the details logged and kept for `/snapshot`.
    async fn call(&self, command: &redis::Cmd, name: &str) -> Result<Value, StoreError> {
        let result = tokio::time::timeout(CALL_TIMEOUT, async {
            let mut connection = self.connection()?;
            connection.send_packed_command(command).await
        })
        .await;
        let error = match result {
            Ok(Ok(Value::ServerError(error))) => RedisError::from(error),
            Ok(Ok(value)) => {
                self.succeeded();
                return Ok(value);
            }
            Ok(Err(error)) => error,
            Err(_) => {
                let failure = Failure {
                    page: "Redis did not answer in time",
                    detail: format!("no answer within {CALL_TIMEOUT:?}"),
                };
                return Err(self.failed(name, failure));
            }
        };
        let failure = Failure::from(&error);
        if failure.page == CREDENTIALS_REFUSED {
            self.forget_connection();
        }
        Err(self.failed(name, failure))
    }

    fn succeeded(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(store = %self.target.shown(), "the Redis login store answers again");
        }
        let mut last_error = self
            .last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *last_error = None;
    }

    fn failed(&self, command: &str, failure: Failure) -> StoreError {
        let detail = format!("{command}: {}", failure.detail);
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                store = %self.target.shown(),
                error = %detail,
                "the Redis login store fails: logins answer 503 until it is back",
            );
        }
        *self
            .last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(detail);
        StoreError::Unavailable(failure.page.to_owned())
    }
}

/// What a failed call shows on the login page (fixed text) and in logs and `/snapshot`.
struct Failure {
    page: &'static str,
    detail: String,
}

const CREDENTIALS_REFUSED: &str = "Redis refused the gateway's credentials";

impl From<&RedisError> for Failure {
    fn from(error: &RedisError) -> Self {
        let mut detail = error.to_string();
        let page = match (error.kind(), error.code()) {
            (ErrorKind::Io, _) => "Redis cannot be reached",
            (ErrorKind::AuthenticationFailed, _) | (_, Some("NOAUTH" | "WRONGPASS")) => {
                CREDENTIALS_REFUSED
            }
            (_, Some("ERR")) if detail.contains("unknown command") => {
                detail.push_str(" (GETDEL needs Redis 6.2 or newer)");
                "Redis refused a command"
            }
            _ => "Redis refused a command",
        };
        Self { page, detail }
    }
}

/// `fluxlit:oidc:<provider>:`, the namespace of one provider's entries.
impl RedisStore {
    /// `SET key value PX ttl <condition>` (`NX`: only a new key, `XX`: only an existing
    /// one): whether it was written.
    async fn set(
        &self,
        slot: Slot,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
        condition: &'static str,
    ) -> Result<bool, StoreError> {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut command = redis::cmd("SET");
        command
            .arg(self.key(slot, key))
            .arg(value)
            .arg("PX")
            .arg(millis)
            .arg(condition);
        match self.call(&command, "SET").await? {
            Value::Okay => Ok(true),
            Value::Nil => Ok(false),
            _ => Err(self.unexpected("SET", "SET answered neither OK nor nil")),
        }
    }

    /// `GET` or `GETDEL` of an entry: its value, or `None`.
    async fn read(
        &self,
        slot: Slot,
        key: &str,
        name: &'static str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut command = redis::cmd(name);
        command.arg(self.key(slot, key));
        match self.call(&command, name).await? {
            Value::Nil => Ok(None),
            Value::BulkString(bytes) => Ok(Some(bytes)),
            _ => Err(self.unexpected(name, "answered neither a value nor nil")),
        }
    }

    /// An answer no command of ours expects, as a failure.
    fn unexpected(&self, name: &str, detail: &str) -> StoreError {
        self.failed(
            name,
            Failure {
                page: "Redis answered something unexpected",
                detail: detail.to_owned(),
            },
        )
    }
}

pub fn key_prefix(provider: &str) -> String {
    format!("fluxlit:oidc:{provider}:")
}

impl Store for RedisStore {
    fn put_once<'a>(
        &'a self,
        slot: Slot,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.set(slot, key, value, ttl, "NX"))
    }

    fn take<'a>(
        &'a self,
        slot: Slot,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(self.read(slot, key, "GETDEL"))
    }

    fn get<'a>(
        &'a self,
        slot: Slot,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(self.read(slot, key, "GET"))
    }

    fn replace<'a>(
        &'a self,
        slot: Slot,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        // XX: only an existing key; a session a logout deleted stays deleted.
        Box::pin(self.set(slot, key, value, ttl, "XX"))
    }

    fn delete<'a>(&'a self, slot: Slot, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut command = redis::cmd("DEL");
            command.arg(self.key(slot, key));
            match self.call(&command, "DEL").await? {
                Value::Int(_) => Ok(()),
                _ => Err(self.unexpected("DEL", "DEL answered no count")),
            }
        })
    }

    fn status(&self) -> StoreStatus {
        StoreStatus {
            kind: "redis",
            url: Some(self.target.shown().to_owned()),
            key_prefix: Some(self.prefix.clone()),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
            ..StoreStatus::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_without_repeating_them() {
        let target = RedisTarget::parse("redis://127.0.0.1:6379/0").unwrap();
        assert_eq!(target.shown(), "redis://127.0.0.1:6379/0");
        assert!(!target.has_password());
        assert!(RedisTarget::parse("redis://cache.internal").is_ok());
        assert!(RedisTarget::parse("redis://[::1]:6380/3").is_ok());
        assert!(RedisTarget::parse("rediss://cache.example.com:6380/0").is_ok_and(|t| t.is_tls()));

        for (text, expected) in [
            ("redis://:pw-in-url@", "not a valid Redis URL"),
            (
                "rediss://:pw-in-url@cache:6380/0#insecure",
                "no query or fragment",
            ),
            ("http://:pw-in-url@cache/", "scheme `http`"),
            ("redis://:pw-in-url@cache/zero", "database number"),
            ("redis://:pw-in-url@cache/0/1", "database number"),
            ("redis://:pw-in-url@cache/0?protocol=resp3", "no query"),
            ("redis://:pw-in-url@0.0.0.0/0", "not a usable Redis URL"),
            ("redis:pw-in-url", "no host"),
        ] {
            let error = RedisTarget::parse(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(!error.contains("pw-in-url"), "{text}: {error}");
        }
    }

    #[test]
    fn passwords_are_never_shown() {
        let target = RedisTarget::parse("redis://fluxlit:s3cret-pw@cache:6379/2").unwrap();
        assert!(target.has_password());
        assert_eq!(target.shown(), "redis://fluxlit:***@cache:6379/2");
        let store = RedisStore::new("corp", target.clone(), None).unwrap();
        for shown in [
            format!("{target:?}"),
            format!("{store:?}"),
            serde_json::to_string(&store.status()).unwrap(),
        ] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("cache:6379"), "{shown}");
        }
    }

    #[test]
    fn keys_are_namespaced_by_provider_and_slot() {
        let target = RedisTarget::parse("redis://127.0.0.1/0").unwrap();
        let store = RedisStore::new("corp", target, None).unwrap();
        assert_eq!(
            store.key(Slot::UsedState, "ab12"),
            "fluxlit:oidc:corp:used:ab12"
        );
        assert_eq!(
            store.key(Slot::AuthCode, "ab12"),
            "fluxlit:oidc:corp:code:ab12"
        );
    }

    #[tokio::test]
    async fn a_redis_that_is_not_there_makes_calls_fail_promptly_and_says_so() {
        // A port nobody listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target = RedisTarget::parse(&format!("redis://127.0.0.1:{port}/0")).unwrap();
        let store = RedisStore::new("corp", target, None).unwrap();
        let ttl = Duration::from_secs(60);
        // Hang guard only: the call is bounded by CALL_TIMEOUT.
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            store.put_once(Slot::UsedState, "k", b"v".to_vec(), ttl),
        )
        .await
        .expect("the call is bounded");
        let Err(StoreError::Unavailable(message)) = result else {
            panic!("expected Unavailable, got {result:?}");
        };
        assert!(message.contains("Redis"), "{message}");
        let status = store.status();
        assert_eq!(status.kind, "redis");
        assert!(status.last_error.is_some(), "{status:?}");
        let taken = tokio::time::timeout(Duration::from_secs(10), store.take(Slot::AuthCode, "k"))
            .await
            .expect("the call is bounded");
        assert!(
            matches!(taken, Err(StoreError::Unavailable(_))),
            "{taken:?}"
        );
    }
}
