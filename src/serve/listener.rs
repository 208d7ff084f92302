//! The public listener: accepts connections (plain, or TLS with HTTP/2 by ALPN),
//! enforces per-connection limits and hands requests to the [`Proxy`]. HTTP/1.1 is
//! spoken by fluxlit's own engine ([`crate::http1::server`]), HTTP/2 by hyper; both
//! hand the same handler a [`ClientBody`].
//!
//! Limits are read from the current snapshot when a connection is accepted, so a reload
//! changes them for new connections. Each connection has a watchdog that closes it
//! when a client is too slow to send a request head (`header_read_timeout`, against
//! slowloris), sits idle between requests (`idle_timeout`), or accepts none of the
//! bytes the gateway has for it for `send_timeout` (a slow reader: closing the
//! connection drops the response body, which cancels the upstream request and closes
//! its connection); on HTTP/2 each stream has its own ([`super::stream_watch`]). What a
//! stalled reader holds meanwhile is bounded by the buffers:
//! the engine's write buffer (a response head and small frames, flushed at 16 KiB) and
//! the upstream connection's read buffer ([`crate::proxy::pool::RESPONSE_BUFFER`]).
//! On a TLS connection the handshake counts as part of the first request head: a client
//! that starts one and never finishes it is closed like a slowloris.
//!
//! The watchdog ([`Watch`]: a timer and the wait for shutdown) lives in the connection's
//! own task, which costs an idle connection no second task, but is looked at only when
//! it has news: the timer and the shutdown wake the task through the connection's
//! [`Activity`], which notes that they did, so the connection's ordinary wake-ups (its
//! socket, its upstream) poll the connection alone.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use futures_util::{FutureExt, TryFutureExt};
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::Proxy;
use super::stream_watch::{StreamExecutor, Watched};
use crate::http1::{self, server::GracefulStop, server::Reply};
use crate::proxy::ProxyBody;
use crate::proxy::limits::{ClientBody, ConnectionLimits};
use crate::proxy::websocket::Tunnels;
use crate::shutdown::{self, InFlight, InFlightGuard};
use crate::snapshot::SharedSnapshot;

/// Runs the accept loop until `drain` fires. Open connections then finish the
/// request they are serving and close; this returns when the last one has. Upgraded
/// WebSocket tunnels (in `tunnels`) are not waited for here, but count against
/// `max_connections` for as long as they are open. `requests` counts the requests in
/// flight, for the shutdown to report what it cut.
pub async fn serve(
    listener: TcpListener,
    snapshot: SharedSnapshot,
    metrics: Arc<crate::metrics::Metrics>,
    drain: shutdown::Signal,
    tunnels: Tunnels,
    requests: Arc<AtomicUsize>,
) {
    // Whether TLS is on is static (a reload cannot change it): the scheme is fixed.
    let scheme = if snapshot.load().tls.is_some() {
        "https"
    } else {
        "http"
    };
    let proxy = Proxy::new(Arc::clone(&snapshot), scheme, tunnels, metrics);
    // Sockets open, WebSocket tunnels included: the `max_connections` budget.
    let open_sockets = InFlight::new();
    // Connections still speaking HTTP: what a shutdown waits for.
    let serving = InFlight::new();
    let mut backoff = super::accept::Backoff::new("public listener");
    loop {
        let Some((stream, peer)) = backoff.accept(&listener, &drain).await else {
            break;
        };
        let (limits, tls) = {
            let current = snapshot.load();
            (current.limits, current.tls.clone())
        };
        let Some(socket_slot) = open_sockets.try_enter(limits.max_connections) else {
            tokio::spawn(refuse(stream, peer));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let drain = drain.clone();
        let serving = serving.enter();
        let connection = Connection {
            peer,
            proxy,
            limits,
            tls,
            requests: Arc::clone(&requests),
        };
        tokio::spawn(connection.serve(stream, socket_slot, drain, serving));
    }
    drop(listener);
    serving.idle().await;
}

/// Answers a connection over the limit with a 503 and closes it.
async fn refuse(mut stream: TcpStream, peer: SocketAddr) {
    tracing::warn!(%peer, "connection refused: max_connections reached");
    let response = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
connection: close\r\ncontent-length: 48\r\n\r\nthe gateway is at its maximum of connections\r\n\r\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(response)).await;
    let _ = stream.shutdown().await;
}

