//! The engine's HTTP/1.1 request side (`fluxlit::http1`) against hyper's server on the
//! same bytes, read two ways: by the parser over the whole stream (`scan`) and by the
//! server itself (`server::serve` on one end of a pipe, the bytes written into the
//! other). Each must find the same requests (method, target, body: the same message
//! boundaries) and the same refusal as hyper, or differ only as the reference allows
//! by design.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/h1_reference.rs"]
#[allow(dead_code)]
mod reference;

/// The smallest `max_header_size` the config accepts: heads around it are cheap to find.
const MAX_HEADER_SIZE: usize = 8192;

fuzz_target!(|bytes: &[u8]| {
    let theirs = reference::block_on(reference::hyper(bytes, MAX_HEADER_SIZE));
    let scanned = reference::engine(bytes, MAX_HEADER_SIZE);
    assert!(
        reference::agree(bytes, &scanned, &theirs),
        "scan {scanned:?}, hyper {theirs:?}"
    );
    let served = reference::block_on(reference::engine_server(bytes, MAX_HEADER_SIZE));
    assert!(
        reference::agree(bytes, &served, &theirs),
        "serve {served:?}, hyper {theirs:?}"
    );
});
