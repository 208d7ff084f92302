//! The four endpoints of an oidc provider: login, callback, exchange, logout.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreJsonWebKeySet};
use openidconnect::{
    AuthType, AuthorizationCode, ClientId, CsrfToken, EndpointNotSet, EndpointSet, LogoutRequest,
    Nonce, PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl, RequestTokenError, Scope,
    TokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::OidcProvider;
use super::discovery::Discovered;
use super::id_token::{self, Expected, IdTokenError};
use super::redirect::{location, safe_next};
use super::store::{Slot, StoreError};
use crate::auth::jwt::now_secs;
use crate::http::error_chain;
use crate::proxy::ProxyBody;
use crate::snapshot::canonical_ip;

/// Random bytes in a `state` and an `auth_code` (base64url: 43 characters).
const SECRET_BYTES: u32 = 32;
/// How long the token endpoint has to answer.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest token endpoint answer read.
const MAX_TOKEN_RESPONSE_BYTES: usize = 1024 * 1024;
/// The largest exchange request body read.
const MAX_EXCHANGE_BODY: usize = 8 * 1024;
/// The longest `state`, `code` or `auth_code` looked up.
const MAX_PARAM_LEN: usize = 4096;
/// The login cookie's name when `public_base_url` is http: `fluxlit-login-<id>`.
const LOGIN_COOKIE: &str = "fluxlit-login";
/// The login cookie's name when `public_base_url` is https: `__Host-fluxlit-login-<id>`
/// (the browser then insists on `Secure`, `Path=/` and no `Domain`, so a sibling
/// subdomain cannot plant one).
const HOST_LOGIN_COOKIE: &str = "__Host-fluxlit-login";
/// Hex digits of the state's hash in a login cookie's name (not secret: the state itself
/// travels in URLs).
const LOGIN_COOKIE_ID_LEN: usize = 16;

type OidcClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointNotSet,
>;

/// A login between `/auth/login` and the callback, as stored. (No `Debug`: never logged.)
#[derive(Serialize, Deserialize)]
struct LoginState {
    verifier: String,
    nonce: String,
    next: String,
    /// SHA-256 (hex) of the login cookie set in the browser that started the login: the
    /// callback must come with that cookie. (`default`: a record written before this
    /// field existed has none, and so matches no browser.)
    #[serde(default)]
    browser: String,
}

/// A minted token waiting for `/auth/exchange`, as stored. (No `Debug`: never logged.)
#[derive(Serialize, Deserialize)]
struct PendingToken {
    access_token: String,
    expires_at: u64,
}

impl OidcProvider {
    pub(super) async fn login(
        &self,
        request: &Request<Incoming>,
        request_id: &HeaderValue,
    ) -> Response<ProxyBody> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return method_not_allowed("GET", request_id);
        }
        let Some(discovered) = self.discovery.current() else {
            tracing::warn!(provider = %self.name, "login refused: OIDC discovery has not succeeded yet");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "login is not available yet: the identity provider's settings (OpenID Connect \
                 discovery) have not been loaded; try again shortly",
                request_id,
            );
        };
        let query = query_params(request);
        let next = safe_next(query.get("next")).to_owned();

        let state = CsrfToken::new_random_len(SECRET_BYTES);
        let nonce = Nonce::new_random_len(SECRET_BYTES);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        // Binds the login to this browser (login CSRF: RFC 9700 §4.7, OIDC Core
        // §3.1.2.1): 256 bits from the OS-seeded CSPRNG in a cookie, only its hash stored.
        let browser_secret = CsrfToken::new_random_len(SECRET_BYTES);
        let stored = LoginState {
            verifier: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
            next,
            browser: store_key(browser_secret.secret()),
        };
        let Ok(value) = serde_json::to_vec(&stored) else {
            return page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot start a login",
                request_id,
            );
        };
        let key = store_key(state.secret());
        match self
            .store
            .put_once(Slot::LoginState, &key, value, self.login_ttl)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot start a login",
                    request_id,
                );
            }
            Err(error) => return self.store_failure("login", &error, request_id),
        }

        let client = self.client(&discovered);
        let scopes = self.scopes.iter().map(|scope| Scope::new(scope.clone()));
        let (url, _, _) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || state,
                move || nonce,
            )
            .add_scopes(scopes)
            .set_pkce_challenge(challenge)
            .url();
        let mut response = redirect(url.as_str(), false);
        let cookie = self.login_cookie(&key, Some(browser_secret.secret()));
        response.headers_mut().append(header::SET_COOKIE, cookie);
        response
    }

    pub(super) async fn callback(
        &self,
        request: &Request<Incoming>,
        request_id: &HeaderValue,
    ) -> Response<ProxyBody> {
        if request.method() != Method::GET {
            return method_not_allowed("GET", request_id);
        }
        let query = query_params(request);
        let Some(state) = query
            .get("state")
            .filter(|s| !s.is_empty() && s.len() <= MAX_PARAM_LEN)
        else {
            return page(
                StatusCode::BAD_REQUEST,
                "login failed: the callback has no state",
                request_id,
            );
        };
        let key = store_key(state);
        // Taken once: a replayed or forged state finds nothing.
        let login = match self.store.take(Slot::LoginState, &key).await {
            Ok(Some(bytes)) => serde_json::from_slice::<LoginState>(&bytes).ok(),
            Ok(None) => None,
            Err(error) => return self.store_failure("callback", &error, request_id),
        };
        // From here the state is used up, whatever the answer: its cookie is cleared.
        let mut response = match login {
            Some(login) => {
                self.finish_login(request, &query, &key, login, request_id)
                    .await
            }
            None => {
                tracing::info!(provider = %self.name, check = "state", "OIDC callback refused: unknown, expired or used state");
                page(
                    StatusCode::BAD_REQUEST,
                    "login failed (state): this login is unknown, expired or already used; \
                     start the login again",
                    request_id,
                )
            }
        };
        let clear = self.login_cookie(&key, None);
        response.headers_mut().append(header::SET_COOKIE, clear);
        response
    }

    /// The callback once its state was taken: the browser check, then the code.
    async fn finish_login(
        &self,
        request: &Request<Incoming>,
        query: &Query,
        state_key: &str,
        login: LoginState,
        request_id: &HeaderValue,
    ) -> Response<ProxyBody> {
        // Before anything reaches the IdP: the callback must come from the browser that
        // started this login, else an attacker's half-done login could be finished in a
        // victim's browser (login CSRF).
        let presented = request_cookie(request, &self.login_cookie_name(state_key));
        let bound = presented.is_some_and(|value| {
            value.len() <= MAX_PARAM_LEN && same_secret(&store_key(value), &login.browser)
        });
        if !bound {
            let cookie = if presented.is_some() {
                "mismatch"
            } else {
                "missing"
            };
            tracing::info!(provider = %self.name, check = "browser", cookie, "OIDC callback refused: the login cookie does not match the login's state");
            return page(
                StatusCode::BAD_REQUEST,
                "login failed (browser): this login was started in another browser (or its \
                 login cookie is missing or expired); start the login again in this browser",
                request_id,
            );
        }
        if let Some(error) = query.get("error") {
            let error = oauth_error_code(error);
            tracing::info!(provider = %self.name, check = "authorization", error, "the identity provider did not log the user in");
            return page(
                StatusCode::FORBIDDEN,
                &format!("login failed: the identity provider answered {error}"),
                request_id,
            );
        }
        let Some(code) = query
            .get("code")
            .filter(|c| !c.is_empty() && c.len() <= MAX_PARAM_LEN)
        else {
            return page(
                StatusCode::BAD_REQUEST,
                "login failed: the callback has no code",
                request_id,
            );
        };
        let Some(discovered) = self.discovery.current() else {
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "login is not available: the identity provider's settings have not been loaded",
                request_id,
            );
        };

        let id_token = match self.exchange_code(&discovered, code, login.verifier).await {
            Ok(id_token) => id_token,
            Err((status, message)) => {
                tracing::warn!(provider = %self.name, check = "token_endpoint", reason = %message, "OIDC login refused");
                return page(status, &format!("login failed: {message}"), request_id);
            }
        };
        let expected = Expected {
            client_id: &self.client_id,
            nonce: &login.nonce,
            leeway: self.leeway,
        };
        let claims = match id_token::verify(&id_token, &discovered, &expected).await {
            Ok(claims) => claims,
            Err(IdTokenError::KeysUnavailable(reason)) => {
                tracing::warn!(provider = %self.name, check = "keys", %reason, "OIDC login refused");
                return page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "login failed: the identity provider's signing keys are not available; \
                     try again shortly",
                    request_id,
                );
            }
            Err(error) => {
                tracing::warn!(
                    provider = %self.name,
                    check = error.check(),
                    reason = error.reason(),
                    "OIDC login refused: the id_token failed a check",
                );
                return page(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "login failed: the id_token failed the {} check ({})",
                        error.check(),
                        error.reason()
                    ),
                    request_id,
                );
            }
        };

        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut extra = Map::new();
        for name in &self.claims {
            if let Some(value @ Value::String(_)) = claims.get(name) {
                extra.insert(name.clone(), value.clone());
            }
        }
        let minted = match self.minter.mint(sub, self.access_token_ttl, extra) {
            Ok(minted) => minted,
            Err(error) => {
                tracing::error!(provider = %self.name, %error, "cannot mint the access token");
                return page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "login failed: the access token cannot be signed",
                    request_id,
                );
            }
        };
        let pending = PendingToken {
            access_token: minted.token,
            expires_at: minted.expires_at,
        };
        let auth_code = CsrfToken::new_random_len(SECRET_BYTES);
        let Ok(value) = serde_json::to_vec(&pending) else {
            return page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "login failed",
                request_id,
            );
        };
        match self
            .store
            .put_once(
                Slot::AuthCode,
                &store_key(auth_code.secret()),
                value,
                self.auth_code_ttl,
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "login failed",
                    request_id,
                );
            }
            Err(error) => return self.store_failure("callback", &error, request_id),
        }
        tracing::info!(provider = %self.name, "OIDC login succeeded; auth code issued");
        let target = location(
            &self.base_path,
            &login.next,
            Some(("auth_code", auth_code.secret())),
        );
        redirect(&target, true)
    }

    pub(super) async fn exchange(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        if request.method() != Method::POST {
            let mut response = json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "invalid_request", "error_description": "use POST"}),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        let ip = canonical_ip(peer.ip());
        if !self.exchange_from.iter().any(|net| net.contains(&ip)) {
            tracing::info!(provider = %self.name, %ip, "auth code exchange refused: the peer is not in exchange_from");
            return json_response(
                StatusCode::FORBIDDEN,
                &json!({
                    "error": "access_denied",
                    "error_description": "this address may not exchange auth codes",
                }),
            );
        }
        let invalid_request = |description: &str| {
            json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "invalid_request", "error_description": description}),
            )
        };
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| {
                value
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let body = match Limited::new(request.into_body(), MAX_EXCHANGE_BODY)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return invalid_request("the body is too large or broken"),
        };
        let Some(auth_code) = read_auth_code(&content_type, &body) else {
            return invalid_request(
                "send {\"auth_code\": \"...\"} as application/json, or auth_code=... as a form",
            );
        };
        let taken = match self
            .store
            .take(Slot::AuthCode, &store_key(&auth_code))
            .await
        {
            Ok(taken) => taken,
            Err(error) => {
                tracing::warn!(provider = %self.name, %error, "auth code exchange failed: store unavailable");
                return json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({
                        "error": "temporarily_unavailable",
                        "error_description": "the login store is unavailable",
                    }),
                );
            }
        };
        let pending = taken.and_then(|bytes| serde_json::from_slice::<PendingToken>(&bytes).ok());
        let now = now_secs();
        match pending {
            Some(pending) if pending.expires_at > now => json_response(
                StatusCode::OK,
                &json!({
                    "access_token": pending.access_token,
                    "token_type": "Bearer",
                    "expires_in": pending.expires_at - now,
                }),
            ),
            _ => {
                tracing::info!(provider = %self.name, "auth code exchange refused: unknown, used or expired code");
                json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({
                        "error": "invalid_grant",
                        "error_description": "the auth code is unknown, used or expired",
                    }),
                )
            }
        }
    }

    pub(super) fn logout(
        &self,
        request: &Request<Incoming>,
        request_id: &HeaderValue,
    ) -> Response<ProxyBody> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return method_not_allowed("GET", request_id);
        }
        let query = query_params(request);
        let next = safe_next(query.get("next"));
        let end_session = self
            .discovery
            .current()
            .and_then(|discovered| discovered.end_session_endpoint.clone());
        match end_session {
            Some(endpoint) => {
                let mut logout = LogoutRequest::from(endpoint)
                    .set_client_id(ClientId::new(self.client_id.clone()));
                let back = format!("{}{next}", self.public_base);
                if let Ok(back) = PostLogoutRedirectUrl::new(back) {
                    logout = logout.set_post_logout_redirect_uri(back);
                }
                redirect(logout.http_get_url().as_str(), false)
            }
            None => redirect(&location(&self.base_path, next, None), false),
        }
    }

    /// The openidconnect client for this login: discovered endpoints, this config's
    /// client credentials and redirect URI. (Its own id_token verifier, and so its key
    /// set, is never used: [`id_token::verify`] checks the id_token.)
    fn client(&self, discovered: &Discovered) -> OidcClient {
        let auth_type = if discovered.client_secret_post {
            AuthType::RequestBody
        } else {
            AuthType::BasicAuth
        };
        CoreClient::new(
            ClientId::new(self.client_id.clone()),
            discovered.issuer_url.clone(),
            CoreJsonWebKeySet::default(),
        )
        .set_client_secret(openidconnect::ClientSecret::new(
            self.client_secret.0.clone(),
        ))
        .set_auth_uri(discovered.authorization_endpoint.clone())
        .set_token_uri(discovered.token_endpoint.clone())
        .set_redirect_uri(self.redirect_uri.clone())
        .set_auth_type(auth_type)
    }

    /// Trades the code (with the PKCE verifier) for the id_token, server to server.
    async fn exchange_code(
        &self,
        discovered: &Discovered,
        code: &str,
        verifier: String,
    ) -> Result<String, (StatusCode, String)> {
        let bad_gateway = |message: String| (StatusCode::BAD_GATEWAY, message);
        let client = self.client(discovered);
        let request = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier));
        let response = request
            .request_async(&send)
            .await
            .map_err(|error| match error {
                RequestTokenError::ServerResponse(error) => bad_gateway(format!(
                    "the identity provider's token endpoint refused the code ({})",
                    oauth_error_code(error.error().as_ref())
                )),
                RequestTokenError::Request(error) => bad_gateway(format!(
                    "the identity provider's token endpoint cannot be reached ({error})"
                )),
                // The body may hold tokens: only the JSON path of the problem is named.
                RequestTokenError::Parse(error, _body) => bad_gateway(format!(
                    "the token endpoint's answer is not a valid token response (at {})",
                    error.path()
                )),
                RequestTokenError::Other(_) => {
                    bad_gateway("the token endpoint's answer is not a token response".to_owned())
                }
            })?;
        response
            .id_token()
            .map(ToString::to_string)
            .ok_or_else(|| bad_gateway("the token endpoint's answer has no id_token".to_owned()))
    }

    /// The `Set-Cookie` of the login cookie of the state whose hash is `state_key`:
    /// setting `value`, or clearing it when `None`.
    ///
    /// One cookie per login, its name suffixed with a short id of the state's hash, so
    /// logins started in parallel tabs each keep their own and all can finish. Abandoned
    /// ones expire with the login (`Max-Age` = `login_ttl`). Scoped to the callback's
    /// path; with an https `public_base_url` it is `Secure` and `__Host-` (which needs
    /// `Path=/`). `SameSite=Lax`: the IdP's redirect back is a top-level GET, which Lax
    /// lets the cookie ride along.
    fn login_cookie(&self, state_key: &str, value: Option<&str>) -> HeaderValue {
        let url = self.redirect_uri.url();
        let https = url.scheme() == "https";
        let path = match url.path() {
            path if !https && !path.contains(';') && path.starts_with('/') => path,
            _ => "/",
        };
        let max_age = match value {
            Some(_) => self.login_ttl.as_secs().max(1),
            None => 0,
        };
        let mut cookie = format!(
            "{}={}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax",
            self.login_cookie_name(state_key),
            value.unwrap_or_default(),
        );
        if https {
            cookie.push_str("; Secure");
        }
        // Always valid: the name is ASCII, the value base64url, the path a URL's
        // (percent-encoded) path; the fallback only keeps this infallible.
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("x=; Max-Age=0"))
    }

    fn login_cookie_name(&self, state_key: &str) -> String {
        let prefix = if self.redirect_uri.url().scheme() == "https" {
            HOST_LOGIN_COOKIE
        } else {
            LOGIN_COOKIE
        };
        let id = state_key.get(..LOGIN_COOKIE_ID_LEN).unwrap_or(state_key);
        format!("{prefix}-{id}")
    }

    fn store_failure(
        &self,
        step: &str,
        error: &StoreError,
        request_id: &HeaderValue,
    ) -> Response<ProxyBody> {
        tracing::warn!(provider = %self.name, step, %error, "OIDC login store refused");
        page(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("login is not available right now: {error}"),
            request_id,
        )
    }
}

