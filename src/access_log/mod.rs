//! The access log: one line per request, written off the request's path.
//!
//! A request formats its line ([`Line`], text or JSON in the shapes the `tracing`
//! subscriber wrote before) into a buffer of its worker thread's own; one writer thread
//! writes the buffers out in large chunks: when one holds 64 KiB, every second, when
//! asked ([`AccessLog::write_now`]: SIGHUP), before a reopen ([`AccessLog::reopen`]:
//! SIGUSR1, after a rotation renamed the file) and at [`AccessLog::close`] (shutdown),
//! so a clean stop loses no line. Lines of one thread keep their order; the chunks of
//! different threads follow one another, so the file is ordered by chunk, not by time
//! (as with nginx's `buffer=`).
//!
//! The access log is one per process, like the log subscriber: [`AccessLog::install`]
//! makes it what [`record`] writes to. A leaf: `metrics` hands it each request's line.

mod line;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

pub use line::{Format, Line};
use writer::{Shared, Sink};

/// How often the writer writes what the buffers hold, however little.
const INTERVAL: Duration = Duration::from_secs(1);

/// The process's access log, once installed.
static INSTALLED: OnceLock<Arc<Shared>> = OnceLock::new();

/// Tells access logs apart (one per process, more in tests).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Whether an access log is installed: when not, a request need not keep what its line
/// would say.
pub fn enabled() -> bool {
    INSTALLED.get().is_some()
}

/// Adds `line` to the installed access log; nothing when none is.
pub fn record(line: &Line<'_>) {
    if let Some(shared) = INSTALLED.get() {
        shared.record(line);
    }
}

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Standard output: where a container's log collector reads.
    Stdout,
    /// A file, appended to, created (mode 0640) if missing.
    File(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot open {path} for appending: {source}", path = path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write to standard output: {0}")]
    Stdout(#[source] std::io::Error),
    #[error("cannot start the access log's writer thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("an access log is installed already")]
    Installed,
}

/// The running access log: its writer thread, and what asks it to write, reopen and end.
#[derive(Debug)]
pub struct AccessLog {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

impl AccessLog {
    /// Opens `destination`, starts the writer and makes this the access log [`record`]
    /// writes to.
    pub fn install(format: Format, destination: &Destination) -> Result<Self, InstallError> {
        if INSTALLED.get().is_some() {
            return Err(InstallError::Installed);
        }
        let log = Self::start(format, destination, INTERVAL)?;
        if INSTALLED.set(Arc::clone(&log.shared)).is_err() {
            log.close();
            return Err(InstallError::Installed);
        }
        Ok(log)
    }

    /// An access log of its own, not installed; lines go to it through [`Self::record`].
    pub fn start(
        format: Format,
        destination: &Destination,
        interval: Duration,
    ) -> Result<Self, InstallError> {
        let sink = match destination {
            Destination::Stdout => Sink::stdout().map_err(InstallError::Stdout)?,
            Destination::File(path) => {
                Sink::file(path.clone()).map_err(|source| InstallError::Open {
                    path: path.clone(),
                    source,
                })?
            }
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Shared::new(id, format, interval, sink));
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("fluxlit-access-log".to_owned())
                .spawn(move || shared.run())
                .map_err(InstallError::Thread)?
        };
        Ok(Self {
            shared,
            writer: Some(writer),
        })
    }

    /// Adds `line` to this access log (what [`record`] does for the installed one).
    pub fn record(&self, line: &Line<'_>) {
        self.shared.record(line);
    }

    /// Has the writer write what the buffers hold now, without waiting for it.
    pub fn write_now(&self) {
        self.shared.write_now();
    }

    /// Has the writer write what the buffers hold into the file open now, then open the
    /// file at its path again (a rotation renamed it), without waiting for it. Standard
    /// output is not reopened.
    pub fn reopen(&self) {
        self.shared.reopen();
    }

    /// Waits until every line recorded before the call is written.
    pub fn flush(&self) {
        self.shared.flush();
    }

    /// Writes what the buffers hold and stops the writer. Lines recorded later are
    /// written at once by the thread that records them.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(writer) = self.writer.take() {
            self.shared.close();
            if writer.join().is_err() {
                tracing::error!(target: "fluxlit::logging", "the access log's writer thread panicked");
            }
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.stop();
    }
}
