//! The request path: one snapshot load, route match, header policy, upstream call.
//!
//! `Proxy::handle` never fails: every problem becomes a short response that names the
//! route and the request id (404, 400, 502, 504) and never shows upstream internals;
//! the details go to the log.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};

use crate::auth::identity::{IdentitySigner, JWKS_PATH};
use crate::auth::oidc::Endpoint;
use crate::auth::oidc::session::SessionWatch;
use crate::auth::{AuthFailure, Identity};
use crate::http1::client::SendError;
use crate::http1::client::{Declared, Fields, Outgoing, Received};
use crate::http1::server::{OnUpgrade, Reply};
use crate::metrics::{Metrics, RequestRecord, RouteMetrics, UpstreamErrorKind};
use crate::proxy::errors::{self, error_response};
use crate::proxy::fairness::Admission;
use crate::proxy::headers::unlisted::{self, Noted};
use crate::proxy::headers::{self, RequestContext};
use crate::proxy::limits::ClientBody;
use crate::proxy::pool::{Sent, UpstreamBody, UpstreamError};
use crate::proxy::route::{HttpUpstream, Route, UpstreamTarget};
use crate::proxy::{ProxyBody, echo, framing, limits, request_id, routes, websocket};
use crate::snapshot::{SharedSnapshot, Snapshot};

