//! The auth side of the command line, as a developer runs it: `fluxlit token issue`
//! mints tokens that a gateway on the same config accepts (secret from a file or from
//! the environment) and refuses providers it cannot mint for; `fluxlit config`,
//! `validate` and `token issue` never print a secret; `fluxlit validate` explains auth
//! mistakes with their key paths; `validate` and `serve` refuse a secret shorter than
//! its hash (or a short exchange secret) and one they cannot read.

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

use common::auth::*;
use common::cli::{stderr, stdout};
use common::*;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// `fluxlit <args>` in `dir` with `env`, and never the developer's `JWT_HS256_SECRET`.
fn fluxlit(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    cli::command(dir)
        .args(args)
        .env_remove("JWT_HS256_SECRET")
        .envs(env.iter().copied())
        .output()
        .expect("run fluxlit")
}

/// `/api` behind provider `main` (HS256, secret as given), `idp` (RS256, JWKS only) and
/// `sso` (forward auth), with a fixed ephemeral listen so the CLI and the gateway read
/// the same file.
fn config(upstream: SocketAddr, secret: &str) -> String {
    ConfigText::new()
        .server("listen = \"127.0.0.1:0\"")
        .trust_loopback()
        .upstream("app", upstream)
        .guarded_route("api", "/api", "app", "main")
        .jwt_provider("main", "[\"HS256\"]", &format!("hs256_secret = {secret}"))
        .jwks_provider("idp", "https://idp.example/.well-known/jwks.json")
        .provider("sso", "trusted_proxy_user", "")
        .into()
}

/// Runs `fluxlit token issue <args>` (`args` split on whitespace) in `dir` with `env`.
fn token_issue(args: &str, dir: &Path, env: &[(&str, &str)]) -> Output {
    let args: Vec<&str> = ["token", "issue"]
        .into_iter()
        .chain(args.split_whitespace())
        .collect();
    fluxlit(&args, dir, env)
}

/// Runs `fluxlit token issue --provider main --sub ada --ttl 15m --claim scope=read`.
fn issue(dir: &Path, env: &[(&str, &str)]) -> String {
    let output = token_issue(
        "--config fluxlit.toml --provider main --sub ada --ttl 15m --claim scope=read",
        dir,
        env,
    );
    assert!(
        output.status.success(),
        "token issue failed: {}",
        stderr(&output)
    );
    let token = stdout(&output).trim().to_owned();
    assert_eq!(
        token.split('.').count(),
        3,
        "a JWS in compact form: {token:?}"
    );
    token
}

/// The claims of `token`, verified with `secret`.
fn verified_claims(token: &str, secret: &str) -> Value {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    let key = DecodingKey::from_secret(secret.as_bytes()).expect("HMAC key");
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .expect("the minted token verifies with the provider's secret")
        .claims
}

async fn assert_gateway_accepts(gateway: &TestGateway, token: &str) {
    let reply = get_with_token(gateway, "/api/x", token).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.upstream_header("x-fluxlit-sub"), ["ada"]);
    assert_eq!(reply.upstream_header("x-fluxlit-scope"), ["read"]);
}

