//! Helpers for the integration tests: a gateway on an ephemeral port with its config in
//! a temporary directory, small axum upstreams, and an HTTP client that can choose its
//! source address (127.0.0.2 is loopback too, and untrusted when only 127.0.0.1 is).
//!
//! The submodules hold the rest: [`config`] builds config files as text, [`raw`] speaks
//! HTTP/1.1 as bytes where a client library would tidy the request up, [`cli`] runs the
//! `fluxlit` binary, [`ws`] is a WebSocket echo upstream, [`schema`] checks config text
//! against the committed JSON Schema, and [`auth`] has the test keys, tokens and
//! identity-provider stand-ins of the auth tests, [`idp`] the OpenID Connect provider
//! of the login and session tests, [`measure`] what the measurements run by hand share.
#![allow(dead_code)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod h1_reference;
pub mod https;
pub mod idp;
pub mod measure;
pub mod pki;
pub mod raw;
pub mod schema;
pub mod ws;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::routing::any;
use bytes::Bytes;
use fluxlit::Gateway;
use fluxlit::reload::{ReloadOutcome, Trigger};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub use config::ConfigText;

// ---------------------------------------------------------------------------------------
// Peers and hang guards.
// ---------------------------------------------------------------------------------------

/// The trusted proxy wherever a test trusts one (`proxies = ["127.0.0.1/32"]`).
pub const TRUSTED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
/// An ordinary client: loopback too, but outside every trusted range.
pub const UNTRUSTED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// A second proxy (loopback too), for tests that trust two peers for different things:
/// say, a load balancer in `trust.proxies` beside the forward-auth proxy [`TRUSTED`].
pub const OTHER_PROXY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
/// How long any single step may take before the test is declared hung. Never a
/// statement about speed.
pub const HANG_GUARD: Duration = Duration::from_secs(10);

/// Runs `future`, failing the test (instead of hanging it) after [`HANG_GUARD`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    within_for(HANG_GUARD, what, future).await
}

/// [`within`] with a limit of its own, for steps that are long on purpose.
pub async fn within_for<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    // Boxed: nested guards would otherwise stack large futures inside each other.
    match tokio::time::timeout(limit, Box::pin(future)).await {
        Ok(value) => value,
        Err(_) => panic!("hang guard: {what} did not finish within {limit:?}"),
    }
}

