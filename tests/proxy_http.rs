//! The HTTP proxy path end to end: routing, the gateway's own error responses, the
//! header policy of DESIGN.md ("Headers", "Defaults") from trusted and untrusted peers,
//! streaming in both directions, and the listener's connection limits.
//!
//! Everything runs over real sockets on loopback: the gateway, small axum upstreams, and
//! clients that are either hyper or raw bytes over a `TcpStream` (where a client library
//! would tidy up the request). Where a test needs a trusted proxy it is 127.0.0.1;
//! 127.0.0.2 is always an untrusted client. Timeouts only guard against hangs: no
//! assertion is about speed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::routing::any;
use bytes::Bytes;
use common::config::api_and_ui;
use common::raw::{
    RawReply, connect_from, exchange as raw_exchange, read_reply, read_shows_closed,
};
use common::*;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

// ---------------------------------------------------------------------------------------
// Helpers: request builders, a gate and a signal for upstreams, the header tests' gateway.
// 127.0.0.1 is the trusted proxy where a test trusts one, 127.0.0.2 an untrusted client.
// ---------------------------------------------------------------------------------------

/// Header lines of a request, as `(name, value)` pairs.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// The `Host` the header tests' clients send.
const PUBLIC_HOST: &str = "public.example";

/// `GET target` with `Host: public.example` and `headers` (each a full `Name: value`
/// line), byte for byte.
fn raw_get(target: &str, headers: &[&str]) -> String {
    raw::get_request(target, PUBLIC_HOST, headers)
}

/// `GET path` with `Host: public.example` and `headers`, sent from `peer`.
async fn get_as(peer: IpAddr, gateway: &TestGateway, path: &str, headers: Headers<'_>) -> Reply {
    send_as(peer, gateway, get_for_host(path, PUBLIC_HOST, headers)).await
}

fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .expect("the response carries x-request-id")
        .to_str()
        .expect("request id is ASCII")
        .to_owned()
}

fn assert_uuid(id: &str) {
    let parsed = uuid::Uuid::try_parse(id).unwrap_or_else(|e| panic!("{id:?} is not a UUID: {e}"));
    assert_eq!(
        parsed.hyphenated().to_string(),
        id,
        "request id in canonical UUID form"
    );
}

/// A gate an upstream handler waits on until the test opens it (once).
#[derive(Clone)]
struct Gate(Arc<Mutex<Option<oneshot::Receiver<()>>>>);

impl Gate {
    fn new() -> (oneshot::Sender<()>, Self) {
        let (open, wait) = oneshot::channel();
        (open, Self(Arc::new(Mutex::new(Some(wait)))))
    }

    async fn wait(&self) {
        let wait = self
            .0
            .lock()
            .expect("gate lock")
            .take()
            .expect("the gate is waited on once");
        let _ = wait.await;
    }
}

/// A signal an upstream handler fires once, the first time something happens.
#[derive(Clone)]
struct Signal(Arc<Mutex<Option<oneshot::Sender<()>>>>);

impl Signal {
    fn new() -> (Self, oneshot::Receiver<()>) {
        let (fire, fired) = oneshot::channel();
        (Self(Arc::new(Mutex::new(Some(fire)))), fired)
    }

    fn fire(&self) {
        if let Some(fire) = self.0.lock().expect("signal lock").take() {
            let _ = fire.send(());
        }
    }
}

/// The header tests' gateway: 127.0.0.1 trusted, `public_base_url` with a path, one
/// route `/` (allowlisting `x-tenant` and `x-region`) to a recording upstream.
async fn header_gateway(server_extra: &str, trust_extra: &str) -> (TestGateway, SocketAddr) {
    let upstream = spawn_recording_upstream("app").await;
    let config = ConfigText::new()
        .server("public_base_url = \"http://example.com/app\"")
        .with(server_extra)
        .trust_loopback()
        .with(trust_extra)
        .route_to("app", "/", upstream)
        .with("forward_client_headers = [\"x-tenant\", \"x-region\"]");
    let gateway = TestGateway::start(&config).await;
    (gateway, upstream)
}

// ---------------------------------------------------------------------------------------
// Routing: longest prefix on segment boundaries, 404 without a root route, strip_prefix,
// upstream base paths, dot segments.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn longest_prefix_wins_on_segment_boundaries_whatever_the_order_in_the_file() {
    let api = spawn_recording_upstream("api").await;
    let v2 = spawn_recording_upstream("v2").await;
    let ui = spawn_recording_upstream("ui").await;
    let routes = [("ui", "/"), ("api", "/api"), ("v2", "/api/v2")];
    for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
        let mut config = ConfigText::new()
            .upstream("api", api)
            .upstream("v2", v2)
            .upstream("ui", ui);
        for index in order {
            let (name, prefix) = routes[index];
            config = config.route(name, prefix, name);
        }
        let gateway = TestGateway::start(&config).await;
        let cases = [
            ("/api", "api"),
            ("/api/", "api"),
            ("/api/x", "api"),
            ("/api/x/y", "api"),
            ("/apix", "ui"),
            ("/apix/y", "ui"),
            ("/ap", "ui"),
            ("/", "ui"),
            ("/other/api", "ui"),
            ("/api/v2", "v2"),
            ("/api/v2/users", "v2"),
            ("/api/v20", "api"),
        ];
        for (path, expected) in cases {
            let reply = get_as(UNTRUSTED, &gateway, path, &[]).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
            let seen = reply.json();
            assert_eq!(
                seen["name"], expected,
                "{path} with routes in file order {order:?}"
            );
            assert_eq!(seen["path"], path, "{path} is forwarded unchanged");
        }
    }
}

#[tokio::test]
async fn without_a_root_route_unmatched_paths_get_404() {
    let api = spawn_recording_upstream("api").await;
    let gateway = TestGateway::start(ConfigText::new().route_to("api", "/api", api)).await;
    let reply = get_as(UNTRUSTED, &gateway, "/api/x", &[]).await;
    assert_eq!(reply.status, 200, "control: the /api route serves");
    for path in ["/", "/apix", "/ap", "/other", "/other/api"] {
        let reply = get_as(UNTRUSTED, &gateway, path, &[]).await;
        assert_eq!(reply.status, 404, "{path}: {}", reply.text());
    }
}

#[tokio::test]
async fn strip_prefix_removes_the_route_prefix_and_keeps_the_query() {
    let upstream = spawn_recording_upstream("up").await;
    let config = ConfigText::new()
        .upstream("up", upstream)
        .route("stripped", "/api", "up")
        .with("strip_prefix = true")
        .route("kept", "/keep", "up");
    let gateway = TestGateway::start(&config).await;
    let cases = [
        ("/api/x?y=1&z=2", "/x", json!("y=1&z=2")),
        ("/api/x/y/", "/x/y/", Value::Null),
        ("/api", "/", Value::Null),
        ("/api/", "/", Value::Null),
        ("/api?q=%20a", "/", json!("q=%20a")),
        ("/keep/x?q=1", "/keep/x", json!("q=1")),
    ];
    for (path, forwarded, query) in cases {
        let reply = get_as(UNTRUSTED, &gateway, path, &[]).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        let seen = reply.json();
        assert_eq!(seen["path"], forwarded, "{path}");
        assert_eq!(seen["query"], query, "{path}");
    }
}

