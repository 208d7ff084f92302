//! Any bytes as a JWKS document: the key set or an error, never a panic; a set that is
//! accepted holds at least one key.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(keys) = fluxlit::auth::jwks::usable_key_count(data) {
        assert!(keys > 0, "an accepted JWKS has no keys");
    }
});