/// What one accepted connection is served with.
struct Connection {
    peer: SocketAddr,
    proxy: Proxy,
    limits: ConnectionLimits,
    /// The TLS settings current when the connection was accepted, if TLS is on.
    tls: Option<Arc<rustls::ServerConfig>>,
    requests: Arc<AtomicUsize>,
}

impl Connection {
    /// The connection's task, which `serving` counts among those a shutdown waits for.
    ///
    /// Not an `async fn`: every idle connection holds its task's future, and an `async
    /// fn` keeps its arguments twice (as given, and moved into its body), so the
    /// set-up is done here and the future holds only what serving needs.
    fn serve(
        self,
        stream: TcpStream,
        socket_slot: InFlightGuard,
        drain: shutdown::Signal,
        serving: InFlightGuard,
    ) -> impl Future<Output = ()> + Send + 'static {
        let Self {
            peer,
            proxy,
            limits,
            tls,
            requests,
        } = self;
        let activity = Arc::new(Activity::new(requests));
        let io = TrackedIo {
            inner: stream,
            activity: Arc::clone(&activity),
            _slot: socket_slot,
        };
        // One request's handling, for either protocol. Boxed per request: the
        // connection keeps room for its handler's future while it lives, and an unboxed
        // future (about 5 KiB) would be held by every idle connection.
        let handle = {
            let activity = Arc::clone(&activity);
            move |request: Request<ClientBody>| {
                let proxy = proxy.clone();
                let in_flight = RequestInFlight::start(&activity);
                Box::pin(async move {
                    let reply = proxy.handle(request, peer).await;
                    reply.map(|body| body.attach(in_flight))
                })
            }
        };
        async move {
            let _serving = serving;
            let shutdown = drain.fired();
            let mut watch = Watch {
                activity: &activity,
                waker: Waker::from(Arc::clone(&activity)),
                limits: &limits,
                peer,
                timer: std::pin::pin!(tokio::time::sleep(
                    limits.header_read_timeout.min(limits.idle_timeout)
                )),
                shutdown: std::pin::pin!(shutdown),
                draining: false,
            };
            let Some(tls) = tls else {
                let settings = http1::server::Settings {
                    max_header_size: limits.max_header_size,
                    http2_prior_knowledge: limits.h2c,
                };
                let stop = GracefulStop::default();
                let connection =
                    std::pin::pin!(http1::server::serve(io, settings, &stop, |request| {
                        handle(request.map(ClientBody::Http1))
                    }));
                let Some(Some(h2c)) = drive(connection, |_| stop.ask(), &mut watch).await else {
                    return;
                };
                // Boxed, as on TLS: HTTP/2's state inline would size every plain connection.
                Box::pin(serve_http2(h2c, &limits, &handle, &mut watch)).await;
                return;
            };
            let settings = http1::server::Settings {
                max_header_size: limits.max_header_size,
                // Over TLS, HTTP/2 is chosen by ALPN.
                http2_prior_knowledge: false,
            };

            // Boxed, and only on TLS: rustls' state and an HTTP/2 connection next to the
            // HTTP/1.1 one make this part several KiB larger than the plain path, and inline it
            // would size the task of every plain connection too.
            let watch = &mut watch;
            Box::pin(async move {
                let accept = tokio_rustls::TlsAcceptor::from(tls).accept(io);
                let handshake = std::pin::pin!(accept.map_err(HandshakeFailed));
                // Too slow to finish the handshake, or shutting down before any request:
                // closed.
                let Some(stream) = drive(handshake, |_| Drain::CloseNow, watch).await else {
                    return;
                };
                // HTTP/2 over TLS is chosen by ALPN (RFC 9113 §3.3); everything else is
                // HTTP/1.1, with the same builder (and the same exact head limit) as plain.
                if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                    serve_http2(stream, &limits, &handle, watch).await;
                } else {
                    let stop = GracefulStop::default();
                    let connection =
                        std::pin::pin!(http1::server::serve(stream, settings, &stop, |request| {
                            handle(request.map(ClientBody::Http1))
                        },));
                    drive(connection, |_| stop.ask(), watch).await;
                }
            })
            .await;
        }
    }
}

