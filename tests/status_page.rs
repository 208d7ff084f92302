//! The admin listener's status page (`GET /`): the config, routes with their traffic,
//! upstreams with their health, requests in flight and pool connections, auth providers
//! and the doctor's findings, as HTML that needs no script and shows no secret.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::routing::any;
use common::*;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

const SECRET: &str = "a secret that must never be shown on any page";

fn config(app: std::net::SocketAddr, dead: std::net::SocketAddr) -> String {
    ConfigText::new()
        .admin()
        .upstream("app", app)
        .upstream("streamlit", dead)
        .with("health_check = { path = \"/_stcore/health\", interval = \"100ms\", timeout = \"100ms\" }")
        .route("api", "/api", "app")
        .with("rate_limit = { rate = \"100/s\", burst = 200 }")
        .guarded_route("secure", "/secure", "app", "main")
        .route("ui", "/", "streamlit")
        .jwt("main", "https://issuer.test", "fluxlit-test", "[\"HS256\"]")
        .with("hs256_secret = { file = \"hs.secret\" }")
        .table("[trust]", "proxies = [\"0.0.0.0/0\"]")
        .into()
}

async fn page(gateway: &TestGateway) -> Reply {
    let admin = gateway.admin();
    within("the status page", send(admin, get(admin, "/", &[]))).await
}

