//! `GET <login>?next=/path`: starts a login and sends the browser to the IdP.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::Response;
use axum::routing::{MethodRouter, get};

use super::{LoginState, NextParam, Params, Refusal, RequestId, cookie, page, store_key};
use crate::auth::oidc::OidcProvider;
use crate::auth::oidc::client::random_secret;
use crate::auth::oidc::redirect::safe_next;
use crate::auth::oidc::store::Slot;
use crate::http;

pub(super) fn route() -> MethodRouter<Arc<OidcProvider>> {
    get(login).fallback(super::use_get)
}

async fn login(
    State(provider): State<Arc<OidcProvider>>,
    request_id: RequestId,
    Params(params): Params<NextParam>,
) -> Response {
    let Some(discovered) = provider.discovery.current() else {
        tracing::warn!(provider = %provider.name, "login refused: OIDC discovery has not succeeded yet");
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "login is not available yet: the identity provider's settings (OpenID Connect \
             discovery) have not been loaded; try again shortly",
            &request_id,
        );
    };
    let next = safe_next(&provider.settings.base_path, params.next.as_deref()).to_owned();
    let authorization = provider.authorization(&discovered);
    // Binds the login to this browser (login CSRF: RFC 9700 §4.7, OIDC Core §3.1.2.1):
    // 256 bits from the OS-seeded CSPRNG in a cookie, only its hash stored.
    let browser_secret = random_secret();
    let stored = LoginState {
        verifier: authorization.pkce_verifier,
        nonce: authorization.nonce,
        next,
        browser: store_key(&browser_secret),
    };
    let cannot_start = || {
        let status = StatusCode::INTERNAL_SERVER_ERROR;
        page(status, "cannot start a login", &request_id)
    };
    let Ok(value) = serde_json::to_vec(&stored) else {
        return cannot_start();
    };
    let key = store_key(&authorization.state);
    let stored = provider
        .store
        .put_once(Slot::LoginState, &key, value, provider.settings.login_ttl)
        .await;
    match stored {
        Ok(true) => {}
        Ok(false) => return cannot_start(),
        Err(error) => return Refusal::store(&provider, "login", &error).page(&request_id),
    }
    let mut response = http::redirect(authorization.url.as_str());
    let cookie = cookie::login_cookie(&provider, &key, Some(&browser_secret));
    response.headers_mut().append(SET_COOKIE, cookie);
    response
}