#[tokio::test]
async fn token_issue_mints_a_token_a_gateway_on_the_same_config_accepts() {
    let upstream = CountingUpstream::spawn().await;
    let gateway = start_with_files(
        &config(upstream.addr, "{ file = \"secret\" }"),
        &[("secret", &format!("{HS_SECRET}\n"))],
    )
    .await;
    let token = issue(gateway.dir.path(), &[]);

    // The secret file's trailing newline is not part of the secret, for either of them.
    let claims = verified_claims(&token, HS_SECRET);
    assert_eq!(claims["sub"], "ada");
    assert_eq!(claims["scope"], "read");
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 15 * 60, "--ttl 15m");
    assert_gateway_accepts(&gateway, &token).await;
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn token_issue_reads_an_env_secret_as_the_gateway_does() {
    let upstream = CountingUpstream::spawn().await;
    let gateway = start_with_environment(
        config(upstream.addr, "{ env = \"JWT_HS256_SECRET\" }"),
        &[],
        TestEnvironment::of(&[("JWT_HS256_SECRET", HS_SECRET)]),
    )
    .await;

    let token = issue(gateway.dir.path(), &[("JWT_HS256_SECRET", HS_SECRET)]);
    assert_gateway_accepts(&gateway, &token).await;

    // Minted with another value of the variable: the gateway's secret is not that one.
    let other = issue(
        gateway.dir.path(),
        &[(
            "JWT_HS256_SECRET",
            "some other secret value, as long as HS256 needs",
        )],
    );
    let reply = get_with_token(&gateway, "/api/x", &other).await;
    assert_invalid_token(&reply, "main", "signature does not verify");

    // Without the variable there is nothing to mint with, and the message says which.
    let output = token_issue(
        "--config fluxlit.toml --provider main --sub ada",
        gateway.dir.path(),
        &[],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("environment variable JWT_HS256_SECRET is not set"),
        "{}",
        stderr(&output)
    );
    assert_eq!(upstream.hits(), 1);
}

#[test]
fn token_issue_refuses_providers_it_cannot_mint_for_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = placeholder_upstream();
    std::fs::write(
        dir.path().join("fluxlit.toml"),
        config(upstream, "{ env = \"JWT_HS256_SECRET\" }"),
    )
    .unwrap();
    let env = [("JWT_HS256_SECRET", HS_SECRET)];
    let cases = [
        ("idp", "verifies with public keys"),
        ("sso", "is not a jwt provider"),
        ("mian", "no provider \"mian\""),
    ];
    for (provider, expected) in cases {
        let args = format!("--provider {provider} --sub ada --config fluxlit.toml");
        let output = token_issue(&args, dir.path(), &env);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{provider}: {}",
            stderr(&output)
        );
        assert!(
            stdout(&output).is_empty(),
            "no token on stdout: {}",
            stdout(&output)
        );
        assert!(
            stderr(&output).contains(expected),
            "{provider}: {}",
            stderr(&output)
        );
    }
    // Claims the minting sets itself cannot be overridden.
    let output = token_issue(
        "--provider main --sub ada --claim sub=root",
        dir.path(),
        &env,
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("--claim sub=... is set by fluxlit itself"));
}

/// An upstream address for configs that are only checked, never served.
fn placeholder_upstream() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8000))
}

#[test]
fn config_validate_and_token_issue_never_print_the_secret() {
    const FILE_SECRET: &str = "file-secret-value-4f9c2a7e1b3d5f6a8c0e";
    const ENV_SECRET: &str = "env-secret-value-9e8d7c6b5a4f3e2d1c0b";
    const INLINE_SECRET: &str = "inline-secret-value-1a2b3c4d5e6f7a8b9c";
    let upstream = placeholder_upstream();
    let env = [("JWT_HS256_SECRET", ENV_SECRET)];
    let mut outputs = Vec::new();

    for reference in ["{ file = \"secret\" }", "{ env = \"JWT_HS256_SECRET\" }"] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), FILE_SECRET).unwrap();
        std::fs::write(dir.path().join("fluxlit.toml"), config(upstream, reference)).unwrap();
        let shown = fluxlit(&["config"], dir.path(), &env);
        assert!(shown.status.success(), "{}", stderr(&shown));
        // The effective config shows where the secret is, not what it is.
        assert!(
            stdout(&shown).contains("hs256_secret"),
            "{}",
            stdout(&shown)
        );
        outputs.push(("config", shown));
        outputs.push(("validate", fluxlit(&["validate"], dir.path(), &env)));
        let bad_claim = "--provider main --sub a --claim exp=1";
        outputs.push((
            "token issue --claim exp=1",
            token_issue(bad_claim, dir.path(), &env),
        ));
        let no_provider = "--provider nope --sub a";
        outputs.push((
            "token issue --provider nope",
            token_issue(no_provider, dir.path(), &env),
        ));
    }

    // A secret written inline by mistake is refused without being repeated back (error
    // output ends up in CI logs and in /snapshot after a reload).
    let dir = tempfile::tempdir().unwrap();
    let inline = config(upstream, &format!("\"{INLINE_SECRET}\""));
    std::fs::write(dir.path().join("fluxlit.toml"), inline).unwrap();
    for command in [
        &["validate"][..],
        &["config"],
        &["token", "issue", "--provider", "main", "--sub", "a"],
    ] {
        let output = fluxlit(command, dir.path(), &env);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{command:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("auth.providers.main.hs256_secret"),
            "{command:?} names the key: {}",
            stderr(&output)
        );
        outputs.push(("inline", output));
    }

    for (what, output) in &outputs {
        for secret in [FILE_SECRET, ENV_SECRET, INLINE_SECRET] {
            let (out, err) = (stdout(output), stderr(output));
            assert!(
                !out.contains(secret),
                "{what} printed a secret on stdout:\n{out}"
            );
            assert!(
                !err.contains(secret),
                "{what} printed a secret on stderr:\n{err}"
            );
        }
    }
}

