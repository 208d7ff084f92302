//! Where the used states of finished logins and the auth codes live between two
//! requests. (A login in progress lives in the browser's sealed login cookie.)
//!
//! One trait, [`Store`], with the two operations the flow needs: `put_once` (store a
//! value unless the key exists, with a time to live) and `take` (remove and return it in
//! one step, so a value is consumed at most once). The memory store serves one process;
//! the Redis store ([`super::redis_store`]: `SET key value PX ttl NX`, `GETDEL key`)
//! serves replicas that share it.
//!
//! Keys are already hashed by the caller (never a raw state or code), and each kind of
//! entry ([`Slot`]) has its own namespace and, in memory, its own bound: a flood of
//! callbacks cannot crowd out the auth codes of users who finished their logins.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde::Serialize;

/// The key an entry is stored under for a state, code or session id: its SHA-256 in
/// hex, so the store never holds one that could be replayed or used.
pub fn hashed_key(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(secret.as_bytes());
    let mut key = String::with_capacity(64);
    for byte in digest.iter() {
        key.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        key.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    key
}

/// The kind of entry: each has its own namespace (and, in memory, its own bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A login whose callback came: its state's hash, kept for `login_ttl` so that a
    /// replayed callback is refused before the IdP is asked. (The login itself, until
    /// then, is in the browser's sealed login cookie: nothing is stored before the IdP
    /// round trip.)
    UsedState,
    /// A minted access token waiting for `/auth/exchange`.
    AuthCode,
    /// A browser session: its record, sealed, under the hash of the session id.
    Session,
}

impl Slot {
    /// The namespace in key names (`login:`, `code:`).
    pub fn prefix(self) -> &'static str {
        match self {
            Self::UsedState => "used",
            Self::AuthCode => "code",
            Self::Session => "session",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::UsedState => 0,
            Self::AuthCode => 1,
            Self::Session => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store holds as many entries of this kind as it may.
    #[error("too many {what} are pending ({capacity}); try again shortly")]
    Full { what: &'static str, capacity: usize },
    /// The store cannot be reached (Redis down): the flow answers 503.
    #[error("the login store is unavailable: {0}")]
    Unavailable(String),
}

/// What `/snapshot` shows about a store: counts for the memory store, where and how it
/// is doing for the Redis store.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct StoreStatus {
    /// `memory` or `redis`.
    pub kind: &'static str,
    /// memory: states of finished callbacks, kept until their login would have expired
    /// so that a replay is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_states: Option<usize>,
    /// memory: live (unexpired) auth codes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_codes: Option<usize>,
    /// memory: live (unexpired) browser sessions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<usize>,
    /// memory: the bound on each of the three above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_entries: Option<usize>,
    /// redis: the URL, its password (if any) shown as `***`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// redis: the prefix of this provider's keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// redis: why the last call failed, until one succeeds (`null` when it answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Login states and auth codes, with a time to live, each consumed at most once.
pub trait Store: Send + Sync + fmt::Debug {
    /// Stores `value` under `key` for `ttl`, unless a live entry has that key: true when
    /// stored, false when the key was taken.
    fn put_once<'a>(
        &'a self,
        slot: Slot,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Removes the entry and returns its value, atomically: of two concurrent takes of
    /// one key, one gets the value. An expired entry is gone.
    fn take<'a>(
        &'a self,
        slot: Slot,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>>;

    /// The entry's value, left in place; `None` when there is none or it expired.
    fn get<'a>(
        &'a self,
        slot: Slot,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>>;

    /// Overwrites a live entry's value and time to live; false (and nothing written)
    /// when there is none: an entry deleted meanwhile (a logout on another replica) is
    /// never brought back.
    fn replace<'a>(
        &'a self,
        slot: Slot,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Removes the entry, if there is one.
    fn delete<'a>(&'a self, slot: Slot, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    fn status(&self) -> StoreStatus;
}

/// The store of one process: two bounded hash maps behind mutexes (no await while held).
pub struct MemoryStore {
    max_entries: usize,
    tables: [Mutex<Table>; 3],
}

/// Counts only: the entries hold PKCE verifiers and access tokens.
impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let now = Instant::now();
        f.debug_struct("MemoryStore")
            .field("max_entries", &self.max_entries)
            .field("used_states", &self.table(Slot::UsedState).live(now))
            .field("auth_codes", &self.table(Slot::AuthCode).live(now))
            .field("sessions", &self.table(Slot::Session).live(now))
            .finish()
    }
}

