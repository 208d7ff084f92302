//! The header policy of DESIGN.md ("Headers"), applied to one request or response.
//!
//! Requests: hop-by-hop and `Connection`-listed names are dropped; client headers pass
//! only when they are in the standard set or the route's allowlist; forwarding,
//! identity and request id headers pass only from trusted proxies; then the gateway
//! sets `Host`, `X-Forwarded-*` and the request id. HTTP and WebSocket handshakes get
//! the same policy (a handshake keeps `Upgrade`).

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::auth::Identity;
use crate::snapshot::{HeaderPolicy, Route, canonical_ip};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// What the gateway knows about the request beyond its headers.
#[derive(Debug)]
pub struct RequestContext<'a> {
    pub peer: SocketAddr,
    pub peer_trusted: bool,
    /// `http` or `https`: the scheme of the listener the request came in on.
    pub scheme: &'static str,
    /// The authority from an absolute-form or HTTP/2 request target, if any.
    pub uri_authority: Option<&'a str>,
    pub request_id: &'a HeaderValue,
    pub websocket: bool,
    /// The verified identity, when the route has auth.
    pub identity: Option<&'a Identity>,
}

/// Headers for the upstream request, built from the client's.
pub fn upstream_request_headers(
    client: &HeaderMap,
    policy: &HeaderPolicy,
    route: &Route,
    upstream_host: &HeaderValue,
    ctx: &RequestContext<'_>,
) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(client.len() + 6);
    let has_connection = client.contains_key(header::CONNECTION);
    for (name, value) in client {
        let allowed = if policy.standard.contains(name) || route.extra_client_headers.contains(name)
        {
            true
        } else {
            ctx.peer_trusted && policy.trusted_only.contains(name)
        };
        if allowed && !(has_connection && listed_in_connection(client, name)) {
            out.append(name.clone(), value.clone());
        }
    }

    if ctx.websocket {
        out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        out.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    out.insert(header::HOST, upstream_host.clone());

    // X-Forwarded-For: a trusted proxy's chain is extended, anyone else's is replaced.
    let peer_ip = canonical_ip(ctx.peer.ip());
    let forwarded_for = match joined(client, &X_FORWARDED_FOR).filter(|_| ctx.peer_trusted) {
        Some(chain) => format!("{chain}, {peer_ip}"),
        None => peer_ip.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        out.insert(X_FORWARDED_FOR, value);
    }
    if ctx.peer_trusted
        && let Some(forwarded) = joined(client, &header::FORWARDED)
    {
        let element = match peer_ip {
            IpAddr::V4(ip) => format!("for={ip}"),
            IpAddr::V6(ip) => format!("for=\"[{ip}]\""),
        };
        if let Ok(value) = HeaderValue::from_str(&format!("{forwarded}, {element}")) {
            out.insert(header::FORWARDED, value);
        }
    }

    // Proto, Host and Prefix: a trusted proxy's values were copied above; else ours.
    if !out.contains_key(&X_FORWARDED_PROTO) {
        out.insert(X_FORWARDED_PROTO, HeaderValue::from_static(ctx.scheme));
    }
    if !out.contains_key(&X_FORWARDED_HOST) {
        // An absolute-form target's authority wins over Host (RFC 9112 §3.2.2).
        let host = ctx
            .uri_authority
            .and_then(|a| HeaderValue::from_str(a).ok())
            .or_else(|| client.get(header::HOST).cloned());
        if let Some(host) = host {
            out.insert(X_FORWARDED_HOST, host);
        }
    }
    if !out.contains_key(&X_FORWARDED_PREFIX)
        && let Some(prefix) = &policy.forwarded_prefix
    {
        out.insert(X_FORWARDED_PREFIX, prefix.clone());
    }
    out.insert(policy.request_id.clone(), ctx.request_id.clone());
    if let Some(identity) = ctx.identity {
        for (name, value) in &identity.headers {
            out.insert(name.clone(), value.clone());
        }
    }
    out
}

/// All values of a header, comma-joined, if there are any.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    let first = values.next()?;
    Some(values.fold(first.to_owned(), |mut all, v| {
        all.push_str(", ");
        all.push_str(v);
        all
    }))
}

/// Whether `Connection` lists `name` (it then describes this hop only).
fn listed_in_connection(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|value| {
        value
            .to_str()
            .unwrap_or("")
            .split(',')
            .any(|token| token.trim().eq_ignore_ascii_case(name.as_str()))
    })
}

/// Whether `Connection` lists `token` (e.g. `upgrade`).
pub fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|value| {
        value
            .to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

/// The client's address: the peer, or — when the peer is a trusted proxy — the
/// right-most address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, policy: &HeaderPolicy) -> IpAddr {
    let peer = canonical_ip(peer);
    if !policy.is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical_ip(ip);
                if !policy.is_trusted(client) {
                    return client;
                }
            }
            // An unparseable hop ends the walk: nothing to its left can be vouched for.
            Err(_) => return client,
        }
    }
    client
}

/// Removes hop-by-hop headers from an upstream response. A `101 Switching Protocols`
/// keeps `Connection` and `Upgrade`: they are the handshake's answer.
pub fn clean_response_headers(headers: &mut HeaderMap, switching_protocols: bool) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| !(switching_protocols && name == header::UPGRADE))
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in crate::header_sets::HOP_BY_HOP {
        if switching_protocols && (*name == "connection" || *name == "upgrade") {
            continue;
        }
        headers.remove(*name);
    }
}

/// Adds the gateway's response headers: the request id, and each security header the
/// upstream did not set itself.
pub fn add_response_headers(
    headers: &mut HeaderMap,
    policy: &HeaderPolicy,
    request_id: &HeaderValue,
) {
    headers.insert(policy.request_id.clone(), request_id.clone());
    for (name, value) in &policy.security_headers {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
}