/// Calls `attempt` every 50 ms until it returns `Some` (hang guard: [`HANG_GUARD`]).
pub async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hang guard: {what} never happened within {HANG_GUARD:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `condition` every 10 ms until it holds (hang guard: [`HANG_GUARD`]).
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "hang guard: {what} never happened within {HANG_GUARD:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A loopback address nothing listens on: bound once, then released. Connections to it
/// are refused, and a process of the test's own can bind it.
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

// ---------------------------------------------------------------------------------------
// Gateways.
// ---------------------------------------------------------------------------------------

/// A gateway serving a config file in its own temporary directory.
pub struct TestGateway {
    pub gateway: Gateway,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl TestGateway {
    /// Starts a gateway on `config`. The text may leave out `[server] listen`: it is set
    /// to `127.0.0.1:0` (an ephemeral port) when absent, by inserting a line after
    /// `[server]` (or two lines at the top when there is no `[server]`), so tests that
    /// check line numbers should set `listen` themselves.
    pub async fn start(config: impl AsRef<str>) -> Self {
        start_with_files(config, &[]).await
    }

    fn started(
        gateway: Result<Gateway, impl std::fmt::Display>,
        dir: tempfile::TempDir,
        config_path: PathBuf,
    ) -> Self {
        let gateway = gateway.unwrap_or_else(|error| panic!("gateway starts: {error}"));
        Self {
            gateway,
            dir,
            config_path,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.gateway.addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.addr)
    }

    /// The admin listener's address (the config must have `[admin]`).
    pub fn admin(&self) -> SocketAddr {
        self.gateway
            .admin_addr
            .expect("the config has an [admin] listener")
    }

    /// Rewrites the config file in place (listen kept ephemeral-compatible: the running
    /// listen address is written back so the reload does not touch a static key).
    pub fn write_config(&self, config: &str) {
        std::fs::write(&self.config_path, self.pin_listen(config)).expect("write config");
    }

    /// The text with `[server] listen` set to the running address, when absent.
    pub fn pin_listen(&self, config: &str) -> String {
        let listen = self.gateway.snapshot().config.server.listen;
        with_listen(config, &listen.to_string())
    }

    /// Waits until the snapshot's generation reaches `generation`.
    pub async fn wait_for_generation(&self, generation: u64) {
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        while self.gateway.snapshot().generation < generation {
            assert!(
                tokio::time::Instant::now() < deadline,
                "generation {generation} not reached; still {} (last error: {:?})",
                self.gateway.snapshot().generation,
                self.gateway.reloader().status().last_error
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until a reload has been rejected (hang guard: [`HANG_GUARD`]).
    pub async fn wait_for_rejection(&self) {
        let reloader = self.gateway.reloader();
        wait_until("the rejection", || reloader.status().last_error.is_some()).await;
    }

    /// The errors of the last rejected reload; panics when there is none.
    pub fn reload_errors(&self) -> Vec<String> {
        self.gateway
            .reloader()
            .status()
            .last_error
            .expect("the failure is reported")
            .errors
    }

    /// Reloads now, as SIGHUP asks for, off the runtime's thread (a reload reads the
    /// file until two reads agree).
    pub async fn reload_now(&self) -> ReloadOutcome {
        let reloader = Arc::clone(self.gateway.reloader());
        within(
            "reload",
            tokio::task::spawn_blocking(move || reloader.reload(Trigger::Manual)),
        )
        .await
        .expect("reload task")
    }
}

/// Starts a gateway on `config` in a fresh temporary directory that already holds
/// `files` (secrets, JWKS files) as `(name, contents)`. `listen` is made ephemeral.
pub async fn start_with_files(config: impl AsRef<str>, files: &[(&str, &str)]) -> TestGateway {
    let (dir, config_path) = config_dir(config.as_ref(), files);
    let started = Gateway::start(config_path.clone()).await;
    TestGateway::started(started, dir, config_path)
}

/// [`start_with_files`] with `environment` instead of the process's variables.
pub async fn start_with_environment(
    config: impl AsRef<str>,
    files: &[(&str, &str)],
    environment: TestEnvironment,
) -> TestGateway {
    let (dir, config_path) = config_dir(config.as_ref(), files);
    let started = Gateway::start_with_environment(config_path.clone(), Arc::new(environment)).await;
    TestGateway::started(started, dir, config_path)
}

/// Why a gateway refuses to start on `config` with `files` beside it: the error as the
/// gateway words it. Panics when it starts.
pub async fn start_error(config: impl AsRef<str>, files: &[(&str, &str)]) -> String {
    let (_dir, config_path) = config_dir(config.as_ref(), files);
    match Gateway::start(config_path).await {
        Ok(_) => panic!("the gateway started on a config it should refuse"),
        Err(error) => error.to_string(),
    }
}

/// Every error `fluxlit validate` would print for `config` (with `files` beside it), one
/// a line; panics when the file loads.
pub fn load_errors(config: impl AsRef<str>, files: &[(&str, &str)]) -> String {
    let (_dir, config_path) = config_dir(config.as_ref(), files);
    match fluxlit::config::load(&config_path) {
        Ok(_) => panic!("the config loads:\n{}", config.as_ref()),
        Err(error) => error.render_errors().join("\n"),
    }
}

/// A temporary directory holding `files` and `config` (listen made ephemeral) as
/// `fluxlit.toml`, and that file's path.
pub fn config_dir(config: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).expect("write a file next to the config");
    }
    let config_path = dir.path().join("fluxlit.toml");
    std::fs::write(&config_path, with_ephemeral_listen(config)).expect("write config");
    (dir, config_path)
}

/// Environment variables for a gateway, instead of the process's.
#[derive(Debug, Default)]
pub struct TestEnvironment(pub BTreeMap<String, String>);

impl TestEnvironment {
    pub fn of(variables: &[(&str, &str)]) -> Self {
        Self(
            variables
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        )
    }
}

impl fluxlit::auth::secrets::Environment for TestEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

pub fn with_ephemeral_listen(config: &str) -> String {
    with_listen(config, "127.0.0.1:0")
}

fn with_listen(config: &str, listen: &str) -> String {
    // Find the [server] table and whether it already sets `listen`.
    let lines: Vec<&str> = config.lines().collect();
    let Some(server) = lines.iter().position(|l| l.trim() == "[server]") else {
        return format!("[server]\nlisten = \"{listen}\"\n\n{config}");
    };
    let table_end = lines[server + 1..]
        .iter()
        .position(|l| l.trim_start().starts_with('['))
        .map_or(lines.len(), |i| server + 1 + i);
    if lines[server + 1..table_end]
        .iter()
        .any(|l| l.trim_start().starts_with("listen"))
    {
        return config.to_owned();
    }
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    out.insert(server + 1, format!("listen = \"{listen}\""));
    out.join("\n") + "\n"
}

/// Writes a file by writing a sibling and renaming it over the original, the way many
/// editors save.
pub fn write_by_rename(path: &Path, text: &str) {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    std::fs::write(&temp, text).expect("write temp");
    std::fs::rename(&temp, path).expect("rename over the original");
}

// ---------------------------------------------------------------------------------------
// Upstreams.
// ---------------------------------------------------------------------------------------

/// Serves `router` on an ephemeral loopback port.
pub async fn spawn_upstream(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("upstream serves");
    });
    addr
}

/// An upstream that answers every request with JSON describing what it received:
/// `{"name", "method", "path", "query", "headers": {name: [values]}, "body_len"}`.
pub async fn spawn_recording_upstream(name: &'static str) -> SocketAddr {
    spawn_upstream(
        Router::new().fallback(any(move |request: Request| async move {
            axum::Json(recorded(name, request).await)
        })),
    )
    .await
}

/// A TCP listener that only counts the connections made to it: a JWKS URL or an
/// identity provider that records whether the gateway reached out.
#[derive(Debug)]
pub struct ContactRecorder {
    pub addr: SocketAddr,
    contacts: Arc<std::sync::atomic::AtomicUsize>,
}

impl ContactRecorder {
    pub async fn spawn() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let contacts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&contacts);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(stream);
            }
        });
        Self { addr, contacts }
    }

    pub fn contacts(&self) -> usize {
        self.contacts.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A recording upstream (answers JSON of what it received, like
/// [`spawn_recording_upstream`]) that also counts the requests reaching it.
#[derive(Debug, Clone)]
pub struct CountingUpstream {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl CountingUpstream {
    pub async fn spawn() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let router = Router::new().fallback(any(move |request: Request| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                axum::Json(recorded("counting", request).await)
            }
        }));
        let addr = spawn_upstream(router).await;
        Self { addr, hits }
    }

    /// How many requests have reached it.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// An upstream that answers every request with a body of `size` bytes, written as fast
/// as its socket takes them, and counts its open connections and the bytes it wrote:
/// what a client that stops reading makes the gateway hold upstream.
#[derive(Debug)]
pub struct FloodingUpstream {
    pub addr: SocketAddr,
    /// Connections open to it (each serves requests one after another until the gateway
    /// closes it).
    pub open: Arc<AtomicUsize>,
    pub written: Arc<AtomicU64>,
}

impl FloodingUpstream {
    pub async fn spawn(size: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let (open_count, written_count) = (Arc::clone(&open), Arc::clone(&written));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (open, written) = (Arc::clone(&open_count), Arc::clone(&written_count));
                open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    // One request after another, until the gateway closes the connection.
                    'requests: loop {
                        let mut head = Vec::new();
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buffer).await {
                                Ok(0) | Err(_) => break 'requests,
                                Ok(n) => head.extend_from_slice(&buffer[..n]),
                            }
                        }
                        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            break;
                        }
                        let chunk = vec![b'x'; 64 * 1024];
                        let mut left = size;
                        while left > 0 {
                            let n = left.min(chunk.len() as u64) as usize;
                            if stream.write_all(&chunk[..n]).await.is_err() {
                                break 'requests;
                            }
                            written.fetch_add(n as u64, Ordering::SeqCst);
                            left -= n as u64;
                        }
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            open,
            written,
        }
    }

    /// How many connections are open to it.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// What a recording upstream answers for `request`.
