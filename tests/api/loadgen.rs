//! The load generator against the real service: `order-service serve` on a random port with a
//! fresh data directory, `loadgen` run briefly against it, and its JSON report checked for
//! sanity — counts that add up, no errors, orders that all complete, percentiles in order.
//!
//! Nothing here asserts speed: a shared CI machine makes timings noise. Speed is `bench/run`'s
//! job, recorded in BENCHMARKS.md.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use serial_test::serial;

use crate::harness::{ServerEnv, TestServer};

const LOADGEN: &str = env!("CARGO_BIN_EXE_loadgen");
/// Far above what the short runs below need (a few seconds plus set-up and drain): only there
/// so a hung generator fails the test instead of hanging it.
const LOADGEN_DEADLINE: Duration = Duration::from_secs(180);

/// The real service (`serve` on the embedded backends) for loadgen to drive.
struct Service {
    server: TestServer,
}

impl Service {
    fn start() -> Service {
        let env = ServerEnv::embedded(&[("RUST_LOG", "warn")]);
        Service {
            server: TestServer::launch(env, "serve"),
        }
    }

    /// Runs `loadgen` against this service with `args`, returning its JSON report.
    fn loadgen(&self, args: &[&str]) -> Value {
        self.start_loadgen(args).report()
    }

    /// Starts `loadgen` against this service with `args`, with `--json` and no progress line.
    fn start_loadgen(&self, args: &[&str]) -> Loadgen {
        let mut child = Command::new(LOADGEN)
            .args(["--url", &self.server.base, "--json", "--quiet"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start loadgen");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let out = thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let err = thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Loadgen {
            child,
            out,
            err,
            args: args.join(" "),
        }
    }

    fn pid(&self) -> String {
        self.server.pid().to_string()
    }
}

/// A running `loadgen`, its output collected on threads so it never blocks on a full pipe.
struct Loadgen {
    child: Child,
    out: thread::JoinHandle<String>,
    err: thread::JoinHandle<String>,
    args: String,
}

impl Loadgen {
    /// Waits for it to exit (killing it past the deadline) and parses its JSON report.
    fn report(mut self) -> Value {
        let deadline = Instant::now() + LOADGEN_DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for loadgen") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "loadgen {} still running after {LOADGEN_DEADLINE:?}",
                    self.args
                );
            }
            thread::sleep(Duration::from_millis(50));
        };
        let (out, err) = (self.out.join().unwrap(), self.err.join().unwrap());
        assert!(
            status.success(),
            "loadgen {} failed: {status}\n{err}",
            self.args
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}\n{err}"))
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Percentiles read from one histogram can only rise with the quantile.
fn assert_ordered(latency: &Value, what: &str) {
    let (p50, p90, p99, p999, max) = (
        u(&latency["p50"]),
        u(&latency["p90"]),
        u(&latency["p99"]),
        u(&latency["p999"]),
        u(&latency["max"]),
    );
    assert!(
        0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
        "{what}: percentiles out of order: {latency}"
    );
}

/// The checks every load report must pass, whatever the scenario.
fn assert_sane(report: &Value) {
    let pretty = serde_json::to_string_pretty(report).unwrap();
    assert!(u(&report["requests"]) > 0, "no requests:\n{pretty}");
    assert_eq!(
        u(&report["transportErrors"]),
        0,
        "transport errors:\n{pretty}"
    );
    assert_eq!(u(&report["serverErrors"]), 0, "5xx answers:\n{pretty}");
    assert_eq!(u(&report["errors"]), 0, "errors:\n{pretty}");
    let endpoints = report["endpoints"].as_array().expect("endpoints");
    let mut total = 0;
    for e in endpoints {
        let name = e["endpoint"].as_str().unwrap();
        assert_eq!(u(&e["requests"]), u(&e["ok"]) + u(&e["errors"]), "{name}");
        assert_eq!(u(&e["latencyUs"]["count"]), u(&e["ok"]), "{name}");
        assert_ordered(&e["latencyUs"], name);
        total += u(&e["requests"]);
    }
    assert_eq!(total, u(&report["requests"]), "endpoints add up:\n{pretty}");
}

fn endpoint<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

#[test]
#[serial(heavy)]
fn mixed_closed_model_run_completes_every_order() {
    let service = Service::start();
    // Orders followed on one stream per account (the default), by a stream per order, then by
    // polling.
    for (follow, followed_by) in [
        (None, "GET /api/orders/events"),
        (Some("sse-per-order"), "GET /api/orders/{id}/events"),
        (Some("poll"), "GET /api/orders/{id}"),
    ] {
        // Without a warm-up, so the per-account streams are opened inside the window.
        let warmup = if follow.is_none() { "0s" } else { "1s" };
        let mut args = vec![
            "--scenario",
            "mixed",
            "--users",
            "4",
            "--duration",
            "3s",
            "--warmup",
            warmup,
        ];
        args.extend(follow.map(|f| ["--follow", f]).into_iter().flatten());
        let pid = service.pid();
        args.extend(["--service-pid", pid.as_str()]);
        let report = service.loadgen(&args);
        assert_sane(&report);
        assert_eq!(report["model"], "closed");
        assert_eq!(report["follow"], follow.unwrap_or("sse"));
        for name in [
            "GET /api/products",
            "GET /api/products/{id}",
            "POST /api/orders",
            followed_by,
        ] {
            assert!(u(&endpoint(&report, name)["ok"]) > 0, "{name} ({follow:?})");
        }

        let orders = &report["orders"];
        let created = u(&orders["created"]);
        assert!(created > 0, "no orders: {orders}");
        // The generator waits for orders in flight, so every order placed is seen to its end.
        assert_eq!(u(&orders["completed"]), created, "{orders}");
        assert_eq!(u(&orders["unfinished"]), 0, "{orders}");
        assert_eq!(u(&orders["failed"]), 0, "{orders}");
        assert_eq!(
            u(&endpoint(&report, "POST /api/orders")["ok"]),
            created,
            "every 201 is a created order"
        );
        assert_ordered(&orders["lagUs"], "completion lag");
        assert_ordered(&orders["observedLagUs"], "observed completion lag");
        assert!(u(&report["service"]["rssKib"]) > 0);
        if follow.is_none() {
            // One stream per account for the whole run, never one per order.
            let streams = u(&endpoint(&report, followed_by)["requests"]);
            assert!(
                streams <= u(&report["accounts"]) && streams < created,
                "{streams} streams for {created} orders"
            );
        }
    }
}

