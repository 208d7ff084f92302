//! Caps: per connection of the public listener (head and idle timeouts, head size, how
//! many), and per route (the largest request body, the most open WebSockets).
//!
//! The body cap is checked on the stream as it passes, never by buffering: a
//! [`LimitedBody`] forwards frames until the next one would cross the cap, then fails
//! instead of forwarding it, so the upstream never receives more than the cap and its
//! request is aborted. The WebSocket cap is a counter shared by the route's snapshots
//! (a reload keeps the count of tunnels already open).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::http1;

/// Per-connection limits of the public listener, read when a connection is accepted.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// How long the client may accept none of the bytes the gateway is sending.
    pub send_timeout: Duration,
    pub max_header_size: usize,
    pub max_connections: usize,
    pub http2: Http2Limits,
    /// HTTP/2 with prior knowledge on a plain connection (`server.h2c`).
    pub h2c: bool,
}

/// What one HTTP/2 connection may hold: streams, request bytes received ahead of the
/// upstreams (the receive windows) and response bytes buffered per stream for a client
/// that does not read.
#[derive(Debug, Clone, Copy)]
pub struct Http2Limits {
    pub max_concurrent_streams: u32,
    pub stream_window: u32,
    pub connection_window: u32,
    pub max_send_buffer: usize,
}

impl Http2Limits {
    /// Sets these limits on a connection builder. hyper's other defences stay on: at
    /// most 20 streams reset by the client before they were served (rapid reset, then
    /// GOAWAY), 1,024 streams the server had to reset, and request heads (CONTINUATION
    /// frames included) of at most `max_header_list_size`.
    pub fn apply<E>(&self, http2: &mut hyper::server::conn::http2::Builder<E>) {
        http2
            .max_concurrent_streams(self.max_concurrent_streams)
            .initial_stream_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .adaptive_window(false)
            .max_send_buf_size(self.max_send_buffer);
    }
}

/// A client's request body as its connection delivers it: read by fluxlit's HTTP/1.1
/// engine, or by hyper's HTTP/2 server.
#[derive(Debug)]
pub enum ClientBody {
    Http1(http1::server::RequestBody),
    Http2(Incoming),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            Self::Http1(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(ClientBodyError::Http1),
            Self::Http2(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(ClientBodyError::Http2),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Http1(body) => body.is_end_stream(),
            Self::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Http1(body) => body.size_hint(),
            Self::Http2(body) => body.size_hint(),
        }
    }
}

/// Why a client's request body failed on its connection.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error(transparent)]
    Http1(http1::server::BodyError),
    #[error(transparent)]
    Http2(hyper::Error),
}

/// Why a request body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the client's request body failed")]
    Client(#[source] ClientBodyError),
    #[error("the request body is larger than the route's max_request_body of {limit} bytes")]
    TooLarge { limit: u64 },
}

/// The client's request body on its way upstream, cut at the route's cap.
#[derive(Debug)]
pub struct LimitedBody {
    /// `None`: no body (a copy of a bodiless request, sent again).
    inner: Option<ClientBody>,
    limit: u64,
    seen: u64,
    /// `None` for a request without a body (most of them): nothing can go over the
    /// cap, and the request spares the allocation.
    exceeded: Option<Arc<AtomicBool>>,
}

impl LimitedBody {
    pub fn new(inner: ClientBody, limit: u64) -> Self {
        let exceeded = (!inner.is_end_stream()).then(|| Arc::new(AtomicBool::new(false)));
        Self {
            inner: Some(inner),
            limit,
            seen: 0,
            exceeded,
        }
    }

    /// No body at all (what is left of a body taken away, too).
    pub fn empty() -> Self {
        Self {
            inner: None,
            limit: 0,
            seen: 0,
            exceeded: None,
        }
    }

    /// Turns true once the body has been cut; readable after the body is gone. `None`
    /// for a request without a body, which cannot be cut.
    pub fn exceeded(&self) -> Option<Arc<AtomicBool>> {
        self.exceeded.clone()
    }

    fn was_cut(&self) -> bool {
        self.exceeded
            .as_ref()
            .is_some_and(|exceeded| exceeded.load(Ordering::Relaxed))
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.was_cut() {
            return Poll::Ready(Some(Err(BodyError::TooLarge { limit: this.limit })));
        }
        let Some(inner) = &mut this.inner else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |data| data.len() as u64);
                this.seen = this.seen.saturating_add(len);
                if this.seen > this.limit {
                    if let Some(exceeded) = &this.exceeded {
                        exceeded.store(true, Ordering::Relaxed);
                    }
                    return Poll::Ready(Some(Err(BodyError::TooLarge { limit: this.limit })));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(BodyError::Client(error)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Default for LimitedBody {
    fn default() -> Self {
        Self::empty()
    }
}

/// Whether the declared `Content-Length` is over `limit` (a body without one, or with
/// one hyper already refused as malformed, is checked as it streams).
pub fn declared_length_exceeds(headers: &HeaderMap, limit: u64) -> bool {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .is_some_and(|length| length > limit)
}

/// A route's cap on open WebSockets.
#[derive(Debug)]
pub struct WebSocketCap {
    pub max: usize,
    /// Shared with the same route in earlier and later snapshots.
    open: Arc<AtomicUsize>,
}

impl WebSocketCap {
    /// A cap of `max`, counting on `open` (the previous snapshot's counter, to keep the
    /// tunnels it let in) or on a fresh counter.
    pub fn new(max: usize, open: Option<&WebSocketCap>) -> Self {
        Self {
            max,
            open: open.map_or_else(
                || Arc::new(AtomicUsize::new(0)),
                |cap| Arc::clone(&cap.open),
            ),
        }
    }

    /// A place for one more WebSocket, if the route has one free.
    pub fn try_open(&self) -> Option<WebSocketSlot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| WebSocketSlot(Arc::clone(&self.open)))
    }

    pub fn open_now(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One open WebSocket's place in its route's cap, given back on drop (when the tunnel
/// closes, or when the handshake did not succeed).
#[derive(Debug)]
pub struct WebSocketSlot(Arc<AtomicUsize>);

impl Drop for WebSocketSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
