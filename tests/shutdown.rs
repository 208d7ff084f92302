//! Graceful shutdown of the real binary: SIGTERM while a slow request is in flight and
//! a WebSocket is open. `/readyz` turns 503, new connections are refused, the request
//! finishes, both WebSocket peers get a 1001 close frame, and the process exits 0 —
//! also when the grace period ends before a request does. Idle keep-alive connections
//! are closed at once, and an HTTP/2 connection is ended once its requests are done.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message as ServerMessage, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing;
use common::cli::Serve;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// What the upstream saw: requests that reached it, and the close code its WebSocket got.
#[derive(Clone, Default)]
struct Upstream {
    slow_started: Arc<Notify>,
    ws_close_code: Arc<Mutex<Option<u16>>>,
}

/// `/slow?ms=N` answers "done" after N milliseconds; `/ws` echoes and records the close.
async fn spawn_slow_and_ws_upstream() -> (SocketAddr, Upstream) {
    let state = Upstream::default();
    let router = Router::new()
        .route("/slow", routing::get(slow))
        .route("/ws", routing::get(ws))
        .with_state(state.clone());
    (spawn_upstream(router).await, state)
}

async fn slow(
    State(state): State<Upstream>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, u64>>,
) -> &'static str {
    state.slow_started.notify_one();
    tokio::time::sleep(Duration::from_millis(
        query.get("ms").copied().unwrap_or(1500),
    ))
    .await;
    "done"
}

async fn ws(State(state): State<Upstream>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| echo(socket, state))
}

async fn echo(mut socket: WebSocket, state: Upstream) {
    while let Some(Ok(message)) = socket.recv().await {
        match message {
            ServerMessage::Text(_) | ServerMessage::Binary(_) => {
                if socket.send(message).await.is_err() {
                    return;
                }
            }
            ServerMessage::Close(frame) => {
                *state.ws_close_code.lock().unwrap() = frame.map(|f| f.code);
            }
            ServerMessage::Ping(_) | ServerMessage::Pong(_) => {}
        }
    }
}

/// Hang guard for every step (longer than the common one: a drain takes a while);
/// never a statement about speed.
const HANG_GUARD: Duration = Duration::from_secs(15);

/// A `fluxlit serve` process and its admin listener.
struct Running {
    serve: Serve,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

/// Starts `fluxlit serve` routing everything to `upstream`, and waits until it is ready.
/// `workers` are extra `serve` arguments (`--workers 1` runs the single-threaded
/// scheduler).
async fn start(upstream: SocketAddr, grace: &str, workers: &[&str]) -> Running {
    start_with(upstream, grace, "", workers).await
}

/// [`start`], with more `[server]` lines.
async fn start_with(upstream: SocketAddr, grace: &str, server: &str, workers: &[&str]) -> Running {
    // The admin port is chosen here: the test needs to know it, and port 0 would hide it.
    let admin = closed_port();
    let config = ConfigText::new()
        .server(&format!("shutdown_grace = \"{grace}\"\n{server}"))
        .table("[admin]", &format!("listen = \"{admin}\""))
        .route_to("app", "/", upstream);
    let (dir, _) = config_dir(config.text(), &[]);
    let args: Vec<&str> = ["--log", "info"].iter().chain(workers).copied().collect();
    let serve = Serve::start(dir.path(), &args).await;
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while readyz(admin).await != Some(StatusCode::OK) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Running {
        serve,
        admin,
        _dir: dir,
    }
}

async fn readyz(admin: SocketAddr) -> Option<StatusCode> {
    let stream = tokio::net::TcpStream::connect(admin).await.ok()?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(connection);
    let response = sender.send_request(get(admin, "/readyz", &[])).await.ok()?;
    Some(response.status())
}

#[tokio::test]
async fn sigterm_drains_requests_and_closes_websockets_with_1001_then_exits_0() {
    drains_then_exits(&[]).await;
}

#[tokio::test]
async fn on_one_worker_sigterm_drains_requests_and_closes_websockets_then_exits_0() {
    drains_then_exits(&["--workers", "1"]).await;
}

async fn drains_then_exits(workers: &[&str]) {
    let (upstream, seen) = spawn_slow_and_ws_upstream().await;
    let mut running = start(upstream, "30s", workers).await;
    let addr = running.serve.addr;

    let (mut socket, _) = tokio::time::timeout(
        HANG_GUARD,
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws")),
    )
    .await
    .unwrap()
    .unwrap();
    socket.send(Message::text("before")).await.unwrap();
    let echoed = tokio::time::timeout(HANG_GUARD, socket.next())
        .await
        .unwrap();
    assert_eq!(echoed.unwrap().unwrap(), Message::text("before"));

    let started = seen.slow_started.notified();
    let slow = tokio::spawn(async move { send(addr, get(addr, "/slow?ms=1500", &[])).await });
    tokio::time::timeout(HANG_GUARD, started).await.unwrap();

    running.serve.terminate();

    // Not ready any more, at once: the request is still in flight upstream.
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while readyz(running.admin).await != Some(StatusCode::SERVICE_UNAVAILABLE) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never turned 503"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The public listener closes (as the signal reaches its accept loop): new
    // connections are refused.
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "new connections are still accepted while draining"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The WebSocket client gets a close frame saying the server is going away.
    match tokio::time::timeout(HANG_GUARD, socket.next())
        .await
        .unwrap()
    {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::Away, "{frame:?}");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    drop(socket);

    // The request in flight finishes, and its connection is told to close.
    let reply = tokio::time::timeout(HANG_GUARD, slow)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "done");
    assert_eq!(reply.headers["connection"], "close");

