//! `fluxlit doctor`: operational checks on a config that already passed validation.
//!
//! Validation answers "can this file run?"; the doctor answers "should it run like
//! this?". Every [`Finding`] has a stable snake_case id (documented in the README), a
//! severity, a one-line message, how to fix it, and the key path it is about.
//!
//! Three kinds of checks, in order:
//! - static ([`static_checks`]): the config alone. `fluxlit config` prints these too;
//! - secrets ([`live::check_secrets`]): env and file secrets resolved, never printed;
//! - network ([`live::check_network`], skipped with `--offline`): upstreams accept TCP,
//!   IdPs and JWKS load, Redis answers, and the clocks of all of them agree with ours.
//!
//! Validation warnings are findings too (its `forward_client_headers` and
//! `allow_unverified_id_token_for_custom_oidc` warnings are the source of those checks),
//! so nothing is said twice.

pub mod accept;
pub mod live;
pub mod static_checks;

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::compile::CompileContext;
use crate::config::{CheckedConfig, Diagnostic, LoadError, Location};

/// The config does not load: each of its errors is a finding with this id.
pub const CONFIG_INVALID: &str = "config_invalid";

/// Every finding id, as the README's table lists them.
pub const IDS: &[&str] = &[
    CONFIG_INVALID,
    static_checks::FORWARD_CLIENT_HEADERS,
    static_checks::UNVERIFIED_ID_TOKEN,
    static_checks::CONFIG_WARNING,
    static_checks::PUBLIC_BASE_URL_PATH,
    static_checks::UPSTREAM_BASE_PATH,
    static_checks::TRUST_ALL_PROXIES,
    static_checks::TRUST_PUBLIC_PROXIES,
    static_checks::PLAIN_HTTP_UPSTREAM,
    static_checks::ADMIN_NOT_LOOPBACK,
    static_checks::SECURITY_HEADERS_OFF,
    static_checks::LONG_LEEWAY,
    static_checks::LONG_ACCESS_TOKEN_TTL,
    static_checks::MEMORY_STORE,
    static_checks::IDENTITY_KEY_GENERATED,
    static_checks::EXCHANGE_REACHABLE_BY_BROWSERS,
    static_checks::FORWARD_AUTH_HEADER_MUST_BE_STRIPPED,
    static_checks::RATE_LIMIT_KEYED_ON_PROXY,
    live::SECRET_MISSING,
    live::SECRET_EMPTY,
    live::SECRET_TOO_SHORT,
    live::STORE_URL_INVALID,
    live::JWKS_FILE_UNUSABLE,
    live::UPSTREAM_UNREACHABLE,
    live::UPSTREAM_SILENT,
    live::IDP_DISCOVERY,
    live::JWKS_UNREACHABLE,
    live::REDIS_UNREACHABLE,
    live::CLOCK_SKEW,
    live::CLOCK_DRIFT,
    accept::ACCEPT_UNUSED,
];

/// How bad a finding is. `--strict` fails on warnings; infos never fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
        }
    }
}

/// One thing the doctor found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// A stable snake_case id, e.g. `trust_all_proxies`: scripts may match on it.
    pub id: &'static str,
    pub severity: Severity,
    /// The TOML key path the finding is about, e.g. `trust.proxies[0]`.
    pub key: String,
    /// What is wrong, in one line.
    pub message: String,
    /// What to do about it.
    pub fix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Set when `[doctor] accept` accepted it: reported, not counted by `--strict`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted: Option<Box<accept::Acceptance>>,
}

impl Finding {
    pub fn new(
        id: &'static str,
        severity: Severity,
        key: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            id,
            severity,
            key: key.into(),
            message: message.into(),
            fix: fix.into(),
            location: None,
            accepted: None,
        }
    }

    /// `file:line:col: warning: key: message [id]` (`[id, accepted by doctor.accept[0]]`
    /// when accepted), then the fix on an indented line: the form `fluxlit validate`
    /// uses, so editors and CI logs link to it.
    pub fn render(&self, file: &Path) -> String {
        let mut text = file.display().to_string();
        if let Some(Location { line, column }) = self.location {
            let _ = write!(text, ":{line}:{column}");
        }
        let _ = write!(text, ": {}: ", self.severity.as_str());
        if !self.key.is_empty() {
            let _ = write!(text, "{}: ", self.key);
        }
        let _ = write!(text, "{} [{}", self.message, self.id);
        if let Some(accepted) = &self.accepted {
            let _ = write!(text, ", accepted by {}", accepted.by);
        }
        let _ = write!(text, "]\n  fix: {}", self.fix);
        text
    }
}

