//! Browser sessions: a route whose `auth` names an oidc provider is reached only with a
//! session the gateway started at the end of a login. Against the test IdP
//! (`common::idp`) over real sockets, with memory stores and the machine's Redis for
//! what replicas share.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::routing::any;
use base64::Engine as _;
use bytes::Bytes;
use common::idp::*;
use common::ws::{Client, echo};
use common::{
    ConfigText, Reply, TRUSTED, TestGateway, eventually, get, get_from, raw, recorded,
    recorded_header, send, send_as, spawn_upstream, start_with_files, within,
};
use http_body_util::Full;
use serde_json::{Value, json};
use tokio_tungstenite::client_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use url::Url;

const PUBLIC_BASE: &str = "http://app.fluxlit.test";
const SESSION_KEY: &str = "test-only session key, thirty-two bytes and more";
const FILES: [(&str, &str); 2] = [
    ("client.secret", CLIENT_SECRET),
    ("session.key", SESSION_KEY),
];
const PAGE: (&str, &str) = ("accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8");

/// An upstream that answers every HTTP request with what it received (JSON), and
/// accepts WebSockets on `/ws`, keeping the handshake's headers.
struct App {
    addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<http::HeaderMap>>>,
}

impl App {
    async fn spawn() -> Self {
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&handshakes);
        let router = Router::new()
            .route(
                "/ws",
                axum::routing::get(move |headers: http::HeaderMap, upgrade: WebSocketUpgrade| {
                    let seen = Arc::clone(&seen);
                    async move {
                        seen.lock().unwrap().push(headers);
                        upgrade.on_upgrade(echo)
                    }
                }),
            )
            .fallback(any(|request: axum::extract::Request| async move {
                axum::Json(recorded("app", request).await)
            }));
        Self {
            addr: spawn_upstream(router).await,
            handshakes,
        }
    }
}

/// `/` behind a browser session of provider `provider` (no mint: no token for the
/// app), with `extra` provider lines.
fn config_named(provider: &str, idp: &Idp, app: &App, extra: &str) -> String {
    session_config(provider, idp, app, "", extra)
}

/// [`config_named`] with `route` lines on the route.
fn session_config(provider: &str, idp: &Idp, app: &App, route: &str, extra: &str) -> String {
    ConfigText::new()
        .admin()
        .server(&format!("public_base_url = \"{PUBLIC_BASE}\""))
        .upstream("ui", app.addr)
        .guarded_route("ui", "/", "ui", provider)
        .with(route)
        .provider(
            provider,
            "oidc",
            &format!(
                "issuer_url = \"{}\"\nclient_id = \"{CLIENT_ID}\"\n\
                 client_secret = {{ file = \"client.secret\" }}\n\
                 scopes = [\"openid\", \"email\"]\nclaims = [\"email\"]\n\
                 claim_headers = {{ email = \"x-fluxlit-email\" }}\n\
                 login_rate_limit = {{ rate = \"100/s\", burst = 100 }}",
                idp.issuer()
            ),
        )
        .with(extra)
        .into()
}

struct Setup {
    gateway: TestGateway,
    idp: Idp,
    app: App,
}

async fn setup(extra: &str) -> Setup {
    setup_with_route("", extra).await
}

/// [`setup`] with `route` lines on the route (`allow = { ... }`).
async fn setup_with_route(route: &str, extra: &str) -> Setup {
    let idp = Idp::spawn(true).await;
    let app = App::spawn().await;
    let gateway = start_with_files(session_config("corp", &idp, &app, route, extra), &FILES).await;
    wait_for_discovery(&gateway).await;
    Setup { gateway, idp, app }
}

async fn wait_for_discovery(gateway: &TestGateway) {
    wait_for_discovery_of(gateway, "corp").await;
}

async fn wait_for_discovery_of(gateway: &TestGateway, provider: &str) {
    eventually("OIDC discovery", || async {
        let snapshot = gateway.gateway.snapshot();
        let status = snapshot.providers[provider].oidc_status().unwrap();
        status.discovery.loaded.then_some(())
    })
    .await;
}

/// `GET path` as a browser loading a page, with `cookie` when it has one.
async fn page(gateway: &TestGateway, path: &str, cookie: Option<&str>) -> Reply {
    let mut headers = vec![PAGE];
    if let Some(cookie) = cookie {
        headers.push(("cookie", cookie));
    }
    get_from(TRUSTED, gateway, path, &headers).await
}

