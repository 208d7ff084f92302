//! What an accept loop does when `accept` fails: out of file descriptors (`EMFILE`,
//! `ENFILE`), out of memory, or a connection reset before it was taken. Retrying at once
//! would spin a core and fill the log while nothing can succeed; waiting a little, longer
//! each time up to a second, leaves the connections already open serving and frees
//! descriptors as they close. One warning per streak of failures, and a line when it
//! ends.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::shutdown::Signal;

/// The first wait after a failed `accept`.
const FIRST: Duration = Duration::from_millis(10);
/// The longest wait between two attempts.
const LONGEST: Duration = Duration::from_secs(1);

/// The back-off state of one accept loop.
#[derive(Debug)]
pub struct Backoff {
    listener: &'static str,
    next: Duration,
    failures: u64,
}

impl Backoff {
    /// For the loop of `listener` ("public listener", "admin listener"), named in logs.
    pub fn new(listener: &'static str) -> Self {
        Self {
            listener,
            next: FIRST,
            failures: 0,
        }
    }

    /// The next connection of `listener`, waiting out failures; `None` once `stop`
    /// fires. Both accept loops take their connections through here.
    pub async fn accept(
        &mut self,
        listener: &TcpListener,
        stop: &Signal,
    ) -> Option<(TcpStream, SocketAddr)> {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = stop.fired() => return None,
            };
            match accepted {
                Ok(accepted) => {
                    self.succeeded();
                    return Some(accepted);
                }
                Err(error) => self.failed(&error).await,
            }
        }
    }

    /// An `accept` failed: logs it (the first of a streak as a warning) and waits.
    async fn failed(&mut self, error: &io::Error) {
        if self.failures == 0 {
            tracing::warn!(
                listener = self.listener,
                %error,
                "accept failed; retrying with a growing pause (up to {LONGEST:?}) while \
                 the connections already open keep being served",
            );
        } else {
            tracing::debug!(listener = self.listener, %error, "accept failed again");
        }
        self.failures += 1;
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(LONGEST);
    }

    /// An `accept` succeeded: the streak, if any, is over.
    fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                listener = self.listener,
                failures = self.failures,
                "accepting connections again"
            );
            self.failures = 0;
            self.next = FIRST;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pause_doubles_and_resets_on_success() {
        let mut backoff = Backoff::new("test listener");
        let error = io::Error::from_raw_os_error(24);
        backoff.failed(&error).await;
        backoff.failed(&error).await;
        assert_eq!((backoff.failures, backoff.next), (2, FIRST * 4));
        backoff.succeeded();
        assert_eq!((backoff.failures, backoff.next), (0, FIRST));
    }
}
