//! The header names the gateway's policy is made of (see DESIGN.md, "Headers").
//!
//! Validation uses them to refuse or warn about names in the file; compile turns them
//! into one precomputed lookup for the request path (`proxy::headers::HeaderClasses`).

/// Hop-by-hop headers (RFC 9110 §7.6.1 plus the common non-standard ones): they describe
/// one connection and are never forwarded. `upgrade` is re-added on WebSocket handshakes.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers through which a peer speaks for the client: believed only from trusted proxies.
pub const FORWARDING: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-prefix",
    "x-forwarded-port",
    "x-real-ip",
];

/// Request headers about this hop that the gateway replaces or answers itself: the
/// upstream gets its own `Host`, and `Expect: 100-continue` is answered by the gateway.
pub const GATEWAY_HOP: &[&str] = &["host", "expect"];

/// Credentials: forwarded as part of the standard set, but never through a route's
/// allowlist (where they would suggest a policy the gateway does not have).
pub const CREDENTIALS: &[&str] = &["authorization", "cookie"];

/// Client request headers forwarded on every route: what browsers, HTTP clients,
/// Streamlit's front end and FastAPI apps rely on. Any other client header is dropped
/// unless the route lists it in `forward_client_headers`. (`Expect: 100-continue` is
/// answered by the gateway itself, so it is not forwarded.)
pub const STANDARD_REQUEST: &[&str] = &[
    "accept",
    "accept-encoding",
    "accept-language",
    "authorization",
    "cache-control",
    "content-encoding",
    "content-language",
    "content-length",
    "content-type",
    "cookie",
    "dnt",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "origin",
    "pragma",
    "priority",
    "range",
    "referer",
    "sec-ch-ua",
    "sec-ch-ua-mobile",
    "sec-ch-ua-platform",
    "sec-fetch-dest",
    "sec-fetch-mode",
    "sec-fetch-site",
    "sec-fetch-user",
    "sec-websocket-extensions",
    "sec-websocket-key",
    "sec-websocket-protocol",
    "sec-websocket-version",
    "traceparent",
    "tracestate",
    "upgrade-insecure-requests",
    "user-agent",
    "x-csrf-token",
    "x-csrftoken",
    "x-requested-with",
    "x-xsrf-token",
    "x-xsrftoken",
];

/// Identity headers the gateway itself sets after an auth check; a client's copies are
/// stripped on every route.
pub const GATEWAY_IDENTITY: &[&str] = &["x-fluxlit-sub", "x-fluxlit-scope"];

/// Why a name may not appear in `forward_client_headers`, if it may not.
pub fn forbidden_in_allowlist(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    let name = name.as_str();
    if CREDENTIALS.contains(&name) {
        Some("a credential header: its forwarding is the auth policy's, not an allowlist's")
    } else if HOP_BY_HOP.contains(&name) {
        Some("a hop-by-hop header: it describes one connection and is never forwarded")
    } else if FORWARDING.contains(&name) {
        Some("a forwarding header: it is set by the gateway and believed only from trusted proxies")
    } else if name == "host" {
        Some("the upstream's Host is set by the gateway")
    } else if name == "expect" {
        Some("Expect: 100-continue is answered by the gateway itself")
    } else if GATEWAY_IDENTITY.contains(&name) {
        Some("an identity header the gateway sets itself")
    } else {
        None
    }
}
