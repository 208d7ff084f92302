//! `POST <exchange>`: the app's server trades a one-time auth code for the access token.
//! A confidential endpoint, like an OAuth token endpoint: only clients in `exchange_from`
//! (judged on the address resolved through `trust.proxies`, so a browser behind a trusted
//! proxy is judged on its own), with `Authorization: Bearer <exchange_secret>` when the
//! provider has one, and with the browser binding of the code (the value of the code
//! cookie the app's server read from the browser the code was issued to). Answers are
//! JSON (RFC 6749 §5), never cached.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{MethodRouter, post};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ClientAddress, PendingToken, code_key, usable};
use crate::auth::jwt::now_secs;
use crate::auth::oidc::OidcProvider;
use crate::auth::oidc::store::Slot;
use crate::http;
use crate::peer::canonical_ip;

/// The largest exchange request body read.
const MAX_EXCHANGE_BODY: usize = 8 * 1024;

pub(super) fn route() -> MethodRouter<Arc<OidcProvider>> {
    post(exchange)
        .fallback(use_post)
        .layer(DefaultBodyLimit::max(MAX_EXCHANGE_BODY))
}

/// The client address and the secret are checked before the body is read (extractors
/// run in order).
async fn exchange(
    State(provider): State<Arc<OidcProvider>>,
    _: AllowedClient,
    _: AuthenticatedClient,
    ExchangeRequest {
        auth_code,
        browser_binding,
    }: ExchangeRequest,
) -> Response {
    let Some(binding) = browser_binding else {
        // Nothing is looked up, so nothing is taken: the code stays with its browser.
        tracing::info!(provider = %provider.name, "auth code exchange refused: no browser binding");
        return answer(
            StatusCode::BAD_REQUEST,
            &json!({
                "error": "invalid_grant",
                "error_description": "browser_binding is missing: send the value of the \
                    fluxlit-code-<id> cookie of the browser the code was issued to",
            }),
        );
    };
    // Found only with the code's own binding (see `code_key`): a wrong one takes nothing.
    let taken = match provider
        .store
        .take(Slot::AuthCode, &code_key(&auth_code, &binding))
        .await
    {
        Ok(taken) => taken,
        Err(error) => {
            tracing::warn!(provider = %provider.name, %error, "auth code exchange failed: store unavailable");
            return answer(
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
        Some(pending) if pending.expires_at > now => answer(
            StatusCode::OK,
            &json!({
                "access_token": pending.access_token,
                "token_type": "Bearer",
                "expires_in": pending.expires_at - now,
            }),
        ),
        _ => {
            tracing::info!(provider = %provider.name, "auth code exchange refused: unknown, used or expired code, or not this browser's");
            answer(
                StatusCode::BAD_REQUEST,
                &json!({
                    "error": "invalid_grant",
                    "error_description": "the auth code is unknown, used or expired, or the \
                        browser binding is not the one it was issued with",
                }),
            )
        }
    }
}

/// A request from a client in the provider's `exchange_from`; any other is refused with
/// 403. The client is the address the public listener resolved through `trust.proxies`
/// (the first untrusted hop from the right of `X-Forwarded-For`), not the TCP peer:
/// behind a trusted proxy every browser's peer is the proxy, which may well be in
/// `exchange_from` (the same host, the same cluster network).
struct AllowedClient;

impl FromRequestParts<Arc<OidcProvider>> for AllowedClient {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        provider: &Arc<OidcProvider>,
    ) -> Result<Self, Response> {
        // Without the listener's resolved address (never, in the gateway), refuse.
        let client = parts
            .extensions
            .get::<ClientAddress>()
            .map(|ClientAddress(ip)| canonical_ip(*ip));
        if let Some(ip) = client
            && provider
                .settings
                .exchange_from
                .iter()
                .any(|net| net.contains(&ip))
        {
            return Ok(Self);
        }
        let peer = ConnectInfo::<SocketAddr>::from_request_parts(parts, provider).await;
        let peer = peer.map_or_else(
            |_| "unknown".to_owned(),
            |ConnectInfo(peer)| peer.ip().to_string(),
        );
        let client = client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        tracing::info!(provider = %provider.name, %client, %peer, "auth code exchange refused: the client is not in exchange_from");
        Err(answer(
            StatusCode::FORBIDDEN,
            &json!({
                "error": "access_denied",
                "error_description": "this address may not exchange auth codes",
            }),
        ))
    }
}

/// A request that authenticated the app's server: `Authorization: Bearer
/// <exchange_secret>` when the provider has an exchange secret (RFC 6749 §2.3: a
/// confidential client authenticates at the token endpoint), anything when it has none.
/// Else 401 `invalid_client` with a `Bearer` challenge (RFC 6749 §5.2).
struct AuthenticatedClient;

impl FromRequestParts<Arc<OidcProvider>> for AuthenticatedClient {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        provider: &Arc<OidcProvider>,
    ) -> Result<Self, Response> {
        let Some(secret) = &provider.settings.exchange_secret else {
            return Ok(Self);
        };
        let presented = bearer(&parts.headers);
        if presented.is_some_and(|presented| secret.matches(presented)) {
            return Ok(Self);
        }
        let credentials = if presented.is_some() {
            "wrong"
        } else {
            "missing"
        };
        tracing::info!(provider = %provider.name, credentials, "auth code exchange refused: the exchange secret is missing or wrong");
        let mut response = answer(
            StatusCode::UNAUTHORIZED,
            &json!({
                "error": "invalid_client",
                "error_description": "send the provider's exchange_secret as \
                    Authorization: Bearer <secret>",
            }),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"fluxlit exchange\""),
        );
        Err(response)
    }
}

