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

use std::collections::BTreeSet;
use std::time::Duration;

use crate::harness::*;
use order_service::queue::sqlite::SqliteQueue;
use order_service::queue::Queue;
use order_service::store::sqlite::SqliteDb;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Long enough for a redelivery after a visibility timeout plus a slow start on a busy machine.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(40);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn vars(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A fresh environment on the embedded backends, whatever `TEST_BACKENDS` says.
fn embedded_env(extra: &[(&str, &str)]) -> ServerEnv {
    ServerEnv {
        data_dir: fresh_data_dir(),
        jwt_secret: random_string(48),
        jwt_refresh_secret: random_string(48),
        real: None,
        extra: vars(extra),
    }
}

/// The same environment (data dir, secrets) with more variables, for a second process on it.
fn with_extra(env: &ServerEnv, extra: &[(&str, &str)]) -> ServerEnv {
    let mut env = env.clone();
    env.extra.extend(vars(extra));
    env
}

/// The embedded queue of `env`, opened from the test process as another producer would.
fn open_queue(env: &ServerEnv, max_receives: u32) -> SqliteQueue {
    let db = SqliteDb::open(&env.data_dir.join("order-service.sqlite3"))
        .expect("open the service's SQLite file");
    SqliteQueue::new(db, max_receives)
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

/// The email files of one order (`order-<id>-<status>.eml`), sorted.
fn email_files_of(env: &ServerEnv, order_id: &str) -> Vec<String> {
    let prefix = format!("order-{order_id}-");
    let mut files: Vec<String> = list_dir(&env.mail_dir())
        .into_iter()
        .filter(|f| f.starts_with(&prefix))
        .collect();
    files.sort();
    files
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

// ---------------------------------------------------------------------------------------------
// 1. Idempotent creation
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_places_one_order_per_user_and_key() {
    // API only: orders stay pending, so every answer can be compared field by field.
    let srv = TestServer::start(embedded_env(&[]), "api").await;
    let admin = srv.login_admin().await;
    let pid = str_of(&srv.create_product(&admin, &unique("Idem"), 1500, 100).await["id"]);
    let alice = srv.new_user().await;
    let bob = srv.new_user().await;
    let body = order_body(&[(&pid, 2)]);
    let key = unique("key");

    let first = place_with_key(&srv, &alice, &key, &body).await;
    first.assert_status(201);
    assert!(
        !replayed(&first),
        "a first request is not a replay: {first:?}"
    );
    let order = first.json();
    assert_order(&order);
    assert_eq!(srv.product_stock(&pid).await, 98);

    // A retry (same key, same body) gets the same order back, marked as a replay, and the
    // stock is not reserved a second time.
    let retry = place_with_key(&srv, &alice, &key, &body).await;
    retry.assert_status(201);
    assert!(
        replayed(&retry),
        "a retry must say Idempotent-Replayed: true: {}",
        retry.ctx()
    );
    let again = retry.json();
    for field in ["id", "userId", "items", "totalAmount", "shippingAddress"] {
        assert_eq!(
            again[field],
            order[field],
            "replayed {field}: {}",
            retry.ctx()
        );
    }
    assert_eq!(retry.header("location"), first.header("location"));
    assert_eq!(
        srv.product_stock(&pid).await,
        98,
        "a replay reserves nothing"
    );

    // The same key with another body is a client bug, refused without side effects.
    let other_body = order_body(&[(&pid, 3)]);
    let r = place_with_key(&srv, &alice, &key, &other_body).await;
    assert_problem(&r, 422, "idempotency_key_reused");
    assert_eq!(srv.product_stock(&pid).await, 98);

    // Keys are per user: Bob's identical key and body is Bob's own new order.
    let bobs = place_with_key(&srv, &bob, &key, &body).await;
    bobs.assert_status(201);
    assert!(!replayed(&bobs), "{}", bobs.ctx());
    let bobs = bobs.json();
    assert_ne!(
        bobs["id"], order["id"],
        "another user's key is another order"
    );
    assert_eq!(bobs["userId"], bob.user["id"]);
    assert_eq!(srv.product_stock(&pid).await, 96);

    // Ten concurrent requests with one fresh key converge on one order, reserved once.
    let key2 = unique("key");
    let answers = join_all((0..10).map(|_| place_with_key(&srv, &alice, &key2, &body))).await;
    for r in &answers {
        r.assert_status(201);
    }
    let ids: BTreeSet<String> = answers.iter().map(|r| str_of(&r.json()["id"])).collect();
    assert_eq!(
        ids.len(),
        1,
        "concurrent twins got different orders: {ids:?}"
    );
    let originals = answers.iter().filter(|r| !replayed(r)).count();
    assert_eq!(
        originals, 1,
        "exactly one answer places the order; the others are replays"
    );
    assert_eq!(
        srv.product_stock(&pid).await,
        94,
        "ten twins reserve the stock once"
    );
    assert_eq!(
        order_count(&srv, &alice).await,
        2,
        "Alice has the first order and the concurrent one, nothing more"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. No overselling
// ---------------------------------------------------------------------------------------------

async fn customers(srv: &TestServer, n: usize) -> Vec<Auth> {
    join_all((0..n).map(|_| srv.new_user())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_orders_sell_exactly_the_stock() {
    const STOCK: i64 = 37;
    const ORDERS: usize = 200;
    let srv = TestServer::start(embedded_env(&[]), "api").await;
    let admin = srv.login_admin().await;
    let pid = str_of(
        &srv.create_product(&admin, &unique("Scarce"), 990, STOCK)
            .await["id"],
    );
    let users = customers(&srv, 8).await;

    let body = order_body(&[(&pid, 1)]);
    let results =
        join_all((0..ORDERS).map(|i| srv.place_order_raw(&users[i % users.len()], &body))).await;

    let accepted = results.iter().filter(|r| r.status == 201).count();
    for r in results.iter().filter(|r| r.status != 201) {
        assert_problem(r, 409, "insufficient_stock");
    }
    assert_eq!(accepted as i64, STOCK, "exactly the stock is sold");
    assert_eq!(srv.product_stock(&pid).await, 0);
    let mut stored = 0;
    for u in &users {
        stored += order_count(&srv, u).await;
    }
    assert_eq!(stored, STOCK, "one stored order per accepted answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contended_multi_item_orders_never_leave_a_partial_reservation() {
    const X_STOCK: i64 = 30;
    const Y_STOCK: i64 = 20;
    let srv = TestServer::start(embedded_env(&[]), "api").await;
    let admin = srv.login_admin().await;
    let x = str_of(&srv.create_product(&admin, &unique("X"), 100, X_STOCK).await["id"]);
    let y = str_of(&srv.create_product(&admin, &unique("Y"), 200, Y_STOCK).await["id"]);
    let users = customers(&srv, 6).await;

    // Every order needs both products, in varying amounts, so many fail on one product after
    // the other could have been reserved: exactly where a partial reservation would leak.
    let wanted: Vec<(i64, i64)> = (0..120).map(|i| (1 + i % 3, 1 + (i / 3) % 2)).collect();
    let srv = &srv;
    let results = join_all(wanted.iter().enumerate().map(|(i, (qx, qy))| {
        let body = order_body(&[(&x, *qx), (&y, *qy)]);
        let user = &users[i % users.len()];
        async move { srv.place_order_raw(user, &body).await }
    }))
    .await;

    let (mut sold_x, mut sold_y, mut refused) = (0, 0, 0);
    for (r, (qx, qy)) in results.iter().zip(&wanted) {
        match r.status {
            201 => {
                let o = r.json();
                assert_order(&o);
                sold_x += qx;
                sold_y += qy;
            }
            _ => {
                assert_problem(r, 409, "insufficient_stock");
                refused += 1;
            }
        }
    }
    assert!(
        refused > 0,
        "the storm must exhaust a product to test anything"
    );
    let (left_x, left_y) = (srv.product_stock(&x).await, srv.product_stock(&y).await);
    assert!(left_x >= 0 && left_y >= 0);
    assert_eq!(
        X_STOCK - left_x,
        sold_x,
        "stock of X taken = what accepted orders hold"
    );
    assert_eq!(
        Y_STOCK - left_y,
        sold_y,
        "stock of Y taken = what accepted orders hold"
    );
}

/// Past `MAX_ORDERS_IN_FLIGHT` creations at once, the rest are shed at once (503 `overloaded`,
/// `Retry-After`) instead of queueing without bound, and a shed request reserves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_past_the_in_flight_limit_are_shed_and_reserve_nothing() {
    const STOCK: i64 = 1000;
    let srv = TestServer::start(embedded_env(&[("MAX_ORDERS_IN_FLIGHT", "1")]), "api").await;
    let admin = srv.login_admin().await;
    let pid = str_of(
        &srv.create_product(&admin, &unique("Busy"), 500, STOCK)
            .await["id"],
    );
    let users = customers(&srv, 8).await;

    let body = order_body(&[(&pid, 1)]);
    let results =
        join_all((0..120).map(|i| srv.place_order_raw(&users[i % users.len()], &body))).await;

    let accepted = results.iter().filter(|r| r.status == 201).count() as i64;
    let shed: Vec<&Resp> = results.iter().filter(|r| r.status != 201).collect();
    for r in &shed {
        assert_problem(r, 503, "overloaded");
        let retry = r.header("retry-after").unwrap_or_default();
        assert!(
            retry.parse::<u64>().is_ok_and(|s| s >= 1),
            "503 without a usable Retry-After ({retry:?}): {}",
            r.ctx()
        );
    }
    // 120 requests at once against room for one: some must have been turned away.
    assert!(
        !shed.is_empty(),
        "nothing was shed with MAX_ORDERS_IN_FLIGHT=1"
    );
    assert!(accepted > 0, "the limit must still admit orders");
    assert_eq!(
        srv.product_stock(&pid).await,
        STOCK - accepted,
        "only accepted orders hold stock"
    );
    let mut stored = 0;
    for u in &users {
        stored += order_count(&srv, u).await;
    }
    assert_eq!(stored, accepted, "one stored order per accepted answer");
    // Once the burst is over, orders are admitted again.
    srv.place_order(&users[0], &[(&pid, 1)]).await;
}

// ---------------------------------------------------------------------------------------------
// 3. No accepted order lost
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_processing_loses_no_order() {
    let env = embedded_env(&[]);
    let api = TestServer::start(env.clone(), "api").await;
    // Slow processing and a short visibility timeout: the kill lands mid-order, and the
    // message comes back soon after the dead worker's heartbeat stops.
    let worker_env = with_extra(
        &env,
        &[
            ("METRICS_PORT", "0"),
            ("ORDER_PROCESSING_TIME", "3s"),
            ("QUEUE_VISIBILITY_TIMEOUT", "2s"),
        ],
    );
    let mut worker = TestServer::start(worker_env.clone(), "worker").await;

    let admin = api.login_admin().await;
    let pid = str_of(&api.create_product(&admin, &unique("Crash"), 500, 10).await["id"]);
    let user = api.new_user().await;
    let id = str_of(&api.place_order(&user, &[(&pid, 1)]).await["id"]);

    api.poll_order_status(&user, &id, "processing").await;
    worker.kill();
    // Nobody can finish it now: still processing means the kill really came mid-order.
    assert_eq!(
        api.get_order(&user, &id).await["status"],
        json!("processing"),
        "the worker finished before it was killed; the test proves nothing"
    );
    assert!(email_files_of(&env, &id).is_empty());

    let worker2 = TestServer::start(worker_env, "worker").await;
    api.poll_order_status_within(&user, &id, "completed", RECOVERY_DEADLINE)
        .await;
    api.find_email_file(&id, "completed").await;
    assert_eq!(
        email_files_of(&env, &id),
        vec![format!("order-{id}-completed.eml")]
    );
    let page = metrics_page(&worker2).await;
    assert_eq!(
        metric(&page, "emails_sent_total", None),
        1.0,
        "one email sent"
    );
    assert_eq!(metric(&page, "orders_completed_total", None), 1.0);
    assert_eq!(api.product_stock(&pid).await, 9, "stock taken once");
}

// ---------------------------------------------------------------------------------------------
// 4. Exactly-once effects
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_deliveries_of_a_completed_order_change_nothing() {
    let env = embedded_env(&[]);
    let srv = TestServer::start(env.clone(), "serve").await;
    let admin = srv.login_admin().await;
    let pid = str_of(&srv.create_product(&admin, &unique("Dup"), 700, 10).await["id"]);
    let user = srv.new_user().await;
    let id = str_of(&srv.place_order(&user, &[(&pid, 2)]).await["id"]);
    let completed = srv.poll_order_status(&user, &id, "completed").await;
    let email = srv.find_email_file(&id, "completed").await;
    let queue = open_queue(&env, 5);
    wait_for_empty_queue(&queue, ORDER_DEADLINE).await;
    let before = metrics_page(&srv).await;

    // At-least-once delivery means the same message can arrive again: twice more, here.
    let message = json!({ "orderId": id }).to_string();
    queue
        .send_batch(&[message.clone(), message])
        .await
        .expect("send duplicates");
    let deleted_before = metric(&before, "queue_messages_deleted_total", None);
    poll_until(
        ORDER_DEADLINE,
        "both duplicates processed and deleted",
        || async {
            let deleted = metric(
                &metrics_page(&srv).await,
                "queue_messages_deleted_total",
                None,
            );
            if deleted >= deleted_before + 2.0 {
                Ok(())
            } else {
                Err(format!("deleted {deleted}, before {deleted_before}"))
            }
        },
    )
    .await;
    wait_for_empty_queue(&queue, ORDER_DEADLINE).await;

    let after = metrics_page(&srv).await;
    let now = srv.get_order(&user, &id).await;
    assert_eq!(now["status"], json!("completed"));
    assert_eq!(
        now["updatedAt"], completed["updatedAt"],
        "the order was not touched"
    );
    assert_eq!(srv.product_stock(&pid).await, 8, "stock unchanged");
    for counter in ["emails_sent_total", "orders_completed_total"] {
        assert_eq!(
            metric(&after, counter, None),
            metric(&before, counter, None),
            "{counter} moved on a duplicate delivery"
        );
    }
    assert_eq!(
        email_files_of(&env, &id),
        vec![format!("order-{id}-completed.eml")]
    );
    assert_eq!(srv.find_email_file(&id, "completed").await, email);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_message_for_a_cancelled_order_changes_nothing() {
    let env = embedded_env(&[]);
    // No worker yet: the order's message waits in the queue while the order is cancelled.
    let api = TestServer::start(env.clone(), "api").await;
    let admin = api.login_admin().await;
    let pid = str_of(&api.create_product(&admin, &unique("Late"), 300, 10).await["id"]);
    let user = api.new_user().await;
    let id = str_of(&api.place_order(&user, &[(&pid, 3)]).await["id"]);
    assert_eq!(api.product_stock(&pid).await, 7);
    let r = api
        .call(
            Method::POST,
            &format!("/api/orders/{id}/cancel"),
            Some(&user.access),
            None,
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.json()["status"], json!("cancelled"));
    assert_eq!(api.product_stock(&pid).await, 10, "stock returned");
    api.find_email_file(&id, "cancelled").await;
    let queue = open_queue(&env, 5);
    let depth = queue.depth().await.expect("depth");
    assert!(
        depth.visible >= 1,
        "the order's message should still be waiting: {depth:?}"
    );

    let worker = TestServer::start(with_extra(&env, &[("METRICS_PORT", "0")]), "worker").await;
    wait_for_empty_queue(&queue, ORDER_DEADLINE).await;
    let page = metrics_page(&worker).await;
    assert!(
        metric(&page, "queue_messages_deleted_total", None) >= 1.0,
        "the worker handled the late message"
    );

    assert_eq!(
        api.get_order(&user, &id).await["status"],
        json!("cancelled")
    );
    assert_eq!(
        api.product_stock(&pid).await,
        10,
        "stock returned exactly once"
    );
    assert_eq!(
        email_files_of(&env, &id),
        vec![format!("order-{id}-cancelled.eml")]
    );
    assert_eq!(metric(&page, "emails_sent_total", None), 0.0);
    assert_eq!(metric(&page, "orders_completed_total", None), 0.0);
}

// ---------------------------------------------------------------------------------------------
// 5. Poison messages
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_while_orders_keep_completing() {
    let env = embedded_env(&[
        ("QUEUE_MAX_RECEIVES", "2"),
        ("QUEUE_VISIBILITY_TIMEOUT", "1s"),
    ]);
    let srv = TestServer::start(env.clone(), "serve").await;
    let queue = open_queue(&env, 2);
    let poison = [
        "this is not an order message".to_string(),
        json!({"orderId": "not-an-id"}).to_string(),
    ];
    queue.send_batch(&poison).await.expect("send poison");

    // While the poison comes and goes, orders are processed as usual.
    let admin = srv.login_admin().await;
    let pid = str_of(&srv.create_product(&admin, &unique("Poison"), 100, 10).await["id"]);
    let user = srv.new_user().await;
    for _ in 0..3 {
        let id = str_of(&srv.place_order(&user, &[(&pid, 1)]).await["id"]);
        srv.poll_order_status(&user, &id, "completed").await;
    }

    let dead = poll_until(
        RECOVERY_DEADLINE,
        "both poison messages dead-lettered",
        || async {
            let dead = queue.dead_letters().await.map_err(|e| e.to_string())?;
            if dead.len() >= poison.len() {
                Ok(dead)
            } else {
                Err(format!("{dead:?}"))
            }
        },
    )
    .await;
    let bodies: BTreeSet<&str> = dead.iter().map(|d| d.body.as_str()).collect();
    assert_eq!(bodies, poison.iter().map(String::as_str).collect());
    for d in &dead {
        assert_eq!(d.receive_count, 2, "dead-lettered after QUEUE_MAX_RECEIVES");
    }
    // Operators see it: the depth gauge (refreshed every 5 s) and the dead-letter counter.
    poll_until(
        Duration::from_secs(15),
        "queue_depth{state=\"dead_letter\"} 2",
        || async {
            let page = metrics_page(&srv).await;
            let depth = metric(&page, "queue_depth", Some("state=\"dead_letter\""));
            if depth == 2.0 {
                Ok(())
            } else {
                Err(format!("dead_letter depth {depth}"))
            }
        },
    )
    .await;
    let page = metrics_page(&srv).await;
    assert_eq!(
        metric(&page, "queue_messages_dead_lettered_total", None),
        2.0
    );

    // And the worker still serves orders after the poison is gone.
    let id = str_of(&srv.place_order(&user, &[(&pid, 1)]).await["id"]);
    srv.poll_order_status(&user, &id, "completed").await;
    assert_eq!(srv.product_stock(&pid).await, 6);
}

// ---------------------------------------------------------------------------------------------
// 6. Graceful shutdown
// ---------------------------------------------------------------------------------------------

/// A `POST /api/orders` sent over a raw connection with its headers and only half its body, so
/// it is in flight (its handler waiting for the rest) for as long as the test wants.
struct HalfSentOrder {
    stream: tokio::net::TcpStream,
    rest: Vec<u8>,
}

impl HalfSentOrder {
    async fn start(srv: &TestServer, auth: &Auth, body: &Value) -> HalfSentOrder {
        let body = body.to_string().into_bytes();
        let head = format!(
            "POST /api/orders HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            srv.port,
            auth.access,
            body.len()
        );
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", srv.port))
            .await
            .expect("connect");
        let half = body.len() / 2;
        stream.write_all(head.as_bytes()).await.expect("send head");
        stream.write_all(&body[..half]).await.expect("send half");
        stream.flush().await.expect("flush");
        HalfSentOrder {
            stream,
            rest: body[half..].to_vec(),
        }
    }

    /// Sends the rest of the body; returns the status and body of the answer.
    async fn finish(mut self) -> (u16, String) {
        self.stream
            .write_all(&self.rest)
            .await
            .expect("send the rest of the body: the server dropped an in-flight request");
        let mut raw = Vec::new();
        self.stream
            .read_to_end(&mut raw)
            .await
            .expect("read the answer");
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let status = raw
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP answer to an in-flight request: {raw:?}"));
        let body = raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_work_and_loses_nothing() {
    const SHUTDOWN_TIMEOUT_SECS: u64 = 10;
    // One receive at a time (WORKER_CONCURRENCY up to 10): while it holds the slow order, the
    // orders placed during the drain stay queued, so the restarted process is the one that
    // completes them and the email count below tells whether any was sent twice.
    let env = embedded_env(&[
        ("ORDER_PROCESSING_TIME", "2s"),
        ("SHUTDOWN_TIMEOUT", "10s"),
        ("WORKER_CONCURRENCY", "10"),
    ]);
    let mut srv = TestServer::start(env.clone(), "serve").await;
    let admin = srv.login_admin().await;
    let pid = str_of(&srv.create_product(&admin, &unique("Term"), 100, 10).await["id"]);
    let user = srv.new_user().await;

    // One order in the worker's hands ...
    let processing = str_of(&srv.place_order(&user, &[(&pid, 1)]).await["id"]);
    srv.poll_order_status(&user, &processing, "processing")
        .await;
    // ... and three requests in the HTTP server's, each waiting for the rest of its body.
    let body = order_body(&[(&pid, 1)]);
    let mut half_sent = Vec::new();
    for _ in 0..3 {
        half_sent.push(HalfSentOrder::start(&srv, &user, &body).await);
    }
    poll_until(
        ORDER_DEADLINE,
        "the three half-sent requests in flight",
        || async {
            // This scrape is in flight too.
            let n = metric(&metrics_page(&srv).await, "http_requests_in_flight", None);
            if n >= 4.0 {
                Ok(())
            } else {
                Err(format!("{n} in flight"))
            }
        },
    )
    .await;

    let status = std::process::Command::new("kill")
        .args(["-TERM", &srv.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");

    // The requests that were in flight are answered in full.
    let mut placed = Vec::new();
    for request in half_sent {
        let (status, body) = request.finish().await;
        assert_eq!(
            status, 201,
            "an in-flight order was not completed at shutdown: {body}"
        );
        let order: Value = serde_json::from_str(&body).expect("order JSON");
        assert_order(&order);
        placed.push(str_of(&order["id"]));
    }

    // The bound is SHUTDOWN_TIMEOUT; a little more for the process to tear down.
    let exit = tokio::task::block_in_place(|| {
        srv.wait_for_exit(Duration::from_secs(SHUTDOWN_TIMEOUT_SECS + 5))
    });
    let exit = exit.unwrap_or_else(|| {
        panic!(
            "no exit within {SHUTDOWN_TIMEOUT_SECS}s of SIGTERM; output:\n{}",
            srv.output()
        )
    });
    assert!(
        exit.success(),
        "exit status after SIGTERM: {exit}; output:\n{}",
        srv.output()
    );
    // The order being processed was finished (and its customer told) before the exit.
    assert_eq!(
        email_files_of(&env, &processing),
        vec![format!("order-{processing}-completed.eml")],
        "the order in processing was not finished before exit"
    );
    let env = srv.stop();

    // Nothing lost: after a restart every order completes, each emailed once.
    let srv = TestServer::start(env.clone(), "serve").await;
    assert_eq!(
        srv.get_order(&user, &processing).await["status"],
        json!("completed")
    );
    for id in &placed {
        srv.poll_order_status(&user, id, "completed").await;
        srv.find_email_file(id, "completed").await;
    }
    let page = metrics_page(&srv).await;
    assert_eq!(
        metric(&page, "emails_sent_total", None),
        placed.len() as f64,
        "the restarted process emails only the orders it completed"
    );
    assert_eq!(srv.product_stock(&pid).await, 10 - 1 - placed.len() as i64);
}

// ---------------------------------------------------------------------------------------------
// Real backends: queue outage, cache and database outages
// ---------------------------------------------------------------------------------------------

/// FerretDB, redis-server and moto of one test, owned so the test can kill and restart them.
struct Real {
    ferretdb: support::ferretdb::FerretDb,
    redis: support::redis::RedisServer,
    moto: support::moto::Moto,
    database: String,
    queue_url: String,
}

impl Real {
    /// Starts the servers, or returns `None` after printing `SKIPPED` when one is not installed
    /// (panics instead under `REQUIRE_BACKENDS=1`).
    async fn start() -> Option<Real> {
        let installed = blocking(|| {
            let hint = "see scripts/test";
            [
                support::find_binary("FERRETDB_BIN", "ferretdb", hint),
                support::find_binary("REDIS_SERVER_BIN", "redis-server", hint),
                support::find_binary("MOTO_SERVER_BIN", "moto_server", hint),
            ]
            .iter()
            .all(Option::is_some)
        })
        .await;
        if !installed {
            eprintln!("SKIPPED: this test needs FerretDB, redis-server and moto");
            return None;
        }
        let (ferretdb, redis, moto) = blocking(|| {
            (
                support::ferretdb::start().expect("start FerretDB"),
                support::redis::start().expect("start redis-server"),
                support::moto::start().expect("start moto"),
            )
        })
        .await;
        let queue_url = Self::prepare_moto(&moto).await;
        Some(Real {
            ferretdb,
            redis,
            moto,
            database: unique("orders"),
            queue_url,
        })
    }

    /// Creates the queue and verifies the sender (moto's state is in memory only).
    async fn prepare_moto(moto: &support::moto::Moto) -> String {
        moto.verify_sender(SES_SENDER).await;
        moto.create_queue("orders", MAX_RECEIVES).await.0
    }

    fn env(&self) -> ServerEnv {
        let mut env = embedded_env(&[]);
        env.extra = vec![
            ("MONGODB_URI".into(), self.ferretdb.uri(&self.database)),
            ("REDIS_HOST".into(), self.redis.host().into()),
            ("REDIS_PORT".into(), self.redis.port().to_string()),
            ("AWS_SQS_QUEUE_URL".into(), self.queue_url.clone()),
            ("AWS_SES_SENDER_EMAIL".into(), SES_SENDER.into()),
            ("QUEUE_MAX_RECEIVES".into(), MAX_RECEIVES.to_string()),
        ];
        env.extra.extend(self.moto.env());
        env
    }

    /// Emails moto's SES accepted for this order's completion.
    async fn completion_emails(&self, order_id: &str) -> usize {
        self.moto
            .sent_emails()
            .await
            .iter()
            .filter(|e| e.subject.contains(order_id) && e.subject.contains("is complete"))
            .count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_placed_while_the_queue_is_down_is_sent_later_by_the_outbox() {
    let Some(mut real) = Real::start().await else {
        return;
    };
    let srv = TestServer::start(real.env(), "serve").await;
    let admin = srv.login_admin().await;
    let pid = str_of(&srv.create_product(&admin, &unique("Outbox"), 100, 10).await["id"]);
    let user = srv.new_user().await;

    tokio::task::block_in_place(|| real.moto.kill());
    // The order is stored before it is queued: the queue being down does not refuse it.
    let id = str_of(&srv.place_order(&user, &[(&pid, 2)]).await["id"]);
    assert_eq!(srv.product_stock(&pid).await, 8);

    tokio::task::block_in_place(|| real.moto.restart());
    let url = Real::prepare_moto(&real.moto).await;
    assert_eq!(url, real.queue_url, "the queue came back at the same URL");

    // The message was never sent; the outbox reconciler (every 5 s, for orders older than
    // 10 s) sends it, and the worker completes the order.
    srv.poll_order_status_within(&user, &id, "completed", Duration::from_secs(60))
        .await;
    let emails = poll_until(ORDER_DEADLINE, "the completion email", || async {
        match real.completion_emails(&id).await {
            0 => Err("none yet".to_string()),
            n => Ok(n),
        }
    })
    .await;
    assert_eq!(emails, 1, "exactly one completion email");
    assert_eq!(srv.product_stock(&pid).await, 8);
    let page = metrics_page(&srv).await;
    assert!(
        metric(&page, "outbox_resent_total", None) >= 1.0,
        "the order should have gone through the outbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_rides_out_cache_and_database_outages() {
    let Some(mut real) = Real::start().await else {
        return;
    };
    let srv = TestServer::start(real.env(), "serve").await;
    let admin = srv.login_admin().await;
    let pid = str_of(&srv.create_product(&admin, &unique("Outage"), 100, 50).await["id"]);
    let user = srv.new_user().await;
    let first = str_of(&srv.place_order(&user, &[(&pid, 1)]).await["id"]);
    srv.poll_order_status(&user, &first, "completed").await;

    // Redis down: it is only a cache (and the throttle's counters), so nothing needs it.
    tokio::task::block_in_place(|| real.redis.kill());
    let user = srv.login(&user.email, &user.password).await;
    assert_eq!(
        srv.get_order(&user, &first).await["status"],
        json!("completed")
    );
    let second = str_of(&srv.place_order(&user, &[(&pid, 1)]).await["id"]);
    srv.poll_order_status(&user, &second, "completed").await;
    tokio::task::block_in_place(|| real.redis.restart());
    poll_until(
        Duration::from_secs(20),
        "authenticated reads with Redis back",
        || async {
            let r = srv.me(&user.access).await;
            (r.status == 200).then_some(()).ok_or_else(|| r.ctx())
        },
    )
    .await;
    poll_until(Duration::from_secs(20), "ready with Redis back", || async {
        let r = srv.get("/ready", None).await;
        (r.status == 200).then_some(()).ok_or_else(|| r.ctx())
    })
    .await;

    // FerretDB down: what needs the database fails fast with a 503, and leaves nothing behind.
    tokio::task::block_in_place(|| real.ferretdb.kill());
    let ready = srv.get("/ready", None).await;
    let problem = assert_problem(&ready, 503, "not_ready");
    assert_eq!(
        problem["unavailable"],
        json!(["database"]),
        "{}",
        ready.ctx()
    );
    assert_eq!(
        ready.header("retry-after").as_deref(),
        Some("5"),
        "{}",
        ready.ctx()
    );
    let product = srv.get(&format!("/api/products/{pid}"), None).await;
    assert_problem(&product, 503, "service_unavailable");
    let order = srv.place_order_raw(&user, &order_body(&[(&pid, 5)])).await;
    assert_problem(&order, 503, "service_unavailable");
    let list = srv.get("/api/orders", Some(&user.access)).await;
    assert_problem(&list, 503, "service_unavailable");
    let register = srv
        .register_raw(&unique_email(), "correct horse battery", "Late Comer")
        .await;
    assert_problem(&register, 503, "service_unavailable");

    // Back up: the service recovers by itself.
    tokio::task::block_in_place(|| real.ferretdb.restart());
    poll_until(
        Duration::from_secs(30),
        "product reads after FerretDB restarted",
        || async {
            let r = srv.get(&format!("/api/products/{pid}"), None).await;
            (r.status == 200).then_some(()).ok_or_else(|| r.ctx())
        },
    )
    .await;
    let third = str_of(&srv.place_order(&user, &[(&pid, 1)]).await["id"]);
    srv.poll_order_status(&user, &third, "completed").await;
    // No partial order from the outage: three orders of one unit each, nothing else.
    assert_eq!(order_count(&srv, &user).await, 3);
    assert_eq!(srv.product_stock(&pid).await, 50 - 3);
}