use super::login;

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

    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps a second copy of its arguments in its state"
    )]
    pub fn handle(
        &self,
        request: Request<ClientBody>,
        peer: SocketAddr,
    ) -> impl Future<Output = Reply<ProxyBody>> + Send + '_ {
        // A block, not an `async fn`, which would keep a second copy of the request in
        // the future's state; the future is boxed for every request.
        async move {
            let snapshot = self.snapshot.load_full();
            let mut record = RequestRecord::start(
                self.metrics.no_route(),
                &request,
                peer,
                snapshot.config.log.access_log,
            );
            let policy = &snapshot.headers;
            let peer_trusted = policy.is_trusted(peer.ip());
            let request_id = choose_request_id(&request, &snapshot, peer_trusted);
            record.set_request_id(&request_id);
            let carries_login_code = carries_login_code(&request);
            let over_https = headers::is_https(self.scheme, request.headers(), peer_trusted);
            let mut matched = None;
            let arrival = Arrival {
                snapshot: &snapshot,
                request,
                peer,
                peer_trusted,
                request_id: &request_id,
            };
            let routed = self.route(arrival, &mut record, &mut matched);
            let mut reply = match routed {
                Routed::Respond(response) => Reply::from(response),
                Routed::Forward(forward) => {
                    let (request, exchange) = forward.into_request();
                    let timeout = exchange.route.upstream.timeout;
                    let sent = tokio::time::timeout(timeout, exchange.http.pool.send(request));
                    self.answer(exchange, sent.await, &request_id)
                }
                Routed::Wait(pending) => pending.await,
            };
            // The page an OIDC login lands on has its one-time code in the URL: it keeps
            // it out of the Referer of everything that page loads.
            let no_referrer = carries_login_code;
            headers::finish_response(
                &mut reply,
                policy,
                matched,
                &request_id,
                over_https,
                no_referrer,
            );
            record.set_status(reply.response.status());
            reply.map(|body| body.with_record(record))
        }
    }

    /// Decides where a request goes without waiting for anything; `matched` learns the
    /// route (its security headers apply to the response) and `record` its metrics.
    fn route<'a>(
        &'a self,
        arrival: Arrival<'a>,
        record: &mut RequestRecord,
        matched: &mut Option<&'a Route>,
    ) -> Routed<'a> {
        let Arrival {
            snapshot,
            request,
            peer,
            request_id,
            ..
        } = &arrival;
        if let Some(reason) = framing::refusal(request) {
            let mut response = error_response(StatusCode::BAD_REQUEST, None, reason, request_id);
            // What follows on this connection cannot be trusted to be framed as the
            // client meant: read no further.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Routed::Respond(response);
        }
        let path = match routes::normalize_path(request.uri().path()) {
            Ok(path) => path,
            Err(reason) => {
                let message = reason.to_string();
                return Routed::Respond(error_response(
                    StatusCode::BAD_REQUEST,
                    None,
                    &message,
                    request_id,
                ));
            }
        };
        // The gateway's own keys and login endpoints come before the routes.
        if path == JWKS_PATH {
            return Routed::Respond(jwks_response(request.method(), &snapshot.identity));
        }
        // The gateway's own login endpoints (oidc providers) come before the routes.
        if let Some(entry) = snapshot.auth_endpoints.find(&path) {
            let metrics = self.metrics.auth_endpoint(&entry.provider.name);
            // Limits and the exchange judge the client, not a trusted proxy in front of it.
            let client = headers::client_address(peer.ip(), request.headers(), &snapshot.headers);
            if entry.endpoint == Endpoint::Login
                && let Err(limited) = entry.provider.login_limit.check(client)
            {
                metrics.rate_limited();
                record.set_route(metrics);
                return Routed::Respond(errors::rate_limited(None, limited, request_id));
            }
            record.set_route(metrics);
            let (endpoints, peer, request_id) = (&snapshot.auth_endpoints, *peer, *request_id);
            // A path that needed no normalising is the request's own.
            let normalised = match path {
                Cow::Owned(path) => Some(path),
                Cow::Borrowed(_) => None,
            };
            let answer = login::answer(
                endpoints,
                arrival.request,
                normalised,
                peer,
                client,
                request_id,
            );
            return Routed::Wait(Box::pin(answer.map(Reply::from)));
        }
        let Some(route) = snapshot.routes.find(&path) else {
            let message = "no route matches this path";
            return Routed::Respond(error_response(
                StatusCode::NOT_FOUND,
                None,
                message,
                request_id,
            ));
        };
        let route_metrics = self.metrics.route(&route.metrics, &route.name);
        record.set_route(Arc::clone(route_metrics));
        *matched = Some(route);
        // Before the auth check: a flood costs no token verification.
        if let Some(limit) = &route.rate_limit {
            let client = headers::client_address(peer.ip(), request.headers(), &snapshot.headers);
            if let Err(limited) = limit.check(client) {
                route_metrics.rate_limited();
                return Routed::Respond(errors::rate_limited(Some(route), limited, request_id));
            }
        }
        let upstream_path = upstream_path(route, &path, request.uri().query());

        // The route's check runs before anything is sent upstream.
        let Some(auth) = &route.auth else {
            return self.prepare(arrival, route, upstream_path, None);
        };
        Routed::Wait(Box::pin(async move {
            let remote_user = &arrival.snapshot.headers.remote_user;
            let request = &arrival.request;
            let checked = auth
                .authenticate(
                    request.method(),
                    request.headers(),
                    arrival.peer.ip(),
                    remote_user,
                )
                .await;
            let mut identity = match checked {
                Ok(identity) => identity,
                Err(failure) => {
                    self.metrics
                        .auth_failure(&auth.provider.name, failure.reason());
                    tracing::info!(
                        route = %route.name,
                        provider = %auth.provider.name,
                        request_id = arrival.request_id.to_str().unwrap_or("-"),
                        status = failure.status().as_u16(),
                        reason = %failure.message(),
                        "request refused at the edge",
                    );
                    if let AuthFailure::LoginRequired { login } = &failure
                        && is_page_load(&arrival.request)
                    {
                        return login_redirect(login, arrival.request.uri()).into();
                    }
                    // A browser in a session it may not use is told who it is logged in
                    // as, and how to change that; scripts and bearer clients get the
                    // plain 403.
                    if let AuthFailure::NotAllowed {
                        user,
                        logout: Some(logout),
                    } = &failure
                        && is_page_load(&arrival.request)
                    {
                        let request_id = arrival.request_id;
                        return errors::not_allowed_page(route, user, logout, request_id).into();
                    }
                    return errors::auth_failure_response(&failure, route, arrival.request_id)
                        .into();
                }
            };
            let request_id = arrival.request_id;
            // What the gateway verified, signed for this upstream.
            let signer = &arrival.snapshot.identity;
            let assertion = signer.assertion(
                &identity.asserted,
                &route.upstream.name,
                request_id.to_str().unwrap_or("-"),
                SystemTime::now(),
            );
            let Some(assertion) = assertion else {
                tracing::error!(route = %route.name, "the identity assertion could not be signed");
                let message = "the gateway could not sign the identity assertion";
                return error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Some(route),
                    message,
                    request_id,
                )
                .into();
            };
            identity.headers.push((signer.header().clone(), assertion));
            self.prepare(arrival, route, upstream_path, Some(&identity))
                .respond(self, request_id)
                .await
        }))
    }

    /// The routed request, checked against the route's limits, with the upstream's
    /// headers: ready to forward, or refused.
    fn prepare<'a>(
        &'a self,
        arrival: Arrival<'a>,
        route: &'a Arc<Route>,
        upstream_path: String,
        identity: Option<&Identity>,
    ) -> Routed<'a> {
        let Arrival {
            snapshot,
            mut request,
            peer,
            peer_trusted,
            request_id,
        } = arrival;
        let websocket = is_websocket_handshake(&request);
        let websocket_slot = match route.websockets.as_ref().filter(|_| websocket) {
            Some(cap) => match cap.try_open() {
                Some(slot) => Some(slot),
                None => {
                    return Routed::Respond(errors::too_many_websockets(route, cap, request_id));
                }
            },
            None => None,
        };
        if limits::declared_length_exceeds(request.headers(), route.max_request_body) {
            return Routed::Respond(errors::too_large(route, request_id));
        }
        // The engine puts the client's connection in the request's extensions for a request
        // that asks to switch protocols; it is taken only for a WebSocket handshake.
        let client_upgrade = websocket
            .then(|| request.extensions_mut().remove::<OnUpgrade>())
            .flatten();
        let (parts, body) = request.into_parts();
        let body = limits::LimitedBody::new(body, route.max_request_body);
        let ctx = RequestContext {
            peer,
            peer_trusted,
            scheme: self.scheme,
            uri_authority: parts.uri.authority().map(|a| a.as_str()),
            request_id,
            websocket,
            identity,
        };

        // Resolved already: `route` counted the request under it.
        let route_metrics = self.metrics.route(&route.metrics, &route.name);
        let mut unlisted = |name: &HeaderName| report_unlisted(route, route_metrics, name);

        let http = match &route.upstream.target {
            UpstreamTarget::Http(http) => http,
            UpstreamTarget::Echo => {
                // The built-in upstream has no address; its Host is its name.
                let host = HeaderValue::from_static("echo");
                let mut headers = http::HeaderMap::new();
                headers::upstream_request_headers(
                    &parts.headers,
                    &snapshot.headers,
                    route,
                    &host,
                    &ctx,
                    &mut headers,
                    &mut unlisted,
                );
                // What the engine's client would add for the body.
                match framing::frame_upstream_request(&parts.headers, &body) {
                    Declared::Chunked => {
                        let chunked = HeaderValue::from_static("chunked");
                        headers.insert(header::TRANSFER_ENCODING, chunked);
                    }
                    Declared::Length(length) => {
                        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
                    }
                    Declared::Nothing => {}
                }
                let method = parts.method;
                return Routed::Wait(Box::pin(async move {
                    echo::respond(route, &method, &upstream_path, headers, body, request_id)
                        .await
                        .into()
                }));
            }
        };
        // Upstream fairness: a place among the requests in flight, held with the body.
        let client = headers::client_address(peer.ip(), &parts.headers, &snapshot.headers);
        let admission = match snapshot.fairness.admit(client, http.in_flight.as_ref()) {
            Ok(admission) => admission,
            Err(refusal) => {
                self.metrics.upstream_refused(refusal.as_str());
                return Routed::Respond(errors::upstream_busy(route, refusal, request_id));
            }
        };
        let mut fields = Fields::with_capacity(parts.headers.len() + 6);
        headers::upstream_request_headers(
            &parts.headers,
            &snapshot.headers,
            route,
            &http.host,
            &ctx,
            &mut fields,
            &mut unlisted,
        );
        let declared = framing::frame_upstream_request(&parts.headers, &body);
        let Some(target) = upstream_uri(http, upstream_path) else {
            let message = "the request path cannot be forwarded";
            return Routed::Respond(error_response(
                StatusCode::BAD_REQUEST,
                Some(route),
                message,
                request_id,
            ));
        };
        let upstream_request = Outgoing {
            method: parts.method,
            target,
            fields,
            declared,
            body,
        };
        Routed::Forward(Forward {
            route,
            http,
            admission,
            request: upstream_request,
            client_upgrade: client_upgrade.map(|on_upgrade| {
                Box::new(ClientUpgrade {
                    on_upgrade,
                    slot: websocket_slot,
                    expires_at: identity.and_then(|identity| identity.expires_at),
                    session: identity.and_then(|identity| identity.session.clone()),
                })
            }),
        })
    }
}

