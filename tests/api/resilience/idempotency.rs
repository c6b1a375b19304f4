//! Idempotent creation: one order per user and `Idempotency-Key`, whatever the retries.

use std::collections::BTreeSet;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_places_one_order_per_user_and_key() {
    // API only: orders stay pending, so every answer can be compared field by field.
    let srv = TestServer::start(ServerEnv::embedded(&[]), "api").await;
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