#[tokio::test]
async fn an_upstream_base_path_is_prepended_to_the_forwarded_path() {
    let upstream = spawn_recording_upstream("up").await;
    let config = ConfigText::new()
        .upstream("based", format!("{upstream}/base"))
        .upstream("based_slash", format!("{upstream}/base/"))
        .route("api", "/api", "based")
        .route("svc", "/svc", "based_slash")
        .with("strip_prefix = true");
    let gateway = TestGateway::start(&config).await;
    let cases = [
        ("/api/x?q=1", "/base/api/x", json!("q=1")),
        ("/api", "/base/api", Value::Null),
        ("/svc/x?q=1", "/base/x", json!("q=1")),
        ("/svc", "/base/", Value::Null),
    ];
    for (path, forwarded, query) in cases {
        let reply = get_as(UNTRUSTED, &gateway, path, &[]).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        let seen = reply.json();
        assert_eq!(seen["path"], forwarded, "{path}");
        assert_eq!(seen["query"], query, "{path}");
        assert_eq!(
            reply.upstream_header("host"),
            [upstream.to_string()],
            "{path}"
        );
    }
}

#[tokio::test]
async fn dot_segments_are_resolved_before_routing_and_forwarding() {
    let api = spawn_recording_upstream("api").await;
    let ui = spawn_recording_upstream("ui").await;
    let gateway = TestGateway::start(api_and_ui(api, ui)).await;
    let cases = [
        ("/public/../api/x", "api", "/api/x"),
        ("/public/%2e%2E/api/x", "api", "/api/x"),
        ("/public/./../api/x?q=1", "api", "/api/x"),
        ("/api/./x", "api", "/api/x"),
        // Climbing out of /api lands on the route the resolved path names.
        ("/api/../x", "ui", "/x"),
        ("/api/%2e%2e/secret", "ui", "/secret"),
    ];
    for (target, route, forwarded) in cases {
        let reply = raw_exchange(UNTRUSTED, gateway.addr(), &raw_get(target, &[])).await;
        assert_eq!(reply.status, 200, "{target}: {}", reply.text());
        let seen = reply.json();
        assert_eq!(seen["name"], route, "{target}");
        assert_eq!(seen["path"], forwarded, "{target}");
    }
}

#[tokio::test]
async fn a_path_climbing_above_the_root_gets_400_and_is_not_forwarded() {
    let upstream = CountingUpstream::spawn().await;
    let config = ConfigText::new()
        .upstream("up", upstream.addr)
        .route("all", "/", "up");
    let gateway = TestGateway::start(&config).await;
    for target in [
        "/..",
        "/../api/x",
        "/api/../../x",
        "/%2e%2e/api",
        "/a/./../..",
    ] {
        let reply = raw_exchange(UNTRUSTED, gateway.addr(), &raw_get(target, &[])).await;
        assert_eq!(reply.status, 400, "{target}: {}", reply.text());
        let id = reply.header("x-request-id").expect("x-request-id on a 400");
        assert!(
            reply.text().contains(id),
            "{target}: body names the request id: {}",
            reply.text()
        );
    }
    assert_eq!(upstream.hits(), 0, "no rejected path reached the upstream");
    let reply = raw_exchange(UNTRUSTED, gateway.addr(), &raw_get("/a/../b", &[])).await;
    assert_eq!(
        reply.status, 200,
        "control: a path that stays under the root is served"
    );
    assert_eq!(upstream.hits(), 1);
}

// ---------------------------------------------------------------------------------------
// The gateway's own error responses: 404, 502, 504, each naming the route and the
// request id, never the upstream's internals.
// ---------------------------------------------------------------------------------------

/// Upstream error details that must never reach a client.
const UPSTREAM_DETAILS: &[&str] = &[
    "connection refused",
    "tcp connect error",
    "error trying to connect",
    "os error",
    "deadline has elapsed",
    "hyper",
];

fn assert_no_upstream_details(body: &str, upstream: SocketAddr) {
    let lower = body.to_ascii_lowercase();
    for detail in UPSTREAM_DETAILS {
        assert!(!lower.contains(detail), "body leaks {detail:?}: {body}");
    }
    assert!(
        !body.contains(&upstream.to_string()),
        "body leaks the upstream address: {body}"
    );
}

#[tokio::test]
async fn an_unmatched_path_gets_404_naming_the_request_id() {
    let api = spawn_recording_upstream("api").await;
    let gateway = TestGateway::start(ConfigText::new().route_to("api", "/api", api)).await;
    let reply = get_as(UNTRUSTED, &gateway, "/nowhere", &[]).await;
    assert_eq!(reply.status, 404);
    let id = request_id(&reply.headers);
    assert_uuid(&id);
    assert!(
        reply.text().contains(&id),
        "body names the request id: {}",
        reply.text()
    );
}

#[tokio::test]
async fn an_upstream_refusing_connections_gets_502_naming_the_route() {
    let dead = closed_port();
    let config = ConfigText::new()
        .trust_loopback()
        .upstream("dead", dead)
        .route("backend-api", "/api", "dead");
    let gateway = TestGateway::start(&config).await;

    let reply = get_as(UNTRUSTED, &gateway, "/api/x", &[]).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    let body = reply.text();
    let id = request_id(&reply.headers);
    assert_uuid(&id);
    assert!(body.contains(&id), "body names the request id: {body}");
    assert!(body.contains("backend-api"), "body names the route: {body}");
    assert_no_upstream_details(&body, dead);

    // A trusted proxy's request id is the one in the body.
    let reply = get_as(
        TRUSTED,
        &gateway,
        "/api/x",
        &[("x-request-id", "trace-502")],
    )
    .await;
    assert_eq!(reply.status, 502);
    assert_eq!(request_id(&reply.headers), "trace-502");
    assert!(reply.text().contains("trace-502"), "{}", reply.text());
}

#[tokio::test]
async fn an_upstream_slower_than_its_timeout_gets_504_naming_the_route() {
    let upstream = spawn_upstream(Router::new().fallback(any(|| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        "too late"
    })))
    .await;
    let config = ConfigText::new()
        .upstream("slow", upstream)
        .with("timeout = \"300ms\"")
        .route("slow-route", "/", "slow");
    let gateway = TestGateway::start(&config).await;
    let reply = get_as(UNTRUSTED, &gateway, "/report", &[]).await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    let body = reply.text();
    let id = request_id(&reply.headers);
    assert_uuid(&id);
    assert!(body.contains(&id), "body names the request id: {body}");
    assert!(body.contains("slow-route"), "body names the route: {body}");
    assert!(!body.contains("too late"), "{body}");
    assert_no_upstream_details(&body, upstream);
}

// ---------------------------------------------------------------------------------------
// Request headers: what reaches the upstream from a trusted and an untrusted peer.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn x_forwarded_for_is_replaced_for_untrusted_peers_and_extended_for_trusted_ones() {
    let (gateway, _) = header_gateway("", "").await;
    let cases: [(IpAddr, Headers, &str); 5] = [
        (UNTRUSTED, &[("x-forwarded-for", "1.2.3.4")], "127.0.0.2"),
        (UNTRUSTED, &[], "127.0.0.2"),
        (
            TRUSTED,
            &[("x-forwarded-for", "1.2.3.4")],
            "1.2.3.4, 127.0.0.1",
        ),
        (
            TRUSTED,
            &[
                ("x-forwarded-for", "1.2.3.4"),
                ("x-forwarded-for", "5.6.7.8"),
            ],
            "1.2.3.4, 5.6.7.8, 127.0.0.1",
        ),
        (TRUSTED, &[], "127.0.0.1"),
    ];
    for (peer, headers, expected) in cases {
        let reply = get_as(peer, &gateway, "/", headers).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.upstream_header("x-forwarded-for"),
            [expected],
            "from {peer} sending {headers:?}"
        );
    }
}

