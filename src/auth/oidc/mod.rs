//! OpenID Connect login served by the gateway itself ("backend for frontend"): what an
//! `oidc` provider is at run time.
//!
//! Its four endpoints (login, callback, exchange, logout) are answered by
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
pub mod store;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use openidconnect::RedirectUrl;
use serde::Serialize;

use crate::auth::token::Minter;
use crate::config::model::OidcPaths;
use discovery::{Discovery, DiscoveryStatus};
use store::{Store, StoreStatus};

pub const DEFAULT_LOGIN_TTL: Duration = Duration::from_secs(600);
pub const DEFAULT_AUTH_CODE_TTL: Duration = Duration::from_secs(60);
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(900);
pub const DEFAULT_STORE: &str = "memory";
pub const DEFAULT_STORE_MAX_ENTRIES: u32 = 10_000;
pub const DEFAULT_EXCHANGE_FROM: &[&str] = &["127.0.0.1/32", "::1/128"];
/// The id_token claims that may be copied into the minted token (`sub` always is).
pub const COPYABLE_CLAIMS: &[&str] = &["email", "name"];

/// The client secret: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(pub String);

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(redacted)")
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
    },
}

/// A compiled `oidc` provider.
#[derive(Debug)]
pub struct OidcProvider {
    pub name: Arc<str>,
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
    pub exchange_from: Vec<IpNet>,
    /// `<public_base_url><callback>`.
    pub redirect_uri: RedirectUrl,
    /// `public_base_url` without its trailing `/`: post-logout redirects are built on it.
    pub public_base: String,
    /// The path of `public_base_url` without its trailing `/` (empty for `/`): put in
    /// front of `next` in redirects.
    pub base_path: String,
    pub minter: Minter,
    pub discovery: Arc<Discovery>,
    pub store: Arc<dyn Store>,
    pub store_settings: StoreSettings,
}

/// What `/snapshot` shows about an oidc provider.
#[derive(Debug, Clone, Serialize)]
pub struct OidcStatus {
    pub discovery: DiscoveryStatus,
    pub store: StoreStatus,
    pub mint: String,
    pub paths: OidcPaths,
}

impl OidcProvider {
    pub fn status(&self) -> OidcStatus {
        OidcStatus {
            discovery: self.discovery.status(),
            store: self.store.status(),
            mint: self.minter.provider().to_owned(),
            paths: self.paths.clone(),
        }
    }
}

/// The gateway's own login endpoints, built at compile time: the paths they are served
/// at, matched before the routes, and the router that answers them.
#[derive(Debug, Default)]
pub struct AuthEndpoints {
    /// Path (normalised) → the name of the provider serving it.
    paths: Vec<(String, Arc<str>)>,
    router: axum::Router,
}

impl AuthEndpoints {
    /// `router` answers every path of `paths`.
    pub fn new(paths: Vec<(String, Arc<str>)>, router: axum::Router) -> Self {
        Self { paths, router }
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The provider whose endpoint is served at `path` (normalised), if any.
    pub fn find(&self, path: &str) -> Option<&Arc<str>> {
        self.paths
            .iter()
            .find(|(at, _)| at == path)
            .map(|(_, provider)| provider)
    }

    pub fn router(&self) -> &axum::Router {
        &self.router
    }
}
