//! The `Store` contract, written once and run against the embedded store (`SqliteStore` on a
//! fresh SQLite file) and the real one (`MongoStore` on a throwaway FerretDB with a fresh
//! database per test, or on the MongoDB named by `MONGODB_TEST_URI`). The real variants return
//! early, with a SKIPPED line, when FerretDB is not installed.
//!
//! Times handed to the stores are whole milliseconds: MongoDB keeps no more, and the contract
//! is that what is stored reads back equal.
//!
//! FerretDB 1.x does not apply updates atomically (FerretDB issue #3040); the store notices and
//! sends one write at a time, so the tests of concurrent callers pass on it too. They exercise
//! MongoDB's own atomic updates only when `MONGODB_TEST_URI` names a MongoDB.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use order_service::domain::{
    Cents, Email, Id, NewProduct, Order, OrderItem, OrderLine, OrderStatus, PageRequest, Product,
    ProductPatch, Quantity, Role, ShippingAddress, User,
};
use order_service::error::{BackendError, Shortage};
use order_service::store::mongo::MongoStore;
use order_service::store::sqlite::{SqliteDb, SqliteStore};
use order_service::store::{
    Accounts, Catalogue, Idempotency, IdempotencyRecord, Orders, ReserveOutcome, RotateOutcome,
    Session, StoreHealth, TransitionOutcome,
};

/// Every part of the store in one trait object, as the contract below is written.
trait Store: Accounts + Catalogue + Orders + Idempotency + StoreHealth {}

impl<T: Accounts + Catalogue + Orders + Idempotency + StoreHealth> Store for T {}

use crate::support;

// --- Helpers ----------------------------------------------------------------------------------

/// Now, in whole milliseconds.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("a valid time")
}

fn qty(n: u32) -> Quantity {
    Quantity::parse(i64::from(n)).expect("a valid quantity")
}

fn line(product_id: Id, n: u32) -> OrderLine {
    OrderLine {
        product_id,
        quantity: qty(n),
    }
}

fn user(email: &str) -> User {
    User {
        id: Id::new(),
        email: Email::parse(email).unwrap(),
        name: "Ann".into(),
        role: Role::User,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        created_at: now(),
    }
}

async fn product(store: &dyn Store, name: &str, stock: i64) -> Product {
    product_at(store, name, stock, now()).await
}

async fn product_at(store: &dyn Store, name: &str, stock: i64, at: DateTime<Utc>) -> Product {
    let new = NewProduct {
        name: name.into(),
        description: format!("about {name}"),
        price: Cents::price(250).unwrap(),
        stock,
    };
    store.insert_product(&new, Id::new(), at).await.unwrap()
}

async fn stock(store: &dyn Store, id: Id) -> i64 {
    store
        .find_product(id)
        .await
        .unwrap()
        .expect("product")
        .stock
}

fn order_for(user_id: Id, lines: &[(&Product, u32)], at: DateTime<Utc>) -> Order {
    let items = lines
        .iter()
        .map(|(p, n)| OrderItem::new(p.id, p.name.clone(), p.price, qty(*n)))
        .collect();
    let address = ShippingAddress {
        street: "1 Main St".into(),
        city: "Springfield".into(),
        state: "IL".into(),
        zip_code: "62701".into(),
        country: "US".into(),
    };
    Order::place(user_id, items, address, "credit_card".into(), at)
}

/// Reserves the lines and stores the order, as the order flow does.
async fn placed_order(store: &dyn Store, lines: &[(&Product, u32)]) -> Order {
    let order_lines: Vec<_> = lines.iter().map(|(p, n)| line(p.id, *n)).collect();
    let outcome = store.reserve_stock(&order_lines).await.unwrap();
    assert!(
        matches!(outcome, ReserveOutcome::Reserved(_)),
        "{outcome:?}"
    );
    let order = order_for(Id::new(), lines, now());
    store.insert_order(&order).await.unwrap();
    order
}

fn page(page: u32, limit: u32) -> PageRequest {
    PageRequest { page, limit }
}

fn record(hash: &str, status: u16, body: &str) -> IdempotencyRecord {
    IdempotencyRecord {
        request_hash: hash.into(),
        status,
        body: body.into(),
    }
}

fn moved(outcome: TransitionOutcome) -> Order {
    match outcome {
        TransitionOutcome::Moved(order) => order,
        other => panic!("expected the order to move, got {other:?}"),
    }
}

// --- The contract -----------------------------------------------------------------------------

async fn ping_and_emptiness(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
    assert!(store.is_empty().await.unwrap(), "a fresh store has no user");
    store.insert_user(&user("ann@example.com")).await.unwrap();
    assert!(!store.is_empty().await.unwrap());
}