/// The spike-then-relief mechanism, on a service whose every creation past a tiny backlog is
/// shed (API only: no worker takes the orders): the run is reported second by second, shed
/// creations are sent again after their `Retry-After`, the backlog the service saw is in the
/// timeline, and with no order completing after the drop it is not called recovered.
#[test]
#[serial(heavy)]
fn a_rate_drop_is_reported_second_by_second_and_shed_creations_are_retried() {
    let env = ServerEnv::embedded(&[("RUST_LOG", "warn"), ("MAX_QUEUE_BACKLOG", "5")]);
    let service = Service {
        server: TestServer::launch(env, "api"),
    };
    let report = service.loadgen(&[
        "--scenario",
        "order",
        "--steps",
        "20:2s,10:2s",
        "--warmup",
        "0s",
        "--follow",
        "poll",
        "--shed-retries",
        "1",
        // No drain: every creation is sent inside the window, so the timeline (which counts
        // every answer) and the window's counts are the same requests.
        "--drain",
        "0s",
    ]);
    let pretty = serde_json::to_string_pretty(&report).unwrap();
    assert_eq!(report["steps"], "20:2s,10:2s");
    let post = endpoint(&report, "POST /api/orders");
    let shed = u(&post["errorsByStatus"]["503"]);
    assert!(shed > 0, "nothing shed past the backlog bound:\n{pretty}");
    assert_eq!(u(&post["errors"]), shed, "only sheds failed:\n{pretty}");
    // 20/s for 2 s then 10/s for 2 s: 60 arrivals, give or take one at the edges; every one
    // shed early enough was sent again once.
    let arrivals = u(&report["arrivals"]);
    assert!((58..=62).contains(&arrivals), "{arrivals}");
    assert!(
        u(&post["requests"]) > arrivals,
        "no shed creation was retried:\n{pretty}"
    );

    let rows = report["timeline"].as_array().expect("a timeline");
    let sum = |k: &str| rows.iter().map(|r| u(&r[k])).sum::<u64>();
    assert_eq!(sum("created"), u(&post["ok"]), "201s add up:\n{pretty}");
    assert_eq!(sum("shed"), shed, "503s add up:\n{pretty}");
    assert_eq!(sum("other"), 0);
    let peak_queue = rows.iter().filter_map(|r| r["queueBacklog"].as_u64()).max();
    assert!(
        peak_queue.is_some_and(|q| q >= 5),
        "the backlog that shed is not in the timeline:\n{pretty}"
    );
    let recovery = &report["recovery"];
    assert_eq!(recovery["dropAtSecs"].as_f64(), Some(2.0), "{recovery}");
    assert!(
        recovery["lagNormalAfterSecs"].is_null(),
        "no order completed, yet called recovered: {recovery}"
    );
}

#[test]
#[serial(heavy)]
fn open_model_sends_one_iteration_per_arrival() {
    let service = Service::start();
    let report = service.loadgen(&[
        "--scenario",
        "health",
        "--rate",
        "50",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
    ]);
    assert_sane(&report);
    assert_eq!(report["model"], "open");
    let arrivals = u(&report["arrivals"]);
    // 50/s for 2 s: 100 intended arrivals, give or take one at each edge of the window.
    assert!((98..=102).contains(&arrivals), "{arrivals}");
    assert_eq!(u(&report["requests"]), arrivals);
}

#[test]
#[serial(heavy)]
fn login_and_cached_order_scenarios_run_clean() {
    let service = Service::start();
    for scenario in ["login", "cached-order"] {
        let report = service.loadgen(&[
            "--scenario",
            scenario,
            "--users",
            "2",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
        ]);
        assert_sane(&report);
    }
}

#[test]
#[serial(heavy)]
fn connections_and_streams_modes_hold_every_one_open() {
    let service = Service::start();
    // Idle keep-alive connections, then open status streams.
    for (scenario, streams) in [("connections", false), ("streams", true)] {
        let report = service.loadgen(&[
            "--scenario",
            scenario,
            "--users",
            "50",
            "--duration",
            "500ms",
            "--service-pid",
            &service.pid(),
        ]);
        let c = &report["connections"];
        assert_eq!(c["streams"], streams, "{c}");
        assert_eq!(u(&c["opened"]), 50, "{c}");
        assert_eq!(u(&c["aliveAfterHold"]), 50, "{c}");
        assert!(u(&c["serviceWithConnections"]["rssKib"]) > 0, "{c}");
    }
}

#[test]
#[serial(heavy)]
fn sigterm_ends_a_run_early_with_a_report() {
    let service = Service::start();
    let running = service.start_loadgen(&[
        "--scenario",
        "health",
        "--users",
        "2",
        "--duration",
        "10m",
        "--warmup",
        "0s",
    ]);
    // Long enough for some requests, far shorter than the ten minutes asked for.
    thread::sleep(Duration::from_secs(2));
    let status = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let report = running.report();
    assert_sane(&report);
    assert_eq!(report["interrupted"], true);
    assert!(report["durationSecs"].as_f64().unwrap() < 600.0);
}