/// Makes a client header that the policy dropped for being on no list visible: counted,
/// and logged the first time the route drops that name in this snapshot (the names are
/// capped, so made-up ones cannot flood the log). Never the value: it may be a secret.
#[cold]
fn report_unlisted(route: &Route, metrics: &RouteMetrics, name: &HeaderName) {
    metrics.client_header_dropped();
    match route.unlisted_headers.note(name) {
        Noted::First => tracing::info!(
            route = %route.name,
            header = %name,
            "client header dropped: it is not a standard header; add it to the route's \
             forward_client_headers if the upstream needs it",
        ),
        Noted::Full => tracing::info!(
            route = %route.name,
            header = %name,
            "client header dropped: it is not a standard header; add it to the route's \
             forward_client_headers if the upstream needs it. The route dropped {} other \
             names since the config was loaded: further ones are only counted \
             (fluxlit_client_headers_dropped_total) until the next reload",
            unlisted::REMEMBERED,
        ),
        Noted::Again => {}
    }
}

/// Whether a browser is loading a page: a `GET` or `HEAD` that accepts HTML and is no
/// WebSocket handshake. Only those are sent to the login; scripts and API clients get
/// 401, so no script follows a redirect into a login page it cannot show.
fn is_page_load<B>(request: &Request<B>) -> bool {
    matches!(*request.method(), Method::GET | Method::HEAD)
        && !is_websocket_handshake(request)
        && request
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .any(|accept| {
                accept
                    .as_bytes()
                    .windows(9)
                    .any(|window| window.eq_ignore_ascii_case(b"text/html"))
            })
}

