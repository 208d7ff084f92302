//! Prometheus metrics, served at `/metrics` on the admin listener.
//!
//! One [`Metrics`] lives for the whole process (created by `Gateway::start`) and outlives
//! every snapshot, so counters keep counting across reloads. Labels are route, upstream
//! and provider names from the config, never request paths: the number of series is
//! bounded by the file.
//!
//! The request path does no label lookup: a route's counters and histogram are resolved
//! once, the first time the route serves a request, and kept in the route itself
//! ([`RouteSlot`]); after that a request costs an atomic load to find them and a few
//! atomic increments to count itself.

pub mod redact;
mod request;

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use request::RequestRecord;

/// The `Content-Type` of `/metrics`: the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The route label of requests no route matched (404s, malformed paths).
pub const NO_ROUTE: &str = "(none)";

/// Upper bounds of the request duration buckets, in seconds (Prometheus' defaults).
const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    status_class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    upstream: Arc<str>,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthFailureLabels {
    provider: Arc<str>,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FairnessLabels {
    limit: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The gateway's metrics registry and the metrics in it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily<RouteLabel>,
    websockets_open: Family<RouteLabel, Gauge>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    auth_failures: Family<AuthFailureLabels, Counter>,
    client_headers_dropped: Family<RouteLabel, Counter>,
    rate_limited: Family<RouteLabel, Counter>,
    upstream_refused: Family<FairnessLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    upstream_up: Family<UpstreamLabel, Gauge>,
    upstream_in_flight: Family<UpstreamLabel, Gauge>,
    upstream_pool_idle: Family<UpstreamLabel, Gauge>,
    upstream_pool_open: Family<UpstreamLabel, Gauge>,
    generation: Gauge,
    last_reload_success: Gauge,
    /// The handles of requests that matched no route.
    no_route: Arc<RouteMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fluxlit");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route and status class (1xx..5xx)",
            requests.clone(),
        );
        let durations: HistogramFamily<RouteLabel> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from the request head to the end of the response body, by route",
            durations.clone(),
        );
        let websockets_open = Family::<RouteLabel, Gauge>::default();
        registry.register(
            "websockets_open",
            "WebSocket tunnels open now, by route",
            websockets_open.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream requests that failed before a response, by upstream and kind \
             (connect_error, connect_timeout, timeout, request_error)",
            upstream_errors.clone(),
        );
        let auth_failures = Family::<AuthFailureLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests refused by a route's auth check, by provider and reason",
            auth_failures.clone(),
        );
        let client_headers_dropped = Family::<RouteLabel, Counter>::default();
        registry.register(
            "client_headers_dropped",
            "Client request headers dropped for being on no list (not standard, not in the \
             route's forward_client_headers), by route; one per header line",
            client_headers_dropped.clone(),
        );
        let rate_limited = Family::<RouteLabel, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused with 429 by a per-client rate limit, by route (the gateway's \
             login endpoint: by oidc provider)",
            rate_limited.clone(),
        );
        let upstream_refused = Family::<FairnessLabels, Counter>::default();
        registry.register(
            "upstream_refused",
            "Requests refused with 503 before they were sent upstream, by the cap reached: \
             `client` (max_upstream_requests_per_client), `global` (max_upstream_requests) or \
             `upstream` (an upstream's max_in_flight)",
            upstream_refused.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads, by result (applied, rejected, unchanged, missing, unreadable)",
            reloads.clone(),
        );
        let upstream_up = Family::<UpstreamLabel, Gauge>::default();
        registry.register(
            "upstream_up",
            "1 while an upstream with a health_check passes it, 0 while it is down or not yet \
             probed",
            upstream_up.clone(),
        );
        let upstream_in_flight = Family::<UpstreamLabel, Gauge>::default();
        registry.register(
            "upstream_in_flight",
            "Requests on their way to an upstream now: sent or waiting for a connection, \
             their response body not yet read to the end",
            upstream_in_flight.clone(),
        );
        let upstream_pool_idle = Family::<UpstreamLabel, Gauge>::default();
        registry.register(
            "upstream_pool_idle",
            "Connections to an upstream idle in its pool now, ready for the next request",
            upstream_pool_idle.clone(),
        );
        let upstream_pool_open = Family::<UpstreamLabel, Gauge>::default();
        registry.register(
            "upstream_pool_open",
            "Connections to an upstream open now: idle, carrying a request or a WebSocket",
            upstream_pool_open.clone(),
        );
        let generation = Gauge::default();
        registry.register(
            "config_generation",
            "Generation of the snapshot serving now (1 at start, +1 per applied reload)",
            generation.clone(),
        );
        let last_reload_success = Gauge::default();
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time the serving config was loaded (at start or by the last applied reload)",
            last_reload_success.clone(),
        );
        let no_route = Arc::new(RouteMetrics::new(
            Arc::from(NO_ROUTE),
            &requests,
            &durations,
            &websockets_open,
            &rate_limited,
            None,
        ));
        Self {
            registry,
            requests,
            durations,
            websockets_open,
            upstream_errors,
            auth_failures,
            client_headers_dropped,
            rate_limited,
            upstream_refused,
            reloads,
            upstream_up,
            upstream_in_flight,
            upstream_pool_idle,
            upstream_pool_open,
            generation,
            last_reload_success,
            no_route,
        }
    }

    /// Sets `fluxlit_upstream_up` to `states` (upstream name, up), forgetting upstreams
    /// no longer there. Read off the serving snapshot at each scrape.
    pub fn set_upstreams_up<'a>(&self, states: impl IntoIterator<Item = (&'a str, bool)>) {
        self.upstream_up.clear();
        for (upstream, up) in states {
            self.upstream_up
                .get_or_create(&UpstreamLabel {
                    upstream: upstream.to_owned(),
                })
                .set(i64::from(up));
        }
    }

    /// Sets `fluxlit_upstream_in_flight`, `fluxlit_upstream_pool_idle` and
    /// `fluxlit_upstream_pool_open` to `upstreams` (upstream name and its counts),
    /// forgetting upstreams no longer there. Read off the serving snapshot at each scrape.
    pub fn set_upstream_connections<'a>(
        &self,
        upstreams: impl IntoIterator<Item = (&'a str, UpstreamConnections)>,
    ) {
        let families = [
            &self.upstream_in_flight,
            &self.upstream_pool_idle,
            &self.upstream_pool_open,
        ];
        for family in families {
            family.clear();
        }
        for (upstream, counts) in upstreams {
            let label = UpstreamLabel {
                upstream: upstream.to_owned(),
            };
            let values = [counts.in_flight, counts.pool_idle, counts.pool_open];
            for (family, value) in families.into_iter().zip(values) {
                family
                    .get_or_create(&label)
                    .set(i64::try_from(value).unwrap_or(i64::MAX));
            }
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; an empty scrape would show it did.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }

    /// The handles of the route named `name`, resolved on its first request and kept in
    /// its `slot`.
    pub fn route<'r>(&self, slot: &'r RouteSlot, name: &Arc<str>) -> &'r Arc<RouteMetrics> {
        slot.0.get_or_init(|| {
            Arc::new(RouteMetrics::new(
                Arc::clone(name),
                &self.requests,
                &self.durations,
                &self.websockets_open,
                &self.rate_limited,
                Some(&self.client_headers_dropped),
            ))
        })
    }

    /// The handles of requests that matched no route.
    pub fn no_route(&self) -> &Arc<RouteMetrics> {
        &self.no_route
    }

    /// The handles of the gateway's own endpoints of auth provider `provider` (login,
    /// callback...). Looked up per request: these are not the hot path.
    pub fn auth_endpoint(&self, provider: &Arc<str>) -> Arc<RouteMetrics> {
        Arc::new(RouteMetrics::new(
            Arc::clone(provider),
            &self.requests,
            &self.durations,
            &self.websockets_open,
            &self.rate_limited,
            None,
        ))
    }

    /// Counts a refused request; `reason` is one of a small fixed set of labels.
    pub fn auth_failure(&self, provider: &Arc<str>, reason: &'static str) {
        let labels = AuthFailureLabels {
            provider: Arc::clone(provider),
            reason,
        };
        self.auth_failures.get_or_create(&labels).inc();
    }

    pub fn upstream_error(&self, upstream: &Arc<str>, kind: UpstreamErrorKind) {
        let labels = UpstreamErrorLabels {
            upstream: Arc::clone(upstream),
            kind: kind.as_str(),
        };
        self.upstream_errors.get_or_create(&labels).inc();
    }

    /// Counts a request refused by an upstream fairness cap (`limit`: `client`, `global`).
    pub fn upstream_refused(&self, limit: &'static str) {
        self.upstream_refused
            .get_or_create(&FairnessLabels { limit })
            .inc();
    }

    /// Counts a reload attempt by its `result` (applied, rejected, unchanged...).
    pub fn reload_attempt(&self, result: &'static str) {
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// A snapshot started serving: at start, or applied by a reload.
    pub fn serving(&self, generation: u64, loaded_at: SystemTime) {
        self.generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        let unix = loaded_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        self.last_reload_success
            .set(i64::try_from(unix).unwrap_or(i64::MAX));
    }
}