#[tokio::test]
async fn the_status_page_shows_routes_upstreams_providers_and_findings() {
    let app = spawn_recording_upstream("app").await;
    let dead = closed_port();
    let gateway = start_with_files(config(app, dead), &[("hs.secret", SECRET)]).await;
    eventually("the dead upstream probed", || async {
        page(&gateway)
            .await
            .text()
            .contains("class=\"down\">down</span>")
            .then_some(())
    })
    .await;

    // Traffic: the page shows it once the sampler (every 5 s) has seen it.
    for _ in 0..20 {
        let reply = send(gateway.addr(), get(gateway.addr(), "/api/x", &[])).await;
        assert_eq!(reply.status, 200);
    }
    let rate_of_api = |html: &str| -> f64 {
        let row = html
            .split("<td>api</td>")
            .nth(1)
            .unwrap()
            .split("</tr>")
            .next()
            .unwrap();
        row.split("<td class=\"n\">")
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    eventually("the sampler has seen the traffic", || async {
        (rate_of_api(&page(&gateway).await.text()) > 0.0).then_some(())
    })
    .await;
    let reply = page(&gateway).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert!(
        reply
            .header("content-security-policy")
            .is_some_and(|csp| csp.contains("default-src 'none'"))
    );
    let html = reply.text();
    // Works without JavaScript: there is none; it refreshes itself.
    assert!(!html.to_lowercase().contains("<script"), "{html}");
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    // The config.
    assert!(
        html.contains(&gateway.config_path.display().to_string()),
        "{html}"
    );
    assert!(html.contains("<dt>generation</dt><dd>1</dd>"), "{html}");
    // Routes: prefix → upstream, auth, rate limit, and the traffic of the last views.
    assert!(html.contains("<td>api</td><td><code>/api</code> → app</td><td><span class=\"muted\">none</span></td><td>100/s (burst 200)</td>"), "{html}");
    assert!(
        html.contains("<td>secure</td><td><code>/secure</code> → app</td><td>main</td>"),
        "{html}"
    );
    let api_row = html
        .split("<td>api</td>")
        .nth(1)
        .unwrap()
        .split("</tr>")
        .next()
        .unwrap();
    let rate: f64 = api_row
        .split("<td class=\"n\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rate > 0.0, "requests per second shown for api: {api_row}");
    assert!(
        api_row.contains(" ms</td>"),
        "p50 and p99 for api: {api_row}"
    );
    // Upstreams with their health.
    assert!(html.contains("<td>streamlit</td>"), "{html}");
    assert!(
        html.contains("cannot connect"),
        "the dead upstream's last error: {html}"
    );
    assert!(html.contains("no health_check"), "app has none: {html}");
    // The provider, and the doctor's finding about the trust range.
    assert!(html.contains("<td>main</td><td>jwt</td>"), "{html}");
    assert!(
        html.contains("trust_all_proxies") || html.contains("<code>trust."),
        "{html}"
    );
    // Never a secret: the provider's key is shown by reference, if at all.
    assert!(!html.contains(SECRET), "{html}");
}

#[tokio::test]
async fn a_refused_reload_shows_its_errors_with_their_line_escaped() {
    let app = spawn_recording_upstream("app").await;
    let text: String = ConfigText::new()
        .admin()
        .upstream("app", app)
        .route("api", "/api", "app")
        .into();
    let gateway = TestGateway::start(&text).await;
    let broken = format!("{text}\n[server]\n\"<b>bold</b>\" = 1\n");
    write_by_rename(&gateway.config_path, &gateway.pin_listen(&broken));
    gateway.wait_for_rejection().await;
    let html = page(&gateway).await.text();
    assert!(html.contains("refused reload"), "{html}");
    assert!(html.contains("&lt;b&gt;bold&lt;/b&gt;"), "escaped: {html}");
    assert!(!html.contains("<b>bold</b>"), "{html}");
    let file = gateway
        .config_path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        html.contains(&format!("{file}:")),
        "the error's file:line:col: {html}"
    );
    // Still generation 1, serving.
    assert!(html.contains("<dt>generation</dt><dd>1</dd>"), "{html}");
}

/// The in flight, pool idle and pool open cells of upstream `name`'s row.
fn upstream_counts(html: &str, name: &str) -> [String; 3] {
    let upstreams = html
        .split("<h2>Upstreams</h2>")
        .nth(1)
        .unwrap_or_else(|| panic!("no upstreams table: {html}"));
    let row = upstreams
        .split(&format!("<tr><td>{name}</td>"))
        .nth(1)
        .unwrap_or_else(|| panic!("no row for {name}: {html}"))
        .split("</tr>")
        .next()
        .unwrap();
    let cells: Vec<String> = row
        .split("<td class=\"n\">")
        .skip(1)
        .map(|cell| cell.split('<').next().unwrap().to_owned())
        .collect();
    cells
        .try_into()
        .unwrap_or_else(|cells| panic!("three counts for {name}: {cells:?} in {row}"))
}

async fn connections(gateway: &TestGateway, upstream: &str) -> Value {
    let admin = gateway.admin();
    let snapshot = within("/snapshot", send(admin, get(admin, "/snapshot", &[]))).await;
    snapshot.json()["upstream_connections"][upstream].clone()
}

/// An upstream that answers a path ending in `/hold` once the test adds a permit to the
/// semaphore, and anything else at once.
async fn spawn_holding_upstream() -> (std::net::SocketAddr, Arc<Semaphore>) {
    let release = Arc::new(Semaphore::new(0));
    let held = Arc::clone(&release);
    let addr = spawn_upstream(Router::new().fallback(any(move |request: Request| {
        let held = Arc::clone(&held);
        async move {
            if request.uri().path().ends_with("/hold") {
                held.acquire().await.unwrap().forget();
            }
            "answered"
        }
    })))
    .await;
    (addr, release)
}

#[tokio::test]
async fn requests_in_flight_and_pool_connections_are_shown_per_upstream() {
    let (app, release) = spawn_holding_upstream().await;
    let other = spawn_recording_upstream("other").await;
    let text: String = ConfigText::new()
        .admin()
        .upstream("app", app)
        .upstream("other", other)
        .echo_upstream("echo")
        .route("app", "/", "app")
        .route("other", "/other", "other")
        .route("echo", "/echo", "echo")
        .into();
    let gateway = TestGateway::start(&text).await;
    let idle = json!({"in_flight": 0, "idle": 0, "open": 0});
    assert_eq!(connections(&gateway, "app").await, idle);
    assert_eq!(
        upstream_counts(&page(&gateway).await.text(), "app"),
        ["0", "0", "0"]
    );

    // A request the upstream holds: in flight, on a connection of its own.
    let addr = gateway.addr();
    let holding = tokio::spawn(send(addr, get(addr, "/hold", &[])));
    let one = json!({"in_flight": 1, "idle": 0, "open": 1});
    eventually("the held request in flight", || async {
        (connections(&gateway, "app").await == one).then_some(())
    })
    .await;
    let html = page(&gateway).await.text();
    assert_eq!(upstream_counts(&html, "app"), ["1", "0", "1"], "{html}");
    assert_eq!(upstream_counts(&html, "other"), ["0", "0", "0"], "{html}");
    assert!(
        html.contains(
            "<tr><td>echo</td><td><code>builtin echo</code></td><td class=\"n muted\">—</td>"
        ),
        "the echo has no connections: {html}"
    );
    let admin = gateway.admin();
    let metrics = send(admin, get(admin, "/metrics", &[])).await.text();
    for series in [
        "fluxlit_upstream_in_flight{upstream=\"app\"} 1",
        "fluxlit_upstream_pool_idle{upstream=\"app\"} 0",
        "fluxlit_upstream_pool_open{upstream=\"app\"} 1",
        "fluxlit_upstream_in_flight{upstream=\"other\"} 0",
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
    assert!(!metrics.contains("upstream=\"echo\""), "{metrics}");

    // Answered: nothing in flight, the connection idle in the pool.
    release.add_permits(1);
    let reply = within("the held request", holding).await.unwrap();
    assert_eq!(
        (reply.status.as_u16(), reply.text().as_str()),
        (200, "answered")
    );
    let kept = json!({"in_flight": 0, "idle": 1, "open": 1});
    eventually("the connection back in the pool", || async {
        (connections(&gateway, "app").await == kept).then_some(())
    })
    .await;
    // More requests, one after another, reuse it.
    for _ in 0..3 {
        let reply = within("GET /x", send(addr, get(addr, "/x", &[]))).await;
        assert_eq!(reply.status, 200);
    }
    eventually("the one connection back in the pool", || async {
        (connections(&gateway, "app").await == kept).then_some(())
    })
    .await;
    let html = page(&gateway).await.text();
    assert_eq!(upstream_counts(&html, "app"), ["0", "1", "1"], "{html}");
}

#[tokio::test]
async fn two_upstreams_at_one_address_keep_their_own_counts_across_a_reload() {
    let (app, release) = spawn_holding_upstream().await;
    let text: String = ConfigText::new()
        .admin()
        .upstream("a", app)
        .upstream("b", app)
        .route("a", "/a", "a")
        .route("b", "/b", "b")
        .into();
    let gateway = TestGateway::start(&text).await;
    // A reload that changes neither upstream: each keeps its own pool.
    let added =
        format!("{text}\n[[routes]]\nname = \"c\"\npath_prefix = \"/c\"\nupstream = \"a\"\n");
    write_by_rename(&gateway.config_path, &gateway.pin_listen(&added));
    gateway.wait_for_generation(2).await;

    let addr = gateway.addr();
    let holding = tokio::spawn(send(addr, get(addr, "/b/hold", &[])));
    let one = json!({"in_flight": 1, "idle": 0, "open": 1});
    eventually("b's request in flight", || async {
        (connections(&gateway, "b").await == one).then_some(())
    })
    .await;
    assert_eq!(
        connections(&gateway, "a").await,
        json!({"in_flight": 0, "idle": 0, "open": 0}),
        "a request to b is not a's"
    );
    release.add_permits(1);
    assert_eq!(within("b's request", holding).await.unwrap().status, 200);
}
