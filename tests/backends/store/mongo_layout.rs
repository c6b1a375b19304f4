//! The MongoDB store's layout on the hot path: the outbox is a collection of its own keyed by
//! order id (the outbox pass reads it, never the orders), idempotency records are keyed by
//! `_id`, and a database written by the layout before (an `enqueued` flag on orders, records in
//! `idempotency_keys`) loses nothing on upgrade.

use bson::{doc, Document};
use chrono::TimeDelta;
use order_service::domain::{Id, OrderStatus};
use order_service::store::mongo::MongoStore;
use order_service::store::Stores;

use super::{now, order_for, product, record, Fixture};

async fn outbox_ids(store: &MongoStore) -> Vec<bson::oid::ObjectId> {
    let mut ids: Vec<_> = store
        .database()
        .collection::<Document>("outbox")
        .distinct("_id", doc! {})
        .await
        .unwrap()
        .into_iter()
        .filter_map(|v| v.as_object_id())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn an_order_has_an_outbox_entry_until_the_queue_confirms_it() {
    let Some(fixture) = Fixture::mongo("outbox_entry").await else {
        return;
    };
    let stores = fixture.stores.clone();
    let store = fixture.mongo.as_ref().unwrap().store.clone();
    let p = product(&stores, "a", 10).await;
    let order = order_for(Id::new(), &[(&p, 1)], now());
    stores.orders.insert_order(&order).await.unwrap();
    assert_eq!(outbox_ids(&store).await, vec![order.id.object_id()]);
    let stored = store
        .database()
        .collection::<Document>("orders")
        .find_one(doc! { "_id": order.id.object_id() })
        .await
        .unwrap()
        .unwrap();
    assert!(
        !stored.contains_key("enqueued"),
        "the order document carries no outbox flag: {stored:?}"
    );

    stores.orders.mark_enqueued(order.id).await.unwrap();
    assert!(outbox_ids(&store).await.is_empty(), "confirmed: entry gone");
    fixture.finish().await;
}

#[tokio::test]
async fn an_outbox_entry_whose_order_never_landed_is_dropped_not_sent() {
    let Some(fixture) = Fixture::mongo("outbox_orphan").await else {
        return;
    };
    let stores = fixture.stores.clone();
    let store = fixture.mongo.as_ref().unwrap().store.clone();
    // Where a crash between the entry and the order's insert leaves it.
    let orphan = bson::oid::ObjectId::new();
    let old = bson::DateTime::from_millis((now() - TimeDelta::minutes(5)).timestamp_millis());
    store
        .database()
        .collection::<Document>("outbox")
        .insert_one(doc! { "_id": orphan, "createdAt": old })
        .await
        .unwrap();
    let p = product(&stores, "a", 10).await;
    let unsent = order_for(Id::new(), &[(&p, 1)], now() - TimeDelta::minutes(4));
    stores.orders.insert_order(&unsent).await.unwrap();

    let due = stores
        .orders
        .unenqueued_orders(now() - TimeDelta::minutes(1), 10)
        .await
        .unwrap();
    assert_eq!(due, vec![unsent.id]);
    assert_eq!(outbox_ids(&store).await, vec![unsent.id.object_id()]);
    fixture.finish().await;
}

#[tokio::test]
async fn a_full_page_of_settled_entries_does_not_hide_an_unsent_order() {
    let Some(fixture) = Fixture::mongo("outbox_settled").await else {
        return;
    };
    let stores = fixture.stores.clone();
    let p = product(&stores, "a", 10).await;
    let old = now() - TimeDelta::minutes(5);
    // Two orders a worker already took (their confirmations lost), then one never sent.
    for i in 0..2 {
        let taken = order_for(Id::new(), &[(&p, 1)], old + TimeDelta::seconds(i));
        stores.orders.insert_order(&taken).await.unwrap();
        stores
            .orders
            .transition_order(
                taken.id,
                OrderStatus::Pending,
                OrderStatus::Processing,
                None,
                now(),
            )
            .await
            .unwrap();
    }
    let unsent = order_for(Id::new(), &[(&p, 1)], old + TimeDelta::seconds(5));
    stores.orders.insert_order(&unsent).await.unwrap();
    let due = stores
        .orders
        .unenqueued_orders(now() - TimeDelta::minutes(1), 2)
        .await
        .unwrap();
    assert_eq!(due, vec![unsent.id]);
    fixture.finish().await;
}

/// A second connection to the fixture's database: what a process started after an upgrade sees.
async fn reconnect(fixture: &Fixture) -> Stores {
    let uri = &fixture.mongo.as_ref().unwrap().uri;
    Stores::new(MongoStore::connect(uri).await.expect("reconnect"))
}

#[tokio::test]
async fn orders_flagged_unsent_by_the_layout_before_are_sent_after_an_upgrade() {
    let Some(fixture) = Fixture::mongo("outbox_upgrade").await else {
        return;
    };
    let stores = fixture.stores.clone();
    let store = fixture.mongo.as_ref().unwrap().store.clone();
    let p = product(&stores, "a", 10).await;
    let at = now() - TimeDelta::minutes(5);
    let (unsent, sent) = (
        order_for(Id::new(), &[(&p, 1)], at),
        order_for(Id::new(), &[(&p, 1)], at),
    );
    for (order, enqueued) in [(&unsent, false), (&sent, true)] {
        stores.orders.insert_order(order).await.unwrap();
        stores.orders.mark_enqueued(order.id).await.unwrap();
        // As the layout before stored it: a flag on the order, no outbox entry.
        store
            .database()
            .collection::<Document>("orders")
            .update_one(
                doc! { "_id": order.id.object_id() },
                doc! { "$set": { "enqueued": enqueued } },
            )
            .await
            .unwrap();
    }

    let upgraded = reconnect(&fixture).await;
    let cutoff = now() - TimeDelta::minutes(1);
    assert_eq!(
        upgraded.orders.unenqueued_orders(cutoff, 10).await.unwrap(),
        vec![unsent.id]
    );
    upgraded.orders.mark_enqueued(unsent.id).await.unwrap();
    let again = reconnect(&fixture).await;
    assert!(
        again
            .orders
            .unenqueued_orders(cutoff, 10)
            .await
            .unwrap()
            .is_empty(),
        "moved once: a later start does not send it again"
    );
    fixture.finish().await;
}

#[tokio::test]
async fn an_idempotency_key_saved_by_the_layout_before_still_replays_after_an_upgrade() {
    let Some(fixture) = Fixture::mongo("idempotency_upgrade").await else {
        return;
    };
    let store = fixture.mongo.as_ref().unwrap().store.clone();
    let user = Id::new();
    store
        .database()
        .collection::<Document>("idempotency_keys")
        .insert_one(doc! {
            "userId": user.object_id(),
            "key": "k",
            "requestHash": "h1",
            "status": 201,
            "body": "first",
            "createdAt": bson::DateTime::from_millis((now() - TimeDelta::hours(1)).timestamp_millis()),
        })
        .await
        .unwrap();

    let upgraded = reconnect(&fixture).await;
    let found = upgraded
        .idempotency
        .find_idempotency(user, "k")
        .await
        .unwrap()
        .expect("the record written before the upgrade");
    assert_eq!(
        (found.request_hash.as_str(), found.body.as_str()),
        ("h1", "first")
    );
    let kept = upgraded
        .idempotency
        .save_idempotency(user, "k", &record("h2", 201, "second"), now())
        .await
        .unwrap();
    assert_eq!(
        kept.body, "first",
        "the first answer wins across the upgrade"
    );
    fixture.finish().await;
}

#[tokio::test]
async fn idempotency_records_are_keyed_by_user_and_key() {
    let Some(fixture) = Fixture::mongo("idempotency_id").await else {
        return;
    };
    let stores = fixture.stores.clone();
    let store = fixture.mongo.as_ref().unwrap().store.clone();
    let user = Id::new();
    stores
        .idempotency
        .save_idempotency(user, "k-1", &record("h", 201, "b"), now())
        .await
        .unwrap();
    let stored = store
        .database()
        .collection::<Document>("idempotency_records")
        .find_one(doc! { "_id": format!("{}:k-1", user.object_id().to_hex()) })
        .await
        .unwrap();
    assert!(stored.is_some(), "one point read finds it by _id");
    fixture.finish().await;
}
