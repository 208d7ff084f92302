//! What the fuzz targets in `fuzz/` found, checked end to end through a real gateway and
//! a recording upstream.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use bytes::Bytes;
use common::{ConfigText, TRUSTED, TestGateway, send_from, spawn_recording_upstream};
use http_body_util::Full;

/// 127.0.0.1 trusted; `/` to a recording upstream, allowlisting `x-tenant`.
async fn gateway() -> TestGateway {
    let upstream = spawn_recording_upstream("app").await;
    let config = ConfigText::new()
        .trust_loopback()
        .route_to("app", "/", upstream)
        .with("forward_client_headers = [\"x-tenant\"]");
    TestGateway::start(&config).await
}

/// path_routing: decoding `%41` used to turn the path's UTF-8 into Latin-1 mojibake.
#[tokio::test]
async fn a_utf8_path_with_escapes_reaches_the_upstream_as_utf8() {
    let gateway = gateway().await;
    let request = http::Request::get("/caf%41/%C3%A9t%C3%A9/été")
        .header("host", gateway.addr().to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = send_from(TRUSTED, gateway.addr(), request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["path"], "/cafA/%C3%A9t%C3%A9/été");
}

/// connection_filter: a `Connection` value with a byte above 0x7F was skipped whole, so
/// the names it listed were forwarded.
#[tokio::test]
async fn connection_listed_names_are_dropped_even_beside_obs_text() {
    let gateway = gateway().await;
    let listing = http::HeaderValue::from_bytes(b"x-real-ip, x-tenant, caf\xe9").unwrap();
    let request = http::Request::get("/")
        .header("host", gateway.addr().to_string())
        .header("connection", listing)
        .header("x-real-ip", "203.0.113.9")
        .header("x-tenant", "acme")
        .header("accept", "text/plain")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = send_from(TRUSTED, gateway.addr(), request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.upstream_header("x-real-ip"), Vec::<String>::new());
    assert_eq!(reply.upstream_header("x-tenant"), Vec::<String>::new());
    assert_eq!(reply.upstream_header("accept"), ["text/plain"], "control");
}
