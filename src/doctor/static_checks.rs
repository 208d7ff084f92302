//! Doctor checks on the config alone: no files, no environment, no network.
//!
//! Each id below is a stable name that the README's table documents.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use url::Url;

use super::{Finding, Severity};
use crate::config::Config;
use crate::config::model::{AuthProvider, ProviderKind, StoreRef, oidc_defaults};
use crate::config::validate::{normalize_prefix, parse_cidr};

/// A route lists `authorization`, `cookie`, a hop-by-hop, forwarding or identity header
/// (reported by validation, which is the source of this check).
pub const FORWARD_CLIENT_HEADERS: &str = "forward_client_headers";
/// `allow_unverified_id_token_for_custom_oidc = true` (reported by validation too).
pub const UNVERIFIED_ID_TOKEN: &str = "unverified_id_token";
/// A validation warning no doctor check covers.
pub const CONFIG_WARNING: &str = "config_warning";
pub const PUBLIC_BASE_URL_PATH: &str = "public_base_url_path";
pub const UPSTREAM_BASE_PATH: &str = "upstream_base_path";
pub const TRUST_ALL_PROXIES: &str = "trust_all_proxies";
pub const TRUST_PUBLIC_PROXIES: &str = "trust_public_proxies";
pub const PLAIN_HTTP_UPSTREAM: &str = "plain_http_upstream";
pub const ADMIN_NOT_LOOPBACK: &str = "admin_not_loopback";
pub const SECURITY_HEADERS_OFF: &str = "security_headers_off";
pub const LONG_LEEWAY: &str = "long_leeway";
pub const LONG_ACCESS_TOKEN_TTL: &str = "long_access_token_ttl";
pub const MEMORY_STORE: &str = "memory_store";
pub const IDENTITY_KEY_GENERATED: &str = "identity_key_generated";
pub const EXCHANGE_REACHABLE_BY_BROWSERS: &str = "exchange_reachable_by_browsers";
/// A forward-auth provider exists: the proxy in front must strip the remote-user header
/// its own clients send (the gateway cannot see whether it does).
pub const FORWARD_AUTH_HEADER_MUST_BE_STRIPPED: &str = "forward_auth_header_must_be_stripped";
/// Rate limits are in effect behind a proxy that `trust.proxies` does not name: every
/// client is seen as the proxy and shares its bucket.
pub const RATE_LIMIT_KEYED_ON_PROXY: &str = "rate_limit_keyed_on_proxy";

/// Longer than this, a leeway keeps expired tokens working noticeably long.
pub const MAX_LEEWAY: Duration = Duration::from_secs(60);
/// Longer than this, a stolen access token is useful for too long.
pub const MAX_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Address ranges that are not reachable from the internet: loopback, RFC 1918, link
/// local, carrier-grade NAT, and their IPv6 counterparts.
const NON_PUBLIC: &[&str] = &[
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

/// Whether the whole of `net` lies in loopback or private address space.
pub fn is_non_public_net(net: &IpNet) -> bool {
    NON_PUBLIC
        .iter()
        .filter_map(|range| range.parse::<IpNet>().ok())
        .any(|range| range.contains(net))
}

pub fn is_non_public_ip(ip: IpAddr) -> bool {
    is_non_public_net(&IpNet::from(ip))
}

/// Every static finding for `config`.
pub fn check(config: &Config) -> Vec<Finding> {
    let mut found = Vec::new();
    check_public_base_path(config, &mut found);
    check_trust(config, &mut found);
    check_rate_limits_behind_proxy(config, &mut found);
    check_upstreams(config, &mut found);
    check_server(config, &mut found);
    check_providers(config, &mut found);
    found
}

/// `b` is `a` or below it, on segment boundaries (`/app/x` is below `/app`, `/apps` is not).
fn is_at_or_below(a: &str, b: &str) -> bool {
    a == "/" || b == a || b.strip_prefix(a).is_some_and(|rest| rest.starts_with('/'))
}

/// With `public_base_url = "https://host/app"` users reach the gateway at `/app/...`
/// only. The gateway does not strip that path: routes see it, so a route outside it is
/// never reached, and each upstream must know the path it is served under.
fn check_public_base_path(config: &Config, found: &mut Vec<Finding>) {
    let Some(base) = config.server.public_base_url.as_deref() else {
        return;
    };
    let Ok(url) = Url::parse(base) else { return };
    let base_path = normalize_prefix(url.path());
    if base_path == "/" {
        return;
    }
    // The route that gets `/app` itself: the longest prefix at or above it.
    let catcher = config
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| is_at_or_below(normalize_prefix(&r.path_prefix), base_path))
        .max_by_key(|(_, r)| normalize_prefix(&r.path_prefix).len())
        .map(|(index, _)| index);

    for (index, route) in config.routes.iter().enumerate() {
        let prefix = normalize_prefix(&route.path_prefix);
        let key = format!("routes[{index}].path_prefix");
        let served_at = if is_at_or_below(base_path, prefix) {
            prefix
        } else if Some(index) == catcher {
            base_path
        } else {
            let moved = format!("{base_path}{}", if prefix == "/" { "" } else { prefix });
            let why = if is_at_or_below(prefix, base_path) {
                format!(
                    "every request under {base_path} goes to a route with a longer prefix \
                     (routes[{}])",
                    catcher.unwrap_or_default()
                )
            } else {
                format!("it is outside {base_path}, the path of server.public_base_url")
            };
            found.push(Finding::new(
                PUBLIC_BASE_URL_PATH,
                Severity::Warning,
                key,
                format!(
                    "route {:?} ({prefix}) is never reached by users of {base}: {why}",
                    route.name
                ),
                format!(
                    "move it under the base path, path_prefix = {moved:?} ({}), or remove \
                     the path from public_base_url if a proxy in front strips it",
                    upstream_settings(&moved, &moved, route.strip_prefix)
                ),
            ));
            continue;
        };
        found.push(Finding::new(
            UPSTREAM_BASE_PATH,
            Severity::Info,
            key,
            format!(
                "upstream {:?} is served under {served_at} and gets {}",
                route.upstream,
                if route.strip_prefix && prefix != "/" {
                    format!("{served_at}/... paths without {prefix}")
                } else {
                    format!("{served_at}/... paths as they are")
                }
            ),
            upstream_settings(served_at, prefix, route.strip_prefix),
        ));
    }
}

