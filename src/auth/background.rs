//! What the JWKS cache and OIDC discovery share: a background task that lives exactly
//! as long as its owner, and a lock that survives a panic elsewhere.

use std::future::Future;
use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`; a panic while it was held cannot leave plain status data inconsistent,
/// so a poisoned lock is used as it is.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One background task per owner, started at most once and aborted when the owner is
/// dropped (the task itself holds only a `Weak` to the owner).
#[derive(Debug, Default)]
pub(crate) struct Refresher(Mutex<Option<tokio::task::AbortHandle>>);

impl Refresher {
    /// Spawns `task` on the current tokio runtime, unless one was started already. Without
    /// a runtime (a command that only validates) nothing is started.
    pub(crate) fn start_once<F>(&self, task: impl FnOnce() -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut handle = lock(&self.0);
        if handle.is_some() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            *handle = Some(runtime.spawn(task()).abort_handle());
        }
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        if let Some(handle) = lock(&self.0).take() {
            handle.abort();
        }
    }
}
