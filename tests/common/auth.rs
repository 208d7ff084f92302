//! What the auth tests share: the test keys of `tests/fixtures/jose`, tokens both well
//! made and hand-built the way an attacker would build them, `WWW-Authenticate`
//! challenges, a JWKS server whose keys and health change at runtime, the providers of
//! the test configs, and what an identity provider publishes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::response::IntoResponse;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::{ConfigText, Reachable, Reply, UNTRUSTED, get_from};

// ---------------------------------------------------------------------------------------
// Keys and tokens.
// ---------------------------------------------------------------------------------------

pub const RSA_A_PEM: &str = include_str!("../fixtures/jose/rsa-a.pem");
pub const RSA_A_PUB_PEM: &str = include_str!("../fixtures/jose/rsa-a.pub.pem");
pub const RSA_A_JWK: &str = include_str!("../fixtures/jose/rsa-a.jwk.json");
pub const RSA_B_PEM: &str = include_str!("../fixtures/jose/rsa-b.pem");
pub const RSA_B_JWK: &str = include_str!("../fixtures/jose/rsa-b.jwk.json");
pub const EC_A_PEM: &str = include_str!("../fixtures/jose/ec-a.p8.pem");
pub const EC_A_JWK: &str = include_str!("../fixtures/jose/ec-a.jwk.json");
pub const ED_A_PEM: &str = include_str!("../fixtures/jose/ed-a.p8.pem");
pub const ED_B_PEM: &str = include_str!("../fixtures/jose/ed-b.p8.pem");

pub const ISSUER: &str = "https://issuer.fluxlit.test";
pub const AUDIENCE: &str = "fluxlit-api";
/// The HS256 secret of the tests' providers (test-only, 32+ bytes).
pub const HS_SECRET: &str = "test-only HS256 secret, forty-odd bytes long";

/// A JWKS document holding the given JWKs.
pub fn jwks(keys: &[&str]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|jwk| serde_json::from_str(jwk).expect("fixture JWK is JSON"))
        .collect();
    json!({ "keys": keys }).to_string()
}

/// A signing key.
#[derive(Debug, Clone, Copy)]
pub enum Key<'a> {
    Hmac(&'a [u8]),
    RsaA,
    RsaB,
    EcA,
}

impl Key<'_> {
    pub fn encoding(self) -> EncodingKey {
        match self {
            Key::Hmac(secret) => EncodingKey::from_secret(secret).expect("HMAC key"),
            Key::RsaA => EncodingKey::from_rsa_pem(RSA_A_PEM.as_bytes()).expect("rsa-a.pem"),
            Key::RsaB => EncodingKey::from_rsa_pem(RSA_B_PEM.as_bytes()).expect("rsa-b.pem"),
            Key::EcA => EncodingKey::from_ec_pem(EC_A_PEM.as_bytes()).expect("ec-a.p8.pem"),
        }
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Claims every provider of the tests accepts: issuer, audience, `sub`, `iat` now and
/// `exp` in five minutes.
pub fn claims(sub: &str) -> Value {
    let now = now();
    json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300 })
}

/// `claims(sub)` with `changes` merged in (a `null` removes the claim).
pub fn claims_with(sub: &str, changes: Value) -> Value {
    let mut claims = claims(sub);
    let object = claims.as_object_mut().expect("claims are an object");
    for (name, value) in changes.as_object().expect("changes are an object") {
        if value.is_null() {
            object.remove(name);
        } else {
            object.insert(name.clone(), value.clone());
        }
    }
    claims
}

/// A token signed the ordinary way (jsonwebtoken's own header).
pub fn token(alg: Algorithm, kid: Option<&str>, key: Key<'_>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key.encoding()).expect("sign the token")
}

/// An HS256 token with [`HS_SECRET`].
pub fn hs256(claims: &Value) -> String {
    token(
        Algorithm::HS256,
        None,
        Key::Hmac(HS_SECRET.as_bytes()),
        claims,
    )
}

/// An RS256 token signed with rsa-a, naming its kid.
pub fn rs256_a(claims: &Value) -> String {
    token(Algorithm::RS256, Some("rsa-a"), Key::RsaA, claims)
}