/// What Streamlit and FastAPI must be told when they are served at `public_path` by a
/// route with `prefix`. Streamlit serves its pages at the path it receives. uvicorn's
/// `--root-path` prepends itself to every path, so it belongs only with a route that
/// strips its prefix; without stripping, FastAPI's routes carry the prefix themselves.
fn upstream_settings(public_path: &str, prefix: &str, strip_prefix: bool) -> String {
    let stripped = strip_prefix && prefix != "/";
    let received = if stripped {
        public_path.strip_prefix(prefix).unwrap_or(public_path)
    } else {
        public_path
    };
    let base_url_path = received.trim_matches('/');
    let fastapi = if stripped {
        let routes = if received.is_empty() { "/" } else { received };
        format!(
            "a FastAPI upstream runs with uvicorn --root-path {prefix} and declares its \
             routes under {routes:?}"
        )
    } else {
        format!(
            "a FastAPI upstream declares its routes under {public_path:?} \
             (APIRouter(prefix=...)) and sets no root_path"
        )
    };
    format!("a Streamlit upstream needs server.baseUrlPath = {base_url_path:?}; {fastapi}")
}

fn check_trust(config: &Config, found: &mut Vec<Finding>) {
    for (index, entry) in config.trust.proxies.iter().enumerate() {
        let Some(net) = parse_cidr(entry) else {
            continue;
        };
        let key = format!("trust.proxies[{index}]");
        if net.prefix_len() == 0 {
            found.push(Finding::new(
                TRUST_ALL_PROXIES,
                Severity::Error,
                key,
                format!(
                    "{entry:?} trusts every peer: anyone can set X-Forwarded-* and the request \
                     id"
                ),
                "list only the addresses of your own proxies or load balancers, e.g. \
                 \"10.0.0.5/32\"",
            ));
        } else if !is_non_public_net(&net) {
            found.push(Finding::new(
                TRUST_PUBLIC_PROXIES,
                Severity::Warning,
                key,
                format!(
                    "{entry:?} includes public addresses: peers there may speak for the client"
                ),
                "trust only private or loopback ranges your proxies use, or the exact \
                 address of a hosted load balancer",
            ));
        }
    }
}

