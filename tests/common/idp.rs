//! The identity provider of the OIDC and session tests, written here as an axum app over
//! real sockets: it publishes discovery and a JWKS (rsa-a of `tests/fixtures/jose`),
//! answers `/authorize` with a code at once (the test follows the gateway's redirect to
//! it, as a browser would), and `/token` checks client authentication, the code, the
//! redirect URI and the PKCE verifier before returning an id_token signed with rsa-a —
//! or, when told to, a bad one. Who logs in is Ada (`SUB`, `ada@example.com`) unless a
//! test says otherwise ([`Idp::log_in_as`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use url::Url;

use super::auth::*;
use super::{Reachable, Reply, TRUSTED, get_from, send, within};

pub const CLIENT_ID: &str = "fluxlit-web";
pub const CLIENT_SECRET: &str = "test-only oidc client secret (with spaces & symbols)";
pub const SUB: &str = "idp-user-42";

// ---------------------------------------------------------------------------------------
// The test identity provider.
// ---------------------------------------------------------------------------------------

/// What the IdP's token endpoint puts in the id_token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdTokenMode {
    Good,
    WrongNonce,
    WrongAudience,
    Expired,
    AlgNone,
    /// Signed with rsa-b, naming kid rsa-b: a key the JWKS does not have.
    UnknownKey,
    /// Signed with rsa-b, naming kid rsa-a: the JWKS key does not verify it.
    ForgedSignature,
    WrongIssuer,
    /// `aud` holds the client and another party, without `azp`.
    SeveralAudiencesNoAzp,
}

#[derive(Debug)]
pub struct Grant {
    pub challenge: String,
    pub nonce: String,
    pub redirect_uri: String,
    /// The user's claims as they were when the login reached `/authorize`.
    pub user: Map<String, Value>,
}

#[derive(Debug)]
pub struct IdpState {
    pub issuer: String,
    pub mode: Mutex<IdTokenMode>,
    pub discovery_failing: AtomicBool,
    pub end_session: bool,
    pub grants: Mutex<HashMap<String, Grant>>,
    /// Changes to the default user's claims for the logins that reach `/authorize` from
    /// now on (a `null` removes a claim).
    pub user: Mutex<Map<String, Value>>,
    pub next_code: AtomicUsize,
    pub discovery_hits: AtomicUsize,
    pub token_hits: AtomicUsize,
    /// Why the last token request was refused, if it was.
    pub token_refusal: Mutex<Option<String>>,
    /// When set, tokens come with a refresh token and live this many seconds.
    pub refresh_tokens_with_life: Mutex<Option<u64>>,
    /// The refresh tokens issued, and whether each may still be used (rotated and
    /// revoked ones may not).
    pub refresh_tokens: Mutex<HashMap<String, bool>>,
    pub refresh_hits: AtomicUsize,
}

pub struct Idp {
    pub addr: SocketAddr,
    pub state: Arc<IdpState>,
}

