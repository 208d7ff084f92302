//! The OIDC login (backend for frontend) against a small identity provider written here
//! as an axum app, over real sockets:
//!
//! - the IdP publishes `/.well-known/openid-configuration` and `/jwks` (rsa-a of
//!   `tests/fixtures/jose`), answers `/authorize` with a code (the test follows the
//!   gateway's 302 to it, as a browser would, and calls the gateway's callback with the
//!   code and state it got back), and `/token` checks client authentication, the code,
//!   the redirect URI and the PKCE verifier against the S256 challenge before returning
//!   an id_token signed with rsa-a — or, when told to, a bad one;
//! - the gateway's callback mints a token with the `main` jwt provider, hands an
//!   `auth_code` to `next`, and `/auth/exchange` trades it once for the token, which
//!   `/api/me` (a route with `auth = "main"`) accepts.
//!
//! What must not happen is checked too: replayed states and codes, open redirects through
//! `next`, id_tokens failing each check, exchanges from other peers, an unbounded store,
//! and logins before discovery. Timeouts only guard against hangs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::auth::*;
use common::cli::Serve;
use common::idp::*;
use common::raw::{RawReply, raw_post};
use common::{
    ConfigText, CountingUpstream, HANG_GUARD, Reachable, Reply, TRUSTED, TestEnvironment,
    TestGateway, UNTRUSTED, cli, config_dir, eventually, get_from, send_from, start_error,
    start_with_environment, start_with_files, within,
};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

/// The app server's exchange secret (`exchange_secret = { file = "exchange.secret" }`).
const EXCHANGE_SECRET: &str = "test-only exchange secret, forty-odd bytes long";
/// The secret files the test configs read.
const SECRET_FILES: [(&str, &str); 4] = [
    ("hs256.secret", HS_SECRET),
    ("client.secret", CLIENT_SECRET),
    ("exchange.secret", EXCHANGE_SECRET),
    ("session.key", SESSION_KEY),
];
/// The login cookie's key that replicas sharing a Redis store share.
const SESSION_KEY: &str = "test-only session key, thirty-two bytes and more";
/// The provider key that sets it.
const WITH_SESSION_KEY: &str = "session_key = { file = \"session.key\" }";
/// The provider key that sets the exchange secret.
const WITH_EXCHANGE_SECRET: &str = "exchange_secret = { file = \"exchange.secret\" }";
const PUBLIC_BASE: &str = "http://app.fluxlit.test";

// ---------------------------------------------------------------------------------------
// The gateway and the steps of a login.
// ---------------------------------------------------------------------------------------

struct Setup {
    gateway: TestGateway,
    idp: Idp,
    upstream: CountingUpstream,
}

fn config(idp: &Idp, upstream: &CountingUpstream, extra: &str) -> String {
    ConfigText::new()
        .server(&format!("public_base_url = \"{PUBLIC_BASE}\""))
        .upstream("api", upstream.addr)
        .guarded_route("api", "/api", "api", "main")
        .mint_provider("main")
        .oidc(
            "corp",
            idp.issuer(),
            CLIENT_ID,
            "{ file = \"client.secret\" }",
            "main",
        )
        .with("scopes = [\"openid\", \"email\", \"profile\"]\nclaims = [\"email\", \"name\"]")
        .with(extra)
        .into()
}

/// A gateway whose `corp` provider logs in at a fresh IdP, with `extra` provider keys.
async fn setup_with(extra: &str, end_session: bool) -> Setup {
    let idp = Idp::spawn(end_session).await;
    let upstream = CountingUpstream::spawn().await;
    let gateway = start_with_files(&config(&idp, &upstream, extra), &SECRET_FILES).await;
    Setup {
        gateway,
        idp,
        upstream,
    }
}

/// [`setup_with`], waiting until discovery has loaded.
async fn setup_ready(extra: &str) -> Setup {
    let setup = setup_with(extra, false).await;
    wait_for_discovery(&setup.gateway).await;
    setup
}

/// [`setup_ready`] with `public_base_url` set to `base` instead of [`PUBLIC_BASE`].
async fn setup_at(base: &str) -> Setup {
    setup_from(|idp, upstream| {
        config(idp, upstream, "").replace(
            &format!("public_base_url = \"{PUBLIC_BASE}\""),
            &format!("public_base_url = \"{base}\""),
        )
    })
    .await
}

/// [`setup_ready`] behind a proxy on this host: 127.0.0.1 ([`TRUSTED`]) is in
/// `trust.proxies`, as in a forward-auth setup with nginx in front.
async fn setup_behind_proxy(extra: &str) -> Setup {
    setup_from(|idp, upstream| {
        let text = config(idp, upstream, extra);
        format!("[trust]\nproxies = [\"127.0.0.1/32\"]\n\n{text}")
    })
    .await
}

/// A gateway on the config `make` writes for a fresh IdP and upstream, once discovery
/// has loaded.
async fn setup_from(make: impl FnOnce(&Idp, &CountingUpstream) -> String) -> Setup {
    let idp = Idp::spawn(false).await;
    let upstream = CountingUpstream::spawn().await;
    let gateway = start_with_files(&make(&idp, &upstream), &SECRET_FILES).await;
    wait_for_discovery(&gateway).await;
    Setup {
        gateway,
        idp,
        upstream,
    }
}

async fn wait_for_discovery(gateway: &TestGateway) {
    eventually("OIDC discovery", || async {
        let status = oidc_status(gateway);
        status.discovery.loaded.then_some(())
    })
    .await;
}

fn oidc_status(gateway: &TestGateway) -> fluxlit::auth::oidc::OidcStatus {
    gateway.gateway.snapshot().providers["corp"]
        .oidc_status()
        .expect("corp is an oidc provider")
}

/// A whole login up to the callback's answer, in one browser: the login cookie goes
/// back with the callback.
async fn login_until_callback(setup: &Setup, next: Option<&str>) -> Reply {
    let reply = login(&setup.gateway, next).await;
    assert_eq!(reply.status, 302, "login: {}", reply.text());
    let cookie = login_cookie(&reply);
    let (code, state, _) = authorize_at_idp(&setup.idp, location(&reply)).await;
    callback(&setup.gateway, &code, &state, Some(&cookie)).await
}

/// The `auth_code` of a callback's redirect.
fn auth_code_of(reply: &Reply) -> String {
    let url = Url::parse(&format!("http://x{}", location(reply))).expect("Location is a path");
    url.query_pairs()
        .find(|(key, _)| key == "auth_code")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_else(|| panic!("no auth_code in {}", location(reply)))
}

async fn exchange_from(
    source: IpAddr,
    gateway: &impl Reachable,
    content_type: &str,
    body: String,
) -> Reply {
    let request = http::Request::post("/auth/exchange")
        .header("host", gateway.addr().to_string())
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    within(
        "POST /auth/exchange",
        send_from(source, gateway.addr(), request),
    )
    .await
}

/// `POST /auth/exchange` with a JSON `body` and the extra `headers`, from [`TRUSTED`].
async fn exchange_with(gateway: &impl Reachable, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = http::Request::post("/auth/exchange")
        .header("host", gateway.addr().to_string())
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    within(
        "POST /auth/exchange",
        send_from(TRUSTED, gateway.addr(), request),
    )
    .await
}

/// Where a login lands, as the app's server sees it: the `auth_code` in the URL, and the
/// value of the code cookie the callback set in the browser (`browser_binding`).
#[derive(Debug, Clone)]
struct Landing {
    auth_code: String,
    binding: String,
}

impl Landing {
    /// The exchange's JSON body: `{"auth_code": ..., "browser_binding": ...}`.
    fn body(&self) -> String {
        json!({ "auth_code": self.auth_code, "browser_binding": self.binding }).to_string()
    }
}

/// The name of the code cookie of `auth_code`: `<prefix>-<16 hex digits of its SHA-256>`,
/// which the app's server, holding the code, can work out.
fn code_cookie_name(prefix: &str, auth_code: &str) -> String {
    let digest = Sha256::digest(auth_code.as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{prefix}-{}", &hex[..16])
}

/// The `Set-Cookie` of a reply whose cookie is named `name`: name, value, attributes.
fn set_cookie_named(reply: &Reply, name: &str) -> (String, String, HashMap<String, String>) {
    set_cookies(reply)
        .into_iter()
        .map(parse_set_cookie)
        .find(|(found, _, _)| found == name)
        .unwrap_or_else(|| panic!("no cookie {name} in {:?}", set_cookies(reply)))
}

/// The landing of a callback's redirect: its code, and the code cookie set beside it.
fn landing_of(reply: &Reply) -> Landing {
    let auth_code = auth_code_of(reply);
    let name = code_cookie_name("fluxlit-code", &auth_code);
    let https_name = format!("__Host-{name}");
    let binding = set_cookies(reply)
        .into_iter()
        .map(parse_set_cookie)
        .find(|(found, _, _)| *found == name || *found == https_name)
        .map(|(_, value, _)| value)
        .unwrap_or_else(|| panic!("no code cookie {name} in {:?}", set_cookies(reply)));
    Landing { auth_code, binding }
}

/// `POST /auth/exchange` as the app's server makes it: the code and its binding.
async fn exchange(gateway: &impl Reachable, landing: &Landing) -> Reply {
    exchange_from(TRUSTED, gateway, "application/json", landing.body()).await
}

fn assert_invalid_grant(reply: &Reply) {
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(reply.json()["error"], "invalid_grant", "{}", reply.text());
    assert_eq!(reply.header("cache-control"), Some("no-store"));
}

// ---------------------------------------------------------------------------------------
// The flow.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_login_mints_a_token_the_mint_provider_accepts() {
    let setup = setup_ready("").await;
    let gateway = &setup.gateway;

    let reply = login(gateway, Some("/dashboard?tab=1")).await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let authorize = Url::parse(location(&reply)).unwrap();
    assert_eq!(authorize.path(), "/authorize");
    let query: HashMap<String, String> = authorize.query_pairs().into_owned().collect();
    assert_eq!(query["response_type"], "code");
    assert_eq!(query["client_id"], CLIENT_ID);
    assert_eq!(
        query["redirect_uri"],
        format!("{PUBLIC_BASE}/auth/callback")
    );
    assert_eq!(query["code_challenge_method"], "S256");
    let scopes: Vec<&str> = query["scope"].split(' ').collect();
    for scope in ["openid", "email", "profile"] {
        assert!(scopes.contains(&scope), "{scopes:?}");
    }
    assert_eq!(
        scopes.iter().filter(|s| **s == "openid").count(),
        1,
        "{scopes:?}"
    );
    // 32 random bytes, base64url: 256 bits each.
    assert!(query["state"].len() >= 43, "{}", query["state"]);
    assert!(query["nonce"].len() >= 43, "{}", query["nonce"]);
    assert_ne!(query["state"], query["nonce"]);
    assert!(!location(&reply).contains(CLIENT_SECRET));

    let (code, state, redirect_uri) = authorize_at_idp(&setup.idp, location(&reply)).await;
    assert_eq!(redirect_uri, format!("{PUBLIC_BASE}/auth/callback"));
    let reply = callback(gateway, &code, &state, Some(&login_cookie(&reply))).await;
    assert_eq!(reply.status, 302, "callback: {}", reply.text());
    let target = location(&reply);
    assert!(
        target.starts_with("/dashboard?tab=1&auth_code="),
        "back to next with the code: {target}"
    );
    assert_eq!(reply.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert!(
        setup.idp.state.token_refusal.lock().unwrap().is_none(),
        "client auth, code, redirect_uri and PKCE verifier all passed at the IdP"
    );
    let landing = landing_of(&reply);
    let auth_code = &landing.auth_code;
    assert!(auth_code.len() >= 43, "{auth_code}");
    assert_eq!(oidc_status(gateway).store.auth_codes, Some(1));

    let reply = exchange(gateway, &landing).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((1..=900).contains(&expires_in), "{expires_in}");
    let access_token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        oidc_status(gateway).store.auth_codes,
        Some(0),
        "the code is gone"
    );

    // The token is the mint provider's: its issuer, audience and key, with the claims
    // asked for.
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[MINT_ISSUER]);
    validation.set_audience(&[MINT_AUDIENCE]);
    let claims = jsonwebtoken::decode::<Value>(
        &access_token,
        &DecodingKey::from_secret(HS_SECRET.as_bytes()).unwrap(),
        &validation,
    )
    .expect("the minted token verifies with the mint provider's secret")
    .claims;
    assert_eq!(claims["sub"], SUB);
    assert_eq!(claims["email"], "ada@example.com");
    assert_eq!(claims["name"], "Ada Lovelace");
    assert!(
        claims.get("nonce").is_none(),
        "only the claims asked for are copied"
    );

    // Through the gateway, on a route protected by the mint provider.
    let reply = get_with_token(gateway, "/api/me", &access_token).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.upstream_header("x-fluxlit-sub"), [SUB]);
    assert_eq!(setup.upstream.hits(), 1);
}

