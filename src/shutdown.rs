//! The drain signal and the counts a shutdown waits on. A leaf: it knows nothing of the
//! gateway above it.
//!
//! [`Signal`] is fired once, by the gateway's shutdown, and every task that must react
//! (the accept loops, each connection's watchdog, each WebSocket tunnel, the reload
//! watcher) waits on a clone. [`InFlight`] counts what is still running (connections,
//! tunnels) and wakes whoever waits for it to reach zero, so a shutdown never polls.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A one-way, once-only "stop now" shared by clones. Cheap to clone: an `Arc`, because
/// cloning the token itself takes a lock, and the request path clones its handler (which
/// holds one) per request.
#[derive(Debug, Clone, Default)]
pub struct Signal(Arc<CancellationToken>);

impl Signal {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the signal: every [`Signal::fired`], now and later, resolves.
    pub fn fire(&self) {
        self.0.cancel();
    }

    pub fn is_fired(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once the signal has been fired.
    pub async fn fired(&self) {
        self.0.cancelled().await;
    }
}

/// How many of something are running, and a wake-up when none are. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<Counter>);

#[derive(Debug, Default)]
struct Counter {
    running: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one more; the count drops again when the guard is dropped.
    pub fn enter(&self) -> InFlightGuard {
        self.0.running.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(Arc::clone(&self.0))
    }

    /// Counts one more only while fewer than `max` are running.
    pub fn try_enter(&self, max: usize) -> Option<InFlightGuard> {
        self.0
            .running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlightGuard(Arc::clone(&self.0)))
    }

    pub fn count(&self) -> usize {
        self.0.running.load(Ordering::Acquire)
    }

    /// Resolves when nothing is running (at once, if nothing is).
    pub async fn idle(&self) {
        loop {
            // Registered before the count is read, so a guard dropped in between still
            // wakes this waiter.
            let notified = self.0.idle.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One running thing in an [`InFlight`] count, given back on drop.
#[derive(Debug)]
pub struct InFlightGuard(Arc<Counter>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_wakes_when_the_last_guard_goes() {
        let flight = InFlight::new();
        flight.idle().await;
        let first = flight.enter();
        let second = flight.try_enter(2).expect("below the cap");
        assert!(flight.try_enter(2).is_none());
        let waiter = tokio::spawn({
            let flight = flight.clone();
            async move { flight.idle().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(second);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
    }

    #[tokio::test]
    async fn a_fired_signal_stays_fired_for_late_listeners() {
        let signal = Signal::new();
        let late = signal.clone();
        signal.fire();
        assert!(late.is_fired());
        late.fired().await;
    }
}
