//! Graceful shutdown of the real binary: SIGTERM while a slow request is in flight and
//! a WebSocket is open. `/readyz` turns 503, new connections are refused, the request
//! finishes, both WebSocket peers get a 1001 close frame, and the process exits 0 —
//! also when the grace period ends before a request does.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message as ServerMessage, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Hang guard for every step; never a statement about speed.
const HANG_GUARD: Duration = Duration::from_secs(15);

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

/// A free loopback port (the binary is told it; port 0 would hide it from the test).
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

struct Running {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `fluxlit serve` routing everything to `upstream`, and waits until it is ready.
/// `workers` are extra `serve` arguments (`--workers 1` runs the single-threaded
/// scheduler).
async fn start(upstream: SocketAddr, grace: &str, workers: &[&str]) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let (addr, admin) = (free_port(), free_port());
    let config = format!(
        "[server]\nlisten = \"{addr}\"\nshutdown_grace = \"{grace}\"\n\n\
         [admin]\nlisten = \"{admin}\"\n\n\
         [upstreams.app]\nurl = \"http://{upstream}\"\n\n\
         [[routes]]\nname = \"app\"\npath_prefix = \"/\"\nupstream = \"app\"\n"
    );
    let path = dir.path().join("fluxlit.toml");
    std::fs::write(&path, config).unwrap();
    let child = spawn_binary(&path, workers);
    let running = Running {
        child,
        addr,
        admin,
        _dir: dir,
    };
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        if let Ok(stream) = tokio::net::TcpStream::connect(admin).await {
            drop(stream);
            if readyz(admin).await == Some(StatusCode::OK) {
                return running;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spawn_binary(config: &Path, workers: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fluxlit"))
        .args(["serve", "--log", "info"])
        .args(workers)
        .arg("--config")
        .arg(config)
        .env_remove("FLUXLIT_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
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

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn wait_for_exit(child: &mut Child) -> ExitStatus {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway did not exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(stderr) = child.stderr.as_mut() {
        let _ = std::io::Read::read_to_string(stderr, &mut text);
    }
    text
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
    let addr = running.addr;

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

    sigterm(&running.child);

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

    let status = wait_for_exit(&mut running.child).await;
    assert_eq!(status.code(), Some(0), "{}", stderr_of(&mut running.child));
    // The upstream got the gateway's (masked, or it would have failed) close frame too.
    assert_eq!(*seen.ws_close_code.lock().unwrap(), Some(1001));
    let log = stderr_of(&mut running.child);
    assert!(
        log.contains("every request and WebSocket finished"),
        "{log}"
    );
}

#[tokio::test]
async fn when_the_grace_period_ends_first_the_request_is_cut_and_the_process_exits_0() {
    let (upstream, seen) = spawn_slow_and_ws_upstream().await;
    let mut running = start(upstream, "300ms", &[]).await;
    let addr = running.addr;

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

    sigterm(&running.child);
    let status = wait_for_exit(&mut running.child).await;
    assert_eq!(status.code(), Some(0));
    let outcome = tokio::time::timeout(HANG_GUARD, slow)
        .await
        .unwrap()
        .unwrap();
    assert!(
        outcome.is_err(),
        "the request was cut, not answered: {outcome:?}"
    );
    let log = stderr_of(&mut running.child);
    assert!(
        log.contains("cutting 1 request(s) and 0 WebSocket(s)"),
        "{log}"
    );
}
