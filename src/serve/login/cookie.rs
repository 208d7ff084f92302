//! The login cookie: one per login, set by the login and cleared by its callback, so
//! that only the browser that started a login can finish it.

use axum::http::HeaderMap;
use axum::http::header::{self, HeaderValue};

use crate::auth::oidc::OidcProvider;
use crate::auth::secrets;

/// The login cookie's name when `public_base_url` is http: `fluxlit-login-<id>`.
const LOGIN_COOKIE: &str = "fluxlit-login";
/// The login cookie's name when `public_base_url` is https: `__Host-fluxlit-login-<id>`
/// (the browser then insists on `Secure`, `Path=/` and no `Domain`, so a sibling
/// subdomain cannot plant one).
const HOST_LOGIN_COOKIE: &str = "__Host-fluxlit-login";
/// Hex digits of the state's hash in a login cookie's name (not secret: the state itself
/// travels in URLs).
const LOGIN_COOKIE_ID_LEN: usize = 16;

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
    let https = url.scheme() == "https";
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
    let prefix = if provider.settings.redirect_uri.url().scheme() == "https" {
        HOST_LOGIN_COOKIE
    } else {
        LOGIN_COOKIE
    };
    let id = state_key.get(..LOGIN_COOKIE_ID_LEN).unwrap_or(state_key);
    format!("{prefix}-{id}")
}

/// The value of the first cookie named `name` in the request's `Cookie` headers.
pub(super) fn request_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
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
pub(super) fn same_secret(a: &str, b: &str) -> bool {
    secrets::constant_time_eq(a.as_bytes(), b.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::super::{LoginState, store_key};
    use super::*;

    #[test]
    fn secrets_are_compared_whole() {
        assert!(same_secret(&store_key("a"), &store_key("a")));
        assert!(!same_secret(&store_key("a"), &store_key("b")));
        assert!(!same_secret(&store_key("a"), ""));
        assert!(!same_secret("", &store_key("a")));
    }

    #[test]
    fn the_login_cookie_is_read_by_its_exact_name() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("fluxlit-login-ab=x1; other=2"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("fluxlit-login-abc=y2;fluxlit-login-abc=z3"),
        );
        assert_eq!(request_cookie(&headers, "fluxlit-login-ab"), Some("x1"));
        assert_eq!(request_cookie(&headers, "fluxlit-login-abc"), Some("y2"));
        assert_eq!(request_cookie(&headers, "fluxlit-login-a"), None);
        assert_eq!(request_cookie(&headers, "other"), Some("2"));
    }

    #[test]
    fn a_login_record_without_a_browser_hash_matches_no_browser() {
        let old: LoginState =
            serde_json::from_str(r#"{"verifier":"v","nonce":"n","next":"/"}"#).unwrap();
        assert_eq!(old.browser, "");
        assert!(!same_secret(&store_key("anything"), &old.browser));
    }
}