/// A request with `method` and headers, no body.
async fn request(
    gateway: &TestGateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", gateway.addr().to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(Bytes::new())).unwrap();
    send_as(TRUSTED, gateway, request).await
}

/// The value of the `Set-Cookie` named `name` in `reply`, with its attributes.
fn cookie_named(reply: &Reply, name: &str) -> Option<(String, Vec<String>)> {
    set_cookies(reply).into_iter().find_map(|text| {
        let (pair, attributes) = text.split_once(';').unwrap_or((text, ""));
        let (found, value) = pair.split_once('=')?;
        (found.trim() == name).then(|| {
            let attributes = attributes
                .split(';')
                .map(|a| a.trim().to_ascii_lowercase())
                .collect();
            (value.to_owned(), attributes)
        })
    })
}

/// A browser's whole login on `gateway`, from the page `path` it asked for: the
/// redirect to the login, the IdP, the callback. The callback's answer and the
/// `Cookie` header the browser then sends (`fluxlit-session=...`).
async fn browse_and_log_in(gateway: &TestGateway, idp: &Idp, path: &str) -> (Reply, String) {
    let reply = page(gateway, path, None).await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    let login_path = location(&reply).to_owned();
    let reply = get_from(TRUSTED, gateway, &login_path, &[]).await;
    assert_eq!(reply.status, 302, "login: {}", reply.text());
    let cookie = login_cookie(&reply);
    let (code, state, _) = authorize_at_idp(idp, location(&reply)).await;
    let reply = callback(gateway, &code, &state, Some(&cookie)).await;
    assert_eq!(reply.status, 302, "callback: {}", reply.text());
    let (id, _) = cookie_named(&reply, "fluxlit-session").expect("a session cookie");
    (reply, format!("fluxlit-session={id}"))
}

