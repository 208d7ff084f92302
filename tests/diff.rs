//! `fluxlit diff` as a reviewer or a CI job runs it: two files, or a file and a running
//! gateway's admin listener. Exit 0: no changes; 3: changes; 1: an error.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::path::Path;
use std::process::Output;

use common::{ConfigText, TestGateway, cli};

const OLD: &str = r#"[server]
listen = "127.0.0.1:8080"
public_base_url = "https://apps.example.com"

[upstreams.api]
url = "http://127.0.0.1:8000"

[upstreams.ui]
url = "http://127.0.0.1:8501"

[[routes]]
name = "api"
path_prefix = "/api"
upstream = "api"

[[routes]]
name = "ui"
path_prefix = "/"
upstream = "ui"

[auth.providers.main]
kind = "jwt"
issuer = "https://example.internal"
audience = "example-api"
algorithms = ["HS256"]
hs256_secret = { env = "JWT_HS256_SECRET" }

[auth.providers.corp]
kind = "oidc"
issuer_url = "https://idp.example"
client_id = "fluxlit"
client_secret = { env = "OIDC_CLIENT_SECRET" }
scopes = ["openid"]
mint = "main"
store = { env = "FLUXLIT_REDIS_URL" }
session_key = { env = "FLUXLIT_SESSION_KEY" }
"#;

/// Runs `fluxlit diff --config new.toml ARGS` in `dir`.
fn fluxlit_diff(dir: &Path, args: &[&str]) -> Output {
    cli::command(dir)
        .args(["diff", "--config", "new.toml"])
        .args(args)
        .output()
        .expect("run fluxlit")
}

/// `fluxlit diff --config new.toml --against old.toml` on the two texts.
fn diff_files(old: &str, new: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("old.toml"), old).expect("write old");
    std::fs::write(dir.path().join("new.toml"), new).expect("write new");
    let output = fluxlit_diff(dir.path(), &["--against", "old.toml"]);
    (
        output.status.code(),
        cli::stdout(&output),
        cli::stderr(&output),
    )
}

fn assert_changes(old: &str, new: &str, expected: &[&str]) {
    let (code, stdout, stderr) = diff_files(old, new);
    assert_eq!(code, Some(3), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, expected, "stderr:\n{stderr}");
}

#[test]
fn identical_configs_print_no_changes_and_exit_0() {
    // Formatting and comments are no change.
    let new = format!("# reformatted\n{}", OLD.replace("\n\n", "\n\n\n"));
    let (code, stdout, stderr) = diff_files(OLD, &new);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "no changes\n");
}

#[test]
fn a_changed_route_names_its_changed_keys() {
    let new = OLD.replace(
        "path_prefix = \"/api\"\nupstream = \"api\"",
        "path_prefix = \"/api\"\nupstream = \"ui\"\nauth = \"main\"\nstrip_prefix = true",
    );
    assert_changes(
        OLD,
        &new,
        &["route `api`: auth none → main; strip_prefix false → true; upstream api → ui"],
    );
}

#[test]
fn added_and_removed_routes_and_upstreams_are_listed() {
    let new = OLD
        .replace(
            "[[routes]]\nname = \"ui\"\npath_prefix = \"/\"\nupstream = \"ui\"\n",
            "[[routes]]\nname = \"docs\"\npath_prefix = \"/docs\"\nupstream = \"docs\"\nauth = \"main\"\n",
        )
        .replace(
            "[upstreams.ui]\nurl = \"http://127.0.0.1:8501\"",
            "[upstreams.docs]\nurl = \"http://127.0.0.1:9000\"",
        );
    assert_changes(
        OLD,
        &new,
        &[
            "upstream `docs` added: http://127.0.0.1:9000",
            "upstream `ui` removed",
            "route `docs` added: /docs → upstream docs, auth main",
            "route `ui` removed",
        ],
    );
}

#[test]
fn a_changed_upstream_url_and_timeout_are_shown() {
    let new = OLD.replace(
        "url = \"http://127.0.0.1:8000\"",
        "url = \"http://10.0.0.5:8000/v2\"\ntimeout = \"5s\"",
    );
    assert_changes(
        OLD,
        &new,
        &["upstream `api`: timeout 1m → 5s; url http://127.0.0.1:8000 → http://10.0.0.5:8000/v2"],
    );
}

