//! HTTPS on the public listener, over real sockets: certificates made in the test
//! (rcgen), a real TLS client (reqwest on rustls) that trusts only the CA it is given.
//! HTTP/1.1 and HTTP/2 by ALPN, HSTS only over HTTPS, and a certificate rotated in
//! place: new handshakes get the new one, connections opened before keep working.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use http::{StatusCode, Version};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA and a leaf certificate it signed for `localhost` and `127.0.0.1`, as PEM.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki(ca_name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

/// Certificate and key files in a directory of their own (not the config's: the
/// watcher must watch it because the config names it).
struct CertFiles {
    dir: tempfile::TempDir,
}

impl CertFiles {
    fn new(pki: &Pki) -> Self {
        let files = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        files.install(pki);
        files
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// Writes the pair, each file by rename so no reader sees half a file.
    fn install(&self, pki: &Pki) {
        write_by_rename(&self.key(), &pki.key_pem);
        write_by_rename(&self.cert(), &pki.cert_pem);
    }
}

/// `header_read_timeout` of 300 ms, TLS with `tls` when given, and `/` to the built-in
/// echo upstream.
fn config(tls: Option<&CertFiles>) -> ConfigText {
    let mut config = ConfigText::new().server("header_read_timeout = \"300ms\"");
    if let Some(files) = tls {
        config = config.table(
            "[server.tls]",
            &format!(
                "cert_file = {:?}\nkey_file = {:?}",
                files.cert().display().to_string(),
                files.key().display().to_string()
            ),
        );
    }
    config.echo_upstream("echo").route("all", "/", "echo")
}

/// A gateway serving TLS with a leaf of a fresh test CA: the PKI, its files (which must
/// outlive the gateway) and the gateway.
async fn tls_gateway() -> (Pki, CertFiles, TestGateway) {
    let pki = pki("test CA");
    let files = CertFiles::new(&pki);
    let gateway = TestGateway::start(config(Some(&files))).await;
    (pki, files, gateway)
}

/// A client that trusts only `ca_pem` and reaches `localhost` at `addr`.
fn client(ca_pem: &str, addr: SocketAddr, http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .resolve("localhost", addr)
        .timeout(HANG_GUARD);
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

fn https(addr: SocketAddr, path: &str) -> String {
    format!("https://localhost:{}{path}", addr.port())
}

/// `GET path` over HTTPS on a fresh client that trusts only `ca_pem`.
async fn fetch(
    ca_pem: &str,
    addr: SocketAddr,
    http1_only: bool,
    path: &str,
) -> reqwest::Result<reqwest::Response> {
    client(ca_pem, addr, http1_only)
        .get(https(addr, path))
        .send()
        .await
}

#[tokio::test]
async fn serves_http1_and_http2_by_alpn_with_hsts() {
    let (pki, _files, gateway) = tls_gateway().await;

    for (http1_only, version) in [(true, Version::HTTP_11), (false, Version::HTTP_2)] {
        let response = fetch(&pki.ca_pem, gateway.addr(), http1_only, "/hello")
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), version);
        assert_eq!(
            response.headers()["strict-transport-security"],
            "max-age=31536000"
        );
        let echo: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(echo["path"], "/hello", "{echo}");
        assert_eq!(echo["headers"]["x-forwarded-proto"], "https", "{echo}");
    }
}

