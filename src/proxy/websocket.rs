//! WebSocket tunnels: after the upstream's `101`, bytes are copied both ways unchanged.
//!
//! The tunnel is its own task, independent of the snapshot and of the HTTP connection
//! it came from, so a reload never cuts an open WebSocket.

use std::sync::Arc;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

pub fn spawn_tunnel(client: OnUpgrade, upstream: OnUpgrade, route: Arc<str>) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(error) => {
                tracing::debug!(%route, %error, "websocket upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((to_upstream, to_client)) => {
                tracing::debug!(%route, to_upstream, to_client, "websocket closed");
            }
            Err(error) => tracing::debug!(%route, %error, "websocket ended with an error"),
        }
    });
}