#[test]
fn a_changed_provider_shows_references_never_secret_values() {
    let new = OLD
        .replace("scopes = [\"openid\"]", "scopes = [\"openid\", \"email\"]")
        .replace("\"OIDC_CLIENT_SECRET\"", "\"OIDC_CLIENT_SECRET_V2\"");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("old.toml"), OLD).expect("write old");
    std::fs::write(dir.path().join("new.toml"), &new).expect("write new");
    // The secrets exist in the environment: their values must never be printed.
    let output = cli::run(
        &["diff", "--config", "new.toml", "--against", "old.toml"],
        dir.path(),
        &[
            ("OIDC_CLIENT_SECRET", "old-secret-value"),
            ("OIDC_CLIENT_SECRET_V2", "new-secret-value"),
            ("FLUXLIT_REDIS_URL", "redis://:hunter2@127.0.0.1:6379/0"),
        ],
    );
    let stdout = cli::stdout(&output);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "provider `corp`: client_secret.env OIDC_CLIENT_SECRET → OIDC_CLIENT_SECRET_V2; \
             scopes [openid] → [openid, email]"
        ]
    );
    for secret in ["old-secret-value", "new-secret-value", "hunter2"] {
        assert!(!stdout.contains(secret), "{stdout}");
    }
}

#[test]
fn a_changed_static_key_would_be_refused() {
    let new = OLD.replace("127.0.0.1:8080", "127.0.0.1:9090")
        + "\n[admin]\nlisten = \"127.0.0.1:9901\"\n";
    assert_changes(
        OLD,
        &new,
        &[
            "admin.listen none → 127.0.0.1:9901 would be refused: static, needs a restart",
            "server.listen 127.0.0.1:8080 → 127.0.0.1:9090 would be refused: static, needs a restart",
        ],
    );
}

#[test]
fn security_header_overrides_are_shown_per_route() {
    let new = OLD.replace(
        "path_prefix = \"/\"\nupstream = \"ui\"",
        "path_prefix = \"/\"\nupstream = \"ui\"\nsecurity_headers = { permissions_policy = \"camera=(self)\" }",
    );
    assert_changes(
        OLD,
        &new,
        &["route `ui`: security_headers.permissions_policy none → camera=(self)"],
    );
}

#[test]
fn an_invalid_new_config_prints_its_errors_like_validate_and_exits_1() {
    let new = OLD.replace("upstream = \"ui\"", "upstream = \"uii\"");
    let (code, stdout, stderr) = diff_files(OLD, &new);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stderr.contains("new.toml:19:12: error: routes[1].upstream: unknown upstream \"uii\""),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean \"ui\"?"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
}

#[test]
fn a_missing_old_config_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("new.toml"), OLD).expect("write new");
    let output = fluxlit_diff(dir.path(), &["--against", "gone.toml"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(cli::stderr(&output).contains("cannot read config file gone.toml"));
}

/// The running gateway's effective config, not its file, is what `--admin` compares
/// with: a refused static key stays "would be refused" against it.
#[tokio::test]
async fn admin_compares_with_the_config_a_running_gateway_serves() {
    let config = ConfigText::new()
        .server("listen = \"127.0.0.1:0\"")
        .admin()
        .echo_upstream("ui")
        .route("ui", "/", "ui");
    let gateway = TestGateway::start(&config).await;
    let admin = gateway.admin();
    let config = config.text();
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |new: String| {
        let dir = dir.path().to_owned();
        let admin = format!("http://{admin}");
        async move {
            std::fs::write(dir.join("new.toml"), new).expect("write new");
            tokio::task::spawn_blocking(move || fluxlit_diff(&dir, &["--admin", &admin]))
                .await
                .expect("join")
        }
    };

    let same = run(config.to_owned()).await;
    assert_eq!(same.status.code(), Some(0), "{}", cli::stderr(&same));
    assert_eq!(cli::stdout(&same), "no changes\n");

    let changed = run(config.replace(
        "[[routes]]\nname = \"ui\"",
        "[[routes]]\nname = \"ui\"\nstrip_prefix = true",
    ))
    .await;
    assert_eq!(changed.status.code(), Some(3), "{}", cli::stderr(&changed));
    assert_eq!(
        cli::stdout(&changed),
        "route `ui`: strip_prefix false → true\n"
    );

    // Nothing listens there: an error, not "no changes".
    std::fs::write(dir.path().join("new.toml"), config).expect("write new");
    let dir_path = dir.path().to_owned();
    let unreachable = tokio::task::spawn_blocking(move || {
        fluxlit_diff(&dir_path, &["--admin", "http://127.0.0.1:1"])
    })
    .await
    .expect("join");
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(
        cli::stderr(&unreachable).contains("cannot reach the admin listener"),
        "{}",
        cli::stderr(&unreachable)
    );
}

#[test]
fn neither_against_nor_admin_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("new.toml"), OLD).expect("write new");
    let output = fluxlit_diff(dir.path(), &[]);
    assert!(!output.status.success());
    assert_ne!(output.status.code(), Some(3));
    assert!(cli::stderr(&output).contains("--against"));
}
