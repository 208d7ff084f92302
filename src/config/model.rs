//! The configuration model: exactly the shape of `fluxlit.toml`.
//!
//! These types are plain data. They derive `serde` (the file), `schemars` (the JSON
//! Schema editors validate against) and `validator` (checks on single fields). Checks
//! that span several fields live in `validate.rs`; nothing here knows about sockets.
//!
//! Unknown keys are errors: the schema says `additionalProperties: false`, and the
//! loader reports every unknown key with its path instead of stopping at the first.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use validator::{Validate, ValidationError};

use super::units::{ByteSize, Duration, Rate};

/// The whole `fluxlit.toml`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema, Validate)]
#[schemars(deny_unknown_fields, title = "fluxlit.toml")]
#[serde(default)]
pub struct Config {
    /// The public listener and what it adds to every request and response.
    #[validate(nested)]
    pub server: Server,

    /// The admin listener (`/healthz`, `/readyz`, `/snapshot`, `/metrics`). Absent: no admin
    /// listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub admin: Option<Admin>,

    /// Which peers are believed when they send `X-Forwarded-*`, `Forwarded`, a request id
    /// or a forward-auth user.
    pub trust: Trust,

    /// Upstream servers by name; routes refer to them by that name.
    pub upstreams: BTreeMap<String, Upstream>,

    /// Routes, matched by longest path prefix on segment boundaries (their order in the
    /// file does not matter).
    #[validate(nested)]
    pub routes: Vec<Route>,

    /// Auth providers that routes name in their `auth` key.
    #[serde(skip_serializing_if = "Auth::is_empty")]
    pub auth: Auth,

    /// Logging: the format and level of the gateway's log, and the access log.
    #[validate(nested)]
    pub log: Log,

    /// The signed identity assertion upstreams get on every request that passed a
    /// route's `auth`, and the key that signs it.
    pub identity: IdentityAssertion,

    /// What `fluxlit doctor` is told about this deployment: the findings accepted here.
    #[serde(skip_serializing_if = "Doctor::is_empty")]
    pub doctor: Doctor,
}

/// `[doctor]`: `fluxlit doctor`'s findings that this deployment has accepted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[serde(default)]
pub struct Doctor {
    /// Warnings (and infos) accepted for this deployment, each by its finding id
    /// (`"admin_not_loopback"`: wherever it occurs) or by id and key path
    /// (`"admin_not_loopback@admin.listen"`: at that key or below it). An accepted
    /// finding stays in the report, marked accepted, and `--strict` does not count it;
    /// an entry that accepts nothing (the finding no longer occurs, an unknown id, an
    /// error, which cannot be accepted) is a warning of its own, `accept_unused`. Write
    /// the reason in a comment beside the entry.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^[a-z][a-z0-9_]*(@[^@\s]+)?$")))]
    pub accept: Vec<String>,
}

impl Doctor {
    pub fn is_empty(&self) -> bool {
        self.accept.is_empty()
    }
}

/// `[identity]`: what the gateway verified, as a short-lived JWT for the upstream.
///
/// On every request that passed a route's `auth`, the upstream receives `header`: a
/// compact JWT signed by the gateway (EdDSA or ES256) with `iss` (`public_base_url`),
/// `aud` (the upstream's name), `sub`, `scope`, the provider's `claim_headers` claims,
/// `iat`, `exp` (at most `ttl` ahead, never past the credential's own expiry) and the
/// request id as `jti`. The public keys are at `/.well-known/fluxlit/jwks.json` on the
/// public listener and on the admin listener. No client can send the header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[serde(default)]
pub struct IdentityAssertion {
    /// The header the assertion travels in [default: "x-fluxlit-identity"].
    pub header: String,

    /// How long an assertion is valid [default: 60s].
    pub ttl: Duration,

    /// The PKCS#8 PEM private key that signs assertions: P-256 (ES256) or Ed25519
    /// (EdDSA), from `{ file = "identity.pem" }` or `{ env = "NAME" }`; reloaded when the
    /// file changes. Absent: an Ed25519 key is generated at start and kept across
    /// reloads, which a single replica can use; replicas need a shared key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<SecretRef>,

    /// Keys that signed before the current one: their public halves stay published (never
    /// used to sign) so assertions they signed verify until they expire.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub previous_keys: Vec<SecretRef>,
}

impl Default for IdentityAssertion {
    fn default() -> Self {
        Self {
            header: "x-fluxlit-identity".to_owned(),
            ttl: Duration::from_secs(60),
            signing_key: None,
            previous_keys: Vec::new(),
        }
    }
}

/// `[server]`: the public listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Validate)]
#[schemars(deny_unknown_fields)]
#[serde(default)]
pub struct Server {
    /// Address and port of the public listener. Static: changing it needs a restart.
    pub listen: SocketAddr,

    /// The URL users reach the gateway at. Its path, if other than `/`, is sent upstream
    /// as `X-Forwarded-Prefix`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_base_url: Option<String>,

    /// Security response headers added where the upstream did not set them: `true` (the
    /// defaults: `X-Content-Type-Options: nosniff`, `Referrer-Policy:
    /// strict-origin-when-cross-origin`, framing by the same origin only, a
    /// `Permissions-Policy` denying camera, microphone and geolocation, and HSTS on
    /// responses that go out over HTTPS: the TLS listener, or a trusted proxy's
    /// `X-Forwarded-Proto: https`), `false` (none), or a table whose values replace the
    /// defaults. Routes may override it.
    pub security_headers: SecurityHeaders,

    /// The request id header: kept from a trusted proxy, else generated; sent upstream and
    /// echoed on the response.
    pub request_id_header: String,

    /// How long a client may take to send a complete request head once it started one.
    /// A slow client (slowloris) is disconnected after it.
    #[validate(custom(function = "nonzero_duration"))]
    pub header_read_timeout: Duration,

