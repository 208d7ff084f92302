//! The server side of one HTTP/1.1 connection: request heads read by [`parse_request`]
//! from one reused buffer, each request handed to a handler with its body streaming
//! from the socket, each response written as one head (framed here, once) and a body
//! passed through, then the next request, in order.
//!
//! The rules are hyper's where hyper served this listener before (the smuggling corpus
//! and the proxy tests pin them, and the differential tests and the `http1_request`
//! fuzz target run this server beside hyper's on the same bytes): the same answers to a refused head (431, 414, 400,
//! nothing to an HTTP/2 preface), `100 Continue` sent when the handler first reads a
//! body the client waits to send, the response framed from its body (`content-length`
//! when the length is known, `chunked` otherwise, close-delimited for HTTP/1.0), no
//! body after `HEAD`, 1xx, 204 and 304, a `date` on every response, an HTTP/1.0
//! client answered in HTTP/1.0. Where this side differs, it says so: an HTTP/1.1
//! response after which the connection closes says `connection: close`, and a
//! request body the handler left unread is read to its end (up to [`DRAIN_LIMIT`])
//! before the next request, or the connection closes.
//!
//! Time limits are not kept here: the listener's watchdog closes a connection that is
//! too slow (by dropping the future that [`serve`] returns) and asks one to finish
//! through [`GracefulStop`].

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};

use super::io::{Io, Upgraded};
use super::lines::{Fields, HeaderLines};
use super::request::{
    BodyLength, HTTP2_PREFACE, HeadError, HeadLimits, HeaderIndex, RequestHead, header_map,
    parse_request,
};
use super::spares::{ReadBuffers, WriteBuffers};
use super::{ChunkError, ChunkedDecoder};

/// What a connection reads at a time while it has no more to go on.
const READ_CHUNK: usize = 8 * 1024;
/// The write buffer a response head starts in (a head and a small body coalesced fit).
const OUT_START: usize = 2 * 1024;
/// The most of an unread request body read and thrown away after its response, so the
/// connection can carry the next request; a longer rest closes the connection instead.
pub const DRAIN_LIMIT: u64 = 256 * 1024;
/// How long a connection closed with request bytes still unread keeps reading them
/// after its last answer, so the client reads that answer instead of a reset.
const LINGER: Duration = Duration::from_secs(1);
/// Body data up to this size is copied into the write buffer next to its framing (one
/// write for many small frames); larger data goes out as it is, beside the buffer.
const COALESCE_LIMIT: usize = 4 * 1024;
/// Buffered response bytes are written once this many are waiting.
const FLUSH_AT: usize = 16 * 1024;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// How one connection is served.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Request heads and chunked trailers: a head of this size passes, one byte more
    /// gets 431.
    pub max_header_size: usize,
    /// A connection that opens with the HTTP/2 preface is handed back from [`serve`]
    /// for an HTTP/2 server (h2c with prior knowledge); without it, it is closed.
    pub http2_prior_knowledge: bool,
}

/// A response as the engine writes it: the `http` response (status, the headers the
/// handler sets, the body) and, for a response passed on from an upstream, that
/// upstream's header lines, written as they came, and the lines added to them, before
/// the response's own headers.
/// The engine frames the body itself: framing fields in either are not written.
#[derive(Debug)]
pub struct Reply<B> {
    pub response: Response<B>,
    pub lines: HeaderLines,
    /// Headers added to the response as bytes (the gateway's own on a proxied
    /// response), written after the lines and before the response's map.
    pub added: Fields,
    /// The length the upstream declared (what a response to `HEAD` or a 304
    /// announces); else the response's own `content-length` is read.
    pub declared_length: Option<u64>,
}

impl<B> From<Response<B>> for Reply<B> {
    fn from(response: Response<B>) -> Self {
        Self {
            response,
            lines: HeaderLines::default(),
            added: Fields::default(),
            declared_length: None,
        }
    }
}

impl<B> Reply<B> {
    pub fn map<C>(self, f: impl FnOnce(B) -> C) -> Reply<C> {
        Reply {
            response: self.response.map(f),
            lines: self.lines,
            added: self.added,
            declared_length: self.declared_length,
        }
    }

    /// The reply as one `http` response (for HTTP/2): the lines become headers, and
    /// the declared length a canonical `content-length` unless the response has one.
    pub fn into_response(self) -> Response<B> {
        if self.lines.is_empty() && self.added.is_empty() && self.declared_length.is_none() {
            return self.response;
        }
        let (mut parts, body) = self.response.into_parts();
        let own = std::mem::take(&mut parts.headers);
        parts.headers = self.lines.to_header_map();
        parts.headers.reserve(own.len());
        for (name, value) in self.added.iter() {
            // Written from `http` types: both parse back.
            if let (Ok(name), Ok(value)) = (
                header::HeaderName::from_bytes(name),
                header::HeaderValue::from_bytes(value),
            ) {
                parts.headers.append(name, value);
            }
        }
        let mut name = None;
        for (next, value) in own {
            // `None` is the same name again (the map's iteration of repeated names).
            if let Some(next) = next {
                name = Some(next);
            }
            if let Some(name) = &name {
                parts.headers.append(name.clone(), value);
            }
        }
        if let Some(length) = self.declared_length
            && !parts.headers.contains_key(header::CONTENT_LENGTH)
        {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, header::HeaderValue::from(length));
        }
        Response::from_parts(parts, body)
    }
}

