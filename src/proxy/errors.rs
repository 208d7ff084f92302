//! The gateway's own error responses, and how upstream failures are classified.

use std::borrow::Cow;

use http::header::{self, CONNECTION, HeaderValue};
use http::{Response, StatusCode};

use super::body::ProxyBody;
use super::route::Route;
use crate::rate_limit::Limited;

/// A short plain-text answer that names the route and the request id, so a user can
/// quote it and an operator can find the log line. Never includes upstream details.
pub fn error_response(
    status: StatusCode,
    route: Option<&Route>,
    message: &str,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let request_id = request_id.to_str().unwrap_or("-");
    let text = match route {
        Some(route) => format!(
            "{} {reason}\nroute {:?}: {message}\nrequest id: {request_id}\n",
            status.as_u16(),
            route.name
        ),
        None => format!(
            "{} {reason}\n{message}\nrequest id: {request_id}\n",
            status.as_u16()
        ),
    };
    let mut response = Response::new(ProxyBody::full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The error and its causes on one line, for the log.
pub use crate::http::error_chain as chain;

/// A refusal by the route's auth check: the status, a `WWW-Authenticate` challenge
/// where RFC 6750 asks for one, and the usual short body.
pub fn auth_failure_response(
    failure: &crate::auth::AuthFailure,
    route: &Route,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let mut response = error_response(
        failure.status(),
        Some(route),
        &failure.message(),
        request_id,
    );
    if let Some(challenge) = failure.challenge() {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
    }
    response
}

/// The 403 a page load gets in a login session that the route's `allow` does not admit:
/// a small HTML page that says who the browser is logged in as (escaped: the name comes
/// from the identity provider) and links to `logout`, to log in as someone else. No
/// script, no style, nothing loaded: its `Content-Security-Policy` forbids it all.
pub fn not_allowed_page(
    route: &Route,
    user: &str,
    logout: &str,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let escape = crate::http::html_escape;
    let body = format!(
        "<!doctype html>\n<html lang=\"en\">\n<meta charset=\"utf-8\">\n\
         <title>403 Forbidden</title>\n<h1>Not allowed</h1>\n\
         <p>You are logged in as <strong>{user}</strong>, who may not use this page.</p>\n\
         <p><a href=\"{logout}\">Log out</a> to log in as someone else.</p>\n\
         <p><small>route {route} &middot; request id {request_id}</small></p>\n</html>\n",
        user = escape(user),
        logout = escape(logout),
        route = escape(&route.name),
        request_id = escape(request_id.to_str().unwrap_or("-")),
    );
    let mut response = Response::new(ProxyBody::full(body));
    *response.status_mut() = StatusCode::FORBIDDEN;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'self'"),
    );
    response
}

/// 413 for a body over the route's cap.
pub fn too_large(route: &Route, request_id: &HeaderValue) -> Response<ProxyBody> {
    tracing::info!(
        route = %route.name,
        limit = route.max_request_body,
        request_id = request_id.to_str().unwrap_or("-"),
        "request refused: body over max_request_body",
    );
    let message = format!(
        "the request body is larger than this route's limit of {} bytes",
        route.max_request_body
    );
    let mut response = error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        Some(route),
        &message,
        request_id,
    );
    // The rest of the body is not read: the connection cannot carry another request.
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// 429 for a client over a per-client rate limit (`route`'s, or `None` for the login
/// endpoint's), with `Retry-After`. Not logged: a flood would flood the log too; the
/// refusals are counted (`fluxlit_rate_limited_total`).
pub fn rate_limited(
    route: Option<&Route>,
    limited: Limited,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let retry_after = limited.retry_after_secs();
    let message = format!("too many requests from this client; try again in {retry_after}s");
    let mut response = error_response(StatusCode::TOO_MANY_REQUESTS, route, &message, request_id);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

/// 503 for a request over an upstream fairness cap: the client (or everyone) has as
/// many requests on their way upstream as the gateway lets through.
pub fn upstream_busy(
    route: &Route,
    refusal: super::fairness::Refusal,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    use super::fairness::Refusal;
    let message = match refusal {
        Refusal::Client => {
            Cow::Borrowed("this client has its maximum of requests in flight; try again shortly")
        }
        Refusal::Global => {
            Cow::Borrowed("the gateway has its maximum of requests in flight; try again shortly")
        }
        Refusal::Upstream { max } => Cow::Owned(format!(
            "upstream {:?} has its maximum of {max} requests in flight (max_in_flight); \
             try again shortly",
            route.upstream.name
        )),
    };
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        Some(route),
        &message,
        request_id,
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// 503 for a WebSocket handshake over the route's cap.
pub fn too_many_websockets(
    route: &Route,
    cap: &super::limits::WebSocketCap,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    tracing::warn!(route = %route.name, max = cap.max, "websocket refused: max_websockets reached");
    let message = format!(
        "this route has its maximum of {} open WebSockets; try again later",
        cap.max
    );
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        Some(route),
        &message,
        request_id,
    )
}
