//! Exactly-once effects and poison messages: duplicate or late deliveries change nothing, and a
//! message that can never be processed is dead-lettered while other orders keep completing.

use std::collections::BTreeSet;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_deliveries_of_a_completed_order_change_nothing() {
    let env = ServerEnv::embedded(&[]);
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
    let env = ServerEnv::embedded(&[]);
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

    let worker = TestServer::start(env.clone().with_vars(&[("METRICS_PORT", "0")]), "worker").await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_while_orders_keep_completing() {
    let env = ServerEnv::embedded(&[
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