#[tokio::test]
async fn x_forwarded_proto_host_and_prefix_are_the_gateways_unless_a_trusted_peer_sent_them() {
    let (gateway, _) = header_gateway("", "").await;
    let forged = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "outer.example"),
        ("x-forwarded-prefix", "/outer"),
    ];
    // The host is public_base_url's (http://example.com/app), not the client's Host.
    let cases: [(IpAddr, Headers, [&str; 3]); 3] = [
        (UNTRUSTED, &forged, ["http", "example.com", "/app"]),
        (TRUSTED, &forged, ["https", "outer.example", "/outer"]),
        (TRUSTED, &[], ["http", "example.com", "/app"]),
    ];
    for (peer, headers, [proto, host, prefix]) in cases {
        let reply = get_as(peer, &gateway, "/", headers).await;
        assert_eq!(reply.status, 200);
        let context = format!("from {peer} sending {headers:?}");
        assert_eq!(
            reply.upstream_header("x-forwarded-proto"),
            [proto],
            "{context}"
        );
        assert_eq!(
            reply.upstream_header("x-forwarded-host"),
            [host],
            "{context}"
        );
        assert_eq!(
            reply.upstream_header("x-forwarded-prefix"),
            [prefix],
            "{context}"
        );
    }
}

#[tokio::test]
async fn x_forwarded_prefix_follows_the_path_of_public_base_url() {
    let upstream = spawn_recording_upstream("app").await;
    let cases = [
        (Some("https://example.com/app/"), Some("/app")),
        (Some("http://example.com/a/b"), Some("/a/b")),
        (Some("http://example.com/"), None),
        (Some("http://example.com"), None),
        (None, None),
    ];
    for (base, expected) in cases {
        let config = match base {
            Some(base) => ConfigText::new().server(&format!("public_base_url = \"{base}\"")),
            None => ConfigText::new(),
        };
        let gateway = TestGateway::start(config.route_to("app", "/", upstream)).await;
        // An untrusted client's own prefix never counts.
        let reply = get_as(
            UNTRUSTED,
            &gateway,
            "/",
            &[("x-forwarded-prefix", "/forged")],
        )
        .await;
        let expected: Vec<&str> = expected.into_iter().collect();
        assert_eq!(
            reply.upstream_header("x-forwarded-prefix"),
            expected,
            "public_base_url {base:?}"
        );
    }
}

#[tokio::test]
async fn forwarded_is_dropped_from_untrusted_peers_and_extended_from_trusted_ones() {
    let (gateway, _) = header_gateway("", "").await;
    let sent = [("forwarded", "for=1.2.3.4;proto=https")];

    let reply = get_as(UNTRUSTED, &gateway, "/", &sent).await;
    assert_eq!(reply.upstream_header("forwarded"), Vec::<String>::new());

    let reply = get_as(TRUSTED, &gateway, "/", &sent).await;
    assert_eq!(
        reply.upstream_header("forwarded"),
        ["for=1.2.3.4;proto=https, for=127.0.0.1"]
    );
}

#[tokio::test]
async fn identity_headers_never_reach_the_upstream_from_any_peer() {
    // The forward-auth user is read by a forward-auth check only (tests/auth.rs); the
    // gateway's own identity headers come only from its own checks.
    let sent = [
        ("x-remote-user", "alice"),
        ("x-fluxlit-sub", "alice"),
        ("x-fluxlit-scope", "admin"),
    ];
    let (gateway, _) = header_gateway("", "").await;
    for peer in [UNTRUSTED, TRUSTED] {
        let reply = get_as(peer, &gateway, "/", &sent).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        for (name, _) in sent {
            assert_eq!(
                reply.upstream_header(name),
                Vec::<String>::new(),
                "{name} from {peer}"
            );
        }
    }
}

/// The attack of issue 16: a stock nginx in front (`proxy_pass`, nothing stripped) passes
/// its client's `X-Remote-User` on, from an address in `trust.proxies`. No upstream may
/// get it as if someone had vouched for it: on a route without auth nobody did.
#[tokio::test]
async fn a_remote_user_passed_on_by_a_trusted_proxy_never_reaches_an_upstream() {
    let (gateway, _) = header_gateway("", "").await;
    let passed_on = raw_get(
        "/",
        &[
            "X-Forwarded-For: 203.0.113.7",
            "X-Remote-User: admin",
            "Connection: close",
        ],
    );
    let reply = raw_exchange(TRUSTED, gateway.addr(), &passed_on).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.upstream_header("x-remote-user"), Vec::<String>::new());
    assert_eq!(reply.upstream_header("x-fluxlit-sub"), Vec::<String>::new());
    // The proxy is still believed for what it is trusted with.
    assert_eq!(
        reply.upstream_header("x-forwarded-for"),
        ["203.0.113.7, 127.0.0.1"]
    );

    // Whatever trust.remote_user_header names.
    let (gateway, _) = header_gateway("", "remote_user_header = \"x-sso-user\"").await;
    let passed_on = raw_get("/", &["X-SSO-User: admin", "Connection: close"]);
    let reply = raw_exchange(TRUSTED, gateway.addr(), &passed_on).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.upstream_header("x-sso-user"), Vec::<String>::new());
}

#[tokio::test]
async fn a_trusted_peers_request_id_is_kept_and_echoed() {
    let (gateway, _) = header_gateway("", "").await;
    let reply = get_as(TRUSTED, &gateway, "/", &[("x-request-id", "trace-abc-123")]).await;
    assert_eq!(reply.upstream_header("x-request-id"), ["trace-abc-123"]);
    assert_eq!(request_id(&reply.headers), "trace-abc-123");

    // A trusted peer that sends none gets a generated one, the same at both ends.
    let reply = get_as(TRUSTED, &gateway, "/", &[]).await;
    let id = request_id(&reply.headers);
    assert_uuid(&id);
    assert_eq!(reply.upstream_header("x-request-id"), [id]);
}

#[tokio::test]
async fn an_untrusted_peers_request_id_is_replaced_by_a_fresh_uuid_echoed_on_the_response() {
    let (gateway, _) = header_gateway("", "").await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let reply = get_as(UNTRUSTED, &gateway, "/", &[("x-request-id", "forged-id")]).await;
        let id = request_id(&reply.headers);
        assert_ne!(id, "forged-id");
        assert_uuid(&id);
        assert_eq!(
            reply.upstream_header("x-request-id"),
            std::slice::from_ref(&id),
            "upstream and response agree"
        );
        seen.push(id);
    }
    assert_ne!(seen[0], seen[1], "every request gets its own id");
}

#[tokio::test]
async fn other_forwarding_headers_are_believed_only_from_trusted_peers() {
    let (gateway, _) = header_gateway("", "").await;
    let sent = [("x-real-ip", "1.2.3.4"), ("x-forwarded-port", "8443")];
    let reply = get_as(UNTRUSTED, &gateway, "/", &sent).await;
    for (name, _) in sent {
        assert_eq!(
            reply.upstream_header(name),
            Vec::<String>::new(),
            "{name} from an untrusted peer"
        );
    }
    let reply = get_as(TRUSTED, &gateway, "/", &sent).await;
    for (name, value) in sent {
        assert_eq!(
            reply.upstream_header(name),
            [value],
            "{name} from a trusted peer"
        );
    }
}

