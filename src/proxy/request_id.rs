//! Fresh request ids: random UUIDs (version 4) made without a system call per request.
//!
//! `Uuid::new_v4` asks the kernel for 16 random bytes on every call (`getrandom`), one
//! system call per request. Here each thread draws a secret key from the OS once (std's
//! `RandomState`) and the bytes are SipHash of that key and a per-thread counter: unique,
//! and unpredictable to anyone who has not seen the key.
//!
//! The text of an id is a shared slice of a per-thread buffer that holds
//! [`IDS_PER_BUFFER`] of them: a header value of its own would cost two allocations per
//! request (its bytes, then the shared header `Bytes` makes when it is first cloned, for
//! the upstream request). A buffer is freed when the last id cut from it is dropped.

use std::cell::{Cell, RefCell};
use std::hash::{BuildHasher, Hasher, RandomState};

use bytes::BytesMut;
use http::HeaderValue;

/// Few enough that an id kept for long (in a streamed response's access record) holds
/// little memory with it.
const IDS_PER_BUFFER: usize = 16;
/// `0b6e3f2c-5d1a-4c4e-9f7a-2b8d1e6c9a01`
const ID_LEN: usize = uuid::fmt::Hyphenated::LENGTH;

thread_local! {
    static KEYED_COUNTER: (RandomState, Cell<u64>) = (RandomState::new(), const { Cell::new(0) });
    static TEXT: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

fn random_bytes() -> [u8; 16] {
    KEYED_COUNTER.with(|(key, counter)| {
        let n = counter.get();
        counter.set(n.wrapping_add(1));
        // The two halves hash (n, 0) and (n, 1): the state after `n` is shared.
        let mut high = key.build_hasher();
        high.write_u64(n);
        let mut low = high.clone();
        high.write_u8(0);
        low.write_u8(1);
        ((u128::from(high.finish()) << 64) | u128::from(low.finish())).to_be_bytes()
    })
}

/// A new random UUID as a header value, e.g. `0b6e3f2c-5d1a-4c4e-9f7a-2b8d1e6c9a01`.
pub fn fresh() -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(random_bytes()).into_uuid();
    let mut buffer = uuid::Uuid::encode_buffer();
    let id = id.hyphenated().encode_lower(&mut buffer);
    let text = TEXT.with_borrow_mut(|text| {
        if text.capacity() < ID_LEN {
            text.reserve(IDS_PER_BUFFER * ID_LEN);
        }
        text.extend_from_slice(id.as_bytes());
        text.split().freeze()
    });
    HeaderValue::from_maybe_shared(text).unwrap_or(HeaderValue::from_static("-"))
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
