//! The header policy of DESIGN.md ("Headers"), applied to one request or response.
//!
//! Requests: hop-by-hop and `Connection`-listed names are dropped; client headers pass
//! only when they are in the standard set or the route's allowlist; forwarding and
//! request id headers pass only from trusted proxies; identity headers (the gateway's
//! own and the forward-auth user) from nobody; then the gateway sets `Host`,
//! `X-Forwarded-*` and the request id. HTTP and WebSocket handshakes get the same policy
//! (a handshake keeps `Upgrade`). The client headers dropped for being on no list are
//! reported to the caller, which makes them visible ([`unlisted`]).

mod classes;
pub mod unlisted;

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue, ValueIter};
use ipnet::IpNet;

pub use classes::{HeaderClass, HeaderClasses};

use super::route::{Route, SecurityHeaderList};
use crate::auth::Identity;
use crate::auth::oidc::session::{HOST_SESSION_COOKIE, SESSION_COOKIE};
use crate::http1::HeaderLines;
use crate::http1::client::Fields;
use crate::http1::server::Reply;
use crate::peer::canonical_ip;

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

/// Where the policy writes a request's headers for its upstream: the engine's request
/// head ([`Fields`], bytes written once) or, for the built-in echo upstream, a map.
/// Only appended to: the policy writes each name once, the client's or the gateway's.
pub trait UpstreamHeaders {
    fn append(&mut self, name: &HeaderName, value: &HeaderValue);
}

impl UpstreamHeaders for Fields {
    fn append(&mut self, name: &HeaderName, value: &HeaderValue) {
        Fields::append(self, name, value);
    }
}

impl UpstreamHeaders for HeaderMap {
    fn append(&mut self, name: &HeaderName, value: &HeaderValue) {
        HeaderMap::append(self, name.clone(), value.clone());
    }
}

