//! Micro-benchmarks of the request path and of a reload (criterion).
//!
//! `cargo bench --bench hot_path` runs them all; add a filter to run some, e.g.
//! `cargo bench --bench hot_path -- route_match`. BENCHMARKS.md has the targets and the
//! last results. Groups:
//!
//! - `route_match`: `RouteTable::find` on a normalised path, with 1 and 10,000 routes.
//! - `request_route`: what a request does before the header policy: one snapshot load,
//!   path normalisation, route match, the route's `Arc` cloned.
//! - `header_pipeline`: the upstream request headers of a typical browser request (and of
//!   the same with a header on no list, which the policy drops), and the response side (hop-by-hop removal, request id and security headers).
//! - `config_compile`: a 10,000-route file: parse + validate + compile (what a reload
//!   does), and compile alone.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark stops on a failed setup"
)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use fluxlit::auth::secrets::ProcessEnvironment;
use fluxlit::build::compile_and_build;
use fluxlit::compile::CompileContext;
use fluxlit::config::{self, CheckedConfig, ConfigSource, SourceHash};
use fluxlit::http1::HeaderLines;
use fluxlit::http1::client::Fields;
use fluxlit::http1::server::Reply;
use fluxlit::metrics::Metrics;
use fluxlit::proxy::headers::{self, RequestContext};
use fluxlit::proxy::route::UpstreamTarget;
use fluxlit::proxy::routes::{RouteTable, normalize_path};
use fluxlit::snapshot::{SharedSnapshot, Snapshot};
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// A config with `routes` routes: `/` plus `/svcN/v1` for N in 1..routes, all to one
/// upstream.
fn config_text(routes: usize) -> String {
    let mut text = String::with_capacity(routes * 80 + 256);
    text.push_str(
        "[server]\nlisten = \"127.0.0.1:0\"\npublic_base_url = \"http://127.0.0.1:8080\"\n\n\
         [upstreams.app]\nurl = \"http://127.0.0.1:9\"\n\n\
         [[routes]]\nname = \"root\"\npath_prefix = \"/\"\nupstream = \"app\"\n\
         forward_client_headers = [\"x-tenant\"]\n",
    );
    for i in 1..routes {
        text.push_str(&format!(
            "\n[[routes]]\nname = \"r{i}\"\npath_prefix = \"/svc{i}/v1\"\nupstream = \"app\"\n"
        ));
    }
    text
}

fn source(text: &str) -> ConfigSource {
    ConfigSource {
        path: PathBuf::from("bench.toml"),
        text: text.to_owned(),
        hash: SourceHash::of(text.as_bytes()),
    }
}

fn checked(routes: usize) -> CheckedConfig {
    match config::check(source(&config_text(routes))) {
        Ok(checked) => checked,
        Err(error) => panic!("bench config is invalid: {:?}", error.render()),
    }
}

fn compile_context() -> CompileContext {
    CompileContext::for_config(&PathBuf::from("bench.toml"), Arc::new(ProcessEnvironment))
}

fn snapshot(routes: usize) -> Snapshot {
    match compile_and_build(checked(routes), None, 1, &compile_context()) {
        Ok(snapshot) => snapshot,
        Err(errors) => panic!("bench config does not compile: {errors:?}"),
    }
}

/// Paths a request may carry: a deep one under a prefix of the 10,000-route table, and
/// one that only the root route matches.
const PATHS: [(&str, &str); 2] = [
    ("deep_hit", "/svc7777/v1/items/42"),
    ("root_fallback", "/static/js/main.3f2a.js"),
];

fn route_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_match");
    for routes in [1usize, 10_000] {
        let table = RouteTable::new((0..routes).map(|i| {
            let prefix = if i == 0 {
                "/".to_owned()
            } else {
                format!("/svc{i}/v1")
            };
            (prefix.clone(), Arc::new(prefix))
        }));
        for (name, path) in PATHS {
            group.bench_with_input(BenchmarkId::new(name, routes), path, |b, path| {
                b.iter(|| table.find(black_box(path)).map(|r| r.len()));
            });
        }
    }
    group.finish();
}

fn request_route(c: &mut Criterion) {
    let mut group = c.benchmark_group("request_route");
    for routes in [1usize, 10_000] {
        let shared: SharedSnapshot = Arc::new(ArcSwap::from_pointee(snapshot(routes)));
        for (name, path) in PATHS {
            group.bench_with_input(BenchmarkId::new(name, routes), path, |b, path| {
                b.iter(|| {
                    let snapshot = shared.load_full();
                    let path = normalize_path(black_box(path)).ok()?;
                    snapshot.routes.find(&path).cloned()
                });
            });
        }
    }
    group.finish();
}

