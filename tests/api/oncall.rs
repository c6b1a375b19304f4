//! The on-call's tools, black box: `order-service dlq list | redrive` and `orders stuck` run as
//! child processes against the data directory (or the real backends) of a running service,
//! and `GET /api/admin/orders` over HTTP.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;
use order_service::queue::sqlite::SqliteQueue;
use order_service::queue::Queue;
use order_service::store::sqlite::SqliteDb;

const CLI_DEADLINE: Duration = Duration::from_secs(60);

/// Runs an on-call command; its exit status, the JSON lines it printed and all its output.
fn oncall(env: &ServerEnv, args: &[&str]) -> (bool, Vec<Value>, String) {
    let (status, out) = run_cli(env, args, CLI_DEADLINE);
    let lines = out
        .lines()
        .filter_map(|l| l.strip_prefix("[stdout] "))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?} in\n{out}")))
        .collect();
    (status.success(), lines, out)
}

/// Runs `oncall` off the async runtime.
async fn oncall_async(env: &ServerEnv, args: &[&str]) -> (bool, Vec<Value>, String) {
    let env = env.clone();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        oncall(&env, &args)
    })
    .await
}

/// Takes every message off the embedded queue of `env` into its dead letters, as a queue
/// does with messages that failed each of their receives.
async fn dead_letter_everything(env: &ServerEnv) {
    let db = SqliteDb::open(&env.data_dir.join("order-service.sqlite3")).unwrap();
    let queue = SqliteQueue::new(db, 1);
    poll_until(
        ORDER_DEADLINE,
        "the order's message on the queue",
        || async {
            let got = queue
                .receive(10, Duration::ZERO, Duration::ZERO)
                .await
                .map_err(|e| e.to_string())?;
            if got.is_empty() {
                Err("no message yet".to_string())
            } else {
                Ok(())
            }
        },
    )
    .await;
    // A receive past the limit moves them.
    queue
        .receive(10, Duration::ZERO, Duration::ZERO)
        .await
        .unwrap();
    assert!(!queue.dead_letters().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_redriven_on_the_embedded_queue() {
    let env = ServerEnv::embedded(&[]);
    // No worker: the order's message stays on the queue for the test to dead-letter.
    let api = TestServer::start(env.clone(), "api").await;
    let admin = api.login_admin().await;
    let pid = str_of(&api.create_product(&admin, &unique("Dead"), 300, 10).await["id"]);
    let user = api.new_user().await;
    let id = str_of(&api.place_order(&user, &[(&pid, 1)]).await["id"]);
    dead_letter_everything(&env).await;

    let (ok, listed, out) = oncall_async(&env, &["dlq", "list"]).await;
    assert!(ok, "{out}");
    let ours: Vec<&Value> = listed
        .iter()
        .filter(|d| d["orderId"] == json!(id))
        .collect();
    assert_eq!(ours.len(), 1, "{out}");
    let message_id = str_of(&ours[0]["messageId"]);
    assert!(ours[0]["receiveCount"].as_u64().unwrap() >= 1, "{out}");

    // A wrong id is refused, and moves nothing.
    let (ok, _, out) = oncall_async(&env, &["dlq", "redrive", "no-such-message"]).await;
    assert!(!ok && out.contains("no-such-message"), "{out}");
    let (ok, _, out) = oncall_async(&env, &["dlq", "redrive"]).await;
    assert!(!ok, "redrive without ids nor --all must be refused: {out}");
    assert_eq!(
        oncall_async(&env, &["dlq", "list"]).await.1.len(),
        listed.len()
    );

    let (ok, moved, out) = oncall_async(&env, &["dlq", "redrive", &message_id]).await;
    assert!(ok, "{out}");
    assert_eq!(
        moved,
        vec![json!({"messageId": message_id, "redriven": true})]
    );
    let (_, left, out) = oncall_async(&env, &["dlq", "list"]).await;
    assert!(left.iter().all(|d| d["orderId"] != json!(id)), "{out}");

    // Back on the queue, the order is processed.
    let env = api.stop();
    let srv = TestServer::start(env, "serve").await;
    let user = srv.login(&user.email, &user.password).await;
    srv.poll_order_status(&user, &id, "completed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_orders_are_the_ones_unchanged_past_the_bound() {
    // The embedded store, or MongoDB in the real-backend pass.
    let env = ServerEnv::fresh();
    let api = TestServer::start(env.clone(), "api").await;
    let admin = api.login_admin().await;
    let pid = str_of(&api.create_product(&admin, &unique("Stuck"), 300, 10).await["id"]);
    let user = api.new_user().await;
    let id = str_of(&api.place_order(&user, &[(&pid, 1)]).await["id"]);

    // Fresh, it is not stuck by an hour's bound.
    let (ok, listed, out) = oncall_async(&env, &["orders", "stuck", "--older-than", "1h"]).await;
    assert!(ok, "{out}");
    assert!(listed.iter().all(|o| o["orderId"] != json!(id)), "{out}");
    // Pending with no worker, it is stuck past a second's.
    let found = poll_until(ORDER_DEADLINE, "the order listed as stuck", || async {
        let (ok, listed, out) =
            oncall_async(&env, &["orders", "stuck", "--older-than", "1s"]).await;
        assert!(ok, "{out}");
        listed
            .into_iter()
            .find(|o| o["orderId"] == json!(id))
            .ok_or(out)
    })
    .await;
    assert_eq!(found["status"], json!("pending"));
    let (ok, _, out) = oncall_async(&env, &["orders", "stuck", "--older-than", "soon"]).await;
    assert!(!ok && out.contains("soon"), "a bad bound is refused: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_page_through_everyones_orders_by_status() {
    let srv = TestServer::api().await;
    let admin = srv.login_admin().await;
    let pid = str_of(&srv.create_product(&admin, &unique("Admin"), 300, 10).await["id"]);
    let (ann, bob) = (srv.new_user().await, srv.new_user().await);
    let a = str_of(&srv.place_order(&ann, &[(&pid, 1)]).await["id"]);
    let b = str_of(&srv.place_order(&bob, &[(&pid, 1)]).await["id"]);
    let cancelled = srv
        .post(
            &format!("/api/orders/{a}/cancel"),
            Some(&ann.access),
            &json!({}),
        )
        .await;
    cancelled.assert_status(200);

    let r = srv
        .get("/api/admin/orders?limit=100", Some(&admin.access))
        .await;
    r.assert_status(200);
    let page = r.json();
    let ids: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&a.as_str()) && ids.contains(&b.as_str()),
        "{}",
        r.ctx()
    );
    // The page shape of GET /api/orders.
    let mine = srv.get("/api/orders", Some(&ann.access)).await.json();
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&page), keys(&mine));
    assert_eq!(
        (page["page"].clone(), page["limit"].clone()),
        (json!(1), json!(100))
    );

    let r = srv
        .get(
            "/api/admin/orders?status=cancelled&limit=100",
            Some(&admin.access),
        )
        .await;
    r.assert_status(200);
    let data = r.json()["data"].as_array().unwrap().clone();
    assert!(
        data.iter().all(|o| o["status"] == json!("cancelled")),
        "{}",
        r.ctx()
    );
    assert!(data.iter().any(|o| o["id"] == json!(a)), "{}", r.ctx());
    assert!(data.iter().all(|o| o["id"] != json!(b)), "{}", r.ctx());
    let r = srv
        .get(
            "/api/admin/orders?status=pending&limit=1&page=1",
            Some(&admin.access),
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 1, "{}", r.ctx());

    for bad in [
        "status=bogus",
        "page=0",
        "limit=ten",
        "status=pending&page=-1",
    ] {
        let r = srv
            .get(&format!("/api/admin/orders?{bad}"), Some(&admin.access))
            .await;
        assert_problem(&r, 400, "validation_failed");
    }
    let r = srv.get("/api/admin/orders", Some(&ann.access)).await;
    assert_problem(&r, 403, "forbidden");
    let r = srv.get("/api/admin/orders", None).await;
    assert_problem(&r, 401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_redriven_on_sqs() {
    let Some(real) = blocking(RealBackends::start_if_installed).await else {
        return;
    };
    let mut env = ServerEnv::embedded(&[]);
    env.extra = real.env();
    let api = TestServer::start(env.clone(), "api").await;
    let admin = api.login_admin().await;
    let pid = str_of(
        &api.create_product(&admin, &unique("SqsDead"), 300, 10)
            .await["id"],
    );
    let user = api.new_user().await;
    let id = str_of(&api.place_order(&user, &[(&pid, 1)]).await["id"]);

    // The order's message moves to the dead-letter queue, as the redrive policy would move it.
    let sqs = real.moto.sqs();
    let dlq = sqs
        .get_queue_url()
        .queue_name("orders-dlq")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let message = poll_until(ORDER_DEADLINE, "the order's message on SQS", || async {
        let got = sqs
            .receive_message()
            .queue_url(&real.queue_url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        got.messages
            .unwrap_or_default()
            .into_iter()
            .next()
            .ok_or("none yet".to_string())
    })
    .await;
    sqs.send_message()
        .queue_url(&dlq)
        .message_body(message.body().unwrap())
        .send()
        .await
        .unwrap();
    sqs.delete_message()
        .queue_url(&real.queue_url)
        .receipt_handle(message.receipt_handle().unwrap())
        .send()
        .await
        .unwrap();

    let (ok, listed, out) = oncall_async(&env, &["dlq", "list"]).await;
    assert!(ok, "{out}");
    assert_eq!(listed.len(), 1, "{out}");
    assert_eq!(listed[0]["orderId"], json!(id), "{out}");
    let (ok, moved, out) = oncall_async(&env, &["dlq", "redrive", "--all"]).await;
    assert!(ok, "{out}");
    assert_eq!(moved.len(), 1, "{out}");
    let (_, left, out) = oncall_async(&env, &["dlq", "list"]).await;
    assert!(left.is_empty(), "{out}");

    let _worker = TestServer::start(env.with_vars(&[("METRICS_PORT", "0")]), "worker").await;
    api.poll_order_status_within(&user, &id, "completed", Duration::from_secs(40))
        .await;
}
