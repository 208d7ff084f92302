//! WebSocket tunnels: after the upstream's `101`, bytes are copied both ways unchanged.
//!
//! The tunnel is its own task, independent of the snapshot and of the HTTP connection
//! it came from, so a reload never cuts an open WebSocket. It ends with a close frame
//! of its own in three cases: the gateway shuts down (1001 "going away", to both
//! sides); no bytes crossed it either way for the route's `websocket_idle_timeout`
//! (1001 "idle timeout": each tunnel to Streamlit holds a session there); or the
//! credential it was opened with expires or its browser session ends (1008: a token's
//! `exp`, a logout on any replica; Streamlit sessions last for hours, tokens do not).
//! To put a frame on the wire it stops each
//! direction at a frame boundary ([`FrameTracker`]), writes the close frame — masked
//! toward the upstream, as a client's frames must be — and half-closes.

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Poll, ready};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use crate::idle::LastActivity;
use crate::shutdown::{self, InFlight};

use super::ws_frames::{FrameTracker, close_frame};
use crate::auth::oidc::session::SessionWatch;

/// How long a closing tunnel waits for a frame in progress to end and for the peers to
/// answer the close, before it drops the sockets.
const CLOSING_LIMIT: Duration = Duration::from_secs(5);
/// The most one read takes: what tokio's `copy_bidirectional` used before the tunnel
/// became frame-aware. The buffer is on the stack of the poll that reads, not in the
/// tunnel (see [`read_chunk`]).
const COPY_BUFFER: usize = 8 * 1024;

/// The open tunnels of one listener: how many there are, and the signal that closes
/// them all at shutdown. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Tunnels {
    drain: shutdown::Signal,
    open: InFlight,
}

impl Tunnels {
    /// Tunnels that get a 1001 close frame when `drain` fires.
    pub fn new(drain: shutdown::Signal) -> Self {
        Self {
            drain,
            open: InFlight::new(),
        }
    }

    /// Tunnels open right now.
    pub fn open(&self) -> usize {
        self.open.count()
    }

    /// Resolves when no tunnel is open.
    pub async fn all_closed(&self) {
        self.open.idle().await;
    }
}

/// Why the gateway closes a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    ShuttingDown,
    Idle,
    CredentialExpired,
    SessionEnded,
}

impl Closing {
    fn code_and_reason(self) -> (u16, &'static str) {
        match self {
            Self::ShuttingDown => (1001, "the gateway is shutting down"),
            Self::Idle => (1001, "idle timeout"),
            Self::CredentialExpired => (1008, "credential expired"),
            Self::SessionEnded => (1008, "session ended"),
        }
    }
}

use super::limits::WebSocketSlot;

/// What ends a tunnel besides its peers and the gateway's shutdown.
#[derive(Debug, Default)]
pub struct Lifetime {
    /// When the credential the handshake was let in with expires.
    pub expires_at: Option<SystemTime>,
    /// The browser session the handshake came in.
    pub session: Option<SessionWatch>,
    /// Closes the tunnel once it has carried no bytes either way for this long.
    pub idle_timeout: Option<Duration>,
}

