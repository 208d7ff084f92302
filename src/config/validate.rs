//! Checks on a parsed [`Config`]: single-field rules (`validator`) and the rules that
//! span fields (references, duplicates, addresses). Every problem is collected before
//! answering, so one `fluxlit validate` run lists them all.

mod allow;
mod auth;
mod oidc;

use auth::check_auth;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use http::HeaderName;
use ipnet::IpNet;
use url::Url;
use validator::{Validate, ValidationErrors, ValidationErrorsKind};

use super::diagnostic::Diagnostic;
use super::model::{AuthProvider, Config, Route, Upstream};
use super::suggest;
use crate::header_sets;

/// Every error and warning in `config`, in file order as far as it is known.
pub fn validate(config: &Config) -> Vec<Diagnostic> {
    let mut found = Vec::new();

    if let Err(errors) = config.validate() {
        flatten_validator_errors("", &errors, &mut found);
    }
    for (name, upstream) in &config.upstreams {
        if let Err(errors) = upstream.validate() {
            flatten_validator_errors(&format!("upstreams.{name}"), &errors, &mut found);
        }
    }

    check_server(config, &mut found);
    check_trust(config, &mut found);
    for (name, upstream) in &config.upstreams {
        check_upstream(name, upstream, &mut found);
    }
    check_routes(config, &mut found);
    check_auth(config, &mut found);
    check_identity(config, &mut found);
    check_doctor(config, &mut found);
    found
}

/// `[doctor] accept`: each entry a finding id, optionally `@` a key path. Whether the id
/// exists is the doctor's to say (it knows its checks; `config` does not).
fn check_doctor(config: &Config, found: &mut Vec<Diagnostic>) {
    for (index, entry) in config.doctor.accept.iter().enumerate() {
        let (id, key) = match entry.split_once('@') {
            Some((id, key)) => (id, Some(key)),
            None => (entry.as_str(), None),
        };
        let id_ok = id.starts_with(|c: char| c.is_ascii_lowercase())
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        let key_ok = key.is_none_or(|key| {
            !key.is_empty() && !key.contains('@') && !key.contains(char::is_whitespace)
        });
        if !id_ok || !key_ok {
            found.push(
                Diagnostic::error(
                    format!("doctor.accept[{index}]"),
                    format!("{entry:?} is not a finding id, or an id and a key path"),
                )
                .with_help(
                    "write it like \"admin_not_loopback\" or \"admin_not_loopback@admin.listen\"; \
                     each finding of `fluxlit doctor` starts with its id",
                ),
            );
        }
    }
}

/// `[identity]`: a header of its own that no client header could be confused with, and a
/// lifetime.
fn check_identity(config: &Config, found: &mut Vec<Diagnostic>) {
    let identity = &config.identity;
    check_header_name("identity.header", &identity.header, found);
    let name = identity.header.to_ascii_lowercase();
    let taken = [
        header_sets::STANDARD_REQUEST,
        header_sets::FORWARDING,
        header_sets::CREDENTIALS,
    ]
    .iter()
    .any(|set| set.contains(&name.as_str()));
    if taken || name == config.server.request_id_header.to_ascii_lowercase() {
        found.push(
            Diagnostic::error(
                "identity.header",
                format!(
                    "{:?} is a header clients and proxies send for other purposes",
                    identity.header
                ),
            )
            .with_help("keep the default, \"x-fluxlit-identity\", or another name of your own"),
        );
    }
    if identity.ttl.get().is_zero() {
        found.push(Diagnostic::error(
            "identity.ttl",
            "must be longer than 0s: an assertion would be expired when it arrives",
        ));
    }
}