/// The request headers Chromium sends for a page load (with a session cookie), as the
/// gateway receives them.
fn browser_request() -> HeaderMap {
    let mut map = HeaderMap::new();
    let headers = [
        ("host", "127.0.0.1:8080"),
        ("connection", "keep-alive"),
        (
            "sec-ch-ua",
            "\"Chromium\";v=\"130\", \"Not?A_Brand\";v=\"99\"",
        ),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", "\"Linux\""),
        ("upgrade-insecure-requests", "1"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/130.0.0.0 Safari/537.36",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,\
             */*;q=0.8",
        ),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-user", "?1"),
        ("sec-fetch-dest", "document"),
        ("referer", "http://127.0.0.1:8080/"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("accept-language", "en-US,en;q=0.9"),
        (
            "cookie",
            "_streamlit_xsrf=2|9a1b2c3d|0f1e2d3c4b5a69788796a5b4c3d2e1f0|1730000000; \
             session=eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl",
        ),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-tenant", "acme"),
    ];
    for (name, value) in headers {
        map.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    map
}

/// What a FastAPI/uvicorn upstream typically answers with.
/// A uvicorn response head, as the engine's client hands it on.
fn upstream_response() -> HeaderLines {
    let head = "HTTP/1.1 200 OK\r\ndate: Tue, 29 Oct 2024 10:00:00 GMT\r\nserver: uvicorn\r\n\
                content-length: 1024\r\ncontent-type: application/json\r\n\
                connection: keep-alive\r\nkeep-alive: timeout=5\r\n\r\n";
    HeaderLines::from_response_head(Bytes::from_static(head.as_bytes())).unwrap()
}

fn header_pipeline(c: &mut Criterion) {
    let snapshot = snapshot(2);
    let route = match snapshot.routes.find("/") {
        Some(route) => Arc::clone(route),
        None => panic!("the bench config has a root route"),
    };
    let host = match &route.upstream.target {
        UpstreamTarget::Http(http) => http.host.clone(),
        UpstreamTarget::Echo => HeaderValue::from_static("echo"),
    };
    let client = browser_request();
    let peer: SocketAddr = ([127, 0, 0, 1], 50_000).into();
    let request_id = HeaderValue::from_static("0b6e3f2c-5d1a-4c4e-9f7a-2b8d1e6c9a01");

    // What the request path does with a header dropped for being on no list, but for
    // the log line (written once per name): count it and note its name.
    let metrics = Metrics::new();
    let route_metrics = metrics.route(&route.metrics, &route.name);
    let mut unlisted = |name: &HeaderName| {
        route_metrics.client_header_dropped();
        route.unlisted_headers.note(name);
    };

    // The same request with a header on no list (an API key the route does not forward):
    // what a dropped client header costs.
    let mut with_api_key = browser_request();
    with_api_key.append(
        HeaderName::from_static("x-api-key"),
        HeaderValue::from_static("k-0123456789"),
    );

    let mut group = c.benchmark_group("header_pipeline");
    for (bench, request) in [
        ("browser_request", &client),
        ("browser_request_unlisted_header", &with_api_key),
    ] {
        group.bench_function(bench, |b| {
            b.iter(|| {
                let ctx = RequestContext {
                    peer,
                    peer_trusted: snapshot.headers.is_trusted(peer.ip()),
                    scheme: "http",
                    uri_authority: None,
                    request_id: &request_id,
                    websocket: false,
                    identity: None,
                };
                let mut fields = Fields::with_capacity(request.len() + 6);
                headers::upstream_request_headers(
                    black_box(request),
                    &snapshot.headers,
                    &route,
                    &host,
                    &ctx,
                    &mut fields,
                    &mut unlisted,
                );
                fields
            });
        });
    }
    let response = upstream_response();
    group.bench_function("response", |b| {
        b.iter_batched_ref(
            || Reply {
                response: http::Response::new(()),
                lines: response.clone(),
                added: Fields::default(),
                declared_length: Some(1024),
            },
            |reply| {
                headers::finish_response(
                    reply,
                    &snapshot.headers,
                    Some(&route),
                    &request_id,
                    false,
                    false,
                );
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("request_id", |b| b.iter(fluxlit::proxy::request_id::fresh));
    // What a request id cost before (one `getrandom` system call each), for comparison.
    group.bench_function("request_id_uuid_new_v4", |b| {
        b.iter(|| {
            let mut buffer = uuid::Uuid::encode_buffer();
            let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
            HeaderValue::from_str(id).ok()
        });
    });
    group.finish();
}

fn config_compile(c: &mut Criterion) {
    let text = config_text(10_000);
    let ctx = compile_context();
    let mut group = c.benchmark_group("config_compile");
    group.sample_size(20);
    group.bench_function("parse_validate_compile_10000", |b| {
        b.iter(|| {
            let checked = config::check(source(black_box(&text))).ok()?;
            compile_and_build(checked, None, 2, &ctx).ok()
        });
    });
    let checked = checked(10_000);
    group.bench_function("compile_only_10000", |b| {
        b.iter_batched(
            || checked.clone(),
            |checked| compile_and_build(checked, None, 2, &ctx).ok(),
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(
    benches,
    route_match,
    request_route,
    header_pipeline,
    config_compile
);
criterion_main!(benches);
