//! Message framing at the edge: the requests refused before anything goes upstream, and
//! the framing of what is forwarded, derived from how the message was delimited rather
//! than copied from the sender's headers, so the next hop reads exactly one message
//! where the gateway read one (tests/smuggling.rs is the corpus).
//!
//! The HTTP/1.1 engine (and hyper for HTTP/2) refuses most ambiguities itself:
//! differing `Content-Length`s, `Content-Length: +5` or `5, 5`, a `Transfer-Encoding`
//! not ending in `chunked` or sent over HTTP/1.0, obs-fold, bytes and names the grammar
//! forbids. When `Content-Length` and `Transfer-Encoding: chunked` come together it
//! reads the body as chunked, drops the length and closes the connection after the
//! response (RFC 9112 §6.1). A response's framing fields are never passed on: the
//! engine writes the length it read the body by. What is left is here.

use http::header::{self, HeaderMap};

use crate::http1::HeaderLines;
use crate::http1::client::Declared;
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

/// How the request sent upstream declares its body: `chunked` for a chunked body
/// (even on a GET, where it would otherwise not be sent), else the body's length when
/// the client sent one (written in plain digits: `005` becomes `5`), else nothing (the
/// engine's client then frames the body by what it knows of it).
pub fn frame_upstream_request<B: Body>(client: &HeaderMap, body: &B) -> Declared {
    // One pass over the client's names rather than a lookup (a hash of the name) for each.
    let (mut chunked, mut length) = (false, false);
    for name in client.keys() {
        chunked |= name == header::TRANSFER_ENCODING;
        length |= name == header::CONTENT_LENGTH;
    }
    match body.size_hint().exact() {
        _ if chunked => Declared::Chunked,
        Some(exact) if length => Declared::Length(exact),
        _ => Declared::Nothing,
    }
}

/// Why an upstream response cannot be passed on (a 502), if it cannot: a transfer
/// coding besides `chunked` would be lost with the hop-by-hop `Transfer-Encoding`.
/// (Its `Content-Length` needs no check here: the engine read the body by it, and the
/// client is sent the length the engine parsed, never the upstream's text.)
pub fn upstream_response_problem(lines: &HeaderLines) -> Option<&'static str> {
    let mut codings = lines.iter().filter(|(name, _)| {
        name.len() == "transfer-encoding".len() && name.eq_ignore_ascii_case(b"transfer-encoding")
    });
    let (_, first) = codings.next()?;
    let only_chunked =
        std::str::from_utf8(first).is_ok_and(|value| value.trim().eq_ignore_ascii_case("chunked"));
    (!only_chunked || codings.next().is_some())
        .then_some("the upstream answered with a transfer coding other than chunked")
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

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
    fn an_upstream_coding_other_than_chunked_is_a_problem() {
        for fine in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked \r\n\r\n",
        ] {
            let lines = HeaderLines::from_response_head(Bytes::from_static(fine)).unwrap();
            assert_eq!(upstream_response_problem(&lines), None);
        }
        for bad in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
        ] {
            let lines = HeaderLines::from_response_head(Bytes::from_static(bad)).unwrap();
            assert!(upstream_response_problem(&lines).is_some());
        }
    }
}