/// What the doctor checks beyond the file itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Skip the network: no connections to upstreams, IdPs or Redis, no clock check.
    pub offline: bool,
    /// Warnings fail the run (exit 2).
    pub strict: bool,
}

/// Exit codes of `fluxlit doctor`.
pub mod exit {
    /// No errors (and, with `--strict`, no warnings).
    pub const CLEAN: u8 = 0;
    /// At least one error, or the config does not load.
    pub const ERRORS: u8 = 1;
    /// Warnings and `--strict`.
    pub const STRICT_WARNINGS: u8 = 2;
}

/// Counts by severity (accepted findings apart), and the exit code they make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub errors: usize,
    pub warnings: usize,
    pub infos: usize,
    /// Findings `[doctor] accept` accepted: never counted by `--strict`.
    pub accepted: usize,
    pub strict: bool,
    pub exit_code: u8,
}

/// Everything one doctor run found: what `--format json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub summary: Summary,
}

impl Report {
    /// Orders findings by severity, then by place in the file.
    pub fn new(mut findings: Vec<Finding>, strict: bool) -> Self {
        findings.sort_by_key(|f| (f.severity, f.location.map(|l| (l.line, l.column))));
        let count = |severity| {
            findings
                .iter()
                .filter(|f| f.severity == severity && f.accepted.is_none())
                .count()
        };
        let (errors, warnings, infos) = (
            count(Severity::Error),
            count(Severity::Warning),
            count(Severity::Info),
        );
        let accepted = findings.iter().filter(|f| f.accepted.is_some()).count();
        let exit_code = if errors > 0 {
            exit::ERRORS
        } else if strict && warnings > 0 {
            exit::STRICT_WARNINGS
        } else {
            exit::CLEAN
        };
        Self {
            findings,
            summary: Summary {
                errors,
                warnings,
                infos,
                accepted,
                strict,
                exit_code,
            },
        }
    }

    /// The report on a config that does not load: each error a finding
    /// [`CONFIG_INVALID`] at its key path and location (a file that cannot be read, one
    /// without either), the warnings found beside them as usual. A script parsing
    /// `--format json` gets a document either way.
    pub fn config_invalid(error: &LoadError, strict: bool) -> Self {
        let findings = match error {
            LoadError::Read(read) => vec![Finding::new(
                CONFIG_INVALID,
                Severity::Error,
                "",
                read.to_string(),
                "give the config's path with --config or $FLUXLIT_CONFIG (default \
                 ./fluxlit.toml), and make it readable",
            )],
            LoadError::Invalid {
                errors, warnings, ..
            } => errors
                .iter()
                .map(|diagnostic| Finding {
                    id: CONFIG_INVALID,
                    ..from_validation(diagnostic)
                })
                .chain(warnings.iter().map(from_validation))
                .collect(),
        };
        Self::new(findings, strict)
    }

