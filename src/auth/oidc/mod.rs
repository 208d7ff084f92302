//! OpenID Connect login served by the gateway itself ("backend for frontend").
//!
//! An `oidc` provider serves four endpoints, dispatched before route matching:
//!
//! - `GET /auth/login?next=/path`: a fresh `state` (256 random bits), `nonce` and PKCE
//!   S256 verifier are stored with `next` (a same-origin path, else `/`: see
//!   [`redirect`]) for `login_ttl`, with the hash of a fresh random login cookie set in
//!   the browser (one cookie per login, named after the state's hash: parallel tabs each
//!   keep theirs); 302 to the IdP's authorization endpoint.
//! - `GET /auth/callback?code&state`: the state is taken from the store once (unknown,
//!   expired or replayed: 400, nothing minted); the request must carry that login's
//!   cookie (else 400: the login was started in another browser, login CSRF), which the
//!   answer clears; the code is exchanged server-side with
//!   the verifier; the id_token is checked against the IdP's JWKS ([`id_token`]); a
//!   first-party access token is minted with the `mint` jwt provider's key and stored
//!   under a one-time `auth_code` for `auth_code_ttl`; 302 to `next?auth_code=...` with
//!   `Referrer-Policy: no-referrer`.
//! - `POST /auth/exchange` (`{"auth_code": ...}` or a form), from `exchange_from` peers
//!   only: the code is taken and deleted in one step; `{access_token, token_type,
//!   expires_in}` once, `400 {"error": "invalid_grant"}` after.
//! - `GET /auth/logout?next=/path`: RP-initiated logout at the IdP's
//!   `end_session_endpoint` when it has one, else a redirect to `next`.
//!
//! The IdP's settings are read in the background ([`discovery`]); until then the login
//! answers 503, as it does while the [`store`] cannot be reached (a Redis outage:
//! [`redis_store`]); tokens already minted do not need the store. Tokens, codes and secrets are never logged or shown: failures name the
//! check that failed.

pub mod discovery;
mod flow;
pub mod id_token;
pub mod redirect;
pub mod redis_store;
pub mod store;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use http::{Request, Response};
use hyper::body::Incoming;
use ipnet::IpNet;
use openidconnect::RedirectUrl;
use serde::Serialize;

use crate::auth::token::Minter;
use crate::config::model::OidcPaths;
use crate::proxy::ProxyBody;
use discovery::{Discovery, DiscoveryStatus};
use store::{Store, StoreStatus};

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

/// Which endpoint of a provider a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Login,
    Callback,
    Exchange,
    Logout,
}

/// The gateway's own endpoints, path → provider and endpoint, built at compile time.
#[derive(Debug, Default)]
pub struct AuthEndpoints {
    entries: Vec<(String, Endpoint, Arc<OidcProvider>)>,
}

impl AuthEndpoints {
    pub fn new<'a>(providers: impl IntoIterator<Item = &'a Arc<OidcProvider>>) -> Self {
        let mut entries = Vec::new();
        for provider in providers {
            let paths = &provider.paths;
            for (path, endpoint) in [
                (&paths.login, Endpoint::Login),
                (&paths.callback, Endpoint::Callback),
                (&paths.exchange, Endpoint::Exchange),
                (&paths.logout, Endpoint::Logout),
            ] {
                entries.push((path.clone(), endpoint, Arc::clone(provider)));
            }
        }
        Self { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The endpoint served at `path` (normalised), if any.
    pub fn find(&self, path: &str) -> Option<AuthEndpoint<'_>> {
        self.entries
            .iter()
            .find(|(at, _, _)| at == path)
            .map(|(_, endpoint, provider)| AuthEndpoint {
                provider,
                endpoint: *endpoint,
            })
    }
}

/// One endpoint of one provider, ready to answer a request.
#[derive(Debug, Clone, Copy)]
pub struct AuthEndpoint<'a> {
    pub provider: &'a Arc<OidcProvider>,
    pub endpoint: Endpoint,
}

impl AuthEndpoint<'_> {
    /// Answers the request. Nothing is forwarded upstream.
    pub async fn handle(
        self,
        request: Request<Incoming>,
        peer: SocketAddr,
        request_id: &HeaderValue,
    ) -> Response<ProxyBody> {
        let provider = self.provider.as_ref();
        match self.endpoint {
            Endpoint::Login => provider.login(&request, request_id).await,
            Endpoint::Callback => provider.callback(&request, request_id).await,
            Endpoint::Exchange => provider.exchange(request, peer).await,
            Endpoint::Logout => provider.logout(&request, request_id),
        }
    }
}
