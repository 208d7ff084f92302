//! `fluxlit doctor` as a user runs it: the real binary on configs in a temporary
//! directory, secrets passed in the child's environment, and for the network checks
//! real listeners (small axum upstreams and identity providers, the machine's Redis at
//! 127.0.0.1:6379) and ports that were just closed.
//!
//! Each check has a config that triggers it and one that does not; the exit codes are
//! 0 (clean, or warnings without --strict), 1 (errors) and 2 (warnings with --strict).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use common::auth::{HS_SECRET, RSA_A_JWK, discovery_document};
use common::config::api_and_ui;
use common::{ConfigText, cli, closed_port};
use serde_json::{Value, json};

const MINT_SECRET: &str = "FLUXLIT_DOCTOR_TEST_MINT_SECRET";
const CLIENT_SECRET: &str = "FLUXLIT_DOCTOR_TEST_CLIENT_SECRET";
const REDIS_URL: &str = "FLUXLIT_DOCTOR_TEST_REDIS_URL";
/// The login cookie's key, which a Redis store needs.
const SESSION_KEY: &str = "FLUXLIT_DOCTOR_TEST_SESSION_KEY";
/// The provider line that reads it.
const WITH_SESSION_KEY: &str = "session_key = { env = \"FLUXLIT_DOCTOR_TEST_SESSION_KEY\" }";
const EXCHANGE_SECRET: &str = "FLUXLIT_DOCTOR_TEST_EXCHANGE_SECRET";
/// 44 bytes: long enough for HS256.
const GOOD_SECRET: &str = HS_SECRET;

/// The smallest clean config: one route to the built-in echo upstream.
const ECHO: &str = r#"
[upstreams.ui]
builtin = "echo"

[[routes]]
name = "ui"
path_prefix = "/"
upstream = "ui"
"#;

struct Run {
    output: Output,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    fn stdout(&self) -> String {
        cli::stdout(&self.output)
    }

    fn stderr(&self) -> String {
        cli::stderr(&self.output)
    }

    fn json(&self) -> Value {
        cli::stdout_json(&self.output)
    }

    fn findings(&self) -> Vec<Value> {
        self.json()["findings"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The findings with `id`.
    fn with_id(&self, id: &str) -> Vec<Value> {
        self.findings()
            .into_iter()
            .filter(|f| f["id"] == id)
            .collect()
    }

    /// The one finding with `id`; fails unless there is exactly one.
    fn only(&self, id: &str) -> Value {
        let mut found = self.with_id(id);
        assert_eq!(
            found.len(),
            1,
            "{id}: expected one finding in:\n{:#}",
            self.json()
        );
        found.remove(0)
    }
}

/// Runs `fluxlit <args>` in a fresh directory holding `config` as fluxlit.toml, with
/// `env` added to the child's environment.
fn fluxlit(config: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    Run {
        output: cli::run_on(config, args, env),
    }
}

/// [`fluxlit`] in `dir`, which may hold files the config names.
fn fluxlit_in(dir: &Path, config: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    std::fs::write(dir.join("fluxlit.toml"), config).unwrap();
    Run {
        output: cli::run(args, dir, env),
    }
}

/// `doctor --offline --format json`.
fn offline(config: &str, env: &[(&str, &str)]) -> Run {
    fluxlit(config, &["doctor", "--offline", "--format", "json"], env)
}

/// `doctor --format json` with the network, run off the test's runtime so the
/// upstreams it serves keep answering.
async fn online(config: String, env: Vec<(&'static str, String)>) -> Run {
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        fluxlit(&config, &["doctor", "--format", "json"], &env)
    })
    .await
    .unwrap()
}

/// A jwt provider `main` (secret from MINT_SECRET) and an oidc provider `corp` minting
/// with it, with `extra` keys for `corp`.
/// Behind an ingress in 10.0.0.0/8 that terminates TLS (and is trusted, as it must be
/// for the login limit to tell clients apart).
fn oidc_config(issuer_url: &str, extra: &str) -> String {
    ConfigText::new()
        .table("[trust]", "proxies = [\"10.0.0.0/8\"]")
        .server("public_base_url = \"https://apps.example.com\"")
        .echo_upstream("ui")
        .guarded_route("ui", "/", "ui", "main")
        .jwt("main", "https://gateway.example.com", "app", "[\"HS256\"]")
        .with(&format!("hs256_secret = {{ env = \"{MINT_SECRET}\" }}"))
        .oidc(
            "corp",
            issuer_url,
            "fluxlit",
            &format!("{{ env = \"{CLIENT_SECRET}\" }}"),
            "main",
        )
        .with(extra)
        .into()
}

fn oidc_env() -> Vec<(&'static str, &'static str)> {
    vec![
        (MINT_SECRET, GOOD_SECRET),
        (CLIENT_SECRET, "client secret"),
        (SESSION_KEY, GOOD_SECRET),
    ]
}

/// [`oidc_env`] and a good exchange secret.
fn exchange_env() -> Vec<(&'static str, &'static str)> {
    let mut env = oidc_env();
    env.push((EXCHANGE_SECRET, GOOD_SECRET));
    env
}

/// An [`oidc_config`] behind a proxy on this host instead: `trust.proxies` is loopback,
/// as the default `exchange_from` is.
fn behind_loopback_proxy(config: String) -> String {
    let ingress = "proxies = [\"10.0.0.0/8\"]";
    assert!(config.contains(ingress), "an oidc_config: {config}");
    config.replace(ingress, "proxies = [\"127.0.0.1/32\", \"::1\"]")
}

/// `env` to hand to [`online`].
fn owned(env: Vec<(&'static str, &'static str)>) -> Vec<(&'static str, String)> {
    env.into_iter().map(|(k, v)| (k, v.to_owned())).collect()
}

/// A jwt provider `main` with `leeway`, its secret from MINT_SECRET.
fn jwt_config(leeway: &str) -> String {
    with_jwt(ConfigText::new().with(ECHO), leeway)
}

/// `config` and a jwt provider `main` with `leeway`, its secret from MINT_SECRET.
fn with_jwt(config: ConfigText, leeway: &str) -> String {
    config
        .jwt("main", "https://gateway.example.com", "app", "[\"HS256\"]")
        .with(&format!(
            "hs256_secret = {{ env = \"{MINT_SECRET}\" }}\nleeway = \"{leeway}\""
        ))
        .into()
}

/// One check: the config that triggers it and the one that does not.
struct Case {
    id: &'static str,
    severity: &'static str,
    key: &'static str,
    triggers: String,
    clean: String,
    env: Vec<(&'static str, &'static str)>,
}

impl Case {
    /// Check `id`, reporting a finding of `severity` at `key`.
    fn new(id: &'static str, severity: &'static str, key: &'static str) -> Self {
        Self {
            id,
            severity,
            key,
            triggers: String::new(),
            clean: String::new(),
            env: Vec::new(),
        }
    }

