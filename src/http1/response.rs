//! Response heads from an upstream: parsed by `httparse` in place, and the framing of
//! the body that follows decided from them and from the request's method (RFC 9112
//! §6.3), with hyper's client rules kept exactly, as for requests: no body after `HEAD`,
//! 1xx, 204 or 304; a 101 or a 2xx to `CONNECT` hands the connection over; the last
//! `Transfer-Encoding` ending in `chunked` is chunked and any other coding reads to the
//! end of the connection (a length beside it is ignored); every `Content-Length`
//! value, comma lists included, must state the same length; without either, the body
//! runs to the end of the connection. `tests/http1_differential.rs` holds it to
//! hyper's client.

use std::mem::MaybeUninit;

use http::{HeaderName, Method, StatusCode, Version};

use super::fields::{ends_in_chunked, from_digits, has_token, is_visible, trim};
use super::request::{
    HeadError, HeadLimits, HeaderIndex, MAX_CONTENT_LENGTH, MAX_HEADERS, from_httparse,
};

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    /// None at all, whatever the head says (`HEAD`, 1xx, 204, 304, an upgrade).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
}

/// A parsed response head. Header fields are in the vector handed to
/// [`parse_response`], as positions in its buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Bytes of the buffer the head took.
    pub len: usize,
    pub status: StatusCode,
    pub version: Version,
    pub body: ResponseBody,
    /// Whether the connection may carry another request after this response.
    pub keep_alive: bool,
    /// A 101, or a 2xx to `CONNECT`: the connection now belongs to a tunnel.
    pub upgrade: bool,
    /// The length every `Content-Length` states, when they agree and no
    /// `Transfer-Encoding` overrides them, whether or not a body follows (the length a
    /// response to `HEAD` or a 304 announces).
    pub declared_length: Option<u64>,
}

impl ResponseHead {
    /// An interim response (1xx other than 101): the final one follows it.
    pub fn is_interim(&self) -> bool {
        self.status.is_informational() && self.status != StatusCode::SWITCHING_PROTOCOLS
    }
}

