//! WebSockets through the gateway, over real sockets: an axum echo upstream and a
//! tokio-tungstenite client. Messages of every kind cross the tunnel unchanged, the
//! handshake gets the same header policy as an HTTP request, a refused upgrade reaches
//! the client as the upstream's answer, and an open socket outlives a reload.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::ws::{Client, echo};
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, StatusCode};
use tokio_tungstenite::client_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

/// The subprotocol the echo upstream speaks.
const PROTOCOL: &str = "fluxlit-echo";

/// The request headers of every WebSocket handshake the upstream accepted.
#[derive(Clone, Default)]
struct Handshakes(Arc<Mutex<Vec<HeaderMap>>>);

impl Handshakes {
    fn last(&self) -> HeaderMap {
        self.0
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream saw a handshake")
    }
}

/// An upstream with `/ws` (records the handshake, speaks [`PROTOCOL`], echoes text and
/// binary messages) and `/refuse` (answers a handshake with 403 instead of 101).
async fn spawn_ws_upstream() -> (SocketAddr, Handshakes) {
    let handshakes = Handshakes::default();
    let router = Router::new()
        .route("/ws", get(accept_and_echo))
        .route("/refuse", get(refuse_upgrade))
        .with_state(handshakes.clone());
    (spawn_upstream(router).await, handshakes)
}

async fn accept_and_echo(
    State(handshakes): State<Handshakes>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    handshakes.0.lock().unwrap().push(headers);
    upgrade.protocols([PROTOCOL]).on_upgrade(echo)
}

async fn refuse_upgrade() -> impl IntoResponse {
    (StatusCode::FORBIDDEN, "upgrade refused by the upstream")
}

/// A gateway routing everything to `upstream`, trusting 127.0.0.1 only.
async fn gateway_for(upstream: SocketAddr) -> TestGateway {
    TestGateway::start(routes_to(upstream, "ui", "/")).await
}

/// 127.0.0.1 trusted, and route `route` from `prefix` to `upstream`.
fn routes_to(upstream: SocketAddr, route: &str, prefix: &str) -> ConfigText {
    ConfigText::new()
        .trust_loopback()
        .upstream("ui", upstream)
        .route(route, prefix, "ui")
}

/// An echo upstream, a gateway routing to it, and a client with a WebSocket open on
/// `/ws` through the gateway.
async fn open_echo() -> (SocketAddr, TestGateway, Client) {
    let (upstream, _) = spawn_ws_upstream().await;
    let gateway = gateway_for(upstream).await;
    let client = connect(gateway.addr(), "/ws").await;
    (upstream, gateway, client)
}

