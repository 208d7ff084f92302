//! Request smuggling and malformed requests: a corpus of raw requests sent through the
//! gateway to an upstream that records the exact bytes it receives.
//!
//! For every case the gateway either refuses it (a 4xx, nothing of it reaches the
//! upstream, the connection closed so nothing after it is read) or forwards exactly the
//! requests the client meant, each normalised: CRLF line ends, one framing header (`content-length` in plain digits, or
//! `transfer-encoding: chunked`, never both), the body as the client meant it, no
//! hop-by-hop header, and nothing left over that an upstream could read as another
//! request. A chunked body found malformed only after its head went upstream cannot be
//! refused beforehand without buffering every upload: then the upstream connection is
//! cut inside that message, which never completes, and the client gets a 4xx.
//!
//! The upstream is a raw `TcpListener`, not hyper, which would tidy the bytes up before
//! a test could see them. Each case gets its own gateway and upstream, so pooled
//! upstream connections never mix cases. Timeouts only guard against hangs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::raw::find;
use common::{ConfigText, TestGateway};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a whole exchange may take before the test is declared hung.
const HANG_GUARD: Duration = Duration::from_secs(15);
/// Quiet time after the expected answers, in which a smuggled extra answer (or request
/// reaching the upstream) would show up.
const GRACE: Duration = Duration::from_millis(300);
/// What the recording upstream answers to every message it can delimit.
const UPSTREAM_OK: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 8\r\n\r\nrecorded";
/// Hop-by-hop names (DESIGN.md, "Headers", and h2c's `HTTP2-Settings`): none may reach
/// the upstream. A
/// `transfer-encoding: chunked` the gateway writes itself is checked as framing.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "http2-settings",
];

// ---------------------------------------------------------------------------------------
// The corpus: one table per family the issue names.
// ---------------------------------------------------------------------------------------

struct Case {
    name: &'static str,
    request: Vec<u8>,
    expect: Expect,
}

enum Expect {
    /// One 4xx answer and a close, nothing received by the upstream.
    Refused,
    /// One 4xx answer and no other, nothing received by the upstream, for a request
    /// whose framing is sound (its target is not): the connection may stay open.
    RefusedWellFramed,
    /// These requests, in order, each answered with the upstream's 200.
    Forwarded(Vec<Sent>),
    /// As `Forwarded`, then a close: after a message with both `Content-Length` and
    /// `Transfer-Encoding` nothing more is read from the connection (RFC 9112 §6.1).
    ForwardedThenClosed(Vec<Sent>),
    /// These requests answered with 200, then a 4xx for what followed and a close.
    ForwardedThenRefused(Vec<Sent>),
    /// A body found malformed after its head went upstream: one 4xx and a close for the
    /// client, and no complete message at the upstream, whose connection is cut.
    CutInsideBody,
}

/// A request as the upstream must see it.
#[derive(Debug, PartialEq, Eq)]
struct Sent {
    method: String,
    target: String,
    body: Vec<u8>,
}

fn sent(method: &str, target: &str, body: &[u8]) -> Sent {
    Sent {
        method: method.to_owned(),
        target: target.to_owned(),
        body: body.to_vec(),
    }
}

fn case(name: &'static str, request: impl Into<Vec<u8>>, expect: Expect) -> Case {
    Case {
        name,
        request: request.into(),
        expect,
    }
}

