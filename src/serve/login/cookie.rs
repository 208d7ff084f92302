//! The two cookies that bind a login to one browser:
//!
//! - the login cookie: one per login, holding the login's state sealed (see
//!   [`seal`](crate::auth::oidc::seal)), set by the login and cleared by its callback, so
//!   that only the browser that started a login can finish it, and nothing about a login
//!   in progress is stored server-side;
//! - the code cookie: one per auth code, set by the callback beside the redirect that
//!   carries the code, so that only the browser the code was issued to can have it
//!   redeemed (the app's server reads it from that browser's request and sends it to
//!   the exchange as `browser_binding`).

use axum::http::header::HeaderValue;

use crate::auth::oidc::OidcProvider;

/// The login cookie's name when `public_base_url` is http: `fluxlit-login-<id>`.
const LOGIN_COOKIE: &str = "fluxlit-login";
/// The login cookie's name when `public_base_url` is https: `__Host-fluxlit-login-<id>`
/// (the browser then insists on `Secure`, `Path=/` and no `Domain`, so a sibling
/// subdomain cannot plant one).
const HOST_LOGIN_COOKIE: &str = "__Host-fluxlit-login";
/// Hex digits of the state's hash in a login cookie's name (not secret: the state itself
/// travels in URLs), and of the auth code's hash in a code cookie's.
const COOKIE_ID_LEN: usize = 16;
/// The code cookie's name when `public_base_url` is http: `fluxlit-code-<id>`.
const CODE_COOKIE: &str = "fluxlit-code";
/// The code cookie's name when `public_base_url` is https: `__Host-fluxlit-code-<id>`.
/// Without the prefix, a sibling subdomain could plant its own code's binding in a
/// victim's browser and hand the victim its code: the login CSRF the binding prevents.
const HOST_CODE_COOKIE: &str = "__Host-fluxlit-code";

/// The `Set-Cookie` of the login cookie of the state whose hash is `state_key`:
/// setting `value`, or clearing it when `None`.
///
/// One cookie per login, its name suffixed with a short id of the state's hash, so
/// logins started in parallel tabs each keep their own and all can finish. Abandoned
/// ones expire with the login (`Max-Age` = `login_ttl`). Scoped to the callback's
/// path; with an https `public_base_url` it is `Secure` and `__Host-` (which needs
/// `Path=/`). `SameSite=Lax`: the IdP's redirect back is a top-level GET, which Lax
/// lets the cookie ride along.
pub(super) fn login_cookie(
    provider: &OidcProvider,
    state_key: &str,
    value: Option<&str>,
) -> HeaderValue {
    let url = provider.settings.redirect_uri.url();
    let https = is_https(provider);
    let path = match url.path() {
        path if !https && !path.contains(';') && path.starts_with('/') => path,
        _ => "/",
    };
    let max_age = match value {
        Some(_) => provider.settings.login_ttl.as_secs().max(1),
        None => 0,
    };
    let mut cookie = format!(
        "{}={}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax",
        login_cookie_name(provider, state_key),
        value.unwrap_or_default(),
    );
    if https {
        cookie.push_str("; Secure");
    }
    // Always valid: the name is ASCII, the value base64url, the path a URL's
    // (percent-encoded) path; the fallback only keeps this infallible.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("x=; Max-Age=0"))
}

pub(super) fn login_cookie_name(provider: &OidcProvider, state_key: &str) -> String {
    let prefix = if is_https(provider) {
        HOST_LOGIN_COOKIE
    } else {
        LOGIN_COOKIE
    };
    let id = state_key.get(..COOKIE_ID_LEN).unwrap_or(state_key);
    format!("{prefix}-{id}")
}

/// The `Set-Cookie` of the code cookie of the auth code whose hash (SHA-256, hex) is
/// `code_hash`, holding `binding`.
///
/// One cookie per code, named after a short id of the code's hash (the app's server,
/// which has the code, finds it by that name: see [`code_cookie_name`]), so logins
/// finished in parallel tabs each keep theirs. `HttpOnly`: a script on the page cannot
/// read it, and the exchange never takes it from a `Cookie` header, so a script cannot
/// redeem the code either. `SameSite=Lax`: it is set on the IdP's top-level redirect
/// back and must then reach the page `next` names. It lives as long as the code
/// (`Max-Age` = `auth_code_ttl`). Scoped to the app: `Path` is the path of
/// `public_base_url`; with an https `public_base_url` it is `__Host-` and `Secure`,
/// which needs `Path=/`.
pub(super) fn code_cookie(provider: &OidcProvider, code_hash: &str, binding: &str) -> HeaderValue {
    let https = is_https(provider);
    let base = &provider.settings.base_path;
    let path = if https || base.contains(';') || !base.starts_with('/') {
        "/".to_owned()
    } else {
        format!("{base}/")
    };
    let max_age = provider.settings.auth_code_ttl.as_secs().max(1);
    let mut cookie = format!(
        "{}={binding}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax",
        code_cookie_name(https, code_hash),
    );
    if https {
        cookie.push_str("; Secure");
    }
    // Always valid, as the login cookie's; the fallback only keeps this infallible.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("x=; Max-Age=0"))
}

/// The code cookie's name for the auth code whose hash (SHA-256, hex) is `code_hash`:
/// `fluxlit-code-<the first 16 hex digits of the hash>`, `__Host-`-prefixed when
/// `public_base_url` is https. An app finds it with
/// `"fluxlit-code-" + sha256(auth_code).hexdigest()[:16]`.
pub(super) fn code_cookie_name(https: bool, code_hash: &str) -> String {
    let prefix = if https { HOST_CODE_COOKIE } else { CODE_COOKIE };
    let id = code_hash.get(..COOKIE_ID_LEN).unwrap_or(code_hash);
    format!("{prefix}-{id}")
}

/// Whether `public_base_url` (and so the callback) is https.
fn is_https(provider: &OidcProvider) -> bool {
    provider.settings.redirect_uri.url().scheme() == "https"
}

pub(super) use crate::http::request_cookie;