/// Headers for the upstream request, built from the client's into `out`. `unlisted` is
/// told each client header dropped for being on no list: in no class of the policy, not
/// in the route's allowlist and not listed in `Connection` (once per header line). Those
/// are the ones an app may expect and an operator can let through; what the policy
/// drops on purpose (hop-by-hop, forwarding or identity headers) is not reported.
/// Framing fields are not written: the engine's client writes the one the body needs.
pub fn upstream_request_headers(
    client: &HeaderMap,
    policy: &HeaderPolicy,
    route: &Route,
    upstream_host: &HeaderValue,
    ctx: &RequestContext<'_>,
    out: &mut impl UpstreamHeaders,
    unlisted: &mut dyn FnMut(&HeaderName),
) {
    let (connection, client_host) = ConnectionList::scan(client);
    // Which of the forwarding headers a trusted proxy sent, copied as they are.
    let (mut sent_proto, mut sent_host, mut sent_prefix) = (false, false, false);
    for (name, value) in client {
        let class = policy.classes.get(name);
        let allowed = match class {
            Some(HeaderClass::Standard) => *name != header::CONTENT_LENGTH,
            Some(HeaderClass::TrustedOnly) => {
                // Set below from the trusted chain (or ours), never copied.
                ctx.peer_trusted
                    && *name != X_FORWARDED_FOR
                    && *name != header::FORWARDED
                    && *name != policy.request_id
            }
            Some(HeaderClass::Identity | HeaderClass::Hop) => false,
            // `compile` keeps every name with a class out of a route's allowlist.
            None => route.extra_client_headers.contains(name),
        };
        // A name `Connection` lists describes this hop only: neither forwarded nor
        // reported. (One call site: the check stays inlined in the loop.)
        if (allowed || class.is_none()) && !connection.lists(name.as_str()) {
            if allowed {
                if name == header::COOKIE {
                    if let Some(value) = without_session_cookie(value) {
                        out.append(&header::COOKIE, &value);
                    }
                    continue;
                }
                if class == Some(HeaderClass::TrustedOnly) {
                    sent_proto |= *name == X_FORWARDED_PROTO;
                    sent_host |= *name == X_FORWARDED_HOST;
                    sent_prefix |= *name == X_FORWARDED_PREFIX;
                }
                out.append(name, value);
            } else {
                unlisted(name);
            }
        }
    }

    if ctx.websocket {
        out.append(&header::CONNECTION, &HeaderValue::from_static("upgrade"));
        out.append(&header::UPGRADE, &HeaderValue::from_static("websocket"));
    }
    out.append(&header::HOST, upstream_host);

    // X-Forwarded-For: a trusted proxy's chain is extended, anyone else's is replaced.
    let peer_ip = canonical_ip(ctx.peer.ip());
    let chain = ctx
        .peer_trusted
        .then(|| joined(client, &X_FORWARDED_FOR))
        .flatten();
    let forwarded_for = match chain {
        Some(mut chain) => {
            // Writing to a `String` cannot fail.
            let _ = write!(chain, ", {peer_ip}");
            HeaderValue::try_from(chain).ok()
        }
        None => ip_header_value(peer_ip),
    };
    if let Some(value) = forwarded_for {
        out.append(&X_FORWARDED_FOR, &value);
    }
    // `Forwarded` only from a trusted proxy, extended with its peer; one that cannot be
    // read as text is dropped rather than passed on unextended.
    if ctx.peer_trusted
        && let Some(mut forwarded) = joined(client, &header::FORWARDED)
    {
        let _ = match peer_ip {
            IpAddr::V4(ip) => write!(forwarded, ", for={ip}"),
            IpAddr::V6(ip) => write!(forwarded, ", for=\"[{ip}]\""),
        };
        if let Ok(value) = HeaderValue::try_from(forwarded) {
            out.append(&header::FORWARDED, &value);
        }
    }

    // Proto, Host and Prefix: a trusted proxy's values were copied above; else ours.
    if !sent_proto {
        out.append(&X_FORWARDED_PROTO, &HeaderValue::from_static(ctx.scheme));
    }
    if !sent_host {
        // The host of `public_base_url` when the file names one: a client's `Host` is
        // whatever it chose to send, and apps build absolute links from this header.
        // Else an absolute-form target's authority wins over Host (RFC 9112 §3.2.2).
        // An empty `Host` (RFC 9112 §3.2: a target without authority) or none at all
        // (HTTP/1.0) names no host: the upstream gets the listener's address rather
        // than an empty value it would build broken links from.
        let authority = ctx
            .uri_authority
            .and_then(|a| HeaderValue::from_str(a).ok());
        let host = match &policy.forwarded_host {
            Some(host) => host,
            None => match authority.as_ref().or(client_host) {
                Some(host) if !host.is_empty() => host,
                _ => &policy.listen_host,
            },
        };
        out.append(&X_FORWARDED_HOST, host);
    }
    if let Some(prefix) = &policy.forwarded_prefix
        && !sent_prefix
    {
        out.append(&X_FORWARDED_PREFIX, prefix);
    }
    out.append(&policy.request_id, ctx.request_id);
    if let Some(identity) = ctx.identity {
        for (index, (name, value)) in identity.headers.iter().enumerate() {
            // A name set twice keeps its last value, as an insert would.
            if !identity.headers[index + 1..]
                .iter()
                .any(|(later, _)| later == name)
            {
                out.append(name, value);
            }
        }
    }
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

/// Whether `Connection` lists `token` (e.g. `upgrade`).
pub fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    lists(headers.get_all(header::CONNECTION).iter(), token)
}

/// Whether these `Connection` values list `token`; a listed name describes this hop
/// only.
fn lists(connection: ValueIter<'_, HeaderValue>, token: &str) -> bool {
    tokens(connection).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// A request's `Connection` values, read once for all its headers: the lengths of the
/// names they list rule most headers out without splitting the list again.
struct ConnectionList<'a> {
    headers: &'a HeaderMap,
    /// The `Connection` value when there is exactly one (the usual case).
    only: Option<&'a HeaderValue>,
    /// Bit `n` for a listed name of length `n` (63 and longer share bit 63).
    lengths: u64,
}

impl<'a> ConnectionList<'a> {
    #[cfg(test)]
    fn of(headers: &'a HeaderMap) -> Self {
        Self::scan(headers).0
    }

