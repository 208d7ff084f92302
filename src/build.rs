//! Stage 3: a [`Plan`] → a [`Snapshot`]: the runtime parts made, or kept from the
//! snapshot serving now.
//!
//! Connection pools, JWKS caches, OIDC discovery and login stores live across reloads:
//! a part whose settings did not change is taken from the previous snapshot (so a
//! reload keeps warm connections, fetched keys and logins in progress), and a new one
//! is made otherwise. Build starts nothing and touches nothing it takes over: the
//! reload starts the new snapshot's background work ([`Snapshot::start`]) after the
//! swap, and what the old snapshot alone held stops when its last request lets go of it
//! (each background task is tied to the life of its owner).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::auth::identity::{IdentityKeyError, IdentitySigner, SigningKey};
use crate::auth::jwks::{JwksCache, JwksSource};
use crate::auth::jwt::JwtVerifier;
use crate::auth::oidc::discovery::Discovery;
use crate::auth::oidc::redis_store::{RedisStore, RedisUrlError};
use crate::auth::oidc::seal::{KeyOrigin, Sealer, SealerError};
use crate::auth::oidc::store::{MemoryStore, Store};
use crate::auth::oidc::{AuthEndpoints, OidcProvider, StoreSettings};
use crate::auth::{Check, Provider, RouteAuth};
use crate::compile::{
    CheckPlan, CompileContext, HttpTarget, IdentityPlan, JwksPlan, OidcPlan, Plan, ProviderPlan,
    RoutePlan, TargetPlan, UpstreamPlan, compile,
};
use crate::config::model::RateLimit;
use crate::config::{CheckedConfig, Diagnostic, model};
use crate::proxy::fairness::{Fairness, UpstreamCap};
use crate::proxy::health::{ProbeTarget, UpstreamHealth};
use crate::proxy::limits::WebSocketCap;
use crate::proxy::pool::UpstreamPool;
use crate::proxy::route::{HttpUpstream, Route, Upstream, UpstreamTarget};
use crate::proxy::routes::RouteTable;
use crate::rate_limit::ClientRateLimit;
use crate::snapshot::Snapshot;

/// Why a plan could not be built. Compile checks everything a user can get wrong; these
/// name what only the runtime library could refuse.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No key could be generated for the identity assertion.
    #[error(transparent)]
    IdentityKey(#[from] IdentityKeyError),
    #[error("{source}")]
    Store {
        provider: String,
        #[source]
        source: RedisUrlError,
    },
    /// No key could be generated for a provider's login cookie.
    #[error("no key for the login cookie: {source}")]
    Sealer {
        provider: String,
        #[source]
        source: SealerError,
    },
    #[error("route {route:?} names {what} {name:?}, which the plan lacks")]
    Dangling {
        route: String,
        what: &'static str,
        name: String,
    },
}

impl BuildError {
    /// The error as a diagnostic on the key it is about.
    pub fn diagnostic(&self) -> Diagnostic {
        let key = match self {
            Self::Store { provider, .. } => format!("auth.providers.{provider}.store"),
            Self::Sealer { provider, .. } => format!("auth.providers.{provider}.session_key"),
            Self::Dangling { .. } => "routes".to_owned(),
            Self::IdentityKey(_) => "identity.signing_key".to_owned(),
        };
        Diagnostic::error(key, self.to_string())
    }
}

/// Builds generation `generation` from `plan`, taking over what `previous` (the
/// snapshot serving now, if any) has with the same settings.
pub fn build(
    plan: Plan,
    previous: Option<&Snapshot>,
    generation: u64,
) -> Result<Snapshot, BuildError> {
    let Plan {
        config,
        source_hash,
        warnings,
        headers,
        upstreams,
        providers,
        routes,
        limits,
        fairness,
        tls,
        identity,
    } = plan;

    let mut built_providers = BTreeMap::new();
    for (name, provider) in providers {
        let built = build_provider(&name, provider, previous)?;
        built_providers.insert(name, Arc::new(built));
    }
    let upstreams: BTreeMap<String, Arc<Upstream>> = upstreams
        .into_iter()
        .map(|(name, upstream)| {
            let built = build_upstream(&name, upstream, previous);
            (name, Arc::new(built))
        })
        .collect();
    let mut entries = Vec::with_capacity(routes.len());
    for route in routes {
        let built = build_route(route, &upstreams, &built_providers, previous)?;
        entries.push((built.prefix.clone(), Arc::new(built)));
    }

    Ok(Snapshot {
        generation,
        source_hash,
        loaded_at: SystemTime::now(),
        routes: RouteTable::new(entries),
        upstreams,
        auth_endpoints: auth_endpoints(&built_providers),
        providers: built_providers,
        headers,
        limits,
        // The running snapshot's counts: requests in flight stay counted across a reload.
        fairness: Fairness::new(fairness, previous.map(|snapshot| &snapshot.fairness)),
        tls,
        identity: build_identity(identity, previous)?,
        warnings,
        config,
    })
}

