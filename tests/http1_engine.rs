//! The public listener's HTTP/1.1 engine as a client meets it on the wire: `100
//! Continue`, request bodies left unread, clients that go away, HTTP/1.0 keep-alive,
//! and bytes sent right behind a WebSocket handshake. (The framing rules are held by
//! `tests/smuggling.rs` and `tests/http1_differential.rs`.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::time::Duration;

use common::config::ConfigText;
use common::raw::{self, find, read_reply, read_shows_closed};
use common::{TestGateway, spawn_recording_upstream, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn gateway_to(upstream: std::net::SocketAddr, route_lines: &str) -> TestGateway {
    let config = ConfigText::new()
        .upstream("app", upstream)
        .route("app", "/", "app")
        .with(route_lines);
    TestGateway::start(config).await
}

async fn connect(gateway: &TestGateway) -> TcpStream {
    TcpStream::connect(gateway.addr()).await.expect("connect")
}

/// Reads until `needle` has arrived, or panics after a while.
async fn read_until(stream: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
    within("the expected bytes", async {
        let mut seen = Vec::new();
        while find(&seen, needle).is_none() {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(
                n > 0,
                "closed before {:?}: {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&chunk[..n]);
        }
        seen
    })
    .await
}

#[tokio::test]
async fn a_client_that_waits_for_100_continue_is_told_to_send_and_its_body_arrives() {
    let upstream = spawn_recording_upstream("app").await;
    let gateway = gateway_to(upstream, "").await;
    let mut stream = connect(&gateway).await;
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: app\r\nExpect: 100-continue\r\n\
              Content-Length: 11\r\n\r\n",
        )
        .await
        .unwrap();
    let interim = read_until(&mut stream, b"\r\n\r\n").await;
    assert_eq!(interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello world").await.unwrap();
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["body_len"], 11);
}

#[tokio::test]
async fn a_body_refused_before_100_continue_is_never_asked_for_and_the_connection_closes() {
    let upstream = spawn_recording_upstream("app").await;
    let gateway = gateway_to(upstream, "max_request_body = \"1KiB\"").await;
    let mut stream = connect(&gateway).await;
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: app\r\nExpect: 100-continue\r\n\
              Content-Length: 100000\r\n\r\n",
        )
        .await
        .unwrap();
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    // The client was never told to send its body: the gateway cannot know what the
    // next bytes on the connection would be, and closes it.
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(within("the close", read_shows_closed(&mut stream)).await);
}

#[tokio::test]
async fn a_body_the_gateway_did_not_read_is_skipped_and_the_connection_serves_the_next_request() {
    let upstream = spawn_recording_upstream("app").await;
    let config = ConfigText::new()
        .upstream("app", upstream)
        .route("app", "/app", "app");
    let gateway = TestGateway::start(config).await;
    let mut stream = connect(&gateway).await;
    let body = vec![b'x'; 50_000];
    let mut request = format!(
        "POST /nowhere HTTP/1.1\r\nHost: app\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request.extend_from_slice(b"GET /app/next HTTP/1.1\r\nHost: app\r\n\r\n");
    stream.write_all(&request).await.unwrap();
    let refused = read_reply(&mut stream).await;
    assert_eq!(refused.status, 404);
    assert_eq!(refused.header("connection"), None);
    let next = read_reply(&mut stream).await;
    assert_eq!(next.status, 200, "{}", next.text());
    assert_eq!(next.json()["path"], "/app/next");
}

/// An upstream that takes requests and never answers; it reports when the gateway
/// closes a connection it holds.
async fn silent_upstream() -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed, closes) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                while matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {}
                let _ = closed.send(()).await;
            });
        }
    });
    (addr, closes)
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_request_to_the_upstream() {
    let (upstream, mut closes) = silent_upstream().await;
    let gateway = gateway_to(upstream, "").await;
    let mut stream = connect(&gateway).await;
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    // Once the request is on its way upstream, the client leaves.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(stream);
    // The upstream's connection is closed long before the route's 30 s timeout.
    tokio::time::timeout(Duration::from_secs(5), closes.recv())
        .await
        .expect("the upstream request was cancelled when the client left")
        .expect("the upstream reports");
}

