//! Doctor checks that look outside the file: secrets in the environment and in files
//! (always), and the network (unless `--offline`): upstreams accept TCP, identity
//! providers' discovery documents and JWKS load, Redis answers PING, and the `Date`
//! headers of all of them agree with the local clock.
//!
//! Every network check is bounded by [`TIMEOUT`] and they all run at once, so a run
//! takes about as long as the slowest one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures_util::future::{BoxFuture, join_all};
use openidconnect::ProviderMetadataWithLogout;
use url::Url;

use super::static_checks::{is_non_public_ip, plain_http_upstream};
use super::{Finding, Severity};
use crate::auth::HttpClientError;
use crate::auth::jwks::JwksDocumentError;
use crate::auth::oidc::discovery::discovery_url;
use crate::auth::secrets::{self, MinLength, SecretBytes, source};
use crate::compile::CompileContext;
use crate::compile::oidc::read_store_tls;
use crate::config::Config;
use crate::config::model::{ProviderKind, SecretRef, StoreRef};
use crate::config::store_url::{RedisTarget, RedisTls};
use crate::http::error_chain;

pub const SECRET_MISSING: &str = "secret_missing";
pub const SECRET_EMPTY: &str = "secret_empty";
pub const SECRET_TOO_SHORT: &str = secrets::TOO_SHORT;
pub const STORE_URL_INVALID: &str = "store_url_invalid";
pub const JWKS_FILE_UNUSABLE: &str = "jwks_file_unusable";
pub const UPSTREAM_UNREACHABLE: &str = "upstream_unreachable";
pub const UPSTREAM_SILENT: &str = "upstream_silent";
pub const IDP_DISCOVERY: &str = "idp_discovery";
pub const JWKS_UNREACHABLE: &str = "jwks_unreachable";
pub const REDIS_UNREACHABLE: &str = "redis_unreachable";
pub const CLOCK_SKEW: &str = "clock_skew";
pub const CLOCK_DRIFT: &str = "clock_drift";

/// The findings only the network checks make: without them (`--offline`) an accepted
/// one of these cannot be told gone.
pub const NETWORK_IDS: &[&str] = &[
    UPSTREAM_UNREACHABLE,
    UPSTREAM_SILENT,
    IDP_DISCOVERY,
    JWKS_UNREACHABLE,
    REDIS_UNREACHABLE,
    CLOCK_SKEW,
    CLOCK_DRIFT,
    // Statically for addresses, online for names.
    super::static_checks::PLAIN_HTTP_UPSTREAM,
];

/// The longest any one network check may take.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// A clock difference above this is worth a warning even within the leeway.
pub const NOTICEABLE_SKEW: Duration = Duration::from_secs(5);
/// The tolerance for clocks when no provider sets a leeway.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// Documents larger than this are refused (as the gateway's own fetches do).
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// A Redis store to PING. The URL may hold a password: only `shown` is ever printed.
#[derive(Clone)]
pub struct RedisCheck {
    key: String,
    target: RedisTarget,
    tls: Option<RedisTls>,
}

impl fmt::Debug for RedisCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisCheck({}: {})", self.key, self.target.shown())
    }
}

/// A finding when the secret at `key` cannot be read, or is shorter than `min` (the
/// rule `serve` and `validate` refuse it by).
fn check_length(
    secret: &SecretRef,
    ctx: &CompileContext,
    key: String,
    min: &MinLength,
    found: &mut Vec<Finding>,
) {
    match resolve(secret, ctx, &key) {
        Ok(bytes) => {
            if let Err(short) = min.check(secret, &bytes) {
                found.push(Finding::new(
                    SECRET_TOO_SHORT,
                    Severity::Error,
                    key,
                    short.to_string(),
                    min.fix(),
                ));
            }
        }
        Err(finding) => found.push(*finding),
    }
}

