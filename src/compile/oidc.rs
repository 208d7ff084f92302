//! Compiling `kind = "oidc"` providers.

use openidconnect::RedirectUrl;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use url::Url;

use super::CompileContext;
use crate::auth::allow::Allow;
use crate::auth::jwks::JwksSettings;
use crate::auth::oidc::discovery::{self, Discovered, DiscoverySettings, ManualEndpoints};
use crate::auth::oidc::seal::Sealer;
use crate::auth::oidc::{
    ClientSecret, ExchangeSecret, OidcSettings, SessionSettings, StoreSettings,
};
use crate::auth::secrets;
use crate::auth::token::Minter;
use crate::config::Config;
use crate::config::diagnostic::Diagnostic;
use crate::config::model::{self, StoreRef, oidc_defaults};
use crate::config::store_url::{RedisClientCert, RedisTarget, RedisTls};
use crate::config::validate::parse_cidr;

/// An oidc provider, compiled: its settings resolved (its client secret and its mint
/// provider's secret read, its URLs checked), and what `build` makes the discovery and
/// the store from.
#[derive(Debug)]
pub struct OidcPlan {
    pub settings: OidcSettings,
    pub discovery: DiscoverySettings,
    /// A custom provider's endpoints, checked: nothing to discover.
    pub manual: Option<Discovered>,
    pub store: StoreSettings,
    /// The login cookie's sealer, from `session_key`; `None`: build generates a key (or
    /// keeps the running provider's generated one).
    pub sealer: Option<Sealer>,
    /// Requests per client to the login endpoint.
    pub login_rate_limit: model::RateLimit,
}

