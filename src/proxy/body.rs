//! The response body the gateway sends: an upstream's streamed body or a short message
//! of its own, plus whatever must live exactly as long as the response does: the
//! connection's "request in flight" mark and the request's [`RequestRecord`], which
//! counts the bytes sent and is written to the metrics and the access log when the body
//! ends or is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::pool::UpstreamBody;
use crate::metrics::RequestRecord;

/// Something dropped when the response has been sent or abandoned (e.g. the
/// connection's "request in flight" mark).
pub type Attachment = Box<dyn Send + Sync + 'static>;

#[derive(Default)]
pub struct ProxyBody {
    kind: Kind,
    _attachment: Option<Attachment>,
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
            _attachment: None,
            record: None,
        }
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Full(Some(bytes.into())),
            _attachment: None,
            record: None,
        }
    }

    pub fn empty() -> Self {
        Self::default()
    }

    /// Keeps `attachment` alive until the body is finished or dropped.
    pub fn attach(mut self, attachment: Attachment) -> Self {
        self._attachment = Some(attachment);
        self
    }

    /// Counts the bytes sent into `record`, which is finished when the body is.
    pub fn with_record(mut self, record: RequestRecord) -> Self {
        self.record = Some(record);
        self
    }
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Upstream(_) => "upstream",
            Kind::Full(_) => "full",
            Kind::Empty => "empty",
        };
        f.debug_struct("ProxyBody").field("kind", &kind).finish()
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
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
