//! Stage 2: a checked [`Config`] → a [`Plan`]: every value the request path needs, as
//! typed values, with every problem found reported at once.
//!
//! Compile is pure in what it does to the world: it reads the files and environment
//! variables the config names (secrets, certificates, a `jwks_file`) and nothing else.
//! It knows no previous snapshot, starts no task and opens no connection, so a config it
//! refuses has touched nothing. The runtime parts (connection pools, key caches,
//! discovery, stores) are made from the plan by [`crate::build`].

pub(crate) mod oidc;
mod security_headers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, uri::Authority};
use ipnet::IpNet;
use jsonwebtoken::jwk::Jwk;
use url::Url;

use crate::auth::allow::Allow;
use crate::auth::identity::SigningKey;
use crate::auth::jwks::{self, FileKeys, JwksSettings, JwksSource};
use crate::auth::secrets::{self, Environment};
use crate::config::diagnostic::Diagnostic;
use crate::config::model::{self, Builtin, ProviderKind};
use crate::config::validate::{normalize_prefix, parse_cidr, parse_upstream_url};
use crate::config::{CheckedConfig, Config, SourceHash};
use crate::header_sets;
use crate::proxy::fairness::FairnessLimits;
use crate::proxy::headers::{HeaderClass, HeaderClasses, HeaderPolicy};
use crate::proxy::limits::{ConnectionLimits, Http2Limits};
use crate::proxy::pool::UpstreamAddress;
use crate::proxy::route::SecurityHeaderList;
use crate::proxy::upstream_tls::{UpstreamTls, UpstreamTlsSettings};
pub use oidc::OidcPlan;
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

/// A checked config compiled: everything a snapshot holds, as values. [`crate::build`]
/// turns it into a [`crate::snapshot::Snapshot`].
#[derive(Debug)]
pub struct Plan {
    /// The effective config (defaults filled in).
    pub config: Config,
    pub source_hash: SourceHash,
    pub warnings: Vec<Diagnostic>,
    pub headers: HeaderPolicy,
    pub upstreams: BTreeMap<String, UpstreamPlan>,
    pub providers: BTreeMap<String, ProviderPlan>,
    /// In the file's order.
    pub routes: Vec<RoutePlan>,
    pub limits: ConnectionLimits,
    pub fairness: FairnessLimits,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub identity: IdentityPlan,
}

/// The identity assertion's settings, its keys read and parsed.
#[derive(Debug)]
pub struct IdentityPlan {
    pub header: HeaderName,
    /// `public_base_url` without its trailing `/`, else `http://<listen>`.
    pub issuer: String,
    pub ttl: Duration,
    /// `None`: no key in the file; build keeps the generated one or makes one.
    pub signing_key: Option<SigningKey>,
    /// The public halves of `previous_keys`, published beside the signing key.
    pub previous: Vec<Jwk>,
}

/// An upstream: where it is and how long it may take.
#[derive(Debug)]
pub struct UpstreamPlan {
    pub target: TargetPlan,
    /// How long to wait for response headers.
    pub timeout: Duration,
    /// The settings it was compiled from: equal settings share a connection pool.
    pub settings: model::Upstream,
}

#[derive(Debug)]
pub enum TargetPlan {
    Http(HttpTarget),
    Echo,
}

/// An HTTP upstream's address, as the pool dials it and as requests name it.
#[derive(Debug)]
pub struct HttpTarget {
    /// Where the pool dials.
    pub address: UpstreamAddress,
    /// The upstream's authority (`localhost` for a Unix socket).
    pub authority: Authority,
    /// The URL's path without its trailing `/`: prepended to every forwarded path.
    pub base_path: String,
    /// The `Host` header the upstream gets.
    pub host: HeaderValue,
    /// TLS, for an https upstream.
    pub tls: Option<UpstreamTls>,
}

/// A route, its upstream and provider named by the keys of [`Plan::upstreams`] and
/// [`Plan::providers`] (compile made sure both exist).
#[derive(Debug)]
pub struct RoutePlan {
    pub name: Arc<str>,
    /// Normalised: no trailing `/` except for the root route.
    pub prefix: String,
    pub strip_prefix: bool,
    pub upstream: String,
    pub auth: Option<RouteAuthPlan>,
    pub extra_client_headers: Box<[HeaderName]>,
    pub security_headers: SecurityHeaderList,
    pub max_request_body: u64,
    /// The route's `max_websockets`, or its default.
    pub max_websockets: usize,
    /// The route's `websocket_idle_timeout`, or its default.
    pub websocket_idle_timeout: std::time::Duration,
    pub rate_limit: Option<model::RateLimit>,
}

