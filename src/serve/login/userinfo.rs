//! `GET <userinfo>`: who the browser's session is, as JSON for the app's pages (a
//! Streamlit component, a script showing "Signed in as ..."): `sub`, the claims the
//! session keeps, and `expires_at` (Unix seconds: the session's absolute end, its
//! `session_max_age` after the login). Without a live session: 401. Never a token: the
//! id_token and the refresh token stay in the record. Never cached.
//!
//! Reading it is a request of the session like any other: it moves the idle deadline on.
//! A page on another origin gets no answer it can read (no CORS), and a cross-site one
//! does not even send the cookie (`SameSite=Lax`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{MethodRouter, get};
use serde_json::{Value, json};

use crate::auth::oidc::OidcProvider;
use crate::http;

pub(super) fn route() -> MethodRouter<Arc<OidcProvider>> {
    get(userinfo).fallback(super::use_get)
}

async fn userinfo(State(provider): State<Arc<OidcProvider>>, headers: HeaderMap) -> Response {
    let session = match provider.session(&headers).await {
        Ok(session) => session,
        Err(error) => {
            tracing::warn!(provider = %provider.name, %error, "userinfo: session store unavailable");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({
                    "error": "temporarily_unavailable",
                    "error_description": "the session store is unavailable",
                }),
            );
        }
    };
    let Some(session) = session else {
        let settings = &provider.settings;
        return answer(
            StatusCode::UNAUTHORIZED,
            &json!({
                "error": "login_required",
                "login": format!("{}{}", settings.base_path, settings.paths.login),
            }),
        );
    };
    // Named field by field: a token in the record can never slip into the answer.
    let record = &session.record;
    answer(
        StatusCode::OK,
        &json!({
            "sub": record.sub,
            "claims": record.claims,
            "expires_at": record.expires_at,
        }),
    )
}

fn answer(status: StatusCode, body: &Value) -> Response {
    let mut response = http::json(status, body.to_string());
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
