//! The engine's HTTP/1.1 response parser (`fluxlit::http1`) against hyper's client on
//! the same bytes: the same status and body (the same message boundary), or both
//! refusing. The first byte picks the request's method (`HEAD` and `CONNECT` change
//! how a response is framed).
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
    let ours = reference::engine_response(bytes, &method, MAX_HEADER_SIZE);
    let theirs = reference::block_on(reference::hyper_response(bytes, &method, MAX_HEADER_SIZE));
    assert_eq!(ours, theirs, "{method}");
});
