//! The command line as a user runs it: `validate`, `config` and the config path rules.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::path::Path;
use std::process::Output;

use common::cli::stderr;

/// `fluxlit <args>` in `dir`.
fn fluxlit(args: &[&str], dir: &Path) -> Output {
    common::cli::run(args, dir, &[])
}

/// One file with many mistakes; each line number below is where the mistake is.
const BROKEN: &str = r#"[server]
listen = "127.0.0.1:8080"
public_base_url = "ftp://example.com"

[trust]
proxies = ["10.0.0.0/8", "10.0.0.300/8"]

[upstreams.api]
url = "wss://127.0.0.1:8000"
connect_timeout = "0s"

[upstreams.ui]
url = "http://127.0.0.1:8501"

[[routes]]
name = "api"
path_prefix = "api"
upstream = "apii"
auth = "main"

[[routes]]
name = "api"
path_prefix = "/"
upstream = "ui"

[[routes]]
name = "root"
path_prefix = "/"
upstream = "ui"
forward_client_headers = ["cookie", "x-tenant"]
"#;

#[test]
fn validate_lists_every_error_with_line_and_column_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fluxlit.toml"), BROKEN).unwrap();
    let output = fluxlit(&["validate"], dir.path());
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    let expected = [
        "fluxlit.toml:3:19: error: server.public_base_url: scheme `ftp` is not supported",
        "fluxlit.toml:6:26: error: trust.proxies[1]: \"10.0.0.300/8\" is not an IP address or CIDR range",
        "fluxlit.toml:9:7: error: upstreams.api.url: \"wss://127.0.0.1:8000\": use http:// or https://",
        "fluxlit.toml:10:19: error: upstreams.api.connect_timeout: must be longer than zero",
        "fluxlit.toml:17:15: error: routes[0].path_prefix: \"api\" must start with '/'",
        "fluxlit.toml:18:12: error: routes[0].upstream: unknown upstream \"apii\"",
        "help: did you mean \"api\"?",
        "fluxlit.toml:19:8: error: routes[0].auth: unknown auth provider \"main\"",
        "fluxlit.toml:22:8: error: routes[1].name: duplicate route name \"api\", already used by routes[0]",
        "fluxlit.toml:28:15: error: routes[2].path_prefix: duplicate path prefix \"/\": routes[1] (\"api\") already matches it",
        "fluxlit.toml:30:27: warning: routes[2].forward_client_headers[0]: \"cookie\" is dropped from the allowlist",
    ];
    for line in expected {
        assert!(text.contains(line), "missing:\n  {line}\nin:\n{text}");
    }
    assert!(
        !text.contains("x-tenant"),
        "an allowed name is not reported:\n{text}"
    );
    assert!(text.contains("9 error(s); nothing was applied"), "{text}");
}

/// An unknown key and the semantic mistakes around it; each line number below is where
/// the mistake is.
const UNKNOWN_KEY_AMONG_OTHERS: &str = r#"[trust]
proxies = ["10.0.0.0/33"]

[upstreams.api]
url = "http://127.0.0.1:8000"
timeout = "0s"

[[routes]]
name = "api"
path_prefix = "api"
upstream = "apii"
colour = "blue"

[[routes]]
name = "api"
path_prefix = "/"
upstream = "api"
"#;

/// Every line of [`UNKNOWN_KEY_AMONG_OTHERS`]'s report, as `file` names the file.
fn unknown_key_among_others_errors(file: &str) -> [String; 6] {
    [
        format!(
            "{file}:2:12: error: trust.proxies[0]: \"10.0.0.0/33\" is not an IP address or CIDR range"
        ),
        format!("{file}:6:11: error: upstreams.api.timeout: must be longer than zero"),
        format!("{file}:10:15: error: routes[0].path_prefix: \"api\" must start with '/'"),
        format!("{file}:11:12: error: routes[0].upstream: unknown upstream \"apii\""),
        format!("{file}:12:1: error: routes[0].colour: unknown key `colour`"),
        format!(
            "{file}:15:8: error: routes[1].name: duplicate route name \"api\", already used by routes[0]"
        ),
    ]
}