pub async fn recorded(name: &str, request: Request) -> Value {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, value) in &parts.headers {
        headers
            .entry(key.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    json!({
        "name": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_len": body.len(),
    })
}

/// The values a recording upstream saw for header `name`, from its JSON answer.
pub fn recorded_header(seen: &Value, name: &str) -> Vec<String> {
    seen["headers"][name]
        .as_array()
        .map(|values| {
            values
                .iter()
                .map(|v| v.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every value of header `name`, in order, as text.
pub fn header_values(headers: &http::HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// An axum body from bytes (for upstream handlers).
pub fn body(bytes: impl Into<Bytes>) -> Body {
    Body::from(bytes.into())
}

// ---------------------------------------------------------------------------------------
// Clients.
// ---------------------------------------------------------------------------------------

/// A response as the test client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The values an upstream recorded for header `name` (recording upstream only).
    pub fn upstream_header(&self, name: &str) -> Vec<String> {
        recorded_header(&self.json(), name)
    }

    /// Asserts the status, and that the body says `text`; the body is shown when not.
    pub fn assert_says(&self, status: u16, text: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        assert!(
            self.text().contains(text),
            "the body should say {text:?}: {}",
            self.text()
        );
    }

    /// The response header `name`, when it is there and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request from `source` (e.g. 127.0.0.2) to `addr` on a fresh connection.
pub async fn send_from(
    source: IpAddr,
    addr: SocketAddr,
    request: http::Request<Full<Bytes>>,
) -> Reply {
    let stream = raw::connect_from(source, addr).await;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let response = sender.send_request(request).await.expect("response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Sends one request from 127.0.0.1.
pub async fn send(addr: SocketAddr, request: http::Request<Full<Bytes>>) -> Reply {
    send_from(TRUSTED, addr, request).await
}

/// Sends `request` to `gateway` from `source` on a fresh connection, hang-guarded.
pub async fn send_as(
    source: IpAddr,
    gateway: &impl Reachable,
    request: http::Request<Full<Bytes>>,
) -> Reply {
    let what = format!("{} {} from {source}", request.method(), request.uri());
    within(&what, send_from(source, gateway.addr(), request)).await
}

/// `GET path` with `Host: host` and extra headers (names may repeat).
pub fn get_for_host(
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> http::Request<Full<Bytes>> {
    let mut builder = http::Request::get(path).header("host", host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::new())).expect("request")
}

/// `GET path` with extra headers, with `Host` set to the gateway's address.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> http::Request<Full<Bytes>> {
    get_for_host(path, &addr.to_string(), headers)
}

/// `GET path` with `Host` set to the gateway and extra headers.
pub fn get_with(
    gateway: &impl Reachable,
    path: &str,
    headers: &[(&str, &str)],
) -> http::Request<Full<Bytes>> {
    get(gateway.addr(), path, headers)
}

/// `GET path` from `source`, hang-guarded.
pub async fn get_from(
    source: IpAddr,
    gateway: &impl Reachable,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    send_as(source, gateway, get_with(gateway, path, headers)).await
}

/// The status of `GET path` from 127.0.0.1, hang-guarded.
pub async fn status_of(addr: SocketAddr, path: &str) -> http::StatusCode {
    within("request", send(addr, get(addr, path, &[])))
        .await
        .status
}

/// Something with a public listener requests can be sent to: an in-process gateway, or
/// a `fluxlit serve` process of a test's own.
pub trait Reachable {
    fn addr(&self) -> SocketAddr;
}

impl Reachable for TestGateway {
    fn addr(&self) -> SocketAddr {
        self.gateway.addr
    }
}

impl Reachable for SocketAddr {
    fn addr(&self) -> SocketAddr {
        *self
    }
}

impl<T: Reachable + ?Sized> Reachable for Arc<T> {
    fn addr(&self) -> SocketAddr {
        (**self).addr()
    }
}
