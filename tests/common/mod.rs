//! Helpers for the integration tests: a gateway on an ephemeral port with its config in
//! a temporary directory, small axum upstreams, and an HTTP client that can choose its
//! source address (127.0.0.2 is loopback too, and untrusted when only 127.0.0.1 is).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::routing::any;
use bytes::Bytes;
use fluxlit::Gateway;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket};

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
    pub async fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("fluxlit.toml");
        std::fs::write(&config_path, with_ephemeral_listen(config)).expect("write config");
        let gateway = Gateway::start(config_path.clone())
            .await
            .expect("gateway starts");
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
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
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
            axum::Json(json!({
                "name": name,
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "query": parts.uri.query(),
                "headers": headers,
                "body_len": body.len(),
            }))
        })),
    )
    .await
}

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
        self.json()["headers"][name]
            .as_array()
            .map(|values| {
                values
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Sends one request from `source` (e.g. 127.0.0.2) to `addr` on a fresh connection.
pub async fn send_from(
    source: IpAddr,
    addr: SocketAddr,
    request: http::Request<Full<Bytes>>,
) -> Reply {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind source address");
    let stream = socket.connect(addr).await.expect("connect to gateway");
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
    send_from(IpAddr::from([127, 0, 0, 1]), addr, request).await
}

/// `GET path` with extra headers, with `Host` set to the gateway's address.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> http::Request<Full<Bytes>> {
    let mut builder = http::Request::get(path).header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::new())).expect("request")
}

/// Writes a file by writing a sibling and renaming it over the original, the way many
/// editors save.
pub fn write_by_rename(path: &Path, text: &str) {
    let temp = path.with_extension("toml.tmp");
    std::fs::write(&temp, text).expect("write temp");
    std::fs::rename(&temp, path).expect("rename over config");
}

/// An axum body from bytes (for upstream handlers).
pub fn body(bytes: impl Into<Bytes>) -> Body {
    Body::from(bytes.into())
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

impl<T: Reachable + ?Sized> Reachable for std::sync::Arc<T> {
    fn addr(&self) -> SocketAddr {
        (**self).addr()
    }
}
