//! Bearer JWT verification with pinned algorithms.
//!
//! Keys are decoded once at compile time; a request only splits the token, picks the
//! key its `alg` family calls for (the HMAC secret for HS*, the JWKS for everything
//! else — never the other way round) and verifies. `none` cannot be configured.
//! A token that verified is remembered ([`VerifiedTokens`]) until it expires or, for a
//! JWKS key, until the key set changes: an RS256 check costs tens of microseconds, an
//! HS256 one (parsing included) a few, the lookup a fraction of one.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::claims::Claims;
use super::jwks::{JwksCache, KeyError};
use super::verified::VerifiedTokens;
use crate::config::model;

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// How many verified tokens a provider remembers (each costs about the size of its
/// claims plus ~100 bytes).
pub const REMEMBERED_TOKENS: usize = 8 * 1024;

/// Why a token was refused. The description is safe to show the client: it never
/// contains the token or a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Invalid(String),
    /// The provider's keys are not available (503, not the client's fault).
    KeysUnavailable(String),
}

#[derive(Debug)]
pub struct JwtVerifier {
    /// One precomputed validation per accepted algorithm.
    accepted: Vec<(Algorithm, Validation)>,
    hmac_key: Option<DecodingKey>,
    jwks: Option<Arc<JwksCache>>,
    /// Verified tokens; a reload starts a new verifier and so an empty memory (a changed
    /// secret can never leave a token behind).
    verified: VerifiedTokens,
    leeway_secs: u64,
}

impl JwtVerifier {
    pub fn new(
        provider: &model::AuthProvider,
        hmac_key: Option<DecodingKey>,
        jwks: Option<Arc<JwksCache>>,
    ) -> Self {
        let issuer = provider.issuer.clone().unwrap_or_default();
        let audience = provider
            .audience
            .as_ref()
            .map(model::Audience::values)
            .unwrap_or_default();
        let leeway_secs = provider.leeway.get().as_secs();
        let accepted = provider
            .algorithms
            .iter()
            .map(|&alg| {
                let alg = to_jsonwebtoken(alg);
                let mut validation = Validation::new(alg);
                validation.set_issuer(&[&issuer]);
                validation.set_audience(&audience);
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                validation.leeway = leeway_secs;
                validation.validate_exp = true;
                validation.validate_nbf = true;
                (alg, validation)
            })
            .collect();
        let verified = VerifiedTokens::new(if jwks.is_some() { REMEMBERED_TOKENS } else { 0 });
        Self {
            accepted,
            hmac_key,
            jwks,
            verified,
            leeway_secs,
        }
    }

    pub fn jwks(&self) -> Option<&Arc<JwksCache>> {
        self.jwks.as_ref()
    }

