//! Upstream fairness over real sockets: requests on their way to the upstreams are
//! capped per client address (resolved through `trust.proxies`) and in all; one more
//! gets 503 with `Retry-After` and never reaches the upstream, other clients keep being
//! served, the place comes back when a request ends, and each refusal is counted.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use common::{
    ConfigText, OTHER_PROXY, Reply, TRUSTED, TestGateway, UNTRUSTED, get_from, raw, send,
    spawn_upstream, wait_until, within,
};
use http_body_util::Full;
use hyper_util::rt::TokioIo;

/// An upstream whose `/hang` never answers and `/ok` answers at once; the count of
/// requests that reached `/hang`.
async fn spawn_hanging_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let hanging = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hanging);
    let router = Router::new()
        .route(
            "/hang",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<&'static str>()
            }),
        )
        .route("/ok", get(|| async { "ok" }));
    (spawn_upstream(router).await, hanging)
}

fn config(upstream: SocketAddr, server: &str) -> ConfigText {
    ConfigText::new()
        .server(server)
        .trust_loopback()
        .admin()
        .upstream("app", upstream)
        .with("timeout = \"60s\"")
        .route("app", "/", "app")
}

/// Starts `GET /hang` from `source` with `headers` on a connection of its own, and
/// returns the task holding it (abort it to leave).
fn hang_from(
    source: IpAddr,
    gateway: SocketAddr,
    headers: &[(&'static str, &'static str)],
) -> tokio::task::JoinHandle<()> {
    let headers = headers.to_vec();
    tokio::spawn(async move {
        let stream = raw::connect_from(source, gateway).await;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut request = http::Request::get("/hang").header("host", gateway.to_string());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let _ = sender
            .send_request(request.body(Full::new(Bytes::new())).unwrap())
            .await;
    })
}

fn assert_busy(reply: &Reply, says: &str) {
    reply.assert_says(503, says);
    assert_eq!(reply.header("retry-after"), Some("1"));
}