    /// How long a keep-alive connection may sit idle between requests before it is closed.
    #[validate(custom(function = "nonzero_duration"))]
    pub idle_timeout: Duration,

    /// How long a client may accept no bytes of what the gateway has to send it (nginx's
    /// `send_timeout`): a connection stalled that long is closed, and the upstream
    /// request whose response it was receiving is cancelled. On HTTP/2 each stream has it
    /// too: a stream whose client takes none of its response for this long is reset and
    /// its upstream request cancelled, while the connection's other streams go on. A
    /// client that reads slowly but steadily is never cut; one that stops reading holds
    /// a bounded buffer (see SECURITY.md) for at most this long.
    #[validate(custom(function = "nonzero_duration"))]
    pub send_timeout: Duration,

    /// The largest request head accepted, in bytes, from the request line to the empty
    /// line that ends the head: a head of exactly this size is served, one byte more gets
    /// 431.
    pub max_header_size: ByteSize,

    /// The most client connections open at once; connections beyond it get 503 and are
    /// closed.
    #[validate(range(min = 1))]
    pub max_connections: u32,

    /// On SIGTERM or SIGINT: how long requests in flight and open WebSockets get to
    /// finish before the gateway exits anyway. Read when the shutdown starts.
    pub shutdown_grace: Duration,

    /// The largest request body a route accepts unless it sets its own
    /// `max_request_body`: a larger `Content-Length` gets 413 before anything is sent
    /// upstream, and a streamed body that grows past it is cut (413 if the response has
    /// not started, else the connection closes). Bodies are never buffered to check this.
    #[validate(custom(function = "nonzero_size"))]
    pub max_request_body: ByteSize,

    /// The most requests on their way to the upstreams at once, all clients together
    /// (from before a request is sent until its response body has been sent); one more
    /// gets 503 with `Retry-After` [default: 4096].
    #[validate(range(min = 1))]
    pub max_upstream_requests: u32,

    /// The most requests on their way to the upstreams at once from one client address
    /// (resolved through `trust.proxies`; IPv6 by its /64), so that one client cannot take
    /// every upstream connection with requests it never reads; one more gets 503 with
    /// `Retry-After`. Raise it when many users share an address (a corporate NAT)
    /// [default: 256].
    #[validate(range(min = 1))]
    pub max_upstream_requests_per_client: u32,

    /// HTTP/2 (over TLS): the most streams a client may have open at once on one
    /// connection (`SETTINGS_MAX_CONCURRENT_STREAMS`); each open stream is a request
    /// that may hold an upstream connection. Applies to new connections after a reload
    /// [default: 100].
    #[validate(range(min = 1, max = 10000))]
    pub http2_max_concurrent_streams: u32,

    /// HTTP/2: how many bytes of a request body a client may send on one stream ahead of
    /// the upstream reading them (the stream's receive window) [default: "256KiB"].
    #[validate(custom(function = "http2_window"))]
    pub http2_stream_window: ByteSize,

    /// HTTP/2: how many bytes of request bodies a client may send on one connection, all
    /// streams together, ahead of the upstreams reading them (the connection's receive
    /// window) [default: "1MiB"].
    #[validate(custom(function = "http2_window"))]
    pub http2_connection_window: ByteSize,

    /// HTTP/2: how many bytes of one stream's response the gateway buffers for a client
    /// that does not read them; past it, the upstream's response waits. With
    /// `http2_max_concurrent_streams` it bounds what one connection that reads nothing
    /// can make the gateway hold (SECURITY.md gives the worst case) [default: "64KiB"].
    #[validate(custom(function = "http2_send_buffer"))]
    pub http2_max_send_buffer: ByteSize,

    /// Accept HTTP/2 without TLS ("h2c") from a client that opens the connection with
    /// the HTTP/2 preface (prior knowledge), as load balancers that speak h2c to their
    /// backends do: the same header policy and HTTP/2 limits as over TLS. Only on a
    /// plain listener (over TLS, HTTP/2 is chosen by ALPN); `Upgrade: h2c` is never
    /// taken. Off, such a connection is closed unanswered. Applies to new connections
    /// after a reload [default: false].
    pub h2c: bool,

    /// Serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN) on `listen`. Whether TLS is on is static;
    /// the certificate and key files are reloaded when they change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

/// `[server.tls]`: the certificate and key of the public listener, in PEM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Tls {
    /// The certificate chain, leaf first (PEM; relative to the config file).
    pub cert_file: PathBuf,

    /// The private key of the leaf certificate (PEM: PKCS#8, PKCS#1 or SEC1; relative to
    /// the config file).
    pub key_file: PathBuf,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            public_base_url: None,
            security_headers: SecurityHeaders::Enabled(true),
            request_id_header: "x-request-id".to_owned(),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_header_size: ByteSize::kib(32),
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(30),
            tls: None,
            max_request_body: ByteSize::mib(100),
            max_upstream_requests: 4096,
            max_upstream_requests_per_client: 256,
            http2_max_concurrent_streams: 100,
            http2_stream_window: ByteSize::kib(256),
            http2_connection_window: ByteSize::mib(1),
            http2_max_send_buffer: ByteSize::kib(64),
            h2c: false,
        }
    }
}

/// `[admin]`: the operator's listener. Keep it on loopback or a private network.
///
/// It has limits of its own, so that whoever can reach it cannot take the gateway's file
/// descriptors or memory: a connection cap, a request head timeout, an idle timeout,
/// request heads of at most 16 KiB and bodies of at most 1 KiB (no endpoint takes one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Validate)]
#[schemars(deny_unknown_fields)]
pub struct Admin {
    /// Address and port of the admin listener. Static: changing it needs a restart.
    pub listen: SocketAddr,

