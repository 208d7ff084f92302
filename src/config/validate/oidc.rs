//! Checks on `kind = "oidc"` providers.

use std::collections::HashMap;

use url::Url;

use super::super::diagnostic::Diagnostic;
use super::super::model::{
    AuthProvider, Config, OidcPaths, ProviderKind, SecretRef, StoreRef, oidc_defaults,
};
use super::super::store_url::RedisTarget;
use super::super::suggest;
use super::{is_local_host, parse_cidr};

/// Longer than this, an auth code lingers in a URL for too long.
const LONG_AUTH_CODE_TTL: std::time::Duration = std::time::Duration::from_secs(600);
/// Longer than this, a login state outlives any reasonable login.
const LONG_LOGIN_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

pub(super) fn check_oidc_provider(
    config: &Config,
    path: &str,
    provider: &AuthProvider,
    found: &mut Vec<Diagnostic>,
) {
    // claim_headers and groups_claim: the id_token's claims, on session routes.
    let claim_keys = ["claim_headers", "groups_claim"];
    for key in super::jwt_only_keys_set(provider).filter(|key| !claim_keys.contains(key)) {
        let help = match key {
            "issuer" => "the identity provider's issuer is `issuer_url`",
            "jwks_url" | "jwks_file" => "the IdP's keys are found through discovery",
            _ => "the minted token's settings are those of the `mint` provider",
        };
        found.push(
            Diagnostic::error(
                format!("{path}.{key}"),
                format!("`{key}` applies to kind = \"jwt\" only"),
            )
            .with_help(help),
        );
    }

    check_issuer_url(path, provider, found);
    if provider.client_id.as_deref().is_none_or(str::is_empty) {
        found.push(
            Diagnostic::error(
                format!("{path}.client_id"),
                "an oidc provider needs `client_id`",
            )
            .with_help("the client id registered at the identity provider"),
        );
    }
    check_client_secret(path, provider.client_secret.as_ref(), found);
    check_exchange_secret(path, provider.exchange_secret.as_ref(), found);
    check_session_key(path, provider, found);
    check_mint(config, path, provider, found);
    check_scopes_and_claims(path, provider, found);
    check_paths(path, provider, found);
    check_ttls(path, provider, found);
    check_store(path, provider, found);
    check_exchange_from(path, provider, found);
    check_login_rate_limit(path, provider, found);
    check_manual_endpoints(path, provider, found);

    if config.server.public_base_url.is_none() {
        found.push(
            Diagnostic::error(
                path,
                "an oidc provider needs server.public_base_url: the redirect URI the identity \
                 provider sends users back to is built from it",
            )
            .with_help("e.g. [server] public_base_url = \"https://apps.example.com\""),
        );
    }
}

fn check_issuer_url(path: &str, provider: &AuthProvider, found: &mut Vec<Diagnostic>) {
    let key = format!("{path}.issuer_url");
    let Some(text) = provider.issuer_url.as_deref() else {
        found.push(
            Diagnostic::error(&key, "an oidc provider needs `issuer_url`")
                .with_help("the identity provider's issuer, e.g. \"https://idp.example.com\""),
        );
        return;
    };
    check_idp_url(
        &key,
        text,
        IdpUrl {
            query_allowed: false,
            plain_http_risk: "the IdP's settings and keys could be swapped in transit",
        },
        found,
    );
}

fn check_client_secret(path: &str, secret: Option<&SecretRef>, found: &mut Vec<Diagnostic>) {
    let key = format!("{path}.client_secret");
    match secret {
        None => found.push(
            Diagnostic::error(&key, "an oidc provider needs `client_secret`").with_help(
                "client_secret = { env = \"OIDC_CLIENT_SECRET\" } or { file = \"client-secret\" }",
            ),
        ),
        Some(secret) if secret.env.is_some() == secret.file.is_some() => found.push(
            Diagnostic::error(&key, "give exactly one of `env` or `file`"),
        ),
        Some(_) => {}
    }
}

