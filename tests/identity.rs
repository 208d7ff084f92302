//! The signed identity assertion, end to end: an upstream behind a route with `auth`
//! receives `x-fluxlit-identity`, a JWT that verifies against the keys the gateway
//! publishes at `/.well-known/fluxlit/jwks.json`, for that upstream only, expiring with
//! the credential at the latest; routes without auth never carry one, no client can
//! send one, and a rotated key keeps the assertions it signed verifiable while it stays
//! published.
//!
//! Real sockets: a gateway, a recording upstream, and the HTTP client of tests/common.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::net::SocketAddr;

use common::auth::*;
use common::config::ConfigText;
use common::*;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value, json};

const ASSERTION: &str = "x-fluxlit-identity";
const BASE_URL: &str = "https://apps.example.test/analytics";

/// `/api` behind HS256 provider `main` (copying `email` into `x-user-email`), `/` open,
/// both to a recording upstream named `app`; `identity` lines go in `[identity]`.
async fn gateway(identity: &str, files: &[(&str, &str)]) -> (TestGateway, SocketAddr) {
    let upstream = spawn_recording_upstream("app").await;
    let config = config_text(upstream, identity);
    let mut all = vec![("secret", HS_SECRET)];
    all.extend_from_slice(files);
    (start_with_files(config.text(), &all).await, upstream)
}

fn config_text(upstream: SocketAddr, identity: &str) -> ConfigText {
    ConfigText::new()
        .server(&format!("public_base_url = \"{BASE_URL}/\""))
        .admin()
        .table("[identity]", identity)
        .upstream("app", upstream)
        .guarded_route("api", "/api", "app", "main")
        .route("open", "/", "app")
        .hs256_provider("main")
        .with("claim_headers = { email = \"x-user-email\" }")
}

/// The assertion the upstream received for `GET path` with `token`, and the request id
/// the gateway answered with.
async fn assertion_for(
    gateway: &TestGateway,
    path: &str,
    extra: &[(&str, &str)],
) -> (Vec<String>, String) {
    let reply = get_from(TRUSTED, gateway, path, extra).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let request_id = reply
        .header("x-request-id")
        .expect("a request id")
        .to_owned();
    (reply.upstream_header(ASSERTION), request_id)
}

async fn published_keys(addr: SocketAddr) -> JwkSet {
    let reply = send(addr, get(addr, "/.well-known/fluxlit/jwks.json", &[])).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(
        reply
            .header("cache-control")
            .is_some_and(|v| v.contains("max-age"))
    );
    serde_json::from_slice(&reply.body).expect("a JWK set")
}

/// The claims of `token` if it verifies against `keys` for `audience`.
fn verified(keys: &JwkSet, token: &str, audience: &str) -> Result<Map<String, Value>, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = keys
        .find(&kid)
        .ok_or_else(|| format!("kid {kid} is not published"))?;
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[BASE_URL]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn an_authenticated_request_carries_an_assertion_that_the_published_keys_verify() {
    let (gateway, _) = gateway("", &[]).await;
    let exp = now() + 30;
    let token = hs256(&claims_with(
        "ada",
        json!({"scope": "read write", "email": "ada@example.org", "exp": exp}),
    ));
    let (assertions, request_id) =
        assertion_for(&gateway, "/api/x", &[("authorization", &bearer(&token))]).await;
    assert_eq!(assertions.len(), 1, "{assertions:?}");

    let keys = published_keys(gateway.addr()).await;
    let claims = verified(&keys, &assertions[0], "app").expect("the assertion verifies");
    assert_eq!(claims["sub"], "ada");
    assert_eq!(claims["scope"], "read write");
    assert_eq!(claims["email"], "ada@example.org");
    assert_eq!(
        claims["jti"],
        request_id.as_str(),
        "the request id is the jti"
    );
    let (iat, expires) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert!(expires <= exp, "never past the token's own exp");
    assert!(expires <= iat + 60, "at most [identity] ttl");

    // For this upstream only: another upstream's name is refused as its audience.
    let refused = verified(&keys, &assertions[0], "billing").expect_err("wrong audience");
    assert!(refused.contains("InvalidAudience"), "{refused}");
    // The admin listener publishes the same keys.
    assert_eq!(published_keys(gateway.admin()).await, keys);
}

