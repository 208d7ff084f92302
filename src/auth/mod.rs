//! Authentication at the edge: a route naming a provider is checked before its upstream
//! is contacted, and the upstream gets the verified identity as headers.
//!
//! - `jwt`: a bearer token in `Authorization`, verified with an HMAC secret or a JWKS.
//! - `trusted_proxy_user`: forward auth; the identity that the proxy in front put in
//!   `trust.remote_user_header`, believed from the provider's `trusted_peers` only. The
//!   header itself never reaches an upstream (the header policy drops it everywhere).
//! - `oidc`: a browser session ([`oidc::session`]) from a login the gateway serves
//!   ([`oidc`]); the token it may mint for the app is checked by its `mint` jwt provider.
//!
//! Failures answer in RFC 6750 terms: 401 with a `WWW-Authenticate: Bearer` challenge,
//! 403 `insufficient_scope`, and 503 when the provider's keys are not available.

pub mod allow;
pub(crate) mod background;
pub mod claims;
pub mod fetch;
pub mod identity;
pub mod jwks;
pub mod jwt;
pub mod oidc;
pub mod secrets;
pub mod token;
pub mod verified;

pub use fetch::{HttpClientError, http_client, http_client_without_redirects};

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use ipnet::IpNet;
use serde_json::Value;

use crate::peer::canonical_ip;
use claims::{Claims, scopes};
use jwt::{JwtVerifier, TokenError};

pub const SUB_HEADER: HeaderName = HeaderName::from_static("x-fluxlit-sub");
pub const SCOPE_HEADER: HeaderName = HeaderName::from_static("x-fluxlit-scope");

/// A compiled provider.
#[derive(Debug)]
pub struct Provider {
    pub name: Arc<str>,
    /// `Bearer realm="..."`, precomputed.
    challenge: HeaderValue,
    pub check: Check,
    /// `(claim, header)` pairs copied to the upstream on top of sub and scope.
    claim_headers: Vec<(String, HeaderName)>,
    /// The settings it was built from, for reuse and `/snapshot`.
    pub settings: crate::config::model::AuthProvider,
}

#[derive(Debug)]
pub enum Check {
    Jwt(JwtVerifier),
    /// Forward auth: the remote-user header, believed only from these peers.
    TrustedProxyUser {
        trusted_peers: Box<[IpNet]>,
    },
    /// A login served by the gateway; a route that names it needs a browser session.
    Oidc(Arc<oidc::OidcProvider>),
}

impl Provider {
    pub fn new(
        name: &str,
        settings: crate::config::model::AuthProvider,
        check: Check,
        claim_headers: Vec<(String, HeaderName)>,
    ) -> Self {
        let realm = settings.realm.clone().unwrap_or_else(|| name.to_owned());
        let realm: String = realm
            .chars()
            .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
            .collect();
        let challenge = HeaderValue::from_str(&format!("Bearer realm=\"{realm}\""))
            .unwrap_or(HeaderValue::from_static("Bearer"));
        Self {
            name: name.into(),
            challenge,
            check,
            claim_headers,
            settings,
        }
    }

    pub fn jwks_status(&self) -> Option<jwks::JwksStatus> {
        match &self.check {
            Check::Jwt(verifier) => verifier.jwks().map(|cache| cache.status()),
            Check::Oidc(oidc) => oidc.discovery.jwks_status(),
            Check::TrustedProxyUser { .. } => None,
        }
    }

    /// Discovery and store of an oidc provider, for `/snapshot`.
    pub fn oidc_status(&self) -> Option<oidc::OidcStatus> {
        match &self.check {
            Check::Oidc(oidc) => Some(oidc.status()),
            Check::Jwt(_) | Check::TrustedProxyUser { .. } => None,
        }
    }
}

/// A route's auth requirement.
#[derive(Debug)]
pub struct RouteAuth {
    pub provider: Arc<Provider>,
    pub required_scopes: Box<[String]>,
    /// Who may come in (`allow`); `None`: every authenticated user.
    pub allow: Option<allow::Allow>,
}

/// Who a request comes from, as the upstream will be told.
#[derive(Debug)]
pub struct Identity {
    /// Identity headers for the upstream (`x-fluxlit-sub`, `x-fluxlit-scope`, claims).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// When the credential stops being valid (a token's `exp`): WebSockets opened with
    /// it are closed then.
    pub expires_at: Option<SystemTime>,
    /// What the signed identity assertion states.
    pub asserted: identity::Asserted,
    /// The browser session the request came with: a WebSocket opened in it is closed
    /// when it ends.
    pub session: Option<oidc::session::SessionWatch>,
}