fn check_exchange_secret(path: &str, secret: Option<&SecretRef>, found: &mut Vec<Diagnostic>) {
    if let Some(secret) = secret
        && secret.env.is_some() == secret.file.is_some()
    {
        found.push(Diagnostic::error(
            format!("{path}.exchange_secret"),
            "give exactly one of `env` or `file`",
        ));
    }
}

fn check_session_key(path: &str, provider: &AuthProvider, found: &mut Vec<Diagnostic>) {
    let key = format!("{path}.session_key");
    match &provider.session_key {
        Some(secret) if secret.env.is_some() == secret.file.is_some() => found.push(
            Diagnostic::error(&key, "give exactly one of `env` or `file`"),
        ),
        Some(_) => {}
        None if matches!(&provider.store, Some(StoreRef::Inline(text)) if text.contains("://"))
            || matches!(&provider.store, Some(StoreRef::Secret(_))) =>
        {
            found.push(
                Diagnostic::error(
                    &key,
                    "a Redis store is shared by replicas, and a login started on one finishes \
                     on another: they need one `session_key` to open each other's login \
                     cookies",
                )
                .with_help(
                    "session_key = { env = \"FLUXLIT_SESSION_KEY\" } or { file = \
                     \"session-key\" }, the same 32+ random bytes on every replica (e.g. \
                     `openssl rand -base64 48`)",
                ),
            );
        }
        None => {}
    }
}

fn check_mint(config: &Config, path: &str, provider: &AuthProvider, found: &mut Vec<Diagnostic>) {
    let key = format!("{path}.mint");
    let providers = &config.auth.providers;
    let Some(name) = provider.mint.as_deref() else {
        // Browser sessions need no token; without them, a login would lead nowhere.
        let own_name = path.strip_prefix("auth.providers.").unwrap_or(path);
        if !config
            .routes
            .iter()
            .any(|route| route.auth.as_deref() == Some(own_name))
        {
            found.push(
                Diagnostic::error(
                    &key,
                    "an oidc provider needs `mint`, or a route that names it",
                )
                .with_help(
                    "protect routes with a browser session (auth = this provider), or \
                         name the jwt provider (with an hs256_secret) that signs the access \
                         token handed to the app, and protect API routes with that",
                ),
            );
        }
        return;
    };
    let Some(mint) = providers.get(name) else {
        let jwt_names = providers
            .iter()
            .filter(|(_, p)| p.kind == ProviderKind::Jwt)
            .map(|(n, _)| n.as_str());
        let diagnostic = Diagnostic::error(&key, format!("unknown auth provider {name:?}"));
        found.push(match suggest(name, jwt_names) {
            Some(suggestion) => diagnostic.with_help(format!("did you mean {suggestion:?}?")),
            None => diagnostic.with_help(
                "define a kind = \"jwt\" provider with an hs256_secret, and name it here",
            ),
        });
        return;
    };
    if mint.kind != ProviderKind::Jwt {
        found.push(Diagnostic::error(
            &key,
            format!("provider {name:?} is not a jwt provider: it cannot sign tokens"),
        ));
        return;
    }
    if !mint.algorithms.iter().any(|alg| alg.is_hmac()) || mint.hs256_secret.is_none() {
        found.push(
            Diagnostic::error(
                &key,
                format!(
                    "provider {name:?} cannot sign tokens: fluxlit mints with an HS256/HS384/HS512 \
                     hs256_secret, and it has none"
                ),
            )
            .with_help("add \"HS256\" to its algorithms and an hs256_secret"),
        );
    }
}