/// `validator` reports nested errors as a tree keyed by field name; the file's key
/// paths are the same names, so the tree flattens into `routes[1].name` paths.
fn flatten_validator_errors(prefix: &str, errors: &ValidationErrors, out: &mut Vec<Diagnostic>) {
    let join = |field: &str| {
        if prefix.is_empty() {
            field.to_owned()
        } else {
            format!("{prefix}.{field}")
        }
    };
    let mut fields: Vec<_> = errors.errors().iter().collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    for (field, kind) in fields {
        match kind {
            ValidationErrorsKind::Field(errors) => {
                for error in errors {
                    let message = match &error.message {
                        Some(message) => message.to_string(),
                        None if error.code == "range" => match error.params.get("min") {
                            Some(min) => format!("must be at least {min}"),
                            None => "is out of range".to_owned(),
                        },
                        None => format!("is invalid ({})", error.code),
                    };
                    out.push(Diagnostic::error(join(field), message));
                }
            }
            ValidationErrorsKind::Struct(nested) => {
                flatten_validator_errors(&join(field), nested, out)
            }
            ValidationErrorsKind::List(items) => {
                for (index, nested) in items {
                    flatten_validator_errors(&format!("{}[{index}]", join(field)), nested, out);
                }
            }
        }
    }
}

fn check_server(config: &Config, found: &mut Vec<Diagnostic>) {
    let server = &config.server;
    if let Some(base) = &server.public_base_url {
        match Url::parse(base) {
            Ok(url) if !matches!(url.scheme(), "http" | "https") => found.push(
                Diagnostic::error(
                    "server.public_base_url",
                    format!("scheme `{}` is not supported", url.scheme()),
                )
                .with_help("use the http:// or https:// URL users type in their browser"),
            ),
            Ok(url) if url.query().is_some() || url.fragment().is_some() => {
                found.push(Diagnostic::error(
                    "server.public_base_url",
                    "must not have a query or fragment",
                ));
            }
            Ok(_) => {}
            Err(err) => found.push(
                Diagnostic::error(
                    "server.public_base_url",
                    format!("{base:?} is not a URL: {err}"),
                )
                .with_help(
                    "write it like \"https://apps.example.com\" or \"https://example.com/app\"",
                ),
            ),
        }
    }
    check_header_name("server.request_id_header", &server.request_id_header, found);
    if server.h2c && server.tls.is_some() {
        found.push(
            Diagnostic::error(
                "server.h2c",
                "h2c is HTTP/2 without TLS; this listener serves TLS",
            )
            .with_help("remove `h2c`: over TLS, clients get HTTP/2 by ALPN already"),
        );
    }

    let size = server.max_header_size.bytes();
    // hyper needs room for at least one read buffer of 8 KiB.
    if !(8 * 1024..=1024 * 1024).contains(&size) {
        found.push(Diagnostic::error(
            "server.max_header_size",
            format!(
                "{} is out of range: use 8KiB to 1MiB",
                server.max_header_size
            ),
        ));
    }

    // Port 0 asks the OS for a free port: two listeners on it never collide.
    if let Some(admin) = &config.admin
        && admin.listen == server.listen
        && admin.listen.port() != 0
    {
        found.push(Diagnostic::error(
            "admin.listen",
            format!(
                "{} is also server.listen; give the admin listener its own port",
                admin.listen
            ),
        ));
    }
}

fn check_trust(config: &Config, found: &mut Vec<Diagnostic>) {
    for (index, entry) in config.trust.proxies.iter().enumerate() {
        if parse_cidr(entry).is_none() {
            found.push(
                Diagnostic::error(
                    format!("trust.proxies[{index}]"),
                    format!("{entry:?} is not an IP address or CIDR range"),
                )
                .with_help("write it like \"10.0.0.0/8\", \"127.0.0.1/32\" or \"::1\""),
            );
        }
    }
    check_header_name(
        "trust.remote_user_header",
        &config.trust.remote_user_header,
        found,
    );
}

