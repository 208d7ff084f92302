//! The admin listener: `/healthz`, `/readyz`, `/snapshot`, `/config` and `/metrics`
//! (Prometheus) for operators.
//!
//! Keep it on loopback or a private network: `/snapshot` shows the route table.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::proxy::route::UpstreamTarget;
use crate::reload::Reloader;
use crate::snapshot::{SharedSnapshot, Snapshot};

pub async fn serve(
    listener: TcpListener,
    snapshot: SharedSnapshot,
    reloader: Arc<Reloader>,
    metrics: Arc<Metrics>,
    draining: Arc<AtomicBool>,
    stop: crate::shutdown::Signal,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.fired() => return,
        };
        let snapshot = Arc::clone(&snapshot);
        let reloader = Arc::clone(&reloader);
        let metrics = Arc::clone(&metrics);
        let draining = Arc::clone(&draining);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = match request.uri().path() {
                    "/metrics" if matches!(*request.method(), Method::GET | Method::HEAD) => {
                        metrics_response(&metrics)
                    }
                    _ => {
                        let draining = draining.load(Ordering::Acquire);
                        answer(&request, &snapshot.load_full(), &reloader, draining)
                    }
                };
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer<B>(
    request: &Request<B>,
    snapshot: &Snapshot,
    reloader: &Reloader,
    draining: bool,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        // Shutting down: load balancers must stop sending traffic here.
        "/readyz" if draining => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        // Serving at all means a valid snapshot is loaded and the listener is bound.
        "/readyz" => text(StatusCode::OK, "ready\n"),
        "/snapshot" => json_response(snapshot_json(snapshot, reloader)),
        "/config" => json_response(config_json(snapshot)),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz, /snapshot, /config or /metrics\n",
        ),
    }
}

fn json_response(body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn metrics_response(metrics: &Metrics) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(metrics.encode())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    response
}

/// The effective config as JSON (what `fluxlit diff --admin` compares against): secrets
/// are references, URL passwords are redacted.
pub fn config_json(snapshot: &Snapshot) -> String {
    let value = crate::config::diff::redacted_json(&snapshot.config);
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
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
                UpstreamTarget::Http(http) => {
                    format!("http://{}{}", http.authority, http.base_path)
                }
                UpstreamTarget::Echo => "builtin:echo".to_owned(),
            };
            (name.clone(), json!(target))
        })
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