/// Opens a WebSocket to `gateway` from `source`, offering [`PROTOCOL`], with extra headers.
async fn connect_from(
    source: IpAddr,
    gateway: SocketAddr,
    path: &str,
    headers: &[(&'static str, &str)],
) -> Result<(Client, tungstenite::handshake::client::Response), tungstenite::Error> {
    let mut request = format!("ws://{gateway}{path}").into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", PROTOCOL.parse().unwrap());
    for (name, value) in headers {
        request.headers_mut().append(*name, value.parse().unwrap());
    }
    let stream = raw::connect_from(source, gateway).await;
    within("WebSocket handshake", client_async(request, stream)).await
}

async fn connect(gateway: SocketAddr, path: &str) -> Client {
    connect_from(TRUSTED, gateway, path, &[])
        .await
        .expect("WebSocket handshake succeeds")
        .0
}

/// Sends `message` and returns the next data message that comes back.
async fn round_trip(client: &mut Client, message: Message) -> Message {
    within("send", client.send(message)).await.expect("send");
    next_message(client).await
}

async fn next_message(client: &mut Client) -> Message {
    within("receive", client.next())
        .await
        .expect("the socket is still open")
        .expect("a message, not an error")
}

#[tokio::test]
async fn text_and_binary_messages_echo_through_the_gateway() {
    let (_, _gateway, mut client) = open_echo().await;

    assert_eq!(
        round_trip(&mut client, Message::text("hello, upstream")).await,
        Message::text("hello, upstream")
    );
    let bytes = vec![0u8, 1, 2, 254, 255, 0];
    assert_eq!(
        round_trip(&mut client, Message::binary(bytes.clone())).await,
        Message::binary(bytes)
    );
    // Many small messages in a row keep their order.
    for i in 0..50 {
        let text = format!("message {i}");
        assert_eq!(
            round_trip(&mut client, Message::text(text.clone())).await,
            Message::text(text)
        );
    }
}

#[tokio::test]
async fn a_one_megabyte_binary_frame_arrives_intact() {
    let (_, _gateway, mut client) = open_echo().await;

    let payload: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    match round_trip(&mut client, Message::binary(payload.clone())).await {
        Message::Binary(echoed) => {
            assert_eq!(echoed.len(), payload.len());
            assert!(echoed == payload, "the 1 MiB frame came back altered");
        }
        other => panic!("expected the binary frame back, got {other:?}"),
    }
}

#[tokio::test]
async fn a_ping_through_the_gateway_gets_the_upstreams_pong() {
    let (_, _gateway, mut client) = open_echo().await;

    let reply = round_trip(&mut client, Message::Ping("are you there?".into())).await;
    assert_eq!(reply, Message::Pong("are you there?".into()));
    // The socket still carries data afterwards.
    assert_eq!(
        round_trip(&mut client, Message::text("after ping")).await,
        Message::text("after ping")
    );
}

#[tokio::test]
async fn a_close_frame_comes_back_with_its_code_and_reason_and_the_socket_ends() {
    let (_, _gateway, mut client) = open_echo().await;

    let frame = CloseFrame {
        code: CloseCode::from(4000),
        reason: "done here".into(),
    };
    within("close", client.close(Some(frame.clone())))
        .await
        .expect("send close");
    assert_eq!(next_message(&mut client).await, Message::Close(Some(frame)));
    // After the close handshake the stream ends cleanly.
    match within("end of stream", client.next()).await {
        None | Some(Err(tungstenite::Error::ConnectionClosed)) => {}
        other => panic!("expected the stream to end after the close handshake, got {other:?}"),
    }
}

#[tokio::test]
async fn an_untrusted_clients_handshake_gets_the_http_header_policy() {
    let (upstream, handshakes) = spawn_ws_upstream().await;
    let gateway = gateway_for(upstream).await;
    let spoofed = [
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=203.0.113.7"),
        ("x-remote-user", "admin"),
        ("x-request-id", "chosen-by-the-client"),
        ("x-not-on-any-allowlist", "1"),
    ];
    let (mut client, response) = connect_from(UNTRUSTED, gateway.addr(), "/ws", &spoofed)
        .await
        .expect("WebSocket handshake succeeds");

    let seen = handshakes.last();
    assert_eq!(
        header_values(&seen, "x-forwarded-for"),
        ["127.0.0.2"],
        "the peer, not the spoofed chain"
    );
    assert_eq!(
        header_values(&seen, "x-forwarded-host"),
        [gateway.addr().to_string()]
    );
    assert_eq!(header_values(&seen, "x-forwarded-proto"), ["http"]);
    assert!(header_values(&seen, "forwarded").is_empty(), "{seen:?}");
    assert!(
        header_values(&seen, "x-remote-user").is_empty(),
        "identity from an untrusted peer: {seen:?}"
    );
    assert!(
        header_values(&seen, "x-not-on-any-allowlist").is_empty(),
        "{seen:?}"
    );
    assert_eq!(
        header_values(&seen, "host"),
        [upstream.to_string()],
        "Host is the upstream's"
    );
    assert_eq!(header_values(&seen, "sec-websocket-protocol"), [PROTOCOL]);
    assert_eq!(header_values(&seen, "upgrade"), ["websocket"]);

    let request_id = header_values(&seen, "x-request-id");
    assert_eq!(request_id.len(), 1, "{seen:?}");
    assert_ne!(request_id[0], "chosen-by-the-client");
    assert!(!request_id[0].is_empty());
    // The 101 echoes the same id and carries the negotiated subprotocol.
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        header_values(response.headers(), "x-request-id"),
        request_id
    );
    assert_eq!(
        header_values(response.headers(), "sec-websocket-protocol"),
        [PROTOCOL]
    );

    assert_eq!(
        round_trip(&mut client, Message::text("policy ok")).await,
        Message::text("policy ok")
    );
}

#[tokio::test]
async fn a_trusted_proxys_forwarding_headers_reach_the_upstream_on_the_handshake_but_no_user() {
    let (upstream, handshakes) = spawn_ws_upstream().await;
    let gateway = gateway_for(upstream).await;
    let sent = [
        ("x-forwarded-for", "203.0.113.7"),
        ("x-remote-user", "alice"),
        ("x-request-id", "from-the-front-proxy"),
    ];
    let (_client, response) = connect_from(TRUSTED, gateway.addr(), "/ws", &sent)
        .await
        .expect("WebSocket handshake succeeds");

    let seen = handshakes.last();
    assert_eq!(
        header_values(&seen, "x-forwarded-for"),
        ["203.0.113.7, 127.0.0.1"],
        "the chain is extended"
    );
    assert!(
        header_values(&seen, "x-remote-user").is_empty(),
        "the forward-auth user reaches no upstream as itself: {seen:?}"
    );
    assert_eq!(
        header_values(&seen, "x-request-id"),
        ["from-the-front-proxy"]
    );
    assert_eq!(
        header_values(response.headers(), "x-request-id"),
        ["from-the-front-proxy"]
    );
    assert_eq!(header_values(&seen, "host"), [upstream.to_string()]);
}

#[tokio::test]
async fn an_upstream_that_refuses_the_upgrade_gives_the_client_its_403() {
    let (upstream, handshakes) = spawn_ws_upstream().await;
    let gateway = gateway_for(upstream).await;

    match connect_from(TRUSTED, gateway.addr(), "/refuse", &[]).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
            assert!(
                response.headers().contains_key("x-request-id"),
                "the gateway still tags the answer: {:?}",
                response.headers()
            );
        }
        Err(other) => panic!("expected the upstream's 403, got the error {other}"),
        Ok((_, response)) => panic!("expected the upstream's 403, got {:?}", response.status()),
    }
    // The same handshake over a plain HTTP client shows the whole answer, body included
    // (the WebSocket client keeps only the bytes that came with the head).
    let handshake = common::get(
        gateway.addr(),
        "/refuse",
        &[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    );
    let reply = within("HTTP handshake", send(gateway.addr(), handshake)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.text(), "upgrade refused by the upstream");
    assert!(
        handshakes.0.lock().unwrap().is_empty(),
        "the echo handler was never reached"
    );
}

