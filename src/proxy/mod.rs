//! The request path: one snapshot load, route match, header policy, upstream call.
//!
//! `Proxy::handle` never fails: every problem becomes a short response that names the
//! route and the request id (404, 400, 502, 504) and never shows upstream internals;
//! the details go to the log.

pub mod body;
mod echo;
mod errors;
mod framing;
pub mod headers;
pub mod limits;
pub mod pool;
pub mod request_id;
pub mod routes;
pub mod websocket;
mod ws_frames;

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use crate::metrics::{Metrics, RequestRecord, UpstreamErrorKind};
use crate::snapshot::{HttpUpstream, Route, SharedSnapshot, Snapshot, UpstreamTarget};
pub use body::ProxyBody;
use errors::error_response;
use headers::RequestContext;
use pool::{UpstreamBody, UpstreamError};

/// The public listener's request handler. Cheap to clone: one per connection.
#[derive(Debug, Clone)]
pub struct Proxy {
    snapshot: SharedSnapshot,
    scheme: &'static str,
    tunnels: websocket::Tunnels,
    metrics: Arc<Metrics>,
}

impl Proxy {
    /// `scheme` is the listener's (`http` or `https`); WebSockets it opens join `tunnels`.
    pub fn new(
        snapshot: SharedSnapshot,
        scheme: &'static str,
        tunnels: websocket::Tunnels,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            snapshot,
            scheme,
            tunnels,
            metrics,
        }
    }

    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let snapshot = self.snapshot.load_full();
        let mut record = RequestRecord::start(
            self.metrics.no_route(),
            &request,
            peer,
            snapshot.config.log.access_log,
        );
        let policy = &snapshot.headers;
        let peer_trusted = policy.is_trusted(peer.ip());
        let request_id = request_id(&request, &snapshot, peer_trusted);
        record.set_request_id(&request_id);
        let carries_login_code = carries_login_code(&request);
        let mut seen = Seen {
            route: None,
            record,
        };
        let over_https = headers::is_https(self.scheme, request.headers(), peer_trusted);
        let mut response = self
            .route(
                &snapshot,
                request,
                peer,
                peer_trusted,
                &request_id,
                &mut seen,
            )
            .await;
        let matched = seen.route.as_deref();
        headers::add_response_headers(response.headers_mut(), policy, matched, &request_id);
        headers::add_hsts(response.headers_mut(), policy, over_https);
        if carries_login_code {
            // The page an OIDC login lands on has its one-time code in the URL: keep it
            // out of the Referer of everything that page loads.
            response.headers_mut().insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
        }
        let mut record = seen.record;
        record.set_status(response.status());
        response.map(|body| body.with_record(record))
    }

    async fn route(
        &self,
        snapshot: &Snapshot,
        mut request: Request<Incoming>,
        peer: SocketAddr,
        peer_trusted: bool,
        request_id: &HeaderValue,
        seen: &mut Seen,
    ) -> Response<ProxyBody> {
        if let Some(reason) = framing::refusal(&request) {
            let mut response = error_response(StatusCode::BAD_REQUEST, None, reason, request_id);
            // What follows on this connection cannot be trusted to be framed as the
            // client meant: read no further.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
        let path = match routes::normalize_path(request.uri().path()) {
            Ok(path) => path,
            Err(reason) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    None,
                    &reason.to_string(),
                    request_id,
                );
            }
        };
        // The gateway's own login endpoints (oidc providers) come before the routes.
        if let Some(endpoint) = snapshot.auth_endpoints.find(&path) {
            seen.record
                .set_route(self.metrics.auth_endpoint(&endpoint.provider.name));
            return endpoint.handle(request, peer, request_id).await;
        }
        let Some(route) = snapshot.routes.find(&path).cloned() else {
            let message = "no route matches this path";
            return error_response(StatusCode::NOT_FOUND, None, message, request_id);
        };
        seen.record
            .set_route(Arc::clone(self.metrics.route(&route)));
        seen.route = Some(Arc::clone(&route));
        let upstream_path = upstream_path(&route, &path, request.uri().query());

        // The route's check runs before anything is sent upstream.
        let identity = match &route.auth {
            None => None,
            Some(auth) => {
                let remote_user = &snapshot.headers.remote_user;
                match auth
                    .authenticate(request.headers(), peer_trusted, remote_user)
                    .await
                {
                    Ok(identity) => Some(identity),
                    Err(failure) => {
                        self.metrics.auth_failure(&auth.provider.name, &failure);
                        tracing::info!(
                            route = %route.name,
                            provider = %auth.provider.name,
                            request_id = request_id.to_str().unwrap_or("-"),
                            status = failure.status().as_u16(),
                            reason = %failure.message(),
                            "request refused at the edge",
                        );
                        return errors::auth_failure_response(&failure, &route, request_id);
                    }
                }
            }
        };

        let websocket = is_websocket_handshake(&request);
        let websocket_slot = match route.websockets.as_ref().filter(|_| websocket) {
            Some(cap) => match cap.try_open() {
                Some(slot) => Some(slot),
                None => return limits::too_many_websockets(&route, cap, request_id),
            },
            None => None,
        };
        if limits::declared_length_exceeds(request.headers(), route.max_request_body) {
            return limits::too_large(&route, request_id);
        }
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut request));
        let (parts, body) = request.into_parts();
        let body = limits::LimitedBody::new(body, route.max_request_body);
        let ctx = RequestContext {
            peer,
            peer_trusted,
            scheme: self.scheme,
            uri_authority: parts.uri.authority().map(|a| a.as_str()),
            request_id,
            websocket,
            identity: identity.as_ref(),
        };

        match &route.upstream.target {
            UpstreamTarget::Echo => {
                // The built-in upstream has no address; its Host is its name.
                let host = HeaderValue::from_static("echo");
                let headers = headers::upstream_request_headers(
                    &parts.headers,
                    &snapshot.headers,
                    &route,
                    &host,
                    &ctx,
                );
                echo::respond(
                    &route,
                    &parts.method,
                    &upstream_path,
                    headers,
                    body,
                    request_id,
                )
                .await
            }
            UpstreamTarget::Http(http) => {
                let mut headers = headers::upstream_request_headers(
                    &parts.headers,
                    &snapshot.headers,
                    &route,
                    &http.host,
                    &ctx,
                );
                framing::frame_upstream_request(&parts.headers, &body, &mut headers);
                let Some(uri) = upstream_uri(http, upstream_path) else {
                    let message = "the request path cannot be forwarded";
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        Some(&route),
                        message,
                        request_id,
                    );
                };
                let mut upstream_request = Request::new(body);
                *upstream_request.method_mut() = parts.method;
                *upstream_request.uri_mut() = uri;
                *upstream_request.version_mut() = Version::HTTP_11;
                *upstream_request.headers_mut() = headers;
                let expires_at = identity.as_ref().and_then(|identity| identity.expires_at);
                self.forward(
                    &route,
                    http,
                    upstream_request,
                    client_upgrade.zip(Some(websocket_slot)),
                    expires_at,
                    request_id,
                )
                .await
            }
        }
    }
}

