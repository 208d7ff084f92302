//! The engine's HTTP/1.1 parsers and its serving path (`fluxlit::http1`: `scan` and
//! `serve` on the server side, `scan_response` and `client::Connection` on the client
//! side) against hyper's server and client, the reference they replace: the same bytes
//! through each must give the same requests (method, target, body, in order: the same
//! message boundaries) and the same refusal (none, 400, 414 or 431), or the same
//! response (status and body). The streams are built from the pieces request smuggling is made of
//! (duplicate and malformed lengths, obfuscated codings, folded lines, bare CR and LF,
//! control bytes, malformed chunks, pipelining, heads around `max_header_size`), then
//! mutated byte by byte.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use common::h1_reference::{
    Outcome, ResponseOutcome, agree, block_on, engine, engine_client_response, engine_response,
    engine_server, hyper, hyper_response,
};
use http::Method;
use proptest::prelude::*;

/// The listener's default `max_header_size` is larger; 8 KiB is the smallest the config
/// accepts, and heads around it are cheap to make.
const MAX_HEADER_SIZE: usize = 8192;

/// The engine's parser, the engine's server and hyper's server on the same bytes.
fn all(bytes: &[u8], max_header_size: usize) -> [(&'static str, Outcome); 3] {
    [
        ("scan", engine(bytes, max_header_size)),
        ("serve", block_on(engine_server(bytes, max_header_size))),
        ("hyper", block_on(hyper(bytes, max_header_size))),
    ]
}

/// Where the engine's parser or server and hyper do not agree, which and how.
fn disagreement(bytes: &[u8], max_header_size: usize) -> Option<String> {
    let [scanned, served, (_, reference)] = all(bytes, max_header_size);
    [scanned, served]
        .into_iter()
        .find(|(_, ours)| !agree(bytes, ours, &reference))
        .map(|(which, ours)| {
            format!(
                "engine's {which} and hyper differ on {:?}\n  {which}: {ours:?}\n  hyper: {reference:?}",
                shown(bytes)
            )
        })
}

#[track_caller]
fn assert_same(bytes: &[u8], max_header_size: usize) {
    if let Some(difference) = disagreement(bytes, max_header_size) {
        panic!("{difference}");
    }
}

/// `default` cases, or `PROPTEST_CASES` for a longer run by hand.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}

/// The bytes for a failure message, long runs of padding cut short.
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    let mut run = 0;
    for c in text.chars() {
        run = if c == 'a' { run + 1 } else { 0 };
        if run <= 16 {
            out.push(c);
        } else if run == 17 {
            out.push_str("[...]");
        }
    }
    out
}

fn padded_head(size: usize) -> Vec<u8> {
    let fixed = b"GET /p HTTP/1.1\r\nX-Pad: \r\n\r\n".len();
    let mut bytes = b"GET /p HTTP/1.1\r\nX-Pad: ".to_vec();
    bytes.extend(std::iter::repeat_n(b'a', size - fixed));
    bytes.extend_from_slice(b"\r\n\r\n");
    bytes
}

#[test]
fn the_smuggling_families_are_read_alike() {
    let cases: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nContent-Length:\t005\t\r\n\r\nhelloGET /next HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding:\x0cchunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\nGET /n HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX T: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\nX-U: 2\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\n Host: gw\r\n\r\n",
        b"GET /lf HTTP/1.1\nHost: gw\n\n",
        b"GET / HTTP/1.1\rHost: gw\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: a\rContent-Length: 5\r\n\r\nhello",
        b"GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n",
        b"GET /a\0b HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-\x01A: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: \xe9t\xe9\r\n\r\n",
        b"GET / HTTP/1.1\r\nX Forwarded For: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\n: v\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length 5\r\n\r\n",
        b"GET http://evil.example/abs?q=1 HTTP/1.1\r\n\r\n",
        b"GET http://user:pw@evil.example/ HTTP/1.1\r\n\r\n",
        b"GET evil.example:80 HTTP/1.1\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\n\r\n",
        b"CONNECT evil.example:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
        b"GET /a b HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.2\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET /two HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\nGET /two HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /two HTTP/1.1\r\n\r\n",
        b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"GET /one HTTP/1.1\r\n\r\nGET /two HTTP/1.1\r\nX-A: a\0b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: gw\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nhello",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"",
    ];
    for case in cases {
        assert_same(case, MAX_HEADER_SIZE);
    }
}

#[test]
fn max_header_size_is_exact_in_both() {
    for size in [MAX_HEADER_SIZE - 1, MAX_HEADER_SIZE, MAX_HEADER_SIZE + 1] {
        let head = padded_head(size);
        assert_same(&head, MAX_HEADER_SIZE);
        let outcome = engine(&head, MAX_HEADER_SIZE);
        let refused = (size > MAX_HEADER_SIZE).then_some(431);
        assert_eq!(outcome.refused, refused, "{size}");
    }
    // The same at a larger limit, head cut short, and after a first request.
    let mut pipelined = b"GET /one HTTP/1.1\r\n\r\n".to_vec();
    pipelined.extend(padded_head(20_001));
    assert_same(&pipelined, 20_000);
    assert_same(&padded_head(20_001)[..20_000], 20_000);
    assert_same(&padded_head(20_001)[..19_999], 20_000);
}

