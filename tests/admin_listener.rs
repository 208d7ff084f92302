//! The admin listener under hostile clients, over real sockets: whoever can reach it
//! cannot hold its connections open (`admin.idle_timeout`, `admin.header_read_timeout`),
//! open more than `admin.max_connections`, send it bodies or oversized heads, or take
//! the file descriptors the public listener needs.
//!
//! Timeouts only guard against hangs; none is a statement about speed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    ConfigText, HANG_GUARD, TestGateway, cli, closed_port, eventually, spawn_recording_upstream,
    status_of, within,
};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A gateway with one route to a recording upstream and an admin listener with `admin`
/// lines.
async fn gateway_with_admin(admin: &str) -> TestGateway {
    let upstream = spawn_recording_upstream("app").await;
    let config = ConfigText::new()
        .route_to("app", "/", upstream)
        .admin()
        .with(admin);
    TestGateway::start(&config).await
}

/// Reads until the peer closes the connection (or resets it), and returns when that was;
/// `None` if it stayed open for `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Instant> {
    let mut buffer = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

/// The status line's code of a raw response, read until the peer closes.
async fn raw_status(addr: SocketAddr, request: &[u8]) -> u16 {
    let mut stream = within("connect", TcpStream::connect(addr)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    within("the response", stream.read_to_end(&mut response))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

#[tokio::test]
async fn idle_admin_connections_are_closed_within_its_idle_timeout_while_the_public_listener_serves()
 {
    let gateway = gateway_with_admin(
        "idle_timeout = \"1s\"\nheader_read_timeout = \"60s\"\nmax_connections = 2000",
    )
    .await;
    let admin = gateway.admin();

    const IDLE: usize = 1000;
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        let stream = within("connect", TcpStream::connect(admin)).await.unwrap();
        idle.push((Instant::now(), stream));
    }
    // The public listener is not affected while they are open.
    for _ in 0..5 {
        assert_eq!(status_of(gateway.addr(), "/x").await, 200);
    }

    let limit = Duration::from_secs(1);
    let waits = idle.into_iter().map(|(opened, mut stream)| async move {
        let closed = closed_within(&mut stream, HANG_GUARD).await;
        (opened, closed)
    });
    for (opened, closed) in futures_util::future::join_all(waits).await {
        let closed = closed.expect("an idle admin connection was still open after 10 s");
        let open_for = closed - opened;
        // Not before the idle timeout: it is the idle timeout that closed them.
        assert!(
            open_for >= limit - Duration::from_millis(50),
            "{open_for:?}"
        );
    }
    // Served again once they are gone.
    assert_eq!(status_of(admin, "/healthz").await, 200);
}

#[tokio::test]
async fn a_slowloris_on_the_admin_listener_is_closed_by_its_header_read_timeout() {
    let gateway = gateway_with_admin("header_read_timeout = \"1s\"\nidle_timeout = \"60s\"").await;
    let admin = gateway.admin();
    let mut stream = within("connect", TcpStream::connect(admin)).await.unwrap();
    let opened = Instant::now();
    stream
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {admin}\r\n").as_bytes())
        .await
        .unwrap();
    // A header line every 200 ms, never the blank line that ends the head: the
    // connection is never idle, so only the head's timeout can close it.
    let dribble = async {
        let mut line = 0u32;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            line += 1;
            let header = format!("X-Slow-{line}: a\r\n");
            if stream.write_all(header.as_bytes()).await.is_err() {
                return Instant::now();
            }
        }
    };
    let closed = within("the slowloris being closed", dribble).await;
    assert!(closed - opened >= Duration::from_millis(950));
}

#[tokio::test]
async fn admin_connections_beyond_max_connections_are_closed_at_once() {
    let gateway = gateway_with_admin(
        "max_connections = 4\nheader_read_timeout = \"60s\"\nidle_timeout = \"60s\"",
    )
    .await;
    let admin = gateway.admin();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(within("connect", TcpStream::connect(admin)).await.unwrap());
    }
    // Let the listener take all four before the fifth.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = within("connect", TcpStream::connect(admin)).await.unwrap();
    assert!(
        closed_within(&mut fifth, HANG_GUARD).await.is_some(),
        "the fifth connection is closed"
    );
    for stream in &mut held {
        assert!(
            closed_within(stream, Duration::from_millis(100))
                .await
                .is_none(),
            "the four within the cap stay open"
        );
    }
    // One leaves: its place is free again.
    held.pop();
    eventually("a place on the admin listener", || async {
        let stream = TcpStream::connect(admin).await.ok()?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(connection);
        let request = http::Request::get("/healthz")
            .header("host", admin.to_string())
            .body(Empty::<Bytes>::new())
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        Some(response.status())
    })
    .await;
}

#[tokio::test]
async fn the_admin_listener_refuses_bodies_and_oversized_heads() {
    let gateway = gateway_with_admin("").await;
    let admin = gateway.admin();
    let body = "x".repeat(2000);
    let request = format!(
        "POST /healthz HTTP/1.1\r\nHost: {admin}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(raw_status(admin, request.as_bytes()).await, 413);
    let chunked = format!(
        "POST /healthz HTTP/1.1\r\nHost: {admin}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
    assert_eq!(raw_status(admin, chunked.as_bytes()).await, 413);
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: {admin}\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    assert_eq!(raw_status(admin, huge.as_bytes()).await, 431);
    // A small body is no problem, and a GET is answered as ever.
    let small = format!(
        "POST /healthz HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi"
    );
    assert_eq!(raw_status(admin, small.as_bytes()).await, 405);
    assert_eq!(status_of(admin, "/healthz").await, 200);
}

#[tokio::test]
async fn with_256_file_descriptors_the_public_listener_serves_while_the_admin_listener_is_flooded()
{
    let dir = tempfile::tempdir().expect("temp dir");
    let (addr, admin) = (closed_port(), closed_port());
    let upstream = spawn_recording_upstream("app").await;
    let config = dir.path().join("fluxlit.toml");
    let text = ConfigText::new()
        .server(&format!("listen = \"{addr}\""))
        .route_to("app", "/", upstream)
        .table("[admin]", &format!("listen = \"{admin}\""));
    std::fs::write(&config, text.text()).expect("write config");
    let log = dir.path().join("stderr.log");
    let child = cli::serve_with_nofile(&config, 256, &log);
    eventually("the gateway listens", || async {
        TcpStream::connect(addr).await.ok().map(drop)
    })
    .await;

    // More idle admin connections than the process has descriptors, all held open.
    let mut flood = Vec::new();
    for _ in 0..400 {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(admin)).await
        {
            flood.push(stream);
        }
    }
    assert!(flood.len() > 256, "only {} connections made", flood.len());
    // Let the admin listener accept what it will.
    tokio::time::sleep(Duration::from_millis(300)).await;

    for i in 0..20 {
        let status = within(
            "a public request while the admin listener is flooded",
            common::send(addr, common::get(addr, &format!("/{i}"), &[])),
        )
        .await
        .status;
        assert_eq!(status, 200);
    }
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !log_text.contains("accept failed"),
        "the gateway ran out of descriptors:\n{log_text}"
    );
    drop(child);
}
