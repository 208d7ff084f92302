//! The signed identity assertion: what the gateway verified, as a short-lived JWT that
//! the upstream can check against the gateway's published keys.
//!
//! Plain `x-fluxlit-sub` headers are believable only where nothing but the gateway can
//! reach the upstream. The assertion is believable anywhere: it is signed (EdDSA or
//! ES256), names its audience (the upstream, so an assertion for one upstream is refused
//! by another), and expires within `[identity] ttl` and never after the credential it
//! stands for. Pomerium, Cloudflare Access and Google IAP do the same.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};

use super::background::lock;

/// Where the public keys are served, on the public and the admin listener.
pub const JWKS_PATH: &str = "/.well-known/fluxlit/jwks.json";

/// The PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410 §7): 16 bytes, then the
/// 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Why a key cannot sign assertions.
#[derive(Debug, thiserror::Error)]
pub enum IdentityKeyError {
    #[error(
        "not a PKCS#8 PEM private key for P-256 (ES256) or Ed25519 (EdDSA); make one with \
         `openssl genpkey -algorithm ed25519 -out identity.pem`"
    )]
    Unusable,
    #[error("cannot draw random bytes for a signing key: {0}")]
    Random(#[source] getrandom::Error),
    #[error("cannot derive the public key: {0}")]
    Public(#[source] jsonwebtoken::errors::Error),
}

/// A private key that signs assertions, with its public half as published.
pub struct SigningKey {
    key: EncodingKey,
    alg: Algorithm,
    public: Jwk,
    /// Made at start because the file names no key: kept across reloads.
    generated: bool,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.public.common.key_id)
            .field("generated", &self.generated)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A PKCS#8 PEM private key: Ed25519, else P-256.
    pub fn from_pem(pem: &[u8]) -> Result<Self, IdentityKeyError> {
        if let Ok(key) = EncodingKey::from_ed_pem(pem)
            && let Ok(signing) = Self::new(key, Algorithm::EdDSA, false)
        {
            return Ok(signing);
        }
        let key = EncodingKey::from_ec_pem(pem).map_err(|_| IdentityKeyError::Unusable)?;
        Self::new(key, Algorithm::ES256, false).map_err(|_| IdentityKeyError::Unusable)
    }

    /// A fresh Ed25519 key from the operating system's random numbers.
    pub fn generate() -> Result<Self, IdentityKeyError> {
        let mut der = [0u8; 48];
        der[..16].copy_from_slice(&ED25519_PKCS8_PREFIX);
        getrandom::fill(&mut der[16..]).map_err(IdentityKeyError::Random)?;
        Self::new(EncodingKey::from_ed_der(&der), Algorithm::EdDSA, true)
    }

    fn new(key: EncodingKey, alg: Algorithm, generated: bool) -> Result<Self, IdentityKeyError> {
        let mut public = Jwk::from_encoding_key(&key, alg).map_err(IdentityKeyError::Public)?;
        // The key id is the RFC 7638 thumbprint: the same key has the same id on every
        // replica and after every restart.
        let kid = public
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(IdentityKeyError::Public)?;
        public.common.key_id = Some(kid);
        public.common.public_key_use = Some(PublicKeyUse::Signature);
        public.common.key_algorithm = Some(match alg {
            Algorithm::ES256 => KeyAlgorithm::ES256,
            _ => KeyAlgorithm::EdDSA,
        });
        Ok(Self {
            key,
            alg,
            public,
            generated,
        })
    }

    /// The public key, as the JWKS lists it.
    pub fn public(&self) -> &Jwk {
        &self.public
    }

    pub fn is_generated(&self) -> bool {
        self.generated
    }
}

/// What the gateway verified about a request's credential, to be asserted.
#[derive(Debug, Clone, Default)]
pub struct Asserted {
    pub sub: String,
    /// Space-separated, as OAuth writes scopes.
    pub scope: Option<String>,
    /// The provider's `claim_headers` claims, as the credential had them.
    pub claims: Vec<(String, Value)>,
    /// When the credential itself expires (a token's `exp`, without leeway).
    pub expires: Option<SystemTime>,
}

/// How many assertions a snapshot keeps for reuse; past it the memory starts afresh.
const REMEMBERED_ASSERTIONS: usize = 8 * 1024;

