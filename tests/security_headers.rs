//! Security response headers as a browser receives them: the defaults, the server's
//! table, per-route overrides and `false`, a CSP on one route only, and an upstream's
//! own values kept. Also: a reload's change summary is kept in `/snapshot`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::net::SocketAddr;

use axum::Router;
use axum::routing::any;
use common::*;

/// An upstream that answers `/own/...` with its own security headers, and everything
/// else with none.
async fn spawn_app() -> SocketAddr {
    spawn_upstream(
        Router::new().fallback(any(|request: axum::extract::Request| async move {
            let mut response = axum::response::Response::new(body("page"));
            if request.uri().path().starts_with("/own") {
                let headers = response.headers_mut();
                headers.insert(
                    "referrer-policy",
                    http::HeaderValue::from_static("no-referrer"),
                );
                headers.insert(
                    "permissions-policy",
                    http::HeaderValue::from_static("camera=(self)"),
                );
            }
            response
        })),
    )
    .await
}

/// A config with routes `/` (the server's headers), `/own` (upstream sets some),
/// `/plain` (`false`), `/strict` (a CSP and other frame ancestors) and `/camera`
/// (one value replaced, one removed), behind `server` settings.
fn config(app: SocketAddr, server: &str) -> String {
    ConfigText::new()
        .server(server)
        .admin()
        .upstream("app", app)
        .route("root", "/", "app")
        .route("own", "/own", "app")
        .route("plain", "/plain", "app")
        .with("security_headers = false")
        .route("strict", "/strict", "app")
        .with("security_headers = { content_security_policy = \"default-src 'self'\", frame_ancestors = \"'none'\" }")
        .route("camera", "/camera", "app")
        .with("security_headers = { permissions_policy = \"camera=(self)\", x_content_type_options = \"\" }")
        .into()
}

/// The status and response headers of `GET path`.
async fn reply_of(gateway: &TestGateway, path: &str) -> (u16, http::HeaderMap) {
    let addr = gateway.addr();
    let reply = within("request", send(addr, get(addr, path, &[]))).await;
    (reply.status.as_u16(), reply.headers)
}

/// The response headers of `GET path`, each name with all its values.
async fn headers_of(gateway: &TestGateway, path: &str) -> http::HeaderMap {
    reply_of(gateway, path).await.1
}

const DEFAULT_PERMISSIONS: &str = "camera=(), microphone=(), geolocation=()";

#[tokio::test]
async fn the_defaults_are_on_every_proxied_response_and_the_gateways_own() {
    let gateway = TestGateway::start(&config(spawn_app().await, "")).await;
    // A proxied page, and the gateway's own 400 for an encoded separator (no route).
    for (path, status) in [("/page", 200), ("/a%2Fb", 400)] {
        let (status_seen, headers) = reply_of(&gateway, path).await;
        assert_eq!(status_seen, status, "{path}");
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "strict-origin-when-cross-origin"),
            ("content-security-policy", "frame-ancestors 'self'"),
            ("x-frame-options", "SAMEORIGIN"),
            ("permissions-policy", DEFAULT_PERMISSIONS),
        ] {
            assert_eq!(header_values(&headers, name), [value], "{path}: {name}");
        }
        assert!(header_values(&headers, "strict-transport-security").is_empty());
    }
}

#[tokio::test]
async fn an_upstreams_own_values_are_kept_and_the_rest_added() {
    let gateway = TestGateway::start(&config(spawn_app().await, "")).await;
    let headers = headers_of(&gateway, "/own/page").await;
    assert_eq!(header_values(&headers, "referrer-policy"), ["no-referrer"]);
    assert_eq!(
        header_values(&headers, "permissions-policy"),
        ["camera=(self)"]
    );
    assert_eq!(
        header_values(&headers, "x-content-type-options"),
        ["nosniff"]
    );
}

#[tokio::test]
async fn routes_override_turn_off_and_add_a_csp_of_their_own() {
    let gateway = TestGateway::start(&config(spawn_app().await, "")).await;

    let plain = headers_of(&gateway, "/plain/x").await;
    for name in [
        "x-content-type-options",
        "referrer-policy",
        "content-security-policy",
        "x-frame-options",
        "permissions-policy",
    ] {
        assert!(header_values(&plain, name).is_empty(), "/plain has {name}");
    }
    assert!(plain.contains_key("x-request-id"), "the request id stays");

    let strict = headers_of(&gateway, "/strict/x").await;
    assert_eq!(
        header_values(&strict, "content-security-policy"),
        ["default-src 'self'; frame-ancestors 'none'"]
    );
    assert_eq!(header_values(&strict, "x-frame-options"), ["DENY"]);
    assert_eq!(
        header_values(&strict, "permissions-policy"),
        [DEFAULT_PERMISSIONS]
    );

    let camera = headers_of(&gateway, "/camera").await;
    assert_eq!(
        header_values(&camera, "permissions-policy"),
        ["camera=(self)"]
    );
    assert!(
        header_values(&camera, "x-content-type-options").is_empty(),
        "\"\" removes it"
    );
    assert_eq!(
        header_values(&camera, "content-security-policy"),
        ["frame-ancestors 'self'"]
    );

    // The CSP is on its route only.
    let root = headers_of(&gateway, "/").await;
    assert_eq!(
        header_values(&root, "content-security-policy"),
        ["frame-ancestors 'self'"]
    );
}