/// Resolves every secret the config names, as the gateway would at compile time, and
/// returns what is wrong with them and the Redis stores to PING.
pub fn check_secrets(config: &Config, ctx: &CompileContext) -> (Vec<Finding>, Vec<RedisCheck>) {
    let mut found = Vec::new();
    let mut redis = Vec::new();
    for (name, provider) in &config.auth.providers {
        let path = format!("auth.providers.{name}");
        if let Some(secret) = &provider.hs256_secret
            && let Some(min) = MinLength::hmac(&provider.algorithms)
        {
            let key = format!("{path}.hs256_secret");
            check_length(secret, ctx, key, &min, &mut found);
        }
        if let Some(file) = &provider.jwks_file
            && let Err(why) = load_jwks_file(&ctx.config_dir.join(file))
        {
            found.push(Finding::new(
                JWKS_FILE_UNUSABLE,
                Severity::Error,
                format!("{path}.jwks_file"),
                why.to_string(),
                "point jwks_file at a JWKS document with the issuer's public signing keys \
                 (relative paths start at the config file's directory)",
            ));
        }
        if provider.kind != ProviderKind::Oidc {
            continue;
        }
        if let Some(secret) = &provider.client_secret
            && let Err(finding) = resolve(secret, ctx, &format!("{path}.client_secret"))
        {
            found.push(*finding);
        }
        if let Some(secret) = &provider.exchange_secret {
            let key = format!("{path}.exchange_secret");
            check_length(secret, ctx, key, &MinLength::exchange_secret(), &mut found);
        }
        if let Some(secret) = &provider.session_key {
            let key = format!("{path}.session_key");
            check_length(secret, ctx, key, &MinLength::session_key(), &mut found);
        }
        let key = format!("{path}.store");
        let url = match &provider.store {
            Some(StoreRef::Inline(text)) if text != "memory" => text.clone(),
            Some(StoreRef::Secret(secret)) => match resolve(secret, ctx, &key) {
                Ok(bytes) => String::from_utf8_lossy(bytes.expose()).trim().to_owned(),
                Err(finding) => {
                    found.push(*finding);
                    continue;
                }
            },
            _ => continue,
        };
        match RedisTarget::parse(&url) {
            Ok(target) => match read_store_tls(&path, provider, ctx, &target) {
                Ok(tls) => redis.push(RedisCheck { key, target, tls }),
                Err(diagnostic) => found.push(Finding::new(
                    STORE_URL_INVALID,
                    Severity::Error,
                    diagnostic.path.clone(),
                    diagnostic.message.clone(),
                    "point store_tls at readable PEM files, on a rediss:// store",
                )),
            },
            Err(error) => found.push(Finding::new(
                STORE_URL_INVALID,
                Severity::Error,
                key,
                format!("the Redis URL is unusable: {error}"),
                "give a URL like redis://host:6379/0 (with its password, if any, in the \
                 environment or a file)",
            )),
        }
    }
    (found, redis)
}

/// Why a `jwks_file` is no use, as the doctor words it.
#[derive(Debug, thiserror::Error)]
enum JwksFileError {
    #[error("cannot read the JWKS file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the JWKS file {}: {source}", path.display())]
    Unusable {
        path: PathBuf,
        #[source]
        source: JwksDocumentError,
    },
}

