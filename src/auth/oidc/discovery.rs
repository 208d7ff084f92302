//! The identity provider's settings (OpenID Connect Discovery), read in the background.
//!
//! A reload never waits on the network: the first fetch runs in a task, and until it
//! succeeds the login answers 503. Once read, the settings are re-read every
//! [`REDISCOVER_INTERVAL`]; a failure keeps the last good ones. The IdP's `jwks_uri`
//! gets a [`JwksCache`] like a jwt provider's (background fetch, single-flight refetch
//! on an unknown `kid`, stale-if-error), kept while the URI stays the same. Like the
//! JWKS cache, a [`Discovery`] belongs to the provider, not the snapshot: a reload that
//! leaves its settings alone keeps it.
//!
//! A custom provider with manual endpoints (`authorization_endpoint`, `token_endpoint`)
//! has nothing to discover and no JWKS: its settings are known from the start, and its
//! id_tokens are [`IdTokenKeys::Unverified`] — believed on the strength of the TLS
//! connection to its token endpoint (OpenID Connect Core §3.1.3.7, item 6), which only
//! `allow_unverified_id_token_for_custom_oidc = true` accepts.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use jsonwebtoken::Algorithm;
use openidconnect::core::{CoreClientAuthMethod, CoreJwsSigningAlgorithm};
use openidconnect::{AuthUrl, EndSessionUrl, IssuerUrl, ProviderMetadataWithLogout, TokenUrl};
use serde::Serialize;

use crate::auth::background::{Refresher, lock};
use crate::auth::fetch::{FetchError, fetch_document};
use crate::auth::jwks::{JwksCache, JwksSettings, JwksSource};

/// How often settings that were read are read again.
pub const REDISCOVER_INTERVAL: Duration = Duration::from_secs(3600);
/// The longest wait between two attempts while discovery fails.
const MAX_RETRY: Duration = Duration::from_secs(30);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A discovery document larger than this is refused.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
const WELL_KNOWN: &str = "/.well-known/openid-configuration";

/// What the flow needs from the IdP's settings.
#[derive(Debug)]
pub struct Discovered {
    pub authorization_endpoint: AuthUrl,
    pub token_endpoint: TokenUrl,
    /// The `iss` id_tokens must carry: the document's `issuer`, exactly.
    pub issuer: String,
    pub issuer_url: IssuerUrl,
    /// What checks the signature of an id_token.
    pub keys: IdTokenKeys,
    /// The id_token algorithms the IdP announces and the gateway verifies with a JWKS key.
    pub algorithms: Vec<Algorithm>,
    /// Client authentication at the token endpoint: `client_secret_post` when that is all
    /// the IdP supports, else `client_secret_basic` (the default of the spec).
    pub client_secret_post: bool,
    pub end_session_endpoint: Option<EndSessionUrl>,
}

/// Why the IdP's settings could not be read or used. Each names the URL, the key or
/// the issuer involved.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("GET {url}: not an OpenID provider configuration: {source}")]
    NotProviderMetadata {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the document's issuer {issuer:?} is not issuer_url {issuer_url:?}")]
    IssuerMismatch { issuer: String, issuer_url: String },
    #[error("GET {url}: the document has no token_endpoint")]
    NoTokenEndpoint { url: String },
    #[error(
        "GET {url}: the IdP signs id_tokens with no algorithm the gateway verifies with public \
         keys (RS*, PS*, ES256, ES384, EdDSA)"
    )]
    NoPublicKeyAlgorithm { url: String },
    /// A custom provider's endpoint (or its issuer_url) as written in the file.
    #[error("{key} {text:?} is not a URL: {source}")]
    NotAUrl {
        key: &'static str,
        text: String,
        #[source]
        source: url::ParseError,
    },
}

/// What an id_token's signature is checked with.
#[derive(Debug)]
pub enum IdTokenKeys {
    /// The IdP's JWKS, from its discovery document.
    Jwks(Arc<JwksCache>),
    /// Nothing: a custom provider with manual endpoints, accepted only with
    /// `allow_unverified_id_token_for_custom_oidc = true`. Every claim is still checked.
    Unverified,
}

/// A custom provider's endpoints, written in the file instead of discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualEndpoints {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
}

