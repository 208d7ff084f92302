//! Upstream health checks: `/readyz` follows the probed upstreams the routes need (as
//! `[admin] ready_requires` says), `fluxlit_upstream_up` and `/snapshot` show each one's
//! state and last error, and a reload keeps what was learnt.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get as get_route;
use common::*;
use serde_json::Value;

/// An app whose `/health` answers the status it is told to.
struct App {
    addr: std::net::SocketAddr,
    status: Arc<AtomicU16>,
}

impl App {
    async fn spawn() -> Self {
        let status = Arc::new(AtomicU16::new(200));
        let router = Router::new()
            .route(
                "/health",
                get_route(|State(status): State<Arc<AtomicU16>>| async move {
                    StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap()
                }),
            )
            .fallback(|| async { "the app" })
            .with_state(Arc::clone(&status));
        Self {
            addr: spawn_upstream(router).await,
            status,
        }
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

const FAST: &str = "health_check = { path = \"/health\", interval = \"100ms\", timeout = \"100ms\", healthy = 2, unhealthy = 2 }";

fn config(upstreams: &[(&str, String, &str)], admin: &str) -> String {
    let mut text =
        ConfigText::new().table("[admin]", &format!("listen = \"127.0.0.1:0\"\n{admin}"));
    for (index, (name, addr, check)) in upstreams.iter().enumerate() {
        text = text
            .upstream(name, addr)
            .with(check)
            .route(name, &format!("/{index}"), name);
    }
    text.into()
}

async fn admin_get(gateway: &TestGateway, path: &str) -> Reply {
    let admin = gateway.admin();
    within("an admin request", send(admin, get(admin, path, &[]))).await
}

async fn readyz(gateway: &TestGateway) -> (u16, String) {
    let reply = admin_get(gateway, "/readyz").await;
    (reply.status.as_u16(), reply.text())
}

async fn health_of(gateway: &TestGateway, upstream: &str) -> Value {
    admin_get(gateway, "/snapshot").await.json()["upstream_health"][upstream].clone()
}

async fn wait_ready(gateway: &TestGateway, expected: u16) -> String {
    eventually(&format!("/readyz answering {expected}"), || async {
        let (status, text) = readyz(gateway).await;
        (status == expected).then_some(text)
    })
    .await
}

#[tokio::test]
async fn readyz_follows_a_probed_upstream_down_and_back_up() {
    let app = App::spawn().await;
    let gateway = TestGateway::start(config(&[("ui", app.addr.to_string(), FAST)], "")).await;
    assert_eq!(wait_ready(&gateway, 200).await, "ready\n");
    assert_eq!(health_of(&gateway, "ui").await["state"], "up");
    let metrics = admin_get(&gateway, "/metrics").await.text();
    assert!(
        metrics.contains("fluxlit_upstream_up{upstream=\"ui\"} 1"),
        "{metrics}"
    );

    // Streamlit's server alive but its health endpoint failing.
    app.answer(503);
    let why = wait_ready(&gateway, 503).await;
    assert_eq!(
        why,
        "not ready: upstream ui is down (GET /health answered 503)\n"
    );
    let health = health_of(&gateway, "ui").await;
    assert_eq!(health["state"], "down");
    assert_eq!(health["last_error"], "GET /health answered 503");
    assert!(
        health["last_check"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z'))
    );
    let metrics = admin_get(&gateway, "/metrics").await.text();
    assert!(
        metrics.contains("fluxlit_upstream_up{upstream=\"ui\"} 0"),
        "{metrics}"
    );

    app.answer(200);
    wait_ready(&gateway, 200).await;
    assert_eq!(health_of(&gateway, "ui").await["state"], "up");
}

#[tokio::test]
async fn an_upstream_that_refuses_connections_is_down_without_a_path_too() {
    let down = closed_port();
    let tcp_only = "health_check = { interval = \"100ms\", timeout = \"100ms\" }";
    let gateway = TestGateway::start(config(&[("api", down.to_string(), tcp_only)], "")).await;
    let why = wait_ready(&gateway, 503).await;
    assert!(
        why.starts_with("not ready: upstream api is down (cannot connect:"),
        "{why}"
    );
    // Before: a dead upstream and a 200 from /readyz. Requests still get 502, as before.
    let reply = send(gateway.addr(), get(gateway.addr(), "/0", &[])).await;
    assert_eq!(reply.status, 502);
}

#[tokio::test]
async fn ready_requires_all_any_or_none() {
    let app = App::spawn().await;
    let down = closed_port().to_string();
    let upstreams = [("ui", app.addr.to_string(), FAST), ("api", down, FAST)];

    let all = TestGateway::start(config(&upstreams, "")).await;
    // Once both are probed: one down is enough to be unready.
    eventually("ui probed up, api down", || async {
        let (status, why) = readyz(&all).await;
        (status == 503 && why.contains("upstream api is down") && !why.contains("upstream ui"))
            .then_some(())
    })
    .await;

    let any = TestGateway::start(config(&upstreams, "ready_requires = \"any\"")).await;
    wait_ready(&any, 200).await;
    app.answer(500);
    let why = wait_ready(&any, 503).await;
    assert!(
        why.contains("upstream ui is down") && why.contains("upstream api is down"),
        "{why}"
    );

    let none = TestGateway::start(config(&upstreams, "ready_requires = \"none\"")).await;
    assert_eq!(readyz(&none).await, (200, "ready\n".to_owned()));
}

#[tokio::test]
async fn upstreams_without_a_health_check_do_not_count() {
    let down = closed_port();
    let gateway = TestGateway::start(config(&[("api", down.to_string(), "")], "")).await;
    assert_eq!(readyz(&gateway).await, (200, "ready\n".to_owned()));
    assert_eq!(health_of(&gateway, "api").await, Value::Null);
}

#[tokio::test]
async fn a_reload_keeps_what_the_probes_learnt() {
    let app = App::spawn().await;
    // Slow probes: after the first, the next is a minute away.
    let slow = "health_check = { path = \"/health\", interval = \"60s\", timeout = \"2s\" }\ntimeout = \"30s\"";
    let gateway = TestGateway::start(config(&[("ui", app.addr.to_string(), slow)], "")).await;
    wait_ready(&gateway, 200).await;
    // From now on the app would fail a probe: only a new one (a health check started
    // over by the reload) would find out within the minute.
    app.answer(503);
    // An unrelated change: the upstream's response timeout.
    gateway.write_config(&gateway.pin_listen(&config(
        &[("ui", app.addr.to_string(), &slow.replace("30s", "20s"))],
        "",
    )));
    gateway.wait_for_generation(2).await;
    // Still the state learnt before the reload, and no new probe.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(readyz(&gateway).await, (200, "ready\n".to_owned()));
}

#[test]
fn health_check_mistakes_are_refused_at_load() {
    for (upstream, expected) in [
        (
            "builtin = \"echo\"\nhealth_check = { path = \"/health\" }",
            "a builtin upstream is always up",
        ),
        (
            "url = \"http://127.0.0.1:9\"\nhealth_check = { path = \"health\" }",
            "is not a path",
        ),
        (
            "url = \"http://127.0.0.1:9\"\nhealth_check = { interval = \"1s\", timeout = \"2s\" }",
            "is longer than `interval`",
        ),
        (
            "url = \"http://127.0.0.1:9\"\nhealth_check = { unhealthy = 0 }",
            "health_check.unhealthy",
        ),
        (
            "url = \"http://127.0.0.1:9\"\nhealth_check = { paht = \"/health\" }",
            "paht",
        ),
    ] {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[upstreams.ui]\n{upstream}\n\
             [[routes]]\nname = \"ui\"\npath_prefix = \"/\"\nupstream = \"ui\"\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fluxlit.toml");
        std::fs::write(&path, &text).unwrap();
        let errors = match fluxlit::config::load(&path) {
            Ok(_) => panic!("{upstream}: accepted"),
            Err(error) => error.render_errors().join("\n"),
        };
        assert!(errors.contains(expected), "{upstream}: {errors}");
    }
}
