//! A route's auth cannot be dodged by spelling its path differently. `/api` needs a
//! token and `/` does not, and both lead to the SAME upstream, so a spelling that slipped
//! past the `/api` check to the `/` route would reach the API unauthenticated. Each
//! spelling is sent as raw bytes over a `TcpStream` (a client library would tidy it up)
//! and must be refused (400), challenged (401), or reach the upstream as a path that is
//! not under `/api`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::net::SocketAddr;

use common::auth::*;
use common::raw::raw_get;
use common::*;

/// `/api` behind provider `main` (HS256), `/` without auth, one counting upstream.
async fn gateway() -> (TestGateway, CountingUpstream) {
    let upstream = CountingUpstream::spawn().await;
    let config = api_behind_main(upstream.addr, "public");
    (start_with_files(&config, &SECRET_FILE).await, upstream)
}

/// What a spelling of a path gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// 400 from the gateway; nothing forwarded.
    BadRequest,
    /// Routed to `/api`: 401 without a token; nothing forwarded.
    Unauthorized,
    /// Routed to `/` and forwarded with this path, which is not under `/api`.
    Public(&'static str),
}

use Outcome::*;

/// Sends `target` without credentials from an untrusted client and checks `expected`.
async fn check(
    gateway: &TestGateway,
    upstream: &CountingUpstream,
    target: &str,
    expected: Outcome,
) {
    let before = upstream.hits();
    let reply = raw_get(UNTRUSTED, gateway.addr(), target, &[]).await;
    match expected {
        BadRequest => {
            assert_eq!(reply.status, 400, "{target}: {}", reply.text());
            assert_eq!(upstream.hits(), before, "{target} was forwarded");
        }
        Unauthorized => {
            assert_eq!(reply.status, 401, "{target}: {}", reply.text());
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Bearer realm=\"main\""),
                "{target}"
            );
            assert!(
                reply.text().contains("route \"api\""),
                "{target}: {}",
                reply.text()
            );
            assert_eq!(upstream.hits(), before, "{target} was forwarded");
        }
        Public(path) => {
            assert_eq!(reply.status, 200, "{target}: {}", reply.text());
            let seen = reply.json()["path"].as_str().unwrap().to_owned();
            assert_eq!(seen, path, "{target}");
            assert!(
                seen != "/api" && !seen.starts_with("/api/"),
                "{target} reached the upstream as {seen} without auth"
            );
            assert_eq!(upstream.hits(), before + 1);
        }
    }
}

#[tokio::test]
async fn dot_segments_are_resolved_before_the_route_is_chosen() {
    let (gateway, upstream) = gateway().await;
    for target in [
        "/public/../api/x",
        "/public/%2e%2e/api/x",
        "/public/%2E%2E/api/x",
        "/public/.%2e/api/x",
        "/public/%2e./api/x",
        "/public/x/../../api/x",
        "/api/./x",
        "/./api/x",
        "/%2e/api/x",
        "/api/x/..",
        "/public/..",
    ] {
        let expected = if target == "/public/.." {
            Public("/")
        } else {
            Unauthorized
        };
        check(&gateway, &upstream, target, expected).await;
    }
}

#[tokio::test]
async fn encoded_letters_and_repeated_slashes_are_the_same_path() {
    let (gateway, upstream) = gateway().await;
    for target in [
        "/%61pi/x",
        "/%61%70%69/x",
        "/ap%69",
        "/%61%70%69",
        "//api/x",
        "///api//x",
        "/api//x",
        "/api",
        "/api/",
    ] {
        check(&gateway, &upstream, target, Unauthorized).await;
    }
}

#[tokio::test]
async fn spellings_upstreams_read_differently_get_400() {
    let (gateway, upstream) = gateway().await;
    for target in [
        "/api%2fx",
        "/api%2Fx",
        "/public/..%2fapi/x",
        "/public%2f..%2fapi/x",
        "/api%5cx",
        "/public/..%5capi/x",
        "/public\\..\\api\\x",
        "/..",
        "/../api/x",
        "/%2e%2e/api/x",
        "/api%00",
        "/api%0a/x",
        "/api%zz",
        "/api%2",
        "*",
    ] {
        check(&gateway, &upstream, target, BadRequest).await;
    }
}

/// Prefixes are case-sensitive and matched on whole segments, like the routes of the
/// upstreams behind (FastAPI/Starlette): these reach `/` as they are, never as `/api`.
#[tokio::test]
async fn other_spellings_reach_the_public_route_unchanged_never_as_api() {
    let (gateway, upstream) = gateway().await;
    let cases = [
        ("/API/x", "/API/x"),
        ("/Api/x", "/Api/x"),
        ("/apix", "/apix"),
        ("/api.x", "/api.x"),
        // Double encoding is decoded once at most: `%25` stays encoded.
        ("/%2561pi/x", "/%2561pi/x"),
        // `;` is an ordinary character here (an upstream that strips path parameters, as
        // Java servlet containers do, would read some of these as /api).
        ("/api;x/y", "/api;x/y"),
        ("/api%3bx", "/api%3Bx"),
        ("/public/..;/api/x", "/public/..;/api/x"),
        // Encoded spaces around the prefix are not the prefix.
        ("/api%20/x", "/api%20/x"),
    ];
    for (target, seen) in cases {
        check(&gateway, &upstream, target, Public(seen)).await;
    }
}

#[tokio::test]
async fn an_absolute_form_target_is_normalised_the_same_way() {
    let (gateway, upstream) = gateway().await;
    let addr: SocketAddr = gateway.addr();
    for path in ["/public/../api/x", "//api/x", "/%61pi/x"] {
        let target = format!("http://{addr}{path}");
        check(&gateway, &upstream, &target, Unauthorized).await;
    }
}

#[tokio::test]
async fn with_a_token_the_upstream_gets_the_path_the_check_was_made_for() {
    let (gateway, upstream) = gateway().await;
    let authorization = format!("Authorization: {}", bearer(&hs256(&claims("ada"))));
    for target in ["/public/../api/x", "/%61pi/x", "//api//x", "/api/./x"] {
        let reply = raw_get(UNTRUSTED, gateway.addr(), target, &[&authorization]).await;
        assert_eq!(reply.status, 200, "{target}: {}", reply.text());
        assert_eq!(reply.json()["path"], "/api/x", "{target}");
        assert_eq!(reply.json()["headers"]["x-fluxlit-sub"][0], "ada");
    }
    assert_eq!(upstream.hits(), 4);
}