#[tokio::test]
async fn a_login_without_next_goes_back_to_the_root_under_the_public_path() {
    let setup = setup_at(&format!("{PUBLIC_BASE}/app/")).await;
    let reply = login(&setup.gateway, None).await;
    let (code, state, redirect_uri) = authorize_at_idp(&setup.idp, location(&reply)).await;
    assert_eq!(redirect_uri, format!("{PUBLIC_BASE}/app/auth/callback"));
    let cookie = login_cookie(&reply);
    assert!(
        set_cookies(&reply)[0].contains("; Path=/app/auth/callback;"),
        "scoped to the callback under the public path: {:?}",
        set_cookies(&reply)
    );
    let reply = callback(&setup.gateway, &code, &state, Some(&cookie)).await;
    assert!(
        location(&reply).starts_with("/app/?auth_code="),
        "{}",
        location(&reply)
    );
}

#[tokio::test]
async fn a_replayed_or_unknown_state_is_refused_and_mints_nothing() {
    let setup = setup_ready("").await;
    let reply = login(&setup.gateway, Some("/x")).await;
    let cookie = login_cookie(&reply);
    let (code, state, _) = authorize_at_idp(&setup.idp, location(&reply)).await;
    let first = callback(&setup.gateway, &code, &state, Some(&cookie)).await;
    assert_eq!(first.status, 302, "{}", first.text());
    assert_eq!(setup.idp.token_hits(), 1);

    // Replayed even with the cookie (which the browser was told to drop).
    let replayed = callback(&setup.gateway, &code, &state, Some(&cookie)).await;
    replayed.assert_says(400, "state");
    assert!(replayed.header("location").is_none());
    assert_eq!(
        setup.idp.token_hits(),
        1,
        "the code was not even sent to the IdP again"
    );

    let forged = callback(
        &setup.gateway,
        &code,
        "a-state-nobody-issued",
        Some(&cookie),
    )
    .await;
    assert_eq!(forged.status, 400, "{}", forged.text());
    let missing = get_from(TRUSTED, &setup.gateway, "/auth/callback?code=x", &[]).await;
    assert_eq!(missing.status, 400, "{}", missing.text());
    assert_eq!(setup.idp.token_hits(), 1);
    assert_eq!(
        oidc_status(&setup.gateway).store.auth_codes,
        Some(1),
        "only the first login's"
    );
}

#[tokio::test]
async fn an_idp_error_on_the_callback_consumes_the_state_and_mints_nothing() {
    let setup = setup_ready("").await;
    let reply = login(&setup.gateway, None).await;
    let cookie = login_cookie(&reply);
    let (_, state, _) = authorize_at_idp(&setup.idp, location(&reply)).await;
    let path = format!(
        "/auth/callback?error=access_denied&state={}",
        form_encode(&state)
    );
    let reply = get_from(TRUSTED, &setup.gateway, &path, &[("cookie", &cookie)]).await;
    reply.assert_says(403, "access_denied");
    assert_eq!(setup.idp.token_hits(), 0);
    assert_eq!(
        oidc_status(&setup.gateway).store.used_states,
        Some(1),
        "the state is marked used"
    );
    let path = format!("/auth/callback?code=late&state={}", form_encode(&state));
    let again = get_from(TRUSTED, &setup.gateway, &path, &[("cookie", &cookie)]).await;
    again.assert_says(400, "already used");
    assert_eq!(setup.idp.token_hits(), 0);
}

// ---------------------------------------------------------------------------------------
// The login cookie: a login finishes only in the browser that started it.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_callback_without_the_login_cookie_is_refused_and_mints_nothing() {
    let setup = setup_ready("").await;
    let reply = login(&setup.gateway, Some("/x")).await;
    let cookie = login_cookie(&reply);
    let (code, state, _) = authorize_at_idp(&setup.idp, location(&reply)).await;

    let reply = callback(&setup.gateway, &code, &state, None).await;
    reply.assert_says(400, "this login was started in another browser");
    assert!(reply.header("location").is_none());
    assert_eq!(setup.idp.token_hits(), 0, "the code never reached the IdP");
    let store = oidc_status(&setup.gateway).store;
    assert_eq!(
        (store.used_states, store.auth_codes),
        (Some(0), Some(0)),
        "a callback without the login cookie writes nothing and mints nothing"
    );

    // Nor can it spoil the login for the browser that started it.
    let reply = callback(&setup.gateway, &code, &state, Some(&cookie)).await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    assert_eq!(setup.idp.token_hits(), 1);
}

#[tokio::test]
async fn the_login_state_lives_sealed_in_the_cookie_and_a_changed_cookie_is_refused() {
    let setup = setup_ready("").await;
    let next = "/reports/quarterly-figures";
    let reply = login(&setup.gateway, Some(next)).await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    let store = oidc_status(&setup.gateway).store;
    assert_eq!(
        (store.used_states, store.auth_codes),
        (Some(0), Some(0)),
        "a login stores nothing server-side"
    );
    let cookie = login_cookie(&reply);
    let (name, value) = cookie.split_once('=').unwrap();
    // The nonce travels in the authorization URL; the cookie shows neither it nor next.
    let url = Url::parse(location(&reply)).unwrap();
    let nonce = url
        .query_pairs()
        .find(|(key, _)| key == "nonce")
        .map(|(_, value)| value.into_owned())
        .expect("a nonce");
    let raw = base64url_decode(value);
    for secret in [nonce.as_bytes(), next.as_bytes(), b"quarterly"] {
        assert!(
            !raw.windows(secret.len()).any(|window| window == secret),
            "the cookie shows {:?}",
            String::from_utf8_lossy(secret)
        );
    }

    // One character changed: refused before the code reaches the IdP.
    let (code, state, _) = authorize_at_idp(&setup.idp, location(&reply)).await;
    let mut changed = value.as_bytes().to_vec();
    let middle = changed.len() / 2;
    changed[middle] = if changed[middle] == b'A' { b'B' } else { b'A' };
    let changed = format!("{name}={}", String::from_utf8(changed).unwrap());
    let reply = callback(&setup.gateway, &code, &state, Some(&changed)).await;
    reply.assert_says(400, "this login was started in another browser");
    assert_eq!(setup.idp.token_hits(), 0);

    // The cookie as sealed finishes the login, on to next.
    let reply = callback(&setup.gateway, &code, &state, Some(&cookie)).await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    assert!(location(&reply).starts_with(next), "{}", location(&reply));
}

