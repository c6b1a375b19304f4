//! `loadgen`: drives the order service over HTTP and reports throughput, latency percentiles
//! (HDR histograms, microsecond precision), errors and order completion lag.
//!
//! It is a black-box client: it speaks only the public API, only to `--url`, and every run is
//! bounded by `--warmup + --duration` plus a drain deadline for orders still in flight.
//! `bench/run` builds on it; `BENCHMARKS.md` explains the method and the numbers.

mod client;
mod connections;
mod follower;
mod procfs;
mod report;
mod runner;
mod scenario;
mod setup;
mod stats;
mod timeline;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use order_service::duration::parse_duration;
use tokio::sync::watch;

use crate::client::Api;
use crate::follower::Followers;
use crate::report::{Report, RunInfo};
use crate::runner::{Model, Schedule, Steps};
use crate::scenario::{Ctx, Follow, Mix, Op, BROWSE_LIMIT};
use crate::stats::Stats;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// `GET /health`: the HTTP framework's floor.
    Health,
    /// A random page of products, then one product by id.
    Browse,
    /// Place an order (1-3 products), follow it until completed (`--follow`).
    Order,
    /// A weighted mix (`--mix`) of the other iteration kinds.
    Mixed,
    /// Log in with a correct password (saturates password hashing: the "login storm").
    Login,
    /// Read one completed, cached order again and again.
    CachedOrder,
    /// Open `--users` idle keep-alive connections and hold them for `--duration`.
    Connections,
    /// Open `--users` status streams (`GET /api/orders/events`, as the admin) and hold them
    /// for `--duration`: what open streams cost the service.
    Streams,
}

