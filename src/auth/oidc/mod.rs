//! OpenID Connect login served by the gateway itself ("backend for frontend"): what an
//! `oidc` provider is at run time.
//!
//! Its five endpoints (login, callback, exchange, logout, userinfo) are answered by
//! `serve::login`, with the pieces here: the IdP's settings, read in the background
//! ([`discovery`]); what a login asks of the IdP ([`client`]); the id_token checks
//! ([`id_token`]); where the user goes afterwards ([`redirect`]); and the [`store`] of
//! login states and auth codes (memory, or Redis shared by replicas: [`redis_store`]).
//! Tokens, codes and secrets are never logged or shown: failures name the check that
//! failed.

pub mod client;
pub mod discovery;
pub mod id_token;
pub mod redirect;
pub mod redis_store;
pub mod seal;
pub mod session;
pub mod store;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ipnet::IpNet;
use openidconnect::RedirectUrl;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::auth::secrets;
use crate::auth::token::Minter;
use crate::config::model::OidcPaths;
use crate::rate_limit::ClientRateLimit;
use discovery::{Discovery, DiscoveryStatus};
use seal::Sealer;
use store::{Store, StoreStatus};

/// The client secret: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(pub String);

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(redacted)")
    }
}

/// The exchange secret (`exchange_secret`), kept as its SHA-256 only: a presented value
/// is hashed and compared in constant time, so neither where it differs nor how long the
/// secret is shows in the answer's timing. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ExchangeSecret([u8; 32]);

impl ExchangeSecret {
    pub fn new(secret: &[u8]) -> Self {
        Self(Sha256::digest(secret).into())
    }

    /// Whether `presented` is the secret.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        secrets::constant_time_eq(&presented, &self.0)
    }
}

impl fmt::Debug for ExchangeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExchangeSecret(redacted)")
    }
}

/// What a store was built from: a reload with the same settings keeps it (and so the
/// pending logins of a memory store, the connection of a Redis store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    Memory {
        max_entries: usize,
    },
    /// The resolved URL (from the file, the environment or a file): `Debug` hides its
    /// password.
    Redis {
        target: redis_store::RedisTarget,
        /// `store_tls`, read (`Debug` shows no key).
        tls: Option<redis_store::RedisTls>,
    },
}

/// An oidc provider's settings, resolved by compile: secrets read, URLs checked.
#[derive(Debug)]
pub struct OidcSettings {
    pub client_id: String,
    pub client_secret: ClientSecret,
    /// Scopes besides `openid` (which openidconnect always asks for).
    pub scopes: Vec<String>,
    pub paths: OidcPaths,
    pub login_ttl: Duration,
    pub auth_code_ttl: Duration,
    pub access_token_ttl: Duration,
    /// Clock skew allowed on the id_token's `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// id_token claims copied into the minted token besides `sub`.
    pub claims: Vec<String>,
    /// Client addresses (resolved through `trust.proxies`) that may call the exchange.
    pub exchange_from: Vec<IpNet>,
    /// When set, the exchange also needs `Authorization: Bearer <secret>`.
    pub exchange_secret: Option<ExchangeSecret>,
    /// `<public_base_url><callback>`.
    pub redirect_uri: RedirectUrl,
    /// `public_base_url` without its trailing `/`: post-logout redirects are built on it.
    pub public_base: String,
    /// The origin of `public_base_url` (`https://host[:port]`): a browser session's
    /// unsafe requests and WebSocket handshakes must come from it.
    pub public_origin: String,
    /// The path of `public_base_url` without its trailing `/` (empty for `/`): put in
    /// front of `next` in redirects.
    pub base_path: String,
    /// Signs the access token handed out through the exchange (`mint`), when there is one.
    pub minter: Option<Minter>,
    /// Browser sessions, when routes name this provider.
    pub sessions: Option<SessionSettings>,
    /// id_token claims a session keeps: `claims`, the names of `claim_headers`, and
    /// those the `allow` of the routes naming the provider read.
    pub session_claims: Vec<String>,
    /// The kept claims the identity assertion states (`claims` and the names of
    /// `claim_headers`); the others are kept for `allow` only.
    pub asserted_claims: Vec<String>,
}

