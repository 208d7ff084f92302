//! The engine's HTTP/1.1 request parser (`fluxlit::http1`) against hyper's server on the
//! same bytes: the same requests (method, target, body: the same message boundaries)
//! and the same refusal, or the one difference the reference allows for by design.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/h1_reference.rs"]
#[allow(dead_code)]
mod reference;

/// The smallest `max_header_size` the config accepts: heads around it are cheap to find.
const MAX_HEADER_SIZE: usize = 8192;

fuzz_target!(|bytes: &[u8]| {
    let ours = reference::engine(bytes, MAX_HEADER_SIZE);
    let theirs = reference::block_on(reference::hyper(bytes, MAX_HEADER_SIZE));
    assert!(
        reference::agree(bytes, &ours, &theirs),
        "engine {ours:?}, hyper {theirs:?}"
    );
});
