//! Active health checks of an upstream: a background probe every `interval` (a `GET` of
//! the configured path, or a TCP connection), thresholds in both directions, and the
//! state `/readyz`, `/snapshot` and `fluxlit_upstream_up` read.
//!
//! The probe is deliberately not a proxied request: it uses its own connection (never a
//! pooled one a client request could be waiting for), sends a fixed request, and reads
//! no more than the status line.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::auth::background::{Refresher, lock};
use crate::config::model::HealthCheck;
use crate::proxy::pool::UpstreamAddress;
use crate::proxy::upstream_tls::UpstreamTls;

/// The most of the answer read to find its status line.
const MAX_STATUS_LINE: usize = 1024;

/// Up, down, or not probed yet (counts as down for readiness).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Unknown,
    Up,
    Down,
}

impl Health {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Up,
            2 => Self::Down,
            _ => Self::Unknown,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Self::Unknown => 0,
            Self::Up => 1,
            Self::Down => 2,
        }
    }
}

/// Where the probe goes: the upstream's address and `Host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    pub address: UpstreamAddress,
    /// The `Host` header (the upstream's authority).
    pub authority: String,
    /// TLS, for an https upstream: the probe is verified as requests are.
    pub tls: Option<UpstreamTls>,
}

/// What `/snapshot` shows of an upstream's health.
#[derive(Debug, Clone, Serialize)]
pub struct HealthStatus {
    pub state: Health,
    /// Why it went down (or the last probe failed), until it is up again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the last probe finished (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_check: Option<String>,
    /// When it went up or down (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

#[derive(Debug, Default)]
struct Counters {
    successes: u32,
    failures: u32,
    last_error: Option<String>,
    last_check: Option<SystemTime>,
    changed_at: Option<SystemTime>,
}

/// One upstream's health, probed by a task that lives as long as this does.
#[derive(Debug)]
pub struct UpstreamHealth {
    name: Arc<str>,
    settings: HealthCheck,
    target: ProbeTarget,
    state: AtomicU8,
    counters: Mutex<Counters>,
    refresher: Refresher,
}

impl UpstreamHealth {
    pub fn new(name: Arc<str>, settings: HealthCheck, target: ProbeTarget) -> Self {
        Self {
            name,
            settings,
            target,
            state: AtomicU8::new(Health::Unknown.as_u8()),
            counters: Mutex::new(Counters::default()),
            refresher: Refresher::default(),
        }
    }

    /// Whether this one can carry on for an upstream configured with `settings` at
    /// `target` (a reload keeps the state instead of starting from "not probed").
    pub fn probes(&self, settings: &HealthCheck, target: &ProbeTarget) -> bool {
        self.settings == *settings && self.target == *target
    }

    pub fn state(&self) -> Health {
        Health::from_u8(self.state.load(Ordering::Acquire))
    }

    pub fn status(&self) -> HealthStatus {
        let counters = lock(&self.counters);
        HealthStatus {
            state: self.state(),
            last_error: counters.last_error.clone(),
            last_check: counters
                .last_check
                .map(|at| humantime::format_rfc3339_seconds(at).to_string()),
            since: counters
                .changed_at
                .map(|at| humantime::format_rfc3339_seconds(at).to_string()),
        }
    }

    /// The last error, for `/readyz`'s answer.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.counters).last_error.clone()
    }

    /// Starts probing (once; the task ends when this is dropped).
    pub fn start(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.refresher.start_once(|| probe_forever(weak));
    }

