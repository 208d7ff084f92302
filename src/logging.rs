//! The gateway's log: `tracing` events to stderr, formatted as `[log]` says.
//!
//! `format` and `level` are read once, at start (the subscriber is global and set once);
//! a reload that changes them is refused for those keys. `access_log` is read per
//! request from the snapshot, so it applies on reload.

use tracing_subscriber::EnvFilter;

use crate::config::model::{Log, LogFormat};

/// Installs the global subscriber: `[log]` settings, with `level_override` (`--log`,
/// else `RUST_LOG`) taking the place of `log.level` when given. An override that does
/// not parse falls back to `log.level`, and the returned warning says so.
pub fn init(log: &Log, level_override: Option<&str>) -> Option<String> {
    let mut warning = None;
    let filter = match level_override.map(EnvFilter::try_new) {
        Some(Ok(filter)) => filter,
        Some(Err(error)) => {
            warning = Some(format!(
                "the log filter override is not valid ({error}); using log.level {:?}",
                log.level
            ));
            EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"))
        }
        None => EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match log.format {
        LogFormat::Pretty => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            builder.with_ansi(ansi).try_init()
        }
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    if let Err(error) = installed {
        warning = Some(format!("cannot install the log subscriber: {error}"));
    }
    warning
}