#[tokio::test]
async fn an_open_websocket_survives_a_reload_that_removes_its_route() {
    let (upstream, gateway, mut client) = open_echo().await;
    assert_eq!(
        round_trip(&mut client, Message::text("before")).await,
        Message::text("before")
    );

    // The only route is replaced by one that no longer matches `/ws`.
    gateway.write_config(routes_to(upstream, "elsewhere", "/elsewhere").text());
    within("reload", gateway.wait_for_generation(2)).await;
    match connect_from(TRUSTED, gateway.addr(), "/ws", &[]).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::NOT_FOUND)
        }
        other => panic!("a new handshake on /ws should get 404 after the reload, got {other:?}"),
    }

    // The socket opened on generation 1 keeps working.
    for i in 0..10 {
        let text = format!("after reload {i}");
        assert_eq!(
            round_trip(&mut client, Message::text(text.clone())).await,
            Message::text(text)
        );
    }
    let bytes = vec![7u8; 64 * 1024];
    assert_eq!(
        round_trip(&mut client, Message::binary(bytes.clone())).await,
        Message::binary(bytes)
    );
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    within("close", client.close(Some(frame.clone())))
        .await
        .expect("send close");
    assert_eq!(next_message(&mut client).await, Message::Close(Some(frame)));
}

#[tokio::test]
async fn an_open_websocket_counts_against_max_connections() {
    let (upstream, _) = spawn_ws_upstream().await;
    let gateway =
        TestGateway::start(routes_to(upstream, "ui", "/").server("max_connections = 1")).await;
    let mut socket = connect(gateway.addr(), "/ws").await;
    assert_eq!(
        round_trip(&mut socket, Message::text("still here")).await,
        Message::text("still here")
    );

    // The tunnel holds the only place: a second client is refused.
    let refused = within(
        "second connection",
        common::send(gateway.addr(), common::get(gateway.addr(), "/", &[])),
    )
    .await;
    assert_eq!(refused.status, 503, "{}", refused.text());

    // Once the WebSocket closes, its place is free again.
    within("close", socket.close(None)).await.expect("close");
    while within("drain", socket.next()).await.is_some() {}
    drop(socket);
    // Served again (the upstream has no `/` page: its own 404).
    eventually("the place coming back", || async {
        (status_of(gateway.addr(), "/").await != 503).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_websocket_without_traffic_for_its_idle_timeout_is_closed_and_traffic_keeps_it_open() {
    let (upstream, _) = spawn_ws_upstream().await;
    let gateway =
        TestGateway::start(routes_to(upstream, "ui", "/").with("websocket_idle_timeout = \"1s\""))
            .await;
    let mut client = connect(gateway.addr(), "/ws").await;

    // Messages (and pings, as Streamlit's) more often than the timeout keep it open,
    // well past one timeout.
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if i % 2 == 0 {
            let message = Message::text(format!("still here {i}"));
            assert_eq!(round_trip(&mut client, message.clone()).await, message);
        } else {
            within("ping", client.send(Message::Ping(vec![1, 2].into())))
                .await
                .expect("ping");
            assert_eq!(
                next_message(&mut client).await,
                Message::Pong(vec![1, 2].into())
            );
        }
    }

    // Then silence: the gateway closes it with 1001, as a server going away.
    let quiet = Instant::now();
    match next_message(&mut client).await {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Away);
            assert_eq!(frame.reason, "idle timeout");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(quiet.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn routes_cap_websockets_and_close_idle_ones_by_default() {
    let (upstream, _) = spawn_ws_upstream().await;
    let gateway = gateway_for(upstream).await;
    let snapshot = gateway.gateway.snapshot();
    let route = snapshot.routes.routes().next().expect("the route");
    let cap = route.websockets.as_ref().expect("a cap on every route");
    assert_eq!(cap.max, 1000);
    assert_eq!(route.websocket_idle_timeout, Duration::from_secs(3600));
}
