//! WebSockets through the gateway, over real sockets: an axum echo upstream and a
//! tokio-tungstenite client. Messages of every kind cross the tunnel unchanged, the
//! handshake gets the same header policy as an HTTP request, a refused upgrade reaches
//! the client as the upstream's answer, and an open socket outlives a reload.

mod common;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message as ServerMessage, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, StatusCode};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{WebSocketStream, client_async};

/// Hang guard for every network step; never a statement about speed.
const HANG_GUARD: Duration = Duration::from_secs(10);
/// The subprotocol the echo upstream speaks.
const PROTOCOL: &str = "fluxlit-echo";

const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
/// Loopback too, but outside `trust.proxies = ["127.0.0.1/32"]`.
const UNTRUSTED: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

type Client = WebSocketStream<TcpStream>;

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("hang guard: {what} did not finish within {HANG_GUARD:?}"))
}

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

async fn echo(mut socket: WebSocket) {
    // Pings are answered by the library; after a close frame the next `recv` sends the
    // library's close reply and then ends the loop.
    while let Some(Ok(message)) = socket.recv().await {
        let reply = match message {
            ServerMessage::Text(_) | ServerMessage::Binary(_) => message,
            ServerMessage::Ping(_) | ServerMessage::Pong(_) | ServerMessage::Close(_) => continue,
        };
        if socket.send(reply).await.is_err() {
            return;
        }
    }
}

async fn refuse_upgrade() -> impl IntoResponse {
    (StatusCode::FORBIDDEN, "upgrade refused by the upstream")
}

/// A gateway routing everything to `upstream`, trusting 127.0.0.1 only.
async fn gateway_for(upstream: SocketAddr) -> TestGateway {
    TestGateway::start(&routes_to(upstream, "ui", "/")).await
}

fn routes_to(upstream: SocketAddr, route: &str, prefix: &str) -> String {
    format!(
        "[trust]\nproxies = [\"127.0.0.1/32\"]\n\n\
         [upstreams.ui]\nurl = \"http://{upstream}\"\n\n\
         [[routes]]\nname = \"{route}\"\npath_prefix = \"{prefix}\"\nupstream = \"ui\"\n"
    )
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
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind the client's source address");
    let stream = within("TCP connect", socket.connect(gateway))
        .await
        .expect("connect to gateway");
    within("WebSocket handshake", client_async(request, stream)).await
}

async fn connect(gateway: SocketAddr, path: &str) -> Client {
    connect_from(LOCALHOST, gateway, path, &[])
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

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

#[tokio::test]
async fn text_and_binary_messages_echo_through_the_gateway() {
    let (upstream, _) = spawn_ws_upstream().await;
    let gateway = gateway_for(upstream).await;
    let mut client = connect(gateway.addr(), "/ws").await;

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
    let (upstream, _) = spawn_ws_upstream().await;
    let gateway = gateway_for(upstream).await;
    let mut client = connect(gateway.addr(), "/ws").await;

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
    let (upstream, _) = spawn_ws_upstream().await;
    let gateway = gateway_for(upstream).await;
    let mut client = connect(gateway.addr(), "/ws").await;

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
    let (upstream, _) = spawn_ws_upstream().await;
    let gateway = gateway_for(upstream).await;
    let mut client = connect(gateway.addr(), "/ws").await;

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
        header(&seen, "x-forwarded-for"),
        ["127.0.0.2"],
        "the peer, not the spoofed chain"
    );
    assert_eq!(
        header(&seen, "x-forwarded-host"),
        [gateway.addr().to_string()]
    );
    assert_eq!(header(&seen, "x-forwarded-proto"), ["http"]);
    assert!(header(&seen, "forwarded").is_empty(), "{seen:?}");
    assert!(
        header(&seen, "x-remote-user").is_empty(),
        "identity from an untrusted peer: {seen:?}"
    );
    assert!(
        header(&seen, "x-not-on-any-allowlist").is_empty(),
        "{seen:?}"
    );
    assert_eq!(
        header(&seen, "host"),
        [upstream.to_string()],
        "Host is the upstream's"
    );
    assert_eq!(header(&seen, "sec-websocket-protocol"), [PROTOCOL]);
    assert_eq!(header(&seen, "upgrade"), ["websocket"]);

    let request_id = header(&seen, "x-request-id");
    assert_eq!(request_id.len(), 1, "{seen:?}");
    assert_ne!(request_id[0], "chosen-by-the-client");
    assert!(!request_id[0].is_empty());
    // The 101 echoes the same id and carries the negotiated subprotocol.
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(header(response.headers(), "x-request-id"), request_id);
    assert_eq!(
        header(response.headers(), "sec-websocket-protocol"),
        [PROTOCOL]
    );

    assert_eq!(
        round_trip(&mut client, Message::text("policy ok")).await,
        Message::text("policy ok")
    );
}

#[tokio::test]
async fn a_trusted_proxys_forwarding_and_identity_headers_reach_the_upstream_on_the_handshake() {
    let (upstream, handshakes) = spawn_ws_upstream().await;
    let gateway = gateway_for(upstream).await;
    let sent = [
        ("x-forwarded-for", "203.0.113.7"),
        ("x-remote-user", "alice"),
        ("x-request-id", "from-the-front-proxy"),
    ];
    let (_client, response) = connect_from(LOCALHOST, gateway.addr(), "/ws", &sent)
        .await
        .expect("WebSocket handshake succeeds");

    let seen = handshakes.last();
    assert_eq!(
        header(&seen, "x-forwarded-for"),
        ["203.0.113.7, 127.0.0.1"],
        "the chain is extended"
    );
    assert_eq!(header(&seen, "x-remote-user"), ["alice"]);
    assert_eq!(header(&seen, "x-request-id"), ["from-the-front-proxy"]);
    assert_eq!(
        header(response.headers(), "x-request-id"),
        ["from-the-front-proxy"]
    );
    assert_eq!(header(&seen, "host"), [upstream.to_string()]);
}

#[tokio::test]
async fn an_upstream_that_refuses_the_upgrade_gives_the_client_its_403() {
    let (upstream, handshakes) = spawn_ws_upstream().await;
    let gateway = gateway_for(upstream).await;

    match connect_from(LOCALHOST, gateway.addr(), "/refuse", &[]).await {
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
    let (upstream, _) = spawn_ws_upstream().await;
    let gateway = gateway_for(upstream).await;
    let mut client = connect(gateway.addr(), "/ws").await;
    assert_eq!(
        round_trip(&mut client, Message::text("before")).await,
        Message::text("before")
    );

    // The only route is replaced by one that no longer matches `/ws`.
    gateway.write_config(&routes_to(upstream, "elsewhere", "/elsewhere"));
    within("reload", gateway.wait_for_generation(2)).await;
    match connect_from(LOCALHOST, gateway.addr(), "/ws", &[]).await {
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
    let gateway = TestGateway::start(&format!(
        "[server]\nmax_connections = 1\n\n{}",
        routes_to(upstream, "ui", "/")
    ))
    .await;
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = within(
            "request",
            common::send(gateway.addr(), common::get(gateway.addr(), "/", &[])),
        )
        .await;
        // Served again (the upstream has no `/` page: its own 404).
        if reply.status != 503 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
