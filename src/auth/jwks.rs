//! A provider's public signing keys (a JWKS), fetched in the background and cached.
//!
//! - A reload never waits on the network: the first fetch runs in the background, and
//!   until it succeeds the provider's routes answer 503, not 401.
//! - Keys are refreshed on a TTL (the response's `Cache-Control: max-age`, bounded).
//! - A token naming an unknown `kid` triggers a refetch: single-flight (concurrent
//!   requests share one fetch) and rate-limited (at most one per `refetch_interval`,
//!   however many made-up kids arrive).
//! - Stale-if-error: while the endpoint fails, the last good keys stay in use for
//!   `max_stale` past their refresh time.
//! - The cache belongs to the provider, not the snapshot: a reload that leaves the
//!   provider's key settings alone keeps it (and its keys).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Serialize;

use crate::auth::background::{Refresher, lock};
use crate::auth::fetch::{FetchError, fetch_document};

/// The shortest and longest key lifetime a `Cache-Control: max-age` can ask for.
const MIN_TTL: Duration = Duration::from_secs(30);
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// A JWKS larger than this is refused.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    Url(String),
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksSettings {
    /// Key lifetime when the response does not say.
    pub ttl: Duration,
    pub refetch_interval: Duration,
    pub max_stale: Duration,
}

/// Why no key could be found for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The token names a key the JWKS does not have (401).
    UnknownKey(String),
    /// No usable keys at all: not fetched yet, or expired while the endpoint fails (503).
    Unavailable(String),
}

/// Why a JWKS document holds nothing the gateway can verify with.
#[derive(Debug, thiserror::Error)]
pub enum JwksDocumentError {
    #[error("the JWKS is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("the JWKS has no \"keys\" array")]
    NoKeysArray,
    #[error("the JWKS has no usable signing keys")]
    NoUsableKeys,
}

/// Why the keys could not be loaded. Each names the file or the URL.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot read JWKS file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    BadFile {
        path: PathBuf,
        #[source]
        source: JwksDocumentError,
    },
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("GET {url}: {source}")]
    BadDocument {
        url: String,
        #[source]
        source: JwksDocumentError,
    },
}

/// One verification key from the JWKS.
#[derive(Debug)]
struct VerifyingKey {
    kid: Option<String>,
    /// The `alg` the JWK pins, if it does.
    alg: Option<Algorithm>,
    /// The algorithms this kind of key can verify.
    family: KeyFamily,
    key: DecodingKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFamily {
    Rsa,
    Ec,
    Ed,
}

impl KeyFamily {
    fn verifies(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Self::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Self::Ec => matches!(alg, ES256 | ES384),
            Self::Ed => alg == EdDSA,
        }
    }
}

/// The keys of one successful fetch.
#[derive(Debug)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
    fetched_at: Instant,
    refresh_at: Instant,
    /// The cache's fetch count when this set was installed: a token verified with a key
    /// of an older set must be verified again.
    generation: u64,
}

impl KeySet {
    /// The index of the key that verifies a token with this `kid` and `alg`.
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<usize, KeyError> {
        let fits = |(_, key): &(usize, &VerifyingKey)| {
            key.family.verifies(alg) && key.alg.is_none_or(|a| a == alg)
        };
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .enumerate()
                .filter(fits)
                .find(|(_, key)| key.kid.as_deref() == Some(kid))
                .map(|(index, _)| index)
                .ok_or_else(|| KeyError::UnknownKey(format!("no {alg:?} key with this kid"))),
            None => {
                let mut candidates = self.keys.iter().enumerate().filter(fits);
                match (candidates.next(), candidates.next()) {
                    (Some((only, _)), None) => Ok(only),
                    (None, _) => Err(KeyError::UnknownKey(format!("no {alg:?} key"))),
                    (Some(_), Some(_)) => Err(KeyError::UnknownKey(
                        "the token has no kid and several keys could have signed it".to_owned(),
                    )),
                }
            }
        }
    }
}

