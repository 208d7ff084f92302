//! The reload driver: file change (notify), SIGHUP or poll ([`watch`]) → load → validate
//! → compile → build → one `ArcSwap` store → start what the new snapshot needs.
//! Anything short of a valid, compiled and built config leaves the running snapshot in
//! place and has started nothing.
//!
//! The watcher watches the config file's *directory*, not the file: editors that save
//! by rename, Kubernetes ConfigMaps (a `..data` symlink swap) and files deleted and
//! recreated are all seen. Events are debounced, and a reload whose bytes hash the same
//! as the running config is a no-op. A slow poll backs the watcher up where
//! notifications do not arrive (some bind mounts and network file systems).
//!
//! Files the config names (the TLS certificate and key, `{ file = ... }` secrets,
//! `jwks_file`) count as part of it: their directories are watched too, and a change
//! in their contents reloads the config even when `fluxlit.toml` did not change, so a
//! certificate rotated in place is served without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::Serialize;

use crate::build::compile_and_build;
use crate::compile::CompileContext;
use crate::config::diff::ConfigDiff;
use crate::config::static_keys::keep_static_keys;
use crate::config::{self, CheckedConfig, Config, LoadError, SourceHash};
use crate::metrics::Metrics;
use crate::snapshot::{SharedSnapshot, Snapshot};

mod watch;

use watch::DEBOUNCE;

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A file event, after the debounce: the file has been quiet for a while.
    FileChange,
    Signal,
    Poll,
    Manual,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Self::FileChange => "file change",
            Self::Signal => "SIGHUP",
            Self::Poll => "poll",
            Self::Manual => "manual",
        }
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The file holds the running config's bytes.
    Unchanged,
    Applied {
        generation: u64,
        refused_static_keys: Vec<String>,
    },
    /// The file is invalid; the running snapshot stays. The errors are rendered.
    Rejected {
        errors: Vec<String>,
    },
    /// The file is gone; the running snapshot stays until it returns.
    Missing,
    Unreadable {
        error: String,
    },
}

impl ReloadOutcome {
    /// The `result` label of the reload in metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Applied { .. } => "applied",
            Self::Rejected { .. } => "rejected",
            Self::Unchanged => "unchanged",
            Self::Missing => "missing",
            Self::Unreadable { .. } => "unreadable",
        }
    }
}

/// The last failed reload, kept for `/snapshot`.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadFailure {
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_hash: Option<String>,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    pub last_error: Option<ReloadFailure>,
    /// Static keys the last applied reload wanted to change, kept at their running values.
    pub refused_static_keys: Vec<String>,
    /// What the last applied reload changed.
    pub last_reload_diff: Option<AppliedDiff>,
    /// How often a file event made the reloader read the config: only events about the
    /// config file or the files it names count (a log file written beside it does not).
    pub file_event_reads: u64,
}

/// The summary of an applied reload, kept for `/snapshot`.
#[derive(Debug, Clone, Serialize)]
pub struct AppliedDiff {
    pub generation: u64,
    pub at: String,
    /// One line per change (see [`ConfigDiff`]); empty when only comments or formatting
    /// changed.
    pub changes: Vec<String>,
}

/// The most changes one log event lists; `/snapshot` keeps them all.
const LOGGED_CHANGES: usize = 100;

#[derive(Debug)]
struct State {
    status: ReloadStatus,
    /// The bytes that last failed, so the same broken file is reported once, not on
    /// every event or poll.
    rejected_hash: Option<SourceHash>,
    missing: bool,
    /// What the files the running config names held when it was compiled.
    running_files: SourceHash,
}