    /// The list, and the first `Host` value, from one pass over the headers: a lookup by
    /// name hashes the name, which costs more than comparing a few standard names.
    fn scan(headers: &'a HeaderMap) -> (Self, Option<&'a HeaderValue>) {
        let (mut values, mut last, mut lengths) = (0, None, 0);
        let mut host = None;
        for (name, value) in headers {
            if name == header::CONNECTION {
                values += 1;
                last = Some(value);
                lengths = tokens_of(value).fold(lengths, |bits, t| bits | length_bit(t.len()));
            } else if name == header::HOST {
                host = host.or(Some(value));
            }
        }
        let only = last.filter(|_| values == 1);
        (
            Self {
                headers,
                only,
                lengths,
            },
            host,
        )
    }

    fn lists(&self, name: &str) -> bool {
        if self.lengths & length_bit(name.len()) == 0 {
            return false;
        }
        match self.only {
            Some(value) => tokens_of(value).any(|t| t.eq_ignore_ascii_case(name.as_bytes())),
            None => connection_has(self.headers, name),
        }
    }
}

const fn length_bit(len: usize) -> u64 {
    1 << if len < 63 { len } else { 63 }
}

/// The options these `Connection` values list, as bytes: a value holding obs-text (bytes
/// above 0x7F) is not valid `str`, and skipping it would forward every name it lists.
fn tokens<'a>(connection: ValueIter<'a, HeaderValue>) -> impl Iterator<Item = &'a [u8]> {
    connection.flat_map(tokens_of)
}

/// The options one `Connection` value lists.
fn tokens_of(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
}

/// The client's address: the peer, or — when the peer is a trusted proxy — the
/// right-most address in `X-Forwarded-For` that is not itself a trusted proxy.
/// A `Cookie` header without the gateway's session cookie (which would let an upstream
/// act as the user), or `None` when nothing else is left. Other cookies pass untouched.
fn without_session_cookie(value: &HeaderValue) -> Option<HeaderValue> {
    let bytes = value.as_bytes();
    // Most requests carry no session cookie: one scan, no allocation.
    if !bytes
        .windows(SESSION_COOKIE.len())
        .any(|w| w == SESSION_COOKIE.as_bytes())
    {
        return Some(value.clone());
    }
    let kept: Vec<&[u8]> = bytes
        .split(|byte| *byte == b';')
        .filter(|pair| {
            let name = pair
                .split(|byte| *byte == b'=')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            name != SESSION_COOKIE.as_bytes() && name != HOST_SESSION_COOKIE.as_bytes()
        })
        .map(<[u8]>::trim_ascii)
        .filter(|pair| !pair.is_empty())
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(&kept.join(&b"; "[..])).ok()
}

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