async fn users_have_unique_emails(store: Arc<dyn Store>) {
    let ann = user("ann@example.com");
    store.insert_user(&ann).await.unwrap();

    let by_id = store.find_user(ann.id).await.unwrap().expect("found by id");
    let by_email = store
        .find_user_by_email(&ann.email)
        .await
        .unwrap()
        .expect("found by email");
    for found in [&by_id, &by_email] {
        assert_eq!(
            (
                found.id,
                &found.email,
                found.name.as_str(),
                found.role,
                found.password_hash.as_str(),
                found.created_at
            ),
            (
                ann.id,
                &ann.email,
                ann.name.as_str(),
                ann.role,
                ann.password_hash.as_str(),
                ann.created_at
            )
        );
    }

    let twin = User {
        id: Id::new(),
        role: Role::Admin,
        ..ann.clone()
    };
    assert!(
        matches!(store.insert_user(&twin).await, Err(BackendError::Duplicate)),
        "a second account with the same email"
    );
    assert!(store.find_user(twin.id).await.unwrap().is_none());
    assert!(matches!(
        store.insert_user(&ann).await,
        Err(BackendError::Duplicate)
    ));

    let bob = user("bob@example.com");
    store.insert_user(&bob).await.unwrap();
    assert_eq!(
        store.find_user(bob.id).await.unwrap().unwrap().email,
        bob.email
    );
    assert!(store.find_user(Id::new()).await.unwrap().is_none());
    let nobody = Email::parse("nobody@example.com").unwrap();
    assert!(store.find_user_by_email(&nobody).await.unwrap().is_none());
}

async fn sessions_rotate_and_detect_reuse(store: Arc<dyn Store>) {
    let t = now();
    let session = Session {
        id: Id::new(),
        user_id: Id::new(),
        current_jti: "one".into(),
        expires_at: t + TimeDelta::days(7),
        revoked: false,
        created_at: t,
    };
    store.insert_session(&session).await.unwrap();
    let stored = store.find_session(session.id).await.unwrap().unwrap();
    assert_eq!(
        (
            stored.user_id,
            stored.current_jti.as_str(),
            stored.expires_at,
            stored.revoked,
            stored.created_at
        ),
        (session.user_id, "one", session.expires_at, false, t)
    );

    let later = t + TimeDelta::days(8);
    let rotate = |presented: &'static str, next: &'static str, at: DateTime<Utc>| {
        let store = store.clone();
        async move {
            store
                .rotate_session(session.id, presented, next, later, at)
                .await
                .unwrap()
        }
    };
    assert_eq!(rotate("one", "two", t).await, RotateOutcome::Rotated);
    let stored = store.find_session(session.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.current_jti.as_str(), stored.expires_at),
        ("two", later)
    );
    assert_eq!(
        rotate("one", "three", t).await,
        RotateOutcome::Reused,
        "a spent token"
    );
    assert_eq!(
        store
            .find_session(session.id)
            .await
            .unwrap()
            .unwrap()
            .current_jti,
        "two",
        "reuse changes nothing by itself"
    );
    assert_eq!(
        rotate("two", "three", later).await,
        RotateOutcome::Inactive,
        "expired"
    );
    store.revoke_session(session.id).await.unwrap();
    assert!(
        store
            .find_session(session.id)
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
    assert_eq!(
        rotate("two", "three", t).await,
        RotateOutcome::Inactive,
        "revoked"
    );
    let unknown = store
        .rotate_session(Id::new(), "x", "y", later, t)
        .await
        .unwrap();
    assert_eq!(unknown, RotateOutcome::Inactive);
    assert!(store.find_session(Id::new()).await.unwrap().is_none());
    store
        .revoke_session(Id::new())
        .await
        .expect("revoking an unknown session is a no-op");
}

async fn products_round_trip_and_page_stably(store: Arc<dyn Store>) {
    let start = now();
    let mut ids = vec![];
    for i in 0..5 {
        let at = start + TimeDelta::seconds(i);
        let p = product_at(&*store, &format!("p{i}"), i, at).await;
        assert_eq!(
            (p.name.as_str(), p.stock, p.created_at, p.updated_at),
            (format!("p{i}").as_str(), i, at, at)
        );
        assert_eq!(store.find_product(p.id).await.unwrap(), Some(p.clone()));
        ids.push(p.id);
    }
    // Created in the same instant: the id decides, so pages never overlap or skip.
    let same = start + TimeDelta::seconds(10);
    for i in 5..8 {
        ids.push(product_at(&*store, &format!("p{i}"), 1, same).await.id);
    }

    let (first, total) = store.list_products(page(1, 3)).await.unwrap();
    assert_eq!(total, 8);
    assert_eq!(first.iter().map(|p| p.id).collect::<Vec<_>>(), ids[0..3]);
    let (second, _) = store.list_products(page(2, 3)).await.unwrap();
    assert_eq!(second.iter().map(|p| p.id).collect::<Vec<_>>(), ids[3..6]);
    let (third, total) = store.list_products(page(3, 3)).await.unwrap();
    assert_eq!(third.iter().map(|p| p.id).collect::<Vec<_>>(), ids[6..8]);
    assert_eq!(total, 8);
    let (beyond, total) = store.list_products(page(4, 3)).await.unwrap();
    assert!(beyond.is_empty());
    assert_eq!(total, 8);
    assert_eq!(
        second[0],
        store.find_product(ids[3]).await.unwrap().unwrap()
    );

    assert!(matches!(
        store
            .insert_product(
                &NewProduct {
                    name: "again".into(),
                    description: String::new(),
                    price: Cents::ZERO,
                    stock: 0,
                },
                ids[0],
                start,
            )
            .await,
        Err(BackendError::Duplicate)
    ));
}