#[tokio::test]
async fn an_http_1_0_client_is_answered_in_http_1_0_and_kept_alive_only_when_it_asks() {
    let upstream = spawn_recording_upstream("app").await;
    let gateway = gateway_to(upstream, "").await;
    let mut stream = connect(&gateway).await;
    for _ in 0..2 {
        stream
            .write_all(b"GET /a HTTP/1.0\r\nHost: app\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let received = read_until(&mut stream, b"\r\n\r\n").await;
        let head_end = find(&received, b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.0 200 ok\r\n"), "{head}");
        assert!(head.contains("\r\nconnection: keep-alive\r\n"), "{head}");
        let length: usize = head
            .split("\r\ncontent-length: ")
            .nth(1)
            .and_then(|rest| rest.split("\r\n").next())
            .and_then(|digits| digits.parse().ok())
            .expect("a content-length");
        let mut body = received[head_end..].to_vec();
        body.resize(length, 0);
        let already = received.len() - head_end;
        within("the body", stream.read_exact(&mut body[already..]))
            .await
            .unwrap();
    }
    stream
        .write_all(b"GET /a HTTP/1.0\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    let last = read_reply(&mut stream).await;
    assert_eq!(last.status, 200);
    assert!(within("the close", read_shows_closed(&mut stream)).await);
}

#[tokio::test]
async fn bytes_sent_right_behind_a_websocket_handshake_reach_the_upstream() {
    // An upstream that accepts the handshake and then echoes whatever comes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_until(&mut stream, b"\r\n\r\n").await;
        stream
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            )
            .await
            .unwrap();
        let mut buffer = [0u8; 1024];
        loop {
            let n = stream.read(&mut buffer).await.unwrap_or(0);
            if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    });
    let gateway = gateway_to(upstream, "").await;
    let mut stream = connect(&gateway).await;
    // A masked text frame "hi" in the same write as the handshake.
    let frame: &[u8] = &[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
    let mut bytes = raw::get_request(
        "/ws",
        "app",
        &[
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        ],
    )
    .into_bytes();
    bytes.extend_from_slice(frame);
    stream.write_all(&bytes).await.unwrap();
    let head = read_until(&mut stream, b"\r\n\r\n").await;
    assert!(
        head.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let after_head = &head[find(&head, b"\r\n\r\n").unwrap() + 4..];
    let mut echoed = after_head.to_vec();
    while echoed.len() < frame.len() {
        let mut chunk = [0u8; 64];
        let n = within("the echo", stream.read(&mut chunk)).await.unwrap();
        assert!(n > 0, "the tunnel closed");
        echoed.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(echoed, frame);
}

// ---------------------------------------------------------------------------------------
// The upstream side.
// ---------------------------------------------------------------------------------------

/// An upstream that reads a request head, then writes `answer` and closes.
async fn answering_upstream(answer: &'static [u8]) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                read_until(&mut stream, b"\r\n\r\n").await;
                let _ = stream.write_all(answer).await;
                let _ = stream.shutdown().await;
                // Whatever else comes is not read.
                tokio::time::sleep(Duration::from_secs(2)).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_that_answers_before_the_upload_ends_is_heard() {
    let upstream = answering_upstream(
        b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n",
    )
    .await;
    let gateway = gateway_to(upstream, "").await;
    let mut stream = connect(&gateway).await;
    let body = vec![b'x'; 4 * 1024 * 1024];
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // The upload goes on in the background, as a client's would; it may be cut off.
    tokio::spawn(async move {
        let _ = write.write_all(&body).await;
    });
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    within("the upstream's early answer", async {
        while find(&received, b"too big\n").is_none() {
            let n = read.read(&mut chunk).await.expect("read");
            assert!(
                n > 0,
                "closed without the answer: {:?}",
                String::from_utf8_lossy(&received)
            );
            received.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(
        received.starts_with(b"HTTP/1.1 413 "),
        "{}",
        String::from_utf8_lossy(&received)
    );
}

#[tokio::test]
async fn an_interim_answer_from_the_upstream_is_skipped() {
    let upstream = answering_upstream(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
    )
    .await;
    let gateway = gateway_to(upstream, "").await;
    let mut stream = connect(&gateway).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    let reply = read_reply(&mut stream).await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "final"));
}

#[tokio::test]
async fn bytes_an_upstream_sends_right_behind_its_101_reach_the_client() {
    // A text frame "hey" (unmasked, as a server's are) in the same write as the 101.
    let upstream = answering_upstream(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x03hey",
    )
    .await;
    let gateway = gateway_to(upstream, "").await;
    let mut stream = connect(&gateway).await;
    let request = raw::get_request(
        "/ws",
        "app",
        &[
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        ],
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let received = read_until(&mut stream, b"\x81\x03hey").await;
    assert!(
        received.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&received)
    );
}

// ---------------------------------------------------------------------------------------
// h2c: HTTP/2 without TLS, by prior knowledge.
// ---------------------------------------------------------------------------------------

/// A GET over HTTP/2 without TLS, or the handshake's failure.
async fn h2c_get(
    gateway: &TestGateway,
    path: &str,
) -> Result<http::Response<bytes::Bytes>, String> {
    use http_body_util::BodyExt;
    let stream = connect(gateway).await;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|error| error.to_string())?;
    tokio::spawn(connection);
    let request = http::Request::get(format!("http://{}{path}", gateway.addr()))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = within("an h2c answer", sender.send_request(request))
        .await
        .map_err(|error| error.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|error| error.to_string())?;
    Ok(http::Response::from_parts(parts, body.to_bytes()))
}

#[tokio::test]
async fn h2c_by_prior_knowledge_gets_the_same_policy_when_enabled_and_nothing_otherwise() {
    let upstream = spawn_recording_upstream("app").await;
    let enabled = ConfigText::new()
        .server("h2c = true")
        .upstream("app", upstream)
        .route("app", "/", "app");
    let gateway = TestGateway::start(enabled).await;
    let response = h2c_get(&gateway, "/h2c?x=1").await.expect("an h2c answer");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let seen: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(seen["path"], "/h2c");
    assert_eq!(
        common::recorded_header(&seen, "x-forwarded-proto"),
        ["http"]
    );
    // HTTP/1.1 on the same listener is unchanged.
    let mut stream = connect(&gateway).await;
    stream
        .write_all(b"GET /one HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_reply(&mut stream).await.status, 200);

    // Off (the default): the preface is not an HTTP/1.1 request; the connection closes.
    let disabled = ConfigText::new()
        .upstream("app", upstream)
        .route("app", "/", "app");
    let gateway = TestGateway::start(disabled).await;
    assert!(h2c_get(&gateway, "/h2c").await.is_err());
}

#[test]
fn h2c_on_a_tls_listener_is_a_validation_error() {
    let config = ConfigText::new()
        .server("h2c = true\n[server.tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"")
        .echo_upstream("app")
        .route("app", "/", "app");
    let output = common::cli::run_on(config.text(), &["validate"], &[]);
    let stderr = common::cli::stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("server.h2c"), "{stderr}");
}

#[tokio::test]
async fn an_h2c_preface_that_arrives_in_two_pieces_is_still_http2() {
    let upstream = spawn_recording_upstream("app").await;
    let config = ConfigText::new()
        .server("h2c = true")
        .upstream("app", upstream)
        .route("app", "/", "app");
    let gateway = TestGateway::start(config).await;
    let mut stream = connect(&gateway).await;
    // The preface's request line alone parses as an HTTP/1.x line with a version the
    // gateway does not speak: judged then, it would be a 400.
    stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The rest of the preface and an empty SETTINGS frame.
    stream
        .write_all(b"\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    // The server's own preface is a SETTINGS frame (type 4 on stream 0), not "HTTP/1.1".
    let mut head = [0u8; 9];
    within("the server's SETTINGS", stream.read_exact(&mut head))
        .await
        .unwrap();
    assert_eq!(head[3], 0x04, "not a SETTINGS frame: {head:?}");
    assert_eq!(&head[5..9], &[0, 0, 0, 0], "not on stream 0: {head:?}");
}

#[tokio::test]
async fn an_upstreams_response_head_reaches_the_client_as_sent_less_what_the_policy_drops() {
    // The head as the engine's client hands it on: lines in the upstream's case and
    // order, hop-by-hop and Connection-listed lines dropped, the upstream's own framing
    // and request id replaced, a security header it set kept instead of the gateway's.
    let upstream = answering_upstream(
        b"HTTP/1.1 200 OK\r\nX-Custom-Case: Kept\r\nConnection: keep-alive, X-Secret\r\n\
          X-Secret: dropped\r\nKeep-Alive: timeout=5\r\nX-Request-Id: forged\r\n\
          X-Content-Type-Options: upstream-own\r\nContent-Length: 005\r\n\r\nhello",
    )
    .await;
    let gateway = gateway_to(upstream, "").await;
    let mut stream = connect(&gateway).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    let seen = read_until(&mut stream, b"hello").await;
    let text = String::from_utf8_lossy(&seen);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    assert!(head.contains("\r\nX-Custom-Case: Kept\r\n"), "{head}");
    assert!(
        head.contains("\r\nX-Content-Type-Options: upstream-own\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\ncontent-length: 5\r\n"), "{head}");
    let lower = head.to_ascii_lowercase();
    for gone in ["x-secret", "keep-alive", "forged", "005"] {
        assert!(!lower.contains(gone), "{gone} passed: {head}");
    }
    assert_eq!(lower.matches("x-content-type-options").count(), 1, "{head}");
    assert_eq!(lower.matches("x-request-id").count(), 1, "{head}");
}
