//! The two load models, and the progress line.
//!
//! - **Closed** (`--users N`): N virtual users, each starting its next iteration when the last
//!   one finished. Throughput adapts to the server, so it finds the sustainable rate; its latency
//!   percentiles are what a user waiting on each answer saw.
//! - **Open** (`--rate R`): iterations arrive at R per second whatever the server does, each timed
//!   from its *intended* arrival time. A stalled server therefore shows up as the latency every
//!   delayed arrival really suffered, instead of as fewer samples (coordinated omission).

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::scenario::{self, Actor, Ctx, Mix};
use crate::stats::{Failure, Stats};

#[derive(Clone, Debug)]
pub enum Model {
    Closed {
        users: usize,
    },
    Open {
        /// The arrival rate, step by step (`--steps`; one step with `--rate`).
        steps: Steps,
        /// Iterations allowed in flight; past it, arrivals wait (and their wait is measured).
        max_in_flight: usize,
    },
}

/// Arrival rates held one after the other: `(iterations per second, for how long)`. The
/// warm-up runs at the first step's rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Steps(pub Vec<(f64, Duration)>);

impl Steps {
    /// `RATE:DURATION,RATE:DURATION…`, e.g. `2800:30s,1260:60s`.
    pub fn parse(spec: &str) -> anyhow::Result<Steps> {
        let mut steps = vec![];
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (rate, duration) = part
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("step {part:?} is not RATE:DURATION"))?;
            let rate: f64 = rate
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("rate of step {part:?} is not a number"))?;
            if !(rate.is_finite() && rate > 0.0) {
                anyhow::bail!("rate of step {part:?} must be positive");
            }
            let duration = order_service::duration::parse_duration(duration.trim())
                .map_err(|e| anyhow::anyhow!("duration of step {part:?}: {e}"))?;
            steps.push((rate, duration));
        }
        if steps.is_empty() {
            anyhow::bail!("--steps needs at least one RATE:DURATION");
        }
        Ok(Steps(steps))
    }

    pub fn total(&self) -> Duration {
        self.0.iter().map(|(_, d)| *d).sum()
    }

    /// Seconds from the end of the warm-up to the start of the last step: where the rate
    /// drops in a spike-then-relief run.
    pub fn last_change(&self) -> Duration {
        self.0[..self.0.len() - 1].iter().map(|(_, d)| *d).sum()
    }
}

/// The run's clock: warm-up from `start` to `warm_end`, measurement until `end`.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub start: Instant,
    pub warm_end: Instant,
    pub end: Instant,
}

/// Runs the load until the end of the schedule and every iteration under way has finished.
pub async fn drive(ctx: Arc<Ctx>, mix: Mix, model: Model, schedule: Schedule) {
    match model {
        Model::Closed { users } => closed(ctx, mix, users, schedule).await,
        Model::Open {
            steps,
            max_in_flight,
        } => open(ctx, mix, steps, max_in_flight, schedule).await,
    }
}

async fn closed(ctx: Arc<Ctx>, mix: Mix, users: usize, schedule: Schedule) {
    let mut tasks = JoinSet::new();
    for id in 0..users {
        let (ctx, mix) = (ctx.clone(), mix.clone());
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(id as u64);
            // An iteration under way at the end finishes (its order is polled to the end), but
            // none starts after it.
            while Instant::now() < schedule.end {
                let op = mix.pick(&mut rng);
                let mut actor = Actor { id, rng: &mut rng };
                scenario::run(&ctx, &mut actor, op, Instant::now()).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

async fn open(ctx: Arc<Ctx>, mix: Mix, steps: Steps, max_in_flight: usize, schedule: Schedule) {
    let permits = Arc::new(Semaphore::new(max_in_flight));
    // Each step's arrivals are timed from the step's own start, so rounding never accumulates
    // into drift; the first step also covers the warm-up.
    let mut step_start = schedule.start;
    let mut step_end = schedule.warm_end;
    let mut in_step = 0u64;
    let mut steps = steps.0.into_iter();
    let (mut rate, first) = steps.next().expect("at least one step");
    step_end += first;
    for n in 0u64.. {
        let mut intended = step_start + Duration::from_secs_f64(in_step as f64 / rate);
        while intended >= step_end {
            let Some((next_rate, length)) = steps.next() else {
                break;
            };
            (step_start, rate, in_step) = (step_end, next_rate, 0);
            step_end += length;
            intended = step_start;
        }
        if intended >= step_end || intended >= schedule.end {
            break;
        }
        in_step += 1;
        if intended > Instant::now() {
            tokio::time::sleep_until(intended.into()).await;
        }
        ctx.stats.arrival(intended);
        let mut rng = StdRng::seed_from_u64(n);
        let op = mix.pick(&mut rng);
        // An overloaded run must still end: past the drain deadline, arrivals still waiting for
        // a free slot are counted as never sent (a failure, not a latency) instead of sent.
        let permit = match tokio::time::timeout_at(
            ctx.drain_deadline.into(),
            permits.clone().acquire_owned(),
        )
        .await
        {
            Ok(permit) if Instant::now() < ctx.drain_deadline => {
                permit.expect("the semaphore is never closed")
            }
            _ => {
                let id = n as usize;
                ctx.stats
                    .record(id, op.first_endpoint(), intended, Err(Failure::NotSent));
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut actor = Actor {
                id: n as usize,
                rng: &mut rng,
            };
            scenario::run(&ctx, &mut actor, op, intended).await;
            drop(permit);
        });
    }
    // Every permit back means every iteration has finished.
    let all = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

/// Prints elapsed time, requests, request rate and errors to stderr about once a second until
/// `done` turns true: in place on a terminal, one line per second in a log.
pub async fn progress(stats: Arc<Stats>, schedule: Schedule, mut done: watch::Receiver<bool>) {
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.changed() => break,
        }
        let now = Instant::now();
        let phase = if now < schedule.warm_end {
            "warm-up"
        } else if now < schedule.end {
            "measuring"
        } else {
            "draining"
        };
        let sent = stats.sent.load(Ordering::Relaxed);
        let failed = stats.failed.load(Ordering::Relaxed);
        let line = format!(
            "[{:>6.1}s {phase:<9}] requests {sent:>9}  rps {:>8}  errors {failed}",
            (now - schedule.start).as_secs_f64(),
            sent - last,
        );
        last = sent;
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
    if tty {
        eprintln!();
    }
}
