//! Keys that take effect only at start (listen addresses, TLS on or off, the log
//! subscriber): a reload that changes them is refused for those keys by name, and the
//! rest of the change applies.

use super::Config;
use super::model::{Log, LogFormat};

/// Keys that only take effect at start; a reload that changes them is refused for them.
/// [`super::diff`] marks exactly these as needing a restart. (`server.tls` is static in
/// whether it is there; its files may change.)
pub const STATIC_KEYS: &[&str] = &[
    "server.listen",
    "admin.listen",
    "server.tls",
    "log.format",
    "log.level",
    "log.access_log_path",
];

/// Puts the running values back into static keys the new file changed; returns their names.
pub fn keep_static_keys(new: &mut Config, running: &Config) -> Vec<String> {
    let mut refused = Vec::new();
    if new.server.listen != running.server.listen {
        refused.push(format!(
            "server.listen (running {}, file says {})",
            running.server.listen, new.server.listen
        ));
        new.server.listen = running.server.listen;
    }
    let running_admin = running.admin.as_ref().map(|a| a.listen);
    let new_admin = new.admin.as_ref().map(|a| a.listen);
    if new_admin != running_admin {
        let show = |listen: Option<std::net::SocketAddr>| {
            listen.map_or("none".to_owned(), |l| l.to_string())
        };
        refused.push(format!(
            "admin.listen (running {}, file says {})",
            show(running_admin),
            show(new_admin)
        ));
        // Only the address is static: the admin listener's limits change on reload.
        match (&mut new.admin, &running.admin) {
            (Some(new), Some(running)) => new.listen = running.listen,
            (new, running) => new.clone_from(running),
        }
    }
    // TLS on or off is static; which certificate it serves is not.
    if new.server.tls.is_some() != running.server.tls.is_some() {
        let show = |on: bool| if on { "on" } else { "off" };
        refused.push(format!(
            "server.tls (running with TLS {}, file turns it {})",
            show(running.server.tls.is_some()),
            show(new.server.tls.is_some())
        ));
        new.server.tls = running.server.tls.clone();
    }
    refused.extend(keep_static_log_keys(&mut new.log, &running.log));
    refused
}

/// Puts the running values back into the static `[log]` keys the new file changed;
/// returns their names as the reload reports them.
fn keep_static_log_keys(new: &mut Log, running: &Log) -> Vec<String> {
    let mut refused = Vec::new();
    if new.format != running.format {
        refused.push(format!(
            "log.format (running {}, file says {})",
            format_name(running.format),
            format_name(new.format)
        ));
        new.format = running.format;
    }
    if new.level != running.level {
        refused.push(format!(
            "log.level (running {:?}, file says {:?})",
            running.level, new.level
        ));
        new.level.clone_from(&running.level);
    }
    if new.access_log_path != running.access_log_path {
        let show = |path: &Option<std::path::PathBuf>| {
            path.as_ref().map_or("stdout".to_owned(), |path| {
                format!("{:?}", path.display().to_string())
            })
        };
        refused.push(format!(
            "log.access_log_path (running {}, file says {})",
            show(&running.access_log_path),
            show(&new.access_log_path)
        ));
        new.access_log_path.clone_from(&running.access_log_path);
    }
    refused
}

fn format_name(format: LogFormat) -> &'static str {
    match format {
        LogFormat::Pretty => "pretty",
        LogFormat::Json => "json",
    }
}