#[test]
fn a_malformed_byte_hyper_never_parsed_is_400_here_and_431_there() {
    // A second head over the limit, folded within it and without an empty line within
    // it: the engine finds the fold in its window; hyper reads on past the fold without
    // parsing, no empty line having come, until its buffer is full. `agree` allows it.
    let mut bytes = padded_head(4099);
    let second = padded_head(8193);
    let fold = 5637;
    bytes.extend_from_slice(&second[..fold]);
    bytes.extend_from_slice(b"\r\nX-Folded: a\r\n b");
    bytes.extend_from_slice(&second[fold..second.len() - 4 - 17]);
    bytes.extend_from_slice(b"\r\n\r\n");
    let [(_, scanned), (_, served), (_, reference)] = all(&bytes, MAX_HEADER_SIZE);
    assert_eq!(scanned.refused, Some(400));
    assert_eq!(served.refused, Some(400));
    assert_eq!(reference.refused, Some(431));
    assert_same(&bytes, MAX_HEADER_SIZE);
}

// ---------------------------------------------------------------------------------------
// Generated streams
// ---------------------------------------------------------------------------------------

fn request_line() -> impl Strategy<Value = String> {
    let method = prop::sample::select(vec![
        "GET", "POST", "PUT", "HEAD", "DELETE", "CONNECT", "OPTIONS", "get", "G@T", "",
    ]);
    let target = prop::sample::select(vec![
        "/",
        "/a?b=c",
        "*",
        "http://h/x",
        "http://u:p@h/",
        "h:80",
        "/a b",
        "/%zz",
        "//x",
        "/\u{e9}",
        "/a#f",
    ]);
    let version = prop::sample::select(vec![
        "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "http/1.1",
    ]);
    let space = prop::sample::select(vec![" ", " ", " ", "  ", "\t"]);
    (method, space.clone(), target, space, version)
        .prop_map(|(m, s1, t, s2, v)| format!("{m}{s1}{t}{s2}{v}"))
}

fn field() -> impl Strategy<Value = Vec<u8>> {
    let lengths = prop::sample::select(vec![
        "0",
        "5",
        "005",
        " 5",
        "5, 5",
        "+5",
        "-5",
        "",
        "x",
        "99999999999999999999999",
        "18446744073709551614",
        "3",
    ]);
    let codings = prop::sample::select(vec![
        "chunked",
        "CHUNKED",
        "gzip, chunked",
        "chunked, gzip",
        "identity",
        "chunked\t",
        "\tchunked",
        "chunked, chunked",
        "",
    ]);
    let fixed = prop::sample::select(vec![
        &b"Host: gw"[..],
        b"Connection: close",
        b"Connection: keep-alive",
        b"Connection: Upgrade, close",
        b"Expect: 100-continue",
        b"Upgrade: websocket",
        b"X-Folded: a\r\n b",
        b"X-A: a\0b",
        b"X-A: a\x7fb",
        b"X-A: \xe9",
        b"Bad Name: x",
        b": v",
        b"X-A: a\rb",
        b"Transfer_Encoding: chunked",
        b"TE: trailers",
    ]);
    prop_oneof![
        lengths.prop_map(|v| format!("Content-Length: {v}").into_bytes()),
        codings.prop_map(|v| format!("Transfer-Encoding: {v}").into_bytes()),
        fixed.prop_map(<[u8]>::to_vec),
        (0usize..9000).prop_map(|n| format!("X-Pad: {}", "a".repeat(n)).into_bytes()),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![
        &b""[..],
        b"hello",
        b"5\r\nhello\r\n0\r\n\r\n",
        b"5;ext=1\r\nhello\r\n0\r\n\r\n",
        b"0\r\n\r\n",
        b"0\r\nX-T: 1\r\n\r\n",
        b"5\r\nhelloXX\r\n0\r\n\r\n",
        b"fffffffffffffffff\r\n",
        b"5 \r\nhello\r\n0\r\n\r\n",
        b"3\r\nabc\r\n",
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    ])
    .prop_map(<[u8]>::to_vec)
}

fn message() -> impl Strategy<Value = Vec<u8>> {
    let line_end = prop::sample::select(vec!["\r\n", "\r\n", "\r\n", "\n"]);
    (
        request_line(),
        line_end.clone(),
        prop::collection::vec((field(), line_end.clone()), 0..5),
        line_end,
        body(),
    )
        .prop_map(|(line, end, fields, last, body)| {
            let mut bytes = format!("{line}{end}").into_bytes();
            for (field, end) in fields {
                bytes.extend(field);
                bytes.extend(end.as_bytes());
            }
            bytes.extend(last.as_bytes());
            bytes.extend(body);
            bytes
        })
}

