//! `/metrics` on the admin listener, scraped after known traffic: requests by route and
//! status class, durations, upstream failures, auth failures, open WebSockets, requests
//! in flight and pool connections per upstream, and reloads, each with the exact count
//! the traffic should have produced.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::routing::any;
use common::*;
use fluxlit::reload::ReloadOutcome;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// A scrape: every sample line, `name{labels}` → value.
#[derive(Debug)]
struct Scrape {
    content_type: String,
    text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    fn types(&self) -> BTreeMap<&str, &str> {
        self.text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split_once(' '))
            .collect()
    }
}

/// Parses the Prometheus text format: comments skipped, each sample line split at its
/// last space (the label values here never hold one).
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number in {line:?}"));
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "series {series} appears twice"
        );
    }
    samples
}

async fn scrape(admin: SocketAddr) -> Scrape {
    let reply = within("scrape", send(admin, get(admin, "/metrics", &[]))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = reply.text();
    Scrape {
        content_type: reply
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        samples: parse(&text),
        text,
    }
}

/// Scrapes until every `(series, value)` holds, then returns that scrape. A request is
/// counted when its response body is finished on the gateway's side, which may be a
/// moment after the client has read it.
async fn scrape_until(admin: SocketAddr, expected: &[(&str, f64)]) -> Scrape {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        let scrape = scrape(admin).await;
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(series, value)| scrape.get(series) != Some(*value))
            .map(|(series, value)| format!("{series}: want {value}, got {:?}", scrape.get(series)))
            .collect();
        if wrong.is_empty() {
            return scrape;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never matched:\n{}\n\nscrape:\n{}",
            wrong.join("\n"),
            scrape.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config(
    app: SocketAddr,
    ws: SocketAddr,
    slow: SocketAddr,
    dead: SocketAddr,
    secret: &str,
) -> String {
    ConfigText::new()
        .admin()
        .upstream("app", app)
        .upstream("wsup", ws)
        .upstream("slow", slow)
        .with("timeout = \"300ms\"")
        .upstream("dead", dead)
        .with("health_check = { interval = \"100ms\", timeout = \"100ms\" }")
        .route("app", "/app", "app")
        .route("limited", "/limited", "app")
        .with("rate_limit = { rate = \"1/m\", burst = 1 }")
        .guarded_route("secure", "/secure", "app", "main")
        .route("ws", "/ws", "wsup")
        .route("slow", "/slow", "slow")
        .route("down", "/down", "dead")
        .jwt("main", "https://issuer.test", "fluxlit-test", "[\"HS256\"]")
        .with(&format!("hs256_secret = {{ file = \"{secret}\" }}"))
        .into()
}

#[tokio::test]
async fn metrics_count_known_traffic_exactly() {
    let app = spawn_recording_upstream("app").await;
    let ws = ws::spawn_echo_upstream("/ws").await;
    let slow = spawn_upstream(Router::new().fallback(any(|| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        "too late"
    })))
    .await;
    let dead = closed_port();
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("hs.secret");
    std::fs::write(&secret, "a test-only secret for the metrics test").unwrap();
    let text = config(app, ws, slow, dead, &secret.display().to_string());
    let gateway = TestGateway::start(&text).await;
    let addr = gateway.addr();
    let admin = gateway.admin();

    let started = scrape(admin).await;
    assert_eq!(started.get("fluxlit_config_generation"), Some(1.0));
    assert_eq!(
        started.get("fluxlit_requests_total{route=\"app\",status_class=\"2xx\"}"),
        None,
        "no series before the route served anything:\n{}",
        started.text
    );

    for path in ["/app", "/app/a", "/app/b?page=2"] {
        let reply = within("GET app", send(addr, get(addr, path, &[]))).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    }
    for path in ["/nowhere", "/other/x"] {
        let reply = within("GET unrouted", send(addr, get(addr, path, &[]))).await;
        assert_eq!(reply.status, 404, "{path}");
    }
    let reply = within("no token", send(addr, get(addr, "/secure/x", &[]))).await;
    assert_eq!(reply.status, 401);
    let bad = [("authorization", "Bearer not.a.token")];
    let reply = within("bad token", send(addr, get(addr, "/secure/x", &bad))).await;
    assert_eq!(reply.status, 401);
    let reply = within("dead upstream", send(addr, get(addr, "/down/x", &[]))).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    let reply = within("slow upstream", send(addr, get(addr, "/slow/x", &[]))).await;
    assert_eq!(reply.status, 504, "{}", reply.text());

    // A WebSocket is counted open while its tunnel is, and its handshake as a 101.
    let (mut socket, _) = within(
        "WebSocket handshake",
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws")),
    )
    .await
    .expect("handshake");
    socket.send(Message::text("ping")).await.unwrap();
    let echoed = within("echo", socket.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("ping"));
    scrape_until(admin, &[("fluxlit_websockets_open{route=\"ws\"}", 1.0)]).await;
    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = within("close", socket.next()).await {}
    // The tunnel lasts until both sides have closed their sockets.
    drop(socket);
    scrape_until(admin, &[("fluxlit_websockets_open{route=\"ws\"}", 0.0)]).await;

    // A client over its rate limit, with a header on no list.
    for expected in [200, 429] {
        let headers = [("x-not-listed", "1")];
        let reply = within("GET limited", send(addr, get(addr, "/limited/x", &headers))).await;
        assert_eq!(reply.status, expected, "{}", reply.text());
    }

    // One applied reload (a route added), then one rejected (an unknown upstream).
    let before_reload = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    let added = format!(
        "{text}\n[[routes]]\nname = \"extra\"\npath_prefix = \"/extra\"\nupstream = \"app\"\n"
    );
    write_by_rename(&gateway.config_path, &gateway.pin_listen(&added));
    gateway.wait_for_generation(2).await;
    let broken = format!(
        "{added}\n[[routes]]\nname = \"broken\"\npath_prefix = \"/b\"\nupstream = \"nope\"\n"
    );
    write_by_rename(&gateway.config_path, &gateway.pin_listen(&broken));
    gateway.wait_for_rejection().await;

    let scrape = scrape_until(
        admin,
        &[
            (
                "fluxlit_requests_total{route=\"app\",status_class=\"2xx\"}",
                3.0,
            ),
            (
                "fluxlit_requests_total{route=\"app\",status_class=\"4xx\"}",
                0.0,
            ),
            (
                "fluxlit_requests_total{route=\"(none)\",status_class=\"4xx\"}",
                2.0,
            ),
            (
                "fluxlit_requests_total{route=\"secure\",status_class=\"4xx\"}",
                2.0,
            ),
            (
                "fluxlit_requests_total{route=\"secure\",status_class=\"2xx\"}",
                0.0,
            ),
            (
                "fluxlit_requests_total{route=\"down\",status_class=\"5xx\"}",
                1.0,
            ),
            (
                "fluxlit_requests_total{route=\"slow\",status_class=\"5xx\"}",
                1.0,
            ),
            (
                "fluxlit_requests_total{route=\"ws\",status_class=\"1xx\"}",
                1.0,
            ),
            ("fluxlit_request_duration_seconds_count{route=\"app\"}", 3.0),
            (
                "fluxlit_request_duration_seconds_count{route=\"(none)\"}",
                2.0,
            ),
            (
                "fluxlit_request_duration_seconds_bucket{route=\"app\",le=\"+Inf\"}",
                3.0,
            ),
            (
                "fluxlit_upstream_errors_total{upstream=\"dead\",kind=\"connect_error\"}",
                1.0,
            ),
            (
                "fluxlit_upstream_errors_total{upstream=\"slow\",kind=\"timeout\"}",
                1.0,
            ),
            (
                "fluxlit_auth_failures_total{provider=\"main\",reason=\"missing\"}",
                1.0,
            ),
            (
                "fluxlit_auth_failures_total{provider=\"main\",reason=\"invalid\"}",
                1.0,
            ),
            ("fluxlit_websockets_open{route=\"ws\"}", 0.0),
            ("fluxlit_config_reloads_total{result=\"applied\"}", 1.0),
            ("fluxlit_config_reloads_total{result=\"rejected\"}", 1.0),
            ("fluxlit_config_generation", 2.0),
            ("fluxlit_rate_limited_total{route=\"limited\"}", 1.0),
            (
                "fluxlit_client_headers_dropped_total{route=\"limited\"}",
                1.0,
            ),
            ("fluxlit_upstream_up{upstream=\"dead\"}", 0.0),
            // The app's requests went one after another on one kept-alive connection,
            // kept across the reload; the timed-out, refused and upgraded ones left
            // nothing in flight and nothing open.
            ("fluxlit_upstream_in_flight{upstream=\"app\"}", 0.0),
            ("fluxlit_upstream_pool_idle{upstream=\"app\"}", 1.0),
            ("fluxlit_upstream_pool_open{upstream=\"app\"}", 1.0),
            ("fluxlit_upstream_in_flight{upstream=\"slow\"}", 0.0),
            ("fluxlit_upstream_pool_open{upstream=\"slow\"}", 0.0),
            ("fluxlit_upstream_in_flight{upstream=\"dead\"}", 0.0),
            ("fluxlit_upstream_pool_open{upstream=\"dead\"}", 0.0),
            ("fluxlit_upstream_in_flight{upstream=\"wsup\"}", 0.0),
            ("fluxlit_upstream_pool_open{upstream=\"wsup\"}", 0.0),
        ],
    )
    .await;
    the_dashboard_charts_only_exported_metrics(&scrape.text);

    assert!(
        scrape.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        scrape.content_type
    );
    let types = scrape.types();
    for (name, kind) in [
        ("fluxlit_requests_total", "counter"),
        ("fluxlit_request_duration_seconds", "histogram"),
        ("fluxlit_upstream_errors_total", "counter"),
        ("fluxlit_auth_failures_total", "counter"),
        ("fluxlit_websockets_open", "gauge"),
        ("fluxlit_upstream_in_flight", "gauge"),
        ("fluxlit_upstream_pool_idle", "gauge"),
        ("fluxlit_upstream_pool_open", "gauge"),
        ("fluxlit_config_reloads_total", "counter"),
        ("fluxlit_config_generation", "gauge"),
        (
            "fluxlit_config_last_reload_success_timestamp_seconds",
            "gauge",
        ),
    ] {
        assert_eq!(
            types.get(name),
            Some(&kind),
            "# TYPE of {name}:\n{}",
            scrape.text
        );
    }
    let reloaded_at = scrape
        .get("fluxlit_config_last_reload_success_timestamp_seconds")
        .expect("last reload time");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    assert!(
        (before_reload..=now).contains(&reloaded_at),
        "last successful reload at {reloaded_at}, between {before_reload} and {now}"
    );
    assert_eq!(
        scrape.get("fluxlit_websockets_open{route=\"app\"}"),
        None,
        "a route without WebSockets has no such series"
    );
    // Labels are names from the file, never request paths.
    for path in ["/app/a", "/nowhere", "/other", "page=2", "/secure/x"] {
        assert!(
            !scrape.text.contains(path),
            "a path in a label: {path}\n{}",
            scrape.text
        );
    }

    // Back to the running file: the file event is not a reload attempt, an explicit
    // reload (as SIGHUP asks for) that finds the running file is counted as unchanged.
    write_by_rename(&gateway.config_path, &gateway.pin_listen(&added));
    assert_eq!(gateway.reload_now().await, ReloadOutcome::Unchanged);
    tokio::time::sleep(Duration::from_millis(300)).await;
    scrape_until(
        admin,
        &[
            ("fluxlit_config_reloads_total{result=\"unchanged\"}", 1.0),
            ("fluxlit_config_reloads_total{result=\"applied\"}", 1.0),
            ("fluxlit_config_reloads_total{result=\"rejected\"}", 1.0),
            ("fluxlit_config_generation", 2.0),
        ],
    )
    .await;

    // The new route counts from its first request; the old ones keep their counts
    // across the reload.
    let reply = within("GET extra", send(addr, get(addr, "/extra/x", &[]))).await;
    assert_eq!(reply.status, 200);
    let reply = within("GET app", send(addr, get(addr, "/app/again", &[]))).await;
    assert_eq!(reply.status, 200);
    scrape_until(
        admin,
        &[
            (
                "fluxlit_requests_total{route=\"extra\",status_class=\"2xx\"}",
                1.0,
            ),
            (
                "fluxlit_requests_total{route=\"app\",status_class=\"2xx\"}",
                4.0,
            ),
        ],
    )
    .await;
}

/// Every metric the Grafana dashboard queries is a series in `scrape` (so a renamed
/// metric fails here, not silently on the dashboard).
fn the_dashboard_charts_only_exported_metrics(scrape: &str) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/deploy/grafana/fluxlit.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        queries.push(variable["definition"].as_str().unwrap().to_owned());
    }
    let exported: std::collections::BTreeSet<&str> = scrape
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    let mut charted = std::collections::BTreeSet::new();
    for query in &queries {
        let mut rest = query.as_str();
        while let Some(start) = rest.find("fluxlit_") {
            let name: String = rest[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[start + name.len()..];
            charted.insert(name);
        }
    }
    assert!(charted.len() >= 10, "the dashboard charts {charted:?}");
    let missing: Vec<_> = charted
        .iter()
        .filter(|name| !exported.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, which /metrics does not export:\n{scrape}"
    );
}

