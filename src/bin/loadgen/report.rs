//! The final report, built once from the merged stats, in three renderings: a table for people,
//! one JSON document (`--json`) for tools and tests, and shell assignments (`--env-out`) so
//! `bench/run` can read numbers without a JSON parser.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::connections::ConnectionsReport;
use crate::procfs::{CpuUse, Memory};
use crate::stats::{Endpoint, Failure, Totals};
use crate::timeline::SecondRow;

/// Latency percentiles in microseconds, read from an HDR histogram.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    pub count: u64,
    pub mean: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Option<Latency> {
        (!h.is_empty()).then(|| Latency {
            count: h.len(),
            mean: h.mean().round() as u64,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            // `max` is the highest value equivalent to the largest sample, so it is never below
            // the percentiles read the same way.
            max: h.max(),
        })
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointReport {
    pub endpoint: &'static str,
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    pub rps: f64,
    pub errors_by_status: BTreeMap<String, u64>,
    /// Successful requests only: an error answered in microseconds would flatter the numbers.
    pub latency_us: Option<Latency>,
    #[serde(skip)]
    slug: &'static str,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrdersReport {
    pub created: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// Not seen to an end: still pending or processing when the drain deadline passed, or the
    /// run was interrupted.
    pub unfinished: u64,
    /// Completion lag by the order's own clock: `updatedAt - createdAt` of the completed order.
    pub lag_us: Option<Latency>,
    /// Completion lag as a client saw it: from the 201 to the status event saying `completed`
    /// (`--follow sse`) or the first poll answering it (`--follow poll`, so it is coarser than
    /// the poll interval).
    pub observed_lag_us: Option<Latency>,
}

/// How the run was set up, echoed in the report so a result file explains itself.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunInfo {
    pub url: String,
    pub scenario: String,
    pub mix: Option<String>,
    /// How orders were followed to their end: `sse` or `poll`.
    pub follow: String,
    /// `closed` (virtual users) or `open` (fixed arrival rate).
    pub model: &'static str,
    pub users: Option<usize>,
    /// Open model: the (first) arrival rate.
    pub rate: Option<f64>,
    /// `--steps`, when the rate changed during the run.
    pub steps: Option<String>,
    pub accounts: usize,
    pub warmup_secs: f64,
    /// The measured time: `--duration`, or less if the run was interrupted.
    pub duration_secs: f64,
    /// Ended early by SIGINT or SIGTERM; the numbers cover the time measured until then.
    pub interrupted: bool,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    #[serde(flatten)]
    pub run: RunInfo,
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    pub rps: f64,
    pub transport_errors: u64,
    pub server_errors: u64,
    pub errors_by_status: BTreeMap<String, u64>,
    /// Open model: arrivals intended in the measured window (each an iteration).
    pub arrivals: Option<u64>,
    pub endpoints: Vec<EndpointReport>,
    pub orders: Option<OrdersReport>,
    /// The service's memory at the end (`--service-pid`).
    pub service: Option<Memory>,
    /// CPU the service used during the measured window (`--service-pid`).
    pub service_cpu: Option<CpuUse>,
    /// CPU this generator used during the measured window: on a shared machine, what it took
    /// from the service.
    pub loadgen_cpu: Option<CpuUse>,
    pub connections: Option<ConnectionsReport>,
    /// `--timeline`: the run second by second.
    pub timeline: Option<Vec<SecondRow>>,
    /// `--steps`: how the service came back after the last change of rate.
    pub recovery: Option<Recovery>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recovery {
    /// When the rate changed for the last time, in seconds since the run's start.
    pub drop_at_secs: f64,
    /// Seconds after the drop until the completion lag p99 of every later second was under
    /// 1 s; `None`: still over it in the last second with orders.
    pub lag_normal_after_secs: Option<f64>,
}

fn failures_by_status(failures: &BTreeMap<Failure, u64>) -> BTreeMap<String, u64> {
    failures.iter().map(|(f, n)| (f.to_string(), *n)).collect()
}

impl Report {
    pub fn build(
        run: RunInfo,
        totals: &Totals,
        arrivals: Option<u64>,
        with_orders: bool,
    ) -> Report {
        let secs = run.duration_secs.max(f64::EPSILON);
        let endpoints: Vec<EndpointReport> = totals
            .endpoints
            .iter()
            .map(|(ep, s)| {
                let requests = s.ok() + s.errors();
                EndpointReport {
                    endpoint: ep.label(),
                    slug: Endpoint::slug(*ep),
                    requests,
                    ok: s.ok(),
                    errors: s.errors(),
                    rps: requests as f64 / secs,
                    errors_by_status: failures_by_status(&s.failures),
                    latency_us: Latency::of(&s.latency),
                }
            })
            .collect();
        let mut errors_by_status = BTreeMap::new();
        let (mut transport_errors, mut server_errors) = (0, 0);
        for s in totals.endpoints.values() {
            for (f, n) in &s.failures {
                *errors_by_status.entry(f.to_string()).or_default() += n;
                match f {
                    Failure::Transport(_) => transport_errors += n,
                    Failure::Status(code) if *code >= 500 => server_errors += n,
                    Failure::Status(_) | Failure::NotSent => {}
                }
            }
        }
        let requests = endpoints.iter().map(|e| e.requests).sum();
        let errors = endpoints.iter().map(|e| e.errors).sum();
        let o = &totals.orders;
        Report {
            requests,
            ok: requests - errors,
            errors,
            rps: requests as f64 / secs,
            transport_errors,
            server_errors,
            errors_by_status,
            arrivals,
            endpoints,
            orders: with_orders.then(|| OrdersReport {
                created: o.created,
                completed: o.completed,
                failed: o.failed,
                cancelled: o.cancelled,
                unfinished: o
                    .created
                    .saturating_sub(o.completed + o.failed + o.cancelled),
                lag_us: Latency::of(&o.server_lag),
                observed_lag_us: Latency::of(&o.client_lag),
            }),
            service: None,
            service_cpu: None,
            loadgen_cpu: None,
            connections: None,
            timeline: None,
            recovery: None,
            run,
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes")
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let r = &self.run;
        let model = match (r.model, r.users, r.rate) {
            ("open", _, Some(rate)) => format!("open model, {rate} iterations/s"),
            (_, Some(users), _) => format!("closed model, {users} users"),
            _ => r.model.to_string(),
        };
        if self.connections.is_some() {
            let _ = writeln!(out, "loadgen connections against {}", r.url);
        } else {
            let _ = writeln!(
                out,
                "loadgen {} ({model}) against {}: {:.1} s measured after {:.1} s warm-up",
                r.mix.as_deref().unwrap_or(&r.scenario),
                r.url,
                r.duration_secs,
                r.warmup_secs,
            );
        }
        if !self.endpoints.is_empty() {
            let _ = writeln!(
                out,
                "\n{:<24} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "endpoint",
                "requests",
                "req/s",
                "errors",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "p99.9 ms",
                "max ms"
            );
            for e in &self.endpoints {
                let _ = writeln!(
                    out,
                    "{:<24} {:>9} {:>9.1} {:>7} {}",
                    e.endpoint,
                    e.requests,
                    e.rps,
                    e.errors,
                    latency_cells(e.latency_us.as_ref())
                );
            }
            let _ = writeln!(
                out,
                "{:<24} {:>9} {:>9.1} {:>7}",
                "all", self.requests, self.rps, self.errors
            );
            let errors = if self.errors_by_status.is_empty() {
                "none".to_string()
            } else {
                self.errors_by_status
                    .iter()
                    .map(|(k, v)| format!("{k} x{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(out, "\nerrors: {errors}");
        }
        if let Some(arrivals) = self.arrivals {
            let _ = writeln!(out, "arrivals in the window: {arrivals}");
        }
        if let Some(o) = &self.orders {
            let _ = writeln!(
                out,
                "orders: created {}, completed {}, failed {}, cancelled {}, unfinished {}",
                o.created, o.completed, o.failed, o.cancelled, o.unfinished
            );
            for (name, lag) in [
                ("completion lag (updatedAt - createdAt)", &o.lag_us),
                (
                    "completion lag (201 to client seeing it)",
                    &o.observed_lag_us,
                ),
            ] {
                let _ = writeln!(out, "{name:<40}            {}", latency_cells(lag.as_ref()));
            }
        }
        if let Some(m) = &self.service {
            let _ = writeln!(
                out,
                "service memory: RSS {:.1} MiB, peak RSS {:.1} MiB",
                m.rss_kib as f64 / 1024.0,
                m.peak_rss_kib as f64 / 1024.0
            );
        }
        for (who, cpu) in [
            ("service", &self.service_cpu),
            ("loadgen", &self.loadgen_cpu),
        ] {
            if let Some(c) = cpu {
                let _ = writeln!(
                    out,
                    "{who} CPU while measuring: {:.0} % of one core",
                    c.percent_of_one_core
                );
            }
        }
        if let Some(rows) = &self.timeline {
            out.push_str(&timeline_table(rows));
        }
        if let Some(line) = self.recovery_line() {
            out.push_str(&line);
        }
        if let Some(c) = &self.connections {
            let (what, alive) = if c.streams {
                ("status streams", "still open")
            } else {
                ("connections", "still served")
            };
            let _ = writeln!(
                out,
                "{what}: {} requested, {} opened, {} {alive} after {:.1} s idle",
                c.requested, c.opened, c.alive_after_hold, c.hold_secs
            );
            let mib = |m: &Option<Memory>| {
                m.map(|m| format!("{:.1} MiB", m.rss_kib as f64 / 1024.0))
                    .unwrap_or_else(|| "unknown (no --service-pid)".into())
            };
            let _ = writeln!(
                out,
                "service RSS: {} before, {} with the connections open",
                mib(&c.service_before),
                mib(&c.service_with_connections)
            );
        }
        out
    }

    /// When the rate dropped and when the lag was normal again, as one line of text.
    pub fn recovery_line(&self) -> Option<String> {
        let r = self.recovery.as_ref()?;
        Some(format!(
            "rate dropped at {:.0} s; completion lag p99 under 1 s for good {}\n",
            r.drop_at_secs,
            r.lag_normal_after_secs
                .map(|s| format!("{s:.0} s after"))
                .unwrap_or_else(|| "never (still over at the end)".into())
        ))
    }

    /// `name=value` lines a shell can `source`; numbers only, so nothing needs quoting.
    pub fn env(&self) -> String {
        let mut out = String::new();
        let mut put = |k: &str, v: String| {
            let _ = writeln!(out, "{k}={v}");
        };
        put("requests", self.requests.to_string());
        put("errors", self.errors.to_string());
        put("rps", format!("{:.1}", self.rps));
        put("transport_errors", self.transport_errors.to_string());
        put("server_errors", self.server_errors.to_string());
        if let Some(a) = self.arrivals {
            put("arrivals", a.to_string());
        }
        for e in &self.endpoints {
            let s = e.slug;
            put(&format!("{s}_requests"), e.requests.to_string());
            put(&format!("{s}_errors"), e.errors.to_string());
            put(&format!("{s}_rps"), format!("{:.1}", e.rps));
            if let Some(l) = &e.latency_us {
                put_latency(&mut put, s, l);
            }
        }
        if let Some(o) = &self.orders {
            put("orders_created", o.created.to_string());
            put("orders_completed", o.completed.to_string());
            put("orders_failed", o.failed.to_string());
            put("orders_unfinished", o.unfinished.to_string());
            if let Some(l) = &o.lag_us {
                put_latency(&mut put, "lag", l);
            }
            if let Some(l) = &o.observed_lag_us {
                put_latency(&mut put, "observed_lag", l);
            }
        }
        if let Some(rows) = &self.timeline {
            let peak = |f: fn(&SecondRow) -> Option<u64>| {
                rows.iter()
                    .filter_map(f)
                    .max()
                    .map_or("-".into(), |v| v.to_string())
            };
            put("timeline_peak_queue", peak(|r| r.queue_backlog));
            put("timeline_peak_unfinished", peak(|r| r.unfinished));
        }
        if let (Some(r), Some(rows)) = (&self.recovery, &self.timeline) {
            // The answers before the drop (spike) and after it (relief, drain included).
            for (name, before) in [("spike", true), ("relief", false)] {
                let part = rows
                    .iter()
                    .filter(|s| ((s.t as f64) < r.drop_at_secs) == before);
                let (c, s, o) = part.fold((0, 0, 0), |(c, s, o), r| {
                    (c + r.created, s + r.shed, o + r.other)
                });
                put(&format!("{name}_created"), c.to_string());
                put(&format!("{name}_shed"), s.to_string());
                put(&format!("{name}_other"), o.to_string());
            }
        }
        if let Some(r) = &self.recovery {
            put(
                "recovery_s",
                r.lag_normal_after_secs
                    .map(|s| format!("{s:.0}"))
                    .unwrap_or_else(|| "never".into()),
            );
        }
        if let Some(m) = &self.service {
            put("service_rss_kib", m.rss_kib.to_string());
            put("service_peak_rss_kib", m.peak_rss_kib.to_string());
        }
        if let Some(c) = &self.service_cpu {
            put("service_cpu_pct", format!("{:.0}", c.percent_of_one_core));
        }
        if let Some(c) = &self.loadgen_cpu {
            put("loadgen_cpu_pct", format!("{:.0}", c.percent_of_one_core));
        }
        if let Some(c) = &self.connections {
            put("conn_requested", c.requested.to_string());
            put("conn_opened", c.opened.to_string());
            put("conn_alive", c.alive_after_hold.to_string());
            if let Some(m) = c.service_before {
                put("conn_rss_before_kib", m.rss_kib.to_string());
            }
            if let Some(m) = c.service_with_connections {
                put("conn_rss_with_kib", m.rss_kib.to_string());
                put("conn_peak_rss_kib", m.peak_rss_kib.to_string());
            }
        }
        out
    }
}

/// The timeline as rows of text, one a second.
pub fn timeline_table(rows: &[SecondRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:>4} {:>6} {:>6} {:>6} {:>10} {:>10} {:>10} {:>8} {:>10}",
        "s", "201", "503", "other", "POST p99", "lag p50", "lag p99", "queue", "unfinished"
    );
    let cell = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
    let count = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
    for r in rows {
        let _ = writeln!(
            out,
            "{:>4} {:>6} {:>6} {:>6} {:>10} {:>10} {:>10} {:>8} {:>10}",
            r.t,
            r.created,
            r.shed,
            r.other,
            cell(r.post_p99_ms),
            cell(r.lag_p50_ms),
            cell(r.lag_p99_ms),
            count(r.queue_backlog),
            count(r.unfinished)
        );
    }
    let _ = writeln!(out, "(ms; lag of the orders placed in that second)");
    out
}

fn put_latency(put: &mut impl FnMut(&str, String), prefix: &str, l: &Latency) {
    for (name, v) in [
        ("p50", l.p50),
        ("p90", l.p90),
        ("p99", l.p99),
        ("p999", l.p999),
        ("max", l.max),
    ] {
        put(&format!("{prefix}_{name}_us"), v.to_string());
    }
}

fn latency_cells(l: Option<&Latency>) -> String {
    match l {
        None => format!("{:>9} {:>9} {:>9} {:>9} {:>9}", "-", "-", "-", "-", "-"),
        Some(l) => {
            let ms = |us: u64| us as f64 / 1000.0;
            format!(
                "{:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                ms(l.p50),
                ms(l.p90),
                ms(l.p99),
                ms(l.p999),
                ms(l.max)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;
    use std::time::{Duration, Instant};

    #[test]
    fn report_adds_up_and_renders() {
        let now = Instant::now();
        let stats = Stats::new(now - Duration::from_secs(1), now + Duration::from_secs(60));
        for _ in 0..99 {
            stats.record(0, Endpoint::Health, now, Ok(()));
        }
        stats.record(1, Endpoint::Health, now, Err(Failure::Status(503)));
        stats.record(1, Endpoint::Login, now, Err(Failure::Transport("timeout")));
        let run = RunInfo {
            url: "http://127.0.0.1:1".into(),
            scenario: "health".into(),
            mix: None,
            follow: "sse".into(),
            model: "closed",
            users: Some(1),
            rate: None,
            steps: None,
            accounts: 0,
            warmup_secs: 0.0,
            duration_secs: 10.0,
            interrupted: false,
        };
        let r = Report::build(run, &stats.totals(), None, false);
        assert_eq!((r.requests, r.errors, r.ok), (101, 2, 99));
        assert_eq!((r.server_errors, r.transport_errors), (1, 1));
        assert!((r.rps - 10.1).abs() < 1e-9);
        let l = r.endpoints[0].latency_us.as_ref().unwrap();
        assert!(l.p50 <= l.p99 && l.p99 <= l.max);
        assert!(r.table().contains("GET /health"));
        assert!(r.env().contains("health_requests=100\n"));
        let json: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(json["errorsByStatus"]["transport:timeout"], 1);
    }
}