fn load_jwks_file(path: &Path) -> Result<usize, JwksFileError> {
    let bytes = std::fs::read(path).map_err(|source| JwksFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    crate::auth::jwks::usable_key_count(&bytes).map_err(|source| JwksFileError::Unusable {
        path: path.to_owned(),
        source,
    })
}

/// The secret, or the finding that says why it cannot be read (boxed: a finding is
/// large beside the bytes).
fn resolve(
    secret: &SecretRef,
    ctx: &CompileContext,
    key: &str,
) -> Result<SecretBytes, Box<Finding>> {
    secrets::resolve(secret, &ctx.config_dir, ctx.env.as_ref()).map_err(|error| {
        Box::new(if error.is_empty() {
            Finding::new(
                SECRET_EMPTY,
                Severity::Error,
                key,
                format!("the secret in {} is empty", source(secret)),
                "put the secret there; the gateway refuses to start without it",
            )
        } else {
            Finding::new(
                SECRET_MISSING,
                Severity::Error,
                key,
                format!("cannot read the secret: {error}"),
                match &secret.env {
                    Some(name) => format!(
                        "set {name} in the gateway's environment; the gateway refuses to start \
                         without it"
                    ),
                    None => "create the file (relative paths start at the config file's \
                             directory); the gateway refuses to start without it"
                        .to_owned(),
                },
            )
        })
    })
}

/// Checks everything the config reaches over the network, concurrently.
pub async fn check_network(config: &Config, redis: &[RedisCheck]) -> Vec<Finding> {
    let providers = &config.auth.providers;
    // Upstreams see tokens of every provider: the strictest leeway applies to them.
    let upstream_leeway = providers
        .values()
        .filter(|p| matches!(p.kind, ProviderKind::Jwt | ProviderKind::Oidc))
        .map(|p| p.leeway.get())
        .min()
        .unwrap_or(DEFAULT_LEEWAY);

    let mut checks: Vec<BoxFuture<'_, Vec<Finding>>> = Vec::new();
    for (name, upstream) in &config.upstreams {
        if let Some(url) = &upstream.url {
            checks.push(Box::pin(check_upstream(name, url, upstream_leeway)));
        }
    }
    for (name, provider) in providers {
        let leeway = provider.leeway.get();
        match (provider.kind, &provider.issuer_url, &provider.jwks_url) {
            (ProviderKind::Oidc, Some(issuer_url), _) => {
                checks.push(Box::pin(check_idp(name, issuer_url, leeway)));
            }
            (ProviderKind::Jwt, _, Some(jwks_url)) => {
                let key = format!("auth.providers.{name}.jwks_url");
                checks.push(Box::pin(async move {
                    check_jwks(&key, &format!("provider {name:?}"), jwks_url, leeway).await
                }));
            }
            _ => {}
        }
    }
    for store in redis {
        checks.push(Box::pin(check_redis(store)));
    }
    join_all(checks).await.into_iter().flatten().collect()
}

async fn check_upstream(name: &str, text: &str, leeway: Duration) -> Vec<Finding> {
    let key = format!("upstreams.{name}.url");
    let Ok(url) = Url::parse(text) else {
        return Vec::new();
    };
    if url.scheme() == "unix" {
        // A socket on this host: judged by whether it accepts a connection.
        let connected =
            tokio::time::timeout(TIMEOUT, tokio::net::UnixStream::connect(url.path())).await;
        let why = match connected {
            Ok(Ok(_)) => return Vec::new(),
            Ok(Err(error)) => format!("accepts no connection: {error}"),
            Err(_) => format!("accepts no connection within {TIMEOUT:?}"),
        };
        return vec![Finding::new(
            UPSTREAM_UNREACHABLE,
            Severity::Error,
            &key,
            format!("upstream {name:?} at {text} {why}"),
            "start the upstream, or correct its url; until then its routes answer 502 or 504",
        )];
    }
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Vec::new();
    };
    let address = format!("{host}:{port}");
    let unreachable = |why: String| {
        vec![Finding::new(
            UPSTREAM_UNREACHABLE,
            Severity::Error,
            &key,
            format!("upstream {name:?} at {address} {why}"),
            "start the upstream, or correct its url; until then its routes answer 502 or 504",
        )]
    };
    let stream = match tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(&address)).await
    {
        Err(_) => return unreachable(format!("accepts no TCP connection within {TIMEOUT:?}")),
        Ok(Err(error)) => return unreachable(format!("accepts no TCP connection: {error}")),
        Ok(Ok(stream)) => stream,
    };
    let mut found = Vec::new();
    let https = url.scheme() == "https";
    // Names are judged here, by the address they resolved to; literals statically.
    if !https
        && matches!(url.host(), Some(url::Host::Domain(_)))
        && let Ok(peer) = stream.peer_addr()
        && !is_non_public_ip(peer.ip())
    {
        found.push(plain_http_upstream(
            name,
            &format!("{host} ({})", peer.ip()),
        ));
    }
    drop(stream);
    if https {
        // Judged by its TCP connection only: the GET below goes through a client whose
        // roots and certificate are not the upstream's `ca_file` and `client_cert`, and
        // would call an upstream that works through the gateway silent.
        return found;
    }
    // Any answer will do, even a 404: only its Date header is read.
    match fetch(text, 0).await {
        Ok(fetched) => found.extend(clock_finding(
            &key,
            &format!("upstream {name:?}"),
            &fetched,
            leeway,
        )),
        Err(error) => found.push(Finding::new(
            UPSTREAM_SILENT,
            Severity::Warning,
            &key,
            format!("upstream {name:?} accepts connections but GET {text} failed: {error}"),
            "check that an HTTP server (not another service) listens there and is not stuck; \
             requests that time out get 504",
        )),
    }
    found
}

