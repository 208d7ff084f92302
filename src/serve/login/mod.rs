//! The five endpoints of an oidc provider, as an axum router that the public listener
//! hands a request to when its path is one of them (before route matching):
//!
//! - `GET /auth/login?next=/path` ([`login`]): a fresh `state` (256 random bits), `nonce`
//!   and PKCE S256 verifier, with `next` (a same-origin path, else `/`: see
//!   [`redirect`](crate::auth::oidc::redirect)) and an expiry `login_ttl` away, are sealed
//!   (AES-256-GCM, bound to the state) into a login cookie set in the browser
//!   ([`cookie`]); nothing is stored server-side; 302 to the IdP's authorization
//!   endpoint. Limited per client (`login_rate_limit`, checked by the public listener).
//! - `GET /auth/callback?code&state` ([`callback`]): the request must carry the login
//!   cookie sealed for that state (else 400: the login was started in another browser,
//!   login CSRF), which the answer clears; the state is marked used in the store once
//!   (expired or replayed: 400, nothing minted); the code is exchanged server-side with
//!   the verifier; the
//!   id_token is checked against the IdP's JWKS; a first-party access token is minted with
//!   the `mint` jwt provider's key and stored under a one-time `auth_code` bound to this
//!   browser by a code cookie ([`cookie`]) for `auth_code_ttl`; 302 to
//!   `next?auth_code=...` with `Referrer-Policy: no-referrer`.
//! - `POST /auth/exchange` ([`exchange`]: `{"auth_code": ..., "browser_binding": ...}` or
//!   a form), from `exchange_from` clients only (the address resolved through
//!   `trust.proxies`), with `Authorization: Bearer <exchange_secret>` when one is set:
//!   the code, with the code cookie's value the app's server read from the browser, is
//!   taken and deleted in one step; `{access_token, token_type, expires_in}` once,
//!   `400 {"error": "invalid_grant"}` after, or without the right binding.
//! - `GET /auth/logout?next=/path` ([`logout`]): ends the browser's session, then
//!   RP-initiated logout at the IdP's `end_session_endpoint` when it has one, else a
//!   redirect to `next`.
//! - `GET /auth/userinfo` ([`userinfo`]): the session's user as JSON (`sub`, the kept
//!   claims, `expires_at`), 401 without a session; never a token.
//!
//! Until the IdP's settings are read, and while the store cannot be reached, a login
//! answers 503; tokens already minted do not need the store. Paths are each provider's
//! `paths`; the router is made the first time a snapshot serves one of them.

mod callback;
mod cookie;
mod exchange;
#[allow(
    clippy::module_inception,
    reason = "each endpoint has its file; this one is the login's"
)]
mod login;
mod logout;
mod userinfo;

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::HttpBody;
use axum::extract::{ConnectInfo, FromRequestParts, Query};
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::http::uri::{PathAndQuery, Uri};
use axum::http::{Request, StatusCode};
use axum::response::Response;
use axum::routing::MethodRouter;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

use crate::auth::oidc::seal::Purpose;
use crate::auth::oidc::store::{StoreError, hashed_key};
use crate::auth::oidc::{AuthEndpoint, AuthEndpoints, Endpoint, OidcProvider};
use crate::http;
use crate::proxy::ProxyBody;

/// The longest `state`, `code` or `auth_code` looked up.
const MAX_PARAM_LEN: usize = 4096;

/// The router of `endpoints`: each at its path, matched literally (`:x` and `*x` are no
/// captures here), with the provider it belongs to as its state.
fn router(endpoints: &[AuthEndpoint]) -> Router {
    let mut router = Router::new().without_v07_checks();
    for entry in endpoints {
        let route: MethodRouter<Arc<OidcProvider>> = match entry.endpoint {
            Endpoint::Login => login::route(),
            Endpoint::Callback => callback::route(),
            Endpoint::Exchange => exchange::route(),
            Endpoint::Logout => logout::route(),
            Endpoint::Userinfo => userinfo::route(),
        };
        router = router.route(
            &literal(&entry.path),
            route.with_state(Arc::clone(&entry.provider)),
        );
    }
    router.fallback(not_found)
}

/// `path` as a route that matches only itself: braces escaped, so `{x}` is no capture.
fn literal(path: &str) -> String {
    path.replace('{', "{{").replace('}', "}}")
}

