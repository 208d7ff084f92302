//! Keep-alive HTTP/1.1 connections to one upstream, reused from request to request,
//! spoken by the engine's client ([`crate::http1::client`]) in the task of the request;
//! to an https upstream each is a TLS connection ([`UpstreamTls`]), its handshake part
//! of connecting (`connect_timeout` covers both).
//!
//! A snapshot holds one pool per upstream (handed on to the next snapshot while the
//! upstream's address and timeouts are unchanged), so taking a connection needs no key:
//! the most recently returned one is taken first, which keeps the busy set of sockets
//! warm and lets the rest age out. A connection goes back to the pool when its response
//! body has been read to the end and both sides allow another request; one whose
//! response was abandoned half-read, or that was upgraded to a WebSocket, is not reused.
//!
//! What a pooled client must get right: a connection the upstream closed while it sat
//! idle is noticed (its socket is asked, without waiting, when it is taken) and
//! skipped, and a request that found its connection closed before a byte of it was
//! written is retried on another one. A request that was written is sent again only when that is safe and
//! the failure is the keep-alive race: a `GET`, `HEAD` or `OPTIONS` without a body, on
//! a connection that had been idle long enough for the upstream to be closing it (as
//! uvicorn does after 5 s), which closed before a complete response head came; once,
//! on a new connection. Any other request that was written is never replayed: the upstream
//! may have acted on it.
//!
//! The pool also counts what the status page, `/snapshot` and `/metrics` show of it
//! ([`PoolCounts`]): the requests in flight (from [`UpstreamPool::send`] until the
//! response body is read to the end or abandoned, which a request's [`Lease`] marks),
//! the connections open (each holds a share of the count while its socket lives, in the
//! pool, lent to a request or carrying a WebSocket) and those idle in the pool. A request
//! pays one atomic increment and one decrement for it; a connection, one of each more.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;

use super::limits::LimitedBody;
use super::upstream_tls::UpstreamTls;
use crate::http1::client::{
    self, Connection, Failure, IncomingBody, Outgoing, Received, SendError,
};

type Pooled = Box<Connection<UpstreamStream>>;

/// How long a pooled connection must have been idle before a request that changes
/// nothing may be sent again when that connection closes under it. Under load
/// connections are idle for microseconds and such a close is a real failure; an
/// upstream's keep-alive timer closes them after seconds.
const REPLAYABLE_AFTER_IDLE: Duration = Duration::from_millis(250);

/// The largest response head an upstream may send (502 beyond; nginx's default is 4 or
/// 8 KiB), and about the most of a response its connection reads ahead of the client
/// (a read takes 16 KiB, passed on before the next): with the listener's write buffer,
/// what a client that stops reading makes the gateway hold, for at most `send_timeout`.
/// (hyper's client read 400 KiB ahead by default.)
pub const RESPONSE_BUFFER: usize = 32 * 1024;

/// The pool of one upstream. Cheap to clone; clones share the connections.
#[derive(Debug, Clone)]
pub struct UpstreamPool {
    shared: Arc<Shared>,
}

/// Where an upstream listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UpstreamAddress {
    /// Host name or IP address (no brackets) and port, as `TcpStream::connect` takes them.
    Tcp { host: String, port: u16 },
    /// A Unix-domain socket (`url = "unix:/run/app/api.sock"`).
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for UpstreamAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Self::Tcp { host, port } => write!(f, "{host}:{port}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[derive(Debug)]
struct Shared {
    address: UpstreamAddress,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// TLS settings, for an https upstream.
    tls: Option<UpstreamTls>,
    /// Idle connections, the most recently returned at the back.
    idle: Mutex<VecDeque<IdleConnection>>,
    reaper_started: AtomicBool,
    /// Requests in flight and connections open. Apart from `Shared`: a connection
    /// counts itself open while it lives, and must not keep the pool that holds it.
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    in_flight: AtomicUsize,
    open: AtomicUsize,
}

/// What one pool holds and carries now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolCounts {
    /// Requests sent on the pool's connections (or waiting for one) whose response
    /// body is not yet read to the end.
    pub in_flight: usize,
    /// Connections idle in the pool, ready for the next request.
    pub idle: usize,
    /// Connections open: idle, lent to a request, or carrying a WebSocket.
    pub open: usize,
}

#[derive(Debug)]
struct IdleConnection {
    connection: Pooled,
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
    #[error(transparent)]
    Request(SendError),
}