#[derive(Default)]
struct Table {
    entries: HashMap<String, Entry>,
    /// No expired entry is removed before this: sweeps are at most one a second unless
    /// the table is full.
    next_sweep: Option<Instant>,
}

struct Entry {
    value: Vec<u8>,
    expires_at: Instant,
}

/// How often expired entries are swept when the table is not full.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

impl Table {
    fn sweep(&mut self, now: Instant, force: bool) {
        if force || self.next_sweep.is_none_or(|at| now >= at) {
            self.entries.retain(|_, entry| entry.expires_at > now);
            self.next_sweep = Some(now + SWEEP_INTERVAL);
        }
    }

    fn live(&self, now: Instant) -> usize {
        self.entries.values().filter(|e| e.expires_at > now).count()
    }
}

impl MemoryStore {
    /// A store holding at most `max_entries` login states and as many auth codes.
    pub fn new(max_entries: usize) -> Self {
        Self {
            max_entries: max_entries.max(1),
            tables: std::array::from_fn(|_| Mutex::new(Table::default())),
        }
    }

    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    fn table(&self, slot: Slot) -> std::sync::MutexGuard<'_, Table> {
        self.tables[slot.index()]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn put_now(
        &self,
        slot: Slot,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut table = self.table(slot);
        if let Some(entry) = table.entries.get(key) {
            if entry.expires_at > now {
                return Ok(false);
            }
            table.entries.remove(key);
        }
        let full = table.entries.len() >= self.max_entries;
        table.sweep(now, full);
        if table.entries.len() >= self.max_entries {
            return Err(StoreError::Full {
                what: match slot {
                    Slot::UsedState => "finished logins",
                    Slot::AuthCode => "auth codes",
                    Slot::Session => "sessions",
                },
                capacity: self.max_entries,
            });
        }
        table.entries.insert(
            key.to_owned(),
            Entry {
                value,
                expires_at: now + ttl,
            },
        );
        Ok(true)
    }

    fn get_now(&self, slot: Slot, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        let table = self.table(slot);
        table
            .entries
            .get(key)
            .filter(|entry| entry.expires_at > now)
            .map(|entry| entry.value.clone())
    }

    fn replace_now(&self, slot: Slot, key: &str, value: Vec<u8>, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut table = self.table(slot);
        match table.entries.get_mut(key) {
            Some(entry) if entry.expires_at > now => {
                *entry = Entry {
                    value,
                    expires_at: now + ttl,
                };
                true
            }
            _ => false,
        }
    }

    fn take_now(&self, slot: Slot, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        let mut table = self.table(slot);
        let entry = table.entries.remove(key);
        table.sweep(now, false);
        entry
            .filter(|entry| entry.expires_at > now)
            .map(|entry| entry.value)
    }
}