#[tokio::test]
async fn a_page_load_without_a_session_goes_to_the_login_and_anything_else_gets_401() {
    let setup = setup("").await;
    let reply = page(&setup.gateway, "/reports?tab=2&q=a%20b", None).await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    assert_eq!(
        location(&reply),
        "/auth/login?next=%2Freports%3Ftab%3D2%26q%3Da%2520b"
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));

    // Scripts, API clients and WebSocket handshakes are told, not redirected.
    let json = request(
        &setup.gateway,
        "GET",
        "/data",
        &[("accept", "application/json")],
    )
    .await;
    json.assert_says(401, "a login is required");
    let post = request(&setup.gateway, "POST", "/", &[PAGE]).await;
    assert_eq!(post.status, 401, "{}", post.text());
    let socket = open_websocket(&setup.gateway, &[("origin", PUBLIC_BASE)]).await;
    assert_eq!(socket.unwrap_err(), 401);
    // An unknown or made-up session is no session.
    let forged = page(&setup.gateway, "/", Some("fluxlit-session=made-up")).await;
    assert_eq!(forged.status, 302, "{}", forged.text());
    assert!(setup.app.handshakes.lock().unwrap().is_empty());
    let admin = setup.gateway.admin();
    let metrics = within("scrape", send(admin, get(admin, "/metrics", &[])))
        .await
        .text();
    assert!(
        metrics.contains("fluxlit_auth_failures_total{provider=\"corp\",reason=\"no_session\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_login_starts_a_session_that_lets_the_browser_in_as_its_user() {
    let setup = setup("").await;
    let (callback, cookie) = browse_and_log_in(&setup.gateway, &setup.idp, "/reports?tab=2").await;
    // Back where the browser was going, with no code in the URL (nothing to exchange).
    assert_eq!(location(&callback), "/reports?tab=2");
    let (_, attributes) = cookie_named(&callback, "fluxlit-session").unwrap();
    for expected in ["httponly", "samesite=lax", "path=/", "max-age=604800"] {
        assert!(
            attributes.iter().any(|a| a == expected),
            "{expected}: {attributes:?}"
        );
    }
    assert!(!attributes.iter().any(|a| a == "secure"), "http: no Secure");

    let with_others = format!("theme=dark; {cookie}; lang=en");
    let reply = page(&setup.gateway, "/reports?tab=2", Some(&with_others)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(recorded_header(&seen, "x-fluxlit-sub"), [SUB]);
    assert_eq!(
        recorded_header(&seen, "x-fluxlit-email"),
        ["ada@example.com"]
    );
    assert_eq!(recorded_header(&seen, "x-fluxlit-identity").len(), 1);
    // The session cookie stays at the edge; the app's own cookies pass.
    assert_eq!(recorded_header(&seen, "cookie"), ["theme=dark; lang=en"]);
    let only_session = page(&setup.gateway, "/", Some(&cookie)).await;
    assert_eq!(
        recorded_header(&only_session.json(), "cookie"),
        Vec::<String>::new()
    );

    // The memory store holds the session, under a hash.
    let snapshot = setup.gateway.gateway.snapshot();
    let store = snapshot.providers["corp"].oidc_status().unwrap().store;
    assert_eq!(store.sessions, Some(1));
}

#[tokio::test]
async fn the_websocket_handshake_of_a_session_carries_the_identity() {
    let setup = setup("").await;
    let (_, cookie) = browse_and_log_in(&setup.gateway, &setup.idp, "/").await;
    let socket = open_websocket(
        &setup.gateway,
        &[
            ("origin", PUBLIC_BASE),
            ("cookie", &format!("{cookie}; st=1")),
        ],
    )
    .await;
    assert!(socket.is_ok(), "{:?}", socket.err());
    let handshakes = setup.app.handshakes.lock().unwrap();
    let headers = &handshakes[0];
    assert_eq!(headers["x-fluxlit-sub"], SUB);
    assert_eq!(headers["x-fluxlit-email"], "ada@example.com");
    assert!(headers.contains_key("x-fluxlit-identity"));
    assert_eq!(headers["cookie"], "st=1");
}

#[tokio::test]
async fn requests_that_may_come_from_another_origin_are_refused() {
    let setup = setup("").await;
    let (_, cookie) = browse_and_log_in(&setup.gateway, &setup.idp, "/").await;
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut headers: Vec<(&str, &str)> = vec![("cookie", cookie.as_str())];
        headers.extend_from_slice(extra);
        headers
    };
    let post = |extra: &'static [(&'static str, &'static str)]| {
        let headers = with(extra);
        let gateway = &setup.gateway;
        async move { request(gateway, "POST", "/save", &headers).await }
    };
    let evil = post(&[("origin", "http://evil.example")]).await;
    evil.assert_says(403, "must come from http://app.fluxlit.test");
    assert_eq!(post(&[]).await.status, 403, "no Origin, no Sec-Fetch-Site");
    assert_eq!(post(&[("sec-fetch-site", "cross-site")]).await.status, 403);
    assert_eq!(post(&[("origin", "null")]).await.status, 403);
    assert_eq!(post(&[("origin", PUBLIC_BASE)]).await.status, 200);
    assert_eq!(post(&[("sec-fetch-site", "same-origin")]).await.status, 200);
    // A safe method needs no Origin.
    assert_eq!(
        request(&setup.gateway, "GET", "/", &with(&[])).await.status,
        200
    );

    let socket = open_websocket(
        &setup.gateway,
        &[("origin", "http://evil.example"), ("cookie", &cookie)],
    )
    .await;
    assert_eq!(socket.unwrap_err(), 403);
    let socket = open_websocket(&setup.gateway, &[("cookie", &cookie)]).await;
    assert_eq!(socket.unwrap_err(), 403, "a handshake without Origin");
    assert!(setup.app.handshakes.lock().unwrap().is_empty());
}

#[tokio::test]
async fn every_login_gets_a_fresh_session_id_and_a_planted_one_is_worthless() {
    let setup = setup("").await;
    // An attacker plants a session id in the victim's browser before the login.
    let planted = "fluxlit-session=an-id-the-attacker-chose";
    let reply = get_from(
        TRUSTED,
        &setup.gateway,
        "/auth/login?next=/",
        &[("cookie", planted)],
    )
    .await;
    let login = login_cookie(&reply);
    let (code, state, _) = authorize_at_idp(&setup.idp, location(&reply)).await;
    let jar = format!("{planted}; {login}");
    let reply = callback(&setup.gateway, &code, &state, Some(&jar)).await;
    let (fresh, _) = cookie_named(&reply, "fluxlit-session").unwrap();
    assert_ne!(format!("fluxlit-session={fresh}"), planted);
    assert_eq!(fresh.len(), 43, "256 random bits, base64url");
    assert_eq!(page(&setup.gateway, "/", Some(planted)).await.status, 302);
    // Two logins of the same user: two sessions.
    let (_, first) = browse_and_log_in(&setup.gateway, &setup.idp, "/").await;
    let (_, second) = browse_and_log_in(&setup.gateway, &setup.idp, "/").await;
    assert_ne!(first, second);
}

