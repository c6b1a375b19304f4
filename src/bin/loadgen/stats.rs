//! Recording: every request's latency goes into an HDR histogram per endpoint (microseconds,
//! 3 significant digits), and every failure is counted by status code or transport error kind.
//!
//! Virtual users record into a few mutex-guarded shards rather than one shared recorder, so the
//! generator's own bookkeeping never becomes the bottleneck it is trying to measure; the shards
//! are merged once, after the run. Only requests *started* inside the measured window
//! (after warm-up, before the end) are recorded; live progress counters see everything.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::timeline::Timeline;

/// Shards: more than the cores we will ever see here, few enough that merging is free.
const SHARDS: usize = 32;
/// Highest latency the histograms track without saturating: one minute, in microseconds.
const MAX_TRACKED_US: u64 = 60_000_000;

/// A request, labelled by route template (never a raw id), as the service's own metrics are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    Health,
    ListProducts,
    GetProduct,
    CreateOrder,
    GetOrder,
    /// Opening an order's status stream (to its answer's head).
    OrderEvents,
    /// Opening (once per account) the stream of all the account's orders.
    UserEvents,
    Login,
}

impl Endpoint {
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Health => "GET /health",
            Endpoint::ListProducts => "GET /api/products",
            Endpoint::GetProduct => "GET /api/products/{id}",
            Endpoint::CreateOrder => "POST /api/orders",
            Endpoint::GetOrder => "GET /api/orders/{id}",
            Endpoint::OrderEvents => "GET /api/orders/{id}/events",
            Endpoint::UserEvents => "GET /api/orders/events",
            Endpoint::Login => "POST /api/auth/login",
        }
    }

    /// A shell-friendly name, for `--env-out`.
    pub fn slug(self) -> &'static str {
        match self {
            Endpoint::Health => "health",
            Endpoint::ListProducts => "list_products",
            Endpoint::GetProduct => "get_product",
            Endpoint::CreateOrder => "create_order",
            Endpoint::GetOrder => "get_order",
            Endpoint::OrderEvents => "order_events",
            Endpoint::UserEvents => "user_events",
            Endpoint::Login => "login",
        }
    }
}

/// Why a request did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// An HTTP answer with a status other than the expected one.
    Status(u16),
    /// No HTTP answer: `timeout`, `connect`, `body` (answer cut short or not the JSON we expect)
    /// or `request`.
    Transport(&'static str),
    /// Open model: the arrival was still waiting for a free slot at the drain deadline, so the
    /// generator gave up on it (the server was too slow to take it).
    NotSent,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status(code) => write!(f, "{code}"),
            Failure::Transport(kind) => write!(f, "transport:{kind}"),
            Failure::NotSent => write!(f, "not-sent"),
        }
    }
}

/// How a polled order ended, from the generator's point of view.
#[derive(Clone, Copy, Debug)]
pub enum OrderEnd {
    /// Seen `completed`: lags from the order's own timestamps and from what the poller saw.
    Completed {
        server_lag: Duration,
        client_lag: Duration,
    },
    Failed,
    Cancelled,
    /// Still pending or processing when the drain deadline passed.
    Unfinished,
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_US, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// One endpoint's numbers: latency of successful requests, failures by kind.
#[derive(Clone)]
pub struct EndpointStats {
    pub latency: Histogram<u64>,
    pub failures: BTreeMap<Failure, u64>,
}

impl EndpointStats {
    fn new() -> Self {
        EndpointStats {
            latency: new_histogram(),
            failures: BTreeMap::new(),
        }
    }

    pub fn ok(&self) -> u64 {
        self.latency.len()
    }

    pub fn errors(&self) -> u64 {
        self.failures.values().sum()
    }

    fn merge(&mut self, other: &EndpointStats) {
        self.latency
            .add(&other.latency)
            .expect("histograms share bounds");
        for (k, v) in &other.failures {
            *self.failures.entry(k.clone()).or_default() += v;
        }
    }
}

/// Orders placed inside the window and what became of them.
#[derive(Clone)]
pub struct OrderStats {
    pub created: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// `updatedAt - createdAt` of the completed order: exact, measured by the service's clock.
    pub server_lag: Histogram<u64>,
    /// From the 201 to the first poll that saw `completed`: bounded below by the poll interval.
    pub client_lag: Histogram<u64>,
}

impl OrderStats {
    fn new() -> Self {
        OrderStats {
            created: 0,
            completed: 0,
            failed: 0,
            cancelled: 0,
            server_lag: new_histogram(),
            client_lag: new_histogram(),
        }
    }

    fn merge(&mut self, o: &OrderStats) {
        self.created += o.created;
        self.completed += o.completed;
        self.failed += o.failed;
        self.cancelled += o.cancelled;
        self.server_lag.add(&o.server_lag).expect("same bounds");
        self.client_lag.add(&o.client_lag).expect("same bounds");
    }
}

/// Everything recorded in the measured window, after merging the shards.
#[derive(Clone)]
pub struct Totals {
    pub endpoints: BTreeMap<Endpoint, EndpointStats>,
    pub orders: OrderStats,
}

impl Totals {
    fn new() -> Self {
        Totals {
            endpoints: BTreeMap::new(),
            orders: OrderStats::new(),
        }
    }