/// The store key of a state or code: its SHA-256, so the store never holds one that
/// could be replayed.
fn store_key(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut key = String::with_capacity(64);
    for byte in digest.iter() {
        key.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        key.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    key
}

/// The value of the first cookie named `name` in the request's `Cookie` headers.
fn request_cookie<'a, B>(request: &'a Request<B>, name: &str) -> Option<&'a str> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| key.trim() == name)
        .map(|(_, value)| value.trim())
}

/// Whether two secrets (or their hashes) are equal, in time independent of where they
/// differ (their length is not secret).
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// The first value of each query parameter, decoded.
struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

fn query_params<B>(request: &Request<B>) -> Query {
    let query = request.uri().query().unwrap_or_default();
    Query(
        url::form_urlencoded::parse(query.as_bytes())
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect(),
    )
}

fn read_auth_code(content_type: &str, body: &Bytes) -> Option<String> {
    let code = match content_type {
        "application/json" => serde_json::from_slice::<Value>(body)
            .ok()?
            .get("auth_code")?
            .as_str()?
            .to_owned(),
        "application/x-www-form-urlencoded" => url::form_urlencoded::parse(body)
            .find(|(key, _)| key == "auth_code")?
            .1
            .into_owned(),
        _ => return None,
    };
    (!code.is_empty() && code.len() <= MAX_PARAM_LEN).then_some(code)
}