    /// One probe, and what it does to the state.
    async fn probe_once(&self) {
        let result = tokio::time::timeout(self.settings.timeout.get(), self.probe())
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no answer within {}",
                    humantime::format_duration(self.settings.timeout.get())
                ))
            });
        self.record(result);
    }

    async fn probe(&self) -> Result<(), String> {
        let cannot_connect = |error: std::io::Error| format!("cannot connect: {error}");
        let (host, port) = match &self.target.address {
            UpstreamAddress::Tcp { host, port } => (host.as_str(), *port),
            UpstreamAddress::Unix(path) => {
                let stream = UnixStream::connect(path).await.map_err(cannot_connect)?;
                return match &self.settings.path {
                    Some(path) => self.get(stream, path).await,
                    None => Ok(()),
                };
            }
        };
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(cannot_connect)?;
        let Some(path) = &self.settings.path else {
            return Ok(());
        };
        match &self.target.tls {
            None => self.get(stream, path).await,
            Some(tls) => {
                let stream = tls
                    .connect(stream)
                    .await
                    .map_err(|error| format!("TLS handshake failed: {error}"))?;
                self.get(stream, path).await
            }
        }
    }

    /// `GET path` over `stream`, judged by the status line.
    async fn get<S>(&self, mut stream: S, path: &str) -> Result<(), String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: fluxlit-health-check\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n",
            self.target.authority
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|error| format!("cannot send the probe: {error}"))?;
        let mut answer = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !answer.contains(&b'\n') && answer.len() < MAX_STATUS_LINE {
            let read = stream
                .read(&mut chunk)
                .await
                .map_err(|error| format!("cannot read the answer: {error}"))?;
            if read == 0 {
                break;
            }
            answer.extend_from_slice(&chunk[..read]);
        }
        match status_code(&answer) {
            Some(status) if (200..400).contains(&status) => Ok(()),
            Some(status) => Err(format!("GET {path} answered {status}")),
            None => Err(format!("GET {path}: not an HTTP answer")),
        }
    }

    fn record(&self, result: Result<(), String>) {
        let mut counters = lock(&self.counters);
        counters.last_check = Some(SystemTime::now());
        let before = self.state();
        let after = match result {
            Ok(()) => {
                counters.successes = counters.successes.saturating_add(1);
                counters.failures = 0;
                match before {
                    // Recovering: still down, and still for the reason it went down.
                    Health::Down if counters.successes < self.settings.healthy => Health::Down,
                    _ => {
                        counters.last_error = None;
                        Health::Up
                    }
                }
            }
            Err(why) => {
                counters.failures = counters.failures.saturating_add(1);
                counters.successes = 0;
                counters.last_error = Some(why);
                match before {
                    Health::Up if counters.failures < self.settings.unhealthy => Health::Up,
                    _ => Health::Down,
                }
            }
        };
        if after != before {
            counters.changed_at = counters.last_check;
            self.state.store(after.as_u8(), Ordering::Release);
            match (after, &counters.last_error) {
                (Health::Down, Some(why)) => {
                    tracing::warn!(upstream = %self.name, reason = %why, "upstream is down");
                }
                _ => tracing::info!(upstream = %self.name, state = ?after, "upstream is up"),
            }
        }
    }
}

/// Probes until the owner is gone: at once, then every `interval`.
async fn probe_forever(health: Weak<UpstreamHealth>) {
    loop {
        let interval = {
            let Some(health) = health.upgrade() else {
                return;
            };
            health.probe_once().await;
            health.settings.interval.get()
        };
        tokio::time::sleep(interval.max(Duration::from_millis(10))).await;
    }
}

/// The status code of `HTTP/1.x NNN ...`.
fn status_code(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|&b| b == b'\n').next()?;
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(healthy: u32, unhealthy: u32) -> UpstreamHealth {
        let settings = HealthCheck {
            healthy,
            unhealthy,
            ..HealthCheck::default()
        };
        let target = ProbeTarget {
            address: UpstreamAddress::Tcp {
                host: "127.0.0.1".to_owned(),
                port: 9,
            },
            authority: "127.0.0.1:9".to_owned(),
            tls: None,
        };
        UpstreamHealth::new("api".into(), settings, target)
    }

    #[test]
    fn the_first_probe_decides_then_the_thresholds_do() {
        let health = health(2, 3);
        assert_eq!(health.state(), Health::Unknown);
        health.record(Ok(()));
        assert_eq!(health.state(), Health::Up);
        health.record(Err("refused".to_owned()));
        health.record(Err("refused".to_owned()));
        assert_eq!(health.state(), Health::Up, "two failures of three");
        health.record(Err("refused".to_owned()));
        assert_eq!(health.state(), Health::Down);
        assert_eq!(health.last_error().as_deref(), Some("refused"));
        health.record(Ok(()));
        assert_eq!(health.state(), Health::Down, "one success of two");
        assert_eq!(
            health.last_error().as_deref(),
            Some("refused"),
            "why it is down"
        );
        health.record(Ok(()));
        assert_eq!(health.state(), Health::Up);
        assert_eq!(health.last_error(), None);

        let fresh = self::health(2, 3);
        fresh.record(Err("refused".to_owned()));
        assert_eq!(
            fresh.state(),
            Health::Down,
            "not probed yet, then a failure"
        );
    }

    #[test]
    fn status_lines_are_read_strictly() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            status_code(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(status_code(b"HTTP/1.1 204\r\n"), Some(204));
        assert_eq!(status_code(b"HTTP/2 200\r\n"), None);
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 2x0 OK\r\n"), None);
        assert_eq!(status_code(b""), None);
    }
}