    fn merge(&mut self, other: &Totals) {
        for (ep, s) in &other.endpoints {
            self.endpoints
                .entry(*ep)
                .or_insert_with(EndpointStats::new)
                .merge(s);
        }
        self.orders.merge(&other.orders);
    }
}

/// The shared recorder of one run.
pub struct Stats {
    shards: Vec<Mutex<Totals>>,
    window_start: Instant,
    window_end: Instant,
    /// Every request sent, warm-up included: for the progress line only.
    pub sent: AtomicU64,
    /// Every failed request, warm-up included: for the progress line only.
    pub failed: AtomicU64,
    /// Open model: iterations whose intended start fell in the window.
    pub arrivals: AtomicU64,
    /// Second by second, with `--timeline` (warm-up and drain included).
    pub timeline: Option<Timeline>,
}

impl Stats {
    pub fn new(window_start: Instant, window_end: Instant) -> Self {
        Stats {
            shards: (0..SHARDS).map(|_| Mutex::new(Totals::new())).collect(),
            window_start,
            window_end,
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            arrivals: AtomicU64::new(0),
            timeline: None,
        }
    }

    /// Also keeps the run second by second.
    pub fn with_timeline(mut self, timeline: Timeline) -> Self {
        self.timeline = Some(timeline);
        self
    }

    /// Whether something that started at `t` belongs to the measurement.
    pub fn in_window(&self, t: Instant) -> bool {
        t >= self.window_start && t < self.window_end
    }

    fn shard(&self, key: usize) -> std::sync::MutexGuard<'_, Totals> {
        // A panic while holding a shard only loses that shard's in-progress update.
        self.shards[key % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an open-model arrival intended at `t`.
    pub fn arrival(&self, t: Instant) {
        if self.in_window(t) {
            self.arrivals.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records one request that started at `started` (its intended send time in the open model,
    /// so time spent waiting behind a slow server counts) and ended now.
    pub fn record(
        &self,
        key: usize,
        endpoint: Endpoint,
        started: Instant,
        outcome: Result<(), Failure>,
    ) {
        let elapsed = started.elapsed();
        self.sent.fetch_add(1, Ordering::Relaxed);
        if outcome.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let (Some(t), Endpoint::CreateOrder) = (&self.timeline, endpoint) {
            t.answer(started, &outcome);
        }
        if !self.in_window(started) {
            return;
        }
        let mut shard = self.shard(key);
        let s = shard
            .endpoints
            .entry(endpoint)
            .or_insert_with(EndpointStats::new);
        match outcome {
            Ok(()) => s.latency.saturating_record(micros(elapsed)),
            Err(f) => *s.failures.entry(f).or_default() += 1,
        }
    }

    /// Counts an order answered 201 whose request started at `started`.
    pub fn order_created(&self, key: usize, started: Instant) {
        if self.in_window(started) {
            self.shard(key).orders.created += 1;
        }
    }

    /// Records how an order counted by `order_created` ended.
    pub fn order_ended(&self, key: usize, started: Instant, end: OrderEnd) {
        if let (Some(t), OrderEnd::Completed { server_lag, .. }) = (&self.timeline, end) {
            t.lag(started, server_lag);
        }
        if !self.in_window(started) {
            return;
        }
        let orders = &mut self.shard(key).orders;
        match end {
            OrderEnd::Completed {
                server_lag,
                client_lag,
            } => {
                orders.completed += 1;
                orders.server_lag.saturating_record(micros(server_lag));
                orders.client_lag.saturating_record(micros(client_lag));
            }
            OrderEnd::Failed => orders.failed += 1,
            OrderEnd::Cancelled => orders.cancelled += 1,
            // Reported as created minus ended, which also covers a run interrupted mid-order.
            OrderEnd::Unfinished => {}
        }
    }

    pub fn totals(&self) -> Totals {
        let mut all = Totals::new();
        for shard in &self.shards {
            all.merge(&shard.lock().unwrap_or_else(|p| p.into_inner()));
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_window_is_recorded() {
        let now = Instant::now();
        let stats = Stats::new(now + Duration::from_secs(1), now + Duration::from_secs(2));
        stats.record(0, Endpoint::Health, now, Ok(()));
        stats.record(
            1,
            Endpoint::Health,
            now + Duration::from_millis(1500),
            Ok(()),
        );
        stats.record(
            2,
            Endpoint::Health,
            now + Duration::from_millis(1500),
            Err(Failure::Status(503)),
        );
        let totals = stats.totals();
        let health = &totals.endpoints[&Endpoint::Health];
        assert_eq!(health.ok(), 1);
        assert_eq!(health.errors(), 1);
        assert_eq!(stats.sent.load(Ordering::Relaxed), 3);
    }
}