#[test]
fn an_unknown_key_is_one_error_among_the_others_in_validate_serve_and_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fluxlit.toml"), UNKNOWN_KEY_AMONG_OTHERS).unwrap();
    for command in ["validate", "serve", "config"] {
        let output = fluxlit(&[command], dir.path());
        assert_eq!(
            output.status.code(),
            Some(1),
            "{command}: {}",
            stderr(&output)
        );
        let text = stderr(&output);
        let mut at = 0;
        for line in unknown_key_among_others_errors("fluxlit.toml") {
            let found = text[at..].find(&line).unwrap_or_else(|| {
                panic!("{command}: missing, or out of file order:\n  {line}\nin:\n{text}")
            });
            at += found + line.len();
        }
        assert!(
            text.contains("6 error(s); nothing was applied"),
            "{command}: {text}"
        );
    }
}

#[test]
fn warnings_alone_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[upstreams.ui]\nurl = \"http://127.0.0.1:8501\"\n\n[[routes]]\nname = \"ui\"\npath_prefix = \"/\"\nupstream = \"ui\"\nforward_client_headers = [\"authorization\", \"x-forwarded-for\"]\n";
    std::fs::write(dir.path().join("fluxlit.toml"), config).unwrap();
    let output = fluxlit(&["validate"], dir.path());
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("fluxlit.toml:8:27: warning: routes[0].forward_client_headers[0]: \"authorization\" is dropped"), "{text}");
    assert!(
        text.contains("forward_client_headers[1]: \"x-forwarded-for\" is dropped"),
        "{text}"
    );
    assert!(common::cli::stdout(&output).contains("ok (1 route(s), 1 upstream(s), 2 warning(s))"));
}

#[test]
fn the_config_path_comes_from_the_flag_then_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.toml"), "[upstreams.ui]\nbuiltin = \"echo\"\n[[routes]]\nname = \"ui\"\npath_prefix = \"/\"\nupstream = \"ui\"\n").unwrap();
    std::fs::write(dir.path().join("fluxlit.toml"), "not toml at all [").unwrap();

    // Default ./fluxlit.toml: the broken one.
    assert_eq!(fluxlit(&["validate"], dir.path()).status.code(), Some(1));
    // $FLUXLIT_CONFIG wins over the default.
    let good = [("FLUXLIT_CONFIG", "good.toml")];
    let from_env = common::cli::run(&["validate"], dir.path(), &good);
    assert_eq!(from_env.status.code(), Some(0), "{}", stderr(&from_env));
    // --config wins over $FLUXLIT_CONFIG.
    let from_flag = common::cli::run(&["validate", "--config", "fluxlit.toml"], dir.path(), &good);
    assert_eq!(from_flag.status.code(), Some(1));
    assert!(
        stderr(&from_flag).contains("fluxlit.toml:1:"),
        "{}",
        stderr(&from_flag)
    );
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = fluxlit(&["validate", "--config", "nowhere.toml"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("cannot read config file nowhere.toml"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn config_prints_the_effective_config_which_loads_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[upstreams.ui]\nurl = \"http://127.0.0.1:8501\"\n\n[[routes]]\nname = \"ui\"\npath_prefix = \"/\"\nupstream = \"ui\"\nforward_client_headers = [\"cookie\"]\n";
    std::fs::write(dir.path().join("fluxlit.toml"), config).unwrap();
    let output = fluxlit(&["config"], dir.path());
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8(output.stdout.clone()).unwrap();
    for default in [
        "header_read_timeout = \"10s\"",
        "max_connections = 10000",
        "connect_timeout = \"2s\"",
        "strip_prefix = false",
    ] {
        assert!(
            printed.contains(default),
            "missing {default} in:\n{printed}"
        );
    }
    assert!(
        stderr(&output).contains("warning: routes[0].forward_client_headers[0]"),
        "{}",
        stderr(&output)
    );

    std::fs::write(dir.path().join("effective.toml"), &printed).unwrap();
    let original = fluxlit::config::load(&dir.path().join("fluxlit.toml"))
        .unwrap()
        .config;
    let reloaded = fluxlit::config::load(&dir.path().join("effective.toml"))
        .unwrap()
        .config;
    assert_eq!(original, reloaded);
}

#[test]
fn zero_workers_is_a_usage_error_not_a_silent_one() {
    let dir = tempfile::tempdir().unwrap();
    let output = fluxlit(&["serve", "--workers", "0"], dir.path());
    // A usage error exits 64, before any config is read.
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("invalid value '0' for '--workers"),
        "{}",
        stderr(&output)
    );
}

// ---------------------------------------------------------------------------------------
// Usage errors exit 64 (EX_USAGE), a code no command uses for what it found: 1 is an
// error, 2 `doctor --strict` warnings, 3 `diff` changes.
// ---------------------------------------------------------------------------------------

/// `fluxlit <args>` in a directory with a valid config exits 64 with clap's message
/// naming `wrong` on stderr, and prints nothing on stdout (no report a script could
/// mistake for one).
fn assert_usage_error(args: &[&str], wrong: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fluxlit.toml"),
        "[upstreams.ui]\nbuiltin = \"echo\"\n[[routes]]\nname = \"ui\"\npath_prefix = \"/\"\nupstream = \"ui\"\n",
    )
    .unwrap();
    let output = fluxlit(args, dir.path());
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(64), "fluxlit {args:?}:\n{text}");
    assert!(
        text.starts_with("error: ") && text.contains(wrong),
        "fluxlit {args:?}:\n{text}"
    );
    assert!(
        output.stdout.is_empty(),
        "fluxlit {args:?}: {}",
        common::cli::stdout(&output)
    );
}