/// Asks a connection to finish the request it is serving, then close: at once if it is
/// between requests. Shared between the connection and whoever asks.
#[derive(Debug, Default)]
pub struct GracefulStop {
    asked: AtomicBool,
    waker: AtomicWaker,
}

impl GracefulStop {
    pub fn ask(&self) {
        self.asked.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn asked(&self) -> bool {
        self.asked.load(Ordering::Acquire)
    }

    fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            self.waker.register(cx.waker());
            if self.asked() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

/// Why a connection ended other than by its client closing it between requests.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("request head refused: {0}")]
    Head(#[from] HeadError),
    #[error("the connection closed within a request head")]
    IncompleteHead,
    #[error("the response body failed: {0}")]
    ResponseBody(String),
    #[error("the response body did not match its content-length")]
    ResponseLength,
    #[error("the client closed the connection while its request was served")]
    ClientGone,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Why a request body stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Malformed(#[from] ChunkError),
    #[error("the client closed the connection before the body ended")]
    Incomplete,
    #[error("the connection failed while the body was read")]
    Io,
}

/// A request's body as it arrives on the connection, read as the handler polls it.
#[derive(Debug)]
pub struct RequestBody {
    /// `None`: no body, or its end was reached.
    data: Option<mpsc::Receiver<Result<Piece, BodyError>>>,
    /// What is left of a body with a `Content-Length` (`None`: chunked).
    remaining: Option<u64>,
    /// Told when the body is first read, for a client that waits for `100 Continue`.
    wanted: Option<Arc<Wanted>>,
}

impl RequestBody {
    /// A request without a body.
    pub fn empty() -> Self {
        Self {
            data: None,
            remaining: Some(0),
            wanted: None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Some(wanted) = this.wanted.take() {
            wanted.tell();
        }
        loop {
            let Some(data) = this.data.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(data.poll_recv(cx)) {
                Some(Ok(Piece { data: chunk, last })) => {
                    if let Some(remaining) = &mut this.remaining {
                        *remaining = remaining.saturating_sub(chunk.len() as u64);
                    }
                    if last {
                        this.data = None;
                    }
                    if !chunk.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(chunk))));
                    }
                    if last {
                        return Poll::Ready(None);
                    }
                }
                Some(Err(error)) => {
                    this.data = None;
                    return Poll::Ready(Some(Err(error)));
                }
                // The connection let go of the body before its end: never a clean end,
                // which would pass a truncated body on as whole.
                None => {
                    this.data = None;
                    return Poll::Ready(Some(Err(BodyError::Incomplete)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() || self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(remaining) => SizeHint::with_exact(remaining),
            None => SizeHint::default(),
        }
    }
}

/// Body data on its way from the connection to the [`RequestBody`]; `last` on the
/// piece that ends the body (the body ends only so).
#[derive(Debug)]
struct Piece {
    data: Bytes,
    last: bool,
}

#[derive(Debug, Default)]
struct Wanted {
    yes: AtomicBool,
    waker: AtomicWaker,
}

impl Wanted {
    fn tell(&self) {
        self.yes.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            self.waker.register(cx.waker());
            if self.yes.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

/// The connection of a request that asked to switch protocols, handed over once its
/// `101` has been written: found in the request's extensions (which want it `Clone`:
/// the clones share one connection, which only the first to ask gets).
#[derive(Debug, Clone)]
pub struct OnUpgrade(Arc<std::sync::Mutex<Option<oneshot::Receiver<Upgraded>>>>);

/// The connection was not handed over: the response was no `101`, or the connection
/// failed before the `101` was written.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the connection was not upgraded")]
pub struct NotUpgraded;

impl Future for OnUpgrade {
    type Output = Result<Upgraded, NotUpgraded>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Ok(mut slot) = self.0.lock() else {
            return Poll::Ready(Err(NotUpgraded));
        };
        let Some(receiver) = slot.as_mut() else {
            return Poll::Ready(Err(NotUpgraded));
        };
        let upgraded = ready!(Pin::new(receiver).poll(cx)).map_err(|_| NotUpgraded);
        *slot = None;
        Poll::Ready(upgraded)
    }
}

/// Serves the requests of one connection with `handler`, one after another, until the
/// client closes it between requests, a request or response allows no other after it,
/// `stop` is asked between requests, or the connection fails. A connection that opens
/// with the HTTP/2 preface comes back, unread, when the settings allow it.
///
/// Every idle connection holds this future, so it is kept small: not an `async fn`
/// (which keeps its arguments twice), and the states of one request (the exchange, a
/// refusal, a lingering close) are boxed while they last.
pub fn serve<I, H, F, R, B>(
    io: I,
    settings: Settings,
    stop: &GracefulStop,
    mut handler: H,
) -> impl Future<Output = Result<Option<Upgraded>, ServeError>>
where
    I: Io,
    H: FnMut(Request<RequestBody>) -> F,
    F: Future<Output = R>,
    R: Into<Reply<B>>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (read, write) = tokio::io::split(io);
    let mut connection = Connection {
        read,
        write,
        // A connection starts idle: no buffer until its first bytes arrive.
        buf: BytesMut::new(),
        fields: Vec::new(),
        out: Vec::new(),
        limits: HeadLimits {
            max_header_size: settings.max_header_size,
        },
    };
    let mut http2 = settings.http2_prior_knowledge;
    async move {
        loop {
            let head = match connection.read_head(stop, http2).await? {
                Some(Opening::Request(head)) => head,
                Some(Opening::Http2) => {
                    let Connection {
                        read, write, buf, ..
                    } = connection;
                    return Ok(Some(Upgraded::new(
                        Box::new(read.unsplit(write)),
                        buf.freeze(),
                    )));
                }
                None => return Ok(None),
            };
            // Only the first bytes of a connection can be a preface.
            http2 = false;
            // Boxed for the length of one request: inline, the exchange's state (the
            // request head, the body feed, the response's writing) would be held by every
            // idle connection for its life.
            let exchange = Box::pin(connection.exchange(head, stop, &mut handler));
            match exchange.await? {
                After::Next if connection.buf.is_empty() => connection.rest(),
                After::Next => {}
                After::Close => {
                    connection.close().await;
                    return Ok(None);
                }
                After::Linger => {
                    Box::pin(connection.linger()).await;
                    return Ok(None);
                }
                After::Upgraded(to) => {
                    let Connection {
                        read, write, buf, ..
                    } = connection;
                    let upgraded = Upgraded::new(Box::new(read.unsplit(write)), buf.freeze());
                    // The receiver gone: nobody wants the connection any more.
                    let _ = to.send(upgraded);
                    return Ok(None);
                }
            }
        }
    }
}

/// How a connection's next bytes begin.
enum Opening {
    Request(RequestHead),
    /// The HTTP/2 connection preface, whole, at the start of the connection.
    Http2,
}

/// What a connection does once a response has been written.
enum After {
    Next,
    Close,
    /// Close, reading for a moment first what the client may still be sending.
    Linger,
    Upgraded(oneshot::Sender<Upgraded>),
}

struct Connection<I> {
    read: ReadHalf<I>,
    write: WriteHalf<I>,
    /// What was read and not yet used: the next head, body bytes, pipelined requests.
    buf: BytesMut,
    fields: Vec<HeaderIndex>,
    /// The response head being written, and small body frames after it.
    out: Vec<u8>,
    limits: HeadLimits,
}

impl<I: Io> Connection<I> {
    /// Between requests, with nothing of the next one read yet: the connection gives
    /// its buffers back to the thread ([`super::spares`]), so an idle connection holds
    /// none; its next read takes one only when bytes arrive ([`read_idle`]).
    fn rest(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        READ_BUFFERS.with(|buffers| buffers.give(buf));
        let out = std::mem::take(&mut self.out);
        WRITE_BUFFERS.with(|buffers| buffers.give(out));
        self.fields = Vec::new();
    }

    /// Reads until a whole head is in the buffer, or (with `http2`) the whole HTTP/2
    /// preface. `None`: the client closed the connection between requests, or `stop`
    /// was asked while no request had begun.
    /// A head refused with a status is answered with it here, and the
    /// connection is then to be closed.
    async fn read_head(
        &mut self,
        stop: &GracefulStop,
        http2: bool,
    ) -> Result<Option<Opening>, ServeError> {
        loop {
            if !self.buf.is_empty() {
                let start = self.buf.len().min(HTTP2_PREFACE.len());
                if http2 && self.buf[..start] == HTTP2_PREFACE[..start] {
                    if start == HTTP2_PREFACE.len() {
                        return Ok(Some(Opening::Http2));
                    }
                } else {
                    // The error taken out of the match first: what the match holds
                    // would be held by the connection's state through the answer.
                    let refused = match parse_request(&self.buf, self.limits, &mut self.fields) {
                        Ok(Some(head)) => return Ok(Some(Opening::Request(head))),
                        Ok(None) => None,
                        Err(error) => Some(error),
                    };
                    if let Some(error) = refused {
                        if let Some(status) = error.status() {
                            Box::pin(self.refuse(status)).await;
                        }
                        return Err(ServeError::Head(error));
                    }
                }
            }
            let read = if self.buf.is_empty() {
                if stop.asked() {
                    return Ok(None);
                }
                tokio::select! {
                    read = read_idle(&mut self.read, &mut self.buf) => read?,
                    () = stop.wait() => return Ok(None),
                }
            } else {
                read_more(&mut self.read, &mut self.buf).await?
            };
            if read == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ServeError::IncompleteHead)
                };
            }
        }
    }

    /// One request: handed to the handler with its body, its response written.
    async fn exchange<H, F, R, B>(
        &mut self,
        head: RequestHead,
        stop: &GracefulStop,
        handler: &mut H,
    ) -> Result<After, ServeError>
    where
        H: FnMut(Request<RequestBody>) -> F,
        F: Future<Output = R>,
        R: Into<Reply<B>>,
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let head_bytes = self.buf.split_to(head.len).freeze();
        // A length beside `chunked` is ignored (RFC 9112 §6.1): the handler never sees
        // it, as it never saw it from hyper.
        if head.length_beside_chunked {
            self.fields.retain(|field| {
                !field
                    .name(&head_bytes)
                    .eq_ignore_ascii_case(b"content-length")
            });
        }
        let headers = match header_map(&head_bytes, &self.fields) {
            Ok(headers) => headers,
            Err(error) => {
                self.refuse(StatusCode::BAD_REQUEST).await;
                return Err(ServeError::Head(error));
            }
        };
        let (body, mut feed) = match head.body {
            BodyLength::Length(0) => (RequestBody::empty(), None),
            framing => {
                let (body, feed) = BodyFeed::new(
                    framing,
                    head.expect_continue && head.version == Version::HTTP_11,
                    self.limits.max_header_size,
                );
                (body, Some(feed))
            }
        };
        let mut request = Request::new(body);
        *request.method_mut() = head.method.clone();
        *request.uri_mut() = head.uri;
        *request.version_mut() = head.version;
        *request.headers_mut() = headers;
        let upgrade = head.wants_upgrade.then(|| {
            let (to, on_upgrade) = oneshot::channel();
            request
                .extensions_mut()
                .insert(OnUpgrade(Arc::new(std::sync::Mutex::new(Some(on_upgrade)))));
            to
        });

        let response = {
            let mut pending = std::pin::pin!(handler(request));
            loop {
                if let Some(feeding) = feed.as_mut().filter(|feed| feed.active()) {
                    tokio::select! {
                        biased;
                        response = &mut pending => break response,
                        step = feeding.step(&mut self.read, &mut self.buf) => {
                            if step == Step::SendContinue {
                                self.write.write_all(CONTINUE).await?;
                                feeding.continue_sent();
                            }
                        }
                    }
                } else if self.buf.len() < self.limits.max_header_size {
                    // Nothing of this request left to read: the socket is watched for
                    // the client going away (as hyper does), which drops the request
                    // and with it the upstream's. What arrives meanwhile (a pipelined
                    // request) waits in the buffer.
                    tokio::select! {
                        biased;
                        response = &mut pending => break response,
                        read = read_more(&mut self.read, &mut self.buf) => {
                            if read? == 0 {
                                return Err(ServeError::ClientGone);
                            }
                        }
                    }
                } else {
                    break pending.await;
                }
            }
        };

        let Reply {
            response,
            lines,
            added,
            declared_length,
        } = response.into();
        let (parts, mut body) = response.into_parts();
        let version = head.version;
        let mut keep_alive = head.keep_alive && !stop.asked();
        if let Some(feed) = &feed {
            // A body the client holds back until `100 Continue`, and the answer came
            // without it: what follows on the connection is unknown. The same after a
            // body that could not be read to its end.
            keep_alive &= !feed.waits_for_continue() && !feed.failed;
        }
        if parts.status == StatusCode::SWITCHING_PROTOCOLS
            && let Some(to) = upgrade
        {
            self.out.clear();
            write_status_line(&mut self.out, parts.status, version);
            write_fields(
                &mut self.out,
                &lines,
                &added,
                &parts.headers,
                Framing::Upgrade,
            );
            self.out.extend_from_slice(b"\r\n");
            self.write.write_all(&self.out).await?;
            self.write.flush().await?;
            return Ok(After::Upgraded(to));
        }
        let declared = declared_length.or_else(|| declared_length_of(&parts.headers));
        let framing = framing(&head.method, parts.status, declared, &body, version);
        let closes =
            !keep_alive || framing == Framing::UntilClose || connection_close(&parts.headers);
        if self.out.capacity() == 0 {
            self.out = WRITE_BUFFERS.with(WriteBuffers::take);
        }
        self.out.clear();
        write_status_line(&mut self.out, parts.status, version);
        write_fields(&mut self.out, &lines, &added, &parts.headers, framing);
        if closes && version == Version::HTTP_11 && !parts.headers.contains_key(header::CONNECTION)
        {
            self.out.extend_from_slice(b"connection: close\r\n");
        } else if !closes && version == Version::HTTP_10 {
            self.out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
        self.write_body(&mut body, framing, feed.as_mut()).await?;
        drop(body);

        let unread = feed.as_ref().is_some_and(BodyFeed::active);
        if closes {
            return Ok(if unread { After::Linger } else { After::Close });
        }
        if let Some(feed) = feed.as_mut().filter(|feed| feed.active())
            && !feed.drain(&mut self.read, &mut self.buf).await
        {
            return Ok(After::Linger);
        }
        if feed.as_ref().is_some_and(|feed| feed.failed) {
            return Ok(After::Linger);
        }
        if stop.asked() {
            return Ok(After::Close);
        }
        Ok(After::Next)
    }

    /// Writes the head in `out` and the body after it, framed, while the request's body
    /// (if any is left) goes on arriving for whoever reads it.
    async fn write_body<B>(
        &mut self,
        body: &mut B,
        framing: Framing,
        mut feed: Option<&mut BodyFeed>,
    ) -> Result<(), ServeError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let mut left = match framing {
            Framing::Length(length) => length,
            Framing::Bodiless { .. } | Framing::Upgrade => {
                self.write.write_all(&self.out).await?;
                return Ok(());
            }
            Framing::Chunked | Framing::UntilClose => u64::MAX,
        };
        loop {
            // A frame that is ready now joins what is buffered; waiting for one, the
            // buffer goes out first.
            let next = match futures_util::FutureExt::now_or_never(body.frame()) {
                Some(next) => next,
                None => {
                    self.flush_out().await?;
                    loop {
                        let Some(feeding) = feed.as_deref_mut().filter(|feed| feed.active()) else {
                            break body.frame().await;
                        };
                        tokio::select! {
                            biased;
                            next = body.frame() => break next,
                            step = feeding.step(&mut self.read, &mut self.buf) => {
                                // The answer is under way: no `100 Continue` any more.
                                if step == Step::SendContinue {
                                    feeding.refuse_continue();
                                }
                            }
                        }
                    }
                }
            };
            let data = match next {
                None => break,
                Some(Err(error)) => {
                    // What came before the failure goes out; the connection then
                    // closes, so the body cannot look complete.
                    self.flush_out().await?;
                    return Err(ServeError::ResponseBody(error.to_string()));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    // Trailers are not passed on (HTTP/1.1 clients rarely read them).
                    Err(_trailers) => continue,
                },
            };
            if data.is_empty() {
                continue;
            }
            if framing == Framing::Chunked {
                write_chunk_size(&mut self.out, data.len());
            } else {
                let len = data.len() as u64;
                if len > left {
                    self.flush_out().await?;
                    return Err(ServeError::ResponseLength);
                }
                left -= len;
            }
            if data.len() <= COALESCE_LIMIT {
                self.out.extend_from_slice(&data);
            } else {
                self.write_out_and(&data).await?;
            }
            if framing == Framing::Chunked {
                self.out.extend_from_slice(b"\r\n");
            }
            if self.out.len() >= FLUSH_AT {
                self.flush_out().await?;
            }
        }
        if framing == Framing::Chunked {
            self.out.extend_from_slice(b"0\r\n\r\n");
        }
        self.flush_out().await?;
        if matches!(framing, Framing::Length(_)) && left > 0 {
            return Err(ServeError::ResponseLength);
        }
        Ok(())
    }