/// The response's headers as the client gets them, from one pass over what the
/// upstream sent ([`Reply::lines`], never turned into a map): hop-by-hop lines and the
/// names `Connection` lists are dropped (a `101 Switching Protocols` keeps `Connection`
/// and `Upgrade`: they are the handshake's answer), so are the framing fields (the
/// engine frames the body from the length the upstream's head was read by) and the
/// request id header (the gateway's own is set). Then the gateway's headers are added:
/// the request id, and each security header (and HSTS over HTTPS) the upstream did not
/// set itself — the matched route's list, else the server's. With `no_referrer` (the
/// page an OIDC login lands on, its one-time code in the URL) `Referrer-Policy` is
/// `no-referrer` whatever the upstream or the list says.
///
/// What the gateway adds goes into [`Reply::added`] as bytes, except where the
/// response's own map (a response the gateway made) has the name already.
pub fn finish_response<B>(
    reply: &mut Reply<B>,
    policy: &HeaderPolicy,
    route: Option<&Route>,
    request_id: &HeaderValue,
    over_https: bool,
    no_referrer: bool,
) {
    let security = route.map_or(&policy.security_headers, |route| &route.security_headers);
    let hsts = policy.hsts.as_ref().filter(|_| over_https);
    let switching = reply.response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    // Bit `i`: the upstream set `security[i]` itself. (The lists have a handful of
    // names; one past the 64th is looked for in the lines instead.)
    let mut upstream_set = 0u64;
    let mut upstream_hsts = false;
    if !reply.lines.is_empty() {
        let listed = ListedNames::scan(&reply.lines);
        let request_id_name = policy.request_id.as_str().as_bytes();
        reply.lines.retain(|name, _| {
            if let Some(index) = hop_by_hop_position(name) {
                return switching && (index == CONNECTION_INDEX || index == UPGRADE_INDEX);
            }
            if is_framing_field(name)
                || name.eq_ignore_ascii_case(request_id_name)
                || listed.lists(name)
                || no_referrer && name.eq_ignore_ascii_case(b"referrer-policy")
            {
                return false;
            }
            if let Some(index) = security
                .iter()
                .position(|(listed, _)| name.eq_ignore_ascii_case(listed.as_str().as_bytes()))
            {
                upstream_set |= 1u64.checked_shl(index as u32).unwrap_or(0);
            }
            upstream_hsts |= name.eq_ignore_ascii_case(b"strict-transport-security");
            true
        });
    }
    let Reply {
        response,
        lines,
        added,
        ..
    } = reply;
    let own = response.headers_mut();
    // A proxied response's map is empty: nothing to look up, each header is appended.
    let own_is_empty = own.is_empty();
    // Room for all the gateway may add, at once: grown line by line, the bytes would
    // be moved on most lines.
    let mut adding = Fields::line_len(&policy.request_id, request_id) + security.line_bytes();
    if let Some(hsts) = hsts {
        adding += Fields::line_len(&header::STRICT_TRANSPORT_SECURITY, hsts);
    }
    if no_referrer {
        adding += Fields::line_len(
            &header::REFERRER_POLICY,
            &HeaderValue::from_static("no-referrer"),
        );
    }
    added.reserve(adding);
    if own_is_empty || !own.contains_key(&policy.request_id) {
        added.append(&policy.request_id, request_id);
    } else {
        own.insert(policy.request_id.clone(), request_id.clone());
    }
    let no_referrer_value = HeaderValue::from_static("no-referrer");
    for (index, (name, value)) in security.iter().enumerate() {
        let set_upstream = match 1u64.checked_shl(index as u32) {
            Some(bit) => upstream_set & bit != 0,
            None => lines
                .iter()
                .any(|(line, _)| line.eq_ignore_ascii_case(name.as_str().as_bytes())),
        };
        if set_upstream || no_referrer && name == header::REFERRER_POLICY {
            continue;
        }
        if own_is_empty || !own.contains_key(name) {
            added.append(name, value);
        }
    }
    if no_referrer {
        if own_is_empty || !own.contains_key(header::REFERRER_POLICY) {
            added.append(&header::REFERRER_POLICY, &no_referrer_value);
        } else {
            own.insert(header::REFERRER_POLICY, no_referrer_value);
        }
    }
    if let Some(hsts) = hsts
        && !upstream_hsts
        && (own_is_empty || !own.contains_key(header::STRICT_TRANSPORT_SECURITY))
    {
        added.append(&header::STRICT_TRANSPORT_SECURITY, hsts);
    }
}

/// `Content-Length` or `Transfer-Encoding`, in any case.
fn is_framing_field(name: &[u8]) -> bool {
    match name.len() {
        14 => name.eq_ignore_ascii_case(b"content-length"),
        17 => name.eq_ignore_ascii_case(b"transfer-encoding"),
        _ => false,
    }
}

/// The names an upstream response's `Connection` lines list, besides `close` and the
/// hop-by-hop names (dropped anyway): usually none, so nothing is allocated.
struct ListedNames {
    names: Vec<Vec<u8>>,
    /// Bit `n` for a listed name of length `n`: most names are ruled out by it.
    lengths: u64,
}

impl ListedNames {
    fn scan(lines: &HeaderLines) -> Self {
        let mut listed = Self {
            names: Vec::new(),
            lengths: 0,
        };
        for (name, value) in lines.iter() {
            if hop_by_hop_position(name) != Some(CONNECTION_INDEX) {
                continue;
            }
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if !token.is_empty()
                    && !token.eq_ignore_ascii_case(b"close")
                    && !is_hop_by_hop(token)
                {
                    listed.lengths |= length_bit(token.len());
                    listed.names.push(token.to_vec());
                }
            }
        }
        listed
    }

    fn lists(&self, name: &[u8]) -> bool {
        self.lengths & length_bit(name.len()) != 0
            && self
                .names
                .iter()
                .any(|listed| listed.eq_ignore_ascii_case(name))
    }
}