/// Why a request was not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credentials at all (401, a bare challenge as RFC 6750 §3.1 asks).
    Missing { challenge: HeaderValue },
    /// Credentials that do not verify (401 `invalid_token`).
    Invalid {
        challenge: HeaderValue,
        description: String,
    },
    /// A valid token without a required scope (403 `insufficient_scope`).
    InsufficientScope {
        challenge: HeaderValue,
        scope: String,
    },
    /// Forward auth without a user from one of the provider's `trusted_peers` (401, no
    /// bearer challenge).
    NoTrustedUser,
    /// The provider cannot verify anything right now (503).
    Unavailable { description: String },
    /// A browser session route without a live session: a page load is sent to `login`
    /// (with `next`), anything else gets 401.
    LoginRequired { login: String },
    /// A session request that may come from another origin (403).
    CrossOrigin { origin: String },
    /// An authenticated user the route's `allow` does not admit (403). `user` names them
    /// (email, name or sub); `logout` is the login session's logout path, which a page
    /// load is shown (`None` for a bearer token: nothing to log out of).
    NotAllowed {
        user: String,
        logout: Option<String>,
    },
}

impl AuthFailure {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Missing { .. }
            | Self::Invalid { .. }
            | Self::NoTrustedUser
            | Self::LoginRequired { .. } => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope { .. } | Self::CrossOrigin { .. } | Self::NotAllowed { .. } => {
                StatusCode::FORBIDDEN
            }
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `WWW-Authenticate` value, where there is one.
    pub fn challenge(&self) -> Option<HeaderValue> {
        let text = match self {
            Self::Missing { challenge } => return Some(challenge.clone()),
            Self::Invalid {
                challenge,
                description,
            } => format!(
                "{}, error=\"invalid_token\", error_description=\"{}\"",
                challenge.to_str().unwrap_or("Bearer"),
                quoted_safe(description)
            ),
            Self::InsufficientScope { challenge, scope } => format!(
                "{}, error=\"insufficient_scope\", scope=\"{}\"",
                challenge.to_str().unwrap_or("Bearer"),
                quoted_safe(scope)
            ),
            Self::NoTrustedUser
            | Self::Unavailable { .. }
            | Self::LoginRequired { .. }
            | Self::CrossOrigin { .. }
            | Self::NotAllowed { .. } => return None,
        };
        HeaderValue::from_str(&text).ok()
    }

    /// The `reason` label of the failure in metrics: a small fixed set.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing { .. } => "missing",
            Self::Invalid { description, .. } => {
                // The verifier's descriptions are fixed texts; an expired token is worth
                // telling apart from a forged one.
                if description.contains("expired") {
                    "expired"
                } else {
                    "invalid"
                }
            }
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::NoTrustedUser => "no_trusted_user",
            Self::Unavailable { .. } => "unavailable",
            Self::LoginRequired { .. } => "no_session",
            Self::CrossOrigin { .. } => "cross_origin",
            Self::NotAllowed { .. } => "not_allowed",
        }
    }

    /// One line for the response body and the log (never a token or a secret).
    pub fn message(&self) -> String {
        match self {
            Self::Missing { .. } => "a bearer token is required".to_owned(),
            Self::Invalid { description, .. } => description.clone(),
            Self::InsufficientScope { scope, .. } => format!("the token lacks the scope {scope:?}"),
            Self::NoTrustedUser => {
                "the user must be authenticated by the proxy in front".to_owned()
            }
            Self::Unavailable { description } => description.clone(),
            Self::LoginRequired { .. } => "a login is required".to_owned(),
            Self::CrossOrigin { origin } => format!(
                "a request that changes something, or opens a WebSocket, in a login session \
                 must come from {origin}"
            ),
            Self::NotAllowed { user, .. } => {
                format!("{user:?} is logged in, but not allowed on this route")
            }
        }
    }
}