    async fn flush_out(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.write.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Writes what is buffered and `data` after it, in one write where the socket takes
    /// both.
    async fn write_out_and(&mut self, data: &[u8]) -> io::Result<()> {
        let mut slices = [IoSlice::new(&self.out), IoSlice::new(data)];
        let mut slices = &mut slices[..];
        IoSlice::advance_slices(&mut slices, 0);
        while !slices.is_empty() {
            let written = self.write.write_vectored(slices).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut slices, written);
        }
        self.out.clear();
        Ok(())
    }

    /// Answers a refused head with its status, then the connection closes.
    async fn refuse(&mut self, status: StatusCode) {
        self.out.clear();
        write_status_line(&mut self.out, status, Version::HTTP_11);
        self.out
            .extend_from_slice(b"content-length: 0\r\nconnection: close\r\n");
        write_date(&mut self.out);
        self.out.extend_from_slice(b"\r\n");
        if self.write.write_all(&self.out).await.is_ok() {
            self.linger().await;
        }
    }

    async fn close(&mut self) {
        let _ = self.write.shutdown().await;
    }

    /// Closes after reading, for a moment, what the client may still be sending: closed
    /// with unread bytes, the socket would send a reset, and the client could lose the
    /// answer it has not read yet.
    async fn linger(&mut self) {
        let _ = self.write.shutdown().await;
        let discard = async {
            let mut thrown = 0u64;
            while thrown < DRAIN_LIMIT {
                self.buf.clear();
                match read_more(&mut self.read, &mut self.buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => thrown += n as u64,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, discard).await;
    }
}

thread_local! {
    /// The buffers idle connections on this thread have let go of.
    static READ_BUFFERS: ReadBuffers = const { ReadBuffers::new(READ_CHUNK) };
    static WRITE_BUFFERS: WriteBuffers = const { WriteBuffers::new(OUT_START) };
}

/// Reads into an empty `buf` without the connection holding a buffer while it waits
/// ([`ReadBuffers::poll_read_into`]).
fn read_idle<'a, R: AsyncRead + Unpin>(
    read: &'a mut R,
    buf: &'a mut BytesMut,
) -> impl Future<Output = io::Result<usize>> + 'a {
    std::future::poll_fn(move |cx| {
        READ_BUFFERS.with(|buffers| buffers.poll_read_into(&mut *read, &mut *buf, cx))
    })
}