/// Signs assertions for one snapshot: its key, issuer, lifetime and header.
#[derive(Debug)]
pub struct IdentitySigner {
    header: HeaderName,
    issuer: String,
    ttl: Duration,
    key: Arc<SigningKey>,
    /// The published key set: the signing key first, then the previous keys.
    jwks: Bytes,
    /// Assertions already signed, by everything they state: a credential that comes
    /// again for the same upstream costs a lookup, not a signature.
    signed: Mutex<HashMap<Statement, Signed>>,
}

/// Everything an assertion states but its times and its `jti`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Statement {
    audience: Box<str>,
    sub: Box<str>,
    scope: Option<Box<str>>,
    /// The copied claims as JSON text (a `Value` cannot be a key).
    claims: Box<str>,
    expires: Option<u64>,
}

#[derive(Debug)]
struct Signed {
    value: HeaderValue,
    /// Reused until then: half its lifetime, so an upstream never gets one about to
    /// expire.
    reuse_until: u64,
}

impl IdentitySigner {
    pub fn new(
        header: HeaderName,
        issuer: String,
        ttl: Duration,
        key: Arc<SigningKey>,
        previous: &[Jwk],
    ) -> Self {
        let keys: Vec<&Jwk> = std::iter::once(key.public()).chain(previous).collect();
        let jwks = Bytes::from(json!({ "keys": keys }).to_string());
        Self {
            header,
            issuer,
            ttl,
            key,
            jwks,
            signed: Mutex::new(HashMap::new()),
        }
    }

    /// The header the assertion travels in.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The key that signs; build keeps a generated one across reloads.
    pub fn key(&self) -> &Arc<SigningKey> {
        &self.key
    }

    /// `{"keys": [...]}`, as served at [`JWKS_PATH`].
    pub fn jwks(&self) -> &Bytes {
        &self.jwks
    }

    /// The assertion of `asserted` for `audience` (the upstream's name). It expires `ttl`
    /// from when it was signed, or when the credential does if that is sooner. One signed
    /// less than half its lifetime ago for the same statement is reused, `jti` and all:
    /// the `jti` is the id of the request it was signed for. `None` only if signing fails,
    /// which the caller must treat as a refusal.
    pub fn assertion(
        &self,
        asserted: &Asserted,
        audience: &str,
        request_id: &str,
        now: SystemTime,
    ) -> Option<HeaderValue> {
        let statement = Statement {
            audience: audience.into(),
            sub: asserted.sub.as_str().into(),
            scope: asserted.scope.as_deref().map(Into::into),
            claims: serde_json::to_string(&asserted.claims)
                .unwrap_or_default()
                .into_boxed_str(),
            expires: asserted.expires.map(seconds),
        };
        let now_secs = seconds(now);
        if let Some(signed) = lock(&self.signed).get(&statement)
            && now_secs < signed.reuse_until
        {
            return Some(signed.value.clone());
        }
        let value = self.sign(asserted, audience, request_id, now)?;
        let exp = self.expiry(asserted, now_secs);
        let reuse_until = now_secs + exp.saturating_sub(now_secs) / 2;
        let mut signed = lock(&self.signed);
        if signed.len() >= REMEMBERED_ASSERTIONS {
            signed.clear();
        }
        signed.insert(
            statement,
            Signed {
                value: value.clone(),
                reuse_until,
            },
        );
        Some(value)
    }

    fn expiry(&self, asserted: &Asserted, iat: u64) -> u64 {
        let exp = iat + self.ttl.as_secs();
        asserted
            .expires
            .map_or(exp, |credential| exp.min(seconds(credential)))
    }

    /// A fresh assertion, signed now.
    pub fn sign(
        &self,
        asserted: &Asserted,
        audience: &str,
        jti: &str,
        now: SystemTime,
    ) -> Option<HeaderValue> {
        let iat = seconds(now);
        let exp = self.expiry(asserted, iat);
        let mut claims = Map::with_capacity(asserted.claims.len() + 7);
        // Copied claims first: the reserved ones below always win.
        for (name, value) in &asserted.claims {
            claims.insert(name.clone(), value.clone());
        }
        claims.insert("iss".to_owned(), Value::from(self.issuer.as_str()));
        claims.insert("aud".to_owned(), Value::from(audience));
        claims.insert("sub".to_owned(), Value::from(asserted.sub.as_str()));
        claims.insert("iat".to_owned(), Value::from(iat));
        claims.insert("exp".to_owned(), Value::from(exp));
        claims.insert("jti".to_owned(), Value::from(jti));
        match &asserted.scope {
            Some(scope) => claims.insert("scope".to_owned(), Value::from(scope.as_str())),
            None => claims.remove("scope"),
        };
        let mut header = Header::new(self.key.alg);
        header.kid.clone_from(&self.key.public.common.key_id);
        let token = jsonwebtoken::encode(&header, &claims, &self.key.key).ok()?;
        HeaderValue::from_str(&token).ok()
    }
}