/// Keeps a description inside a quoted-string: no quotes, backslashes or controls.
fn quoted_safe(text: &str) -> String {
    text.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

impl RouteAuth {
    /// Checks the request's credentials; `peer` is the address the request came from
    /// (the TCP peer). Nothing is sent upstream before this returns.
    pub async fn authenticate(
        &self,
        method: &Method,
        headers: &HeaderMap,
        peer: IpAddr,
        remote_user_header: &HeaderName,
    ) -> Result<Identity, AuthFailure> {
        let provider = &self.provider;
        match &provider.check {
            Check::TrustedProxyUser { trusted_peers } => {
                let peer = canonical_ip(peer);
                let user = headers
                    .get(remote_user_header)
                    .filter(|_| trusted_peers.iter().any(|net| net.contains(&peer)))
                    .filter(|value| !value.as_bytes().iter().all(u8::is_ascii_whitespace))
                    .ok_or(AuthFailure::NoTrustedUser)?;
                // A forwarded user name has no claims to check: validation refuses `allow`
                // here, and were one to get through, nobody would be admitted unchecked.
                if self.allow.is_some() {
                    return Err(AuthFailure::NotAllowed {
                        user: String::from_utf8_lossy(user.as_bytes()).into_owned(),
                        logout: None,
                    });
                }
                Ok(Identity {
                    headers: vec![(SUB_HEADER, user.clone())],
                    expires_at: None,
                    asserted: identity::Asserted {
                        sub: String::from_utf8_lossy(user.as_bytes()).into_owned(),
                        ..identity::Asserted::default()
                    },
                    session: None,
                })
            }
            Check::Jwt(verifier) => {
                let token = bearer_token(headers, &provider.challenge)?;
                let claims = verifier.verify(token).await.map_err(|error| match error {
                    TokenError::Invalid(description) => AuthFailure::Invalid {
                        challenge: provider.challenge.clone(),
                        description,
                    },
                    TokenError::KeysUnavailable(description) => {
                        AuthFailure::Unavailable { description }
                    }
                })?;
                let scopes = scopes(&claims);
                if let Some(missing) = self
                    .required_scopes
                    .iter()
                    .find(|wanted| !scopes.iter().any(|s| s == *wanted))
                {
                    return Err(AuthFailure::InsufficientScope {
                        challenge: provider.challenge.clone(),
                        scope: missing.clone(),
                    });
                }
                if let Some(allow) = &self.allow
                    && !allow.admits(&claims)
                {
                    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("-");
                    return Err(AuthFailure::NotAllowed {
                        user: allow::display_name(&claims, sub),
                        logout: None,
                    });
                }
                identity_from_claims(provider, &claims, &scopes, verifier.leeway())
            }
            Check::Oidc(oidc) => {
                session_identity(provider, oidc, self.allow.as_ref(), method, headers).await
            }
        }
    }
}

/// A browser session's identity: the request's session cookie, looked up in the
/// provider's store, and admitted by the route's `allow` (checked against the claims
/// the session keeps). A request that a page on another origin could have made in the
/// user's name (an unsafe method, a WebSocket handshake) must come from the app's own
/// origin first (CSRF; `SameSite=Lax` keeps the cookie off cross-site subrequests, but
/// not off same-site ones from a sibling subdomain).
async fn session_identity(
    provider: &Provider,
    oidc: &Arc<oidc::OidcProvider>,
    allow: Option<&allow::Allow>,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Identity, AuthFailure> {
    let login_required = || AuthFailure::LoginRequired {
        login: format!("{}{}", oidc.settings.base_path, oidc.settings.paths.login),
    };
    if !oidc.has_session_cookie(headers) {
        return Err(login_required());
    }
    if let Some(refusal) = cross_origin(method, headers, &oidc.settings.public_origin) {
        return Err(refusal);
    }
    let session = oidc
        .session(headers)
        .await
        .map_err(|error| AuthFailure::Unavailable {
            description: format!("the session store is unavailable: {error}"),
        })?
        .ok_or_else(login_required)?;
    let oidc::session::Session { record, key } = session;
    if let Some(allow) = allow
        && !allow.admits(&record.claims)
    {
        let settings = &oidc.settings;
        return Err(AuthFailure::NotAllowed {
            user: allow::display_name(&record.claims, &record.sub),
            logout: Some(format!("{}{}", settings.base_path, settings.paths.logout)),
        });
    }
    let invalid = |description: &str| AuthFailure::Invalid {
        challenge: provider.challenge.clone(),
        description: description.to_owned(),
    };
    let header_value = |text: &str| {
        HeaderValue::from_str(text).map_err(|_| invalid("a claim cannot be sent as a header"))
    };
    let mut identity_headers = vec![(SUB_HEADER, header_value(&record.sub)?)];
    let mut copied = Vec::with_capacity(record.claims.len());
    for (claim, name) in &provider.claim_headers {
        let Some(text) = record.claims.get(claim).and_then(header_text) else {
            continue;
        };
        identity_headers.push((name.clone(), header_value(&text)?));
    }
    // The claims the provider copies; those kept only for `allow` stay at the edge.
    for (claim, value) in &record.claims {
        if oidc.settings.asserted_claims.contains(claim) {
            copied.push((claim.clone(), value.clone()));
        }
    }
    let expires = record.expires();
    Ok(Identity {
        headers: identity_headers,
        expires_at: Some(expires),
        asserted: identity::Asserted {
            sub: record.sub,
            scope: None,
            claims: copied,
            expires: Some(expires),
        },
        session: Some(oidc::session::SessionWatch::new(Arc::clone(oidc), key)),
    })
}

/// The refusal of a session request that may come from another origin: an unsafe
/// method needs `Origin` = the app's origin (or, without `Origin`, `Sec-Fetch-Site:
/// same-origin`); a WebSocket handshake needs `Origin` = the app's origin. Safe methods
/// pass: they must not change anything, and a cross-site page cannot read the answer.
fn cross_origin(method: &Method, headers: &HeaderMap, origin: &str) -> Option<AuthFailure> {
    let websocket = headers
        .get(header::UPGRADE)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let safe = matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    if safe && !websocket {
        return None;
    }
    let sent_origin = headers.get(header::ORIGIN);
    let same_origin = match sent_origin {
        Some(sent) => sent.as_bytes() == origin.as_bytes(),
        None if !websocket => headers
            .get("sec-fetch-site")
            .is_some_and(|site| site.as_bytes() == b"same-origin"),
        None => false,
    };
    (!same_origin).then(|| AuthFailure::CrossOrigin {
        origin: origin.to_owned(),
    })
}

/// A claim's value as header text: strings, numbers and booleans only.
fn header_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// The token of an `Authorization: Bearer ...` header. Query-string tokens are never
/// accepted (they end up in logs and `Referer`s).
fn bearer_token<'a>(
    headers: &'a HeaderMap,
    challenge: &HeaderValue,
) -> Result<&'a str, AuthFailure> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthFailure::Missing {
            challenge: challenge.clone(),
        });
    };
    let invalid = |description: &str| AuthFailure::Invalid {
        challenge: challenge.clone(),
        description: description.to_owned(),
    };
    if values.next().is_some() {
        return Err(invalid("more than one Authorization header"));
    }
    let value = value
        .to_str()
        .map_err(|_| invalid("the Authorization header is not text"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| invalid("expected \"Bearer <token>\""))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(invalid("expected \"Bearer <token>\""));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(invalid("the bearer token is empty"));
    }
    Ok(token)
}

