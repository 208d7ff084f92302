//! Auth over time: a WebSocket opened with a token is closed by the gateway when the
//! token expires (Streamlit sessions last for hours, tokens do not) while one on a route
//! without auth stays open; and hot reloads of auth settings — a new HS secret takes
//! effect at once, a broken provider never replaces the running one.
//!
//! Real sockets on loopback: an axum WebSocket echo upstream, a tokio-tungstenite client,
//! config and secret files in a temporary directory. Timeouts only guard against hangs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::auth::*;
use common::ws::Client;
use common::*;
use fluxlit::reload::ReloadOutcome;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::Algorithm;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::client_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

// ---------------------------------------------------------------------------------------
// WebSockets.
// ---------------------------------------------------------------------------------------

/// `/secure` behind provider `main` (HS256, leeway 0 s), `/` without auth, both to an
/// echo upstream.
async fn ws_gateway() -> TestGateway {
    let upstream = ws::spawn_echo_upstream("/{*path}").await;
    let config = ConfigText::new()
        .upstream("ws", upstream)
        .guarded_route("secure", "/secure", "ws", "main")
        .route("open", "/", "ws")
        .hs256_provider("main")
        .with("leeway = \"0s\"");
    start_with_files(&config, &SECRET_FILE).await
}

/// Opens a WebSocket to `path` through the gateway, with `Authorization: Bearer token`
/// when a token is given.
async fn open(
    gateway: &TestGateway,
    path: &str,
    token: Option<&str>,
) -> Result<Client, tungstenite::Error> {
    let mut request = format!("ws://{}{path}", gateway.addr()).into_client_request()?;
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", bearer(token).parse().unwrap());
    }
    let stream = within("TCP connect", TcpStream::connect(gateway.addr()))
        .await
        .expect("connect to the gateway");
    within("WebSocket handshake", client_async(request, stream))
        .await
        .map(|(client, _)| client)
}

async fn round_trip(client: &mut Client, text: &str) {
    within("send", client.send(Message::text(text)))
        .await
        .expect("send");
    let reply = within("echo", client.next())
        .await
        .expect("the socket is open")
        .expect("a message");
    assert_eq!(reply, Message::text(text));
}

#[tokio::test]
async fn a_websocket_is_closed_when_its_token_expires_while_one_without_auth_stays_open() {
    let gateway = ws_gateway().await;
    let short = hs256(&claims_with("ada", json!({"exp": now() + 2})));
    let long = hs256(&claims("ada"));
    let mut expiring = open(&gateway, "/secure/ws", Some(&short))
        .await
        .expect("the handshake with a valid token succeeds");
    let mut lasting = open(&gateway, "/secure/ws", Some(&long))
        .await
        .expect("the handshake with a valid token succeeds");
    let mut public = open(&gateway, "/public/ws", None)
        .await
        .expect("the handshake without auth succeeds");
    round_trip(&mut expiring, "before expiry").await;
    round_trip(&mut lasting, "before expiry").await;
    round_trip(&mut public, "before expiry").await;

    // The echo never speaks first: the next thing the client sees is the gateway's
    // close frame, 1008 (policy violation), with a reason it can show.
    match within("the gateway closing the expired socket", expiring.next()).await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::Policy, "{frame:?}");
            assert_eq!(frame.reason, "credential expired");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }

    // Well past that token's expiry, the others are still open and working.
    tokio::time::sleep(Duration::from_secs(2)).await;
    round_trip(&mut lasting, "after the other token expired").await;
    round_trip(&mut public, "long after").await;
}

