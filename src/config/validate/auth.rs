//! The `[auth.providers]` rules: each kind's required and forbidden keys, secrets and
//! key sources, and the references between providers.

use http::HeaderName;
use url::Url;

use super::super::diagnostic::Diagnostic;
use super::super::model::{AuthProvider, Config, ProviderKind};
use super::{is_local_host, is_valid_name, jwt_only_keys_set, oidc, parse_cidr, suggest};
use crate::header_sets;

pub(super) fn check_auth(config: &Config, found: &mut Vec<Diagnostic>) {
    let providers = &config.auth.providers;
    for (name, provider) in providers {
        let path = format!("auth.providers.{name}");
        if !is_valid_name(name) {
            found.push(Diagnostic::error(
                &path,
                format!("{name:?} is not a valid provider name: use letters, digits, '-' or '_'"),
            ));
        }
        match provider.kind {
            ProviderKind::Jwt => check_jwt_provider(&path, provider, found),
            ProviderKind::TrustedProxyUser => {
                check_trusted_proxy_user(config, &path, provider, found)
            }
            ProviderKind::Oidc => oidc::check_oidc_provider(config, &path, provider, found),
        }
        if provider.kind != ProviderKind::Oidc {
            oidc::check_no_oidc_keys(&path, provider, found);
        }
        if provider.kind != ProviderKind::TrustedProxyUser && provider.trusted_peers.is_some() {
            found.push(Diagnostic::error(
                format!("{path}.trusted_peers"),
                "`trusted_peers` applies to kind = \"trusted_proxy_user\" only",
            ));
        }
        super::allow::check_groups_claim(&path, provider.groups_claim.as_deref(), found);
        for (claim, header) in &provider.claim_headers {
            let key = format!("{path}.claim_headers.{claim}");
            let lower = header.to_ascii_lowercase();
            if HeaderName::from_bytes(header.as_bytes()).is_err() {
                found.push(Diagnostic::error(
                    key,
                    format!("{header:?} is not a valid header name"),
                ));
            } else if header_sets::STANDARD_REQUEST.contains(&lower.as_str())
                || header_sets::forbidden_in_allowlist(&lower)
                    .is_some_and(|_| !header_sets::GATEWAY_IDENTITY.contains(&lower.as_str()))
            {
                found.push(Diagnostic::error(
                    key,
                    format!("{header:?} is a standard or forwarding header; name it x-something"),
                ));
            }
        }
    }

    for (index, route) in config.routes.iter().enumerate() {
        let path = format!("routes[{index}]");
        super::allow::check_allow(config, index, route, found);
        match &route.auth {
            Some(provider) if !providers.contains_key(provider) => {
                let diagnostic = Diagnostic::error(
                    format!("{path}.auth"),
                    format!("unknown auth provider {provider:?}"),
                );
                found.push(
                    match suggest(provider, providers.keys().map(String::as_str)) {
                        Some(suggestion) => {
                            diagnostic.with_help(format!("did you mean {suggestion:?}?"))
                        }
                        None => diagnostic.with_help(
                            "define it in an [auth.providers.NAME] table; a route naming a \
                         provider that does not exist is refused, never served unprotected",
                        ),
                    },
                );
            }
            Some(provider) => {
                let settings = providers.get(provider);
                let kind = settings.map(|p| p.kind);
                if !route.required_scopes.is_empty() && kind != Some(ProviderKind::Jwt) {
                    let diagnostic = Diagnostic::error(
                        format!("{path}.required_scopes"),
                        format!(
                            "provider {provider:?} does not issue scopes; only jwt providers do"
                        ),
                    );
                    // A browser session's provider may mint a token that has scopes.
                    let mint = settings.and_then(|p| p.mint.as_deref());
                    found.push(match mint {
                        Some(mint) => diagnostic.with_help(format!(
                            "require scopes of the token it mints, on an API route: auth = \
                             {mint:?}"
                        )),
                        None => diagnostic,
                    });
                }
            }
            None if !route.required_scopes.is_empty() => found.push(
                Diagnostic::error(
                    format!("{path}.required_scopes"),
                    "required_scopes needs `auth`: without a provider there are no scopes to check",
                )
                .with_help("add auth = \"PROVIDER\" to the route"),
            ),
            None => {}
        }
    }
    oidc::check_oidc_across_providers(config, found);
}

