//! What only the MongoDB store has: the repair of interrupted stock returns, and surviving a
//! server restart.

use bson::doc;
use order_service::domain::{Id, Order, OrderStatus, Product};
use order_service::error::BackendError;
use order_service::store::mongo::MongoStore;
use order_service::store::TransitionOutcome;

use super::{cancel, placed_order, product, stock, Fixture};

async fn order_doc(store: &MongoStore, id: Id) -> bson::Document {
    store
        .database()
        .collection::<bson::Document>("orders")
        .find_one(doc! { "_id": id.object_id() })
        .await
        .unwrap()
        .expect("the order document")
}

/// Puts the order where a crash would leave it: cancelled with its intent to return stock
/// recorded, and `claimed` products already given back.
async fn interrupt_cancellation(store: &MongoStore, order: &Order, claimed: &[(&Product, i64)]) {
    let db = store.database();
    let claimed_ids: Vec<_> = claimed.iter().map(|(p, _)| p.id.object_id()).collect();
    db.collection::<bson::Document>("orders")
        .update_one(
            doc! { "_id": order.id.object_id() },
            doc! { "$set": {
                "status": "cancelled",
                "stockReturned": false,
                "returnedProducts": claimed_ids,
            } },
        )
        .await
        .unwrap();
    for (p, n) in claimed {
        db.collection::<bson::Document>("products")
            .update_one(
                doc! { "_id": p.id.object_id() },
                doc! { "$inc": { "stock": *n } },
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn repair_finishes_interrupted_stock_returns_once() {
    let Some(fixture) = Fixture::mongo("repair").await else {
        return;
    };
    let stores = fixture.stores.clone();
    let store = fixture.mongo.as_ref().unwrap().store.clone();
    let a = product(&stores, "a", 10).await;
    let b = product(&stores, "b", 10).await;
    let order = placed_order(&stores, &[(&a, 3), (&b, 2)]).await;
    let untouched = placed_order(&stores, &[(&a, 1)]).await;
    interrupt_cancellation(&store, &order, &[(&a, 3)]).await;
    assert_eq!(
        (stock(&stores, a.id).await, stock(&stores, b.id).await),
        (9, 8)
    );

    assert_eq!(store.repair_stock_returns().await.unwrap(), 1);
    assert_eq!(
        (stock(&stores, a.id).await, stock(&stores, b.id).await),
        (9, 10)
    );
    assert_eq!(
        order_doc(&store, order.id).await.get_bool("stockReturned"),
        Ok(true)
    );
    assert_eq!(
        store.repair_stock_returns().await.unwrap(),
        0,
        "nothing left to repair"
    );
    assert_eq!(
        (stock(&stores, a.id).await, stock(&stores, b.id).await),
        (9, 10)
    );
    assert_eq!(
        stores
            .orders
            .find_order(untouched.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        OrderStatus::Pending
    );
    fixture.finish().await;
}

#[tokio::test]
async fn a_retried_transition_finishes_an_interrupted_return() {
    let Some(fixture) = Fixture::mongo("retry_return").await else {
        return;
    };
    let stores = fixture.stores.clone();
    let store = fixture.mongo.as_ref().unwrap().store.clone();
    let a = product(&stores, "a", 10).await;
    let order = placed_order(&stores, &[(&a, 4)]).await;
    interrupt_cancellation(&store, &order, &[]).await;
    assert_eq!(stock(&stores, a.id).await, 6);

    let retry = cancel(&stores, order.id).await;
    assert!(
        matches!(retry, TransitionOutcome::Refused(Some(ref o)) if o.status == OrderStatus::Cancelled)
    );
    assert_eq!(stock(&stores, a.id).await, 10);
    let again = cancel(&stores, order.id).await;
    assert!(matches!(again, TransitionOutcome::Refused(Some(_))));
    assert_eq!(stock(&stores, a.id).await, 10, "returned once");
    fixture.finish().await;
}

/// Puts the order where a return cut after some products leaves it now: cancelled with its
/// intent recorded, and `returned` products given back each with its record (what the return's
/// one conditional update on a product does).
async fn interrupt_return(store: &MongoStore, order: &Order, returned: &[(&Product, i64)]) {
    let db = store.database();
    let at = bson::DateTime::from_millis(order.created_at.timestamp_millis() + 1_000);
    db.collection::<bson::Document>("orders")
        .update_one(
            doc! { "_id": order.id.object_id() },
            doc! { "$set": { "status": "cancelled", "stockReturned": false, "updatedAt": at } },
        )
        .await
        .unwrap();
    for (p, n) in returned {
        let record = format!(
            "{:013}:return:{}:{n}",
            at.timestamp_millis(),
            order.id.object_id()
        );
        db.collection::<bson::Document>("products")
            .update_one(
                doc! { "_id": p.id.object_id() },
                doc! { "$inc": { "stock": *n }, "$push": { "holds": record } },
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_return_cut_after_some_products_is_finished_once_whoever_retries() {
    let Some(fixture) = Fixture::mongo("cut_return").await else {
        return;
    };
    let stores = fixture.stores.clone();
    let store = fixture.mongo.as_ref().unwrap().store.clone();
    let a = product(&stores, "a", 10).await;
    let b = product(&stores, "b", 10).await;
    let order = placed_order(&stores, &[(&a, 3), (&b, 2)]).await;
    interrupt_return(&store, &order, &[(&a, 3)]).await;
    assert_eq!(
        (stock(&stores, a.id).await, stock(&stores, b.id).await),
        (10, 8)
    );
    // A refused retry and the repair at start both finish it; `a` is not given back again.
    let retry = cancel(&stores, order.id).await;
    assert!(matches!(retry, TransitionOutcome::Refused(Some(_))));
    assert_eq!(store.repair_stock_returns().await.unwrap(), 0);
    assert_eq!(
        (stock(&stores, a.id).await, stock(&stores, b.id).await),
        (10, 10)
    );
    // The records are forgotten once past the hold bound; nothing more comes back.
    let swept = stores
        .catalogue
        .sweep_holds(chrono::Utc::now() + chrono::TimeDelta::minutes(1), 100)
        .await
        .unwrap();
    assert_eq!(swept.returned, 0, "{swept:?}");
    assert_eq!(swept.cleared, 2, "{swept:?}");
    assert_eq!(
        (stock(&stores, a.id).await, stock(&stores, b.id).await),
        (10, 10)
    );
    fixture.finish().await;
}

#[tokio::test]
async fn an_outage_fails_fast_and_the_store_recovers_after_a_restart() {
    let Some(mut fixture) = Fixture::mongo("outage").await else {
        return;
    };
    let stores = fixture.stores.clone();
    let Some(ferretdb) = fixture.mongo.as_mut().unwrap().ferretdb.as_mut() else {
        eprintln!("SKIPPED: the outage test needs a FerretDB of its own");
        return;
    };
    let p = product(&stores, "kept", 7).await;

    ferretdb.kill();
    let started = std::time::Instant::now();
    match stores.catalogue.find_product(p.id).await {
        Err(BackendError::Unavailable {
            backend: "database",
            ..
        }) => {}
        other => panic!("expected the database to be unavailable, got {other:?}"),
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "a call during the outage took {:?}",
        started.elapsed()
    );

    ferretdb.restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while let Err(e) = stores.health.ping().await {
        assert!(
            std::time::Instant::now() < deadline,
            "never reconnected: {e}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        stock(&stores, p.id).await,
        7,
        "the data survived the restart"
    );
}

#[tokio::test]
async fn ferretdb_1_is_recognised_and_writes_are_serialised() {
    let Some(fixture) = Fixture::mongo("recognised").await else {
        return;
    };
    let mongo = fixture.mongo.as_ref().unwrap();
    if mongo.ferretdb.is_some() {
        assert!(
            mongo.store.serialises_writes(),
            "without it, concurrent orders oversell on FerretDB 1.x"
        );
    }
}

#[tokio::test]
async fn connecting_to_a_stopped_server_fails_fast() {
    let Some(mut fixture) = Fixture::mongo("stopped").await else {
        return;
    };
    let Some(ferretdb) = fixture.mongo.as_mut().unwrap().ferretdb.as_mut() else {
        return;
    };
    ferretdb.kill();
    let started = std::time::Instant::now();
    let err = MongoStore::connect(&ferretdb.uri("stopped"))
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