/// The assertion signer. With no key in the file, the key generated for the running
/// snapshot is kept: a reload must not make every assertion already issued unverifiable.
fn build_identity(
    plan: IdentityPlan,
    previous: Option<&Snapshot>,
) -> Result<IdentitySigner, BuildError> {
    let key = match plan.signing_key {
        Some(key) => Arc::new(key),
        None => match previous.map(|snapshot| snapshot.identity.key()) {
            Some(running) if running.is_generated() => Arc::clone(running),
            _ => Arc::new(SigningKey::generate()?),
        },
    };
    Ok(IdentitySigner::new(
        plan.header,
        plan.issuer,
        plan.ttl,
        key,
        &plan.previous,
    ))
}

/// Compile, then build: a checked config to a snapshot that has started nothing. What
/// startup and every reload do, and what tests, benchmarks and fuzz targets call.
pub fn compile_and_build(
    checked: CheckedConfig,
    previous: Option<&Snapshot>,
    generation: u64,
    ctx: &CompileContext,
) -> Result<Snapshot, Vec<Diagnostic>> {
    let plan = compile(checked, ctx)?;
    build(plan, previous, generation).map_err(|error| vec![error.diagnostic()])
}

impl Snapshot {
    /// Starts the background work this snapshot needs and does not have yet: key
    /// refreshes, OIDC discovery and the rate limits' sweeps. Parts taken over from the previous snapshot are
    /// running already (each starts at most once). Called after the snapshot is stored,
    /// never for one a reload refused; needs a tokio runtime.
    pub fn start(&self) {
        for provider in self.providers.values() {
            match &provider.check {
                Check::Jwt(verifier) => {
                    if let Some(cache) = verifier.jwks() {
                        cache.start();
                    }
                }
                Check::Oidc(oidc) => {
                    oidc.discovery.start();
                    oidc.login_limit.start();
                }
                Check::TrustedProxyUser { .. } => {}
            }
        }
        for limit in self
            .routes
            .routes()
            .filter_map(|route| route.rate_limit.as_ref())
        {
            limit.start();
        }
        for health in self.upstreams.values().filter_map(|u| u.health.as_ref()) {
            health.start();
        }
    }
}

fn build_route(
    route: RoutePlan,
    upstreams: &BTreeMap<String, Arc<Upstream>>,
    providers: &BTreeMap<String, Arc<Provider>>,
    previous: Option<&Snapshot>,
) -> Result<Route, BuildError> {
    let dangling = |what, name: &str| BuildError::Dangling {
        route: route.name.to_string(),
        what,
        name: name.to_owned(),
    };
    let upstream = upstreams
        .get(&route.upstream)
        .ok_or_else(|| dangling("upstream", &route.upstream))?;
    let auth = match &route.auth {
        None => None,
        Some(auth) => Some(RouteAuth {
            provider: Arc::clone(
                providers
                    .get(&auth.provider)
                    .ok_or_else(|| dangling("auth provider", &auth.provider))?,
            ),
            required_scopes: auth.required_scopes.clone(),
            allow: auth.allow.clone(),
        }),
    };
    // The same route in the running snapshot keeps counting the tunnels it let in.
    let running = previous.and_then(|snapshot| {
        snapshot
            .routes
            .routes()
            .find(|old| old.name == route.name)
            .and_then(|old| old.websockets.as_ref())
    });
    let websockets = Some(WebSocketCap::new(route.max_websockets, running));
    let rate_limit = route.rate_limit.map(|settings| {
        // The same route with the same limit keeps every client's bucket: a reload
        // must not hand a client a fresh burst.
        let running = previous.and_then(|snapshot| {
            snapshot
                .routes
                .routes()
                .find(|old| old.name == route.name)
                .and_then(|old| old.rate_limit.as_ref())
        });
        keep_or_new_limit(settings, running)
    });
    Ok(Route {
        name: route.name,
        auth,
        prefix: route.prefix,
        strip_prefix: route.strip_prefix,
        upstream: Arc::clone(upstream),
        extra_client_headers: route.extra_client_headers,
        security_headers: route.security_headers,
        metrics: Default::default(),
        unlisted_headers: Default::default(),
        max_request_body: route.max_request_body,
        websockets,
        websocket_idle_timeout: route.websocket_idle_timeout,
        rate_limit,
    })
}

