//! Request heads: parsed by `httparse` in place, without copying a header, and the
//! framing of the body that follows decided from them (RFC 9112 §6).
//!
//! The rules are hyper's, byte for byte, because hyper served the public listener until
//! this engine did and the smuggling corpus (`tests/smuggling.rs`) pins its answers:
//! `tests/http1_differential.rs` and the `http1_request` fuzz target feed the same bytes
//! to both and require the same verdict and the same message boundaries. Where the
//! two would differ, a comment says why. What the gateway refuses on top (`CONNECT`,
//! user info, a coding besides `chunked`) stays in [`crate::proxy::framing`].

use std::mem::MaybeUninit;

use http::{HeaderName, Method, StatusCode, Uri, Version};

use super::fields::{ends_in_chunked, from_digits, has_token};

/// The most header fields a request head may carry (hyper's default, kept).
pub const MAX_HEADERS: usize = 100;
/// The longest request target, in bytes (hyper's limit, kept): 414 beyond.
pub const MAX_TARGET_LEN: usize = (u16::MAX - 1) as usize;
/// The largest `Content-Length` a body may declare (hyper's, kept): 431 beyond, as
/// hyper answers.
pub(super) const MAX_CONTENT_LENGTH: u64 = u64::MAX - 2;
/// The first bytes of an HTTP/2 connection (RFC 9113 §3.4): such a client gets no
/// HTTP/1.1 answer, only a closed connection.
pub(super) const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Where one header field lies in the buffer the head was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderIndex {
    name: (usize, usize),
    value: (usize, usize),
}

impl HeaderIndex {
    pub(super) fn new(name: (usize, usize), value: (usize, usize)) -> Self {
        Self { name, value }
    }

    /// The field's name as sent (any case).
    pub fn name<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        buf.get(self.name.0..self.name.1).unwrap_or_default()
    }

    /// The field's value, without the whitespace around it.
    pub fn value<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        buf.get(self.value.0..self.value.1).unwrap_or_default()
    }
}

/// A head's fields as `http` types over the head's bytes (the values not copied), from
/// the positions a parse found; request and response heads alike.
pub(super) fn header_map(
    head: &bytes::Bytes,
    fields: &[HeaderIndex],
) -> Result<http::HeaderMap, HeadError> {
    let mut headers = http::HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name(head))
            .map_err(|_| HeadError::Malformed("invalid header name"))?;
        let value = http::HeaderValue::from_maybe_shared(head.slice_ref(field.value(head)))
            .map_err(|_| HeadError::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// How the body that follows a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// Exactly this many bytes (`Content-Length`; 0 without one).
    Length(u64),
    /// `Transfer-Encoding: chunked`, read with [`super::ChunkedDecoder`].
    Chunked,
}

/// A parsed request head. Header fields are in the vector handed to
/// [`parse_request`], as positions in its buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the buffer the head took, leading empty lines included.
    pub len: usize,
    pub method: Method,
    /// The request target, checked as a URI (origin, absolute, authority or `*` form).
    pub uri: Uri,
    pub version: Version,
    pub body: BodyLength,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1: the client waits before sending the body.
    pub expect_continue: bool,
    /// An `Upgrade` header on HTTP/1.1, or a `CONNECT`.
    pub wants_upgrade: bool,
    /// `Content-Length` came beside `Transfer-Encoding`: the body was read as chunked,
    /// the length is to be ignored, and the connection closes after this request
    /// (RFC 9112 §6.1).
    pub length_beside_chunked: bool,
}

/// Limits a head is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// The largest head, in bytes, request line and the empty line that ends it
    /// included: a head of this size passes, one byte more gets 431.
    pub max_header_size: usize,
}

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("the request head is larger than max_header_size ({limit} bytes)")]
    TooLarge { limit: usize },
    #[error("the request has more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("the request target is longer than {MAX_TARGET_LEN} bytes")]
    TargetTooLong,
    #[error("the request declares a body longer than the gateway can count")]
    LengthTooLarge,
    #[error("an HTTP/2 connection preface on an HTTP/1.1 connection")]
    Http2Preface,
    #[error("malformed request head: {0}")]
    Malformed(&'static str),
}

