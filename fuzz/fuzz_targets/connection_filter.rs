//! Arbitrary client headers and `Connection` values through the upstream request header
//! policy: no hop-by-hop name, no name the client lists in `Connection`, no client
//! `Host`, no identity header (the forward-auth user included) and (from an untrusted
//! peer) no forwarding header ever reaches the upstream as the client sent it; what it
//! reports dropped for being on no list was on no list.
#![no_main]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::LazyLock;

use arbitrary::Arbitrary;
use fluxlit::header_sets;
use fluxlit::proxy::headers::{self, HeaderClass, RequestContext};
use fluxlit_fuzz::{policy, route};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;

/// Names the policy treats specially, so the fuzzer does not have to guess them: the
/// policy's own lists, and a few this target's route and requests use.
static KNOWN: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let extra = [
        "host",
        "x-request-id",
        "x-remote-user",
        "x-tenant",
        "accept",
        "authorization",
        "cookie",
        "content-length",
        "user-agent",
        "sec-websocket-key",
        "close",
    ];
    [
        header_sets::HOP_BY_HOP,
        header_sets::FORWARDING,
        header_sets::GATEWAY_IDENTITY,
        &extra,
    ]
    .concat()
});

#[derive(Debug, Arbitrary)]
enum Name {
    /// A known name, with the letters whose bit is set in the mask upper-cased.
    Known(u8, u32),
    Other(String),
}

impl Name {
    fn text(&self) -> String {
        match self {
            Name::Known(index, mask) => KNOWN[usize::from(*index) % KNOWN.len()]
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if mask >> (i % 32) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect(),
            Name::Other(text) => text.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    headers: Vec<(Name, Vec<u8>)>,
    /// Each inner list is one `Connection` line: (token, separator after it).
    connection: Vec<Vec<(Name, u8)>>,
    /// Raw bytes appended to a `Connection` line (obs-text, odd whitespace).
    connection_tail: Vec<u8>,
    trusted: bool,
    websocket: bool,
}

const SEPARATORS: [&[u8]; 5] = [b",", b", ", b" ,\t", b",,", b" , "];

/// The tokens of `Connection`, read as bytes the way RFC 9110 §7.6.1 lists them.
fn listed(client: &HeaderMap) -> HashSet<String> {
    client
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|token| String::from_utf8_lossy(token.trim_ascii()).to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect()
}

fuzz_target!(|input: Input| {
    let peer_ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));
    let trust: Vec<IpNet> = if input.trusted {
        vec![IpNet::from(peer_ip)]
    } else {
        Vec::new()
    };
    let policy = policy(trust);
    let route = route();

    let mut client = HeaderMap::new();
    for (name, value) in &input.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.text().as_bytes()),
            HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        client.append(name, value);
    }
    for (index, line) in input.connection.iter().enumerate() {
        let mut bytes = Vec::new();
        for (token, separator) in line {
            bytes.extend_from_slice(token.text().as_bytes());
            bytes.extend_from_slice(SEPARATORS[usize::from(*separator) % SEPARATORS.len()]);
        }
        if index == 0 {
            bytes.extend_from_slice(&input.connection_tail);
        }
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            client.append(header::CONNECTION, value);
        }
    }

    let peer_trusted = policy.is_trusted(peer_ip);
    let request_id = HeaderValue::from_static("fuzz-request-id");
    let ctx = RequestContext {
        peer: SocketAddr::new(peer_ip, 40000),
        peer_trusted,
        scheme: "http",
        uri_authority: None,
        request_id: &request_id,
        websocket: input.websocket,
        identity: None,
    };
    let upstream_host = HeaderValue::from_static("upstream.internal");
    let mut unlisted = Vec::new();
    let mut out = HeaderMap::new();
    headers::upstream_request_headers(
        &client,
        &policy,
        &route,
        &upstream_host,
        &ctx, &mut out, &mut |name| unlisted.push(name.clone()),
    );

    // Names the gateway writes itself (their values are checked below).
    let mut own: HashSet<&str> = [
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-prefix",
        "x-request-id",
    ]
    .into_iter()
    .collect();
    if input.websocket {
        own.extend(["connection", "upgrade"]);
    }
    if peer_trusted {
        // A trusted proxy's Forwarded chain is extended with the peer.
        own.insert("forwarded");
    }

    for name in header_sets::HOP_BY_HOP {
        if !own.contains(name) {
            assert!(!out.contains_key(*name), "hop-by-hop {name} was forwarded");
        }
    }
    if input.websocket {
        let connection: Vec<_> = out.get_all(header::CONNECTION).iter().collect();
        assert_eq!(connection, ["upgrade"]);
        let upgrade: Vec<_> = out.get_all(header::UPGRADE).iter().collect();
        assert_eq!(upgrade, ["websocket"]);
    }
    for name in listed(&client) {
        if !own.contains(name.as_str()) {
            assert!(
                !out.contains_key(name.as_str()),
                "{name} is listed in Connection but was forwarded"
            );
        }
    }
    let host: Vec<_> = out.get_all(header::HOST).iter().collect();
    assert_eq!(host, [&upstream_host], "Host is the upstream's");
    let request_ids: Vec<_> = out.get_all("x-request-id").iter().collect();
    assert_eq!(request_ids, [&request_id], "one request id, the gateway's");
    for name in policy.classes.names(HeaderClass::Identity) {
        assert!(
            !out.contains_key(name),
            "identity header {name} was forwarded"
        );
    }
    if !peer_trusted {
        let xff: Vec<_> = out.get_all("x-forwarded-for").iter().collect();
        assert_eq!(
            xff,
            ["10.0.0.7"],
            "an untrusted peer's X-Forwarded-For was kept"
        );
        let proto: Vec<_> = out.get_all("x-forwarded-proto").iter().collect();
        assert_eq!(proto, ["http"]);
        let prefix: Vec<_> = out.get_all("x-forwarded-prefix").iter().collect();
        assert_eq!(prefix, ["/app"]);
        for name in ["forwarded", "x-forwarded-port", "x-real-ip"] {
            assert!(
                !out.contains_key(name),
                "{name} from an untrusted peer was forwarded"
            );
        }
    }
    // The forward-auth user reaches no upstream as itself, from any peer.
    assert!(
        !out.contains_key("x-remote-user"),
        "x-remote-user was forwarded"
    );
    // What is reported dropped was on no list, and was not forwarded.
    let listed_names = listed(&client);
    for name in &unlisted {
        assert_eq!(policy.classes.get(name), None, "{name} has a class");
        assert!(!route.extra_client_headers.contains(name), "{name} is allowlisted");
        assert!(!listed_names.contains(name.as_str()), "{name} is listed in Connection");
        assert!(!out.contains_key(name), "{name} was reported dropped and forwarded");
    }
    // Whatever else goes upstream is in the standard set, the route's allowlist, or (from a
    // trusted proxy) the trusted-only set.
    for name in out.keys() {
        let allowed = own.contains(name.as_str())
            || policy.classes.get(name) == Some(HeaderClass::Standard)
            || route.extra_client_headers.contains(name)
            || (peer_trusted && policy.classes.get(name) == Some(HeaderClass::TrustedOnly));
        assert!(allowed, "{name} is not in any forwarded set");
    }
});
