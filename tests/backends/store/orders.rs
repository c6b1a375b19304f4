//! The `Orders` contract: orders listed newest first, conditional transitions that give a
//! failed or cancelled order's stock back exactly once, email claims made once, batch forms
//! that answer item by item, the outbox's view of orders never confirmed on the queue, and the stranded-order sweeper's
//! claims.

use chrono::{DateTime, TimeDelta, Utc};
use order_service::domain::{Id, Order, OrderStatus};
use order_service::error::BackendError;
use order_service::store::{Stores, TransitionOutcome};

use super::{cancel, moved, now, order_for, page, placed_order, product, stock};

async fn orders_round_trip_and_list_newest_first(stores: Stores) {
    let p = product(&stores, "a", 100).await;
    let q = product(&stores, "b", 100).await;
    let (ann, bob) = (Id::new(), Id::new());
    let start = now();
    let mut orders = vec![];
    for i in 0..3 {
        let o = order_for(ann, &[(&p, 1), (&q, 2)], start + TimeDelta::seconds(i));
        stores.orders.insert_order(&o).await.unwrap();
        assert_eq!(
            stores.orders.find_order(o.id).await.unwrap(),
            Some(o.clone())
        );
        orders.push(o);
    }
    // Placed in the same instant: the later id comes first.
    let same = start + TimeDelta::seconds(5);
    for _ in 0..2 {
        let o = order_for(ann, &[(&p, 1)], same);
        stores.orders.insert_order(&o).await.unwrap();
        orders.push(o);
    }
    stores
        .orders
        .insert_order(&order_for(bob, &[(&p, 1)], start + TimeDelta::seconds(9)))
        .await
        .unwrap();
    assert!(matches!(
        stores.orders.insert_order(&orders[0]).await,
        Err(BackendError::Duplicate)
    ));

    let newest_first: Vec<Id> = orders.iter().rev().map(|o| o.id).collect();
    let (first, total) = stores.orders.list_orders(ann, page(1, 2)).await.unwrap();
    assert_eq!(total, 5);
    assert_eq!(
        first.iter().map(|o| o.id).collect::<Vec<_>>(),
        newest_first[0..2]
    );
    let (second, _) = stores.orders.list_orders(ann, page(2, 2)).await.unwrap();
    assert_eq!(
        second.iter().map(|o| o.id).collect::<Vec<_>>(),
        newest_first[2..4]
    );
    let (third, total) = stores.orders.list_orders(ann, page(3, 2)).await.unwrap();
    assert_eq!(third, vec![orders[0].clone()]);
    assert_eq!(total, 5);
    let (none, total) = stores
        .orders
        .list_orders(Id::new(), page(1, 10))
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(total, 0);
    assert!(stores.orders.find_order(Id::new()).await.unwrap().is_none());
}

async fn transitions_are_conditional(stores: Stores) {
    let p = product(&stores, "a", 10).await;
    let order = placed_order(&stores, &[(&p, 2)]).await;
    assert_eq!(stock(&stores, p.id).await, 8);
    let later = order.created_at + TimeDelta::seconds(3);

    match stores
        .orders
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
        stores
            .orders
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
        stores
            .orders
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
    assert_eq!(
        stores.orders.find_order(order.id).await.unwrap(),
        Some(processing)
    );
    assert_eq!(
        stock(&stores, p.id).await,
        8,
        "processing keeps the reservation"
    );

    let failed = moved(
        stores
            .orders
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
        stock(&stores, p.id).await,
        10,
        "a failed order gives its stock back"
    );
    assert_eq!(
        stores.orders.find_order(order.id).await.unwrap(),
        Some(failed)
    );

    // A completed order keeps its stock.
    let done = placed_order(&stores, &[(&p, 4)]).await;
    for (from, to) in [
        (OrderStatus::Pending, OrderStatus::Processing),
        (OrderStatus::Processing, OrderStatus::Completed),
    ] {
        moved(
            stores
                .orders
                .transition_order(done.id, from, to, None, later)
                .await
                .unwrap(),
        );
    }
    assert_eq!(stock(&stores, p.id).await, 6);
}