/// HTTP/2 on `io` (TLS that chose `h2` by ALPN, or h2c with prior knowledge), served by
/// hyper with the listener's HTTP/2 limits and the same handler as HTTP/1.1. The send
/// timeout applies to each stream as well as to the connection ([`super::stream_watch`]).
async fn serve_http2<I, H, F>(io: I, limits: &ConnectionLimits, handle: &H, watch: &mut Watch<'_>)
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    H: Fn(Request<ClientBody>) -> F,
    F: Future<Output = Reply<ProxyBody<RequestInFlight>>> + Send + 'static,
{
    watch.activity.multiplexed();
    let executor = StreamExecutor {
        send_timeout: limits.send_timeout,
        peer: watch.peer,
    };
    let mut builder = http2::Builder::new(executor);
    builder.max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX));
    limits.http2.apply(&mut builder);
    let service = service_fn(|request: Request<Incoming>| {
        // The upstream's lines become `http` headers here: HTTP/2 has no other kind.
        handle(request.map(ClientBody::Http2))
            .map(|reply| Ok::<_, Infallible>(reply.into_response().map(Watched::new)))
    });
    let connection = std::pin::pin!(builder.serve_connection(TokioIo::new(io), service));
    drive(connection, |c| c.graceful_shutdown(), watch).await;
}

/// Runs a connection (or its TLS handshake) until it ends, with what it ends with, or
/// until its watchdog closes it or asks it to drain: `drain` asks the HTTP/1.1 engine
/// to finish its request and close, or starts hyper's graceful shutdown of HTTP/2
/// (GOAWAY), or says to close at once. A connection that starts while the gateway
/// drains is asked at once. The connection is pinned by the caller: moved in here, it
/// would be held twice by the connection's task.
async fn drive<C, T, E, D>(
    mut connection: Pin<&mut C>,
    drain: impl Fn(Pin<&mut C>) -> D,
    watch: &mut Watch<'_>,
) -> Option<T>
where
    C: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
    D: Into<Drain>,
{
    if watch.draining && drain(connection.as_mut()).into() == Drain::CloseNow {
        return None;
    }
    std::future::poll_fn(|cx| {
        // What the timer or the shutdown wakes is this task.
        watch.activity.task.register(cx.waker());
        loop {
            if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                return Poll::Ready(match result {
                    Ok(ended) => Some(ended),
                    Err(error) => {
                        tracing::debug!(peer = %watch.peer, %error, "connection ended with an error");
                        None
                    }
                });
            }
            match watch.check() {
                None => return Poll::Pending,
                Some(Command::Close) => return Poll::Ready(None),
                // Asked, the connection is polled again: it may be done at once.
                Some(Command::Drain) => {
                    if drain(connection.as_mut()).into() == Drain::CloseNow {
                        return Poll::Ready(None);
                    }
                }
            }
        }
    })
    .await
}

/// What asking a connection to drain did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// It finishes what it is doing, then closes.
    Asked,
    /// It cannot finish anything (a TLS handshake): closed now.
    CloseNow,
}

impl From<()> for Drain {
    fn from((): ()) -> Self {
        Self::Asked
    }
}

/// The TLS handshake failed.
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake failed: {0}")]
struct HandshakeFailed(io::Error);

