//! Checked [`Config`] → [`Snapshot`]: everything the request path needs, built once.
//!
//! Route table, header name sets, CIDR lists and upstream clients are built here. An
//! upstream whose settings did not change keeps the client (and so the connection
//! pool) of the previous snapshot.

mod oidc;
mod security_headers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderName, HeaderValue, uri::Authority};
use url::Url;

use super::diagnostic::Diagnostic;
use super::model::{self, Builtin, ProviderKind};
use super::validate::{normalize_prefix, parse_cidr, parse_upstream_url};
use super::{CheckedConfig, Config};
use crate::auth::jwks::{JwksCache, JwksSettings, JwksSource};
use crate::auth::jwt::JwtVerifier;
use crate::auth::secrets::{self, Environment};
use crate::auth::{Check, Provider, RouteAuth};
use crate::header_sets;
use crate::proxy::headers::HeaderPolicy;
use crate::proxy::headers::{HeaderClass, HeaderClasses};
use crate::proxy::limits::WebSocketCap;
use crate::proxy::pool::UpstreamPool;
use crate::proxy::route::{HttpUpstream, Route, Upstream, UpstreamTarget};
use crate::proxy::routes::RouteTable;
use crate::snapshot::{ConnectionLimits, Snapshot};
use security_headers::SecurityHeaderCompiler;

/// What compile needs besides the config: where relative paths start, and where
/// environment variables come from.
#[derive(Debug, Clone)]
pub struct CompileContext {
    pub config_dir: PathBuf,
    pub env: Arc<dyn Environment>,
}

impl CompileContext {
    /// Relative paths in the file at `config_path` are relative to its directory.
    pub fn for_config(config_path: &Path, env: Arc<dyn Environment>) -> Self {
        let config_dir = match config_path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        Self { config_dir, env }
    }
}