/// base64url without padding, as the login cookie is written.
fn base64url_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes() {
        let value = ALPHABET
            .iter()
            .position(|&c| c == byte)
            .unwrap_or_else(|| panic!("{byte} is not base64url")) as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

#[tokio::test]
async fn a_callback_with_another_browsers_login_cookie_is_refused() {
    let setup = setup_ready("").await;
    // The attacker starts a login, and stops before the callback; the victim's browser
    // has a login cookie of its own (a login of the victim's in progress).
    let attacker = login(&setup.gateway, None).await;
    let (code, state, _) = authorize_at_idp(&setup.idp, location(&attacker)).await;
    let victim = login(&setup.gateway, None).await;
    let (victim_name, victim_value) = login_cookie(&victim)
        .split_once('=')
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .unwrap();
    let (attacker_name, attacker_value) = login_cookie(&attacker)
        .split_once('=')
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .unwrap();
    assert_ne!(attacker_name, victim_name, "one cookie per login");
    assert_ne!(attacker_value, victim_value);

    // The victim's cookie under the attacker's login's name (as if it were the single
    // cookie of the browser), and the victim's cookies as they are: both refused.
    let forged = format!("{attacker_name}={victim_value}; {victim_name}={victim_value}");
    let reply = callback(&setup.gateway, &code, &state, Some(&forged)).await;
    reply.assert_says(400, "this login was started in another browser");
    assert!(reply.header("location").is_none());
    assert_eq!(setup.idp.token_hits(), 0, "the code never reached the IdP");
    assert_eq!(oidc_status(&setup.gateway).store.auth_codes, Some(0));

    // The victim's own login is untouched and finishes.
    let (code, state, _) = authorize_at_idp(&setup.idp, location(&victim)).await;
    let own = format!("{victim_name}={victim_value}");
    let reply = callback(&setup.gateway, &code, &state, Some(&own)).await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    assert_eq!(
        exchange(&setup.gateway, &landing_of(&reply)).await.status,
        200
    );
}

#[tokio::test]
async fn logins_in_parallel_tabs_each_finish_with_their_own_cookie() {
    let setup = setup_ready("").await;
    let first = login(&setup.gateway, Some("/one")).await;
    let second = login(&setup.gateway, Some("/two")).await;
    // The browser holds both cookies and sends both with each callback.
    let jar = format!("{}; {}", login_cookie(&first), login_cookie(&second));
    for (reply, next) in [(&second, "/two"), (&first, "/one")] {
        let (code, state, _) = authorize_at_idp(&setup.idp, location(reply)).await;
        let reply = callback(&setup.gateway, &code, &state, Some(&jar)).await;
        assert_eq!(reply.status, 302, "{next}: {}", reply.text());
        assert!(
            location(&reply).starts_with(&format!("{next}?auth_code=")),
            "{}",
            location(&reply)
        );
    }
}

#[tokio::test]
async fn the_login_cookie_is_http_only_lax_scoped_to_the_callback_and_cleared_after() {
    let setup = setup_ready("login_ttl = \"5m\"").await;
    let reply = login(&setup.gateway, None).await;
    let set = set_cookies(&reply);
    let (name, value, attributes) = parse_set_cookie(set[0]);
    assert!(name.starts_with("fluxlit-login-"), "{name}");
    assert!(!name.starts_with("__Host-"), "{name}");
    // 32 random bytes, base64url.
    assert!(value.len() >= 43, "{value}");
    assert!(
        value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{value}"
    );
    assert!(attributes.contains_key("httponly"), "{set:?}");
    assert_eq!(attribute(&attributes, "samesite"), Some("Lax"), "{set:?}");
    assert_eq!(
        attribute(&attributes, "path"),
        Some("/auth/callback"),
        "{set:?}"
    );
    assert_eq!(
        attribute(&attributes, "max-age"),
        Some("300"),
        "login_ttl: {set:?}"
    );
    assert!(!attributes.contains_key("secure"), "http: {set:?}");
    assert!(!attributes.contains_key("domain"), "{set:?}");
    assert!(!attributes.contains_key("expires"), "{set:?}");

    // Each login gets a fresh cookie.
    let again = login(&setup.gateway, None).await;
    let (other_name, other_value, _) = parse_set_cookie(set_cookies(&again)[0]);
    assert_ne!(other_name, name);
    assert_ne!(other_value, value);

    // The callback clears it, whatever its outcome.
    let (code, state, _) = authorize_at_idp(&setup.idp, location(&reply)).await;
    let done = callback(
        &setup.gateway,
        &code,
        &state,
        Some(&format!("{name}={value}")),
    )
    .await;
    assert_eq!(done.status, 302, "{}", done.text());
    let set = set_cookies(&done);
    assert_eq!(
        set.len(),
        2,
        "the login cookie cleared, the code cookie set: {set:?}"
    );
    let (cleared, cleared_value, attributes) = set_cookie_named(&done, &name);
    assert_eq!(
        (cleared.as_str(), cleared_value.as_str()),
        (name.as_str(), "")
    );
    assert_eq!(attribute(&attributes, "max-age"), Some("0"));
    assert_eq!(attribute(&attributes, "path"), Some("/auth/callback"));
    let (code, state, _) = authorize_at_idp(&setup.idp, location(&again)).await;
    let refused = callback(&setup.gateway, &code, &state, None).await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    let (cleared, _, attributes) = parse_set_cookie(set_cookies(&refused)[0]);
    assert_eq!(cleared, other_name);
    assert_eq!(attribute(&attributes, "max-age"), Some("0"));
}

#[tokio::test]
async fn with_an_https_public_base_url_the_login_cookie_is_secure_and_host_prefixed() {
    let https_base = PUBLIC_BASE.replacen("http://", "https://", 1);
    let setup = setup_at(&format!("{https_base}/app/")).await;
    let reply = login(&setup.gateway, None).await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    let set = set_cookies(&reply);
    let (name, value, attributes) = parse_set_cookie(set[0]);
    assert!(name.starts_with("__Host-fluxlit-login-"), "{name}");
    assert!(attributes.contains_key("secure"), "{set:?}");
    assert!(attributes.contains_key("httponly"), "{set:?}");
    assert_eq!(attribute(&attributes, "samesite"), Some("Lax"), "{set:?}");
    assert_eq!(
        attribute(&attributes, "path"),
        Some("/"),
        "__Host- needs Path=/: {set:?}"
    );
    assert_eq!(attribute(&attributes, "max-age"), Some("600"), "{set:?}");
    assert!(!attributes.contains_key("domain"), "{set:?}");

    let (code, state, redirect_uri) = authorize_at_idp(&setup.idp, location(&reply)).await;
    assert_eq!(redirect_uri, format!("{https_base}/app/auth/callback"));
    let reply = callback(
        &setup.gateway,
        &code,
        &state,
        Some(&format!("{name}={value}")),
    )
    .await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    let (_, _, attributes) = set_cookie_named(&reply, &name);
    assert_eq!(attribute(&attributes, "max-age"), Some("0"));
    assert!(
        attributes.contains_key("secure"),
        "a __Host- cookie is cleared Secure"
    );
    assert_eq!(attribute(&attributes, "path"), Some("/"));

    // The code cookie too: a sibling subdomain cannot plant its own code's binding.
    let auth_code = auth_code_of(&reply);
    let code_cookie = code_cookie_name("__Host-fluxlit-code", &auth_code);
    let (_, binding, attributes) = set_cookie_named(&reply, &code_cookie);
    assert!(attributes.contains_key("secure"), "{attributes:?}");
    assert!(attributes.contains_key("httponly"), "{attributes:?}");
    assert_eq!(attribute(&attributes, "samesite"), Some("Lax"));
    assert_eq!(
        attribute(&attributes, "path"),
        Some("/"),
        "__Host- needs Path=/"
    );
    assert_eq!(
        attribute(&attributes, "max-age"),
        Some("60"),
        "auth_code_ttl"
    );
    assert!(!attributes.contains_key("domain"), "{attributes:?}");
    let landing = Landing { auth_code, binding };
    assert_eq!(exchange(&setup.gateway, &landing).await.status, 200);
}

#[tokio::test]
async fn auth_codes_are_single_use() {
    let setup = setup_ready("").await;
    let landing = landing_of(&login_until_callback(&setup, None).await);

    // A form works as well as JSON.
    let reply = exchange_from(
        TRUSTED,
        &setup.gateway,
        "application/x-www-form-urlencoded",
        format!(
            "auth_code={}&browser_binding={}",
            form_encode(&landing.auth_code),
            form_encode(&landing.binding)
        ),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_invalid_grant(&exchange(&setup.gateway, &landing).await);
    let made_up = Landing {
        auth_code: "a-code-nobody-issued".to_owned(),
        binding: landing.binding.clone(),
    };
    assert_invalid_grant(&exchange(&setup.gateway, &made_up).await);

    let reply = exchange_from(TRUSTED, &setup.gateway, "text/plain", landing.body()).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(reply.json()["error"], "invalid_request");
    let reply = get_from(TRUSTED, &setup.gateway, "/auth/exchange", &[]).await;
    assert_eq!(reply.status, 405, "{}", reply.text());
    assert_eq!(reply.header("allow"), Some("POST"));
}

#[tokio::test]
async fn concurrent_exchanges_of_one_code_give_one_token() {
    let setup = setup_ready("").await;
    let landing = landing_of(&login_until_callback(&setup, None).await);
    let attempts = (0..8).map(|_| exchange(&setup.gateway, &landing));
    let replies = futures_util::future::join_all(attempts).await;
    let granted = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        granted,
        1,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for reply in replies.iter().filter(|r| r.status != 200) {
        assert_invalid_grant(reply);
    }
}

#[tokio::test]
async fn an_expired_auth_code_is_refused() {
    let setup = setup_ready("auth_code_ttl = \"1s\"").await;
    let landing = landing_of(&login_until_callback(&setup, None).await);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_invalid_grant(&exchange(&setup.gateway, &landing).await);
}

#[tokio::test]
async fn exchanges_are_taken_only_from_exchange_from() {
    let setup = setup_ready("").await;
    let body = landing_of(&login_until_callback(&setup, None).await).body();
    // 127.0.0.2 is loopback, but not in the default exchange_from (127.0.0.1, ::1).
    let reply = exchange_from(UNTRUSTED, &setup.gateway, "application/json", body.clone()).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(reply.json()["error"], "access_denied");
    // The refused attempt did not burn the code.
    let reply = exchange_from(TRUSTED, &setup.gateway, "application/json", body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let setup = setup_restricted().await;
    let body = landing_of(&login_until_callback(&setup, None).await).body();
    let reply = exchange_from(TRUSTED, &setup.gateway, "application/json", body.clone()).await;
    assert_eq!(reply.status, 403, "127.0.0.1 is outside [127.0.0.2/32]");
    let reply = exchange_from(UNTRUSTED, &setup.gateway, "application/json", body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn a_code_redeemed_without_its_browser_binding_is_refused_and_not_used_up() {
    let setup = setup_ready("").await;
    // An attacker logs in as himself, stops at the landing URL, and sends it to a victim:
    // the victim's app session would be logged in as the attacker (login CSRF at the
    // last hop). The victim's browser has no code cookie for that code, so the app's
    // server sends none, or the victim's own, or whatever it finds.
    let attacker = login_until_callback(&setup, None).await;
    let auth_code = auth_code_of(&attacker);
    let unbound = json!({ "auth_code": auth_code }).to_string();
    let reply = exchange_from(TRUSTED, &setup.gateway, "application/json", unbound.clone()).await;
    assert_invalid_grant(&reply);
    assert!(
        reply.json()["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("browser_binding is missing")),
        "{}",
        reply.text()
    );
    let form = format!("auth_code={}", form_encode(&auth_code));
    let content_type = "application/x-www-form-urlencoded";
    assert_invalid_grant(&exchange_from(TRUSTED, &setup.gateway, content_type, form).await);
    let victim = landing_of(&login_until_callback(&setup, None).await);
    let attackers = landing_of(&attacker);
    for binding in [
        victim.binding.as_str(),
        "a-binding-nobody-issued",
        &attackers.binding[1..],
        "",
    ] {
        let forged = Landing {
            auth_code: auth_code.clone(),
            binding: binding.to_owned(),
        };
        assert_invalid_grant(&exchange(&setup.gateway, &forged).await);
    }
    // A script on the page, whose fetch carries the browser's cookies, the code cookie
    // among them, gets nothing from them: the binding is read from the body only.
    let cookie = format!(
        "{}={}",
        code_cookie_name("fluxlit-code", &auth_code),
        attackers.binding
    );
    let reply = exchange_with(&setup.gateway, &unbound, &[("cookie", &cookie)]).await;
    assert_invalid_grant(&reply);

    // None of that used a code up: each redeems once, with its own binding.
    assert_eq!(oidc_status(&setup.gateway).store.auth_codes, Some(2));
    assert_eq!(exchange(&setup.gateway, &attackers).await.status, 200);
    assert_invalid_grant(&exchange(&setup.gateway, &attackers).await);
    assert_eq!(exchange(&setup.gateway, &victim).await.status, 200);
}

#[tokio::test]
async fn the_code_cookie_is_http_only_lax_scoped_to_the_app_and_lives_as_long_as_the_code() {
    let setup = setup_from(|idp, upstream| {
        config(idp, upstream, "auth_code_ttl = \"45s\"").replace(
            &format!("public_base_url = \"{PUBLIC_BASE}\""),
            &format!("public_base_url = \"{PUBLIC_BASE}/app\""),
        )
    })
    .await;
    let reply = login_until_callback(&setup, None).await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    let auth_code = auth_code_of(&reply);
    let name = code_cookie_name("fluxlit-code", &auth_code);
    let (_, value, attributes) = set_cookie_named(&reply, &name);
    // 32 random bytes, base64url, and not the code.
    assert!(value.len() >= 43, "{value}");
    assert!(
        value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{value}"
    );
    assert_ne!(value, auth_code);
    assert!(attributes.contains_key("httponly"), "{attributes:?}");
    assert_eq!(attribute(&attributes, "samesite"), Some("Lax"));
    assert_eq!(
        attribute(&attributes, "path"),
        Some("/app/"),
        "the app's path"
    );
    assert_eq!(
        attribute(&attributes, "max-age"),
        Some("45"),
        "auth_code_ttl"
    );
    assert!(!attributes.contains_key("secure"), "http: {attributes:?}");
    assert!(!attributes.contains_key("domain"), "{attributes:?}");
    // Each code gets a cookie of its own: logins finished in two tabs both redeem.
    let other = landing_of(&login_until_callback(&setup, None).await);
    assert_ne!(other.binding, value);
    let first = Landing {
        auth_code,
        binding: value,
    };
    assert_eq!(exchange(&setup.gateway, &other).await.status, 200);
    assert_eq!(exchange(&setup.gateway, &first).await.status, 200);
}

async fn setup_restricted() -> Setup {
    setup_ready("exchange_from = [\"127.0.0.2/32\"]").await
}

/// Asserts a 401 `invalid_client` with a `Bearer` challenge, cached nowhere.
fn assert_invalid_client(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 401, "{what}: {}", reply.text());
    assert_eq!(reply.json()["error"], "invalid_client", "{what}");
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"fluxlit exchange\""),
        "{what}"
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"), "{what}");
}

#[tokio::test]
async fn with_an_exchange_secret_the_exchange_needs_it() {
    let setup = setup_ready(WITH_EXCHANGE_SECRET).await;
    let body = landing_of(&login_until_callback(&setup, None).await).body();
    let right = format!("Bearer {EXCHANGE_SECRET}");
    let basic = format!("Basic {}", standard_base64(EXCHANGE_SECRET.as_bytes()));
    let prefix = format!("Bearer {}", &EXCHANGE_SECRET[..EXCHANGE_SECRET.len() - 1]);
    let longer = format!("Bearer {EXCHANGE_SECRET}x");
    for (what, headers) in [
        ("no Authorization", vec![]),
        (
            "a wrong secret",
            vec![("authorization", "Bearer not-the-secret")],
        ),
        (
            "the secret but one byte",
            vec![("authorization", prefix.as_str())],
        ),
        (
            "the secret and one byte",
            vec![("authorization", longer.as_str())],
        ),
        (
            "the secret as Basic",
            vec![("authorization", basic.as_str())],
        ),
        (
            "the client secret",
            vec![(
                "authorization",
                "Bearer test-only oidc client secret (with spaces & symbols)",
            )],
        ),
        (
            "the secret twice",
            vec![
                ("authorization", right.as_str()),
                ("authorization", right.as_str()),
            ],
        ),
    ] {
        let reply = exchange_with(&setup.gateway, &body, &headers).await;
        assert_invalid_client(&reply, what);
    }
    // The secret does not stand in for the address: from outside exchange_from, 403.
    let request = http::Request::post("/auth/exchange")
        .header("host", setup.gateway.addr().to_string())
        .header("content-type", "application/json")
        .header("authorization", right.as_str())
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let reply = within(
        "exchange",
        send_from(UNTRUSTED, setup.gateway.addr(), request),
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.text());

    // None of the refusals burnt the code; the app's server, with the secret, gets it.
    let reply = exchange_with(&setup.gateway, &body, &[("authorization", &right)]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.json()["access_token"].is_string());
    let reply = exchange_with(&setup.gateway, &body, &[("authorization", &right)]).await;
    assert_invalid_grant(&reply);

    // Without exchange_secret, an Authorization header is neither needed nor looked at.
    let setup = setup_ready("").await;
    let body = landing_of(&login_until_callback(&setup, None).await).body();
    let reply = exchange_with(&setup.gateway, &body, &[("authorization", "Bearer x")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// `POST /auth/exchange` as raw bytes from `source` with `headers` (full lines).
async fn raw_exchange_from(
    source: IpAddr,
    gateway: &impl Reachable,
    headers: &[&str],
    body: &str,
) -> RawReply {
    raw_post(
        source,
        gateway.addr(),
        "/auth/exchange",
        headers,
        "application/json",
        body,
    )
    .await
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_exchange_is_judged_on_the_client_address() {
    // nginx on this host forwards browsers to the gateway: every browser's TCP peer is
    // 127.0.0.1, which is in trust.proxies and in the default exchange_from.
    let setup = setup_behind_proxy("").await;
    let body = landing_of(&login_until_callback(&setup, None).await).body();
    // A script on the page, in a browser at 203.0.113.7, races the app's server for the
    // code through the proxy, which appends the browser's address; a hop the browser
    // wrote itself to the left of it never wins.
    for forwarded_for in [
        "203.0.113.7",
        "127.0.0.1, 203.0.113.7",
        "::1, 203.0.113.7",
        "not-an-address, 203.0.113.7",
    ] {
        let header = format!("X-Forwarded-For: {forwarded_for}");
        let reply = raw_exchange_from(TRUSTED, &setup.gateway, &[&header], &body).await;
        assert_eq!(reply.status, 403, "{forwarded_for}: {}", reply.text());
        assert_eq!(reply.json()["error"], "access_denied", "{forwarded_for}");
    }
    // The app's server, beside the gateway, is accepted, and the refusals burnt nothing.
    let reply = raw_exchange_from(TRUSTED, &setup.gateway, &[], &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.json()["access_token"].is_string());

    // An app server that reaches the gateway through the same proxy is loopback too.
    let body = landing_of(&login_until_callback(&setup, None).await).body();
    let header = "X-Forwarded-For: 127.0.0.1";
    let reply = raw_exchange_from(TRUSTED, &setup.gateway, &[header], &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

// ---------------------------------------------------------------------------------------
// Open redirects through `next`.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn next_values_that_leave_the_origin_fall_back_to_the_root() {
    let setup = setup_ready("").await;
    // `next` as the browser's code meant it (the test form-encodes it into the query).
    // `/%2F%2Fevil.com` is refused, not kept: some servers decode %2F into `//evil.com`.
    let tricks = [
        "//evil.com",
        "///evil.com",
        "https://evil.com",
        "http:evil.com",
        "/\\evil.com",
        "\\/evil.com",
        "\\\\evil.com",
        "/%2F%2Fevil.com",
        "/%5Cevil.com",
        "javascript:alert(1)",
        "evil.com",
        "/\tevil.com",
        "/x\r\nSet-Cookie: pwned=1",
        "/x%0d%0aSet-Cookie:pwned=1",
        "/x#@evil.com",
        "",
    ];
    for next in tricks {
        let reply = login_until_callback(&setup, Some(next)).await;
        assert_eq!(reply.status, 302, "{next:?}: {}", reply.text());
        assert!(
            location(&reply).starts_with("/?auth_code="),
            "{next:?} must fall back to /: {}",
            location(&reply)
        );
    }
    // A raw, unencoded `next=//evil.com` in the query too.
    let reply = get_from(TRUSTED, &setup.gateway, "/auth/login?next=//evil.com", &[]).await;
    let cookie = login_cookie(&reply);
    let (code, state, _) = authorize_at_idp(&setup.idp, location(&reply)).await;
    let reply = callback(&setup.gateway, &code, &state, Some(&cookie)).await;
    assert!(
        location(&reply).starts_with("/?auth_code="),
        "{}",
        location(&reply)
    );

    // Same-origin paths are kept.
    let reply = login_until_callback(&setup, Some("/reports/7?range=30d")).await;
    assert!(
        location(&reply).starts_with("/reports/7?range=30d&auth_code="),
        "{}",
        location(&reply)
    );
}

#[tokio::test]
async fn next_values_with_dot_segments_land_under_the_base_path() {
    // Another app shares the host: `/other-app/` beside this gateway's `/app/`. A `next`
    // that climbs out of `/app` would carry the auth code into the other app's URL (and
    // its access log).
    let setup = setup_at(&format!("{PUBLIC_BASE}/app/")).await;
    let climbs = [
        "/../x",
        "/%2e%2e/x",
        "/a/../../x",
        "/%2E%2e/other-app/",
        "/.%2e/x",
        "/..;/x",
        "/%252e%252e/x",
        "/a/./b",
        "/..",
    ];
    for next in climbs {
        let reply = login_until_callback(&setup, Some(next)).await;
        assert_eq!(reply.status, 302, "{next:?}: {}", reply.text());
        assert!(
            location(&reply).starts_with("/app/?auth_code="),
            "{next:?} must land on the base path: {}",
            location(&reply)
        );
        // The logout's `next` follows the same rule.
        let path = format!("/auth/logout?next={}", form_encode(next));
        let reply = get_from(TRUSTED, &setup.gateway, &path, &[]).await;
        assert_eq!(reply.status, 302, "{next:?}: {}", reply.text());
        assert_eq!(location(&reply), "/app/", "{next:?}");
    }
    // Dots that are no segment of their own, and dots in the query, are kept.
    for next in ["/a..b/.c?back=/../x", "/v1.2/report"] {
        let reply = login_until_callback(&setup, Some(next)).await;
        assert!(
            location(&reply).starts_with(&format!("/app{next}")),
            "{next:?}: {}",
            location(&reply)
        );
    }
}

// ---------------------------------------------------------------------------------------
// Bad id_tokens.
// ---------------------------------------------------------------------------------------

/// The checks of an id_token's claims, each with the IdP misbehaviour that fails it.
const CLAIM_CHECKS: [(IdTokenMode, &str); 5] = [
    (IdTokenMode::WrongNonce, "nonce"),
    (IdTokenMode::WrongAudience, "aud"),
    (IdTokenMode::Expired, "exp"),
    (IdTokenMode::WrongIssuer, "iss"),
    (IdTokenMode::SeveralAudiencesNoAzp, "azp"),
];

/// The checks of its signature, likewise.
const SIGNATURE_CHECKS: [(IdTokenMode, &str); 3] = [
    (IdTokenMode::AlgNone, "alg"),
    (IdTokenMode::UnknownKey, "signature"),
    (IdTokenMode::ForgedSignature, "signature"),
];

/// For each IdP misbehaviour: the callback answers 403 naming the failed check, sends
/// the browser nowhere, shows no token, and mints nothing.
async fn assert_each_check_refused(setup: &Setup, cases: &[(IdTokenMode, &str)]) {
    for &(mode, check) in cases {
        setup.idp.set_mode(mode);
        let minted = oidc_status(&setup.gateway).store.auth_codes;
        let reply = login_until_callback(setup, Some("/x")).await;
        assert_eq!(reply.status, 403, "{mode:?}: {}", reply.text());
        assert!(
            reply.text().contains(&format!("failed the {check} check")),
            "{mode:?} names the {check} check: {}",
            reply.text()
        );
        assert!(reply.header("location").is_none(), "{mode:?}");
        assert!(
            !reply.text().contains("eyJ"),
            "{mode:?}: the page never shows a token"
        );
        assert_eq!(
            oidc_status(&setup.gateway).store.auth_codes,
            minted,
            "{mode:?}: nothing minted"
        );
    }
}

#[tokio::test]
async fn an_id_token_failing_any_check_mints_nothing() {
    let setup = setup_ready("").await;
    assert_each_check_refused(&setup, &CLAIM_CHECKS).await;
    assert_each_check_refused(&setup, &SIGNATURE_CHECKS).await;
    assert_eq!(oidc_status(&setup.gateway).store.auth_codes, Some(0));
    assert_eq!(setup.upstream.hits(), 0);

    // The same gateway still logs users in once the IdP behaves.
    setup.idp.set_mode(IdTokenMode::Good);
    let reply = login_until_callback(&setup, Some("/x")).await;
    assert_eq!(reply.status, 302, "{}", reply.text());
}

/// A custom provider with manual endpoints and `allow_unverified_id_token_for_custom_oidc`:
/// nothing is discovered and there is no JWKS. Logins work from the first request and
/// every claim is still checked; the signature is not — a token signed with a key nobody
/// published passes, which is the danger the flag's name and its warning spell out.
#[tokio::test]
async fn a_custom_provider_with_manual_endpoints_logs_in_without_discovery() {
    let idp = Idp::spawn(false).await;
    let upstream = CountingUpstream::spawn().await;
    let extra = format!(
        "authorization_endpoint = \"{issuer}/authorize\"\n\
         token_endpoint = \"{issuer}/token\"\n\
         allow_unverified_id_token_for_custom_oidc = true",
        issuer = idp.issuer()
    );
    let gateway = start_with_files(&config(&idp, &upstream, &extra), &SECRET_FILES).await;
    let setup = Setup {
        gateway,
        idp,
        upstream,
    };

    // No waiting for discovery: the settings are the file's.
    let reply = login_until_callback(&setup, Some("/x")).await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    let reply = exchange(&setup.gateway, &landing_of(&reply)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let access_token = reply.json()["access_token"].as_str().unwrap().to_owned();
    let reply = get_with_token(&setup.gateway, "/api/me", &access_token).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.upstream_header("x-fluxlit-sub"), [SUB]);
    assert_eq!(
        setup.idp.state.discovery_hits.load(Ordering::SeqCst),
        0,
        "nothing is discovered"
    );
    assert!(
        setup.gateway.gateway.snapshot().providers["corp"]
            .jwks_status()
            .is_none(),
        "no JWKS"
    );

    setup.idp.set_mode(IdTokenMode::UnknownKey);
    let reply = login_until_callback(&setup, Some("/x")).await;
    assert_eq!(
        reply.status,
        302,
        "the signature is not checked: {}",
        reply.text()
    );

    assert_each_check_refused(&setup, &CLAIM_CHECKS).await;
}

// ---------------------------------------------------------------------------------------
// Discovery, the store, reloads, logout.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn until_discovery_succeeds_the_login_answers_503() {
    let idp = Idp::spawn(false).await;
    idp.state.discovery_failing.store(true, Ordering::SeqCst);
    let upstream = CountingUpstream::spawn().await;
    let gateway = start_with_files(&config(&idp, &upstream, ""), &SECRET_FILES).await;
    eventually("a first discovery attempt", || async {
        (idp.state.discovery_hits.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    let reply = login(&gateway, Some("/x")).await;
    reply.assert_says(503, "have not been loaded");
    let status = oidc_status(&gateway);
    assert!(!status.discovery.loaded);
    assert!(
        status
            .discovery
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("500")),
        "{status:?}"
    );

    idp.state.discovery_failing.store(false, Ordering::SeqCst);
    eventually("discovery recovering", || async {
        (login(&gateway, Some("/x")).await.status == 302).then_some(())
    })
    .await;
}

#[tokio::test]
async fn logins_store_nothing_and_finished_logins_stay_within_the_store_bound() {
    let setup = setup_ready(
        "store_max_entries = 3\nlogin_ttl = \"2s\"\nlogin_rate_limit = { rate = \"100/s\", burst = 100 }",
    )
    .await;
    // Logins in progress live in their browsers: however many, the store holds none.
    for _ in 0..8 {
        assert_eq!(login(&setup.gateway, None).await.status, 302);
    }
    assert_eq!(oidc_status(&setup.gateway).store.used_states, Some(0));

    // Finished logins are marked used (to refuse a replay) up to the bound, also once
    // their codes are redeemed...
    for _ in 0..3 {
        login_for_token(&setup).await;
    }
    let reply = login_until_callback(&setup, None).await;
    reply.assert_says(503, "too many finished logins");
    let status = oidc_status(&setup.gateway).store;
    assert_eq!(
        (status.used_states, status.max_entries),
        (Some(3), Some(3)),
        "{status:?}"
    );
    // The snapshot endpoint shows the same.
    let providers = fluxlit::serve::admin::snapshot_json(
        &setup.gateway.gateway.snapshot(),
        setup.gateway.gateway.reloader(),
    );
    let providers: Value = serde_json::from_str(&providers).unwrap();
    assert_eq!(
        providers["auth_providers"]["corp"]["oidc"]["store"]["max_entries"],
        3
    );

    // ...and expire with their login, making room again.
    eventually("used states expiring", || async {
        (login_until_callback(&setup, None).await.status == 302).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_flood_of_logins_from_one_address_is_limited_while_another_address_logs_in() {
    let setup = setup_ready("").await;
    // The default limit: a burst of 20, then 10 a minute.
    for attempt in 0..20 {
        let reply = get_from(UNTRUSTED, &setup.gateway, "/auth/login", &[]).await;
        assert_eq!(reply.status, 302, "login {attempt} of the burst");
    }
    let refused = get_from(UNTRUSTED, &setup.gateway, "/auth/login", &[]).await;
    refused.assert_says(429, "too many requests");
    let retry_after: u64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert!((1..=6).contains(&retry_after), "{retry_after}");

    // The flood costs 127.0.0.1 nothing: its login finishes and its code is redeemed.
    let landing = landing_of(&login_until_callback(&setup, Some("/app")).await);
    let reply = exchange(&setup.gateway, &landing).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Only the login is limited: the flooding address can still finish a login it began.
    let callback = get_from(
        UNTRUSTED,
        &setup.gateway,
        "/auth/callback?code=x&state=y",
        &[],
    )
    .await;
    assert_eq!(callback.status, 400, "{}", callback.text());
}

#[tokio::test]
async fn a_reload_keeps_logins_in_progress_and_the_discovered_settings() {
    let setup = setup_ready("").await;
    let before = setup.gateway.gateway.snapshot();
    let reply = login(&setup.gateway, Some("/after-reload")).await;
    let cookie = login_cookie(&reply);
    let (code, state, _) = authorize_at_idp(&setup.idp, location(&reply)).await;

    let text = config(&setup.idp, &setup.upstream, "access_token_ttl = \"5m\"");
    setup.gateway.write_config(&text);
    setup.gateway.wait_for_generation(2).await;
    let after = setup.gateway.gateway.snapshot();
    let oidc = |snapshot: &fluxlit::snapshot::Snapshot| match &snapshot.providers["corp"].check {
        fluxlit::auth::Check::Oidc(oidc) => Arc::clone(oidc),
        _ => panic!("corp is oidc"),
    };
    assert!(Arc::ptr_eq(
        &oidc(&before).discovery,
        &oidc(&after).discovery
    ));
    assert!(Arc::ptr_eq(&oidc(&before).store, &oidc(&after).store));
    assert!(
        oidc_status(&setup.gateway).discovery.loaded,
        "no 503 after a reload"
    );

    let reply = callback(&setup.gateway, &code, &state, Some(&cookie)).await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    assert!(location(&reply).starts_with("/after-reload?auth_code="));
    let reply = exchange(&setup.gateway, &landing_of(&reply)).await;
    let expires_in = reply.json()["expires_in"].as_u64().unwrap();
    assert!(
        expires_in <= 300,
        "the new access_token_ttl applies: {expires_in}"
    );
}

#[tokio::test]
async fn logout_goes_through_the_idp_when_it_can() {
    let setup = setup_with("", true).await;
    wait_for_discovery(&setup.gateway).await;
    let reply = get_from(TRUSTED, &setup.gateway, "/auth/logout?next=/bye", &[]).await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    let url = Url::parse(location(&reply)).unwrap();
    assert_eq!(
        url.as_str().split('?').next(),
        Some(format!("{}/logout", setup.idp.issuer()).as_str())
    );
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(query["client_id"], CLIENT_ID);
    assert_eq!(
        query["post_logout_redirect_uri"],
        format!("{PUBLIC_BASE}/bye")
    );

    let reply = get_from(TRUSTED, &setup.gateway, "/auth/logout?next=//evil.com", &[]).await;
    let url = Url::parse(location(&reply)).unwrap();
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(query["post_logout_redirect_uri"], format!("{PUBLIC_BASE}/"));

    // Without an end_session_endpoint, straight back to next.
    let setup = setup_ready("").await;
    let reply = get_from(TRUSTED, &setup.gateway, "/auth/logout?next=/bye", &[]).await;
    assert_eq!(reply.status, 302);
    assert_eq!(location(&reply), "/bye");
    let reply = get_from(
        TRUSTED,
        &setup.gateway,
        "/auth/logout?next=https://evil.com",
        &[],
    )
    .await;
    assert_eq!(location(&reply), "/");
}

// ---------------------------------------------------------------------------------------
// Validation.
// ---------------------------------------------------------------------------------------

/// The errors (rendered) of loading `text`; empty when it loads.
fn load_errors(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fluxlit.toml");
    std::fs::write(&path, text).unwrap();
    match fluxlit::config::load(&path) {
        Ok(_) => Vec::new(),
        Err(error) => error.render_errors(),
    }
}

fn oidc_config(provider: &str, server: &str) -> String {
    ConfigText::new()
        .server(server)
        .echo_upstream("api")
        .guarded_route("api", "/api", "api", "main")
        .jwt("main", MINT_ISSUER, MINT_AUDIENCE, "[\"HS256\"]")
        .with("hs256_secret = { env = \"HS\" }")
        .jwt("keys", MINT_ISSUER, MINT_AUDIENCE, "[\"RS256\"]")
        .with("jwks_url = \"https://idp.example/jwks\"")
        .provider("corp", "oidc", provider)
        .into()
}

const GOOD_PROVIDER: &str = r#"issuer_url = "https://idp.example"
client_id = "web"
client_secret = { env = "OIDC_SECRET" }
mint = "main""#;
const SERVER: &str = "public_base_url = \"https://app.example\"";

fn assert_refused(provider: &str, server: &str, expected: &[&str]) {
    let errors = load_errors(&oidc_config(provider, server));
    for text in expected {
        assert!(
            errors.iter().any(|e| e.contains(text)),
            "expected an error saying {text:?}; got {errors:#?}"
        );
    }
}

#[test]
fn a_sound_oidc_provider_validates() {
    assert_eq!(
        load_errors(&oidc_config(GOOD_PROVIDER, SERVER)),
        Vec::<String>::new()
    );
    let loopback = GOOD_PROVIDER.replace("https://idp.example", "http://127.0.0.1:9000");
    assert_eq!(
        load_errors(&oidc_config(&loopback, SERVER)),
        Vec::<String>::new()
    );
}

#[test]
fn validation_refuses_oidc_mistakes() {
    let with = |from: &str, to: &str| GOOD_PROVIDER.replace(from, to);
    assert_refused(
        &with("mint = \"main\"", "mint = \"mian\""),
        SERVER,
        &[
            "auth.providers.corp.mint",
            "unknown auth provider \"mian\"",
            "did you mean \"main\"?",
        ],
    );
    assert_refused(
        &with("mint = \"main\"", "mint = \"keys\""),
        SERVER,
        &["provider \"keys\" cannot sign tokens"],
    );
    assert_refused(
        &with("mint = \"main\"", "mint = \"corp\""),
        SERVER,
        &["provider \"corp\" is not a jwt provider"],
    );
    assert_refused(
        &with("client_secret = { env = \"OIDC_SECRET\" }\n", ""),
        SERVER,
        &["auth.providers.corp.client_secret", "needs `client_secret`"],
    );
    assert_refused(
        &with("https://idp.example", "http://idp.example"),
        SERVER,
        &["auth.providers.corp.issuer_url", "plain http"],
    );
    assert_refused(
        &format!("{GOOD_PROVIDER}\nstore = \"rediss://127.0.0.1:6380/0#insecure\""),
        SERVER,
        &["auth.providers.corp.store", "no query or fragment"],
    );
    assert_refused(
        &format!("{GOOD_PROVIDER}\nstore = \"memcached\""),
        SERVER,
        &["unknown store \"memcached\""],
    );
    assert_refused(
        &format!("{GOOD_PROVIDER}\nexchange_from = [\"10.0.0.0/33\"]"),
        SERVER,
        &[
            "auth.providers.corp.exchange_from[0]",
            "not an IP address or CIDR range",
        ],
    );
    assert_refused(
        &format!("{GOOD_PROVIDER}\npaths = {{ login = \"auth/login\" }}"),
        SERVER,
        &["auth.providers.corp.paths.login", "must start with '/'"],
    );
    assert_refused(
        &format!("{GOOD_PROVIDER}\npaths = {{ logout = \"/auth/login\" }}"),
        SERVER,
        &["auth.providers.corp.paths.logout", "is also paths.login"],
    );
    assert_refused(
        &format!("{GOOD_PROVIDER}\nclaims = [\"groups\"]"),
        SERVER,
        &["claim \"groups\" cannot be copied"],
    );
    assert_refused(
        &format!("{GOOD_PROVIDER}\nhs256_secret = {{ env = \"X\" }}"),
        SERVER,
        &["`hs256_secret` applies to kind = \"jwt\" only"],
    );
    assert_refused(GOOD_PROVIDER, "", &["needs server.public_base_url"]);
}

#[test]
fn manual_endpoints_are_refused_and_the_escape_hatch_is_warned_about() {
    let manual = format!(
        "{GOOD_PROVIDER}\nauthorization_endpoint = \"https://idp.example/authorize\"\n\
         token_endpoint = \"https://idp.example/token\""
    );
    assert_refused(
        &manual,
        SERVER,
        &[
            "auth.providers.corp.authorization_endpoint",
            "could not be verified: refused",
        ],
    );
    let flag = "\nallow_unverified_id_token_for_custom_oidc = true";
    let dangerous = format!("{manual}{flag}");
    let warnings_of = |text: &str| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fluxlit.toml");
        std::fs::write(&path, oidc_config(text, SERVER)).unwrap();
        let checked = fluxlit::config::load(&path).expect("a warning, not an error");
        checked
            .warnings
            .iter()
            .map(|w| w.render(&path))
            .collect::<Vec<_>>()
    };
    let warnings = warnings_of(&dangerous);
    assert!(
        warnings.iter().any(|w| w.contains("DANGER")
            && w.contains("allow_unverified_id_token_for_custom_oidc")
            && w.contains("without checking their signature")),
        "{warnings:#?}"
    );

    // Both endpoints, each over https (or loopback http).
    let only_token =
        format!("{GOOD_PROVIDER}\ntoken_endpoint = \"https://idp.example/token\"{flag}");
    assert_refused(
        &only_token,
        SERVER,
        &[
            "auth.providers.corp.authorization_endpoint",
            "needs both authorization_endpoint and token_endpoint",
        ],
    );
    assert_refused(
        &dangerous.replace("https://idp.example/token", "http://idp.example/token"),
        SERVER,
        &["auth.providers.corp.token_endpoint", "plain http"],
    );
    assert_refused(
        &dangerous.replace("https://idp.example/authorize", "not a url"),
        SERVER,
        &["auth.providers.corp.authorization_endpoint", "is not a URL"],
    );
    let loopback = dangerous.replace("https://idp.example/token", "http://127.0.0.1:9000/token");
    assert!(!warnings_of(&loopback).is_empty());

    // The flag alone is loud, even where it changes nothing.
    let flagged = format!("{GOOD_PROVIDER}{flag}");
    assert!(
        warnings_of(&flagged).iter().any(|w| w.contains("DANGER")),
        "the flag is warned about"
    );
}

#[test]
fn a_route_naming_an_oidc_provider_is_a_session_route_without_scopes() {
    // A browser session: no mint needed, no scopes to require.
    let session = oidc_config(GOOD_PROVIDER, SERVER)
        .replace("auth = \"main\"", "auth = \"corp\"")
        .replace("mint = \"main\"", "");
    assert_eq!(load_errors(&session), Vec::<String>::new());
    let scoped = oidc_config(GOOD_PROVIDER, SERVER).replace(
        "auth = \"main\"",
        "auth = \"corp\"\nrequired_scopes = [\"read\"]",
    );
    let errors = load_errors(&scoped);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("routes[0].required_scopes")
                && e.contains("does not issue scopes")
                && e.contains("auth = \"main\"")),
        "{errors:#?}"
    );
    // Without a route naming it, a provider without mint leads nowhere.
    let nowhere = oidc_config(GOOD_PROVIDER, SERVER).replace("mint = \"main\"", "");
    let errors = load_errors(&nowhere);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("auth.providers.corp.mint")
                && e.contains("or a route that names it")),
        "{errors:#?}"
    );
}

#[test]
fn jwt_providers_take_no_oidc_keys() {
    let text = oidc_config(GOOD_PROVIDER, SERVER).replace(
        "jwks_url = \"https://idp.example/jwks\"",
        "jwks_url = \"https://idp.example/jwks\"\nmint = \"main\"",
    );
    let errors = load_errors(&text);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("auth.providers.keys.mint") && e.contains("kind = \"oidc\" only")),
        "{errors:#?}"
    );
}

#[test]
fn an_exchange_open_to_every_address_is_refused() {
    for (exchange_from, key) in [
        ("[\"0.0.0.0/0\"]", "exchange_from[0]"),
        ("[\"::/0\"]", "exchange_from[0]"),
        ("[\"10.0.0.0/8\", \"::0/0\"]", "exchange_from[1]"),
    ] {
        assert_refused(
            &format!("{GOOD_PROVIDER}\nexchange_from = {exchange_from}"),
            SERVER,
            &[
                &format!("auth.providers.corp.{key}"),
                "lets every address exchange auth codes, browsers included",
            ],
        );
    }
}

#[test]
fn exchange_secrets_are_named_like_every_secret_and_belong_to_oidc_providers() {
    assert_eq!(
        load_errors(&oidc_config(
            &format!("{GOOD_PROVIDER}\nexchange_secret = {{ env = \"EXCHANGE\" }}"),
            SERVER
        )),
        Vec::<String>::new()
    );
    assert_refused(
        &format!("{GOOD_PROVIDER}\nexchange_secret = {{ env = \"A\", file = \"b\" }}"),
        SERVER,
        &[
            "auth.providers.corp.exchange_secret",
            "exactly one of `env` or `file`",
        ],
    );
    let text = oidc_config(GOOD_PROVIDER, SERVER).replace(
        "jwks_url = \"https://idp.example/jwks\"",
        "jwks_url = \"https://idp.example/jwks\"\nexchange_secret = { env = \"X\" }",
    );
    let errors = load_errors(&text);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("auth.providers.keys.exchange_secret")
                && e.contains("kind = \"oidc\" only")),
        "{errors:#?}"
    );
}

#[tokio::test]
async fn a_missing_client_secret_refuses_the_config_at_start() {
    let idp = Idp::spawn(false).await;
    let upstream = CountingUpstream::spawn().await;
    // No client.secret file.
    let text = start_error(config(&idp, &upstream, ""), &[("hs256.secret", HS_SECRET)]).await;
    assert!(text.contains("auth.providers.corp.client_secret"), "{text}");
    assert!(!text.contains(CLIENT_SECRET));
    // Nor an exchange secret that is not there.
    let files = [
        ("hs256.secret", HS_SECRET),
        ("client.secret", CLIENT_SECRET),
    ];
    let text = start_error(config(&idp, &upstream, WITH_EXCHANGE_SECRET), &files).await;
    assert!(
        text.contains("auth.providers.corp.exchange_secret"),
        "{text}"
    );
    assert!(text.contains("exchange.secret"), "names the file: {text}");
}

// ---------------------------------------------------------------------------------------
// The Redis store: replicas sharing the machine's Redis, and an outage of a Redis of the
// test's own.
// ---------------------------------------------------------------------------------------

/// The machine's Redis (CI's machine runs it; `.ci/run` starts it when it is down).
const SHARED_REDIS: &str = "redis://127.0.0.1:6379/0";
/// The provider key that keeps logins in [`SHARED_REDIS`].
const SHARED_REDIS_STORE: &str =
    "store = \"redis://127.0.0.1:6379/0\"\nsession_key = { file = \"session.key\" }";

/// A connection to `url`, or a failure that says what is missing. Never a skip.
async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    let connect = async {
        let client = redis::Client::open(url)?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await?;
        Ok::<_, redis::RedisError>(connection)
    };
    match tokio::time::timeout(HANG_GUARD, connect).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => panic!(
            "the Redis these tests need does not answer ({error}); start it with \
             `redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save \"\" \
             --appendonly no` (as .ci/run does)"
        ),
        Err(_) => panic!("hang guard: no answer from Redis within {HANG_GUARD:?}"),
    }
}

/// A provider name of its own for each test run, so runs sharing one Redis never see
/// each other's keys.
fn unique_provider() -> String {
    format!("corp-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// The keys of one provider in a Redis; deleted when dropped, whatever the test did.
struct RedisKeys {
    url: String,
    pattern: String,
}

impl RedisKeys {
    fn of(url: &str, provider: &str) -> Self {
        Self {
            url: url.to_owned(),
            pattern: format!(
                "{}*",
                fluxlit::auth::oidc::redis_store::key_prefix(provider)
            ),
        }
    }

    async fn list(&self) -> Vec<String> {
        let mut connection = redis_connection(&self.url).await;
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(&self.pattern)
            .query_async(&mut connection)
            .await
            .expect("KEYS");
        keys.sort();
        keys
    }
}

impl Drop for RedisKeys {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&self.pattern)
            .query(&mut connection)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _ = redis::cmd("DEL").arg(keys).exec(&mut connection);
        }
    }
}

/// `config` with the `corp` provider renamed.
fn config_for(idp: &Idp, upstream: &CountingUpstream, provider: &str, extra: &str) -> String {
    config(idp, upstream, extra).replace(
        "[auth.providers.corp]",
        &format!("[auth.providers.{provider}]"),
    )
}

fn status_of(gateway: &TestGateway, provider: &str) -> fluxlit::auth::oidc::OidcStatus {
    gateway.gateway.snapshot().providers[provider]
        .oidc_status()
        .expect("an oidc provider")
}

async fn wait_for_discovery_of(gateway: &TestGateway, provider: &str) {
    eventually("OIDC discovery", || async {
        status_of(gateway, provider).discovery.loaded.then_some(())
    })
    .await;
}

fn snapshot_text(gateway: &TestGateway) -> String {
    fluxlit::serve::admin::snapshot_json(&gateway.gateway.snapshot(), gateway.gateway.reloader())
}

#[tokio::test]
async fn three_replicas_sharing_redis_finish_each_others_logins_and_redeem_a_code_once() {
    let mut redis = redis_connection(SHARED_REDIS).await;
    let provider = unique_provider();
    let keys = RedisKeys::of(SHARED_REDIS, &provider);
    let idp = Idp::spawn(false).await;
    let upstream = CountingUpstream::spawn().await;
    let text = config_for(&idp, &upstream, &provider, SHARED_REDIS_STORE);
    // Three gateways, each with its own config file, port and store object: they share
    // nothing but Redis (and the mint key, as replicas do).
    let a = start_with_files(&text, &SECRET_FILES).await;
    let b = start_with_files(&text, &SECRET_FILES).await;
    let c = start_with_files(&text, &SECRET_FILES).await;
    for gateway in [&a, &b, &c] {
        wait_for_discovery_of(gateway, &provider).await;
    }
    let prefix = fluxlit::auth::oidc::redis_store::key_prefix(&provider);

    // Login on A: nothing goes to Redis; the state is sealed in the browser's cookie.
    let reply = login(&a, Some("/reports")).await;
    assert_eq!(reply.status, 302, "login on A: {}", reply.text());
    // The browser carries A's login cookie to whichever replica gets the callback: they
    // share the session key that opens it.
    let cookie = login_cookie(&reply);
    let (code, state, _) = authorize_at_idp(&idp, location(&reply)).await;
    assert_eq!(
        keys.list().await,
        Vec::<String>::new(),
        "a login stores nothing"
    );

    // Callback on B from another browser (the attacker's half-done login sent to a
    // victim): refused before the IdP.
    let reply = login(&c, None).await;
    let (other_code, other_state, _) = authorize_at_idp(&idp, location(&reply)).await;
    let hits = idp.token_hits();
    let reply = callback(&b, &other_code, &other_state, Some(&cookie)).await;
    assert_eq!(reply.status, 400, "another browser: {}", reply.text());
    assert!(reply.text().contains("another browser"), "{}", reply.text());
    assert_eq!(idp.token_hits(), hits, "no code reached the IdP");
    assert_eq!(keys.list().await, Vec::<String>::new(), "nothing minted");

    // Callback on B: it opens the cookie A sealed, and marks the state used for every
    // replica (hashed, for as long as the login could have lasted).
    let reply = callback(&b, &code, &state, Some(&cookie)).await;
    assert_eq!(reply.status, 302, "callback on B: {}", reply.text());
    assert!(
        location(&reply).starts_with("/reports?auth_code="),
        "{}",
        location(&reply)
    );
    let landing = landing_of(&reply);
    let pending = keys.list().await;
    assert_eq!(pending.len(), 2, "the used state and the code: {pending:?}");
    let used = pending
        .iter()
        .find_map(|key| key.strip_prefix(&format!("{prefix}used:")))
        .unwrap_or_else(|| panic!("a used-state key: {pending:?}"));
    assert_eq!(used.len(), 64, "{used}");
    assert!(used.bytes().all(|b| b.is_ascii_hexdigit()), "{used}");
    assert!(
        !pending.iter().any(|key| key.contains(&state)),
        "the raw state is not a key"
    );
    let used_key = format!("{prefix}used:{used}");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&used_key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((1..=600_000).contains(&ttl), "login_ttl (10m): {ttl}");
    let pending: Vec<String> = pending.into_iter().filter(|key| *key != used_key).collect();
    assert!(
        pending[0].starts_with(&format!("{prefix}code:")),
        "{pending:?}"
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&pending[0])
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((1..=60_000).contains(&ttl), "auth_code_ttl (60s): {ttl}");
    let reply = callback(&c, &code, &state, Some(&cookie)).await;
    assert_eq!(reply.status, 400, "the state is used: {}", reply.text());

    // Exchange on C; a second exchange of the same code fails on A (and everywhere).
    let reply = exchange(&c, &landing).await;
    assert_eq!(reply.status, 200, "exchange on C: {}", reply.text());
    let access_token = reply.json()["access_token"].as_str().unwrap().to_owned();
    for replica in [&a, &b, &c] {
        assert_invalid_grant(&exchange(replica, &landing).await);
    }
    assert_eq!(
        keys.list().await,
        vec![used_key.clone()],
        "nothing is left but the used state"
    );
    for replica in [&a, &b, &c] {
        let reply = get_with_token(replica, "/api/me", &access_token).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.upstream_header("x-fluxlit-sub"), [SUB]);
    }

    // One code sent to the three replicas at once: one token.
    let reply = login(&c, None).await;
    let cookie = login_cookie(&reply);
    let (code, state, _) = authorize_at_idp(&idp, location(&reply)).await;
    let landing = landing_of(&callback(&a, &code, &state, Some(&cookie)).await);
    let replies = futures_util::future::join_all(
        [&a, &b, &c, &a, &b, &c]
            .into_iter()
            .map(|replica| exchange(replica, &landing)),
    )
    .await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    for reply in replies.iter().filter(|r| r.status != 200) {
        assert_invalid_grant(reply);
    }

    // What /snapshot shows: where, the namespace, no error.
    let snapshot: Value = serde_json::from_str(&snapshot_text(&b)).unwrap();
    let store = &snapshot["auth_providers"][&provider]["oidc"]["store"];
    assert_eq!(store["kind"], "redis", "{store}");
    assert_eq!(store["url"], SHARED_REDIS, "{store}");
    assert_eq!(store["key_prefix"], prefix.as_str(), "{store}");
    assert!(store.get("last_error").is_none(), "{store}");
}