/// Parses the response head at the start of `buf`, the answer to a `method` request:
/// `Ok(None)` while it is incomplete, the head once complete. `headers` is cleared and
/// filled with the head's fields.
pub fn parse_response(
    buf: &[u8],
    method: &Method,
    limits: HeadLimits,
    headers: &mut Vec<HeaderIndex>,
) -> Result<Option<ResponseHead>, HeadError> {
    headers.clear();
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let window = buf.get(..limits.max_header_size).unwrap_or(buf);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        window,
        &mut slots,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if window.len() >= limits.max_header_size {
                Err(HeadError::TooLarge {
                    limit: limits.max_header_size,
                })
            } else {
                Ok(None)
            };
        }
        Err(error) => return Err(from_httparse(error)),
    };
    let (Some(code), Some(version)) = (response.code, response.version) else {
        return Err(HeadError::Malformed("incomplete status line"));
    };
    let status =
        StatusCode::from_u16(code).map_err(|_| HeadError::Malformed("invalid status code"))?;
    let is_http_11 = version == 1;
    let base = buf.as_ptr() as usize;
    // One allocation at most: the connection's list starts empty after an idle spell.
    headers.reserve(response.headers.len());
    for header in response.headers.iter() {
        if header.name.len() >= 1 << 16 {
            return Err(HeadError::TooLarge {
                limit: limits.max_header_size,
            });
        }
        if HeaderName::from_bytes(header.name.as_bytes()).is_err() {
            return Err(HeadError::Malformed("invalid header name"));
        }
        let name = header.name.as_ptr() as usize - base;
        let value = header.value.as_ptr() as usize - base;
        headers.push(HeaderIndex::new(
            (name, name + header.name.len()),
            (value, value + header.value.len()),
        ));
    }

    let mut keep_alive = is_http_11;
    let mut saw_close = false;
    let mut last_coding: Option<&[u8]> = None;
    let mut length: Option<Option<u64>> = None;
    for header in headers.iter() {
        let (name, value) = (header.name(buf), header.value(buf));
        if name.eq_ignore_ascii_case(b"connection") {
            if saw_close || has_token(value, b"close") {
                saw_close = true;
                keep_alive = false;
            } else if !keep_alive {
                keep_alive = has_token(value, b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            last_coding = Some(value);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            // `None` inside: a value that does not parse, or one that disagrees.
            length = Some(match length {
                None => content_length(value, None),
                Some(None) => None,
                Some(Some(seen)) => content_length(value, Some(seen)),
            });
        }
    }

    let (body, upgrade) = match status.as_u16() {
        101 => (ResponseBody::Empty, true),
        100..=199 | 204 | 304 => (ResponseBody::Empty, false),
        _ if *method == Method::HEAD => (ResponseBody::Empty, false),
        200..=299 if *method == Method::CONNECT => (ResponseBody::Empty, true),
        _ => match (last_coding, length) {
            (Some(_), _) if !is_http_11 => {
                return Err(HeadError::Malformed(
                    "Transfer-Encoding is not allowed in HTTP/1.0",
                ));
            }
            (Some(coding), _) if ends_in_chunked(coding) => (ResponseBody::Chunked, false),
            (Some(_), _) => (ResponseBody::UntilClose, false),
            (None, Some(Some(length))) if length > MAX_CONTENT_LENGTH => {
                return Err(HeadError::LengthTooLarge);
            }
            (None, Some(Some(length))) => (ResponseBody::Length(length), false),
            (None, Some(None)) => return Err(HeadError::Malformed("invalid Content-Length")),
            (None, None) => (ResponseBody::UntilClose, false),
        },
    };
    Ok(Some(ResponseHead {
        len,
        status,
        version: if is_http_11 {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        },
        body,
        keep_alive: keep_alive && !upgrade,
        upgrade,
        declared_length: if last_coding.is_none() {
            length.flatten()
        } else {
            None
        },
    }))
}

/// The length one `Content-Length` value states (`5`, `005`, `5, 5`), if it parses and
/// agrees with `seen`.
fn content_length(value: &[u8], seen: Option<u64>) -> Option<u64> {
    if !is_visible(value) {
        return None;
    }
    let mut length = seen;
    for item in value.split(|&b| b == b',') {
        let parsed = from_digits(trim(item))?;
        if length.is_some_and(|length| length != parsed) {
            return None;
        }
        length = Some(parsed);
    }
    length
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_header_size: 8192,
    };

    fn parse(method: Method, bytes: &[u8]) -> Result<Option<ResponseHead>, HeadError> {
        parse_response(bytes, &method, LIMITS, &mut Vec::new())
    }

    fn body(method: Method, bytes: &[u8]) -> ResponseBody {
        parse(method, bytes).unwrap().unwrap().body
    }

    #[test]
    fn bodies_are_framed_by_status_method_and_fields() {
        let get = || Method::GET;
        assert_eq!(
            body(get(), b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"),
            ResponseBody::Length(5)
        );
        assert_eq!(
            body(
                get(),
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            ResponseBody::Chunked
        );
        assert_eq!(
            body(get(), b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            ResponseBody::UntilClose
        );
        assert_eq!(
            body(get(), b"HTTP/1.1 200 OK\r\n\r\n"),
            ResponseBody::UntilClose
        );
        assert_eq!(
            body(
                Method::HEAD,
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
            ),
            ResponseBody::Empty
        );
        for status in ["204 No Content", "304 Not Modified", "100 Continue"] {
            let head = format!("HTTP/1.1 {status}\r\nContent-Length: 5\r\n\r\n");
            assert_eq!(
                body(get(), head.as_bytes()),
                ResponseBody::Empty,
                "{status}"
            );
        }
        let switching = parse(get(), b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        let switching = switching.unwrap().unwrap();
        assert!(switching.upgrade && !switching.keep_alive && !switching.is_interim());
        let tunnel = parse(Method::CONNECT, b"HTTP/1.1 200 OK\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(tunnel.upgrade);
    }

    #[test]
    fn ambiguous_lengths_are_refused() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5,\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
        ] {
            assert!(parse(Method::GET, bad).is_err(), "{bad:?}");
        }
    }
}