/// Builds the snapshot for `checked`. Validation has refused what it can see in the
/// file; compile adds what needs the outside world (secrets, key files) and reports
/// those problems the same way, never unwrapping.
pub fn compile(
    checked: CheckedConfig,
    previous: Option<&Snapshot>,
    generation: u64,
    ctx: &CompileContext,
) -> Result<Snapshot, Vec<Diagnostic>> {
    let CheckedConfig {
        config,
        source,
        mut warnings,
        spans,
    } = checked;
    let mut errors = Vec::new();

    let (headers, security_headers) = compile_header_policy(&config, &mut errors);
    let mut providers = BTreeMap::new();
    for (name, settings) in &config.auth.providers {
        match compile_provider(name, settings, &config, previous, ctx, &mut warnings) {
            Ok(provider) => {
                providers.insert(name.clone(), Arc::new(provider));
            }
            Err(error) => errors.push(error),
        }
    }
    let mut upstreams = BTreeMap::new();
    for (name, settings) in &config.upstreams {
        match compile_upstream(name, settings, previous) {
            Ok(upstream) => {
                upstreams.insert(name.clone(), Arc::new(upstream));
            }
            Err(error) => errors.push(error),
        }
    }

    let mut entries = Vec::with_capacity(config.routes.len());
    for (index, route) in config.routes.iter().enumerate() {
        let Some(upstream) = upstreams.get(&route.upstream) else {
            errors.push(Diagnostic::error(
                format!("routes[{index}].upstream"),
                format!("unknown upstream {:?}", route.upstream),
            ));
            continue;
        };
        let auth = match &route.auth {
            None => None,
            Some(name) => match providers.get(name) {
                Some(provider) => Some(RouteAuth {
                    provider: Arc::clone(provider),
                    required_scopes: route.required_scopes.clone().into_boxed_slice(),
                }),
                None => {
                    // Never serve a route without the check it names.
                    errors.push(Diagnostic::error(
                        format!("routes[{index}].auth"),
                        format!("auth provider {name:?} could not be built"),
                    ));
                    continue;
                }
            },
        };
        let prefix = normalize_prefix(&route.path_prefix).to_owned();
        let max_request_body = route
            .max_request_body
            .unwrap_or(config.server.max_request_body)
            .bytes();
        let websockets = route.max_websockets.map(|max| {
            // The same route in the running snapshot keeps counting the tunnels it let in.
            let running = previous.and_then(|snapshot| {
                snapshot
                    .routes
                    .routes()
                    .find(|old| *old.name == *route.name)
                    .and_then(|old| old.websockets.as_ref())
            });
            WebSocketCap::new(max as usize, running)
        });
        let compiled = Route {
            max_request_body,
            websockets,
            auth,
            name: route.name.as_str().into(),
            prefix: prefix.clone(),
            strip_prefix: route.strip_prefix,
            upstream: Arc::clone(upstream),
            security_headers: security_headers.route(
                index,
                route.security_headers.as_ref(),
                &mut errors,
            ),
            extra_client_headers: route
                .forward_client_headers
                .iter()
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .filter(|name| {
                    headers.classes.get(name).is_none()
                        && header_sets::forbidden_in_allowlist(name.as_str()).is_none()
                })
                .collect(),
            metrics: Default::default(),
        };
        entries.push((prefix, Arc::new(compiled)));
    }

    let tls = config.server.tls.as_ref().and_then(|tls| {
        crate::tls::server_config(&ctx.config_dir, &tls.cert_file, &tls.key_file)
            .map_err(|error| errors.push(Diagnostic::error(error.key(), error.to_string())))
            .ok()
    });

    spans.locate(&mut errors);
    spans.locate(&mut warnings);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Snapshot {
        generation,
        source_hash: source.hash,
        loaded_at: SystemTime::now(),
        routes: RouteTable::new(entries),
        upstreams,
        auth_endpoints: oidc::auth_endpoints(&providers),
        providers,
        headers,
        limits: ConnectionLimits {
            header_read_timeout: config.server.header_read_timeout.get(),
            idle_timeout: config.server.idle_timeout.get(),
            max_header_size: usize::try_from(config.server.max_header_size.bytes())
                .unwrap_or(usize::MAX),
            max_connections: config.server.max_connections as usize,
        },
        tls,
        warnings,
        config,
    })
}

fn header_name(path: &str, name: &str, errors: &mut Vec<Diagnostic>) -> HeaderName {
    HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|_| {
        errors.push(Diagnostic::error(
            path,
            format!("{name:?} is not a valid header name"),
        ));
        HeaderName::from_static("x-invalid")
    })
}

fn compile_header_policy(
    config: &Config,
    errors: &mut Vec<Diagnostic>,
) -> (HeaderPolicy, SecurityHeaderCompiler) {
    let request_id = header_name(
        "server.request_id_header",
        &config.server.request_id_header,
        errors,
    );
    let remote_user = header_name(
        "trust.remote_user_header",
        &config.trust.remote_user_header,
        errors,
    );

    let fixed = |names: &'static [&'static str], class| {
        names
            .iter()
            .map(move |name| (HeaderName::from_static(name), class))
    };
    let trusted_only = fixed(header_sets::FORWARDING, HeaderClass::TrustedOnly).chain(
        [request_id.clone(), remote_user.clone()].map(|name| (name, HeaderClass::TrustedOnly)),
    );
    // Set by the gateway from verified credentials only: never taken from any client.
    let claim_headers = config
        .auth
        .providers
        .values()
        .flat_map(|provider| provider.claim_headers.values())
        .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
        .map(|name| (name, HeaderClass::Identity));
    let identity = fixed(header_sets::GATEWAY_IDENTITY, HeaderClass::Identity).chain(claim_headers);
    // A name keeps its first class: a standard name configured as the request id or as
    // an identity header is no longer standard.
    let classes = HeaderClasses::new(
        trusted_only
            .chain(identity)
            .chain(fixed(header_sets::STANDARD_REQUEST, HeaderClass::Standard)),
    );

    let public_base = config
        .server
        .public_base_url
        .as_deref()
        .and_then(|u| Url::parse(u).ok());
    let forwarded_prefix = public_base
        .as_ref()
        .map(|url| url.path().trim_end_matches('/'))
        .filter(|path| !path.is_empty())
        .and_then(|path| HeaderValue::from_str(path).ok());

    // The configurable headers come from `security_headers`; HSTS follows its own rule
    // (sent only over HTTPS, and for the whole host).
    let security_headers =
        SecurityHeaderCompiler::new(&config.server.security_headers, Vec::new(), errors);
    let hsts = config
        .server
        .security_headers
        .is_enabled()
        .then(|| HeaderValue::from_static("max-age=31536000"));

    let policy = HeaderPolicy {
        trusted_proxies: config
            .trust
            .proxies
            .iter()
            .filter_map(|p| parse_cidr(p))
            .collect(),
        classes,
        request_id,
        remote_user,
        forwarded_prefix,
        security_headers: security_headers.server(),
        hsts,
    };
    (policy, security_headers)
}