/// The answer of `endpoints`' router to a request the public listener matched to one of
/// them; `normalised` is the request's path normalised, when that changed it; `client`
/// is the client's address resolved through `trust.proxies` (the peer, unless that is a
/// trusted proxy). Nothing is forwarded upstream.
pub fn answer<B>(
    endpoints: &AuthEndpoints,
    mut request: Request<B>,
    normalised: Option<String>,
    peer: SocketAddr,
    client: IpAddr,
    request_id: &HeaderValue,
) -> impl Future<Output = Response<ProxyBody>> + Send + 'static
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    if let Some(path) = normalised {
        set_path(&mut request, &path);
    }
    let extensions = request.extensions_mut();
    extensions.insert(ConnectInfo(peer));
    extensions.insert(ClientAddress(client));
    extensions.insert(RequestId(request_id.clone()));
    let router = endpoints.router(router).clone();
    let request_id = request_id.clone();
    async move {
        let Ok(response) = router.oneshot(request).await;
        let (parts, body) = response.into_parts();
        // Every answer here is a short page, a JSON document or a redirect: whole at once.
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                tracing::error!(error = %http::error_chain(&error), "an OIDC endpoint's answer broke off");
                let id = request_id.to_str().unwrap_or("-");
                let message = "the answer could not be made";
                let page = http::page::<Bytes>(StatusCode::INTERNAL_SERVER_ERROR, message, id);
                return page.map(ProxyBody::full);
            }
        };
        let body = if body.is_empty() {
            ProxyBody::empty()
        } else {
            ProxyBody::full(body)
        };
        Response::from_parts(parts, body)
    }
}

/// Puts the normalised path in the request, where the router reads it (`/auth//login`
/// is `/auth/login` there as it was for the public listener).
fn set_path<B>(request: &mut Request<B>, path: &str) {
    if request.uri().path() == path {
        return;
    }
    let target = match request.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let Ok(path_and_query) = PathAndQuery::from_maybe_shared(Bytes::from(target)) else {
        return;
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

/// The client's address as the public listener resolved it through `trust.proxies`.
#[derive(Debug, Clone, Copy)]
struct ClientAddress(IpAddr);

/// The request id the public listener gave the request: pages name it.
#[derive(Debug, Clone)]
struct RequestId(HeaderValue);

impl RequestId {
    fn of(parts: &Parts) -> Self {
        let id = parts.extensions.get::<Self>().cloned();
        id.unwrap_or(Self(HeaderValue::from_static("-")))
    }

    fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("-")
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self::of(parts))
    }
}

/// The query string as `T` ([`Query`]); one that does not fit is refused with a page.
struct Params<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(params)) => Ok(Self(params)),
            Err(rejection) => {
                let request_id = RequestId::of(parts);
                let message = format!("the query string cannot be read: {}", rejection.body_text());
                Err(page(StatusCode::BAD_REQUEST, &message, &request_id))
            }
        }
    }
}

/// `?next=/path`, of login and logout.
#[derive(Deserialize)]
struct NextParam {
    next: Option<String>,
}

/// A `state`, `code` or `auth_code` as it may be looked up: present, not empty, bounded.
fn usable(param: Option<&str>) -> Option<&str> {
    param.filter(|value| !value.is_empty() && value.len() <= MAX_PARAM_LEN)
}

/// A login between `/auth/login` and the callback, sealed into the login cookie: the
/// browser that started the login keeps it, and can neither read nor change it. (No
/// `Debug`: never logged.)
#[derive(Serialize, Deserialize)]
struct LoginState {
    verifier: String,
    nonce: String,
    next: String,
    /// Unix seconds after which the callback refuses it (`login_ttl` after the login).
    expires_at: u64,
}

impl LoginState {
    /// The login cookie's value: this state sealed for the login whose state hashes to
    /// `state_key`, so that it opens for that login of that provider only.
    fn seal(&self, provider: &OidcProvider, state_key: &str) -> Option<String> {
        let json = serde_json::to_vec(self).ok()?;
        provider.sealer.seal(
            Purpose::LoginState,
            &login_context(provider, state_key),
            &json,
        )
    }

    /// The state a login cookie's value holds, when it was sealed for this login.
    fn open(provider: &OidcProvider, state_key: &str, sealed: &str) -> Option<Self> {
        let json = provider.sealer.open(
            Purpose::LoginState,
            &login_context(provider, state_key),
            sealed,
        )?;
        serde_json::from_slice(&json).ok()
    }
}