/// What `/snapshot` shows about discovery.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiscoveryStatus {
    pub loaded: bool,
    pub attempts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The settings a [`Discovery`] was made with: equal settings share one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverySettings {
    pub issuer_url: String,
    pub jwks: JwksSettings,
    /// Set for a custom provider: nothing is fetched.
    pub manual: Option<ManualEndpoints>,
}

#[derive(Debug)]
pub struct Discovery {
    provider: Arc<str>,
    settings: DiscoverySettings,
    current: ArcSwapOption<Discovered>,
    status: Mutex<DiscoveryStatus>,
    refresher: Refresher,
}

impl Discovery {
    /// A discovery of `settings.issuer_url`, or, for manual endpoints, the settings
    /// known at once (`manual`, from [`manual_settings`]). Nothing is fetched before
    /// [`Discovery::start`].
    pub fn new(
        provider: &str,
        settings: DiscoverySettings,
        manual: Option<Discovered>,
    ) -> Arc<Self> {
        Arc::new(Self {
            provider: provider.into(),
            settings,
            current: ArcSwapOption::new(manual.map(Arc::new)),
            status: Mutex::new(DiscoveryStatus::default()),
            refresher: Refresher::default(),
        })
    }

    /// Whether this discovery serves `settings` (so a reload can keep it).
    pub fn serves(&self, settings: &DiscoverySettings) -> bool {
        &self.settings == settings
    }

    /// The settings read so far, if any.
    pub fn current(&self) -> Option<Arc<Discovered>> {
        self.current.load_full()
    }

    pub fn status(&self) -> DiscoveryStatus {
        let mut status = lock(&self.status).clone();
        status.loaded = self.current.load().is_some();
        status
    }

    /// The status of the IdP's JWKS, once discovery found it.
    pub fn jwks_status(&self) -> Option<crate::auth::jwks::JwksStatus> {
        self.current()
            .and_then(|discovered| match &discovered.keys {
                IdTokenKeys::Jwks(jwks) => Some(jwks.status()),
                IdTokenKeys::Unverified => None,
            })
    }

    /// Starts the background discovery on the current tokio runtime (once).
    /// Without a runtime (a command that only validates) nothing serves logins.
    pub fn start(self: &Arc<Self>) {
        if self.settings.manual.is_some() {
            return;
        }
        let this = Arc::downgrade(self);
        self.refresher.start_once(|| discovery_loop(this));
    }

    /// One attempt; true on success.
    async fn refresh(&self) -> bool {
        lock(&self.status).attempts += 1;
        match self.fetch().await {
            Ok(discovered) => {
                tracing::debug!(provider = %self.provider, issuer = %discovered.issuer, "OIDC discovery read");
                self.current.store(Some(Arc::new(discovered)));
                let mut status = lock(&self.status);
                status.last_success =
                    Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
                status.last_error = None;
                true
            }
            Err(error) => {
                tracing::warn!(
                    provider = %self.provider,
                    %error,
                    keeping_last_settings = self.current.load().is_some(),
                    "OIDC discovery failed",
                );
                lock(&self.status).last_error = Some(error.to_string());
                false
            }
        }
    }

    async fn fetch(&self) -> Result<Discovered, DiscoveryError> {
        let url = discovery_url(&self.settings.issuer_url);
        let document = fetch_document(&url, FETCH_TIMEOUT, MAX_DOCUMENT_BYTES).await?;
        let body = document.body;
        let metadata: ProviderMetadataWithLogout =
            serde_json::from_slice(&body).map_err(|source| {
                DiscoveryError::NotProviderMetadata {
                    url: url.clone(),
                    source,
                }
            })?;
        self.accept(&url, metadata)
    }