fn check_jwt_provider(path: &str, provider: &AuthProvider, found: &mut Vec<Diagnostic>) {
    if provider.issuer.as_deref().is_none_or(str::is_empty) {
        found.push(
            Diagnostic::error(format!("{path}.issuer"), "a jwt provider needs `issuer`")
                .with_help("the `iss` your tokens carry, e.g. \"https://auth.example.com\""),
        );
    }
    match &provider.audience {
        None => found.push(
            Diagnostic::error(
                format!("{path}.audience"),
                "a jwt provider needs `audience`",
            )
            .with_help("the `aud` your tokens carry, e.g. \"my-api\""),
        ),
        Some(audience) if audience.values().iter().all(String::is_empty) => found.push(
            Diagnostic::error(format!("{path}.audience"), "the audience must not be empty"),
        ),
        Some(_) => {}
    }
    if provider.algorithms.is_empty() {
        found.push(
            Diagnostic::error(
                format!("{path}.algorithms"),
                "list the algorithms tokens are signed with",
            )
            .with_help("e.g. algorithms = [\"HS256\"], or [\"RS256\"] with jwks_url"),
        );
    }
    let wants_secret = provider.algorithms.iter().any(|a| a.is_hmac());
    let wants_keys = provider.algorithms.iter().any(|a| !a.is_hmac());
    match (&provider.hs256_secret, wants_secret) {
        (None, true) => found.push(
            Diagnostic::error(
                format!("{path}.hs256_secret"),
                "HS algorithms need `hs256_secret`",
            )
            .with_help("hs256_secret = { env = \"JWT_HS256_SECRET\" } or { file = \"secret\" }"),
        ),
        (Some(_), false) => found.push(Diagnostic::warning(
            format!("{path}.hs256_secret"),
            "no HS algorithm is listed in `algorithms`, so the secret is never used",
        )),
        (Some(secret), true) => match (&secret.env, &secret.file) {
            (Some(_), Some(_)) | (None, None) => found.push(Diagnostic::error(
                format!("{path}.hs256_secret"),
                "give exactly one of `env` or `file`",
            )),
            _ => {}
        },
        (None, false) => {}
    }
    let key_sources =
        usize::from(provider.jwks_url.is_some()) + usize::from(provider.jwks_file.is_some());
    if key_sources > 1 {
        found.push(Diagnostic::error(
            format!("{path}.jwks_file"),
            "give `jwks_url` or `jwks_file`, not both",
        ));
    } else if wants_keys && key_sources == 0 {
        found.push(
            Diagnostic::error(
                format!("{path}.algorithms"),
                "RS/PS/ES/EdDSA algorithms need public keys: add `jwks_url` or `jwks_file`",
            )
            .with_help("jwks_url = \"https://idp.example.com/.well-known/jwks.json\""),
        );
    } else if !wants_keys && key_sources == 1 {
        found.push(Diagnostic::warning(
            format!("{path}.algorithms"),
            "a JWKS is configured but only HS algorithms are listed, so it is never used",
        ));
    }
    if let Some(url) = &provider.jwks_url {
        match Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
                if parsed.scheme() == "http" && !is_local_host(&parsed) {
                    found.push(Diagnostic::warning(
                        format!("{path}.jwks_url"),
                        "keys fetched over plain http can be swapped in transit; use https",
                    ));
                }
            }
            Ok(parsed) => found.push(Diagnostic::error(
                format!("{path}.jwks_url"),
                format!(
                    "scheme `{}` is not supported; use https://",
                    parsed.scheme()
                ),
            )),
            Err(err) => found.push(Diagnostic::error(
                format!("{path}.jwks_url"),
                format!("{url:?} is not a URL: {err}"),
            )),
        }
    }
    if provider.leeway.get() > std::time::Duration::from_secs(300) {
        found.push(Diagnostic::warning(
            format!("{path}.leeway"),
            format!(
                "{} of leeway keeps expired tokens working for that long",
                provider.leeway
            ),
        ));
    }
    for (key, duration) in [
        ("jwks_cache_ttl", provider.jwks_cache_ttl),
        ("jwks_refetch_interval", provider.jwks_refetch_interval),
    ] {
        if duration.is_zero() {
            found.push(Diagnostic::error(
                format!("{path}.{key}"),
                "must be longer than zero",
            ));
        }
    }
}

fn check_trusted_proxy_user(
    config: &Config,
    path: &str,
    provider: &AuthProvider,
    found: &mut Vec<Diagnostic>,
) {
    for key in jwt_only_keys_set(provider) {
        let kinds = match key {
            "claim_headers" | "groups_claim" => "kind = \"jwt\" or \"oidc\"",
            _ => "kind = \"jwt\"",
        };
        found.push(Diagnostic::error(
            format!("{path}.{key}"),
            format!("`{key}` applies to {kinds} only: a forwarded user name has no claims"),
        ));
    }
    match &provider.trusted_peers {
        Some(peers) => check_trusted_peers(path, peers, found),
        None if config.trust.proxies.is_empty() => found.push(
            Diagnostic::warning(
                path,
                "neither trusted_peers nor trust.proxies names a peer, so no request can carry \
                 a trusted user: every request on its routes gets 401",
            )
            .with_help(
                "set trusted_peers to the address of the proxy that sets \
                 trust.remote_user_header, e.g. trusted_peers = [\"127.0.0.1/32\"]",
            ),
        ),
        None => {
            let everyone = config
                .trust
                .proxies
                .iter()
                .find(|entry| parse_cidr(entry).is_some_and(|net| net.prefix_len() == 0));
            if let Some(entry) = everyone {
                found.push(
                    Diagnostic::error(
                        path,
                        format!(
                            "believes the user from trust.proxies, which holds {entry:?}: any \
                             client could log in as anyone by sending the remote-user header"
                        ),
                    )
                    .with_help(
                        "set trusted_peers to the forward-auth proxy's address, e.g. \
                         trusted_peers = [\"10.0.0.5/32\"]",
                    ),
                );
            }
        }
    }
}

/// The peers whose remote-user header a forward-auth provider believes: whoever is in
/// them can log in as anyone, so a range holding every address is refused.
fn check_trusted_peers(path: &str, peers: &[String], found: &mut Vec<Diagnostic>) {
    if peers.is_empty() {
        found.push(Diagnostic::warning(
            format!("{path}.trusted_peers"),
            "is empty: no peer's user is believed, so every request on its routes gets 401",
        ));
    }
    for (index, entry) in peers.iter().enumerate() {
        let key = format!("{path}.trusted_peers[{index}]");
        match parse_cidr(entry) {
            None => found.push(
                Diagnostic::error(key, format!("{entry:?} is not an IP address or CIDR range"))
                    .with_help("write it like \"127.0.0.1/32\", \"10.0.0.5\" or \"::1\""),
            ),
            Some(net) if net.prefix_len() == 0 => found.push(
                Diagnostic::error(
                    key,
                    format!(
                        "{entry:?} believes every peer: any client could log in as anyone by \
                         sending the remote-user header"
                    ),
                )
                .with_help("list only the forward-auth proxy's address, e.g. \"10.0.0.5/32\""),
            ),
            Some(_) => {}
        }
    }
}