impl HeadError {
    /// The answer to send before closing, if any (hyper's choices, kept): 431 for a
    /// head or a field count over the limit, 414 for a long target, none for an HTTP/2
    /// preface, 400 for the rest.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::TooLarge { .. } | Self::TooManyHeaders | Self::LengthTooLarge => {
                Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
            }
            Self::TargetTooLong => Some(StatusCode::URI_TOO_LONG),
            Self::Http2Preface => None,
            Self::Malformed(_) => Some(StatusCode::BAD_REQUEST),
        }
    }
}

/// Parses the request head at the start of `buf`: `Ok(None)` while it is incomplete
/// (read more and call again), the head once complete. `headers` is cleared and filled
/// with the head's fields; it is the caller's to reuse from one request to the next.
pub fn parse_request(
    buf: &[u8],
    limits: HeadLimits,
    headers: &mut Vec<HeaderIndex>,
) -> Result<Option<RequestHead>, HeadError> {
    headers.clear();
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    // Only the first `max_header_size` bytes are looked at: a head is judged the same
    // however the bytes arrived, and a buffer of many requests costs one head's parse.
    let window = buf.get(..limits.max_header_size).unwrap_or(buf);
    let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        window,
        &mut slots,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            // Incomplete with `max_header_size` bytes in hand: the head is longer.
            return if window.len() >= limits.max_header_size {
                Err(HeadError::TooLarge {
                    limit: limits.max_header_size,
                })
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::Version) if buf.starts_with(HTTP2_PREFACE) => {
            return Err(HeadError::Http2Preface);
        }
        Err(error) => return Err(from_httparse(error)),
    };
    if len > limits.max_header_size {
        return Err(HeadError::TooLarge {
            limit: limits.max_header_size,
        });
    }
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    if target.len() > MAX_TARGET_LEN {
        return Err(HeadError::TargetTooLong);
    }
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| HeadError::Malformed("invalid method"))?;
    let is_http_11 = version == 1;
    let version = if is_http_11 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let base = buf.as_ptr() as usize;
    // One allocation at most: the connection's list starts empty after an idle spell.
    headers.reserve(request.headers.len());
    for header in request.headers.iter() {
        // hyper refuses names of 64 KiB or more as too large; a head that size is over
        // any max_header_size the config accepts, but the rule is kept.
        if header.name.len() >= 1 << 16 {
            return Err(HeadError::TooLarge {
                limit: limits.max_header_size,
            });
        }
        // httparse's token rule and `HeaderName`'s agree; checked, so a disagreement
        // is a 400 rather than a panic further on.
        if HeaderName::from_bytes(header.name.as_bytes()).is_err() {
            return Err(HeadError::Malformed("invalid header name"));
        }
        let name = header.name.as_ptr() as usize - base;
        let value = header.value.as_ptr() as usize - base;
        headers.push(HeaderIndex {
            name: (name, name + header.name.len()),
            value: (value, value + header.value.len()),
        });
    }
    let uri = Uri::try_from(target.as_bytes())
        .map_err(|_| HeadError::Malformed("invalid request target"))?;

    let mut framing = Framing::new(is_http_11, method == Method::CONNECT);
    for header in headers.iter() {
        framing.field(header.name(buf), header.value(buf))?;
    }
    let (body, length_beside_chunked) = framing.body()?;
    let keep_alive = framing.keep_alive && !length_beside_chunked;
    Ok(Some(RequestHead {
        len,
        method,
        uri,
        version,
        body,
        keep_alive,
        expect_continue: framing.expect_continue,
        wants_upgrade: framing.wants_upgrade,
        length_beside_chunked,
    }))
}

pub(super) fn from_httparse(error: httparse::Error) -> HeadError {
    match error {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::HeaderName => HeadError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
        httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
        httparse::Error::Token => HeadError::Malformed("invalid method or request target"),
        httparse::Error::Version => HeadError::Malformed("unsupported HTTP version"),
        httparse::Error::Status => HeadError::Malformed("invalid request line"),
    }
}

