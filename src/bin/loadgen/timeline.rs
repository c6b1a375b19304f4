//! Second by second (`--timeline`): the creations' answers (201, 503 shed, other), the POST
//! p99, the completion lag of the orders placed in that second, and the service's backlog as
//! its `/metrics` showed it; and, for a run whose rate drops (`--steps`), how long after the
//! drop the lag p99 was back under a second for good. That is how an overload is seen to end
//! (or not), which whole-run percentiles hide.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::Api;
use crate::stats::Failure;

/// A lag p99 under this is "normal" again.
pub const NORMAL_LAG: Duration = Duration::from_secs(1);
/// No reading of a backlog figure in that second.
const NONE: u64 = u64::MAX;

struct Second {
    created: AtomicU64,
    shed: AtomicU64,
    other: AtomicU64,
    post: Mutex<Histogram<u64>>,
    lag: Mutex<Histogram<u64>>,
    queue: AtomicU64,
    unfinished: AtomicU64,
}

impl Second {
    fn new() -> Second {
        // Two significant digits: plenty for a per-second p99, and small for long runs.
        let h = || Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 2).expect("bounds"));
        Second {
            created: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            other: AtomicU64::new(0),
            post: h(),
            lag: h(),
            queue: AtomicU64::new(NONE),
            unfinished: AtomicU64::new(NONE),
        }
    }
}

pub struct Timeline {
    start: Instant,
    seconds: Vec<Second>,
}

/// One second of the run, as reported.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecondRow {
    /// Seconds since the run's start (warm-up included), the start of this second.
    pub t: u64,
    /// Creations answered in this second, by answer.
    pub created: u64,
    pub shed: u64,
    pub other: u64,
    pub post_p99_ms: Option<f64>,
    /// Completion lag (`updatedAt - createdAt`) of the orders placed in this second.
    pub lag_p50_ms: Option<f64>,
    pub lag_p99_ms: Option<f64>,
    /// Messages waiting in the queue as the service's admission last saw them
    /// (`admission_queue_backlog`).
    pub queue_backlog: Option<u64>,
    /// Orders created and not yet ended (`orders_created_total` minus the ended ones).
    pub unfinished: Option<u64>,
}

