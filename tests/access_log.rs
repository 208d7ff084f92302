//! The access log of the real binary: one line per request on stdout (or in
//! `access_log_path`), in JSON or text, with the fields an operator needs and no trace
//! of a credential the request carried (bearer token, cookie, login codes in the query,
//! a forward-auth identity); every line written by the time a stopped gateway exits,
//! and a rotated file reopened on SIGUSR1 without losing one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::cli::{Lines, Serve};
use common::*;
use serde_json::Value;

/// The access events among the lines the gateway wrote to one stream, parsed.
fn access_events(lines: &Lines) -> Vec<Value> {
    json_access_events(&lines.lines())
}

/// The JSON access events among `lines`.
fn json_access_events(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["target"] == "fluxlit::access")
        .collect()
}

fn mint_token(dir: &Path) -> String {
    let output = cli::run(
        &["token", "issue", "--provider", "main", "--sub", "ada"],
        dir,
        &[],
    );
    assert!(output.status.success(), "{}", cli::stderr(&output));
    cli::stdout(&output).trim().to_owned()
}

const JWT_SECRET: &str = "HS-SECRET-0-test-only-shared-secret";
const COOKIE: &str = "COOKIE-SECRET-1";
const AUTH_CODE: &str = "AUTHCODE-SECRET-2";
const CODE: &str = "CODE-SECRET-3";
const STATE: &str = "STATE-SECRET-4";
const REMOTE_USER: &str = "FORWARDED-USER-SECRET-5";
const ACCESS_TOKEN: &str = "ACCESS-SECRET-6";
const PASSWORD: &str = "PASSWORD-SECRET-7";
const CLIENT_SECRET: &str = "CLIENT-SECRET-8";
const BAD_BEARER: &str = "BEARER-SECRET-9";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_access_event_per_request_and_no_credential_in_the_log() {
    let app = spawn_recording_upstream("app").await;
    let config = ConfigText::new()
        .table(
            "[log]",
            "format = \"json\"\n\
             # Debug events too: nothing the gateway logs at any of these levels may hold a secret.\n\
             level = \"debug\"",
        )
        .trust_loopback()
        .upstream("app", app)
        .guarded_route("api", "/api", "app", "main")
        .guarded_route("sso", "/sso", "app", "proxy")
        .route("ui", "/", "app")
        .jwt("main", "https://issuer.test", "fluxlit-test", "[\"HS256\"]")
        .with("hs256_secret = { file = \"hs.secret\" }")
        .provider("proxy", "trusted_proxy_user", "");
    let (dir, _) = config_dir(config.text(), &[("hs.secret", JWT_SECRET)]);
    let token = mint_token(dir.path());
    let gateway = Serve::start(dir.path(), &[]).await;
    let (stdout, stderr, addr) = (&gateway.stdout, &gateway.stderr, gateway.addr);

    let bearer = format!("Bearer {token}");
    let bad_bearer = format!("Bearer {BAD_BEARER}");
    let cookie = format!("session={COOKIE}; theme=dark");
    let landing = format!("/?auth_code={AUTH_CODE}&tab=1");
    let callback = format!("/auth/callback?code={CODE}&state={STATE}");
    let query = format!(
        "/report?access_token={ACCESS_TOKEN}&password={PASSWORD}&client_secret={CLIENT_SECRET}&page=2"
    );
    // (path, headers, expected status, route, path as logged)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str, String);
    let requests: Vec<Case> = vec![
        (
            "/api/data",
            vec![("authorization", &bearer)],
            200,
            "api",
            "/api/data".into(),
        ),
        (
            "/api/data",
            vec![("authorization", &bad_bearer)],
            401,
            "api",
            "/api/data".into(),
        ),
        (
            "/page",
            vec![("cookie", &cookie)],
            200,
            "ui",
            "/page".into(),
        ),
        (
            &landing,
            vec![],
            200,
            "ui",
            "/?auth_code=REDACTED&tab=1".into(),
        ),
        (
            &callback,
            vec![],
            200,
            "ui",
            "/auth/callback?code=REDACTED&state=REDACTED".into(),
        ),
        (
            "/sso/me",
            vec![("x-remote-user", REMOTE_USER)],
            200,
            "sso",
            "/sso/me".into(),
        ),
        (
            &query,
            vec![],
            200,
            "ui",
            "/report?access_token=REDACTED&password=REDACTED&client_secret=REDACTED&page=2".into(),
        ),
        (
            "/nothing/../..",
            vec![],
            400,
            "(none)",
            "/nothing/../..".into(),
        ),
    ];

    let mut sent = Vec::new();
    for (path, headers, status, route, logged) in &requests {
        let reply = within("request", send(addr, get(addr, path, headers))).await;
        assert_eq!(reply.status.as_u16(), *status, "{path}: {}", reply.text());
        let request_id = reply.headers["x-request-id"].to_str().unwrap().to_owned();
        sent.push((
            request_id,
            reply.body.len(),
            *status,
            *route,
            logged.clone(),
        ));
    }
    // Sanity: the upstream did get the credentials; only the log must not.
    let reply = send(addr, get(addr, "/page", &[("cookie", &cookie)])).await;
    assert_eq!(reply.upstream_header("cookie"), vec![cookie.clone()]);
    sent.push((
        reply.headers["x-request-id"].to_str().unwrap().to_owned(),
        reply.body.len(),
        200,
        "ui",
        "/page".into(),
    ));

    // Written within a second or so (the writer's tick), while the gateway runs.
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while access_events(stdout).len() < sent.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} access events for {} requests:\n{}",
            access_events(stdout).len(),
            sent.len(),
            stdout.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = access_events(stdout);
    assert_eq!(
        events.len(),
        sent.len(),
        "one event per request:\n{}",
        stdout.text()
    );
    // The access log has stdout to itself; the gateway's own log stays on stderr.
    assert!(
        access_events(stderr).is_empty(),
        "access events on stderr:\n{}",
        stderr.text()
    );
    assert!(
        stdout.lines().len() == events.len(),
        "stdout holds only access lines:\n{}",
        stdout.text()
    );
    for (request_id, bytes, status, route, path) in &sent {
        let matching: Vec<&Value> = events
            .iter()
            .filter(|event| event["fields"]["request_id"] == request_id.as_str())
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "one event for {request_id}:\n{events:#?}"
        );
        let fields = &matching[0]["fields"];
        assert_eq!(fields["method"], "GET", "{fields}");
        assert_eq!(fields["path"], path.as_str(), "{fields}");
        assert_eq!(fields["route"], *route, "{fields}");
        assert_eq!(fields["status"], *status, "{fields}");
        assert_eq!(fields["bytes"], *bytes as u64, "{fields}");
        assert!(
            fields["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
            "{fields}"
        );
        let peer = fields["peer"].as_str().unwrap_or_default();
        assert!(peer.starts_with("127.0.0.1:"), "{fields}");
        assert_eq!(matching[0]["level"], "INFO", "{}", matching[0]);
    }

    // No secret anywhere in anything the gateway wrote, at any level, on either stream.
    let log = format!("{}\n{}", stdout.text(), stderr.text());
    let signature = token.rsplit('.').next().unwrap();
    for secret in [
        token.as_str(),
        signature,
        JWT_SECRET,
        COOKIE,
        AUTH_CODE,
        CODE,
        STATE,
        REMOTE_USER,
        ACCESS_TOKEN,
        PASSWORD,
        CLIENT_SECRET,
        BAD_BEARER,
    ] {
        assert!(!log.contains(secret), "the log holds {secret:?}:\n{log}");
    }
    // The filter was really at debug: the net above was cast wide.
    assert!(
        log.lines().any(|line| line.contains("\"level\":\"DEBUG\"")),
        "no debug event was logged:\n{log}"
    );
}

