//! One lookup that tells what the header policy makes of a request header name.
//!
//! The names come from the config (a fixed set per snapshot), so the table is built
//! once at compile time, with the seed that leaves the shortest runs of filled slots.
//! A client's header name, chosen by anyone, then costs one hash and a comparison or
//! two: nothing a client sends is inserted, so no name can make a lookup read further
//! than the longest run the config's own names make.

use std::hash::{Hash, Hasher};

use http::HeaderName;

/// What the policy does with a client request header of this name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderClass {
    /// Forwarded on every route.
    Standard,
    /// Forwarded from trusted proxies only: forwarding and request id headers.
    TrustedOnly,
    /// Who the user is: set by the gateway from verified credentials, never taken from a
    /// client. The forward-auth user header is one too: a forward-auth check reads it,
    /// and the upstream gets the user as the gateway's own `x-fluxlit-sub`.
    Identity,
    /// About one connection or hop (hop-by-hop names, `Host`, `Expect`): never forwarded
    /// as sent; the gateway writes what the upstream needs.
    Hop,
}

/// The names of the policy's sets, each with its class; a name in none has no class
/// (it passes only through a route's allowlist).
#[derive(Debug, Clone)]
pub struct HeaderClasses {
    entries: Vec<(HeaderName, HeaderClass)>,
    /// Indices into `entries`, `EMPTY` where there is none; linear probing.
    slots: Box<[u32]>,
    seed: u64,
    /// log2 of `slots.len()`.
    bits: u32,
}

const EMPTY: u32 = u32::MAX;
/// The seeds tried; the one with the shortest longest run wins.
const SEEDS: u64 = 64;

impl HeaderClasses {
    /// A name keeps the first class it is given.
    pub fn new(names: impl IntoIterator<Item = (HeaderName, HeaderClass)>) -> Self {
        let mut entries: Vec<(HeaderName, HeaderClass)> = Vec::new();
        for (name, class) in names {
            if !entries.iter().any(|(known, _)| *known == name) {
                entries.push((name, class));
            }
        }
        // At most a quarter full: runs stay short, and a miss soon meets an empty slot.
        let bits = (entries.len().max(4) * 4)
            .next_power_of_two()
            .trailing_zeros();
        let mut best = (usize::MAX, 0, Box::default());
        for seed in (0..SEEDS).map(seed_value) {
            let slots = place(&entries, seed, bits);
            let longest = longest_run(&slots);
            if longest < best.0 {
                best = (longest, seed, slots);
            }
        }
        let (_, seed, slots) = best;
        Self {
            entries,
            slots,
            seed,
            bits,
        }
    }

    /// The class of `name`, if it is in one of the policy's sets.
    #[inline]
    pub fn get(&self, name: &HeaderName) -> Option<HeaderClass> {
        let mask = self.slots.len() - 1;
        let mut slot = self.home(name);
        loop {
            let (known, class) = self.entries.get(self.slots[slot] as usize)?;
            if known == name {
                return Some(*class);
            }
            slot = (slot + 1) & mask;
        }
    }

    /// The names of one class, in the order they were given.
    pub fn names(&self, class: HeaderClass) -> impl Iterator<Item = &HeaderName> {
        self.entries
            .iter()
            .filter(move |(_, c)| *c == class)
            .map(|(name, _)| name)
    }

    #[inline]
    fn home(&self, name: &HeaderName) -> usize {
        home(name, self.seed, self.bits)
    }
}

#[inline]
fn home(name: &HeaderName, seed: u64, bits: u32) -> usize {
    let mut hasher = SlotHasher(seed);
    name.hash(&mut hasher);
    (hasher.finish() >> (64 - bits)) as usize
}

/// The slots of a table of `1 << bits` with these entries, linear probing.
fn place(entries: &[(HeaderName, HeaderClass)], seed: u64, bits: u32) -> Box<[u32]> {
    let mut slots = vec![EMPTY; 1 << bits].into_boxed_slice();
    let mask = slots.len() - 1;
    for (index, (name, _)) in entries.iter().enumerate() {
        let mut slot = home(name, seed, bits);
        while slots[slot] != EMPTY {
            slot = (slot + 1) & mask;
        }
        // The table holds four slots per entry, so indices are far below `EMPTY`.
        slots[slot] = u32::try_from(index).unwrap_or(EMPTY);
    }
    slots
}

/// The longest run of filled slots: a lookup, of any name, reads at most one slot more.
fn longest_run(slots: &[u32]) -> usize {
    let (mut longest, mut run) = (0, 0);
    // Twice round, for a run that wraps past the end.
    for &index in slots.iter().chain(slots) {
        run = if index == EMPTY { 0 } else { run + 1 };
        longest = longest.max(run);
    }
    longest.min(slots.len())
}

