//! Authentication at the edge: a route naming a provider is checked before its upstream
//! is contacted, and the upstream gets the verified identity as headers.
//!
//! - `jwt`: a bearer token in `Authorization`, verified with an HMAC secret or a JWKS.
//! - `trusted_proxy_user`: forward auth; the identity that the proxy in front put in
//!   `trust.remote_user_header`, believed from the provider's `trusted_peers` only. The
//!   header itself never reaches an upstream (the header policy drops it everywhere).
//! - `oidc`: not a check of its own but a login the gateway serves ([`oidc`]); the
//!   token it mints is checked by its `mint` jwt provider.
//!
//! Failures answer in RFC 6750 terms: 401 with a `WWW-Authenticate: Bearer` challenge,
//! 403 `insufficient_scope`, and 503 when the provider's keys are not available.

mod background;
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

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
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
    /// A login served by the gateway; routes never name it (validation refuses that).
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
}

impl AuthFailure {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Missing { .. } | Self::Invalid { .. } | Self::NoTrustedUser => {
                StatusCode::UNAUTHORIZED
            }
            Self::InsufficientScope { .. } => StatusCode::FORBIDDEN,
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
            Self::NoTrustedUser | Self::Unavailable { .. } => return None,
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
                Ok(Identity {
                    headers: vec![(SUB_HEADER, user.clone())],
                    expires_at: None,
                    asserted: identity::Asserted {
                        sub: String::from_utf8_lossy(user.as_bytes()).into_owned(),
                        ..identity::Asserted::default()
                    },
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
                identity_from_claims(provider, &claims, &scopes, verifier.leeway())
            }
            // Validation refuses routes that name an oidc provider; never fail open.
            Check::Oidc(oidc) => Err(AuthFailure::Unavailable {
                description: format!(
                    "provider {:?} logs users in; protect routes with its mint provider {:?}",
                    provider.name,
                    oidc.settings.minter.provider()
                ),
            }),
        }
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
    })
}