#[tokio::test]
async fn logout_ends_the_session_and_clears_its_cookie() {
    let setup = setup("").await;
    let (_, cookie) = browse_and_log_in(&setup.gateway, &setup.idp, "/").await;
    assert_eq!(page(&setup.gateway, "/", Some(&cookie)).await.status, 200);
    let reply = get_from(
        TRUSTED,
        &setup.gateway,
        "/auth/logout?next=/bye",
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    // On to the IdP's logout, which comes back to /bye, with the session's id_token as
    // the hint of whose session to end (Keycloak and others ask the user to confirm,
    // or refuse the redirect, without one).
    let to_idp = Url::parse(location(&reply)).unwrap();
    assert_eq!(to_idp.path(), "/logout");
    let query: HashMap<String, String> = to_idp.query_pairs().into_owned().collect();
    assert_eq!(query["client_id"], CLIENT_ID);
    assert!(
        query["post_logout_redirect_uri"].ends_with("/bye"),
        "{query:?}"
    );
    let hint = query.get("id_token_hint").expect("an id_token_hint");
    let payload = hint.split('.').nth(1).expect("a JWT");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], SUB, "the id_token of this login: {claims}");
    let (value, attributes) = cookie_named(&reply, "fluxlit-session").expect("cleared");
    assert_eq!(value, "");
    assert!(
        attributes.iter().any(|a| a == "max-age=0"),
        "{attributes:?}"
    );
    // The browser that kept the cookie anyway is logged out too.
    assert_eq!(page(&setup.gateway, "/", Some(&cookie)).await.status, 302);
}

