//! `fluxlit token issue`: mints a development token with a jwt provider's HMAC secret,
//! issuer and audience, so a developer can call a protected route without an IdP.

use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Map, Value, json};

use super::jwt::{now_secs, to_jsonwebtoken};
use super::secrets::SecretBytes;
use crate::config::model::{AuthProvider, ProviderKind};

/// Claims the minting sets itself and `--claim` may not override.
const RESERVED: &[&str] = &["iss", "aud", "sub", "exp", "iat", "nbf"];

/// What to put in the token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub sub: String,
    pub ttl: Duration,
    /// Extra string claims, e.g. `("scope", "read write")`.
    pub claims: Vec<(String, String)>,
}

/// The HMAC algorithm a provider mints with, or why it cannot mint.
pub fn minting_algorithm(name: &str, provider: &AuthProvider) -> Result<jsonwebtoken::Algorithm, String> {
    if provider.kind != ProviderKind::Jwt {
        return Err(format!("provider {name:?} is not a jwt provider: it has no tokens to mint"));
    }
    match provider.algorithms.iter().find(|alg| alg.is_hmac()) {
        Some(alg) => Ok(to_jsonwebtoken(*alg)),
        None => Err(format!(
            "provider {name:?} verifies with public keys (a JWKS); fluxlit can only mint tokens \
             for providers with an HS256/HS384/HS512 secret"
        )),
    }
}

pub fn mint(
    name: &str,
    provider: &AuthProvider,
    secret: &SecretBytes,
    request: &TokenRequest,
) -> Result<String, String> {
    let algorithm = minting_algorithm(name, provider)?;
    let now = now_secs();
    let audience = match provider.audience.as_ref().map(|a| a.values()) {
        Some(values) if values.len() == 1 => json!(values[0]),
        Some(values) => json!(values),
        None => return Err(format!("provider {name:?} has no audience")),
    };
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(provider.issuer.clone().unwrap_or_default()));
    claims.insert("aud".into(), audience);
    claims.insert("sub".into(), json!(request.sub));
    claims.insert("iat".into(), json!(now));
    claims.insert("nbf".into(), json!(now));
    claims.insert("exp".into(), json!(now + request.ttl.as_secs()));
    for (key, value) in &request.claims {
        if RESERVED.contains(&key.as_str()) {
            return Err(format!("--claim {key}=... is set by fluxlit itself; use --sub or --ttl"));
        }
        claims.insert(key.clone(), Value::String(value.clone()));
    }
    let key = EncodingKey::from_secret(secret.expose())
        .map_err(|err| format!("unusable secret: {err}"))?;
    jsonwebtoken::encode(&Header::new(algorithm), &claims, &key)
        .map_err(|err| format!("cannot sign the token: {err}"))
}