/// `POST /` with `Host`, the given header lines (each ending in CRLF) and `body`.
fn post(headers: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!("POST / HTTP/1.1\r\nHost: gw\r\n{headers}\r\n").into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// `GET target` with `Host` and the given header lines (each ending in CRLF).
fn get(target: &str, headers: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: gw\r\n{headers}\r\n").into_bytes()
}

/// The request a smuggling attempt tries to slip past the gateway.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: gw\r\n\r\n";

/// `data` as one chunk and the last chunk.
fn chunked(data: &[u8]) -> Vec<u8> {
    let mut bytes = format!("{:x}\r\n", data.len()).into_bytes();
    bytes.extend_from_slice(data);
    bytes.extend_from_slice(b"\r\n0\r\n\r\n");
    bytes
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn content_length_and_transfer_encoding() -> Vec<Case> {
    use Expect::*;
    // CL.TE: a front end reading Content-Length would take `0\r\n\r\nG` as the body and
    // leave `G` to prefix the next request; chunked ends the body at `0`.
    let cl_te_body = b"0\r\n\r\nG";
    // TE.CL: a back end reading Content-Length: 4 would take `5c\r\n` and parse the
    // chunk's data as a request of its own.
    let te_cl_inner = "GPOST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 15\r\n\r\nx=1";
    let te_cl_body = chunked(te_cl_inner.as_bytes());
    vec![
        case(
            "CL before TE: chunked wins, the leftover byte is never a request",
            post(
                "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
                cl_te_body,
            ),
            ForwardedThenClosed(vec![sent("POST", "/", b"")]),
        ),
        case(
            "TE before CL: chunked wins",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 6\r\n",
                cl_te_body,
            ),
            ForwardedThenClosed(vec![sent("POST", "/", b"")]),
        ),
        case(
            "CL.TE with a whole smuggled request after the last chunk",
            post(
                "Content-Length: 40\r\nTransfer-Encoding: chunked\r\n",
                &concat(&[b"0\r\n\r\n", SMUGGLED.as_bytes()]),
            ),
            ForwardedThenClosed(vec![sent("POST", "/", b"")]),
        ),
        case(
            "TE.CL: the smuggled request stays inside the chunk",
            post(
                "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
                &te_cl_body,
            ),
            ForwardedThenClosed(vec![sent("POST", "/", te_cl_inner.as_bytes())]),
        ),
        case(
            "CL with TE: identity",
            post(
                "Content-Length: 5\r\nTransfer-Encoding: identity\r\n",
                b"hello",
            ),
            Refused,
        ),
        case(
            "HTTP/1.0 with Transfer-Encoding",
            b"POST / HTTP/1.0\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
            Refused,
        ),
        case(
            "HTTP/1.0 with Transfer-Encoding and Content-Length",
            b"POST / HTTP/1.0\r\nHost: gw\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello"
                .to_vec(),
            Refused,
        ),
    ]
}

fn content_length_variants() -> Vec<Case> {
    use Expect::*;
    let smuggling_body = concat(&[b"hello", SMUGGLED.as_bytes()]);
    vec![
        case(
            "plain Content-Length (control)",
            post("Content-Length: 5\r\n", b"hello"),
            Forwarded(vec![sent("POST", "/", b"hello")]),
        ),
        case(
            "two equal Content-Length lines",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
            Forwarded(vec![sent("POST", "/", b"hello")]),
        ),
        case(
            "two different Content-Length lines",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"),
            Refused,
        ),
        case(
            "Content-Length: 5, 5",
            post("Content-Length: 5, 5\r\n", b"hello"),
            Refused,
        ),
        case(
            "Content-Length: 5, 6",
            post("Content-Length: 5, 6\r\n", b"hello!"),
            Refused,
        ),
        case(
            "Content-Length: +5",
            post("Content-Length: +5\r\n", b"hello"),
            Refused,
        ),
        case(
            "Content-Length: -5",
            post("Content-Length: -5\r\n", b"hello"),
            Refused,
        ),
        case(
            "Content-Length: 0x5",
            post("Content-Length: 0x5\r\n", b"hello"),
            Refused,
        ),
        case(
            "Content-Length with no value",
            post("Content-Length: \r\n", b"hello"),
            Refused,
        ),
        case(
            "Content-Length beyond u64",
            post("Content-Length: 99999999999999999999999\r\n", b"hello"),
            Refused,
        ),
        case(
            "Content-Length with leading zeros is forwarded as plain digits",
            post("Content-Length: 005\r\n", b"hello"),
            Forwarded(vec![sent("POST", "/", b"hello")]),
        ),
        case(
            "Content-Length with tabs around the value",
            post("Content-Length:\t5\t\r\n", b"hello"),
            Forwarded(vec![sent("POST", "/", b"hello")]),
        ),
        case(
            "a request pipelined after a Content-Length body is a request of its own",
            post("Content-Length: 5\r\n", &smuggling_body),
            Forwarded(vec![
                sent("POST", "/", b"hello"),
                sent("GET", "/smuggled", b""),
            ]),
        ),
        case(
            "a request inside a GET's Content-Length body stays body",
            concat(&[
                &get("/", &format!("Content-Length: {}\r\n", SMUGGLED.len())),
                SMUGGLED.as_bytes(),
            ]),
            Forwarded(vec![sent("GET", "/", SMUGGLED.as_bytes())]),
        ),
    ]
}

fn transfer_encoding_obfuscation() -> Vec<Case> {
    use Expect::*;
    let body = chunked(b"hello");
    let te = |line: &str| post(&format!("{line}\r\nContent-Length: 5\r\n"), &body);
    vec![
        case(
            "plain chunked (control)",
            post("Transfer-Encoding: chunked\r\n", &body),
            Forwarded(vec![sent("POST", "/", b"hello")]),
        ),
        case(
            "chunked, chunked",
            te("Transfer-Encoding: chunked, chunked"),
            Refused,
        ),
        case("xchunked", te("Transfer-Encoding: xchunked"), Refused),
        case("chunkedx", te("Transfer-Encoding: chunkedx"), Refused),
        case(
            "gzip, chunked (a coding the gateway would drop)",
            te("Transfer-Encoding: gzip, chunked"),
            Refused,
        ),
        case(
            "identity then chunked on two lines",
            te("Transfer-Encoding: identity\r\nTransfer-Encoding: chunked"),
            Refused,
        ),
        case(
            "chunked then identity on two lines",
            te("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity"),
            Refused,
        ),
        case(
            "chunked on two lines",
            te("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked"),
            Refused,
        ),
        case(
            "quoted \"chunked\"",
            te("Transfer-Encoding: \"chunked\""),
            Refused,
        ),
        case(
            "CHUNKED in capitals is chunked",
            post("Transfer-Encoding: CHUNKED\r\n", &body),
            Forwarded(vec![sent("POST", "/", b"hello")]),
        ),
        case(
            "a tab before chunked is whitespace",
            post("Transfer-Encoding:\tchunked\r\n", &body),
            Forwarded(vec![sent("POST", "/", b"hello")]),
        ),
        case(
            "a tab after chunked is whitespace",
            post("Transfer-Encoding: chunked\t\r\n", &body),
            Forwarded(vec![sent("POST", "/", b"hello")]),
        ),
        case(
            "a space before the colon",
            te("Transfer-Encoding : chunked"),
            Refused,
        ),
        case(
            "a tab before the colon",
            te("Transfer-Encoding\t: chunked"),
            Refused,
        ),
        case(
            "Transfer_Encoding is another header: Content-Length frames",
            post(
                "Transfer_Encoding: chunked\r\nContent-Length: 5\r\n",
                b"hello",
            ),
            Forwarded(vec![sent("POST", "/", b"hello")]),
        ),
    ]
}

fn malformed_chunks() -> Vec<Case> {
    use Expect::*;
    let te = |body: &[u8]| post("Transfer-Encoding: chunked\r\n", body);
    vec![
        case(
            "a chunk extension is dropped, the data kept",
            te(b"5;name=value\r\nhello\r\n0\r\n\r\n"),
            Forwarded(vec![sent("POST", "/", b"hello")]),
        ),
        case(
            "a chunked GET body is forwarded, not dropped",
            concat(&[
                &get("/", "Transfer-Encoding: chunked\r\n"),
                &chunked(b"hello"),
            ]),
            Forwarded(vec![sent("GET", "/", b"hello")]),
        ),
        case(
            "chunk size overflowing 64 bits",
            te(b"fffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            CutInsideBody,
        ),
        case(
            "negative chunk size",
            te(b"-5\r\nhello\r\n0\r\n\r\n"),
            CutInsideBody,
        ),
        case(
            "chunk size 0x5",
            te(b"0x5\r\nhello\r\n0\r\n\r\n"),
            CutInsideBody,
        ),
        case(
            "chunk data longer than its size",
            te(b"5\r\nhelloXX\r\n0\r\n\r\n"),
            CutInsideBody,
        ),
        case(
            "missing final CRLF, a request where the trailers would be",
            te(&concat(&[b"5\r\nhello\r\n0\r\n", SMUGGLED.as_bytes()])),
            CutInsideBody,
        ),
    ]
}

fn line_folding_and_line_ends() -> Vec<Case> {
    use Expect::*;
    vec![
        case(
            "obs-fold on an ordinary header",
            get("/", "X-Folded: a\r\n b\r\n"),
            Refused,
        ),
        case(
            "obs-fold on Transfer-Encoding",
            post(
                "Content-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n",
                b"hello",
            ),
            Refused,
        ),
        case(
            "obs-fold on Content-Length",
            post("Content-Length:\r\n 5\r\n", b"hello"),
            Refused,
        ),
        case(
            "a header line starting with a space",
            b"GET / HTTP/1.1\r\n Host: gw\r\n\r\n".to_vec(),
            Refused,
        ),
        case(
            "bare LF line ends are forwarded as CRLF",
            b"GET /lf HTTP/1.1\nHost: gw\n\n".to_vec(),
            Forwarded(vec![sent("GET", "/lf", b"")]),
        ),
        case(
            "a bare LF cannot hide a Content-Length from the upstream",
            b"POST / HTTP/1.1\r\nHost: gw\r\nX-A: b\nContent-Length: 5\r\n\r\nhello".to_vec(),
            Forwarded(vec![sent("POST", "/", b"hello")]),
        ),
        case(
            "a bare CR ends nothing",
            b"GET / HTTP/1.1\rHost: gw\r\n\r\n".to_vec(),
            Refused,
        ),
        case(
            "a bare CR inside a header value",
            get("/", "X-A: a\rContent-Length: 5\r\n"),
            Refused,
        ),
    ]
}

fn control_characters_and_header_names() -> Vec<Case> {
    use Expect::*;
    vec![
        case("NUL in a header value", get("/", "X-A: a\0b\r\n"), Refused),
        case(
            "NUL in the target",
            b"GET /a\0b HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec(),
            Refused,
        ),
        case("SOH in a header name", get("/", "X-\x01A: b\r\n"), Refused),
        case(
            "DEL in a header value",
            get("/", "X-A: a\x7fb\r\n"),
            Refused,
        ),
        case(
            "vertical tab in a header value",
            get("/", "X-A: a\x0bb\r\n"),
            Refused,
        ),
        case(
            "form feed before Transfer-Encoding's value",
            post(
                "Content-Length: 5\r\nTransfer-Encoding:\x0cchunked\r\n",
                b"hello",
            ),
            Refused,
        ),
        case(
            "a space inside a header name",
            get("/", "X Forwarded For: 1.2.3.4\r\n"),
            Refused,
        ),
        case("an empty header name", get("/", ": value\r\n"), Refused),
        case(
            "a separator in a header name",
            get("/", "X(A): b\r\n"),
            Refused,
        ),
        case(
            "a non-ASCII header name",
            get("/", "X-\u{e9}: b\r\n"),
            Refused,
        ),
        case(
            "a header line without a colon",
            get("/", "Content-Length 5\r\n"),
            Refused,
        ),
    ]
}

fn request_targets_and_methods() -> Vec<Case> {
    use Expect::*;
    let long_line = format!(
        "GET /{} HTTP/1.1\r\nHost: gw\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let long_header = get("/", &format!("X-Long: {}\r\n", "a".repeat(100 * 1024)));
    vec![
        case(
            "absolute-form target is forwarded in origin form",
            b"GET http://evil.example/abs?q=1 HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec(),
            Forwarded(vec![sent("GET", "/abs?q=1", b"")]),
        ),
        case(
            "absolute-form https target",
            b"GET https://evil.example:8443/abs HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec(),
            Forwarded(vec![sent("GET", "/abs", b"")]),
        ),
        case(
            "absolute-form target with user info",
            b"GET http://user:pw@evil.example/ HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec(),
            Refused,
        ),
        case(
            "authority-form target on GET",
            b"GET evil.example:80 HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec(),
            RefusedWellFramed,
        ),
        case(
            "asterisk-form target on GET",
            b"GET * HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec(),
            RefusedWellFramed,
        ),
        case(
            "CONNECT to another host",
            b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n".to_vec(),
            Refused,
        ),
        case(
            "CONNECT with an origin-form target",
            b"CONNECT / HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec(),
            Refused,
        ),
        case(
            "CONNECT with a body",
            b"CONNECT evil.example:443 HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello"
                .to_vec(),
            Refused,
        ),
        case("a 100 KB request line", long_line, Refused),
        case("a 100 KB header", long_header, Refused),
        case(
            "a space inside the target",
            b"GET /a b HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec(),
            Refused,
        ),
        case(
            "an unknown HTTP version",
            b"GET / HTTP/1.2\r\nHost: gw\r\n\r\n".to_vec(),
            Refused,
        ),
    ]
}

fn pipelining() -> Vec<Case> {
    use Expect::*;
    vec![
        case(
            "two GETs on one connection (control)",
            concat(&[&get("/one", ""), &get("/two", "")]),
            Forwarded(vec![sent("GET", "/one", b""), sent("GET", "/two", b"")]),
        ),
        case(
            "a chunked POST then a GET",
            concat(&[
                &post("Transfer-Encoding: chunked\r\n", &chunked(b"hello")),
                &get("/next", ""),
            ]),
            Forwarded(vec![sent("POST", "/", b"hello"), sent("GET", "/next", b"")]),
        ),
        case(
            "a GET, then one with NUL in a header",
            concat(&[&get("/one", ""), &get("/two", "X-A: a\0b\r\n")]),
            ForwardedThenRefused(vec![sent("GET", "/one", b"")]),
        ),
        case(
            "a GET, then a CL.TE desync attempt, then its victim",
            concat(&[
                &get("/one", ""),
                &post(
                    "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
                    b"0\r\n\r\nG",
                ),
                &get("/victim", ""),
            ]),
            // Chunked framing ends the POST; the gateway then closes the connection, as
            // RFC 9112 §6.1 asks after a message with both headers, so `G` and the
            // victim are never read.
            ForwardedThenClosed(vec![sent("GET", "/one", b""), sent("POST", "/", b"")]),
        ),
        case(
            "a GET, then two Content-Lengths with the second request in the body",
            concat(&[
                &get("/one", ""),
                &post(
                    &format!(
                        "Content-Length: 0\r\nContent-Length: {}\r\n",
                        SMUGGLED.len()
                    ),
                    SMUGGLED.as_bytes(),
                ),
            ]),
            ForwardedThenRefused(vec![sent("GET", "/one", b"")]),
        ),
    ]
}

fn hop_by_hop_and_upgrades() -> Vec<Case> {
    use Expect::*;
    vec![
        case(
            "an h2c upgrade is forwarded as a plain request",
            get(
                "/h2c",
                "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\
                 Connection: Upgrade, HTTP2-Settings\r\n",
            ),
            Forwarded(vec![sent("GET", "/h2c", b"")]),
        ),
        case(
            "an h2c upgrade on a POST with a body",
            post(
                "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\
                 Connection: Upgrade, HTTP2-Settings\r\nContent-Length: 5\r\n",
                b"hello",
            ),
            Forwarded(vec![sent("POST", "/", b"hello")]),
        ),
        case(
            "Connection naming a header, with Keep-Alive",
            get(
                "/",
                "Connection: keep-alive, X-Csrf-Token\r\nKeep-Alive: timeout=5\r\n\
                 X-Csrf-Token: dropped\r\n",
            ),
            Forwarded(vec![sent("GET", "/", b"")]),
        ),
        case(
            "TE and Trailer on a chunked body",
            post(
                "TE: trailers\r\nTrailer: X-Checksum\r\nTransfer-Encoding: chunked\r\n",
                &chunked(b"hello"),
            ),
            Forwarded(vec![sent("POST", "/", b"hello")]),
        ),
        case(
            "Proxy-Connection and Proxy-Authorization",
            get(
                "/",
                "Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n",
            ),
            Forwarded(vec![sent("GET", "/", b"")]),
        ),
        case(
            "Upgrade: websocket without Connection: upgrade",
            get("/ws", "Upgrade: websocket\r\n"),
            Forwarded(vec![sent("GET", "/ws", b"")]),
        ),
    ]
}

// ---------------------------------------------------------------------------------------
// The tests: one per family, so a failure names the family.
// ---------------------------------------------------------------------------------------

/// One test per family: `test_name: family`.
macro_rules! family_tests {
    ($($test:ident: $family:ident,)*) => {
        $(
            #[tokio::test]
            async fn $test() {
                run_all($family()).await;
            }
        )*
    };
}

family_tests! {
    content_length_with_transfer_encoding: content_length_and_transfer_encoding,
    duplicate_signed_and_odd_content_lengths: content_length_variants,
    obfuscated_transfer_encodings: transfer_encoding_obfuscation,
    malformed_chunked_bodies: malformed_chunks,
    obs_fold_bare_lf_and_bare_cr: line_folding_and_line_ends,
    control_characters_and_invalid_header_names: control_characters_and_header_names,
    absolute_form_connect_and_oversized_request_lines: request_targets_and_methods,
    pipelined_requests_where_the_second_is_smuggled: pipelining,
    hop_by_hop_headers_and_h2c_upgrades_never_reach_the_upstream: hop_by_hop_and_upgrades,
}

#[test]
fn the_corpus_covers_every_family_with_several_variants() {
    let families = [
        content_length_and_transfer_encoding(),
        content_length_variants(),
        transfer_encoding_obfuscation(),
        malformed_chunks(),
        line_folding_and_line_ends(),
        control_characters_and_header_names(),
        request_targets_and_methods(),
        pipelining(),
        hop_by_hop_and_upgrades(),
    ];
    let total: usize = families.iter().map(Vec::len).sum();
    assert!(families.iter().all(|family| family.len() >= 5));
    assert!(total >= 40, "{total} cases");
    let mut names: Vec<&str> = families.iter().flatten().map(|case| case.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), total, "case names are unique");
}

// The response direction: an upstream's ambiguous framing never reaches the client.

#[tokio::test]
async fn an_upstream_response_with_content_length_and_chunked_reaches_the_client_framed_once() {
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
b\r\nhello world\r\n0\r\n\r\n";
    let answer = through_gateway(answer).await;
    assert!(
        answer.status == 502 || answer.body == b"hello world",
        "{answer:?}"
    );
}

#[tokio::test]
async fn an_upstream_response_with_two_content_lengths_gets_502() {
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
    let answer = through_gateway(answer).await;
    assert_eq!(answer.status, 502, "{answer:?}");
}

#[tokio::test]
async fn an_upstream_response_with_a_repeated_content_length_reaches_the_client_framed_once() {
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello";
    let answer = through_gateway(answer).await;
    assert!(
        answer.status == 502 || answer.body == b"hello",
        "{answer:?}"
    );
}

#[tokio::test]
async fn an_upstream_response_with_leading_zeros_in_content_length_is_framed_in_plain_digits() {
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 005\r\n\r\nhello";
    let answer = through_gateway(answer).await;
    assert_eq!((answer.status, &answer.body[..]), (200, &b"hello"[..]));
}

#[tokio::test]
async fn an_upstream_response_with_a_coding_besides_chunked_gets_502() {
    // The gateway would drop Transfer-Encoding as hop-by-hop, and with it the gzip the
    // client needs to read the body.
    let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
5\r\nhello\r\n0\r\n\r\n";
    let answer = through_gateway(answer).await;
    assert_eq!(answer.status, 502, "{answer:?}");
}

/// One GET through a gateway whose upstream answers `upstream_answer`; the client's
/// answer, checked to be unambiguously framed.
async fn through_gateway(upstream_answer: &'static [u8]) -> Answer {
    let (upstream, _recording) = spawn_recording_upstream(upstream_answer).await;
    let gateway = TestGateway::start(&config(upstream)).await;
    let exchange = exchange(gateway.addr(), &get("/", ""), 1).await;
    gateway.gateway.shutdown().await;
    let mut answers = match exchange.answers {
        Ok(answers) => answers,
        Err(problem) => panic!(
            "the client got an ambiguous answer ({problem}): {:?}",
            String::from_utf8_lossy(&exchange.raw)
        ),
    };
    assert_eq!(
        answers.len(),
        1,
        "{:?}",
        String::from_utf8_lossy(&exchange.raw)
    );
    answers.remove(0)
}

// ---------------------------------------------------------------------------------------
// Running a case.
// ---------------------------------------------------------------------------------------

fn config(upstream: SocketAddr) -> ConfigText {
    ConfigText::new()
        .upstream("up", upstream)
        .with("timeout = \"10s\"")
        .route("all", "/", "up")
}

/// Runs the cases a few at a time and fails with every failing case listed.
async fn run_all(cases: Vec<Case>) {
    let total = cases.len();
    let failures: Vec<String> = futures_util::stream::iter(cases)
        .map(run)
        .buffer_unordered(4)
        .filter_map(|result| async move { result.err() })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

async fn run(case: Case) -> Result<(), String> {
    let (upstream, recording) = spawn_recording_upstream(UPSTREAM_OK).await;
    let gateway = TestGateway::start(&config(upstream)).await;
    let expected_answers = match &case.expect {
        Expect::Refused | Expect::RefusedWellFramed | Expect::CutInsideBody => 1,
        Expect::Forwarded(sent) | Expect::ForwardedThenClosed(sent) => sent.len(),
        Expect::ForwardedThenRefused(sent) => sent.len() + 1,
    };
    let exchange = exchange(gateway.addr(), &case.request, expected_answers).await;
    if matches!(case.expect, Expect::CutInsideBody) {
        recording.wait_until_closed().await;
    }
    let result = check(&case.expect, &exchange, &recording, upstream);
    gateway.gateway.shutdown().await;
    result.map_err(|problem| {
        format!(
            "case {:?}: {problem}\n  client got: {:?}\n  upstream got: {:?}",
            case.name,
            String::from_utf8_lossy(&exchange.raw),
            recording
                .connections()
                .iter()
                .map(|c| String::from_utf8_lossy(&c.bytes).into_owned())
                .collect::<Vec<_>>()
        )
    })
}

fn check(
    expect: &Expect,
    exchange: &Exchange,
    recording: &Recording,
    upstream: SocketAddr,
) -> Result<(), String> {
    let answers = exchange.answers.as_ref()?;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    let is_4xx = |status: u16| (400..500).contains(&status);
    // (requests forwarded, whether a 4xx follows them, whether the connection must close)
    let (forwarded, ends_refused, must_close) = match expect {
        Expect::Refused => (&[][..], true, true),
        Expect::RefusedWellFramed => (&[][..], true, false),
        Expect::Forwarded(sent) => (&sent[..], false, false),
        Expect::ForwardedThenClosed(sent) => (&sent[..], false, true),
        Expect::ForwardedThenRefused(sent) => (&sent[..], true, true),
        Expect::CutInsideBody => {
            if statuses.len() != 1 || !is_4xx(statuses[0]) || !exchange.closed {
                return Err(format!(
                    "expected one 4xx and a close, got {statuses:?} (closed: {})",
                    exchange.closed
                ));
            }
            for connection in recording.connections() {
                let (messages, _incomplete) = strict_requests(&connection.bytes)?;
                if !messages.is_empty() || !connection.closed {
                    return Err(format!(
                        "the upstream got {} complete message(s) (connection closed: {})",
                        messages.len(),
                        connection.closed
                    ));
                }
            }
            return Ok(());
        }
    };

    let expected_statuses = forwarded.len() + usize::from(ends_refused);
    let ok = statuses.len() == expected_statuses
        && statuses[..forwarded.len()].iter().all(|s| *s == 200)
        && answers[..forwarded.len()]
            .iter()
            .all(|a| a.body == b"recorded")
        && statuses[forwarded.len()..].iter().all(|s| is_4xx(*s))
        && (!must_close || exchange.closed);
    if !ok {
        return Err(format!(
            "expected {} answer(s) from the upstream{}, got statuses {statuses:?} (closed: {})",
            forwarded.len(),
            match (ends_refused, must_close) {
                (false, false) => "",
                (false, true) => " then a close",
                (true, false) => " then a 4xx",
                (true, true) => " then a 4xx and a close",
            },
            exchange.closed
        ));
    }

    let mut received = Vec::new();
    for connection in recording.connections() {
        let (messages, incomplete) = strict_requests(&connection.bytes)?;
        if incomplete > 0 {
            return Err(format!(
                "{incomplete} bytes at the upstream are not a complete message"
            ));
        }
        received.extend(messages);
    }
    let host = upstream.to_string();
    for message in &received {
        let hosts: Vec<&str> = message.header_values("host").collect();
        if hosts != [host.as_str()] {
            return Err(format!("Host at the upstream is {hosts:?}, not [{host:?}]"));
        }
    }
    let received: Vec<Sent> = received.into_iter().map(|m| m.sent).collect();
    if received != forwarded {
        return Err(format!(
            "the upstream got {received:?}, expected {forwarded:?}"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The client side: raw bytes in, answers out.
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Answer {
    status: u16,
    body: Vec<u8>,
}

struct Exchange {
    /// The answers, or why the bytes the client got were not clearly framed answers.
    answers: Result<Vec<Answer>, String>,
    /// Whether the gateway closed the connection.
    closed: bool,
    raw: Vec<u8>,
}

/// Writes `request` to the gateway and reads answers until it closes the connection,
/// or `expected` answers have come and nothing more follows within [`GRACE`].
async fn exchange(gateway: SocketAddr, request: &[u8], expected: usize) -> Exchange {
    let stream = TcpStream::connect(gateway)
        .await
        .expect("connect to gateway");
    let (mut reader, mut writer) = stream.into_split();
    let request = request.to_vec();
    // Written from a task of its own: the gateway may answer (and close) before it has
    // read everything, as with a 100 KB request line. The write half is kept open (not
    // shut down) until the end: a half-close would be a case of its own.
    let write = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        writer
    });
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    let mut raw = Vec::new();
    let mut closed = false;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let answered =
            matches!(parse_answers(&raw), Ok((ref answers, 0)) if answers.len() >= expected);
        let until = if answered {
            tokio::time::Instant::now() + GRACE
        } else {
            deadline
        };
        match tokio::time::timeout_at(until, reader.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => raw.extend_from_slice(&chunk[..n]),
            Err(_) if answered => break,
            Err(_) => panic!(
                "hang guard: no complete answer within {HANG_GUARD:?}; got {:?}",
                String::from_utf8_lossy(&raw)
            ),
        }
    }
    write.abort();
    let answers = parse_answers(&raw).and_then(|(answers, rest)| match rest {
        0 => Ok(answers),
        rest => Err(format!("{rest} bytes after the last answer")),
    });
    Exchange {
        answers,
        closed,
        raw,
    }
}

/// The complete answers in `bytes`, and how many bytes follow them.
fn parse_answers(mut bytes: &[u8]) -> Result<(Vec<Answer>, usize), String> {
    let mut answers = Vec::new();
    loop {
        if bytes.is_empty() {
            return Ok((answers, 0));
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(bytes) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok((answers, bytes.len())),
            Err(error) => return Err(format!("unparseable answer: {error}")),
        };
        let status = response.code.unwrap_or_default();
        let framing = framing(response.headers)?;
        let head = &bytes[..head_len];
        check_line_ends(head)?;
        let Some((body, len)) = read_body(&framing, &bytes[head_len..])? else {
            return Ok((answers, bytes.len()));
        };
        answers.push(Answer { status, body });
        bytes = &bytes[head_len + len..];
    }
}

// ---------------------------------------------------------------------------------------
// The recording upstream.
// ---------------------------------------------------------------------------------------

/// What the recording upstream received, one entry per accepted connection.
#[derive(Clone, Default)]
struct Recording(Arc<Mutex<Vec<Received>>>);

#[derive(Clone, Default)]
struct Received {
    bytes: Vec<u8>,
    closed: bool,
}

impl Recording {
    fn connections(&self) -> Vec<Received> {
        self.0.lock().expect("recording lock").clone()
    }

    /// Waits until every connection the upstream accepted is closed.
    async fn wait_until_closed(&self) {
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        while self.connections().iter().any(|c| !c.closed) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "hang guard: the upstream connection stayed open"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An upstream on a raw socket that keeps every byte it receives and answers each
/// message it can delimit with `answer`. It delimits leniently (Content-Length first,
/// then chunked), like a back end that a smuggled request would fool; the tests judge
/// the recorded bytes strictly.
async fn spawn_recording_upstream(answer: &'static [u8]) -> (SocketAddr, Recording) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream address");
    let recording = Recording::default();
    let connections = recording.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let index = {
                let mut all = connections.0.lock().expect("recording lock");
                all.push(Received::default());
                all.len() - 1
            };
            tokio::spawn(record(stream, connections.clone(), index, answer));
        }
    });
    (addr, recording)
}

async fn record(mut stream: TcpStream, recording: Recording, index: usize, answer: &[u8]) {
    let mut received = Vec::new();
    let mut answered = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    'connection: loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        received.extend_from_slice(&chunk[..n]);
        recording.0.lock().expect("recording lock")[index]
            .bytes
            .extend_from_slice(&chunk[..n]);
        while let Some(len) = lenient_message_len(&received[answered..]) {
            answered += len;
            if stream.write_all(answer).await.is_err() {
                break 'connection;
            }
        }
    }
    recording.0.lock().expect("recording lock")[index].closed = true;
}

/// The length of the first message in `bytes`, if it is complete, read the way a
/// lenient back end would.
fn lenient_message_len(bytes: &[u8]) -> Option<usize> {
    let head_end = find(bytes, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
    let value = |name: &str| {
        head.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let body = &bytes[head_end..];
    if let Some(length) = value("content-length").and_then(|v| v.parse::<usize>().ok()) {
        return (body.len() >= length).then_some(head_end + length);
    }
    if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut at = 0;
        loop {
            let line_end = at + find(&body[at..], b"\r\n")?;
            let size = String::from_utf8_lossy(&body[at..line_end]);
            let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                return (body.len() >= at + 2).then_some(head_end + at + 2);
            }
            at += size + 2;
            if body.len() < at {
                return None;
            }
        }
    }
    Some(head_end)
}

// ---------------------------------------------------------------------------------------
// Strict reading of what the upstream (or the client) got.
// ---------------------------------------------------------------------------------------

/// A request the upstream received, with its headers.
struct Message {
    sent: Sent,
    headers: Vec<(String, Vec<u8>)>,
}

impl Message {
    fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| std::str::from_utf8(v).unwrap_or("<not UTF-8>"))
    }
}

