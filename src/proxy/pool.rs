//! Keep-alive HTTP/1.1 connections to one upstream, reused from request to request; to
//! an https upstream each is a TLS connection ([`UpstreamTls`]), its handshake part of
//! connecting (`connect_timeout` covers both).
//!
//! A snapshot holds one pool per upstream (handed on to the next snapshot while the
//! upstream's address and timeouts are unchanged), so taking a connection needs no key:
//! the most recently returned one is taken first, which keeps the busy set of sockets
//! warm and lets the rest age out. A connection goes back to the pool when its response
//! body has been read to the end and hyper says it can carry another request; one whose
//! response was abandoned half-read, or that was upgraded to a WebSocket, is not reused.
//!
//! What a pooled client must get right: a connection the upstream closed while it sat
//! idle is noticed (hyper's connection task sees the EOF) and skipped, and a request
//! that found its connection closed before a byte of it was written is retried on
//! another one. A request that was written is sent again only when that is safe and
//! the failure is the keep-alive race: a `GET`, `HEAD` or `OPTIONS` without a body, on
//! a connection that had been idle long enough for the upstream to be closing it (as
//! uvicorn does after 5 s), which closed before a complete response head came; once,
//! on a new connection. Any other request that was written is never replayed: the upstream
//! may have acted on it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::limits::LimitedBody;
use super::upstream_tls::UpstreamTls;

type Sender = SendRequest<LimitedBody>;

/// How long a pooled connection must have been idle before a request that may be sent
/// again keeps a copy of its head for that. Under load connections are idle for
/// microseconds and pay nothing; an upstream's keep-alive timer closes them after
/// seconds.
const REPLAYABLE_AFTER_IDLE: Duration = Duration::from_millis(250);

/// The most of a response an upstream connection reads ahead of the client (hyper's
/// read buffer, 400 KiB by default): with the listener's write buffer, what a client
/// that stops reading makes the gateway hold, for at most `send_timeout`. Also the
/// largest response head an upstream may send (502 beyond; nginx's default is 4 or 8 KiB).
pub const RESPONSE_BUFFER: usize = 32 * 1024;

/// The pool of one upstream. Cheap to clone; clones share the connections.
#[derive(Debug, Clone)]
pub struct UpstreamPool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Host name or IP address (no brackets) and port, as `TcpStream::connect` takes them.
    host: String,
    port: u16,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// TLS settings, for an https upstream.
    tls: Option<UpstreamTls>,
    /// Idle connections, the most recently returned at the back.
    idle: Mutex<VecDeque<IdleConnection>>,
    reaper_started: AtomicBool,
}

#[derive(Debug)]
struct IdleConnection {
    sender: Sender,
    since: Instant,
}

/// Why a request got no response from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no connection within {}", humantime::format_duration(*.0))]
    ConnectTimeout(Duration),
    #[error("cannot connect")]
    Connect(#[source] std::io::Error),
    /// The TLS handshake failed; the source names why (an unknown issuer, a name the
    /// certificate is not valid for, a client certificate the upstream refused).
    #[error("TLS handshake failed")]
    Tls(#[source] std::io::Error),
    #[error("HTTP/1.1 handshake failed")]
    Handshake(#[source] hyper::Error),
    #[error(transparent)]
    Request(hyper::Error),
}

/// What [`UpstreamPool::send`] resolves to: the response head and the connection it
/// came on, or why there is none.
pub type Sent = Result<(Response<Incoming>, Lease), UpstreamError>;

impl UpstreamPool {
    /// A pool of connections to `host:port`, over TLS with `tls`.
    pub fn new(
        host: String,
        port: u16,
        connect_timeout: Duration,
        idle_timeout: Duration,
        tls: Option<UpstreamTls>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                host,
                port,
                connect_timeout,
                idle_timeout,
                tls,
                idle: Mutex::new(VecDeque::new()),
                reaper_started: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `request` on an idle connection, or a new one, and waits for the response
    /// head. The [`Lease`] comes back with it: keep it with the response body (see
    /// [`UpstreamBody`]) so the connection returns to the pool when the body is done.
    ///
    /// The request's URI must be in origin form (`/path?query`): it is written as is.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps a second copy of its arguments in its state"
    )]
    pub fn send(
        &self,
        mut request: Request<LimitedBody>,
    ) -> impl Future<Output = Sent> + Send + '_ {
        // A block, not an `async fn`, which would keep a second copy of `request` in its
        // state: this future is part of every request's.
        async move {
            let mut replayed = false;
            loop {
                // A replay goes out on a new connection: the other idle ones are as old.
                let pooled = if replayed {
                    None
                } else {
                    self.shared.take_idle()
                };
                let (mut sender, idle_for) = match pooled {
                    Some((sender, idle_for)) => (sender, Some(idle_for)),
                    // Boxed: a new connection is the exception, and its future is large.
                    None => (Box::pin(self.connect()).await?, None),
                };
                let replay = match idle_for {
                    Some(idle) if idle >= REPLAYABLE_AFTER_IDLE && !replayed => {
                        replay_copy(&request)
                    }
                    _ => None,
                };
                let mut error = match sender.try_send_request(request).await {
                    Ok(response) => {
                        let lease = Lease {
                            sender,
                            pool: Arc::downgrade(&self.shared),
                        };
                        return Ok((response, lease));
                    }
                    Err(error) => error,
                };
                request = match (error.take_message(), replay) {
                    // The idle connection was closed before the request was written:
                    // nothing reached the upstream, so another connection may carry it.
                    (Some(unsent), _) if idle_for.is_some() => unsent,
                    (None, Some(copy)) if closed_before_response(error.error()) => {
                        tracing::debug!(
                            host = %self.shared.host,
                            port = self.shared.port,
                            "an idle upstream connection closed under a request; sending it again"
                        );
                        replayed = true;
                        *copy
                    }
                    _ => return Err(UpstreamError::Request(error.into_error())),
                };
            }
        }
    }

    /// The TLS settings, for an https upstream.
    pub fn tls(&self) -> Option<&UpstreamTls> {
        self.shared.tls.as_ref()
    }

    async fn connect(&self) -> Result<Sender, UpstreamError> {
        let shared = &self.shared;
        let connected = tokio::time::timeout(shared.connect_timeout, async {
            let address = (shared.host.as_str(), shared.port);
            let stream = TcpStream::connect(address)
                .await
                .map_err(UpstreamError::Connect)?;
            // Small requests and responses go out at once, not after Nagle's delay.
            stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
            match &shared.tls {
                None => handshake(stream).await,
                Some(tls) => {
                    handshake(tls.connect(stream).await.map_err(UpstreamError::Tls)?).await
                }
            }
        });
        let sender = match connected.await {
            Ok(sender) => sender?,
            Err(_elapsed) => return Err(UpstreamError::ConnectTimeout(shared.connect_timeout)),
        };
        tracing::debug!(
            host = %shared.host,
            port = shared.port,
            "opened a connection to the upstream"
        );
        Ok(sender)
    }
}

