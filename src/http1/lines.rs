//! The header lines of a parsed head, kept as they arrived: positions in the head's own
//! bytes, no name or value copied or hashed. An upstream's response head is passed to
//! the client this way; the header policy drops lines from it in one pass
//! ([`HeaderLines::retain`]), and the engine writes what is left as it is. Only where
//! `http` types are needed (an HTTP/2 client, the gateway's own checks) are the lines
//! turned into a `HeaderMap` ([`HeaderLines::append_to`]).

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::request::{HeadError, HeaderIndex};

/// A head's header lines, in the order they came. Names keep the sender's case; a
/// name compares without it ([`HeaderLines::iter`] gives the bytes as sent).
#[derive(Debug, Clone, Default)]
pub struct HeaderLines {
    head: Bytes,
    index: Vec<HeaderIndex>,
}

impl HeaderLines {
    /// The lines at `index` in `head`. Names were checked by the parser; values are
    /// held to what `HeaderValue` accepts (no control bytes but tab), so that the lines
    /// can always be turned into `http` types and a value the gateway would refuse in a
    /// `HeaderMap` is refused here too.
    pub(super) fn new(head: Bytes, index: Vec<HeaderIndex>) -> Result<Self, HeadError> {
        let valid = |value: &[u8]| {
            value
                .iter()
                .all(|&b| b == b'\t' || (b >= b' ' && b != 0x7f))
        };
        if !index.iter().all(|field| valid(field.value(&head))) {
            return Err(HeadError::Malformed("invalid header value"));
        }
        Ok(Self { head, index })
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Each line's name (as sent) and value (without the whitespace around it).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.index
            .iter()
            .map(|field| (field.name(&self.head), field.value(&self.head)))
    }

    /// Keeps the lines `keep` says yes to, in their order.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], &[u8]) -> bool) {
        let head = &self.head;
        self.index
            .retain(|field| keep(field.name(head), field.value(head)));
    }

    /// Appends the lines to `headers` as `http` types (names lower-cased), the values
    /// sharing the head's bytes.
    pub fn append_to(&self, headers: &mut HeaderMap) {
        headers.reserve(self.index.len());
        for field in &self.index {
            // Both were checked when the lines were made: neither can fail.
            let name = HeaderName::from_bytes(field.name(&self.head));
            let value =
                HeaderValue::from_maybe_shared(self.head.slice_ref(field.value(&self.head)));
            if let (Ok(name), Ok(value)) = (name, value) {
                headers.append(name, value);
            }
        }
    }

    /// The lines as a `HeaderMap`.
    pub fn to_header_map(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        self.append_to(&mut headers);
        headers
    }

    /// The lines of `head`, a whole response head (status line to the empty line), as
    /// the engine's client would read them: for benchmarks and tests of what uses them.
    pub fn from_response_head(head: Bytes) -> Result<Self, HeadError> {
        let mut index = Vec::new();
        let limits = super::HeadLimits {
            max_header_size: head.len() + 1,
        };
        match super::parse_response(&head, &http::Method::GET, limits, &mut index)? {
            Some(parsed) if parsed.len == head.len() => Self::new(head, index),
            _ => Err(HeadError::Malformed("not one whole response head")),
        }
    }

    /// The lines as the head had them: `name: value\r\n` each.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        for (name, value) in self.iter() {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::request::HeadLimits;
    use crate::http1::response::parse_response;
    use http::Method;

    fn lines(head: &'static [u8]) -> Result<HeaderLines, HeadError> {
        let mut index = Vec::new();
        let limits = HeadLimits {
            max_header_size: 1024,
        };
        let parsed = parse_response(head, &Method::GET, limits, &mut index)?;
        let len = parsed.map(|head| head.len).unwrap_or_default();
        HeaderLines::new(Bytes::from_static(head).slice(..len), index)
    }

    #[test]
    fn lines_keep_their_case_and_order_and_map_to_lower_case_names() {
        let mut lines =
            lines(b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Kept:  v \r\nset-cookie: b=2\r\n\r\n")
                .unwrap();
        let seen: Vec<_> = lines.iter().collect();
        assert_eq!(
            seen,
            [
                (&b"Set-Cookie"[..], &b"a=1"[..]),
                (b"X-Kept", b"v"),
                (b"set-cookie", b"b=2")
            ]
        );
        let map = lines.to_header_map();
        let cookies: Vec<_> = map.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        lines.retain(|name, _| !name.eq_ignore_ascii_case(b"x-kept"));
        let mut out = Vec::new();
        lines.write_to(&mut out);
        assert_eq!(out, b"Set-Cookie: a=1\r\nset-cookie: b=2\r\n");
    }

    #[test]
    fn a_value_with_a_control_byte_is_refused() {
        assert!(matches!(
            lines(b"HTTP/1.1 200 OK\r\nX-Bad: a\x7fb\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        assert!(lines(b"HTTP/1.1 200 OK\r\nX-Tab: a\tb\r\n\r\n").is_ok());
    }
}