    /// How long a connection may take to send a complete request head, counted from when
    /// it opens or its previous response was sent: a connection that sends nothing, or
    /// sends its head slowly (slowloris), is closed after it [default: 5s].
    #[serde(default = "admin_defaults::header_read_timeout")]
    #[validate(custom(function = "nonzero_duration"))]
    pub header_read_timeout: Duration,

    /// A connection that moves no bytes either way for this long is closed, a response
    /// in progress included (a client that stops reading `/metrics`) [default: 30s].
    #[serde(default = "admin_defaults::idle_timeout")]
    #[validate(custom(function = "nonzero_duration"))]
    pub idle_timeout: Duration,

    /// The most admin connections open at once; a connection beyond it is closed as soon
    /// as it is accepted. Probes and a metrics scraper need a few [default: 64].
    #[serde(default = "admin_defaults::max_connections")]
    #[validate(range(min = 1))]
    pub max_connections: u32,

    /// Which upstreams with a `health_check` must be up for `/readyz` to answer 200:
    /// `all` of those routes use, `any` one of them, or `none` (readiness ignores them)
    /// [default: "all"]. An upstream not yet probed counts as down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_requires: Option<ReadyRequires>,
}

impl Admin {
    /// An admin listener on `listen` with the default limits.
    pub fn on(listen: SocketAddr) -> Self {
        Self {
            listen,
            header_read_timeout: admin_defaults::header_read_timeout(),
            idle_timeout: admin_defaults::idle_timeout(),
            max_connections: admin_defaults::max_connections(),
            ready_requires: None,
        }
    }
}

/// What the admin listener uses where the file is silent.
pub mod admin_defaults {
    use super::Duration;

    pub fn header_read_timeout() -> Duration {
        Duration::from_secs(5)
    }

    pub fn idle_timeout() -> Duration {
        Duration::from_secs(30)
    }

    pub fn max_connections() -> u32 {
        64
    }
}

/// `[admin] ready_requires`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReadyRequires {
    #[default]
    All,
    Any,
    None,
}

/// `[log]`: what the gateway logs and how: its own events to stderr, the access log to
/// stdout or `access_log_path`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Validate)]
#[schemars(deny_unknown_fields)]
#[serde(default)]
pub struct Log {
    /// `pretty`: human-readable lines; `json`: one JSON object per line, for a log
    /// collector. The access log is written in the same format. Static: changing it
    /// needs a restart.
    pub format: LogFormat,

    /// Which events are logged: a level (`error`, `warn`, `info`, `debug`, `trace`) or
    /// per-target directives such as `"info,fluxlit::access=off"` (the `RUST_LOG`
    /// syntax). `--log` and `RUST_LOG` override it. Static: changing it needs a restart.
    #[validate(custom(function = "log_filter"))]
    pub level: String,

    /// One line per request (target `fluxlit::access`): method, path with credentials
    /// in the query redacted, route, status, duration, body bytes, request id and peer.
    /// Headers are never logged. Applies on reload.
    pub access_log: bool,

    /// Where the access log goes. Absent: standard output (what a container's log
    /// collector reads). A path (relative to the config file): that file, appended to,
    /// created with mode 0640 if missing, and opened again on SIGUSR1, so a rotation
    /// renames the file and then signals. Lines are buffered per worker thread and
    /// written in chunks of 64 KiB or every second, and before SIGHUP's reload, SIGUSR1's
    /// reopen and the exit, so a clean stop loses none. Static: changing it needs a
    /// restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[validate(custom(function = "log_file_path"))]
    pub access_log_path: Option<PathBuf>,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".to_owned(),
            access_log: true,
            access_log_path: None,
        }
    }
}

/// How log events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[trust]`: who may speak for the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[serde(default)]
pub struct Trust {
    /// Peers (CIDR ranges or single addresses) whose `X-Forwarded-*`, `Forwarded` and
    /// request id headers are believed, and, unless a `trusted_proxy_user` provider names
    /// its own `trusted_peers`, whose forward-auth user is. Empty: nobody's are.
    pub proxies: Vec<String>,

    /// Forward-auth identity header (set by an SSO proxy in front). Believed only by a
    /// `trusted_proxy_user` provider, from its `trusted_peers`; never forwarded to any
    /// upstream as such (a forward-auth route sends the user as `x-fluxlit-sub`).
    pub remote_user_header: String,
}

impl Default for Trust {
    fn default() -> Self {
        Self {
            proxies: Vec::new(),
            remote_user_header: "x-remote-user".to_owned(),
        }
    }
}

/// A gateway-provided upstream, for trying a config without any server behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Builtin {
    /// Answers with a JSON description of the request exactly as an upstream would
    /// receive it: method, path, query and headers after the header policy.
    Echo,
}

/// `[upstreams.NAME]`: a server the gateway forwards to. Give it `url` or `builtin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Validate)]
#[schemars(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"required": ["url"]}, {"required": ["builtin"]}]))]
#[serde(default)]
pub struct Upstream {
    /// Base URL, `http://host:port` or `https://host:port`, with an optional base path
    /// that is prepended to the forwarded path, or `unix:/absolute/path.sock` for a
    /// server on a Unix-domain socket (uvicorn `--uds`, gunicorn; its requests say
    /// `Host: localhost`). WebSocket upgrades go to the same address (over TLS too, for
    /// https). An https upstream's certificate is verified against the platform's
    /// roots, or `ca_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,

    /// Use a gateway-provided upstream instead of a server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builtin: Option<Builtin>,

    /// How long to wait for a TCP connection to the upstream; then 504. (A refused
    /// connection gets 502 at once.)
    #[validate(custom(function = "nonzero_duration"))]
    pub connect_timeout: Duration,

    /// How long the upstream has to answer with response headers, counted from the start
    /// of the request (an upload counts against it); then 504. Response bodies may
    /// stream for longer.
    #[validate(custom(function = "nonzero_duration"))]
    pub timeout: Duration,

