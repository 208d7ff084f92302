//! What makes a reload happen: file events in the watched directories (debounced),
//! SIGHUP, and a slow poll for where notifications do not arrive.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Reloader, Trigger};

/// Quiet time after the last file event before reloading: editors write in bursts.
pub(super) const DEBOUNCE: Duration = Duration::from_millis(50);
/// How often the file is re-read when no notification arrives.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

impl Reloader {
    /// Watches the file and SIGHUP until `stop` fires.
    pub async fn watch(self: Arc<Self>, stop: crate::shutdown::Signal) {
        let (events_tx, mut events) = mpsc::unbounded_channel::<Vec<PathBuf>>();
        let mut watched = BTreeSet::new();
        let mut watcher = match self.start_notify(events_tx) {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(%error, "cannot watch the config directory; polling every {POLL_INTERVAL:?} instead");
                None
            }
        };
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP");
                None
            }
        };
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.reset();

        loop {
            if let Some(watcher) = watcher.as_mut() {
                self.watch_referenced_directories(watcher, &mut watched);
            }
            let trigger = tokio::select! {
                Some(paths) = events.recv() => {
                    if !self.concerns_watched_files(&paths) {
                        continue;
                    }
                    // Let the burst of events of one save settle before reading.
                    while let Ok(Some(_)) = tokio::time::timeout(DEBOUNCE, events.recv()).await {}
                    self.lock().status.file_event_reads += 1;
                    Trigger::FileChange
                }
                Some(()) = async { hangup.as_mut()?.recv().await } => Trigger::Signal,
                _ = poll.tick() => Trigger::Poll,
                () = stop.fired() => return,
            };
            let this = Arc::clone(&self);
            // Reading and compiling are blocking work; keep them off the request threads.
            let _ = tokio::task::spawn_blocking(move || this.reload(trigger)).await;
        }
    }

    /// Adds the directories of the files the running config names to the watch (the
    /// config's own directory is watched from the start). A directory that cannot be
    /// watched is left to the poll.
    fn watch_referenced_directories(
        &self,
        watcher: &mut notify::RecommendedWatcher,
        watched: &mut BTreeSet<PathBuf>,
    ) {
        use notify::{RecursiveMode, Watcher};
        for file in self.referenced_files() {
            let Some(directory) = file.parent().map(Path::to_owned) else {
                continue;
            };
            if watched.contains(&directory) {
                continue;
            }
            match watcher.watch(&directory, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watched.insert(directory);
                }
                Err(error) => tracing::debug!(
                    %error,
                    directory = %directory.display(),
                    "cannot watch a referenced file's directory; the poll covers it",
                ),
            }
        }
    }

    /// Whether an event on these paths can change what the config says: it names the
    /// config file or a file it references (a save by rename names the final name too),
    /// or a `..`-prefixed entry (a Kubernetes ConfigMap swaps its `..data` symlink). An
    /// event without paths (the watcher lost track) counts. Anything else in the
    /// watched directories, like a log file, is ignored.
    fn concerns_watched_files(&self, paths: &[PathBuf]) -> bool {
        if paths.is_empty() {
            return true;
        }
        let mut names: Vec<std::ffi::OsString> = self
            .referenced_files()
            .iter()
            .filter_map(|file| file.file_name().map(ToOwned::to_owned))
            .collect();
        names.extend(self.path.file_name().map(ToOwned::to_owned));
        paths
            .iter()
            .filter_map(|path| path.file_name())
            .any(|name| {
                names.iter().any(|watched| watched == name)
                    || name.as_encoded_bytes().starts_with(b"..")
            })
    }

    fn start_notify(
        &self,
        events: mpsc::UnboundedSender<Vec<PathBuf>>,
    ) -> notify::Result<notify::RecommendedWatcher> {
        use notify::{EventKind, RecursiveMode, Watcher};
        let directory = match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && !matches!(event.kind, EventKind::Access(_))
                {
                    let _ = events.send(event.paths);
                }
            })?;
        watcher.watch(&directory, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    }
}