/// Reloads the config at `path` into `snapshot`.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    snapshot: SharedSnapshot,
    compile_context: CompileContext,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        snapshot: SharedSnapshot,
        compile_context: CompileContext,
        metrics: Arc<Metrics>,
    ) -> Self {
        let running_files = files_hash(&referenced_files(
            &snapshot.load().config,
            &compile_context.config_dir,
        ));
        Self {
            path,
            snapshot,
            compile_context,
            state: Mutex::new(State {
                status: ReloadStatus::default(),
                rejected_hash: None,
                missing: false,
                running_files,
            }),
            metrics,
        }
    }

    /// The files the running config names, whose directories the watcher watches.
    fn referenced_files(&self) -> Vec<PathBuf> {
        referenced_files(
            &self.snapshot.load().config,
            &self.compile_context.config_dir,
        )
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn status(&self) -> ReloadStatus {
        self.lock().status.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` inconsistent: use it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the file and applies it if it changed and is valid. Reloads are serialised.
    pub fn reload(&self, trigger: Trigger) -> ReloadOutcome {
        let mut state = self.lock();
        let (rejected_before, missing_before) = (state.rejected_hash, state.missing);
        let outcome = self.reload_locked(&mut state, trigger);
        // Polls and file events that find nothing new (the directory is watched: any
        // file in it stirs the watcher) are not reload attempts; a SIGHUP is.
        let repeated = match &outcome {
            ReloadOutcome::Rejected { .. } => state.rejected_hash == rejected_before,
            ReloadOutcome::Missing => missing_before,
            ReloadOutcome::Unchanged => matches!(trigger, Trigger::Poll | Trigger::FileChange),
            ReloadOutcome::Applied { .. } | ReloadOutcome::Unreadable { .. } => false,
        };
        if !repeated {
            self.metrics.reload_attempt(outcome.label());
        }
        if matches!(outcome, ReloadOutcome::Applied { .. }) {
            let serving = self.snapshot.load();
            self.metrics.serving(serving.generation, serving.loaded_at);
        }
        outcome
    }

    /// One reload, in its steps: read the file, skip what is already running or already
    /// refused, check + compile + build, then store and start — or keep the running
    /// snapshot and say why.
    fn reload_locked(&self, state: &mut State, trigger: Trigger) -> ReloadOutcome {
        let current = self.snapshot.load_full();
        let source = match self.read_settled(trigger, current.source_hash) {
            Ok(source) => source,
            Err(error) => return self.unreadable(state, &current, &error),
        };
        if state.missing {
            tracing::info!(path = %self.path.display(), "config file is back");
            state.missing = false;
        }
        if source.hash == current.source_hash
            && files_hash(&referenced_files(
                &current.config,
                &self.compile_context.config_dir,
            )) == state.running_files
        {
            state.status.last_error = None;
            state.rejected_hash = None;
            return ReloadOutcome::Unchanged;
        }
        if state.rejected_hash == Some(source.hash) {
            return ReloadOutcome::Rejected {
                errors: last_errors(state),
            };
        }
        match self.prepare(state, source, &current) {
            Prepared::Ready(next) => self.apply(state, *next, trigger),
            Prepared::AlreadyRejected => ReloadOutcome::Rejected {
                errors: last_errors(state),
            },
            Prepared::Refused { errors, hash } => reject(state, &current, errors, hash),
        }
    }

    /// The file is gone (kept quietly until it returns) or cannot be read (an error).
    fn unreadable(
        &self,
        state: &mut State,
        current: &Snapshot,
        error: &config::ReadError,
    ) -> ReloadOutcome {
        if error.is_missing() {
            if !state.missing {
                tracing::warn!(
                    path = %self.path.display(),
                    generation = current.generation,
                    "config file is gone; still serving the running config until it returns",
                );
                state.missing = true;
            }
            return ReloadOutcome::Missing;
        }
        let message = error.to_string();
        tracing::error!(
            generation = current.generation,
            "{message}; keeping the running config"
        );
        state.status.last_error = Some(ReloadFailure {
            at: now_rfc3339(),
            source_hash: None,
            errors: vec![message.clone()],
        });
        ReloadOutcome::Unreadable { error: message }
    }

    /// Checks, compiles and builds `source` against the running snapshot. Nothing is
    /// started and nothing the running snapshot holds is changed.
    fn prepare(&self, state: &State, source: config::ConfigSource, current: &Snapshot) -> Prepared {
        let source_hash = source.hash;
        let mut checked = match config::check(source) {
            Ok(checked) => checked,
            Err(error) => {
                return Prepared::Refused {
                    errors: error.render_errors(),
                    hash: source_hash,
                };
            }
        };
        // The file and what it names, as one version: a broken certificate is reported
        // once, and fixing it (the file unchanged) is tried again.
        let files = files_hash(&referenced_files(
            &checked.config,
            &self.compile_context.config_dir,
        ));
        let hash = combined(source_hash, files);
        if state.rejected_hash == Some(hash) {
            return Prepared::AlreadyRejected;
        }
        // Before the static keys are put back, so the summary names them too.
        let changes = ConfigDiff::between(&current.config, &checked.config);
        let refused_static_keys = keep_static_keys(&mut checked.config, &current.config);
        match compile_and_build(
            checked,
            Some(current),
            current.generation + 1,
            &self.compile_context,
        ) {
            Ok(snapshot) => Prepared::Ready(Box::new(NextSnapshot {
                snapshot,
                refused_static_keys,
                changes,
                files,
            })),
            Err(errors) => Prepared::Refused {
                errors: errors.iter().map(|d| d.render(&self.path)).collect(),
                hash,
            },
        }
    }

    /// Stores the new snapshot, then starts what it needs.
    fn apply(&self, state: &mut State, next: NextSnapshot, trigger: Trigger) -> ReloadOutcome {
        let NextSnapshot {
            snapshot,
            refused_static_keys,
            changes,
            files,
        } = next;
        let generation = snapshot.generation;
        for key in &refused_static_keys {
            tracing::warn!(
                key,
                "{key} changed, but it takes effect only at start: restart to apply it; the rest of the change applies"
            );
        }
        log_applied(&snapshot, trigger.as_str(), &changes);
        let snapshot = Arc::new(snapshot);
        self.snapshot.store(Arc::clone(&snapshot));
        // Only now, with the new snapshot serving: a refused config started nothing.
        snapshot.start();
        state.status = ReloadStatus {
            last_error: None,
            refused_static_keys: refused_static_keys.clone(),
            last_reload_diff: Some(AppliedDiff {
                generation,
                at: now_rfc3339(),
                changes: changes.lines(),
            }),
            file_event_reads: state.status.file_event_reads,
        };
        state.rejected_hash = None;
        state.running_files = files;
        ReloadOutcome::Applied {
            generation,
            refused_static_keys,
        }
    }

    /// Reads the file; unless a debounce already saw it quiet, reads it again after a
    /// pause until two reads agree, so a file caught half-written (an in-place save
    /// truncates first) is never applied.
    fn read_settled(
        &self,
        trigger: Trigger,
        running: SourceHash,
    ) -> Result<config::ConfigSource, config::ReadError> {
        let mut source = config::load::read(&self.path)?;
        if trigger == Trigger::FileChange || source.hash == running {
            return Ok(source);
        }
        for _ in 0..20 {
            std::thread::sleep(DEBOUNCE);
            let again = config::load::read(&self.path)?;
            if again.hash == source.hash {
                break;
            }
            source = again;
        }
        Ok(source)
    }
}

/// What [`Reloader::prepare`] made of a file.
enum Prepared {
    Ready(Box<NextSnapshot>),
    /// The same version (file and the files it names) as the last refused one: it was
    /// reported then.
    AlreadyRejected,
    Refused {
        errors: Vec<String>,
        hash: SourceHash,
    },
}

/// A built snapshot waiting to be stored, with what the reload reports about it.
struct NextSnapshot {
    snapshot: Snapshot,
    refused_static_keys: Vec<String>,
    changes: ConfigDiff,
    /// The hash of the files the new config names.
    files: SourceHash,
}

/// Keeps the running snapshot, logs why and remembers the refused version.
fn reject(
    state: &mut State,
    current: &Snapshot,
    errors: Vec<String>,
    hash: SourceHash,
) -> ReloadOutcome {
    for error in &errors {
        tracing::error!("{error}");
    }
    tracing::error!(
        generation = current.generation,
        hash = %hash.short(),
        "config rejected ({} error(s)); still serving generation {}",
        errors.len(),
        current.generation,
    );
    state.status.last_error = Some(ReloadFailure {
        at: now_rfc3339(),
        source_hash: Some(hash.to_string()),
        errors: errors.clone(),
    });
    state.rejected_hash = Some(hash);
    ReloadOutcome::Rejected { errors }
}

/// The errors of the last refused version, reported again for the same version.
fn last_errors(state: &State) -> Vec<String> {
    state
        .status
        .last_error
        .as_ref()
        .map(|e| e.errors.clone())
        .unwrap_or_default()
}

/// The files `config` names besides itself, as paths from the working directory: the
/// TLS certificate and key, secret files, JWKS files and the identity assertion's keys.
pub fn referenced_files(config: &Config, config_dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(tls) = &config.server.tls {
        files.push(tls.cert_file.clone());
        files.push(tls.key_file.clone());
    }
    let identity_keys = config.identity.signing_key.iter();
    files.extend(
        identity_keys
            .chain(&config.identity.previous_keys)
            .filter_map(|key| key.file.clone()),
    );
    for provider in config.auth.providers.values() {
        let secrets = [
            &provider.hs256_secret,
            &provider.client_secret,
            &provider.exchange_secret,
        ];
        files.extend(secrets.into_iter().flatten().filter_map(|s| s.file.clone()));
        files.extend(provider.jwks_file.clone());
        if let Some(config::model::StoreRef::Secret(secret)) = &provider.store {
            files.extend(secret.file.clone());
        }
    }
    files
        .into_iter()
        .map(|file| config_dir.join(file))
        .collect()
}

/// One hash of what `files` hold (a missing or unreadable file counts as such).
fn files_hash(files: &[PathBuf]) -> SourceHash {
    let mut all = Vec::new();
    for file in files {
        all.extend_from_slice(file.as_os_str().as_encoded_bytes());
        match std::fs::read(file) {
            Ok(bytes) => all.extend_from_slice(SourceHash::of(&bytes).to_string().as_bytes()),
            Err(error) => all.extend_from_slice(error.kind().to_string().as_bytes()),
        }
        all.push(b'\n');
    }
    SourceHash::of(&all)
}

/// The hash of a config file together with the files it names.
fn combined(config: SourceHash, files: SourceHash) -> SourceHash {
    SourceHash::of(format!("{config}{files}").as_bytes())
}

/// One event per applied reload, the change summary in its `changes` field.
fn log_applied(new: &Snapshot, trigger: &str, changes: &ConfigDiff) {
    let summary = if changes.is_empty() {
        changes.to_string()
    } else {
        let lines = changes.lines();
        let mut summary = lines[..lines.len().min(LOGGED_CHANGES)].join(" | ");
        if lines.len() > LOGGED_CHANGES {
            summary.push_str(&format!(
                " | and {} more (see /snapshot)",
                lines.len() - LOGGED_CHANGES
            ));
        }
        summary
    };
    tracing::info!(
        generation = new.generation,
        hash = %new.source_hash.short(),
        trigger,
        changes = %summary,
        "config reloaded",
    );
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Loads, compiles and builds the first snapshot, at start. The caller starts it once
/// it serves.
pub fn initial_snapshot(path: &Path, ctx: &CompileContext) -> Result<Snapshot, StartupConfigError> {
    let checked: CheckedConfig = config::load(path)?;
    let snapshot = compile_and_build(checked, None, 1, ctx).map_err(|errors| {
        StartupConfigError::Compile(errors.iter().map(|d| d.render(path)).collect())
    })?;
    for warning in &snapshot.warnings {
        tracing::warn!("{}", warning.render(path));
    }
    Ok(snapshot)
}

#[derive(Debug, thiserror::Error)]
pub enum StartupConfigError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("config could not be compiled:\n{}", .0.join("\n"))]
    Compile(Vec<String>),
}