#[tokio::test]
async fn an_idle_session_ends_and_a_busy_one_ends_at_its_max_age() {
    // Deadlines are whole seconds: each may fall up to a second early, hence the margins.
    let setup = setup("session_idle_timeout = \"2s\"\nsession_max_age = \"6s\"").await;
    let (_, idle) = browse_and_log_in(&setup.gateway, &setup.idp, "/").await;
    let (_, busy) = browse_and_log_in(&setup.gateway, &setup.idp, "/").await;
    let started = tokio::time::Instant::now();
    // `busy` is used every half second, past the idle timeout; `idle` never again.
    while started.elapsed() < Duration::from_millis(3500) {
        assert_eq!(page(&setup.gateway, "/", Some(&busy)).await.status, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(page(&setup.gateway, "/", Some(&idle)).await.status, 302);
    assert_eq!(page(&setup.gateway, "/", Some(&busy)).await.status, 200);
    // However busy, a session ends at its max age.
    eventually("the busy session reaching its max age", || async {
        (page(&setup.gateway, "/", Some(&busy)).await.status == 302).then_some(())
    })
    .await;
    assert!(started.elapsed() >= Duration::from_secs(4));
}

#[tokio::test]
async fn a_memory_store_holds_at_most_store_max_entries_sessions() {
    // Used login states count against the bound too (for `login_ttl`): short here.
    let setup = setup("store_max_entries = 2\nlogin_ttl = \"2s\"").await;
    let (_, first) = browse_and_log_in(&setup.gateway, &setup.idp, "/").await;
    let (_, _second) = browse_and_log_in(&setup.gateway, &setup.idp, "/").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // A third login cannot start a session: the callback says so, and sets no cookie.
    let reply = get_from(TRUSTED, &setup.gateway, "/auth/login?next=/", &[]).await;
    let login = login_cookie(&reply);
    let (code, state, _) = authorize_at_idp(&setup.idp, location(&reply)).await;
    let reply = callback(&setup.gateway, &code, &state, Some(&login)).await;
    reply.assert_says(503, "too many sessions");
    assert!(cookie_named(&reply, "fluxlit-session").is_none());
    // The sessions already there are untouched; a logout makes room.
    assert_eq!(page(&setup.gateway, "/", Some(&first)).await.status, 200);
    get_from(
        TRUSTED,
        &setup.gateway,
        "/auth/logout",
        &[("cookie", &first)],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, third) = browse_and_log_in(&setup.gateway, &setup.idp, "/").await;
    assert_eq!(page(&setup.gateway, "/", Some(&third)).await.status, 200);
}

#[tokio::test]
async fn a_session_outlives_the_idp_tokens_by_refreshing_them_and_ends_when_the_idp_refuses() {
    let setup = setup("").await;
    setup.idp.issue_refresh_tokens(1);
    let (_, cookie) = browse_and_log_in(&setup.gateway, &setup.idp, "/").await;
    assert_eq!(setup.idp.refresh_hits(), 0);
    // Past the tokens' life: the next request renews them (rotating the refresh token),
    // and goes on. Concurrent requests renew once.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let replies =
        futures_util::future::join_all((0..4).map(|_| page(&setup.gateway, "/", Some(&cookie))))
            .await;
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(setup.idp.refresh_hits(), 1, "one renewal for four requests");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(page(&setup.gateway, "/", Some(&cookie)).await.status, 200);
    assert_eq!(
        setup.idp.refresh_hits(),
        2,
        "the rotated token renewed them again"
    );
    // Between renewals, no call to the IdP.
    assert_eq!(page(&setup.gateway, "/", Some(&cookie)).await.status, 200);
    assert_eq!(setup.idp.refresh_hits(), 2);

    // The user is disabled at the IdP: the next renewal is refused, the session ends.
    setup.idp.revoke_refresh_tokens();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(page(&setup.gateway, "/", Some(&cookie)).await.status, 302);
    assert_eq!(setup.idp.refresh_hits(), 3);
    assert_eq!(page(&setup.gateway, "/", Some(&cookie)).await.status, 302);
    let snapshot = setup.gateway.gateway.snapshot();
    let store = snapshot.providers["corp"].oidc_status().unwrap().store;
    assert_eq!(store.sessions, Some(0), "the session is gone");
}

#[tokio::test]
async fn replicas_sharing_redis_share_sessions_sealed_and_a_logout_on_one_ends_them_on_all() {
    let provider = format!("corp-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let idp = Idp::spawn(false).await;
    let app = App::spawn().await;
    let text = config_named(
        &provider,
        &idp,
        &app,
        "store = \"redis://127.0.0.1:6379/0\"\nsession_key = { file = \"session.key\" }",
    );
    let a = start_with_files(&text, &FILES).await;
    let b = start_with_files(&text, &FILES).await;
    for replica in [&a, &b] {
        wait_for_discovery_of(replica, &provider).await;
    }
    idp.issue_refresh_tokens(300);
    let (_, cookie) = browse_and_log_in(&a, &idp, "/").await;
    let refresh_tokens: Vec<String> = idp
        .state
        .refresh_tokens
        .lock()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(refresh_tokens.len(), 1, "the IdP gave a refresh token");
    let reply = page(&b, "/", Some(&cookie)).await;
    assert_eq!(reply.status, 200, "B knows A's session: {}", reply.text());
    assert_eq!(recorded_header(&reply.json(), "x-fluxlit-sub"), [SUB]);

    // What Redis holds: one record under the id's hash, sealed.
    let mut redis = redis::Client::open("redis://127.0.0.1:6379/0")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("the machine's Redis (.ci/run starts it)");
    let prefix = fluxlit::auth::oidc::redis_store::key_prefix(&provider);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}session:*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let id = cookie.strip_prefix("fluxlit-session=").unwrap();
    assert!(!keys[0].contains(id), "the id is not the key");
    let record: Vec<u8> = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut redis)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&record);
    let refresh_token = refresh_tokens[0].as_str();
    // Needles that sealed bytes (base64url) cannot hold by chance, as a bare "sub" or
    // "eyJ" can (about once in a hundred runs): quoted JSON keys, and the start of the
    // test IdP's id_tokens (`{"typ":"JWT"`).
    for secret in [
        SUB,
        "ada@example.com",
        "eyJ0eXAiOiJKV1Qi",
        "\"sub\"",
        "id_token",
        refresh_token,
    ] {
        assert!(!text.contains(secret), "Redis shows {secret:?}: {text}");
    }

    // A WebSocket open on A, in that session.
    let mut socket = open_websocket(&a, &[("origin", PUBLIC_BASE), ("cookie", &cookie)])
        .await
        .expect("a WebSocket in the session");

    // Logout on B ends the session on A as well, and closes A's WebSocket within
    // seconds, without waiting for a message.
    let reply = get_from(TRUSTED, &b, "/auth/logout", &[("cookie", &cookie)]).await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    assert_eq!(page(&a, "/", Some(&cookie)).await.status, 302);
    assert_closed_by_the_gateway(&mut socket, "session ended").await;
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    if !left.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&left)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    assert!(
        !left.iter().any(|key| key.contains(":session:")),
        "{left:?}"
    );
}