/// What routing learned about a request, for its response headers, metrics and log.
struct Seen {
    /// The route that matched, if one did (its security headers apply).
    route: Option<Arc<Route>>,
    record: RequestRecord,
}

impl Proxy {
    /// Sends the request upstream and turns what comes back into the client's response.
    async fn forward(
        &self,
        route: &Arc<Route>,
        http: &HttpUpstream,
        request: Request<limits::LimitedBody>,
        client_upgrade: Option<(hyper::upgrade::OnUpgrade, Option<limits::WebSocketSlot>)>,
        credential_expires_at: Option<std::time::SystemTime>,
        request_id: &HeaderValue,
    ) -> Response<ProxyBody> {
        let upstream = &route.upstream;
        let body_exceeded = request.body().exceeded();
        let result = tokio::time::timeout(upstream.timeout, http.pool.send(request)).await;
        let (mut response, lease) = match result {
            Ok(Ok(sent)) => sent,
            Ok(Err(_)) if body_exceeded.load(std::sync::atomic::Ordering::Relaxed) => {
                return limits::too_large(route, request_id);
            }
            Ok(Err(UpstreamError::Request(error))) if framing::client_body_failed(&error) => {
                tracing::info!(
                    route = %route.name,
                    request_id = request_id.to_str().unwrap_or("-"),
                    error = %errors::chain(&error),
                    "the client's request body was malformed or cut short",
                );
                let message = "the request body was malformed or cut short";
                return error_response(StatusCode::BAD_REQUEST, Some(route), message, request_id);
            }
            Ok(Err(error)) => {
                let kind = match error {
                    UpstreamError::ConnectTimeout(_) => UpstreamErrorKind::ConnectTimeout,
                    UpstreamError::Connect(_) | UpstreamError::Handshake(_) => {
                        UpstreamErrorKind::ConnectError
                    }
                    UpstreamError::Request(_) => UpstreamErrorKind::RequestError,
                };
                self.metrics.upstream_error(&upstream.name, kind);
                tracing::warn!(
                    route = %route.name,
                    upstream = %upstream.name,
                    request_id = request_id.to_str().unwrap_or("-"),
                    error = %errors::chain(&error),
                    "upstream request failed",
                );
                let (status, message) = if kind == UpstreamErrorKind::ConnectTimeout {
                    (
                        StatusCode::GATEWAY_TIMEOUT,
                        "the upstream did not accept a connection in time",
                    )
                } else {
                    (
                        StatusCode::BAD_GATEWAY,
                        "the upstream could not be reached or broke the connection",
                    )
                };
                return error_response(status, Some(route), message, request_id);
            }
            Err(_elapsed) => {
                self.metrics
                    .upstream_error(&upstream.name, UpstreamErrorKind::Timeout);
                tracing::warn!(
                    route = %route.name,
                    upstream = %upstream.name,
                    request_id = request_id.to_str().unwrap_or("-"),
                    timeout = ?upstream.timeout,
                    "upstream did not answer in time",
                );
                let message = format!(
                    "the upstream did not answer within {}",
                    humantime::format_duration(upstream.timeout)
                );
                return error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    Some(route),
                    &message,
                    request_id,
                );
            }
        };

