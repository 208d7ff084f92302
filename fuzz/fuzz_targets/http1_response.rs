//! The engine's HTTP/1.1 response side (`fluxlit::http1`) against hyper's client on the
//! same bytes, read two ways: by the parser (`scan_response`) and by the client itself
//! (`client::Connection`, sending a request to an upstream that answers with the
//! bytes). Each must take the same status and body (the same message boundary) as
//! hyper, or refuse as hyper does. The first byte picks the request's method (`HEAD`
//! and `CONNECT` change how a response is framed).
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/h1_reference.rs"]
#[allow(dead_code)]
mod reference;

const MAX_HEADER_SIZE: usize = 8192;

fuzz_target!(|input: &[u8]| {
    let Some((&pick, bytes)) = input.split_first() else {
        return;
    };
    let method = match pick % 4 {
        0 => Method::GET,
        1 => Method::HEAD,
        2 => Method::POST,
        _ => Method::CONNECT,
    };
    let theirs = reference::block_on(reference::hyper_response(bytes, &method, MAX_HEADER_SIZE));
    let scanned = reference::engine_response(bytes, &method, MAX_HEADER_SIZE);
    assert_eq!(scanned, theirs, "scan_response, {method}");
    let received = reference::block_on(reference::engine_client_response(
        bytes,
        &method,
        MAX_HEADER_SIZE,
    ));
    assert_eq!(received, theirs, "client, {method}");
});
