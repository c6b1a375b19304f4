//! Load shedding for order creation. Past its capacity a service that accepts every request
//! only queues them: latency grows without bound, clients time out and retry, and the work
//! that would complete orders waits behind new ones. Instead at most `limit` creations run
//! at once; one more is answered 503 `overloaded` with `Retry-After` at once, reserving
//! nothing, so a client (or load balancer) backs off or goes elsewhere.
//!
//! The limit is a count of creations in flight, not a rate: by Little's law it caps the
//! latency at `limit / throughput`, whatever the machine's speed, and it never sheds while
//! the service keeps up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug)]
pub struct Admission {
    in_flight: AtomicUsize,
    limit: usize,
}

/// One admitted creation; it leaves when dropped, however its future ends.
#[derive(Debug)]
pub struct Permit(Arc<Admission>);

impl Admission {
    pub fn new(limit: usize) -> Arc<Admission> {
        Arc::new(Admission {
            in_flight: AtomicUsize::new(0),
            limit: limit.max(1),
        })
    }

    /// A permit if fewer than `limit` are out, else `None` (shed this one).
    pub fn try_admit(self: &Arc<Self>) -> Option<Permit> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(self.clone()))
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
        let admission = Admission::new(2);
        let a = admission.try_admit().expect("first");
        let _b = admission.try_admit().expect("second");
        assert!(admission.try_admit().is_none(), "third must be shed");
        drop(a);
        assert!(
            admission.try_admit().is_some(),
            "a returned permit frees a place"
        );
    }
}
