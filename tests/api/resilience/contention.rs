//! No overselling: concurrent and contended orders sell exactly the stock, never leave a partial
//! reservation, and orders past the in-flight limit are shed without reserving anything.

use super::*;

async fn customers(srv: &TestServer, n: usize) -> Vec<Auth> {
    join_all((0..n).map(|_| srv.new_user())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_orders_sell_exactly_the_stock() {
    const STOCK: i64 = 37;
    const ORDERS: usize = 200;
    let srv = TestServer::start(ServerEnv::embedded(&[]), "api").await;
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
    let srv = TestServer::start(ServerEnv::embedded(&[]), "api").await;
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
    let srv = TestServer::start(ServerEnv::embedded(&[("MAX_ORDERS_IN_FLIGHT", "1")]), "api").await;
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