/// HTTP/1.1 over a connected `io` (TCP, or TLS over it), its connection driven by a task
/// of its own until it ends (upgrades included: a WebSocket tunnel takes it over).
async fn handshake<IO>(io: IO) -> Result<Sender, UpstreamError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .max_buf_size(RESPONSE_BUFFER)
        .max_header_size(RESPONSE_BUFFER)
        .handshake(TokioIo::new(io))
        .await
        .map_err(UpstreamError::Handshake)?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

impl Shared {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, VecDeque<IdleConnection>> {
        // The critical sections only push and pop: a panic cannot leave the queue torn.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently returned usable connection, and how long it was idle.
    fn take_idle(&self) -> Option<(Sender, Duration)> {
        let mut idle = self.lock_idle();
        while let Some(connection) = idle.pop_back() {
            let idle_for = connection.since.elapsed();
            if connection.sender.is_ready() && idle_for < self.idle_timeout {
                return Some((connection.sender, idle_for));
            }
            // Closed by the upstream, or idle too long: dropping it closes it.
        }
        None
    }

    fn put_idle(self: &Arc<Self>, sender: Sender) {
        let now = Instant::now();
        let mut idle = self.lock_idle();
        // The oldest are at the front: drop the ones that have expired meanwhile.
        while idle
            .front()
            .is_some_and(|oldest| now.duration_since(oldest.since) >= self.idle_timeout)
        {
            idle.pop_front();
        }
        idle.push_back(IdleConnection { sender, since: now });
        drop(idle);
        if !self.reaper_started.swap(true, Ordering::Relaxed) {
            self.start_reaper();
        }
    }

    /// Closes connections that stay idle past the timeout even when no request comes
    /// to notice. The task ends with the pool.
    fn start_reaper(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = Arc::downgrade(self);
        let period = (self.idle_timeout / 2).max(Duration::from_millis(100));
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(pool) = pool.upgrade() else {
                    return;
                };
                let now = Instant::now();
                pool.lock_idle().retain(|connection| {
                    now.duration_since(connection.since) < pool.idle_timeout
                        && !connection.sender.is_closed()
                });
            }
        });
    }
}

/// A copy of `request` to send again if its connection turns out to have been closing:
/// only for a method that changes nothing (RFC 9110 §9.2.1) and carries no body. Boxed:
/// it is seldom made, and it would otherwise take room in every request's future.
fn replay_copy(request: &Request<LimitedBody>) -> Option<Box<Request<LimitedBody>>> {
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !safe || !request.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(LimitedBody::empty());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    Some(Box::new(copy))
}

/// The connection ended before a complete response head arrived: the upstream closed
/// it (EOF, or a reset for the request it would not read).
fn closed_before_response(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            );
        }
        source = cause.source();
    }
    false
}

/// A connection carrying a response: back to the pool once the response is read.
#[derive(Debug)]
pub struct Lease {
    sender: Sender,
    pool: Weak<Shared>,
}

impl Lease {
    fn release(mut self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        if self.sender.is_ready() {
            pool.put_idle(self.sender);
        } else if !self.sender.is_closed() {
            // hyper's connection task has not yet seen the end of the exchange (it has
            // not run since, or runs on another worker thread): wait for it, briefly, off
            // the request path.
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            runtime.spawn(async move {
                let ready = tokio::time::timeout(Duration::from_secs(1), self.sender.ready());
                if let Ok(Ok(())) = ready.await {
                    pool.put_idle(self.sender);
                }
            });
        }
    }
}

/// An upstream's response body, returning its connection to the pool when read to the
/// end. Dropped before the end, the connection is closed instead.
#[derive(Debug)]
pub struct UpstreamBody {
    body: Incoming,
    lease: Option<Lease>,
}

impl UpstreamBody {
    /// `lease` is `None` when the connection must not be reused (an upgrade took it).
    pub fn new(body: Incoming, lease: Option<Lease>) -> Self {
        Self { body, lease }
    }

    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            // A broken body means a broken connection: it is closed with the lease.
            Poll::Ready(Some(Err(_))) => this.lease = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body that was complete from the start (no content, `HEAD`, 304) is dropped
        // without being polled: its connection is as reusable as any.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}