fn check_scopes_and_claims(path: &str, provider: &AuthProvider, found: &mut Vec<Diagnostic>) {
    for (index, scope) in provider.scopes.iter().enumerate() {
        let valid = !scope.is_empty()
            && scope
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        if !valid {
            found.push(Diagnostic::error(
                format!("{path}.scopes[{index}]"),
                format!("{scope:?} is not a scope name (no spaces, quotes or backslashes)"),
            ));
        }
    }
    for (index, claim) in provider.claims.iter().enumerate() {
        let key = format!("{path}.claims[{index}]");
        if !oidc_defaults::COPYABLE_CLAIMS.contains(&claim.as_str()) {
            found.push(
                Diagnostic::error(&key, format!("claim {claim:?} cannot be copied")).with_help(
                    format!(
                        "`sub` always is; besides it: {}",
                        oidc_defaults::COPYABLE_CLAIMS.join(", ")
                    ),
                ),
            );
            continue;
        }
        let scope = match claim.as_str() {
            "email" => "email",
            _ => "profile",
        };
        if !provider.scopes.iter().any(|s| s == scope) {
            found.push(Diagnostic::warning(
                &key,
                format!(
                    "the identity provider usually sends {claim:?} only for the scope {scope:?}, \
                     which `scopes` does not list"
                ),
            ));
        }
    }
}

fn check_paths(path: &str, provider: &AuthProvider, found: &mut Vec<Diagnostic>) {
    let Some(paths) = &provider.paths else {
        return;
    };
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (key, value) in named_paths(paths) {
        let full = format!("{path}.paths.{key}");
        if let Err(error) = super::super::model::path_prefix(value) {
            let message = error
                .message
                .map_or_else(|| "is not a valid path".to_owned(), |m| m.to_string());
            found.push(Diagnostic::error(&full, message));
        } else if value == "/" {
            found.push(Diagnostic::error(
                &full,
                "\"/\" would take every request away from the routes",
            ));
        }
        if let Some(other) = seen.insert(value, key) {
            found.push(Diagnostic::error(
                &full,
                format!("{value:?} is also paths.{other}"),
            ));
        }
    }
}

