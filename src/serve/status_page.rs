//! `GET /` on the admin listener: the running gateway at a glance, as one HTML page.
//!
//! It is a second rendering of what `/snapshot` and `/metrics` serve, not a source of
//! its own: the config and reload state come from the snapshot and the reloader, the
//! traffic figures from the Prometheus text `/metrics` answers (sampled every few
//! seconds, so "the last minute" is a difference of two samples, as a Prometheus
//! `rate()` is). No script, no asset from elsewhere; the page refreshes itself with a
//! meta refresh, so it works with JavaScript off. Secrets never appear: the config is
//! shown by its references, as `/config` shows it.
//!
//! A view costs little with many routes (a figure in BENCHMARKS.md): what changes only
//! with a reload (each route's cells from the config, the doctor's findings) is written
//! once per snapshot generation, what changes only with a sample (each route's cells of
//! figures over the window) once per sample, and the page is written into one buffer of
//! the last page's size, escaped as it goes ([`Html`]), with no string per cell.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::model::Config;
use crate::doctor;
use crate::http::Html;
use crate::proxy::health::Health;
use crate::reload::Reloader;
use crate::snapshot::Snapshot;

/// How often the traffic is sampled, and the window the page's rates cover.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const WINDOW: Duration = Duration::from_secs(60);
/// The page's own refresh.
const REFRESH_SECONDS: u32 = 5;

/// One route's cumulative counts at a sample.
#[derive(Debug, Clone, Default, PartialEq)]
struct RouteCounts {
    requests: f64,
    errors: f64,
    /// `(le, cumulative count)`, ascending, `+Inf` last.
    buckets: Vec<(f64, f64)>,
    websockets_open: f64,
}

#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    routes: BTreeMap<String, RouteCounts>,
}

/// The last minute of samples of `/metrics` and each route's figures over it, and what
/// the page shows of the config, made once per snapshot generation (the config, and so
/// the findings, change only with a reload: they are not worked out again per view).
#[derive(Debug, Default)]
pub struct TrafficSampler {
    samples: Mutex<VecDeque<Sample>>,
    /// Each route's cells of figures over the window, written with each sample.
    figures: Mutex<Arc<Figures>>,
    /// The routes' cells that come from the config, for one generation.
    routes: Mutex<Option<Arc<RouteCells>>>,
    /// The doctor's section, for one generation.
    findings: Mutex<Option<(u64, Arc<str>)>>,
    /// The size of the last page: the next one's buffer is made that large at once.
    last_size: AtomicUsize,
}

/// Each route's cells of figures over the window (req/s to WebSockets), written when
/// the sample came, by route name; empty until the window has two samples.
type Figures = HashMap<String, String>;

const DASH: &str = "<span class=\"muted\">—</span>";

/// The cells of figures of a route without requests in the window.
const NO_TRAFFIC: &str = "<td class=\"n\">0.00</td><td class=\"n\"><span class=\"muted\">—</span></td>\
<td class=\"n\"><span class=\"muted\">—</span></td><td class=\"n\"><span class=\"muted\">—</span></td>\
<td class=\"n\">0</td>";

/// Each route's row up to its figures, escaped, for the snapshot generation it was made
/// for.
#[derive(Debug)]
struct RouteCells {
    generation: u64,
    /// Route name, and its row's cells from the config.
    rows: Vec<(String, String)>,
}