/// A key found for a token, kept alive with its set.
#[derive(Debug)]
pub struct FoundKey {
    set: Arc<KeySet>,
    index: usize,
}

impl FoundKey {
    pub fn key(&self) -> Option<&DecodingKey> {
        self.set.keys.get(self.index).map(|key| &key.key)
    }

    /// The generation of the key set the key belongs to.
    pub fn generation(&self) -> u64 {
        self.set.generation
    }
}

/// What `/snapshot` shows about a cache.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JwksStatus {
    pub keys: usize,
    pub fetches: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug)]
pub struct JwksCache {
    provider: Arc<str>,
    source: JwksSource,
    settings: JwksSettings,
    keys: ArcSwapOption<KeySet>,
    /// Successful fetches so far: lets a request that waited for a fetch see it happened.
    generation: AtomicU64,
    /// Held while fetching: the single flight.
    fetch_lock: tokio::sync::Mutex<()>,
    last_attempt: Mutex<Option<Instant>>,
    status: Mutex<JwksStatus>,
    refresher: Refresher,
}

impl JwksCache {
    pub fn new(provider: &str, source: JwksSource, settings: JwksSettings) -> Arc<Self> {
        Arc::new(Self {
            provider: provider.into(),
            source,
            settings,
            keys: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            fetch_lock: tokio::sync::Mutex::new(()),
            last_attempt: Mutex::new(None),
            status: Mutex::new(JwksStatus::default()),
            refresher: Refresher::default(),
        })
    }

    /// Whether this cache serves `source` with `settings` (so a reload can keep it).
    pub fn serves(&self, source: &JwksSource, settings: &JwksSettings) -> bool {
        &self.source == source && &self.settings == settings
    }

    /// Serves `keys`, read from the `jwks_file` by compile, from now on.
    pub fn install_file_keys(&self, keys: FileKeys) {
        self.install(keys.0, self.settings.ttl);
    }

    /// Starts the background refresh on the current tokio runtime (once).
    /// Without a runtime (a command that only validates) requests fetch on demand.
    pub fn start(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        self.refresher.start_once(|| refresh_loop(this));
    }

    pub fn status(&self) -> JwksStatus {
        let mut status = lock(&self.status).clone();
        status.keys = self.keys.load().as_ref().map_or(0, |set| set.keys.len());
        status
    }

    /// The key that verifies a token with this `kid` and `alg`, refetching the JWKS once
    /// (single-flight, rate-limited) when the kid is unknown.
    pub async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<FoundKey, KeyError> {
        let seen = self.generation.load(Ordering::Acquire);
        let lookup = self.lookup(kid, alg);
        match lookup {
            Ok(found) => Ok(found),
            Err(KeyError::Unavailable(_)) | Err(KeyError::UnknownKey(_)) => {
                if self.refetch(seen).await {
                    self.lookup(kid, alg)
                } else {
                    lookup
                }
            }
        }
    }

    /// The generation of the key set in use, while one is loaded and not too stale to
    /// use (the same rule a key lookup applies).
    pub fn usable_generation(&self) -> Option<u64> {
        let set = self.keys.load();
        let set = set.as_ref()?;
        (Instant::now() <= set.refresh_at + self.settings.max_stale).then_some(set.generation)
    }

    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Result<FoundKey, KeyError> {
        let Some(set) = self.keys.load_full() else {
            return Err(KeyError::Unavailable(format!(
                "the signing keys of provider {:?} have not been loaded yet",
                self.provider
            )));
        };
        if Instant::now() > set.refresh_at + self.settings.max_stale {
            return Err(KeyError::Unavailable(format!(
                "the signing keys of provider {:?} expired and cannot be refreshed",
                self.provider
            )));
        }
        let index = set.find(kid, alg)?;
        Ok(FoundKey { set, index })
    }

    /// Fetches unless another fetch completed since `seen` (then its result counts) or
    /// the last attempt was less than `refetch_interval` ago. True when keys changed.
    async fn refetch(&self, seen: u64) -> bool {
        let _flight = self.fetch_lock.lock().await;
        if self.generation.load(Ordering::Acquire) != seen {
            return true;
        }
        let recent = lock(&self.last_attempt)
            .is_some_and(|at| at.elapsed() < self.settings.refetch_interval);
        if recent {
            return false;
        }
        self.fetch_locked().await
    }