/// A per-client limit keys on the client address resolved through `trust.proxies`. With
/// a proxy in front that the list does not name, that address is the proxy's for every
/// request: all clients share one bucket, and a handful of busy users lock out the rest.
/// The signs of a proxy in front: an https `public_base_url` with no TLS here, or a
/// loopback listener serving a name that is not loopback.
fn check_rate_limits_behind_proxy(config: &Config, found: &mut Vec<Finding>) {
    if !config.trust.proxies.is_empty() {
        return;
    }
    let Some(sign) = proxy_in_front(config) else {
        return;
    };
    let mut limits: Vec<String> = config
        .routes
        .iter()
        .filter(|route| route.rate_limit.is_some())
        .map(|route| format!("route {:?}'s rate_limit", route.name))
        .collect();
    limits.extend(
        config
            .auth
            .providers
            .iter()
            .filter(|(_, provider)| provider.kind == ProviderKind::Oidc)
            .map(|(name, _)| format!("provider {name:?}'s login_rate_limit")),
    );
    if limits.is_empty() {
        return;
    }
    found.push(Finding::new(
        RATE_LIMIT_KEYED_ON_PROXY,
        Severity::Warning,
        "trust.proxies",
        format!(
            "{sign}, but trust.proxies is empty: every client is seen as the proxy and \
             shares one bucket of {}",
            limits.join(", ")
        ),
        "list the proxy's address in trust.proxies (e.g. [\"10.0.0.0/8\"] for an ingress \
         in the cluster network), so each client is limited by its own address",
    ));
}

/// Why the gateway looks like it sits behind a proxy, when it does.
fn proxy_in_front(config: &Config) -> Option<String> {
    let public = config
        .server
        .public_base_url
        .as_deref()
        .and_then(|url| Url::parse(url).ok())?;
    if public.scheme() == "https" && config.server.tls.is_none() {
        return Some(format!(
            "public_base_url is https ({public}) and TLS is not terminated here: a proxy in \
             front does"
        ));
    }
    let loopback_name = match public.host() {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => true,
    };
    (config.server.listen.ip().is_loopback() && !loopback_name).then(|| {
        format!(
            "the listener is on loopback ({}) and users reach it as {public}: a proxy on \
             this host forwards to it",
            config.server.listen
        )
    })
}

fn check_upstreams(config: &Config, found: &mut Vec<Finding>) {
    for (name, upstream) in &config.upstreams {
        let Some(url) = upstream.url.as_deref().and_then(|u| Url::parse(u).ok()) else {
            continue;
        };
        if url.scheme() != "http" {
            continue;
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            // Names are judged by `doctor` online, on the address it connects to.
            _ => continue,
        };
        if !is_non_public_ip(ip) {
            found.push(plain_http_upstream(name, &ip.to_string()));
        }
    }
}

/// An upstream reached over plain http at a public address.
pub(super) fn plain_http_upstream(name: &str, address: &str) -> Finding {
    Finding::new(
        PLAIN_HTTP_UPSTREAM,
        Severity::Warning,
        format!("upstreams.{name}.url"),
        format!(
            "upstream {name:?} is reached over plain http at the public address {address}: \
             requests, cookies and tokens cross the network unencrypted"
        ),
        "run the upstream on loopback or a private network next to the gateway",
    )
}

fn check_server(config: &Config, found: &mut Vec<Finding>) {
    if let Some(admin) = &config.admin {
        let ip = admin.listen.ip();
        if !ip.is_loopback() {
            let reach = if ip.is_unspecified() {
                "every network interface".to_owned()
            } else {
                ip.to_string()
            };
            found.push(Finding::new(
                ADMIN_NOT_LOOPBACK,
                Severity::Warning,
                "admin.listen",
                format!(
                    "the admin listener ({}) is open on {reach}: /snapshot shows the config",
                    admin.listen
                ),
                "listen on loopback, e.g. \"127.0.0.1:9901\", and scrape it from the same host",
            ));
        }
    }
    // A shared login store is the sign of several replicas; each would sign with a key of
    // its own, and an app would see assertions from keys it may not have fetched.
    let authenticated_routes = config.routes.iter().any(|route| route.auth.is_some());
    let shared_store = config
        .auth
        .providers
        .values()
        .any(|provider| match &provider.store {
            None => false,
            Some(StoreRef::Inline(text)) => text != oidc_defaults::STORE,
            Some(StoreRef::Secret(_)) => true,
        });
    if authenticated_routes && shared_store && config.identity.signing_key.is_none() {
        found.push(Finding::new(
            IDENTITY_KEY_GENERATED,
            Severity::Info,
            "identity.signing_key",
            "the identity assertion is signed with a key generated at start: with several \
             replicas (the shared login store says so) each publishes its own key, and a \
             restart retires it",
            "with several replicas, give them one key: signing_key = { file = \"identity.pem\" } \
             (openssl genpkey -algorithm ed25519 -out identity.pem)",
        ));
    }
    if !config.server.security_headers.is_enabled() {
        found.push(Finding::new(
            SECURITY_HEADERS_OFF,
            Severity::Warning,
            "server.security_headers",
            "security response headers are off: no nosniff, frame-ancestors, referrer policy \
             or HSTS",
            "set security_headers = true (upstream headers of the same name still win)",
        ));
    }
    for (index, route) in config.routes.iter().enumerate() {
        if route
            .security_headers
            .as_ref()
            .is_some_and(|headers| !headers.is_enabled())
        {
            found.push(Finding::new(
                SECURITY_HEADERS_OFF,
                Severity::Warning,
                format!("routes[{index}].security_headers"),
                format!(
                    "route {:?} sends no security response headers: no nosniff, \
                     frame-ancestors, referrer policy or HSTS",
                    route.name
                ),
                "remove security_headers = false from the route, or set only the values it \
                 needs changed, e.g. security_headers = { frame_ancestors = \"https://portal.example\" }",
            ));
        }
    }
}