#[derive(Debug)]
pub struct RouteAuthPlan {
    pub provider: String,
    pub required_scopes: Box<[String]>,
    /// Who may come in; `None`: every authenticated user.
    pub allow: Option<Allow>,
}

/// An auth provider: its settings resolved (secrets read, header names checked).
#[derive(Debug)]
pub struct ProviderPlan {
    pub settings: model::AuthProvider,
    /// `(claim, header)` pairs copied to the upstream on top of sub and scope.
    pub claim_headers: Vec<(String, HeaderName)>,
    pub check: CheckPlan,
}

#[derive(Debug)]
pub enum CheckPlan {
    /// Forward auth: the peers whose remote-user header is believed (`trusted_peers`,
    /// else `trust.proxies`).
    TrustedProxyUser {
        trusted_peers: Vec<IpNet>,
    },
    Jwt {
        hmac_key: Option<jsonwebtoken::DecodingKey>,
        jwks: Option<JwksPlan>,
    },
    Oidc(Box<OidcPlan>),
}

/// Where a jwt provider's public keys come from.
#[derive(Debug)]
pub struct JwksPlan {
    pub source: JwksSource,
    pub settings: JwksSettings,
    /// A `jwks_file`'s keys, read now: a broken file refuses the config.
    pub file_keys: Option<FileKeys>,
}

/// Compiles `checked`. Validation has refused what it can see in the file; compile adds
/// what needs the files and environment the config names (secrets, key files,
/// certificates) and reports those problems the same way, never unwrapping.
pub fn compile(checked: CheckedConfig, ctx: &CompileContext) -> Result<Plan, Vec<Diagnostic>> {
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
        match compile_provider(name, settings, &config, ctx) {
            Ok(provider) => {
                providers.insert(name.clone(), provider);
            }
            Err(error) => errors.push(error),
        }
    }
    let mut upstreams = BTreeMap::new();
    for (name, settings) in &config.upstreams {
        match compile_upstream(name, settings, ctx) {
            Ok(upstream) => {
                upstreams.insert(name.clone(), upstream);
            }
            Err(error) => errors.push(error),
        }
    }

    let mut routes = Vec::with_capacity(config.routes.len());
    for (index, route) in config.routes.iter().enumerate() {
        if !upstreams.contains_key(&route.upstream) {
            errors.push(Diagnostic::error(
                format!("routes[{index}].upstream"),
                format!("unknown upstream {:?}", route.upstream),
            ));
            continue;
        }
        let auth = match &route.auth {
            None => None,
            Some(name) if let Some(provider) = providers.get(name) => Some(RouteAuthPlan {
                provider: name.clone(),
                required_scopes: route.required_scopes.clone().into_boxed_slice(),
                allow: route
                    .allow
                    .as_ref()
                    .and_then(|allow| Allow::new(allow, groups_claim(&provider.settings))),
            }),
            Some(name) => {
                // Never serve a route without the check it names. A provider that did not
                // compile has said why, and refuses the config by that; saying it again
                // at every route that names it only buries the reason.
                if !config.auth.providers.contains_key(name) {
                    errors.push(Diagnostic::error(
                        format!("routes[{index}].auth"),
                        format!("unknown auth provider {name:?}"),
                    ));
                }
                continue;
            }
        };
        routes.push(RoutePlan {
            name: route.name.as_str().into(),
            prefix: normalize_prefix(&route.path_prefix).to_owned(),
            strip_prefix: route.strip_prefix,
            upstream: route.upstream.clone(),
            auth,
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
            max_request_body: route
                .max_request_body
                .unwrap_or(config.server.max_request_body)
                .bytes(),
            max_websockets: route
                .max_websockets
                .unwrap_or(model::route_defaults::MAX_WEBSOCKETS)
                as usize,
            websocket_idle_timeout: route
                .websocket_idle_timeout
                .map_or(model::route_defaults::WEBSOCKET_IDLE_TIMEOUT, |t| t.get()),
            rate_limit: route.rate_limit,
        });
    }

    let identity = compile_identity(&config, ctx, &mut errors);
    let tls = config.server.tls.as_ref().and_then(|tls| {
        crate::tls::server_config(&ctx.config_dir, &tls.cert_file, &tls.key_file)
            .map_err(|error| errors.push(Diagnostic::error(error.key(), error.to_string())))
            .ok()
    });

    spans.locate(&mut errors);
    spans.locate(&mut warnings);
    if !errors.is_empty() {
        errors.sort_by_key(|d| d.location.map(|l| (l.line, l.column)));
        return Err(errors);
    }
    Ok(Plan {
        source_hash: source.hash,
        headers,
        upstreams,
        providers,
        routes,
        limits: ConnectionLimits {
            header_read_timeout: config.server.header_read_timeout.get(),
            idle_timeout: config.server.idle_timeout.get(),
            send_timeout: config.server.send_timeout.get(),
            max_header_size: usize::try_from(config.server.max_header_size.bytes())
                .unwrap_or(usize::MAX),
            max_connections: config.server.max_connections as usize,
            h2c: config.server.h2c,
            http2: Http2Limits {
                max_concurrent_streams: config.server.http2_max_concurrent_streams,
                // Validation keeps both windows within 1 GiB.
                stream_window: u32::try_from(config.server.http2_stream_window.bytes())
                    .unwrap_or(u32::MAX >> 1),
                connection_window: u32::try_from(config.server.http2_connection_window.bytes())
                    .unwrap_or(u32::MAX >> 1),
                max_send_buffer: usize::try_from(config.server.http2_max_send_buffer.bytes())
                    .unwrap_or(usize::MAX),
            },
        },
        fairness: FairnessLimits {
            global: config.server.max_upstream_requests as usize,
            per_client: config.server.max_upstream_requests_per_client,
        },
        tls,
        identity,
        warnings,
        config,
    })
}