async fn check_idp(name: &str, issuer_url: &str, leeway: Duration) -> Vec<Finding> {
    let key = format!("auth.providers.{name}.issuer_url");
    let url = discovery_url(issuer_url);
    let failed = |why: String| {
        Finding::new(
            IDP_DISCOVERY,
            Severity::Error,
            &key,
            format!("the identity provider's discovery document {url} {why}"),
            "check issuer_url and that the identity provider is up; until discovery succeeds, \
             logins answer 503",
        )
    };
    let fetched = match fetch(&url, MAX_DOCUMENT_BYTES).await {
        Ok(fetched) => fetched,
        Err(error) => return vec![failed(format!("does not load: {error}"))],
    };
    let mut found: Vec<Finding> = clock_finding(
        &key,
        &format!("identity provider {name:?}"),
        &fetched,
        leeway,
    )
    .into_iter()
    .collect();
    if !fetched.status.is_success() {
        found.push(failed(format!("answers {}", fetched.status)));
        return found;
    }
    let metadata: ProviderMetadataWithLogout = match serde_json::from_slice(&fetched.body) {
        Ok(metadata) => metadata,
        Err(error) => {
            found.push(failed(format!(
                "is not an OpenID provider configuration: {error}"
            )));
            return found;
        }
    };
    let issuer = metadata.issuer().as_str();
    if issuer.trim_end_matches('/') != issuer_url.trim_end_matches('/') {
        found.push(failed(format!(
            "names the issuer {issuer:?}, not issuer_url {issuer_url:?}"
        )));
        return found;
    }
    let jwks_uri = metadata.jwks_uri().url().to_string();
    found.extend(
        check_jwks(
            &key,
            &format!("identity provider {name:?}"),
            &jwks_uri,
            leeway,
        )
        .await
        .into_iter()
        // The IdP's clock was read from its discovery document already.
        .filter(|f| f.id == JWKS_UNREACHABLE),
    );
    found
}

async fn check_jwks(key: &str, whose: &str, url: &str, leeway: Duration) -> Vec<Finding> {
    let failed = |why: String| {
        Finding::new(
            JWKS_UNREACHABLE,
            Severity::Error,
            key,
            format!("the JWKS of {whose} at {url} {why}"),
            "check the URL and that the key server is up; tokens cannot be verified without it",
        )
    };
    let fetched = match fetch(url, MAX_DOCUMENT_BYTES).await {
        Ok(fetched) => fetched,
        Err(error) => return vec![failed(format!("does not load: {error}"))],
    };
    let mut found: Vec<Finding> = clock_finding(key, whose, &fetched, leeway)
        .into_iter()
        .collect();
    if !fetched.status.is_success() {
        found.push(failed(format!("answers {}", fetched.status)));
    } else if let Err(error) = crate::auth::jwks::usable_key_count(&fetched.body) {
        found.push(failed(format!("is unusable: {error}")));
    }
    found
}

async fn check_redis(store: &RedisCheck) -> Vec<Finding> {
    let ping = async {
        let client = store.target.client(store.tls.as_ref()).map_err(|error| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "unusable",
                error.to_string(),
            ))
        })?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
    };
    let why = match tokio::time::timeout(TIMEOUT, ping).await {
        Ok(Ok(_)) => return Vec::new(),
        Ok(Err(error)) => format!("does not answer PING: {error}"),
        Err(_) => format!("does not answer PING within {TIMEOUT:?}"),
    };
    vec![Finding::new(
        REDIS_UNREACHABLE,
        Severity::Error,
        &store.key,
        format!("the Redis store at {} {why}", store.target.shown()),
        "start Redis or correct the URL; until it answers, logins answer 503",
    )]
}

/// An HTTP answer and when it was asked for and received, for the clock check.
#[derive(Debug)]
struct Fetched {
    status: reqwest::StatusCode,
    body: Vec<u8>,
    sent: SystemTime,
    received: SystemTime,
    date: Option<SystemTime>,
}

/// Why a GET got no answer to judge. The callers name the URL.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Client(#[from] HttpClientError),
    #[error("{}", error_chain(source))]
    Request {
        #[source]
        source: reqwest::Error,
    },
    #[error("the answer is over {max_body} bytes")]
    TooLarge { max_body: usize },
    #[error("no answer within {TIMEOUT:?}")]
    Timeout,
}