/// The running limit when it has the same settings, else a new one.
fn keep_or_new_limit(
    settings: RateLimit,
    running: Option<&Arc<ClientRateLimit>>,
) -> Arc<ClientRateLimit> {
    match running {
        Some(limit) if *limit.settings() == settings => Arc::clone(limit),
        _ => Arc::new(ClientRateLimit::new(settings)),
    }
}

fn build_upstream(name: &str, upstream: UpstreamPlan, previous: Option<&Snapshot>) -> Upstream {
    let UpstreamPlan {
        target,
        timeout,
        settings,
    } = upstream;
    let mut health = None;
    let target = match target {
        TargetPlan::Echo => UpstreamTarget::Echo,
        TargetPlan::Http(http) => {
            if let Some(check) = &settings.health_check {
                health = Some(build_health(name, check, &http, previous));
            }
            // Any upstream of the running snapshot that dials the same address the same
            // way lends its pool, warm connections and all.
            // (For https, the same way includes the same CAs, name and client
            // certificate, as read now: a rotated CA file gets a new pool.)
            // The upstream's own first, so that two upstreams at one address keep a pool
            // each (and the pool's counts stay the upstream's) across a reload.
            let reused = previous.and_then(|snapshot| {
                let lends = |old: &Upstream| match &old.target {
                    UpstreamTarget::Http(old_http)
                        if same_pool(&old.settings, &settings)
                            && old_http.pool.tls() == http.tls.as_ref() =>
                    {
                        Some(old_http.pool.clone())
                    }
                    _ => None,
                };
                snapshot
                    .upstreams
                    .get(name)
                    .and_then(|old| lends(old))
                    .or_else(|| snapshot.upstreams.values().find_map(|old| lends(old)))
            });
            let pool = reused.unwrap_or_else(|| {
                UpstreamPool::new(
                    http.address.clone(),
                    settings.connect_timeout.get(),
                    settings.pool_idle_timeout.get(),
                    http.tls.clone(),
                )
            });
            let in_flight = settings.max_in_flight.map(|max| {
                // The same upstream at the same address keeps counting the requests it
                // has in flight, whatever its new cap: a reload must not let a burst in.
                let running = previous
                    .and_then(|snapshot| snapshot.upstreams.get(name))
                    .filter(|old| old.settings.url == settings.url)
                    .and_then(|old| match &old.target {
                        UpstreamTarget::Http(old_http) => old_http.in_flight.as_ref(),
                        UpstreamTarget::Echo => None,
                    });
                UpstreamCap::new(max as usize, running)
            });
            UpstreamTarget::Http(Box::new(HttpUpstream {
                pool,
                authority: http.authority,
                base_path: http.base_path,
                host: http.host,
                in_flight,
            }))
        }
    };
    Upstream {
        name: name.into(),
        target,
        timeout,
        settings,
        health,
    }
}

/// An upstream's health: the running snapshot's when it probes the same way (a reload
/// does not send a healthy upstream back to "not probed"), else a new one.
fn build_health(
    name: &str,
    check: &model::HealthCheck,
    http: &HttpTarget,
    previous: Option<&Snapshot>,
) -> Arc<UpstreamHealth> {
    let target = ProbeTarget {
        address: http.address.clone(),
        authority: http.authority.to_string(),
        tls: http.tls.clone(),
    };
    let reused = previous.and_then(|snapshot| {
        snapshot
            .upstreams
            .values()
            .filter_map(|old| old.health.as_ref())
            .find(|old| old.probes(check, &target))
            .map(Arc::clone)
    });
    reused.unwrap_or_else(|| Arc::new(UpstreamHealth::new(name.into(), check.clone(), target)))
}

/// Two upstreams can share a pool when they reach the same address the same way.
fn same_pool(a: &model::Upstream, b: &model::Upstream) -> bool {
    a.url.is_some()
        && a.url == b.url
        && a.connect_timeout == b.connect_timeout
        && a.pool_idle_timeout == b.pool_idle_timeout
}

