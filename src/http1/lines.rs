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
    /// The lines at `index` in `head`, as the parser found them. Every name and value
    /// is valid for `http` types already: names were checked as `HeaderName`s by the
    /// parser, and `httparse` takes in a value exactly the bytes `HeaderValue` accepts
    /// (tab, space, visible ASCII, obs-text; no other control byte, no DEL), so the
    /// lines can always become a `HeaderMap` (the unit test below holds the parser to
    /// it).
    pub(super) fn new(head: Bytes, index: Vec<HeaderIndex>) -> Self {
        Self { head, index }
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
            // Both were checked by the parser (see `new`): neither can fail.
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
            Some(parsed) if parsed.len == head.len() => Ok(Self::new(head, index)),
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

/// Header lines as written by whoever makes a message (a request's for its upstream,
/// the headers the gateway adds to a response), `name: value\r\n` each, in the order
/// they were added: bytes ready for the wire.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    bytes: Vec<u8>,
}

impl Fields {
    /// Room for about `lines` typical lines (forwarding and security headers run to
    /// 40-60 bytes a line).
    pub fn with_capacity(lines: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(lines * 64),
        }
    }

    /// Makes room for `bytes` more bytes of lines ([`Fields::line_len`] each).
    pub fn reserve(&mut self, bytes: usize) {
        self.bytes.reserve(bytes);
    }

    /// The bytes a line of `name` and `value` takes.
    pub fn line_len(name: &HeaderName, value: &HeaderValue) -> usize {
        name.as_str().len() + value.len() + 4
    }

    /// Adds one line. The name and value are `http` types, so valid on the wire.
    pub fn append(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.bytes.reserve(Self::line_len(name, value));
        self.bytes.extend_from_slice(name.as_str().as_bytes());
        self.bytes.extend_from_slice(b": ");
        self.bytes.extend_from_slice(value.as_bytes());
        self.bytes.extend_from_slice(b"\r\n");
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Each line's name and value (for what reads them back: tests, the echo upstream).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.bytes
            .split(|&b| b == b'\n')
            .filter_map(|line| line.strip_suffix(b"\r"))
            .filter_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                let (name, value) = line.split_at(colon);
                Some((name, value.get(2..).unwrap_or_default()))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(head: &'static [u8]) -> Result<HeaderLines, HeadError> {
        HeaderLines::from_response_head(Bytes::from_static(head))
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
    fn the_parser_takes_in_a_value_exactly_the_bytes_a_header_value_takes() {
        for byte in 0..=u8::MAX {
            if matches!(byte, b'\r' | b'\n') {
                continue;
            }
            let head = format!("HTTP/1.1 200 OK\r\nX-V: a{}b\r\n\r\n", char::from(byte));
            // Bytes above 0x7F as themselves, not as UTF-8.
            let mut bytes = head.into_bytes();
            let at = bytes.iter().position(|&b| b == b'a').unwrap() + 1;
            bytes.splice(at..bytes.iter().position(|&b| b == b'b').unwrap(), [byte]);
            let parsed = HeaderLines::from_response_head(Bytes::from(bytes));
            let accepted = http::HeaderValue::from_bytes(&[b'a', byte, b'b']).is_ok();
            assert_eq!(parsed.is_ok(), accepted, "byte {byte:#04x}");
            if let Ok(lines) = parsed {
                assert_eq!(lines.to_header_map().len(), 1, "byte {byte:#04x}");
            }
        }
    }
}