fn check_providers(config: &Config, found: &mut Vec<Finding>) {
    for (name, provider) in &config.auth.providers {
        let path = format!("auth.providers.{name}");
        if matches!(provider.kind, ProviderKind::Jwt | ProviderKind::Oidc)
            && provider.leeway.get() > MAX_LEEWAY
        {
            found.push(Finding::new(
                LONG_LEEWAY,
                Severity::Warning,
                format!("{path}.leeway"),
                format!(
                    "{} of leeway keeps expired tokens working for that long",
                    provider.leeway
                ),
                "keep leeway at 60s or less and synchronise clocks with NTP",
            ));
        }
        if provider.kind == ProviderKind::TrustedProxyUser {
            found.push(forward_auth_reminder(config, name, provider));
        }
        if provider.kind != ProviderKind::Oidc {
            continue;
        }
        if let Some(ttl) = provider.access_token_ttl
            && ttl.get() > MAX_ACCESS_TOKEN_TTL
        {
            found.push(Finding::new(
                LONG_ACCESS_TOKEN_TTL,
                Severity::Warning,
                format!("{path}.access_token_ttl"),
                format!("minted access tokens live {ttl}: a leaked one is useful that long"),
                "keep access_token_ttl at 1h or less (15m is the default); users log in again",
            ));
        }
        let memory = match &provider.store {
            None => true,
            Some(StoreRef::Inline(text)) => text == "memory",
            Some(StoreRef::Secret(_)) => false,
        };
        if memory {
            found.push(Finding::new(
                MEMORY_STORE,
                Severity::Info,
                format!("{path}.store"),
                "logins and auth codes live in this process's memory: fine for one gateway, \
                 but replicas behind a load balancer would not see each other's logins",
                "with several replicas, share a Redis: store = \"redis://host:6379/0\"",
            ));
        }
        if provider.exchange_secret.is_none()
            && let Some(why) = exchange_reachable_by_browsers(config, provider)
        {
            found.push(Finding::new(
                EXCHANGE_REACHABLE_BY_BROWSERS,
                Severity::Warning,
                format!("{path}.exchange_from"),
                format!(
                    "{why}, and no exchange_secret is set: a browser or another host that \
                     arrives from there can redeem an auth code it sees (a script on the page \
                     racing the app's server), by address alone"
                ),
                "set exchange_secret = { env = \"FLUXLIT_EXCHANGE_SECRET\" } (32 random bytes \
                 or more) and send it from the app's server as Authorization: Bearer; narrow \
                 exchange_from to the app server's own addresses",
            ));
        }
        if provider.allow_unverified_id_token_for_custom_oidc {
            found.push(Finding::new(
                UNVERIFIED_ID_TOKEN,
                Severity::Warning,
                format!("{path}.allow_unverified_id_token_for_custom_oidc"),
                "id_tokens of this provider would be believed without a signature check",
                "remove the flag and use an identity provider with discovery (issuer_url)",
            ));
        }
    }
}