/// A lock whose holder only swaps or reads a value: a panic cannot leave it torn.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TrafficSampler {
    /// Keeps a sample of `metrics` (the Prometheus text), dropping those older than the
    /// window (but one, the start of the window), and works out each route's figures
    /// over the window.
    pub fn record(&self, metrics: &str) {
        let sample = Sample {
            at: Instant::now(),
            routes: parse_routes(metrics),
        };
        let figures = {
            let mut samples = lock(&self.samples);
            samples.push_back(sample);
            while samples.len() > 2
                && samples
                    .get(1)
                    .is_some_and(|second| second.at.elapsed() >= WINDOW)
            {
                samples.pop_front();
            }
            match (samples.front(), samples.back()) {
                (Some(first), Some(last)) if last.at > first.at => figures_between(first, last),
                _ => Figures::new(),
            }
        };
        // The old figures are dropped after the lock is let go.
        let _old = std::mem::replace(&mut *lock(&self.figures), Arc::new(figures));
    }

    /// The doctor's section for `snapshot`, made once per generation.
    fn findings_of(&self, snapshot: &Snapshot) -> Arc<str> {
        let mut cached = lock(&self.findings);
        match cached.as_ref() {
            Some((generation, html)) if *generation == snapshot.generation => Arc::clone(html),
            _ => {
                let mut html = String::new();
                findings_section(&mut html, &snapshot.config);
                let html: Arc<str> = Arc::from(html);
                *cached = Some((snapshot.generation, Arc::clone(&html)));
                html
            }
        }
    }

    /// The routes' cells from the config of `snapshot`, made once per generation.
    fn route_cells_of(&self, snapshot: &Snapshot) -> Arc<RouteCells> {
        let mut cached = lock(&self.routes);
        match cached.as_ref() {
            Some(cells) if cells.generation == snapshot.generation => Arc::clone(cells),
            _ => {
                let cells = Arc::new(route_cells(snapshot));
                *cached = Some(Arc::clone(&cells));
                cells
            }
        }
    }
}

/// Each route's cells of figures between the first and last samples. Written here,
/// once per sample, rather than per view: formatting their numbers was most of a view.
fn figures_between(first: &Sample, last: &Sample) -> Figures {
    last.routes
        .iter()
        .filter_map(|(route, now)| {
            let traffic = traffic(first, last, route)?;
            Some((route.clone(), figure_cells(&traffic, now.websockets_open)))
        })
        .collect()
}

fn figure_cells(traffic: &RouteTraffic, websockets_open: f64) -> String {
    let mut cells = String::with_capacity(200);
    let _ = write!(cells, "<td class=\"n\">{:.2}</td>", traffic.per_second);
    match traffic.error_ratio {
        Some(ratio) => {
            let _ = write!(cells, "<td class=\"n\">{:.1}%</td>", ratio * 100.0);
        }
        None => {
            let _ = write!(cells, "<td class=\"n\">{DASH}</td>");
        }
    }
    for quantile in [traffic.p50, traffic.p99] {
        match quantile {
            Some(seconds) => {
                let _ = write!(cells, "<td class=\"n\">{:.1} ms</td>", seconds * 1000.0);
            }
            None => {
                let _ = write!(cells, "<td class=\"n\">{DASH}</td>");
            }
        }
    }
    let _ = write!(cells, "<td class=\"n\">{websockets_open}</td>");
    cells
}

/// What the routes table shows of one route over the window.
#[derive(Debug)]
struct RouteTraffic {
    per_second: f64,
    error_ratio: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
}

fn traffic(first: &Sample, last: &Sample, route: &str) -> Option<RouteTraffic> {
    let now = last.routes.get(route)?;
    let zero = RouteCounts::default();
    let then = first.routes.get(route).unwrap_or(&zero);
    let seconds = last.at.duration_since(first.at).as_secs_f64();
    let requests = (now.requests - then.requests).max(0.0);
    let errors = (now.errors - then.errors).max(0.0);
    let deltas: Vec<(f64, f64)> = now
        .buckets
        .iter()
        .map(|&(le, count)| {
            let before = then
                .buckets
                .iter()
                .find(|(old_le, _)| *old_le == le)
                .map_or(0.0, |&(_, old)| old);
            (le, (count - before).max(0.0))
        })
        .collect();
    Some(RouteTraffic {
        per_second: if seconds > 0.0 {
            requests / seconds
        } else {
            0.0
        },
        error_ratio: (requests > 0.0).then(|| errors / requests),
        p50: quantile(0.5, &deltas),
        p99: quantile(0.99, &deltas),
    })
}