/// The framing decision, one field at a time, in the order the fields came (the order
/// matters: hyper ignores a `Content-Length` after a `Transfer-Encoding`, and the last
/// `Transfer-Encoding` and `Expect` decide).
struct Framing {
    is_http_11: bool,
    keep_alive: bool,
    saw_close: bool,
    expect_continue: bool,
    wants_upgrade: bool,
    length: Option<u64>,
    saw_length: bool,
    saw_te: bool,
    te_chunked: bool,
}

impl Framing {
    fn new(is_http_11: bool, connect: bool) -> Self {
        Self {
            is_http_11,
            keep_alive: is_http_11,
            saw_close: false,
            expect_continue: false,
            wants_upgrade: connect,
            length: None,
            saw_length: false,
            saw_te: false,
            te_chunked: false,
        }
    }

    fn field(&mut self, name: &[u8], value: &[u8]) -> Result<(), HeadError> {
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if !self.is_http_11 {
                return Err(HeadError::Malformed(
                    "Transfer-Encoding is not allowed in HTTP/1.0",
                ));
            }
            self.saw_te = true;
            self.length = None;
            self.te_chunked = ends_in_chunked(value);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            self.saw_length = true;
            if self.saw_te {
                return Ok(());
            }
            let length =
                from_digits(value).ok_or(HeadError::Malformed("invalid Content-Length"))?;
            match self.length {
                Some(previous) if previous != length => {
                    return Err(HeadError::Malformed("differing Content-Length values"));
                }
                Some(_) => {}
                None => {
                    if length > MAX_CONTENT_LENGTH {
                        return Err(HeadError::LengthTooLarge);
                    }
                    self.length = Some(length);
                }
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            // Once any line asks to close, a later `keep-alive` does not undo it.
            if self.saw_close || has_token(value, b"close") {
                self.saw_close = true;
                self.keep_alive = false;
            } else if !self.keep_alive {
                self.keep_alive = has_token(value, b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            self.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.wants_upgrade = self.is_http_11;
        }
        Ok(())
    }

    /// The body's framing, and whether a length came beside `Transfer-Encoding`.
    fn body(&self) -> Result<(BodyLength, bool), HeadError> {
        if self.saw_te {
            if !self.te_chunked {
                return Err(HeadError::Malformed(
                    "Transfer-Encoding does not end in chunked",
                ));
            }
            return Ok((BodyLength::Chunked, self.saw_length));
        }
        Ok((BodyLength::Length(self.length.unwrap_or(0)), false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_header_size: 8192,
    };

    fn parse(bytes: &[u8]) -> Result<Option<RequestHead>, HeadError> {
        parse_request(bytes, LIMITS, &mut Vec::new())
    }

    fn head(bytes: &[u8]) -> RequestHead {
        parse(bytes).unwrap().unwrap()
    }

    #[test]
    fn a_plain_get_has_no_body_and_keeps_the_connection() {
        let mut headers = Vec::new();
        let bytes = b"GET /a?b HTTP/1.1\r\nHost: gw\r\nX-A:  v \r\n\r\nnext";
        let head = parse_request(bytes, LIMITS, &mut headers).unwrap().unwrap();
        assert_eq!(head.len, bytes.len() - 4);
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri, "/a?b");
        assert_eq!(head.body, BodyLength::Length(0));
        assert!(head.keep_alive);
        let fields: Vec<_> = headers
            .iter()
            .map(|h| (h.name(bytes), h.value(bytes)))
            .collect();
        assert_eq!(
            fields,
            [(&b"Host"[..], &b"gw"[..]), (&b"X-A"[..], &b"v"[..])]
        );
    }

    #[test]
    fn an_incomplete_head_asks_for_more_until_it_is_too_large() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: gw\r\n"), Ok(None));
        let limits = HeadLimits {
            max_header_size: 30,
        };
        let long = b"GET / HTTP/1.1\r\nX-Long: aaaaaaaaaaaaaa";
        assert_eq!(
            parse_request(long, limits, &mut Vec::new()),
            Err(HeadError::TooLarge { limit: 30 })
        );
    }

    #[test]
    fn max_header_size_is_exact() {
        let head_of = |size: usize| {
            let fixed = b"GET / HTTP/1.1\r\nX-Pad: \r\n\r\n".len();
            let mut bytes = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
            bytes.extend(std::iter::repeat_n(b'a', size - fixed));
            bytes.extend_from_slice(b"\r\n\r\n");
            assert_eq!(bytes.len(), size);
            bytes
        };
        let limits = HeadLimits {
            max_header_size: 100,
        };
        let fits = parse_request(&head_of(100), limits, &mut Vec::new());
        assert_eq!(fits.unwrap().unwrap().len, 100);
        let over = parse_request(&head_of(101), limits, &mut Vec::new());
        assert_eq!(over, Err(HeadError::TooLarge { limit: 100 }));
        // Arriving in pieces: no piece of the larger head is let through either.
        let bytes = head_of(101);
        for end in 0..bytes.len() {
            match parse_request(&bytes[..end], limits, &mut Vec::new()) {
                Ok(None) | Err(HeadError::TooLarge { .. }) => {}
                other => panic!("{end}: {other:?}"),
            }
        }
    }

    #[test]
    fn lengths_follow_the_rules_of_rfc_9112() {
        let post = |fields: &str| format!("POST / HTTP/1.1\r\n{fields}\r\n").into_bytes();
        assert_eq!(
            head(&post("Content-Length: 005\r\n")).body,
            BodyLength::Length(5)
        );
        assert_eq!(
            head(&post("Content-Length: 5\r\nContent-Length: 5\r\n")).body,
            BodyLength::Length(5)
        );
        for bad in [
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: 5, 5\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: -5\r\n",
            "Content-Length: \r\n",
            "Content-Length: 99999999999999999999999\r\n",
            "Transfer-Encoding: chunked, identity\r\n",
        ] {
            assert!(
                matches!(parse(&post(bad)), Err(HeadError::Malformed(_))),
                "{bad}"
            );
        }
        let both = head(&post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n"));
        assert_eq!(both.body, BodyLength::Chunked);
        assert!(both.length_beside_chunked && !both.keep_alive);
        let te_first = head(&post("Transfer-Encoding: chunked\r\nContent-Length: x\r\n"));
        assert_eq!(te_first.body, BodyLength::Chunked);
        let http10 = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(parse(http10).is_err());
    }

    #[test]
    fn connection_expect_and_upgrade_are_noted() {
        let close = head(b"GET / HTTP/1.1\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n");
        assert!(!close.keep_alive);
        let old = head(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!old.keep_alive);
        let old_kept = head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(old_kept.keep_alive);
        let expect = head(b"PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n");
        assert!(expect.expect_continue);
        let upgrade = head(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        assert!(upgrade.wants_upgrade);
        assert!(head(b"CONNECT a:1 HTTP/1.1\r\n\r\n").wants_upgrade);
    }

    #[test]
    fn malformed_heads_are_refused_with_their_status() {
        for (bytes, status) in [
            (&b"GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n"[..], 400),
            (b"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\rHost: gw\r\n\r\n", 400),
            (b"GET / HTTP/1.2\r\n\r\n", 400),
            (b"GET /a b HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n: v\r\n\r\n", 400),
        ] {
            let error = parse(bytes).unwrap_err();
            assert_eq!(
                error.status().map(|s| s.as_u16()),
                Some(status),
                "{bytes:?}"
            );
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(many.as_bytes()), Err(HeadError::TooManyHeaders));
        assert_eq!(
            parse(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Err(HeadError::Http2Preface)
        );
    }

    #[test]
    fn bare_line_feeds_and_leading_empty_lines_are_accepted_as_hyper_does() {
        let bytes = b"\r\nGET /lf HTTP/1.1\nHost: gw\n\n";
        let head = head(bytes);
        assert_eq!(head.len, bytes.len());
        assert_eq!(head.uri, "/lf");
    }
}
