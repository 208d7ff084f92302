//! Fresh request ids: random UUIDs (version 4) made without a system call per request.
//!
//! `Uuid::new_v4` asks the kernel for 16 random bytes on every call (`getrandom`), one
//! system call per request. Here each thread draws a secret key from the OS once (std's
//! `RandomState`) and the bytes are SipHash of that key and a per-thread counter: unique,
//! and unpredictable to anyone who has not seen the key.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher, RandomState};

use http::HeaderValue;

thread_local! {
    static KEYED_COUNTER: (RandomState, Cell<u64>) = (RandomState::new(), const { Cell::new(0) });
}

fn random_bytes() -> [u8; 16] {
    KEYED_COUNTER.with(|(key, counter)| {
        let n = counter.get();
        counter.set(n.wrapping_add(1));
        let half = |lane: u8| {
            let mut hasher = key.build_hasher();
            hasher.write_u64(n);
            hasher.write_u8(lane);
            hasher.finish()
        };
        ((u128::from(half(0)) << 64) | u128::from(half(1))).to_be_bytes()
    })
}

/// A new random UUID as a header value, e.g. `0b6e3f2c-5d1a-4c4e-9f7a-2b8d1e6c9a01`.
pub fn fresh() -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(random_bytes()).into_uuid();
    let mut buffer = uuid::Uuid::encode_buffer();
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut buffer))
        .unwrap_or(HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_version_4_uuids_and_do_not_repeat() {
        let ids: HashSet<String> = (0..10_000)
            .map(|_| fresh().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            let uuid = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(uuid.get_version_num(), 4);
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
        }
    }

    #[test]
    fn threads_draw_different_ids() {
        let here = fresh();
        let there = std::thread::spawn(fresh).join().unwrap();
        assert_ne!(here, there);
    }
}
