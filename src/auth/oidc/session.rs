//! Browser sessions: what protects a route whose `auth` names an oidc provider.
//!
//! A successful callback starts a session: a fresh 256-bit id (new at every login, so a
//! planted id is never promoted: no fixation) goes to the browser in an `HttpOnly`,
//! `SameSite=Lax` cookie (`__Host-fluxlit-session` over https); the store keeps the
//! record under the id's SHA-256 only, sealed (AES-256-GCM, the provider's session key,
//! bound to that hash), so a dump of Redis shows neither tokens nor claims and a record
//! cannot be moved to another id. A request carrying the cookie is let in as the
//! record's user until the session ends: `session_idle_timeout` after its last use
//! (renewed at most once a minute, with a write that never re-creates a session a logout
//! deleted) or `session_max_age` after the login, whichever comes first. Logout, on any
//! replica, deletes the record.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::HeaderValue;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::OidcProvider;
use super::client::{CodeExchangeError, random_secret};
use super::seal::Purpose;
use super::store::{Slot, StoreError, hashed_key};

/// The session cookie's name when `public_base_url` is http.
pub const SESSION_COOKIE: &str = "fluxlit-session";
/// Its name when `public_base_url` is https: the browser then insists on `Secure`,
/// `Path=/` and no `Domain`, so a sibling subdomain cannot plant one.
pub const HOST_SESSION_COOKIE: &str = "__Host-fluxlit-session";
/// A session in use writes its new idle deadline at most this often (and at most a
/// quarter of the idle timeout apart, so a short timeout still slides).
const RENEW_AFTER: Duration = Duration::from_secs(60);
/// How long one replica may hold a session's refresh lock.
const REFRESH_LOCK: Duration = Duration::from_secs(10);
/// After a refresh that could not reach the IdP, the next attempt waits this long.
const REFRESH_RETRY: Duration = Duration::from_secs(30);
/// The longest session cookie value looked up (an id is 43 characters).
const MAX_ID_LEN: usize = 128;

/// What a session knows of its user, as stored (sealed). (No `Debug`: never logged.)
#[derive(Serialize, Deserialize)]
pub struct SessionRecord {
    pub sub: String,
    /// The id_token claims the provider keeps (`claims`, those of `claim_headers`, and
    /// those the routes' `allow` reads).
    pub claims: Map<String, Value>,
    /// For the IdP's logout (`id_token_hint`).
    pub id_token: Option<String>,
    /// The IdP's refresh token, when it gave one (`offline_access`).
    pub refresh_token: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds: the absolute end (`session_max_age` after the login).
    pub expires_at: u64,
    /// Unix seconds: the end if no request comes before it.
    pub idle_until: u64,
    /// Unix seconds: when `idle_until` was last written.
    pub renewed_at: u64,
    /// Unix seconds: when the IdP's tokens expire and the refresh token is used (only
    /// with a refresh token).
    #[serde(default)]
    pub refresh_at: Option<u64>,
}

impl SessionRecord {
    /// A record for a login that just finished.
    pub fn new(sub: String, claims: Map<String, Value>, settings: super::SessionSettings) -> Self {
        let now = unix_now();
        Self {
            sub,
            claims,
            id_token: None,
            refresh_token: None,
            created_at: now,
            expires_at: now.saturating_add(settings.max_age.as_secs()),
            idle_until: now.saturating_add(settings.idle_timeout.as_secs()),
            renewed_at: now,
            refresh_at: None,
        }
    }

    /// Keeps the IdP's refresh token, to be used when the tokens it came with expire.
    pub fn keep_refresh_token(&mut self, token: Option<String>, expires_in: Option<Duration>) {
        self.refresh_at = match (&token, expires_in) {
            (Some(_), Some(life)) => Some(unix_now().saturating_add(life.as_secs().max(1))),
            _ => None,
        };
        self.refresh_token = token;
    }

    fn refresh_due(&self, now: u64) -> bool {
        self.refresh_token.is_some() && self.refresh_at.is_some_and(|at| at <= now)
    }

    /// When the session ends if nothing else happens (Unix seconds).
    pub fn ends_at(&self) -> u64 {
        self.idle_until.min(self.expires_at)
    }

    /// The absolute end, as a time.
    pub fn expires(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.expires_at)
    }
}

/// Names the user and the deadlines, never a token.
impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("sub", &self.sub)
            .field("expires_at", &self.expires_at)
            .field("idle_until", &self.idle_until)
            .finish_non_exhaustive()
    }
}

/// A session found for a request.
#[derive(Debug)]
pub struct Session {
    pub record: SessionRecord,
    /// The hash the record is stored under.
    pub key: String,
}

