//! WebSocket tunnels: after the upstream's `101`, bytes are copied both ways unchanged.
//!
//! The tunnel is its own task, independent of the snapshot and of the HTTP connection
//! it came from, so a reload never cuts an open WebSocket. A tunnel opened with a
//! credential that expires (a token's `exp`) is closed when it does: Streamlit
//! sessions last for hours, tokens do not.

use std::sync::Arc;
use std::time::SystemTime;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::limits::WebSocketSlot;

pub fn spawn_tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    // Held for as long as the tunnel is open: the route's count of open WebSockets.
    slot: Option<WebSocketSlot>,
    route: Arc<str>,
    expires_at: Option<SystemTime>,
) {
    tokio::spawn(async move {
        let _slot = slot;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(error) => {
                tracing::debug!(%route, %error, "websocket upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        let expiry = async {
            match expires_at {
                Some(at) => {
                    let left = at.duration_since(SystemTime::now()).unwrap_or_default();
                    tokio::time::sleep(left).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match result {
                Ok((to_upstream, to_client)) => {
                    tracing::debug!(%route, to_upstream, to_client, "websocket closed");
                }
                Err(error) => tracing::debug!(%route, %error, "websocket ended with an error"),
            },
            () = expiry => {
                // Both sockets are dropped here: the client sees the connection close and
                // must reconnect with a fresh credential.
                tracing::info!(%route, "websocket closed: its credential expired");
            }
        }
    });
}
