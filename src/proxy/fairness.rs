//! Upstream fairness: how many requests may be on their way to the upstreams at once, in
//! all and per client, so that one client (one address, resolved through
//! `trust.proxies`) cannot take every upstream connection by opening requests it never
//! reads; and to one upstream, where it has a `max_in_flight` ([`UpstreamCap`]), so that
//! a burst does not queue up in a single-process Python server. Per connection the
//! bound is the connection itself: one request at a time on HTTP/1.1,
//! `http2_max_concurrent_streams` on HTTP/2.
//!
//! A request holds its [`Admission`] from before it is sent upstream until its response
//! body has been sent or abandoned; beyond a cap it gets 503 with `Retry-After`. The
//! counters live in [`UpstreamSlots`], shared by every snapshot, and in each
//! [`UpstreamCap`], handed on to the next snapshot while the upstream keeps its name and
//! address (a reload keeps the count of requests in flight and changes only the caps).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Shards of the per-client counts: requests of different clients rarely wait for the
/// same lock.
const SHARDS: usize = 16;

/// The caps a snapshot admits requests with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FairnessLimits {
    /// Requests in flight to the upstreams, all clients together.
    pub global: usize,
    /// Requests in flight to the upstreams from one client address.
    pub per_client: u32,
}

/// Which cap refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Global,
    Client,
    /// The upstream's own `max_in_flight`, which is `max`.
    Upstream {
        max: usize,
    },
}

impl Refusal {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Client => "client",
            Self::Upstream { .. } => "upstream",
        }
    }
}

/// One upstream's cap on requests in flight to it (`max_in_flight`).
#[derive(Debug)]
pub struct UpstreamCap {
    max: usize,
    in_flight: Arc<AtomicUsize>,
}

impl UpstreamCap {
    /// A cap of `max` counting on `running`'s count (the same upstream in the snapshot
    /// being replaced: its requests in flight still count), or on a fresh one.
    pub fn new(max: usize, running: Option<&UpstreamCap>) -> Self {
        Self {
            max,
            in_flight: running.map_or_else(Arc::default, |running| Arc::clone(&running.in_flight)),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Requests in flight to the upstream now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn take(&self) -> Result<UpstreamPlace, Refusal> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .map_err(|_| Refusal::Upstream { max: self.max })?;
        Ok(UpstreamPlace(Arc::clone(&self.in_flight)))
    }
}

/// A place in an upstream's count, given back on drop (also when a later cap refuses
/// the request).
#[derive(Debug)]
struct UpstreamPlace(Arc<AtomicUsize>);

impl Drop for UpstreamPlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The counts of requests in flight, shared across reloads.
#[derive(Debug, Default)]
pub struct UpstreamSlots {
    global: AtomicUsize,
    clients: [Mutex<HashMap<IpAddr, u32>>; SHARDS],
}

impl UpstreamSlots {
    fn shard(&self, client: IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        let index = match client {
            IpAddr::V4(ip) => ip.octets()[3] as usize ^ ip.octets()[2] as usize,
            IpAddr::V6(ip) => ip.octets()[7] as usize ^ ip.octets()[15] as usize,
        };
        &self.clients[index % SHARDS]
    }

    /// Requests in flight now, all clients together.
    pub fn in_flight(&self) -> usize {
        self.global.load(Ordering::Acquire)
    }
}

/// A snapshot's caps over the shared counts.
#[derive(Debug)]
pub struct Fairness {
    slots: Arc<UpstreamSlots>,
    limits: FairnessLimits,
}

impl Fairness {
    /// Caps `limits` counting on `running`'s counts (the snapshot being replaced), or on
    /// fresh ones.
    pub fn new(limits: FairnessLimits, running: Option<&Fairness>) -> Self {
        Self {
            slots: running.map_or_else(Arc::default, |running| Arc::clone(&running.slots)),
            limits,
        }
    }

    pub fn limits(&self) -> FairnessLimits {
        self.limits
    }

    pub fn slots(&self) -> &Arc<UpstreamSlots> {
        &self.slots
    }