fn compile_upstream(
    name: &str,
    settings: &model::Upstream,
    previous: Option<&Snapshot>,
) -> Result<Upstream, Diagnostic> {
    let target = match (&settings.builtin, &settings.url) {
        (Some(Builtin::Echo), _) => UpstreamTarget::Echo,
        (None, Some(url)) => {
            let url = parse_upstream_url(url)
                .map_err(|message| Diagnostic::error(format!("upstreams.{name}.url"), message))?;
            let address = upstream_address(&url);
            let (host_name, port, authority) = address.ok_or_else(|| {
                Diagnostic::error(
                    format!("upstreams.{name}.url"),
                    "has no usable host and port",
                )
            })?;
            let reused = previous.and_then(|snapshot| {
                snapshot
                    .upstreams
                    .values()
                    .find_map(|old| match &old.target {
                        UpstreamTarget::Http(http) if same_pool(&old.settings, settings) => {
                            Some(http.pool.clone())
                        }
                        _ => None,
                    })
            });
            let host = HeaderValue::from_str(authority.as_str()).map_err(|_| {
                Diagnostic::error(
                    format!("upstreams.{name}.url"),
                    "host is not a valid header",
                )
            })?;
            UpstreamTarget::Http(Box::new(HttpUpstream {
                pool: reused.unwrap_or_else(|| {
                    UpstreamPool::new(
                        host_name,
                        port,
                        settings.connect_timeout.get(),
                        settings.pool_idle_timeout.get(),
                    )
                }),
                base_path: url.path().trim_end_matches('/').to_owned(),
                authority,
                host,
            }))
        }
        (None, None) => {
            return Err(Diagnostic::error(
                format!("upstreams.{name}"),
                "has neither `url` nor `builtin`",
            ));
        }
    };
    Ok(Upstream {
        name: name.into(),
        target,
        timeout: settings.timeout.get(),
        settings: settings.clone(),
    })
}