/// What a login state is sealed for: the purpose, the provider and the login's state.
fn login_context(provider: &OidcProvider, state_key: &str) -> Vec<u8> {
    format!("fluxlit login state\0{}\0{state_key}", provider.name).into_bytes()
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// A minted token waiting for `/auth/exchange`, as stored. (No `Debug`: never logged.)
#[derive(Serialize, Deserialize)]
struct PendingToken {
    access_token: String,
    expires_at: u64,
}

/// The store key of a state or code: its SHA-256, so the store never holds one that
/// could be replayed.
fn store_key(secret: &str) -> String {
    hashed_key(secret)
}

/// The store key of an auth code issued with the browser binding `binding` (the value
/// of its code cookie): the hash of both hashes. A code is found only together with its
/// binding, so an exchange with a wrong or missing binding finds nothing, and takes
/// nothing: the code stays redeemable by the browser it was issued to until it expires.
/// Burning it on a wrong binding would stop no guessing (the binding is 256 random
/// bits) but would let anyone who saw the code (a log, a shared link) spoil the victim's
/// login by racing the app's server without the binding.
fn code_key(auth_code: &str, binding: &str) -> String {
    let mut both = store_key(auth_code);
    both.push_str(&store_key(binding));
    store_key(&both)
}

/// A short plain-text page that says what failed, with the request id. Login pages are
/// reached with secrets in their URL: they send no `Referer`.
fn page(status: StatusCode, message: &str, request_id: &RequestId) -> Response {
    let mut response = http::page(status, message, request_id.as_str());
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The answer to a method an endpoint does not serve.
fn method_not_allowed(allow: &'static str, request_id: &RequestId) -> Response {
    let message = format!("use {allow}");
    let mut response = page(StatusCode::METHOD_NOT_ALLOWED, &message, request_id);
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// For login, callback, logout and userinfo.
async fn use_get(request_id: RequestId) -> Response {
    method_not_allowed("GET", &request_id)
}

/// What the router answers a path it was handed but does not serve (the public listener
/// hands it only its own paths).
async fn not_found(request_id: RequestId) -> Response {
    page(
        StatusCode::NOT_FOUND,
        "no route matches this path",
        &request_id,
    )
}

/// Why a login stops: the status and the sentence of its page.
struct Refusal {
    status: StatusCode,
    message: Cow<'static, str>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// The store cannot serve a login right now (Redis down, memory store full).
    fn store(provider: &OidcProvider, step: &str, error: &StoreError) -> Self {
        tracing::warn!(provider = %provider.name, step, %error, "OIDC login store refused");
        let message = format!("login is not available right now: {error}");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    fn page(&self, request_id: &RequestId) -> Response {
        page(self.status, &self.message, request_id)
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::get;

    use super::*;

    #[test]
    fn code_keys_need_the_code_and_its_binding() {
        let key = code_key("code", "binding");
        assert_eq!(key.len(), 64);
        assert_ne!(key, store_key("code"));
        assert_ne!(key, code_key("code", "other"));
        assert_ne!(key, code_key("other", "binding"));
        assert_ne!(key, code_key("codebinding", ""));
        assert_eq!(key, code_key("code", "binding"));
    }

    #[test]
    fn store_keys_are_hashes() {
        let key = store_key("abc");
        assert_eq!(
            key,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(store_key("abd"), key);
    }

    #[tokio::test]
    async fn paths_are_routes_that_match_only_themselves() {
        for path in [
            "/auth/{x}",
            "/auth/:x",
            "/auth/*x",
            "/a}}",
            "/{*rest}",
            "/a%20b/",
        ] {
            let router: Router = Router::new()
                .without_v07_checks()
                .route(&literal(path), get(|| async { "hit" }));
            let request = |path: &str| Request::get(path).body(String::new()).unwrap();
            let hit = router.clone().oneshot(request(path)).await.unwrap();
            assert_eq!(hit.status(), StatusCode::OK, "{path}");
            let miss = router.oneshot(request("/auth/other")).await.unwrap();
            assert_eq!(miss.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[test]
    fn the_router_reads_the_normalised_path() {
        let mut request = Request::get("/auth//login?next=/a").body(()).unwrap();
        set_path(&mut request, "/auth/login");
        assert_eq!(request.uri(), "/auth/login?next=/a");
        let mut request = Request::get("http://h/auth/./logout").body(()).unwrap();
        set_path(&mut request, "/auth/logout");
        assert_eq!(request.uri(), "http://h/auth/logout");
    }
}