#[tokio::test]
async fn request_id_header_names_the_header_used_both_ways() {
    let (gateway, _) = header_gateway("request_id_header = \"x-correlation-id\"", "").await;
    let reply = get_as(
        TRUSTED,
        &gateway,
        "/",
        &[("x-correlation-id", "corr-1"), ("x-request-id", "other")],
    )
    .await;
    assert_eq!(reply.upstream_header("x-correlation-id"), ["corr-1"]);
    assert_eq!(
        reply.headers.get("x-correlation-id").map(|v| v.as_bytes()),
        Some(&b"corr-1"[..])
    );
    // x-request-id is now an ordinary unknown header: not forwarded, not echoed.
    assert_eq!(reply.upstream_header("x-request-id"), Vec::<String>::new());
    assert_eq!(reply.headers.get("x-request-id"), None);

    let reply = get_as(UNTRUSTED, &gateway, "/", &[("x-correlation-id", "forged")]).await;
    let id = reply
        .headers
        .get("x-correlation-id")
        .expect("echoed")
        .to_str()
        .expect("ASCII");
    assert_uuid(id);
    assert_eq!(reply.upstream_header("x-correlation-id"), [id]);
}

#[tokio::test]
async fn the_upstream_gets_its_own_address_as_host() {
    let (gateway, upstream) = header_gateway("", "").await;
    for peer in [UNTRUSTED, TRUSTED] {
        let reply = send_as(
            peer,
            &gateway,
            get_for_host("/", "client-chosen.example", &[]),
        )
        .await;
        assert_eq!(
            reply.upstream_header("host"),
            [upstream.to_string()],
            "from {peer}"
        );
    }
}

/// Link poisoning: an app that builds absolute links (a password-reset mail, a redirect)
/// from `X-Forwarded-Host` must not get a host an attacker chose with its `Host` header.
#[tokio::test]
async fn x_forwarded_host_is_public_base_urls_host_whatever_host_a_client_sends() {
    let (gateway, _) = header_gateway("", "").await;
    for host in ["evil.example", "example.com.evil.example", PUBLIC_HOST] {
        let reply = send_as(UNTRUSTED, &gateway, get_for_host("/", host, &[])).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.upstream_header("x-forwarded-host"),
            ["example.com"],
            "Host: {host}"
        );
    }
    // A trusted proxy in front says which host its client asked for: that is kept.
    let reply = send_as(
        TRUSTED,
        &gateway,
        get_for_host(
            "/",
            "internal",
            &[("x-forwarded-host", "tenant.example.com")],
        ),
    )
    .await;
    assert_eq!(
        reply.upstream_header("x-forwarded-host"),
        ["tenant.example.com"]
    );

    // A port other than the scheme's default is part of the host.
    let upstream = spawn_recording_upstream("app").await;
    let config = ConfigText::new()
        .server("public_base_url = \"https://apps.example.com:8443/\"")
        .route_to("app", "/", upstream);
    let gateway = TestGateway::start(&config).await;
    let reply = send_as(UNTRUSTED, &gateway, get_for_host("/", "evil.example", &[])).await;
    assert_eq!(
        reply.upstream_header("x-forwarded-host"),
        ["apps.example.com:8443"]
    );
}

/// Without `public_base_url` the gateway does not know its public host: the client's
/// `Host` is forwarded, as before.
#[tokio::test]
async fn without_public_base_url_x_forwarded_host_is_the_clients_host() {
    let upstream = spawn_recording_upstream("app").await;
    let gateway = TestGateway::start(ConfigText::new().route_to("app", "/", upstream)).await;
    let reply = send_as(
        UNTRUSTED,
        &gateway,
        get_for_host("/", "chosen.example", &[]),
    )
    .await;
    assert_eq!(
        reply.upstream_header("x-forwarded-host"),
        ["chosen.example"]
    );
}

#[tokio::test]
async fn hop_by_hop_request_headers_never_reach_the_upstream() {
    let (gateway, _) = header_gateway("", "").await;
    let hop_by_hop = [
        "Keep-Alive: timeout=5",
        "TE: trailers",
        "Trailer: x-checksum",
        "Proxy-Authorization: Basic Zm9vOmJhcg==",
        "Proxy-Connection: keep-alive",
        "Accept: text/html",
        "X-Region: eu",
    ];
    let upgrades: [&[&str]; 3] = [
        &["Connection: keep-alive"],
        // An upgrade to something other than WebSocket.
        &["Connection: Upgrade", "Upgrade: h2c"],
        // `Upgrade: websocket` without `Connection: upgrade` is not a handshake.
        &["Upgrade: websocket"],
    ];
    for peer in [UNTRUSTED, TRUSTED] {
        for extra in upgrades {
            let headers: Vec<&str> = hop_by_hop.iter().chain(extra).copied().collect();
            let reply = raw_exchange(peer, gateway.addr(), &raw_get("/", &headers)).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            for name in [
                "connection",
                "keep-alive",
                "te",
                "trailer",
                "proxy-authorization",
                "proxy-connection",
                "upgrade",
            ] {
                assert_eq!(
                    reply.upstream_header(name),
                    Vec::<String>::new(),
                    "{name} from {peer} with {extra:?}"
                );
            }
            // Controls: the same request's ordinary and allowlisted headers arrive.
            assert_eq!(reply.upstream_header("accept"), ["text/html"]);
            assert_eq!(reply.upstream_header("x-region"), ["eu"]);
        }
    }
}

#[tokio::test]
async fn names_listed_in_connection_never_reach_the_upstream() {
    let (gateway, _) = header_gateway("", "").await;
    let payload = ["x-tenant: acme", "Cookie: session=1", "x-region: eu"];
    // Control: without a Connection listing, x-tenant (allowlisted) and cookie arrive.
    let reply = raw_exchange(UNTRUSTED, gateway.addr(), &raw_get("/", &payload)).await;
    assert_eq!(reply.upstream_header("x-tenant"), ["acme"]);
    assert_eq!(reply.upstream_header("cookie"), ["session=1"]);

    let listings: [&[&str]; 4] = [
        &["Connection: close, x-tenant, cookie"],
        &["Connection: keep-alive, X-Tenant,Cookie"],
        &["Connection: x-tenant", "Connection: cookie"],
        &["Connection: cookie, x-tenant"],
    ];
    for peer in [UNTRUSTED, TRUSTED] {
        for listing in listings {
            let headers: Vec<&str> = payload.iter().chain(listing).copied().collect();
            let reply = raw_exchange(peer, gateway.addr(), &raw_get("/", &headers)).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            let context = format!("from {peer} with {listing:?}");
            assert_eq!(
                reply.upstream_header("x-tenant"),
                Vec::<String>::new(),
                "{context}"
            );
            assert_eq!(
                reply.upstream_header("cookie"),
                Vec::<String>::new(),
                "{context}"
            );
            assert_eq!(
                reply.upstream_header("connection"),
                Vec::<String>::new(),
                "{context}"
            );
            assert_eq!(
                reply.upstream_header("x-region"),
                ["eu"],
                "{context}: unlisted names still pass"
            );
        }
    }
}

#[tokio::test]
async fn standard_client_headers_reach_the_upstream_from_anyone() {
    let (gateway, _) = header_gateway("", "").await;
    let standard = [
        ("accept", "application/json"),
        ("accept-language", "de-CH"),
        ("user-agent", "integration-test/1.0"),
        ("cookie", "session=abc"),
        ("authorization", "Bearer token-123"),
        ("content-type", "application/json"),
        ("cache-control", "no-cache"),
        ("origin", "http://public.example"),
        ("referer", "http://public.example/page"),
        ("x-requested-with", "XMLHttpRequest"),
    ];
    for peer in [UNTRUSTED, TRUSTED] {
        let mut builder = http::Request::post("/submit").header("host", PUBLIC_HOST);
        for (name, value) in standard {
            builder = builder.header(name, value);
        }
        let reply = send_as(
            peer,
            &gateway,
            builder.body(Full::new(Bytes::from("{}"))).expect("request"),
        )
        .await;
        assert_eq!(reply.status, 200);
        for (name, value) in standard {
            assert_eq!(reply.upstream_header(name), [value], "{name} from {peer}");
        }
        assert_eq!(reply.json()["body_len"], 2);
    }
}