#[tokio::test]
async fn hsts_is_sent_over_plain_http_only_when_a_trusted_proxy_says_https() {
    let gateway = TestGateway::start(config(None).trust_loopback()).await;
    let addr = gateway.addr();

    let plain = send(addr, get(addr, "/", &[])).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert!(plain.headers.get("strict-transport-security").is_none());
    // The other security headers are still there.
    assert!(plain.headers.get("x-content-type-options").is_some());

    let behind_tls_proxy = send(addr, get(addr, "/", &[("x-forwarded-proto", "https")])).await;
    assert_eq!(
        behind_tls_proxy.headers["strict-transport-security"],
        "max-age=31536000"
    );

    let untrusted = send_from(
        UNTRUSTED,
        addr,
        get(addr, "/", &[("x-forwarded-proto", "https")]),
    )
    .await;
    assert!(untrusted.headers.get("strict-transport-security").is_none());
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_handshakes_and_keeps_open_connections() {
    let old = pki("old CA");
    let new = pki("new CA");
    let files = CertFiles::new(&old);
    let gateway = TestGateway::start(config(Some(&files))).await;
    let addr = gateway.addr();

    // Connections opened before the swap, one per protocol; each client keeps its own.
    let kept_h2 = client(&old.ca_pem, addr, false);
    let kept_h1 = client(&old.ca_pem, addr, true);
    for kept in [&kept_h2, &kept_h1] {
        let response = kept.get(https(addr, "/before")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes().await.unwrap();
    }

    // fluxlit.toml does not change: only the files it names do.
    files.install(&new);
    gateway.wait_for_generation(2).await;

    for (kept, version) in [(&kept_h2, Version::HTTP_2), (&kept_h1, Version::HTTP_11)] {
        // These clients trust only the old CA: a new handshake would fail, so success
        // means the connection from before the swap is still open and serving.
        let response = kept.get(https(addr, "/after")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), version);
    }

    let fresh_old = fetch(&old.ca_pem, addr, false, "/").await;
    let error = fresh_old.expect_err("a new handshake must present the new certificate");
    assert!(error.is_connect(), "{error:?}");

    let fresh_new = fetch(&new.ca_pem, addr, false, "/").await.unwrap();
    assert_eq!(fresh_new.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_broken_certificate_at_reload_is_rejected_and_the_old_one_keeps_serving() {
    let (pki, files, gateway) = tls_gateway().await;

    write_by_rename(
        &files.cert(),
        "-----BEGIN CERTIFICATE-----\nnot base64 !!\n",
    );
    gateway.wait_for_rejection().await;
    let error = gateway.reload_errors().join("\n");
    assert!(error.contains("server.tls.cert_file"), "{error}");
    assert!(error.contains("cert.pem"), "{error}");
    assert_eq!(gateway.gateway.snapshot().generation, 1);

    let response = fetch(&pki.ca_pem, gateway.addr(), false, "/")
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn turning_tls_off_by_reload_is_refused_for_that_key() {
    let (pki, _files, gateway) = tls_gateway().await;

    gateway.write_config(config(None).text());
    gateway.wait_for_generation(2).await;
    let refused = gateway.gateway.reloader().status().refused_static_keys;
    assert!(
        refused.iter().any(|key| key.starts_with("server.tls")),
        "{refused:?}"
    );
    let response = fetch(&pki.ca_pem, gateway.addr(), true, "/").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_missing_key_at_start_is_a_config_error_naming_the_file() {
    let pki = pki("test CA");
    let files = CertFiles::new(&pki);
    std::fs::write(files.key(), "no key in here\n").unwrap();
    let error = start_error(config(Some(&files)), &[]).await;
    assert!(error.contains("server.tls.key_file"), "{error}");
    assert!(error.contains("key.pem"), "{error}");
    assert!(error.contains("no PEM private key"), "{error}");
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_is_closed() {
    let (_pki, _files, gateway) = tls_gateway().await;

    let mut stream = tokio::net::TcpStream::connect(gateway.addr())
        .await
        .unwrap();
    // The first bytes of a ClientHello record, then nothing.
    stream
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(HANG_GUARD, stream.read(&mut buf))
        .await
        .expect("the gateway closes a stalled handshake (header_read_timeout = 300ms)");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

/// A TLS connection to `localhost` at `addr`, trusting `ca_pem`, offering `alpn`.
async fn tls_connect(
    ca_pem: &str,
    addr: SocketAddr,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    tls
}

/// An HTTP/2 connection made by hand (tokio-rustls + hyper), to keep hold of it.
async fn h2_connection(
    ca_pem: &str,
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    let tls = tls_connect(ca_pem, addr, b"h2").await;
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    sender
}

#[tokio::test]
async fn an_idle_http2_connection_is_not_taken_for_a_slow_request_head() {
    // header_read_timeout is 300ms; idle_timeout stays at its default of a minute.
    let (pki, _files, gateway) = tls_gateway().await;
    let mut sender = h2_connection(&pki.ca_pem, gateway.addr()).await;
    for round in 0..2 {
        let request = http::Request::get(https(gateway.addr(), "/"))
            .body(http_body_util::Empty::new())
            .unwrap();
        let response = tokio::time::timeout(HANG_GUARD, sender.send_request(request))
            .await
            .unwrap()
            .unwrap_or_else(|error| panic!("round {round}: {error}"));
        assert_eq!(response.status(), StatusCode::OK);
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap();
        // Pings and window updates may cross the connection meanwhile.
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
}

#[tokio::test]
async fn websockets_cross_the_tls_listener() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let upstream = ws::spawn_echo_upstream("/ws").await;
    let pki = pki("test CA");
    let files = CertFiles::new(&pki);
    let gateway = TestGateway::start(config(Some(&files)).route_to("ws", "/ws", upstream)).await;

    let tls = tls_connect(&pki.ca_pem, gateway.addr(), b"http/1.1").await;
    let url = format!("wss://localhost:{}/ws", gateway.addr().port());
    let (mut socket, response) =
        tokio::time::timeout(HANG_GUARD, tokio_tungstenite::client_async(url, tls))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    socket.send(Message::text("over tls")).await.unwrap();
    let echoed = tokio::time::timeout(HANG_GUARD, socket.next())
        .await
        .unwrap();
    assert_eq!(echoed.unwrap().unwrap(), Message::text("over tls"));
}
