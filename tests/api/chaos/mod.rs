//! The chaos campaign (issue 14): two `api` and two `worker` processes on FerretDB,
//! redis-server and moto, each backend behind a Toxiproxy proxy, take a customers' load
//! (orders, `Idempotency-Key` retries, cancellations, reads) while a schedule drawn from a seed
//! faults the network (latency, resets, black holes, squeezed bandwidth, a proxy down) and the
//! processes (SIGKILL, SIGSTOP/SIGCONT, SIGTERM). Then everything heals and the checker judges
//! the promises on what the backends hold: see `invariants` for each.
//!
//! `CHAOS_SEED` replays a campaign (the seed is printed first and in the summary) and
//! `CHAOS_DURATION` (`75s`, `10m`, or seconds) sets how long the faults last; CI runs the
//! fixed default seed for a minute. A seed that broke an invariant joins the regression tests
//! at the bottom, each a campaign of its own with that seed.
//!
//! Parts: `schedule` (the plan, pure), `faults` (carrying it out), `fleet` (the processes),
//! `load` (the customers), `snapshot` (the backends read directly), `invariants` (the
//! verdicts), `summary` (the report).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serial_test::serial;

use crate::harness::support::toxiproxy::{self, Toxiproxy};
use crate::harness::*;

mod faults;
mod fleet;
mod invariants;
mod load;
mod schedule;
mod snapshot;
mod stale_cache;
mod summary;

/// The campaign CI runs.
const DEFAULT_SEED: u64 = 20_261_203;
/// Its faults' duration; with the set-up, the heal and the check, about two minutes.
const DEFAULT_DURATION: Duration = Duration::from_secs(60);
/// The service's `BACKEND_TIMEOUT` in the campaign, shorter than the 5 s default so that a
/// black hole costs a request less and the campaign sees more of them.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Invariant (e)'s bound on one request: a request makes a few backend calls in turn (the
/// idempotency record, the stock, the insert, the queue), each cut at `BACKEND_TIMEOUT`
/// (the first that is cut ends the request with a 503), plus slack for a busy machine.
const REQUEST_BOUND: Duration = Duration::from_secs(3 * 2 + 4);
const CUSTOMERS: usize = 6;
/// Stock of the products: two that never sell out, one that does (then 409s).
const STOCKS: [i64; 3] = [1_000_000, 1_000_000, 40];

/// CI runs it with the fixed seed (`serial(heavy)`: it owns the machine while it runs). A run
/// whose invariants hold takes about 75 s in all; one that breaks one waits out the checker's
/// `invariants::SETTLE` first. RELIABILITY.md records the runs and what each found.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[serial(heavy)]
async fn a_seeded_fault_campaign_keeps_every_promise() {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .map(|s| s.trim().parse::<u64>().expect("CHAOS_SEED: a whole number"))
        .unwrap_or(DEFAULT_SEED);
    let duration = std::env::var("CHAOS_DURATION")
        .ok()
        .map(|s| {
            let s = s.trim();
            s.parse::<u64>()
                .map(Duration::from_secs)
                .or_else(|_| humantime::parse_duration(s))
                .expect("CHAOS_DURATION: e.g. 75s, 10m, or a number of seconds")
        })
        .unwrap_or(DEFAULT_DURATION);
    campaign(seed, duration).await;
}

