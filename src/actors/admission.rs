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
//! The backlog's bound follows the workers' pace: at most [`QUEUE_LAG_TARGET`] of what they
//! took off the queue per second lately (never below [`MIN_BACKLOG_BOUND`], never above
//! `MAX_QUEUE_BACKLOG`). A fixed count alone meant a lag of `count / throughput`: 2,000 waiting
//! on this machine's ~1,200 orders/s under overload was a lag of 1.7–2 s for every order
//! admitted, and after the spike at 90 % of capacity the workers gain only a tenth of their
//! pace on it, so the lag stayed over a second for tens of seconds. Bounded by time instead,
//! an admitted order waits about [`QUEUE_LAG_TARGET`] however fast the workers are, and the
//! moment the spike passes the lag is already normal. (With several API processes on one queue
//! each counts only its own admissions, so it sees the workers slower than they are and sheds a
//! little early: the safe side.)
//!
//! The backlog is observed, not counted here: the queue's own depth, read every
//! [`crate::actors::backlog::probe_interval`] by the API process (the workers may be other
//! processes). Between two readings it is extrapolated, once it is past half its bound: the
//! last reading, plus what was admitted since, less what the workers took since at their pace.
//! A reading alone is as old as the probe interval, or older when the probe itself waits on a
//! saturated machine, and at 1,800 arrivals a second every 200 ms without a reading admitted
//! 360 more: the queue then sat at two to three times its bound and each admitted order waited
//! over a second. Below half the bound the workers are keeping up, and a burst is not shed for
//! what it adds within one interval. An observation that could not be made (the queue is down)
//! is forgotten rather than kept: a stale high reading would shed forever, and while the queue
//! is down orders are still accepted into the outbox, bounded by the in-flight limit.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// No observation of the backlog (none yet, or the last probe failed).
const UNKNOWN: u64 = u64::MAX;

/// How long an admitted order should wait in the queue at most, at the workers' recent pace.
/// 300 ms, not the 500 it was: the goal is a completion lag whose p99 (processing and the push
/// to the client included) stays under a second, and with half a second of waiting the p99 sat
/// at 1.0–1.6 s through an overload (BENCHMARKS.md, "Admission that looks between readings").
pub const QUEUE_LAG_TARGET: Duration = Duration::from_millis(300);
/// The backlog bound never goes below this (unless `MAX_QUEUE_BACKLOG` is lower): while the
/// workers keep up their pace is only the arrival rate, and a burst must not be shed for it.
pub const MIN_BACKLOG_BOUND: u64 = 200;

#[derive(Debug)]
pub struct Admission {
    in_flight: AtomicUsize,
    limit: usize,
    /// Messages waiting in the queue at the last probe, or `UNKNOWN`.
    backlog: AtomicU64,
    /// `None`: the backlog is not bounded (`MAX_QUEUE_BACKLOG=0`).
    backlog_limit: Option<u64>,
    /// The bound in force: from the workers' pace, within `MIN_BACKLOG_BOUND..=backlog_limit`.
    backlog_bound: AtomicU64,
    /// Creations admitted so far: with two readings of the depth, what the workers took.
    admitted: AtomicU64,
    /// `admitted` at the last reading, and when that was (nanoseconds after `started`).
    admitted_at_reading: AtomicU64,
    read_at_nanos: AtomicU64,
    started: Instant,
    /// The workers' pace in messages per second (`f64` bits), for the extrapolation.
    pace_per_sec: AtomicU64,
    pace: Mutex<Pace>,
}