pub fn spawn_tunnel(
    tunnels: &Tunnels,
    client: crate::http1::server::OnUpgrade,
    upstream: crate::http1::Upgraded,
    // Held for as long as the tunnel is open: the route's count of open WebSockets.
    slot: Option<WebSocketSlot>,
    route: Arc<str>,
    lifetime: Lifetime,
    metrics: Arc<crate::metrics::RouteMetrics>,
) {
    let Lifetime {
        expires_at,
        session,
        idle_timeout,
    } = lifetime;
    let open = tunnels.open.enter();
    let drain = tunnels.drain.clone();
    tokio::spawn(async move {
        let _open = open;
        let _slot = slot;
        let client = match client.await {
            Ok(client) => client,
            Err(error) => {
                tracing::debug!(%route, %error, "websocket upgrade did not complete");
                return;
            }
        };
        let _open_metric = metrics.websocket_opened();
        let activity = Arc::new(LastActivity::new());
        // The wait for a reason to close is a task of its own: polled with the copy, the
        // shutdown signal (shared by every connection) would be polled on every read.
        let (closing_tx, mut closing) = watch::channel(None);
        let _reason = AbortOnDrop(tokio::spawn({
            let route = Arc::clone(&route);
            let activity = Arc::clone(&activity);
            async move {
                let expiry = async {
                    match expires_at {
                        Some(at) => {
                            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
                            tokio::time::sleep(left).await;
                        }
                        None => std::future::pending().await,
                    }
                };
                let session_ended = async {
                    match &session {
                        Some(session) => session.ended().await,
                        None => std::future::pending().await,
                    }
                };
                let idle = async {
                    match idle_timeout {
                        Some(limit) => activity.quiet_for(limit).await,
                        None => std::future::pending().await,
                    }
                };
                let why = tokio::select! {
                    () = drain.fired() => Closing::ShuttingDown,
                    () = idle => Closing::Idle,
                    () = expiry => Closing::CredentialExpired,
                    () = session_ended => Closing::SessionEnded,
                };
                match why {
                    Closing::ShuttingDown => tracing::debug!(%route, "websocket closing: shutdown"),
                    Closing::Idle => {
                        tracing::debug!(%route, "websocket closed: idle timeout");
                    }
                    Closing::CredentialExpired => {
                        tracing::info!(%route, "websocket closed: its credential expired");
                    }
                    Closing::SessionEnded => {
                        tracing::info!(%route, "websocket closed: its session ended");
                    }
                }
                let _ = closing_tx.send(Some(why));
            }
        }));
        let (client_read, client_write) = tokio::io::split(client);
        let (upstream_read, upstream_write) = tokio::io::split(upstream);
        let to_upstream = pump(
            client_read,
            upstream_write,
            true,
            closing.clone(),
            &activity,
        );
        let to_client = pump(
            upstream_read,
            client_write,
            false,
            closing.clone(),
            &activity,
        );
        let copying = async { tokio::join!(to_upstream, to_client) };
        tokio::pin!(copying);
        let (to_upstream, to_client) = tokio::select! {
            both = &mut copying => both,
            _ = closing.changed() => {
                match tokio::time::timeout(CLOSING_LIMIT, &mut copying).await {
                    Ok(both) => both,
                    Err(_) => {
                        tracing::debug!(%route, "websocket peers did not finish closing in time");
                        return;
                    }
                }
            }
        };
        match (to_upstream, to_client) {
            (Ok(to_upstream), Ok(to_client)) => {
                tracing::debug!(%route, to_upstream, to_client, "websocket closed");
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::debug!(%route, %error, "websocket ended with an error");
            }
        }
    });
}

/// Copies one direction until end of stream, or — once `closing` is set — up to the
/// next frame boundary, then sends the close frame and half-closes. Returns the bytes
/// copied.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    toward_upstream: bool,
    mut closing: watch::Receiver<Option<Closing>>,
    activity: &LastActivity,
) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut tracker = FrameTracker::default();
    let mut copied = 0u64;
    let mut listening = true;
    let why = loop {
        let chunk = tokio::select! {
            read = read_chunk(&mut from) => read?,
            changed = closing.changed(), if listening => {
                match (changed, *closing.borrow()) {
                    (Ok(()), Some(why)) => break why,
                    (Ok(()), None) => {}
                    // No one can close the tunnel any more: just copy.
                    (Err(_), _) => listening = false,
                }
                continue;
            }
        };
        if chunk.is_empty() {
            to.shutdown().await?;
            return Ok(copied);
        }
        activity.touch();
        tracker.advance(&chunk);
        to.write_all(&chunk).await?;
        copied += chunk.len() as u64;
    };

    // Finish the frame in progress, so the close frame starts on a boundary. What the
    // peer sent after it is not forwarded: the other side is being closed.
    while !tracker.at_boundary() {
        let chunk = read_chunk(&mut from).await?;
        if chunk.is_empty() {
            to.shutdown().await?;
            return Ok(copied);
        }
        let end = tracker.advance_to_boundary(&chunk).unwrap_or(chunk.len());
        to.write_all(&chunk[..end]).await?;
        copied += end as u64;
    }
    if !tracker.close_seen() {
        let (code, reason) = why.code_and_reason();
        let mask = toward_upstream.then(mask_key);
        to.write_all(&close_frame(code, reason, mask)).await?;
    }
    to.flush().await?;
    to.shutdown().await?;
    // Read (and drop) until the peer closes: its answer to the other side's close frame.
    while !read_chunk(&mut from).await?.is_empty() {}
    Ok(copied)
}

/// Reads what is there (up to [`COPY_BUFFER`]) into a buffer on the stack and returns it
/// on the heap, sized to what was read. Between reads a tunnel then holds no buffer: a
/// WebSocket that waits for its next message, as most do most of the time, costs no
/// 2 × 8 KiB. An empty chunk is the end of the stream.
async fn read_chunk<R: AsyncRead + Unpin>(from: &mut R) -> std::io::Result<Vec<u8>> {
    std::future::poll_fn(|cx| {
        let mut space = [MaybeUninit::<u8>::uninit(); COPY_BUFFER];
        let mut buf = ReadBuf::uninit(&mut space);
        ready!(Pin::new(&mut *from).poll_read(cx, &mut buf))?;
        Poll::Ready(Ok(buf.filled().to_vec()))
    })
    .await
}

/// A masking key: RFC 6455 wants it unpredictable. The v4 UUID generator is the
/// operating system's random source, already a dependency.
fn mask_key() -> [u8; 4] {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    [bytes[0], bytes[1], bytes[2], bytes[3]]
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
