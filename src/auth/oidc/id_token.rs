//! Checks an id_token from the token endpoint (OpenID Connect Core §3.1.3.7) with the
//! IdP's JWKS, through the same [`JwksCache`](crate::auth::jwks::JwksCache) the jwt
//! providers use: signature (public-key algorithms the IdP announces only; never `none`
//! or HMAC), `iss`, `aud` containing the client id, `azp` when there are several
//! audiences (or whenever present), `exp`, `nbf`, `iat` and `nonce`.
//!
//! A custom provider's id_token (no JWKS: [`IdTokenKeys::Unverified`]) gets every check
//! but the signature.
//!
//! A failure names the check that failed ([`IdTokenError::check`]) and never the token.

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

use super::discovery::{Discovered, IdTokenKeys};
use crate::auth::claims::Claims;
use crate::auth::jwks::{JwksCache, KeyError};
use crate::auth::jwt::{MAX_TOKEN_BYTES, now_secs};

/// Why an id_token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdTokenError {
    /// A check failed: which one, and a sentence for the page and the log.
    Failed { check: &'static str, reason: String },
    /// The IdP's keys are not available (503).
    KeysUnavailable(String),
}

impl IdTokenError {
    fn failed(check: &'static str, reason: impl Into<String>) -> Self {
        Self::Failed {
            check,
            reason: reason.into(),
        }
    }

    /// The name of the failed check (`signature`, `iss`, `aud`, `nonce`, ...).
    pub fn check(&self) -> &'static str {
        match self {
            Self::Failed { check, .. } => check,
            Self::KeysUnavailable(_) => "keys",
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Self::Failed { reason, .. } | Self::KeysUnavailable(reason) => reason,
        }
    }
}

/// What the flow checks an id_token against.
#[derive(Debug)]
pub struct Expected<'a> {
    pub client_id: &'a str,
    pub nonce: &'a str,
    pub leeway: Duration,
}

/// The claims of `token` when every check passes.
pub async fn verify(
    token: &str,
    discovered: &Discovered,
    expected: &Expected<'_>,
) -> Result<Claims, IdTokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(IdTokenError::failed("size", "the id_token is too large"));
    }
    let claims = match &discovered.keys {
        IdTokenKeys::Jwks(jwks) => signed_claims(token, jwks, discovered, expected).await?,
        IdTokenKeys::Unverified => unverified_claims(token, &discovered.issuer, expected)?,
    };
    check_identity_claims(&claims, expected)?;
    Ok(claims)
}

/// Signature, `iss`, `aud`, `exp` and `nbf`, with a key of the IdP's JWKS.
async fn signed_claims(
    token: &str,
    jwks: &JwksCache,
    discovered: &Discovered,
    expected: &Expected<'_>,
) -> Result<Claims, IdTokenError> {
    let alg = header_alg(token)?;
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| IdTokenError::failed("header", "the id_token's header is malformed"))?;
    if header.crit.is_some() {
        return Err(IdTokenError::failed(
            "header",
            "the id_token has critical header parameters this gateway does not support",
        ));
    }
    if header.alg != alg || !discovered.algorithms.contains(&alg) {
        return Err(IdTokenError::failed(
            "alg",
            format!("the id_token's algorithm {alg:?} is not one the IdP announced"),
        ));
    }
    let found = jwks
        .key_for(header.kid.as_deref(), alg)
        .await
        .map_err(|err| match err {
            KeyError::UnknownKey(text) => IdTokenError::failed(
                "signature",
                format!("no key of the IdP's JWKS can have signed the id_token: {text}"),
            ),
            KeyError::Unavailable(text) => IdTokenError::KeysUnavailable(text),
        })?;
    let key = found
        .key()
        .ok_or_else(|| IdTokenError::failed("signature", "no key verifies the id_token"))?;

    let mut validation = Validation::new(alg);
    validation.set_issuer(&[&discovered.issuer]);
    validation.set_audience(&[expected.client_id]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = expected.leeway.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|err| describe(err.kind()))
}

/// `iss`, `aud`, `exp` and `nbf` of an id_token whose signature nothing can check (a
/// custom provider's: it came straight from the token endpoint, so TLS vouches for it).
fn unverified_claims(
    token: &str,
    issuer: &str,
    expected: &Expected<'_>,
) -> Result<Claims, IdTokenError> {
    let malformed = || IdTokenError::failed("format", "the id_token is malformed");
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(IdTokenError::failed(
            "header",
            "the id_token is not a JWT (header.payload.signature)",
        ));
    };
    let claims: Claims = decode_segment(payload)
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(malformed)?;

    match claims.get("iss").and_then(Value::as_str) {
        Some(iss) if iss.trim_end_matches('/') == issuer.trim_end_matches('/') => {}
        Some(_) => return Err(describe(&ErrorKind::InvalidIssuer)),
        None => return Err(IdTokenError::failed("iss", "the id_token has no iss claim")),
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == expected.client_id,
        Some(Value::Array(auds)) => auds.iter().any(|aud| aud == expected.client_id),
        _ => return Err(IdTokenError::failed("aud", "the id_token has no aud claim")),
    };
    if !audience_ok {
        return Err(describe(&ErrorKind::InvalidAudience));
    }
    let now = now_secs();
    let leeway = expected.leeway.as_secs();
    let exp = claims
        .get("exp")
        .ok_or_else(|| IdTokenError::failed("exp", "the id_token has no exp claim"))?
        .as_u64()
        .ok_or_else(|| IdTokenError::failed("exp", "the id_token's exp is not a number"))?;
    if now > exp.saturating_add(leeway) {
        return Err(describe(&ErrorKind::ExpiredSignature));
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf
            .as_u64()
            .ok_or_else(|| IdTokenError::failed("nbf", "the id_token's nbf is not a number"))?;
        if nbf > now.saturating_add(leeway) {
            return Err(describe(&ErrorKind::ImmatureSignature));
        }
    }
    Ok(claims)
}

