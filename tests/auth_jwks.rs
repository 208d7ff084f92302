//! Providers whose keys come from a JWKS, against a real axum JWKS server whose keys,
//! `Cache-Control` and health the tests change at runtime, counting every fetch as the
//! identity provider would see it:
//!
//! - until the first fetch succeeds, requests get 503 (the gateway's problem, not the
//!   client's), and pass once the endpoint recovers;
//! - a new signing key is picked up from its unknown `kid`, without a restart;
//! - made-up kids cannot make the gateway hammer the endpoint: at most one fetch per
//!   `jwks_refetch_interval`;
//! - an endpoint that fails or disappears leaves the cached keys working (until
//!   `jwks_max_stale`);
//! - `Cache-Control: max-age` sets how long keys are kept;
//! - `jwks_file` works, and a broken one is refused at start.
//!
//! Timeouts only guard against hangs. Where a test must show something does *not*
//! happen for a while, it waits and then counts.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::time::{Duration, Instant};

use common::auth::*;
use common::*;
use futures_util::StreamExt;
use jsonwebtoken::Algorithm;

/// Provider `idp` (RS256 from `jwks_url`) on `/api`, to a counting upstream, with
/// `extra` added to the provider (e.g. `jwks_refetch_interval = "1s"`).
async fn jwks_gateway(jwks_url: &str, extra: &str) -> (TestGateway, CountingUpstream) {
    let upstream = CountingUpstream::spawn().await;
    let config = ConfigText::new()
        .upstream("app", upstream.addr)
        .guarded_route("api", "/api", "app", "idp")
        .jwks_provider("idp", jwks_url)
        .with(extra);
    (TestGateway::start(&config).await, upstream)
}

/// Waits until `token` is accepted on `/api/x` (hang-guarded), returning that reply.
async fn wait_until_accepted(gateway: &TestGateway, token: &str, what: &str) -> Reply {
    eventually(what, || async {
        let reply = get_with_token(gateway, "/api/x", token).await;
        (reply.status == 200).then_some(reply)
    })
    .await
}

/// The provider's JWKS cache as `/snapshot` shows it.
fn jwks_status(gateway: &TestGateway) -> fluxlit::auth::jwks::JwksStatus {
    gateway.gateway.snapshot().providers["idp"]
        .jwks_status()
        .expect("a JWKS provider has a JWKS status")
}

/// The statuses of `/api/x` with each of `tokens`, sent 50 at a time.
async fn fifty_at_a_time(
    gateway: &TestGateway,
    tokens: impl IntoIterator<Item = String>,
) -> Vec<u16> {
    futures_util::stream::iter(tokens)
        .map(|token| async move {
            get_with_token(gateway, "/api/x", &token)
                .await
                .status
                .as_u16()
        })
        .buffer_unordered(50)
        .collect()
        .await
}

/// A token naming a key id the JWKS does not have.
fn unknown_kid_token(kid: &str) -> String {
    token(Algorithm::RS256, Some(kid), Key::RsaB, &claims("mallory"))
}

#[tokio::test]
async fn until_the_first_fetch_succeeds_requests_get_503_and_then_pass() {
    let server = JwksServer::spawn(jwks(&[RSA_A_JWK])).await;
    server.set_failing(true);
    let (gateway, upstream) = jwks_gateway(&server.url(), "jwks_refetch_interval = \"1s\"").await;
    let token = rs256_a(&claims("ada"));

    // The endpoint has answered (500) at least once, so this is not "before the first try".
    eventually("a first fetch attempt", || async {
        (server.hits() > 0).then_some(())
    })
    .await;
    for _ in 0..3 {
        let reply = get_with_token(&gateway, "/api/x", &token).await;
        reply.assert_says(
            503,
            "signing keys of provider \"idp\" have not been loaded yet",
        );
        assert!(
            reply.headers.get("www-authenticate").is_none(),
            "not the client's credentials' fault: no challenge"
        );
    }
    // A request without a token is still told it needs one.
    let reply = get_from(UNTRUSTED, &gateway, "/api/x", &[]).await;
    assert_missing_token(&reply, "idp");
    assert_eq!(upstream.hits(), 0);
    let status = jwks_status(&gateway);
    assert_eq!(status.keys, 0);
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("500")),
        "{status:?}"
    );

    server.set_failing(false);
    let reply = wait_until_accepted(&gateway, &token, "the JWKS endpoint recovering").await;
    assert_eq!(reply.upstream_header("x-fluxlit-sub"), ["ada"]);
    assert_eq!(jwks_status(&gateway).last_error, None);
}