/// The requests in what an upstream connection received, judged strictly, and the
/// number of bytes of an incomplete message at the end. Any ambiguity is an error:
/// bare LF or CR, both framing headers, a repeated or non-canonical `Content-Length`, a
/// `Transfer-Encoding` besides one `chunked`, a hop-by-hop header, chunk extensions.
fn strict_requests(mut bytes: &[u8]) -> Result<(Vec<Message>, usize), String> {
    let mut messages = Vec::new();
    while !bytes.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        let head_len = match request.parse(bytes) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok((messages, bytes.len())),
            Err(error) => return Err(format!("the upstream got an unparseable head: {error}")),
        };
        check_line_ends(&bytes[..head_len])?;
        if request.version != Some(1) {
            return Err("the upstream got a request that is not HTTP/1.1".to_owned());
        }
        let headers: Vec<(String, Vec<u8>)> = request
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect();
        if let Some((name, _)) = headers
            .iter()
            .find(|(name, _)| HOP_BY_HOP.contains(&name.as_str()))
        {
            return Err(format!(
                "the hop-by-hop header {name:?} reached the upstream"
            ));
        }
        let framing = framing(request.headers)?;
        let method = request.method.unwrap_or_default().to_owned();
        let target = request.path.unwrap_or_default().to_owned();
        let Some((body, len)) = read_body(&framing, &bytes[head_len..])? else {
            return Ok((messages, bytes.len()));
        };
        messages.push(Message {
            sent: Sent {
                method,
                target,
                body,
            },
            headers,
        });
        bytes = &bytes[head_len + len..];
    }
    Ok((messages, 0))
}