    /// Grouped by severity, each fix on an indented line, the accepted findings last
    /// (each with the entry that accepted it), and a summary line.
    pub fn render_text(&self, file: &Path) -> String {
        let mut text = String::new();
        // The accepted ones apart, whatever their severity.
        let group_of = |f: &Finding| match (&f.accepted, f.severity) {
            (Some(_), _) => "accepted",
            (None, Severity::Error) => "errors",
            (None, Severity::Warning) => "warnings",
            (None, Severity::Info) => "info",
        };
        for title in ["errors", "warnings", "info", "accepted"] {
            let group: Vec<&Finding> = self
                .findings
                .iter()
                .filter(|f| group_of(f) == title)
                .collect();
            if group.is_empty() {
                continue;
            }
            let _ = writeln!(text, "{title}:");
            for finding in group {
                let place = match finding.location {
                    Some(Location { line, column }) => format!(" ({line}:{column})"),
                    None => String::new(),
                };
                let _ = writeln!(
                    text,
                    "  {} {}{place}: {}\n      fix: {}",
                    finding.id, finding.key, finding.message, finding.fix
                );
                if let Some(accepted) = &finding.accepted {
                    let _ = writeln!(
                        text,
                        "      accepted by {} ({:?})",
                        accepted.by, accepted.entry
                    );
                }
            }
        }
        let s = self.summary;
        let verdict = match s.exit_code {
            exit::CLEAN => "ok",
            exit::STRICT_WARNINGS => "failed (--strict: warnings count)",
            _ => "failed",
        };
        let _ = writeln!(
            text,
            "{}: {verdict}: {} error(s), {} warning(s), {} info, {} accepted",
            file.display(),
            s.errors,
            s.warnings,
            s.infos,
            s.accepted
        );
        text
    }
}

/// Runs every check on `checked`. The network checks run concurrently, each bounded by
/// [`live::TIMEOUT`].
pub async fn run(checked: &CheckedConfig, ctx: &CompileContext, options: Options) -> Report {
    let mut findings = config_findings(checked);
    let (secret_findings, redis) = live::check_secrets(&checked.config, ctx);
    findings.extend(secret_findings);
    if !options.offline {
        findings.extend(live::check_network(&checked.config, &redis).await);
    }
    let accepted = &checked.config.doctor.accept;
    let unused = accept::apply(accepted, &mut findings, options.offline);
    findings.extend(unused);
    locate(checked, &mut findings);
    Report::new(findings, options.strict)
}

/// The findings from the file alone: validation's warnings and the static checks.
fn config_findings(checked: &CheckedConfig) -> Vec<Finding> {
    let mut findings: Vec<Finding> = checked.warnings.iter().map(from_validation).collect();
    findings.extend(static_findings(checked));
    findings
}

/// What `fluxlit config` prints after validation's warnings: the static findings that
/// validation did not report already, located in the file.
pub fn static_findings(checked: &CheckedConfig) -> Vec<Finding> {
    let from_validation: Vec<Finding> = checked.warnings.iter().map(from_validation).collect();
    let mut findings: Vec<Finding> = static_checks::check(&checked.config)
        .into_iter()
        .filter(|f| {
            !from_validation
                .iter()
                .any(|v| v.id == f.id && v.key == f.key)
        })
        .collect();
    // Marked, never judged: whether an entry accepts nothing is the doctor's to say,
    // with the secrets and the network looked at too.
    let _ = accept::apply(&checked.config.doctor.accept, &mut findings, true);
    locate(checked, &mut findings);
    findings
}

/// A validation warning as a finding. Where a doctor check covers the same ground, the
/// warning gets that check's id (and the check stays silent on that key).
fn from_validation(diagnostic: &Diagnostic) -> Finding {
    let key = diagnostic.path.as_str();
    let id = if let Some(id) = diagnostic.id {
        id
    } else if key.contains(".forward_client_headers[") {
        static_checks::FORWARD_CLIENT_HEADERS
    } else if key.ends_with(".allow_unverified_id_token_for_custom_oidc") {
        static_checks::UNVERIFIED_ID_TOKEN
    } else if key.starts_with("auth.providers.") && key.ends_with(".leeway") {
        static_checks::LONG_LEEWAY
    } else {
        static_checks::CONFIG_WARNING
    };
    let severity = match diagnostic.severity {
        crate::config::Severity::Error => Severity::Error,
        crate::config::Severity::Warning => Severity::Warning,
    };
    Finding {
        id,
        severity,
        key: diagnostic.path.clone(),
        message: diagnostic.message.clone(),
        fix: diagnostic
            .help
            .clone()
            .unwrap_or_else(|| format!("change or remove `{}`", diagnostic.path)),
        location: diagnostic.location,
        accepted: None,
    }
}

fn locate(checked: &CheckedConfig, findings: &mut [Finding]) {
    for finding in findings.iter_mut().filter(|f| f.location.is_none()) {
        finding.location = checked.spans.value_location(&finding.key);
    }
}
