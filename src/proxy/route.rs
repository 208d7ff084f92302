//! What a request is routed to: the compiled route and its upstream, as the request
//! path reads them. Built by `build`, held by the snapshot; nothing here reads the
//! snapshot itself.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, uri::Authority};

use super::fairness::UpstreamCap;
use super::headers::unlisted::UnlistedNames;
use super::limits::WebSocketCap;
use super::pool::{PoolCounts, UpstreamPool};
use crate::auth::RouteAuth;
use crate::config::model;
use crate::http1::Fields;
use crate::metrics::RouteSlot;
use crate::rate_limit::ClientRateLimit;

/// A route as the request path needs it.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    /// The check a request must pass before the upstream is contacted.
    pub auth: Option<RouteAuth>,
    /// Normalised: no trailing `/` except for the root route.
    pub prefix: String,
    pub strip_prefix: bool,
    pub upstream: Arc<Upstream>,
    /// Client headers forwarded on this route on top of the standard ones
    /// ([`HeaderClass::Standard`](super::headers::HeaderClass::Standard)).
    pub extra_client_headers: Box<[HeaderName]>,
    /// Added to this route's responses where they lack them (the route's
    /// `security_headers`, else the server's list).
    pub security_headers: SecurityHeaderList,
    /// The route's counters, resolved on its first request (see [`crate::metrics`]).
    pub metrics: RouteSlot,
    /// The client header names this route dropped for being on no list, in this
    /// snapshot: each is logged the first time (a reload starts afresh).
    pub unlisted_headers: UnlistedNames,
    /// The largest request body, in bytes (the route's, else the server's).
    pub max_request_body: u64,
    /// The cap on open WebSockets (a built route always has one).
    pub websockets: Option<WebSocketCap>,
    /// A tunnel that carries no bytes either way for this long is closed.
    pub websocket_idle_timeout: Duration,
    /// Requests per client, when the route has a limit.
    pub rate_limit: Option<Arc<ClientRateLimit>>,
}

/// Security response headers, precomputed; routes without their own share the server's.
/// Also holds the bytes they take as header lines, so that a response makes room for
/// them at once without counting them per request.
#[derive(Debug, Clone, Default)]
pub struct SecurityHeaderList {
    headers: Arc<[(HeaderName, HeaderValue)]>,
    line_bytes: usize,
}

impl SecurityHeaderList {
    /// The bytes the headers take written as lines (`name: value\r\n`).
    pub fn line_bytes(&self) -> usize {
        self.line_bytes
    }
}

impl From<Vec<(HeaderName, HeaderValue)>> for SecurityHeaderList {
    fn from(headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        let line_bytes = headers
            .iter()
            .map(|(name, value)| Fields::line_len(name, value))
            .sum();
        Self {
            headers: headers.into(),
            line_bytes,
        }
    }
}

impl std::ops::Deref for SecurityHeaderList {
    type Target = [(HeaderName, HeaderValue)];

    fn deref(&self) -> &Self::Target {
        &self.headers
    }
}

#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    pub target: UpstreamTarget,
    /// How long to wait for response headers.
    pub timeout: Duration,
    /// The settings it was built from: an unchanged upstream keeps its connection pool
    /// across reloads.
    pub settings: model::Upstream,
    /// Its health, when it has a `health_check`.
    pub health: Option<Arc<crate::proxy::health::UpstreamHealth>>,
}

impl Upstream {
    /// Its requests in flight and pool connections now; `None` for the built-in echo,
    /// which has no connections.
    pub fn pool_counts(&self) -> Option<PoolCounts> {
        match &self.target {
            UpstreamTarget::Http(http) => Some(http.pool.counts()),
            UpstreamTarget::Echo => None,
        }
    }
}

#[derive(Debug)]
pub enum UpstreamTarget {
    Http(Box<HttpUpstream>),
    Echo,
}

#[derive(Debug)]
pub struct HttpUpstream {
    /// Its keep-alive connections, shared (by `Clone`) with later snapshots.
    pub pool: UpstreamPool,
    pub authority: Authority,
    /// The URL's path without its trailing `/`: prepended to every forwarded path.
    pub base_path: String,
    /// The `Host` header the upstream gets.
    pub host: HeaderValue,
    /// Its `max_in_flight`, when it has one.
    pub in_flight: Option<UpstreamCap>,
}