fn ms(h: &Mutex<Histogram<u64>>, q: f64) -> Option<f64> {
    let h = h.lock().unwrap_or_else(PoisonError::into_inner);
    (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl Timeline {
    /// Seconds from `start` for `span` (the run with its drain).
    pub fn new(start: Instant, span: Duration) -> Timeline {
        let n = span.as_secs() as usize + 2;
        Timeline {
            start,
            seconds: (0..n).map(|_| Second::new()).collect(),
        }
    }

    fn at(&self, t: Instant) -> Option<&Second> {
        let i = t.saturating_duration_since(self.start).as_secs() as usize;
        self.seconds.get(i)
    }

    /// A creation answered now, sent at `sent`.
    pub fn answer(&self, sent: Instant, outcome: &Result<(), Failure>) {
        let now = Instant::now();
        let Some(s) = self.at(now) else { return };
        match outcome {
            Ok(()) => {
                s.created.fetch_add(1, Ordering::Relaxed);
                let mut h = s.post.lock().unwrap_or_else(PoisonError::into_inner);
                h.saturating_record(micros(now.saturating_duration_since(sent)));
            }
            Err(Failure::Status(503)) => {
                s.shed.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                s.other.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The completion lag of an order placed at `placed`.
    pub fn lag(&self, placed: Instant, lag: Duration) {
        if let Some(s) = self.at(placed) {
            let mut h = s.lag.lock().unwrap_or_else(PoisonError::into_inner);
            h.saturating_record(micros(lag));
        }
    }

    fn backlog(&self, at: Instant, queue: Option<u64>, unfinished: Option<u64>) {
        if let Some(s) = self.at(at) {
            s.queue.store(queue.unwrap_or(NONE), Ordering::Relaxed);
            s.unfinished
                .store(unfinished.unwrap_or(NONE), Ordering::Relaxed);
        }
    }

    /// The seconds up to the last one anything happened in.
    pub fn rows(&self) -> Vec<SecondRow> {
        let seen = |v: u64| (v != NONE).then_some(v);
        let mut rows: Vec<SecondRow> = self
            .seconds
            .iter()
            .enumerate()
            .map(|(t, s)| SecondRow {
                t: t as u64,
                created: s.created.load(Ordering::Relaxed),
                shed: s.shed.load(Ordering::Relaxed),
                other: s.other.load(Ordering::Relaxed),
                post_p99_ms: ms(&s.post, 0.99),
                lag_p50_ms: ms(&s.lag, 0.50),
                lag_p99_ms: ms(&s.lag, 0.99),
                queue_backlog: seen(s.queue.load(Ordering::Relaxed)),
                unfinished: seen(s.unfinished.load(Ordering::Relaxed)),
            })
            .collect();
        while rows.last().is_some_and(|r| {
            r.created + r.shed + r.other == 0 && r.lag_p99_ms.is_none() && r.queue_backlog.is_none()
        }) {
            rows.pop();
        }
        rows
    }
}

/// Seconds after `drop_at` (seconds since the start) until the lag p99 of every later second
/// with orders stays under [`NORMAL_LAG`]; `None` if the last such second is still above it.
pub fn recovery(rows: &[SecondRow], drop_at: f64) -> Option<f64> {
    let limit = NORMAL_LAG.as_secs_f64() * 1000.0;
    let after: Vec<&SecondRow> = rows
        .iter()
        .filter(|r| r.t as f64 >= drop_at.floor() && r.lag_p99_ms.is_some())
        .collect();
    if after.is_empty() {
        // No order after the drop completed: nothing says the service is back.
        return None;
    }
    let last_bad = after
        .iter()
        .rposition(|r| r.lag_p99_ms.is_some_and(|p| p > limit));
    match last_bad {
        None => Some(0.0),
        Some(i) if i + 1 == after.len() => None,
        Some(i) => Some((after[i + 1].t as f64 - drop_at).max(0.0)),
    }
}

/// Once a second until `until`, reads the service's backlog off its `/metrics`.
pub async fn sample_backlog(api: Api, stats: Arc<crate::stats::Stats>, until: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < until {
        tick.tick().await;
        let at = Instant::now();
        let Ok(text) = api.metrics_text().await else {
            continue;
        };
        let sum = |name: &str| -> Option<u64> {
            let mut found = None;
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                let Some((key, value)) = line.rsplit_once(' ') else {
                    continue;
                };
                if key == name || key.starts_with(&format!("{name}{{")) {
                    let v = value.parse::<f64>().ok()?;
                    found = Some(found.unwrap_or(0.0) + v);
                }
            }
            found.map(|v| v as u64)
        };
        let unfinished = sum("orders_created_total").map(|created| {
            let ended: u64 = [
                "orders_completed_total",
                "orders_failed_total",
                "orders_cancelled_total",
            ]
            .iter()
            .filter_map(|n| sum(n))
            .sum();
            created.saturating_sub(ended)
        });
        if let Some(t) = stats.timeline.as_ref() {
            t.backlog(at, sum("admission_queue_backlog"), unfinished);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(t: u64, lag_p99_ms: Option<f64>) -> SecondRow {
        SecondRow {
            t,
            created: 1,
            shed: 0,
            other: 0,
            post_p99_ms: None,
            lag_p50_ms: lag_p99_ms,
            lag_p99_ms,
            queue_backlog: None,
            unfinished: None,
        }
    }

    #[test]
    fn recovery_is_the_first_second_after_which_the_lag_stays_normal() {
        let rows: Vec<SecondRow> = [
            (0, 5.0),
            (1, 3000.0),
            (2, 2500.0),
            (3, 1500.0),
            (4, 20.0),
            (5, 1200.0),
            (6, 10.0),
            (7, 8.0),
        ]
        .iter()
        .map(|&(t, p)| row(t, Some(p)))
        .collect();
        assert_eq!(recovery(&rows, 2.0), Some(4.0), "back for good at 6 s");
        assert_eq!(recovery(&rows[..6], 2.0), None, "still over at the end");
        assert_eq!(recovery(&rows[6..], 6.0), Some(0.0), "never over");
        assert_eq!(
            recovery(&rows[..2], 3.0),
            None,
            "nothing completed after the drop"
        );
    }
}