    /// The clock skew allowed on `exp`: a credential is good until `exp` plus this.
    pub fn leeway(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.leeway_secs)
    }

    /// Verifies signature, `alg`, `iss`, `aud`, `exp`, `nbf` and `iat`, or finds the token
    /// among those that verified (with the current JWKS keys) and have not expired.
    pub async fn verify(&self, token: &str) -> Result<Arc<Claims>, TokenError> {
        // The key-set generation a remembered token must have verified against: always 0
        // without a JWKS (the secret cannot change under a verifier); none while the JWKS
        // is not usable, so the full check answers (503).
        let generation_now = match &self.jwks {
            Some(jwks) => jwks.usable_generation(),
            None => Some(0),
        };
        let remembered = VerifiedTokens::digest(token);
        let now = now_secs();
        if let (Some(digest), Some(generation)) = (&remembered, generation_now)
            && let Some(claims) = self.verified.get(digest, generation, now)
        {
            return Ok(claims);
        }
        let (claims, key_generation) = self.verify_signature(token).await?;
        if let (Some(digest), Some(generation)) = (remembered, key_generation.or(generation_now)) {
            let exp = claims.get("exp").and_then(Value::as_u64);
            if let Some(exp) = exp {
                let valid_until = exp.saturating_add(self.leeway_secs);
                let claims = Arc::clone(&claims);
                self.verified
                    .insert(digest, claims, valid_until, generation, now);
            }
        }
        Ok(claims)
    }

    /// [`Self::verify`] without the memory of verified tokens: every check is made. Also
    /// returns the JWKS generation of the key that verified it (none for HMAC).
    pub async fn verify_signature(
        &self,
        token: &str,
    ) -> Result<(Arc<Claims>, Option<u64>), TokenError> {
        let invalid = |text: &str| TokenError::Invalid(text.to_owned());
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid("the token is too large"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|err| describe(err.kind()))?;
        // RFC 7515 §4.1.11: a critical extension the verifier does not understand (such as
        // `b64: false`) must be refused, not ignored.
        if header.crit.is_some() {
            return Err(invalid(
                "the token has critical header parameters this gateway does not support",
            ));
        }
        let Some((alg, validation)) = self.accepted.iter().find(|(alg, _)| *alg == header.alg)
        else {
            return Err(invalid("the token's algorithm is not accepted"));
        };
        let (claims, generation) = if is_hmac(*alg) {
            let key = self
                .hmac_key
                .as_ref()
                .ok_or_else(|| invalid("the token's algorithm is not accepted"))?;
            (decode(token, key, validation)?, None)
        } else {
            let jwks = self
                .jwks
                .as_ref()
                .ok_or_else(|| invalid("the token's algorithm is not accepted"))?;
            let found =
                jwks.key_for(header.kid.as_deref(), *alg)
                    .await
                    .map_err(|err| match err {
                        KeyError::UnknownKey(text) => TokenError::Invalid(text),
                        KeyError::Unavailable(text) => TokenError::KeysUnavailable(text),
                    })?;
            let key = found
                .key()
                .ok_or_else(|| invalid("no key verifies the token"))?;
            (decode(token, key, validation)?, Some(found.generation()))
        };
        if let Some(iat) = claims.get("iat") {
            let iat = iat
                .as_u64()
                .ok_or_else(|| invalid("the token's iat is not a number"))?;
            if iat > now_secs().saturating_add(self.leeway_secs) {
                return Err(invalid("the token was issued in the future"));
            }
        }
        Ok((Arc::new(claims), generation))
    }
}

fn decode(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Claims, TokenError> {
    jsonwebtoken::decode::<Claims>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|err| describe(err.kind()))
}

fn describe(kind: &ErrorKind) -> TokenError {
    let text = match kind {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet",
        ErrorKind::InvalidIssuer => "the token's issuer is not accepted",
        ErrorKind::InvalidAudience => "the token's audience is not accepted",
        ErrorKind::InvalidSignature => "the token's signature does not verify",
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => "the token's algorithm is not accepted",
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => "the token has no exp claim",
            "iss" => "the token has no iss claim",
            "aud" => "the token has no aud claim",
            _ => "the token misses a required claim",
        },
        ErrorKind::InvalidClaimFormat(_) => "a claim of the token has the wrong type",
        ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidToken => "the token is malformed",
        _ => "the token cannot be verified",
    };
    TokenError::Invalid(text.to_owned())
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn to_jsonwebtoken(alg: model::Algorithm) -> Algorithm {
    use model::Algorithm as A;
    match alg {
        A::HS256 => Algorithm::HS256,
        A::HS384 => Algorithm::HS384,
        A::HS512 => Algorithm::HS512,
        A::RS256 => Algorithm::RS256,
        A::RS384 => Algorithm::RS384,
        A::RS512 => Algorithm::RS512,
        A::PS256 => Algorithm::PS256,
        A::PS384 => Algorithm::PS384,
        A::PS512 => Algorithm::PS512,
        A::ES256 => Algorithm::ES256,
        A::ES384 => Algorithm::ES384,
        A::EdDSA => Algorithm::EdDSA,
    }
}