#[tokio::test]
async fn no_route_without_auth_carries_one_and_no_client_can_send_one() {
    let (gateway, _) = gateway("", &[]).await;
    let forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.";
    let (assertions, _) = assertion_for(&gateway, "/page", &[]).await;
    assert!(assertions.is_empty(), "{assertions:?}");
    // From a trusted proxy too: the gateway alone sets it.
    let (assertions, _) = assertion_for(&gateway, "/page", &[(ASSERTION, forged)]).await;
    assert!(
        assertions.is_empty(),
        "a client's assertion passed: {assertions:?}"
    );

    let token = hs256(&claims("ada"));
    let (assertions, _) = assertion_for(
        &gateway,
        "/api/x",
        &[("authorization", &bearer(&token)), (ASSERTION, forged)],
    )
    .await;
    assert_eq!(assertions.len(), 1, "{assertions:?}");
    assert_ne!(assertions[0], forged);
    let keys = published_keys(gateway.addr()).await;
    assert_eq!(
        verified(&keys, &assertions[0], "app").unwrap()["sub"],
        "ada"
    );
}

#[tokio::test]
async fn a_rotated_key_keeps_the_assertions_it_signed_verifiable_while_it_is_published() {
    let (gateway, upstream) = gateway(
        "signing_key = { file = \"old.pem\" }",
        &[("old.pem", ED_A_PEM), ("new.pem", ED_B_PEM)],
    )
    .await;
    let token = hs256(&claims("ada"));
    let authorization = [("authorization", bearer(&token))];
    let headers: Vec<(&str, &str)> = authorization
        .iter()
        .map(|(n, v)| (*n, v.as_str()))
        .collect();
    let (old, _) = assertion_for(&gateway, "/api/x", &headers).await;

    // Rotate: the new key signs, the old one stays published.
    gateway.write_config(
        config_text(
            upstream,
            "signing_key = { file = \"new.pem\" }\nprevious_keys = [{ file = \"old.pem\" }]",
        )
        .text(),
    );
    gateway.wait_for_generation(2).await;
    let (new, _) = assertion_for(&gateway, "/api/x", &headers).await;
    let keys = published_keys(gateway.addr()).await;
    assert_eq!(keys.keys.len(), 2);
    let kid = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    assert_ne!(kid(&old[0]), kid(&new[0]), "the new key signs");
    verified(&keys, &old[0], "app").expect("the old assertion still verifies");
    verified(&keys, &new[0], "app").expect("the new one verifies");

    // Retired: the old key is no longer published, and what it signed no longer verifies.
    gateway.write_config(config_text(upstream, "signing_key = { file = \"new.pem\" }").text());
    gateway.wait_for_generation(3).await;
    let keys = published_keys(gateway.addr()).await;
    let refused = verified(&keys, &old[0], "app").expect_err("the old key is retired");
    assert!(refused.contains("is not published"), "{refused}");
}

#[tokio::test]
async fn a_generated_key_survives_a_reload() {
    let (gateway, upstream) = gateway("", &[]).await;
    let token = hs256(&claims("ada"));
    let authorization = bearer(&token);
    let (before, _) = assertion_for(&gateway, "/api/x", &[("authorization", &authorization)]).await;
    gateway.write_config(config_text(upstream, "ttl = \"30s\"").text());
    gateway.wait_for_generation(2).await;
    let keys = published_keys(gateway.addr()).await;
    verified(&keys, &before[0], "app").expect("assertions from before the reload verify");
}

#[tokio::test]
async fn a_key_that_cannot_sign_is_refused_with_its_key_path() {
    let upstream = spawn_recording_upstream("app").await;
    let config = config_text(upstream, "signing_key = { file = \"identity.pem\" }");
    let error = start_error(
        config.text(),
        &[("secret", HS_SECRET), ("identity.pem", RSA_A_PEM)],
    )
    .await;
    assert!(error.contains("identity.signing_key"), "{error}");
    assert!(error.contains("Ed25519"), "{error}");
}

#[tokio::test]
async fn the_key_set_answers_head_with_its_length_and_refuses_other_methods() {
    let (gateway, _) = gateway("", &[]).await;
    let path = "/.well-known/fluxlit/jwks.json";
    let full = send(gateway.addr(), get(gateway.addr(), path, &[])).await;
    let request = |method: http::Method| {
        let mut request = get(gateway.addr(), path, &[]);
        *request.method_mut() = method;
        request
    };
    let head = send(gateway.addr(), request(http::Method::HEAD)).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(full.body.len().to_string().as_str())
    );
    let post = send(gateway.addr(), request(http::Method::POST)).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn a_header_clients_send_or_a_zero_ttl_is_refused_with_its_key_path() {
    let upstream = spawn_recording_upstream("app").await;
    let config = config_text(upstream, "header = \"X-Forwarded-For\"\nttl = \"0s\"");
    let (_dir, path) = config_dir(config.text(), &[("secret", HS_SECRET)]);
    let error = match fluxlit::config::load(&path) {
        Ok(_) => panic!("the config was accepted"),
        Err(error) => error.render().join("\n"),
    };
    assert!(error.contains("identity.header"), "{error}");
    assert!(error.contains("other purposes"), "{error}");
    assert!(error.contains("identity.ttl"), "{error}");
}