/// Where a name (any case) is in [`crate::header_sets::HOP_BY_HOP`], if it is.
fn hop_by_hop_position(name: &[u8]) -> Option<usize> {
    if HOP_BY_HOP_LENGTHS & length_bit(name.len()) == 0 {
        return None;
    }
    crate::header_sets::HOP_BY_HOP
        .iter()
        .position(|hop| name.eq_ignore_ascii_case(hop.as_bytes()))
}

/// Whether a `Connection` token is a hop-by-hop name, in any case.
fn is_hop_by_hop(token: &[u8]) -> bool {
    HOP_BY_HOP_LENGTHS & length_bit(token.len()) != 0
        && crate::header_sets::HOP_BY_HOP
            .iter()
            .any(|name| token.eq_ignore_ascii_case(name.as_bytes()))
}

/// Bit `n` for each hop-by-hop name of length `n`: most names are ruled out by their
/// length alone.
const HOP_BY_HOP_LENGTHS: u64 = {
    let names = crate::header_sets::HOP_BY_HOP;
    let mut bits = 0;
    let mut i = 0;
    while i < names.len() {
        bits |= length_bit(names[i].len());
        i += 1;
    }
    bits
};

const CONNECTION_INDEX: usize = 0;
const _: () = assert!(matches!(
    crate::header_sets::HOP_BY_HOP[CONNECTION_INDEX].as_bytes(),
    b"connection"
));
const UPGRADE_INDEX: usize = 8;
const _: () = assert!(matches!(
    crate::header_sets::HOP_BY_HOP[UPGRADE_INDEX].as_bytes(),
    b"upgrade"
));

/// The peer's address as a header value. IPv4, the common case, is written by hand:
/// `Display` goes through the formatting machinery, a few percent of a request's CPU.
fn ip_header_value(ip: IpAddr) -> Option<HeaderValue> {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).ok();
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    HeaderValue::from_bytes(&text[..len]).ok()
}