/// One upstream's requests in flight and pool connections, as its pool counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamConnections {
    pub in_flight: usize,
    pub pool_idle: usize,
    pub pool_open: usize,
}

/// What a route counts into, shared by every snapshot in which the route has its name.
#[derive(Debug)]
pub struct RouteMetrics {
    name: Arc<str>,
    /// By status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    requests: [Counter; 5],
    duration: Histogram,
    /// The family, not the gauge: a route's series appears with its first WebSocket.
    websockets_open: Family<RouteLabel, Gauge>,
    /// The family, not the counter: a route's series appears with its first refusal.
    rate_limited: Family<RouteLabel, Counter>,
    /// Client headers dropped for being on no list; `None` for what forwards nothing (no
    /// route matched, the gateway's own endpoints).
    client_headers_dropped: Option<Counter>,
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl RouteMetrics {
    fn new(
        name: Arc<str>,
        requests: &Family<RequestLabels, Counter>,
        durations: &HistogramFamily<RouteLabel>,
        websockets_open: &Family<RouteLabel, Gauge>,
        rate_limited: &Family<RouteLabel, Counter>,
        client_headers_dropped: Option<&Family<RouteLabel, Counter>>,
    ) -> Self {
        let counters = STATUS_CLASSES.map(|status_class| {
            requests.get_or_create_owned(&RequestLabels {
                route: Arc::clone(&name),
                status_class,
            })
        });
        let label = RouteLabel {
            route: Arc::clone(&name),
        };
        Self {
            requests: counters,
            duration: durations.get_or_create_owned(&label),
            websockets_open: websockets_open.clone(),
            rate_limited: rate_limited.clone(),
            client_headers_dropped: client_headers_dropped
                .map(|family| family.get_or_create_owned(&label)),
            name,
        }
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn count(&self, status: u16, seconds: f64) {
        // Statuses outside 100..=599 cannot be built by `http`; clamp rather than index
        // out of bounds.
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        if let Some(counter) = self.requests.get(class) {
            counter.inc();
        }
        self.duration.observe(seconds);
    }

    /// Counts one client header line dropped for being on no list.
    pub fn client_header_dropped(&self) {
        if let Some(counter) = &self.client_headers_dropped {
            counter.inc();
        }
    }

    /// Counts one request refused by a per-client rate limit.
    pub fn rate_limited(&self) {
        let label = RouteLabel {
            route: Arc::clone(&self.name),
        };
        self.rate_limited.get_or_create(&label).inc();
    }

    /// Marks a WebSocket tunnel of this route open until the guard is dropped.
    pub fn websocket_opened(&self) -> OpenWebSocket {
        let gauge = self.websockets_open.get_or_create_owned(&RouteLabel {
            route: Arc::clone(&self.name),
        });
        gauge.inc();
        OpenWebSocket(gauge)
    }
}

/// Counts one open WebSocket in `fluxlit_websockets_open` while it lives.
#[derive(Debug)]
pub struct OpenWebSocket(Gauge);

impl Drop for OpenWebSocket {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Where a route keeps its [`RouteMetrics`] once resolved. Empty when compiled.
#[derive(Debug, Default)]
pub struct RouteSlot(OnceLock<Arc<RouteMetrics>>);

/// Why an upstream request produced no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// The connection was refused or could not be made.
    ConnectError,
    /// No connection within `connect_timeout`.
    ConnectTimeout,
    /// No response headers within `timeout`.
    Timeout,
    /// The upstream broke the connection during the request.
    RequestError,
}

impl UpstreamErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectError => "connect_error",
            Self::ConnectTimeout => "connect_timeout",
            Self::Timeout => "timeout",
            Self::RequestError => "request_error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_clamp_into_the_five_classes() {
        let metrics = Metrics::new();
        let route = metrics.no_route();
        for status in [101, 200, 204, 302, 404, 499, 502, 504] {
            route.count(status, 0.001);
        }
        let text = metrics.encode();
        for (class, count) in [("1xx", 1), ("2xx", 2), ("3xx", 1), ("4xx", 2), ("5xx", 2)] {
            let line = format!(
                "fluxlit_requests_total{{route=\"(none)\",status_class=\"{class}\"}} {count}"
            );
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
        assert!(
            text.contains("fluxlit_request_duration_seconds_count{route=\"(none)\"} 8"),
            "{text}"
        );
    }
}
