//! https upstreams over real sockets: an upstream on a certificate made in the test is
//! reached when its certificate chains to the upstream's `ca_file` and is valid for the
//! name verified (the URL's host, or `tls_server_name`), and refused with 502 and a log
//! line naming why otherwise; a client certificate is presented when the upstream asks
//! for one (mTLS); WebSockets go over the same TLS connection.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use common::cli::Serve;
use common::https::spawn_https_upstream;
use common::pki::Ca;
use common::{ConfigText, UNTRUSTED, get_from, start_with_files};
use futures_util::{SinkExt, StreamExt};
use rcgen::ExtendedKeyUsagePurpose;
use tokio_tungstenite::tungstenite::Message;

fn hello() -> Router {
    Router::new()
        .route("/hello", get(|| async { "hello over tls" }))
        .route(
            "/ws",
            get(|upgrade: axum::extract::ws::WebSocketUpgrade| async move {
                upgrade.on_upgrade(common::ws::echo)
            }),
        )
}

/// `[upstreams.app]` at `https://<host>:<port>` with `lines`, and a route `/` to it.
fn config(host: &str, upstream: SocketAddr, lines: &str) -> ConfigText {
    ConfigText::new()
        .server("listen = \"127.0.0.1:0\"")
        .table(
            "[upstreams.app]",
            &format!("url = \"https://{host}:{}\"", upstream.port()),
        )
        .with(lines)
        .route("app", "/", "app")
}

/// Runs `fluxlit serve` on `config` with `files` beside it.
async fn serve(config: &ConfigText, files: &[(&str, &str)]) -> (Serve, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).unwrap();
    }
    std::fs::write(dir.path().join("fluxlit.toml"), config.text()).unwrap();
    (Serve::start(dir.path(), &[]).await, dir)
}

#[tokio::test]
async fn an_upstream_whose_certificate_chains_to_its_ca_file_is_reached_websockets_too() {
    let ca = Ca::new("upstream ca");
    let upstream = spawn_https_upstream(hello(), ca.server(), None).await;
    let gateway = start_with_files(
        config("localhost", upstream, "ca_file = \"ca.pem\""),
        &[("ca.pem", &ca.pem)],
    )
    .await;
    let reply = get_from(UNTRUSTED, &gateway, "/hello", &[]).await;
    reply.assert_says(200, "hello over tls");
    // Again: on the pooled connection.
    let reply = get_from(UNTRUSTED, &gateway, "/hello", &[]).await;
    reply.assert_says(200, "hello over tls");

    let (mut socket, _) = common::within(
        "a WebSocket to the https upstream",
        tokio_tungstenite::connect_async(format!("ws://{}/ws", gateway.addr())),
    )
    .await
    .expect("the handshake passes");
    socket.send(Message::text("ping over wss")).await.unwrap();
    let echoed = common::within("the echo", socket.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("ping over wss"));
}

#[tokio::test]
async fn a_certificate_from_another_ca_or_for_another_name_gets_502_and_a_log_line() {
    let ca = Ca::new("upstream ca");
    let other = Ca::new("someone else");
    let upstream = spawn_https_upstream(hello(), ca.server(), None).await;
    let files = [
        ("ca.pem", ca.pem.as_str()),
        ("other.pem", other.pem.as_str()),
    ];

    let (gateway, _dir) = serve(
        &config("127.0.0.1", upstream, "ca_file = \"other.pem\""),
        &files,
    )
    .await;
    let reply = get_from(UNTRUSTED, &gateway, "/hello", &[]).await;
    reply.assert_says(502, "the upstream could not be reached");
    assert!(!reply.text().contains("UnknownIssuer"), "{}", reply.text());
    let line = gateway
        .stderr
        .wait_for("the refusal's reason", |line| {
            line.contains("upstream request failed") && line.contains("TLS handshake failed")
        })
        .await;
    assert!(line.contains("UnknownIssuer"), "{line}");

    // The right CA, but a name the certificate is not valid for.
    let (gateway, _dir) = serve(
        &config(
            "127.0.0.1",
            upstream,
            "ca_file = \"ca.pem\"\ntls_server_name = \"api.internal.example\"",
        ),
        &files,
    )
    .await;
    let reply = get_from(UNTRUSTED, &gateway, "/hello", &[]).await;
    reply.assert_says(502, "the upstream could not be reached");
    let line = gateway
        .stderr
        .wait_for("the refusal's reason", |line| {
            line.contains("upstream request failed") && line.contains("TLS handshake failed")
        })
        .await;
    assert!(
        line.contains("not valid for name \\\"api.internal.example\\\"")
            || line.contains("not valid for name \"api.internal.example\""),
        "{line}"
    );
}

#[tokio::test]
async fn a_client_certificate_is_presented_to_an_upstream_that_requires_one() {
    let ca = Ca::new("upstream ca");
    let clients = Ca::new("gateway clients");
    let (cert, key) = clients.leaf(&["fluxlit"], ExtendedKeyUsagePurpose::ClientAuth);
    let upstream = spawn_https_upstream(hello(), ca.server(), Some(&clients.pem)).await;
    let files = [
        ("ca.pem", ca.pem.as_str()),
        ("client.pem", cert.as_str()),
        ("client.key", key.as_str()),
    ];

    let with_cert = config(
        "localhost",
        upstream,
        "ca_file = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = { file = \"client.key\" }",
    );
    let gateway = start_with_files(&with_cert, &files).await;
    get_from(UNTRUSTED, &gateway, "/hello", &[])
        .await
        .assert_says(200, "hello over tls");

    let without = config("localhost", upstream, "ca_file = \"ca.pem\"");
    let gateway = start_with_files(&without, &files).await;
    let reply = get_from(UNTRUSTED, &gateway, "/hello", &[]).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
}

#[test]
fn tls_settings_are_checked_at_load() {
    let http = ConfigText::new()
        .upstream("app", "127.0.0.1:9")
        .with("ca_file = \"ca.pem\"")
        .route("app", "/", "app");
    let errors = common::load_errors(&http, &[]);
    assert!(
        errors.contains("upstreams.app.ca_file: applies to an https upstream only"),
        "{errors}"
    );

    let unreadable = ConfigText::new()
        .table("[upstreams.app]", "url = \"https://127.0.0.1:9\"")
        .with("ca_file = \"missing.pem\"")
        .route("app", "/", "app");
    // Read at compile, as `serve` and `validate` do: the error has the key's location.
    let output = common::cli::run_on(unreadable.text(), &["validate"], &[]);
    let stderr = common::cli::stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("fluxlit.toml:3:11: error: upstreams.app.ca_file: cannot read"),
        "{stderr}"
    );
}

/// `fluxlit doctor` probes an https upstream by its TCP connection: no false
/// `upstream_silent` (its client does not trust the upstream's `ca_file`) and no
/// `plain_http_upstream`.
#[tokio::test]
async fn doctor_checks_an_https_upstream_without_false_findings() {
    let ca = Ca::new("upstream ca");
    let upstream = spawn_https_upstream(hello(), ca.server(), None).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    let text = config("localhost", upstream, "ca_file = \"ca.pem\"");
    std::fs::write(dir.path().join("fluxlit.toml"), text.text()).unwrap();
    let path = dir.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        common::cli::run(&["doctor", "--format", "json"], &path, &[])
    })
    .await
    .unwrap();
    let report = common::cli::stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    for id in [
        "upstream_silent",
        "upstream_unreachable",
        "plain_http_upstream",
    ] {
        assert!(!report.contains(id), "{id}: {report}");
    }
}