    /// How long an idle pooled connection to the upstream is kept.
    #[validate(custom(function = "nonzero_duration"))]
    pub pool_idle_timeout: Duration,

    /// Probe the upstream in the background: `/readyz` answers 503 while an upstream a
    /// route needs is down (see `[admin] ready_requires`), `fluxlit_upstream_up` and
    /// `/snapshot` show its state and last error. Streamlit answers
    /// `/_stcore/health`; FastAPI apps usually have a `/healthz` or `/api/health`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub health_check: Option<HealthCheck>,

    /// The most requests on their way to this upstream at once (from before a request
    /// is sent until its response body has been sent); one more gets 503 with
    /// `Retry-After` and never reaches it. Protects a single-process server (one
    /// uvicorn worker, Streamlit) from a burst it would only queue. Absent: no cap of
    /// its own, only `[server]`'s `max_upstream_requests` and
    /// `max_upstream_requests_per_client`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[validate(range(
        min = 1,
        message = "must be at least 1 (leave max_in_flight out for no cap of its own)"
    ))]
    pub max_in_flight: Option<u32>,

    /// https only: a PEM file of the CA certificates the upstream's certificate must
    /// chain to, instead of the platform's roots (relative to the config file; read at
    /// load and every reload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,

    /// https only: the name the upstream's certificate must be valid for, and the SNI
    /// sent, instead of the URL's host (an upstream reached by IP address whose
    /// certificate names a host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,

    /// https only: a PEM file with the client certificate (and its chain) to present to
    /// an upstream that authenticates the gateway by certificate (mTLS); with
    /// `client_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,

    /// https only: the client certificate's private key (PEM), `{ file = "path" }` or
    /// `{ env = "NAME" }`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<SecretRef>,
}

/// `health_check = { path = "/_stcore/health", interval = "5s", ... }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Validate)]
#[schemars(deny_unknown_fields)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheck {
    /// `GET` this path (as given: not under the url's base path); a 2xx or 3xx answer
    /// within `timeout` is a success. Absent: a TCP connection is the probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Time between probes [default: "5s"].
    #[validate(custom(function = "nonzero_duration"))]
    pub interval: Duration,
    /// How long a probe may take [default: "2s"].
    #[validate(custom(function = "nonzero_duration"))]
    pub timeout: Duration,
    /// Successes in a row that bring a down upstream back up [default: 2].
    #[validate(range(min = 1, max = 100))]
    pub healthy: u32,
    /// Failures in a row that mark an up upstream down [default: 3].
    #[validate(range(min = 1, max = 100))]
    pub unhealthy: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            path: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            healthy: 2,
            unhealthy: 3,
        }
    }
}

impl Default for Upstream {
    fn default() -> Self {
        Self {
            url: None,
            builtin: None,
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(90),
            health_check: None,
            max_in_flight: None,
            ca_file: None,
            tls_server_name: None,
            client_cert: None,
            client_key: None,
        }
    }
}

/// `[[routes]]`: which requests go to which upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Validate)]
#[schemars(deny_unknown_fields)]
pub struct Route {
    /// A unique name, used in logs, metrics and error pages.
    #[validate(custom(function = "route_name"))]
    pub name: String,

    /// Path prefix, matched on segment boundaries: `/api` matches `/api`, `/api/` and
    /// `/api/x`, never `/apix`. The longest matching prefix wins.
    #[validate(custom(function = "path_prefix"))]
    pub path_prefix: String,

    /// Name of the upstream in `[upstreams]`.
    pub upstream: String,

    /// Remove `path_prefix` before forwarding (`/api/x` reaches the upstream as `/x`).
    #[serde(default)]
    pub strip_prefix: bool,

    /// Extra client headers to forward on top of the standard set. Never `authorization`,
    /// `cookie`, hop-by-hop or forwarding headers: those names are dropped with a warning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward_client_headers: Vec<String>,

    /// Name of a provider in `[auth.providers]`: requests without valid credentials get
    /// 401, and the upstream gets the verified identity headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,

    /// Scopes a token must carry (in its `scope` or `scp` claim) on this route; a token
    /// without them gets 403. Needs `auth`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_scopes: Vec<String>,

    /// Who may use this route besides being authenticated, checked against the verified
    /// claims (of the bearer token, or those the login session keeps):
    /// `{ emails = [...], email_domains = [...], groups = [...], claims = { NAME = [...] } }`.
    /// A user is admitted when any one listed condition matches; an absent or empty
    /// `allow` admits every authenticated user. Anyone else gets 403 (a page load in a
    /// login session: a page naming the user, with a logout link). Needs `auth` naming a
    /// jwt or oidc provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Allow>,

    /// Security response headers on this route, instead of `server.security_headers`:
    /// `false` (none), `true` (the server's), or a table whose values replace the
    /// server's (`""` removes that header on this route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_headers: Option<SecurityHeaders>,

    /// The largest request body on this route, instead of `server.max_request_body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(custom(function = "nonzero_size"))]
    pub max_request_body: Option<ByteSize>,

    /// The most WebSockets open at once on this route; a handshake beyond it gets 503.
    /// Each open tunnel to Streamlit is a live session in the Streamlit server, with its
    /// memory: size it to the sessions the app's servers can hold, and raise it for a
    /// busy app (every tunnel also counts against `server.max_connections`)
    /// [default: 1000].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(range(min = 1))]
    pub max_websockets: Option<u32>,

    /// A WebSocket on this route that carries no bytes either way for this long is
    /// closed (a 1001 close frame to both sides). Messages and pings both count: a live
    /// Streamlit page keeps its tunnel open, a tab left behind with a broken or stalled
    /// connection does not hold its upstream session forever [default: 1h].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(custom(function = "nonzero_duration"))]
    pub websocket_idle_timeout: Option<Duration>,

