//! `GET <logout>?next=/path`: logs out at the IdP when it supports it (RP-initiated
//! logout), else goes back to `next`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::routing::{MethodRouter, get};

use super::{NextParam, Params};
use crate::auth::oidc::OidcProvider;
use crate::auth::oidc::redirect::{location, safe_next};
use crate::http;

pub(super) fn route() -> MethodRouter<Arc<OidcProvider>> {
    get(logout).fallback(super::use_get)
}

async fn logout(
    State(provider): State<Arc<OidcProvider>>,
    Params(params): Params<NextParam>,
) -> Response {
    let next = safe_next(&provider.settings.base_path, params.next.as_deref());
    match provider.end_session_url(next) {
        Some(end_session) => http::redirect(&end_session),
        None => http::redirect(&location(&provider.settings.base_path, next, None)),
    }
}