/// `302` to the login page, which comes back to the request's own path and query.
fn login_redirect(login: &str, uri: &Uri) -> Response<ProxyBody> {
    let next = uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let encoded: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
    crate::http::redirect::<Bytes>(&format!("{login}?next={encoded}")).map(ProxyBody::full)
}

/// A request as it arrived, with what the gateway learned of it before routing.
struct Arrival<'a> {
    snapshot: &'a Snapshot,
    request: Request<ClientBody>,
    peer: SocketAddr,
    peer_trusted: bool,
    request_id: &'a HeaderValue,
}

/// Where routing sent a request. Most requests go to an HTTP upstream with nothing to
/// wait for first, and that path is awaited in place; whatever must wait for something
/// else first (an auth check, the gateway's login endpoints, the echo upstream) comes
/// boxed, so that its state does not enlarge the future of every request.
enum Routed<'a> {
    /// Answered by the gateway itself: an error or a refusal.
    Respond(Response<ProxyBody>),
    Forward(Forward<'a>),
    Wait(Pin<Box<dyn Future<Output = Reply<ProxyBody>> + Send + 'a>>),
}

impl Routed<'_> {
    /// The response, once what the request waits for is done. (`Proxy::handle` does the
    /// same in place, which keeps one layer of state out of every request's future.)
    async fn respond(self, proxy: &Proxy, request_id: &HeaderValue) -> Reply<ProxyBody> {
        match self {
            Routed::Respond(response) => response.into(),
            Routed::Forward(forward) => {
                let (request, exchange) = forward.into_request();
                let timeout = exchange.route.upstream.timeout;
                let sent = tokio::time::timeout(timeout, exchange.http.pool.send(request));
                proxy.answer(exchange, sent.await, request_id)
            }
            Routed::Wait(pending) => pending.await,
        }
    }
}

/// A request ready for its HTTP upstream.
struct Forward<'a> {
    route: &'a Arc<Route>,
    http: &'a HttpUpstream,
    admission: Admission,
    request: Outgoing<limits::LimitedBody>,
    /// The client's side of a WebSocket handshake, and what the tunnel needs.
    client_upgrade: Option<Box<ClientUpgrade>>,
}

/// A WebSocket handshake's client side, and what decides how long its tunnel may stay
/// open. Boxed: most requests are no handshake, and carry one pointer for it.
struct ClientUpgrade {
    on_upgrade: OnUpgrade,
    /// The route's count of open WebSockets, held while the tunnel is.
    slot: Option<limits::WebSocketSlot>,
    /// When the credential the request was let in with expires: the tunnel closes then.
    expires_at: Option<std::time::SystemTime>,
    /// The browser session it was opened in: the tunnel closes when that ends.
    session: Option<SessionWatch>,
}

impl<'a> Forward<'a> {
    /// The request for the upstream, and what answering the client needs once the
    /// response head is in. The caller builds the send future where it awaits it: made
    /// here and handed back, the future (800 bytes) would be copied twice more.
    fn into_request(self) -> (Outgoing<limits::LimitedBody>, Exchange<'a>) {
        let exchange = Exchange {
            route: self.route,
            http: self.http,
            admission: self.admission,
            body_exceeded: self.request.body.exceeded(),
            client_upgrade: self.client_upgrade,
        };
        (self.request, exchange)
    }
}