    /// Requests per client on this route, e.g. `{ rate = "20/s", burst = 40 }`; a client
    /// over it gets 429 with `Retry-After`. Clients are told apart by their address as
    /// resolved through `trust.proxies` (IPv6 by its /64) [default: no limit].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub rate_limit: Option<RateLimit>,
}

/// `allow = { ... }`: who may use a route, beyond being authenticated. Every entry of
/// every list is a condition of its own, and a user is admitted when any one of them
/// matches (as a Pomerium policy's `allow: or:` block); to require two things at once,
/// have the identity provider put users in a group that says both. Absent,
/// or with every list empty: every authenticated user is admitted.
///
/// For a login session the claims are those its record keeps: the ones `allow` needs
/// (`email` and `email_verified`, the `groups_claim`, the `claims` names) are kept from
/// the id_token at the login, so a session started before a reload that names a new
/// claim lacks it until the user logs in again.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[serde(default)]
pub struct Allow {
    /// Email addresses: admitted when the `email` claim is one of them (compared
    /// case-insensitively), unless `email_verified` is `false`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(length(min = 1)))]
    pub emails: Vec<String>,

    /// Domains such as `"example.com"`: admitted when the part of the `email` claim after
    /// its last `@` is one of them, exactly (`sub.example.com` is another domain) and
    /// case-insensitively, unless `email_verified` is `false` (an address the IdP has
    /// not verified says nothing about who holds it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(length(min = 1)))]
    pub email_domains: Vec<String>,

    /// Groups: admitted when the provider's `groups_claim` (a list of strings, or one
    /// string) holds one of them, compared exactly.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(length(min = 1)))]
    pub groups: Vec<String>,

    /// Claims and the values that admit, e.g. `{ department = ["research", "ops"] }`:
    /// admitted when the claim is one of the values (a list claim: holds one of them).
    /// Compared exactly; a number or boolean claim by its JSON text (`"42"`, `"true"`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, Vec<String>>,
}

impl Allow {
    /// Whether no condition is listed: then every authenticated user is admitted.
    pub fn is_empty(&self) -> bool {
        self.emails.is_empty()
            && self.email_domains.is_empty()
            && self.groups.is_empty()
            && self.claims.is_empty()
    }
}

/// `rate_limit = { rate = "20/s", burst = 40 }`: a per-client limit (GCRA: a bucket of
/// `burst` requests that refills at `rate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, Validate)]
#[schemars(deny_unknown_fields)]
pub struct RateLimit {
    /// The steady rate a client may keep up: `"20/s"`, `"10/min"`, `"1000/h"`.
    pub rate: Rate,
    /// How many requests a client may send at once, after a quiet spell
    /// [default: the rate's count].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(range(min = 1))]
    pub burst: Option<u32>,
}

impl RateLimit {
    /// The bucket's size: `burst`, else the rate's count.
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.rate.count())
    }
}

/// `security_headers`: on, off, or a table of values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum SecurityHeaders {
    /// Values for some of the headers; the others keep their defaults (on a route: the
    /// server's). A value of `""` removes that header.
    // First, so the schema's first branch is the table: "did you mean" hints look there.
    Custom(SecurityHeaderValues),
    /// `true`: the defaults (on a route: the server's headers); `false`: none.
    Enabled(bool),
}

impl SecurityHeaders {
    pub fn is_enabled(&self) -> bool {
        !matches!(self, Self::Enabled(false))
    }
}

/// By hand rather than `untagged`, as for [`StoreRef`]: unknown keys in the table are
/// reported like everywhere else, and a wrong type says what is expected.
impl<'de> Deserialize<'de> for SecurityHeaders {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SecurityHeaders;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false, or a table such as { referrer_policy = \"no-referrer\" }")
            }

            fn visit_bool<E: serde::de::Error>(self, on: bool) -> Result<SecurityHeaders, E> {
                Ok(SecurityHeaders::Enabled(on))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<SecurityHeaders, A::Error> {
                SecurityHeaderValues::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(SecurityHeaders::Custom)
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

/// `security_headers = { ... }`: the value of each security header. A key left out keeps
/// its default (on a route: the server's value); `""` removes the header.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SecurityHeaderValues {
    /// `X-Content-Type-Options` [default: "nosniff"].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_content_type_options: Option<String>,

    /// `Referrer-Policy` [default: "strict-origin-when-cross-origin"]. Pages that carry an
    /// OIDC login code always get `no-referrer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer_policy: Option<String>,

    /// Who may show the pages in a frame: the sources of the `Content-Security-Policy`
    /// directive `frame-ancestors` [default: "'self'"]. `'self'` and `'none'` are also
    /// sent as `X-Frame-Options` (`SAMEORIGIN`, `DENY`) for older browsers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_ancestors: Option<String>,

    /// `Permissions-Policy` [default: "camera=(), microphone=(), geolocation=()"]. A page
    /// using `st.camera_input` needs `camera=(self)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions_policy: Option<String>,

    /// `Content-Security-Policy` [default: none: Streamlit needs inline scripts and
    /// styles]. `frame_ancestors` is appended unless the policy has its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_security_policy: Option<String>,
}

/// `[auth]`: who the gateway believes a request comes from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[serde(default)]
pub struct Auth {
    /// Providers by name; routes refer to them with `auth = "NAME"`.
    pub providers: BTreeMap<String, AuthProvider>,
}

impl Auth {
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }
}

/// What kind of check a provider makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// A bearer JWT in `Authorization`, verified with an HMAC secret or a JWKS.
    Jwt,
    /// The identity in `trust.remote_user_header`, set by a proxy in front (forward
    /// auth) and believed only from its `trusted_peers`; from anyone else the request is
    /// unauthenticated. The upstream gets it as `x-fluxlit-sub`, never as the header.
    TrustedProxyUser,
    /// An OpenID Connect login served by the gateway itself (backend for frontend): the
    /// user logs in at the identity provider, and the gateway mints a first-party access
    /// token with the `mint` jwt provider. Routes check that token with `auth = "<mint>"`.
    Oidc,
}

