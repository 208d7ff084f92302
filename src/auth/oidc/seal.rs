//! Sealed cookies: what the gateway hands a browser to keep for it (a login's state),
//! encrypted and authenticated so that the browser can neither read nor change it.
//!
//! AES-256-GCM with a fresh random 96-bit nonce per seal (RFC 5116). The key is derived
//! with HKDF-SHA256 from the provider's `session_key` — which replicas share, so any of
//! them opens what another sealed — or, without one, generated at start and kept across
//! reloads. Each sealed value is bound to its context (the associated data: provider,
//! purpose, and the login's state), so a value sealed for one login or provider cannot
//! stand in for another.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;

/// The shortest `session_key`, in bytes: as long as the AES key it becomes.
pub const MIN_SESSION_KEY: usize = 32;

/// What a value is sealed for. Each purpose has a key of its own, derived from the same
/// secret with its own HKDF `info`: a value sealed for one never opens as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A login in progress, in the browser's login cookie.
    LoginState,
    /// A browser session's record, in the store.
    SessionRecord,
}

impl Purpose {
    const ALL: [Purpose; 2] = [Purpose::LoginState, Purpose::SessionRecord];

    fn info(self) -> &'static [u8] {
        match self {
            Purpose::LoginState => b"fluxlit login state v1",
            Purpose::SessionRecord => b"fluxlit session record v1",
        }
    }

    fn index(self) -> usize {
        match self {
            Purpose::LoginState => 0,
            Purpose::SessionRecord => 1,
        }
    }
}

/// The most a sealed value may be, base64 included: a login cookie is at most about
/// 4 KiB in a browser, and a session record (id_token and refresh token included) is
/// bounded by what the IdP sends, which the token endpoint's response bound limits.
pub const MAX_SEALED_LEN: usize = 64 * 1024;

/// Where a sealer's key came from: a reload keeps a generated one, and makes a configured
/// one anew from the same secret (the same key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// `session_key` in the file.
    Configured,
    /// Random, made at start: logins in progress do not survive a restart, and only this
    /// process can finish them.
    Generated,
}

/// Seals and opens values for one provider.
pub struct Sealer {
    /// One key per [`Purpose`], in its order.
    keys: [LessSafeKey; 2],
    origin: KeyOrigin,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// A sealer could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SealerError {
    #[error("the operating system's random source failed: {0}")]
    Random(#[from] getrandom::Error),
    #[error("the sealing key could not be derived")]
    Derive,
}

impl Sealer {
    /// The sealer of the `session_key` `secret` (at least [`MIN_SESSION_KEY`] bytes:
    /// validation refuses shorter ones).
    pub fn from_secret(secret: &[u8]) -> Result<Self, SealerError> {
        Self::derive(secret, KeyOrigin::Configured)
    }

    /// A sealer with a random key.
    pub fn generate() -> Result<Self, SealerError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)?;
        Self::derive(&secret, KeyOrigin::Generated)
    }

    fn derive(secret: &[u8], origin: KeyOrigin) -> Result<Self, SealerError> {
        // HKDF-Extract without a salt (RFC 5869 §3.1 allows it when the secret is
        // random), then Expand to the AES key for this purpose.
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(secret);
        let derive = |purpose: Purpose| {
            let mut bytes = [0u8; 32];
            prk.expand(&[purpose.info()], &AES_256_GCM)
                .and_then(|okm| okm.fill(&mut bytes))
                .map_err(|_| SealerError::Derive)?;
            let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| SealerError::Derive)?;
            Ok::<_, SealerError>(LessSafeKey::new(key))
        };
        let [login, session] = Purpose::ALL;
        Ok(Self {
            keys: [derive(login)?, derive(session)?],
            origin,
        })
    }

    pub fn origin(&self) -> KeyOrigin {
        self.origin
    }

    fn key(&self, purpose: Purpose) -> &LessSafeKey {
        &self.keys[purpose.index()]
    }

    /// `plaintext` sealed for `purpose` and `context`, as base64url (cookie-safe); `None`
    /// only when the random source fails.
    pub fn seal(&self, purpose: Purpose, context: &[u8], plaintext: &[u8]) -> Option<String> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).ok()?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
        sealed.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.key(purpose)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut body,
            )
            .ok()?;
        sealed.extend_from_slice(&body);
        Some(URL_SAFE_NO_PAD.encode(sealed))
    }

    /// What `sealed` holds, when this sealer sealed it for `purpose` and `context` and
    /// nobody changed it since; `None` for anything else (another key, purpose or
    /// context, a changed or truncated value, not base64url, too long).
    pub fn open(&self, purpose: Purpose, context: &[u8], sealed: &str) -> Option<Vec<u8>> {
        if sealed.len() > MAX_SEALED_LEN {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if bytes.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce, body) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let opened = self
            .key(purpose)
            .open_in_place(nonce, Aad::from(context), &mut body)
            .ok()?;
        Some(opened.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGIN: Purpose = Purpose::LoginState;

    #[test]
    fn a_sealed_value_opens_with_its_key_purpose_and_context_only() {
        let sealer = Sealer::from_secret(b"a session key of thirty-two bytes").unwrap();
        let sealed = sealer.seal(LOGIN, b"login:corp:abc", b"the state").unwrap();
        assert_eq!(
            sealer.open(LOGIN, b"login:corp:abc", &sealed).as_deref(),
            Some(&b"the state"[..])
        );
        // Another context, another key, a changed byte, a cut value: nothing.
        assert!(sealer.open(LOGIN, b"login:corp:abd", &sealed).is_none());
        let other = Sealer::from_secret(b"another session key, 32+ bytes long").unwrap();
        assert!(other.open(LOGIN, b"login:corp:abc", &sealed).is_none());
        let mut changed = sealed.clone().into_bytes();
        let last = changed.len() - 5;
        changed[last] = if changed[last] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(changed).unwrap();
        assert!(sealer.open(LOGIN, b"login:corp:abc", &changed).is_none());
        assert!(
            sealer
                .open(LOGIN, b"login:corp:abc", &sealed[..20])
                .is_none()
        );
        assert!(
            sealer
                .open(LOGIN, b"login:corp:abc", "not base64!")
                .is_none()
        );
        assert!(
            sealer
                .open(Purpose::SessionRecord, b"login:corp:abc", &sealed)
                .is_none(),
            "a login cookie is no session record"
        );
        // The same secret is the same key: a replica opens what another sealed.
        let replica = Sealer::from_secret(b"a session key of thirty-two bytes").unwrap();
        assert!(replica.open(LOGIN, b"login:corp:abc", &sealed).is_some());
    }

    #[test]
    fn each_seal_is_fresh_and_shows_nothing_of_the_plaintext() {
        let sealer = Sealer::generate().unwrap();
        let first = sealer
            .seal(LOGIN, b"c", b"verifier=secret-verifier")
            .unwrap();
        let second = sealer
            .seal(LOGIN, b"c", b"verifier=secret-verifier")
            .unwrap();
        assert_ne!(first, second, "a fresh nonce each time");
        let raw = URL_SAFE_NO_PAD.decode(&first).unwrap();
        assert!(!raw.windows(6).any(|w| w == b"secret"));
        assert_eq!(sealer.origin(), KeyOrigin::Generated);
    }
}