        if let Some(problem) = framing::upstream_response_problem(response.headers()) {
            tracing::warn!(
                route = %route.name,
                upstream = %upstream.name,
                request_id = request_id.to_str().unwrap_or("-"),
                problem,
                "upstream response refused",
            );
            let message = "the upstream's response could not be passed on";
            return error_response(StatusCode::BAD_GATEWAY, Some(route), message, request_id);
        }
        framing::frame_response(response.headers_mut());
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        // An upgraded connection belongs to the tunnel: it never goes back to the pool.
        let lease = (!switching).then_some(lease);
        if switching {
            match client_upgrade {
                Some((client_upgrade, slot)) => {
                    let upstream_upgrade = hyper::upgrade::on(&mut response);
                    websocket::spawn_tunnel(
                        &self.tunnels,
                        client_upgrade,
                        upstream_upgrade,
                        slot,
                        Arc::clone(&route.name),
                        credential_expires_at,
                        Arc::clone(self.metrics.route(route)),
                    );
                }
                None => {
                    let message = "the upstream switched protocols without being asked to";
                    return error_response(
                        StatusCode::BAD_GATEWAY,
                        Some(route),
                        message,
                        request_id,
                    );
                }
            }
        }
        headers::clean_response_headers(response.headers_mut(), switching);
        response.map(|body| ProxyBody::upstream(UpstreamBody::new(body, lease)))
    }
}

/// The request id: a trusted proxy's, if it sent a sane one, else a fresh UUID.
fn request_id(request: &Request<Incoming>, snapshot: &Snapshot, peer_trusted: bool) -> HeaderValue {
    if peer_trusted {
        let sent = request
            .headers()
            .get(&snapshot.headers.request_id)
            .filter(|value| {
                let bytes = value.as_bytes();
                (1..=200).contains(&bytes.len()) && bytes.iter().all(|b| b.is_ascii_graphic())
            });
        if let Some(value) = sent {
            return value.clone();
        }
    }
    request_id::fresh()
}

/// Whether the query holds an OIDC login's one-time `auth_code`.
fn carries_login_code<B>(request: &Request<B>) -> bool {
    request
        .uri()
        .query()
        .is_some_and(|query| query.split('&').any(|pair| pair.starts_with("auth_code=")))
}

/// A WebSocket opening handshake (RFC 6455 §4.1) over HTTP/1.1.
fn is_websocket_handshake<B>(request: &Request<B>) -> bool {
    request.method() == Method::GET
        && request.version() == Version::HTTP_11
        && headers::connection_has(request.headers(), "upgrade")
        && request
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// The path and query the upstream gets: `strip_prefix` applied, the upstream's base
/// path prepended, the query kept as sent.
fn upstream_path(route: &Route, path: &str, query: Option<&str>) -> String {
    let rest = if route.strip_prefix && route.prefix != "/" {
        match &path[route.prefix.len().min(path.len())..] {
            "" => "/",
            rest => rest,
        }
    } else {
        path
    };
    let mut out = String::with_capacity(rest.len() + query.map_or(0, |q| q.len() + 1) + 16);
    out.push_str(rest);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// The request target in origin form (`/path?query`), as HTTP/1.1 sends it to a server.
fn upstream_uri(http: &HttpUpstream, path_and_query: String) -> Option<Uri> {
    let target = if http.base_path.is_empty() {
        path_and_query
    } else {
        format!("{}{path_and_query}", http.base_path)
    };
    // From `Bytes` that own the string: checked, not copied.
    let path_and_query = PathAndQuery::from_maybe_shared(bytes::Bytes::from(target)).ok()?;
    Some(Uri::from(path_and_query))
}