/// `"10.0.0.0/8"` or a single address (`"10.0.0.1"`, taken as `/32` or `/128`).
pub(crate) fn parse_cidr(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

fn check_upstream(name: &str, upstream: &Upstream, found: &mut Vec<Diagnostic>) {
    let path = format!("upstreams.{name}");
    if !is_valid_name(name) {
        found.push(Diagnostic::error(
            &path,
            format!("{name:?} is not a valid upstream name: use letters, digits, '-' or '_'"),
        ));
    }
    match (&upstream.url, &upstream.builtin) {
        (Some(_), Some(_)) => found.push(Diagnostic::error(
            &path,
            "has both `url` and `builtin`; keep one",
        )),
        (None, None) => found.push(
            Diagnostic::error(&path, "has neither `url` nor `builtin`").with_help(
                "add url = \"http://127.0.0.1:8000\", or builtin = \"echo\" to try the gateway",
            ),
        ),
        (Some(url), None) => {
            if let Err(error) = parse_upstream_url(url) {
                found.push(Diagnostic::error(format!("{path}.url"), error.to_string()));
            }
        }
        (None, Some(_)) => {}
    }
    check_upstream_tls(&path, upstream, found);
    if upstream.builtin.is_some() && upstream.max_in_flight.is_some() {
        found.push(Diagnostic::error(
            format!("{path}.max_in_flight"),
            "a builtin upstream answers inside the gateway: there is no server to protect",
        ));
    }
    if let Some(check) = &upstream.health_check {
        let key = format!("{path}.health_check");
        if upstream.builtin.is_some() {
            found.push(Diagnostic::error(
                &key,
                "a builtin upstream is always up: nothing to probe",
            ));
        }
        if let Some(probe) = &check.path
            && (!probe.starts_with('/') || probe.bytes().any(|b| b <= b' ' || b == 0x7f))
        {
            found.push(Diagnostic::error(
                format!("{key}.path"),
                format!("{probe:?} is not a path: write it like \"/_stcore/health\""),
            ));
        }
        if check.timeout.get() > check.interval.get() {
            found.push(Diagnostic::error(
                format!("{key}.timeout"),
                "is longer than `interval`: probes would overlap",
            ));
        }
    }
}

/// The TLS keys of an upstream: only with an https `url`, a client certificate with its
/// key, a server name that a certificate can be valid for.
fn check_upstream_tls(path: &str, upstream: &Upstream, found: &mut Vec<Diagnostic>) {
    let https = upstream.url.as_deref().is_some_and(|url| {
        url.get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    });
    let set = [
        ("ca_file", upstream.ca_file.is_some()),
        ("tls_server_name", upstream.tls_server_name.is_some()),
        ("client_cert", upstream.client_cert.is_some()),
        ("client_key", upstream.client_key.is_some()),
    ];
    if !https {
        for (key, _) in set.iter().filter(|(_, set)| *set) {
            found.push(
                Diagnostic::error(format!("{path}.{key}"), "applies to an https upstream only")
                    .with_help("give the upstream an https:// url, or remove the key"),
            );
        }
    }
    if upstream.client_cert.is_some() != upstream.client_key.is_some() {
        let missing = if upstream.client_cert.is_some() {
            "client_key"
        } else {
            "client_cert"
        };
        found.push(Diagnostic::error(
            format!("{path}.{missing}"),
            "give client_cert and client_key together (or neither)",
        ));
    }
    if let Some(secret) = &upstream.client_key
        && secret.env.is_some() == secret.file.is_some()
    {
        found.push(Diagnostic::error(
            format!("{path}.client_key"),
            "give exactly one of `env` or `file`",
        ));
    }
    if let Some(name) = &upstream.tls_server_name
        && rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
    {
        found.push(Diagnostic::error(
            format!("{path}.tls_server_name"),
            format!("{name:?} is not a DNS name or IP address a certificate can name"),
        ));
    }
}

/// Why an upstream's `url` cannot be used. Each quotes the URL as written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamUrlError {
    #[error("{text:?} is not a URL: {source}; write it like \"http://127.0.0.1:8000\"")]
    NotAUrl {
        text: String,
        #[source]
        source: url::ParseError,
    },
    #[error(
        "{text:?}: use http:// or https:// — WebSocket upgrades go to the same address \
         (ws:// with http, wss:// with https)"
    )]
    WebSocket { text: String },
    #[error("{text:?}: scheme `{scheme}` is not supported; use http://, https:// or unix:/path")]
    Scheme { text: String, scheme: String },
    #[error("{text:?}: a Unix socket's path must be absolute, as in \"unix:/run/app/api.sock\"")]
    UnixPath { text: String },
    #[error("{text:?} has no host")]
    NoHost { text: String },
    /// `shown` is the URL with its user and password as `***`: the message goes to logs
    /// and `/snapshot`, and must not repeat them.
    #[error("{shown:?} carries credentials; upstream URLs must not")]
    Credentials { shown: String },
    #[error("{text:?} must not have a query or fragment")]
    QueryOrFragment { text: String },
}

