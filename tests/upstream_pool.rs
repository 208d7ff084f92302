//! The gateway's keep-alive connections to an upstream: reused request after request,
//! never reused when they cannot be (closed by the upstream, a response abandoned
//! half-read), and closed after `pool_idle_timeout`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get as route_get;
use bytes::Bytes;
use common::{ConfigText, TestGateway, get, send, spawn_upstream};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Upstream `app` at `upstream` with `extra` settings, and `/` to it.
fn config(upstream: SocketAddr, extra: &str) -> ConfigText {
    ConfigText::new()
        .upstream("app", upstream)
        .with(extra)
        .route("app", "/", "app")
}

/// Every response carries `x-upstream-port`: the port of the gateway's connection it
/// came over, so a test sees which requests shared a connection.
async fn spawn_port_reporting_upstream() -> SocketAddr {
    fn port_header(peer: SocketAddr) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-upstream-port", peer.port().into());
        headers
    }
    spawn_upstream(
        Router::new()
            .route(
                "/small",
                route_get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                    (port_header(peer), "small")
                }),
            )
            .route(
                "/empty",
                route_get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                    (StatusCode::NO_CONTENT, port_header(peer))
                }),
            )
            .route(
                "/big",
                route_get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                    (port_header(peer), vec![b'b'; 8 << 20])
                }),
            ),
    )
    .await
}

fn upstream_port(headers: &http::HeaderMap) -> String {
    headers
        .get("x-upstream-port")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no x-upstream-port in {headers:?}"))
        .to_owned()
}

#[tokio::test]
async fn requests_one_after_another_share_one_upstream_connection() {
    let upstream = spawn_port_reporting_upstream().await;
    let gateway = TestGateway::start(&config(upstream, "")).await;
    let addr = gateway.addr();

    let first = send(addr, get(addr, "/small", &[])).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "small");
    let port = upstream_port(&first.headers);
    for path in ["/small", "/empty", "/small", "/empty", "/small"] {
        let reply = send(addr, get(addr, path, &[])).await;
        assert!(reply.status.is_success(), "{path}: {}", reply.status);
        assert_eq!(
            upstream_port(&reply.headers),
            port,
            "{path} came over another upstream connection"
        );
    }
    // A HEAD response has no body to read: its connection is as reusable.
    let head = http::Request::head("/small")
        .header("host", addr.to_string())
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let reply = send(addr, head).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty());
    assert_eq!(upstream_port(&reply.headers), port);
}

#[tokio::test]
async fn concurrent_requests_open_connections_that_are_then_reused() {
    let upstream = spawn_port_reporting_upstream().await;
    let gateway = TestGateway::start(&config(upstream, "")).await;
    let addr = gateway.addr();

    let mut ports = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let replies = futures_util::future::join_all(
            (0..4).map(|_| async move { send(addr, get(addr, "/small", &[])).await }),
        )
        .await;
        for reply in replies {
            assert_eq!(reply.status, 200);
            ports.insert(upstream_port(&reply.headers));
        }
    }
    // 20 requests, at most 4 at a time: at most 4 connections (not one per request).
    assert!(
        (1..=4).contains(&ports.len()),
        "20 requests used {} upstream connections",
        ports.len()
    );
}

#[tokio::test]
async fn a_response_abandoned_half_read_does_not_leave_its_connection_in_the_pool() {
    let upstream = spawn_port_reporting_upstream().await;
    let gateway = TestGateway::start(&config(upstream, "")).await;
    let addr = gateway.addr();

    // Read the head of an 8 MiB response and a little of its body, then hang up.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let response = sender.send_request(get(addr, "/big", &[])).await.unwrap();
    assert_eq!(response.status(), 200);
    let abandoned_port = upstream_port(response.headers());
    let mut body = response.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    assert!(frame.data_ref().is_some_and(|data| !data.is_empty()));
    drop(body);
    drop(sender);
    connection.abort();

    // The next requests are answered in full, never over the abandoned connection
    // (its unread rest would be taken for their response).
    for _ in 0..3 {
        let reply = send(addr, get(addr, "/small", &[])).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "small");
        assert_ne!(upstream_port(&reply.headers), abandoned_port);
    }
}