fn seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation};

    use super::*;

    fn verify(signer: &IdentitySigner, token: &str, audience: &str) -> Map<String, Value> {
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_slice(signer.jwks()).expect("the JWKS parses");
        let header = jsonwebtoken::decode_header(token).expect("header");
        let jwk = set
            .find(header.kid.as_deref().expect("a kid"))
            .expect("the kid is published");
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[audience]);
        validation.set_issuer(&["https://gw.example"]);
        jsonwebtoken::decode::<Map<String, Value>>(
            token,
            &DecodingKey::from_jwk(jwk).expect("usable JWK"),
            &validation,
        )
        .expect("the assertion verifies")
        .claims
    }

    fn signer(key: SigningKey) -> IdentitySigner {
        IdentitySigner::new(
            HeaderName::from_static("x-fluxlit-identity"),
            "https://gw.example".to_owned(),
            Duration::from_secs(60),
            Arc::new(key),
            &[],
        )
    }

    #[test]
    fn a_generated_key_signs_what_its_jwks_verifies_and_the_reserved_claims_win() {
        let signer = signer(SigningKey::generate().expect("a key"));
        let now = SystemTime::now();
        let expires = now + Duration::from_secs(20);
        let asserted = Asserted {
            sub: "ada".to_owned(),
            scope: Some("read write".to_owned()),
            claims: vec![
                ("email".to_owned(), Value::from("ada@example.org")),
                ("sub".to_owned(), Value::from("mallory")),
            ],
            expires: Some(expires),
        };
        let value = signer.sign(&asserted, "api", "req-1", now).expect("signed");
        let claims = verify(&signer, value.to_str().expect("text"), "api");
        assert_eq!(claims["sub"], "ada");
        assert_eq!(claims["scope"], "read write");
        assert_eq!(claims["email"], "ada@example.org");
        assert_eq!(claims["jti"], "req-1");
        let exp = claims["exp"].as_u64().expect("exp");
        let credential = expires
            .duration_since(UNIX_EPOCH)
            .expect("after the epoch")
            .as_secs();
        assert_eq!(exp, credential, "never past the credential's expiry");
    }

    #[test]
    fn the_same_statement_reuses_its_assertion_for_half_its_life_only() {
        let signer = signer(SigningKey::generate().expect("a key"));
        let ada = Asserted {
            sub: "ada".to_owned(),
            ..Asserted::default()
        };
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(1_000_000 + secs);
        let first = signer.assertion(&ada, "api", "r1", at(0)).expect("signed");
        assert_eq!(
            signer.assertion(&ada, "api", "r2", at(29)),
            Some(first.clone())
        );
        let other_upstream = signer.assertion(&ada, "ui", "r3", at(1)).expect("signed");
        assert_ne!(other_upstream, first);
        let bob = Asserted {
            sub: "bob".to_owned(),
            ..Asserted::default()
        };
        assert_ne!(
            signer.assertion(&bob, "api", "r4", at(1)),
            Some(first.clone())
        );
        let later = signer.assertion(&ada, "api", "r5", at(30)).expect("signed");
        assert_ne!(later, first, "signed afresh after half the ttl");
    }

    #[test]
    fn a_p256_key_signs_es256_and_garbage_is_refused() {
        let pem = include_bytes!("../../tests/fixtures/jose/ec-a.p8.pem");
        let key = SigningKey::from_pem(pem).expect("a P-256 key");
        assert_eq!(key.alg, Algorithm::ES256);
        let signer = signer(key);
        let value = signer
            .sign(&Asserted::default(), "ui", "req-2", SystemTime::now())
            .expect("signed");
        verify(&signer, value.to_str().expect("text"), "ui");
        assert!(matches!(
            SigningKey::from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            Err(IdentityKeyError::Unusable)
        ));
    }
}