async fn product_updates_patch_only_given_fields(store: Arc<dyn Store>) {
    let p = product(&*store, "lamp", 10).await;
    let later = p.updated_at + TimeDelta::seconds(1);
    let patch = ProductPatch {
        stock: Some(3),
        price: Some(Cents::price(999).unwrap()),
        ..ProductPatch::default()
    };
    let updated = store
        .update_product(p.id, &patch, later)
        .await
        .unwrap()
        .unwrap();
    let expected = Product {
        stock: 3,
        price: Cents::price(999).unwrap(),
        updated_at: later,
        ..p.clone()
    };
    assert_eq!(updated, expected);
    assert_eq!(
        store.find_product(p.id).await.unwrap(),
        Some(expected.clone())
    );

    let renamed = ProductPatch {
        name: Some("desk lamp".into()),
        description: Some("bright".into()),
        ..ProductPatch::default()
    };
    let even_later = later + TimeDelta::seconds(1);
    let updated = store
        .update_product(p.id, &renamed, even_later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            updated.name.as_str(),
            updated.description.as_str(),
            updated.stock,
            updated.updated_at
        ),
        ("desk lamp", "bright", 3, even_later)
    );

    let unchanged = store
        .update_product(
            p.id,
            &ProductPatch::default(),
            even_later + TimeDelta::days(1),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        unchanged, updated,
        "an empty patch changes nothing, not even the date"
    );
    assert!(store
        .update_product(Id::new(), &patch, later)
        .await
        .unwrap()
        .is_none());
}

async fn reservations_take_every_line(store: Arc<dyn Store>) {
    let a = product(&*store, "a", 5).await;
    let b = product(&*store, "b", 3).await;
    let outcome = store
        .reserve_stock(&[line(a.id, 2), line(b.id, 3)])
        .await
        .unwrap();
    let ReserveOutcome::Reserved(reserved) = outcome else {
        panic!("expected a reservation, got {outcome:?}")
    };
    // Each line with its product as it was before the reservation took from it.
    assert_eq!(
        reserved,
        vec![(a.clone(), line(a.id, 2)), (b.clone(), line(b.id, 3))]
    );
    assert_eq!(
        (stock(&*store, a.id).await, stock(&*store, b.id).await),
        (3, 0)
    );

    // The same product on two lines is checked against the sum.
    let outcome = store
        .reserve_stock(&[line(a.id, 2), line(a.id, 2)])
        .await
        .unwrap();
    match outcome {
        ReserveOutcome::Insufficient(shortages) => assert_eq!(
            shortages,
            vec![Shortage {
                product_id: a.id,
                product_name: "a".into(),
                requested: 4,
                available: 3,
            }]
        ),
        other => panic!("expected a shortage, got {other:?}"),
    }
    assert_eq!(stock(&*store, a.id).await, 3);
    let outcome = store
        .reserve_stock(&[line(a.id, 1), line(a.id, 2)])
        .await
        .unwrap();
    assert!(
        matches!(outcome, ReserveOutcome::Reserved(ref r) if r.len() == 2),
        "{outcome:?}"
    );
    assert_eq!(stock(&*store, a.id).await, 0);
}

async fn unknown_products_are_all_named_and_nothing_is_taken(store: Arc<dyn Store>) {
    let a = product(&*store, "a", 5).await;
    let b = product(&*store, "b", 5).await;
    let (ghost1, ghost2) = (Id::new(), Id::new());
    let outcome = store
        .reserve_stock(&[
            line(a.id, 2),
            line(ghost1, 1),
            line(b.id, 1),
            line(ghost2, 3),
        ])
        .await
        .unwrap();
    match outcome {
        ReserveOutcome::UnknownProducts(ids) => assert_eq!(ids, vec![ghost1, ghost2]),
        other => panic!("expected unknown products, got {other:?}"),
    }
    assert_eq!(
        (stock(&*store, a.id).await, stock(&*store, b.id).await),
        (5, 5)
    );
}

async fn every_short_line_is_reported_and_nothing_is_taken(store: Arc<dyn Store>) {
    let a = product(&*store, "a", 5).await;
    let b = product(&*store, "b", 1).await;
    let c = product(&*store, "c", 0).await;
    let d = product(&*store, "d", 9).await;
    let outcome = store
        .reserve_stock(&[line(a.id, 3), line(b.id, 2), line(d.id, 9), line(c.id, 1)])
        .await
        .unwrap();
    match outcome {
        ReserveOutcome::Insufficient(shortages) => assert_eq!(
            shortages,
            vec![
                Shortage {
                    product_id: b.id,
                    product_name: "b".into(),
                    requested: 2,
                    available: 1,
                },
                Shortage {
                    product_id: c.id,
                    product_name: "c".into(),
                    requested: 1,
                    available: 0,
                },
            ]
        ),
        other => panic!("expected shortages, got {other:?}"),
    }
    for (p, expected) in [(&a, 5), (&b, 1), (&c, 0), (&d, 9)] {
        assert_eq!(
            stock(&*store, p.id).await,
            expected,
            "{} was touched",
            p.name
        );
    }
}