async fn refusals(gateway: &TestGateway, limit: &str) -> String {
    let admin = gateway.admin();
    let metrics = within("metrics", send(admin, common::get(admin, "/metrics", &[])))
        .await
        .text();
    let line = format!("fluxlit_upstream_refused_total{{limit=\"{limit}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "0".to_owned())
}

#[tokio::test]
async fn one_client_gets_503_beyond_its_cap_while_others_are_served() {
    let (upstream, hanging) = spawn_hanging_upstream().await;
    let gateway =
        TestGateway::start(config(upstream, "max_upstream_requests_per_client = 2")).await;
    let addr = gateway.addr();

    let first = hang_from(UNTRUSTED, addr, &[]);
    let _second = hang_from(UNTRUSTED, addr, &[]);
    wait_until("two requests upstream", || {
        hanging.load(Ordering::SeqCst) == 2
    })
    .await;

    // A third from the same client is refused before the upstream sees it.
    let reply = get_from(UNTRUSTED, &gateway, "/ok", &[]).await;
    assert_busy(&reply, "this client has its maximum of requests in flight");
    assert_eq!(refusals(&gateway, "client").await, "1");
    // Another client is served.
    assert_eq!(
        get_from(OTHER_PROXY, &gateway, "/ok", &[]).await.status,
        200
    );

    // The first client leaves one: its place comes back.
    first.abort();
    common::eventually("a place for the client", || async {
        let reply = get_from(UNTRUSTED, &gateway, "/ok", &[]).await;
        (reply.status == 200).then_some(())
    })
    .await;
    assert_eq!(hanging.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_cap() {
    let (upstream, hanging) = spawn_hanging_upstream().await;
    let gateway =
        TestGateway::start(config(upstream, "max_upstream_requests_per_client = 1")).await;
    let addr = gateway.addr();
    let one = [("x-forwarded-for", "203.0.113.1")];
    let _held = hang_from(TRUSTED, addr, &one);
    wait_until("a request upstream", || hanging.load(Ordering::SeqCst) == 1).await;

    let reply = get_from(TRUSTED, &gateway, "/ok", &one).await;
    assert_busy(&reply, "this client has its maximum");
    // The proxy's other clients are not the one that holds the place.
    let other = [("x-forwarded-for", "203.0.113.2")];
    assert_eq!(get_from(TRUSTED, &gateway, "/ok", &other).await.status, 200);
    // An untrusted peer cannot pose as another client with the header.
    let _untrusted = hang_from(UNTRUSTED, addr, &[("x-forwarded-for", "198.51.100.1")]);
    wait_until("its request upstream", || {
        hanging.load(Ordering::SeqCst) == 2
    })
    .await;
    let spoofed = [("x-forwarded-for", "198.51.100.2")];
    let reply = get_from(UNTRUSTED, &gateway, "/ok", &spoofed).await;
    assert_busy(&reply, "this client has its maximum");
}

#[tokio::test]
async fn beyond_the_global_cap_every_client_gets_503_until_a_request_ends() {
    let (upstream, hanging) = spawn_hanging_upstream().await;
    let gateway = TestGateway::start(config(upstream, "max_upstream_requests = 2")).await;
    let addr = gateway.addr();
    let first = hang_from(UNTRUSTED, addr, &[]);
    let _second = hang_from(OTHER_PROXY, addr, &[]);
    wait_until("two requests upstream", || {
        hanging.load(Ordering::SeqCst) == 2
    })
    .await;

    let reply = get_from(TRUSTED, &gateway, "/ok", &[]).await;
    assert_busy(&reply, "the gateway has its maximum of requests in flight");
    assert_eq!(refusals(&gateway, "global").await, "1");

    first.abort();
    common::eventually("a place comes back", || async {
        let reply = get_from(TRUSTED, &gateway, "/ok", &[]).await;
        (reply.status == 200).then_some(())
    })
    .await;
}

/// An upstream's own cap: a single-process server behind the gateway gets at most
/// `max_in_flight` requests at once; one more gets 503 naming it, whoever sends it, and
/// other upstreams are not affected.
#[tokio::test]
async fn an_upstreams_max_in_flight_refuses_one_more_until_a_request_ends() {
    let (upstream, hanging) = spawn_hanging_upstream().await;
    let (other, _) = spawn_hanging_upstream().await;
    let config = ConfigText::new()
        .admin()
        .upstream("py", upstream)
        .with("max_in_flight = 2\ntimeout = \"60s\"")
        .upstream("other", other)
        .route("py", "/", "py")
        .route("other", "/other", "other")
        .with("strip_prefix = true");
    let gateway = TestGateway::start(config).await;
    let addr = gateway.addr();
    let first = hang_from(UNTRUSTED, addr, &[]);
    let _second = hang_from(OTHER_PROXY, addr, &[]);
    wait_until("two requests upstream", || {
        hanging.load(Ordering::SeqCst) == 2
    })
    .await;

    // A third, from a client with nothing in flight, never reaches the upstream.
    let reply = get_from(TRUSTED, &gateway, "/ok", &[]).await;
    assert_busy(
        &reply,
        "upstream \"py\" has its maximum of 2 requests in flight",
    );
    assert_eq!(refusals(&gateway, "upstream").await, "1");
    // Another upstream is served meanwhile.
    assert_eq!(
        get_from(TRUSTED, &gateway, "/other/ok", &[]).await.status,
        200
    );

    // One request ends: its place comes back.
    first.abort();
    common::eventually("a place at the upstream", || async {
        let reply = get_from(TRUSTED, &gateway, "/ok", &[]).await;
        (reply.status == 200).then_some(())
    })
    .await;
    assert_eq!(hanging.load(Ordering::SeqCst), 2);
}

#[test]
fn max_in_flight_of_zero_or_on_a_builtin_upstream_is_refused_at_load() {
    let error = common::load_errors(
        ConfigText::new()
            .upstream("py", "127.0.0.1:9")
            .with("max_in_flight = 0")
            .route("py", "/", "py"),
        &[],
    );
    assert!(error.contains("upstreams.py.max_in_flight"), "{error}");
    assert!(error.contains("must be at least 1"), "{error}");
    let error = common::load_errors(
        ConfigText::new()
            .echo_upstream("echo")
            .with("max_in_flight = 4")
            .route("echo", "/", "echo"),
        &[],
    );
    assert!(error.contains("upstreams.echo.max_in_flight"), "{error}");
    assert!(error.contains("no server to protect"), "{error}");
}