/// An oidc provider. Its client secret and its mint provider's secret are read now;
/// discovery (and the IdP's JWKS) is `build`'s to make and the reload's to start.
pub(super) fn compile_oidc(
    name: &str,
    path: &str,
    settings: &model::AuthProvider,
    config: &Config,
    ctx: &CompileContext,
) -> Result<OidcPlan, Diagnostic> {
    let missing = |key: &str| {
        Diagnostic::error(
            format!("{path}.{key}"),
            format!("an oidc provider needs `{key}`"),
        )
    };
    let issuer_url = settings
        .issuer_url
        .clone()
        .ok_or_else(|| missing("issuer_url"))?;
    let client_id = settings
        .client_id
        .clone()
        .ok_or_else(|| missing("client_id"))?;
    let secret = settings
        .client_secret
        .as_ref()
        .ok_or_else(|| missing("client_secret"))?;
    let secret = secrets::resolve(secret, &ctx.config_dir, ctx.env.as_ref())
        .map_err(|error| Diagnostic::error(format!("{path}.client_secret"), error.to_string()))?;
    let client_secret = String::from_utf8(secret.expose().to_vec()).map_err(|_| {
        Diagnostic::error(
            format!("{path}.client_secret"),
            "the client secret is not UTF-8 text",
        )
    })?;

    let minter = compile_minter(path, settings, config, ctx)?;

    let public_base_url = config
        .server
        .public_base_url
        .as_deref()
        .and_then(|url| Url::parse(url).ok())
        .ok_or_else(|| {
            Diagnostic::error(
                "server.public_base_url",
                format!("provider {name:?} (oidc) needs the URL users reach the gateway at"),
            )
        })?;
    let public_base = public_base_url.as_str().trim_end_matches('/').to_owned();
    let public_origin = public_base_url.origin().ascii_serialization();
    let ttl =
        |value: Option<crate::config::units::Duration>, default| value.map_or(default, |d| d.get());
    // Routes that name the provider are protected by its browser sessions.
    let sessions = config
        .routes
        .iter()
        .any(|route| route.auth.as_deref() == Some(name))
        .then(|| SessionSettings {
            idle_timeout: ttl(
                settings.session_idle_timeout,
                oidc_defaults::SESSION_IDLE_TIMEOUT,
            ),
            max_age: ttl(settings.session_max_age, oidc_defaults::SESSION_MAX_AGE),
        });
    // Kept in the session: what the assertion states, and what the routes' `allow` reads.
    let mut asserted_claims = settings.claims.clone();
    add_missing(&mut asserted_claims, settings.claim_headers.keys().cloned());
    let mut session_claims = asserted_claims.clone();
    let groups_claim = super::groups_claim(settings);
    for route in &config.routes {
        if let Some(allow) = route
            .allow
            .as_ref()
            .filter(|_| route.auth.as_deref() == Some(name))
        {
            add_missing(
                &mut session_claims,
                Allow::needed_claims(allow, groups_claim),
            );
        }
    }
    let base_path = public_base_url.path().trim_end_matches('/').to_owned();
    let paths = settings.paths.clone().unwrap_or_default();
    let redirect_uri =
        RedirectUrl::new(format!("{public_base}{}", paths.callback)).map_err(|err| {
            Diagnostic::error(
                format!("{path}.paths.callback"),
                format!("not a usable redirect URI: {err}"),
            )
        })?;

    let exchange_from = match &settings.exchange_from {
        Some(entries) => entries.clone(),
        None => oidc_defaults::EXCHANGE_FROM
            .iter()
            .map(|entry| (*entry).to_owned())
            .collect(),
    };
    let exchange_from = exchange_from
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            parse_cidr(entry).ok_or_else(|| {
                Diagnostic::error(
                    format!("{path}.exchange_from[{index}]"),
                    format!("{entry:?} is not an IP address or CIDR range"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let exchange_secret = compile_exchange_secret(path, settings, ctx)?;
    let sealer = compile_session_key(path, settings, ctx)?;

    let discovery = DiscoverySettings {
        issuer_url,
        jwks: JwksSettings {
            ttl: settings.jwks_cache_ttl.get(),
            refetch_interval: settings.jwks_refetch_interval.get(),
            max_stale: settings.jwks_max_stale.get(),
        },
        manual: manual_endpoints(settings),
    };
    let manual = discovery
        .manual
        .as_ref()
        .map(|manual| discovery::manual_settings(&discovery.issuer_url, manual))
        .transpose()
        .map_err(|error| Diagnostic::error(path, error.to_string()))?;
    let store = compile_store_settings(path, settings, ctx)?;

    Ok(OidcPlan {
        settings: OidcSettings {
            client_id,
            client_secret: ClientSecret(client_secret),
            scopes: settings
                .scopes
                .iter()
                .filter(|scope| *scope != "openid")
                .cloned()
                .collect(),
            paths,
            login_ttl: ttl(settings.login_ttl, oidc_defaults::LOGIN_TTL),
            auth_code_ttl: ttl(settings.auth_code_ttl, oidc_defaults::AUTH_CODE_TTL),
            access_token_ttl: ttl(settings.access_token_ttl, oidc_defaults::ACCESS_TOKEN_TTL),
            leeway: settings.leeway.get(),
            claims: settings.claims.clone(),
            exchange_from,
            exchange_secret,
            redirect_uri,
            public_base,
            public_origin,
            base_path,
            minter,
            sessions,
            session_claims,
            asserted_claims,
        },
        discovery,
        manual,
        store,
        sealer,
        login_rate_limit: settings
            .login_rate_limit
            .unwrap_or(oidc_defaults::LOGIN_RATE_LIMIT),
    })
}

/// Appends to `names` those of `more` it lacks.
fn add_missing(names: &mut Vec<String>, more: impl IntoIterator<Item = String>) {
    for name in more {
        if !names.contains(&name) {
            names.push(name);
        }
    }
}

/// The store's settings: `"memory"` (the default), a `redis://` URL in the file, or one
/// read from the environment or a file. Messages never repeat a URL read from a secret.
fn compile_store_settings(
    path: &str,
    settings: &model::AuthProvider,
    ctx: &CompileContext,
) -> Result<StoreSettings, Diagnostic> {
    let key = format!("{path}.store");
    let memory = || StoreSettings::Memory {
        max_entries: settings
            .store_max_entries
            .unwrap_or(oidc_defaults::STORE_MAX_ENTRIES) as usize,
    };
    let target = match &settings.store {
        None => return Ok(memory()),
        Some(StoreRef::Inline(text)) if text == oidc_defaults::STORE => return Ok(memory()),
        // Validation has checked it (and refused a password written in the file).
        Some(StoreRef::Inline(text)) => {
            RedisTarget::parse(text).map_err(|error| Diagnostic::error(&key, error.to_string()))?
        }
        Some(StoreRef::Secret(secret)) => {
            let bytes = secrets::resolve(secret, &ctx.config_dir, ctx.env.as_ref())
                .map_err(|error| Diagnostic::error(&key, error.to_string()))?;
            let text = std::str::from_utf8(bytes.expose())
                .map_err(|_| Diagnostic::error(&key, "the Redis URL is not UTF-8 text"))?;
            let source = secrets::source(secret);
            RedisTarget::parse(text.trim())
                .map_err(|error| Diagnostic::error(&key, format!("{source}: {error}")))?
        }
    };
    let tls = read_store_tls(path, settings, ctx, &target)?;
    Ok(StoreSettings::Redis { target, tls })
}

/// What `store_tls` names, read now (a rejected reload reads nothing later). Also used by
/// `fluxlit doctor`, which connects with the same settings.
pub fn read_store_tls(
    path: &str,
    settings: &model::AuthProvider,
    ctx: &CompileContext,
    target: &RedisTarget,
) -> Result<Option<RedisTls>, Diagnostic> {
    let key = format!("{path}.store_tls");
    let Some(tls) = &settings.store_tls else {
        return Ok(None);
    };
    if !target.is_tls() {
        // A URL read from a secret: validation could not see its scheme.
        return Err(Diagnostic::error(&key, "applies to a rediss:// store only"));
    }
    let read_file = |name: &str, file: &std::path::Path| {
        let full = ctx.config_dir.join(file);
        std::fs::read(&full).map_err(|error| {
            Diagnostic::error(
                format!("{key}.{name}"),
                format!("cannot read {}: {error}", full.display()),
            )
        })
    };
    let ca_pem = tls
        .ca_file
        .as_deref()
        .map(|file| read_file("ca_file", file))
        .transpose()?;
    let client = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(secret)) => Some(RedisClientCert {
            cert_pem: read_file("client_cert", cert)?,
            key_pem: secrets::resolve(secret, &ctx.config_dir, ctx.env.as_ref())
                .map_err(|error| Diagnostic::error(format!("{key}.client_key"), error.to_string()))?
                .expose()
                .to_vec(),
        }),
        // Validation refuses one without the other.
        _ => None,
    };
    // Unusable PEM is found now, not at the first login (the Redis client takes a file
    // without a certificate in it for an empty list).
    if let Some(pem) = &ca_pem {
        pem_certificates(pem).map_err(|why| Diagnostic::error(format!("{key}.ca_file"), why))?;
    }
    if let Some(client) = &client {
        pem_certificates(&client.cert_pem)
            .map_err(|why| Diagnostic::error(format!("{key}.client_cert"), why))?;
        PrivateKeyDer::from_pem_slice(&client.key_pem).map_err(|_| {
            Diagnostic::error(
                format!("{key}.client_key"),
                "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            )
        })?;
    }
    let tls = RedisTls { ca_pem, client };
    target
        .client(Some(&tls))
        .map_err(|error| Diagnostic::error(&key, error.to_string()))?;
    Ok(Some(tls))
}

/// At least one certificate, and nothing unreadable, in PEM text.
fn pem_certificates(pem: &[u8]) -> Result<(), String> {
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(pem) {
        certificate.map_err(|error| format!("is not PEM certificates: {error}"))?;
        count += 1;
    }
    if count == 0 {
        return Err("holds no PEM certificate".to_owned());
    }
    Ok(())
}

/// The exchange secret, read now, and refused when shorter than
/// [`oidc_defaults::MIN_EXCHANGE_SECRET`] bytes: the exchange is reachable over the
/// network, so a guessable secret would be guessed.
fn compile_exchange_secret(
    path: &str,
    settings: &model::AuthProvider,
    ctx: &CompileContext,
) -> Result<Option<ExchangeSecret>, Diagnostic> {
    let Some(secret) = &settings.exchange_secret else {
        return Ok(None);
    };
    let key = format!("{path}.exchange_secret");
    let bytes = secrets::resolve(secret, &ctx.config_dir, ctx.env.as_ref())
        .map_err(|error| Diagnostic::error(&key, error.to_string()))?;
    let min = secrets::MinLength::exchange_secret();
    min.check(secret, &bytes)
        .map_err(|short| super::too_short(&key, &min, &short))?;
    Ok(Some(ExchangeSecret::new(bytes.expose())))
}

/// The login cookie's and session records' sealer, from `session_key` read now:
/// refused shorter than its [`secrets::MinLength`], as a guessable key would let anyone
/// forge a login state.
fn compile_session_key(
    path: &str,
    settings: &model::AuthProvider,
    ctx: &CompileContext,
) -> Result<Option<Sealer>, Diagnostic> {
    let Some(secret) = &settings.session_key else {
        return Ok(None);
    };
    let key = format!("{path}.session_key");
    let bytes = secrets::resolve(secret, &ctx.config_dir, ctx.env.as_ref())
        .map_err(|error| Diagnostic::error(&key, error.to_string()))?;
    let min = secrets::MinLength::session_key();
    min.check(secret, &bytes)
        .map_err(|short| super::too_short(&key, &min, &short))?;
    Sealer::from_secret(bytes.expose())
        .map(Some)
        .map_err(|error| Diagnostic::error(&key, error.to_string()))
}

/// The signing side of the `mint` provider: a jwt provider with an HS secret.
fn compile_minter(
    path: &str,
    settings: &model::AuthProvider,
    config: &Config,
    ctx: &CompileContext,
) -> Result<Option<Minter>, Diagnostic> {
    let mint_path = format!("{path}.mint");
    // Validation allows no mint only where routes name the provider (sessions).
    let Some(name) = settings.mint.as_deref() else {
        return Ok(None);
    };
    let mint =
        config.auth.providers.get(name).ok_or_else(|| {
            Diagnostic::error(&mint_path, format!("unknown auth provider {name:?}"))
        })?;
    let secret = mint.hs256_secret.as_ref().ok_or_else(|| {
        Diagnostic::error(
            &mint_path,
            format!("provider {name:?} has no hs256_secret to sign with"),
        )
    })?;
    let secret = secrets::resolve(secret, &ctx.config_dir, ctx.env.as_ref()).map_err(|error| {
        Diagnostic::error(
            format!("auth.providers.{name}.hs256_secret"),
            error.to_string(),
        )
    })?;
    Minter::new(name, mint, &secret)
        .map(Some)
        .map_err(|error| Diagnostic::error(&mint_path, error.to_string()))
}

/// A custom provider's endpoints; validation made sure both or neither are set, and
/// that `allow_unverified_id_token_for_custom_oidc` accepts them.
fn manual_endpoints(settings: &model::AuthProvider) -> Option<ManualEndpoints> {
    Some(ManualEndpoints {
        authorization_endpoint: settings.authorization_endpoint.clone()?,
        token_endpoint: settings.token_endpoint.clone()?,
    })
}