#[tokio::test]
async fn a_key_published_after_start_is_used_for_its_kid_without_a_restart() {
    let mut server = JwksServer::spawn(jwks(&[RSA_A_JWK])).await;
    let (gateway, _) = jwks_gateway(&server.url(), "jwks_refetch_interval = \"1s\"").await;
    let old = rs256_a(&claims("ada"));
    wait_until_accepted(&gateway, &old, "the first JWKS fetch").await;

    let new = token(Algorithm::RS256, Some("rsa-b"), Key::RsaB, &claims("grace"));
    let reply = get_with_token(&gateway, "/api/x", &new).await;
    assert_invalid_token(&reply, "idp", "kid");

    // The identity provider rotates: rsa-b is published next to rsa-a.
    server.publish(jwks(&[RSA_A_JWK, RSA_B_JWK]));
    let reply = wait_until_accepted(&gateway, &new, "the rotated key being accepted").await;
    assert_eq!(reply.upstream_header("x-fluxlit-sub"), ["grace"]);
    let reply = get_with_token(&gateway, "/api/x", &old).await;
    assert_eq!(reply.status, 200, "the old key still works while published");

    // rsa-a retired: once the gateway refetches, its tokens stop working. The unknown kid
    // below is what makes it refetch.
    server.publish(jwks(&[RSA_B_JWK]));
    let before = server.hits();
    eventually("a refetch after rsa-a was retired", || async {
        let _ = get_with_token(&gateway, "/api/x", &unknown_kid_token("rsa-x")).await;
        (server.hits() > before).then_some(())
    })
    .await;
    let reply = get_with_token(&gateway, "/api/x", &old).await;
    assert_invalid_token(&reply, "idp", "kid");
    let reply = get_with_token(&gateway, "/api/x", &new).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    server.stop().await;
}

/// Verified JWKS tokens are remembered (an RS256 check is costly); the memory must still
/// honour `exp`: the same token, accepted a moment ago, is refused once it expires.
#[tokio::test]
async fn a_remembered_token_is_refused_once_it_expires() {
    let server = JwksServer::spawn(jwks(&[RSA_A_JWK])).await;
    let (gateway, upstream) = jwks_gateway(&server.url(), "leeway = \"0s\"").await;
    let token = rs256_a(&claims_with("ada", serde_json::json!({ "exp": now() + 2 })));
    wait_until_accepted(&gateway, &token, "the first JWKS fetch").await;
    let reply = get_with_token(&gateway, "/api/x", &token).await;
    assert_eq!(reply.status, 200, "accepted again: {}", reply.text());
    let accepted = upstream.hits();

    let reply = eventually("the token expiring", || async {
        let reply = get_with_token(&gateway, "/api/x", &token).await;
        (reply.status != 200).then_some(reply)
    })
    .await;
    assert_invalid_token(&reply, "idp", "expired");
    let hits = upstream.hits();
    let reply = get_with_token(&gateway, "/api/x", &token).await;
    assert_invalid_token(&reply, "idp", "expired");
    assert_eq!(
        upstream.hits(),
        hits,
        "nothing reaches the upstream once expired"
    );
    assert!(accepted >= 2);
}

#[tokio::test]
async fn concurrent_requests_with_a_new_kid_share_one_fetch_and_all_pass() {
    const INTERVAL: Duration = Duration::from_secs(1);
    let server = JwksServer::spawn(jwks(&[RSA_A_JWK])).await;
    let (gateway, upstream) = jwks_gateway(&server.url(), "jwks_refetch_interval = \"1s\"").await;
    wait_until_accepted(&gateway, &rs256_a(&claims("ada")), "the first JWKS fetch").await;
    tokio::time::sleep(INTERVAL).await;

    // rsa-b appears, and 50 clients with rsa-b tokens arrive at once: the ones that wait
    // for the fetch another request started must see its result, not a stale "unknown".
    server.publish(jwks(&[RSA_A_JWK, RSA_B_JWK]));
    let hits_before = server.hits();
    let new = token(Algorithm::RS256, Some("rsa-b"), Key::RsaB, &claims("grace"));
    let statuses = fifty_at_a_time(&gateway, std::iter::repeat_n(new, 50)).await;
    assert_eq!(statuses, vec![200; 50]);
    assert_eq!(server.hits() - hits_before, 1, "one fetch served them all");
    assert_eq!(upstream.hits(), 51);
}

