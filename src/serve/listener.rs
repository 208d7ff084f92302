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
//! The watchdog (and the wait for shutdown) is a task of its own that tells the
//! connection what to do through a [`Signal`]: polled together with the connection, a
//! timer and a shutdown receiver would be polled on every wake-up of every connection,
//! and a `watch` receiver takes a lock shared by all connections each time it is polled.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::task::AtomicWaker;
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
        let task = connection.serve(stream, socket_slot, drain, serving);
        if std::env::var_os("SIZES").is_some() {
            eprintln!("SIZE task {}", std::mem::size_of_val(&task));
        }
        tokio::spawn(task);
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
    /// The connection's task: its watchdog started, the future that serves it, which
    /// `serving` counts among those a shutdown waits for.
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
        let watched = Arc::clone(&activity);
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
        let signal = Arc::new(Signal::default());
        let watchdog = AbortOnDrop(tokio::spawn(watchdog(
            watched,
            limits,
            drain,
            Arc::clone(&signal),
            peer,
        )));
        async move {
            // Both end with the connection.
            let _held = (serving, watchdog);
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
                let Some(Some(h2c)) = drive(connection, |_| stop.ask(), &signal, peer).await else {
                    return;
                };
                // Boxed, as on TLS: HTTP/2's state inline would size every plain connection.
                Box::pin(serve_http2(h2c, &limits, &handle, &activity, &signal, peer)).await;
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
            let (activity, signal) = (&activity, &signal);
            Box::pin(async move {
                let handshake = tokio_rustls::TlsAcceptor::from(tls).accept(io);
                let stream = tokio::select! {
                    biased;
                    result = handshake => match result {
                        Ok(stream) => stream,
                        Err(error) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                    },
                    // Too slow to finish the handshake, or shutting down before any request.
                    _ = signal.next() => return,
                };
                // HTTP/2 over TLS is chosen by ALPN (RFC 9113 §3.3); everything else is
                // HTTP/1.1, with the same builder (and the same exact head limit) as plain.
                if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                    serve_http2(stream, &limits, &handle, activity, signal, peer).await;
                } else {
                    let stop = GracefulStop::default();
                    let connection =
                        std::pin::pin!(http1::server::serve(stream, settings, &stop, |request| {
                            handle(request.map(ClientBody::Http1))
                        },));
                    drive(connection, |_| stop.ask(), signal, peer).await;
                }
            })
            .await;
        }
    }
}

/// HTTP/2 on `io` (TLS that chose `h2` by ALPN, or h2c with prior knowledge), served by
/// hyper with the listener's HTTP/2 limits and the same handler as HTTP/1.1. The send
/// timeout applies to each stream as well as to the connection ([`super::stream_watch`]).
async fn serve_http2<I, H, F>(
    io: I,
    limits: &ConnectionLimits,
    handle: &H,
    activity: &Activity,
    signal: &Signal,
    peer: SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    H: Fn(Request<ClientBody>) -> F,
    F: Future<Output = Reply<ProxyBody<RequestInFlight>>> + Send + 'static,
{
    activity.multiplexed();
    let executor = StreamExecutor {
        send_timeout: limits.send_timeout,
        peer,
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
    drive(connection, |c| c.graceful_shutdown(), signal, peer).await;
}

/// Runs an HTTP connection until it ends (with what it ends with), or until the watchdog
/// closes it or asks it to drain (`drain` asks the HTTP/1.1 engine to finish its request
/// and close, or starts hyper's graceful shutdown of HTTP/2: GOAWAY). The connection is
/// pinned by the caller: moved in here, it would be held twice by the connection's task.
async fn drive<C, T, E>(
    mut connection: Pin<&mut C>,
    drain: impl Fn(Pin<&mut C>),
    signal: &Signal,
    peer: SocketAddr,
) -> Option<T>
where
    C: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    loop {
        tokio::select! {
            biased;
            result = connection.as_mut() => {
                return match result {
                    Ok(ended) => Some(ended),
                    Err(error) => {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                        None
                    }
                };
            }
            command = signal.next() => match command {
                Command::Close => return None,
                Command::Drain => drain(connection.as_mut()),
            },
        }
    }
}

/// Closes a connection that is too slow to send a request head or idle for too long,
/// and asks it to finish its request and close when the gateway shuts down.
#[allow(
    clippy::manual_async_fn,
    reason = "a task per connection, for its life: an async fn keeps its arguments twice"
)]
fn watchdog(
    activity: Arc<Activity>,
    limits: ConnectionLimits,
    drain: shutdown::Signal,
    signal: Arc<Signal>,
    peer: SocketAddr,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let timer = tokio::time::sleep(limits.header_read_timeout.min(limits.idle_timeout));
        tokio::pin!(timer);
        let mut draining = false;
        loop {
            tokio::select! {
                () = timer.as_mut() => {}
                // A write found the client's socket full: the send timeout starts now, which
                // may be sooner than the timer was set for.
                () = activity.stall_started() => {}
                () = drain.fired(), if !draining => {
                    draining = true;
                    signal.send(Command::Drain);
                    continue;
                }
            }
            match activity.deadline(&limits) {
                Deadline::Expired(reason) => {
                    tracing::debug!(%peer, reason, "closing connection");
                    signal.send(Command::Close);
                    return;
                }
                Deadline::At(at) => timer.as_mut().reset(at.into()),
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    /// Finish the request in flight, then close.
    Drain = 1,
    /// Close now.
    Close = 2,
}

/// From the watchdog to its connection: the strongest command sent and not yet taken.
/// Polling it is an atomic swap and a waker registration, with no lock.
#[derive(Default)]
struct Signal {
    command: AtomicU8,
    waker: AtomicWaker,
}

impl Signal {
    fn send(&self, command: Command) {
        self.command.fetch_max(command as u8, Ordering::AcqRel);
        self.waker.wake();
    }

    fn next(&self) -> impl Future<Output = Command> + '_ {
        std::future::poll_fn(move |cx| {
            self.waker.register(cx.waker());
            match self.command.swap(0, Ordering::AcqRel) {
                0 => Poll::Pending,
                1 => Poll::Ready(Command::Drain),
                _ => Poll::Ready(Command::Close),
            }
        })
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
    /// Set with `stalled_since` and taken by the watchdog, which `stall_waker` wakes.
    stall_news: AtomicBool,
    stall_waker: AtomicWaker,
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
            stall_waker: AtomicWaker::new(),
        }
    }

    /// A write could not go through: the client's socket is full. Only the first of a
    /// run of such writes starts the clock (and wakes the watchdog).
    fn on_write_blocked(&self) {
        if self.stalled_since.load(Ordering::Relaxed) == 0 {
            self.stalled_since
                .store(self.now_ms() + 1, Ordering::Relaxed);
            self.stall_news.store(true, Ordering::Release);
            self.stall_waker.wake();
        }
    }

    /// Bytes went out: the client is reading.
    fn on_write_progress(&self) {
        // Read first: the common case (never stalled) writes nothing shared.
        if self.stalled_since.load(Ordering::Relaxed) != 0 {
            self.stalled_since.store(0, Ordering::Relaxed);
        }
    }

    /// Resolves when a stall has started since the watchdog last looked.
    fn stall_started(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            self.stall_waker.register(cx.waker());
            if self.stall_news.swap(false, Ordering::AcqRel) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
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