fn identity_from_claims(
    provider: &Provider,
    claims: &Claims,
    scopes: &[String],
    leeway: Duration,
) -> Result<Identity, AuthFailure> {
    let invalid = |description: &str| AuthFailure::Invalid {
        challenge: provider.challenge.clone(),
        description: description.to_owned(),
    };
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("the token has no sub claim"))?;
    let header_value = |text: &str| {
        HeaderValue::from_str(text).map_err(|_| invalid("a claim cannot be sent as a header"))
    };
    let mut headers = vec![(SUB_HEADER, header_value(sub)?)];
    if !scopes.is_empty() {
        headers.push((SCOPE_HEADER, header_value(&scopes.join(" "))?));
    }
    let mut copied = Vec::with_capacity(provider.claim_headers.len());
    for (claim, name) in &provider.claim_headers {
        let Some(value) = claims.get(claim) else {
            continue;
        };
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            _ => continue,
        };
        headers.push((name.clone(), header_value(&text)?));
        copied.push((claim.clone(), value.clone()));
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .map(|exp| UNIX_EPOCH + Duration::from_secs(exp));
    // The same instant the HTTP check uses: `exp` plus the leeway.
    let expires_at = exp.map(|exp| exp + leeway);
    let asserted = identity::Asserted {
        sub: sub.to_owned(),
        scope: (!scopes.is_empty()).then(|| scopes.join(" ")),
        claims: copied,
        expires: exp,
    };
    Ok(Identity {
        headers,
        expires_at,
        asserted,
        session: None,
    })
}