impl From<reqwest::Error> for FetchError {
    fn from(source: reqwest::Error) -> Self {
        Self::Request { source }
    }
}

/// GETs `url` within [`TIMEOUT`], keeping up to `max_body` bytes of the body.
async fn fetch(url: &str, max_body: usize) -> Result<Fetched, FetchError> {
    let client = crate::auth::http_client()?;
    let attempt = async {
        let sent = SystemTime::now();
        let mut response = client.get(url).timeout(TIMEOUT).send().await?;
        let received = SystemTime::now();
        let date = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| httpdate::parse_http_date(text).ok());
        let status = response.status();
        let mut body = Vec::new();
        if max_body > 0 {
            while let Some(chunk) = response.chunk().await? {
                body.extend_from_slice(&chunk);
                if body.len() > max_body {
                    return Err(FetchError::TooLarge { max_body });
                }
            }
        }
        Ok(Fetched {
            status,
            body,
            sent,
            received,
            date,
        })
    };
    tokio::time::timeout(TIMEOUT, attempt)
        .await
        .map_err(|_| FetchError::Timeout)?
}

/// How far the other side's clock is off ours, and in which direction (true: ahead).
/// The `Date` header has whole seconds, and it was made somewhere between sending and
/// receiving: only what lies outside that window counts.
fn skew(fetched: &Fetched) -> Option<(Duration, bool)> {
    let date = fetched.date?;
    let latest = date + Duration::from_secs(1);
    if let Ok(behind) = fetched.sent.duration_since(latest) {
        return Some((behind, false));
    }
    if let Ok(ahead) = date.duration_since(fetched.received) {
        return Some((ahead, true));
    }
    Some((Duration::ZERO, true))
}

fn clock_finding(key: &str, whose: &str, fetched: &Fetched, leeway: Duration) -> Option<Finding> {
    let (skew, ahead) = skew(fetched)?;
    let shown = humantime::format_duration(Duration::from_secs(skew.as_secs()));
    let direction = if ahead { "ahead of" } else { "behind" };
    let fix = "synchronise both clocks with NTP (chrony or systemd-timesyncd)";
    if skew > leeway {
        Some(Finding::new(
            CLOCK_SKEW,
            Severity::Error,
            key,
            format!(
                "the clock of {whose} is {shown} {direction} this machine's, more than the \
                 leeway of {}: fresh tokens are refused or expired ones accepted",
                humantime::format_duration(leeway)
            ),
            fix,
        ))
    } else if skew > NOTICEABLE_SKEW {
        Some(Finding::new(
            CLOCK_DRIFT,
            Severity::Warning,
            key,
            format!(
                "the clock of {whose} is {shown} {direction} this machine's (within the \
                 leeway of {})",
                humantime::format_duration(leeway)
            ),
            fix,
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetched(sent: u64, received: u64, date: u64) -> Fetched {
        let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        Fetched {
            status: reqwest::StatusCode::OK,
            body: Vec::new(),
            sent: at(sent),
            received: at(received),
            date: Some(at(date)),
        }
    }

    #[test]
    fn skew_counts_only_what_lies_outside_the_request() {
        assert_eq!(skew(&fetched(100, 101, 100)), Some((Duration::ZERO, true)));
        assert_eq!(
            skew(&fetched(100, 101, 130)),
            Some((Duration::from_secs(29), true))
        );
        assert_eq!(
            skew(&fetched(100, 101, 40)),
            Some((Duration::from_secs(59), false))
        );
    }

    #[test]
    fn skew_beyond_the_leeway_is_an_error_and_a_small_one_a_warning() {
        let leeway = Duration::from_secs(30);
        let error = clock_finding("k", "x", &fetched(100, 100, 200), leeway);
        assert_eq!(error.map(|f| f.id), Some(CLOCK_SKEW));
        let warning = clock_finding("k", "x", &fetched(100, 100, 110), leeway);
        assert_eq!(warning.map(|f| f.id), Some(CLOCK_DRIFT));
        assert_eq!(
            clock_finding("k", "x", &fetched(100, 100, 102), leeway),
            None
        );
    }
}
