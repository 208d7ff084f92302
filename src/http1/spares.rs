//! Buffers that idle connections have let go of, kept per thread for the next
//! connection that needs one.
//!
//! An idle connection holds no buffer (as nginx's keep-alive connections hold none):
//! between requests it gives its read and write buffers back here, and its next read
//! takes one only when bytes arrive. Without a place to keep them, each request would
//! allocate and free buffers of 2 to 16 KiB, which mimalloc serves from its slow path
//! (sizes over 1 KiB): about 2,000 instructions per proxied request, measured. A few
//! are kept per thread ([`KEPT`] of each kind: read buffers of 8 KiB (client side)
//! and 16 KiB (upstream side), write buffers of up to four times their 2 and 1 KiB,
//! under 600 KiB per worker thread), enough for the connections of a thread that are
//! busy at once to pass them on; more are freed.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, BytesMut};
use tokio::io::AsyncRead;

/// The most buffers of each kind kept per thread.
pub const KEPT: usize = 16;
/// A write buffer grown past this many times its kind's size (by a streamed body) is
/// freed rather than kept.
const WRITE_GROWTH_KEPT: usize = 4;

/// The read buffers of one size.
pub struct ReadBuffers {
    capacity: usize,
    kept: RefCell<Vec<BytesMut>>,
}

impl ReadBuffers {
    pub const fn new(capacity: usize) -> Self {
        Self {
            capacity,
            kept: RefCell::new(Vec::new()),
        }
    }

    /// A buffer of `capacity` bytes, kept or new.
    pub fn take(&self) -> BytesMut {
        self.kept
            .try_borrow_mut()
            .ok()
            .and_then(|mut kept| kept.pop())
            .unwrap_or_else(|| BytesMut::with_capacity(self.capacity))
    }

    /// Keeps `buf` for the next taker if it is whole again: nothing else holds a part
    /// of it (a request's head, sliced from it, is dropped by the time its connection
    /// is idle) and it is this size.
    pub fn give(&self, mut buf: BytesMut) {
        buf.clear();
        if !buf.try_reclaim(self.capacity) || buf.capacity() != self.capacity {
            return;
        }
        if let Ok(mut kept) = self.kept.try_borrow_mut()
            && kept.len() < KEPT
        {
            kept.push(buf);
        }
    }

    /// Reads from `read` into an empty `buf` that holds no memory while it waits: the
    /// read goes into a kept (or new) buffer, which becomes `buf` only once bytes
    /// arrive, and is kept again if none did.
    pub fn poll_read_into<R: AsyncRead + Unpin>(
        &self,
        read: &mut R,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        debug_assert!(buf.is_empty());
        let mut spare = self.take();
        let limit = self.capacity;
        let read =
            tokio_util::io::poll_read_buf(Pin::new(read), cx, &mut (&mut spare).limit(limit));
        match read {
            Poll::Ready(Ok(n)) if n > 0 => {
                *buf = spare;
                Poll::Ready(Ok(n))
            }
            other => {
                self.give(spare);
                other
            }
        }
    }
}

/// Write buffers (response heads with small bodies, request heads).
pub struct WriteBuffers {
    capacity: usize,
    kept: RefCell<Vec<Vec<u8>>>,
}

impl WriteBuffers {
    pub const fn new(capacity: usize) -> Self {
        Self {
            capacity,
            kept: RefCell::new(Vec::new()),
        }
    }

    /// An empty buffer of at least `capacity` bytes, kept or new.
    pub fn take(&self) -> Vec<u8> {
        self.kept
            .try_borrow_mut()
            .ok()
            .and_then(|mut kept| kept.pop())
            .unwrap_or_else(|| Vec::with_capacity(self.capacity))
    }

    /// Keeps `out` for the next taker, unless it has grown large or enough are kept.
    pub fn give(&self, mut out: Vec<u8>) {
        if out.capacity() < self.capacity || out.capacity() > self.capacity * WRITE_GROWTH_KEPT {
            return;
        }
        out.clear();
        if let Ok(mut kept) = self.kept.try_borrow_mut()
            && kept.len() < KEPT
        {
            kept.push(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_buffer_comes_back_only_once_nothing_else_holds_a_part_of_it() {
        let buffers = ReadBuffers::new(64);
        let mut buf = buffers.take();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let head = buf.split_to(18).freeze();
        buffers.give(buf);
        // The head still points into it: not kept (freed with the head).
        assert!(buffers.kept.borrow().is_empty());

        let mut buf = buffers.take();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let start = buf.as_ptr();
        drop(buf.split_to(18).freeze());
        buffers.give(buf);
        let again = buffers.take();
        assert_eq!(
            (again.as_ptr(), again.len(), again.capacity()),
            (start, 0, 64)
        );
        drop(head);
    }

    #[test]
    fn no_more_than_kept_and_no_grown_write_buffer_is_kept() {
        let buffers = WriteBuffers::new(16);
        for _ in 0..KEPT + 4 {
            buffers.give(Vec::with_capacity(16));
        }
        buffers.give(Vec::with_capacity(16 * WRITE_GROWTH_KEPT + 1));
        assert_eq!(buffers.kept.borrow().len(), KEPT);
        assert!(buffers.kept.borrow().iter().all(|out| out.capacity() == 16));
    }
}