/// A JWS signing algorithm. `none` does not exist here: unsigned tokens are never accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum Algorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Algorithm {
    /// HMAC algorithms verify with a shared secret; the others with a public key.
    pub fn is_hmac(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }

    /// The shortest secret an HMAC algorithm may use: its hash's output size (RFC 7518
    /// §3.2); `None` for the others.
    pub fn hmac_key_bytes(self) -> Option<usize> {
        match self {
            Self::HS256 => Some(32),
            Self::HS384 => Some(48),
            Self::HS512 => Some(64),
            _ => None,
        }
    }
}

/// One audience or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn values(&self) -> Vec<String> {
        match self {
            Self::One(one) => vec![one.clone()],
            Self::Many(many) => many.clone(),
        }
    }
}

/// Where a secret is: never written in the file itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"required": ["env"]}, {"required": ["file"]}]))]
pub struct SecretRef {
    /// Name of an environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// A file holding the secret (relative paths are relative to the config file; one
    /// trailing newline is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

/// `store_tls`: TLS to a `rediss://` store (managed Redis services: Azure Cache for
/// Redis, ElastiCache with in-transit encryption, Upstash).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct StoreTls {
    /// A PEM file of the CA certificates the server's certificate must chain to, instead
    /// of the platform's roots (relative to the config file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// A PEM file with the client certificate (and its chain) to present, for a Redis
    /// that authenticates clients by certificate (`tls-auth-clients yes`); with
    /// `client_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM), `{ file = "path" }` or
    /// `{ env = "NAME" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<SecretRef>,
}

/// An oidc provider's `store`: `"memory"` or a `redis://` URL written in the file, or a
/// Redis URL read from the environment or a file (where a URL with a password belongs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum StoreRef {
    /// `"memory"`, or a `redis://` (or `rediss://`) URL without a password.
    Inline(
        #[schemars(pattern(r"^(memory|rediss?://.+)$"))]
        String,
    ),
    /// A Redis URL, possibly with a password, in an environment variable or a file.
    Secret(SecretRef),
}

/// By hand rather than `untagged`: a table goes through [`SecretRef`]'s own
/// deserializer, so unknown keys in it are reported like everywhere else, and a wrong
/// type gets a message that says what is expected.
impl<'de> Deserialize<'de> for StoreRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = StoreRef;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "\"memory\", a \"redis://host:port/db\" URL, or { env = \"NAME\" } or \
                     { file = \"path\" } holding a Redis URL",
                )
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<StoreRef, E> {
                Ok(StoreRef::Inline(text.to_owned()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<StoreRef, A::Error> {
                SecretRef::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(StoreRef::Secret)
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

/// `[auth.providers.NAME]`: one way to authenticate requests. The keys that apply depend
/// on `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[schemars(extend("allOf" = [{
    "if": {"properties": {"kind": {"const": "jwt"}}},
    "then": {"required": ["issuer", "audience", "algorithms"]}
}, {
    "if": {"properties": {"kind": {"const": "oidc"}}},
    "then": {"required": ["issuer_url", "client_id", "client_secret", "mint"]}
}]))]
pub struct AuthProvider {
    pub kind: ProviderKind,

    /// jwt: the `iss` every token must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,

    /// jwt: the `aud` a token must carry (one of these).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<Audience>,

    /// jwt: the algorithms accepted; a token signed with any other is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub algorithms: Vec<Algorithm>,

    /// jwt: the shared secret for HS256/HS384/HS512 tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hs256_secret: Option<SecretRef>,

    /// jwt: where the public keys (a JWKS) for RS/PS/ES/EdDSA tokens are published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,

    /// jwt: a JWKS in a file, instead of `jwks_url` (relative to the config file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,

    /// jwt, oidc: clock skew allowed on `exp`, `nbf` and `iat` (oidc: of the id_token).
    #[serde(default = "default_leeway")]
    pub leeway: Duration,

    /// jwt, oidc: how long fetched keys are used before a refresh, when the JWKS response
    /// has no `Cache-Control: max-age` (which is honoured between 30s and 24h).
    #[serde(default = "default_jwks_cache_ttl")]
    pub jwks_cache_ttl: Duration,

    /// jwt, oidc: the least time between two fetches caused by tokens naming an unknown
    /// key id.
    #[serde(default = "default_jwks_refetch_interval")]
    pub jwks_refetch_interval: Duration,

    /// jwt, oidc: how long the last good keys keep being used past their refresh time
    /// while the JWKS endpoint fails.
    #[serde(default = "default_jwks_max_stale")]
    pub jwks_max_stale: Duration,

    /// The realm named in `WWW-Authenticate` challenges [default: the provider's name].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,

    /// jwt, oidc: claims copied to upstream headers, e.g. `{ email = "x-fluxlit-email" }`,
    /// on top of `x-fluxlit-sub` and `x-fluxlit-scope` (oidc: the id_token's claims, on
    /// routes with a browser session). Clients' copies are always stripped.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claim_headers: BTreeMap<String, String>,

    /// jwt, oidc: the claim that a route's `allow.groups` reads the user's groups from (a
    /// list of strings, or one string), as identity providers name it differently:
    /// `"groups"`, `"roles"`, `"cognito:groups"` [default: "groups"].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,

    /// trusted_proxy_user: the peers (CIDR ranges or addresses) whose
    /// `trust.remote_user_header` is believed: the forward-auth proxy itself, which must
    /// overwrite or remove the header its own clients send. Any other peer's request gets
    /// 401, even from `trust.proxies` [default: `trust.proxies`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_peers: Option<Vec<String>>,

    /// oidc: the identity provider's issuer. Its settings are read in the background from
    /// `<issuer_url>/.well-known/openid-configuration` (OpenID Connect Discovery), and its
    /// id_tokens must carry this `iss`. https, or http on loopback only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_url: Option<String>,

