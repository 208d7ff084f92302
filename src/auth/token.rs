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

/// Why a token cannot be minted. Each names the provider or the claim.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("provider {provider:?} is not a jwt provider: it has no tokens to mint")]
    NotJwt { provider: String },
    #[error(
        "provider {provider:?} verifies with public keys (a JWKS); fluxlit can only mint tokens \
         for providers with an HS256/HS384/HS512 secret"
    )]
    NoHmacAlgorithm { provider: String },
    #[error("provider {provider:?} has no audience")]
    NoAudience { provider: String },
    #[error("unusable secret of provider {provider:?}: {source}")]
    UnusableSecret {
        provider: String,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    #[error("--claim {claim}=... is set by fluxlit itself; use --sub or --ttl")]
    ReservedClaim { claim: String },
    #[error("cannot sign the token of provider {provider:?}: {source}")]
    Sign {
        provider: String,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
}

/// The HMAC algorithm a provider mints with, or why it cannot mint.
pub fn minting_algorithm(
    name: &str,
    provider: &AuthProvider,
) -> Result<jsonwebtoken::Algorithm, MintError> {
    if provider.kind != ProviderKind::Jwt {
        return Err(MintError::NotJwt {
            provider: name.to_owned(),
        });
    }
    match provider.algorithms.iter().find(|alg| alg.is_hmac()) {
        Some(alg) => Ok(to_jsonwebtoken(*alg)),
        None => Err(MintError::NoHmacAlgorithm {
            provider: name.to_owned(),
        }),
    }
}

pub fn mint(
    name: &str,
    provider: &AuthProvider,
    secret: &SecretBytes,
    request: &TokenRequest,
) -> Result<String, MintError> {
    let minter = Minter::new(name, provider, secret)?;
    let mut claims = Map::new();
    for (key, value) in &request.claims {
        if RESERVED.contains(&key.as_str()) {
            return Err(MintError::ReservedClaim { claim: key.clone() });
        }
        claims.insert(key.clone(), Value::String(value.clone()));
    }
    minter
        .mint(&request.sub, request.ttl, claims)
        .map(|minted| minted.token)
}

/// A jwt provider's signing side, built once: its HMAC key, algorithm, issuer and
/// audience. `fluxlit token issue` and the oidc login mint with it, so what they mint
/// verifies through that provider.
pub struct Minter {
    provider: String,
    algorithm: jsonwebtoken::Algorithm,
    key: EncodingKey,
    issuer: String,
    audience: Value,
}

/// A token just minted.
#[derive(Debug, Clone)]
pub struct Minted {
    pub token: String,
    /// Its `exp`, in seconds since the epoch.
    pub expires_at: u64,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("provider", &self.provider)
            .field("algorithm", &self.algorithm)
            .field("key", &"redacted")
            .finish()
    }
}

impl Minter {
    /// The minter of jwt provider `name`, or why it cannot mint.
    pub fn new(
        name: &str,
        provider: &AuthProvider,
        secret: &SecretBytes,
    ) -> Result<Self, MintError> {
        let algorithm = minting_algorithm(name, provider)?;
        let audience = match provider.audience.as_ref().map(|a| a.values()) {
            Some(values) if values.len() == 1 => json!(values[0]),
            Some(values) if !values.is_empty() => json!(values),
            _ => {
                return Err(MintError::NoAudience {
                    provider: name.to_owned(),
                });
            }
        };
        let key = EncodingKey::from_secret(secret.expose()).map_err(|source| {
            MintError::UnusableSecret {
                provider: name.to_owned(),
                source,
            }
        })?;
        Ok(Self {
            provider: name.to_owned(),
            algorithm,
            key,
            issuer: provider.issuer.clone().unwrap_or_default(),
            audience,
        })
    }

    /// The provider whose key this is.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Signs a token for `sub`, valid for `ttl` from now, with `extra` claims (which
    /// cannot override `iss`, `aud`, `sub`, `iat`, `nbf` or `exp`).
    pub fn mint(
        &self,
        sub: &str,
        ttl: Duration,
        extra: Map<String, Value>,
    ) -> Result<Minted, MintError> {
        let now = now_secs();
        let expires_at = now + ttl.as_secs();
        let mut claims = extra;
        claims.insert("iss".into(), json!(self.issuer));
        claims.insert("aud".into(), self.audience.clone());
        claims.insert("sub".into(), json!(sub));
        claims.insert("iat".into(), json!(now));
        claims.insert("nbf".into(), json!(now));
        claims.insert("exp".into(), json!(expires_at));
        let token = jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.key)
            .map_err(|source| MintError::Sign {
                provider: self.provider.clone(),
                source,
            })?;
        Ok(Minted { token, expires_at })
    }
}