#[test]
fn validate_reports_auth_mistakes_with_key_paths_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"[server]
listen = "127.0.0.1:8080"

[upstreams.app]
url = "http://127.0.0.1:8000"

[[routes]]
name = "api"
path_prefix = "/api"
upstream = "app"
auth = "mian"

[auth.providers.main]
kind = "jwt"
issuer = "https://issuer.example"
audience = "api"
algorithms = ["HS256"]

[auth.providers.idp]
kind = "jwt"
issuer = "https://issuer.example"
audience = "api"
algorithms = ["RS256"]
"#;
    std::fs::write(dir.path().join("fluxlit.toml"), text).unwrap();
    let output = fluxlit(&["validate"], dir.path(), &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    for expected in [
        "fluxlit.toml:11:8: error: routes[0].auth: unknown auth provider \"mian\"",
        "help: did you mean \"main\"?",
        "error: auth.providers.main.hs256_secret: HS algorithms need `hs256_secret`",
        "error: auth.providers.idp.algorithms: RS/PS/ES/EdDSA algorithms need public keys: add `jwks_url` or `jwks_file`",
        "3 error(s); nothing was applied",
    ] {
        assert!(
            text.contains(expected),
            "missing:\n  {expected}\nin:\n{text}"
        );
    }
}

#[test]
fn validate_locates_trusted_peers_mistakes() {
    let text = r#"[server]
listen = "127.0.0.1:8080"

[trust]
proxies = ["10.0.0.0/8"]

[upstreams.app]
url = "http://127.0.0.1:8000"

[[routes]]
name = "app"
path_prefix = "/"
upstream = "app"
auth = "sso"

[auth.providers.sso]
kind = "trusted_proxy_user"
trusted_peers = ["10.0.0.5/32", "10.0.0.300", "0.0.0.0/0"]

[auth.providers.main]
kind = "jwt"
issuer = "https://issuer.example"
audience = "api"
algorithms = ["HS256"]
hs256_secret = { env = "JWT_HS256_SECRET" }
trusted_peers = ["10.0.0.5"]
"#;
    let output = cli::run_on(text, &["validate"], &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    for expected in [
        "fluxlit.toml:18:33: error: auth.providers.sso.trusted_peers[1]: \"10.0.0.300\" is not an IP address or CIDR range",
        "fluxlit.toml:18:47: error: auth.providers.sso.trusted_peers[2]: \"0.0.0.0/0\" believes every peer",
        "fluxlit.toml:26:17: error: auth.providers.main.trusted_peers: `trusted_peers` applies to kind = \"trusted_proxy_user\" only",
        "3 error(s); nothing was applied",
    ] {
        assert!(
            text.contains(expected),
            "missing:\n  {expected}\nin:\n{text}"
        );
    }

    // Without trusted_peers the provider believes trust.proxies, which must not be everyone.
    let open = ConfigText::new()
        .server("listen = \"127.0.0.1:8080\"")
        .table("[trust]", "proxies = [\"10.0.0.0/8\", \"::/0\"]")
        .upstream("app", "127.0.0.1:8000")
        .guarded_route("app", "/", "app", "sso")
        .provider("sso", "trusted_proxy_user", "");
    let output = cli::run_on(open.text(), &["validate"], &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(
            "error: auth.providers.sso: believes the user from trust.proxies, which holds \"::/0\""
        ),
        "{}",
        stderr(&output)
    );

    // An empty list believes nobody: every request on the provider's routes gets 401.
    let empty = text_with_peers("[]");
    let output = cli::run_on(&empty, &["validate"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("warning: auth.providers.sso.trusted_peers: is empty"),
        "{}",
        stderr(&output)
    );
}

/// One route behind forward auth with `trusted_peers = <peers>`.
fn text_with_peers(peers: &str) -> String {
    ConfigText::new()
        .server("listen = \"127.0.0.1:8080\"")
        .upstream("app", "127.0.0.1:8000")
        .guarded_route("app", "/", "app", "sso")
        .provider(
            "sso",
            "trusted_proxy_user",
            &format!("trusted_peers = {peers}"),
        )
        .into()
}

#[test]
fn validate_warns_about_a_long_leeway_and_still_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = config(placeholder_upstream(), "{ env = \"JWT_HS256_SECRET\" }");
    text = text.replacen(
        "hs256_secret = { env = \"JWT_HS256_SECRET\" }",
        "hs256_secret = { env = \"JWT_HS256_SECRET\" }\nleeway = \"10m\"",
        1,
    );
    std::fs::write(dir.path().join("fluxlit.toml"), text).unwrap();
    let output = fluxlit(
        &["validate"],
        dir.path(),
        &[("JWT_HS256_SECRET", HS_SECRET)],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains(
            "warning: auth.providers.main.leeway: 10m of leeway keeps expired tokens working"
        ),
        "{text}"
    );
    assert!(!text.contains("error"), "{text}");
    assert!(
        stdout(&output).contains("ok (1 route(s), 1 upstream(s), 1 warning(s))"),
        "{}",
        stdout(&output)
    );
}

// ---------------------------------------------------------------------------------------
// Weak secrets are refused where they are used: `validate` and `serve` read the secrets
// as the gateway does, and an HS secret shorter than its hash, or a short exchange
// secret, is an error (`secret_too_short`) at its key path.
// ---------------------------------------------------------------------------------------

/// `fluxlit <args>` in `dir` with `env`, for commands that must exit by themselves
/// (`serve` on a config it refuses), without the developer's `JWT_HS256_SECRET`.
fn fluxlit_to_exit(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut env = env.to_vec();
    if !env.iter().any(|(name, _)| *name == "JWT_HS256_SECRET") {
        // Set, so the developer's own never counts; a config that reads it fails on it.
        env.push(("JWT_HS256_SECRET", ""));
    }
    cli::run_to_exit(args, dir, &env)
}

/// `text` as fluxlit.toml in a fresh directory.
fn dir_with(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fluxlit.toml"), text).unwrap();
    dir
}

/// `line:column` of the value of the first line of `text` starting with `key = `.
fn value_at(text: &str, key: &str) -> String {
    let prefix = format!("{key} = ");
    let index = text
        .lines()
        .position(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"));
    format!("{}:{}", index + 1, prefix.len() + 1)
}

/// Both `validate` and `serve` refuse the config in `dir` with `env`: exit 1, `expected`
/// on stderr, and never the secret itself.
fn assert_refused(dir: &Path, env: &[(&str, &str)], expected: &str, secret: &str) {
    for command in ["validate", "serve"] {
        let output = fluxlit_to_exit(&[command], dir, env);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{command}:\n{text}");
        assert!(
            text.contains(expected),
            "{command}: missing\n  {expected}\nin:\n{text}"
        );
        assert!(
            !text.contains(secret) && !stdout(&output).contains(secret),
            "{command} printed the secret:\n{text}"
        );
    }
}

#[test]
fn validate_serve_and_token_issue_refuse_an_hs_secret_shorter_than_its_hash() {
    for (algorithms, strongest, needed) in [
        ("[\"HS256\"]", "HS256", 32),
        ("[\"HS384\"]", "HS384", 48),
        ("[\"HS256\", \"HS512\"]", "HS512", 64),
    ] {
        let text = config(placeholder_upstream(), "{ env = \"JWT_HS256_SECRET\" }")
            .replace("[\"HS256\"]", algorithms);
        let dir = dir_with(&text);
        let short = "s".repeat(needed - 1);
        let expected = format!(
            "fluxlit.toml:{}: error: auth.providers.main.hs256_secret: the secret in environment \
             variable JWT_HS256_SECRET is {} bytes; {strongest} needs at least {needed} (RFC 7518 \
             §3.2), else tokens can be forged by guessing it [secret_too_short]",
            value_at(&text, "hs256_secret"),
            needed - 1,
        );
        assert_refused(
            dir.path(),
            &[("JWT_HS256_SECRET", &short)],
            &expected,
            &short,
        );

        // Nor does `token issue` mint with it: no gateway would accept the token.
        let output = token_issue(
            "--provider main --sub ada",
            dir.path(),
            &[("JWT_HS256_SECRET", &short)],
        );
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        assert!(
            stderr(&output).contains("auth.providers.main.hs256_secret: the secret in environment variable JWT_HS256_SECRET is")
                && stderr(&output).contains("[secret_too_short]"),
            "{}",
            stderr(&output)
        );
        assert!(stdout(&output).is_empty() && !stderr(&output).contains(&short));

        let long = "s".repeat(needed);
        let output = fluxlit_to_exit(&["validate"], dir.path(), &[("JWT_HS256_SECRET", &long)]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    }
}

/// `/api` behind `main`, whose tokens the oidc login `corp` mints; the exchange secret comes
/// from `$FLUXLIT_EXCHANGE_SECRET`, the others from files in the config's directory.
fn exchange_config() -> String {
    ConfigText::new()
        .server("listen = \"127.0.0.1:0\"\npublic_base_url = \"https://apps.example.com\"")
        .echo_upstream("app")
        .guarded_route("api", "/api", "app", "main")
        .mint_provider("main")
        .oidc(
            "corp",
            "https://idp.example.com",
            "fluxlit",
            "{ file = \"client.secret\" }",
            "main",
        )
        .with("exchange_secret = { env = \"FLUXLIT_EXCHANGE_SECRET\" }")
        .into()
}

#[test]
fn validate_and_serve_refuse_a_short_exchange_secret() {
    let text = exchange_config();
    let dir = dir_with(&text);
    std::fs::write(dir.path().join("hs256.secret"), HS_SECRET).unwrap();
    std::fs::write(dir.path().join("client.secret"), "client secret").unwrap();
    let short = "an exchange secret of 31 bytes.";
    assert_eq!(short.len(), 31);
    let expected = format!(
        "fluxlit.toml:{}: error: auth.providers.corp.exchange_secret: the exchange secret in \
         environment variable FLUXLIT_EXCHANGE_SECRET is 31 bytes; it needs at least 32, else \
         whoever reaches the exchange can guess it and redeem auth codes [secret_too_short]\n  \
         help: use a random secret of 32 bytes or more",
        value_at(&text, "exchange_secret"),
    );
    assert_refused(
        dir.path(),
        &[("FLUXLIT_EXCHANGE_SECRET", short)],
        &expected,
        short,
    );

    let long = "an exchange secret of 32 bytes..";
    let env = [("FLUXLIT_EXCHANGE_SECRET", long)];
    let output = fluxlit_to_exit(&["validate"], dir.path(), &env);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn validate_refuses_a_secret_it_cannot_read_as_serve_does() {
    let text = config(placeholder_upstream(), "{ file = \"secrets/hs256\" }");
    let dir = dir_with(&text);
    let expected = format!(
        "fluxlit.toml:{}: error: auth.providers.main.hs256_secret: cannot read secret file",
        value_at(&text, "hs256_secret"),
    );
    assert_refused(dir.path(), &[], &expected, "no secret to print");

    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/hs256"), format!("{HS_SECRET}\n")).unwrap();
    let output = fluxlit_to_exit(&["validate"], dir.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}