    /// oidc: the client id registered at the identity provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,

    /// oidc: the client secret registered at the identity provider, `{ env = "NAME" }` or
    /// `{ file = "path" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<SecretRef>,

    /// oidc: the scopes asked for; `openid` is always asked for [default: `["openid"]`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,

    /// oidc: the jwt provider (one with an HS256/384/512 `hs256_secret`) whose secret,
    /// `issuer` and `audience` sign the access token minted after a login and handed to
    /// the app through `/auth/exchange`; protect API routes with `auth = "<that
    /// provider>"`. Not needed when routes name this provider (browser sessions) and no
    /// app asks for a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mint: Option<String>,

    /// oidc: where the gateway serves the login endpoints itself, before route matching
    /// (paths as the gateway receives them, below `server.public_base_url`'s path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<OidcPaths>,

    /// oidc: how long a login may take between `/auth/login` and the callback [default: 10m].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_ttl: Option<Duration>,

    /// oidc: how long the one-time `auth_code` handed to the app can be exchanged
    /// [default: 60s].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_code_ttl: Option<Duration>,

    /// oidc: the lifetime of the minted access token [default: 15m].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_ttl: Option<Duration>,

    /// oidc: id_token claims copied into the minted token besides `sub` (which always is):
    /// `email`, `name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<String>,

    /// oidc: where login states and auth codes live: `"memory"` (this process only) or a
    /// Redis URL, `"redis://host:6379/0"`, that gateway replicas share; `"rediss://..."`
    /// for TLS (see `store_tls`). A URL with a password is a secret: give it as
    /// `{ env = "NAME" }` or `{ file = "path" }` [default: "memory"].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreRef>,

    /// oidc: the most finished logins (their used states, kept for `login_ttl` to refuse
    /// a replayed callback), and separately the most unexchanged auth codes, the memory
    /// store holds; when full, the callback answers 503 until some expire
    /// [default: 10000]. Not used by a Redis store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_max_entries: Option<u32>,

    /// oidc: how a `rediss://` store's certificate is checked, and the client certificate
    /// it may ask for. Without it (or without `ca_file`), the platform's roots are used,
    /// read as OpenSSL-based clients read them (`SSL_CERT_FILE` and `SSL_CERT_DIR`
    /// honoured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_tls: Option<StoreTls>,

    /// oidc: client addresses (CIDR ranges or addresses) allowed to call the exchange
    /// endpoint; others get 403. The address is the client's as resolved through
    /// `trust.proxies` (the first untrusted hop from the right of `X-Forwarded-For`), so a
    /// browser behind a trusted proxy is judged on its own address, not the proxy's. The
    /// app's server calls it, not the browser; `0.0.0.0/0` and `::/0` are refused
    /// [default: `["127.0.0.1/32", "::1/128"]`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_from: Option<Vec<String>>,

    /// oidc: a secret the app's server must send to the exchange endpoint as
    /// `Authorization: Bearer <secret>` (compared in constant time; 401 without it), as
    /// OAuth asks of a confidential client at a token endpoint: `{ env = "NAME" }` or
    /// `{ file = "path" }`, at least 32 random bytes. Set it whenever browsers can reach
    /// the gateway from an `exchange_from` address (a proxy in front, a shared network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_secret: Option<SecretRef>,

    /// oidc: the secret the login cookie is sealed with (AES-256-GCM, the key derived
    /// with HKDF-SHA256), `{ env = "NAME" }` or `{ file = "path" }`, at least 32 random
    /// bytes. A login in progress lives in that cookie, not in the store, so replicas
    /// must share this key: required with a Redis `store`. Without it a key is generated
    /// at start (kept across reloads): a restart ends the logins in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<SecretRef>,

    /// oidc: a browser session (of a route with `auth` = this provider) ends after this
    /// long without a request; each request moves the end on [default: 8h].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_idle_timeout: Option<Duration>,

    /// oidc: a browser session ends this long after its login, however busy [default: 7d].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_max_age: Option<Duration>,

    /// oidc: requests per client to the login endpoint (each starts a login at the
    /// identity provider); a client over it gets 429 with `Retry-After`. Raise it when
    /// many users share one address (a corporate NAT) [default: `{ rate = "10/min",
    /// burst = 20 }`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_rate_limit: Option<RateLimit>,

    /// oidc: a custom provider's authorization endpoint, instead of discovery (with
    /// `token_endpoint`). Such a provider has no JWKS, so it is refused unless
    /// `allow_unverified_id_token_for_custom_oidc = true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_endpoint: Option<String>,

    /// oidc: a custom provider's token endpoint, instead of discovery (with
    /// `authorization_endpoint`); https, or http on loopback. Refused unless
    /// `allow_unverified_id_token_for_custom_oidc = true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,

