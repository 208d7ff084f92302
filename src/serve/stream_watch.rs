//! `send_timeout` for each HTTP/2 stream: a stream whose client accepts none of its
//! response for that long is reset (`RST_STREAM(CANCEL)`) and its upstream request
//! cancelled, while the connection and its other streams go on.
//!
//! The connection's own watchdog cannot see this: a client that reads one stream, or
//! only answers PINGs, keeps the socket moving while other streams' windows stay at 0,
//! each holding an upstream request. Nor can a timer in the response body: hyper polls a
//! body only when the stream has room for what it gave last, so a stalled stream's body
//! is never polled again.
//!
//! So hyper is given [`StreamExecutor`], which runs each stream's task inside a watch.
//! The response body ([`Watched`]) notes in the stream's [`Progress`] when it has handed
//! hyper a piece of data and is waiting to be asked for the next one; the watch, polled
//! on the same task, starts a timer then. hyper asks for the next piece as soon as the
//! client's window takes the last one, so a body left waiting for `send_timeout` is a
//! client that took none of it. The watch then drops the stream's task: h2 resets the
//! stream, and the response body is dropped with it, which closes its upstream
//! connection (a body left mid-way is never pooled). A body waiting for its upstream is
//! not timed here: the upstream's `timeout` governs that.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, SizeHint};

tokio::task_local! {
    /// The progress of the stream whose task is running, for its response body to find.
    static STREAM: Arc<Progress>;
}

/// hyper's executor for an HTTP/2 connection: each stream's task runs inside a watch
/// that resets the stream when its response stalls for `send_timeout`.
#[derive(Debug, Clone, Copy)]
pub(super) struct StreamExecutor {
    pub send_timeout: Duration,
    pub peer: SocketAddr,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, task: F) {
        tokio::spawn(watch(task, *self));
    }
}

/// Runs `task` (one stream: its request's handling, then its response body) until it
/// ends, or until its response body has waited `send_timeout` for the client.
async fn watch<F: Future<Output = ()>>(task: F, settings: StreamExecutor) {
    let progress = Arc::new(Progress::default());
    let task = STREAM.scope(Arc::clone(&progress), task);
    tokio::pin!(task);
    let timer = None::<tokio::time::Sleep>;
    tokio::pin!(timer);
    // When the body last started waiting for the client.
    let mut waiting_since = None::<Instant>;
    let stalled = std::future::poll_fn(|cx| {
        if task.as_mut().poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        loop {
            let look = progress.look();
            if matches!(look, Look::Idle) {
                return Poll::Pending;
            }
            let now = Instant::now();
            let since = match look {
                Look::Started => *waiting_since.insert(now),
                _ => *waiting_since.get_or_insert(now),
            };
            let deadline = since + settings.send_timeout;
            if deadline <= now {
                return Poll::Ready(true);
            }
            // A timer set for an earlier wait fires early and is set again here.
            match timer.as_mut().as_pin_mut() {
                None => timer.set(Some(tokio::time::sleep_until(deadline.into()))),
                Some(sleep) if sleep.is_elapsed() => sleep.reset(deadline.into()),
                Some(_) => {}
            }
            let Some(sleep) = timer.as_mut().as_pin_mut() else {
                return Poll::Pending;
            };
            if sleep.poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    })
    .await;
    if stalled {
        tracing::debug!(
            peer = %settings.peer,
            "HTTP/2 stream reset: the client accepted none of its response for send_timeout"
        );
    }
    // Dropping the task here (not in the poll) resets the stream and the upstream request.
}

/// Where one stream's response body is, as its task's watch needs to know.
#[derive(Debug, Default)]
struct Progress {
    /// `WAITING`: the body gave hyper data and has not been polled since. `NEW`: that
    /// wait started after the watch last looked. Written by the body and read by the
    /// watch, both on the stream's task: never at the same time.
    state: AtomicU8,
}

const WAITING: u8 = 1;
const NEW: u8 = 2;

/// What the watch finds when it looks at a stream's body.
enum Look {
    /// Not waiting for the client: not yet made, waiting for its upstream, or ended.
    Idle,
    /// Waiting for the client, since after the watch last looked.
    Started,
    /// Waiting for the client, as when the watch last looked.
    Waiting,
}

impl Progress {
    fn set(&self, waiting: bool) {
        let state = if waiting { WAITING | NEW } else { 0 };
        self.state.store(state, Ordering::Relaxed);
    }

    fn look(&self) -> Look {
        match self.state.load(Ordering::Relaxed) {
            0 => Look::Idle,
            WAITING => Look::Waiting,
            _ => {
                self.state.store(WAITING, Ordering::Relaxed);
                Look::Started
            }
        }
    }
}

/// A response body on an HTTP/2 stream, telling its stream's watch when it waits for
/// the client. Outside a watched task (no [`StreamExecutor`]) it only passes through.
#[derive(Debug)]
pub(super) struct Watched<B> {
    inner: B,
    progress: Option<Arc<Progress>>,
}

impl<B> Watched<B> {
    /// Wraps the body of a response made on the current stream's task. Until hyper first
    /// polls it, the body counts as waiting: hyper polls it once the head is sent.
    pub fn new(inner: B) -> Self {
        let progress = STREAM.try_with(Arc::clone).ok();
        if let Some(progress) = &progress {
            progress.set(true);
        }
        Self { inner, progress }
    }
}

impl<B: Body + Unpin> Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(progress) = &this.progress {
            // Data handed over waits for the client's window; anything else (waiting
            // for the upstream, the end, an error) does not.
            let gave_data = matches!(&polled, Poll::Ready(Some(Ok(frame))) if frame.is_data());
            progress.set(gave_data);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