/// Up to three messages, then a few bytes changed, inserted or removed.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let edit = (any::<prop::sample::Index>(), any::<u8>(), 0u8..3);
    (
        prop::collection::vec(message(), 1..4),
        prop::collection::vec(edit, 0..3),
    )
        .prop_map(|(messages, edits)| {
            let mut bytes = messages.concat();
            for (at, byte, kind) in edits {
                let at = at.index(bytes.len() + 1);
                match kind {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

    #[test]
    fn generated_streams_are_read_alike(bytes in stream()) {
        let difference = disagreement(&bytes, MAX_HEADER_SIZE);
        prop_assert!(difference.is_none(), "{}", difference.unwrap_or_default());
    }

    #[test]
    fn arbitrary_bytes_are_read_alike(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let difference = disagreement(&bytes, MAX_HEADER_SIZE);
        prop_assert!(difference.is_none(), "{}", difference.unwrap_or_default());
    }
}

// ---------------------------------------------------------------------------------------
// Responses: the engine's client side against hyper's client
// ---------------------------------------------------------------------------------------

/// Where the engine's response parser or client and hyper's client do not agree on
/// `bytes` answering `method`, which and how.
fn response_disagreement(bytes: &[u8], method: &Method) -> Option<String> {
    let reference: ResponseOutcome = block_on(hyper_response(bytes, method, MAX_HEADER_SIZE));
    [
        ("scan_response", engine_response(bytes, method, MAX_HEADER_SIZE)),
        (
            "client",
            block_on(engine_client_response(bytes, method, MAX_HEADER_SIZE)),
        ),
    ]
    .into_iter()
    .find(|(_, ours)| *ours != reference)
    .map(|(which, ours)| {
        format!(
            "engine's {which} and hyper differ on {method} then {:?}\n  {which}: {ours:?}\n  hyper: {reference:?}",
            shown(bytes)
        )
    })
}

#[track_caller]
fn assert_same_response(bytes: &[u8], method: &Method) {
    if let Some(difference) = response_disagreement(bytes, method) {
        panic!("{difference}");
    }
}

#[test]
fn responses_are_read_alike() {
    let cases: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA",
        b"HTTP/1.1 200 OK\r\nContent-Length: 005\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nraw until close",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\nuntil close",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\nuntil close",
        b"HTTP/1.0 200 OK\r\n\r\nuntil close",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nframes",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\0b\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nContent-Le",
    ];
    for method in [Method::GET, Method::HEAD, Method::POST, Method::CONNECT] {
        for case in cases {
            assert_same_response(case, &method);
        }
    }
    // Not agreement by both failing: what each case is known to give.
    /// Bytes, the request's method, and the status and body hyper takes from them.
    type Known<'a> = (&'a [u8], &'a Method, Option<(u16, Option<&'a [u8]>)>);
    let known: &[Known<'_>] = &[
        (cases[1], &Method::GET, Some((200, Some(b"hello")))),
        (cases[1], &Method::HEAD, Some((200, Some(b"")))),
        (cases[8], &Method::GET, Some((200, Some(b"hello world")))),
        (
            cases[10],
            &Method::GET,
            Some((200, Some(b"raw until close"))),
        ),
        (cases[5], &Method::GET, None),
        (cases[17], &Method::POST, Some((200, Some(b"ok")))),
        (cases[20], &Method::GET, Some((200, None))),
    ];
    for (bytes, method, expected) in known {
        let expected = expected.map(|(status, body)| (status, body.map(<[u8]>::to_vec)));
        let reference = block_on(hyper_response(bytes, method, MAX_HEADER_SIZE));
        assert_eq!(reference, expected, "{method} then {:?}", shown(bytes));
    }
}

fn response_stream() -> impl Strategy<Value = Vec<u8>> {
    let status = prop::sample::select(vec![
        "HTTP/1.1 200 OK",
        "HTTP/1.1 200 OK",
        "HTTP/1.0 200 OK",
        "HTTP/1.1 204 No Content",
        "HTTP/1.1 304 Not Modified",
        "HTTP/1.1 101 Switching Protocols",
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK",
        "HTTP/1.1 404 Not Found",
        "HTTP/1.1 200",
        "HTTP/1.1 099 Low",
        "HTTP/1.2 200 OK",
    ]);
    let line_end = prop::sample::select(vec!["\r\n", "\r\n", "\r\n", "\n"]);
    (
        status,
        line_end.clone(),
        prop::collection::vec((field(), line_end.clone()), 0..4),
        line_end,
        body(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..3),
    )
        .prop_map(|(status, end, fields, last, body, edits)| {
            let mut bytes = format!("{status}{end}").into_bytes();
            for (field, end) in fields {
                bytes.extend(field);
                bytes.extend(end.as_bytes());
            }
            bytes.extend(last.as_bytes());
            bytes.extend(body);
            for (at, byte, kind) in edits {
                let at = at.index(bytes.len() + 1);
                match kind {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    #[test]
    fn generated_responses_are_read_alike(
        bytes in response_stream(),
        method in prop::sample::select(vec![Method::GET, Method::HEAD, Method::POST, Method::CONNECT]),
    ) {
        let difference = response_disagreement(&bytes, &method);
        prop_assert!(difference.is_none(), "{}", difference.unwrap_or_default());
    }
}