/// How long browser sessions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    /// Without a request for this long, a session ends.
    pub idle_timeout: Duration,
    /// A session ends this long after its login, however busy.
    pub max_age: Duration,
}

/// A built `oidc` provider: its settings, and the discovery and store that outlive a
/// reload which leaves them alone.
#[derive(Debug)]
pub struct OidcProvider {
    pub name: Arc<str>,
    pub settings: OidcSettings,
    pub discovery: Arc<Discovery>,
    pub store: Arc<dyn Store>,
    pub store_settings: StoreSettings,
    /// Seals the login state into the login cookie (`session_key`, else generated).
    pub sealer: Arc<Sealer>,
    /// Requests per client to the login endpoint (`login_rate_limit`).
    pub login_limit: Arc<ClientRateLimit>,
}

/// What `/snapshot` shows about an oidc provider.
#[derive(Debug, Clone, Serialize)]
pub struct OidcStatus {
    pub discovery: DiscoveryStatus,
    pub store: StoreStatus,
    /// The jwt provider that signs the exchanged token, when there is one.
    pub mint: Option<String>,
    pub paths: OidcPaths,
}

impl OidcProvider {
    pub fn status(&self) -> OidcStatus {
        OidcStatus {
            discovery: self.discovery.status(),
            store: self.store.status(),
            mint: self
                .settings
                .minter
                .as_ref()
                .map(|minter| minter.provider().to_owned()),
            paths: self.settings.paths.clone(),
        }
    }
}

/// Which endpoint of a provider a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Login,
    Callback,
    Exchange,
    Logout,
    Userinfo,
}

/// One endpoint of one provider, at its path (normalised).
#[derive(Debug)]
pub struct AuthEndpoint {
    pub path: String,
    pub endpoint: Endpoint,
    pub provider: Arc<OidcProvider>,
}

/// The gateway's own login endpoints of every oidc provider, matched before the routes.
/// Built with the snapshot; the router that answers them is made by the serving stage
/// (`serve::login`) the first time one of them is asked for, once per snapshot.
#[derive(Debug, Default)]
pub struct AuthEndpoints {
    entries: Vec<AuthEndpoint>,
    router: OnceLock<axum::Router>,
}

impl AuthEndpoints {
    /// The endpoints of `providers`, each at its provider's paths. Validation gives every
    /// provider paths of its own; were two the same, the first provider would keep it.
    pub fn new<'a>(providers: impl IntoIterator<Item = &'a Arc<OidcProvider>>) -> Self {
        let mut entries: Vec<AuthEndpoint> = Vec::new();
        for provider in providers {
            let paths = &provider.settings.paths;
            for (path, endpoint) in [
                (&paths.login, Endpoint::Login),
                (&paths.callback, Endpoint::Callback),
                (&paths.exchange, Endpoint::Exchange),
                (&paths.logout, Endpoint::Logout),
                (&paths.userinfo, Endpoint::Userinfo),
            ] {
                if entries.iter().all(|taken| taken.path != *path) {
                    entries.push(AuthEndpoint {
                        path: path.clone(),
                        endpoint,
                        provider: Arc::clone(provider),
                    });
                }
            }
        }
        Self {
            entries,
            router: OnceLock::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The endpoint served at `path` (normalised), if any.
    pub fn find(&self, path: &str) -> Option<&AuthEndpoint> {
        self.entries.iter().find(|entry| entry.path == path)
    }

    pub fn entries(&self) -> &[AuthEndpoint] {
        &self.entries
    }

    /// The router that answers these endpoints: made by `make` on the first call.
    pub fn router(&self, make: impl FnOnce(&[AuthEndpoint]) -> axum::Router) -> &axum::Router {
        self.router.get_or_init(|| make(&self.entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exchange_secret_matches_itself_only_and_is_never_printed() {
        let secret = ExchangeSecret::new(b"s3cret s3cret s3cret s3cret s3cret");
        assert!(secret.matches(b"s3cret s3cret s3cret s3cret s3cret"));
        assert!(!secret.matches(b"s3cret s3cret s3cret s3cret s3cre"));
        assert!(!secret.matches(b"s3cret s3cret s3cret s3cret s3cret "));
        assert!(!secret.matches(b""));
        assert_eq!(format!("{secret:?}"), "ExchangeSecret(redacted)");
    }
}