/// An OAuth error code as it may be shown: its `error` characters only, bounded.
fn oauth_error_code(text: &str) -> String {
    let code: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    if code.is_empty() {
        "an error".to_owned()
    } else {
        code
    }
}

/// Sends a request of the openidconnect client with the gateway's HTTP client (no
/// redirects, bounded time and size).
async fn send(
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let client = crate::auth::http_client_without_redirects().map_err(HttpError)?;
    let request = reqwest::Request::try_from(request)
        .map_err(|err| HttpError(format!("bad request: {err}")))?;
    let mut response = tokio::time::timeout(TOKEN_TIMEOUT, client.execute(request))
        .await
        .map_err(|_| HttpError(format!("no answer within {TOKEN_TIMEOUT:?}")))?
        .map_err(|err| HttpError(error_chain(&err)))?;
    let mut builder = http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| HttpError(error_chain(&err)))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_TOKEN_RESPONSE_BYTES {
            return Err(HttpError("the answer is too large".to_owned()));
        }
    }
    builder.body(body).map_err(|err| HttpError(err.to_string()))
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct HttpError(String);

fn redirect(target: &str, carries_code: bool) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::empty());
    *response.status_mut() = StatusCode::FOUND;
    let headers = response.headers_mut();
    match HeaderValue::from_str(target) {
        Ok(value) => {
            headers.insert(header::LOCATION, value);
        }
        Err(_) => {
            headers.insert(header::LOCATION, HeaderValue::from_static("/"));
        }
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if carries_code {
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    response
}

/// A short plain-text page that says what failed, with the request id.
fn page(status: StatusCode, message: &str, request_id: &HeaderValue) -> Response<ProxyBody> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let request_id = request_id.to_str().unwrap_or("-");
    let text = format!(
        "{} {reason}\n{message}\nrequest id: {request_id}\n",
        status.as_u16()
    );
    let mut response = Response::new(ProxyBody::full(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn method_not_allowed(allow: &'static str, request_id: &HeaderValue) -> Response<ProxyBody> {
    let mut response = page(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("use {allow}"),
        request_id,
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

fn json_response(status: StatusCode, body: &Value) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_keys_are_hashes() {
        let key = store_key("abc");
        assert_eq!(
            key,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(store_key("abd"), key);
    }

    #[test]
    fn auth_codes_are_read_from_json_or_forms() {
        let json = Bytes::from_static(br#"{"auth_code": "c1"}"#);
        assert_eq!(
            read_auth_code("application/json", &json).as_deref(),
            Some("c1")
        );
        let form = Bytes::from_static(b"x=1&auth_code=c%2B2");
        assert_eq!(
            read_auth_code("application/x-www-form-urlencoded", &form).as_deref(),
            Some("c+2")
        );
        assert_eq!(read_auth_code("text/plain", &json), None);
        assert_eq!(
            read_auth_code("application/json", &Bytes::from_static(b"{}")),
            None
        );
    }

    #[test]
    fn secrets_are_compared_whole() {
        assert!(same_secret(&store_key("a"), &store_key("a")));
        assert!(!same_secret(&store_key("a"), &store_key("b")));
        assert!(!same_secret(&store_key("a"), ""));
        assert!(!same_secret("", &store_key("a")));
    }

    #[test]
    fn the_login_cookie_is_read_by_its_exact_name() {
        let request = Request::get("/auth/callback")
            .header(header::COOKIE, "fluxlit-login-ab=x1; other=2")
            .header(header::COOKIE, "fluxlit-login-abc=y2;fluxlit-login-abc=z3")
            .body(())
            .unwrap();
        assert_eq!(request_cookie(&request, "fluxlit-login-ab"), Some("x1"));
        assert_eq!(request_cookie(&request, "fluxlit-login-abc"), Some("y2"));
        assert_eq!(request_cookie(&request, "fluxlit-login-a"), None);
        assert_eq!(request_cookie(&request, "other"), Some("2"));
    }

    #[test]
    fn a_login_record_without_a_browser_hash_matches_no_browser() {
        let old: LoginState =
            serde_json::from_str(r#"{"verifier":"v","nonce":"n","next":"/"}"#).unwrap();
        assert_eq!(old.browser, "");
        assert!(!same_secret(&store_key("anything"), &old.browser));
    }

    #[test]
    fn oauth_error_codes_are_shown_tame() {
        assert_eq!(oauth_error_code("access_denied"), "access_denied");
        assert_eq!(oauth_error_code("<script>"), "script");
        assert_eq!(oauth_error_code("\r\n"), "an error");
    }
}