/// A `fluxlit serve` process of the test's own on `config` (listen made ephemeral) with
/// `files` beside it, in a temporary directory that lives as long as the process.
async fn serve(config: &str, files: &[(&str, &str)]) -> (Serve, tempfile::TempDir) {
    let (dir, _) = config_dir(config, files);
    (Serve::start(dir.path(), &[]).await, dir)
}

/// The same login across three `fluxlit serve` processes (no state shared in memory, as
/// with real replicas) and the machine's Redis: login on A, callback on B, exchange on
/// C, and a second exchange of the code on A fails.
#[tokio::test]
async fn three_fluxlit_processes_sharing_redis_finish_one_login() {
    let provider = unique_provider();
    let _keys = RedisKeys::of(SHARED_REDIS, &provider);
    let idp = Idp::spawn(false).await;
    let upstream = CountingUpstream::spawn().await;
    let text = config_for(&idp, &upstream, &provider, SHARED_REDIS_STORE);
    let (a, _a) = serve(&text, &SECRET_FILES).await;
    let (b, _b) = serve(&text, &SECRET_FILES).await;
    let (c, _c) = serve(&text, &SECRET_FILES).await;
    // Each process discovers the IdP on its own: until then its login answers 503.
    for replica in [&b, &c] {
        eventually("discovery in a replica", || async {
            (login(replica, None).await.status == 302).then_some(())
        })
        .await;
    }
    let reply = eventually("discovery in A", || async {
        let reply = login(&a, Some("/reports")).await;
        (reply.status == 302).then_some(reply)
    })
    .await;
    let cookie = login_cookie(&reply);
    let (code, state, _) = authorize_at_idp(&idp, location(&reply)).await;

    let reply = callback(&b, &code, &state, Some(&cookie)).await;
    assert_eq!(reply.status, 302, "callback on B: {}", reply.text());
    assert!(
        location(&reply).starts_with("/reports?auth_code="),
        "{}",
        location(&reply)
    );
    let landing = landing_of(&reply);
    let reply = exchange(&c, &landing).await;
    assert_eq!(reply.status, 200, "exchange on C: {}", reply.text());
    let access_token = reply.json()["access_token"].as_str().unwrap().to_owned();
    assert_invalid_grant(&exchange(&a, &landing).await);
    assert_invalid_grant(&exchange(&c, &landing).await);
    for replica in [&a, &b, &c] {
        let reply = get_with_token(replica, "/api/me", &access_token).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.upstream_header("x-fluxlit-sub"), [SUB]);
    }
}