impl Idp {
    pub async fn spawn(end_session: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the IdP");
        let addr = listener.local_addr().expect("IdP address");
        let state = Arc::new(IdpState {
            issuer: format!("http://{addr}"),
            mode: Mutex::new(IdTokenMode::Good),
            discovery_failing: AtomicBool::new(false),
            end_session,
            grants: Mutex::new(HashMap::new()),
            user: Mutex::new(Map::new()),
            next_code: AtomicUsize::new(0),
            discovery_hits: AtomicUsize::new(0),
            token_hits: AtomicUsize::new(0),
            token_refusal: Mutex::new(None),
            refresh_tokens_with_life: Mutex::new(None),
            refresh_tokens: Mutex::new(HashMap::new()),
            refresh_hits: AtomicUsize::new(0),
        });
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(|| async { jwks(&[RSA_A_JWK]) }))
            .route("/authorize", get(authorize))
            .route("/token", post(token_endpoint))
            .with_state(Arc::clone(&state));
        tokio::spawn(async move {
            axum::serve(listener, router).await.expect("the IdP serves");
        });
        Self { addr, state }
    }

    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    pub fn set_mode(&self, mode: IdTokenMode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// The logins that reach `/authorize` from now on are of the user whose id_token
    /// claims are the default user's with `changes` merged in (a `null` removes a claim):
    /// `json!({"email": "bob@example.com", "groups": ["staff"]})`. The claims are taken
    /// at `/authorize`, so each login keeps the user it started with.
    pub fn log_in_as(&self, changes: Value) {
        let Value::Object(changes) = changes else {
            panic!("claim changes are a JSON object: {changes}");
        };
        *self.state.user.lock().unwrap() = changes;
    }

    pub fn token_hits(&self) -> usize {
        self.state.token_hits.load(Ordering::SeqCst)
    }

    /// From now on, tokens come with a refresh token and live `seconds`.
    pub fn issue_refresh_tokens(&self, seconds: u64) {
        *self.state.refresh_tokens_with_life.lock().unwrap() = Some(seconds);
    }

    /// Revokes every refresh token issued so far (the user was disabled).
    pub fn revoke_refresh_tokens(&self) {
        for valid in self.state.refresh_tokens.lock().unwrap().values_mut() {
            *valid = false;
        }
    }

    pub fn refresh_hits(&self) -> usize {
        self.state.refresh_hits.load(Ordering::SeqCst)
    }
}

pub async fn discovery(State(state): State<Arc<IdpState>>) -> Response {
    state.discovery_hits.fetch_add(1, Ordering::SeqCst);
    if state.discovery_failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let issuer = &state.issuer;
    let mut document = discovery_document(issuer);
    document["token_endpoint_auth_methods_supported"] = json!(["client_secret_basic"]);
    document["code_challenge_methods_supported"] = json!(["S256"]);
    if state.end_session {
        document["end_session_endpoint"] = json!(format!("{issuer}/logout"));
    }
    axum::Json(document).into_response()
}

/// Logs the user in at once: records the request and sends the browser back with a code.
pub async fn authorize(
    State(state): State<Arc<IdpState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let param = |name: &str| query.get(name).cloned().unwrap_or_default();
    if param("response_type") != "code"
        || param("client_id") != CLIENT_ID
        || param("code_challenge_method") != "S256"
        || param("code_challenge").is_empty()
        || param("nonce").is_empty()
        || param("state").is_empty()
    {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    let code = format!("code-{}", state.next_code.fetch_add(1, Ordering::SeqCst));
    state.grants.lock().unwrap().insert(
        code.clone(),
        Grant {
            challenge: param("code_challenge"),
            nonce: param("nonce"),
            redirect_uri: param("redirect_uri"),
            user: state.user.lock().unwrap().clone(),
        },
    );
    let mut back = Url::parse(&param("redirect_uri")).expect("redirect_uri is a URL");
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &param("state"));
    (
        StatusCode::FOUND,
        [(http::header::LOCATION, back.to_string())],
    )
        .into_response()
}