#[tokio::test]
async fn a_thousand_unknown_kids_cause_at_most_one_fetch_per_refetch_interval() {
    const INTERVAL: Duration = Duration::from_secs(2);
    let server = JwksServer::spawn(jwks(&[RSA_A_JWK])).await;
    let (gateway, upstream) = jwks_gateway(&server.url(), "jwks_refetch_interval = \"2s\"").await;
    wait_until_accepted(&gateway, &rs256_a(&claims("ada")), "the first JWKS fetch").await;
    // Let a refetch become due, so the first made-up kid does cause one fetch.
    tokio::time::sleep(INTERVAL).await;
    let hits_before = server.hits();
    let upstream_before = upstream.hits();

    // Signing 1000 RSA tokens would take longer than the burst; the kid is looked up
    // before the signature is checked, so one signature serves every made-up header.
    let signature = unknown_kid_token("any")
        .rsplit('.')
        .next()
        .unwrap()
        .to_owned();
    let started = Instant::now();
    // Made up as they are sent, not before the clock starts.
    let made_up = (0..1000).map(|_| {
        let kid = uuid::Uuid::new_v4().to_string();
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": kid});
        format!("{}.{signature}", signing_input(&header, &claims("m")))
    });
    let statuses = fifty_at_a_time(&gateway, made_up).await;
    let elapsed = started.elapsed();
    let fetches = server.hits() - hits_before;

    assert!(
        statuses.iter().all(|s| *s == 401),
        "every made-up kid gets 401"
    );
    assert_eq!(upstream.hits(), upstream_before);
    let allowed = 1 + (elapsed.as_millis() / INTERVAL.as_millis()) as usize;
    assert!(
        fetches >= 1,
        "an unknown kid makes the gateway look for new keys"
    );
    assert!(
        fetches <= allowed,
        "{fetches} fetches in {elapsed:?} with a {INTERVAL:?} refetch interval (at most {allowed})"
    );
}

#[tokio::test]
async fn cached_keys_keep_working_while_the_jwks_endpoint_fails_or_is_gone() {
    let mut server = JwksServer::spawn(jwks(&[RSA_A_JWK])).await;
    let (gateway, _) = jwks_gateway(&server.url(), "jwks_refetch_interval = \"1s\"").await;
    let token = rs256_a(&claims("ada"));
    wait_until_accepted(&gateway, &token, "the first JWKS fetch").await;

    // The endpoint answers 500: make the gateway try it (an unknown kid), then check.
    server.set_failing(true);
    let before = server.hits();
    eventually("a fetch against the failing endpoint", || async {
        let reply = get_with_token(&gateway, "/api/x", &unknown_kid_token("rsa-x")).await;
        assert_eq!(
            reply.status, 401,
            "an unknown kid is still the client's problem"
        );
        (server.hits() > before).then_some(())
    })
    .await;
    let reply = get_with_token(&gateway, "/api/x", &token).await;
    assert_eq!(
        reply.status,
        200,
        "cached keys after a 500: {}",
        reply.text()
    );

    // The endpoint is gone altogether: connections are refused.
    server.stop().await;
    let fetches = jwks_status(&gateway).fetches;
    eventually("a fetch against the vanished endpoint", || async {
        let _ = get_with_token(&gateway, "/api/x", &unknown_kid_token("rsa-y")).await;
        let status = jwks_status(&gateway);
        (status.fetches > fetches && status.last_error.is_some()).then_some(())
    })
    .await;
    let reply = get_with_token(&gateway, "/api/x", &token).await;
    assert_eq!(
        reply.status,
        200,
        "cached keys with the endpoint gone: {}",
        reply.text()
    );
    assert_eq!(reply.upstream_header("x-fluxlit-sub"), ["ada"]);
}