async fn concurrent_reservations_never_oversell(store: Arc<dyn Store>) {
    let p = product(&*store, "hot", 25).await;
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.reserve_stock(&[line(p.id, 1)]).await.unwrap() })
        })
        .collect();
    let (mut reserved, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            ReserveOutcome::Reserved(_) => reserved += 1,
            ReserveOutcome::Insufficient(s) => {
                assert_eq!((s.len(), s[0].available), (1, 0), "{s:?}");
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((reserved, refused), (25, 15));
    assert_eq!(stock(&*store, p.id).await, 0);
}

async fn concurrent_multi_line_reservations_stay_consistent(store: Arc<dyn Store>) {
    // Opposite line orders make reservations hold stock the others want, forcing the
    // give-back path on stores without transactions.
    let a = product(&*store, "a", 10).await;
    let b = product(&*store, "b", 10).await;
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let store = store.clone();
            let lines = if i % 2 == 0 {
                [line(a.id, 1), line(b.id, 1)]
            } else {
                [line(b.id, 1), line(a.id, 1)]
            };
            tokio::spawn(async move { store.reserve_stock(&lines).await.unwrap() })
        })
        .collect();
    let mut reserved = 0;
    for task in tasks {
        match task.await.unwrap() {
            ReserveOutcome::Reserved(_) => reserved += 1,
            ReserveOutcome::Insufficient(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let (left_a, left_b) = (stock(&*store, a.id).await, stock(&*store, b.id).await);
    assert_eq!(
        (left_a, left_b),
        (10 - reserved, 10 - reserved),
        "every unit taken belongs to a reservation that succeeded"
    );
    assert_eq!(reserved, 10, "all stock was there to be had");
}

async fn released_stock_comes_back(store: Arc<dyn Store>) {
    let a = product(&*store, "a", 4).await;
    let b = product(&*store, "b", 2).await;
    let lines = [line(a.id, 3), line(b.id, 2)];
    assert!(matches!(
        store.reserve_stock(&lines).await.unwrap(),
        ReserveOutcome::Reserved(_)
    ));
    assert_eq!(
        (stock(&*store, a.id).await, stock(&*store, b.id).await),
        (1, 0)
    );
    store.release_stock(&lines).await.unwrap();
    assert_eq!(
        (stock(&*store, a.id).await, stock(&*store, b.id).await),
        (4, 2)
    );
}

async fn orders_round_trip_and_list_newest_first(store: Arc<dyn Store>) {
    let p = product(&*store, "a", 100).await;
    let q = product(&*store, "b", 100).await;
    let (ann, bob) = (Id::new(), Id::new());
    let start = now();
    let mut orders = vec![];
    for i in 0..3 {
        let o = order_for(ann, &[(&p, 1), (&q, 2)], start + TimeDelta::seconds(i));
        store.insert_order(&o).await.unwrap();
        assert_eq!(store.find_order(o.id).await.unwrap(), Some(o.clone()));
        orders.push(o);
    }
    // Placed in the same instant: the later id comes first.
    let same = start + TimeDelta::seconds(5);
    for _ in 0..2 {
        let o = order_for(ann, &[(&p, 1)], same);
        store.insert_order(&o).await.unwrap();
        orders.push(o);
    }
    store
        .insert_order(&order_for(bob, &[(&p, 1)], start + TimeDelta::seconds(9)))
        .await
        .unwrap();
    assert!(matches!(
        store.insert_order(&orders[0]).await,
        Err(BackendError::Duplicate)
    ));

    let newest_first: Vec<Id> = orders.iter().rev().map(|o| o.id).collect();
    let (first, total) = store.list_orders(ann, page(1, 2)).await.unwrap();
    assert_eq!(total, 5);
    assert_eq!(
        first.iter().map(|o| o.id).collect::<Vec<_>>(),
        newest_first[0..2]
    );
    let (second, _) = store.list_orders(ann, page(2, 2)).await.unwrap();
    assert_eq!(
        second.iter().map(|o| o.id).collect::<Vec<_>>(),
        newest_first[2..4]
    );
    let (third, total) = store.list_orders(ann, page(3, 2)).await.unwrap();
    assert_eq!(third, vec![orders[0].clone()]);
    assert_eq!(total, 5);
    let (none, total) = store.list_orders(Id::new(), page(1, 10)).await.unwrap();
    assert!(none.is_empty());
    assert_eq!(total, 0);
    assert!(store.find_order(Id::new()).await.unwrap().is_none());
}

async fn transitions_are_conditional(store: Arc<dyn Store>) {
    let p = product(&*store, "a", 10).await;
    let order = placed_order(&*store, &[(&p, 2)]).await;
    assert_eq!(stock(&*store, p.id).await, 8);
    let later = order.created_at + TimeDelta::seconds(3);

    match store
        .transition_order(
            order.id,
            OrderStatus::Processing,
            OrderStatus::Completed,
            None,
            later,
        )
        .await
        .unwrap()
    {
        TransitionOutcome::Refused(Some(o)) => assert_eq!(o, order, "a refusal changes nothing"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(matches!(
        store
            .transition_order(
                Id::new(),
                OrderStatus::Pending,
                OrderStatus::Processing,
                None,
                later
            )
            .await
            .unwrap(),
        TransitionOutcome::Refused(None)
    ));

    let processing = moved(
        store
            .transition_order(
                order.id,
                OrderStatus::Pending,
                OrderStatus::Processing,
                None,
                later,
            )
            .await
            .unwrap(),
    );
    assert_eq!(
        processing,
        Order {
            status: OrderStatus::Processing,
            updated_at: later,
            ..order.clone()
        }
    );
    assert_eq!(store.find_order(order.id).await.unwrap(), Some(processing));
    assert_eq!(
        stock(&*store, p.id).await,
        8,
        "processing keeps the reservation"
    );

    let failed = moved(
        store
            .transition_order(
                order.id,
                OrderStatus::Processing,
                OrderStatus::Failed,
                Some("card declined"),
                later + TimeDelta::seconds(1),
            )
            .await
            .unwrap(),
    );
    assert_eq!(
        (failed.status, failed.failure_reason.as_deref()),
        (OrderStatus::Failed, Some("card declined"))
    );
    assert_eq!(
        failed.updated_at - failed.created_at,
        TimeDelta::seconds(4),
        "what the completion metric measures"
    );
    assert_eq!(
        stock(&*store, p.id).await,
        10,
        "a failed order gives its stock back"
    );
    assert_eq!(store.find_order(order.id).await.unwrap(), Some(failed));

    // A completed order keeps its stock.
    let done = placed_order(&*store, &[(&p, 4)]).await;
    for (from, to) in [
        (OrderStatus::Pending, OrderStatus::Processing),
        (OrderStatus::Processing, OrderStatus::Completed),
    ] {
        moved(
            store
                .transition_order(done.id, from, to, None, later)
                .await
                .unwrap(),
        );
    }
    assert_eq!(stock(&*store, p.id).await, 6);
}

async fn racing_cancellations_return_stock_once(store: Arc<dyn Store>) {
    let a = product(&*store, "a", 10).await;
    let b = product(&*store, "b", 5).await;
    let order = placed_order(&*store, &[(&a, 3), (&b, 5)]).await;
    assert_eq!(
        (stock(&*store, a.id).await, stock(&*store, b.id).await),
        (7, 0)
    );

    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .transition_order(
                        order.id,
                        OrderStatus::Pending,
                        OrderStatus::Cancelled,
                        None,
                        now(),
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut moves = 0;
    for task in tasks {
        match task.await.unwrap() {
            TransitionOutcome::Moved(o) => {
                assert_eq!(o.status, OrderStatus::Cancelled);
                moves += 1;
            }
            TransitionOutcome::Refused(Some(o)) => assert_eq!(o.status, OrderStatus::Cancelled),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(moves, 1);
    assert_eq!(
        (stock(&*store, a.id).await, stock(&*store, b.id).await),
        (10, 5)
    );
}

async fn a_cancelled_order_gives_its_stock_back_once(store: Arc<dyn Store>) {
    let a = product(&*store, "a", 10).await;
    let order = placed_order(&*store, &[(&a, 4)]).await;
    let cancel = || {
        store.transition_order(
            order.id,
            OrderStatus::Pending,
            OrderStatus::Cancelled,
            None,
            now(),
        )
    };
    moved(cancel().await.unwrap());
    assert_eq!(stock(&*store, a.id).await, 10);
    assert!(matches!(
        cancel().await.unwrap(),
        TransitionOutcome::Refused(Some(_))
    ));
    assert!(matches!(
        store
            .transition_order(
                order.id,
                OrderStatus::Processing,
                OrderStatus::Failed,
                None,
                now()
            )
            .await
            .unwrap(),
        TransitionOutcome::Refused(Some(_))
    ));
    assert_eq!(
        stock(&*store, a.id).await,
        10,
        "refused transitions return nothing"
    );
}

async fn notifications_are_claimed_once_until_released(store: Arc<dyn Store>) {
    let id = Id::new();
    assert!(store
        .claim_notification(id, OrderStatus::Completed)
        .await
        .unwrap());
    assert!(!store
        .claim_notification(id, OrderStatus::Completed)
        .await
        .unwrap());
    assert!(store
        .claim_notification(id, OrderStatus::Processing)
        .await
        .unwrap());
    assert!(store
        .claim_notification(Id::new(), OrderStatus::Completed)
        .await
        .unwrap());
    store
        .release_notification(id, OrderStatus::Completed)
        .await
        .unwrap();
    assert!(store
        .claim_notification(id, OrderStatus::Completed)
        .await
        .unwrap());
    assert!(!store
        .claim_notification(id, OrderStatus::Processing)
        .await
        .unwrap());
    store
        .release_notification(Id::new(), OrderStatus::Failed)
        .await
        .expect("releasing an unclaimed notification is a no-op");
}

async fn concurrent_notification_claims_have_one_winner(store: Arc<dyn Store>) {
    let id = Id::new();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .claim_notification(id, OrderStatus::Completed)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap());
    }
    assert_eq!(winners, 1);
}

/// The batch forms the worker uses answer each item as the single call would, in order.
async fn batch_transitions_answer_each_order_in_order(store: Arc<dyn Store>) {
    let p = product(&*store, "a", 10).await;
    let first = placed_order(&*store, &[(&p, 1)]).await;
    let second = placed_order(&*store, &[(&p, 2)]).await;
    let unknown = Id::new();
    let later = first.created_at.max(second.created_at) + TimeDelta::seconds(1);
    // `first` already moved on: the batch must refuse it and still move the others.
    moved(
        store
            .transition_order(
                first.id,
                OrderStatus::Pending,
                OrderStatus::Processing,
                None,
                later,
            )
            .await
            .unwrap(),
    );
    let outcomes = store
        .transition_orders(
            &[second.id, unknown, first.id],
            OrderStatus::Pending,
            OrderStatus::Processing,
            later,
        )
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert!(
        matches!(&outcomes[0], TransitionOutcome::Moved(o) if o.id == second.id && o.status == OrderStatus::Processing),
        "{:?}",
        outcomes[0]
    );
    assert!(matches!(outcomes[1], TransitionOutcome::Refused(None)));
    assert!(
        matches!(&outcomes[2], TransitionOutcome::Refused(Some(o)) if o.id == first.id && o.status == OrderStatus::Processing),
        "{:?}",
        outcomes[2]
    );
    // Moves that return stock return it, once each.
    let failed = store
        .transition_orders(
            &[first.id, second.id],
            OrderStatus::Processing,
            OrderStatus::Failed,
            later,
        )
        .await
        .unwrap();
    assert!(failed
        .iter()
        .all(|o| matches!(o, TransitionOutcome::Moved(o) if o.status == OrderStatus::Failed)));
    assert_eq!(stock(&*store, p.id).await, 10);
    assert!(store
        .transition_orders(&[], OrderStatus::Pending, OrderStatus::Processing, later)
        .await
        .unwrap()
        .is_empty());
}

async fn batch_claims_and_lookups_answer_each_item_in_order(store: Arc<dyn Store>) {
    let (a, b) = (Id::new(), Id::new());
    assert!(store
        .claim_notification(a, OrderStatus::Completed)
        .await
        .unwrap());
    let claimed = store
        .claim_notifications(&[
            (a, OrderStatus::Completed),
            (b, OrderStatus::Completed),
            (a, OrderStatus::Failed),
        ])
        .await
        .unwrap();
    assert_eq!(claimed, vec![false, true, true]);
    assert!(!store
        .claim_notification(b, OrderStatus::Completed)
        .await
        .unwrap());

    let ann = user("ann.batch@example.com");
    let bob = user("bob.batch@example.com");
    store.insert_user(&ann).await.unwrap();
    store.insert_user(&bob).await.unwrap();
    let found = store
        .find_users(&[bob.id, Id::new(), ann.id, bob.id])
        .await
        .unwrap();
    let ids: Vec<Option<Id>> = found.iter().map(|u| u.as_ref().map(|u| u.id)).collect();
    assert_eq!(ids, vec![Some(bob.id), None, Some(ann.id), Some(bob.id)]);
    assert_eq!(found[2].as_ref().unwrap().email, ann.email);
}

async fn the_first_idempotent_answer_wins(store: Arc<dyn Store>) {
    let (user_id, t) = (Id::new(), now());
    let first = record("h1", 201, r#"{"a":1}"#);
    let second = record("h2", 200, "{}");
    assert!(store
        .find_idempotency(user_id, "k")
        .await
        .unwrap()
        .is_none());

    let won = store
        .save_idempotency(user_id, "k", &first, t)
        .await
        .unwrap();
    assert_eq!(
        (won.request_hash.as_str(), won.status, won.body.as_str()),
        ("h1", 201, r#"{"a":1}"#)
    );
    let won = store
        .save_idempotency(user_id, "k", &second, t)
        .await
        .unwrap();
    assert_eq!(
        (won.request_hash.as_str(), won.status, won.body.as_str()),
        ("h1", 201, r#"{"a":1}"#)
    );
    let found = store.find_idempotency(user_id, "k").await.unwrap().unwrap();
    assert_eq!((found.request_hash.as_str(), found.status), ("h1", 201));
    assert!(
        store
            .find_idempotency(Id::new(), "k")
            .await
            .unwrap()
            .is_none(),
        "keys are per user"
    );
    assert!(store
        .find_idempotency(user_id, "other")
        .await
        .unwrap()
        .is_none());
}

async fn idempotency_records_expire_after_a_day(store: Arc<dyn Store>) {
    let user_id = Id::new();
    let first = record("h1", 201, "{}");
    let second = record("h2", 200, "{}");
    let old = now() - TimeDelta::hours(25);
    store
        .save_idempotency(user_id, "k", &first, old)
        .await
        .unwrap();
    assert!(
        store
            .find_idempotency(user_id, "k")
            .await
            .unwrap()
            .is_none(),
        "a record older than a day no longer answers"
    );
    let won = store
        .save_idempotency(user_id, "k", &second, now())
        .await
        .unwrap();
    assert_eq!(
        won.request_hash, "h2",
        "an expired record no longer holds its key"
    );
    let found = store.find_idempotency(user_id, "k").await.unwrap().unwrap();
    assert_eq!(found.request_hash, "h2");

    let recent = now() - TimeDelta::hours(23);
    store
        .save_idempotency(user_id, "young", &first, recent)
        .await
        .unwrap();
    assert_eq!(
        store
            .find_idempotency(user_id, "young")
            .await
            .unwrap()
            .unwrap()
            .request_hash,
        "h1"
    );
}

async fn concurrent_idempotent_saves_agree_on_one_answer(store: Arc<dyn Store>) {
    let user_id = Id::new();
    let t = now();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mine = record(&format!("h{i}"), 201, &format!("{{\"n\":{i}}}"));
                store
                    .save_idempotency(user_id, "k", &mine, t)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut answers = vec![];
    for task in tasks {
        answers.push(task.await.unwrap().request_hash);
    }
    answers.dedup();
    assert_eq!(
        answers.len(),
        1,
        "every caller sees the same winner: {answers:?}"
    );
    let stored = store.find_idempotency(user_id, "k").await.unwrap().unwrap();
    assert_eq!(stored.request_hash, answers[0]);
}

async fn the_outbox_lists_pending_orders_never_enqueued(store: Arc<dyn Store>) {
    let p = product(&*store, "a", 10).await;
    let old = now() - TimeDelta::minutes(5);
    let orders: Vec<Order> = (0..4)
        .map(|i| order_for(Id::new(), &[(&p, 1)], old + TimeDelta::seconds(i)))
        .collect();
    let fresh = order_for(Id::new(), &[(&p, 1)], now());
    for o in orders.iter().chain([&fresh]) {
        store.insert_order(o).await.unwrap();
    }
    let (sent, unsent_a, moved_on, unsent_b) = (&orders[0], &orders[1], &orders[2], &orders[3]);
    store.mark_enqueued(sent.id).await.unwrap();
    store
        .mark_enqueued(Id::new())
        .await
        .expect("unknown orders are ignored");
    moved(
        store
            .transition_order(
                moved_on.id,
                OrderStatus::Pending,
                OrderStatus::Processing,
                None,
                now(),
            )
            .await
            .unwrap(),
    );

    let cutoff = now() - TimeDelta::minutes(1);
    let due = store.unenqueued_orders(cutoff, 10).await.unwrap();
    assert_eq!(due, vec![unsent_a.id, unsent_b.id], "oldest first");
    assert_eq!(
        store.unenqueued_orders(cutoff, 1).await.unwrap(),
        vec![unsent_a.id]
    );

    store.mark_enqueued(unsent_a.id).await.unwrap();
    assert_eq!(
        store.unenqueued_orders(cutoff, 10).await.unwrap(),
        vec![unsent_b.id]
    );
    assert_eq!(
        store
            .unenqueued_orders(now() + TimeDelta::minutes(1), 10)
            .await
            .unwrap(),
        vec![unsent_b.id, fresh.id]
    );
    // Marks made together, as placed orders' marks are; unknown ids among them are ignored.
    store
        .mark_enqueued_many(&[unsent_b.id, Id::new(), fresh.id])
        .await
        .unwrap();
    store.mark_enqueued_many(&[]).await.unwrap();
    assert!(store
        .unenqueued_orders(now() + TimeDelta::minutes(1), 10)
        .await
        .unwrap()
        .is_empty());
    // Enqueuing does not change what the client sees.
    assert_eq!(
        store.find_order(sent.id).await.unwrap().as_ref(),
        Some(sent)
    );
}

// --- Instantiation ------------------------------------------------------------------------------

/// A store under test and what keeps it alive.
struct Fixture {
    store: Arc<dyn Store>,
    mongo: Option<MongoFixture>,
    sqlite_dir: Option<std::path::PathBuf>,
}

struct MongoFixture {
    store: Arc<MongoStore>,
    /// None when the tests run against the server named by `MONGODB_TEST_URI`.
    ferretdb: Option<support::ferretdb::FerretDb>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(dir) = &self.sqlite_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Fixture {
    fn sqlite() -> Fixture {
        let dir = support::temp_dir("store");
        let db = SqliteDb::open(&dir.join("store.db")).expect("open a SQLite store");
        Fixture {
            store: Arc::new(SqliteStore::new(db)),
            mongo: None,
            sqlite_dir: Some(dir),
        }
    }

    /// A fresh database on `MONGODB_TEST_URI` if set, else on a FerretDB of its own. `None`
    /// (after a SKIPPED line) when neither is available.
    async fn mongo(test: &str) -> Option<Fixture> {
        let database = format!(
            "contract_{test}_{}_{}",
            std::process::id(),
            Utc::now().timestamp_micros()
        );
        // MongoDB limits database names to 63 bytes.
        let database = &database[database.len().saturating_sub(60)..];
        let (uri, ferretdb) = match std::env::var("MONGODB_TEST_URI") {
            Ok(base) => (with_database(&base, database), None),
            Err(_) => {
                let ferretdb = support::ferretdb::start()?;
                (ferretdb.uri(database), Some(ferretdb))
            }
        };
        let store = Arc::new(
            MongoStore::connect(&uri)
                .await
                .expect("connect to the test server"),
        );
        Some(Fixture {
            store: store.clone(),
            mongo: Some(MongoFixture { store, ferretdb }),
            sqlite_dir: None,
        })
    }

    /// Drops the test's database on a shared server; a failed test keeps it for inspection.
    async fn finish(self) {
        if let Some(MongoFixture {
            store,
            ferretdb: None,
        }) = &self.mongo
        {
            store
                .database()
                .drop()
                .await
                .expect("drop the test database");
        }
    }
}

/// `base` (`mongodb://host:port/?options`) with `database` as its default database.
fn with_database(base: &str, database: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (base, None),
    };
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    let hosts = match head[scheme_end..].find('/') {
        Some(slash) => &head[..scheme_end + slash],
        None => head,
    };
    match query {
        Some(q) => format!("{hosts}/{database}?{q}"),
        None => format!("{hosts}/{database}"),
    }
}

/// Generates one test per contract function for each store.
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let fixture = super::Fixture::sqlite();
                    super::$name(fixture.store.clone()).await;
                }
            )*
        }

        mod mongo {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(fixture) = super::Fixture::mongo(stringify!($name)).await else {
                        return;
                    };
                    super::$name(fixture.store.clone()).await;
                    fixture.finish().await;
                }
            )*
        }
    };
}

contract_tests! {
    ping_and_emptiness,
    users_have_unique_emails,
    sessions_rotate_and_detect_reuse,
    products_round_trip_and_page_stably,
    product_updates_patch_only_given_fields,
    reservations_take_every_line,
    unknown_products_are_all_named_and_nothing_is_taken,
    every_short_line_is_reported_and_nothing_is_taken,
    concurrent_reservations_never_oversell,
    concurrent_multi_line_reservations_stay_consistent,
    released_stock_comes_back,
    orders_round_trip_and_list_newest_first,
    transitions_are_conditional,
    a_cancelled_order_gives_its_stock_back_once,
    racing_cancellations_return_stock_once,
    notifications_are_claimed_once_until_released,
    concurrent_notification_claims_have_one_winner,
    batch_transitions_answer_each_order_in_order,
    batch_claims_and_lookups_answer_each_item_in_order,
    the_first_idempotent_answer_wins,
    idempotency_records_expire_after_a_day,
    concurrent_idempotent_saves_agree_on_one_answer,
    the_outbox_lists_pending_orders_never_enqueued,
}

/// What only the MongoDB store has: the repair of interrupted stock returns, and surviving a
/// server restart.
mod mongo_only {
    use bson::doc;

    use super::*;

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
    async fn interrupt_cancellation(
        store: &MongoStore,
        order: &Order,
        claimed: &[(&Product, i64)],
    ) {
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
        let store = fixture.mongo.as_ref().unwrap().store.clone();
        let a = product(&*store, "a", 10).await;
        let b = product(&*store, "b", 10).await;
        let order = placed_order(&*store, &[(&a, 3), (&b, 2)]).await;
        let untouched = placed_order(&*store, &[(&a, 1)]).await;
        interrupt_cancellation(&store, &order, &[(&a, 3)]).await;
        assert_eq!(
            (stock(&*store, a.id).await, stock(&*store, b.id).await),
            (9, 8)
        );

        assert_eq!(store.repair_stock_returns().await.unwrap(), 1);
        assert_eq!(
            (stock(&*store, a.id).await, stock(&*store, b.id).await),
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
            (stock(&*store, a.id).await, stock(&*store, b.id).await),
            (9, 10)
        );
        assert_eq!(
            store
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
        let store = fixture.mongo.as_ref().unwrap().store.clone();
        let a = product(&*store, "a", 10).await;
        let order = placed_order(&*store, &[(&a, 4)]).await;
        interrupt_cancellation(&store, &order, &[]).await;
        assert_eq!(stock(&*store, a.id).await, 6);

        let retry = store
            .transition_order(
                order.id,
                OrderStatus::Pending,
                OrderStatus::Cancelled,
                None,
                now(),
            )
            .await
            .unwrap();
        assert!(
            matches!(retry, TransitionOutcome::Refused(Some(ref o)) if o.status == OrderStatus::Cancelled)
        );
        assert_eq!(stock(&*store, a.id).await, 10);
        let again = store
            .transition_order(
                order.id,
                OrderStatus::Pending,
                OrderStatus::Cancelled,
                None,
                now(),
            )
            .await
            .unwrap();
        assert!(matches!(again, TransitionOutcome::Refused(Some(_))));
        assert_eq!(stock(&*store, a.id).await, 10, "returned once");
        fixture.finish().await;
    }

    #[tokio::test]
    async fn an_outage_fails_fast_and_the_store_recovers_after_a_restart() {
        let Some(mut fixture) = Fixture::mongo("outage").await else {
            return;
        };
        let store = fixture.mongo.as_ref().unwrap().store.clone();
        let Some(ferretdb) = fixture.mongo.as_mut().unwrap().ferretdb.as_mut() else {
            eprintln!("SKIPPED: the outage test needs a FerretDB of its own");
            return;
        };
        let p = product(&*store, "kept", 7).await;

        ferretdb.kill();
        let started = std::time::Instant::now();
        match store.find_product(p.id).await {
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
        while let Err(e) = store.ping().await {
            assert!(
                std::time::Instant::now() < deadline,
                "never reconnected: {e}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(
            stock(&*store, p.id).await,
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
}