fn compile_identity(
    config: &Config,
    ctx: &CompileContext,
    errors: &mut Vec<Diagnostic>,
) -> IdentityPlan {
    let settings = &config.identity;
    let issuer = match &config.server.public_base_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{}", config.server.listen),
    };
    let mut read = |path: String, secret: &model::SecretRef| -> Option<SigningKey> {
        let pem = secrets::resolve(secret, &ctx.config_dir, ctx.env.as_ref())
            .map_err(|error| errors.push(Diagnostic::error(&path, error.to_string())))
            .ok()?;
        SigningKey::from_pem(pem.expose())
            .map_err(|error| errors.push(Diagnostic::error(&path, error.to_string())))
            .ok()
    };
    let signing_key = settings
        .signing_key
        .as_ref()
        .and_then(|secret| read("identity.signing_key".to_owned(), secret));
    let previous = settings
        .previous_keys
        .iter()
        .enumerate()
        .filter_map(|(index, secret)| read(format!("identity.previous_keys[{index}]"), secret))
        .map(|key| key.public().clone())
        .collect();
    IdentityPlan {
        header: header_name("identity.header", &settings.header, errors),
        issuer,
        ttl: settings.ttl.get(),
        signing_key,
        previous,
    }
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
    let trusted_only = fixed(header_sets::FORWARDING, HeaderClass::TrustedOnly)
        .chain([(request_id.clone(), HeaderClass::TrustedOnly)]);
    // Set by the gateway from verified credentials only: never taken from any client.
    let claim_headers = config
        .auth
        .providers
        .values()
        .flat_map(|provider| provider.claim_headers.values())
        .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
        .map(|name| (name, HeaderClass::Identity));
    // The assertion's header, whatever its name: no client may send one.
    let assertion = HeaderName::from_bytes(config.identity.header.as_bytes())
        .ok()
        .map(|name| (name, HeaderClass::Identity));
    // The forward-auth user is read by the forward-auth check and sent on as
    // `x-fluxlit-sub`; as itself it reaches no upstream, whoever sent it: a proxy in front
    // that passes its own clients' header on must not log them in anywhere.
    let identity = [(remote_user.clone(), HeaderClass::Identity)]
        .into_iter()
        .chain(fixed(header_sets::GATEWAY_IDENTITY, HeaderClass::Identity))
        .chain(claim_headers)
        .chain(assertion);
    let hop = fixed(header_sets::HOP_BY_HOP, HeaderClass::Hop)
        .chain(fixed(header_sets::GATEWAY_HOP, HeaderClass::Hop));
    // A name keeps its first class: an identity name is never forwarded, whatever else
    // it is configured as, and a standard name configured as the request id or as an
    // identity header is no longer standard.
    let classes = HeaderClasses::new(
        identity
            .chain(trusted_only)
            .chain(hop)
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
    // The host users reach the gateway at: an untrusted client's `Host` is not believed
    // for `X-Forwarded-Host` when the file says what it is (apps build links from it).
    let forwarded_host = public_base.as_ref().and_then(|url| {
        let host = url.host_str()?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        HeaderValue::from_str(&authority).ok()
    });

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
        forwarded_host,
        listen_host: HeaderValue::from_str(&config.server.listen.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
        security_headers: security_headers.server(),
        hsts,
    };
    (policy, security_headers)
}

