//! `GET <login>?next=/path`: starts a login and sends the browser to the IdP, with the
//! login's state sealed in a cookie. Writes nothing server-side.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::Response;
use axum::routing::{MethodRouter, get};

use super::{LoginState, NextParam, Params, RequestId, cookie, page, store_key, unix_now};
use crate::auth::oidc::OidcProvider;
use crate::auth::oidc::redirect::safe_next;
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
    // The login's secrets go to the browser that started it, sealed, and nowhere else:
    // nothing is stored before the IdP round trip, so logins cannot fill any store, and
    // only that browser can finish the login (login CSRF: RFC 9700 §4.7, OIDC Core
    // §3.1.2.1).
    let state = LoginState {
        verifier: authorization.pkce_verifier,
        nonce: authorization.nonce,
        next,
        expires_at: unix_now().saturating_add(provider.settings.login_ttl.as_secs()),
    };
    let key = store_key(&authorization.state);
    let Some(sealed) = state.seal(&provider, &key) else {
        tracing::error!(provider = %provider.name, "cannot seal a login state: the random source failed");
        let status = StatusCode::INTERNAL_SERVER_ERROR;
        return page(status, "cannot start a login", &request_id);
    };
    let mut response = http::redirect(authorization.url.as_str());
    let cookie = cookie::login_cookie(&provider, &key, Some(&sealed));
    response.headers_mut().append(SET_COOKIE, cookie);
    response
}