/// Reads what the socket has into `buf`, making room for a chunk first.
async fn read_more<R: AsyncRead + Unpin>(read: &mut R, buf: &mut BytesMut) -> io::Result<usize> {
    buf.reserve(READ_CHUNK);
    read.read_buf(&mut buf.limit(READ_CHUNK)).await
}

/// How a response's body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (`HEAD`, 1xx, 204, 304), with the length a `HEAD` or a 304 announces.
    Bodiless {
        length: Option<u64>,
    },
    Length(u64),
    Chunked,
    /// HTTP/1.0 and an unknown length: the end of the connection ends the body.
    UntilClose,
    /// A `101`: the head alone, then the connection is handed over.
    Upgrade,
}

/// How the body of a response to `method` is framed: from the body's own length when
/// it knows it, from the length the response declares, else chunked (HTTP/1.1) or
/// until the connection closes (HTTP/1.0).
fn framing<B: Body>(
    method: &Method,
    status: StatusCode,
    declared: Option<u64>,
    body: &B,
    version: Version,
) -> Framing {
    if status.is_informational() || status == StatusCode::NO_CONTENT {
        return Framing::Bodiless { length: None };
    }
    if status == StatusCode::NOT_MODIFIED {
        return Framing::Bodiless { length: declared };
    }
    let known = if body.is_end_stream() {
        Some(0)
    } else {
        body.size_hint().exact()
    };
    if method == Method::HEAD {
        let length = declared.or(known.filter(|length| *length > 0));
        return Framing::Bodiless { length };
    }
    match known.or(declared) {
        Some(length) => Framing::Length(length),
        None if version == Version::HTTP_10 => Framing::UntilClose,
        None => Framing::Chunked,
    }
}

