//! A bounded memory of bearer tokens whose signature already verified with a JWKS key.
//!
//! Checking an RS256 signature costs tens of microseconds, and a browser session sends
//! the same token with every request. A token that verified is remembered by its
//! SHA-256 until the first of: its `exp` plus the leeway, or a change of the provider's
//! key set (every successful JWKS fetch starts a new generation: a key that was removed
//! must stop working at once). Only successes are remembered, so a flood of bad tokens
//! never fills it. When a shard is full its expired entries go first, then the whole
//! shard: a clear is cheaper than an LRU and only happens under a flood of distinct
//! valid tokens, each of which then simply verifies again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};

use super::claims::Claims;

/// Tokens longer than this are verified every time: remembering them would let a few
/// clients with huge tokens take most of the memory.
pub const MAX_REMEMBERED_TOKEN_BYTES: usize = 4 * 1024;

const SHARDS: usize = 16;

type TokenDigest = [u8; 32];

#[derive(Debug)]
pub struct VerifiedTokens {
    shards: Box<[Mutex<HashMap<TokenDigest, Remembered>>]>,
    per_shard: usize,
}

#[derive(Debug)]
struct Remembered {
    claims: Arc<Claims>,
    /// Unix seconds after which the token is expired (its `exp` plus the leeway).
    valid_until: u64,
    /// The key-set generation it verified against.
    generation: u64,
}

impl VerifiedTokens {
    /// Room for about `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard,
        }
    }

    /// The digest a token is remembered by, or `None` when it is too long to remember.
    pub fn digest(token: &str) -> Option<TokenDigest> {
        (token.len() <= MAX_REMEMBERED_TOKEN_BYTES).then(|| Sha256::digest(token).into())
    }

    /// The claims of a token that verified against key-set `generation` and is not
    /// expired at `now` (Unix seconds).
    pub fn get(&self, digest: &TokenDigest, generation: u64, now: u64) -> Option<Arc<Claims>> {
        let mut shard = self.shard(digest);
        let entry = shard.get(digest)?;
        if entry.generation == generation && now <= entry.valid_until {
            return Some(Arc::clone(&entry.claims));
        }
        shard.remove(digest);
        None
    }

    pub fn insert(
        &self,
        digest: TokenDigest,
        claims: Arc<Claims>,
        valid_until: u64,
        generation: u64,
        now: u64,
    ) {
        let mut shard = self.shard(&digest);
        if shard.len() >= self.per_shard && !shard.contains_key(&digest) {
            shard.retain(|_, entry| entry.generation == generation && now <= entry.valid_until);
            if shard.len() >= self.per_shard {
                shard.clear();
            }
        }
        shard.insert(
            digest,
            Remembered {
                claims,
                valid_until,
                generation,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, digest: &TokenDigest) -> MutexGuard<'_, HashMap<TokenDigest, Remembered>> {
        lock(&self.shards[usize::from(digest[0]) % self.shards.len()])
    }
}

/// A poisoned shard only means a panic elsewhere; its map is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str) -> Arc<Claims> {
        let mut map = Claims::new();
        map.insert("sub".into(), sub.into());
        Arc::new(map)
    }

    fn digest(token: &str) -> TokenDigest {
        VerifiedTokens::digest(token).unwrap()
    }

    #[test]
    fn a_remembered_token_is_found_until_it_expires() {
        let cache = VerifiedTokens::new(100);
        cache.insert(digest("t1"), claims("ada"), 1_000, 7, 900);
        let found = cache.get(&digest("t1"), 7, 1_000).unwrap();
        assert_eq!(found["sub"], "ada");
        assert!(cache.get(&digest("t1"), 7, 1_001).is_none());
        // An expired entry is dropped when it is seen.
        assert!(cache.is_empty());
    }

    #[test]
    fn a_new_key_set_forgets_every_token() {
        let cache = VerifiedTokens::new(100);
        cache.insert(digest("t1"), claims("ada"), 1_000, 7, 900);
        assert!(cache.get(&digest("t1"), 8, 900).is_none());
        assert!(cache.get(&digest("t1"), 7, 900).is_none());
    }

    #[test]
    fn another_token_is_not_found() {
        let cache = VerifiedTokens::new(100);
        cache.insert(digest("t1"), claims("ada"), 1_000, 7, 900);
        assert!(cache.get(&digest("t2"), 7, 900).is_none());
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_valid_tokens() {
        let cache = VerifiedTokens::new(160);
        for n in 0..10_000 {
            cache.insert(digest(&format!("token-{n}")), claims("ada"), 2_000, 1, 900);
        }
        assert!(cache.len() <= 160, "{} entries", cache.len());
        // The most recent token is still remembered.
        assert!(cache.get(&digest("token-9999"), 1, 900).is_some());
    }

    #[test]
    fn a_full_shard_drops_expired_entries_before_live_ones() {
        let cache = VerifiedTokens::new(SHARDS * 2);
        // Find three tokens of the same shard.
        let same_shard: Vec<String> = (0..)
            .map(|n| format!("token-{n}"))
            .filter(|t| usize::from(digest(t)[0]).is_multiple_of(SHARDS))
            .take(3)
            .collect();
        cache.insert(digest(&same_shard[0]), claims("old"), 950, 1, 900);
        cache.insert(digest(&same_shard[1]), claims("live"), 2_000, 1, 900);
        cache.insert(digest(&same_shard[2]), claims("new"), 2_000, 1, 1_000);
        assert!(cache.get(&digest(&same_shard[1]), 1, 1_000).is_some());
        assert!(cache.get(&digest(&same_shard[2]), 1, 1_000).is_some());
    }

    #[test]
    fn huge_tokens_are_not_remembered() {
        assert!(VerifiedTokens::digest(&"a".repeat(MAX_REMEMBERED_TOKEN_BYTES + 1)).is_none());
        assert!(VerifiedTokens::digest(&"a".repeat(MAX_REMEMBERED_TOKEN_BYTES)).is_some());
    }
}