/// Reads the next whole request (head and `Content-Length` body) from `stream`, keeping
/// what follows it in `buffer`; its head, lowercased. `None` at EOF, on an error, or
/// when no byte came within `idle`.
async fn read_request(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    idle: Duration,
) -> Option<String> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let body_len: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buffer.len() >= end + 4 + body_len {
                buffer.drain(..end + 4 + body_len);
                return Some(head);
            }
        }
        match tokio::time::timeout(idle, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buffer.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// Answers 200 with the client's port as the body and in `x-upstream-port`.
async fn answer_with_port(stream: &mut TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    let body = peer.port().to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\nx-upstream-port: {body}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await
}

/// A hand-written HTTP/1.1 upstream that closes a connection after `idle` without a
/// request (as uvicorn does after 5 s) and counts the connections it has open.
async fn spawn_impatient_upstream(idle: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&open);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, peer)) = listener.accept().await else {
                continue;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                // Idle too long, EOF or an error: hang up.
                while read_request(&mut stream, &mut buffer, idle).await.is_some() {
                    if answer_with_port(&mut stream, peer).await.is_err() {
                        break;
                    }
                }
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, open)
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used_again() {
    let (upstream, _open) = spawn_impatient_upstream(Duration::from_millis(100)).await;
    let gateway = TestGateway::start(&config(upstream, "")).await;
    let addr = gateway.addr();

    let first = send(addr, get(addr, "/", &[])).await;
    assert_eq!(first.status, 200);
    // Past the upstream's patience: it has closed the pooled connection.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..3 {
        let reply = send(addr, get(addr, "/", &[])).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_ne!(reply.text(), first.text(), "reused a closed connection");
    }
}

#[tokio::test]
async fn idle_upstream_connections_are_closed_after_pool_idle_timeout() {
    let (upstream, open) = spawn_impatient_upstream(Duration::from_secs(60)).await;
    let gateway = TestGateway::start(&config(upstream, "pool_idle_timeout = \"300ms\"")).await;
    let addr = gateway.addr();

    let replies = futures_util::future::join_all(
        (0..3).map(|_| async move { send(addr, get(addr, "/", &[])).await }),
    )
    .await;
    assert!(replies.iter().all(|reply| reply.status == 200));
    assert!(
        open.load(Ordering::SeqCst) >= 1,
        "the pool keeps connections"
    );

    // No request comes to notice that they expired: the pool closes them itself.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while open.load(Ordering::SeqCst) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} upstream connections still open 5 s after a 300 ms idle timeout",
            open.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the pool still works afterwards.
    assert_eq!(send(addr, get(addr, "/", &[])).await.status, 200);
}

/// A hand-written HTTP/1.1 upstream that answers the first request on each connection
/// and closes the connection on the second without answering: the keep-alive race, in
/// which the upstream closes an idle connection just as a request goes out on it.
/// Counts the requests it read, by method.
async fn spawn_one_answer_per_connection_upstream()
-> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (gets, posts) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let counters = (Arc::clone(&gets), Arc::clone(&posts));
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, peer)) = listener.accept().await else {
                continue;
            };
            let (gets, posts) = (Arc::clone(&counters.0), Arc::clone(&counters.1));
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut answered = 0;
                let forever = Duration::from_secs(3600);
                while let Some(head) = read_request(&mut stream, &mut buffer, forever).await {
                    let counter = if head.starts_with("post") {
                        &posts
                    } else {
                        &gets
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    if answered == 1 {
                        return; // the second request: hang up without an answer
                    }
                    answered += 1;
                    if answer_with_port(&mut stream, peer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, gets, posts)
}

#[tokio::test]
async fn a_safe_request_caught_by_an_upstream_closing_its_idle_connection_is_sent_again() {
    let (upstream, gets, posts) = spawn_one_answer_per_connection_upstream().await;
    let gateway = TestGateway::start(&config(upstream, "")).await;
    let addr = gateway.addr();

    let first = send(addr, get(addr, "/", &[])).await;
    assert_eq!(first.status, 200);
    // Idle long enough for an upstream's keep-alive timer to be closing the connection.
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The pooled connection takes the GET and closes: it is sent again, once, on a new
    // connection, and the client never sees the failure.
    let second = send(addr, get(addr, "/", &[])).await;
    assert_eq!(second.status, 200, "{}", second.text());
    assert_ne!(
        second.text(),
        first.text(),
        "answered over a new connection"
    );
    assert_eq!(
        gets.load(Ordering::SeqCst),
        3,
        "the GET reached the upstream twice"
    );

    // A POST in the same spot is not sent again: the upstream may have acted on it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let post = http::Request::post("/")
        .header("host", addr.to_string())
        .body(http_body_util::Full::new(Bytes::from_static(b"order=1")))
        .unwrap();
    let reply = send(addr, post).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(
        posts.load(Ordering::SeqCst),
        1,
        "the POST reached the upstream once"
    );
}

#[tokio::test]
async fn an_upstream_on_an_ipv6_address_is_reached_and_named_in_host() {
    let listener = TcpListener::bind("[::1]:0").await.expect("IPv6 loopback");
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            Router::new().fallback(|headers: HeaderMap| async move {
                headers
                    .get("host")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            }),
        )
        .await
        .unwrap();
    });
    let gateway = TestGateway::start(&config(upstream, "")).await;
    let addr = gateway.addr();

    for _ in 0..2 {
        let reply = send(addr, get(addr, "/", &[])).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.text(), format!("[::1]:{}", upstream.port()));
    }
}
