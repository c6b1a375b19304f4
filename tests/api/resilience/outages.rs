//! Real backends going away: an order placed while the queue is down is sent later by the outbox,
//! and the service rides out cache and database outages. These tests own their FerretDB,
//! redis-server and moto, to kill and restart them.

use super::*;

/// A server environment on `real`, whose servers the test owns (to kill and restart them), so
/// it is not the harness's: `real` stays `None` and the servers are named in the variables.
fn env_on(real: &RealBackends) -> ServerEnv {
    let mut env = ServerEnv::embedded(&[]);
    env.extra = real.env();
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_placed_while_the_queue_is_down_is_sent_later_by_the_outbox() {
    let Some(mut real) = blocking(RealBackends::start_if_installed).await else {
        return;
    };
    let srv = TestServer::start(env_on(&real), "serve").await;
    let admin = srv.login_admin().await;
    let pid = str_of(&srv.create_product(&admin, &unique("Outbox"), 100, 10).await["id"]);
    let user = srv.new_user().await;

    tokio::task::block_in_place(|| real.moto.kill());
    // The order is stored before it is queued: the queue being down does not refuse it.
    let id = str_of(&srv.place_order(&user, &[(&pid, 2)]).await["id"]);
    assert_eq!(srv.product_stock(&pid).await, 8);

    tokio::task::block_in_place(|| real.moto.restart());
    let url = RealBackends::prepare_moto(&real.moto).await;
    assert_eq!(url, real.queue_url, "the queue came back at the same URL");

    // The message was never sent; the outbox reconciler (every 5 s, for orders older than
    // 10 s) sends it, and the worker completes the order.
    srv.poll_order_status_within(&user, &id, "completed", Duration::from_secs(60))
        .await;
    let emails = poll_until(ORDER_DEADLINE, "the completion email", || async {
        match sent_emails_for(&real, &id, "completed").await.len() {
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
    let Some(mut real) = blocking(RealBackends::start_if_installed).await else {
        return;
    };
    let srv = TestServer::start(env_on(&real), "serve").await;
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