fn build_provider(
    name: &str,
    provider: ProviderPlan,
    previous: Option<&Snapshot>,
) -> Result<Provider, BuildError> {
    let ProviderPlan {
        settings,
        claim_headers,
        check,
    } = provider;
    let check = match check {
        CheckPlan::TrustedProxyUser { trusted_peers } => Check::TrustedProxyUser {
            trusted_peers: trusted_peers.into_boxed_slice(),
        },
        CheckPlan::Jwt { hmac_key, jwks } => {
            let jwks = jwks.map(|jwks| build_jwks(name, jwks, previous));
            Check::Jwt(JwtVerifier::new(&settings, hmac_key, jwks))
        }
        CheckPlan::Oidc(oidc) => Check::Oidc(Arc::new(build_oidc(name, *oidc, previous)?)),
    };
    Ok(Provider::new(name, settings, check, claim_headers))
}

/// A key cache for `jwks`. A `jwks_url` cache whose settings did not change is kept,
/// keys and all; a `jwks_file` gets a new cache holding the keys compile read, so
/// nothing of the running snapshot changes before the new one is stored.
fn build_jwks(name: &str, jwks: JwksPlan, previous: Option<&Snapshot>) -> Arc<JwksCache> {
    let JwksPlan {
        source,
        settings,
        file_keys,
    } = jwks;
    if let JwksSource::Url(_) = &source {
        let reused = previous.and_then(|snapshot| {
            snapshot
                .providers
                .values()
                .find_map(|provider| match &provider.check {
                    Check::Jwt(verifier) => verifier
                        .jwks()
                        .filter(|cache| cache.serves(&source, &settings))
                        .cloned(),
                    Check::TrustedProxyUser { .. } | Check::Oidc(_) => None,
                })
        });
        if let Some(cache) = reused {
            return cache;
        }
    }
    let cache = JwksCache::new(name, source, settings);
    if let Some(keys) = file_keys {
        cache.install_file_keys(keys);
    }
    cache
}

/// An oidc provider. Discovery and store are kept from the running snapshot's provider
/// of the same name while their settings stay the same, so a reload keeps logins in
/// progress and never waits on the network.
fn build_oidc(
    name: &str,
    plan: OidcPlan,
    previous: Option<&Snapshot>,
) -> Result<OidcProvider, BuildError> {
    let previous = previous
        .and_then(|snapshot| snapshot.providers.get(name))
        .and_then(|provider| match &provider.check {
            Check::Oidc(oidc) => Some(Arc::clone(oidc)),
            Check::Jwt(_) | Check::TrustedProxyUser { .. } => None,
        });
    let discovery = match &previous {
        Some(old) if old.discovery.serves(&plan.discovery) => Arc::clone(&old.discovery),
        _ => Discovery::new(name, plan.discovery, plan.manual),
    };
    let store: Arc<dyn Store> = match (&previous, &plan.store) {
        (Some(old), _) if old.store_settings == plan.store => Arc::clone(&old.store),
        (_, StoreSettings::Memory { max_entries }) => Arc::new(MemoryStore::new(*max_entries)),
        (_, StoreSettings::Redis { target, tls }) => Arc::new(
            RedisStore::new(name, target.clone(), tls.as_ref()).map_err(|source| {
                BuildError::Store {
                    provider: name.to_owned(),
                    source,
                }
            })?,
        ),
    };
    // A generated key is kept while the file names none: logins in progress survive.
    let sealer = match (plan.sealer, &previous) {
        (Some(configured), _) => Arc::new(configured),
        (None, Some(old)) if old.sealer.origin() == KeyOrigin::Generated => Arc::clone(&old.sealer),
        (None, _) => Arc::new(Sealer::generate().map_err(|source| BuildError::Sealer {
            provider: name.to_owned(),
            source,
        })?),
    };
    let login_limit = keep_or_new_limit(
        plan.login_rate_limit,
        previous.as_ref().map(|old| &old.login_limit),
    );
    Ok(OidcProvider {
        name: name.into(),
        settings: plan.settings,
        discovery,
        store,
        store_settings: plan.store,
        sealer,
        login_limit,
    })
}

/// The login endpoints of every oidc provider, matched before the routes.
fn auth_endpoints(providers: &BTreeMap<String, Arc<Provider>>) -> AuthEndpoints {
    AuthEndpoints::new(
        providers
            .values()
            .filter_map(|provider| match &provider.check {
                Check::Oidc(oidc) => Some(oidc),
                Check::Jwt(_) | Check::TrustedProxyUser { .. } => None,
            }),
    )
}