fn compile_upstream(
    name: &str,
    settings: &model::Upstream,
    ctx: &CompileContext,
) -> Result<UpstreamPlan, Diagnostic> {
    let target = match (&settings.builtin, &settings.url) {
        (Some(Builtin::Echo), _) => TargetPlan::Echo,
        (None, Some(url)) => {
            let url = parse_upstream_url(url).map_err(|error| {
                Diagnostic::error(format!("upstreams.{name}.url"), error.to_string())
            })?;
            let (address, authority) = upstream_address(&url).ok_or_else(|| {
                Diagnostic::error(
                    format!("upstreams.{name}.url"),
                    "has no usable host and port",
                )
            })?;
            let host = HeaderValue::from_str(authority.as_str()).map_err(|_| {
                Diagnostic::error(
                    format!("upstreams.{name}.url"),
                    "host is not a valid header",
                )
            })?;
            let tls = match (url.scheme(), &address) {
                ("https", UpstreamAddress::Tcp { host, .. }) => {
                    Some(compile_upstream_tls(name, settings, host, ctx)?)
                }
                _ => None,
            };
            // A Unix socket's URL path is the socket's: nothing is prepended.
            let base_path = match &address {
                UpstreamAddress::Tcp { .. } => url.path().trim_end_matches('/').to_owned(),
                UpstreamAddress::Unix(_) => String::new(),
            };
            TargetPlan::Http(HttpTarget {
                address,
                base_path,
                authority,
                host,
                tls,
            })
        }
        (None, None) => {
            return Err(Diagnostic::error(
                format!("upstreams.{name}"),
                "has neither `url` nor `builtin`",
            ));
        }
    };
    Ok(UpstreamPlan {
        target,
        timeout: settings.timeout.get(),
        settings: settings.clone(),
    })
}

/// An https upstream's TLS: its `ca_file`, `client_cert` and `client_key` read now (a
/// rejected reload reads nothing later), the name to verify (`tls_server_name`, else the
/// URL's host).
fn compile_upstream_tls(
    name: &str,
    settings: &model::Upstream,
    host_name: &str,
    ctx: &CompileContext,
) -> Result<UpstreamTls, Diagnostic> {
    let key = |field: &str| format!("upstreams.{name}.{field}");
    let read_file = |field: &str, file: &Path| {
        let full = ctx.config_dir.join(file);
        std::fs::read(&full).map_err(|error| {
            Diagnostic::error(
                key(field),
                format!("cannot read {}: {error}", full.display()),
            )
        })
    };
    let ca_pem = settings
        .ca_file
        .as_deref()
        .map(|file| read_file("ca_file", file))
        .transpose()?;
    let client = match (&settings.client_cert, &settings.client_key) {
        (Some(cert), Some(secret)) => {
            let cert_pem = read_file("client_cert", cert)?;
            let key_pem = secrets::resolve(secret, &ctx.config_dir, ctx.env.as_ref())
                .map_err(|error| Diagnostic::error(key("client_key"), error.to_string()))?;
            Some((cert_pem, key_pem))
        }
        // Validation refuses one without the other.
        _ => None,
    };
    let tls = UpstreamTlsSettings {
        server_name: settings.tls_server_name.as_deref().unwrap_or(host_name),
        ca_pem: ca_pem.as_deref(),
        client: client
            .as_ref()
            .map(|(cert, key)| (cert.as_slice(), key.expose())),
    };
    UpstreamTls::new(&tls).map_err(|error| Diagnostic::error(key(error.key()), error.to_string()))
}

fn compile_provider(
    name: &str,
    settings: &model::AuthProvider,
    config: &Config,
    ctx: &CompileContext,
) -> Result<ProviderPlan, Diagnostic> {
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
        ProviderKind::TrustedProxyUser => CheckPlan::TrustedProxyUser {
            trusted_peers: trusted_peers(&path, settings, config)?,
        },
        ProviderKind::Jwt => {
            let wants_secret = settings.algorithms.iter().any(|a| a.is_hmac());
            let hmac_key = match &settings.hs256_secret {
                Some(secret) if wants_secret => Some(hmac_key(&path, settings, secret, ctx)?),
                _ => None,
            };
            let jwks = compile_jwks(&path, settings, ctx)?;
            CheckPlan::Jwt { hmac_key, jwks }
        }
        ProviderKind::Oidc => {
            let plan = oidc::compile_oidc(name, &path, settings, config, ctx)?;
            CheckPlan::Oidc(Box::new(plan))
        }
    };
    Ok(ProviderPlan {
        settings: settings.clone(),
        claim_headers,
        check,
    })
}