    /// The config that triggers it.
    fn fires_on(mut self, config: impl Into<String>) -> Self {
        self.triggers = config.into();
        self
    }

    /// The config that does not.
    fn not_on(mut self, config: impl Into<String>) -> Self {
        self.clean = config.into();
        self
    }

    /// The environment both configs are checked in.
    fn env(mut self, env: Vec<(&'static str, &'static str)>) -> Self {
        self.env = env;
        self
    }
}

/// `public_base_url` with the path `/app`, and `routes` as `(name, path_prefix)` to the
/// echo upstream `ui`.
fn under_app(routes: &[(&str, &str)]) -> String {
    let mut config = ConfigText::new()
        .server("public_base_url = \"https://apps.example.com/app\"")
        .echo_upstream("ui");
    for (name, prefix) in routes {
        config = config.route(name, prefix, "ui");
    }
    config.into()
}

fn static_cases() -> Vec<Case> {
    let secret_env = vec![(MINT_SECRET, GOOD_SECRET)];
    vec![
        Case::new(
            "forward_client_headers",
            "warning",
            "routes[0].forward_client_headers[0]",
        )
        .fires_on(format!("{ECHO}forward_client_headers = [\"cookie\"]\n"))
        .not_on(format!("{ECHO}forward_client_headers = [\"x-tenant\"]\n")),
        Case::new("public_base_url_path", "warning", "routes[1].path_prefix")
            .fires_on(under_app(&[("ui", "/app"), ("api", "/api")]))
            .not_on(under_app(&[("ui", "/app"), ("api", "/app/api")])),
        Case::new("trust_all_proxies", "error", "trust.proxies[1]")
            .fires_on(format!(
                "[trust]\nproxies = [\"10.0.0.0/8\", \"::/0\"]\n{ECHO}"
            ))
            .not_on(format!(
                "[trust]\nproxies = [\"10.0.0.0/8\", \"::1\"]\n{ECHO}"
            )),
        Case::new("trust_public_proxies", "warning", "trust.proxies[0]")
            .fires_on(format!("[trust]\nproxies = [\"203.0.113.0/24\"]\n{ECHO}"))
            .not_on(format!("[trust]\nproxies = [\"192.168.0.0/16\"]\n{ECHO}")),
        Case::new("plain_http_upstream", "warning", "upstreams.ui.url")
            .fires_on(ECHO.replace("builtin = \"echo\"", "url = \"http://203.0.113.7:8501\""))
            .not_on(ECHO.replace("builtin = \"echo\"", "url = \"http://10.1.2.3:8501\"")),
        Case::new("admin_not_loopback", "warning", "admin.listen")
            .fires_on(format!("[admin]\nlisten = \"0.0.0.0:9901\"\n{ECHO}"))
            .not_on(format!("[admin]\nlisten = \"127.0.0.1:9901\"\n{ECHO}")),
        Case::new("security_headers_off", "warning", "server.security_headers")
            .fires_on(format!("[server]\nsecurity_headers = false\n{ECHO}"))
            .not_on(format!("[server]\nsecurity_headers = true\n{ECHO}")),
        Case::new(
            "security_headers_off",
            "warning",
            "routes[0].security_headers",
        )
        .fires_on(format!("{ECHO}security_headers = false\n"))
        .not_on(format!(
            "{ECHO}security_headers = {{ referrer_policy = \"no-referrer\" }}\n"
        )),
        Case::new("long_leeway", "warning", "auth.providers.main.leeway")
            .fires_on(jwt_config("90s"))
            .not_on(jwt_config("30s"))
            .env(secret_env.clone()),
        Case::new(
            "long_access_token_ttl",
            "warning",
            "auth.providers.corp.access_token_ttl",
        )
        .fires_on(oidc_config(
            "https://idp.example.com",
            "access_token_ttl = \"2h\"",
        ))
        .not_on(oidc_config(
            "https://idp.example.com",
            "access_token_ttl = \"1h\"",
        ))
        .env(oidc_env()),
        Case::new("memory_store", "info", "auth.providers.corp.store")
            .fires_on(oidc_config("https://idp.example.com", "store = \"memory\""))
            .not_on(oidc_config(
                "https://idp.example.com",
                &format!("store = \"redis://127.0.0.1:6379/0\"\n{WITH_SESSION_KEY}"),
            ))
            .env(oidc_env()),
        Case::new(
            "exchange_reachable_by_browsers",
            "warning",
            "auth.providers.corp.exchange_from",
        )
        .fires_on(behind_loopback_proxy(oidc_config(
            "https://idp.example.com",
            "",
        )))
        .not_on(behind_loopback_proxy(oidc_config(
            "https://idp.example.com",
            &format!("exchange_secret = {{ env = \"{EXCHANGE_SECRET}\" }}"),
        )))
        .env(exchange_env()),
        Case::new(
            "exchange_reachable_by_browsers",
            "warning",
            "auth.providers.corp.exchange_from",
        )
        .fires_on(oidc_config(
            "https://idp.example.com",
            "exchange_from = [\"127.0.0.1/32\", \"10.0.0.0/8\"]",
        ))
        .not_on(oidc_config(
            "https://idp.example.com",
            "exchange_from = [\"127.0.0.1/32\", \"::1\"]",
        ))
        .env(exchange_env()),
        Case::new(
            "unverified_id_token",
            "warning",
            "auth.providers.corp.allow_unverified_id_token_for_custom_oidc",
        )
        .fires_on(oidc_config(
            "https://idp.example.com",
            "allow_unverified_id_token_for_custom_oidc = true",
        ))
        .not_on(oidc_config("https://idp.example.com", ""))
        .env(oidc_env()),
        Case::new(
            "forward_auth_header_must_be_stripped",
            "info",
            "auth.providers.sso",
        )
        .fires_on(forward_auth_config("X-Remote-User", ""))
        .not_on(format!("[trust]\nproxies = [\"10.0.0.0/8\"]\n{ECHO}")),
        Case::new("rate_limit_keyed_on_proxy", "warning", "trust.proxies")
            .fires_on(limited_behind("https://apps.example.com", ""))
            .fires_on(limited_behind("http://apps.example.com", ""))
            .not_on(limited_behind(
                "https://apps.example.com",
                "[trust]\nproxies = [\"10.0.0.0/8\"]\n",
            ))
            .not_on(limited_behind("http://localhost:8080", "")),
    ]
}

/// `/` limited to 20 requests a second per client, on loopback, with `public_base_url`
/// `base`; `before` goes first in the file.
fn limited_behind(base: &str, before: &str) -> String {
    format!(
        "{before}[server]\nlisten = \"127.0.0.1:8080\"\npublic_base_url = \"{base}\"\n{ECHO}\
         rate_limit = {{ rate = \"20/s\" }}\n"
    )
}

/// `/` behind forward auth (provider `sso`, with `provider_lines`); 10.0.0.0/8 trusted,
/// `header` the remote-user header.
fn forward_auth_config(header: &str, provider_lines: &str) -> String {
    format!(
        "[trust]\nproxies = [\"10.0.0.0/8\"]\nremote_user_header = \"{header}\"\n{ECHO}\
         auth = \"sso\"\n\n[auth.providers.sso]\nkind = \"trusted_proxy_user\"\n{provider_lines}\n"
    )
}

#[test]
fn forward_auth_gets_the_nginx_line_that_strips_the_header_in_front() {
    let config = forward_auth_config("X-Auth-User", "trusted_peers = [\"10.0.0.5\"]");
    let run = offline(&config, &[]);
    let finding = run.only("forward_auth_header_must_be_stripped");
    assert_says(&finding, "message", "X-Auth-User");
    assert_says(&finding, "message", "10.0.0.5");
    assert_says(&finding, "fix", "proxy_set_header X-Auth-User \"\";");
    assert_says(
        &finding,
        "fix",
        "auth_request_set $fluxlit_user $upstream_http_x_auth_user;",
    );
    // Without trusted_peers the peers are trust.proxies'.
    let run = offline(&forward_auth_config("X-Remote-User", ""), &[]);
    let finding = run.only("forward_auth_header_must_be_stripped");
    assert_says(&finding, "message", "trust.proxies (10.0.0.0/8)");
    // A reminder: --strict does not fail on it.
    let strict = fluxlit(&config, &["doctor", "--offline", "--strict"], &[]);
    assert_eq!(strict.code(), Some(0), "{}", strict.stdout());
}

/// Asserts that `finding`'s `field` (`message` or `fix`) says `text`.
fn assert_says(finding: &Value, field: &str, text: &str) {
    let said = finding[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {finding:#}"));
    assert!(
        said.contains(text),
        "{field} should say {text:?}: {finding:#}"
    );
}

fn assert_case(case: &Case, triggered: &Run, clean: &Run) {
    let finding = &triggered.only(case.id);
    assert_eq!(
        finding["severity"], case.severity,
        "{}: {finding:#}",
        case.id
    );
    assert_eq!(finding["key"], case.key, "{}: {finding:#}", case.id);
    for field in ["message", "fix"] {
        assert!(
            finding[field].as_str().is_some_and(|text| !text.is_empty()),
            "{}: no {field} in {finding:#}",
            case.id
        );
    }
    assert!(
        clean.with_id(case.id).is_empty(),
        "{}: the clean config triggers it:\n{:#}",
        case.id,
        clean.json()
    );
}

#[test]
fn each_static_check_fires_on_its_config_and_not_on_the_clean_one() {
    for case in static_cases() {
        let triggered = offline(&case.triggers, &case.env);
        let clean = offline(&case.clean, &case.env);
        assert_case(&case, &triggered, &clean);
    }
}

#[test]
fn where_validation_warns_too_the_finding_is_reported_once() {
    // Validation warns about a jwt leeway over 300s; the doctor's own check starts at 60s.
    let run = offline(&jwt_config("400s"), &[(MINT_SECRET, GOOD_SECRET)]);
    run.only("long_leeway");
    assert_eq!(run.findings().len(), 1, "{:#}", run.json());
}

#[test]
fn a_clean_config_has_no_findings_and_exits_0_even_when_strict() {
    let run = fluxlit(
        ECHO,
        &["doctor", "--offline", "--strict", "--format", "json"],
        &[],
    );
    assert_eq!(run.code(), Some(0), "{}", run.stdout());
    assert_eq!(run.findings(), Vec::<Value>::new());
    assert_eq!(
        run.json()["summary"],
        json!({"errors": 0, "warnings": 0, "infos": 0, "accepted": 0, "strict": true, "exit_code": 0})
    );
}

#[test]
fn strict_turns_warnings_into_exit_2_and_errors_always_exit_1() {
    let warned = format!("[server]\nsecurity_headers = false\n{ECHO}");
    assert_eq!(
        fluxlit(&warned, &["doctor", "--offline"], &[]).code(),
        Some(0)
    );
    assert_eq!(
        fluxlit(&warned, &["doctor", "--offline", "--strict"], &[]).code(),
        Some(2)
    );

    let infos_only = oidc_config("https://idp.example.com", "");
    let run = fluxlit(
        &infos_only,
        &["doctor", "--offline", "--strict"],
        &oidc_env(),
    );
    assert_eq!(
        run.code(),
        Some(0),
        "an info never fails:\n{}",
        run.stdout()
    );

    let broken = format!("[trust]\nproxies = [\"0.0.0.0/0\"]\n{ECHO}");
    assert_eq!(
        fluxlit(&broken, &["doctor", "--offline"], &[]).code(),
        Some(1)
    );
    assert_eq!(
        fluxlit(&broken, &["doctor", "--offline", "--strict"], &[]).code(),
        Some(1)
    );
}

#[test]
fn text_output_groups_by_severity_with_the_fix_below_and_a_summary() {
    let config =
        format!("[server]\nsecurity_headers = false\n\n[trust]\nproxies = [\"0.0.0.0/0\"]\n{ECHO}");
    let run = fluxlit(&config, &["doctor", "--offline"], &[]);
    assert_eq!(run.code(), Some(1));
    let text = run.stdout();
    let errors = text.find("errors:\n").expect(&text);
    let warnings = text.find("warnings:\n").expect(&text);
    assert!(errors < warnings, "{text}");
    assert!(
        text.contains(
            "  trust_all_proxies trust.proxies[0] (5:12): \"0.0.0.0/0\" trusts every peer"
        ),
        "{text}"
    );
    assert!(
        text.contains("\n      fix: list only the addresses"),
        "{text}"
    );
    assert!(
        text.contains("fluxlit.toml: failed: 1 error(s), 1 warning(s), 0 info"),
        "{text}"
    );
}

#[test]
fn a_config_that_does_not_load_is_reported_like_validate_and_exits_1() {
    let run = fluxlit(
        "[[routes]]\nname = \"ui\"\npath_prefix = \"/\"\nupstream = \"nowhere\"\n",
        &["doctor", "--offline"],
        &[],
    );
    assert_eq!(run.code(), Some(1));
    assert!(
        run.stderr()
            .contains("fluxlit.toml:4:12: error: routes[0].upstream: unknown upstream \"nowhere\""),
        "{}",
        run.stderr()
    );
}

#[test]
fn json_output_is_a_document_also_when_the_config_does_not_load() {
    // Line 3: an unknown key; line 6: an unknown upstream.
    let config = "[server]\nlisten = \"127.0.0.1:8080\"\nlistn = 1\n\n[[routes]]\nname = \"ui\"\npath_prefix = \"/\"\nupstream = \"nowhere\"\n";
    for strict in [false, true] {
        let mut args = vec!["doctor", "--offline", "--format", "json"];
        if strict {
            args.push("--strict");
        }
        let run = fluxlit(config, &args, &[]);
        assert_eq!(run.code(), Some(1), "{}", run.stderr());
        let findings = run.findings();
        assert_eq!(findings.len(), 2, "{:#}", run.json());
        for finding in &findings {
            assert_eq!(finding["id"], "config_invalid", "{finding:#}");
            assert_eq!(finding["severity"], "error", "{finding:#}");
        }
        assert_eq!(findings[0]["key"], "server.listn");
        assert_eq!(findings[0]["location"], json!({"line": 3, "column": 1}));
        assert_says(&findings[0], "message", "unknown key `listn`");
        assert_says(&findings[0], "fix", "did you mean `listen`?");
        assert_eq!(findings[1]["key"], "routes[0].upstream");
        assert_eq!(findings[1]["location"], json!({"line": 8, "column": 12}));
        assert_says(&findings[1], "message", "unknown upstream \"nowhere\"");
        assert_eq!(
            run.json()["summary"],
            json!({"errors": 2, "warnings": 0, "infos": 0, "accepted": 0, "strict": strict, "exit_code": 1})
        );
        // Humans reading the CI log still get validate's lines.
        assert!(
            run.stderr()
                .contains("fluxlit.toml:3:1: error: server.listn"),
            "{}",
            run.stderr()
        );
    }

    // Not TOML at all, and no file: still a document.
    let run = fluxlit(
        "[server\n",
        &["doctor", "--offline", "--format", "json"],
        &[],
    );
    let finding = run.only("config_invalid");
    assert_says(&finding, "message", "invalid TOML");
    assert_eq!(finding["location"]["line"], 1);

    let dir = tempfile::tempdir().unwrap();
    let output = cli::run(
        &[
            "doctor",
            "--offline",
            "--format",
            "json",
            "--config",
            "missing.toml",
        ],
        dir.path(),
        &[],
    );
    let run = Run { output };
    assert_eq!(run.code(), Some(1));
    let finding = run.only("config_invalid");
    assert_says(&finding, "message", "cannot read config file missing.toml");
    assert!(finding.get("location").is_none(), "{finding:#}");
}

/// [`ECHO`] with its admin listener on every interface (`admin_not_loopback`, a warning
/// at `admin.listen`, line 2) and security headers off (`security_headers_off`, line 5),
/// and `accept` as the `[doctor]` table's entries.
fn accepting(accept: &str) -> String {
    format!(
        "[admin]\nlisten = \"0.0.0.0:9901\"\n\n[server]\nsecurity_headers = false\n\n[doctor]\naccept = [{accept}]\n{ECHO}"
    )
}

#[test]
fn an_accepted_finding_is_reported_as_accepted_and_not_counted_by_strict() {
    let strict = ["doctor", "--offline", "--strict", "--format", "json"];
    // Without the acceptance: a warning, and --strict fails.
    let run = fluxlit(&accepting(""), &strict, &[]);
    assert_eq!(run.code(), Some(2), "{:#}", run.json());

    // By id and key path; the other warning still counts.
    let one = accepting("\"admin_not_loopback@admin.listen\"");
    let run = fluxlit(&one, &strict, &[]);
    let accepted = run.only("admin_not_loopback");
    assert_eq!(
        accepted["accepted"],
        json!({"by": "doctor.accept[0]", "entry": "admin_not_loopback@admin.listen"})
    );
    assert_eq!(accepted["severity"], "warning", "still what it is");
    assert!(run.only("security_headers_off").get("accepted").is_none());
    assert_eq!(run.json()["summary"]["accepted"], 1);
    assert_eq!(run.json()["summary"]["warnings"], 1);
    assert_eq!(run.code(), Some(2), "the other warning counts");

    // Both accepted (one by id alone): --strict passes, both still reported.
    let both = accepting("\"admin_not_loopback@admin.listen\", \"security_headers_off\"");
    let run = fluxlit(&both, &strict, &[]);
    assert_eq!(run.code(), Some(0), "{:#}", run.json());
    assert_eq!(run.findings().len(), 2, "{:#}", run.json());
    assert_eq!(
        run.json()["summary"],
        json!({"errors": 0, "warnings": 0, "infos": 0, "accepted": 2, "strict": true, "exit_code": 0})
    );

    // The text report lists them apart, with the entry that accepted each.
    let run = fluxlit(&both, &["doctor", "--offline", "--strict"], &[]);
    assert_eq!(run.code(), Some(0), "{}", run.stdout());
    let text = run.stdout();
    assert!(
        text.contains("accepted:\n  admin_not_loopback admin.listen (2:10): "),
        "{text}"
    );
    assert!(
        text.contains("      accepted by doctor.accept[0] (\"admin_not_loopback@admin.listen\")"),
        "{text}"
    );
    assert!(!text.contains("warnings:"), "{text}");
    assert!(
        text.contains("fluxlit.toml: ok: 0 error(s), 0 warning(s), 0 info, 2 accepted"),
        "{text}"
    );

    // `fluxlit config` marks it too.
    let run = fluxlit(&both, &["config"], &[]);
    assert!(
        run.stderr()
            .contains("[admin_not_loopback, accepted by doctor.accept[0]]"),
        "{}",
        run.stderr()
    );
}

#[test]
fn an_acceptance_that_accepts_nothing_is_a_warning_at_its_entry() {
    let strict = ["doctor", "--offline", "--strict", "--format", "json"];
    let cases = [
        // The finding is gone: the admin listener is on loopback now.
        (
            "\"admin_not_loopback\", \"security_headers_off\"",
            "\"127.0.0.1:9901\"",
            "\\\"admin_not_loopback\\\" accepts nothing: no admin_not_loopback finding occurs",
            "remove the entry",
        ),
        // At another key than the finding's.
        (
            "\"admin_not_loopback@server.listen\", \"security_headers_off\"",
            "\"0.0.0.0:9901\"",
            "no admin_not_loopback finding at server.listen occurs",
            "remove the entry",
        ),
        // A misspelt id.
        (
            "\"admin_not_lopback\", \"security_headers_off\"",
            "\"127.0.0.1:9901\"",
            "no doctor check has the id \\\"admin_not_lopback\\\"",
            "did you mean \\\"admin_not_loopback\\\"?",
        ),
    ];
    for (accept, admin, message, fix) in cases {
        let config = accepting(accept).replace("\"0.0.0.0:9901\"", admin);
        let run = fluxlit(&config, &strict, &[]);
        assert_eq!(run.code(), Some(2), "{config}\n{:#}", run.json());
        let unused = run.only("accept_unused");
        assert_eq!(unused["severity"], "warning");
        assert_eq!(unused["key"], "doctor.accept[0]");
        assert_eq!(
            unused["location"],
            json!({"line": 8, "column": 11}),
            "{config}"
        );
        assert!(
            unused.to_string().contains(message),
            "{message}\n{unused:#}"
        );
        assert!(unused.to_string().contains(fix), "{fix}\n{unused:#}");
    }

    // An error cannot be accepted: it stays an error, and the entry is said to do nothing.
    let config = format!(
        "[trust]\nproxies = [\"0.0.0.0/0\"]\n\n[doctor]\naccept = [\"trust_all_proxies\"]\n{ECHO}"
    );
    let run = fluxlit(&config, &["doctor", "--offline", "--format", "json"], &[]);
    assert_eq!(run.code(), Some(1));
    assert!(run.only("trust_all_proxies").get("accepted").is_none());
    assert_says(
        &run.only("accept_unused"),
        "message",
        "names an error, and errors cannot be accepted",
    );

    // A finding only the network makes is not judged offline.
    let config = accepting("\"clock_drift\", \"admin_not_loopback\", \"security_headers_off\"");
    let run = fluxlit(&config, &strict, &[]);
    assert_eq!(run.code(), Some(0), "{:#}", run.json());
}

#[test]
fn an_entry_that_is_not_an_id_is_refused_by_validation() {
    let run = fluxlit(
        &accepting("\"admin not loopback\""),
        &["doctor", "--offline", "--format", "json"],
        &[],
    );
    assert_eq!(run.code(), Some(1));
    let invalid = run.only("config_invalid");
    assert_eq!(invalid["key"], "doctor.accept[0]");
    assert_says(&invalid, "fix", "\"admin_not_loopback@admin.listen\"");
}

#[test]
fn the_readme_lists_every_finding_id() {
    let readme = std::fs::read_to_string(common::schema::repo_file("README.md")).unwrap();
    let table = readme
        .split("| id | severity | what it means |")
        .nth(1)
        .expect("the doctor's table");
    let listed: Vec<&str> = table
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with("| `"))
        .filter_map(|line| line.split('`').nth(1))
        .collect();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort_unstable();
    let mut ids = fluxlit::doctor::IDS.to_vec();
    ids.sort_unstable();
    assert_eq!(listed_sorted, ids, "the README's table lists: {listed:?}");
}

#[test]
fn the_base_path_check_says_what_streamlit_and_fastapi_need() {
    let config = under_app(&[("ui", "/"), ("api", "/api")]);
    let run = offline(&config, &[]);
    let unreachable = run.only("public_base_url_path");
    assert_eq!(unreachable["key"], "routes[1].path_prefix");
    assert_says(&unreachable, "fix", "path_prefix = \"/app/api\"");
    // The catch-all route gets /app/...: Streamlit must serve under it.
    let served = run.only("upstream_base_path");
    assert_eq!(served["key"], "routes[0].path_prefix");
    assert_says(
        &served,
        "fix",
        "server.baseUrlPath = \"app\"; a FastAPI upstream declares its routes under \"/app\"",
    );
}

#[test]
fn secrets_missing_empty_or_too_short_are_errors() {
    let config = jwt_config("30s");
    let missing = offline(&config, &[]);
    assert_eq!(missing.code(), Some(1));
    let found = missing.only("secret_missing");
    assert_eq!(found["key"], "auth.providers.main.hs256_secret");
    assert_says(&found, "message", MINT_SECRET);

    let empty = offline(&config, &[(MINT_SECRET, "")]);
    empty.only("secret_empty");
    assert!(empty.with_id("secret_missing").is_empty());

    let short = offline(&config, &[(MINT_SECRET, "too short a secret")]);
    short.only("secret_too_short");
    assert!(
        !short.stdout().contains("too short a secret"),
        "the secret itself is never printed"
    );

    let good = offline(&config, &[(MINT_SECRET, GOOD_SECRET)]);
    assert_eq!(good.code(), Some(0), "{:#}", good.json());
    assert_eq!(good.findings(), Vec::<Value>::new());

    // A file secret: its trailing newline does not count, HS512 needs 64 bytes.
    let dir = tempfile::tempdir().unwrap();
    let file_config = config
        .replace(
            &format!("{{ env = \"{MINT_SECRET}\" }}"),
            "{ file = \"hs.secret\" }",
        )
        .replace("[\"HS256\"]", "[\"HS256\", \"HS512\"]");
    std::fs::write(dir.path().join("hs.secret"), format!("{GOOD_SECRET}\n")).unwrap();
    let args = ["doctor", "--offline", "--format", "json"];
    let short = fluxlit_in(dir.path(), &file_config, &args, &[]);
    let found = short.only("secret_too_short");
    assert_says(&found, "message", "HS512 needs at least 64");
    std::fs::write(
        dir.path().join("hs.secret"),
        format!("{}\n", "s".repeat(64)),
    )
    .unwrap();
    let long = fluxlit_in(dir.path(), &file_config, &args, &[]);
    assert_eq!(long.findings(), Vec::<Value>::new());

    std::fs::write(dir.path().join("hs.secret"), "\n").unwrap();
    let empty = fluxlit_in(dir.path(), &file_config, &args, &[]);
    empty.only("secret_empty");
}

#[test]
fn an_exchange_secret_must_be_there_and_long_enough() {
    let config = oidc_config(
        "https://idp.example.com",
        &format!("exchange_secret = {{ env = \"{EXCHANGE_SECRET}\" }}"),
    );
    let key = "auth.providers.corp.exchange_secret";
    let missing = offline(&config, &oidc_env());
    assert_eq!(missing.code(), Some(1));
    let found = missing.only("secret_missing");
    assert_eq!(found["key"], key);

    let mut env = oidc_env();
    env.push((EXCHANGE_SECRET, "short exchange secret"));
    let short = offline(&config, &env);
    assert_eq!(short.code(), Some(1));
    let found = short.only("secret_too_short");
    assert_eq!(found["key"], key);
    assert_says(&found, "message", "21 bytes; it needs at least 32");
    assert!(
        !short.stdout().contains("short exchange secret"),
        "the secret itself is never printed"
    );

    let mut env = oidc_env();
    env.push((EXCHANGE_SECRET, GOOD_SECRET));
    let good = offline(&config, &env);
    assert_eq!(good.code(), Some(0), "{:#}", good.json());
    assert!(good.with_id("secret_too_short").is_empty());
    assert!(good.with_id("secret_missing").is_empty());
}

#[test]
fn a_jwks_file_must_hold_usable_keys() {
    let config = format!(
        "{ECHO}\n[auth.providers.keys]\nkind = \"jwt\"\nissuer = \"https://idp.example.com\"\naudience = \"app\"\nalgorithms = [\"RS256\"]\njwks_file = \"keys/jwks.json\"\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let args = ["doctor", "--offline", "--format", "json"];
    let missing = fluxlit_in(dir.path(), &config, &args, &[]);
    let found = missing.only("jwks_file_unusable");
    assert_eq!(found["key"], "auth.providers.keys.jwks_file");
    assert_eq!(missing.code(), Some(1));

    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/jwks.json"), "{\"keys\": []}").unwrap();
    let empty = fluxlit_in(dir.path(), &config, &args, &[]);
    empty.only("jwks_file_unusable");

    let good = format!("{{\"keys\": [{RSA_A_JWK}]}}");
    std::fs::write(dir.path().join("keys/jwks.json"), good).unwrap();
    let run = fluxlit_in(dir.path(), &config, &args, &[]);
    assert_eq!(run.code(), Some(0), "{:#}", run.json());
    assert_eq!(run.findings(), Vec::<Value>::new());
}

#[test]
fn an_oidc_client_secret_and_a_redis_url_from_the_environment_are_checked() {
    let config = oidc_config(
        "https://idp.example.com",
        &format!("store = {{ env = \"{REDIS_URL}\" }}\n{WITH_SESSION_KEY}"),
    );
    let run = offline(
        &config,
        &[(MINT_SECRET, GOOD_SECRET), (SESSION_KEY, GOOD_SECRET)],
    );
    let keys: Vec<Value> = run
        .with_id("secret_missing")
        .iter()
        .map(|f| f["key"].clone())
        .collect();
    assert_eq!(
        keys,
        [
            json!("auth.providers.corp.client_secret"),
            json!("auth.providers.corp.store")
        ],
        "{:#}",
        run.json()
    );

    let mut env = oidc_env();
    // A fragment would turn verification off in the Redis client: refused.
    env.push((
        REDIS_URL,
        "rediss://:hunter2@cache.example.com:6380/0#insecure",
    ));
    let run = offline(&config, &env);
    run.only("store_url_invalid");
    assert!(!run.stdout().contains("hunter2"), "{}", run.stdout());

    let mut env = oidc_env();
    env.push((REDIS_URL, "redis://127.0.0.1:6379/0\n"));
    let run = offline(&config, &env);
    // Replicas sharing a store need one identity key too.
    run.only("identity_key_generated");
    let shared_key = format!("{config}\n[identity]\nsigning_key = {{ env = \"IDENTITY_KEY\" }}\n");
    let run = offline(&shared_key, &env);
    assert_eq!(run.findings(), Vec::<Value>::new(), "{:#}", run.json());
}

#[test]
fn config_prints_the_static_findings_after_the_validation_warnings_once_each() {
    let config = format!(
        "[admin]\nlisten = \"0.0.0.0:9901\"\n{ECHO}forward_client_headers = [\"cookie\"]\n"
    );
    let run = fluxlit(&config, &["config"], &[]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let text = run.stderr();
    assert!(
        text.contains("fluxlit.toml:2:10: warning: admin.listen: the admin listener (0.0.0.0:9901) is open on every network interface"),
        "{text}"
    );
    assert!(
        text.contains("[admin_not_loopback]\n  fix: listen on loopback"),
        "{text}"
    );
    assert_eq!(
        text.matches("\"cookie\" is dropped").count(),
        1,
        "said once, by validation:\n{text}"
    );
    assert!(run.stdout().contains("# effective config of"));
}

// ---------------------------------------------------------------------------------------
// The network.
// ---------------------------------------------------------------------------------------

/// An upstream whose `Date` header is `offset` seconds off the real time.
async fn upstream_dated(offset: i64) -> SocketAddr {
    let router = Router::new().fallback(move || async move {
        let now = SystemTime::now();
        let date = if offset >= 0 {
            now + Duration::from_secs(offset.unsigned_abs())
        } else {
            now - Duration::from_secs(offset.unsigned_abs())
        };
        (
            [(http::header::DATE, httpdate::fmt_http_date(date))],
            "hello",
        )
            .into_response()
    });
    common::spawn_upstream(router).await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_accepts_no_connection_is_an_error() {
    let up = common::spawn_recording_upstream("api").await;
    let down = closed_port();
    let run = online(api_and_ui(up, down).to_string(), vec![]).await;
    assert_eq!(run.code(), Some(1), "{:#}", run.json());
    let found = run.only("upstream_unreachable");
    assert_eq!(found["key"], "upstreams.ui.url");
    assert_says(&found, "message", &down.to_string());
    // The live upstream's clock agrees with ours: nothing else to say.
    assert_eq!(run.findings().len(), 1, "{:#}", run.json());

    let run = online(api_and_ui(up, up).to_string(), vec![]).await;
    assert_eq!(run.code(), Some(0), "{:#}", run.json());
    assert_eq!(run.findings(), Vec::<Value>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_accepts_but_never_answers_is_a_warning() {
    // Connections are queued by the kernel and never read.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    let up = common::spawn_recording_upstream("api").await;
    let run = online(api_and_ui(up, silent).to_string(), vec![]).await;
    drop(listener);
    let found = run.only("upstream_silent");
    assert_eq!(found["severity"], "warning");
    assert_eq!(found["key"], "upstreams.ui.url");
    assert!(run.with_id("upstream_unreachable").is_empty());
    assert_eq!(run.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_clock_beyond_the_leeway_is_an_error_and_a_small_skew_a_warning() {
    let far_behind = upstream_dated(-2 * 3600).await;
    let a_bit_ahead = upstream_dated(20).await;
    let run = online(api_and_ui(far_behind, a_bit_ahead).to_string(), vec![]).await;
    assert_eq!(run.code(), Some(1), "{:#}", run.json());
    let skew = run.only("clock_skew");
    assert_eq!(skew["key"], "upstreams.api.url");
    assert_says(&skew, "message", "behind this machine's");
    let drift = run.only("clock_drift");
    assert_eq!(drift["key"], "upstreams.ui.url");
    assert_says(&drift, "message", "ahead of");

    // 20s is within the default 60s but beyond a provider's 10s leeway.
    let config = with_jwt(api_and_ui(a_bit_ahead, a_bit_ahead), "10s");
    let run = online(config, vec![(MINT_SECRET, GOOD_SECRET.to_owned())]).await;
    assert_eq!(run.with_id("clock_skew").len(), 2, "{:#}", run.json());
}

/// An identity provider publishing discovery and `jwks` (the document given).
async fn spawn_idp(jwks: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let document = discovery_document(&issuer);
    let router = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(document) }),
        )
        .route("/jwks", get(move || async move { jwks }));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    issuer
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_providers_must_publish_discovery_and_usable_keys() {
    let good_jwks: &'static str =
        Box::leak(format!("{{\"keys\": [{RSA_A_JWK}]}}").into_boxed_str());
    let env = owned(oidc_env());

    let good = spawn_idp(good_jwks).await;
    let run = online(oidc_config(&good, ""), env.clone()).await;
    assert_eq!(run.code(), Some(0), "{:#}", run.json());
    assert!(run.with_id("idp_discovery").is_empty());
    assert!(run.with_id("jwks_unreachable").is_empty());

    let no_keys = spawn_idp("{\"keys\": []}").await;
    let run = online(oidc_config(&no_keys, ""), env.clone()).await;
    assert_eq!(run.code(), Some(1));
    let found = run.only("jwks_unreachable");
    assert_eq!(found["key"], "auth.providers.corp.issuer_url");
    assert_says(&found, "message", "no usable signing keys");

    let down = format!("http://{}", closed_port());
    let run = online(oidc_config(&down, ""), env).await;
    assert_eq!(run.code(), Some(1));
    run.only("idp_discovery");

    // A jwt provider's own jwks_url is loaded the same way.
    let jwks_provider = |url: &str| {
        format!(
            "{ECHO}\n[auth.providers.keys]\nkind = \"jwt\"\nissuer = \"https://idp.example.com\"\naudience = \"app\"\nalgorithms = [\"RS256\"]\njwks_url = \"{url}\"\n"
        )
    };
    let run = online(jwks_provider(&format!("{good}/jwks")), vec![]).await;
    assert_eq!(run.findings(), Vec::<Value>::new(), "{:#}", run.json());
    let run = online(jwks_provider(&format!("{down}/jwks")), vec![]).await;
    let found = run.only("jwks_unreachable");
    assert_eq!(found["key"], "auth.providers.keys.jwks_url");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_store_must_answer_ping() {
    let env = owned(oidc_env());
    let store = |url: &str| {
        oidc_config(
            "https://idp.example.com",
            &format!("store = \"{url}\"\n{WITH_SESSION_KEY}"),
        )
    };
    // The IdP is not reachable here; only Redis matters.
    let up = online(store("redis://127.0.0.1:6379/0"), env.clone()).await;
    assert!(
        up.with_id("redis_unreachable").is_empty(),
        "{:#}",
        up.json()
    );

    let down = closed_port();
    let run = online(store(&format!("redis://{down}/0")), env).await;
    let found = run.only("redis_unreachable");
    assert_eq!(found["key"], "auth.providers.corp.store");
    assert_says(&found, "message", &down.to_string());
}