/// What [`UpstreamPool::send`] resolves to: the response head (its body reading from
/// the connection) and the lease that returns the connection, or why there is none.
pub type Sent = Result<(Received<UpstreamStream>, Lease), UpstreamError>;

impl UpstreamPool {
    /// A pool of connections to `address`, over TLS with `tls`.
    pub fn new(
        address: UpstreamAddress,
        connect_timeout: Duration,
        idle_timeout: Duration,
        tls: Option<UpstreamTls>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                address,
                connect_timeout,
                idle_timeout,
                tls,
                idle: Mutex::new(VecDeque::new()),
                reaper_started: AtomicBool::new(false),
                counts: Arc::default(),
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
        mut request: Outgoing<LimitedBody>,
    ) -> impl Future<Output = Sent> + Send + '_ {
        // A block, not an `async fn`, which would keep a second copy of `request` in its
        // state: this future is part of every request's.
        async move {
            // In flight from here until the lease is dropped: with the response body,
            // or here, when no response comes (or the caller's timeout drops this).
            let lease = Lease::new(&self.shared);
            let mut replayed = false;
            loop {
                // A replay goes out on a new connection: the other idle ones are as old.
                let pooled = if replayed {
                    None
                } else {
                    self.shared.take_idle()
                };
                let (connection, idle_for) = match pooled {
                    Some((connection, idle_for)) => (connection, Some(idle_for)),
                    // Boxed: a new connection is the exception, and its future is large.
                    None => (Box::pin(self.connect()).await?, None),
                };
                // Sent again only once, and only what changes nothing and has no body,
                // on a connection that was idle long enough to be closing.
                let replayable = !replayed
                    && idle_for.is_some_and(|idle| idle >= REPLAYABLE_AFTER_IDLE)
                    && matches!(request.method, Method::GET | Method::HEAD | Method::OPTIONS)
                    && request.body.is_end_stream();
                let Failure {
                    error,
                    nothing_written,
                } = match connection.send(&mut request).await {
                    Ok(response) => return Ok((response, lease)),
                    Err(failure) => failure,
                };
                match error {
                    // The idle connection was closed before the request was written:
                    // nothing reached the upstream, so another connection may carry it.
                    _ if nothing_written && idle_for.is_some() => {}
                    SendError::ClosedBeforeResponse(_) if replayable => {
                        tracing::debug!(
                            address = %self.shared.address,
                            "an idle upstream connection closed under a request; sending it again"
                        );
                        replayed = true;
                    }
                    error => return Err(UpstreamError::Request(error)),
                }
            }
        }
    }

    /// Where the pool dials.
    pub fn address(&self) -> &UpstreamAddress {
        &self.shared.address
    }

    /// The TLS settings, for an https upstream.
    pub fn tls(&self) -> Option<&UpstreamTls> {
        self.shared.tls.as_ref()
    }

    /// Requests in flight and connections now. For the admin endpoints: it takes the
    /// idle list's lock for a moment.
    pub fn counts(&self) -> PoolCounts {
        let shared = &self.shared;
        PoolCounts {
            in_flight: shared.counts.in_flight.load(Ordering::Relaxed),
            idle: shared.lock_idle().len(),
            open: shared.counts.open.load(Ordering::Relaxed),
        }
    }

    async fn connect(&self) -> Result<Pooled, UpstreamError> {
        let shared = &self.shared;
        let connected = tokio::time::timeout(shared.connect_timeout, async {
            let (host, port) = match &shared.address {
                UpstreamAddress::Tcp { host, port } => (host.as_str(), *port),
                UpstreamAddress::Unix(path) => {
                    let stream = UnixStream::connect(path)
                        .await
                        .map_err(UpstreamError::Connect)?;
                    return Ok(Stream::Unix(stream));
                }
            };
            let stream = TcpStream::connect((host, port))
                .await
                .map_err(UpstreamError::Connect)?;
            // Small requests and responses go out at once, not after Nagle's delay.
            stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
            Ok(match &shared.tls {
                None => Stream::Plain(stream),
                Some(tls) => {
                    let stream = tls.connect(stream).await.map_err(UpstreamError::Tls)?;
                    Stream::Tls(Box::new(stream))
                }
            })
        });
        let stream = match connected.await {
            Ok(stream) => stream?,
            Err(_elapsed) => return Err(UpstreamError::ConnectTimeout(shared.connect_timeout)),
        };
        tracing::debug!(address = %shared.address, "opened a connection to the upstream");
        let stream = UpstreamStream {
            stream,
            _open: Open::new(&shared.counts),
        };
        Ok(Connection::new(stream, RESPONSE_BUFFER))
    }
}

