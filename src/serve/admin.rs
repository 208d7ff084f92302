//! The admin listener: `/healthz`, `/readyz`, `/snapshot`, `/config` and `/metrics`
//! (Prometheus) for operators.
//!
//! Keep it on loopback or a private network: `/snapshot` shows the route table. Whoever
//! can reach it still cannot take the process's file descriptors or memory: it accepts
//! at most `admin.max_connections` connections (one more is closed as soon as it is
//! accepted, which frees its descriptor at once), closes a connection that has not sent
//! a complete request head within `admin.header_read_timeout` of opening or of its
//! previous response, closes one that moves no bytes for `admin.idle_timeout`, reads
//! heads of at most [`MAX_HEAD`] and refuses bodies over [`MAX_BODY`]. The limits are
//! read from the snapshot when a connection is accepted.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::get;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt as _;

use super::accept::Backoff;
use crate::auth::identity::JWKS_PATH;
use crate::config::model::{self, ReadyRequires};
use crate::http;
use crate::idle::LastActivity;
use crate::metrics::{Metrics, UpstreamConnections};
use crate::proxy::health::{Health, UpstreamHealth};
use crate::proxy::pool::UpstreamAddress;
use crate::proxy::route::UpstreamTarget;
use crate::reload::Reloader;
use crate::serve::status_page::{self, TrafficSampler};
use crate::shutdown::{InFlight, Signal};
use crate::snapshot::{SharedSnapshot, Snapshot};

/// The largest request head read (hyper's smallest read buffer is 8 KiB).
pub const MAX_HEAD: usize = 16 * 1024;
/// The largest request body accepted; no admin endpoint reads one.
pub const MAX_BODY: u64 = 1024;

/// Serves the admin endpoints on `listener` until `stop` fires; connections still open
/// then finish the request they are serving and close. `/readyz` answers 503 once
/// `draining` is set.
pub async fn serve(
    listener: TcpListener,
    snapshot: SharedSnapshot,
    reloader: Arc<Reloader>,
    metrics: Arc<Metrics>,
    draining: Arc<AtomicBool>,
    stop: Signal,
) {
    let admin = Admin {
        snapshot: Arc::clone(&snapshot),
        reloader,
        metrics: Arc::clone(&metrics),
        draining,
        traffic: Arc::new(TrafficSampler::default()),
    };
    // The status page's "last minute": samples of /metrics every few seconds.
    let sampling = {
        let traffic = Arc::clone(&admin.traffic);
        async move {
            let mut every = tokio::time::interval(status_page::SAMPLE_EVERY);
            loop {
                every.tick().await;
                traffic.record(&metrics.encode());
            }
        }
    };
    // Stopped with the listener, however this function ends.
    let _sampling = AbortOnDrop(tokio::spawn(sampling));
    let router = router(admin);
    let open = InFlight::new();
    let mut backoff = Backoff::new("admin listener");
    loop {
        let Some((stream, peer)) = backoff.accept(&listener, &stop).await else {
            break;
        };
        let limits = Limits::of(snapshot.load().config.admin.as_ref());
        let Some(slot) = open.try_enter(limits.max_connections) else {
            // Closed at once: the descriptor is back before the next accept.
            tracing::debug!(%peer, "admin connection refused: admin.max_connections reached");
            drop(stream);
            continue;
        };
        let router = router.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            connection(stream, peer, router, limits, stop).await;
            drop(slot);
        });
    }
}

/// The admin listener's limits, as a connection is served with them.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
}

impl Limits {
    /// The file's, or the defaults when it has no `[admin]` any more (a reload cannot
    /// remove the running listener).
    fn of(admin: Option<&model::Admin>) -> Self {
        let fallback;
        let admin = match admin {
            Some(admin) => admin,
            None => {
                fallback = model::Admin::on(SocketAddr::from(([127, 0, 0, 1], 0)));
                &fallback
            }
        };
        Self {
            header_read_timeout: admin.header_read_timeout.get(),
            idle_timeout: admin.idle_timeout.get(),
            max_connections: usize::try_from(admin.max_connections).unwrap_or(usize::MAX),
        }
    }
}

