//! Stage 1: from `fluxlit.toml` to a checked [`Config`]: read → parse (with spans) →
//! validate, and the diff between two configs.
//!
//! Plain data: nothing here knows about sockets, tasks or the runtime types built from a
//! config ([`crate::compile`] and [`crate::build`] come after).

pub mod diagnostic;
pub mod diff;
pub mod load;
pub mod model;
pub mod schema;
pub mod static_keys;
pub mod store_url;
pub mod units;
pub mod validate;

use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, Location, Severity};
pub use load::{ConfigSource, ReadError, SourceHash};
pub use model::Config;

/// The default config path when neither `--config` nor `$FLUXLIT_CONFIG` is given.
pub const DEFAULT_PATH: &str = "fluxlit.toml";

/// A config that parsed and passed validation, with its warnings and the bytes it came from.
#[derive(Debug, Clone)]
pub struct CheckedConfig {
    pub config: Config,
    pub source: ConfigSource,
    pub warnings: Vec<Diagnostic>,
    /// Where each key is, so problems found later (by compile) get a line and column.
    pub spans: std::sync::Arc<diagnostic::SpanIndex>,
}

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{} has {} error(s)", path.display(), errors.len())]
    Invalid {
        path: PathBuf,
        /// Every error, and the warnings found alongside them.
        errors: Vec<Diagnostic>,
        warnings: Vec<Diagnostic>,
    },
}

impl LoadError {
    /// Each problem in the `file:line:col: error: ...` form, errors first.
    pub fn render(&self) -> Vec<String> {
        match self {
            Self::Read(err) => vec![err.to_string()],
            Self::Invalid {
                path,
                errors,
                warnings,
            } => errors
                .iter()
                .chain(warnings)
                .map(|d| d.render(path))
                .collect(),
        }
    }

    /// The errors only, rendered: what made the file unusable.
    pub fn render_errors(&self) -> Vec<String> {
        match self {
            Self::Read(err) => vec![err.to_string()],
            Self::Invalid { path, errors, .. } => errors.iter().map(|d| d.render(path)).collect(),
        }
    }
}

/// Reads, parses and validates the file at `path`.
pub fn load(path: &Path) -> Result<CheckedConfig, LoadError> {
    check(load::read(path)?)
}

/// Parses and validates text that has been read already. Every problem is reported at
/// once: unknown keys and values of the wrong type beside the validation errors of the
/// rest of the file, as far as it could be read.
pub fn check(source: ConfigSource) -> Result<CheckedConfig, LoadError> {
    let parsed = load::parse_partly(&source.text);
    let mut diagnostics = parsed.errors.clone();
    if let Some(config) = &parsed.config {
        let mut found = validate::validate(config);
        // A left-out key's default is not what the file says: what validation finds
        // there was reported as the key's own problem already.
        found.retain(|d| !parsed.is_echo(d, config));
        parsed.spans.locate(&mut found);
        diagnostics.extend(found);
    }
    diagnostics.sort_by_key(|d| d.location.map(|l| (l.line, l.column)));
    let (errors, warnings): (Vec<_>, Vec<_>) =
        diagnostics.into_iter().partition(Diagnostic::is_error);
    match parsed.config {
        Some(config) if errors.is_empty() => Ok(CheckedConfig {
            config,
            source,
            warnings,
            spans: std::sync::Arc::new(parsed.spans),
        }),
        _ => Err(LoadError::Invalid {
            path: source.path.clone(),
            errors,
            warnings,
        }),
    }
}

/// The config path from the command line, else `$FLUXLIT_CONFIG`, else `./fluxlit.toml`.
/// The environment is a parameter so callers and tests decide where it comes from.
pub fn resolve_path(cli: Option<PathBuf>, env_value: Option<std::ffi::OsString>) -> PathBuf {
    cli.or_else(|| env_value.filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

/// The closest of `candidates` to `input`, if one is close enough to be a likely typo.
pub fn suggest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(input, candidate), candidate))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_comes_from_the_flag_then_the_environment_then_the_default() {
        let flag = Some(PathBuf::from("a.toml"));
        let env = Some("b.toml".into());
        assert_eq!(resolve_path(flag, env.clone()), PathBuf::from("a.toml"));
        assert_eq!(resolve_path(None, env), PathBuf::from("b.toml"));
        assert_eq!(
            resolve_path(None, Some("".into())),
            PathBuf::from(DEFAULT_PATH)
        );
        assert_eq!(resolve_path(None, None), PathBuf::from(DEFAULT_PATH));
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(suggest("apii", ["api", "ui"]), Some("api"));
        assert_eq!(suggest("database", ["api", "ui"]), None);
    }
}
