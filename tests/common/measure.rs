//! Measurements run by hand (ignored tests, and `tests/external/stalled_readers.sh`,
//! which runs them on a release build): `fluxlit serve` as a process of its own (the
//! binary `FLUXLIT_BIN` names, else the one cargo built with the tests), its resident
//! memory, and what a [`FloodingUpstream`] is made to hold over time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{ConfigText, FloodingUpstream, cli, closed_port, eventually};

/// The resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap()
}

/// `fluxlit serve` on a port of its own (the `[server]` table gets the `listen` line,
/// the access log is off), under `ulimit -n 4096`.
pub struct Served {
    pub addr: SocketAddr,
    pub process: cli::KillOnDrop,
    dir: tempfile::TempDir,
}

impl Served {
    /// `server` are the `[server]` lines, `rest` the tables after it.
    pub async fn start(server: &str, rest: ConfigText) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = closed_port();
        let text = format!(
            "{}\n{}",
            ConfigText::new()
                .server(&format!("listen = \"{addr}\"\n{server}"))
                .table("[log]", "access_log = false")
                .text(),
            rest.text()
        );
        let config = dir.path().join("fluxlit.toml");
        std::fs::write(&config, text).unwrap();
        let log = dir.path().join("stderr.log");
        let process = match std::env::var_os("FLUXLIT_BIN") {
            Some(binary) => cli::serve_binary_with_nofile(binary.as_ref(), &config, 4096, &log),
            None => cli::serve_with_nofile(&config, 4096, &log),
        };
        eventually("the gateway listens", || async {
            tokio::net::TcpStream::connect(addr).await.ok().map(drop)
        })
        .await;
        Self { addr, process, dir }
    }

    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }

    /// What it wrote to stderr (`RUST_LOG=warn`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

/// What an attack made the gateway hold, from when it started.
#[derive(Debug)]
pub struct Held {
    pub rss_before_kib: u64,
    pub rss_peak_kib: u64,
    /// The most upstream connections open at once.
    pub upstream_peak: usize,
    /// When the last upstream connection closed, if it did before the limit.
    pub released_after: Option<Duration>,
}

impl Held {
    pub fn growth_mib(&self) -> f64 {
        self.rss_peak_kib.saturating_sub(self.rss_before_kib) as f64 / 1024.0
    }

    /// The RSS line of a report: before, at the peak and `after_kib` (3 s after the
    /// clients left), against a growth of less than `limit_mib`.
    pub fn report_rss(&self, after_kib: u64, limit_mib: f64) -> bool {
        report(
            "RSS growth",
            format!(
                "{:.1} -> {:.1} MiB at the peak (+{:.1} MiB), {:.1} MiB 3 s after the clients left",
                mib(self.rss_before_kib),
                mib(self.rss_peak_kib),
                self.growth_mib(),
                mib(after_kib)
            ),
            &format!("< {limit_mib} MiB"),
            self.growth_mib() < limit_mib,
        )
    }
}

/// Samples the gateway's RSS and the upstream's open connections every 100 ms, from
/// `started` until the upstream has had connections and has none left, or `limit` has
/// passed since `started`.
pub async fn sample(
    served: &Served,
    upstream: &FloodingUpstream,
    rss_before_kib: u64,
    started: Instant,
    limit: Duration,
) -> Held {
    let mut held = Held {
        rss_before_kib,
        rss_peak_kib: rss_before_kib,
        upstream_peak: 0,
        released_after: None,
    };
    while started.elapsed() < limit {
        held.rss_peak_kib = held.rss_peak_kib.max(rss_kib(served.pid()));
        let open = upstream.open();
        held.upstream_peak = held.upstream_peak.max(open);
        if open == 0 && held.upstream_peak > 0 {
            held.released_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    held
}

/// One line of a measurement, checked against its target: prints it and says whether it
/// held.
pub fn report(what: &str, figure: String, target: &str, met: bool) -> bool {
    let verdict = if met { "ok" } else { "MISSED" };
    eprintln!("  {what}: {figure} (target {target}) {verdict}");
    met
}

/// Megabytes, from KiB, for the reports.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