/// `(path, request id)` of each text access line among `lines`; panics on a line of
/// another shape.
fn text_access_lines(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .map(|line| {
            // 2026-12-06T07:38:11.071591Z  INFO fluxlit::access: request method=GET path=...
            let (timestamp, rest) = line.split_once("  ").unwrap_or_else(|| panic!("{line}"));
            assert!(
                timestamp.len() == 27
                    && timestamp.ends_with('Z')
                    && timestamp.as_bytes()[10] == b'T',
                "{line}"
            );
            let fields = rest
                .strip_prefix("INFO fluxlit::access: request method=GET path=")
                .unwrap_or_else(|| panic!("{line}"));
            let (path, rest) = fields.split_once(' ').unwrap_or_else(|| panic!("{line}"));
            let rest = rest
                .strip_prefix("route=app status=200 duration_ms=")
                .unwrap_or_else(|| panic!("{line}"));
            let (_, rest) = rest
                .split_once(" bytes=")
                .unwrap_or_else(|| panic!("{line}"));
            let (_, rest) = rest
                .split_once(" request_id=\"")
                .unwrap_or_else(|| panic!("{line}"));
            let (request_id, peer) = rest
                .split_once("\" peer=")
                .unwrap_or_else(|| panic!("{line}"));
            assert!(peer.starts_with("127.0.0.1:"), "{line}");
            (path.to_owned(), request_id.to_owned())
        })
        .collect()
}