#[tokio::test]
async fn a_websocket_handshake_without_a_valid_token_gets_401() {
    let gateway = ws_gateway().await;
    let expired = hs256(&claims_with("ada", json!({"exp": now() - 5})));
    for token in [None, Some(expired.as_str()), Some("not-a-token")] {
        match open(&gateway, "/secure/ws", token).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{token:?}");
                assert!(response.headers().contains_key("www-authenticate"));
            }
            Ok(_) => panic!("{token:?}: the handshake succeeded"),
            Err(other) => panic!("{token:?}: {other}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reload.
// ---------------------------------------------------------------------------------------

const SECRET_1: &str = "the first test-only HS256 secret, 32+ bytes";
const SECRET_2: &str = "the second test-only HS256 secret, 32+ bytes";

/// `/api` behind provider `route_auth` (`main` exists), whose secret is in file
/// `secret_file`.
fn reload_config(upstream: &CountingUpstream, secret_file: &str, route_auth: &str) -> String {
    ConfigText::new()
        .upstream("app", upstream.addr)
        .guarded_route("api", "/api", "app", route_auth)
        .jwt_provider(
            "main",
            "[\"HS256\"]",
            &format!("hs256_secret = {{ file = \"{secret_file}\" }}"),
        )
        .into()
}

/// A gateway on [`reload_config`] with `secret-1` holding [`SECRET_1`].
async fn on_secret_1() -> (TestGateway, CountingUpstream) {
    let upstream = CountingUpstream::spawn().await;
    let gateway = start_with_files(
        &reload_config(&upstream, "secret-1", "main"),
        &[("secret-1", SECRET_1)],
    )
    .await;
    (gateway, upstream)
}

fn signed_with(secret: &str, sub: &str) -> String {
    token(
        Algorithm::HS256,
        None,
        Key::Hmac(secret.as_bytes()),
        &claims(sub),
    )
}

async fn status(gateway: &TestGateway, token: &str) -> u16 {
    get_with_token(gateway, "/api/x", token)
        .await
        .status
        .as_u16()
}

/// Writes `config` and reloads now.
async fn write_and_reload(gateway: &TestGateway, config: &str) -> ReloadOutcome {
    gateway.write_config(config);
    gateway.reload_now().await
}

/// Writes `config`, which a reload must refuse; the reasons, one a line.
async fn refused_reload(gateway: &TestGateway, config: &str) -> String {
    let outcome = write_and_reload(gateway, config).await;
    assert!(
        matches!(outcome, ReloadOutcome::Rejected { .. }),
        "{outcome:?}"
    );
    gateway.reload_errors().join("\n")
}

#[tokio::test]
async fn a_reload_with_a_new_hs_secret_takes_effect_at_once() {
    let (gateway, upstream) = on_secret_1().await;
    let old = signed_with(SECRET_1, "ada");
    let new = signed_with(SECRET_2, "ada");
    assert_eq!(status(&gateway, &old).await, 200);
    assert_eq!(status(&gateway, &new).await, 401);

    std::fs::write(gateway.dir.path().join("secret-2"), SECRET_2).unwrap();
    gateway.write_config(&reload_config(&upstream, "secret-2", "main"));
    gateway.wait_for_generation(2).await;
    assert_eq!(status(&gateway, &old).await, 401, "the old secret is gone");
    assert_eq!(status(&gateway, &new).await, 200);
    assert!(gateway.gateway.reloader().status().last_error.is_none());
}

#[tokio::test]
async fn a_reload_that_breaks_a_provider_keeps_the_running_one_and_says_why() {
    let (gateway, upstream) = on_secret_1().await;
    let good = signed_with(SECRET_1, "ada");
    let other = signed_with(SECRET_2, "ada");
    assert_eq!(status(&gateway, &good).await, 200);

    // The secret file the new config names does not exist.
    let errors = refused_reload(&gateway, &reload_config(&upstream, "secret-9", "main")).await;
    assert!(
        errors.contains("auth.providers.main.hs256_secret"),
        "{errors}"
    );
    assert!(errors.contains("cannot read secret file"), "{errors}");
    assert!(errors.contains("secret-9"), "{errors}");
    assert!(!errors.contains(SECRET_1), "{errors}");
    assert_eq!(gateway.gateway.snapshot().generation, 1);
    assert_eq!(
        status(&gateway, &good).await,
        200,
        "the running provider still serves"
    );
    assert_eq!(status(&gateway, &other).await, 401);

    // The route names a provider that does not exist.
    let errors = refused_reload(&gateway, &reload_config(&upstream, "secret-1", "mian")).await;
    assert!(errors.contains("routes[0].auth"), "{errors}");
    assert!(
        errors.contains("unknown auth provider \"mian\""),
        "{errors}"
    );
    assert!(errors.contains("did you mean \"main\"?"), "{errors}");
    assert_eq!(gateway.gateway.snapshot().generation, 1);
    assert_eq!(
        status(&gateway, &good).await,
        200,
        "the route is still protected by main"
    );
    let reply = get_from(UNTRUSTED, &gateway, "/api/x", &[]).await;
    assert_missing_token(&reply, "main");

    // The secret file of the running config disappears: nothing changes until a reload
    // needs it, and that reload is refused.
    std::fs::remove_file(gateway.dir.path().join("secret-1")).unwrap();
    let mut changed = reload_config(&upstream, "secret-1", "main");
    changed.push_str("leeway = \"5s\"\n");
    refused_reload(&gateway, &changed).await;
    assert_eq!(status(&gateway, &good).await, 200);

    // Fixed: applies, and the error is cleared.
    std::fs::write(gateway.dir.path().join("secret-2"), SECRET_2).unwrap();
    let outcome = write_and_reload(&gateway, &reload_config(&upstream, "secret-2", "main")).await;
    // (The file watcher may have applied it first.)
    assert!(
        matches!(
            outcome,
            ReloadOutcome::Applied { .. } | ReloadOutcome::Unchanged
        ),
        "{outcome:?}"
    );
    assert_eq!(gateway.gateway.snapshot().generation, 2);
    assert!(gateway.gateway.reloader().status().last_error.is_none());
    assert_eq!(status(&gateway, &good).await, 401);
    assert_eq!(status(&gateway, &other).await, 200);
}

/// A config with a jwt provider whose keys are at `jwks`, an oidc provider whose issuer
/// is `idp`, and `extra` appended (a broken provider, or nothing).
fn networked_config(jwks: SocketAddr, idp: SocketAddr, extra: &str) -> String {
    let mut config = format!(
        r#"
[server]
public_base_url = "http://127.0.0.1:8080"

[upstreams.app]
builtin = "echo"

[[routes]]
name = "app"
path_prefix = "/"
upstream = "app"

[auth.providers.keys]
kind = "jwt"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
algorithms = ["RS256"]
jwks_url = "http://{jwks}/jwks.json"

[auth.providers.main]
kind = "jwt"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
algorithms = ["HS256"]
hs256_secret = {{ file = "secret-1" }}

[auth.providers.corp]
kind = "oidc"
issuer_url = "http://{idp}"
client_id = "fluxlit"
client_secret = {{ file = "client-secret" }}
mint = "main"
"#
    );
    config.push_str(extra);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_reaches_no_jwks_url_and_no_identity_provider() {
    let (jwks, idp) = (
        ContactRecorder::spawn().await,
        ContactRecorder::spawn().await,
    );
    let gateway = start_with_files(
        "[upstreams.app]\nbuiltin = \"echo\"\n\n[[routes]]\nname = \"app\"\npath_prefix = \"/\"\nupstream = \"app\"\n",
        &[("secret-1", SECRET_1), ("client-secret", "oidc client secret")],
    )
    .await;

    // Every provider in it compiles but one, whose secret file does not exist; and many
    // routes, as a real file has, come after the providers.
    let mut broken = String::from(
        "\n[auth.providers.zz_broken]\nkind = \"jwt\"\nissuer = \"i\"\naudience = \"a\"\nalgorithms = [\"HS256\"]\nhs256_secret = { file = \"no-such-secret\" }\n",
    );
    for index in 0..2000 {
        broken.push_str(&format!(
            "\n[[routes]]\nname = \"r{index}\"\npath_prefix = \"/r{index}\"\nupstream = \"app\"\n"
        ));
    }
    let errors = refused_reload(&gateway, &networked_config(jwks.addr, idp.addr, &broken)).await;
    assert!(
        errors.contains("auth.providers.zz_broken.hs256_secret"),
        "{errors}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        jwks.contacts(),
        0,
        "the JWKS URL of a refused config was fetched"
    );
    assert_eq!(
        idp.contacts(),
        0,
        "the IdP of a refused config was contacted"
    );
    assert_eq!(gateway.gateway.snapshot().generation, 1);

    // The same providers in a config that applies reach out at once: the recorders see
    // what the gateway does.
    let outcome = write_and_reload(&gateway, &networked_config(jwks.addr, idp.addr, "")).await;
    assert!(
        matches!(
            outcome,
            ReloadOutcome::Applied { .. } | ReloadOutcome::Unchanged
        ),
        "{outcome:?}"
    );
    within("the JWKS fetch and the discovery", async {
        while jwks.contacts() == 0 || idp.contacts() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
