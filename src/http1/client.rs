//! The client side of one HTTP/1.1 connection to an upstream: a request written as one
//! head and its body, the response head read by [`parse_response`], the response body
//! read by whoever polls it, straight from the socket, in the task of the request that
//! sent it (no connection task between them, no channel: the wake-ups and copies hyper's
//! client spends per request).
//!
//! The rules are hyper's client's, which the pool used before (the differential tests
//! hold the parser and this client to it): a request body is framed by the request's own
//! `Content-Length` or `Transfer-Encoding`, else by the body's known length, else
//! chunked (never for `GET`, `HEAD` or `CONNECT`, whose body is not sent); interim 1xx
//! responses are skipped; a 101 hands the connection over. While a body is uploaded the
//! connection is watched for an early answer (a 413 before the upload ends): the
//! answer is returned at once, and the connection, its request unfinished, is not
//! reused.
//!
//! A connection is reusable once its response body has been read to the end, when
//! both sides allow another request and nothing more came. Whether an idle connection
//! is still open is for the pool to ask its socket ([`Connection::io`]): an upstream
//! that closed it, or wrote to it unasked, has made it unusable.

use std::error::Error as StdError;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{Method, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::io::{Io, Upgraded};
pub use super::lines::Fields;
use super::lines::HeaderLines;
use super::request::{HeadError, HeadLimits, HeaderIndex};
use super::response::{ResponseBody, ResponseHead, parse_response};
use super::spares::{ReadBuffers, WriteBuffers};
use super::{ChunkError, ChunkedDecoder};

/// What a read asks the socket for while the buffer is empty.
const READ_CHUNK: usize = 16 * 1024;
/// The write buffer a request head starts in.
const OUT_START: usize = 1024;

thread_local! {
    /// The buffers idle connections in the pools on this thread have let go of.
    static READ_BUFFERS: ReadBuffers = const { ReadBuffers::new(READ_CHUNK) };
    static WRITE_BUFFERS: WriteBuffers = const { WriteBuffers::new(OUT_START) };
}

/// Why a request got no response on a connection.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the request body failed")]
    RequestBody(#[source] Box<dyn StdError + Send + Sync>),
    #[error("the upstream closed the connection before it answered")]
    ClosedBeforeResponse(#[source] Option<io::Error>),
    #[error("the upstream's response head was refused: {0}")]
    Head(#[source] HeadError),
    #[error("the request body did not match its content-length")]
    RequestLength,
    #[error("the connection to the upstream failed")]
    Io(#[source] io::Error),
}

/// A failed exchange, and whether any byte of the request reached the socket (if none
/// did, the request may go out on another connection as it is).
#[derive(Debug)]
pub struct Failure {
    pub error: SendError,
    pub nothing_written: bool,
}

/// Why a response body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Malformed(#[from] ChunkError),
    #[error("the upstream closed the connection before the body ended")]
    Incomplete,
    #[error("the connection to the upstream failed while the body was read")]
    Io(#[source] io::Error),
    /// The request's body failed while it was still being sent after the response
    /// head (it crossed the route's cap, or the client's upload broke).
    #[error("the request body failed while the response was read")]
    Upload(#[source] SendError),
}

/// A request for an upstream, its head already made: the request line's method and
/// target (origin form), the header lines as whoever made the request wrote them (once,
/// straight into bytes: no `HeaderMap` between the policy and the socket), what the
/// request's sender declared about its body, and the body. Framing is this client's:
/// [`Fields`] carry none, and the client writes the one framing field the body needs.
#[derive(Debug)]
pub struct Outgoing<B> {
    pub method: Method,
    pub target: Uri,
    pub fields: Fields,
    pub declared: Declared,
    pub body: B,
}

/// How the sender of a forwarded request framed its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    Chunked,
    Length(u64),
    /// Neither: the body's own length decides ([`Outgoing`]'s framing rules).
    Nothing,
}

/// A final response: its head, the header lines as the upstream sent them (nothing
/// copied), and the body, which reads from the connection.
#[derive(Debug)]
pub struct Received<I> {
    pub status: StatusCode,
    pub version: Version,
    pub lines: HeaderLines,
    /// The length the upstream's `Content-Length` states, when it frames the message
    /// ([`super::ResponseHead::declared_length`]).
    pub declared_length: Option<u64>,
    pub body: IncomingBody<I>,
}

/// One connection to an upstream, between requests.
#[derive(Debug)]
pub struct Connection<I> {
    io: I,
    buf: BytesMut,
    out: Vec<u8>,
    fields: Vec<HeaderIndex>,
    limits: HeadLimits,
}

impl<I: Io> Connection<I> {
    /// A connection whose response heads may be up to `max_head` bytes, and whose reads
    /// take at most that much at a time.
    pub fn new(io: I, max_head: usize) -> Box<Self> {
        Box::new(Self {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            fields: Vec::new(),
            limits: HeadLimits {
                max_header_size: max_head,
            },
        })
    }

    /// The socket, for the pool to ask whether an idle connection is still open.
    pub fn io(&self) -> &I {
        &self.io
    }

    /// Sends `request` and reads the final response head. The
    /// request is taken only as far as its body: a failure leaves the rest of it for
    /// another try. The response's body reads from this connection, which it hands back
    /// once read to the end ([`IncomingBody::reusable`]). The head's lines are handed
    /// on as they were parsed, not turned into a `HeaderMap`.
    pub async fn send<B>(
        mut self: Box<Self>,
        request: &mut Outgoing<B>,
    ) -> Result<Received<I>, Failure>
    where
        B: Body<Data = Bytes> + Default + Unpin + Send + 'static,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let framing = request_framing(request);
        if self.out.capacity() == 0 {
            self.out = WRITE_BUFFERS.with(WriteBuffers::take);
        }
        if self.buf.capacity() == 0 {
            self.buf = READ_BUFFERS.with(ReadBuffers::take);
        }
        self.out.clear();
        write_request_head(&mut self.out, request, framing);
        let mut upload = UploadState::new(framing);
        let body_sent = match framing {
            Framing::Length(0) | Framing::Unsent => {
                self.write_out(&mut upload).await?;
                true
            }
            _ => {
                self.upload(&request.method, &mut request.body, &mut upload)
                    .await?
            }
        };
        let head = self.read_head(&request.method).await?;
        let head_bytes = self.buf.split_to(head.len).freeze();
        let lines = HeaderLines::new(head_bytes, std::mem::take(&mut self.fields));
        // The request's own fields never say `close`: they are a forwarded request's,
        // without the client's hop-by-hop ones.
        let closes_after = !head.keep_alive || !body_sent;
        let reading = match head.body {
            ResponseBody::Empty => Reading::Done,
            ResponseBody::Length(length) => Reading::Length(length),
            ResponseBody::Chunked => {
                Reading::Chunked(ChunkedDecoder::new(self.limits.max_header_size))
            }
            ResponseBody::UntilClose => Reading::UntilClose,
        };
        let reusable = !closes_after && !head.upgrade && !matches!(reading, Reading::UntilClose);
        // The upstream answered before the body had gone: the rest of it goes on
        // being sent while the response is read, as the upstream may still read it.
        let rest = (!body_sent && !head.upgrade).then(|| {
            let body = std::mem::take(&mut request.body);
            Box::new(Upload {
                body: body.map_err(Into::into).boxed_unsync(),
                state: upload,
            })
        });
        Ok(Received {
            status: head.status,
            version: head.version,
            lines,
            declared_length: head.declared_length,
            body: IncomingBody {
                connection: Some(self),
                reading,
                reusable,
                upgrade: head.upgrade,
                upload: rest,
            },
        })
    }

    /// Writes what `out` holds.
    async fn write_out(&mut self, upload: &mut UploadState) -> Result<(), Failure> {
        let mut at = 0;
        while at < self.out.len() {
            match self.io.write(&self.out[at..]).await {
                Ok(0) => {
                    let error = SendError::Io(io::ErrorKind::WriteZero.into());
                    return Err(upload.failed(error));
                }
                Ok(written) => {
                    at += written;
                    upload.wrote = true;
                }
                Err(error) => return Err(upload.failed(SendError::Io(error))),
            }
        }
        self.out.clear();
        Ok(())
    }

    /// Writes the head in `out` and the body after it, watching for an answer that
    /// comes before the body has gone: whether the whole body was sent.
    async fn upload<B>(
        &mut self,
        method: &Method,
        body: &mut B,
        upload: &mut UploadState,
    ) -> Result<bool, Failure>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        std::future::poll_fn(|cx| {
            loop {
                match upload.poll(Pin::new(&mut *body), &mut self.io, &mut self.out, cx) {
                    Poll::Ready(Ok(())) => return Poll::Ready(Ok(true)),
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(upload.failed(error))),
                    Poll::Pending => {}
                }
                // An answer before the body has gone: interim ones are skipped, a final
                // one ends the upload.
                self.buf.reserve(READ_CHUNK);
                match ready!(tokio_util::io::poll_read_buf(
                    Pin::new(&mut self.io),
                    cx,
                    &mut (&mut self.buf).limit(READ_CHUNK)
                )) {
                    Ok(0) if self.buf.is_empty() => {
                        let error = SendError::ClosedBeforeResponse(None);
                        return Poll::Ready(Err(upload.failed(error)));
                    }
                    Ok(0) => return Poll::Ready(Ok(false)),
                    Ok(_) => loop {
                        match parse_response(&self.buf, method, self.limits, &mut self.fields) {
                            Ok(Some(head)) if head.is_interim() => self.buf.advance(head.len),
                            Ok(None) => break,
                            // A final head, or one the head reader will refuse.
                            Ok(Some(_)) | Err(_) => return Poll::Ready(Ok(false)),
                        }
                    },
                    Err(error) => return Poll::Ready(Err(upload.failed(SendError::Io(error)))),
                }
            }
        })
        .await
    }

    /// Reads until the final response head is in the buffer (interim ones skipped).
    async fn read_head(&mut self, method: &Method) -> Result<ResponseHead, Failure> {
        let failed = |error| Failure {
            error,
            nothing_written: false,
        };
        loop {
            if !self.buf.is_empty() {
                match parse_response(&self.buf, method, self.limits, &mut self.fields) {
                    Ok(Some(head)) if head.is_interim() => {
                        self.buf.advance(head.len);
                        continue;
                    }
                    Ok(Some(head)) => return Ok(head),
                    Ok(None) => {}
                    Err(error) => return Err(failed(SendError::Head(error))),
                }
            }
            self.buf.reserve(READ_CHUNK);
            match self
                .io
                .read_buf(&mut (&mut self.buf).limit(READ_CHUNK))
                .await
            {
                Ok(0) if self.buf.is_empty() => {
                    return Err(failed(SendError::ClosedBeforeResponse(None)));
                }
                Ok(0) => {
                    let error = io::Error::from(io::ErrorKind::UnexpectedEof);
                    return Err(failed(SendError::Io(error)));
                }
                Ok(_) => {}
                Err(error)
                    if self.buf.is_empty()
                        && matches!(
                            error.kind(),
                            io::ErrorKind::ConnectionReset
                                | io::ErrorKind::BrokenPipe
                                | io::ErrorKind::ConnectionAborted
                        ) =>
                {
                    return Err(failed(SendError::ClosedBeforeResponse(Some(error))));
                }
                Err(error) => return Err(failed(SendError::Io(error))),
            }
        }
    }
}

/// How far a request has gone out: its head and body are written from the
/// connection's `out` buffer, `at` bytes of which are on the wire.
#[derive(Debug)]
struct UploadState {
    framing: Framing,
    /// What is left of a body with a length.
    left: u64,
    at: usize,
    done: bool,
    /// Whether any byte of the request has been written.
    wrote: bool,
}

impl UploadState {
    fn new(framing: Framing) -> Self {
        Self {
            framing,
            left: match framing {
                Framing::Length(length) => length,
                _ => 0,
            },
            at: 0,
            done: false,
            wrote: false,
        }
    }

    fn failed(&self, error: SendError) -> Failure {
        Failure {
            error,
            nothing_written: !self.wrote,
        }
    }

    /// Writes what is buffered and moves the body along, until the body has gone
    /// (ready) or the socket or the body has to wait (pending).
    fn poll<B, I>(
        &mut self,
        mut body: Pin<&mut B>,
        io: &mut I,
        out: &mut Vec<u8>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendError>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
        I: Io,
    {
        loop {
            if self.at < out.len() {
                match ready!(Pin::new(&mut *io).poll_write(cx, &out[self.at..])) {
                    Ok(0) => {
                        return Poll::Ready(Err(SendError::Io(io::ErrorKind::WriteZero.into())));
                    }
                    Ok(written) => {
                        self.at += written;
                        self.wrote = true;
                        if self.at == out.len() {
                            out.clear();
                            self.at = 0;
                        }
                    }
                    Err(error) => return Poll::Ready(Err(SendError::Io(error))),
                }
                continue;
            }
            if self.done {
                return Poll::Ready(Ok(()));
            }
            match ready!(body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if self.framing == Framing::Chunked {
                        write_chunk(out, &data);
                    } else if data.len() as u64 > self.left {
                        return Poll::Ready(Err(SendError::RequestLength));
                    } else {
                        self.left -= data.len() as u64;
                        out.extend_from_slice(&data);
                    }
                }
                Some(Err(error)) => return Poll::Ready(Err(SendError::RequestBody(error.into()))),
                None => {
                    self.done = true;
                    if self.framing == Framing::Chunked {
                        out.extend_from_slice(b"0\r\n\r\n");
                    } else if self.left != 0 {
                        return Poll::Ready(Err(SendError::RequestLength));
                    }
                }
            }
        }
    }
}

/// The rest of a request body, still going out while its response is read.
struct Upload {
    body: UnsyncBoxBody<Bytes, Box<dyn StdError + Send + Sync>>,
    state: UploadState,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// How a request's body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    /// A body on a `GET`, `HEAD` or `CONNECT` with no framing of its own: not sent.
    Unsent,
}

/// The request's framing, as hyper's client decided it from the fields: what the
/// sender declared, else the body's known length, else chunked (never for a `GET`,
/// `HEAD` or `CONNECT`, whose unframed body is not sent).
fn request_framing<B: Body>(request: &Outgoing<B>) -> Framing {
    match request.declared {
        Declared::Chunked => return Framing::Chunked,
        Declared::Length(length) => return Framing::Length(length),
        Declared::Nothing => {}
    }
    let body = &request.body;
    if body.is_end_stream() {
        return Framing::Length(0);
    }
    match body.size_hint().exact() {
        Some(length) => Framing::Length(length),
        None if matches!(request.method, Method::GET | Method::HEAD | Method::CONNECT) => {
            Framing::Unsent
        }
        None => Framing::Chunked,
    }
}

/// The request line, the fields, and the framing field: the declared one, else the one
/// a body needs.
fn write_request_head<B>(out: &mut Vec<u8>, request: &Outgoing<B>, framing: Framing) {
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    let target = request
        .target
        .path_and_query()
        .map_or("/", |path_and_query| path_and_query.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    out.extend_from_slice(request.fields.as_bytes());
    let declared = request.declared != Declared::Nothing;
    match framing {
        Framing::Length(0) | Framing::Unsent if !declared => {}
        Framing::Length(length) => {
            use std::io::Write;
            let _ = write!(out, "content-length: {length}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Unsent => {}
    }
    out.extend_from_slice(b"\r\n");
}

fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    use std::io::Write;
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

#[derive(Debug)]
enum Reading {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// A response body, read from its connection as it is polled.
#[derive(Debug)]
pub struct IncomingBody<I> {
    /// `None` once the body failed (the connection is dropped with it).
    connection: Option<Box<Connection<I>>>,
    reading: Reading,
    /// Whether the connection may carry another request once the body has ended.
    reusable: bool,
    upgrade: bool,
    /// The rest of a request body the upstream answered before it had all of it.
    upload: Option<Box<Upload>>,
}

impl<I: Io> IncomingBody<I> {
    /// The connection, once the body has been read to its end, if it may carry another
    /// request.
    pub fn reusable(&mut self) -> Option<Box<Connection<I>>> {
        if !matches!(self.reading, Reading::Done) || !self.reusable {
            return None;
        }
        let mut connection = self
            .connection
            .take()
            .filter(|connection| connection.buf.is_empty())?;
        // An idle connection in the pool holds no buffer; its next request takes them
        // ([`super::spares`]).
        let buf = std::mem::take(&mut connection.buf);
        READ_BUFFERS.with(|buffers| buffers.give(buf));
        let out = std::mem::take(&mut connection.out);
        WRITE_BUFFERS.with(|buffers| buffers.give(out));
        Some(connection)
    }

    /// The connection of a `101` (or a 2xx to `CONNECT`), with what the upstream sent
    /// after its head.
    pub fn upgrade(self) -> Option<Upgraded> {
        if !self.upgrade {
            return None;
        }
        let connection = self.connection?;
        let Connection { io, buf, .. } = *connection;
        Some(Upgraded::new(Box::new(io), buf.freeze()))
    }

    fn fail(&mut self, error: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.connection = None;
        self.reading = Reading::Done;
        self.reusable = false;
        Poll::Ready(Some(Err(error)))
    }
}

impl<I: Io> Body for IncomingBody<I> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let (Some(upload), Some(connection)) = (&mut this.upload, &mut this.connection) {
            let Upload { body, state } = &mut **upload;
            let connection = &mut **connection;
            match state.poll(Pin::new(body), &mut connection.io, &mut connection.out, cx) {
                Poll::Ready(Ok(())) => this.upload = None,
                Poll::Ready(Err(error)) => return this.fail(BodyError::Upload(error)),
                Poll::Pending => {}
            }
        }
        loop {
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            let buf = &mut connection.buf;
            if !buf.is_empty() {
                let data = match &mut this.reading {
                    Reading::Done => return Poll::Ready(None),
                    Reading::Length(left) => {
                        let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                        *left -= take as u64;
                        let data = buf.split_to(take).freeze();
                        if *left == 0 {
                            this.reading = Reading::Done;
                        }
                        data
                    }
                    Reading::Chunked(decoder) => match decoder.decode(buf) {
                        Ok(decoded) => {
                            let (start, end) = decoded.data;
                            let mut used = buf.split_to(decoded.consumed).freeze();
                            if decoder.is_done() {
                                this.reading = Reading::Done;
                            }
                            used.truncate(end);
                            used.advance(start);
                            used
                        }
                        Err(error) => return this.fail(error.into()),
                    },
                    Reading::UntilClose => buf.split().freeze(),
                };
                if !data.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                continue;
            }
            match this.reading {
                Reading::Done => return Poll::Ready(None),
                Reading::Length(0) => {
                    this.reading = Reading::Done;
                    return Poll::Ready(None);
                }
                _ => {}
            }
            // One read takes at most a chunk: what a client that stops reading makes the
            // connection hold ahead of it.
            buf.reserve(READ_CHUNK);
            match ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut connection.io),
                cx,
                &mut (&mut *buf).limit(READ_CHUNK)
            )) {
                Ok(0) if matches!(this.reading, Reading::UntilClose) => {
                    this.reading = Reading::Done;
                    this.reusable = false;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(BodyError::Incomplete),
                Ok(_) => {}
                Err(error) => return this.fail(BodyError::Io(error)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.reading, Reading::Done | Reading::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.reading {
            Reading::Length(left) => SizeHint::with_exact(left),
            Reading::Done => SizeHint::with_exact(0),
            Reading::Chunked(_) | Reading::UntilClose => SizeHint::default(),
        }
    }
}