/// A redis-server of the test's own, on `port`, killed when dropped.
struct OwnRedis {
    port: u16,
    password: String,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    /// Starts one on a free port, with a password.
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Self {
            port,
            password: format!("pw-{}", uuid::Uuid::new_v4().simple()),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        redis.restart().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://:{}@127.0.0.1:{}/0", self.password, self.port)
    }

    /// (Re)starts the server on the same port and waits until it answers.
    async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--requirepass", &self.password])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start redis-server (is it installed and on PATH?): {error}")
            });
        self.child = Some(child);
        let url = self.url();
        eventually("our redis-server answering", || async {
            let client = redis::Client::open(url.as_str()).ok()?;
            let mut connection = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .ok()
        })
        .await;
    }

    /// Kills the server (no shutdown: an outage) and waits until it is gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A whole login on `setup`'s gateway, through the exchange: the access token.
async fn login_for_token(setup: &Setup) -> String {
    let reply = login_until_callback(setup, None).await;
    assert_eq!(reply.status, 302, "callback: {}", reply.text());
    let reply = exchange(&setup.gateway, &landing_of(&reply)).await;
    assert_eq!(reply.status, 200, "exchange: {}", reply.text());
    reply.json()["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_redis_outage_makes_callbacks_answer_503_while_minted_tokens_keep_working() {
    let mut redis = OwnRedis::start().await;
    let idp = Idp::spawn(false).await;
    let upstream = CountingUpstream::spawn().await;
    // The URL carries a password: it is read from a file next to the config.
    let url = redis.url();
    let text = config(
        &idp,
        &upstream,
        &format!("store = {{ file = \"redis.url\" }}\n{WITH_SESSION_KEY}"),
    );
    let gateway = start_with_files(
        &text,
        &[
            ("hs256.secret", HS_SECRET),
            ("client.secret", CLIENT_SECRET),
            ("session.key", SESSION_KEY),
            ("redis.url", &format!("{url}\n")),
        ],
    )
    .await;
    let setup = Setup {
        gateway,
        idp,
        upstream,
    };
    wait_for_discovery(&setup.gateway).await;

    let token = login_for_token(&setup).await;
    let reply = get_with_token(&setup.gateway, "/api/me", &token).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let status = oidc_status(&setup.gateway).store;
    assert_eq!(status.kind, "redis");
    assert_eq!(
        status.url.as_deref(),
        Some(format!("redis://:***@127.0.0.1:{}/0", redis.port).as_str())
    );
    assert!(!snapshot_text(&setup.gateway).contains(&redis.password));
    assert!(!format!("{:?}", setup.gateway.gateway.snapshot().providers).contains(&redis.password));

    // A reload that leaves the URL alone keeps the store (and its connection).
    let before = setup.gateway.gateway.snapshot();
    setup.gateway.write_config(&config(
        &setup.idp,
        &setup.upstream,
        &format!(
            "store = {{ file = \"redis.url\" }}\naccess_token_ttl = \"10m\"\n{WITH_SESSION_KEY}"
        ),
    ));
    setup.gateway.wait_for_generation(2).await;
    let store = |snapshot: &fluxlit::snapshot::Snapshot| match &snapshot.providers["corp"].check {
        fluxlit::auth::Check::Oidc(oidc) => Arc::clone(&oidc.store),
        _ => panic!("corp is oidc"),
    };
    assert!(Arc::ptr_eq(
        &store(&before),
        &store(&setup.gateway.gateway.snapshot())
    ));

    // A code minted before the outage.
    let pending_code = landing_of(&login_until_callback(&setup, None).await);

    redis.kill();

    for attempt in 0..3 {
        // The login itself needs no store (its state is in the browser); the callback,
        // which marks the state used and stores the code, does.
        let reply = login_until_callback(&setup, None).await;
        assert_eq!(reply.status, 503, "callback {attempt}: {}", reply.text());
        let text = reply.text();
        assert!(
            text.contains("the login store is unavailable") && text.contains("Redis"),
            "{text}"
        );
        assert!(!text.contains(&redis.password), "{text}");
    }
    let reply = exchange(&setup.gateway, &pending_code).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.json()["error"], "temporarily_unavailable");
    // The token minted earlier needs no store.
    let reply = get_with_token(&setup.gateway, "/api/me", &token).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.upstream_header("x-fluxlit-sub"), [SUB]);
    let status = oidc_status(&setup.gateway).store;
    let last_error = status.last_error.expect("the failure is shown");
    assert!(!last_error.contains(&redis.password), "{last_error}");
    assert!(!snapshot_text(&setup.gateway).contains(&redis.password));

    // Back on the same port: logins work again without a restart of the gateway.
    redis.restart().await;
    eventually("logins after Redis is back", || async {
        (login_until_callback(&setup, None).await.status == 302).then_some(())
    })
    .await;
    let token = login_for_token(&setup).await;
    let reply = get_with_token(&setup.gateway, "/api/me", &token).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(oidc_status(&setup.gateway).store.last_error, None);
}