/// The claim a provider's users' groups are read from (`groups_claim`).
pub(crate) fn groups_claim(settings: &model::AuthProvider) -> &str {
    settings
        .groups_claim
        .as_deref()
        .unwrap_or(model::oidc_defaults::GROUPS_CLAIM)
}

/// A forward-auth provider's `trusted_peers`, or `trust.proxies` when it names none.
fn trusted_peers(
    path: &str,
    settings: &model::AuthProvider,
    config: &Config,
) -> Result<Vec<IpNet>, Diagnostic> {
    let (key, entries) = match &settings.trusted_peers {
        Some(peers) => (format!("{path}.trusted_peers"), peers),
        None => ("trust.proxies".to_owned(), &config.trust.proxies),
    };
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            parse_cidr(entry).ok_or_else(|| {
                Diagnostic::error(
                    format!("{key}[{index}]"),
                    format!("{entry:?} is not an IP address or CIDR range"),
                )
            })
        })
        .collect()
}

/// The HS secret of a jwt provider, read and refused when it is shorter than its
/// strongest algorithm's hash (RFC 7518 §3.2): a short one lets tokens be forged by
/// guessing it.
fn hmac_key(
    path: &str,
    settings: &model::AuthProvider,
    secret: &model::SecretRef,
    ctx: &CompileContext,
) -> Result<jsonwebtoken::DecodingKey, Diagnostic> {
    let key_path = format!("{path}.hs256_secret");
    let bytes = secrets::resolve(secret, &ctx.config_dir, ctx.env.as_ref())
        .map_err(|error| Diagnostic::error(&key_path, error.to_string()))?;
    if let Some(min) = secrets::MinLength::hmac(&settings.algorithms) {
        min.check(secret, &bytes)
            .map_err(|short| too_short(&key_path, &min, &short))?;
    }
    jsonwebtoken::DecodingKey::from_secret(bytes.expose())
        .map_err(|err| Diagnostic::error(&key_path, format!("unusable secret: {err}")))
}

/// A secret refused for its length, under the id `fluxlit doctor` reports it with.
pub(crate) fn too_short(
    key_path: &str,
    min: &secrets::MinLength,
    short: &secrets::TooShort,
) -> Diagnostic {
    Diagnostic::error(key_path, short.to_string())
        .with_help(min.fix())
        .with_id(secrets::TOO_SHORT)
}

fn compile_jwks(
    path: &str,
    settings: &model::AuthProvider,
    ctx: &CompileContext,
) -> Result<Option<JwksPlan>, Diagnostic> {
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
    // A `jwks_file` is read on every compile: a reload may be the watcher seeing the
    // file change, and a broken file refuses the config.
    let file_keys =
        match &source {
            JwksSource::File(file) => Some(jwks::read_file(file).map_err(|error| {
                Diagnostic::error(format!("{path}.jwks_file"), error.to_string())
            })?),
            JwksSource::Url(_) => None,
        };
    Ok(Some(JwksPlan {
        source,
        settings: JwksSettings {
            ttl: settings.jwks_cache_ttl.get(),
            refetch_interval: settings.jwks_refetch_interval.get(),
            max_stale: settings.jwks_max_stale.get(),
        },
        file_keys,
    }))
}

/// Where an upstream URL points, and the authority requests to it name: the host as a
/// socket address takes it (an IPv6 address without brackets) and the port, or a Unix
/// socket's path (its requests say `Host: localhost`, as uvicorn and gunicorn expect).
fn upstream_address(url: &Url) -> Option<(UpstreamAddress, Authority)> {
    if url.scheme() == "unix" {
        let address = UpstreamAddress::Unix(std::path::PathBuf::from(url.path()));
        return Some((address, Authority::from_static("localhost")));
    }
    let port = url.port_or_known_default()?;
    let (host, authority) = match url.host()? {
        url::Host::Ipv6(ip) => (ip.to_string(), format!("[{ip}]:{port}")),
        host => (host.to_string(), format!("{host}:{port}")),
    };
    Some((UpstreamAddress::Tcp { host, port }, authority.parse().ok()?))
}