    /// oidc: DANGEROUS. Accept a provider with manual endpoints, whose id_tokens cannot be
    /// checked against a JWKS: their signature is not checked (every claim still is; TLS
    /// to the token endpoint vouches for them). Warned about by `fluxlit validate`,
    /// `fluxlit config` and `fluxlit doctor`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_unverified_id_token_for_custom_oidc: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// `[auth.providers.NAME.paths]`: the endpoints an oidc provider serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[serde(default)]
pub struct OidcPaths {
    /// `GET <login>?next=/path`: starts a login and redirects to the identity provider.
    pub login: String,
    /// `GET <callback>?code=...&state=...`: where the identity provider sends the user
    /// back (register `<public_base_url><callback>` as the redirect URI).
    pub callback: String,
    /// `POST <exchange>` with `{"auth_code": "..."}`: the app's server trades the one-time
    /// code for the access token.
    pub exchange: String,
    /// `GET <logout>?next=/path`: logs out at the identity provider when it supports it,
    /// else redirects to `next`.
    pub logout: String,
    /// `GET <userinfo>`: the browser session's user as JSON (`sub`, the claims the
    /// session keeps, `expires_at`), for the app's pages; 401 without a session. Never a
    /// token.
    pub userinfo: String,
}

impl Default for OidcPaths {
    fn default() -> Self {
        Self {
            login: "/auth/login".to_owned(),
            callback: "/auth/callback".to_owned(),
            exchange: "/auth/exchange".to_owned(),
            logout: "/auth/logout".to_owned(),
            userinfo: "/auth/userinfo".to_owned(),
        }
    }
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

fn default_jwks_cache_ttl() -> Duration {
    Duration::from_secs(600)
}

fn default_jwks_refetch_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_jwks_max_stale() -> Duration {
    Duration::from_secs(3600)
}

fn nonzero_duration(value: &Duration) -> Result<(), ValidationError> {
    if value.is_zero() {
        return Err(ValidationError::new("zero_duration").with_message(
            "must be longer than zero: a zero timeout would fail every request".into(),
        ));
    }
    Ok(())
}

fn log_filter(value: &str) -> Result<(), ValidationError> {
    tracing_subscriber::EnvFilter::try_new(value).map_err(|error| {
        ValidationError::new("log_filter").with_message(
            format!(
                "{value:?} is not a log filter ({error}): use a level such as \"info\" or \
                 directives such as \"info,fluxlit::access=off\""
            )
            .into(),
        )
    })?;
    Ok(())
}

fn log_file_path(value: &std::path::Path) -> Result<(), ValidationError> {
    if value.as_os_str().is_empty() {
        return Err(ValidationError::new("empty_path").with_message(
            "is empty: name a file, or remove the key to write the access log to stdout".into(),
        ));
    }
    if value.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return Err(ValidationError::new("directory_path").with_message(
            format!(
                "{:?} names a directory: name the file, e.g. \"{}access.log\"",
                value.display().to_string(),
                value.display()
            )
            .into(),
        ));
    }
    Ok(())
}

/// An HTTP/2 receive window: at least the protocol's default of 65,535 bytes, at most
/// 1 GiB (the protocol's limit is 2^31 - 1).
fn http2_window(value: &ByteSize) -> Result<(), ValidationError> {
    if !(65_535..=1 << 30).contains(&value.bytes()) {
        return Err(ValidationError::new("http2_window").with_message(
            format!(
                "{} bytes is not a usable HTTP/2 window: give 64KiB to 1GiB",
                value.bytes()
            )
            .into(),
        ));
    }
    Ok(())
}

/// A send buffer of at least one HTTP/2 frame (16 KiB) and at most 16 MiB.
fn http2_send_buffer(value: &ByteSize) -> Result<(), ValidationError> {
    if !(16 * 1024..=16 << 20).contains(&value.bytes()) {
        return Err(ValidationError::new("http2_send_buffer").with_message(
            format!(
                "{} bytes is not a usable send buffer: give 16KiB (one frame) to 16MiB",
                value.bytes()
            )
            .into(),
        ));
    }
    Ok(())
}

fn nonzero_size(value: &ByteSize) -> Result<(), ValidationError> {
    if value.bytes() == 0 {
        return Err(ValidationError::new("zero_size").with_message(
            "must be larger than zero: a zero cap would refuse every request with a body".into(),
        ));
    }
    Ok(())
}

fn route_name(value: &str) -> Result<(), ValidationError> {
    let valid = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(ValidationError::new("route_name").with_message(
            format!("{value:?} is not a valid name: use 1 to 64 letters, digits, '-' or '_'")
                .into(),
        ));
    }
    Ok(())
}

pub(crate) fn path_prefix(value: &str) -> Result<(), ValidationError> {
    let problem = if !value.starts_with('/') {
        Some(format!("{value:?} must start with '/'"))
    } else if value.contains(['?', '#']) {
        Some(format!("{value:?} must be a path only, without '?' or '#'"))
    } else if value.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        Some(format!(
            "{value:?} must not contain spaces or control characters"
        ))
    } else if value
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        Some(format!("{value:?} must not contain '.' or '..' segments"))
    } else {
        None
    };
    match problem {
        Some(message) => Err(ValidationError::new("path_prefix").with_message(message.into())),
        None => Ok(()),
    }
}

/// What a route uses where the file is silent.
pub mod route_defaults {
    /// `max_websockets`.
    pub const MAX_WEBSOCKETS: u32 = 1000;
    /// `websocket_idle_timeout`.
    pub const WEBSOCKET_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);
}

/// What an oidc provider uses where the file is silent (the `[default: ...]` of its
/// keys), and the id_token claims it may copy.
pub mod oidc_defaults {
    use std::time::Duration;

    pub const LOGIN_TTL: Duration = Duration::from_secs(600);
    pub const SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(8 * 3600);
    pub const SESSION_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
    pub const AUTH_CODE_TTL: Duration = Duration::from_secs(60);
    pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(900);
    pub const STORE: &str = "memory";
    pub const STORE_MAX_ENTRIES: u32 = 10_000;
    pub const EXCHANGE_FROM: &[&str] = &["127.0.0.1/32", "::1/128"];
    /// The shortest `exchange_secret` taken, in bytes: as long as an HS256 key. A
    /// shorter one is refused at load.
    pub const MIN_EXCHANGE_SECRET: usize = 32;
    /// The claim `allow.groups` reads, unless the provider names another.
    pub const GROUPS_CLAIM: &str = "groups";
    /// The id_token claims that may be copied into the minted token (`sub` always is).
    pub const COPYABLE_CLAIMS: &[&str] = &["email", "name"];
    /// Requests per client to the login endpoint.
    pub const LOGIN_RATE_LIMIT: super::RateLimit = super::RateLimit {
        rate: super::Rate::per_minute(10),
        burst: Some(20),
    };
}