    /// A scheduled refresh (the TTL ran out, or the last attempt failed).
    async fn refresh(&self) {
        let _flight = self.fetch_lock.lock().await;
        self.fetch_locked().await;
    }

    async fn fetch_locked(&self) -> bool {
        *lock(&self.last_attempt) = Some(Instant::now());
        lock(&self.status).fetches += 1;
        match self.fetch().await {
            Ok((keys, ttl)) => {
                let count = keys.len();
                self.install(keys, ttl);
                tracing::debug!(provider = %self.provider, keys = count, "JWKS fetched");
                true
            }
            Err(error) => {
                let keeping = self.keys.load().is_some();
                tracing::warn!(
                    provider = %self.provider,
                    %error,
                    keeping_cached_keys = keeping,
                    "JWKS fetch failed",
                );
                lock(&self.status).last_error = Some(error.to_string());
                false
            }
        }
    }

    fn install(&self, keys: Vec<VerifyingKey>, ttl: Duration) {
        let now = Instant::now();
        self.keys.store(Some(Arc::new(KeySet {
            keys,
            fetched_at: now,
            refresh_at: now + ttl,
            generation: self.generation.load(Ordering::Acquire) + 1,
        })));
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut status = lock(&self.status);
        status.last_success =
            Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
        status.last_error = None;
    }

    async fn fetch(&self) -> Result<(Vec<VerifyingKey>, Duration), JwksError> {
        match &self.source {
            JwksSource::File(path) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|source| JwksError::Read {
                        path: path.clone(),
                        source,
                    })?;
                let keys = parse_jwks(&bytes).map_err(|source| JwksError::BadFile {
                    path: path.clone(),
                    source,
                })?;
                Ok((keys, self.settings.ttl))
            }
            JwksSource::Url(url) => {
                let document = fetch_document(url, FETCH_TIMEOUT, MAX_JWKS_BYTES).await?;
                let ttl = max_age(&document.headers)
                    .map_or(self.settings.ttl, |age| age.clamp(MIN_TTL, MAX_TTL));
                let keys = parse_jwks(&document.body).map_err(|source| JwksError::BadDocument {
                    url: url.clone(),
                    source,
                })?;
                Ok((keys, ttl))
            }
        }
    }

    fn next_refresh(&self) -> Duration {
        let failing = lock(&self.status).last_error.is_some();
        match self.keys.load().as_ref() {
            // Never loaded, or the last try failed: try again soon.
            None => retry_delay(self.settings.refetch_interval),
            Some(_) if failing => retry_delay(self.settings.refetch_interval),
            Some(set) => set.refresh_at.saturating_duration_since(Instant::now()),
        }
    }

    /// How old the current keys are (for tests and status).
    pub fn age(&self) -> Option<Duration> {
        self.keys
            .load()
            .as_ref()
            .map(|set| set.fetched_at.elapsed())
    }
}

fn retry_delay(refetch_interval: Duration) -> Duration {
    refetch_interval
        .min(Duration::from_secs(10))
        .max(Duration::from_millis(100))
}

async fn refresh_loop(cache: Weak<JwksCache>) {
    let mut delay = Duration::ZERO;
    loop {
        tokio::time::sleep(delay).await;
        let Some(strong) = cache.upgrade() else {
            return;
        };
        strong.refresh().await;
        delay = strong.next_refresh();
    }
}

fn max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    value
        .split(',')
        .find_map(|directive| {
            let (name, seconds) = directive.trim().split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("max-age")
                .then(|| seconds.trim().parse().ok())?
        })
        .map(Duration::from_secs)
}

/// How many signing keys a JWKS document holds that the gateway can use (for
/// `fluxlit doctor`); the same rules as a fetch.
#[doc(hidden)]
pub fn usable_key_count(bytes: &[u8]) -> Result<usize, JwksDocumentError> {
    parse_jwks(bytes).map(|keys| keys.len())
}