#[tokio::test]
async fn unknown_client_headers_are_dropped_unless_the_route_allowlists_them() {
    let upstream = spawn_recording_upstream("up").await;
    let config = ConfigText::new()
        .upstream("up", upstream)
        .route("plain", "/plain", "up")
        .route("listed", "/listed", "up")
        .with("forward_client_headers = [\"X-Internal-Admin\"]");
    let gateway = TestGateway::start(&config).await;
    let sent = [("x-internal-admin", "true"), ("x-other-unknown", "1")];
    for peer in [UNTRUSTED, TRUSTED] {
        let reply = get_as(peer, &gateway, "/plain", &sent).await;
        assert_eq!(
            reply.upstream_header("x-internal-admin"),
            Vec::<String>::new(),
            "from {peer}"
        );
        assert_eq!(
            reply.upstream_header("x-other-unknown"),
            Vec::<String>::new(),
            "from {peer}"
        );

        let reply = get_as(peer, &gateway, "/listed", &sent).await;
        assert_eq!(
            reply.upstream_header("x-internal-admin"),
            ["true"],
            "from {peer}"
        );
        assert_eq!(
            reply.upstream_header("x-other-unknown"),
            Vec::<String>::new(),
            "from {peer}"
        );
    }
}

#[tokio::test]
async fn forbidden_names_in_forward_client_headers_are_dropped_with_a_warning() {
    let upstream = spawn_recording_upstream("up").await;
    let config = ConfigText::new()
        .upstream("up", upstream)
        .route("all", "/", "up")
        .with(
            "forward_client_headers = [\"x-forwarded-for\", \"connection\", \"x-remote-user\", \"expect\", \"x-tenant\"]",
        );
    let gateway = TestGateway::start(&config).await;

    let snapshot = gateway.gateway.snapshot();
    let warned: Vec<&str> = snapshot
        .warnings
        .iter()
        .filter(|w| !w.is_error() && w.path.contains("forward_client_headers"))
        .map(|w| w.path.as_str())
        .collect();
    assert_eq!(
        warned,
        [
            "routes[0].forward_client_headers[0]",
            "routes[0].forward_client_headers[1]",
            "routes[0].forward_client_headers[2]",
            "routes[0].forward_client_headers[3]",
        ],
        "one warning per forbidden name, none for x-tenant: {:?}",
        snapshot.warnings
    );

    let reply = raw_exchange(
        UNTRUSTED,
        gateway.addr(),
        &raw_get(
            "/",
            &[
                "X-Forwarded-For: 6.6.6.6",
                "Connection: keep-alive",
                "X-Remote-User: admin",
                "X-Tenant: acme",
            ],
        ),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.upstream_header("x-forwarded-for"), ["127.0.0.2"]);
    assert_eq!(reply.upstream_header("connection"), Vec::<String>::new());
    assert_eq!(reply.upstream_header("x-remote-user"), Vec::<String>::new());
    assert_eq!(
        reply.upstream_header("x-tenant"),
        ["acme"],
        "the allowed name still works"
    );
}

// ---------------------------------------------------------------------------------------
// Response headers: hop-by-hop removal and security headers.
// ---------------------------------------------------------------------------------------

/// An upstream answering every request with `headers` and body "body".
async fn spawn_upstream_with_headers(
    headers: &'static [(&'static str, &'static str)],
) -> SocketAddr {
    spawn_upstream(Router::new().fallback(any(move || async move {
        let mut response = axum::response::Response::new(body("body"));
        for (name, value) in headers {
            response.headers_mut().append(
                http::HeaderName::from_static(name),
                http::HeaderValue::from_static(value),
            );
        }
        response
    })))
    .await
}

/// Route `up`: `/app` to `upstream`, with `server` lines in `[server]`.
fn one_route_to(upstream: SocketAddr, server: &str) -> ConfigText {
    ConfigText::new()
        .server(server)
        .route_to("up", "/app", upstream)
}

const SECURITY_HEADERS: [&str; 4] = [
    "x-content-type-options",
    "content-security-policy",
    "referrer-policy",
    "strict-transport-security",
];

#[tokio::test]
async fn hop_by_hop_response_headers_from_the_upstream_are_removed() {
    let upstream = spawn_upstream_with_headers(&[
        ("connection", "x-upstream-hop"),
        ("keep-alive", "timeout=5"),
        ("x-upstream-hop", "secret"),
        ("proxy-authenticate", "Basic realm=\"inner\""),
        ("trailer", "x-checksum"),
        ("upgrade", "h2c"),
        ("x-kept", "yes"),
    ])
    .await;
    // Control: the upstream really sends them.
    let direct = raw_exchange(TRUSTED, upstream, &raw_get("/app", &[])).await;
    for name in [
        "keep-alive",
        "x-upstream-hop",
        "proxy-authenticate",
        "trailer",
        "upgrade",
    ] {
        assert!(
            direct.header(name).is_some(),
            "the upstream sends {name}: {direct:?}"
        );
    }

    let gateway = TestGateway::start(&one_route_to(upstream, "")).await;
    let reply = raw_exchange(UNTRUSTED, gateway.addr(), &raw_get("/app", &[])).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "body");
    for name in [
        "keep-alive",
        "x-upstream-hop",
        "proxy-authenticate",
        "trailer",
        "upgrade",
    ] {
        assert_eq!(
            reply.header(name),
            None,
            "{name} reached the client: {reply:?}"
        );
    }
    assert!(
        !reply
            .header("connection")
            .unwrap_or_default()
            .contains("x-upstream-hop"),
        "the upstream's Connection reached the client: {reply:?}"
    );
    assert_eq!(reply.header("x-kept"), Some("yes"));
}

#[tokio::test]
async fn security_headers_are_added_when_the_upstream_sets_none() {
    let upstream = spawn_upstream_with_headers(&[]).await;
    let gateway = TestGateway::start(&one_route_to(
        upstream,
        "public_base_url = \"http://example.com\"",
    ))
    .await;
    // A proxied response and one of the gateway's own (404).
    for path in ["/app", "/elsewhere"] {
        let reply = get_as(UNTRUSTED, &gateway, path, &[]).await;
        let headers = &reply.headers;
        assert_eq!(
            headers
                .get_all("x-content-type-options")
                .iter()
                .collect::<Vec<_>>(),
            ["nosniff"],
            "{path}"
        );
        assert_eq!(
            headers
                .get_all("content-security-policy")
                .iter()
                .collect::<Vec<_>>(),
            ["frame-ancestors 'self'"],
            "{path}"
        );
        assert_eq!(
            headers.get_all("referrer-policy").iter().count(),
            1,
            "{path}"
        );
        assert_eq!(
            headers.get("strict-transport-security"),
            None,
            "{path}: no HSTS over http"
        );
    }
}

#[tokio::test]
async fn security_headers_set_by_the_upstream_are_not_overwritten() {
    let upstream = spawn_upstream_with_headers(&[
        ("x-content-type-options", "nosniff"),
        ("content-security-policy", "default-src 'none'"),
        ("referrer-policy", "no-referrer"),
        ("strict-transport-security", "max-age=60"),
    ])
    .await;
    let gateway = TestGateway::start(&one_route_to(
        upstream,
        "public_base_url = \"https://example.com\"",
    ))
    .await;
    let reply = get_as(UNTRUSTED, &gateway, "/app", &[]).await;
    let expected = [
        ("x-content-type-options", "nosniff"),
        ("content-security-policy", "default-src 'none'"),
        ("referrer-policy", "no-referrer"),
        ("strict-transport-security", "max-age=60"),
    ];
    for (name, value) in expected {
        assert_eq!(
            reply.headers.get_all(name).iter().collect::<Vec<_>>(),
            [value],
            "{name}"
        );
    }
}

