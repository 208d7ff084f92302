//! A `rediss://` login store: a real `redis-server` with TLS on, certificates made here
//! (rcgen). Sessions live in it when its certificate chains to `store_tls.ca_file`;
//! a certificate from another CA, or a Redis that wants a client certificate the
//! gateway does not present, leaves logins failing with the reason in `/snapshot`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use axum::Router;
use axum::routing::any;
use common::idp::*;
use common::*;
use rcgen::ExtendedKeyUsagePurpose;

const PAGE: (&str, &str) = ("accept", "text/html");
const SESSION_KEY: &str = "test-only session key, thirty-two bytes and more";

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all PEM.
struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki(name: &str) -> Pki {
    let ca = common::pki::Ca::new(name);
    let (server_cert, server_key) = ca.server();
    let (client_cert, client_key) =
        ca.leaf(&["fluxlit-gateway"], ExtendedKeyUsagePurpose::ClientAuth);
    Pki {
        ca_pem: ca.pem,
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

/// A redis-server with TLS only (no plain port), killed when dropped.
struct TlsRedis {
    port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    async fn start(pki: &Pki, client_certificates: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("ca.pem", &pki.ca_pem),
            ("server.pem", &pki.server_cert),
            ("server.key", &pki.server_key),
        ] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let child = std::process::Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--tls-cert-file", &path("server.pem")])
            .args(["--tls-key-file", &path("server.key")])
            .args(["--tls-ca-cert-file", &path("ca.pem")])
            .args([
                "--tls-auth-clients",
                if client_certificates { "yes" } else { "no" },
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start redis-server (is it installed, with TLS?): {error}")
            });
        eventually("redis-server listening for TLS", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        })
        .await;
        Self {
            port,
            child,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/` behind a session of `corp`, whose store is `redis` with `store_tls` lines.
async fn gateway(
    idp: &Idp,
    redis: &TlsRedis,
    store_tls: &str,
    files: &[(&str, &str)],
) -> TestGateway {
    let app = spawn_upstream(Router::new().fallback(any(|| async { "the app" }))).await;
    let config: String = ConfigText::new()
        .admin()
        .server("public_base_url = \"http://app.fluxlit.test\"")
        .upstream("ui", app)
        .guarded_route("ui", "/", "ui", "corp")
        .provider(
            "corp",
            "oidc",
            &format!(
                "issuer_url = \"{}\"\nclient_id = \"{CLIENT_ID}\"\n\
                 client_secret = {{ file = \"client.secret\" }}\n\
                 session_key = {{ file = \"session.key\" }}\n\
                 store = \"{}\"\n{store_tls}",
                idp.issuer(),
                redis.url()
            ),
        )
        .into();
    let mut all = vec![
        ("client.secret", CLIENT_SECRET),
        ("session.key", SESSION_KEY),
    ];
    all.extend_from_slice(files);
    let gateway = start_with_files(config, &all).await;
    eventually("OIDC discovery", || async {
        let snapshot = gateway.gateway.snapshot();
        snapshot.providers["corp"]
            .oidc_status()
            .unwrap()
            .discovery
            .loaded
            .then_some(())
    })
    .await;
    gateway
}

/// A page load, a login at the IdP, and the callback: its reply.
async fn log_in(gateway: &TestGateway, idp: &Idp) -> Reply {
    let reply = get_from(TRUSTED, gateway, "/", &[PAGE]).await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    let reply = get_from(TRUSTED, gateway, location(&reply), &[]).await;
    assert_eq!(reply.status, 302, "login: {}", reply.text());
    let cookie = login_cookie(&reply);
    let (code, state, _) = authorize_at_idp(idp, location(&reply)).await;
    callback(gateway, &code, &state, Some(&cookie)).await
}

fn session_cookie(reply: &Reply) -> String {
    set_cookies(reply)
        .into_iter()
        .find_map(|text| {
            let pair = text.split(';').next()?;
            pair.starts_with("fluxlit-session=")
                .then(|| pair.to_owned())
        })
        .expect("a session cookie")
}

fn store_error(gateway: &TestGateway) -> Option<String> {
    let snapshot = gateway.gateway.snapshot();
    snapshot.providers["corp"]
        .oidc_status()
        .unwrap()
        .store
        .last_error
}

#[tokio::test]
async fn sessions_live_in_a_rediss_store_whose_certificate_chains_to_the_ca_file() {
    let pki = pki("redis test CA");
    let redis = TlsRedis::start(&pki, false).await;
    let idp = Idp::spawn(true).await;
    let gateway = gateway(
        &idp,
        &redis,
        "store_tls = { ca_file = \"redis-ca.pem\" }",
        &[("redis-ca.pem", &pki.ca_pem)],
    )
    .await;
    let reply = log_in(&gateway, &idp).await;
    assert_eq!(reply.status, 302, "callback: {}", reply.text());
    let cookie = session_cookie(&reply);
    let page = get_from(TRUSTED, &gateway, "/", &[PAGE, ("cookie", &cookie)]).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(page.text(), "the app");
    assert_eq!(store_error(&gateway), None);
    let status = gateway.gateway.snapshot().providers["corp"]
        .oidc_status()
        .unwrap()
        .store;
    assert_eq!(status.url.as_deref(), Some(redis.url().as_str()));
}

#[tokio::test]
async fn a_rediss_store_with_a_certificate_from_another_ca_is_refused_and_says_why() {
    let ours = pki("redis test CA");
    let other = pki("another CA");
    let redis = TlsRedis::start(&ours, false).await;
    let idp = Idp::spawn(true).await;
    // The CA named is not the one that signed Redis's certificate; nor are the
    // platform's roots (no store_tls at all).
    for (store_tls, files) in [
        (
            "store_tls = { ca_file = \"other-ca.pem\" }",
            vec![("other-ca.pem", other.ca_pem.as_str())],
        ),
        ("", Vec::new()),
    ] {
        let gateway = gateway(&idp, &redis, store_tls, &files).await;
        let reply = log_in(&gateway, &idp).await;
        assert_eq!(reply.status, 503, "{store_tls:?}: {}", reply.text());
        let why = store_error(&gateway).expect("the store's last error");
        assert!(
            why.to_lowercase().contains("certificate"),
            "{store_tls:?}: the reason names the certificate: {why}"
        );
    }
}

#[tokio::test]
async fn a_redis_that_asks_for_a_client_certificate_gets_the_one_configured() {
    let pki = pki("redis test CA");
    let redis = TlsRedis::start(&pki, true).await;
    let idp = Idp::spawn(true).await;
    let files = [
        ("redis-ca.pem", pki.ca_pem.as_str()),
        ("client.pem", pki.client_cert.as_str()),
        ("client.key", pki.client_key.as_str()),
    ];

    let without = gateway(
        &idp,
        &redis,
        "store_tls = { ca_file = \"redis-ca.pem\" }",
        &files,
    )
    .await;
    let reply = log_in(&without, &idp).await;
    assert_eq!(reply.status, 503, "no client certificate: {}", reply.text());
    assert!(store_error(&without).is_some());

    let with = gateway(
        &idp,
        &redis,
        "store_tls = { ca_file = \"redis-ca.pem\", client_cert = \"client.pem\", \
         client_key = { file = \"client.key\" } }",
        &files,
    )
    .await;
    let reply = log_in(&with, &idp).await;
    assert_eq!(
        reply.status,
        302,
        "callback: {} {:?}",
        reply.text(),
        store_error(&with)
    );
    let cookie = session_cookie(&reply);
    let page = get_from(TRUSTED, &with, "/", &[PAGE, ("cookie", &cookie)]).await;
    assert_eq!(page.status, 200, "{}", page.text());
}

#[tokio::test]
async fn store_tls_mistakes_are_refused_at_load() {
    let idp = Idp::spawn(true).await;
    let provider = |store: &str, tls: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\npublic_base_url = \"http://app.test\"\n\
             [upstreams.ui]\nurl = \"http://127.0.0.1:9\"\n\
             [[routes]]\nname = \"ui\"\npath_prefix = \"/\"\nupstream = \"ui\"\nauth = \"corp\"\n\
             [auth.providers.corp]\nkind = \"oidc\"\nissuer_url = \"{}\"\n\
             client_id = \"{CLIENT_ID}\"\nclient_secret = {{ file = \"client.secret\" }}\n\
             session_key = {{ file = \"session.key\" }}\nstore = \"{store}\"\n{tls}",
            idp.issuer()
        )
    };
    let files = [
        ("client.secret", CLIENT_SECRET),
        ("session.key", SESSION_KEY),
        ("bad.pem", "not a certificate"),
    ];
    // What validation refuses, and what compile refuses when it reads the files.
    let refusal = |text: String| async move {
        let (_dir, path) = config_dir(&text, &files);
        match fluxlit::config::load(&path) {
            Err(error) => error.render_errors().join("\n"),
            Ok(_) => start_error(&text, &files).await,
        }
    };
    for (store, tls, expected) in [
        (
            "redis://127.0.0.1:6379/0",
            "store_tls = { ca_file = \"bad.pem\" }",
            "applies to a rediss:// store only",
        ),
        (
            "rediss://127.0.0.1:6380/0",
            "store_tls = { client_cert = \"bad.pem\" }",
            "client_cert and client_key together",
        ),
        (
            "rediss://127.0.0.1:6380/0",
            "store_tls = { ca_file = \"missing.pem\" }",
            "cannot read",
        ),
        (
            "rediss://127.0.0.1:6380/0#insecure",
            "",
            "no query or fragment",
        ),
    ] {
        let error = refusal(provider(store, tls)).await;
        assert!(error.contains(expected), "{store} {tls}: {error}");
    }
    // Unusable PEM is found at load too, not at the first login.
    let error = refusal(provider(
        "rediss://127.0.0.1:6380/0",
        "store_tls = { ca_file = \"bad.pem\" }",
    ))
    .await;
    assert!(error.contains("store_tls"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_store_tls_the_platform_roots_are_used_and_ssl_cert_file_is_honoured() {
    let pki = pki("redis test CA");
    let redis = TlsRedis::start(&pki, false).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    for (name, text) in [
        ("client.secret", CLIENT_SECRET),
        ("session.key", SESSION_KEY),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\npublic_base_url = \"https://app.example.com\"\n\
         [upstreams.ui]\nurl = \"http://127.0.0.1:9\"\n\
         [[routes]]\nname = \"ui\"\npath_prefix = \"/\"\nupstream = \"ui\"\nauth = \"corp\"\n\
         [auth.providers.corp]\nkind = \"oidc\"\nissuer_url = \"https://idp.example.com\"\n\
         client_id = \"{CLIENT_ID}\"\nclient_secret = {{ file = \"client.secret\" }}\n\
         session_key = {{ file = \"session.key\" }}\nstore = \"{}\"\n",
        redis.url()
    );
    std::fs::write(dir.path().join("fluxlit.toml"), &config).unwrap();
    // `fluxlit doctor` connects to the store as the gateway does, and PINGs it.
    let doctor = |env: Vec<(&'static str, String)>| {
        let dir = dir.path().to_owned();
        tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let output = cli::run(&["doctor", "--format", "json"], &dir, &env);
            String::from_utf8_lossy(&output.stdout).into_owned()
        })
    };
    // The test CA is not among the machine's roots.
    let untrusted = doctor(Vec::new()).await.unwrap();
    assert!(untrusted.contains("redis_unreachable"), "{untrusted}");
    assert!(
        untrusted.to_lowercase().contains("certificate"),
        "{untrusted}"
    );
    // SSL_CERT_FILE replaces them, as it does for OpenSSL-based clients.
    let trusted = doctor(vec![("SSL_CERT_FILE", ca_file.display().to_string())])
        .await
        .unwrap();
    assert!(!trusted.contains("redis_unreachable"), "{trusted}");
}