/// How often an open WebSocket's session is looked up, to close the tunnel soon after
/// the session ends (a logout on any replica, expiry).
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Watches one session for as long as a WebSocket opened in it stays open.
#[derive(Debug, Clone)]
pub struct SessionWatch {
    provider: Arc<OidcProvider>,
    key: String,
}

impl SessionWatch {
    pub fn new(provider: Arc<OidcProvider>, key: String) -> Self {
        Self { provider, key }
    }

    /// Returns once the session has ended: deleted (a logout anywhere), past its end, or
    /// unreadable. While the store cannot be reached the session is taken to go on: an
    /// outage of Redis must not close every open app at once; it ends at the first
    /// answer that says so.
    pub async fn ended(&self) {
        let mut ticks = tokio::time::interval(WATCH_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            match self.provider.store.get(Slot::Session, &self.key).await {
                Ok(Some(bytes)) => {
                    let live = self
                        .provider
                        .open_record(&self.key, &bytes)
                        .is_some_and(|record| record.ends_at() > unix_now());
                    if !live {
                        return;
                    }
                }
                Ok(None) => return,
                Err(_) => {}
            }
        }
    }
}

impl OidcProvider {
    /// The session cookie's name for this provider's `public_base_url`.
    pub fn session_cookie_name(&self) -> &'static str {
        if self.settings.public_origin.starts_with("https:") {
            HOST_SESSION_COOKIE
        } else {
            SESSION_COOKIE
        }
    }

    /// The `Set-Cookie` that gives the browser session `id`, or clears it (`None`).
    /// `HttpOnly` (no script reads it), `SameSite=Lax` (sent on top-level navigation
    /// from elsewhere, as a link into the app expects, never on cross-site
    /// subrequests), `Path=/`, `Max-Age` = `session_max_age`; `Secure` over https.
    pub fn session_cookie(&self, id: Option<&str>) -> HeaderValue {
        let max_age = match (id, &self.settings.sessions) {
            (Some(_), Some(sessions)) => sessions.max_age.as_secs().max(1),
            _ => 0,
        };
        let mut cookie = format!(
            "{}={}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax",
            self.session_cookie_name(),
            id.unwrap_or_default(),
        );
        if self.settings.public_origin.starts_with("https:") {
            cookie.push_str("; Secure");
        }
        // The name is ASCII and an id base64url: always valid; the fallback keeps this
        // infallible.
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("x=; Max-Age=0"))
    }

    /// Stores `record` under a fresh session id: the id for the browser's cookie.
    pub async fn start_session(&self, record: &SessionRecord) -> Result<String, SessionError> {
        let id = random_secret();
        let key = hashed_key(&id);
        let sealed = self.seal_record(&key, record)?;
        let ttl = Duration::from_secs(record.ends_at().saturating_sub(unix_now()).max(1));
        match self
            .store
            .put_once(Slot::Session, &key, sealed.into_bytes(), ttl)
            .await?
        {
            true => Ok(id),
            // 256 fresh random bits already taken: not a thing that happens.
            false => Err(SessionError::Sealing),
        }
    }

    /// The session of the request's session cookie, when it has a live one. An idle
    /// deadline more than a minute old is moved on (not past the absolute end).
    pub async fn session(&self, headers: &HeaderMap) -> Result<Option<Session>, StoreError> {
        let Some(id) = self.session_id(headers) else {
            return Ok(None);
        };
        let key = hashed_key(id);
        let Some(bytes) = self.store.get(Slot::Session, &key).await? else {
            return Ok(None);
        };
        let Some(mut record) = self.open_record(&key, &bytes) else {
            return Ok(None);
        };
        let now = unix_now();
        if record.ends_at() <= now {
            return Ok(None);
        }
        if record.refresh_due(now) {
            match self.renew_tokens(&key, record).await? {
                Some(renewed) => record = renewed,
                None => return Ok(None),
            }
        }
        if let Some(sessions) = &self.settings.sessions
            && now.saturating_sub(record.renewed_at)
                >= RENEW_AFTER.min(sessions.idle_timeout / 4).as_secs()
        {
            record.idle_until = now.saturating_add(sessions.idle_timeout.as_secs());
            record.renewed_at = now;
            let ttl = Duration::from_secs(record.ends_at().saturating_sub(now).max(1));
            if let Ok(sealed) = self.seal_record(&key, &record) {
                // Gone meanwhile (a logout elsewhere): the request is the session's last.
                if !self
                    .store
                    .replace(Slot::Session, &key, sealed.into_bytes(), ttl)
                    .await?
                {
                    return Ok(None);
                }
            }
        }
        Ok(Some(Session { record, key }))
    }

    /// The IdP's tokens behind a session have expired: asks the IdP to renew them with
    /// the refresh token. A refusal (revoked, the user disabled) ends the session; a
    /// failure to ask keeps it and tries again in a while. One replica refreshes a
    /// session at a time (a lock in the store): with rotating refresh tokens, a second
    /// use of the same token would be refused and end a live session. A request that
    /// finds the lock taken goes on with the session as it is.
    async fn renew_tokens(
        &self,
        key: &str,
        record: SessionRecord,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let lock = format!("refresh-{key}");
        if !self
            .store
            .put_once(Slot::UsedState, &lock, Vec::new(), REFRESH_LOCK)
            .await?
        {
            return Ok(Some(record));
        }
        let renewed = self.renew_tokens_locked(key, record).await;
        // The lock expires by itself should this fail.
        let _ = self.store.delete(Slot::UsedState, &lock).await;
        renewed
    }

    async fn renew_tokens_locked(
        &self,
        key: &str,
        record: SessionRecord,
    ) -> Result<Option<SessionRecord>, StoreError> {
        // Another replica may have renewed it since this request read it.
        let Some(bytes) = self.store.get(Slot::Session, key).await? else {
            return Ok(None);
        };
        let Some(mut current) = self.open_record(key, &bytes) else {
            return Ok(None);
        };
        let now = unix_now();
        let (Some(discovered), Some(refresh_token)) =
            (self.discovery.current(), current.refresh_token.clone())
        else {
            return Ok(Some(record));
        };
        if !current.refresh_due(now) {
            return Ok(Some(current));
        }
        match self.refresh(&discovered, &refresh_token).await {
            Ok(tokens) => {
                if tokens.id_token.is_some() {
                    current.id_token = tokens.id_token;
                }
                let token = tokens.refresh_token.or(Some(refresh_token));
                current.keep_refresh_token(token, tokens.expires_in);
            }
            Err(CodeExchangeError::Refused { error }) => {
                tracing::info!(provider = %self.name, %error, "session ended: the identity provider refused to renew it");
                self.store.delete(Slot::Session, key).await?;
                return Ok(None);
            }
            Err(error) => {
                tracing::warn!(provider = %self.name, %error, "session tokens not renewed; trying again later");
                current.refresh_at = Some(now.saturating_add(REFRESH_RETRY.as_secs()));
            }
        }
        let ttl = Duration::from_secs(current.ends_at().saturating_sub(now).max(1));
        let Ok(sealed) = self.seal_record(key, &current) else {
            return Ok(Some(current));
        };
        let kept = self
            .store
            .replace(Slot::Session, key, sealed.into_bytes(), ttl)
            .await?;
        Ok(kept.then_some(current))
    }

    /// Ends the request's session, if it has one, for every replica. Returns the
    /// session's id_token, for the IdP's logout.
    pub async fn end_session(&self, headers: &HeaderMap) -> Result<Option<String>, StoreError> {
        let Some(id) = self.session_id(headers) else {
            return Ok(None);
        };
        let key = hashed_key(id);
        let id_token = self
            .store
            .get(Slot::Session, &key)
            .await?
            .and_then(|bytes| self.open_record(&key, &bytes))
            .and_then(|record| record.id_token);
        self.store.delete(Slot::Session, &key).await?;
        Ok(id_token)
    }

    /// Whether the request carries a session cookie at all (live or not).
    pub fn has_session_cookie(&self, headers: &HeaderMap) -> bool {
        self.session_id(headers).is_some()
    }

    fn session_id<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        crate::http::request_cookie(headers, self.session_cookie_name())
            .filter(|id| !id.is_empty() && id.len() <= MAX_ID_LEN)
    }

    fn seal_record(&self, key: &str, record: &SessionRecord) -> Result<String, SessionError> {
        let json = serde_json::to_vec(record).map_err(|_| SessionError::Sealing)?;
        self.sealer
            .seal(Purpose::SessionRecord, &self.record_context(key), &json)
            .ok_or(SessionError::Sealing)
    }

    fn open_record(&self, key: &str, bytes: &[u8]) -> Option<SessionRecord> {
        let sealed = std::str::from_utf8(bytes).ok()?;
        let json = self
            .sealer
            .open(Purpose::SessionRecord, &self.record_context(key), sealed)?;
        serde_json::from_slice(&json).ok()
    }

    /// What a record is sealed for: its provider and the hash it is stored under.
    fn record_context(&self, key: &str) -> Vec<u8> {
        format!("fluxlit session\0{}\0{key}", self.name).into_bytes()
    }
}

/// A session could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the session record could not be sealed")]
    Sealing,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}
