//! The client address from `X-Forwarded-For` and the trusted set, and the forwarding
//! headers sent upstream: a spoofed hop never becomes the client unless every hop to
//! its right (nearer the gateway) is a trusted proxy, and an untrusted peer's chain is
//! never believed or passed on.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use arbitrary::Arbitrary;
use fluxlit::proxy::headers::{self, RequestContext, X_FORWARDED_FOR};
use fluxlit_fuzz::{canonical, policy, route};
use http::header::{FORWARDED, HeaderMap, HeaderValue};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Addr {
    V4([u8; 4]),
    V6([u8; 16]),
    /// An IPv4 address written as IPv4-mapped IPv6.
    Mapped([u8; 4]),
}

impl Addr {
    fn ip(&self) -> IpAddr {
        match *self {
            Addr::V4(b) => IpAddr::V4(Ipv4Addr::from(b)),
            Addr::V6(b) => IpAddr::V6(Ipv6Addr::from(b)),
            Addr::Mapped(b) => IpAddr::V6(Ipv4Addr::from(b).to_ipv6_mapped()),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Hop {
    Ip(Addr),
    /// Anything a client may write.
    Text(String),
}

#[derive(Debug, Arbitrary)]
struct Input {
    trusted: Vec<(Addr, u8)>,
    peer: Addr,
    /// Each inner list is one `X-Forwarded-For` header line.
    lines: Vec<Vec<Hop>>,
    separator: u8,
    forwarded: Vec<String>,
}

fn hop_text(hop: &Hop) -> String {
    match hop {
        Hop::Ip(addr) => addr.ip().to_string(),
        Hop::Text(text) => text.clone(),
    }
}

fuzz_target!(|input: Input| {
    let nets: Vec<IpNet> = input
        .trusted
        .iter()
        .filter_map(|(addr, len)| {
            let ip = canonical(addr.ip());
            let max = if ip.is_ipv4() { 33 } else { 129 };
            IpNet::new(ip, len % max).ok()
        })
        .collect();
    let policy = policy(nets);
    let separator = [",", ", ", " ,", ",,", " , "][usize::from(input.separator % 5)];

    let mut client = HeaderMap::new();
    for line in &input.lines {
        let text: Vec<String> = line.iter().map(hop_text).collect();
        if let Ok(value) = HeaderValue::from_str(&text.join(separator)) {
            client.append(X_FORWARDED_FOR, value);
        }
    }
    for element in &input.forwarded {
        if let Ok(value) = HeaderValue::from_str(element) {
            client.append(FORWARDED, value);
        }
    }

    let peer = input.peer.ip();
    let canonical_peer = canonical(peer);
    let peer_trusted = policy.is_trusted(peer);
    let found = headers::client_address(peer, &client, &policy);

    // The hops as the header says them, right-most (nearest) last.
    let hops: Vec<&str> = client
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let parsed: Vec<Option<IpAddr>> = hops
        .iter()
        .map(|h| h.parse::<IpAddr>().ok().map(canonical))
        .collect();

    if !peer_trusted {
        assert_eq!(
            found, canonical_peer,
            "an untrusted peer's chain was believed"
        );
    } else if found != canonical_peer || !policy.is_trusted(found) {
        // The answer is one of the hops, and every hop to its right is a trusted proxy
        // (so some trusted proxy vouches for it).
        let vouched = (0..parsed.len()).rev().any(|i| {
            parsed[i] == Some(found)
                && parsed[i + 1..]
                    .iter()
                    .all(|hop| hop.is_some_and(|ip| policy.is_trusted(ip)))
        });
        assert!(
            vouched,
            "client {found} is not vouched for by trusted hops: {hops:?}"
        );
    }
    // An untrusted hop vouched for by trusted proxies always wins over anything to its left.
    if peer_trusted {
        let mut expected = canonical_peer;
        for hop in parsed.iter().rev() {
            match hop {
                Some(ip) if policy.is_trusted(*ip) => expected = *ip,
                Some(ip) => {
                    expected = *ip;
                    break;
                }
                None => break,
            }
        }
        assert_eq!(found, expected, "hops {hops:?}");
    }

    // What the upstream is told.
    let request_id = HeaderValue::from_static("fuzz");
    let ctx = RequestContext {
        peer: SocketAddr::new(peer, 40000),
        peer_trusted,
        scheme: "http",
        uri_authority: None,
        request_id: &request_id,
        websocket: false,
        identity: None,
    };
    let host = HeaderValue::from_static("upstream");
    let mut out = HeaderMap::new();
    headers::upstream_request_headers(&client, &policy, &route(), &host, &ctx, &mut out, &mut |_| {});
    let sent: Vec<&HeaderValue> = out.get_all(&X_FORWARDED_FOR).iter().collect();
    assert_eq!(sent.len(), 1, "one X-Forwarded-For line goes upstream");
    let sent = sent[0].to_str().unwrap_or_default();
    let peer_text = canonical_peer.to_string();
    if peer_trusted {
        let last = sent.rsplit(',').next().map(str::trim);
        assert_eq!(last, Some(peer_text.as_str()), "the peer ends the chain");
    } else {
        assert_eq!(sent, peer_text, "an untrusted peer's chain is replaced");
        assert!(
            !out.contains_key(FORWARDED),
            "an untrusted Forwarded was sent"
        );
    }
});
