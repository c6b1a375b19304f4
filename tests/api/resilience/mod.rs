//! Fault and concurrency tests: nothing accepted is lost, nothing is oversold, nothing is done
//! twice. Each test drives the real binary over HTTP (and, for the embedded queue, writes into
//! the same SQLite file the service uses, as a second producer would), breaks something on
//! purpose — a worker killed mid-order, a queue that is down, a duplicate or poison message, a
//! SIGTERM mid-request, a backend outage — and checks the end state: statuses, stock, emails.
//!
//! The embedded-backend tests build their environment explicitly (never `ServerEnv::fresh`), so
//! they test the embedded set even under `TEST_BACKENDS=real`; the real-backend tests start their
//! own FerretDB, redis-server and moto, which they kill and restart, and skip (or fail under
//! `REQUIRE_BACKENDS=1`) when those are not installed.

use std::time::Duration;

use crate::harness::*;
use order_service::queue::sqlite::SqliteQueue;
use order_service::queue::Queue;
use order_service::store::sqlite::SqliteDb;
use reqwest::Method;
use serde_json::{json, Value};

/// Long enough for a redelivery after a visibility timeout plus a slow start on a busy machine.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(40);

mod backlog;
mod black_holes;
mod contention;
mod crashes;
mod email_marks;
mod emails;
mod holds;
mod idempotency;
mod lock_wakeups;
mod outages;
mod readiness;
mod redelivery;
mod retention;
mod stranded;

/// The embedded queue of `env`, opened from the test process as another producer would.
fn open_queue(env: &ServerEnv, max_receives: u32) -> SqliteQueue {
    let db = SqliteDb::open(&env.data_dir.join("order-service.sqlite3"))
        .expect("open the service's SQLite file");
    SqliteQueue::new(db, max_receives)
}

/// Waits for a message on the embedded queue and takes it away (with any beside it), as a lost
/// message would be: what strands an order whose outbox says it was sent.
async fn take_the_queued_messages(env: &ServerEnv) {
    let queue = open_queue(env, 5);
    poll_until(
        ORDER_DEADLINE,
        "the order's message, taken away",
        || async {
            let got = queue
                .receive(10, Duration::ZERO, Duration::from_secs(600))
                .await
                .map_err(|e| e.to_string())?;
            if got.is_empty() {
                return Err("no message yet".into());
            }
            let receipts: Vec<String> = got.iter().map(|m| m.receipt_handle.clone()).collect();
            queue
                .delete_batch(&receipts)
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await;
}

/// Sum of every series of `name` (optionally only those whose labels contain `labels`).
fn metric(page: &str, name: &str, labels: Option<&str>) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (series_labels, value) = match rest.strip_prefix('{') {
                Some(r) => {
                    let (lbl, v) = r.split_once('}')?;
                    (lbl, v)
                }
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            if labels.is_some_and(|want| !series_labels.contains(want)) {
                return None;
            }
            value.trim().split(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

async fn metrics_page(srv: &TestServer) -> String {
    let r = srv.get("/metrics", None).await;
    r.assert_status(200);
    r.text
}

/// The email files of one order (`order-<id>-<status>.eml`, in any day directory), sorted.
fn email_files_of(env: &ServerEnv, order_id: &str) -> Vec<String> {
    let prefix = format!("order-{order_id}-");
    let mut files: Vec<String> = email_files(&env.mail_dir())
        .into_iter()
        .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        .filter(|f| f.starts_with(&prefix))
        .collect();
    files.sort();
    files
}

/// Waits until `proxy` has seen a request carrying the pattern it counts.
async fn wait_until_seen(proxy: &crate::harness::support::blackhole::BlackHoleProxy, what: &str) {
    poll_until(ORDER_DEADLINE, what, || async {
        match proxy.counted() {
            0 => Err("not seen yet".to_string()),
            _ => Ok(()),
        }
    })
    .await;
}

/// Waits until the embedded queue holds no message, visible or in flight.
async fn wait_for_empty_queue(queue: &SqliteQueue, deadline: Duration) {
    poll_until(deadline, "the queue to be drained", || async {
        let depth = queue
            .depth()
            .await
            .map_err(|e| format!("depth failed: {e}"))?;
        if depth.visible == 0 && depth.in_flight == 0 {
            Ok(())
        } else {
            Err(format!("{depth:?}"))
        }
    })
    .await
}

async fn place_with_key(srv: &TestServer, auth: &Auth, key: &str, body: &Value) -> Resp {
    let rb = srv
        .request(Method::POST, "/api/orders")
        .bearer_auth(&auth.access)
        .header("Idempotency-Key", key)
        .json(body);
    srv.send(rb).await
}

fn replayed(r: &Resp) -> bool {
    r.header("idempotent-replayed").as_deref() == Some("true")
}

async fn order_count(srv: &TestServer, auth: &Auth) -> i64 {
    let r = srv.get("/api/orders?limit=100", Some(&auth.access)).await;
    r.assert_status(200);
    r.json()["total"].as_i64().expect("total")
}