/// Sends `count` GETs of `/n/<i>` over keep-alive connections, `connections` at a time;
/// returns `(path, request id)` of each.
async fn keep_alive_gets(
    addr: std::net::SocketAddr,
    connections: usize,
    count: usize,
) -> Vec<(String, String)> {
    let tasks: Vec<_> = (0..connections)
        .map(|connection| {
            tokio::spawn(async move {
                // One client per task, one connection per client (kept alive).
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .unwrap();
                let mut sent = Vec::new();
                for i in (connection..count).step_by(connections) {
                    let path = format!("/n/{i}");
                    let reply = client
                        .get(format!("http://{addr}{path}"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(reply.status(), 200);
                    let request_id = reply.headers()["x-request-id"].to_str().unwrap().to_owned();
                    reply.bytes().await.unwrap();
                    sent.push((path, request_id));
                }
                sent
            })
        })
        .collect();
    let mut sent = Vec::new();
    for task in tasks {
        sent.extend(within("keep-alive requests", task).await.unwrap());
    }
    sent.sort();
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_gateway_writes_every_access_line_before_it_exits() {
    const REQUESTS: usize = 300;
    let app = spawn_recording_upstream("app").await;
    let config = ConfigText::new()
        .table("[log]", "format = \"pretty\"")
        .route_to("app", "/", app);
    let (dir, _) = config_dir(config.text(), &[]);
    // Two workers: two threads, two buffers.
    let mut gateway = Serve::start(dir.path(), &["--workers", "2"]).await;

    let sent = keep_alive_gets(gateway.addr, 4, REQUESTS).await;
    // At once: the lines are still in the buffers (nothing is written before 64 KiB or
    // the next tick of the writer), and must be written on the way out.
    gateway.terminate();
    let status = gateway.wait_for_exit().await;
    assert!(status.success(), "{status}\n{}", gateway.stderr.text());

    let mut logged = text_access_lines(&gateway.stdout.lines());
    logged.sort();
    assert_eq!(logged.len(), REQUESTS, "{}", gateway.stdout.text());
    assert_eq!(logged, sent, "exactly one line per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_the_access_log_file_after_a_rotation_renamed_it() {
    let app = spawn_recording_upstream("app").await;
    let config = ConfigText::new()
        .table(
            "[log]",
            "format = \"json\"\naccess_log_path = \"logs/access.log\"",
        )
        .route_to("app", "/", app);
    let (dir, _) = config_dir(config.text(), &[]);
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let mut gateway = Serve::start(dir.path(), &[]).await;
    let read_ids = |name: &str| -> Vec<String> {
        let text = std::fs::read_to_string(logs.join(name)).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let events = json_access_events(&lines);
        assert_eq!(
            events.len(),
            lines.len(),
            "only access lines in {name}:\n{text}"
        );
        let mut ids: Vec<String> = events
            .iter()
            .map(|event| event["fields"]["request_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };

    let before: Vec<(String, String)> = keep_alive_gets(gateway.addr, 1, 5).await;
    // logrotate without copytruncate: rename, then signal. The lines of `before` may
    // still be buffered; they belong in the renamed file.
    std::fs::rename(logs.join("access.log"), logs.join("access.log.1")).unwrap();
    gateway.signal("USR1");
    gateway
        .stderr
        .wait_for("the reopen", |line| line.contains("access log reopened"))
        .await;
    assert!(logs.join("access.log").exists(), "a new file at the path");
    let after = keep_alive_gets(gateway.addr, 1, 3).await;
    gateway.terminate();
    let status = gateway.wait_for_exit().await;
    assert!(status.success(), "{status}\n{}", gateway.stderr.text());

    let ids = |sent: &[(String, String)]| {
        let mut ids: Vec<String> = sent.iter().map(|(_, id)| id.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(read_ids("access.log.1"), ids(&before), "the renamed file");
    assert_eq!(read_ids("access.log"), ids(&after), "the file at the path");
    assert!(
        access_events(&gateway.stdout).is_empty(),
        "nothing on stdout:\n{}",
        gateway.stdout.text()
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(logs.join("access.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o640,
        "no one else reads which clients asked for what"
    );
}

#[tokio::test]
async fn the_log_filter_still_turns_the_access_log_off() {
    let app = spawn_recording_upstream("app").await;
    let config = ConfigText::new()
        .table("[log]", "format = \"json\"")
        .route_to("app", "/", app);
    let (dir, _) = config_dir(config.text(), &[]);
    for (filter, lines) in [("info", 2), ("info,fluxlit::access=off", 0)] {
        let mut gateway = Serve::start(dir.path(), &["--log", filter]).await;
        keep_alive_gets(gateway.addr, 1, 2).await;
        gateway.terminate();
        assert!(gateway.wait_for_exit().await.success());
        assert_eq!(
            access_events(&gateway.stdout).len(),
            lines,
            "--log {filter}:\n{}",
            gateway.stdout.text()
        );
    }
}

#[test]
fn an_access_log_file_that_cannot_be_opened_stops_the_start() {
    let output = cli::run_on(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[log]\naccess_log_path = \"missing/access.log\"\n",
        &["serve"],
        &[],
    );
    let stderr = cli::stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("fluxlit: cannot start the access log: log.access_log_path: cannot open ")
            && stderr.contains("missing/access.log for appending: No such file or directory"),
        "{stderr}"
    );
}

#[test]
fn an_empty_or_directory_access_log_path_is_a_validation_error() {
    for (path, says) in [
        ("", "log.access_log_path: is empty"),
        ("logs/", "log.access_log_path: \"logs/\" names a directory"),
    ] {
        let output = cli::run_on(
            &format!("[log]\naccess_log_path = \"{path}\"\n"),
            &["validate"],
            &[],
        );
        let stderr = cli::stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("fluxlit.toml:2:19: error: {says}")),
            "{stderr}"
        );
    }
}

#[test]
fn an_invalid_log_level_is_a_validation_error() {
    let output = cli::run_on("[log]\nlevel = \"info,fluxlit=loud\"\n", &["validate"], &[]);
    let stderr = cli::stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "fluxlit.toml:2:9: error: log.level: \"info,fluxlit=loud\" is not a log filter"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_reload_applies_access_log_and_refuses_the_static_log_keys() {
    let app = spawn_recording_upstream("app").await;
    let routes = ConfigText::new().route_to("app", "/", app);
    let gateway = TestGateway::start(&format!(
        "[log]\nformat = \"pretty\"\nlevel = \"info\"\n\n{routes}"
    ))
    .await;
    assert!(gateway.gateway.snapshot().config.log.access_log);

    let changed = format!(
        "[log]\nformat = \"json\"\nlevel = \"debug\"\naccess_log = false\n\
         access_log_path = \"access.log\"\n\n{routes}"
    );
    write_by_rename(&gateway.config_path, &gateway.pin_listen(&changed));
    gateway.wait_for_generation(2).await;

    let log = gateway.gateway.snapshot().config.log.clone();
    assert!(!log.access_log, "access_log applies on reload");
    assert_eq!(log.level, "info", "log.level keeps its running value");
    assert_eq!(log.format, fluxlit::config::model::LogFormat::Pretty);
    assert_eq!(
        log.access_log_path, None,
        "log.access_log_path keeps its running value"
    );
    let refused = gateway.gateway.reloader().status().refused_static_keys;
    assert_eq!(
        refused,
        vec![
            "log.format (running pretty, file says json)".to_owned(),
            "log.level (running \"info\", file says \"debug\")".to_owned(),
            "log.access_log_path (running stdout, file says \"access.log\")".to_owned(),
        ]
    );
}

/// The log events about client headers dropped for being on no list.
fn dropped_header_events(stderr: &Lines) -> Vec<Value> {
    stderr
        .lines()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| {
            event["fields"]["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("client header dropped"))
        })
        .collect()
}

/// The `header` of each event of `route`, in order.
fn dropped_on(events: &[Value], route: &str) -> Vec<String> {
    events
        .iter()
        .filter(|event| event["fields"]["route"] == route)
        .map(|event| event["fields"]["header"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_client_header_is_logged_once_per_route_and_name_until_a_reload() {
    const API_KEY: &str = "API-KEY-SECRET-10";
    let app = spawn_recording_upstream("app").await;
    let config = ConfigText::new()
        .table("[log]", "format = \"json\"\naccess_log = false")
        .upstream("app", app)
        .route("app", "/app", "app")
        .route("other", "/other", "app");
    let (dir, config_path) = config_dir(config.text(), &[]);
    let gateway = Serve::start(dir.path(), &[]).await;
    let (stderr, addr) = (&gateway.stderr, gateway.addr);

    let key = [("x-api-key", API_KEY)];
    for path in ["/app/a", "/app/b", "/app/c", "/other/a"] {
        let reply = within("request", send(addr, get(addr, path, &key))).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.upstream_header("x-api-key"), Vec::<String>::new());
    }
    // Made-up names are logged up to a cap per route, and the cap is said once.
    let made_up: Vec<(String, &str)> = (0..40).map(|i| (format!("x-made-up-{i}"), "1")).collect();
    let made_up: Vec<(&str, &str)> = made_up.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let reply = within("made-up names", send(addr, get(addr, "/app/d", &made_up))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    stderr
        .wait_for("the cap line", |line| {
            line.contains("further ones are only counted")
        })
        .await;

    let events = dropped_header_events(stderr);
    let expected: Vec<String> = ["x-api-key".to_owned()]
        .into_iter()
        .chain((0..16).map(|i| format!("x-made-up-{i}")))
        .collect();
    assert_eq!(dropped_on(&events, "app"), expected, "{}", stderr.text());
    assert_eq!(dropped_on(&events, "other"), ["x-api-key"]);
    for event in &events {
        assert_eq!(event["level"], "INFO", "{event}");
        let message = event["fields"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("forward_client_headers"), "{event}");
    }
    assert!(
        !stderr.text().contains(API_KEY),
        "a header's value is never logged:\n{}",
        stderr.text()
    );

    // A reload starts afresh: the names are logged again.
    let reloaded = format!(
        "{config}\n[[routes]]\nname = \"more\"\npath_prefix = \"/more\"\nupstream = \"app\"\n"
    );
    write_by_rename(&config_path, &with_ephemeral_listen(&reloaded));
    stderr
        .wait_for("the reload", |line| line.contains("config reloaded"))
        .await;
    let reply = within("after the reload", send(addr, get(addr, "/app/e", &key))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while dropped_on(&dropped_header_events(stderr), "app").len() < 18 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "x-api-key not logged again after the reload:\n{}",
            stderr.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = dropped_on(&dropped_header_events(stderr), "app");
    assert_eq!(
        again.last().map(String::as_str),
        Some("x-api-key"),
        "{again:?}"
    );
}