/// The workers' pace, from the last reading of the depth (only the probe touches it).
#[derive(Debug, Default)]
struct Pace {
    last: Option<(u64, u64)>,
    /// Messages taken off the queue per second, smoothed over a few readings.
    per_sec: f64,
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
            backlog_bound: AtomicU64::new(backlog_limit.min(MIN_BACKLOG_BOUND)),
            admitted: AtomicU64::new(0),
            admitted_at_reading: AtomicU64::new(0),
            read_at_nanos: AtomicU64::new(0),
            started: Instant::now(),
            pace_per_sec: AtomicU64::new(0f64.to_bits()),
            pace: Mutex::new(Pace::default()),
        })
    }

    /// Whether the backlog needs watching at all.
    pub fn watches_backlog(&self) -> bool {
        self.backlog_limit.is_some()
    }

    /// The queue's depth as just read, `since` the reading before, or `None` when it could not
    /// be read (then the pace is measured afresh from the next two readings).
    pub fn observe_backlog(&self, waiting: Option<u64>, since: Duration) {
        let Some(limit) = self.backlog_limit else {
            self.backlog
                .store(waiting.unwrap_or(UNKNOWN), Ordering::Relaxed);
            return;
        };
        let admitted = self.admitted.load(Ordering::Relaxed);
        let mut pace = self.pace.lock().unwrap_or_else(PoisonError::into_inner);
        if let (Some(now), Some((before, admitted_before))) = (waiting, pace.last) {
            // What was waiting, plus what was added, minus what waits now: what was taken.
            let taken = (before + admitted.saturating_sub(admitted_before)).saturating_sub(now);
            let per_sec = taken as f64 / since.as_secs_f64().max(1e-3);
            pace.per_sec = if pace.per_sec == 0.0 {
                per_sec
            } else {
                0.5 * pace.per_sec + 0.5 * per_sec
            };
        }
        pace.last = waiting.map(|w| (w, admitted));
        self.admitted_at_reading.store(admitted, Ordering::Relaxed);
        self.read_at_nanos
            .store(self.nanos_since_start(), Ordering::Relaxed);
        self.pace_per_sec
            .store(pace.per_sec.to_bits(), Ordering::Relaxed);
        // The reading last, and released, so an admission that acquires it also sees the count
        // and instant stored with it, never the previous reading's (which would count
        // everything admitted between the two readings twice).
        self.backlog
            .store(waiting.unwrap_or(UNKNOWN), Ordering::Release);
        let by_pace = (pace.per_sec * QUEUE_LAG_TARGET.as_secs_f64()) as u64;
        self.backlog_bound
            .store(by_pace.max(MIN_BACKLOG_BOUND).min(limit), Ordering::Relaxed);
    }

    /// The backlog bound in force now (`None`: unbounded).
    pub fn backlog_bound(&self) -> Option<u64> {
        self.backlog_limit
            .map(|_| self.backlog_bound.load(Ordering::Relaxed))
    }

    /// Which bound would shed a creation now, without taking a permit. The HTTP edge asks
    /// this before it authenticates or parses anything (`http::shedding`), so a shed request
    /// costs next to nothing; [`Admission::try_admit`] stays the decision that counts.
    pub fn refuses(&self) -> Option<Shed> {
        if self.backlog_at_bound() {
            return Some(Shed::Backlog);
        }
        (self.in_flight.load(Ordering::Acquire) >= self.limit).then_some(Shed::InFlight)
    }

    fn backlog_at_bound(&self) -> bool {
        // Acquire: pairs with the reading's release in `observe_backlog`.
        let waiting = self.backlog.load(Ordering::Acquire);
        if self.backlog_limit.is_none() || waiting == UNKNOWN {
            return false;
        }
        let bound = self.backlog_bound.load(Ordering::Relaxed);
        self.backlog_now(waiting, bound) >= bound
    }

    /// The backlog now, from the last reading: extrapolated once it is past half the bound
    /// and the workers' pace is known (see the module's doc), else the reading itself.
    fn backlog_now(&self, waiting: u64, bound: u64) -> u64 {
        let per_sec = f64::from_bits(self.pace_per_sec.load(Ordering::Relaxed));
        if waiting < bound / 2 || per_sec <= 0.0 {
            return waiting;
        }
        let admitted_since = self
            .admitted
            .load(Ordering::Relaxed)
            .saturating_sub(self.admitted_at_reading.load(Ordering::Relaxed));
        let since = self
            .nanos_since_start()
            .saturating_sub(self.read_at_nanos.load(Ordering::Relaxed));
        let taken_since = (per_sec * since as f64 / 1e9) as u64;
        (waiting + admitted_since).saturating_sub(taken_since)
    }

    fn nanos_since_start(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A permit if both bounds allow one more, else which bound sheds it.
    pub fn try_admit(self: &Arc<Self>) -> Result<Permit, Shed> {
        if self.backlog_at_bound() {
            return Err(Shed::Backlog);
        }
        let permit = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .map(|_| Permit(self.clone()))
            .map_err(|_| Shed::InFlight)?;
        self.admitted.fetch_add(1, Ordering::Relaxed);
        Ok(permit)
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

    const TICK: Duration = Duration::from_millis(200);

    #[test]
    fn sheds_while_the_backlog_is_at_its_bound_and_admits_once_it_drains() {
        let admission = Admission::new(100, 10);
        assert!(admission.try_admit().is_ok(), "nothing observed yet");
        admission.observe_backlog(Some(10), TICK);
        assert_eq!(admission.try_admit().unwrap_err(), Shed::Backlog);
        admission.observe_backlog(Some(9), TICK);
        assert!(admission.try_admit().is_ok());
    }

    /// Readings 200 ms apart in which the workers took 200: a pace of 1,000/s, a bound of 300.
    fn at_a_thousand_a_second(waiting: u64) -> Arc<Admission> {
        let admission = Admission::new(10_000, 5_000);
        admission.observe_backlog(Some(waiting + 200), TICK);
        admission.observe_backlog(Some(waiting), TICK);
        assert_eq!(admission.backlog_bound(), Some(300));
        admission
    }

    #[test]
    fn between_readings_what_was_admitted_since_counts_towards_the_bound() {
        let admission = at_a_thousand_a_second(200);
        let read = Instant::now();
        let admitted = (0..1_000)
            .take_while(|_| admission.try_admit().is_ok())
            .count();
        // 200 waiting + 100 admitted reach the bound of 300, plus one for each millisecond
        // the workers were credited with at 1,000/s while this ran (none on an idle machine).
        let credited = read.elapsed().as_millis() as usize + 1;
        assert!(
            (100..=100 + credited).contains(&admitted),
            "{admitted} admitted between readings; 100 expected, {credited} ms credited"
        );
        // The next reading replaces the estimate: the workers had taken them.
        admission.observe_backlog(Some(100), TICK);
        assert!(admission.try_admit().is_ok());
    }

    #[test]
    fn below_half_the_bound_a_burst_is_not_shed_for_what_it_adds_between_readings() {
        let admission = at_a_thousand_a_second(149);
        for n in 0..1_000 {
            drop(
                admission
                    .try_admit()
                    .unwrap_or_else(|e| panic!("admission {n}: {e:?}")),
            );
        }
    }

    #[test]
    fn refuses_says_what_try_admit_would_without_taking_a_permit() {
        let admission = Admission::new(1, 10);
        assert_eq!(admission.refuses(), None);
        assert_eq!(admission.refuses(), None, "asking took nothing");
        let permit = admission.try_admit().expect("the one place");
        assert_eq!(admission.refuses(), Some(Shed::InFlight));
        drop(permit);
        admission.observe_backlog(Some(10), TICK);
        assert_eq!(admission.refuses(), Some(Shed::Backlog));
        admission.observe_backlog(None, TICK);
        assert_eq!(
            admission.refuses(),
            None,
            "an unknown backlog sheds nothing"
        );
    }

    #[test]
    fn a_failed_observation_is_forgotten_not_kept() {
        let admission = Admission::new(100, 10);
        admission.observe_backlog(Some(50), TICK);
        admission.observe_backlog(None, TICK);
        assert!(admission.try_admit().is_ok());
    }

    #[test]
    fn an_unbounded_backlog_never_sheds() {
        let admission = Admission::new(100, 0);
        assert!(!admission.watches_backlog());
        admission.observe_backlog(Some(1_000_000), TICK);
        assert!(admission.try_admit().is_ok());
        assert_eq!(admission.backlog_bound(), None);
    }

    #[test]
    fn the_bound_is_the_lag_target_s_worth_of_what_the_workers_took() {
        let admission = Admission::new(10_000, 5_000);
        assert_eq!(admission.backlog_bound(), Some(MIN_BACKLOG_BOUND));
        admission.observe_backlog(Some(100), TICK);
        // 100 waiting, 400 more admitted, 300 waiting 200 ms later: 200 taken, 1,000/s.
        for _ in 0..400 {
            drop(admission.try_admit().expect("under the floor"));
        }
        admission.observe_backlog(Some(300), TICK);
        assert_eq!(admission.backlog_bound(), Some(300));
        // Workers that stop: the bound falls, never below its floor.
        for _ in 0..10 {
            admission.observe_backlog(Some(300), TICK);
        }
        assert_eq!(admission.backlog_bound(), Some(MIN_BACKLOG_BOUND));
        assert_eq!(admission.try_admit().unwrap_err(), Shed::Backlog);
    }

    #[test]
    fn the_bound_never_exceeds_the_configured_one() {
        let admission = Admission::new(10_000, 300);
        admission.observe_backlog(Some(5_000), TICK);
        admission.observe_backlog(Some(0), TICK);
        assert_eq!(admission.backlog_bound(), Some(300));
    }
}