#[tokio::test]
async fn metrics_only_answer_get() {
    let app = spawn_recording_upstream("app").await;
    let gateway = TestGateway::start(ConfigText::new().admin().route_to("app", "/", app)).await;
    let admin = gateway.admin();
    let post = http::Request::post("/metrics")
        .header("host", admin.to_string())
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let reply = within("POST /metrics", send(admin, post)).await;
    assert_eq!(reply.status, 405);
}

/// `fluxlit_client_headers_dropped_total{route}` counts the client header lines dropped
/// for being on no list, per route: not what the policy drops on purpose (hop-by-hop,
/// `Connection`-listed, forwarding and identity headers), not what a route allowlists.
#[tokio::test]
async fn client_headers_dropped_for_being_on_no_list_are_counted_by_route() {
    let app = spawn_recording_upstream("app").await;
    let config = ConfigText::new()
        .admin()
        .upstream("app", app)
        .route("app", "/app", "app")
        .with("forward_client_headers = [\"x-tenant\"]")
        .route("other", "/other", "app")
        .route("quiet", "/quiet", "app");
    let gateway = TestGateway::start(&config).await;
    let (addr, admin) = (gateway.addr(), gateway.admin());

    let on_purpose = [
        ("user-agent", "test"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-remote-user", "admin"),
        ("x-fluxlit-sub", "admin"),
        ("keep-alive", "timeout=5"),
        ("connection", "x-hop-only"),
        ("x-hop-only", "1"),
    ];
    let mut sent = on_purpose.to_vec();
    sent.extend([
        ("x-tenant", "acme"),
        ("x-api-key", "k1"),
        ("x-api-key", "k2"),
        ("x-debug", "1"),
    ]);
    let reply = within(
        "GET app",
        send_from(UNTRUSTED, addr, get(addr, "/app/x", &sent)),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    for name in ["x-api-key", "x-debug", "x-hop-only", "x-remote-user"] {
        assert_eq!(
            reply.upstream_header(name),
            Vec::<String>::new(),
            "{name} is still dropped"
        );
    }
    assert_eq!(reply.upstream_header("x-tenant"), ["acme"]);
    let reply = within(
        "GET other",
        send(addr, get(addr, "/other/x", &[("x-api-key", "k")])),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = within("GET quiet", send(addr, get(addr, "/quiet/x", &on_purpose))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = within(
        "GET nowhere",
        send(addr, get(addr, "/nowhere", &[("x-api-key", "k")])),
    )
    .await;
    assert_eq!(reply.status, 404);

    let scrape = scrape_until(
        admin,
        &[
            ("fluxlit_client_headers_dropped_total{route=\"app\"}", 3.0),
            ("fluxlit_client_headers_dropped_total{route=\"other\"}", 1.0),
            ("fluxlit_client_headers_dropped_total{route=\"quiet\"}", 0.0),
            (
                "fluxlit_requests_total{route=\"(none)\",status_class=\"4xx\"}",
                1.0,
            ),
        ],
    )
    .await;
    assert_eq!(
        scrape.types().get("fluxlit_client_headers_dropped_total"),
        Some(&"counter"),
        "{}",
        scrape.text
    );
    assert_eq!(
        scrape.get("fluxlit_client_headers_dropped_total{route=\"(none)\"}"),
        None,
        "nothing is forwarded without a route, so nothing is dropped from it:\n{}",
        scrape.text
    );
}