/// Waits (hang-guarded) for the gateway's close frame on `socket`: 1008, `reason`.
async fn assert_closed_by_the_gateway(socket: &mut Client, reason: &str) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let message = within("the gateway closing the WebSocket", socket.next()).await;
    match message {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::Policy, "{frame:?}");
            assert_eq!(frame.reason.as_str(), reason);
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn a_websocket_opened_in_a_session_closes_when_the_session_ends() {
    let setup = setup("").await;
    let (_, cookie) = browse_and_log_in(&setup.gateway, &setup.idp, "/").await;
    let headers = [("origin", PUBLIC_BASE), ("cookie", cookie.as_str())];
    let mut socket = open_websocket(&setup.gateway, &headers).await.unwrap();
    // Another WebSocket of another session stays open.
    let (_, other) = browse_and_log_in(&setup.gateway, &setup.idp, "/").await;
    let mut untouched = open_websocket(
        &setup.gateway,
        &[("origin", PUBLIC_BASE), ("cookie", &other)],
    )
    .await
    .unwrap();
    let reply = get_from(
        TRUSTED,
        &setup.gateway,
        "/auth/logout",
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    assert_closed_by_the_gateway(&mut socket, "session ended").await;
    {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        within("send", untouched.send(Message::text("still here")))
            .await
            .unwrap();
        let echoed = within("echo", untouched.next()).await;
        assert!(
            matches!(&echoed, Some(Ok(Message::Text(text))) if text.as_str() == "still here"),
            "{echoed:?}"
        );
    }
}

/// Opens a WebSocket on `/ws` with `headers`; the status of a refused handshake.
async fn open_websocket(gateway: &TestGateway, headers: &[(&str, &str)]) -> Result<Client, u16> {
    let mut request = format!("ws://{}/ws", gateway.addr())
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let stream = raw::connect_from(TRUSTED, gateway.addr()).await;
    match within("WebSocket handshake", client_async(request, stream)).await {
        Ok((client, _)) => Ok(client),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(error) => panic!("the handshake failed without an answer: {error}"),
    }
}

// ---------------------------------------------------------------------------------------
// allow: who may come in.
// ---------------------------------------------------------------------------------------

/// The user `changes` (over Ada's claims) logs in at `setup`'s gateway: the session
/// cookie.
async fn log_in_as(setup: &Setup, changes: Value) -> String {
    setup.idp.log_in_as(changes);
    browse_and_log_in(&setup.gateway, &setup.idp, "/").await.1
}

/// Logs each of `users` in and loads `/` in the session: the status each gets.
async fn statuses(setup: &Setup, users: &[Value]) -> Vec<u16> {
    let mut statuses = Vec::new();
    for user in users {
        let cookie = log_in_as(setup, user.clone()).await;
        statuses.push(
            page(&setup.gateway, "/", Some(&cookie))
                .await
                .status
                .as_u16(),
        );
    }
    statuses
}

#[tokio::test]
async fn allow_emails_admits_the_listed_addresses_once_verified() {
    let setup = setup_with_route(
        "allow = { emails = [\"Ada@Example.com\", \"eve@example.org\"] }",
        "",
    )
    .await;
    let ada = log_in_as(&setup, json!({})).await;
    let reply = page(&setup.gateway, "/", Some(&ada)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(recorded_header(&reply.json(), "x-fluxlit-sub"), [SUB]);
    let users = [
        json!({"email": "eve@EXAMPLE.org", "email_verified": true}),
        json!({"email": "bob@example.com"}),
        json!({"email": "eve@example.org", "email_verified": false}),
        json!({"email": "xada@example.com"}),
        json!({"email": null}),
    ];
    assert_eq!(statuses(&setup, &users).await, [200, 403, 403, 403, 403]);
}

#[tokio::test]
async fn allow_email_domains_admits_that_domain_exactly() {
    let setup = setup_with_route("allow = { email_domains = [\"example.com\"] }", "").await;
    let users = [
        json!({"email": "grace@EXAMPLE.com"}),
        json!({"email": "grace@example.com", "email_verified": true}),
        json!({"email": "mallory@eu.example.com"}),
        json!({"email": "mallory@evilexample.com"}),
        json!({"email": "mallory@example.com.evil.test"}),
        json!({"email": "mallory@example.com", "email_verified": false}),
        json!({"email": null}),
    ];
    assert_eq!(
        statuses(&setup, &users).await,
        [200, 200, 403, 403, 403, 403, 403]
    );
}

#[tokio::test]
async fn allow_groups_reads_the_providers_groups_claim() {
    let setup = setup_with_route(
        "allow = { groups = [\"admins\"] }",
        "groups_claim = \"roles\"",
    )
    .await;
    let users = [
        json!({"roles": ["staff", "admins"]}),
        json!({"roles": "admins"}),
        json!({"groups": ["admins"]}),
        json!({"roles": ["Admins", "staff"]}),
        json!({}),
    ];
    assert_eq!(statuses(&setup, &users).await, [200, 200, 403, 403, 403]);
    // Kept in the session for `allow`, the groups are not asserted to the app.
    let admin = log_in_as(&setup, json!({"roles": ["admins"]})).await;
    let seen = page(&setup.gateway, "/", Some(&admin)).await.json();
    let assertion = &recorded_header(&seen, "x-fluxlit-identity")[0];
    // What it states (tests/identity.rs checks that it verifies).
    let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(assertion).unwrap();
    assert_eq!(claims["sub"], SUB);
    assert_eq!(claims["email"], "ada@example.com");
    assert!(claims.get("roles").is_none(), "{claims}");
}

#[tokio::test]
async fn allow_claims_admits_a_listed_value_and_any_one_condition_is_enough() {
    let setup = setup_with_route(
        "allow = { email_domains = [\"corp.example\"], claims = { department = \
         [\"research\"], clearance = [\"3\"] } }",
        "",
    )
    .await;
    let users = [
        json!({"department": "research"}),
        json!({"department": ["ops", "research"]}),
        json!({"clearance": 3}),
        json!({"email": "bob@corp.example", "department": "sales"}),
        json!({"department": "sales", "clearance": 2}),
        json!({"department": "Research"}),
    ];
    assert_eq!(
        statuses(&setup, &users).await,
        [200, 200, 200, 200, 403, 403]
    );
}

#[tokio::test]
async fn a_refused_browser_is_told_who_it_is_logged_in_as_and_how_to_log_out() {
    let setup = setup_with_route("allow = { groups = [\"staff\"] }", "").await;
    let name = "<img src=x onerror=alert(1)>@evil.test";
    let cookie = log_in_as(&setup, json!({"email": name})).await;

    let reply = page(&setup.gateway, "/reports", Some(&cookie)).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert!(
        reply
            .header("content-security-policy")
            .is_some_and(|csp| csp.starts_with("default-src 'none'")),
        "{:?}",
        reply.headers
    );
    let html = reply.text();
    assert!(
        html.contains("logged in as <strong>&lt;img src=x onerror=alert(1)&gt;@evil.test</strong>"),
        "{html}"
    );
    assert!(!html.contains("<img"), "{html}");
    assert!(
        html.contains("<a href=\"/auth/logout\">Log out</a>"),
        "{html}"
    );

    // Scripts, API calls and WebSocket handshakes get the plain 403.
    let json = request(
        &setup.gateway,
        "GET",
        "/data",
        &[("accept", "application/json"), ("cookie", &cookie)],
    )
    .await;
    json.assert_says(403, "is logged in, but not allowed on this route");
    assert_eq!(
        json.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let socket = open_websocket(
        &setup.gateway,
        &[("origin", PUBLIC_BASE), ("cookie", &cookie)],
    )
    .await;
    assert_eq!(socket.unwrap_err(), 403);
    assert!(setup.app.handshakes.lock().unwrap().is_empty());

    let admin = setup.gateway.admin();
    let metrics = within("scrape", send(admin, get(admin, "/metrics", &[])))
        .await
        .text();
    assert!(
        metrics.contains("fluxlit_auth_failures_total{provider=\"corp\",reason=\"not_allowed\"} 3"),
        "{metrics}"
    );

    // The link ends the session: the next page load goes to the login.
    let reply = get_from(
        TRUSTED,
        &setup.gateway,
        "/auth/logout",
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    assert_eq!(page(&setup.gateway, "/", Some(&cookie)).await.status, 302);
}

#[tokio::test]
async fn the_logout_link_is_under_the_public_base_path() {
    let idp = Idp::spawn(true).await;
    let app = App::spawn().await;
    let text = session_config("corp", &idp, &app, "allow = { groups = [\"staff\"] }", "").replace(
        &format!("public_base_url = \"{PUBLIC_BASE}\""),
        &format!("public_base_url = \"{PUBLIC_BASE}/app\""),
    );
    let gateway = start_with_files(text, &FILES).await;
    wait_for_discovery(&gateway).await;
    // The proxy in front strips /app: the gateway serves its login at /auth/login.
    let reply = get_from(TRUSTED, &gateway, "/auth/login?next=/", &[]).await;
    let login = login_cookie(&reply);
    let (code, state, _) = authorize_at_idp(&idp, location(&reply)).await;
    let reply = callback(&gateway, &code, &state, Some(&login)).await;
    let (id, _) = cookie_named(&reply, "fluxlit-session").expect("a session cookie");
    let reply = page(&gateway, "/", Some(&format!("fluxlit-session={id}"))).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(
        reply
            .text()
            .contains("<a href=\"/app/auth/logout\">Log out</a>"),
        "{}",
        reply.text()
    );
}

// ---------------------------------------------------------------------------------------
// userinfo: the session's user, for the app's pages.
// ---------------------------------------------------------------------------------------

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `GET /auth/userinfo`, with the `Cookie` header `cookie` when there is one.
async fn userinfo(gateway: &TestGateway, cookie: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    get_from(TRUSTED, gateway, "/auth/userinfo", &headers).await
}

#[tokio::test]
async fn userinfo_shows_the_sessions_user_and_never_a_token() {
    let setup = setup_with_route("allow = { groups = [\"staff\"] }", "").await;
    // Without a session: 401, and where to log in.
    for cookie in [None, Some("fluxlit-session=made-up")] {
        let reply = userinfo(&setup.gateway, cookie).await;
        assert_eq!(reply.status, 401, "{}", reply.text());
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert_eq!(
            reply.json(),
            json!({"error": "login_required", "login": "/auth/login"})
        );
    }

    // The session will hold a refresh token besides the id_token.
    setup.idp.issue_refresh_tokens(300);
    let cookie = log_in_as(&setup, json!({"groups": ["staff"], "name": "Ada"})).await;
    let reply = userinfo(&setup.gateway, Some(&cookie)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let info = reply.json();
    let keys: Vec<&String> = info.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["claims", "expires_at", "sub"], "{info}");
    assert_eq!(info["sub"], SUB);
    // The claims the session keeps: `claims`, `claim_headers`, and what allow reads.
    assert_eq!(
        info["claims"],
        json!({"email": "ada@example.com", "groups": ["staff"]})
    );
    let expires_at = info["expires_at"].as_u64().unwrap();
    let max_age = 7 * 24 * 3600;
    assert!(
        (unix_now() + max_age - 5..=unix_now() + max_age).contains(&expires_at),
        "{expires_at}"
    );
    // The session holds the id_token (for the logout) and the refresh token: neither
    // shows (the test IdP's refresh tokens are `refresh-<n>`).
    let text = reply.text();
    for token in ["eyJ", "id_token", "refresh"] {
        assert!(!text.contains(token), "{token} in {text}");
    }

    // Nothing but GET.
    let post = request(
        &setup.gateway,
        "POST",
        "/auth/userinfo",
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(post.status, 405, "{}", post.text());
    assert_eq!(post.header("allow"), Some("GET"));

    // Logged out: 401 again.
    let reply = get_from(
        TRUSTED,
        &setup.gateway,
        "/auth/logout",
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    assert_eq!(userinfo(&setup.gateway, Some(&cookie)).await.status, 401);
}

#[tokio::test]
async fn the_userinfo_path_is_the_providers_to_choose() {
    let setup = setup("paths = { userinfo = \"/me\" }").await;
    let (_, cookie) = browse_and_log_in(&setup.gateway, &setup.idp, "/").await;
    let reply = get_from(TRUSTED, &setup.gateway, "/me", &[("cookie", &cookie)]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["sub"], SUB);
    // The default path is the app's again.
    let reply = page(&setup.gateway, "/auth/userinfo", Some(&cookie)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["name"], "app");
    assert_eq!(reply.json()["path"], "/auth/userinfo");
}