/// Serves one connection until it ends, is idle for too long, or `stop` fires and its
/// request in flight is done.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    stop: Signal,
) {
    let activity = Arc::new(LastActivity::new());
    let io = Watched {
        inner: stream,
        activity: Arc::clone(&activity),
    };
    let service = hyper::service::service_fn(move |request: axum::http::Request<Incoming>| {
        let router = router.clone();
        async move {
            if let Some(refusal) = body_refusal(&request) {
                return Ok::<_, Infallible>(refusal);
            }
            router.oneshot(request).await
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        let deadline = activity.deadline(limits.idle_timeout);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "admin connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                if activity.deadline(limits.idle_timeout) <= std::time::Instant::now() {
                    tracing::debug!(%peer, "admin connection closed: idle timeout");
                    return;
                }
            }
            () = stop.fired(), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// 413 for a request whose body may be larger than [`MAX_BODY`]: a declared length over
/// it, or a body of unknown length (chunked).
fn body_refusal(request: &axum::http::Request<Incoming>) -> Option<Response> {
    use hyper::body::Body as _;
    let hint = request.body().size_hint();
    if hint.upper().is_some_and(|upper| upper <= MAX_BODY) {
        return None;
    }
    let mut response = http::text(
        StatusCode::PAYLOAD_TOO_LARGE,
        "the admin endpoints take no request body\n",
    );
    // The body is not read: the connection cannot carry another request.
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    Some(response)
}

/// The client's socket, noting when bytes move either way.
struct Watched {
    inner: TcpStream,
    activity: Arc<LastActivity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// What the admin endpoints read.
#[derive(Debug, Clone)]
struct Admin {
    snapshot: SharedSnapshot,
    reloader: Arc<Reloader>,
    metrics: Arc<Metrics>,
    /// Set when the shutdown starts.
    draining: Arc<AtomicBool>,
    /// Samples of the metrics for the status page.
    traffic: Arc<TrafficSampler>,
}

fn router(admin: Admin) -> Router {
    Router::new()
        .route("/", get(status))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/snapshot", get(snapshot))
        .route("/config", get(config))
        .route("/metrics", get(metrics))
        .route(JWKS_PATH, get(jwks))
        .method_not_allowed_fallback(use_get)
        .fallback(not_found)
        .with_state(admin)
}

/// The status page: the same data as `/snapshot` and `/metrics`, for people.
async fn status(State(admin): State<Admin>) -> Response {
    // The traffic figures are the sampler's (every 5 s): encoding and reading the whole
    // of /metrics per view would cost more than the page itself with many routes.
    let page = status_page::render(&admin.snapshot.load(), &admin.reloader, &admin.traffic);
    let mut response = http::answer(StatusCode::OK, "text/html; charset=utf-8", page);
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    // Values from the config and from errors are escaped; this is the second fence: no
    // script, no frame, no request anywhere but here.
    headers.insert(
        axum::http::header::CONTENT_SECURITY_POLICY,
        axum::http::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    response
}

async fn healthz() -> Response {
    http::text(StatusCode::OK, "ok\n")
}

async fn readyz(State(admin): State<Admin>) -> Response {
    if admin.draining.load(Ordering::Acquire) {
        // Shutting down: load balancers must stop sending traffic here.
        return http::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    // Serving at all means a valid snapshot is loaded and the listener is bound; the
    // probed upstreams the routes need must be up as `ready_requires` says.
    match unready_upstreams(&admin.snapshot.load()) {
        None => http::text(StatusCode::OK, "ready\n"),
        Some(why) => http::text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Why the probed upstreams make this gateway unready, or `None`.
fn unready_upstreams(snapshot: &Snapshot) -> Option<String> {
    let requires = snapshot
        .config
        .admin
        .as_ref()
        .and_then(|admin| admin.ready_requires)
        .unwrap_or_default();
    let needed: std::collections::BTreeSet<&str> = snapshot
        .config
        .routes
        .iter()
        .map(|route| route.upstream.as_str())
        .collect();
    let probed: Vec<(&str, &UpstreamHealth)> = needed
        .iter()
        .filter_map(|name| {
            let health = snapshot.upstreams.get(*name)?.health.as_deref()?;
            Some((*name, health))
        })
        .collect();
    let down: Vec<String> = probed
        .iter()
        .filter(|(_, health)| health.state() != Health::Up)
        .map(
            |(name, health)| match (health.state(), health.last_error()) {
                (Health::Unknown, _) => format!("upstream {name} is not probed yet"),
                (_, Some(why)) => format!("upstream {name} is down ({why})"),
                (_, None) => format!("upstream {name} is down"),
            },
        )
        .collect();
    let unready = match requires {
        ReadyRequires::None => false,
        ReadyRequires::All => !down.is_empty(),
        ReadyRequires::Any => !probed.is_empty() && down.len() == probed.len(),
    };
    unready.then(|| down.join("; "))
}

async fn snapshot(State(admin): State<Admin>) -> Response {
    let body = snapshot_json(&admin.snapshot.load_full(), &admin.reloader);
    http::json(StatusCode::OK, body)
}

async fn config(State(admin): State<Admin>) -> Response {
    http::json(StatusCode::OK, config_json(&admin.snapshot.load_full()))
}

async fn metrics(State(admin): State<Admin>) -> Response {
    let snapshot = admin.snapshot.load();
    admin
        .metrics
        .set_upstreams_up(snapshot.upstreams.iter().filter_map(|(name, upstream)| {
            let health = upstream.health.as_ref()?;
            Some((name.as_str(), health.state() == Health::Up))
        }));
    admin
        .metrics
        .set_upstream_connections(snapshot.upstreams.iter().filter_map(|(name, upstream)| {
            let counts = upstream.pool_counts()?;
            Some((
                name.as_str(),
                UpstreamConnections {
                    in_flight: counts.in_flight,
                    pool_idle: counts.idle,
                    pool_open: counts.open,
                },
            ))
        }));
    let body = admin.metrics.encode();
    http::answer(StatusCode::OK, crate::metrics::CONTENT_TYPE, body)
}

/// The identity assertion's public keys, as the public listener serves them.
async fn jwks(State(admin): State<Admin>) -> Response {
    let body = admin.snapshot.load().identity.jwks().clone();
    let mut response = http::answer(StatusCode::OK, "application/json", body);
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// Every admin endpoint is read-only.
async fn use_get() -> Response {
    let mut response = http::text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    response.headers_mut().insert(
        axum::http::header::ALLOW,
        axum::http::HeaderValue::from_static("GET, HEAD"),
    );
    response
}

async fn not_found(method: Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return use_get().await;
    }
    http::text(
        StatusCode::NOT_FOUND,
        "not found: try / (the status page), /healthz, /readyz, /snapshot, /config, /metrics or /.well-known/fluxlit/jwks.json\n",
    )
}

/// The effective config as JSON (what `fluxlit diff --admin` compares against): secrets
/// are references, URL passwords are redacted.
pub fn config_json(snapshot: &Snapshot) -> String {
    let value = crate::config::diff::redacted_json(&snapshot.config);
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

/// The running snapshot as JSON: what is serving, since when, and the last reload error.
pub fn snapshot_json(snapshot: &Snapshot, reloader: &Reloader) -> String {
    let status = reloader.status();
    let routes: Vec<_> = snapshot
        .config
        .routes
        .iter()
        .map(|route| {
            json!({
                "name": route.name,
                "path_prefix": route.path_prefix,
                "upstream": route.upstream,
                "strip_prefix": route.strip_prefix,
            })
        })
        .collect();
    let upstreams: serde_json::Map<String, serde_json::Value> = snapshot
        .upstreams
        .iter()
        .map(|(name, upstream)| {
            let target = match &upstream.target {
                UpstreamTarget::Http(http) => match http.pool.address() {
                    address @ UpstreamAddress::Unix(_) => address.to_string(),
                    UpstreamAddress::Tcp { .. } => {
                        format!("http://{}{}", http.authority, http.base_path)
                    }
                },
                UpstreamTarget::Echo => "builtin:echo".to_owned(),
            };
            (name.clone(), json!(target))
        })
        .collect();
    let upstream_health: serde_json::Map<String, serde_json::Value> = snapshot
        .upstreams
        .iter()
        .filter_map(|(name, upstream)| {
            let health = upstream.health.as_ref()?;
            Some((name.clone(), json!(health.status())))
        })
        .collect();
    let upstream_connections: serde_json::Map<String, serde_json::Value> = snapshot
        .upstreams
        .iter()
        .filter_map(|(name, upstream)| Some((name.clone(), json!(upstream.pool_counts()?))))
        .collect();
    let providers: serde_json::Map<String, serde_json::Value> = snapshot
        .providers
        .iter()
        .map(|(name, provider)| {
            let mut entry = json!({ "kind": provider.settings.kind });
            if let Some(status) = provider.jwks_status() {
                entry["jwks"] = json!(status);
            }
            if let Some(status) = provider.oidc_status() {
                entry["oidc"] = json!(status);
            }
            (name.clone(), entry)
        })
        .collect();
    let body = json!({
        "generation": snapshot.generation,
        "source_hash": snapshot.source_hash.to_string(),
        "loaded_at": humantime::format_rfc3339_seconds(snapshot.loaded_at).to_string(),
        "config_path": reloader.path().display().to_string(),
        "routes": routes,
        "upstreams": upstreams,
        "upstream_health": upstream_health,
        "upstream_connections": upstream_connections,
        "auth_providers": providers,
        "warnings": snapshot.warnings.iter().map(|w| w.render(reloader.path())).collect::<Vec<_>>(),
        "last_reload_error": status.last_error,
        "refused_static_keys": status.refused_static_keys,
        "last_reload_diff": status.last_reload_diff,
    });
    let mut text = serde_json::to_string_pretty(&body).unwrap_or_default();
    text.push('\n');
    text
}