/// The `q` quantile of cumulative histogram buckets, interpolated within the bucket it
/// falls in, as Prometheus' `histogram_quantile` does (the highest finite bound when it
/// falls in `+Inf`).
fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let within = count - lower.1;
            let fraction = if within > 0.0 {
                (rank - lower.1) / within
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * fraction);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

/// The per-route series of the Prometheus text the gateway writes.
fn parse_routes(metrics: &str) -> BTreeMap<String, RouteCounts> {
    let mut routes: BTreeMap<String, RouteCounts> = BTreeMap::new();
    for line in metrics.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let Some((name, labels)) = series.split_once('{') else {
            continue;
        };
        // `name="value",...}`: read pair by pair, no string made to search for.
        let label = |key: &str| -> Option<&str> {
            let mut rest = labels;
            loop {
                let (name, after) = rest.split_once("=\"")?;
                let end = after.find('"')?;
                if name == key {
                    return after.get(..end);
                }
                rest = after.get(end + 1..)?.trim_start_matches(',');
            }
        };
        let Some(route) = label("route") else {
            continue;
        };
        let counts = routes.entry(route.to_owned()).or_default();
        match name {
            "fluxlit_requests_total" => {
                counts.requests += value;
                if label("status_class") == Some("5xx") {
                    counts.errors += value;
                }
            }
            "fluxlit_request_duration_seconds_bucket" => {
                let le = match label("le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(bound) => bound.parse().unwrap_or(f64::INFINITY),
                    None => continue,
                };
                counts.buckets.push((le, value));
            }
            "fluxlit_websockets_open" => counts.websockets_open = value,
            _ => {}
        }
    }
    for counts in routes.values_mut() {
        counts.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    routes
}