fn seed_value(n: u64) -> u64 {
    (n + 1).wrapping_mul(0xA076_1D64_78BD_642F)
}

/// Multiply-xor over words. `HeaderName`'s `Hash` feeds it an enum tag for the names
/// `http` knows (most of a browser's) and the lowercase bytes for the others.
struct SlotHasher(u64);

const K: u64 = 0x9E37_79B9_7F4A_7C15;

impl SlotHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(K).rotate_left(29);
    }
}

impl Hasher for SlotHasher {
    #[inline]
    fn finish(&self) -> u64 {
        (self.0 ^ (self.0 >> 32)).wrapping_mul(K)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some((word, tail)) = rest.split_first_chunk::<8>() {
            self.mix(u64::from_le_bytes(*word));
            rest = tail;
        }
        // Header names hold no NUL bytes, so the short last word cannot read as another
        // name's (and a byte loop is cheaper here than a `memcpy` call).
        if !rest.is_empty() {
            self.mix(rest.iter().fold(0, |word, &b| word << 8 | u64::from(b)));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    #[inline]
    fn write_isize(&mut self, n: isize) {
        self.mix(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header_sets;

    fn classes() -> HeaderClasses {
        let names = |list: &'static [&'static str], class| {
            list.iter()
                .map(move |name| (HeaderName::from_static(name), class))
        };
        HeaderClasses::new(
            names(header_sets::FORWARDING, HeaderClass::TrustedOnly)
                .chain(names(&["x-request-id"], HeaderClass::TrustedOnly))
                .chain(names(header_sets::GATEWAY_IDENTITY, HeaderClass::Identity))
                .chain(names(&["x-request-id"], HeaderClass::Identity))
                .chain(names(header_sets::STANDARD_REQUEST, HeaderClass::Standard)),
        )
    }

    #[test]
    fn every_name_finds_its_class_and_the_first_class_wins() {
        let classes = classes();
        for name in header_sets::STANDARD_REQUEST {
            let name = HeaderName::from_static(name);
            assert_eq!(classes.get(&name), Some(HeaderClass::Standard), "{name}");
        }
        for name in header_sets::FORWARDING.iter().chain(&["x-request-id"]) {
            let name = HeaderName::from_static(name);
            assert_eq!(classes.get(&name), Some(HeaderClass::TrustedOnly), "{name}");
        }
        for name in header_sets::GATEWAY_IDENTITY {
            let name = HeaderName::from_static(name);
            assert_eq!(classes.get(&name), Some(HeaderClass::Identity), "{name}");
        }
        let identity: Vec<_> = classes.names(HeaderClass::Identity).collect();
        assert_eq!(identity, header_sets::GATEWAY_IDENTITY);
        // With the default sets, no lookup reads more than four slots.
        let longest = longest_run(&classes.slots);
        assert!(longest <= 3, "{longest}");
    }

    #[test]
    fn names_in_no_set_have_no_class_in_any_letter_case() {
        let classes = classes();
        for name in [
            "X-Tenant",
            "x-tenant",
            "X-FLUXLIT-SUBJECT",
            "accept-charset",
            "acceptt",
            "x-csrf-tokens",
            "host",
            "connection",
            "upgrade",
            "keep-alive",
            "a",
            "x-forwarded-for-",
            "sec-fetch-dest2",
        ] {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert_eq!(classes.get(&name), None, "{name}");
        }
        // Parsed names are lowercased, so a set's name in any case still finds its class.
        for name in [
            "User-Agent",
            "SEC-FETCH-MODE",
            "X-Forwarded-For",
            "x-FluxLit-Sub",
        ] {
            let parsed = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert!(classes.get(&parsed).is_some(), "{name}");
        }
    }

    #[test]
    fn an_empty_table_and_a_crowded_one_answer() {
        let empty = HeaderClasses::new([]);
        assert_eq!(empty.get(&HeaderName::from_static("accept")), None);
        let many: Vec<_> = (0..500)
            .map(|i| {
                let name = HeaderName::from_bytes(format!("x-claim-{i}").as_bytes()).unwrap();
                (name, HeaderClass::Identity)
            })
            .collect();
        let crowded = HeaderClasses::new(many.clone());
        for (name, class) in &many {
            assert_eq!(crowded.get(name), Some(*class));
        }
        assert_eq!(crowded.get(&HeaderName::from_static("x-claim-500")), None);
    }
}