pub async fn token_endpoint(
    State(state): State<Arc<IdpState>>,
    headers: http::HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    state.token_hits.fetch_add(1, Ordering::SeqCst);
    let refuse = |why: &str| {
        *state.token_refusal.lock().unwrap() = Some(why.to_owned());
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": why})),
        )
            .into_response()
    };
    let expected_auth = format!(
        "Basic {}",
        standard_base64(format!("{CLIENT_ID}:{}", form_encode(CLIENT_SECRET)).as_bytes())
    );
    if headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(expected_auth.as_str())
    {
        return refuse("client authentication failed");
    }
    let param = |name: &str| form.get(name).cloned().unwrap_or_default();
    if param("grant_type") == "refresh_token" {
        state.refresh_hits.fetch_add(1, Ordering::SeqCst);
        let mut issued = state.refresh_tokens.lock().unwrap();
        // Rotating: a refresh token is good for one use.
        if issued.insert(param("refresh_token"), false) != Some(true) {
            return refuse("unknown, used or revoked refresh token");
        }
        drop(issued);
        return axum::Json(state.tokens_with_refresh(None)).into_response();
    }
    if param("grant_type") != "authorization_code" {
        return refuse("grant_type");
    }
    let Some(grant) = state.grants.lock().unwrap().remove(&param("code")) else {
        return refuse("unknown or used code");
    };
    if param("redirect_uri") != grant.redirect_uri {
        return refuse("redirect_uri differs from the authorization request's");
    }
    if b64(&Sha256::digest(param("code_verifier").as_bytes())) != grant.challenge {
        return refuse("PKCE: the verifier does not match the S256 challenge");
    }
    let mode = *state.mode.lock().unwrap();
    let id_token = id_token(&state.issuer, &grant.nonce, mode, &grant.user);
    axum::Json(state.tokens_with_refresh(Some(id_token))).into_response()
}

impl IdpState {
    /// A token response: with a fresh refresh token when the IdP issues them.
    fn tokens_with_refresh(&self, id_token: Option<String>) -> serde_json::Value {
        let life = *self.refresh_tokens_with_life.lock().unwrap();
        let mut response = json!({
            "access_token": "idp-access-token",
            "token_type": "Bearer",
            "expires_in": life.unwrap_or(300),
        });
        if let Some(id_token) = id_token {
            response["id_token"] = json!(id_token);
        }
        if life.is_some() {
            let token = format!("refresh-{}", self.next_code.fetch_add(1, Ordering::SeqCst));
            self.refresh_tokens
                .lock()
                .unwrap()
                .insert(token.clone(), true);
            response["refresh_token"] = json!(token);
        }
        response
    }
}

/// The id_token of a login: the default user's claims with `changes` merged in (a
/// `null` removes a claim), made as `mode` says.
pub fn id_token(
    issuer: &str,
    nonce: &str,
    mode: IdTokenMode,
    changes: &Map<String, Value>,
) -> String {
    let now = now();
    let mut claims = json!({
        "iss": issuer,
        "sub": SUB,
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 300,
        "nonce": nonce,
        "email": "ada@example.com",
        "name": "Ada Lovelace",
    });
    if let Value::Object(claims) = &mut claims {
        for (name, value) in changes {
            match value {
                Value::Null => claims.remove(name),
                value => claims.insert(name.clone(), value.clone()),
            };
        }
    }
    match mode {
        IdTokenMode::Good => {}
        IdTokenMode::WrongNonce => claims["nonce"] = json!("a-nonce-of-another-login"),
        IdTokenMode::WrongAudience => claims["aud"] = json!("another-client"),
        IdTokenMode::Expired => {
            claims["iat"] = json!(now - 3600);
            claims["exp"] = json!(now - 1800);
        }
        IdTokenMode::WrongIssuer => claims["iss"] = json!("https://impostor.example"),
        IdTokenMode::SeveralAudiencesNoAzp => claims["aud"] = json!([CLIENT_ID, "another-client"]),
        IdTokenMode::AlgNone => {
            return format!(
                "{}.",
                signing_input(&json!({"alg": "none", "typ": "JWT"}), &claims)
            );
        }
        IdTokenMode::UnknownKey => {
            return token(Algorithm::RS256, Some("rsa-b"), Key::RsaB, &claims);
        }
        IdTokenMode::ForgedSignature => {
            return token(Algorithm::RS256, Some("rsa-a"), Key::RsaB, &claims);
        }
    }
    token(Algorithm::RS256, Some("rsa-a"), Key::RsaA, &claims)
}

/// RFC 4648 base64 with padding (HTTP Basic authentication).
pub fn standard_base64(bytes: &[u8]) -> String {
    let url_safe = b64(bytes).replace('-', "+").replace('_', "/");
    let padding = (4 - url_safe.len() % 4) % 4;
    url_safe + &"=".repeat(padding)
}

