//! The gateway's log: `tracing` events to stderr, formatted as `[log]` says; and the
//! access log ([`crate::access_log`]), to stdout or `access_log_path`, in the same format.
//!
//! `format`, `level` and `access_log_path` are read once, at start (the subscriber and
//! the access log are global and set once); a reload that changes them is refused for
//! those keys. `access_log` is read per request from the snapshot, so it applies on
//! reload.

use std::path::Path;

use tracing_subscriber::EnvFilter;

use crate::access_log::{self, AccessLog, Destination, Format};
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

/// Installs the access log `[log]` asks for (relative paths are relative to
/// `config_dir`), unless the log filter (`level`, `--log`, `RUST_LOG`) drops events of
/// target `fluxlit::access` at level info, as it did when they were `tracing` events:
/// `level = "info,fluxlit::access=off"` still turns the access log off. Call it after
/// [`init`].
pub fn start_access_log(
    log: &Log,
    config_dir: &Path,
) -> Result<Option<AccessLog>, access_log::InstallError> {
    if !access_events_enabled() {
        return Ok(None);
    }
    let format = match log.format {
        LogFormat::Pretty => Format::Text,
        LogFormat::Json => Format::Json,
    };
    let destination = match &log.access_log_path {
        Some(path) => Destination::File(config_dir.join(path)),
        None => Destination::Stdout,
    };
    AccessLog::install(format, &destination).map(Some)
}

/// Whether the installed subscriber takes an access event: one of the target, level and
/// field names the access line has (`message` is the text's), so that a filter that
/// selects by field name answers as it did.
fn access_events_enabled() -> bool {
    tracing::enabled!(
        kind: tracing::metadata::Kind::EVENT,
        target: "fluxlit::access",
        tracing::Level::INFO,
        message,
        method,
        path,
        route,
        status,
        duration_ms,
        bytes,
        request_id,
        peer
    )
}