/// A connection to an upstream, counted open in its pool while it lives.
#[derive(Debug)]
pub struct UpstreamStream {
    stream: Stream,
    _open: Open,
}

/// TCP, TLS over it for an https upstream, or a Unix-domain socket.
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Unix(UnixStream),
}

/// One connection's share of its pool's count of open connections.
#[derive(Debug)]
struct Open(Arc<Counts>);

impl Open {
    fn new(counts: &Arc<Counts>) -> Self {
        counts.open.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(counts))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Stream {
    /// Whether the upstream closed this idle connection (or sent on it unasked, or it
    /// failed): the socket has become readable since the last read drained it. Asked
    /// of the reactor's readiness, without a system call.
    fn closed_while_idle(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self {
            Self::Plain(stream) => stream.poll_read_ready(&mut cx).is_ready(),
            Self::Tls(stream) => stream.get_ref().0.poll_read_ready(&mut cx).is_ready(),
            Self::Unix(stream) => stream.poll_read_ready(&mut cx).is_ready(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Unix(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::Tls(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::Unix(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(stream) => stream.is_write_vectored(),
            Self::Tls(stream) => stream.is_write_vectored(),
            Self::Unix(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream).poll_flush(cx),
            Self::Unix(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl Shared {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, VecDeque<IdleConnection>> {
        // The critical sections only push and pop: a panic cannot leave the queue torn.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently returned usable connection, and how long it was idle.
    fn take_idle(&self) -> Option<(Pooled, Duration)> {
        loop {
            // Taken out under the lock, checked outside it.
            let idle = self.lock_idle().pop_back()?;
            let idle_for = idle.since.elapsed();
            if idle_for < self.idle_timeout && !idle.connection.io().stream.closed_while_idle() {
                return Some((idle.connection, idle_for));
            }
            // Closed by the upstream, or idle too long: dropping it closes it.
        }
    }

    fn put_idle(self: &Arc<Self>, connection: Pooled) {
        let now = Instant::now();
        let mut idle = self.lock_idle();
        // The oldest are at the front: drop the ones that have expired meanwhile.
        while idle
            .front()
            .is_some_and(|oldest| now.duration_since(oldest.since) >= self.idle_timeout)
        {
            idle.pop_front();
        }
        idle.push_back(IdleConnection {
            connection,
            since: now,
        });
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
                pool.lock_idle().retain_mut(|idle| {
                    now.duration_since(idle.since) < pool.idle_timeout
                        && !idle.connection.io().stream.closed_while_idle()
                });
            }
        });
    }
}

/// A request's place in its pool's count of requests in flight, and its response's
/// way back to the pool: the connection returns once the response is read.
#[derive(Debug)]
pub struct Lease {
    pool: Weak<Shared>,
}

impl Lease {
    fn new(pool: &Arc<Shared>) -> Self {
        pool.counts.in_flight.fetch_add(1, Ordering::Relaxed);
        Self {
            pool: Arc::downgrade(pool),
        }
    }

    fn release(mut self, connection: Pooled) {
        // Taken: the drop that follows finds nothing left to do.
        if let Some(pool) = std::mem::take(&mut self.pool).upgrade() {
            pool.counts.in_flight.fetch_sub(1, Ordering::Relaxed);
            pool.put_idle(connection);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.counts.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// An upstream's response body, returning its connection to the pool when read to the
/// end. Dropped before the end, the connection is closed instead.
#[derive(Debug)]
pub struct UpstreamBody {
    body: IncomingBody<UpstreamStream>,
    lease: Option<Lease>,
}

impl UpstreamBody {
    /// `lease` is `None` when the connection must not be reused.
    pub fn new(body: IncomingBody<UpstreamStream>, lease: Option<Lease>) -> Self {
        Self { body, lease }
    }

    fn release(&mut self) {
        if let Some(lease) = self.lease.take()
            && let Some(connection) = self.body.reusable()
        {
            lease.release(connection);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = client::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, client::BodyError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            // A broken body means a broken connection: it is closed with the body.
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
