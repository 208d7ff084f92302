//! When something last moved bytes, and a wait for it to have been quiet for a while: the
//! idle timeouts of WebSocket tunnels and of the admin listener's connections. A leaf.
//!
//! Noting activity is one relaxed atomic store; the waiter sleeps until the deadline the
//! last activity sets and looks again, so a busy connection costs one timer, not one
//! timer reset per read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The last time bytes moved, as milliseconds since it was made.
#[derive(Debug)]
pub struct LastActivity {
    since: Instant,
    at_ms: AtomicU64,
}

impl Default for LastActivity {
    fn default() -> Self {
        Self::new()
    }
}

impl LastActivity {
    /// Counts as active now.
    pub fn new() -> Self {
        Self {
            since: Instant::now(),
            at_ms: AtomicU64::new(0),
        }
    }

    /// Bytes moved just now.
    pub fn touch(&self) {
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.at_ms.store(now, Ordering::Relaxed);
    }

    /// When it becomes idle for `limit`, unless bytes move before then.
    pub fn deadline(&self, limit: Duration) -> Instant {
        self.since + Duration::from_millis(self.at_ms.load(Ordering::Relaxed)) + limit
    }

    /// Resolves once nothing has moved for `limit`.
    pub async fn quiet_for(&self, limit: Duration) {
        loop {
            let deadline = self.deadline(limit);
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_touch_moves_the_deadline_on() {
        let activity = LastActivity::new();
        let limit = Duration::from_secs(60);
        let first = activity.deadline(limit);
        std::thread::sleep(Duration::from_millis(5));
        activity.touch();
        assert!(activity.deadline(limit) > first);
    }
}
