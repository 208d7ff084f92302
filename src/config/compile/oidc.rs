//! Compiling `kind = "oidc"` providers and the endpoints they serve.

use std::collections::BTreeMap;
use std::sync::Arc;

use url::Url;

use super::super::diagnostic::Diagnostic;
use super::super::model::{self, StoreRef};
use super::super::validate::parse_cidr;
use super::CompileContext;
use crate::auth::jwks::JwksSettings;
use crate::auth::oidc::discovery::{Discovery, DiscoverySettings, ManualEndpoints};
use crate::auth::oidc::redis_store::{RedisStore, RedisTarget};
use crate::auth::oidc::store::{MemoryStore, Store};
use crate::auth::oidc::{self, AuthEndpoints, ClientSecret, OidcProvider, StoreSettings};
use crate::auth::secrets;
use crate::auth::token::Minter;
use crate::auth::{Check, Provider};
use crate::config::Config;
use crate::snapshot::Snapshot;

/// The login endpoints of every oidc provider, matched before the routes, and their
/// router: built here, once per snapshot.
pub(super) fn auth_endpoints(providers: &BTreeMap<String, Arc<Provider>>) -> AuthEndpoints {
    crate::serve::login::endpoints(providers.values().filter_map(
        |provider| match &provider.check {
            Check::Oidc(oidc) => Some(oidc),
            Check::Jwt(_) | Check::TrustedProxyUser => None,
        },
    ))
}

/// An oidc provider. Its client secret and its mint provider's secret are read now;
/// discovery (and the IdP's JWKS) run in the background. Discovery and store are kept
/// from the previous snapshot's provider of the same name while their settings stay the
/// same, so a reload keeps logins in progress and never waits on the network.
pub(super) fn compile_oidc(
    name: &str,
    path: &str,
    settings: &model::AuthProvider,
    config: &Config,
    previous: Option<&Snapshot>,
    ctx: &CompileContext,
) -> Result<OidcProvider, Diagnostic> {
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
        .map_err(|message| Diagnostic::error(format!("{path}.client_secret"), message))?;
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
    let base_path = public_base_url.path().trim_end_matches('/').to_owned();
    let paths = settings.paths.clone().unwrap_or_default();
    let redirect_uri = openidconnect::RedirectUrl::new(format!("{public_base}{}", paths.callback))
        .map_err(|err| {
            Diagnostic::error(
                format!("{path}.paths.callback"),
                format!("not a usable redirect URI: {err}"),
            )
        })?;

    let exchange_from = match &settings.exchange_from {
        Some(entries) => entries.clone(),
        None => oidc::DEFAULT_EXCHANGE_FROM
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

    let previous = previous
        .and_then(|snapshot| snapshot.providers.get(name))
        .and_then(|provider| match &provider.check {
            Check::Oidc(oidc) => Some(Arc::clone(oidc)),
            Check::Jwt(_) | Check::TrustedProxyUser => None,
        });
    let discovery_settings = DiscoverySettings {
        issuer_url,
        jwks: JwksSettings {
            ttl: settings.jwks_cache_ttl.get(),
            refetch_interval: settings.jwks_refetch_interval.get(),
            max_stale: settings.jwks_max_stale.get(),
        },
        manual: manual_endpoints(settings),
    };
    let discovery = match &previous {
        Some(old) if old.discovery.serves(&discovery_settings) => Arc::clone(&old.discovery),
        _ => Discovery::new(name, discovery_settings)
            .map_err(|message| Diagnostic::error(path, message))?,
    };
    discovery.start();

    let store_settings = compile_store_settings(path, settings, ctx)?;
    let store: Arc<dyn Store> = match (&previous, &store_settings) {
        (Some(old), _) if old.store_settings == store_settings => Arc::clone(&old.store),
        (_, StoreSettings::Memory { max_entries }) => Arc::new(MemoryStore::new(*max_entries)),
        (_, StoreSettings::Redis { target }) => Arc::new(
            RedisStore::new(name, target.clone())
                .map_err(|message| Diagnostic::error(format!("{path}.store"), message))?,
        ),
    };

    let ttl =
        |value: Option<crate::config::units::Duration>, default| value.map_or(default, |d| d.get());
    Ok(OidcProvider {
        name: name.into(),
        client_id,
        client_secret: ClientSecret(client_secret),
        scopes: settings
            .scopes
            .iter()
            .filter(|scope| *scope != "openid")
            .cloned()
            .collect(),
        paths,
        login_ttl: ttl(settings.login_ttl, oidc::DEFAULT_LOGIN_TTL),
        auth_code_ttl: ttl(settings.auth_code_ttl, oidc::DEFAULT_AUTH_CODE_TTL),
        access_token_ttl: ttl(settings.access_token_ttl, oidc::DEFAULT_ACCESS_TOKEN_TTL),
        leeway: settings.leeway.get(),
        claims: settings.claims.clone(),
        exchange_from,
        redirect_uri,
        public_base,
        base_path,
        minter,
        discovery,
        store,
        store_settings,
    })
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
            .unwrap_or(oidc::DEFAULT_STORE_MAX_ENTRIES) as usize,
    };
    let target = match &settings.store {
        None => return Ok(memory()),
        Some(StoreRef::Inline(text)) if text == oidc::DEFAULT_STORE => return Ok(memory()),
        // Validation has checked it (and refused a password written in the file).
        Some(StoreRef::Inline(text)) => {
            RedisTarget::parse(text).map_err(|message| Diagnostic::error(&key, message))?
        }
        Some(StoreRef::Secret(secret)) => {
            let bytes = secrets::resolve(secret, &ctx.config_dir, ctx.env.as_ref())
                .map_err(|message| Diagnostic::error(&key, message))?;
            let text = std::str::from_utf8(bytes.expose())
                .map_err(|_| Diagnostic::error(&key, "the Redis URL is not UTF-8 text"))?;
            let source = match (&secret.env, &secret.file) {
                (Some(name), _) => format!("environment variable {name}"),
                (_, Some(file)) => format!("file {}", file.display()),
                (None, None) => "the secret".to_owned(),
            };
            RedisTarget::parse(text.trim())
                .map_err(|message| Diagnostic::error(&key, format!("{source}: {message}")))?
        }
    };
    Ok(StoreSettings::Redis { target })
}

/// The signing side of the `mint` provider: a jwt provider with an HS secret.
fn compile_minter(
    path: &str,
    settings: &model::AuthProvider,
    config: &Config,
    ctx: &CompileContext,
) -> Result<Minter, Diagnostic> {
    let mint_path = format!("{path}.mint");
    let name = settings
        .mint
        .as_deref()
        .ok_or_else(|| Diagnostic::error(&mint_path, "an oidc provider needs `mint`"))?;
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
    let secret =
        secrets::resolve(secret, &ctx.config_dir, ctx.env.as_ref()).map_err(|message| {
            Diagnostic::error(format!("auth.providers.{name}.hs256_secret"), message)
        })?;
    Minter::new(name, mint, &secret).map_err(|message| Diagnostic::error(&mint_path, message))
}

/// A custom provider's endpoints; validation made sure both or neither are set, and
/// that `allow_unverified_id_token_for_custom_oidc` accepts them.
fn manual_endpoints(settings: &model::AuthProvider) -> Option<ManualEndpoints> {
    Some(ManualEndpoints {
        authorization_endpoint: settings.authorization_endpoint.clone()?,
        token_endpoint: settings.token_endpoint.clone()?,
    })
}