/// `sub`, `iat`, `azp` and `nonce`: the checks every id_token passes, signed or not.
fn check_identity_claims(claims: &Claims, expected: &Expected<'_>) -> Result<(), IdTokenError> {
    match claims.get("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => {}
        Some(_) => return Err(IdTokenError::failed("sub", "the id_token's sub is empty")),
        None => return Err(IdTokenError::failed("sub", "the id_token has no sub claim")),
    }
    let iat = claims
        .get("iat")
        .ok_or_else(|| IdTokenError::failed("iat", "the id_token has no iat claim"))?
        .as_u64()
        .ok_or_else(|| IdTokenError::failed("iat", "the id_token's iat is not a number"))?;
    if iat > now_secs().saturating_add(expected.leeway.as_secs()) {
        return Err(IdTokenError::failed(
            "iat",
            "the id_token was issued in the future",
        ));
    }
    let several_audiences = claims
        .get("aud")
        .and_then(Value::as_array)
        .is_some_and(|audiences| audiences.len() > 1);
    match claims.get("azp") {
        Some(Value::String(azp)) if azp == expected.client_id => {}
        Some(_) => {
            return Err(IdTokenError::failed(
                "azp",
                "the id_token was issued to another client (azp)",
            ));
        }
        None if several_audiences => {
            return Err(IdTokenError::failed(
                "azp",
                "the id_token has several audiences and no azp",
            ));
        }
        None => {}
    }
    match claims.get("nonce") {
        Some(Value::String(nonce)) if constant_time_eq(nonce, expected.nonce) => Ok(()),
        Some(_) => Err(IdTokenError::failed(
            "nonce",
            "the id_token's nonce is not this login's",
        )),
        None => Err(IdTokenError::failed("nonce", "the id_token has no nonce")),
    }
}

/// The header's `alg`, read before anything else so `none` is named as such.
fn header_alg(token: &str) -> Result<Algorithm, IdTokenError> {
    let malformed = || IdTokenError::failed("header", "the id_token is not a signed JWT");
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let header: Value = decode_segment(header)
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(malformed)?;
    let name = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name.eq_ignore_ascii_case("none") || signature.is_empty() {
        return Err(IdTokenError::failed(
            "alg",
            "the id_token is unsigned (alg none)",
        ));
    }
    name.parse::<Algorithm>()
        .map_err(|_| IdTokenError::failed("alg", "the id_token's algorithm is not supported"))
}

/// base64url without padding, as JWS segments are written.
fn decode_segment(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

fn describe(kind: &ErrorKind) -> IdTokenError {
    let (check, reason) = match kind {
        ErrorKind::ExpiredSignature => ("exp", "the id_token has expired"),
        ErrorKind::ImmatureSignature => ("nbf", "the id_token is not valid yet"),
        ErrorKind::InvalidIssuer => ("iss", "the id_token's issuer is not the IdP's"),
        ErrorKind::InvalidAudience => ("aud", "the id_token's audience is not this client"),
        ErrorKind::InvalidSignature => ("signature", "the id_token's signature does not verify"),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => ("alg", "the id_token's algorithm is not accepted"),
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => ("exp", "the id_token has no exp claim"),
            "iss" => ("iss", "the id_token has no iss claim"),
            "aud" => ("aud", "the id_token has no aud claim"),
            "sub" => ("sub", "the id_token has no sub claim"),
            _ => ("claims", "the id_token misses a required claim"),
        },
        ErrorKind::InvalidClaimFormat(_) => {
            ("claims", "a claim of the id_token has the wrong type")
        }
        _ => ("format", "the id_token is malformed"),
    };
    IdTokenError::failed(check, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_segments_decode() {
        assert_eq!(
            decode_segment("eyJhbGciOiJub25lIn0").unwrap(),
            br#"{"alg":"none"}"#
        );
        assert_eq!(decode_segment("YQ").unwrap(), b"a");
        assert!(decode_segment("a+b").is_none());
    }

    #[test]
    fn unsigned_tokens_are_named() {
        let error = header_alg("eyJhbGciOiJub25lIn0.e30.").unwrap_err();
        assert_eq!(error.check(), "alg");
        assert!(error.reason().contains("none"));
        assert_eq!(header_alg("a.b").unwrap_err().check(), "header");
    }
}