/// base64url without padding (RFC 7515 §2).
pub fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        let symbols = chunk.len() + 1;
        for i in 0..symbols {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// `header.payload`, both hand-written JSON, as an attacker would build them.
pub fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// A hand-built token: any header at all, signed with `key` as `alg`.
pub fn hand_built(header: &Value, claims: &Value, alg: Algorithm, key: Key<'_>) -> String {
    let input = signing_input(header, claims);
    let signature =
        jsonwebtoken::crypto::sign(input.as_bytes(), &key.encoding(), alg).expect("sign");
    format!("{input}.{signature}")
}

/// `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

// ---------------------------------------------------------------------------------------
// WWW-Authenticate.
// ---------------------------------------------------------------------------------------

/// A parsed `WWW-Authenticate` challenge: its scheme and its parameters in order.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// `Bearer` with `params`, in order.
    pub fn bearer(params: &[(&str, &str)]) -> Self {
        Self {
            scheme: "Bearer".into(),
            params: params
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn names(&self) -> Vec<&str> {
        self.params.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// Parses `Scheme name="value", name="value"` (quoted values without escapes, which is
/// what the gateway emits). Panics on anything else: a malformed challenge is a failure.
pub fn parse_challenge(text: &str) -> Challenge {
    let (scheme, mut rest) = text.split_once(' ').unwrap_or((text, ""));
    let mut params = Vec::new();
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad auth-param in {text:?}"));
        let (value, after) = after
            .split_once('"')
            .unwrap_or_else(|| panic!("unterminated quoted-string in {text:?}"));
        params.push((name.trim().to_owned(), value.to_owned()));
        rest = match after.strip_prefix(", ") {
            Some(next) => next,
            None if after.is_empty() => "",
            None => panic!("unexpected {after:?} in {text:?}"),
        };
    }
    Challenge {
        scheme: scheme.to_owned(),
        params,
    }
}

/// The response's one `WWW-Authenticate` challenge.
pub fn challenge_of(headers: &http::HeaderMap) -> Challenge {
    let values: Vec<&str> = headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().expect("challenge is ASCII"))
        .collect();
    assert_eq!(values.len(), 1, "exactly one WWW-Authenticate: {headers:?}");
    parse_challenge(values[0])
}

/// Asserts the answer RFC 6750 §3.1 gives an invalid token: 401 with `Bearer
/// realm="<realm>", error="invalid_token", error_description="..."` naming `reason`.
pub fn assert_invalid_token(reply: &Reply, realm: &str, reason: &str) {
    assert_eq!(reply.status, 401, "body: {}", reply.text());
    let challenge = challenge_of(&reply.headers);
    assert_eq!(challenge.scheme, "Bearer", "{challenge:?}");
    assert_eq!(
        challenge.names(),
        ["realm", "error", "error_description"],
        "{challenge:?}"
    );
    assert_eq!(challenge.param("realm"), Some(realm), "{challenge:?}");
    assert_eq!(
        challenge.param("error"),
        Some("invalid_token"),
        "{challenge:?}"
    );
    let description = challenge.param("error_description").unwrap_or_default();
    assert!(
        description.contains(reason),
        "error_description {description:?} should say {reason:?}"
    );
    assert!(
        reply.text().contains(reason),
        "the body says why too: {}",
        reply.text()
    );
}

/// Asserts RFC 6750 §3.1's answer to a request without credentials: 401 with a bare
/// `Bearer realm="<realm>"` challenge, no error code.
pub fn assert_missing_token(reply: &Reply, realm: &str) {
    assert_eq!(reply.status, 401, "body: {}", reply.text());
    let challenge = challenge_of(&reply.headers);
    assert_eq!(challenge, Challenge::bearer(&[("realm", realm)]));
}

// ---------------------------------------------------------------------------------------
// A JWKS server.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct JwksState {
    document: Mutex<String>,
    cache_control: Mutex<Option<String>>,
    failing: AtomicBool,
    hits: AtomicUsize,
}

/// An axum server publishing a JWKS at `/jwks.json`. Its keys, its `Cache-Control`
/// and whether it answers 500 change at runtime; it counts every request. Responses say
/// `Connection: close`, so once [`JwksServer::stop`] closes the listener nothing of it
/// is left to answer.
#[derive(Debug)]
pub struct JwksServer {
    pub addr: SocketAddr,
    state: Arc<JwksState>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn spawn(document: String) -> Self {
        let state = Arc::new(JwksState {
            document: Mutex::new(document),
            ..JwksState::default()
        });
        let shared = Arc::clone(&state);
        let router = Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let state = Arc::clone(&shared);
                async move {
                    state.hits.fetch_add(1, Ordering::SeqCst);
                    let mut headers = http::HeaderMap::new();
                    headers.insert(http::header::CONNECTION, "close".parse().unwrap());
                    if state.failing.load(Ordering::SeqCst) {
                        return (
                            http::StatusCode::INTERNAL_SERVER_ERROR,
                            headers,
                            String::new(),
                        )
                            .into_response();
                    }
                    headers.insert(
                        http::header::CONTENT_TYPE,
                        "application/json".parse().unwrap(),
                    );
                    if let Some(value) = state.cache_control.lock().unwrap().as_deref() {
                        headers.insert(http::header::CACHE_CONTROL, value.parse().unwrap());
                    }
                    let document = state.document.lock().unwrap().clone();
                    (http::StatusCode::OK, headers, document).into_response()
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind JWKS server");
        let addr = listener.local_addr().expect("JWKS server address");
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("JWKS server serves");
        });
        Self { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    pub fn publish(&self, document: String) {
        *self.state.document.lock().unwrap() = document;
    }

    pub fn set_cache_control(&self, value: Option<&str>) {
        *self.state.cache_control.lock().unwrap() = value.map(str::to_owned);
    }

    /// While failing, every request gets 500.
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Closes the listener: connections are refused from now on.
    pub async fn stop(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------
// Clients.
// ---------------------------------------------------------------------------------------

/// `GET path` from an untrusted client with `Authorization: Bearer <token>`.
pub async fn get_with_token(gateway: &impl Reachable, path: &str, token: &str) -> Reply {
    let authorization = bearer(token);
    get_from(
        UNTRUSTED,
        gateway,
        path,
        &[("authorization", authorization.as_str())],
    )
    .await
}

// ---------------------------------------------------------------------------------------
// Providers in the test configs.
// ---------------------------------------------------------------------------------------

/// The issuer and audience of the tokens an OIDC login mints.
pub const MINT_ISSUER: &str = "https://gateway.fluxlit.test";
pub const MINT_AUDIENCE: &str = "fluxlit-app";

impl ConfigText {
    /// `[auth.providers.<name>]`: a jwt provider for [`ISSUER`] and [`AUDIENCE`] taking
    /// `algorithms` (as TOML: `["HS256"]`), with its key `lines`.
    pub fn jwt_provider(self, name: &str, algorithms: &str, lines: &str) -> Self {
        self.jwt(name, ISSUER, AUDIENCE, algorithms).with(lines)
    }

    /// A jwt provider taking HS256 with the secret in the file `secret` next to the
    /// config (write it with [`HS_SECRET`]).
    pub fn hs256_provider(self, name: &str) -> Self {
        self.jwt_provider(name, "[\"HS256\"]", "hs256_secret = { file = \"secret\" }")
    }

    /// A jwt provider taking RS256 with the keys at `jwks_url`.
    pub fn jwks_provider(self, name: &str, jwks_url: &str) -> Self {
        self.jwt_provider(name, "[\"RS256\"]", &format!("jwks_url = \"{jwks_url}\""))
    }

    /// The jwt provider an OIDC login mints with: HS256 for [`MINT_ISSUER`] and
    /// [`MINT_AUDIENCE`], the secret in the file `hs256.secret` next to the config.
    pub fn mint_provider(self, name: &str) -> Self {
        self.jwt(name, MINT_ISSUER, MINT_AUDIENCE, "[\"HS256\"]")
            .with("hs256_secret = { file = \"hs256.secret\" }")
    }
}

/// The file [`ConfigText::hs256_provider`] reads, holding [`HS_SECRET`].
pub const SECRET_FILE: [(&str, &str); 1] = [("secret", HS_SECRET)];

/// `/api` (route `api`, behind provider `main`: [`ConfigText::hs256_provider`]) and `/`
/// (route `open`, no auth), both to the upstream `app` at `upstream`.
pub fn api_behind_main(upstream: SocketAddr, open: &str) -> ConfigText {
    ConfigText::new()
        .upstream("app", upstream)
        .guarded_route("api", "/api", "app", "main")
        .route(open, "/", "app")
        .hs256_provider("main")
}

// ---------------------------------------------------------------------------------------
// Identity providers.
// ---------------------------------------------------------------------------------------

/// An OpenID provider's discovery document for `issuer`: the code flow, RS256 id_tokens,
/// and the endpoints `/authorize`, `/token` and `/jwks` under the issuer.
pub fn discovery_document(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    })
}
