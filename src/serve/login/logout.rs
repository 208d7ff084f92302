//! `GET <logout>?next=/path`: ends the browser's session, if it has one (for every
//! replica: the record is deleted from the store, the cookie cleared), then logs out at
//! the IdP when it supports it (RP-initiated logout), else goes back to `next`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::SET_COOKIE;
use axum::response::Response;
use axum::routing::{MethodRouter, get};

use super::{NextParam, Params, Refusal, RequestId};
use crate::auth::oidc::OidcProvider;
use crate::auth::oidc::redirect::{location, safe_next};
use crate::http;

pub(super) fn route() -> MethodRouter<Arc<OidcProvider>> {
    get(logout).fallback(super::use_get)
}

async fn logout(
    State(provider): State<Arc<OidcProvider>>,
    request_id: RequestId,
    headers: HeaderMap,
    Params(params): Params<NextParam>,
) -> Response {
    let session = provider.has_session_cookie(&headers);
    let id_token = match provider.end_session(&headers).await {
        Ok(id_token) => id_token,
        // Not ended: saying otherwise would leave a session the user believes is gone.
        Err(error) => return Refusal::store(&provider, "logout", &error).page(&request_id),
    };
    let next = safe_next(&provider.settings.base_path, params.next.as_deref());
    let mut response = match provider.end_session_url(next, id_token.as_deref()) {
        Some(end_session) => http::redirect(&end_session),
        None => http::redirect(&location(&provider.settings.base_path, next, None)),
    };
    if session {
        response
            .headers_mut()
            .append(SET_COOKIE, provider.session_cookie(None));
    }
    response
}