/// The page.
pub fn render(snapshot: &Snapshot, reloader: &Reloader, sampler: &TrafficSampler) -> String {
    // The last page's size and a little more: one allocation, no copy as it grows.
    let size = sampler.last_size.load(Ordering::Relaxed);
    let mut page = String::with_capacity((size + size / 8).max(16 * 1024));
    let _ = write!(
        page,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>fluxlit status</title><style>{STYLE}</style></head><body>\
         <h1>fluxlit <small>generation {}</small></h1>",
        snapshot.generation
    );
    config_section(&mut page, snapshot, reloader);
    routes_section(&mut page, snapshot, sampler);
    upstreams_section(&mut page, snapshot);
    providers_section(&mut page, snapshot);
    page.push_str(&sampler.findings_of(snapshot));
    let _ = writeln!(
        page,
        "<footer>Refreshes every {REFRESH_SECONDS} s. The same data as JSON: \
         <a href=\"/snapshot\">/snapshot</a>, <a href=\"/config\">/config</a>, \
         <a href=\"/metrics\">/metrics</a>.</footer></body></html>"
    );
    sampler.last_size.store(page.len(), Ordering::Relaxed);
    page
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:1.5rem auto;max-width:72rem;\
padding:0 1rem;color:#1d2330}h1{font-size:1.4rem}h1 small{font-weight:normal;color:#667}\
h2{font-size:1.1rem;margin-top:1.6rem;border-bottom:1px solid #dde}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .6rem;\
border-bottom:1px solid #eef;vertical-align:top}th{color:#556;font-weight:600}\
td.n{text-align:right;font-variant-numeric:tabular-nums}code{font-size:.95em}\
.up{color:#0a7b34;font-weight:600}.down{color:#b3261e;font-weight:600}\
.unknown{color:#8a6d00;font-weight:600}.error{color:#b3261e}.muted{color:#778}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}dt{color:#556}\
dd{margin:0}footer{margin-top:2rem;color:#778;font-size:.9em}";

fn config_section(page: &mut String, snapshot: &Snapshot, reloader: &Reloader) {
    let status = reloader.status();
    let loaded = humantime::format_rfc3339_seconds(snapshot.loaded_at);
    let _ = write!(
        page,
        "<h2>Config</h2><dl><dt>file</dt><dd><code>{}</code></dd>\
         <dt>generation</dt><dd>{}</dd><dt>hash</dt><dd><code>{}</code></dd>\
         <dt>loaded at</dt><dd>{loaded}</dd>",
        Html(&reloader.path().display().to_string()),
        snapshot.generation,
        Html(&snapshot.source_hash.to_string()),
    );
    match &status.last_reload_diff {
        Some(diff) if diff.changes.is_empty() => {
            let _ = write!(
                page,
                "<dt>last reload</dt><dd>applied at {} (comments or formatting only)</dd>",
                Html(&diff.at)
            );
        }
        Some(diff) => {
            let _ = write!(
                page,
                "<dt>last reload</dt><dd>applied at {}: ",
                Html(&diff.at)
            );
            for (index, change) in diff.changes.iter().enumerate() {
                let separator = if index == 0 { "" } else { "; " };
                let _ = write!(page, "{separator}{}", Html(change));
            }
            page.push_str("</dd>");
        }
        None => page.push_str("<dt>last reload</dt><dd class=\"muted\">none since start</dd>"),
    }
    if let Some(failure) = &status.last_error {
        let _ = write!(
            page,
            "<dt>refused reload</dt><dd class=\"error\">at {}, the running config kept \
             serving:",
            Html(&failure.at),
        );
        for error in &failure.errors {
            let _ = write!(page, "<br><code>{}</code>", Html(error));
        }
        page.push_str("</dd>");
    }
    if !status.refused_static_keys.is_empty() {
        page.push_str("<dt>needs a restart</dt><dd>");
        for (index, key) in status.refused_static_keys.iter().enumerate() {
            let separator = if index == 0 { "" } else { ", " };
            let _ = write!(page, "{separator}{}", Html(key));
        }
        page.push_str("</dd>");
    }
    page.push_str("</dl>");
}

/// Each route's row up to its figures: name, prefix → upstream, auth, rate limit.
fn route_cells(snapshot: &Snapshot) -> RouteCells {
    const NONE: &str = "<span class=\"muted\">none</span>";
    let rows = snapshot
        .config
        .routes
        .iter()
        .map(|route| {
            let mut row = String::with_capacity(160);
            let _ = write!(
                row,
                "<tr><td>{}</td><td><code>{}</code> → {}</td><td>",
                Html(&route.name),
                Html(&route.path_prefix),
                Html(&route.upstream),
            );
            match &route.auth {
                Some(name) => {
                    let _ = write!(row, "{}", Html(name));
                }
                None => row.push_str(NONE),
            }
            row.push_str("</td><td>");
            match &route.rate_limit {
                Some(limit) => {
                    let rate = limit.rate.to_string();
                    let _ = write!(row, "{}", Html(&rate));
                    if let Some(burst) = limit.burst {
                        let _ = write!(row, " (burst {burst})");
                    }
                }
                None => row.push_str(NONE),
            }
            row.push_str("</td>");
            (route.name.clone(), row)
        })
        .collect();
    RouteCells {
        generation: snapshot.generation,
        rows,
    }
}

fn routes_section(page: &mut String, snapshot: &Snapshot, sampler: &TrafficSampler) {
    let cells = sampler.route_cells_of(snapshot);
    let figures = Arc::clone(&lock(&sampler.figures));
    page.push_str(
        "<h2>Routes</h2><table><tr><th>route</th><th>prefix → upstream</th><th>auth</th>\
         <th>rate limit</th><th class=\"n\">req/s</th><th class=\"n\">5xx</th>\
         <th class=\"n\">p50</th><th class=\"n\">p99</th><th class=\"n\">WebSockets</th></tr>",
    );
    for (name, row) in &cells.rows {
        page.push_str(row);
        page.push_str(figures.get(name).map_or(NO_TRAFFIC, String::as_str));
        page.push_str("</tr>");
    }
    page.push_str("</table><p class=\"muted\">Over the last minute.</p>");
}

fn upstreams_section(page: &mut String, snapshot: &Snapshot) {
    page.push_str(
        "<h2>Upstreams</h2><table><tr><th>upstream</th><th>target</th>\
         <th class=\"n\">in flight</th><th class=\"n\">pool idle</th>\
         <th class=\"n\">pool open</th><th>health</th><th>last check</th>\
         <th>last error</th></tr>",
    );
    for (name, upstream) in &snapshot.upstreams {
        let _ = write!(page, "<tr><td>{}</td><td><code>", Html(name));
        match (&upstream.settings.url, &upstream.settings.builtin) {
            (Some(url), _) => {
                let _ = write!(page, "{}", Html(url));
            }
            (None, Some(_)) => page.push_str("builtin echo"),
            (None, None) => {}
        }
        page.push_str("</code></td>");
        match upstream.pool_counts() {
            Some(counts) => {
                let _ = write!(
                    page,
                    "<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>",
                    counts.in_flight, counts.idle, counts.open
                );
            }
            None => page.push_str(
                "<td class=\"n muted\">—</td><td class=\"n muted\">—</td>\
                 <td class=\"n muted\">—</td>",
            ),
        }
        match &upstream.health {
            Some(health) => {
                let status = health.status();
                let (class, word) = match status.state {
                    Health::Up => ("up", "up"),
                    Health::Down => ("down", "down"),
                    Health::Unknown => ("unknown", "not probed yet"),
                };
                let _ = write!(page, "<td><span class=\"{class}\">{word}</span>");
                if let Some(at) = &status.since {
                    let _ = write!(page, " <span class=\"muted\">since {}</span>", Html(at));
                }
                page.push_str("</td><td>");
                if let Some(at) = &status.last_check {
                    let _ = write!(page, "{}", Html(at));
                }
                page.push_str("</td><td>");
                if let Some(why) = &status.last_error {
                    let _ = write!(page, "<span class=\"error\">{}</span>", Html(why));
                }
                page.push_str("</td></tr>");
            }
            None => page.push_str(
                "<td><span class=\"muted\">no health_check</span></td><td></td><td></td></tr>",
            ),
        }
    }
    page.push_str("</table>");
}

fn providers_section(page: &mut String, snapshot: &Snapshot) {
    if snapshot.providers.is_empty() {
        return;
    }
    page.push_str(
        "<h2>Auth providers</h2><table><tr><th>provider</th><th>kind</th><th>keys</th>\
         <th>login store</th><th>last error</th></tr>",
    );
    for (name, provider) in &snapshot.providers {
        let kind = format!("{:?}", provider.settings.kind).to_lowercase();
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>",
            Html(name),
            Html(&kind)
        );
        let mut errors = Vec::new();
        match provider.jwks_status() {
            Some(jwks) => {
                errors.extend(jwks.last_error.clone());
                let _ = write!(page, "{} loaded", jwks.keys);
                if let Some(at) = &jwks.last_success {
                    let _ = write!(page, ", fetched {}", Html(at));
                }
            }
            None => page.push_str("<span class=\"muted\">—</span>"),
        }
        page.push_str("</td><td>");
        match provider.oidc_status() {
            Some(oidc) => {
                errors.extend(oidc.discovery.last_error.clone());
                errors.extend(oidc.store.last_error.clone());
                let _ = write!(page, "{}", oidc.store.kind);
                if let Some(url) = &oidc.store.url {
                    let _ = write!(page, " <code>{}</code>", Html(url));
                }
                if oidc.store.last_error.is_some() {
                    page.push_str(" <span class=\"down\">unreachable</span>");
                }
            }
            None => page.push_str("<span class=\"muted\">—</span>"),
        }
        page.push_str("</td><td class=\"error\">");
        for (index, error) in errors.iter().enumerate() {
            let separator = if index == 0 { "" } else { "; " };
            let _ = write!(page, "{separator}{}", Html(error));
        }
        page.push_str("</td></tr>");
    }
    page.push_str("</table>");
}

fn findings_section(page: &mut String, config: &Config) {
    let mut findings = doctor::static_checks::check(config);
    let unused = doctor::accept::apply(&config.doctor.accept, &mut findings, true);
    findings.extend(unused);
    page.push_str("<h2>Doctor</h2>");
    if findings.is_empty() {
        page.push_str("<p>No findings for the running config.</p>");
        return;
    }
    page.push_str("<table><tr><th>finding</th><th>severity</th><th>key</th><th>what</th></tr>");
    for finding in &findings {
        let severity = if finding.accepted.is_some() {
            "accepted".to_owned()
        } else {
            format!("{:?}", finding.severity).to_lowercase()
        };
        let _ = write!(
            page,
            "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td>{}<br>\
             <span class=\"muted\">{}</span></td></tr>",
            Html(finding.id),
            Html(&severity),
            Html(&finding.key),
            Html(&finding.message),
            Html(&finding.fix)
        );
    }
    page.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        // 10 requests: 5 under 10 ms, 4 more under 100 ms, 1 slower than 1 s.
        let buckets = [(0.01, 5.0), (0.1, 9.0), (1.0, 9.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile(0.5, &buckets), Some(0.01));
        let p90 = quantile(0.9, &buckets).unwrap();
        assert!((p90 - 0.1).abs() < 1e-9, "{p90}");
        assert_eq!(
            quantile(0.99, &buckets),
            Some(1.0),
            "in +Inf: the highest bound"
        );
        assert_eq!(quantile(0.5, &[(0.01, 0.0), (f64::INFINITY, 0.0)]), None);
    }

    #[test]
    fn each_sample_writes_the_cells_of_the_routes_it_saw() {
        let counts = |requests: f64, errors: f64| RouteCounts {
            requests,
            errors,
            buckets: vec![(0.01, requests), (f64::INFINITY, requests)],
            websockets_open: 2.0,
        };
        let at = Instant::now();
        let first = Sample {
            at,
            routes: BTreeMap::from([("ui".to_owned(), counts(10.0, 0.0))]),
        };
        let last = Sample {
            at: at + Duration::from_secs(10),
            routes: BTreeMap::from([
                ("ui".to_owned(), counts(30.0, 5.0)),
                ("<new>".to_owned(), counts(0.0, 0.0)),
            ]),
        };
        let figures = figures_between(&first, &last);
        // 20 requests in 10 s, 5 of them 5xx, all under 10 ms.
        assert_eq!(
            figures["ui"],
            "<td class=\"n\">2.00</td><td class=\"n\">25.0%</td><td class=\"n\">5.0 ms</td>\
             <td class=\"n\">9.9 ms</td><td class=\"n\">2</td>"
        );
        // Seen, but without a request in the window: no share, no latency.
        assert_eq!(
            figures["<new>"],
            format!(
                "<td class=\"n\">0.00</td><td class=\"n\">{DASH}</td><td class=\"n\">{DASH}</td>\
                 <td class=\"n\">{DASH}</td><td class=\"n\">2</td>"
            )
        );
    }

    #[test]
    fn the_routes_series_are_read_from_the_metrics_text() {
        let text = "# TYPE fluxlit_requests_total counter\n\
            fluxlit_requests_total{route=\"ui\",status_class=\"2xx\"} 8\n\
            fluxlit_requests_total{route=\"ui\",status_class=\"5xx\"} 2\n\
            fluxlit_request_duration_seconds_bucket{route=\"ui\",le=\"0.1\"} 9\n\
            fluxlit_request_duration_seconds_bucket{route=\"ui\",le=\"+Inf\"} 10\n\
            fluxlit_websockets_open{route=\"ui\"} 3\n\
            fluxlit_config_generation 4\n";
        let routes = parse_routes(text);
        let ui = &routes["ui"];
        assert_eq!(
            (ui.requests, ui.errors, ui.websockets_open),
            (10.0, 2.0, 3.0)
        );
        assert_eq!(ui.buckets, vec![(0.1, 9.0), (f64::INFINITY, 10.0)]);
        assert_eq!(routes.len(), 1);
    }
}
