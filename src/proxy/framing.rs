//! Message framing at the edge: the requests refused before anything goes upstream, and
//! the framing of what is forwarded, derived from how hyper delimited the message rather
//! than copied from the sender's headers, so the next hop reads exactly one message
//! where the gateway read one (tests/smuggling.rs is the corpus).
//!
//! hyper refuses most ambiguities itself: differing `Content-Length`s, `Content-Length:
//! +5` or `5, 5`, a `Transfer-Encoding` not ending in `chunked` or sent over HTTP/1.0,
//! obs-fold, bytes and names the grammar forbids. When `Content-Length` and
//! `Transfer-Encoding: chunked` come together it reads the body as chunked, drops the
//! length and closes the connection after the response (RFC 9112 §6.1). What is left is
//! here.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request};
use hyper::body::Body;

/// Why `request` is refused with a 400 before anything is sent upstream, if it is.
pub fn refusal<B>(request: &Request<B>) -> Option<&'static str> {
    if request.method() == Method::CONNECT {
        return Some("CONNECT is not supported: the gateway is a reverse proxy, not a tunnel");
    }
    if request
        .uri()
        .authority()
        .is_some_and(|authority| authority.as_str().contains('@'))
    {
        // RFC 9110 §4.2.4: user info in an http(s) target is to be treated as an error;
        // it would otherwise reach the upstream in X-Forwarded-Host.
        return Some("the request target carries user info");
    }
    let mut codings = request.headers().get_all(header::TRANSFER_ENCODING).iter();
    if let Some(first) = codings.next() {
        // hyper accepts any list that ends in `chunked`, but removes the chunked coding
        // only once; the gateway then drops the header as hop-by-hop, so `gzip, chunked`
        // or `chunked, chunked` would reach the upstream with a body it cannot tell is
        // still encoded.
        let only_chunked = first
            .to_str()
            .is_ok_and(|value| value.trim().eq_ignore_ascii_case("chunked"));
        if !only_chunked || codings.next().is_some() {
            return Some("Transfer-Encoding must be exactly `chunked`");
        }
    }
    None
}

/// Sets the framing headers of the request sent upstream (`out`, already without the
/// client's `Transfer-Encoding`): `transfer-encoding: chunked` for a chunked body (even
/// on a GET, where hyper would otherwise drop the body), else the body's length as plain
/// digits when the client sent one (`005` becomes `5`), else nothing.
pub fn frame_upstream_request<B: Body>(client: &HeaderMap, body: &B, out: &mut HeaderMap) {
    // One pass over the client's names rather than a lookup (a hash of the name) for each.
    let (mut chunked, mut length) = (false, false);
    for name in client.keys() {
        chunked |= name == header::TRANSFER_ENCODING;
        length |= name == header::CONTENT_LENGTH;
    }
    out.remove(header::CONTENT_LENGTH);
    if chunked {
        out.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    } else if length && let Some(length) = body.size_hint().exact() {
        out.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
}

/// Why an upstream response cannot be passed on (a 502), if it cannot: a transfer
/// coding besides `chunked` would be lost with the hop-by-hop `Transfer-Encoding`.
pub fn upstream_response_problem(headers: &HeaderMap) -> Option<&'static str> {
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    let first = codings.next()?;
    let only_chunked = first
        .to_str()
        .is_ok_and(|value| value.trim().eq_ignore_ascii_case("chunked"));
    (!only_chunked || codings.next().is_some())
        .then_some("the upstream answered with a transfer coding other than chunked")
}

/// Leaves an upstream response with at most one `Content-Length`, in plain digits, and
/// none beside `Transfer-Encoding` (which hyper read the body by, and which is dropped as
/// hop-by-hop after this: hyper then frames the body for the client itself).
pub fn frame_response(headers: &mut HeaderMap) {
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = lengths.next() else {
        return;
    };
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    // The usual case, one length in canonical digits, needs no rewriting.
    if !chunked && lengths.next().is_none() && is_canonical_length(first.as_bytes()) {
        return;
    }
    let length = if chunked {
        None
    } else {
        single_length(headers)
    };
    headers.remove(header::CONTENT_LENGTH);
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
}

/// Digits without leading zeros, short enough for a `u64`.
fn is_canonical_length(value: &[u8]) -> bool {
    (1..=19).contains(&value.len())
        && value.iter().all(u8::is_ascii_digit)
        && (value[0] != b'0' || value.len() == 1)
}

/// The one length that every `Content-Length` value states (`5`, `005`, `5, 5`), if
/// they agree (hyper refused the response otherwise).
fn single_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.to_str().ok()?.split(',') {
            let item = item.trim();
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let parsed: u64 = item.parse().ok()?;
            if length.is_some_and(|seen| seen != parsed) {
                return None;
            }
            length = Some(parsed);
        }
    }
    length
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_with(headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::post("/");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn only_a_single_chunked_transfer_encoding_passes() {
        for ok in ["chunked", "CHUNKED", " chunked\t"] {
            assert_eq!(refusal(&request_with(&[("transfer-encoding", ok)])), None);
        }
        for bad in [
            &[("transfer-encoding", "chunked, chunked")][..],
            &[("transfer-encoding", "gzip, chunked")],
            &[
                ("transfer-encoding", "identity"),
                ("transfer-encoding", "chunked"),
            ],
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
        ] {
            assert!(refusal(&request_with(bad)).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn connect_and_user_info_are_refused() {
        let connect = Request::connect("example.com:443").body(()).unwrap();
        assert!(refusal(&connect).is_some());
        let user_info = Request::get("http://user:pw@example.com/")
            .body(())
            .unwrap();
        assert!(refusal(&user_info).is_some());
        let absolute = Request::get("http://example.com/").body(()).unwrap();
        assert_eq!(refusal(&absolute), None);
    }

    #[test]
    fn response_lengths_are_rewritten_in_plain_digits_or_dropped_beside_chunked() {
        let mut headers = HeaderMap::new();
        headers.append(header::CONTENT_LENGTH, HeaderValue::from_static("005"));
        headers.append(header::CONTENT_LENGTH, HeaderValue::from_static("5, 5"));
        frame_response(&mut headers);
        let lengths: Vec<_> = headers.get_all(header::CONTENT_LENGTH).iter().collect();
        assert_eq!(lengths, ["5"]);

        for (sent, kept) in [("0012", "12"), ("12", "12"), ("0", "0")] {
            let mut single = HeaderMap::new();
            single.insert(header::CONTENT_LENGTH, HeaderValue::from_static(sent));
            frame_response(&mut single);
            assert_eq!(single[header::CONTENT_LENGTH], kept, "{sent}");
        }

        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        frame_response(&mut headers);
        assert!(!headers.contains_key(header::CONTENT_LENGTH));
        assert_eq!(upstream_response_problem(&headers), None);

        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("gzip, chunked"),
        );
        assert!(upstream_response_problem(&headers).is_some());
    }
}
