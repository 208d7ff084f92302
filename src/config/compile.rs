//! Checked [`Config`] → [`Snapshot`]: everything the request path needs, built once.
//!
//! Route table, header name sets, CIDR lists and upstream clients are built here. An
//! upstream whose settings did not change keeps the client (and so the connection
//! pool) of the previous snapshot.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderName, HeaderValue, uri::Authority};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use url::Url;

use super::diagnostic::Diagnostic;
use super::model::{self, Builtin};
use super::validate::{normalize_prefix, parse_cidr, parse_upstream_url};
use super::{CheckedConfig, Config};
use crate::header_sets;
use crate::proxy::routes::RouteTable;
use crate::snapshot::{
    ConnectionLimits, HeaderPolicy, HttpUpstream, Route, Snapshot, Upstream, UpstreamClient,
    UpstreamTarget,
};

/// Builds the snapshot for `checked`. Validation has refused what compile cannot build,
/// so errors here mean the two disagree; they are reported, never unwrapped.
pub fn compile(
    checked: CheckedConfig,
    previous: Option<&Snapshot>,
    generation: u64,
) -> Result<Snapshot, Vec<Diagnostic>> {
    let CheckedConfig {
        config,
        source,
        warnings,
    } = checked;
    let mut errors = Vec::new();

    let headers = compile_header_policy(&config, &mut errors);
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
        let prefix = normalize_prefix(&route.path_prefix).to_owned();
        let compiled = Route {
            name: route.name.as_str().into(),
            prefix: prefix.clone(),
            strip_prefix: route.strip_prefix,
            upstream: Arc::clone(upstream),
            extra_client_headers: route
                .forward_client_headers
                .iter()
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .filter(|name| {
                    !headers.trusted_only.contains(name)
                        && header_sets::forbidden_in_allowlist(name.as_str()).is_none()
                        && !headers.standard.contains(name)
                })
                .collect(),
        };
        entries.push((prefix, Arc::new(compiled)));
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Snapshot {
        generation,
        source_hash: source.hash,
        loaded_at: SystemTime::now(),
        routes: RouteTable::new(entries),
        upstreams,
        headers,
        limits: ConnectionLimits {
            header_read_timeout: config.server.header_read_timeout.get(),
            idle_timeout: config.server.idle_timeout.get(),
            max_header_size: usize::try_from(config.server.max_header_size.bytes())
                .unwrap_or(usize::MAX),
            max_connections: config.server.max_connections as usize,
        },
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

fn compile_header_policy(config: &Config, errors: &mut Vec<Diagnostic>) -> HeaderPolicy {
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

    let mut trusted_only: HashSet<HeaderName> = header_sets::FORWARDING
        .iter()
        .chain(header_sets::GATEWAY_IDENTITY)
        .map(|name| HeaderName::from_static(name))
        .collect();
    trusted_only.insert(request_id.clone());
    trusted_only.insert(remote_user.clone());

    let standard = header_sets::STANDARD_REQUEST
        .iter()
        .map(|name| HeaderName::from_static(name))
        .filter(|name| !trusted_only.contains(name))
        .collect();

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

    let mut security_headers = Vec::new();
    if config.server.security_headers {
        security_headers = vec![
            (
                http::header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                http::header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("frame-ancestors 'self'"),
            ),
            (
                http::header::REFERRER_POLICY,
                HeaderValue::from_static("strict-origin-when-cross-origin"),
            ),
        ];
        if public_base
            .as_ref()
            .is_some_and(|url| url.scheme() == "https")
        {
            security_headers.push((
                http::header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=31536000"),
            ));
        }
    }

    HeaderPolicy {
        trusted_proxies: config
            .trust
            .proxies
            .iter()
            .filter_map(|p| parse_cidr(p))
            .collect(),
        standard,
        trusted_only,
        request_id,
        remote_user,
        forwarded_prefix,
        security_headers,
    }
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
            let authority = upstream_authority(&url).ok_or_else(|| {
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
                            Some(http.client.clone())
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
                client: reused.unwrap_or_else(|| new_client(settings)),
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

/// Two upstreams can share a pool when they reach the same address the same way.
fn same_pool(a: &model::Upstream, b: &model::Upstream) -> bool {
    a.url.is_some()
        && a.url == b.url
        && a.connect_timeout == b.connect_timeout
        && a.pool_idle_timeout == b.pool_idle_timeout
}

fn upstream_authority(url: &Url) -> Option<Authority> {
    let host = match url.host()? {
        url::Host::Ipv6(ip) => format!("[{ip}]"),
        host => host.to_string(),
    };
    let port = url.port_or_known_default()?;
    format!("{host}:{port}").parse().ok()
}

fn new_client(settings: &model::Upstream) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(settings.connect_timeout.get()));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(settings.pool_idle_timeout.get())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}