#[tokio::test]
async fn a_refused_redis_password_answers_503_until_redis_takes_it() {
    let redis = OwnRedis::start().await;
    let idp = Idp::spawn(false).await;
    let upstream = CountingUpstream::spawn().await;
    let wrong = format!("redis://:not-{}@127.0.0.1:{}/0", redis.password, redis.port);
    let text = config(
        &idp,
        &upstream,
        &format!("store = {{ env = \"FLUXLIT_TEST_REDIS_URL\" }}\n{WITH_SESSION_KEY}"),
    );
    let env = TestEnvironment::of(&[("FLUXLIT_TEST_REDIS_URL", &wrong)]);
    let gateway = start_with_environment(&text, &SECRET_FILES, env).await;
    let setup = Setup {
        gateway,
        idp,
        upstream,
    };
    wait_for_discovery(&setup.gateway).await;

    for _ in 0..2 {
        // The login itself needs no store; the callback does.
        let reply = login_until_callback(&setup, None).await;
        reply.assert_says(503, "Redis refused the gateway's credentials");
    }
    // Redis is given the password the gateway has: the next logins work, no reload.
    let mut admin = redis_connection(&redis.url()).await;
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(format!("not-{}", redis.password))
        .exec_async(&mut admin)
        .await
        .unwrap();
    eventually("logins once Redis takes the password", || async {
        (login_until_callback(&setup, None).await.status == 302).then_some(())
    })
    .await;
    login_for_token(&setup).await;
}