pub fn form_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

// ---------------------------------------------------------------------------------------
// A browser's steps through a login.
// ---------------------------------------------------------------------------------------

pub fn location(reply: &Reply) -> &str {
    reply
        .header("location")
        .unwrap_or_else(|| panic!("no Location in {} {}", reply.status, reply.text()))
}

/// `GET /auth/login?next=<next>` (next form-encoded; no `next` when `None`).
pub async fn login(gateway: &impl Reachable, next: Option<&str>) -> Reply {
    let path = match next {
        Some(next) => format!("/auth/login?next={}", form_encode(next)),
        None => "/auth/login".to_owned(),
    };
    get_from(TRUSTED, gateway, &path, &[]).await
}

/// Follows a 302 to the IdP's authorization endpoint, as a browser would; returns the
/// `code` and `state` it sends back, and the redirect URI it sends them to.
pub async fn authorize_at_idp(idp: &Idp, authorize_url: &str) -> (String, String, String) {
    let url = Url::parse(authorize_url).expect("the login redirects to a URL");
    assert_eq!(
        url.origin().ascii_serialization(),
        idp.issuer(),
        "the login redirects to the IdP"
    );
    let target = format!("{}?{}", url.path(), url.query().unwrap_or_default());
    let reply = within(
        "the IdP's authorization endpoint",
        send(idp.addr, super::get(idp.addr, &target, &[])),
    )
    .await;
    assert_eq!(reply.status, 302, "the IdP authorizes: {}", reply.text());
    let back = Url::parse(location(&reply)).expect("the IdP redirects to a URL");
    let param = |name: &str| {
        back.query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
            .unwrap_or_else(|| panic!("no {name} in {back}"))
    };
    let redirect_uri = format!("{}{}", back.origin().ascii_serialization(), back.path());
    (param("code"), param("state"), redirect_uri)
}

/// The `Set-Cookie` headers of a reply.
pub fn set_cookies(reply: &Reply) -> Vec<&str> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().expect("a Set-Cookie is text"))
        .collect()
}

/// The one login cookie a login sets, as the browser sends it back: `name=value`.
pub fn login_cookie(reply: &Reply) -> String {
    let cookies = set_cookies(reply);
    assert_eq!(cookies.len(), 1, "one login cookie: {cookies:?}");
    cookies[0]
        .split(';')
        .next()
        .expect("a name=value")
        .to_owned()
}

/// The browser's answer to the IdP's redirect: `GET /auth/callback?code&state`, with the
/// `Cookie` header `cookie` (`name=value` pairs) when it has one.
pub async fn callback(
    gateway: &impl Reachable,
    code: &str,
    state: &str,
    cookie: Option<&str>,
) -> Reply {
    let path = format!(
        "/auth/callback?code={}&state={}",
        form_encode(code),
        form_encode(state)
    );
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    get_from(TRUSTED, gateway, &path, &headers).await
}

/// A `Set-Cookie`'s name, value and attributes (attribute names lowercased).
pub fn parse_set_cookie(text: &str) -> (String, String, HashMap<String, String>) {
    let mut parts = text.split(';').map(str::trim);
    let (name, value) = parts
        .next()
        .and_then(|pair| pair.split_once('='))
        .unwrap_or_else(|| panic!("a name=value first: {text}"));
    let attributes = parts
        .map(|part| match part.split_once('=') {
            Some((key, value)) => (key.to_ascii_lowercase(), value.to_owned()),
            None => (part.to_ascii_lowercase(), String::new()),
        })
        .collect();
    (name.to_owned(), value.to_owned(), attributes)
}

/// A `Set-Cookie` attribute's value (empty for a flag), by lowercased name.
pub fn attribute<'a>(attributes: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    attributes.get(name).map(String::as_str)
}
