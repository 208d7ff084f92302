//! Hot reload against a real file system and real sockets: a changed file is served
//! after one atomic swap; an invalid, missing or half-static file never takes the
//! running config down; editors' rename-on-save and Kubernetes ConfigMap symlink swaps
//! are seen; and requests under load during many reloads never fail nor see a mix of
//! two route tables. The watcher watches the config's directory, debounces ~50 ms and
//! polls every 2 s; the timeouts below are hang guards, not speed requirements.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use fluxlit::Gateway;
use fluxlit::reload::ReloadOutcome;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use jsonwebtoken::Algorithm::HS256;
use serde_json::Value;
use tokio::net::TcpStream;

/// A config without `[server]` (TestGateway adds an ephemeral listen): the upstreams by
/// name and address, and routes as `(name, path_prefix, upstream)`.
fn config(upstreams: &[(&str, SocketAddr)], routes: &[(&str, &str, &str)]) -> String {
    let mut config = ConfigText::new();
    for (name, addr) in upstreams {
        config = config.upstream(name, addr);
    }
    for (name, prefix, upstream) in routes {
        config = config.route(name, prefix, upstream);
    }
    config.into()
}

/// Recording upstreams `one` and `two`, and a gateway routing `/api` to `one`.
async fn api_on_one() -> (TestGateway, [(&'static str, SocketAddr); 2]) {
    let one = spawn_recording_upstream("one").await;
    let two = spawn_recording_upstream("two").await;
    let upstreams = [("one", one), ("two", two)];
    let gateway = TestGateway::start(&config(&upstreams, &[("api", "/api", "one")])).await;
    (gateway, upstreams)
}

/// The name of the recording upstream that answered `GET path`; panics unless 200.
async fn served_by(addr: SocketAddr, path: &str) -> String {
    let reply = within("request", send(addr, get(addr, path, &[]))).await;
    assert_eq!(reply.status, 200, "GET {path}: {}", reply.text());
    reply.json()["name"].as_str().expect("a name").to_owned()
}

/// The admin listener's `/snapshot` JSON.
async fn admin_snapshot(gateway: &TestGateway) -> Value {
    let admin = gateway.admin();
    let reply = within("admin request", send(admin, get(admin, "/snapshot", &[]))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// A keep-alive HTTP/1.1 connection to `addr`.
async fn keep_alive(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let (sender, connection) = within(
        "handshake",
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    sender
}

/// `GET path` on an open connection: the status and, on 200, the upstream's name.
async fn get_on(
    sender: &mut SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> Result<(http::StatusCode, Option<String>), String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection not ready: {e}"))?;
    let response = sender
        .send_request(get(addr, path, &[]))
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body failed: {e}"))?
        .to_bytes();
    let name = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|json| json["name"].as_str().map(str::to_owned));
    Ok((status, name))
}

/// The config used where line numbers matter: every line is written out here.
/// Line 13 is `upstream = "<route_upstream>"`.
fn numbered_config(upstream: SocketAddr, route_upstream: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[upstreams.api]
url = "http://{upstream}"

[[routes]]
name = "api"
path_prefix = "/api"
upstream = "{route_upstream}"
"#
    )
}

/// Writes `broken` over the file of a gateway serving `/api` from upstream `one` and
/// waits for the rejection: generation 1 serves on, and `/snapshot` shows the errors.
/// The errors, and `/snapshot`.
async fn rejected(gateway: &TestGateway, broken: &str) -> (Vec<String>, Value) {
    std::fs::write(&gateway.config_path, broken).expect("write config");
    gateway.wait_for_rejection().await;
    let errors = gateway.reload_errors();
    assert_eq!(gateway.gateway.snapshot().generation, 1);
    assert_eq!(
        served_by(gateway.addr(), "/api/x").await,
        "one",
        "the old snapshot serves"
    );
    let admin = admin_snapshot(gateway).await;
    assert_eq!(admin["generation"], 1);
    assert_eq!(
        admin["last_reload_error"]["errors"],
        serde_json::json!(errors)
    );
    (errors, admin)
}

/// After [`rejected`]: a valid file (`/api` from `two`) applies and clears the error.
/// `/snapshot` after it.
async fn a_valid_file_clears_the_error(gateway: &TestGateway, two: SocketAddr) -> Value {
    std::fs::write(&gateway.config_path, numbered_config(two, "api")).expect("write config");
    within("reload", gateway.wait_for_generation(2)).await;
    assert_eq!(served_by(gateway.addr(), "/api/x").await, "two");
    assert!(gateway.gateway.reloader().status().last_error.is_none());
    let admin = admin_snapshot(gateway).await;
    assert!(admin["last_reload_error"].is_null(), "{admin:#}");
    admin
}

#[tokio::test]
async fn a_changed_route_is_served_after_one_reload_and_the_generation_goes_up_by_one() {
    let (gateway, upstreams) = api_on_one().await;
    assert_eq!(gateway.gateway.snapshot().generation, 1);
    assert_eq!(served_by(gateway.addr(), "/api/x").await, "one");
    assert_eq!(status_of(gateway.addr(), "/new/x").await, 404);

    // /api moves to the second upstream and a new prefix appears.
    gateway.write_config(&config(
        &upstreams,
        &[("api", "/api", "two"), ("new", "/new", "one")],
    ));
    within("reload", gateway.wait_for_generation(2)).await;

    assert_eq!(served_by(gateway.addr(), "/api/x").await, "two");
    assert_eq!(served_by(gateway.addr(), "/new/x").await, "one");
    // One write, one swap: let any trailing file events and a poll go by, then check
    // that nothing else was applied.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(gateway.gateway.snapshot().generation, 2);
    assert!(gateway.gateway.reloader().status().last_error.is_none());
}

#[tokio::test]
async fn an_unknown_upstream_is_rejected_with_its_line_and_column_and_the_old_snapshot_keeps_serving()
 {
    let one = spawn_recording_upstream("one").await;
    let two = spawn_recording_upstream("two").await;
    let gateway = TestGateway::start(&numbered_config(one, "api")).await;
    assert_eq!(served_by(gateway.addr(), "/api/x").await, "one");

    let (errors, admin) = rejected(&gateway, &numbered_config(one, "apj")).await;
    let file = gateway.config_path.display();
    assert_eq!(
        errors,
        [format!(
            "{file}:13:12: error: routes[0].upstream: unknown upstream \"apj\"\n  help: did you mean \"api\"?"
        )]
    );
    assert_eq!(admin["routes"][0]["upstream"], "api");

    // A later valid file applies and clears the error.
    let admin = a_valid_file_clears_the_error(&gateway, two).await;
    assert_eq!(admin["generation"], 2);
}

#[tokio::test]
async fn an_unknown_key_and_the_other_errors_are_all_rejected_and_shown_in_snapshot() {
    let one = spawn_recording_upstream("one").await;
    let two = spawn_recording_upstream("two").await;
    let gateway = TestGateway::start(&numbered_config(one, "api")).await;

    // Line 12: a prefix without '/'; 13: an unknown upstream; 14: an unknown key.
    let broken = format!(
        "{}colour = \"blue\"\n",
        numbered_config(one, "apj").replace("path_prefix = \"/api\"", "path_prefix = \"api\"")
    );
    let (errors, _) = rejected(&gateway, &broken).await;
    let file = gateway.config_path.display();
    let expected = [
        format!("{file}:12:15: error: routes[0].path_prefix: \"api\" must start with '/'"),
        format!("{file}:13:12: error: routes[0].upstream: unknown upstream \"apj\""),
        format!("{file}:14:1: error: routes[0].colour: unknown key `colour`"),
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (error, expected) in errors.iter().zip(&expected) {
        assert!(
            error.starts_with(expected),
            "expected {expected:?}…, got {error:?}"
        );
    }
    a_valid_file_clears_the_error(&gateway, two).await;
}

#[tokio::test]
async fn a_syntax_error_is_rejected_with_its_line_and_column_and_a_later_valid_file_clears_it() {
    let one = spawn_recording_upstream("one").await;
    let two = spawn_recording_upstream("two").await;
    let gateway = TestGateway::start(&numbered_config(one, "api")).await;

    // Line 12, column 15: a bare word where a string belongs.
    let broken =
        numbered_config(one, "api").replace("path_prefix = \"/api\"", "path_prefix = /api");
    assert_eq!(broken.lines().nth(11), Some("path_prefix = /api"));
    let (errors, _) = rejected(&gateway, &broken).await;
    let prefix = format!(
        "{}:12:15: error: invalid TOML: ",
        gateway.config_path.display()
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with(&prefix),
        "expected {prefix:?}…, got {:?}",
        errors[0]
    );
    a_valid_file_clears_the_error(&gateway, two).await;
}

#[tokio::test]
async fn a_deleted_config_keeps_serving_and_a_recreated_one_is_loaded() {
    let (gateway, upstreams) = api_on_one().await;

    std::fs::remove_file(&gateway.config_path).expect("delete config");
    assert_eq!(
        gateway
            .gateway
            .reloader()
            .reload(fluxlit::reload::Trigger::Manual),
        ReloadOutcome::Missing
    );
    // Give the watcher's own event for the deletion time to be handled too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served_by(gateway.addr(), "/api/x").await, "one");
    assert_eq!(gateway.gateway.snapshot().generation, 1);
    assert!(
        gateway.gateway.reloader().status().last_error.is_none(),
        "a missing file is no error"
    );

    gateway.write_config(&config(&upstreams, &[("api", "/api", "two")]));
    within("reload", gateway.wait_for_generation(2)).await;
    assert_eq!(served_by(gateway.addr(), "/api/x").await, "two");
}

#[tokio::test]
async fn a_save_by_rename_is_seen() {
    let (gateway, upstreams) = api_on_one().await;

    let text = gateway.pin_listen(&config(&upstreams, &[("api", "/api", "two")]));
    write_by_rename(&gateway.config_path, &text);
    within("reload", gateway.wait_for_generation(2)).await;
    assert_eq!(served_by(gateway.addr(), "/api/x").await, "two");

    // And again: the watch survives the original file being replaced.
    let text = gateway.pin_listen(&config(&upstreams, &[("api", "/api", "one")]));
    write_by_rename(&gateway.config_path, &text);
    within("reload", gateway.wait_for_generation(3)).await;
    assert_eq!(served_by(gateway.addr(), "/api/x").await, "one");
}

/// The config's directory is watched, so every file in it stirs the watcher; only
/// events about the config (or files it names) make the gateway read it again. A log
/// file written beside the config, as `fluxlit serve > fluxlit.log` does, must not.
#[tokio::test]
async fn files_written_beside_the_config_do_not_make_it_read_again() {
    let (gateway, upstreams) = api_on_one().await;
    let reads = || gateway.gateway.reloader().status().file_event_reads;
    let log = gateway.config_path.with_file_name("fluxlit.log");
    for line in 0..20 {
        let mut text = std::fs::read_to_string(&log).unwrap_or_default();
        text.push_str(&format!("request {line}\n"));
        std::fs::write(&log, text).expect("write the log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(reads(), 0, "the log file's events were ignored");

    // The config itself is still seen.
    let text = gateway.pin_listen(&config(&upstreams, &[("api", "/api", "two")]));
    std::fs::write(&gateway.config_path, text).expect("rewrite the config");
    within("reload", gateway.wait_for_generation(2)).await;
    assert_eq!(served_by(gateway.addr(), "/api/x").await, "two");
}

/// Writes `text` into a new timestamped directory and points `..data` at it, the way
/// the kubelet updates a ConfigMap volume: new symlink, renamed over the old one.
fn configmap_update(dir: &Path, version: &str, text: &str) -> PathBuf {
    let data = dir.join(format!("..2026_01_01_00_00_0{version}.000000001"));
    std::fs::create_dir(&data).expect("create data dir");
    std::fs::write(data.join("fluxlit.toml"), text).expect("write config");
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(data.file_name().expect("name"), &tmp).expect("symlink ..data_tmp");
    std::fs::rename(&tmp, dir.join("..data")).expect("rename ..data_tmp over ..data");
    data
}

#[tokio::test]
async fn a_configmap_style_symlink_swap_is_seen() {
    let one = spawn_recording_upstream("one").await;
    let two = spawn_recording_upstream("two").await;
    let upstreams = [("one", one), ("two", two)];
    let listen = "[server]\nlisten = \"127.0.0.1:0\"\n\n";

    // fluxlit.toml -> ..data/fluxlit.toml, ..data -> ..<timestamp>/
    let dir = tempfile::tempdir().expect("temp dir");
    let first = configmap_update(
        dir.path(),
        "1",
        &format!("{listen}{}", config(&upstreams, &[("api", "/api", "one")])),
    );
    let config_path = dir.path().join("fluxlit.toml");
    std::os::unix::fs::symlink("..data/fluxlit.toml", &config_path).expect("symlink fluxlit.toml");
    let gateway = Gateway::start(config_path).await.expect("gateway starts");
    assert_eq!(served_by(gateway.addr, "/api/x").await, "one");

    let second = configmap_update(
        dir.path(),
        "2",
        &format!("{listen}{}", config(&upstreams, &[("api", "/api", "two")])),
    );
    std::fs::remove_dir_all(&first).expect("remove the old data dir");
    wait_until("generation 2", || gateway.snapshot().generation == 2).await;
    assert_eq!(served_by(gateway.addr, "/api/x").await, "two");

    // A second swap is seen as well.
    configmap_update(
        dir.path(),
        "3",
        &format!(
            "{listen}{}",
            config(&upstreams, &[("api", "/api", "one"), ("ui", "/", "two")])
        ),
    );
    std::fs::remove_dir_all(&second).expect("remove the old data dir");
    wait_until("generation 3", || gateway.snapshot().generation == 3).await;
    assert_eq!(served_by(gateway.addr, "/api/x").await, "one");
    assert_eq!(served_by(gateway.addr, "/page").await, "two");
    assert!(gateway.reloader().status().last_error.is_none());
}

#[tokio::test]
async fn changed_static_keys_are_refused_by_name_while_the_rest_of_the_change_applies() {
    let one = spawn_recording_upstream("one").await;
    let two = spawn_recording_upstream("two").await;
    let gateway = TestGateway::start(&numbered_config(one, "api")).await;
    let admin_addr = gateway.admin();

    let changed = numbered_config(one, "api")
        .replace(
            "[server]\nlisten = \"127.0.0.1:0\"",
            "[server]\nlisten = \"127.0.0.1:1\"",
        )
        .replace(
            "[admin]\nlisten = \"127.0.0.1:0\"",
            "[admin]\nlisten = \"127.0.0.1:2\"",
        )
        + &format!(
            "\n[upstreams.two]\nurl = \"http://{two}\"\n\n\
             [[routes]]\nname = \"new\"\npath_prefix = \"/new\"\nupstream = \"two\"\n"
        );
    std::fs::write(&gateway.config_path, changed).expect("write config");
    within("reload", gateway.wait_for_generation(2)).await;

    let refused = gateway.gateway.reloader().status().refused_static_keys;
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(refused[0].starts_with("server.listen"), "{refused:#?}");
    assert!(
        refused[0].contains("127.0.0.1:1"),
        "the message names the wanted value: {refused:#?}"
    );
    assert!(refused[1].starts_with("admin.listen"), "{refused:#?}");

    // The running values stay, and so do the listeners; the new route is live.
    let snapshot = gateway.gateway.snapshot();
    assert_eq!(snapshot.config.server.listen.to_string(), "127.0.0.1:0");
    assert_eq!(
        snapshot
            .config
            .admin
            .as_ref()
            .map(|a| a.listen.to_string())
            .as_deref(),
        Some("127.0.0.1:0")
    );
    assert_eq!(served_by(gateway.addr(), "/new/x").await, "two");
    assert_eq!(served_by(gateway.addr(), "/api/x").await, "one");
    assert_eq!(gateway.gateway.admin_addr, Some(admin_addr));
    let admin = admin_snapshot(&gateway).await;
    assert_eq!(admin["generation"], 2);
    assert_eq!(admin["refused_static_keys"], serde_json::json!(refused));
    assert!(admin["last_reload_error"].is_null());
}

/// What one client saw during the load test.
#[derive(Debug, Default)]
struct Tally {
    table_a: usize,
    table_b: usize,
    failures: Vec<String>,
}

/// Table A sends `/api` to `a-api` and everything else to `a-ui`; table B to `b-*`.
fn route_table(table: char, upstreams: &[(&str, SocketAddr)]) -> String {
    let api = format!("{table}-api");
    let ui = format!("{table}-ui");
    config(upstreams, &[("api", "/api", &api), ("ui", "/", &ui)])
}

async fn client_under_load(addr: SocketAddr, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut sender = keep_alive(addr).await;
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let (path, kind) = if i.is_multiple_of(2) {
            ("/api/x", "api")
        } else {
            ("/page", "ui")
        };
        i += 1;
        match within("request under load", get_on(&mut sender, addr, path)).await {
            Ok((status, Some(name))) if status == 200 && name == format!("a-{kind}") => {
                tally.table_a += 1;
            }
            Ok((status, Some(name))) if status == 200 && name == format!("b-{kind}") => {
                tally.table_b += 1;
            }
            Ok((status, name)) => tally
                .failures
                .push(format!("GET {path}: {status} from {name:?}")),
            Err(error) => {
                tally.failures.push(format!("GET {path}: {error}"));
                // Count it and go on with a fresh connection.
                sender = keep_alive(addr).await;
            }
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_under_load_during_many_reloads_never_fail_and_see_one_whole_table() {
    let mut upstreams = Vec::new();
    for name in ["a-api", "a-ui", "b-api", "b-ui"] {
        upstreams.push((name, spawn_recording_upstream(name).await));
    }
    let gateway = TestGateway::start(&route_table('a', &upstreams)).await;
    let addr = gateway.addr();

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(client_under_load(addr, Arc::clone(&stop))))
        .collect();

    const REWRITES: u64 = 30;
    for i in 1..=REWRITES {
        let table = if i.is_multiple_of(2) { 'a' } else { 'b' };
        // Whole-file replacement: an in-place write has a moment when the file is
        // empty, which is a different scenario from the one measured here.
        write_by_rename(
            &gateway.config_path,
            &gateway.pin_listen(&route_table(table, &upstreams)),
        );
        within("reload", gateway.wait_for_generation(1 + i)).await;
        // Let the clients run on this table for a moment.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);

    let mut total = Tally::default();
    for client in clients {
        let tally = within("client", client).await.expect("client task");
        total.table_a += tally.table_a;
        total.table_b += tally.table_b;
        total.failures.extend(tally.failures);
    }
    eprintln!(
        "under load: {} responses from table A, {} from table B, {} failures, over {REWRITES} reloads",
        total.table_a,
        total.table_b,
        total.failures.len()
    );
    assert!(
        total.failures.is_empty(),
        "{} failed: {:#?}",
        total.failures.len(),
        &total.failures[..total.failures.len().min(20)]
    );
    assert!(
        total.table_a > 0 && total.table_b > 0,
        "both tables were seen: {total:?}"
    );
    assert_eq!(gateway.gateway.snapshot().generation, 1 + REWRITES);
    assert!(gateway.gateway.reloader().status().last_error.is_none());
}

#[tokio::test]
async fn reload_latency_from_file_write_to_the_new_route_serving_is_measured() {
    let old = spawn_recording_upstream("old").await;
    let new = spawn_recording_upstream("new").await;
    let upstreams = [("old", old), ("new", new)];
    let gateway = TestGateway::start(&config(&upstreams, &[("ui", "/", "old")])).await;
    let addr = gateway.addr();
    let mut sender = keep_alive(addr).await;

    const ROUNDS: u64 = 9;
    let mut latencies = Vec::new();
    for round in 1..=ROUNDS {
        let prefix = format!("/v{round}");
        let text = config(&upstreams, &[("ui", "/", "old"), ("new", &prefix, "new")]);
        let path = format!("{prefix}/x");
        let started = Instant::now();
        gateway.write_config(&text);
        let served = async {
            loop {
                if let Ok((_, Some(name))) = get_on(&mut sender, addr, &path).await
                    && name == "new"
                {
                    return started.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        latencies.push(within("the new route", served).await);
        assert_eq!(gateway.gateway.snapshot().generation, 1 + round);
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "reload latency, file write to new route serving, {ROUNDS} rounds: median {:.1} ms, min {:.1} ms, max {:.1} ms (all: {:?})",
        ms(latencies[latencies.len() / 2]),
        ms(latencies[0]),
        ms(latencies[latencies.len() - 1]),
        latencies
            .iter()
            .map(|d| format!("{:.1}", ms(*d)))
            .collect::<Vec<_>>()
    );
}

/// An upstream that answers with the port its client connected from, so a test can tell
/// whether the gateway reused a pooled connection.
async fn spawn_port_reporting_upstream() -> SocketAddr {
    use axum::extract::ConnectInfo;
    spawn_upstream(axum::Router::new().fallback(
        |ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.port().to_string() },
    ))
    .await
}

async fn upstream_connection_port(gateway: &TestGateway) -> String {
    let reply = send(gateway.addr(), get(gateway.addr(), "/api", &[])).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.text()
}

#[tokio::test]
async fn an_unchanged_upstream_keeps_its_pooled_connections_across_a_reload() {
    let upstream = spawn_port_reporting_upstream().await;
    let api = format!(
        "[upstreams.api]\nurl = \"http://{upstream}\"\n\n[[routes]]\nname = \"api\"\npath_prefix = \"/api\"\nupstream = \"api\"\n"
    );
    let gateway = TestGateway::start(&api).await;
    let first = upstream_connection_port(&gateway).await;
    assert_eq!(
        upstream_connection_port(&gateway).await,
        first,
        "keep-alive to the upstream"
    );

    // Another route changes; the api upstream does not: same pool, same connection.
    gateway.write_config(&format!(
        "{api}\n[upstreams.other]\nbuiltin = \"echo\"\n\n[[routes]]\nname = \"other\"\npath_prefix = \"/other\"\nupstream = \"other\"\n"
    ));
    gateway.wait_for_generation(2).await;
    assert_eq!(
        upstream_connection_port(&gateway).await,
        first,
        "pool kept across the reload"
    );

    // The upstream's connection settings change: a new pool, a new connection.
    gateway
        .write_config(&api.replace("\n\n[[routes]]", "\nconnect_timeout = \"3s\"\n\n[[routes]]"));
    gateway.wait_for_generation(3).await;
    assert_ne!(
        upstream_connection_port(&gateway).await,
        first,
        "a changed upstream gets a new pool"
    );
}

/// A status for `GET /app` with a bearer token signed with `secret`.
async fn status_with_hs256(gateway: &TestGateway, secret: &str) -> http::StatusCode {
    let key = auth::Key::Hmac(secret.as_bytes());
    let token = auth::token(HS256, None, key, &auth::claims("ada"));
    let bearer = auth::bearer(&token);
    let addr = gateway.addr();
    within(
        "GET /app",
        send(addr, get(addr, "/app", &[("authorization", &bearer)])),
    )
    .await
    .status
}

#[tokio::test]
async fn a_secret_file_rotated_in_place_is_reloaded_though_the_config_did_not_change() {
    // The secret lives in a directory of its own, which only the reference in the
    // config makes the watcher watch.
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("hs256.key");
    std::fs::write(
        &secret_file,
        "the first secret, long enough for HS256 use\n",
    )
    .unwrap();
    let config = ConfigText::new()
        .echo_upstream("app")
        .guarded_route("app", "/app", "app", "main")
        .jwt_provider(
            "main",
            "[\"HS256\"]",
            &format!(
                "hs256_secret = {{ file = {:?} }}",
                secret_file.display().to_string()
            ),
        );
    let gateway = TestGateway::start(&config).await;
    let first = "the first secret, long enough for HS256 use";
    let second = "the second secret, also long enough for HS256";
    assert_eq!(
        status_with_hs256(&gateway, first).await,
        http::StatusCode::OK
    );

    write_by_rename(&secret_file, &format!("{second}\n"));
    gateway.wait_for_generation(2).await;

    assert_eq!(
        status_with_hs256(&gateway, second).await,
        http::StatusCode::OK
    );
    assert_eq!(
        status_with_hs256(&gateway, first).await,
        http::StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_secret_rotated_to_one_shorter_than_its_hash_is_refused_and_the_old_one_serves() {
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("hs256.key");
    let first = "the first secret, long enough for HS256 use";
    std::fs::write(&secret_file, format!("{first}\n")).unwrap();
    let config = ConfigText::new()
        .admin()
        .echo_upstream("app")
        .guarded_route("app", "/app", "app", "main")
        .jwt_provider(
            "main",
            "[\"HS256\"]",
            &format!(
                "hs256_secret = {{ file = {:?} }}",
                secret_file.display().to_string()
            ),
        );
    let gateway = TestGateway::start(&config).await;

    // 31 bytes: one short of what HS256 needs.
    let weak = "a weak secret of thirty-one b..";
    assert_eq!(weak.len(), 31);
    write_by_rename(&secret_file, &format!("{weak}\n"));
    gateway.wait_for_rejection().await;

    let errors = gateway.reload_errors();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("error: auth.providers.main.hs256_secret: the secret in file")
            && errors[0].contains("is 31 bytes; HS256 needs at least 32")
            && errors[0].contains("[secret_too_short]"),
        "{errors:#?}"
    );
    assert!(!errors[0].contains(weak), "the secret is never shown");
    let admin = admin_snapshot(&gateway).await;
    assert_eq!(admin["generation"], 1);
    assert_eq!(
        admin["last_reload_error"]["errors"],
        serde_json::json!(errors)
    );
    assert_eq!(
        status_with_hs256(&gateway, first).await,
        http::StatusCode::OK
    );
    assert_eq!(
        status_with_hs256(&gateway, weak).await,
        http::StatusCode::UNAUTHORIZED
    );
}