    /// A place for one more request of `client` on its way to an upstream with
    /// `upstream` as its cap (if it has one), unless a cap is reached.
    pub fn admit(
        &self,
        client: IpAddr,
        upstream: Option<&UpstreamCap>,
    ) -> Result<Admission, Refusal> {
        // First, so that a busy upstream does not take places in the other counts.
        let upstream = upstream.map(UpstreamCap::take).transpose()?;
        // As the rate limits do: an IPv6 client by its /64, which one host usually holds.
        let client = crate::rate_limit::client_key(client);
        let slots = &self.slots;
        slots
            .global
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limits.global).then_some(n + 1)
            })
            .map_err(|_| Refusal::Global)?;
        let admitted = {
            let mut clients = slots
                .shard(client)
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let count = clients.entry(client).or_insert(0);
            if *count < self.limits.per_client {
                *count += 1;
                true
            } else {
                false
            }
        };
        if !admitted {
            slots.global.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Client);
        }
        Ok(Admission {
            slots: Arc::clone(slots),
            client,
            _upstream: upstream,
        })
    }
}

/// One request's place in the counts, given back on drop.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<UpstreamSlots>,
    client: IpAddr,
    /// Its place in its upstream's count, when the upstream has a cap.
    _upstream: Option<UpstreamPlace>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        {
            let mut clients = self
                .slots
                .shard(self.client)
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = clients.get_mut(&self.client) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    clients.remove(&self.client);
                }
            }
        }
        self.slots.global.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn each_cap_refuses_and_a_drop_gives_the_place_back() {
        let fairness = Fairness::new(
            FairnessLimits {
                global: 3,
                per_client: 2,
            },
            None,
        );
        let a1 = fairness.admit(ip("192.0.2.1"), None).unwrap();
        let _a2 = fairness.admit(ip("192.0.2.1"), None).unwrap();
        assert_eq!(
            fairness.admit(ip("192.0.2.1"), None).unwrap_err(),
            Refusal::Client
        );
        let _b1 = fairness.admit(ip("192.0.2.2"), None).unwrap();
        assert_eq!(
            fairness.admit(ip("192.0.2.3"), None).unwrap_err(),
            Refusal::Global
        );
        drop(a1);
        let _a3 = fairness.admit(ip("192.0.2.1"), None).unwrap();
        assert_eq!(fairness.slots().in_flight(), 3);
    }

    #[test]
    fn a_reload_keeps_the_counts_and_takes_the_new_caps() {
        let limits = FairnessLimits {
            global: 10,
            per_client: 1,
        };
        let old = Fairness::new(limits, None);
        let held = old.admit(ip("2001:db8::1"), None).unwrap();
        let new = Fairness::new(
            FairnessLimits {
                per_client: 2,
                ..limits
            },
            Some(&old),
        );
        let _second = new.admit(ip("2001:db8::1"), None).unwrap();
        assert_eq!(
            new.admit(ip("2001:db8::1"), None).unwrap_err(),
            Refusal::Client
        );
        drop(held);
        assert_eq!(new.slots().in_flight(), 1);
        let clients: usize = new
            .slots()
            .clients
            .iter()
            .map(|shard| shard.lock().unwrap().len())
            .sum();
        assert_eq!(clients, 1, "a client with nothing in flight is forgotten");
    }

    #[test]
    fn an_upstream_cap_refuses_first_and_a_reload_keeps_its_count() {
        let fairness = Fairness::new(
            FairnessLimits {
                global: 10,
                per_client: 10,
            },
            None,
        );
        let cap = UpstreamCap::new(1, None);
        let held = fairness.admit(ip("192.0.2.1"), Some(&cap)).unwrap();
        assert_eq!(
            fairness.admit(ip("192.0.2.2"), Some(&cap)).unwrap_err(),
            Refusal::Upstream { max: 1 }
        );
        // The refusal took no place in the other counts; another upstream is served.
        assert_eq!(fairness.slots().in_flight(), 1);
        let _other = fairness.admit(ip("192.0.2.2"), None).unwrap();

        // A refusal by a later cap gives the upstream's place back.
        let narrow = Fairness::new(
            FairnessLimits {
                global: 10,
                per_client: 1,
            },
            Some(&fairness),
        );
        let wide = UpstreamCap::new(5, None);
        let _first = narrow.admit(ip("192.0.2.9"), Some(&wide)).unwrap();
        assert_eq!(
            narrow.admit(ip("192.0.2.9"), Some(&wide)).unwrap_err(),
            Refusal::Client
        );
        assert_eq!(wide.in_flight(), 1);

        // A reload raising the cap counts the request still in flight.
        let raised = UpstreamCap::new(2, Some(&cap));
        let _second = fairness.admit(ip("192.0.2.3"), Some(&raised)).unwrap();
        assert!(fairness.admit(ip("192.0.2.4"), Some(&raised)).is_err());
        drop(held);
        assert_eq!(raised.in_flight(), 1);
    }
}
