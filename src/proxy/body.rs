//! The response body the gateway sends: an upstream's streamed body or a short message
//! of its own, plus whatever must live exactly as long as the response does: the
//! connection's "request in flight" mark and the request's [`RequestRecord`], which
//! counts the bytes sent and is written to the metrics and the access log when the body
//! ends or is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::fairness::Admission;
use super::pool::UpstreamBody;
use crate::http1::client::BodyError;
use crate::metrics::RequestRecord;

/// `A` is dropped when the response has been sent or abandoned: the connection's
/// "request in flight" mark once [`ProxyBody::attach`] adds it, `()` until then. A type
/// parameter rather than a boxed trait object, so attaching it allocates nothing.
#[derive(Default)]
pub struct ProxyBody<A = ()> {
    // Dropped in this order: the upstream body (its connection back to the pool), the
    // attachment, then the record (counted and logged).
    kind: Kind,
    /// The request's place among those in flight to the upstreams.
    admission: Option<Admission>,
    _attachment: A,
    record: Option<RequestRecord>,
}

#[derive(Default)]
enum Kind {
    Upstream(UpstreamBody),
    Full(Option<Bytes>),
    #[default]
    Empty,
}

impl ProxyBody {
    pub fn upstream(body: UpstreamBody) -> Self {
        Self {
            kind: Kind::Upstream(body),
            admission: None,
            _attachment: (),
            record: None,
        }
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Full(Some(bytes.into())),
            admission: None,
            _attachment: (),
            record: None,
        }
    }

    pub fn empty() -> Self {
        Self::default()
    }

    /// Keeps `attachment` alive until the body is finished or dropped.
    pub fn attach<A>(self, attachment: A) -> ProxyBody<A> {
        let Self {
            kind,
            admission,
            _attachment: (),
            record,
        } = self;
        ProxyBody {
            kind,
            admission,
            _attachment: attachment,
            record,
        }
    }
}

impl<A> ProxyBody<A> {
    /// Keeps the request's place among those in flight upstream until the body ends.
    pub fn holding(mut self, admission: Admission) -> Self {
        self.admission = Some(admission);
        self
    }

    /// Counts the bytes sent into `record`, which is finished when the body is.
    pub fn with_record(mut self, record: RequestRecord) -> Self {
        self.record = Some(record);
        self
    }
}

impl<A> std::fmt::Debug for ProxyBody<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Upstream(_) => "upstream",
            Kind::Full(_) => "full",
            Kind::Empty => "empty",
        };
        f.debug_struct("ProxyBody").field("kind", &kind).finish()
    }
}

impl<A: Unpin> Body for ProxyBody<A> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            Kind::Upstream(body) => Pin::new(body).poll_frame(cx),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Empty => Poll::Ready(None),
        };
        if let (Some(record), Poll::Ready(Some(Ok(frame)))) = (&mut this.record, &polled)
            && let Some(data) = frame.data_ref()
        {
            record.add_body_bytes(data.len());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream(body) => body.is_end_stream(),
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(body) => body.size_hint(),
            Kind::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Full(None) | Kind::Empty => SizeHint::with_exact(0),
        }
    }
}