async fn a_cancelled_order_gives_its_stock_back_once(stores: Stores) {
    let a = product(&stores, "a", 10).await;
    let order = placed_order(&stores, &[(&a, 4)]).await;
    moved(cancel(&stores, order.id).await);
    assert_eq!(stock(&stores, a.id).await, 10);
    assert!(matches!(
        cancel(&stores, order.id).await,
        TransitionOutcome::Refused(Some(_))
    ));
    assert!(matches!(
        stores
            .orders
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
        stock(&stores, a.id).await,
        10,
        "refused transitions return nothing"
    );
}

async fn racing_cancellations_return_stock_once(stores: Stores) {
    let a = product(&stores, "a", 10).await;
    let b = product(&stores, "b", 5).await;
    let order = placed_order(&stores, &[(&a, 3), (&b, 5)]).await;
    assert_eq!(
        (stock(&stores, a.id).await, stock(&stores, b.id).await),
        (7, 0)
    );

    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let stores = stores.clone();
            tokio::spawn(async move { cancel(&stores, order.id).await })
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
        (stock(&stores, a.id).await, stock(&stores, b.id).await),
        (10, 5)
    );
}

/// A lease bound no claim is older than (an hour ago): only unclaimed or released emails are
/// taken.
pub(super) fn fresh_only() -> DateTime<Utc> {
    Utc::now() - TimeDelta::hours(1)
}

async fn notifications_are_claimed_once_until_released(stores: Stores) {
    let id = Id::new();
    let claim = |id, status| stores.orders.claim_notification(id, status, fresh_only());
    assert!(claim(id, OrderStatus::Completed).await.unwrap());
    assert!(!claim(id, OrderStatus::Completed).await.unwrap());
    assert!(claim(id, OrderStatus::Processing).await.unwrap());
    assert!(claim(Id::new(), OrderStatus::Completed).await.unwrap());
    stores
        .orders
        .release_notification(id, OrderStatus::Completed)
        .await
        .unwrap();
    assert!(claim(id, OrderStatus::Completed).await.unwrap());
    assert!(!claim(id, OrderStatus::Processing).await.unwrap());
    stores
        .orders
        .release_notification(Id::new(), OrderStatus::Failed)
        .await
        .expect("releasing an unclaimed notification is a no-op");
}