/// Why browsers may reach an oidc provider's exchange from an `exchange_from` address,
/// if they may: a range shared with `trust.proxies` (a proxy in front that forwards
/// without `X-Forwarded-For`, or browsers on the proxy's own network, are judged on that
/// address), or one beyond loopback (a shared network of pods or hosts).
fn exchange_reachable_by_browsers(config: &Config, provider: &AuthProvider) -> Option<String> {
    let entries: Vec<&str> = match &provider.exchange_from {
        Some(entries) => entries.iter().map(String::as_str).collect(),
        None => oidc_defaults::EXCHANGE_FROM.to_vec(),
    };
    let nets: Vec<IpNet> = entries.iter().filter_map(|e| parse_cidr(e)).collect();
    let proxies: Vec<IpNet> = config
        .trust
        .proxies
        .iter()
        .filter_map(|entry| parse_cidr(entry))
        .collect();
    let overlaps = |a: &IpNet, b: &IpNet| a.contains(&b.network()) || b.contains(&a.network());
    if let Some((net, proxy)) = nets
        .iter()
        .find_map(|net| proxies.iter().find(|p| overlaps(net, p)).map(|p| (net, p)))
    {
        return Some(format!(
            "exchange_from {net} overlaps trust.proxies {proxy} (a proxy there that forwards \
             a browser without X-Forwarded-For makes it look like the proxy)"
        ));
    }
    nets.iter()
        .find(|net| !is_loopback_net(net))
        .map(|net| format!("exchange_from {net} reaches beyond loopback"))
}

/// Whether the whole of `net` is loopback (`127.0.0.0/8` or within it, `::1`).
fn is_loopback_net(net: &IpNet) -> bool {
    match net {
        IpNet::V4(net) => net.prefix_len() >= 8 && net.network().is_loopback(),
        IpNet::V6(net) => net.prefix_len() == 128 && net.network().is_loopback(),
    }
}

/// Forward auth believes the remote-user header from its trusted peers, so the proxy
/// there must never pass its own clients' copy on: nginx's `proxy_pass` does, unless told
/// otherwise. Nothing in the file can show that it is, so this is a reminder.
fn forward_auth_reminder(config: &Config, name: &str, provider: &AuthProvider) -> Finding {
    let header = &config.trust.remote_user_header;
    let peers = match &provider.trusted_peers {
        Some(peers) => format!("its trusted_peers ({})", peers.join(", ")),
        None => format!("trust.proxies ({})", config.trust.proxies.join(", ")),
    };
    let variable = header.to_ascii_lowercase().replace('-', "_");
    Finding::new(
        FORWARD_AUTH_HEADER_MUST_BE_STRIPPED,
        Severity::Info,
        format!("auth.providers.{name}"),
        format!(
            "provider {name:?} logs in whoever {header} names on a request from {peers}: \
             the proxy there must set or remove {header} on every request it passes on, or \
             a client that sends it is logged in as anyone it likes"
        ),
        format!(
            "in nginx, in every location that proxies to the gateway: \
             proxy_set_header {header} \"\"; (or, with auth_request: \
             auth_request_set $fluxlit_user $upstream_http_{variable}; \
             proxy_set_header {header} $fluxlit_user;)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_boundaries_decide_what_is_below() {
        assert!(is_at_or_below("/app", "/app"));
        assert!(is_at_or_below("/app", "/app/api"));
        assert!(is_at_or_below("/", "/api"));
        assert!(!is_at_or_below("/app", "/apps"));
        assert!(!is_at_or_below("/app/api", "/app"));
    }

    #[test]
    fn loopback_ranges_are_told_apart() {
        for net in ["127.0.0.1/32", "127.0.0.0/8", "127.1.0.0/16", "::1/128"] {
            let net: IpNet = net.parse().unwrap();
            assert!(is_loopback_net(&net), "{net}");
        }
        for net in ["126.0.0.0/7", "10.0.0.0/8", "::/0", "::1/127", "0.0.0.0/0"] {
            let net: IpNet = net.parse().unwrap();
            assert!(!is_loopback_net(&net), "{net}");
        }
    }

    #[test]
    fn private_ranges_are_not_public() {
        for net in ["10.1.0.0/16", "127.0.0.1/32", "fd00::/8", "192.168.1.7/32"] {
            let net: IpNet = net.parse().unwrap();
            assert!(is_non_public_net(&net), "{net}");
        }
        for net in ["8.8.8.8/32", "10.0.0.0/7", "2001:db8::/32", "0.0.0.0/0"] {
            let net: IpNet = net.parse().unwrap();
            assert!(!is_non_public_net(&net), "{net}");
        }
    }

    #[test]
    fn upstream_settings_follow_strip_prefix() {
        assert_eq!(
            upstream_settings("/app", "/", false),
            "a Streamlit upstream needs server.baseUrlPath = \"app\"; a FastAPI upstream \
             declares its routes under \"/app\" (APIRouter(prefix=...)) and sets no root_path"
        );
        let stripped = upstream_settings("/app/api", "/app/api", true);
        assert!(stripped.contains("baseUrlPath = \"\""), "{stripped}");
        assert!(
            stripped.contains("uvicorn --root-path /app/api and declares its routes under \"/\""),
            "{stripped}"
        );
    }
}