/// Whether the response goes out over HTTPS: the listener's own TLS, or a trusted
/// proxy in front that says the client spoke HTTPS to it.
pub fn is_https(listener_scheme: &str, request: &HeaderMap, peer_trusted: bool) -> bool {
    listener_scheme == "https"
        || (peer_trusted
            && request
                .get(&X_FORWARDED_PROTO)
                .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https")))
}

/// The header policy of DESIGN.md, precomputed.
#[derive(Debug)]
pub struct HeaderPolicy {
    pub trusted_proxies: Vec<IpNet>,
    /// The standard, trusted-only, identity and hop header names, each with its class:
    /// client headers in the standard class are forwarded on every route; trusted-only
    /// ones (forwarding, request id) only from a trusted proxy; identity ones (set by the
    /// gateway from verified credentials, and the forward-auth user) and hop ones from
    /// no client.
    pub classes: HeaderClasses,
    pub request_id: HeaderName,
    pub remote_user: HeaderName,
    /// The path of `public_base_url`, when it is not `/`.
    pub forwarded_prefix: Option<HeaderValue>,
    /// The host (and port, when not the scheme's default) of `public_base_url`: the
    /// `X-Forwarded-Host` of every request no trusted proxy sent one for.
    pub forwarded_host: Option<HeaderValue>,
    /// `server.listen`: the `X-Forwarded-Host` of a request that names no host, when
    /// there is no `public_base_url`.
    pub listen_host: HeaderValue,
    /// Added to responses that match no route where they lack them; empty when
    /// `security_headers = false`.
    pub security_headers: SecurityHeaderList,
    /// `Strict-Transport-Security`, for responses sent over HTTPS only; `None` when
    /// `security_headers = false`.
    pub hsts: Option<HeaderValue>,
}

impl HeaderPolicy {
    pub fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        let ip = crate::peer::canonical_ip(ip);
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::http1::Fields;

    #[test]
    fn ip_header_values_read_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "192.168.100.9",
            "1.20.3.40",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_header_value(ip).unwrap(), ip.to_string().as_str());
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(ip_header_value(v6).unwrap(), "2001:db8::1");
    }

    /// A policy with one security header, and `x-request-id` as the request id.
    fn policy() -> HeaderPolicy {
        HeaderPolicy {
            trusted_proxies: Vec::new(),
            classes: HeaderClasses::new([]),
            request_id: HeaderName::from_static("x-request-id"),
            remote_user: HeaderName::from_static("x-remote-user"),
            forwarded_prefix: None,
            forwarded_host: None,
            listen_host: HeaderValue::from_static("127.0.0.1:8080"),
            security_headers: vec![(
                HeaderName::from_static("x-content-type-options"),
                HeaderValue::from_static("nosniff"),
            )]
            .into(),
            hsts: Some(HeaderValue::from_static("max-age=60")),
        }
    }

    /// What the client is sent for an upstream's `head` (and the response's own map,
    /// `own`), as `name: value` lines: the upstream's lines the policy kept, the lines
    /// it added, then the map.
    fn finish(
        head: &'static [u8],
        own: &[(&'static str, &'static str)],
        over_https: bool,
        no_referrer: bool,
    ) -> Vec<String> {
        let lines = HeaderLines::from_response_head(Bytes::from_static(head)).unwrap();
        let status = if head.starts_with(b"HTTP/1.1 101") {
            101
        } else {
            200
        };
        let mut response = http::Response::new(());
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        for (name, value) in own {
            response
                .headers_mut()
                .append(*name, HeaderValue::from_static(value));
        }
        let mut reply = Reply {
            response,
            lines,
            added: Fields::default(),
            declared_length: None,
        };
        let id = HeaderValue::from_static("id-1");
        finish_response(&mut reply, &policy(), None, &id, over_https, no_referrer);
        let text = |(name, value): (&[u8], &[u8])| {
            let (name, value) = (
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(value),
            );
            format!("{name}: {value}")
        };
        let passed = reply.lines.iter().map(text);
        let added = reply.added.iter().map(text);
        let own = reply
            .response
            .headers()
            .iter()
            .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap()));
        passed.chain(added).chain(own).collect()
    }

    fn finished(head: &'static [u8], over_https: bool) -> Vec<String> {
        finish(head, &[], over_https, false)
    }

    #[test]
    fn a_response_the_gateway_made_keeps_its_own_values_but_the_request_id() {
        let sent = finish(
            b"HTTP/1.1 200 OK\r\n\r\n",
            &[
                ("x-content-type-options", "own"),
                ("x-request-id", "stale"),
                ("content-type", "text/plain"),
            ],
            false,
            false,
        );
        assert_eq!(
            sent,
            [
                "x-content-type-options: own",
                "x-request-id: id-1",
                "content-type: text/plain"
            ]
        );
    }

    #[test]
    fn the_login_landing_page_gets_no_referrer_whoever_set_one() {
        let with_list = policy_with_referrer();
        let lines = HeaderLines::from_response_head(Bytes::from_static(
            b"HTTP/1.1 200 OK\r\nReferrer-Policy: unsafe-url\r\n\r\n",
        ))
        .unwrap();
        let mut reply = Reply {
            response: http::Response::new(()),
            lines,
            added: Fields::default(),
            declared_length: None,
        };
        let id = HeaderValue::from_static("id-1");
        finish_response(&mut reply, &with_list, None, &id, false, true);
        let sent = reply.into_response();
        let policies: Vec<_> = sent.headers().get_all("referrer-policy").iter().collect();
        assert_eq!(policies, ["no-referrer"]);

        // A response the gateway made: its own value is replaced.
        let mut own = Reply::from(http::Response::new(()));
        own.response
            .headers_mut()
            .insert(header::REFERRER_POLICY, HeaderValue::from_static("origin"));
        finish_response(&mut own, &with_list, None, &id, false, true);
        let sent = own.into_response();
        let policies: Vec<_> = sent.headers().get_all("referrer-policy").iter().collect();
        assert_eq!(policies, ["no-referrer"]);
    }

    /// [`policy`] with `Referrer-Policy` in its security headers.
    fn policy_with_referrer() -> HeaderPolicy {
        let mut policy = policy();
        policy.security_headers = vec![(
            header::REFERRER_POLICY,
            HeaderValue::from_static("strict-origin-when-cross-origin"),
        )]
        .into();
        policy
    }

    #[test]
    fn a_response_keeps_its_lines_as_sent_and_gets_the_gateways_headers() {
        let sent = finished(
            b"HTTP/1.1 200 OK\r\nServer: up\r\nContent-Length: 005\r\nConnection: keep-alive\r\n\
              Keep-Alive: timeout=5\r\nX-Request-Id: forged\r\nSet-Cookie: a=1\r\n\
              set-cookie: b=2\r\n\r\n",
            false,
        );
        assert_eq!(
            sent,
            [
                "Server: up",
                "Set-Cookie: a=1",
                "set-cookie: b=2",
                "x-request-id: id-1",
                "x-content-type-options: nosniff",
            ]
        );
    }

    #[test]
    fn security_headers_the_upstream_set_are_its_own_in_any_case() {
        let sent = finished(
            b"HTTP/1.1 200 OK\r\nX-Content-Type-Options: none\r\n\
              Strict-Transport-Security: max-age=1\r\n\r\n",
            true,
        );
        assert_eq!(
            sent,
            [
                "X-Content-Type-Options: none",
                "Strict-Transport-Security: max-age=1",
                "x-request-id: id-1",
            ]
        );
        let over_https = finished(b"HTTP/1.1 200 OK\r\n\r\n", true);
        assert!(over_https.contains(&"strict-transport-security: max-age=60".to_owned()));
        let over_http = finished(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert!(!over_http.iter().any(|line| line.starts_with("strict")));
    }

    #[test]
    fn connection_values_with_obs_text_still_list_their_names() {
        // Found by the connection_filter fuzz target: a value that is not visible ASCII
        // was skipped whole, so the names it listed were forwarded.
        let mut headers = HeaderMap::new();
        let listing = HeaderValue::from_bytes(b"x-real-ip, x-secret \xed").unwrap();
        headers.insert(header::CONNECTION, listing);
        headers.insert("x-real-ip", HeaderValue::from_static("203.0.113.9"));
        assert!(connection_has(&headers, "X-Real-IP"));
        assert!(!connection_has(&headers, "x-secret"));
        let sent = finished(
            b"HTTP/1.1 200 OK\r\nConnection: x-real-ip, x-secret \xed\r\n\
              X-Real-IP: 203.0.113.9\r\nx-secret: 1\r\nX-Kept: 1\r\n\r\n",
            false,
        );
        assert_eq!(&sent[..2], ["x-secret: 1", "X-Kept: 1"]);
    }

    #[test]
    fn connection_lists_match_by_length_then_by_name() {
        let long = "x-long".repeat(12);
        let mut headers = HeaderMap::new();
        headers.append(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        let listing = HeaderValue::from_str(&format!(" {}", long.to_uppercase())).unwrap();
        headers.append(header::CONNECTION, listing);
        let list = ConnectionList::of(&headers);
        for listed in ["keep-alive", "x-secret", long.as_str()] {
            assert!(list.lists(listed), "{listed}");
        }
        let other_long = format!("{long}y");
        for unlisted in ["user-agent", "x-secre", "x-secrets", other_long.as_str()] {
            assert!(!list.lists(unlisted), "{unlisted}");
        }
        assert!(!ConnectionList::of(&HeaderMap::new()).lists("x-secret"));
    }

    #[test]
    fn connection_listed_names_are_removed_except_upgrade_on_101() {
        const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: close, X-Secret, upgrade\r\n\
              x-secret: 1\r\nUpgrade: websocket\r\nkeep-alive: timeout=5\r\nx-kept: 1\r\n\r\n";
        let sent = finished(HEAD, false);
        assert_eq!(sent[0], "x-kept: 1");
        assert_eq!(sent.len(), 3, "{sent:?}");
        let switching =
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: close, X-Secret, upgrade\r\n\
              x-secret: 1\r\nUpgrade: websocket\r\nkeep-alive: timeout=5\r\nx-kept: 1\r\n\r\n";
        let sent = finished(switching, false);
        assert_eq!(
            &sent[..3],
            [
                "Connection: close, X-Secret, upgrade",
                "Upgrade: websocket",
                "x-kept: 1"
            ]
        );
    }
}