/// What the watchdog tells the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    /// Finish the request in flight, then close.
    Drain,
    /// Close now.
    Close,
}

/// A connection's watchdog: closes it when the client is too slow to send a request
/// head or is idle for too long, or has accepted none of the gateway's bytes for
/// `send_timeout`, and asks it to finish its request and close when the gateway shuts
/// down. It lives in the connection's task; its timer and the shutdown are polled with
/// [`Watch::waker`], the connection's [`Activity`] as a waker, so that what wakes them
/// is noted there and looked at by [`Watch::check`] only then.
struct Watch<'a> {
    activity: &'a Arc<Activity>,
    waker: Waker,
    limits: &'a ConnectionLimits,
    peer: SocketAddr,
    timer: Pin<&'a mut tokio::time::Sleep>,
    shutdown: Pin<&'a mut (dyn Future<Output = ()> + Send)>,
    draining: bool,
}

impl Watch<'_> {
    /// What the connection is to do, if the timer, the shutdown or a stalled write has
    /// news for it since the last look: the timer's deadline is worked out again from
    /// the connection's activity when it fires or a write stalls.
    fn check(&mut self) -> Option<Command> {
        if !self.activity.news.swap(false, Ordering::AcqRel) {
            return None;
        }
        let mut cx = Context::from_waker(&self.waker);
        let mut command = None;
        if !self.draining && self.shutdown.as_mut().poll(&mut cx).is_ready() {
            self.draining = true;
            command = Some(Command::Drain);
        }
        // A write found the client's socket full: the send timeout starts now, which
        // may be sooner than the timer was set for.
        let mut stalled = self.activity.stall_news.swap(false, Ordering::AcqRel);
        while stalled || self.timer.as_mut().poll(&mut cx).is_ready() {
            stalled = false;
            match self.activity.deadline(self.limits) {
                Deadline::Expired(reason) => {
                    tracing::debug!(peer = %self.peer, reason, "closing connection");
                    return Some(Command::Close);
                }
                Deadline::At(at) => self.timer.as_mut().reset(at.into()),
            }
        }
        command
    }
}

/// What the watchdog needs to know about a connection, updated from the I/O path.
struct Activity {
    started: Instant,
    requests_in_flight: AtomicUsize,
    /// Requests in flight on the whole listener.
    listener_requests: Arc<AtomicUsize>,
    /// Milliseconds since `started` when the connection last became idle.
    idle_since: AtomicU64,
    /// Milliseconds since `started` (+1, so 0 means none) of the first byte of a request
    /// head read while no request was in flight.
    head_started: AtomicU64,
    /// HTTP/2: bytes between requests are not a request head (pings, window updates,
    /// settings), so only the idle timeout applies between requests.
    multiplexed: AtomicBool,
    /// Milliseconds since `started` (+1, so 0 means none) of the write that found the
    /// client's socket full, while no write has gone through since.
    stalled_since: AtomicU64,
    /// Set with `stalled_since` and taken by the watchdog.
    stall_news: AtomicBool,
    /// Something the watchdog looks at has news: its timer fired, the shutdown began,
    /// or a write stalled. Set on creation: the first look arms the timer.
    news: AtomicBool,
    /// The connection's task, which the watchdog's news wake.
    task: AtomicWaker,
}

enum Deadline {
    Expired(&'static str),
    At(Instant),
}

impl Activity {
    fn new(listener_requests: Arc<AtomicUsize>) -> Self {
        Self {
            started: Instant::now(),
            requests_in_flight: AtomicUsize::new(0),
            listener_requests,
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            multiplexed: AtomicBool::new(false),
            stalled_since: AtomicU64::new(0),
            stall_news: AtomicBool::new(false),
            news: AtomicBool::new(true),
            task: AtomicWaker::new(),
        }
    }

