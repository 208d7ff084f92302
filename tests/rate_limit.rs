//! Per-client rate limits on routes (`rate_limit = { rate, burst }`), over real sockets:
//! clients are told apart by their source address (127.0.0.1 and 127.0.0.2 are both
//! loopback) or, behind a trusted proxy, by the address it forwards for them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use common::{
    ConfigText, CountingUpstream, OTHER_PROXY, Reply, TRUSTED, TestGateway, UNTRUSTED, get,
    get_from, send, within,
};

/// The diagnostics of loading `text`, rendered as `fluxlit validate` prints them.
fn load_errors(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fluxlit.toml");
    std::fs::write(&path, text).unwrap();
    match fluxlit::config::load(&path) {
        Ok(_) => Vec::new(),
        Err(error) => error.render_errors(),
    }
}

/// `/api` limited to a burst of 3 then 1 a minute; `/open` to the same upstream without
/// a limit.
fn config(upstream: &CountingUpstream, limit: &str) -> String {
    ConfigText::new()
        .admin()
        .upstream("app", upstream.addr)
        .route("api", "/api", "app")
        .with(&format!("rate_limit = {limit}"))
        .route("open", "/open", "app")
        .into()
}

const LIMIT: &str = "{ rate = \"1/min\", burst = 3 }";

async fn get_api(gateway: &TestGateway, source: std::net::IpAddr, forwarded: &[&str]) -> Reply {
    let headers: Vec<(&str, &str)> = forwarded
        .iter()
        .map(|hop| ("x-forwarded-for", *hop))
        .collect();
    get_from(source, gateway, "/api/items", &headers).await
}

async fn metrics(gateway: &TestGateway) -> String {
    let admin = gateway.admin();
    within("scrape", send(admin, get(admin, "/metrics", &[])))
        .await
        .text()
}

/// The `Retry-After` of a 429, in seconds.
fn retry_after(reply: &Reply) -> u64 {
    reply
        .header("retry-after")
        .unwrap_or_else(|| panic!("a 429 says when to retry: {:?}", reply.headers))
        .parse()
        .expect("Retry-After in whole seconds")
}

#[tokio::test]
async fn a_client_over_the_limit_gets_429_with_retry_after_and_other_clients_do_not() {
    let upstream = CountingUpstream::spawn().await;
    let gateway = TestGateway::start(config(&upstream, LIMIT)).await;

    for _ in 0..3 {
        assert_eq!(get_api(&gateway, UNTRUSTED, &[]).await.status, 200);
    }
    let refused = get_api(&gateway, UNTRUSTED, &[]).await;
    refused.assert_says(429, "too many requests");
    assert!(
        refused.text().contains("api"),
        "the answer names the route: {}",
        refused.text()
    );
    // One request a minute after the burst: the next is a minute away.
    assert!(
        (55..=60).contains(&retry_after(&refused)),
        "{:?}",
        refused.headers
    );
    assert_eq!(
        upstream.hits(),
        3,
        "a refused request never reaches the upstream"
    );

    // Another client has its own bucket; a route without a limit has none at all.
    assert_eq!(get_api(&gateway, TRUSTED, &[]).await.status, 200);
    for _ in 0..10 {
        assert_eq!(
            get_from(UNTRUSTED, &gateway, "/open/items", &[])
                .await
                .status,
            200
        );
    }
    assert!(
        metrics(&gateway)
            .await
            .contains("fluxlit_rate_limited_total{route=\"api\"} 1\n"),
        "the refusal is counted by route"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
    let upstream = CountingUpstream::spawn().await;
    let text = format!(
        "[trust]\nproxies = [\"127.0.0.1/32\"]\n\n{}",
        config(&upstream, LIMIT)
    );
    let gateway = TestGateway::start(text).await;

    // The proxy (127.0.0.1) speaks for two browsers: each is limited on its own.
    for _ in 0..3 {
        let reply = get_api(&gateway, TRUSTED, &["198.51.100.7"]).await;
        assert_eq!(reply.status, 200);
    }
    assert_eq!(
        get_api(&gateway, TRUSTED, &["198.51.100.7"]).await.status,
        429
    );
    assert_eq!(
        get_api(&gateway, TRUSTED, &["198.51.100.8"]).await.status,
        200,
        "a second browser behind the same proxy is not limited by the first"
    );
    // A browser cannot escape its bucket by prepending addresses of its own: the walk
    // from the right stops at the first untrusted hop, which the proxy appended.
    assert_eq!(
        get_api(&gateway, TRUSTED, &["203.0.113.1, 198.51.100.7"])
            .await
            .status,
        429
    );

    // A client that is no proxy cannot pick its bucket with X-Forwarded-For.
    for (index, spoofed) in ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"]
        .iter()
        .enumerate()
    {
        let status = get_api(&gateway, OTHER_PROXY, &[spoofed]).await.status;
        let expected = if index < 3 { 200 } else { 429 };
        assert_eq!(status, expected, "request {index} claiming to be {spoofed}");
    }
}

#[tokio::test]
async fn a_reload_keeps_the_buckets_of_an_unchanged_limit_and_a_changed_limit_starts_afresh() {
    let upstream = CountingUpstream::spawn().await;
    let gateway = TestGateway::start(config(&upstream, LIMIT)).await;
    for _ in 0..3 {
        assert_eq!(get_api(&gateway, UNTRUSTED, &[]).await.status, 200);
    }
    assert_eq!(get_api(&gateway, UNTRUSTED, &[]).await.status, 429);

    // Another route added, this one untouched: the client's bucket stays empty.
    let grown = format!(
        "{}\n[[routes]]\nname = \"more\"\npath_prefix = \"/more\"\nupstream = \"app\"\n",
        config(&upstream, LIMIT)
    );
    gateway.write_config(&grown);
    gateway.wait_for_generation(2).await;
    assert_eq!(
        get_api(&gateway, UNTRUSTED, &[]).await.status,
        429,
        "a reload hands no client a fresh burst"
    );

    // A new limit is a new bucket.
    gateway.write_config(&config(&upstream, "{ rate = \"1/min\", burst = 5 }"));
    gateway.wait_for_generation(3).await;
    assert_eq!(get_api(&gateway, UNTRUSTED, &[]).await.status, 200);
}

#[tokio::test]
async fn rate_limit_mistakes_are_refused_with_their_key_paths() {
    let upstream = CountingUpstream::spawn().await;
    for (limit, key, says) in [
        (
            "{ rate = \"0/s\" }",
            "routes[0].rate_limit.rate",
            "at least 1",
        ),
        (
            "{ rate = \"20/day\" }",
            "routes[0].rate_limit.rate",
            "s, min or h",
        ),
        ("{ rate = \"20\" }", "routes[0].rate_limit.rate", "20/s"),
        (
            "{ rate = \"20/s\", burst = 0 }",
            "routes[0].rate_limit.burst",
            "",
        ),
        (
            "{ rate = \"20/s\", brust = 40 }",
            "routes[0].rate_limit",
            "brust",
        ),
    ] {
        let error = load_errors(&config(&upstream, limit)).join("\n");
        assert!(
            error.contains(key) && error.contains(says),
            "{limit}: the error names {key} and says {says:?}: {error}"
        );
    }
}