#[tokio::test]
async fn keys_past_jwks_max_stale_are_not_used_and_requests_get_503() {
    let mut server = JwksServer::spawn(jwks(&[RSA_A_JWK])).await;
    let (gateway, _) = jwks_gateway(
        &server.url(),
        "jwks_refetch_interval = \"1s\"\njwks_cache_ttl = \"1s\"\njwks_max_stale = \"1s\"",
    )
    .await;
    let token = rs256_a(&claims("ada"));
    wait_until_accepted(&gateway, &token, "the first JWKS fetch").await;

    server.stop().await;
    let reply = eventually("the cached keys going out of date", || async {
        let reply = get_with_token(&gateway, "/api/x", &token).await;
        (reply.status != 200).then_some(reply)
    })
    .await;
    reply.assert_says(503, "expired and cannot be refreshed");
}

#[tokio::test]
async fn a_max_age_of_30s_stops_refetches_that_jwks_cache_ttl_alone_would_cause() {
    // Control: without Cache-Control, jwks_cache_ttl = 1s refreshes about every second.
    let control = JwksServer::spawn(jwks(&[RSA_A_JWK])).await;
    let (_control_gateway, _) = jwks_gateway(&control.url(), "jwks_cache_ttl = \"1s\"").await;
    eventually("refreshes on the 1 s TTL", || async {
        (control.hits() >= 3).then_some(())
    })
    .await;

    // With `max-age=30` the same settings fetch once.
    let server = JwksServer::spawn(jwks(&[RSA_A_JWK])).await;
    server.set_cache_control(Some("public, max-age=30"));
    let (gateway, _) = jwks_gateway(&server.url(), "jwks_cache_ttl = \"1s\"").await;
    wait_until_accepted(&gateway, &rs256_a(&claims("ada")), "the first JWKS fetch").await;
    let fetched = server.hits();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(server.hits(), fetched, "max-age=30 keeps the keys for 30 s");
    let reply = get_with_token(&gateway, "/api/x", &rs256_a(&claims("ada"))).await;
    assert_eq!(reply.status, 200);
}

// ---------------------------------------------------------------------------------------
// jwks_file.
// ---------------------------------------------------------------------------------------

fn jwks_file_config(upstream: &CountingUpstream, file: &str) -> ConfigText {
    ConfigText::new()
        .upstream("app", upstream.addr)
        .guarded_route("api", "/api", "app", "files")
        .jwt_provider(
            "files",
            "[\"RS256\", \"ES256\"]",
            &format!("jwks_file = \"{file}\""),
        )
}

#[tokio::test]
async fn a_jwks_file_provides_the_keys_from_the_first_request_on() {
    let upstream = CountingUpstream::spawn().await;
    let keys = jwks(&[RSA_A_JWK, EC_A_JWK]);
    let gateway = start_with_files(
        &jwks_file_config(&upstream, "keys.json"),
        &[("keys.json", &keys)],
    )
    .await;
    // No waiting: the file was read before the gateway started serving.
    let reply = get_with_token(&gateway, "/api/x", &rs256_a(&claims("ada"))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let es = token(Algorithm::ES256, Some("ec-a"), Key::EcA, &claims("grace"));
    let reply = get_with_token(&gateway, "/api/x", &es).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.upstream_header("x-fluxlit-sub"), ["grace"]);
    let rsa_b = token(Algorithm::RS256, Some("rsa-b"), Key::RsaB, &claims("m"));
    let reply = get_with_token(&gateway, "/api/x", &rsa_b).await;
    assert_invalid_token(&reply, "files", "kid");
}

#[tokio::test]
async fn a_broken_jwks_file_is_refused_at_start_with_a_clear_error() {
    let upstream = CountingUpstream::spawn().await;
    let cases = [
        ("not json", "the JWKS is not JSON"),
        ("{\"keys\": []}", "no usable signing keys"),
        (
            "{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}",
            "no usable signing keys",
        ),
        ("{\"no_keys\": true}", "has no \"keys\" array"),
    ];
    for (contents, expected) in cases {
        let config = jwks_file_config(&upstream, "keys.json");
        let error = start_error(&config, &[("keys.json", contents)]).await;
        assert!(error.contains("auth.providers.files.jwks_file"), "{error}");
        assert!(error.contains(expected), "{contents:?}: {error}");
    }
    // A missing file names the file.
    let error = start_error(&jwks_file_config(&upstream, "missing.json"), &[]).await;
    assert!(error.contains("auth.providers.files.jwks_file"), "{error}");
    assert!(error.contains("cannot read JWKS file"), "{error}");
    assert!(error.contains("missing.json"), "{error}");
}
