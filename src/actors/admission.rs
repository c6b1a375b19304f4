//! Load shedding for order creation. Past its capacity a service that accepts every request
//! only queues them: latency grows without bound, clients time out and retry, and the work
//! that would complete orders waits behind new ones. Instead a creation is answered 503
//! `overloaded` with `Retry-After` at once, reserving nothing, when either bound is reached, so
//! a client (or load balancer) backs off or goes elsewhere:
//!
//! - **Creations in flight** (`MAX_ORDERS_IN_FLIGHT`): a count, not a rate. By Little's law it
//!   caps the request latency at `limit / throughput`, whatever the machine's speed, and it
//!   never sheds while the service keeps up.
//! - **The workers' backlog** (`MAX_QUEUE_BACKLOG`): orders accepted but still waiting in the
//!   queue. The in-flight bound alone lets the API accept faster than the workers complete
//!   (accepting is cheaper than processing), and then every accepted order waits behind a
//!   backlog that only grows while arrivals continue: completion lag never recovers, and
//!   clients polling their pending orders multiply the load. Bounding the backlog bounds the
//!   lag at about `backlog / worker throughput`, and once the workers drain it below the bound
//!   creations are admitted again: the service recovers by itself when the spike passes.
//!
//! The backlog is observed, not counted here: the queue's own depth, read every
//! [`crate::actors::backlog::probe_interval`] by the API process (the workers may be other
//! processes). An observation that could not be made (the queue is down) is forgotten rather
//! than kept: a stale high reading would shed forever, and while the queue is down orders are
//! still accepted into the outbox, bounded by the in-flight limit.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// No observation of the backlog (none yet, or the last probe failed).
const UNKNOWN: u64 = u64::MAX;

#[derive(Debug)]
pub struct Admission {
    in_flight: AtomicUsize,
    limit: usize,
    /// Messages waiting in the queue at the last probe, or `UNKNOWN`.
    backlog: AtomicU64,
    /// `None`: the backlog is not bounded (`MAX_QUEUE_BACKLOG=0`).
    backlog_limit: Option<u64>,
}

/// One admitted creation; it leaves when dropped, however its future ends.
#[derive(Debug)]
pub struct Permit(Arc<Admission>);

/// Which bound shed a creation: the `reason` label of `orders_shed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shed {
    InFlight,
    Backlog,
}

impl Shed {
    pub const ALL: [Shed; 2] = [Shed::InFlight, Shed::Backlog];

    pub fn as_str(self) -> &'static str {
        match self {
            Shed::InFlight => "in_flight",
            Shed::Backlog => "backlog",
        }
    }
}

impl Admission {
    /// `backlog_limit` 0 leaves the backlog unbounded.
    pub fn new(limit: usize, backlog_limit: u64) -> Arc<Admission> {
        Arc::new(Admission {
            in_flight: AtomicUsize::new(0),
            limit: limit.max(1),
            backlog: AtomicU64::new(UNKNOWN),
            backlog_limit: (backlog_limit > 0).then_some(backlog_limit),
        })
    }

    /// Whether the backlog needs watching at all.
    pub fn watches_backlog(&self) -> bool {
        self.backlog_limit.is_some()
    }

    /// The queue's depth as just read, or `None` when it could not be read.
    pub fn observe_backlog(&self, waiting: Option<u64>) {
        self.backlog
            .store(waiting.unwrap_or(UNKNOWN), Ordering::Relaxed);
    }

    /// A permit if both bounds allow one more, else which bound sheds it.
    pub fn try_admit(self: &Arc<Self>) -> Result<Permit, Shed> {
        if let Some(limit) = self.backlog_limit {
            let waiting = self.backlog.load(Ordering::Relaxed);
            if waiting != UNKNOWN && waiting >= limit {
                return Err(Shed::Backlog);
            }
        }
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .map(|_| Permit(self.clone()))
            .map_err(|_| Shed::InFlight)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_again_once_permits_return() {
        let admission = Admission::new(2, 0);
        let a = admission.try_admit().expect("first");
        let _b = admission.try_admit().expect("second");
        assert_eq!(admission.try_admit().unwrap_err(), Shed::InFlight);
        drop(a);
        assert!(
            admission.try_admit().is_ok(),
            "a returned permit frees a place"
        );
    }

    #[test]
    fn sheds_while_the_backlog_is_at_its_bound_and_admits_once_it_drains() {
        let admission = Admission::new(100, 10);
        assert!(admission.try_admit().is_ok(), "nothing observed yet");
        admission.observe_backlog(Some(10));
        assert_eq!(admission.try_admit().unwrap_err(), Shed::Backlog);
        admission.observe_backlog(Some(9));
        assert!(admission.try_admit().is_ok());
    }

    #[test]
    fn a_failed_observation_is_forgotten_not_kept() {
        let admission = Admission::new(100, 10);
        admission.observe_backlog(Some(50));
        admission.observe_backlog(None);
        assert!(admission.try_admit().is_ok());
    }

    #[test]
    fn an_unbounded_backlog_never_sheds() {
        let admission = Admission::new(100, 0);
        assert!(!admission.watches_backlog());
        admission.observe_backlog(Some(1_000_000));
        assert!(admission.try_admit().is_ok());
    }
}