/// The length a response's own `content-length` states.
fn declared_length_of(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
}

/// Whether the response's own `Connection` says `close` (the gateway's refusals of a
/// request whose framing cannot be trusted do).
pub(super) fn connection_close(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|b| *b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

fn write_status_line(out: &mut Vec<u8>, status: StatusCode, version: Version) {
    if version == Version::HTTP_11 && status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The response's fields (an upstream's lines, the lines added to them, then the
/// response's own headers), their framing fields replaced by those of `framing`, and a
/// `date` if none has one. (Added lines carry neither framing nor `date`.)
fn write_fields(
    out: &mut Vec<u8>,
    lines: &HeaderLines,
    added: &Fields,
    headers: &HeaderMap,
    framing: Framing,
) {
    let mut dated = false;
    for (name, value) in lines.iter() {
        // Names of 14 and 17 bytes, then which: most lines are ruled out by length.
        let framing_field = match name.len() {
            14 => name.eq_ignore_ascii_case(b"content-length"),
            17 => name.eq_ignore_ascii_case(b"transfer-encoding"),
            4 => {
                dated |= name.eq_ignore_ascii_case(b"date");
                false
            }
            _ => false,
        };
        if framing_field {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(added.as_bytes());
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        dated |= name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(length)
        | Framing::Bodiless {
            length: Some(length),
        } => {
            out.extend_from_slice(b"content-length: ");
            use std::io::Write;
            let _ = write!(out, "{length}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Bodiless { length: None } | Framing::UntilClose | Framing::Upgrade => {}
    }
    if !dated {
        write_date(out);
    }
}

fn write_chunk_size(out: &mut Vec<u8>, size: usize) {
    use std::io::Write;
    let _ = write!(out, "{size:x}\r\n");
}

/// `date: <IMF-fixdate>\r\n`, formatted once a second per thread.
fn write_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(cached.1.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

/// The connection's side of a request body: reads it from the socket (the bytes after
/// the head first), removes the chunked framing and hands the data to the
/// [`RequestBody`] as it is read.
struct BodyFeed {
    framing: FeedFraming,
    /// `None` once the body has ended, or once its reader is gone (what is left is
    /// then read and thrown away).
    to_body: Option<mpsc::Sender<Result<Piece, BodyError>>>,
    /// Whether reading the body from the connection is over (ended or failed).
    done: bool,
    /// The body was malformed or cut short: nothing after it can be read.
    failed: bool,
    /// Set for a client that waits for `100 Continue` until it has been sent.
    wanted: Option<Arc<Wanted>>,
    continue_refused: bool,
}

enum FeedFraming {
    Length(u64),
    Chunked(ChunkedDecoder),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Progress,
    /// The handler reads a body its client waits to send: `100 Continue` is due.
    SendContinue,
}

impl BodyFeed {
    fn new(
        framing: BodyLength,
        expect_continue: bool,
        max_trailer_size: usize,
    ) -> (RequestBody, Self) {
        let (to_body, data) = mpsc::channel(1);
        let wanted = expect_continue.then(|| Arc::new(Wanted::default()));
        let (framing, remaining) = match framing {
            BodyLength::Length(length) => (FeedFraming::Length(length), Some(length)),
            BodyLength::Chunked => (
                FeedFraming::Chunked(ChunkedDecoder::new(max_trailer_size)),
                None,
            ),
        };
        let body = RequestBody {
            data: Some(data),
            remaining,
            wanted: wanted.clone(),
        };
        let feed = Self {
            framing,
            to_body: Some(to_body),
            done: false,
            failed: false,
            wanted,
            continue_refused: false,
        };
        (body, feed)
    }

    /// Whether body bytes are still to be read from the connection.
    fn active(&self) -> bool {
        !self.done
    }

    fn waits_for_continue(&self) -> bool {
        !self.done && (self.wanted.is_some() || self.continue_refused)
    }

    fn continue_sent(&mut self) {
        self.wanted = None;
    }

    fn refuse_continue(&mut self) {
        self.wanted = None;
        self.continue_refused = true;
    }

    /// Moves the body along by one read or one hand-over. Cancel-safe: a step cut off
    /// loses nothing (data leaves the buffer only once the body has room for it). A
    /// body that fails ends the feed; its reader is told why.
    async fn step<R: AsyncRead + Unpin>(&mut self, read: &mut R, buf: &mut BytesMut) -> Step {
        if let Some(wanted) = &self.wanted {
            wanted.wait().await;
            return Step::SendContinue;
        }
        if self.continue_refused {
            // The client was not told to send its body; it may never come.
            return std::future::pending().await;
        }
        if buf.is_empty() {
            match read_more(read, buf).await {
                Ok(0) => self.fail(BodyError::Incomplete),
                Ok(_) => {}
                Err(_) => self.fail(BodyError::Io),
            }
            return Step::Progress;
        }
        // Room in the body first: data is taken from the buffer only when it can go on.
        let permit = match &self.to_body {
            Some(to_body) => to_body.reserve().await.ok(),
            None => None,
        };
        let reader_gone = permit.is_none();
        let taken = match &mut self.framing {
            FeedFraming::Length(left) => {
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                *left -= take as u64;
                self.done = *left == 0;
                Ok(buf.split_to(take).freeze())
            }
            FeedFraming::Chunked(decoder) => decoder.decode(buf).map(|decoded| {
                let (start, end) = decoded.data;
                let mut used = buf.split_to(decoded.consumed).freeze();
                self.done = decoder.is_done();
                used.truncate(end);
                used.advance(start);
                used
            }),
        };
        let malformed = taken.is_err();
        match (taken, permit) {
            (Ok(data), Some(permit)) if self.done || !data.is_empty() => {
                permit.send(Ok(Piece {
                    data,
                    last: self.done,
                }));
            }
            (Err(error), Some(permit)) => permit.send(Err(error.into())),
            _ => {}
        }
        if malformed {
            self.done = true;
            self.failed = true;
        }
        if reader_gone || self.done {
            self.to_body = None;
        }
        Step::Progress
    }

    /// Ends the feed early. The reader learns why if the body has room for the error;
    /// if not, the sender dropped without a last piece tells it the body is incomplete.
    fn fail(&mut self, error: BodyError) {
        if let Some(to_body) = self.to_body.take() {
            let _ = to_body.try_send(Err(error));
        }
        self.done = true;
        self.failed = true;
    }

    /// Reads the rest of a body nobody reads any more and throws it away, up to
    /// [`DRAIN_LIMIT`]: whether it ended whole (and the connection can go on).
    async fn drain<R: AsyncRead + Unpin>(&mut self, read: &mut R, buf: &mut BytesMut) -> bool {
        if self.waits_for_continue() {
            return false;
        }
        self.to_body = None;
        let mut left = DRAIN_LIMIT;
        while self.active() {
            let before = buf.len() as u64;
            self.step(read, buf).await;
            let used = before.saturating_sub(buf.len() as u64);
            if used > left {
                return false;
            }
            left -= used;
        }
        !self.failed
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test stops on a failed setup")]
mod tests {
    use http::header::{HeaderName, HeaderValue};
    use http_body_util::{Empty, Full, StreamBody};

    use super::*;

    fn headers(fields: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    const OK: StatusCode = StatusCode::OK;

    type Stream = StreamBody<futures_util::stream::Empty<Result<Frame<Bytes>, io::Error>>>;

    fn unknown_length() -> Stream {
        StreamBody::new(futures_util::stream::empty())
    }

    #[test]
    fn a_body_is_framed_by_its_length_else_chunked_else_until_close() {
        let full = Full::new(Bytes::from_static(b"hello"));
        assert_eq!(
            framing(&Method::GET, OK, None, &full, Version::HTTP_11),
            Framing::Length(5)
        );
        assert_eq!(
            framing(
                &Method::GET,
                OK,
                None,
                &Empty::<Bytes>::new(),
                Version::HTTP_11
            ),
            Framing::Length(0)
        );
        let stream = unknown_length();
        assert_eq!(
            framing(&Method::GET, OK, None, &stream, Version::HTTP_11),
            Framing::Chunked
        );
        assert_eq!(
            framing(&Method::GET, OK, None, &stream, Version::HTTP_10),
            Framing::UntilClose
        );
        assert_eq!(
            framing(&Method::GET, OK, Some(12), &stream, Version::HTTP_10),
            Framing::Length(12)
        );
    }

    #[test]
    fn head_and_304_keep_the_announced_length_without_a_body_and_204_has_none() {
        let empty = Empty::<Bytes>::new();
        assert_eq!(
            framing(&Method::HEAD, OK, Some(12), &empty, Version::HTTP_11),
            Framing::Bodiless { length: Some(12) }
        );
        let full = Full::new(Bytes::from_static(b"hello"));
        assert_eq!(
            framing(&Method::HEAD, OK, None, &full, Version::HTTP_11),
            Framing::Bodiless { length: Some(5) }
        );
        assert_eq!(
            framing(
                &Method::GET,
                StatusCode::NOT_MODIFIED,
                Some(7),
                &empty,
                Version::HTTP_11
            ),
            Framing::Bodiless { length: Some(7) }
        );
        assert_eq!(
            framing(
                &Method::GET,
                StatusCode::NO_CONTENT,
                Some(0),
                &empty,
                Version::HTTP_11
            ),
            Framing::Bodiless { length: None }
        );
    }

    #[test]
    fn framing_fields_are_replaced_and_a_date_added() {
        let mut out = Vec::new();
        let headers = headers(&[
            ("content-length", "99"),
            ("transfer-encoding", "chunked"),
            ("x-kept", "yes"),
        ]);
        write_fields(
            &mut out,
            &HeaderLines::default(),
            &Fields::default(),
            &headers,
            Framing::Length(5),
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("x-kept: yes\r\ncontent-length: 5\r\ndate: "),
            "{text}"
        );
        assert!(!text.contains("99") && !text.contains("chunked"), "{text}");
    }

    #[test]
    fn an_upstreams_lines_then_the_added_ones_then_the_responses_own_headers() {
        let lines = HeaderLines::from_response_head(Bytes::from_static(
            b"HTTP/1.1 200 OK\r\nServer: up\r\nContent-Length: 005\r\n\
              Date: Sun, 06 Dec 2026 10:00:00 GMT\r\nTransfer-Encoding: chunked\r\n\r\n",
        ))
        .unwrap();
        let mut added = Fields::default();
        added.append(
            &HeaderName::from_static("x-added"),
            &HeaderValue::from_static("2"),
        );
        let own = headers(&[("x-own", "1")]);
        let mut out = Vec::new();
        write_fields(&mut out, &lines, &added, &own, Framing::Length(5));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Server: up\r\nDate: Sun, 06 Dec 2026 10:00:00 GMT\r\nx-added: 2\r\nx-own: 1\r\n\
             content-length: 5\r\n"
        );
    }

    /// Serves `bytes` (the client's whole side) with a handler that reads each body and
    /// answers `ok`; what the handler saw of each request's headers comes back.
    fn headers_seen(bytes: &'static [u8]) -> Vec<HeaderMap> {
        use tokio::io::AsyncWriteExt as _;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let seen = std::sync::Mutex::new(Vec::new());
            let (mut client, server_io) = tokio::io::duplex(1 << 16);
            let settings = Settings {
                max_header_size: 8192,
                http2_prior_knowledge: false,
            };
            let stop = GracefulStop::default();
            let connection = serve(
                server_io,
                settings,
                &stop,
                |request: Request<RequestBody>| {
                    seen.lock().unwrap().push(request.headers().clone());
                    async move {
                        let _ = request.into_body().collect().await;
                        Response::new(Full::new(Bytes::from_static(b"ok")))
                    }
                },
            );
            let talk = async {
                client.write_all(bytes).await.unwrap();
                client.shutdown().await.unwrap();
                let mut answer = Vec::new();
                let _ = client.read_to_end(&mut answer).await;
            };
            let (_, ()) = tokio::join!(connection, talk);
            seen.into_inner().unwrap()
        })
    }

    #[test]
    fn a_length_beside_chunked_never_reaches_the_handler() {
        // RFC 9112 §6.1: the length is ignored; hyper dropped it before its handler saw
        // the request, and the policy would otherwise forward it beside the chunked body.
        let seen = headers_seen(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\
              Transfer-Encoding: chunked\r\nX-Kept: 1\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(
            !seen[0].contains_key(header::CONTENT_LENGTH),
            "{:?}",
            seen[0]
        );
        assert_eq!(seen[0][header::TRANSFER_ENCODING], "chunked");
        assert_eq!(seen[0]["x-kept"], "1");
    }
}
