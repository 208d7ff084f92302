//! The compiled, immutable form of a config: what the request path reads.
//!
//! A request loads the current snapshot once (`SharedSnapshot::load_full`) and uses only
//! it, so a reload — one atomic store of a new `Arc<Snapshot>` — never shows a request a
//! mix of two configs. Everything here was built by `config::compile`; nothing is
//! parsed or rebuilt per request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue, uri::Authority};
use ipnet::IpNet;

use crate::auth::oidc::AuthEndpoints;
use crate::auth::{Provider, RouteAuth};
use crate::config::{Config, Diagnostic, SourceHash, model};
use crate::proxy::headers::HeaderClasses;
use crate::proxy::limits::WebSocketCap;
use crate::proxy::pool::UpstreamPool;
use crate::proxy::routes::RouteTable;

/// Kept here too: the header policy and its fuzz and property tests compare peers with it.
pub use crate::peer::canonical_ip;

/// The current snapshot, swapped atomically on reload.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

#[derive(Debug)]
pub struct Snapshot {
    /// 1 for the config loaded at start, +1 for every reload that applied.
    pub generation: u64,
    pub source_hash: SourceHash,
    pub loaded_at: SystemTime,
    /// The effective config (defaults filled in, refused static keys kept at their
    /// running values).
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
    pub routes: RouteTable<Route>,
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    pub providers: BTreeMap<String, Arc<Provider>>,
    /// The login endpoints oidc providers serve, matched before the routes.
    pub auth_endpoints: AuthEndpoints,
    pub headers: HeaderPolicy,
    pub limits: ConnectionLimits,
    /// The public listener's TLS settings when `[server.tls]` is set: each new handshake
    /// reads the current snapshot's, so a reloaded certificate serves new connections.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

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
    /// ([`HeaderClass::Standard`](crate::proxy::headers::HeaderClass::Standard)).
    pub extra_client_headers: Box<[HeaderName]>,
    /// Added to this route's responses where they lack them (the route's
    /// `security_headers`, else the server's list).
    pub security_headers: SecurityHeaderList,
    /// The route's counters, resolved on its first request (see [`crate::metrics`]).
    pub metrics: crate::metrics::RouteSlot,
    /// The largest request body, in bytes (the route's, else the server's).
    pub max_request_body: u64,
    /// The cap on open WebSockets, when the route has one.
    pub websockets: Option<WebSocketCap>,
}

/// Security response headers, precomputed; routes without their own share the server's.
pub type SecurityHeaderList = Arc<[(HeaderName, HeaderValue)]>;

#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    pub target: UpstreamTarget,
    /// How long to wait for response headers.
    pub timeout: Duration,
    /// The settings it was built from: an unchanged upstream keeps its connection pool
    /// across reloads.
    pub settings: model::Upstream,
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
}

/// The header policy of DESIGN.md, precomputed.
#[derive(Debug)]
pub struct HeaderPolicy {
    pub trusted_proxies: Vec<IpNet>,
    /// The standard, trusted-only and identity header names, each with its class:
    /// client headers in the standard class are forwarded on every route; trusted-only
    /// ones (forwarding, forward-auth user, request id) only from a trusted proxy;
    /// identity ones, set by the gateway from verified credentials, from no client.
    pub classes: HeaderClasses,
    pub request_id: HeaderName,
    pub remote_user: HeaderName,
    /// The path of `public_base_url`, when it is not `/`.
    pub forwarded_prefix: Option<HeaderValue>,
    /// Added to responses that match no route where they lack them; empty when
    /// `security_headers = false`.
    pub security_headers: SecurityHeaderList,
    /// `Strict-Transport-Security`, for responses sent over HTTPS only; `None` when
    /// `security_headers = false`.
    pub hsts: Option<HeaderValue>,
}

impl HeaderPolicy {
    pub fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// Per-connection limits of the public listener, read when a connection is accepted.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_size: usize,
    pub max_connections: usize,
}