    /// Checks the document read from `url` and builds what the flow needs from it.
    fn accept(
        &self,
        url: &str,
        metadata: ProviderMetadataWithLogout,
    ) -> Result<Discovered, DiscoveryError> {
        let issuer = metadata.issuer().as_str().to_owned();
        // OpenID Connect Discovery §4.3: the issuer must be the one asked about. A
        // trailing slash is the only difference forgiven.
        if issuer.trim_end_matches('/') != self.settings.issuer_url.trim_end_matches('/') {
            return Err(DiscoveryError::IssuerMismatch {
                issuer,
                issuer_url: self.settings.issuer_url.clone(),
            });
        }
        let Some(token_endpoint) = metadata.token_endpoint().cloned() else {
            return Err(DiscoveryError::NoTokenEndpoint {
                url: url.to_owned(),
            });
        };
        let algorithms: Vec<Algorithm> = metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter_map(public_key_algorithm)
            .collect();
        if algorithms.is_empty() {
            return Err(DiscoveryError::NoPublicKeyAlgorithm {
                url: url.to_owned(),
            });
        }
        let client_secret_post = metadata
            .token_endpoint_auth_methods_supported()
            .is_some_and(|methods| {
                !methods.contains(&CoreClientAuthMethod::ClientSecretBasic)
                    && methods.contains(&CoreClientAuthMethod::ClientSecretPost)
            });
        let jwks_uri = metadata.jwks_uri().url().to_string();
        let source = JwksSource::Url(jwks_uri);
        // The same key set URI keeps its cache (and keys) across re-discoveries.
        let previous = self.current();
        let jwks = match previous.as_ref().map(|previous| &previous.keys) {
            Some(IdTokenKeys::Jwks(jwks)) if jwks.serves(&source, &self.settings.jwks) => {
                Arc::clone(jwks)
            }
            _ => {
                let cache = JwksCache::new(&self.provider, source, self.settings.jwks);
                cache.start();
                cache
            }
        };
        let end_session_endpoint = metadata.additional_metadata().end_session_endpoint.clone();
        Ok(Discovered {
            authorization_endpoint: metadata.authorization_endpoint().clone(),
            token_endpoint,
            issuer_url: metadata.issuer().clone(),
            issuer,
            keys: IdTokenKeys::Jwks(jwks),
            algorithms,
            client_secret_post,
            end_session_endpoint,
        })
    }
}

/// The settings of a custom provider: its endpoints as written, `client_secret_basic`,
/// no logout endpoint, and no keys. An error names what is wrong with them.
pub fn manual_settings(
    issuer_url: &str,
    manual: &ManualEndpoints,
) -> Result<Discovered, DiscoveryError> {
    let url = |key: &'static str, text: &str| {
        url::Url::parse(text).map_err(|source| DiscoveryError::NotAUrl {
            key,
            text: text.to_owned(),
            source,
        })
    };
    Ok(Discovered {
        authorization_endpoint: AuthUrl::from_url(url(
            "authorization_endpoint",
            &manual.authorization_endpoint,
        )?),
        token_endpoint: TokenUrl::from_url(url("token_endpoint", &manual.token_endpoint)?),
        issuer_url: IssuerUrl::from_url(url("issuer_url", issuer_url)?),
        issuer: issuer_url.to_owned(),
        keys: IdTokenKeys::Unverified,
        algorithms: Vec::new(),
        client_secret_post: false,
        end_session_endpoint: None,
    })
}

/// `<issuer_url>/.well-known/openid-configuration`.
pub fn discovery_url(issuer_url: &str) -> String {
    format!("{}{WELL_KNOWN}", issuer_url.trim_end_matches('/'))
}

async fn discovery_loop(discovery: Weak<Discovery>) {
    let mut retry = Duration::from_millis(250);
    loop {
        let Some(strong) = discovery.upgrade() else {
            return;
        };
        let delay = if strong.refresh().await {
            retry = Duration::from_millis(250);
            REDISCOVER_INTERVAL
        } else {
            let delay = retry;
            retry = (retry * 2).min(MAX_RETRY);
            delay
        };
        drop(strong);
        tokio::time::sleep(delay).await;
    }
}

/// The algorithms verified with a JWKS key; HMAC (keyed with the client secret) and
/// `none` are never accepted for id_tokens.
fn public_key_algorithm(alg: &CoreJwsSigningAlgorithm) -> Option<Algorithm> {
    use CoreJwsSigningAlgorithm as C;
    Some(match alg {
        C::RsaSsaPkcs1V15Sha256 => Algorithm::RS256,
        C::RsaSsaPkcs1V15Sha384 => Algorithm::RS384,
        C::RsaSsaPkcs1V15Sha512 => Algorithm::RS512,
        C::RsaSsaPssSha256 => Algorithm::PS256,
        C::RsaSsaPssSha384 => Algorithm::PS384,
        C::RsaSsaPssSha512 => Algorithm::PS512,
        C::EcdsaP256Sha256 => Algorithm::ES256,
        C::EcdsaP384Sha384 => Algorithm::ES384,
        C::EdDsa => Algorithm::EdDSA,
        _ => return None,
    })
}
