//! "At most once per interval" for the purges the store runs itself where the server has no
//! TTL indexes: shared by the clones of one store, so a process purges once per interval
//! however many requests pass, and the first caller after the interval does it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub(super) struct PurgeClock {
    started: Instant,
    every: Duration,
    /// Milliseconds since `started` of the next purge that is due.
    next_due_ms: Arc<AtomicU64>,
}

impl PurgeClock {
    /// The first call is due at once.
    pub(super) fn new(every: Duration) -> PurgeClock {
        PurgeClock {
            started: Instant::now(),
            every,
            next_due_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// True for exactly one caller per interval: the one that moves the due time on.
    pub(super) fn due(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        let due = self.next_due_ms.load(Ordering::Relaxed);
        now >= due
            && self
                .next_due_ms
                .compare_exchange(
                    due,
                    now + self.every.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_caller_per_interval() {
        let clock = PurgeClock::new(Duration::from_secs(3600));
        assert!(clock.due(), "the first call purges");
        assert!(!clock.due(), "the next one within the interval does not");
        assert!(!clock.clone().due(), "nor does a clone's");
    }

    #[test]
    fn due_again_after_the_interval() {
        let clock = PurgeClock::new(Duration::ZERO);
        assert!(clock.due());
        assert!(clock.due());
    }
}