#[tokio::test]
async fn replicas_sharing_redis_need_a_session_key_of_32_bytes_or_more() {
    let errors = load_errors(&oidc_config(
        &format!("{GOOD_PROVIDER}\nstore = \"redis://cache:6379/0\""),
        SERVER,
    ));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("auth.providers.corp.session_key")
                && e.contains("open each other's login cookies")),
        "{errors:#?}"
    );
    // A memory store needs none: its key is generated at start.
    assert_eq!(
        load_errors(&oidc_config(GOOD_PROVIDER, SERVER)),
        Vec::<String>::new()
    );

    // A short key is refused where it is read, with its key path.
    let idp = Idp::spawn(false).await;
    let upstream = CountingUpstream::spawn().await;
    let text = config(&idp, &upstream, WITH_SESSION_KEY);
    let mut files = SECRET_FILES.to_vec();
    files.retain(|(name, _)| *name != "session.key");
    files.push(("session.key", "only twenty-one bytes"));
    let error = start_error(&text, &files).await;
    assert!(
        error.contains("auth.providers.corp.session_key") && error.contains("at least 32"),
        "{error}"
    );
}

#[test]
fn redis_store_urls_are_checked_and_passwords_never_repeated() {
    for store in [
        "store = \"redis://127.0.0.1:6379/0\"",
        "store = \"redis://cache.internal\"",
        "store = { env = \"FLUXLIT_REDIS_URL\" }",
        "store = { file = \"redis-url\" }",
    ] {
        assert_eq!(
            load_errors(&oidc_config(
                &format!("{GOOD_PROVIDER}\n{store}\nsession_key = {{ env = \"SESSION_KEY\" }}"),
                SERVER
            )),
            Vec::<String>::new(),
            "{store}"
        );
    }
    for (store, expected) in [
        (
            "store = \"redis://:hunter2-pw@cache:6379/0\"",
            &["auth.providers.corp.store", "carries a password", "{ env ="][..],
        ),
        (
            "store = \"redis://app:hunter2-pw@cache/0\"",
            &["carries a password"],
        ),
        (
            "store = \"rediss://:hunter2-pw@cache:6380/0\"",
            &["carries a password"],
        ),
        (
            "store = \"redis://:hunter2-pw@cache/zero\"",
            &["auth.providers.corp.store", "a database number"],
        ),
        (
            "store = \"redis://:hunter2-pw@/0\"",
            &["not a valid Redis URL"],
        ),
        ("store = \"redis:hunter2-pw@cache\"", &["unknown store"]),
        ("store = \"memcached\"", &["unknown store \"memcached\""]),
        (
            "store = { env = \"A\", file = \"b\" }",
            &[
                "auth.providers.corp.store",
                "exactly one of `env` or `file`",
            ],
        ),
        (
            "store = { evn = \"A\" }",
            &["auth.providers.corp.store.evn", "unknown key `evn`"],
        ),
        ("store = 6379", &["a \"redis://host:port/db\" URL"]),
    ] {
        let errors = load_errors(&oidc_config(&format!("{GOOD_PROVIDER}\n{store}"), SERVER));
        for text in expected {
            assert!(
                errors.iter().any(|e| e.contains(text)),
                "{store}: expected {text:?} in {errors:#?}"
            );
        }
        assert!(
            errors.iter().all(|e| !e.contains("hunter2")),
            "{store}: {errors:#?}"
        );
    }

    // store_max_entries bounds the memory store only.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fluxlit.toml");
    let provider = format!(
        "{GOOD_PROVIDER}\nstore = \"redis://cache/0\"\nstore_max_entries = 5\n\
         session_key = {{ env = \"SESSION_KEY\" }}"
    );
    std::fs::write(&path, oidc_config(&provider, SERVER)).unwrap();
    let checked = fluxlit::config::load(&path).expect("a warning, not an error");
    assert!(
        checked.warnings.iter().any(|w| {
            let text = w.render(&path);
            text.contains("store_max_entries") && text.contains("memory store only")
        }),
        "{:#?}",
        checked.warnings
    );
}