impl Store for MemoryStore {
    fn put_once<'a>(
        &'a self,
        slot: Slot,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let result = self.put_now(slot, key, value, ttl);
        Box::pin(async move { result })
    }

    fn take<'a>(
        &'a self,
        slot: Slot,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        let result = self.take_now(slot, key);
        Box::pin(async move { Ok(result) })
    }

    fn get<'a>(
        &'a self,
        slot: Slot,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        let result = self.get_now(slot, key);
        Box::pin(async move { Ok(result) })
    }

    fn replace<'a>(
        &'a self,
        slot: Slot,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let result = self.replace_now(slot, key, value, ttl);
        Box::pin(async move { Ok(result) })
    }

    fn delete<'a>(&'a self, slot: Slot, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.table(slot).entries.remove(key);
        Box::pin(async move { Ok(()) })
    }

    fn status(&self) -> StoreStatus {
        let now = Instant::now();
        StoreStatus {
            kind: "memory",
            used_states: Some(self.table(Slot::UsedState).live(now)),
            auth_codes: Some(self.table(Slot::AuthCode).live(now)),
            sessions: Some(self.table(Slot::Session).live(now)),
            max_entries: Some(self.max_entries),
            ..StoreStatus::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<T>(future: BoxFuture<'_, T>) -> T {
        futures_util::FutureExt::now_or_never(future).expect("the memory store never waits")
    }

    #[test]
    fn a_replaced_entry_lives_on_and_a_deleted_one_is_never_brought_back() {
        let store = MemoryStore::new(10);
        let ttl = Duration::from_secs(60);
        assert_eq!(
            block(store.put_once(Slot::Session, "s", b"one".to_vec(), ttl)),
            Ok(true)
        );
        assert_eq!(
            block(store.get(Slot::Session, "s")),
            Ok(Some(b"one".to_vec()))
        );
        assert_eq!(
            block(store.get(Slot::Session, "s")),
            Ok(Some(b"one".to_vec())),
            "get leaves it in place"
        );
        assert_eq!(
            block(store.replace(Slot::Session, "s", b"two".to_vec(), ttl)),
            Ok(true)
        );
        assert_eq!(
            block(store.get(Slot::Session, "s")),
            Ok(Some(b"two".to_vec()))
        );
        assert_eq!(block(store.delete(Slot::Session, "s")), Ok(()));
        assert_eq!(
            block(store.replace(Slot::Session, "s", b"three".to_vec(), ttl)),
            Ok(false),
            "a renewal after a logout re-creates nothing"
        );
        assert_eq!(block(store.get(Slot::Session, "s")), Ok(None));
        assert_eq!(store.status().sessions, Some(0));
    }

    #[test]
    fn a_value_is_taken_once() {
        let store = MemoryStore::new(10);
        let ttl = Duration::from_secs(60);
        assert_eq!(
            block(store.put_once(Slot::AuthCode, "k", b"v".to_vec(), ttl)),
            Ok(true)
        );
        assert_eq!(
            block(store.put_once(Slot::AuthCode, "k", b"w".to_vec(), ttl)),
            Ok(false)
        );
        assert_eq!(
            block(store.take(Slot::AuthCode, "k")),
            Ok(Some(b"v".to_vec()))
        );
        assert_eq!(block(store.take(Slot::AuthCode, "k")), Ok(None));
    }

    #[test]
    fn slots_are_separate_namespaces() {
        let store = MemoryStore::new(10);
        let ttl = Duration::from_secs(60);
        assert_eq!(
            block(store.put_once(Slot::UsedState, "k", b"s".to_vec(), ttl)),
            Ok(true)
        );
        assert_eq!(block(store.take(Slot::AuthCode, "k")), Ok(None));
        assert_eq!(
            block(store.take(Slot::UsedState, "k")),
            Ok(Some(b"s".to_vec()))
        );
    }

    #[test]
    fn expired_entries_are_gone_and_make_room() {
        let store = MemoryStore::new(2);
        let gone = Duration::ZERO;
        let ttl = Duration::from_secs(60);
        assert_eq!(
            block(store.put_once(Slot::UsedState, "a", vec![], gone)),
            Ok(true)
        );
        assert_eq!(
            block(store.take(Slot::UsedState, "a")),
            Ok(None),
            "expired at once"
        );
        assert_eq!(
            block(store.put_once(Slot::UsedState, "b", vec![], gone)),
            Ok(true)
        );
        assert_eq!(
            block(store.put_once(Slot::UsedState, "c", vec![], gone)),
            Ok(true)
        );
        // Full of expired entries: a sweep makes room.
        assert_eq!(
            block(store.put_once(Slot::UsedState, "d", vec![], ttl)),
            Ok(true)
        );
        assert_eq!(store.status().used_states, Some(1));
    }

    #[test]
    fn debug_output_shows_no_values() {
        let store = MemoryStore::new(3);
        let ttl = Duration::from_secs(60);
        let value = b"access-token-value".to_vec();
        assert_eq!(
            block(store.put_once(Slot::AuthCode, "key", value, ttl)),
            Ok(true)
        );
        let shown = format!("{store:?}");
        assert!(
            !shown.contains("access-token") && !shown.contains("key"),
            "{shown}"
        );
        assert!(shown.contains("auth_codes: 1"), "{shown}");
    }

    #[test]
    fn the_bound_holds_per_slot() {
        let store = MemoryStore::new(3);
        let ttl = Duration::from_secs(60);
        for key in ["a", "b", "c"] {
            assert_eq!(
                block(store.put_once(Slot::UsedState, key, vec![], ttl)),
                Ok(true)
            );
        }
        assert!(matches!(
            block(store.put_once(Slot::UsedState, "d", vec![], ttl)),
            Err(StoreError::Full { capacity: 3, .. })
        ));
        // Auth codes still have room of their own.
        assert_eq!(
            block(store.put_once(Slot::AuthCode, "a", vec![], ttl)),
            Ok(true)
        );
        let status = store.status();
        assert_eq!(
            (status.used_states, status.auth_codes, status.max_entries),
            (Some(3), Some(1), Some(3))
        );
        // Taking one makes room again.
        assert_eq!(block(store.take(Slot::UsedState, "a")), Ok(Some(vec![])));
        assert_eq!(
            block(store.put_once(Slot::UsedState, "d", vec![], ttl)),
            Ok(true)
        );
    }
}
