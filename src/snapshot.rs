//! The compiled, immutable form of a config: what the request path reads.
//!
//! A request loads the current snapshot once (`SharedSnapshot::load_full`) and uses only
//! it, so a reload — one atomic store of a new `Arc<Snapshot>` — never shows a request a
//! mix of two configs. Everything here was made by `compile` and `build`; nothing
//! is parsed or rebuilt per request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::auth::Provider;
use crate::auth::identity::IdentitySigner;
use crate::auth::oidc::AuthEndpoints;
use crate::config::{Config, Diagnostic, SourceHash};
use crate::proxy::fairness::Fairness;
use crate::proxy::headers::HeaderPolicy;
use crate::proxy::limits::ConnectionLimits;
use crate::proxy::route::{Route, Upstream};
use crate::proxy::routes::RouteTable;

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
    /// The caps on requests in flight to the upstreams, over counts shared by snapshots.
    pub fairness: Fairness,
    /// The public listener's TLS settings when `[server.tls]` is set: each new handshake
    /// reads the current snapshot's, so a reloaded certificate serves new connections.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Signs the identity assertion of authenticated requests; publishes its keys.
    pub identity: IdentitySigner,
}
