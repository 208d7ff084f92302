//! Per-client rate limits: a route's `rate_limit` and an oidc provider's
//! `login_rate_limit`.
//!
//! GCRA (governor): each client has a bucket of `burst` requests that refills at `rate`;
//! a request that finds it empty is refused with the time until one more is allowed
//! (`Retry-After`). Clients are told apart by the address the header policy resolved
//! through `trust.proxies` — behind a trusted proxy, the browser's, not the proxy's. An
//! IPv6 client is keyed by its /64: one host usually holds a whole /64 and could
//! otherwise take a fresh address, and a fresh bucket, for every request.
//!
//! Buckets that have refilled completely are indistinguishable from new ones; a sweep
//! started with the snapshot drops them, so the state held is bounded by the clients seen
//! in the last few refill periods, not by every client ever seen.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::model::RateLimit;
use crate::peer::canonical_ip;

/// How often buckets that have refilled are dropped.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// One limit, with a bucket per client.
pub struct ClientRateLimit {
    settings: RateLimit,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    sweeping: AtomicBool,
}

impl std::fmt::Debug for ClientRateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRateLimit")
            .field("settings", &self.settings)
            .field("clients", &self.limiter.len())
            .finish_non_exhaustive()
    }
}

/// A request the limit refused: how long until the client may send one more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

impl Limited {
    /// `Retry-After` in whole seconds, rounded up and at least 1: a client that waits
    /// as told is let through.
    pub fn retry_after_secs(self) -> u64 {
        let secs = self.retry_after.as_secs();
        let rounded = if self.retry_after.subsec_nanos() > 0 {
            secs + 1
        } else {
            secs
        };
        rounded.max(1)
    }
}

impl ClientRateLimit {
    pub fn new(settings: RateLimit) -> Self {
        // Validation keeps both at 1 or more; `MIN` only keeps this infallible.
        let burst = NonZeroU32::new(settings.burst()).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(settings.rate.interval())
            .unwrap_or_else(|| Quota::per_hour(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            settings,
            limiter: DefaultKeyedRateLimiter::dashmap(quota),
            clock: DefaultClock::default(),
            sweeping: AtomicBool::new(false),
        }
    }

    /// What the limit was made from: a reload with the same settings keeps it, and with
    /// it every client's bucket.
    pub fn settings(&self) -> &RateLimit {
        &self.settings
    }

    /// Takes one request from `client`'s bucket.
    pub fn check(&self, client: IpAddr) -> Result<(), Limited> {
        self.limiter
            .check_key(&client_key(client))
            .map_err(|not_until| Limited {
                retry_after: not_until.wait_time_from(self.clock.now()),
            })
    }

    /// The clients with a bucket held now.
    pub fn clients(&self) -> usize {
        self.limiter.len()
    }

    /// Drops the buckets that have refilled completely.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Starts the periodic sweep, once however many snapshots share this limit; it ends
    /// when the last snapshot holding the limit is gone. Needs a tokio runtime.
    pub fn start(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let limit: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(limit) = limit.upgrade() else { return };
                limit.sweep();
            }
        });
    }
}

/// The bucket a client's requests are counted in: its address, an IPv6 one cut to /64.
pub fn client_key(client: IpAddr) -> IpAddr {
    match canonical_ip(client) {
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(network))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::Rate;

    fn limit(rate: &str, burst: Option<u32>) -> ClientRateLimit {
        ClientRateLimit::new(RateLimit {
            rate: rate.parse::<Rate>().unwrap(),
            burst,
        })
    }

    #[test]
    fn a_client_gets_its_burst_then_waits_one_interval() {
        let limit = limit("10/min", Some(3));
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(limit.check(client).is_ok());
        }
        let limited = limit.check(client).unwrap_err();
        assert!(limited.retry_after <= Duration::from_secs(6));
        assert!(limited.retry_after > Duration::from_secs(5));
        assert_eq!(limited.retry_after_secs(), 6);
        // Another client has a bucket of its own.
        assert!(limit.check("192.0.2.2".parse().unwrap()).is_ok());
    }

    #[test]
    fn the_burst_defaults_to_the_rates_count() {
        let limit = limit("2/h", None);
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limit.check(client).is_ok());
        assert!(limit.check(client).is_ok());
        assert!(limit.check(client).is_err());
    }

    #[test]
    fn an_ipv6_host_cannot_escape_its_bucket_by_changing_address() {
        let limit = limit("1/min", Some(1));
        assert!(limit.check("2001:db8:1:2::1".parse().unwrap()).is_ok());
        assert!(
            limit
                .check("2001:db8:1:2:ffff::9".parse().unwrap())
                .is_err()
        );
        assert!(limit.check("2001:db8:1:3::1".parse().unwrap()).is_ok());
        // An IPv4 client on a dual-stack socket is the same client either way.
        assert!(limit.check("192.0.2.7".parse().unwrap()).is_ok());
        assert!(limit.check("::ffff:192.0.2.7".parse().unwrap()).is_err());
    }

    #[test]
    fn refilled_buckets_are_swept() {
        let limit = limit("1000/s", Some(1));
        for host in 1..=50u8 {
            assert!(limit.check(IpAddr::from([192, 0, 2, host])).is_ok());
        }
        assert_eq!(limit.clients(), 50);
        std::thread::sleep(Duration::from_millis(20));
        limit.sweep();
        assert_eq!(limit.clients(), 0);
    }

    #[test]
    fn retry_after_rounds_up_to_a_whole_second() {
        let at = |millis| Limited {
            retry_after: Duration::from_millis(millis),
        };
        assert_eq!(at(1).retry_after_secs(), 1);
        assert_eq!(at(0).retry_after_secs(), 1);
        assert_eq!(at(1000).retry_after_secs(), 1);
        assert_eq!(at(1001).retry_after_secs(), 2);
    }
}
