//! Upstreams on a Unix-domain socket (`url = "unix:/run/app/api.sock"`), as uvicorn
//! `--uds` and gunicorn serve them: requests and their bodies, the same header policy,
//! WebSockets, health checks, and a clear error for a path that cannot be one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::path::Path;

use axum::Router;
use axum::extract::Request;
use axum::routing::any;
use common::config::ConfigText;
use common::{TestGateway, cli, recorded, recorded_header, send, within};

/// Serves a recording upstream (JSON of what it received) on a Unix socket at `path`.
fn spawn_unix_upstream(path: &Path) {
    let listener = tokio::net::UnixListener::bind(path).expect("bind the socket");
    let router = Router::new().fallback(any(|request: Request| async move {
        axum::Json(recorded("unix", request).await)
    }));
    tokio::spawn(async move {
        axum::serve(listener, router)
            .await
            .expect("upstream serves");
    });
}

fn config_for(socket: &Path, extra: &str) -> ConfigText {
    ConfigText::new()
        .with(&format!(
            "[upstreams.api]\nurl = \"unix:{}\"\n{extra}",
            socket.display()
        ))
        .route("api", "/api", "api")
}

#[tokio::test]
async fn requests_reach_an_upstream_on_a_unix_socket_with_the_same_policy() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    spawn_unix_upstream(&socket);
    let gateway = TestGateway::start(config_for(&socket, "")).await;

    let request = http::Request::post(gateway.url("/api/items?page=2"))
        .header("x-forwarded-for", "6.6.6.6")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"hello",
        )))
        .unwrap();
    let reply = send(gateway.addr(), request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["name"], "unix");
    assert_eq!(seen["path"], "/api/items");
    assert_eq!(seen["query"], "page=2");
    assert_eq!(seen["body_len"], 5);
    // The upstream's Host is `localhost`; the client's spoofed forwarding is replaced.
    assert_eq!(recorded_header(&seen, "host"), ["localhost"]);
    assert_eq!(recorded_header(&seen, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(reply.headers["x-content-type-options"], "nosniff");

    // The connection is pooled: a second request is served as well.
    let again = send(
        gateway.addr(),
        common::get(gateway.addr(), "/api/again", &[]),
    )
    .await;
    assert_eq!(again.status, 200);
}

#[tokio::test]
async fn a_unix_socket_nobody_listens_on_gets_502_and_a_health_check_marks_it_down() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("missing.sock");
    let config = config_for(
        &socket,
        "health_check = { path = \"/healthz\", interval = \"1s\", timeout = \"1s\", healthy = 1, unhealthy = 1 }",
    )
    .admin();
    let gateway = TestGateway::start(config).await;
    let reply = send(gateway.addr(), common::get(gateway.addr(), "/api/x", &[])).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    within("the upstream marked down", async {
        loop {
            let ready = common::status_of(gateway.admin(), "/readyz").await;
            if ready == 503 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    // Once the upstream listens, the health check brings it back.
    spawn_unix_upstream(&socket);
    within("the upstream marked up", async {
        while common::status_of(gateway.admin(), "/readyz").await != 200 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
}

#[test]
fn a_relative_unix_socket_path_is_a_validation_error() {
    let config = ConfigText::new()
        .with("[upstreams.api]\nurl = \"unix:api.sock\"")
        .route("api", "/api", "api");
    let output = cli::run_on(config.text(), &["validate"], &[]);
    let stderr = cli::stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("upstreams.api.url"), "{stderr}");
    assert!(stderr.contains("must be absolute"), "{stderr}");
}
