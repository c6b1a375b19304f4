//! Stranded orders: an order whose message is gone (dead-lettered after a `give_up` that could
//! not reach the store, or lost) while its outbox flag says it was sent. The outbox ignores it;
//! the sweeper sends it again once it has been unchanged for `ORDER_STUCK_AFTER`.

use super::*;

/// The order's outbox flag, read from the service's SQLite file.
fn enqueued_flag(env: &ServerEnv, id: &str) -> bool {
    let c = rusqlite::Connection::open(env.data_dir.join("order-service.sqlite3")).unwrap();
    c.query_row("SELECT enqueued FROM orders WHERE id = ?1", [id], |r| {
        r.get::<_, i64>(0)
    })
    .map(|v| v == 1)
    .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_message_was_lost_after_it_was_sent_is_completed_by_the_sweeper() {
    let env = ServerEnv::embedded(&[("ORDER_STUCK_AFTER", "2s")]);
    // No worker: the order's message waits in the queue, where the test takes it away.
    let api = TestServer::start(env.clone(), "api").await;
    let admin = api.login_admin().await;
    let pid = str_of(
        &api.create_product(&admin, &unique("Stranded"), 300, 10)
            .await["id"],
    );
    let user = api.new_user().await;
    let id = str_of(&api.place_order(&user, &[(&pid, 2)]).await["id"]);

    take_the_queued_messages(&env).await;
    let (env2, id2) = (env.clone(), id.clone());
    poll_until(ORDER_DEADLINE, "the outbox flag set", || {
        let (env, id) = (env2.clone(), id2.clone());
        async move {
            if blocking(move || enqueued_flag(&env, &id)).await {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        }
    })
    .await;
    let env = api.stop();

    // Pending, marked sent, with no message anywhere: only a sweeper can finish it.
    let srv = TestServer::start(env, "serve").await;
    let user = srv.login(&user.email, &user.password).await;
    srv.poll_order_status_within(&user, &id, "completed", RECOVERY_DEADLINE)
        .await;
    assert_eq!(srv.product_stock(&pid).await, 8);
    let page = metrics_page(&srv).await;
    assert!(
        metric(&page, "orders_stranded_resent_total", None) >= 1.0,
        "the sweeper sent it"
    );
}