    let status = running.serve.wait_for_exit().await;
    assert_eq!(status.code(), Some(0), "{}", running.serve.stderr.text());
    // The upstream got the gateway's (masked, or it would have failed) close frame too.
    assert_eq!(*seen.ws_close_code.lock().unwrap(), Some(1001));
    let log = running.serve.stderr.text();
    assert!(
        log.contains("every request and WebSocket finished"),
        "{log}"
    );
}

#[tokio::test]
async fn when_the_grace_period_ends_first_the_request_is_cut_and_the_process_exits_0() {
    let (upstream, seen) = spawn_slow_and_ws_upstream().await;
    let mut running = start(upstream, "300ms", &[]).await;
    let addr = running.serve.addr;

    let started = seen.slow_started.notified();
    let slow = tokio::spawn(async move {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        sender
            .send_request(get(addr, "/slow?ms=60000", &[]))
            .await
            .map(|response| response.status())
    });
    tokio::time::timeout(HANG_GUARD, started).await.unwrap();

    running.serve.terminate();
    let status = running.serve.wait_for_exit().await;
    assert_eq!(status.code(), Some(0));
    let outcome = tokio::time::timeout(HANG_GUARD, slow)
        .await
        .unwrap()
        .unwrap();
    assert!(
        outcome.is_err(),
        "the request was cut, not answered: {outcome:?}"
    );
    let log = running.serve.stderr.text();
    assert!(
        log.contains("cutting 1 request(s) and 0 WebSocket(s)"),
        "{log}"
    );
}

/// SIGTERM with an idle HTTP/1.1 keep-alive connection and an HTTP/2 (h2c) connection
/// carrying a slow request: the idle connection is closed at once, the HTTP/2 request
/// finishes and its connection is then ended by the gateway (GOAWAY), and the process
/// exits 0, all within the hang guard, long before the grace period and the idle
/// timeout (both 120 s) would have ended either connection.
#[tokio::test]
async fn sigterm_closes_idle_connections_and_ends_http2_connections_after_their_requests() {
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (upstream, seen) = spawn_slow_and_ws_upstream().await;
    let mut running =
        start_with(upstream, "120s", "h2c = true\nidle_timeout = \"120s\"", &[]).await;
    let addr = running.serve.addr;

    // An HTTP/1.1 connection that has had its answer and waits for the next request.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /slow?ms=0 HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(raw::read_reply(&mut idle).await.text(), "done");
    // That request's mark, taken: the next one is the HTTP/2 request's.
    tokio::time::timeout(HANG_GUARD, seen.slow_started.notified())
        .await
        .unwrap();

    // An HTTP/2 connection, a slow request in flight on it.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let http2_connection = tokio::spawn(connection);
    // Held to the end: a client connection whose senders are all gone would end itself.
    let _kept = sender.clone();
    let started = seen.slow_started.notified();
    let request = http::Request::get(format!("http://{addr}/slow?ms=1500"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = tokio::spawn(async move {
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    });
    tokio::time::timeout(HANG_GUARD, started).await.unwrap();

    running.serve.terminate();

    // The idle connection is closed, not kept until the grace period ends.
    let mut buffer = [0u8; 64];
    let closed = tokio::time::timeout(HANG_GUARD, idle.read(&mut buffer))
        .await
        .expect("the idle connection was not closed");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    // The HTTP/2 request finishes; then the gateway ends its connection.
    let (status, body) = tokio::time::timeout(HANG_GUARD, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"done"[..]));
    tokio::time::timeout(HANG_GUARD, http2_connection)
        .await
        .expect("the HTTP/2 connection was not ended")
        .unwrap()
        .unwrap();
    let status = running.serve.wait_for_exit().await;
    assert_eq!(status.code(), Some(0), "{}", running.serve.stderr.text());
}