/// The credentials of the one `Authorization: Bearer <credentials>` header (the scheme in
/// any case), as bytes; none when there is no such header, or several.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, credentials) = value.as_bytes().split_at_checked(6)?;
    let credentials = credentials.strip_prefix(b" ")?.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer") && !credentials.is_empty()).then_some(credentials)
}

/// The auth code of an exchange and its browser binding: `{"auth_code": "...",
/// "browser_binding": "..."}` as JSON, or `auth_code=...&browser_binding=...` as a form,
/// in a body of at most [`MAX_EXCHANGE_BODY`] bytes. The binding is read from the body
/// only, never from a `Cookie` header: a script on the page, whose requests carry the
/// browser's cookies, cannot redeem a code with it.
struct ExchangeRequest {
    auth_code: String,
    /// Absent, or not usable (empty, too long): `None`, refused by the exchange.
    browser_binding: Option<String>,
}

#[derive(Deserialize)]
struct ExchangeBody {
    auth_code: String,
    #[serde(default)]
    browser_binding: Option<String>,
}

impl<S: Send + Sync> FromRequest<S> for ExchangeRequest {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let encoding = Encoding::of(request.headers());
        let Ok(body) = Bytes::from_request(request, state).await else {
            return Err(invalid_request("the body is too large or broken"));
        };
        let read = match encoding {
            Some(Encoding::Json) => Json::<ExchangeBody>::from_bytes(&body)
                .ok()
                .map(|Json(read)| read),
            Some(Encoding::Form) => serde_urlencoded::from_bytes::<ExchangeBody>(&body).ok(),
            None => None,
        };
        match read {
            Some(ExchangeBody {
                auth_code,
                browser_binding,
            }) if usable(Some(&auth_code)).is_some() => Ok(Self {
                auth_code,
                browser_binding: browser_binding.filter(|binding| usable(Some(binding)).is_some()),
            }),
            _ => Err(invalid_request(
                "send {\"auth_code\": \"...\", \"browser_binding\": \"...\"} as \
                 application/json, or auth_code=...&browser_binding=... as a form",
            )),
        }
    }
}

/// The media types an exchange is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Json,
    Form,
}

impl Encoding {
    /// From the `Content-Type`, in any case, parameters (`charset`) ignored.
    fn of(headers: &HeaderMap) -> Option<Self> {
        let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let media_type = value.split(';').next().unwrap_or_default().trim();
        if media_type.eq_ignore_ascii_case("application/json") {
            Some(Self::Json)
        } else if media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            Some(Self::Form)
        } else {
            None
        }
    }
}

async fn use_post() -> Response {
    let mut response = answer(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"error": "invalid_request", "error_description": "use POST"}),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

fn invalid_request(description: &str) -> Response {
    answer(
        StatusCode::BAD_REQUEST,
        &json!({"error": "invalid_request", "error_description": description}),
    )
}

fn answer(status: StatusCode, body: &Value) -> Response {
    let mut response = http::json(status, body.to_string());
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(content_type: &str, body: &'static str) -> Option<(String, Option<String>)> {
        let request = axum::http::Request::post("/auth/exchange")
            .header(header::CONTENT_TYPE, content_type)
            .body(axum::body::Body::from(body))
            .unwrap();
        ExchangeRequest::from_request(request, &())
            .await
            .ok()
            .map(|read| (read.auth_code, read.browser_binding))
    }

    fn code(code: &str, binding: Option<&str>) -> Option<(String, Option<String>)> {
        Some((code.to_owned(), binding.map(str::to_owned)))
    }

    #[tokio::test]
    async fn auth_codes_and_bindings_are_read_from_json_or_forms() {
        let json = r#"{"auth_code": "c1", "browser_binding": "b1"}"#;
        assert_eq!(read("application/json", json).await, code("c1", Some("b1")));
        let form = "x=1&auth_code=c%2B2&browser_binding=b%2F2";
        let form_type = "Application/X-WWW-Form-Urlencoded; charset=utf-8";
        assert_eq!(read(form_type, form).await, code("c+2", Some("b/2")));
        assert_eq!(read("text/plain", json).await, None);
        assert_eq!(read("application/json", "{}").await, None);
        assert_eq!(read("application/json", r#"{"auth_code": ""}"#).await, None);
        // Without a (usable) binding the code is read, and the exchange refuses it.
        let unbound = r#"{"auth_code": "c3"}"#;
        assert_eq!(read("application/json", unbound).await, code("c3", None));
        let empty = r#"{"auth_code": "c4", "browser_binding": ""}"#;
        assert_eq!(read("application/json", empty).await, code("c4", None));
    }

    fn with_authorization(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::AUTHORIZATION, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn the_exchange_secret_is_read_from_one_bearer_header() {
        let read = |values: &[&'static str]| {
            bearer(&with_authorization(values))
                .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
        };
        assert_eq!(read(&["Bearer s3cret"]).as_deref(), Some("s3cret"));
        assert_eq!(read(&["bearer  s3cret "]).as_deref(), Some("s3cret"));
        assert_eq!(read(&["BEARER s3cret"]).as_deref(), Some("s3cret"));
        assert_eq!(read(&[]), None);
        assert_eq!(read(&["Basic czNjcmV0"]), None);
        assert_eq!(read(&["Bearer"]), None);
        assert_eq!(read(&["Bearer "]), None);
        assert_eq!(read(&["Bearers3cret"]), None);
        assert_eq!(read(&["Bearer a", "Bearer b"]), None);
    }
}