    /// A write could not go through: the client's socket is full. Only the first of a
    /// run of such writes starts the clock (and wakes the watchdog).
    fn on_write_blocked(&self) {
        if self.stalled_since.load(Ordering::Relaxed) == 0 {
            self.stalled_since
                .store(self.now_ms() + 1, Ordering::Relaxed);
            self.stall_news.store(true, Ordering::Release);
            self.news.store(true, Ordering::Release);
            self.task.wake();
        }
    }

    /// Bytes went out: the client is reading.
    fn on_write_progress(&self) {
        // Read first: the common case (never stalled) writes nothing shared.
        if self.stalled_since.load(Ordering::Relaxed) != 0 {
            self.stalled_since.store(0, Ordering::Relaxed);
        }
    }

    /// The connection speaks HTTP/2 from now on; the TLS handshake's bytes no longer
    /// count as a request head in progress.
    fn multiplexed(&self) {
        self.multiplexed.store(true, Ordering::Relaxed);
        self.idle_since.store(self.now_ms(), Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.started + Duration::from_millis(ms)
    }

    fn on_read(&self) {
        if self.requests_in_flight.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
            && !self.multiplexed.load(Ordering::Relaxed)
        {
            self.head_started
                .store(self.now_ms() + 1, Ordering::Relaxed);
        }
    }

    fn deadline(&self, limits: &ConnectionLimits) -> Deadline {
        let now = Instant::now();
        // Whatever else the connection is doing, the gateway has bytes for a client
        // that takes none: the send timeout applies.
        let stall_expires = match self.stalled_since.load(Ordering::Relaxed) {
            0 => None,
            since => {
                let expires = self.at(since - 1) + limits.send_timeout;
                if expires <= now {
                    return Deadline::Expired("the client accepted no bytes for send_timeout");
                }
                Some(expires)
            }
        };
        let sooner = |at: Instant| stall_expires.map_or(at, |stall| stall.min(at));
        if self.requests_in_flight.load(Ordering::Acquire) > 0 {
            // A request is being served: the upstream timeout governs it.
            return Deadline::At(sooner(now + limits.idle_timeout));
        }
        let (since, limit, reason) = match self.head_started.load(Ordering::Relaxed) {
            0 => (
                self.idle_since.load(Ordering::Relaxed),
                limits.idle_timeout,
                "idle timeout",
            ),
            started => (
                started - 1,
                limits.header_read_timeout,
                "request head not received in time",
            ),
        };
        let expires = self.at(since) + limit;
        if expires <= now {
            Deadline::Expired(reason)
        } else {
            Deadline::At(sooner(expires))
        }
    }
}

/// The watchdog's waker: what its timer or the shutdown wakes is noted, then the
/// connection's task woken to look at it ([`Watch::check`]).
impl Wake for Activity {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.news.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Marks a request in flight from when its head is parsed until its response body is
/// finished or dropped.
struct RequestInFlight(Arc<Activity>);

impl RequestInFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.requests_in_flight.fetch_add(1, Ordering::AcqRel);
        activity.listener_requests.fetch_add(1, Ordering::AcqRel);
        activity.head_started.store(0, Ordering::Relaxed);
        Self(Arc::clone(activity))
    }
}

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now_ms(), Ordering::Relaxed);
        self.0.requests_in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.listener_requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The client's socket, noting when bytes arrive. It holds the socket's place in the
/// `max_connections` budget: after a WebSocket upgrade it lives on in the tunnel.
struct TrackedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
    _slot: InFlightGuard,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.on_read();
        }
        result
    }
}

impl TrackedIo {
    /// Tells the watchdog whether the client is taking what the gateway sends.
    fn note_write(&self, result: &Poll<io::Result<usize>>) {
        match result {
            Poll::Pending => self.activity.on_write_blocked(),
            Poll::Ready(Ok(written)) if *written > 0 => self.activity.on_write_progress(),
            Poll::Ready(_) => {}
        }
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.note_write(&result);
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.note_write(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