#[tokio::test]
async fn security_headers_are_absent_when_disabled() {
    let upstream = spawn_upstream_with_headers(&[]).await;
    let gateway = TestGateway::start(&one_route_to(
        upstream,
        "public_base_url = \"https://example.com\"\nsecurity_headers = false",
    ))
    .await;
    for path in ["/app", "/elsewhere"] {
        let reply = get_as(UNTRUSTED, &gateway, path, &[]).await;
        for name in SECURITY_HEADERS {
            assert_eq!(reply.headers.get(name), None, "{path}: {name}");
        }
        assert!(
            reply.headers.contains_key("x-request-id"),
            "{path}: the request id is still echoed"
        );
    }
}

#[tokio::test]
async fn strict_transport_security_follows_the_transport_not_public_base_url() {
    let upstream = spawn_upstream_with_headers(&[]).await;
    // Plain HTTP, trusting 127.0.0.1 only. HSTS needs a trusted proxy that says its
    // client spoke HTTPS; an https public_base_url alone is not HTTPS on this hop.
    let cases = [
        (TRUSTED, Some("https"), true),
        (TRUSTED, Some("http"), false),
        (TRUSTED, None, false),
        (UNTRUSTED, Some("https"), false),
        (UNTRUSTED, None, false),
    ];
    let config =
        one_route_to(upstream, "public_base_url = \"https://example.com/app\"").trust_loopback();
    let gateway = TestGateway::start(&config).await;
    for (source, proto, hsts) in cases {
        let headers: Vec<(&str, &str)> = proto
            .map(|p| ("x-forwarded-proto", p))
            .into_iter()
            .collect();
        let reply = get_as(source, &gateway, "/app", &headers).await;
        let value = reply.headers.get("strict-transport-security");
        assert_eq!(value.is_some(), hsts, "{source} {proto:?}: {value:?}");
        if let Some(value) = value {
            assert!(
                value.to_str().unwrap_or_default().contains("max-age="),
                "{value:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Streaming: request and response bodies pass through without being buffered.
// ---------------------------------------------------------------------------------------

const MIB: usize = 1024 * 1024;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// An upstream that reads the request body frame by frame (never holding more than one)
/// and answers `{"len", "hash"}`; it fires `first_bytes` when the first data arrives.
async fn spawn_body_counting_upstream(first_bytes: Signal) -> SocketAddr {
    spawn_upstream(Router::new().fallback(any(move |request: Request| {
        let first_bytes = first_bytes.clone();
        async move {
            let mut body = request.into_body();
            let (mut len, mut hash) = (0u64, FNV_OFFSET);
            while let Some(frame) = body.frame().await {
                let frame = frame.expect("request body frame");
                if let Some(data) = frame.data_ref() {
                    len += data.len() as u64;
                    hash = fnv1a(hash, data);
                    first_bytes.fire();
                }
            }
            axum::Json(json!({ "len": len, "hash": hash }))
        }
    })))
    .await
}

/// A client on `addr` over a fresh hyper HTTP/1.1 connection.
async fn hyper_client<B>(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = connect_from(UNTRUSTED, addr).await;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    sender
}

#[tokio::test]
async fn a_64_mib_streamed_upload_reaches_the_upstream_whole() {
    let (signal, _) = Signal::new();
    let upstream = spawn_body_counting_upstream(signal).await;
    let gateway = TestGateway::start(&one_route_to(upstream, "")).await;

    const CHUNKS: u64 = 64;
    let expected_hash = Arc::new(Mutex::new(FNV_OFFSET));
    let hasher = Arc::clone(&expected_hash);
    // Generated chunk by chunk as the client sends it: no Content-Length, so chunked.
    let stream = futures_util::stream::unfold(0u64, move |index| {
        let hasher = Arc::clone(&hasher);
        async move {
            (index < CHUNKS).then(|| {
                let chunk: Vec<u8> = (0..MIB)
                    .map(|j| (j as u64).wrapping_mul(31).wrapping_add(index) as u8)
                    .collect();
                let mut hash = hasher.lock().expect("hash lock");
                *hash = fnv1a(*hash, &chunk);
                (
                    Ok::<_, Infallible>(Frame::data(Bytes::from(chunk))),
                    index + 1,
                )
            })
        }
    });
    let upload = http::Request::post("/app/upload")
        .header("host", PUBLIC_HOST)
        .header("content-type", "application/octet-stream")
        .body(StreamBody::new(stream))
        .expect("request");
    let mut client = hyper_client(gateway.addr()).await;
    let reply = within_for(Duration::from_secs(120), "a 64 MiB upload", async {
        let response = client.send_request(upload).await.expect("response");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, body)
    })
    .await;
    assert_eq!(reply.0, 200, "{}", String::from_utf8_lossy(&reply.1));
    let seen: Value = serde_json::from_slice(&reply.1).expect("JSON");
    assert_eq!(seen["len"], CHUNKS * MIB as u64);
    assert_eq!(
        seen["hash"],
        *expected_hash.lock().expect("hash lock"),
        "the bytes arrive intact and in order"
    );
}

#[tokio::test]
async fn an_upload_reaches_the_upstream_while_the_client_is_still_sending() {
    let (first_bytes, first_bytes_arrived) = Signal::new();
    let upstream = spawn_body_counting_upstream(first_bytes).await;
    let gateway = TestGateway::start(&one_route_to(upstream, "")).await;

    // The client sends one chunk, then holds the rest back until the upstream has seen
    // the first one: a gateway that buffers the whole body never gets there.
    let first = Bytes::from(vec![b'a'; 64 * 1024]);
    let rest = Bytes::from(vec![b'b'; 64 * 1024]);
    let parts =
        futures_util::stream::unfold((0, Some(first_bytes_arrived)), move |(step, waiter)| {
            let (first, rest) = (first.clone(), rest.clone());
            async move {
                match step {
                    0 => Some((Ok::<_, Infallible>(Frame::data(first)), (1, waiter))),
                    1 => {
                        let waiter = waiter.expect("waited on once");
                        waiter.await.expect("the upstream signals its first bytes");
                        Some((Ok(Frame::data(rest)), (2, None)))
                    }
                    _ => None,
                }
            }
        });
    let upload = http::Request::post("/app/upload")
        .header("host", PUBLIC_HOST)
        .body(StreamBody::new(parts))
        .expect("request");
    let mut client = hyper_client(gateway.addr()).await;
    let (status, body) = within("an upload whose rest waits for the upstream", async {
        let response = client.send_request(upload).await.expect("response");
        let status = response.status();
        (
            status,
            response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes(),
        )
    })
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let seen: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(seen["len"], 128 * 1024);
}

#[tokio::test]
async fn a_chunked_response_reaches_the_client_before_the_upstream_finishes_it() {
    let (open_gate, gate) = Gate::new();
    let upstream = spawn_upstream(Router::new().fallback(any(move || {
        let gate = gate.clone();
        async move {
            // First chunk, then nothing until the test opens the gate, then the second.
            let chunks = futures_util::stream::unfold(0, move |step| {
                let gate = gate.clone();
                async move {
                    match step {
                        0 => Some((Ok::<_, Infallible>(Bytes::from_static(b"first chunk")), 1)),
                        1 => {
                            gate.wait().await;
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            Some((Ok(Bytes::from_static(b"second chunk")), 2))
                        }
                        _ => None,
                    }
                }
            });
            Body::from_stream(chunks)
        }
    })))
    .await;
    let gateway = TestGateway::start(&one_route_to(upstream, "")).await;

    let mut client = hyper_client::<Full<Bytes>>(gateway.addr()).await;
    let response = within(
        "response head",
        client.send_request(get_for_host("/app/stream", PUBLIC_HOST, &[])),
    )
    .await
    .expect("response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    // The upstream has sent only the first chunk: it waits for the gate, which opens
    // only once the first chunk is here. A buffering gateway makes this time out.
    let mut received = Vec::new();
    while received.len() < b"first chunk".len() {
        let frame = within(
            "the first chunk, before the upstream sends the second",
            body.frame(),
        )
        .await
        .expect("a frame before the end")
        .expect("frame");
        received.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..]));
    }
    assert_eq!(received, b"first chunk");
    open_gate.send(()).expect("the upstream waits on the gate");
    let rest = within("the rest of the body", body.collect())
        .await
        .expect("rest")
        .to_bytes();
    assert_eq!(rest, "second chunk");
}

// ---------------------------------------------------------------------------------------
// Limits: request head size, connection count, header read timeout, idle timeout.
// ---------------------------------------------------------------------------------------

/// A `GET /app` head of exactly `size` bytes, request line and final empty line included.
fn head_of_size(size: usize) -> String {
    let bare = format!("GET /app HTTP/1.1\r\nHost: {PUBLIC_HOST}\r\nX-Pad: \r\n\r\n");
    let pad = "a".repeat(size - bare.len());
    let head = format!("GET /app HTTP/1.1\r\nHost: {PUBLIC_HOST}\r\nX-Pad: {pad}\r\n\r\n");
    assert_eq!(head.len(), size);
    head
}

/// Sends `head` in two writes (the split at `split`, with a pause between) and reads the
/// answer.
async fn send_in_two(gateway: &TestGateway, head: &str, split: usize) -> RawReply {
    let mut stream = connect_from(UNTRUSTED, gateway.addr()).await;
    stream.write_all(&head.as_bytes()[..split]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The gateway may have answered and closed already: the rest may not go through.
    let _ = stream.write_all(&head.as_bytes()[split..]).await;
    read_reply(&mut stream).await
}

#[tokio::test]
async fn max_header_size_is_exact_to_the_byte() {
    let upstream = CountingUpstream::spawn().await;
    let limited =
        TestGateway::start(&one_route_to(upstream.addr, "max_header_size = \"8KiB\"")).await;
    let default = TestGateway::start(&one_route_to(upstream.addr, "")).await;
    for (gateway, limit) in [(&limited, 8 * 1024), (&default, 32 * 1024)] {
        let fits = raw_exchange(UNTRUSTED, gateway.addr(), &head_of_size(limit)).await;
        assert_eq!(
            fits.status, 200,
            "a head of exactly {limit} bytes: {fits:?}"
        );
        let over = raw_exchange(UNTRUSTED, gateway.addr(), &head_of_size(limit + 1)).await;
        assert_eq!(over.status, 431, "a head of {} bytes: {over:?}", limit + 1);
        // In pieces: the first of them alone already over the limit, or not.
        for split in [limit / 2, limit - 1, limit] {
            let fits = send_in_two(gateway, &head_of_size(limit), split).await;
            assert_eq!(fits.status, 200, "{limit} bytes split at {split}");
            let over = send_in_two(gateway, &head_of_size(limit + 1), split).await;
            assert_eq!(over.status, 431, "{} bytes split at {split}", limit + 1);
        }
    }
    // The issue's example: 48 KB under the 32 KiB default.
    let reply = raw_exchange(UNTRUSTED, default.addr(), &head_of_size(48_000)).await;
    assert_eq!(reply.status, 431, "{reply:?}");
}

#[tokio::test]
async fn a_request_head_larger_than_max_header_size_gets_431() {
    let upstream = CountingUpstream::spawn().await;
    let gateway =
        TestGateway::start(&one_route_to(upstream.addr, "max_header_size = \"8KiB\"")).await;

    let small = format!("X-Big: {}", "a".repeat(4_000));
    let reply = raw_exchange(UNTRUSTED, gateway.addr(), &raw_get("/app", &[&small])).await;
    assert_eq!(reply.status, 200, "control: a 4 KB header fits");

    let big = format!("X-Big: {}", "a".repeat(20_000));
    let reply = raw_exchange(UNTRUSTED, gateway.addr(), &raw_get("/app", &[&big])).await;
    assert_eq!(reply.status, 431, "{reply:?}");
    assert_eq!(
        upstream.hits(),
        1,
        "the oversized request never reached the upstream"
    );
}

/// A keep-alive connection that has completed one request (so the gateway holds it).
async fn open_served_connection(addr: SocketAddr) -> (TcpStream, RawReply) {
    let mut stream = connect_from(UNTRUSTED, addr).await;
    stream
        .write_all(raw_get("/app", &[]).as_bytes())
        .await
        .expect("write");
    let reply = read_reply(&mut stream).await;
    (stream, reply)
}

#[tokio::test]
async fn connections_beyond_max_connections_get_503_until_one_is_released() {
    let upstream = CountingUpstream::spawn().await.addr;
    let gateway = TestGateway::start(&one_route_to(upstream, "max_connections = 2")).await;

    let (first, reply) = open_served_connection(gateway.addr()).await;
    assert_eq!(reply.status, 200);
    let (mut second, reply) = open_served_connection(gateway.addr()).await;
    assert_eq!(reply.status, 200);

    let (mut third, reply) = open_served_connection(gateway.addr()).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(
        within(
            "the refused connection closing",
            read_shows_closed(&mut third)
        )
        .await
    );

    // Releasing one makes room: new connections are served again.
    drop(first);
    within("a new connection to be served", async {
        loop {
            let (_stream, reply) = open_served_connection(gateway.addr()).await;
            match reply.status {
                200 => break,
                503 => tokio::time::sleep(Duration::from_millis(20)).await,
                other => panic!("unexpected status {other}: {reply:?}"),
            }
        }
    })
    .await;

    // The connection held all along still works.
    second
        .write_all(raw_get("/app", &[]).as_bytes())
        .await
        .expect("write");
    assert_eq!(read_reply(&mut second).await.status, 200);
}

#[tokio::test]
async fn a_client_stalling_inside_its_request_line_is_disconnected() {
    let upstream = CountingUpstream::spawn().await.addr;
    let gateway =
        TestGateway::start(&one_route_to(upstream, "header_read_timeout = \"300ms\"")).await;

    let mut stalled = connect_from(UNTRUSTED, gateway.addr()).await;
    stalled
        .write_all(b"GET /app HT")
        .await
        .expect("write half a request line");

    // Meanwhile a normal client is served.
    let reply = raw_exchange(UNTRUSTED, gateway.addr(), &raw_get("/app", &[])).await;
    assert_eq!(reply.status, 200);

    assert!(
        within(
            "the stalled client being disconnected",
            read_shows_closed(&mut stalled)
        )
        .await
    );
}

#[tokio::test]
async fn a_client_trickling_its_request_head_is_disconnected() {
    let upstream = CountingUpstream::spawn().await.addr;
    let gateway =
        TestGateway::start(&one_route_to(upstream, "header_read_timeout = \"300ms\"")).await;

    // One byte every 50 ms keeps the socket busy but never completes the head: the
    // timeout runs from the head's first byte, not from the last one.
    let mut stream = connect_from(UNTRUSTED, gateway.addr()).await;
    stream
        .write_all(b"GET /app HTTP/1.1\r\nX-Slow: ")
        .await
        .expect("write");
    within("the trickling client being disconnected", async {
        let (mut reader, mut writer) = stream.split();
        let mut buffer = [0u8; 1024];
        loop {
            tokio::select! {
                read = reader.read(&mut buffer) => {
                    match read {
                        Ok(0) | Err(_) => return,
                        Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buffer[..n])),
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(50)) => {
                    if writer.write_all(b"a").await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_keep_alive_pause_between_requests_is_not_header_read_time() {
    let upstream = CountingUpstream::spawn().await.addr;
    let gateway =
        TestGateway::start(&one_route_to(upstream, "header_read_timeout = \"300ms\"")).await;

    let (mut stream, reply) = open_served_connection(gateway.addr()).await;
    assert_eq!(reply.status, 200);
    // Idle (not sending a head) for longer than header_read_timeout.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stream
        .write_all(raw_get("/app", &[]).as_bytes())
        .await
        .expect("write");
    assert_eq!(read_reply(&mut stream).await.status, 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let upstream = CountingUpstream::spawn().await.addr;
    let gateway = TestGateway::start(&one_route_to(upstream, "idle_timeout = \"300ms\"")).await;

    let (mut stream, reply) = open_served_connection(gateway.addr()).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("connection")
            .is_none_or(|v| !v.eq_ignore_ascii_case("close")),
        "kept alive: {reply:?}"
    );
    assert!(
        within(
            "the idle connection being closed",
            read_shows_closed(&mut stream)
        )
        .await
    );
}

#[tokio::test]
async fn a_response_slower_than_idle_timeout_is_not_cut() {
    let (open_gate, gate) = Gate::new();
    let upstream = spawn_upstream(Router::new().fallback(any(move || {
        let gate = gate.clone();
        async move {
            gate.wait().await;
            "finally"
        }
    })))
    .await;
    let gateway = TestGateway::start(&one_route_to(upstream, "idle_timeout = \"300ms\"")).await;

    let mut stream = connect_from(UNTRUSTED, gateway.addr()).await;
    stream
        .write_all(raw_get("/app", &[]).as_bytes())
        .await
        .expect("write");
    // The request is in flight for longer than idle_timeout: that is not idleness.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    open_gate.send(()).expect("the upstream waits on the gate");
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "finally");
}

#[tokio::test]
async fn a_page_carrying_a_login_code_is_served_with_no_referrer() {
    let upstream = spawn_recording_upstream("ui").await;
    let gateway = TestGateway::start(ConfigText::new().route_to("ui", "/", upstream)).await;
    let policy = |reply: &Reply| {
        reply
            .headers
            .get("referrer-policy")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let landing = send(
        gateway.addr(),
        get(gateway.addr(), "/?x=1&auth_code=abc", &[]),
    )
    .await;
    assert_eq!(landing.status, 200);
    assert_eq!(policy(&landing).as_deref(), Some("no-referrer"));
    let other = send(
        gateway.addr(),
        get(gateway.addr(), "/?code_auth_code=abc", &[]),
    )
    .await;
    assert_eq!(
        policy(&other).as_deref(),
        Some("strict-origin-when-cross-origin")
    );
}

// ---------------------------------------------------------------------------------------
// HTTP versions and hosts: an HTTP/1.0 upstream, an empty `Host`, what passes untouched.
// ---------------------------------------------------------------------------------------

/// An upstream that speaks as Python's `http.server` does by default: every answer is
/// `HTTP/1.0 200 OK` with a `Content-Length`, and the connection is closed after it.
/// Counts the connections it accepted.
async fn spawn_http10_upstream() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0u8; 1024];
                while raw::find(&head, b"\r\n\r\n").is_none() {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                let answer = "HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6 Python/3.12\r\n\
                              Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, accepted)
}

/// RFC 9110 §6.2: a proxy answers in its own version. An HTTP/1.0 upstream must not make
/// an HTTP/1.1 client's connection HTTP/1.0, nor end it after each response.
#[tokio::test]
async fn an_http_1_0_upstream_gets_http_1_1_clients_answered_in_1_1_on_a_kept_connection() {
    let (upstream, accepted) = spawn_http10_upstream().await;
    let gateway = TestGateway::start(ConfigText::new().route_to("py", "/", upstream)).await;
    let mut stream = connect_from(UNTRUSTED, gateway.addr()).await;
    for path in ["/first", "/second"] {
        stream
            .write_all(raw_get(path, &[]).as_bytes())
            .await
            .expect("write");
        let reply = read_reply(&mut stream).await;
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
        assert_eq!(reply.version, "HTTP/1.1", "{path}: {reply:?}");
        assert_eq!(reply.text(), "hello", "{path}");
        assert_ne!(
            reply.header("connection"),
            Some("close"),
            "{path}: {reply:?}"
        );
    }
    // Both answers came on the one client connection; upstream, each took its own.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// A `Host` with an empty value (RFC 9112 §3.2 allows it) names no host: the upstream
/// gets the listener's address as `X-Forwarded-Host`, never an empty value.
#[tokio::test]
async fn an_empty_host_gets_the_listeners_address_as_x_forwarded_host() {
    let upstream = spawn_recording_upstream("app").await;
    let listen = closed_port();
    let config = ConfigText::new()
        .server(&format!("listen = \"{listen}\""))
        .route_to("app", "/", upstream);
    let gateway = TestGateway::start(&config).await;
    let request = raw::get_request("/", "", &["Connection: close"]);
    let reply = raw_exchange(UNTRUSTED, gateway.addr(), &request).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.upstream_header("x-forwarded-host"),
        [listen.to_string()]
    );
    // With `public_base_url`, its host, as for any other request.
    let (gateway, _) = header_gateway("", "").await;
    let reply = raw_exchange(UNTRUSTED, gateway.addr(), &request).await;
    assert_eq!(reply.upstream_header("x-forwarded-host"), ["example.com"]);
}

/// What README promises: the gateway neither decodes nor re-encodes a body, so an
/// upstream's `Content-Encoding` reaches the client with the bytes it was sent with, and
/// the client's `Accept-Encoding` reaches the upstream.
#[tokio::test]
async fn content_encoding_passes_through_untouched_both_ways() {
    // Not a valid gzip stream: the gateway must not look inside.
    const ENCODED: &[u8] = b"\x1f\x8b\x08\x00not really gzip";
    let accept_encoding = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&accept_encoding);
    let upstream = spawn_upstream(Router::new().fallback(any(move |request: Request| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().unwrap().extend(
                request
                    .headers()
                    .get_all("accept-encoding")
                    .iter()
                    .map(|v| v.to_str().unwrap().to_owned()),
            );
            let mut response = axum::response::Response::new(body(ENCODED));
            response
                .headers_mut()
                .insert("content-encoding", http::HeaderValue::from_static("gzip"));
            response
        }
    })))
    .await;
    let gateway = TestGateway::start(ConfigText::new().route_to("app", "/", upstream)).await;
    let reply = get_as(UNTRUSTED, &gateway, "/", &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert_eq!(reply.body.as_ref(), ENCODED);
    assert_eq!(*accept_encoding.lock().unwrap(), ["gzip, br"]);
}

/// A header the route allowlists and the client sends on several lines reaches the
/// upstream with every value, in order.
#[tokio::test]
async fn a_repeated_allowlisted_header_passes_with_every_value() {
    let (gateway, _) = header_gateway("", "").await;
    let request = raw_get(
        "/",
        &[
            "X-Tenant: acme",
            "X-Region: eu",
            "X-Tenant: globex",
            "Connection: close",
        ],
    );
    let reply = raw_exchange(UNTRUSTED, gateway.addr(), &request).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.upstream_header("x-tenant"), ["acme", "globex"]);
    assert_eq!(reply.upstream_header("x-region"), ["eu"]);
}