/// The upstream's base URL: `http(s)://host:port[/base]` or `unix:/path/to.sock`,
/// nothing else.
pub(crate) fn parse_upstream_url(text: &str) -> Result<Url, UpstreamUrlError> {
    let url = Url::parse(text).map_err(|source| UpstreamUrlError::NotAUrl {
        text: text.to_owned(),
        source,
    })?;
    let written = || text.to_owned();
    match url.scheme() {
        "http" | "https" => {}
        "unix" => {
            let path = url.path();
            if !path.starts_with('/') || path.len() < 2 || url.has_host() {
                return Err(UpstreamUrlError::UnixPath { text: written() });
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(UpstreamUrlError::QueryOrFragment { text: written() });
            }
            return Ok(url);
        }
        "ws" | "wss" => return Err(UpstreamUrlError::WebSocket { text: written() }),
        other => {
            return Err(UpstreamUrlError::Scheme {
                text: written(),
                scheme: other.to_owned(),
            });
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UpstreamUrlError::NoHost { text: written() });
    }
    if !url.username().is_empty() || url.password().is_some() {
        let mut shown = url.clone();
        // Cannot fail on a URL with a host, which it has by now.
        let _ = shown.set_username("***");
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        return Err(UpstreamUrlError::Credentials {
            shown: shown.to_string(),
        });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(UpstreamUrlError::QueryOrFragment { text: written() });
    }
    Ok(url)
}

fn check_routes(config: &Config, found: &mut Vec<Diagnostic>) {
    if config.routes.is_empty() {
        found.push(
            Diagnostic::warning("routes", "there are no routes: every request gets 404")
                .with_help("add a [[routes]] table with name, path_prefix and upstream"),
        );
    }

    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut prefixes: HashMap<&str, usize> = HashMap::new();
    for (index, route) in config.routes.iter().enumerate() {
        let path = format!("routes[{index}]");
        if let Some(first) = names.insert(&route.name, index) {
            names.insert(&route.name, first);
            found.push(
                Diagnostic::error(
                    format!("{path}.name"),
                    format!(
                        "duplicate route name {:?}, already used by routes[{first}]",
                        route.name
                    ),
                )
                .with_help("give every route its own name"),
            );
        }
        if route.path_prefix.starts_with('/') {
            let prefix = normalize_prefix(&route.path_prefix);
            if let Some(first) = prefixes.insert(prefix, index) {
                prefixes.insert(prefix, first);
                found.push(Diagnostic::error(
                    format!("{path}.path_prefix"),
                    format!(
                        "duplicate path prefix {:?}: routes[{first}] ({:?}) already matches it",
                        route.path_prefix, config.routes[first].name
                    ),
                ));
            }
        }
        if !config.upstreams.contains_key(&route.upstream) {
            found.push(unknown_upstream(&path, route, &config.upstreams));
        }
        check_forward_client_headers(config, &path, route, found);
    }

    for name in config.upstreams.keys() {
        if !config.routes.iter().any(|route| &route.upstream == name) {
            found.push(Diagnostic::warning(
                format!("upstreams.{name}"),
                format!("upstream {name:?} is not used by any route"),
            ));
        }
    }
}