enum Framing {
    Length(usize),
    Chunked,
}

/// The one framing a message head declares; an error unless it is unambiguous.
fn framing(headers: &[httparse::Header<'_>]) -> Result<Framing, String> {
    let values = |name: &str| -> Vec<&[u8]> {
        headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .collect()
    };
    let lengths = values("content-length");
    let codings = values("transfer-encoding");
    match (&lengths[..], &codings[..]) {
        ([], []) => Ok(Framing::Length(0)),
        ([], [b"chunked"]) => Ok(Framing::Chunked),
        ([length], []) => {
            let canonical = !length.is_empty()
                && length.iter().all(u8::is_ascii_digit)
                && (length == b"0" || length[0] != b'0');
            let parsed = std::str::from_utf8(length)
                .ok()
                .and_then(|text| text.parse().ok());
            match parsed {
                Some(length) if canonical => Ok(Framing::Length(length)),
                _ => Err(format!(
                    "content-length {:?} is not plain digits",
                    String::from_utf8_lossy(length)
                )),
            }
        }
        _ => Err(format!(
            "ambiguous framing: content-length {lengths:?}, transfer-encoding {codings:?}"
        )),
    }
}

/// The body and the bytes it took on the wire, or `None` while it is incomplete.
fn read_body(framing: &Framing, bytes: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    match *framing {
        Framing::Length(length) => {
            Ok((bytes.len() >= length).then(|| (bytes[..length].to_vec(), length)))
        }
        Framing::Chunked => strict_chunked(bytes),
    }
}

/// A chunked body as a careful sender writes it: hex sizes without extensions, CRLF
/// after each, no trailers.
fn strict_chunked(bytes: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_len) = find(&bytes[at..], b"\r\n") else {
            return Ok(None);
        };
        let line = &bytes[at..at + line_len];
        if line.is_empty() || !line.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!(
                "chunk size line {:?} is not plain hex",
                String::from_utf8_lossy(line)
            ));
        }
        let size = std::str::from_utf8(line)
            .ok()
            .and_then(|hex| usize::from_str_radix(hex, 16).ok())
            .ok_or("chunk size overflows")?;
        at += line_len + 2;
        if size == 0 {
            return match bytes.get(at..at + 2) {
                None => Ok(None),
                Some(b"\r\n") => Ok(Some((body, at + 2))),
                Some(_) => Err("trailers or garbage after the last chunk".to_owned()),
            };
        }
        let Some(data) = bytes.get(at..at + size + 2) else {
            return Ok(None);
        };
        if !data.ends_with(b"\r\n") {
            return Err("chunk data is not followed by CRLF".to_owned());
        }
        body.extend_from_slice(&data[..size]);
        at += size + 2;
    }
}

/// Every LF ends a CRLF and every CR starts one.
fn check_line_ends(head: &[u8]) -> Result<(), String> {
    for (i, byte) in head.iter().enumerate() {
        let ok = match byte {
            b'\n' => i > 0 && head[i - 1] == b'\r',
            b'\r' => head.get(i + 1) == Some(&b'\n'),
            _ => true,
        };
        if !ok {
            return Err(format!("a bare CR or LF at byte {i} of a head"));
        }
    }
    Ok(())
}
