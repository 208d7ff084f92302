//! A WebSocket echo upstream (axum) and what its clients share.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

/// A WebSocket client over plain TCP.
pub type Client = WebSocketStream<TcpStream>;

/// Echoes text and binary messages until the client closes. Pings are answered by the
/// library; after a close frame the next `recv` sends the library's close reply and
/// then ends the loop. It never speaks first.
pub async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        if matches!(message, Message::Text(_) | Message::Binary(_))
            && socket.send(message).await.is_err()
        {
            return;
        }
    }
}

/// An upstream accepting WebSockets on `path` (an axum route: `/ws`, or `/{*path}` for
/// any path but the root) and answering them with [`echo`]; other paths get 404.
pub async fn spawn_echo_upstream(path: &str) -> SocketAddr {
    super::spawn_upstream(Router::new().route(
        path,
        axum::routing::get(|upgrade: WebSocketUpgrade| async move { upgrade.on_upgrade(echo) }),
    ))
    .await
}