#[test]
fn a_misspelt_flag_of_serve_exits_64() {
    assert_usage_error(&["serve", "--wrokers", "2"], "'--wrokers'");
}

#[test]
fn a_misspelt_flag_of_validate_exits_64() {
    assert_usage_error(&["validate", "--strcit"], "'--strcit'");
}

#[test]
fn a_misspelt_flag_of_config_exits_64() {
    assert_usage_error(&["config", "--confg", "x.toml"], "'--confg'");
}

#[test]
fn a_misspelt_flag_of_doctor_exits_64_not_2_as_strict_warnings_do() {
    assert_usage_error(&["doctor", "--stirct"], "'--stirct'");
    assert_usage_error(&["doctor", "--format", "yaml"], "'yaml'");
}

#[test]
fn a_misspelt_flag_of_schema_exits_64() {
    assert_usage_error(&["schema", "--pretty"], "'--pretty'");
}

#[test]
fn a_misspelt_flag_of_diff_exits_64_not_3_as_changes_do() {
    assert_usage_error(&["diff", "--agianst", "old.toml"], "'--agianst'");
    // Neither --against nor --admin.
    assert_usage_error(&["diff"], "--against");
}

#[test]
fn a_misspelt_flag_of_token_issue_exits_64() {
    assert_usage_error(
        &["token", "issue", "--provder", "main", "--sub", "ada"],
        "'--provder'",
    );
    assert_usage_error(
        &["token", "issue", "--sub", "ada", "--claim", "x"],
        "key=value",
    );
    assert_usage_error(&["token", "mint"], "'mint'");
}

#[test]
fn a_misspelt_or_missing_subcommand_exits_64() {
    assert_usage_error(&["vaildate"], "'vaildate'");
    // No subcommand at all: the help, on stderr, and the same code.
    let dir = tempfile::tempdir().unwrap();
    let output = fluxlit(&[], dir.path());
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("Usage: fluxlit"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn help_and_version_are_answers_and_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["--help"][..], &["doctor", "--help"], &["--version"]] {
        let output = fluxlit(args, dir.path());
        assert_eq!(output.status.code(), Some(0), "fluxlit {args:?}");
        assert!(!output.stdout.is_empty(), "fluxlit {args:?}");
    }
    let help = fluxlit(&["doctor", "--help"], dir.path());
    assert!(
        common::cli::stdout(&help).contains("64 a usage error"),
        "{}",
        common::cli::stdout(&help)
    );
}