fn named_paths(paths: &OidcPaths) -> [(&'static str, &str); 5] {
    [
        ("login", paths.login.as_str()),
        ("callback", paths.callback.as_str()),
        ("exchange", paths.exchange.as_str()),
        ("logout", paths.logout.as_str()),
        ("userinfo", paths.userinfo.as_str()),
    ]
}

fn check_ttls(path: &str, provider: &AuthProvider, found: &mut Vec<Diagnostic>) {
    for (key, value) in [
        ("login_ttl", provider.login_ttl),
        ("auth_code_ttl", provider.auth_code_ttl),
        ("access_token_ttl", provider.access_token_ttl),
        ("session_idle_timeout", provider.session_idle_timeout),
        ("session_max_age", provider.session_max_age),
    ] {
        let Some(value) = value else { continue };
        if value.get() < std::time::Duration::from_secs(1) {
            found.push(Diagnostic::error(
                format!("{path}.{key}"),
                "must be at least 1s",
            ));
        }
    }
    if let Some(ttl) = provider.auth_code_ttl
        && ttl.get() > LONG_AUTH_CODE_TTL
    {
        found.push(Diagnostic::warning(
            format!("{path}.auth_code_ttl"),
            format!("{ttl}: an auth code travels in a URL; keep it short-lived (60s is usual)"),
        ));
    }
    if let (Some(idle), Some(max)) = (provider.session_idle_timeout, provider.session_max_age)
        && idle.get() > max.get()
    {
        found.push(Diagnostic::warning(
            format!("{path}.session_idle_timeout"),
            format!("{idle} is longer than session_max_age ({max}), which ends sessions first"),
        ));
    }
    if let Some(ttl) = provider.login_ttl
        && ttl.get() > LONG_LOGIN_TTL
    {
        found.push(Diagnostic::warning(
            format!("{path}.login_ttl"),
            format!("{ttl}: pending logins are kept that long"),
        ));
    }
}

fn check_store(path: &str, provider: &AuthProvider, found: &mut Vec<Diagnostic>) {
    let key = format!("{path}.store");
    const STORE_HELP: &str = "use store = \"memory\" (one gateway process) or \
                              \"redis://host:6379/0\" (replicas sharing a Redis; \
                              rediss:// for TLS)";
    let memory = match &provider.store {
        None => true,
        Some(StoreRef::Inline(text)) if text == "memory" => true,
        Some(StoreRef::Inline(text)) if text.contains("://") => {
            // The text may hold a password: messages never repeat it.
            match RedisTarget::parse(text) {
                Ok(target) if target.has_password() => found.push(
                    Diagnostic::error(
                        &key,
                        "the Redis URL carries a password, and secrets are never written in \
                         the file (the value is not repeated here)",
                    )
                    .with_help(
                        "put the whole URL in the environment or a file: store = { env = \
                         \"FLUXLIT_REDIS_URL\" } or store = { file = \"redis-url\" }",
                    ),
                ),
                Ok(_) => {}
                Err(error) => {
                    found.push(Diagnostic::error(&key, error.to_string()).with_help(STORE_HELP));
                }
            }
            false
        }
        Some(StoreRef::Inline(other)) => {
            let message = if other.contains('@') {
                "unknown store (the value may hold a password: it is not repeated here)".to_owned()
            } else {
                format!("unknown store {other:?}")
            };
            found.push(Diagnostic::error(&key, message).with_help(STORE_HELP));
            true
        }
        Some(StoreRef::Secret(secret)) => {
            if secret.env.is_some() == secret.file.is_some() {
                found.push(Diagnostic::error(
                    &key,
                    "give exactly one of `env` or `file`",
                ));
            }
            false
        }
    };
    check_store_tls(path, provider, memory, found);
    if provider.store_max_entries == Some(0) {
        found.push(Diagnostic::error(
            format!("{path}.store_max_entries"),
            "must be at least 1",
        ));
    } else if provider.store_max_entries.is_some() && !memory {
        found.push(Diagnostic::warning(
            format!("{path}.store_max_entries"),
            "bounds the memory store only: Redis keeps entries until they expire (bound its \
             memory with maxmemory)",
        ));
    }
}

/// `store_tls` needs a Redis store (whether it is `rediss://` is known here only for a
/// URL written in the file; compile checks one read from a secret), and a client
/// certificate needs its key.
fn check_store_tls(path: &str, provider: &AuthProvider, memory: bool, found: &mut Vec<Diagnostic>) {
    let Some(tls) = &provider.store_tls else {
        return;
    };
    let key = format!("{path}.store_tls");
    let plain =
        matches!(&provider.store, Some(StoreRef::Inline(text)) if text.starts_with("redis://"));
    if memory || plain {
        found.push(
            Diagnostic::error(&key, "applies to a rediss:// store only")
                .with_help("use store = \"rediss://host:6380/0\", or remove store_tls"),
        );
    }
    if tls.client_cert.is_some() != tls.client_key.is_some() {
        found.push(Diagnostic::error(
            &key,
            "give client_cert and client_key together (or neither)",
        ));
    }
    if let Some(secret) = &tls.client_key
        && secret.env.is_some() == secret.file.is_some()
    {
        found.push(Diagnostic::error(
            format!("{key}.client_key"),
            "give exactly one of `env` or `file`",
        ));
    }
}

fn check_exchange_from(path: &str, provider: &AuthProvider, found: &mut Vec<Diagnostic>) {
    let Some(entries) = &provider.exchange_from else {
        return;
    };
    if entries.is_empty() {
        found.push(Diagnostic::warning(
            format!("{path}.exchange_from"),
            "is empty: nobody can exchange an auth code, so no login can finish",
        ));
    }
    for (index, entry) in entries.iter().enumerate() {
        let key = format!("{path}.exchange_from[{index}]");
        match parse_cidr(entry) {
            None => found.push(
                Diagnostic::error(
                    &key,
                    format!("{entry:?} is not an IP address or CIDR range"),
                )
                .with_help("write it like \"127.0.0.1/32\", \"10.0.0.0/8\" or \"::1\""),
            ),
            // Every address, browsers included: the exchange would be a public endpoint,
            // and a script on the page could race the app's server for the auth code.
            Some(net) if net.prefix_len() == 0 => found.push(
                Diagnostic::error(
                    &key,
                    format!(
                        "{entry:?} lets every address exchange auth codes, browsers included; \
                         the exchange is for the app's server only"
                    ),
                )
                .with_help(
                    "list the app server's own addresses, e.g. \"127.0.0.1/32\" when it runs \
                     beside the gateway, and set exchange_secret",
                ),
            ),
            Some(_) => {}
        }
    }
}

/// Custom providers without discovery: their id_tokens cannot be checked against the
/// IdP's JWKS, so they are refused unless the dangerous flag says otherwise. Then both
/// endpoints are needed, over https (http on loopback only): the TLS connection to the
/// token endpoint is all that vouches for the id_token.
fn check_manual_endpoints(path: &str, provider: &AuthProvider, found: &mut Vec<Diagnostic>) {
    let endpoints = [
        (
            "authorization_endpoint",
            provider.authorization_endpoint.as_deref(),
        ),
        ("token_endpoint", provider.token_endpoint.as_deref()),
    ];
    let allowed = provider.allow_unverified_id_token_for_custom_oidc;
    if allowed {
        found.push(
            Diagnostic::warning(
                format!("{path}.allow_unverified_id_token_for_custom_oidc"),
                "DANGER: id_tokens of this provider are believed without checking their \
                 signature against the identity provider's keys; only the TLS connection to \
                 its token endpoint vouches for them",
            )
            .with_help("use an identity provider with discovery (issuer_url) instead"),
        );
    }
    let Some((first, _)) = endpoints.iter().find(|(_, value)| value.is_some()) else {
        return;
    };
    if !allowed {
        found.push(
            Diagnostic::error(
                format!("{path}.{first}"),
                "manual endpoints skip discovery and the identity provider's JWKS, so id_tokens \
                 could not be verified: refused",
            )
            .with_help(
                "remove it and let issuer_url's discovery find the endpoints; only \
                 allow_unverified_id_token_for_custom_oidc = true would accept it",
            ),
        );
        return;
    }
    for (key, value) in endpoints {
        let key = format!("{path}.{key}");
        let Some(text) = value else {
            found.push(
                Diagnostic::error(
                    &key,
                    "a provider with manual endpoints needs both authorization_endpoint and \
                     token_endpoint",
                )
                .with_help("or remove both and let issuer_url's discovery find them"),
            );
            continue;
        };
        check_idp_url(
            &key,
            text,
            IdpUrl {
                // RFC 6749 §3.1: an authorization endpoint may carry a query, kept as is.
                query_allowed: true,
                plain_http_risk: "with no signature to check, the id_token would be \
                                  whatever the network says",
            },
            found,
        );
    }
}

/// How an identity provider's URL is checked.
struct IdpUrl {
    query_allowed: bool,
    /// What plain http would expose, for the error.
    plain_http_risk: &'static str,
}

/// An identity provider's URL: https, or http on loopback only; no fragment, no
/// credentials (and no query unless `query_allowed`).
fn check_idp_url(key: &str, text: &str, rules: IdpUrl, found: &mut Vec<Diagnostic>) {
    match Url::parse(text) {
        Ok(url) if url.scheme() == "https" || (url.scheme() == "http" && is_local_host(&url)) => {
            if url.fragment().is_some() || (!rules.query_allowed && url.query().is_some()) {
                let what = if rules.query_allowed {
                    "must not have a fragment"
                } else {
                    "must not have a query or fragment"
                };
                found.push(Diagnostic::error(key, what));
            }
            if !url.username().is_empty() || url.password().is_some() {
                found.push(Diagnostic::error(key, "must not carry credentials"));
            }
        }
        Ok(url) if url.scheme() == "http" => found.push(
            Diagnostic::error(
                key,
                format!("{text:?} is plain http: {}", rules.plain_http_risk),
            )
            .with_help("use https://; http is allowed for loopback addresses only"),
        ),
        Ok(url) => found.push(Diagnostic::error(
            key,
            format!("scheme `{}` is not supported; use https://", url.scheme()),
        )),
        Err(err) => found.push(Diagnostic::error(
            key,
            format!("{text:?} is not a URL: {err}"),
        )),
    }
}

/// oidc keys on a jwt or trusted_proxy_user provider.
fn check_login_rate_limit(path: &str, provider: &AuthProvider, found: &mut Vec<Diagnostic>) {
    if provider
        .login_rate_limit
        .is_some_and(|limit| limit.burst == Some(0))
    {
        found.push(
            Diagnostic::error(
                format!("{path}.login_rate_limit.burst"),
                "must be at least 1: a burst of 0 would refuse every login",
            )
            .with_help("leave `burst` out to allow the rate's count at once"),
        );
    }
}

pub(super) fn check_no_oidc_keys(path: &str, provider: &AuthProvider, found: &mut Vec<Diagnostic>) {
    let oidc_only = [
        ("issuer_url", provider.issuer_url.is_some()),
        ("client_id", provider.client_id.is_some()),
        ("client_secret", provider.client_secret.is_some()),
        ("scopes", !provider.scopes.is_empty()),
        ("mint", provider.mint.is_some()),
        ("paths", provider.paths.is_some()),
        ("login_ttl", provider.login_ttl.is_some()),
        ("auth_code_ttl", provider.auth_code_ttl.is_some()),
        ("access_token_ttl", provider.access_token_ttl.is_some()),
        ("claims", !provider.claims.is_empty()),
        ("store", provider.store.is_some()),
        ("store_max_entries", provider.store_max_entries.is_some()),
        ("store_tls", provider.store_tls.is_some()),
        ("exchange_from", provider.exchange_from.is_some()),
        ("exchange_secret", provider.exchange_secret.is_some()),
        ("session_key", provider.session_key.is_some()),
        (
            "session_idle_timeout",
            provider.session_idle_timeout.is_some(),
        ),
        ("session_max_age", provider.session_max_age.is_some()),
        ("login_rate_limit", provider.login_rate_limit.is_some()),
        (
            "authorization_endpoint",
            provider.authorization_endpoint.is_some(),
        ),
        ("token_endpoint", provider.token_endpoint.is_some()),
        (
            "allow_unverified_id_token_for_custom_oidc",
            provider.allow_unverified_id_token_for_custom_oidc,
        ),
    ];
    for (key, present) in oidc_only {
        if present {
            found.push(Diagnostic::error(
                format!("{path}.{key}"),
                format!("`{key}` applies to kind = \"oidc\" only"),
            ));
        }
    }
}

/// Endpoint paths shared by two providers.
pub(super) fn check_oidc_across_providers(config: &Config, found: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<String, String> = HashMap::new();
    let defaults = OidcPaths::default();
    for (name, provider) in &config.auth.providers {
        if provider.kind != ProviderKind::Oidc {
            continue;
        }
        let paths = provider.paths.as_ref().unwrap_or(&defaults);
        for (key, value) in named_paths(paths) {
            let here = format!("auth.providers.{name}.paths.{key}");
            match seen.get(value) {
                Some(first) if !first.starts_with(&format!("auth.providers.{name}.")) => {
                    found.push(
                        Diagnostic::error(&here, format!("{value:?} is also {first}"))
                            .with_help("give each oidc provider its own paths table"),
                    );
                }
                _ => {
                    seen.entry(value.to_owned()).or_insert(here);
                }
            }
        }
    }
}