#[tokio::test]
async fn a_bad_redis_url_in_a_secret_file_refuses_the_config_without_repeating_it() {
    let idp = Idp::spawn(false).await;
    let upstream = CountingUpstream::spawn().await;
    let text = config(
        &idp,
        &upstream,
        &format!("store = {{ file = \"redis.url\" }}\n{WITH_SESSION_KEY}"),
    );
    let [hs256, client, _, session] = SECRET_FILES;
    let (dir, path) = config_dir(
        &text,
        &[
            hs256,
            client,
            session,
            ("redis.url", "redis://:hunter2-pw@cache/zero\n"),
        ],
    );
    let error = fluxlit::Gateway::start(path.clone())
        .await
        .expect_err("the URL has no database number");
    let text = error.to_string();
    assert!(
        text.contains("auth.providers.corp.store")
            && text.contains("file redis.url")
            && text.contains("database number"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");

    // `fluxlit config` prints where the URL is, never the URL.
    std::fs::write(
        dir.path().join("redis.url"),
        "redis://:hunter2-pw@cache/0\n",
    )
    .unwrap();
    let output = cli::run(&["config"], dir.path(), &[]);
    let stdout = cli::stdout(&output);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("redis.url"), "{stdout}");
    assert!(!stdout.contains("hunter2"), "{stdout}");
}