/// A `jwks_file`'s keys, read and parsed (compile reads them; build installs them).
#[derive(Debug)]
pub struct FileKeys(Vec<VerifyingKey>);

/// Reads and parses a `jwks_file`, so a broken file refuses the config at load time.
pub fn read_file(path: &std::path::Path) -> Result<FileKeys, JwksError> {
    let bytes = std::fs::read(path).map_err(|source| JwksError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_jwks(&bytes)
        .map(FileKeys)
        .map_err(|source| JwksError::BadFile {
            path: path.to_owned(),
            source,
        })
}

/// The signing keys of a JWKS document. Keys the gateway cannot or must not use
/// (symmetric `oct` keys, encryption keys, unknown types) are skipped, not fatal.
fn parse_jwks(bytes: &[u8]) -> Result<Vec<VerifyingKey>, JwksDocumentError> {
    let document: serde_json::Value =
        serde_json::from_slice(bytes).map_err(JwksDocumentError::NotJson)?;
    let entries = document
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or(JwksDocumentError::NoKeysArray)?;
    let keys: Vec<VerifyingKey> = entries
        .iter()
        .filter_map(|entry| serde_json::from_value::<Jwk>(entry.clone()).ok())
        .filter(|jwk| !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)))
        .filter_map(|jwk| {
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => KeyFamily::Rsa,
                AlgorithmParameters::EllipticCurve(_) => KeyFamily::Ec,
                AlgorithmParameters::OctetKeyPair(_) => KeyFamily::Ed,
                // A shared secret in a public key set invites key confusion: never used.
                _ => return None,
            };
            let alg = match jwk.common.key_algorithm {
                None => None,
                Some(alg) => Some(signing_algorithm(alg)?),
            };
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            Some(VerifyingKey {
                kid: jwk.common.key_id.clone(),
                alg,
                family,
                key,
            })
        })
        .collect();
    if keys.is_empty() {
        return Err(JwksDocumentError::NoUsableKeys);
    }
    Ok(keys)
}

fn signing_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_signing_keys_and_skips_the_rest() {
        let rsa = include_str!("../../tests/fixtures/jose/rsa-a.jwk.json");
        let ec = include_str!("../../tests/fixtures/jose/ec-a.jwk.json");
        let document = format!(
            r#"{{"keys": [{rsa}, {ec}, {{"kty":"oct","k":"c2VjcmV0","kid":"sym"}}, {{"kty":"weird"}}]}}"#
        );
        let keys = parse_jwks(document.as_bytes()).unwrap();
        assert_eq!(keys.len(), 2);
        let set = KeySet {
            keys,
            fetched_at: Instant::now(),
            refresh_at: Instant::now(),
            generation: 1,
        };
        assert!(set.find(Some("rsa-a"), Algorithm::RS256).is_ok());
        assert!(
            set.find(Some("rsa-a"), Algorithm::ES256).is_err(),
            "an RSA key never verifies ES256"
        );
        assert!(set.find(Some("ec-a"), Algorithm::ES256).is_ok());
        assert!(
            set.find(Some("sym"), Algorithm::HS256).is_err(),
            "oct keys are never used"
        );
        assert!(
            set.find(None, Algorithm::ES256).is_ok(),
            "one EC key: no kid needed"
        );
    }

    #[test]
    fn refuses_documents_without_usable_keys() {
        assert!(parse_jwks(b"not json").is_err());
        assert!(parse_jwks(b"{}").is_err());
        assert!(parse_jwks(br#"{"keys": []}"#).is_err());
    }

    #[test]
    fn reads_max_age() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "cache-control",
            "public, max-age=120, must-revalidate".parse().unwrap(),
        );
        assert_eq!(max_age(&headers), Some(Duration::from_secs(120)));
        headers.insert("cache-control", "no-cache".parse().unwrap());
        assert_eq!(max_age(&headers), None);
    }
}