fn compile_provider(
    name: &str,
    settings: &model::AuthProvider,
    config: &Config,
    previous: Option<&Snapshot>,
    ctx: &CompileContext,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Provider, Diagnostic> {
    let path = format!("auth.providers.{name}");
    let claim_headers = settings
        .claim_headers
        .iter()
        .map(|(claim, header)| {
            HeaderName::from_bytes(header.as_bytes())
                .map(|header| (claim.clone(), header))
                .map_err(|_| {
                    Diagnostic::error(
                        format!("{path}.claim_headers.{claim}"),
                        "invalid header name",
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let check = match settings.kind {
        ProviderKind::TrustedProxyUser => Check::TrustedProxyUser,
        ProviderKind::Jwt => {
            let wants_secret = settings.algorithms.iter().any(|a| a.is_hmac());
            let hmac_key = match &settings.hs256_secret {
                Some(secret) if wants_secret => Some(hmac_key(&path, secret, ctx, warnings)?),
                _ => None,
            };
            let jwks = compile_jwks(name, &path, settings, previous, ctx)?;
            Check::Jwt(JwtVerifier::new(settings, hmac_key, jwks))
        }
        ProviderKind::Oidc => {
            let provider = oidc::compile_oidc(name, &path, settings, config, previous, ctx)?;
            Check::Oidc(Arc::new(provider))
        }
    };
    Ok(Provider::new(name, settings.clone(), check, claim_headers))
}

fn hmac_key(
    path: &str,
    secret: &model::SecretRef,
    ctx: &CompileContext,
    warnings: &mut Vec<Diagnostic>,
) -> Result<jsonwebtoken::DecodingKey, Diagnostic> {
    let key_path = format!("{path}.hs256_secret");
    let bytes = secrets::resolve(secret, &ctx.config_dir, ctx.env.as_ref())
        .map_err(|message| Diagnostic::error(&key_path, message))?;
    if bytes.expose().len() < 32 {
        warnings.push(Diagnostic::warning(
            &key_path,
            format!(
                "the secret is {} bytes; HS256 wants at least 32 random bytes",
                bytes.expose().len()
            ),
        ));
    }
    jsonwebtoken::DecodingKey::from_secret(bytes.expose())
        .map_err(|err| Diagnostic::error(&key_path, format!("unusable secret: {err}")))
}

fn compile_jwks(
    name: &str,
    path: &str,
    settings: &model::AuthProvider,
    previous: Option<&Snapshot>,
    ctx: &CompileContext,
) -> Result<Option<Arc<JwksCache>>, Diagnostic> {
    if !settings.algorithms.iter().any(|a| !a.is_hmac()) {
        return Ok(None);
    }
    let source = match (&settings.jwks_url, &settings.jwks_file) {
        (Some(url), _) => JwksSource::Url(url.clone()),
        (None, Some(file)) => JwksSource::File(ctx.config_dir.join(file)),
        (None, None) => {
            return Err(Diagnostic::error(
                format!("{path}.jwks_url"),
                "no key source",
            ));
        }
    };
    let jwks_settings = JwksSettings {
        ttl: settings.jwks_cache_ttl.get(),
        refetch_interval: settings.jwks_refetch_interval.get(),
        max_stale: settings.jwks_max_stale.get(),
    };
    // A provider whose key settings did not change keeps its cache, keys and all.
    let reused = previous.and_then(|snapshot| {
        snapshot
            .providers
            .values()
            .find_map(|provider| match &provider.check {
                Check::Jwt(verifier) => verifier
                    .jwks()
                    .filter(|cache| cache.serves(&source, &jwks_settings))
                    .cloned(),
                Check::TrustedProxyUser | Check::Oidc(_) => None,
            })
    });
    let cache = reused.unwrap_or_else(|| JwksCache::new(name, source, jwks_settings));
    // Read a `jwks_file` on every compile, a kept cache's too: a reload may be the
    // watcher seeing the file change, and a broken file refuses the config.
    cache
        .load_file_now()
        .map_err(|message| Diagnostic::error(format!("{path}.jwks_file"), message))?;
    cache.start();
    Ok(Some(cache))
}

/// Two upstreams can share a pool when they reach the same address the same way.
fn same_pool(a: &model::Upstream, b: &model::Upstream) -> bool {
    a.url.is_some()
        && a.url == b.url
        && a.connect_timeout == b.connect_timeout
        && a.pool_idle_timeout == b.pool_idle_timeout
}

/// Where an upstream URL points: the host as a socket address takes it (an IPv6
/// address without brackets), the port, and both as a URI authority.
fn upstream_address(url: &Url) -> Option<(String, u16, Authority)> {
    let port = url.port_or_known_default()?;
    let (host, authority) = match url.host()? {
        url::Host::Ipv6(ip) => (ip.to_string(), format!("[{ip}]:{port}")),
        host => (host.to_string(), format!("{host}:{port}")),
    };
    Some((host, port, authority.parse().ok()?))
}
