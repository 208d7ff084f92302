//! The access log of the real binary, in JSON: one event per request with the fields an
//! operator needs, and no trace of a credential the request carried (bearer token,
//! cookie, login codes in the query, a forward-auth identity).

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Hang guard for every wait; never a statement about speed.
const HANG_GUARD: Duration = Duration::from_secs(10);

/// Everything the gateway wrote to stderr, line by line, collected by a thread.
#[derive(Clone, Default)]
struct Stderr(Arc<Mutex<Vec<String>>>);

impl Stderr {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// Waits for a line satisfying `found`, and returns it.
    fn wait_for(&self, what: &str, found: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + HANG_GUARD;
        loop {
            if let Some(line) = self.lines().into_iter().find(|line| found(line)) {
                return line;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never logged: {what}\nstderr:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The access events, parsed.
    fn access_events(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event["target"] == "fluxlit::access")
            .collect()
    }
}

/// The gateway, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path) -> (Running, Stderr, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fluxlit"))
        .args(["serve", "--config", "fluxlit.toml"])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("FLUXLIT_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Stderr::default();
    let pipe = child.stderr.take().unwrap();
    let lines = stderr.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            lines.0.lock().unwrap().push(line);
        }
    });
    let running = Running(child);
    let serving = stderr.wait_for("the serving line", |line| {
        line.starts_with("fluxlit: serving http://")
    });
    let addr = serving
        .trim_start_matches("fluxlit: serving http://")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (running, stderr, addr)
}

fn mint_token(dir: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_fluxlit"))
        .args(["token", "issue", "--provider", "main", "--sub", "ada"])
        .current_dir(dir)
        .env_remove("FLUXLIT_CONFIG")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
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
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hs.secret"), JWT_SECRET).unwrap();
    std::fs::write(
        dir.path().join("fluxlit.toml"),
        format!(
            r#"
[server]
listen = "127.0.0.1:0"

[log]
format = "json"
# Debug events too: nothing the gateway logs at any of these levels may hold a secret.
level = "debug"

[trust]
proxies = ["127.0.0.1/32"]

[upstreams.app]
url = "http://{app}"

[[routes]]
name = "api"
path_prefix = "/api"
upstream = "app"
auth = "main"

[[routes]]
name = "sso"
path_prefix = "/sso"
upstream = "app"
auth = "proxy"

[[routes]]
name = "ui"
path_prefix = "/"
upstream = "app"

[auth.providers.main]
kind = "jwt"
issuer = "https://issuer.test"
audience = "fluxlit-test"
algorithms = ["HS256"]
hs256_secret = {{ file = "hs.secret" }}

[auth.providers.proxy]
kind = "trusted_proxy_user"
"#
        ),
    )
    .unwrap();
    let token = mint_token(dir.path());
    let (_running, stderr, addr) = start(dir.path());

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
        let reply = tokio::time::timeout(HANG_GUARD, send(addr, get(addr, path, headers)))
            .await
            .expect("hang guard: request");
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

    let deadline = std::time::Instant::now() + HANG_GUARD;
    while stderr.access_events().len() < sent.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} access events for {} requests:\n{}",
            stderr.access_events().len(),
            sent.len(),
            stderr.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let events = stderr.access_events();
    assert_eq!(
        events.len(),
        sent.len(),
        "one event per request:\n{}",
        stderr.text()
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

    // No secret anywhere in anything the gateway wrote, at any level.
    let log = stderr.text();
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

#[test]
fn an_invalid_log_level_is_a_validation_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fluxlit.toml"),
        "[log]\nlevel = \"info,fluxlit=loud\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_fluxlit"))
        .args(["validate"])
        .current_dir(dir.path())
        .env_remove("FLUXLIT_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
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
    let routes = format!(
        "[upstreams.app]\nurl = \"http://{app}\"\n\n\
         [[routes]]\nname = \"app\"\npath_prefix = \"/\"\nupstream = \"app\"\n"
    );
    let gateway = TestGateway::start(&format!(
        "[log]\nformat = \"pretty\"\nlevel = \"info\"\n\n{routes}"
    ))
    .await;
    assert!(gateway.gateway.snapshot().config.log.access_log);

    let changed =
        format!("[log]\nformat = \"json\"\nlevel = \"debug\"\naccess_log = false\n\n{routes}");
    write_by_rename(&gateway.config_path, &gateway.pin_listen(&changed));
    gateway.wait_for_generation(2).await;

    let log = gateway.gateway.snapshot().config.log.clone();
    assert!(!log.access_log, "access_log applies on reload");
    assert_eq!(log.level, "info", "log.level keeps its running value");
    assert_eq!(log.format, fluxlit::config::model::LogFormat::Pretty);
    let refused = gateway.gateway.reloader().status().refused_static_keys;
    assert_eq!(
        refused,
        vec![
            "log.format (running pretty, file says json)".to_owned(),
            "log.level (running \"info\", file says \"debug\")".to_owned(),
        ]
    );
}