#[tokio::test]
async fn the_servers_table_is_what_routes_start_from() {
    let server =
        "security_headers = { referrer_policy = \"same-origin\", permissions_policy = \"\" }";
    let gateway = TestGateway::start(&config(spawn_app().await, server)).await;
    let root = headers_of(&gateway, "/").await;
    assert_eq!(header_values(&root, "referrer-policy"), ["same-origin"]);
    assert!(header_values(&root, "permissions-policy").is_empty());
    assert_eq!(
        header_values(&root, "x-content-type-options"),
        ["nosniff"],
        "a default kept"
    );
    // A route's table replaces the server's values it names and inherits the others.
    let camera = headers_of(&gateway, "/camera").await;
    assert_eq!(header_values(&camera, "referrer-policy"), ["same-origin"]);
    assert_eq!(
        header_values(&camera, "permissions-policy"),
        ["camera=(self)"]
    );
}

#[tokio::test]
async fn server_false_turns_them_off_where_routes_do_not_ask_for_them() {
    let gateway = TestGateway::start(&config(spawn_app().await, "security_headers = false")).await;
    let root = headers_of(&gateway, "/").await;
    assert!(header_values(&root, "x-content-type-options").is_empty());
    assert!(header_values(&root, "content-security-policy").is_empty());
    // /strict has a table of its own: the defaults under its values.
    let strict = headers_of(&gateway, "/strict").await;
    assert_eq!(
        header_values(&strict, "x-content-type-options"),
        ["nosniff"]
    );
    assert_eq!(
        header_values(&strict, "content-security-policy"),
        ["default-src 'self'; frame-ancestors 'none'"]
    );
}

#[test]
fn a_value_that_cannot_be_a_header_is_refused_with_its_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = "[upstreams.ui]\nbuiltin = \"echo\"\n\n[[routes]]\nname = \"ui\"\npath_prefix = \"/\"\nupstream = \"ui\"\nsecurity_headers = { referrer_policy = \"no-referrer\\u0007\" }\n";
    let path = dir.path().join("fluxlit.toml");
    std::fs::write(&path, config).expect("write config");
    let snapshot = fluxlit::config::load(&path).map(|checked| {
        fluxlit::compile::compile(
            checked,
            &fluxlit::compile::CompileContext::for_config(
                &path,
                std::sync::Arc::new(fluxlit::auth::secrets::ProcessEnvironment),
            ),
        )
    });
    let errors = match snapshot {
        Ok(Err(errors)) => errors,
        other => panic!("expected a compile error, got {other:?}"),
    };
    let rendered: Vec<String> = errors.iter().map(|e| e.render(&path)).collect();
    assert_eq!(rendered.len(), 1, "{rendered:#?}");
    assert!(
        rendered[0].contains("routes[0].security_headers.referrer_policy"),
        "{rendered:#?}"
    );
}

#[test]
fn unknown_keys_in_the_table_are_reported_with_a_suggestion() {
    let config = "[server]\nsecurity_headers = { referer_policy = \"no-referrer\" }\n";
    let errors = fluxlit::config::load::parse(config).expect_err("an unknown key");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "server.security_headers.referer_policy");
    assert_eq!(
        errors[0].help.as_deref(),
        Some("did you mean `referrer_policy`?")
    );
}

#[tokio::test]
async fn a_reload_keeps_its_change_summary_in_the_snapshot() {
    let app = spawn_app().await;
    let gateway = TestGateway::start(&config(app, "")).await;
    let changed = config(app, "").replace(
        "security_headers = false",
        "security_headers = { referrer_policy = \"no-referrer\" }",
    );
    gateway.write_config(&changed);
    within("reload", gateway.wait_for_generation(2)).await;
    assert_eq!(
        header_values(&headers_of(&gateway, "/plain").await, "referrer-policy"),
        ["no-referrer"]
    );

    let admin = gateway.admin();
    let reply = within("/snapshot", send(admin, get(admin, "/snapshot", &[]))).await;
    let snapshot = reply.json();
    assert_eq!(snapshot["last_reload_diff"]["generation"], 2);
    assert_eq!(
        snapshot["last_reload_diff"]["changes"],
        serde_json::json!([
            "route `plain`: security_headers false → { referrer_policy = no-referrer }"
        ])
    );
}