/// One campaign: set-up, faults under load, heal, check; panics naming every broken invariant.
async fn campaign(seed: u64, duration: Duration) {
    eprintln!("chaos: seed {seed} (set CHAOS_SEED={seed} to replay), faults for {duration:?}");
    let Some(real) = blocking(RealBackends::start_if_installed).await else {
        return;
    };
    let Some(toxiproxy) = blocking(move || toxiproxy::start(seed)).await else {
        return;
    };
    let toxiproxy = Arc::new(toxiproxy);
    let env = service_env(&real, &toxiproxy).await;

    // The first process seeds the empty database; it sets up the shop and leaves.
    let mut setup = TestServer::start(env.clone(), "api").await;
    let shop = Arc::new(open_shop(&setup).await);
    setup.kill();

    let logs = support::temp_dir("chaos-logs");
    eprintln!("chaos: process logs in {}", logs.display());
    let fleet = Arc::new(fleet::Fleet::start(env.clone(), logs.clone()).await);
    let load = load::Load::new(fleet.clone(), shop.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let customers = {
        let (load, stop) = (load.clone(), stop.clone());
        tokio::spawn(async move { load.run(seed, stop).await })
    };

    let plan = schedule::plan(seed, duration);
    let applied = faults::run(&plan, Instant::now(), toxiproxy.clone(), fleet.clone()).await;
    // Healing: every fault is undone already; this makes sure of it.
    toxiproxy.reset().await;
    fleet.heal().await;
    stop.store(true, Ordering::SeqCst);
    customers.await.expect("the load panicked");

    let ledger = std::mem::take(&mut *load.ledger.lock().unwrap());
    let direct = mongodb::Client::with_uri_str(real.ferretdb.uri(&real.database))
        .await
        .expect("connect to FerretDB directly");
    let checker = invariants::Checker {
        shop: &shop,
        ledger: &ledger,
        faults: &applied,
        fleet: &fleet,
        db: &direct.database(&real.database),
        moto: &real.moto,
        request_bound: REQUEST_BOUND,
    };
    let verdicts = checker.verdicts().await;
    summary::print(seed, duration, &applied, &ledger, &verdicts);
    let broken: Vec<&str> = verdicts
        .iter()
        .filter(|v| !v.held)
        .map(|v| v.name)
        .collect();
    assert!(
        broken.is_empty(),
        "seed {seed} broke {broken:?} (see the summary above; process logs in {})",
        logs.display()
    );
    drop(fleet);
    let _ = std::fs::remove_dir_all(&logs);
    let _ = std::fs::remove_dir_all(&env.data_dir);
}

/// The service's environment: every backend through its proxy, and bounds short enough that
/// what a fault strands is recovered within the checker's wait (`invariants::SETTLE`).
async fn service_env(real: &RealBackends, toxiproxy: &Toxiproxy) -> ServerEnv {
    let database = toxiproxy.create_proxy("ferretdb", real.ferretdb.port).await;
    let cache = toxiproxy.create_proxy("redis", real.redis.port).await;
    let aws = toxiproxy.create_proxy("moto", real.moto.port).await;
    let timeout = format!("{}s", BACKEND_TIMEOUT.as_secs());
    let mut env = ServerEnv::embedded(&[
        ("BACKEND_TIMEOUT", timeout.as_str()),
        ("QUEUE_VISIBILITY_TIMEOUT", "5s"),
        ("QUEUE_WAIT_TIME", "5s"),
        ("SHUTDOWN_TIMEOUT", "5s"),
        // The sweepers of stranded orders and of emails claimed but never marked sent: their
        // production defaults (10 min, 5 min) are past the checker's wait.
        ("ORDER_STUCK_AFTER", "10s"),
        // The email lease: longer than the store stays out of reach in this schedule (a fault
        // of up to 6 s plus the FerretDB write lock's recovery: about 15 s seen), so a sender
        // re-marking its sends wins against the sweeper (at 15 s it lost by 0.2 s), and still
        // short enough for an unsent email to go out within the checker's wait.
        ("EMAIL_RESEND_AFTER", "30s"),
        // The hold sweeper's bound (2 min by default): past the longest fault (6 s) and pause
        // (4 s) plus `BACKEND_TIMEOUT`, so no order insert is still in flight under a hold it
        // gives back, and well within the checker's wait.
        ("STOCK_HOLD_EXPIRY", "15s"),
    ]);
    let proxied = |port: u16| format!("127.0.0.1:{port}");
    for (k, v) in real.env() {
        let v = match k.as_str() {
            "MONGODB_URI" => format!(
                "mongodb://{}/{}",
                proxied(database.listen_port),
                real.database
            ),
            "REDIS_PORT" => cache.listen_port.to_string(),
            "AWS_ENDPOINT_URL" => format!("http://{}", proxied(aws.listen_port)),
            _ => v,
        };
        env.extra.push((k, v));
    }
    env
}

async fn open_shop(api: &TestServer) -> load::Shop {
    let admin = api.login_admin().await;
    let mut products = Vec::new();
    for (i, stock) in STOCKS.iter().enumerate() {
        let p = api
            .create_product(
                &admin,
                &unique(&format!("Chaos{i}")),
                100 + i as i64,
                *stock,
            )
            .await;
        products.push(load::Product {
            id: str_of(&p["id"]),
            initial: *stock,
        });
    }
    let mut customers = Vec::new();
    for _ in 0..CUSTOMERS {
        customers.push(api.new_user().await);
    }
    load::Shop {
        products,
        customers,
    }
}