async fn concurrent_notification_claims_have_one_winner(stores: Stores) {
    let id = Id::new();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let stores = stores.clone();
            tokio::spawn(async move {
                stores
                    .orders
                    .claim_notification(id, OrderStatus::Completed, fresh_only())
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
async fn batch_transitions_answer_each_order_in_order(stores: Stores) {
    let p = product(&stores, "a", 10).await;
    let first = placed_order(&stores, &[(&p, 1)]).await;
    let second = placed_order(&stores, &[(&p, 2)]).await;
    let unknown = Id::new();
    let later = first.created_at.max(second.created_at) + TimeDelta::seconds(1);
    // `first` already moved on: the batch must refuse it and still move the others.
    moved(
        stores
            .orders
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
    let outcomes = stores
        .orders
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
    let failed = stores
        .orders
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
    assert_eq!(stock(&stores, p.id).await, 10);
    assert!(stores
        .orders
        .transition_orders(&[], OrderStatus::Pending, OrderStatus::Processing, later)
        .await
        .unwrap()
        .is_empty());
}

async fn batch_claims_answer_each_claim_in_order(stores: Stores) {
    let (a, b) = (Id::new(), Id::new());
    assert!(stores
        .orders
        .claim_notification(a, OrderStatus::Completed, fresh_only())
        .await
        .unwrap());
    let claimed = stores
        .orders
        .claim_notifications(
            &[
                (a, OrderStatus::Completed),
                (b, OrderStatus::Completed),
                (a, OrderStatus::Failed),
            ],
            fresh_only(),
        )
        .await
        .unwrap();
    assert_eq!(claimed, vec![false, true, true]);
    assert!(!stores
        .orders
        .claim_notification(b, OrderStatus::Completed, fresh_only())
        .await
        .unwrap());
}

async fn the_outbox_lists_pending_orders_never_enqueued(stores: Stores) {
    let p = product(&stores, "a", 10).await;
    let old = now() - TimeDelta::minutes(5);
    let orders: Vec<Order> = (0..4)
        .map(|i| order_for(Id::new(), &[(&p, 1)], old + TimeDelta::seconds(i)))
        .collect();
    let fresh = order_for(Id::new(), &[(&p, 1)], now());
    for o in orders.iter().chain([&fresh]) {
        stores.orders.insert_order(o).await.unwrap();
    }
    let (sent, unsent_a, moved_on, unsent_b) = (&orders[0], &orders[1], &orders[2], &orders[3]);
    stores.orders.mark_enqueued(sent.id).await.unwrap();
    stores
        .orders
        .mark_enqueued(Id::new())
        .await
        .expect("unknown orders are ignored");
    moved(
        stores
            .orders
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
    let due = stores.orders.unenqueued_orders(cutoff, 10).await.unwrap();
    assert_eq!(due, vec![unsent_a.id, unsent_b.id], "oldest first");
    assert_eq!(
        stores.orders.unenqueued_orders(cutoff, 1).await.unwrap(),
        vec![unsent_a.id]
    );

    stores.orders.mark_enqueued(unsent_a.id).await.unwrap();
    assert_eq!(
        stores.orders.unenqueued_orders(cutoff, 10).await.unwrap(),
        vec![unsent_b.id]
    );
    assert_eq!(
        stores
            .orders
            .unenqueued_orders(now() + TimeDelta::minutes(1), 10)
            .await
            .unwrap(),
        vec![unsent_b.id, fresh.id]
    );
    // Marks made together, as placed orders' marks are; unknown ids among them are ignored.
    stores
        .orders
        .mark_enqueued_many(&[unsent_b.id, Id::new(), fresh.id])
        .await
        .unwrap();
    stores.orders.mark_enqueued_many(&[]).await.unwrap();
    assert!(stores
        .orders
        .unenqueued_orders(now() + TimeDelta::minutes(1), 10)
        .await
        .unwrap()
        .is_empty());
    // Enqueuing does not change what the client sees.
    assert_eq!(
        stores.orders.find_order(sent.id).await.unwrap().as_ref(),
        Some(sent)
    );
}

async fn stuck_orders_are_the_unfinished_ones_unchanged_since_the_bound(stores: Stores) {
    let p = product(&stores, "a", 10).await;
    let old = now() - TimeDelta::minutes(5);
    let orders: Vec<Order> = (0..4)
        .map(|i| order_for(Id::new(), &[(&p, 1)], old + TimeDelta::seconds(i)))
        .collect();
    let fresh = order_for(Id::new(), &[(&p, 1)], now());
    for o in orders.iter().chain([&fresh]) {
        stores.orders.insert_order(o).await.unwrap();
    }
    let (pending, processing, completed, sent) = (&orders[0], &orders[1], &orders[2], &orders[3]);
    // Whatever the outbox flag says: a sent order can be stranded too.
    stores.orders.mark_enqueued(sent.id).await.unwrap();
    let step = |id, from, to, at| {
        let stores = stores.clone();
        async move {
            moved(
                stores
                    .orders
                    .transition_order(id, from, to, None, at)
                    .await
                    .unwrap(),
            )
        }
    };
    let (p_, pr, c) = (
        OrderStatus::Pending,
        OrderStatus::Processing,
        OrderStatus::Completed,
    );
    step(processing.id, p_, pr, old + TimeDelta::seconds(10)).await;
    step(completed.id, p_, pr, old + TimeDelta::seconds(11)).await;
    step(completed.id, pr, c, old + TimeDelta::seconds(12)).await;

    let cutoff = now() - TimeDelta::minutes(1);
    assert_eq!(
        stores.orders.stuck_orders(cutoff, 10).await.unwrap(),
        vec![pending.id, sent.id, processing.id],
        "not terminal, oldest change first"
    );
    assert_eq!(
        stores.orders.stuck_orders(cutoff, 1).await.unwrap(),
        vec![pending.id]
    );
    assert!(stores
        .orders
        .stuck_orders(old - TimeDelta::minutes(1), 10)
        .await
        .unwrap()
        .is_empty());
}

async fn changes_since_are_listed_oldest_change_first_per_user_or_for_all(stores: Stores) {
    let p = product(&stores, "a", 10).await;
    let start = now() - TimeDelta::minutes(5);
    let (ann, bob) = (Id::new(), Id::new());
    let early = order_for(ann, &[(&p, 1)], start);
    let bobs = order_for(bob, &[(&p, 1)], start + TimeDelta::seconds(1));
    let later = order_for(ann, &[(&p, 1)], start + TimeDelta::seconds(2));
    for o in [&early, &bobs, &later] {
        stores.orders.insert_order(o).await.unwrap();
    }
    // The earliest order changes last: it moves to the end.
    let moved_at = start + TimeDelta::seconds(3);
    let early = moved(
        stores
            .orders
            .transition_order(
                early.id,
                OrderStatus::Pending,
                OrderStatus::Processing,
                None,
                moved_at,
            )
            .await
            .unwrap(),
    );
    assert_eq!(early.updated_at, moved_at);
    let ids = |orders: Vec<Order>| orders.into_iter().map(|o| o.id).collect::<Vec<_>>();
    let changes = |user, since, limit| {
        let stores = stores.clone();
        async move {
            stores
                .orders
                .orders_changed_since(user, since, limit)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        ids(changes(None, start, 10).await),
        vec![bobs.id, later.id, early.id],
        "everyone's, oldest change first"
    );
    assert_eq!(
        ids(changes(Some(ann), start, 10).await),
        vec![later.id, early.id]
    );
    // `since` is inclusive: a reader that resumes at a change sees it again, never misses it.
    assert_eq!(
        ids(changes(Some(ann), start + TimeDelta::seconds(2), 10).await),
        vec![later.id, early.id]
    );
    assert_eq!(ids(changes(None, start, 1).await), vec![bobs.id]);
    let read_back = changes(Some(ann), moved_at, 10).await;
    assert_eq!(read_back, vec![early], "each order as it is now");
    assert!(changes(None, moved_at + TimeDelta::milliseconds(1), 10)
        .await
        .is_empty());
}

async fn stranded_orders_are_claimed_once_and_then_after_a_doubling_wait(stores: Stores) {
    let p = product(&stores, "a", 10).await;
    let t0 = now();
    let at = |minutes| t0 + TimeDelta::minutes(minutes);
    let (older, old, done) = (
        order_for(Id::new(), &[(&p, 1)], at(-5)),
        order_for(Id::new(), &[(&p, 1)], at(-4)),
        order_for(Id::new(), &[(&p, 1)], at(-6)),
    );
    let fresh = order_for(Id::new(), &[(&p, 1)], t0);
    for o in [&older, &old, &done, &fresh] {
        stores.orders.insert_order(o).await.unwrap();
    }
    let (pending, processing, completed) = (
        OrderStatus::Pending,
        OrderStatus::Processing,
        OrderStatus::Completed,
    );
    let finish = |id, when| {
        let stores = stores.clone();
        async move {
            for (from, to) in [(pending, processing), (processing, completed)] {
                let outcome = stores.orders.transition_order(id, from, to, None, when);
                moved(outcome.await.unwrap());
            }
        }
    };
    finish(done.id, at(-6)).await;
    let bound = std::time::Duration::from_secs(60);
    let claim = |when| {
        let stores = stores.clone();
        async move { stores.orders.claim_stranded(when, bound, 10).await.unwrap() }
    };

    // Four sweepers at once (four processes): each stranded order is claimed by one of them.
    let claims = futures_util::future::join_all((0..4).map(|_| claim(t0))).await;
    let mut claimed: Vec<Id> = claims.concat();
    claimed.sort();
    let mut stranded = vec![older.id, old.id];
    stranded.sort();
    assert_eq!(
        claimed, stranded,
        "each once, and neither the done nor the fresh one"
    );
    assert!(claim(t0).await.is_empty(), "claimed, so not due again yet");

    finish(fresh.id, t0).await;

    // Each is due again after as long as it had been unchanged: 4 and 5 minutes.
    assert!(claim(at(3)).await.is_empty());
    assert_eq!(claim(at(4)).await, vec![old.id]);
    assert_eq!(claim(at(5)).await, vec![older.id]);
    // The next wait is twice as long, capped at 8 bounds: 5 + 8 minutes. One that completed
    // meanwhile is not claimed again.
    finish(old.id, at(6)).await;
    assert!(claim(at(12)).await.is_empty());
    assert_eq!(claim(at(13)).await, vec![older.id]);
}

contract_tests! {
    stranded_orders_are_claimed_once_and_then_after_a_doubling_wait,
    changes_since_are_listed_oldest_change_first_per_user_or_for_all,
    orders_round_trip_and_list_newest_first,
    transitions_are_conditional,
    a_cancelled_order_gives_its_stock_back_once,
    racing_cancellations_return_stock_once,
    notifications_are_claimed_once_until_released,
    concurrent_notification_claims_have_one_winner,
    batch_transitions_answer_each_order_in_order,
    batch_claims_answer_each_claim_in_order,
    the_outbox_lists_pending_orders_never_enqueued,
    stuck_orders_are_the_unfinished_ones_unchanged_since_the_bound,
}