/// A request on its way upstream: what answering the client needs once the response
/// head is in.
struct Exchange<'a> {
    route: &'a Arc<Route>,
    http: &'a HttpUpstream,
    admission: Admission,
    /// Set when the client's body went over the route's limit while it was being sent.
    body_exceeded: Option<Arc<std::sync::atomic::AtomicBool>>,
    client_upgrade: Option<Box<ClientUpgrade>>,
}

impl Proxy {
    /// Turns what the upstream sent back (or its failure) into the client's response.
    fn answer(
        &self,
        exchange: Exchange<'_>,
        result: Result<Sent, tokio::time::error::Elapsed>,
        request_id: &HeaderValue,
    ) -> Reply<ProxyBody> {
        let Exchange {
            route,
            body_exceeded,
            client_upgrade,
            admission,
            ..
        } = exchange;
        let upstream = &route.upstream;
        let (received, lease) = match result {
            Ok(Ok(sent)) => sent,
            Ok(Err(_))
                if body_exceeded.as_ref().is_some_and(|exceeded| {
                    exceeded.load(std::sync::atomic::Ordering::Relaxed)
                }) =>
            {
                return errors::too_large(route, request_id).into();
            }
            Ok(Err(UpstreamError::Request(SendError::RequestBody(error)))) => {
                tracing::info!(
                    route = %route.name,
                    request_id = request_id.to_str().unwrap_or("-"),
                    error = %errors::chain(&*error),
                    "the client's request body was malformed or cut short",
                );
                let message = "the request body was malformed or cut short";
                let status = StatusCode::BAD_REQUEST;
                return error_response(status, Some(route), message, request_id).into();
            }
            Ok(Err(error)) => {
                let kind = match error {
                    UpstreamError::ConnectTimeout(_) => UpstreamErrorKind::ConnectTimeout,
                    UpstreamError::Connect(_) | UpstreamError::Tls(_) => {
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
                return error_response(status, Some(route), message, request_id).into();
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
                )
                .into();
            }
        };

        if let Some(problem) = framing::upstream_response_problem(&received.lines) {
            tracing::warn!(
                route = %route.name,
                upstream = %upstream.name,
                request_id = request_id.to_str().unwrap_or("-"),
                problem,
                "upstream response refused",
            );
            let message = "the upstream's response could not be passed on";
            let status = StatusCode::BAD_GATEWAY;
            return error_response(status, Some(route), message, request_id).into();
        }
        let Received {
            status,
            lines,
            declared_length,
            body,
            ..
        } = received;
        let reply = |body: ProxyBody| {
            let mut response = Response::new(body.holding(admission));
            *response.status_mut() = status;
            Reply {
                response,
                lines,
                added: Fields::default(),
                declared_length,
            }
        };
        if status != StatusCode::SWITCHING_PROTOCOLS {
            return reply(ProxyBody::upstream(UpstreamBody::new(body, Some(lease))));
        }
        // An upgraded connection belongs to the tunnel: it never goes back to the pool.
        let Some(client) = client_upgrade else {
            let message = "the upstream switched protocols without being asked to";
            let status = StatusCode::BAD_GATEWAY;
            return error_response(status, Some(route), message, request_id).into();
        };
        let Some(upstream_upgrade) = body.upgrade() else {
            let message = "the upstream's connection could not be taken over";
            let status = StatusCode::BAD_GATEWAY;
            return error_response(status, Some(route), message, request_id).into();
        };
        let ClientUpgrade {
            on_upgrade,
            slot,
            expires_at,
            session,
        } = *client;
        websocket::spawn_tunnel(
            &self.tunnels,
            on_upgrade,
            upstream_upgrade,
            slot,
            Arc::clone(&route.name),
            websocket::Lifetime {
                expires_at,
                session,
                idle_timeout: Some(route.websocket_idle_timeout),
            },
            Arc::clone(self.metrics.route(&route.metrics, &route.name)),
        );
        reply(ProxyBody::empty())
    }
}

/// The request id: a trusted proxy's, if it sent a sane one, else a fresh UUID.
fn choose_request_id(
    request: &Request<ClientBody>,
    snapshot: &Snapshot,
    peer_trusted: bool,
) -> HeaderValue {
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

/// The identity assertion's public keys (`GET` or `HEAD`). Cached by clients for five
/// minutes: a rotated key stays published as a previous key for longer than that.
fn jwks_response(method: &Method, signer: &IdentitySigner) -> Response<ProxyBody> {
    let body = signer.jwks();
    let mut response = match *method {
        Method::GET => Response::new(ProxyBody::full(body.clone())),
        Method::HEAD => {
            let mut response = Response::new(ProxyBody::empty());
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            response
        }
        _ => {
            let mut response = Response::new(ProxyBody::empty());
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}