fn unknown_upstream(
    path: &str,
    route: &Route,
    upstreams: &BTreeMap<String, Upstream>,
) -> Diagnostic {
    let diagnostic = Diagnostic::error(
        format!("{path}.upstream"),
        format!("unknown upstream {:?}", route.upstream),
    );
    match suggest(&route.upstream, upstreams.keys().map(String::as_str)) {
        Some(suggestion) => diagnostic.with_help(format!("did you mean {suggestion:?}?")),
        None if upstreams.is_empty() => {
            diagnostic.with_help("define it in an [upstreams.NAME] table with a url")
        }
        None => diagnostic.with_help(format!(
            "the upstreams defined are: {}",
            upstreams
                .keys()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn check_forward_client_headers(
    config: &Config,
    path: &str,
    route: &Route,
    found: &mut Vec<Diagnostic>,
) {
    for (index, name) in route.forward_client_headers.iter().enumerate() {
        let key = format!("{path}.forward_client_headers[{index}]");
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            found.push(Diagnostic::error(
                key,
                format!("{name:?} is not a valid header name"),
            ));
            continue;
        }
        let reason = header_sets::forbidden_in_allowlist(name).or_else(|| {
            let lower = name.to_ascii_lowercase();
            if lower == config.trust.remote_user_header.to_ascii_lowercase() {
                Some(
                    "the forward-auth identity header: never forwarded as such (a forward-auth \
                     route sends the user as x-fluxlit-sub)",
                )
            } else if lower == config.server.request_id_header.to_ascii_lowercase() {
                Some("the request id header, kept only from trusted proxies")
            } else if config.auth.providers.values().any(|p| {
                p.claim_headers
                    .values()
                    .any(|h| h.eq_ignore_ascii_case(&lower))
            }) {
                Some("an identity header the gateway sets from verified claims")
            } else {
                None
            }
        });
        if let Some(reason) = reason {
            found.push(
                Diagnostic::warning(
                    key,
                    format!("{name:?} is dropped from the allowlist: {reason}"),
                )
                .with_help("remove it from forward_client_headers"),
            );
        }
    }
}

/// The keys of `provider` that only `kind = "jwt"` takes (and, for `claim_headers` and
/// `groups_claim`, `kind = "oidc"`) and that are set.
fn jwt_only_keys_set(provider: &AuthProvider) -> impl Iterator<Item = &'static str> {
    [
        ("issuer", provider.issuer.is_some()),
        ("audience", provider.audience.is_some()),
        ("algorithms", !provider.algorithms.is_empty()),
        ("hs256_secret", provider.hs256_secret.is_some()),
        ("jwks_url", provider.jwks_url.is_some()),
        ("jwks_file", provider.jwks_file.is_some()),
        ("claim_headers", !provider.claim_headers.is_empty()),
        ("groups_claim", provider.groups_claim.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
}

pub(crate) fn is_local_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn check_header_name(path: &str, name: &str, found: &mut Vec<Diagnostic>) {
    if HeaderName::from_bytes(name.as_bytes()).is_err() {
        found.push(Diagnostic::error(
            path,
            format!("{name:?} is not a valid header name"),
        ));
    } else if header_sets::HOP_BY_HOP.contains(&name.to_ascii_lowercase().as_str()) {
        found.push(Diagnostic::error(
            path,
            format!("{name:?} is a hop-by-hop header"),
        ));
    }
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `/api/` and `/api` are the same prefix; `/` stays `/`.
pub(crate) fn normalize_prefix(prefix: &str) -> &str {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() { "/" } else { trimmed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_url_with_credentials_is_refused_without_repeating_them() {
        let error = parse_upstream_url("http://admin:hunter2@127.0.0.1:8000/")
            .expect_err("credentials are refused");
        let message = error.to_string();
        assert!(message.contains("carries credentials"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(!message.contains("admin"), "{message}");
        assert!(message.contains("127.0.0.1:8000"), "{message}");
    }
}