/// Load generator for the order service.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Cli {
    /// Base URL of the service; the only address this ever sends to.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    url: String,
    #[arg(long, value_enum, default_value_t = Scenario::Mixed)]
    scenario: Scenario,
    /// Weights for `--scenario mixed`, from health, browse, order, login, cached-order.
    #[arg(long, default_value = "browse=70,order=30")]
    mix: String,
    /// Closed model: virtual users, each looping one iteration after another. With `--rate`,
    /// it only sizes the account pool; with `connections`, it is the number of connections.
    #[arg(long, default_value_t = 10)]
    users: usize,
    /// Open model: iterations started per second at fixed intervals, each timed from its
    /// intended start (corrects coordinated omission).
    #[arg(long)]
    rate: Option<f64>,
    /// Open model with the rate changing: `RATE:DURATION,…` held one after the other (e.g.
    /// `2800:30s,1260:60s`, a spike then relief); replaces `--rate` and `--duration`, and
    /// turns `--timeline` on, with the recovery after the last change.
    #[arg(long, conflicts_with = "rate")]
    steps: Option<String>,
    /// Report the run second by second: creations' answers, POST p99, completion lag, and the
    /// service's backlog read off its `/metrics`.
    #[arg(long)]
    timeline: bool,
    /// Also write the timeline, as a text table, to this file.
    #[arg(long)]
    timeline_out: Option<PathBuf>,
    /// A creation shed with 503 is sent again at most this many times, each after the
    /// answer's `Retry-After` (0: never).
    #[arg(long, default_value_t = 3)]
    shed_retries: u32,
    /// Measured time (e.g. 30s, 500ms, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Load before measuring, not recorded.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    warmup: Duration,
    /// Print the report as one JSON document on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the headline numbers as `name=value` lines to this file, for scripts.
    #[arg(long)]
    env_out: Option<PathBuf>,
    /// Accounts to register before the run and share among users (default: one per user in
    /// the closed model, 64 in the open model).
    #[arg(long)]
    password_users: Option<usize>,
    /// How an order is followed to its end: one stream of all its account's orders (`sse`,
    /// `GET /api/orders/events` opened once per account), a stream per order
    /// (`sse-per-order`), or polling `GET /api/orders/{id}` (`poll`, with `--poll-interval` and
    /// `--poll-max`, honouring a pending order's `Retry-After`).
    #[arg(long, value_enum, default_value_t = Follow::Sse)]
    follow: Follow,
    /// First wait before polling a new order for completion; later waits grow 1.5x per poll.
    #[arg(long, default_value = "15ms", value_parser = parse_duration)]
    poll_interval: Duration,
    /// Longest wait between two polls of the same order.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    poll_max: Duration,
    /// How long after the end orders still in flight are polled before they count unfinished.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    drain: Duration,
    /// Per-request timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Open model: iterations in flight at most; arrivals beyond it wait, and the wait counts.
    #[arg(long, default_value_t = 4096)]
    max_in_flight: usize,
    /// Products created (as admin, with huge stock) for the order scenario.
    #[arg(long, default_value_t = 10)]
    products: usize,
    /// The service's process id on this machine: its memory (from /proc) goes in the report.
    #[arg(long)]
    service_pid: Option<u32>,
    #[arg(long, default_value = "admin@example.com")]
    admin_email: String,
    #[arg(long, default_value = "admin123")]
    admin_password: String,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: could not start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(report) => {
            if cli.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.table());
            }
            if let (Some(path), Some(rows)) = (&cli.timeline_out, &report.timeline) {
                let mut text = report::timeline_table(rows);
                if let Some(line) = report.recovery_line() {
                    text.push_str(&line);
                }
                if let Err(e) = std::fs::write(path, text) {
                    eprintln!("loadgen: could not write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            if let Some(path) = &cli.env_out {
                if let Err(e) = std::fs::write(path, report.env()) {
                    eprintln!("loadgen: could not write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn say(cli: &Cli, msg: &str) {
    if !cli.quiet {
        eprintln!("loadgen: {msg}");
    }
}

async fn run(cli: &Cli) -> anyhow::Result<Report> {
    let mut stop = StopSignals::register();
    if cli.users == 0 {
        bail!("--users must be at least 1");
    }
    if let Some(rate) = cli.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number");
        }
    }
    let steps = match (&cli.steps, cli.rate) {
        (Some(spec), _) => Some(Steps::parse(spec)?),
        (None, Some(rate)) => Some(Steps(vec![(rate, cli.duration)])),
        (None, None) => None,
    };
    let duration = steps.as_ref().map_or(cli.duration, Steps::total);
    let rate = steps.as_ref().map(|s| s.0[0].0);
    let run_info = |model: &'static str, accounts: usize| RunInfo {
        url: cli.url.clone(),
        scenario: cli
            .scenario
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default(),
        mix: (cli.scenario == Scenario::Mixed).then(|| cli.mix.clone()),
        follow: cli
            .follow
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default(),
        model,
        users: rate.is_none().then_some(cli.users),
        rate,
        steps: cli.steps.clone(),
        accounts,
        warmup_secs: cli.warmup.as_secs_f64(),
        duration_secs: duration.as_secs_f64(),
        interrupted: false,
    };

    if matches!(cli.scenario, Scenario::Connections | Scenario::Streams) {
        let token = if cli.scenario == Scenario::Streams {
            let api = Api::new(&cli.url, 1, cli.timeout)?;
            let tokens = api
                .login(&cli.admin_email, &cli.admin_password)
                .await
                .map_err(|f| anyhow::anyhow!("admin login for the streams: {f}"))?;
            Some(tokens.access_token)
        } else {
            None
        };
        say(
            cli,
            &format!(
                "opening {} {}",
                cli.users,
                if token.is_some() {
                    "status streams"
                } else {
                    "keep-alive connections"
                }
            ),
        );
        let held =
            connections::hold(&cli.url, cli.users, cli.duration, cli.service_pid, token).await?;
        let totals = Stats::new(Instant::now(), Instant::now()).totals();
        let mut report = Report::build(run_info("connections", 0), &totals, None, false);
        report.run.users = Some(cli.users);
        report.service = cli.service_pid.and_then(procfs::memory_of);
        report.connections = Some(held);
        return Ok(report);
    }

    let mix = match cli.scenario {
        Scenario::Mixed => Mix::parse(&cli.mix)?,
        Scenario::Health => Mix::only(Op::Health),
        Scenario::Browse => Mix::only(Op::Browse),
        Scenario::Order => Mix::only(Op::Order),
        Scenario::Login => Mix::only(Op::Login),
        Scenario::CachedOrder => Mix::only(Op::CachedOrder),
        Scenario::Connections | Scenario::Streams => unreachable!("handled above"),
    };
    let (model, pool) = match steps.clone() {
        Some(steps) => (
            Model::Open {
                steps,
                max_in_flight: cli.max_in_flight.max(1),
            },
            cli.max_in_flight.clamp(1, 1024),
        ),
        None => (Model::Closed { users: cli.users }, cli.users),
    };
    let accounts = cli
        .password_users
        .unwrap_or(if rate.is_some() { 64 } else { cli.users });
    let needs = mix.needs(accounts, cli.products);
    let api = Api::new(&cli.url, pool, cli.timeout)?;

    say(
        cli,
        &format!(
            "preparing: {} accounts, {} products",
            needs.accounts, needs.order_products
        ),
    );
    let fixtures = setup::prepare(
        &api,
        needs,
        setup::Admin {
            email: &cli.admin_email,
            password: &cli.admin_password,
        },
        BROWSE_LIMIT,
    )
    .await
    .context("preparing the run")?;

    let start = Instant::now();
    let schedule = Schedule {
        start,
        warm_end: start + cli.warmup,
        end: start + cli.warmup + duration,
    };
    let timeline = cli.timeline || cli.timeline_out.is_some() || cli.steps.is_some();
    let mut stats = Stats::new(schedule.warm_end, schedule.end);
    if timeline {
        stats = stats.with_timeline(timeline::Timeline::new(
            start,
            cli.warmup + duration + cli.drain,
        ));
    }
    let stats = Arc::new(stats);
    if timeline {
        tokio::spawn(timeline::sample_backlog(
            api.clone(),
            stats.clone(),
            schedule.end + cli.drain,
        ));
    }
    let ctx = Arc::new(Ctx {
        follow: cli.follow,
        followers: Followers::new(fixtures.accounts.len().max(1)),
        shed_retries: cli.shed_retries,
        api,
        stats: stats.clone(),
        fixtures,
        poll_interval: cli.poll_interval,
        poll_max: cli.poll_max,
        drain_deadline: schedule.end + cli.drain,
    });

    let (done_tx, done_rx) = watch::channel(false);
    let progress =
        (!cli.quiet).then(|| tokio::spawn(runner::progress(stats.clone(), schedule, done_rx)));
    let cpu = tokio::spawn(cpu_over_window(cli.service_pid, schedule));
    let interrupted = tokio::select! {
        () = runner::drive(ctx, mix.clone(), model, schedule) => false,
        () = stop.recv() => true,
    };
    let _ = done_tx.send(true);
    if let Some(p) = progress {
        let _ = p.await;
    }

    let model_name = if rate.is_some() { "open" } else { "closed" };
    let mut info = run_info(model_name, needs.accounts);
    if interrupted {
        // Rates are per second of what was actually measured.
        let measured_until = Instant::now().min(schedule.end);
        info.duration_secs = measured_until
            .saturating_duration_since(schedule.warm_end)
            .as_secs_f64();
        info.interrupted = true;
        say(cli, "interrupted: reporting what was measured so far");
    }
    let mut report = Report::build(
        info,
        &stats.totals(),
        rate.is_some()
            .then(|| stats.arrivals.load(Ordering::Relaxed)),
        mix.contains(Op::Order),
    );
    if let Some(t) = &stats.timeline {
        let rows = t.rows();
        if let Some(steps) = steps.as_ref().filter(|s| s.0.len() > 1) {
            let drop_at = (cli.warmup + steps.last_change()).as_secs_f64();
            report.recovery = Some(report::Recovery {
                drop_at_secs: drop_at,
                lag_normal_after_secs: timeline::recovery(&rows, drop_at),
            });
        }
        report.timeline = Some(rows);
    }
    report.service = cli.service_pid.and_then(procfs::memory_of);
    if interrupted {
        // The window never closed: no CPU figures rather than wrong ones.
        cpu.abort();
    } else if let Ok((service, loadgen)) = cpu.await {
        (report.service_cpu, report.loadgen_cpu) = (service, loadgen);
    }
    Ok(report)
}

/// CPU used by the service and by this generator between the start and the end of the
/// measured window (warm-up and drain excluded).
async fn cpu_over_window(
    service_pid: Option<u32>,
    schedule: Schedule,
) -> (Option<procfs::CpuUse>, Option<procfs::CpuUse>) {
    tokio::time::sleep_until(schedule.warm_end.into()).await;
    let at_start = (
        service_pid.and_then(|pid| procfs::cpu_seconds(Some(pid))),
        procfs::cpu_seconds(None),
    );
    tokio::time::sleep_until(schedule.end.into()).await;
    let wall = (schedule.end - schedule.warm_end).as_secs_f64();
    let service = service_pid
        .and_then(|pid| procfs::CpuUse::between(at_start.0, procfs::cpu_seconds(Some(pid)), wall));
    let loadgen = procfs::CpuUse::between(at_start.1, procfs::cpu_seconds(None), wall);
    (service, loadgen)
}

/// SIGINT or SIGTERM: ends the run early but still reports, so a script can run a background
/// load (the login storm) for exactly as long as it needs and then stop it by its pid.
/// Registered before anything else, so a signal sent during set-up is not fatal either.
struct StopSignals {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    fn register() -> StopSignals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            StopSignals {
                signals: signal(SignalKind::interrupt())
                    .and_then(|int| Ok((int, signal(SignalKind::terminate())?)))
                    .ok(),
            }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some((int, term)) = &mut self.signals {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
