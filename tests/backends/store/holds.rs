//! The stock-hold contract: stock a reservation took is recognisable by its hold, so whatever
//! became of the reservation's reply or of its order, it comes back exactly once when the order
//! was not stored with it, and stays taken when it was.

use chrono::TimeDelta;
use order_service::domain::Id;
use order_service::store::{Hold, HoldSweep, ReserveOutcome, Stores};

use super::{line, now, order_for, product, stock};

/// A hold made `ago` before now, for `order_id`.
fn hold_from(order_id: Id, ago: TimeDelta) -> Hold {
    Hold {
        id: Id::new(),
        order_id,
        at: now() - ago,
    }
}

async fn reserve(stores: &Stores, lines: &[order_service::domain::OrderLine], hold: &Hold) {
    let outcome = stores.catalogue.reserve_stock(lines, hold).await.unwrap();
    assert!(
        matches!(outcome, ReserveOutcome::Reserved(_)),
        "{outcome:?}"
    );
}

async fn a_release_gives_back_what_its_hold_took_once(stores: Stores) {
    let a = product(&stores, "a", 5).await;
    let b = product(&stores, "b", 5).await;
    let lines = [line(a.id, 2), line(b.id, 1)];
    let held = Hold::new(Id::new());
    reserve(&stores, &lines, &held).await;
    stores.catalogue.release_stock(&lines, &held).await.unwrap();
    stores.catalogue.release_stock(&lines, &held).await.unwrap();
    assert_eq!(
        (stock(&stores, a.id).await, stock(&stores, b.id).await),
        (5, 5)
    );
    // A hold that took nothing gives nothing back.
    stores
        .catalogue
        .release_stock(&lines, &Hold::new(Id::new()))
        .await
        .unwrap();
    assert_eq!(
        (stock(&stores, a.id).await, stock(&stores, b.id).await),
        (5, 5)
    );
}

async fn the_sweeper_gives_back_a_stale_hold_whose_order_was_never_stored(stores: Stores) {
    let a = product(&stores, "a", 5).await;
    let b = product(&stores, "b", 5).await;
    let lines = [line(a.id, 2), line(b.id, 3)];
    let stale = hold_from(Id::new(), TimeDelta::minutes(10));
    let fresh = hold_from(Id::new(), TimeDelta::zero());
    reserve(&stores, &lines, &stale).await;
    reserve(&stores, &[line(a.id, 1)], &fresh).await;
    let bound = now() - TimeDelta::minutes(1);
    let swept = stores.catalogue.sweep_holds(bound, 100).await.unwrap();
    assert_eq!(
        swept,
        HoldSweep {
            returned: 2,
            cleared: 0
        }
    );
    assert_eq!(
        (stock(&stores, a.id).await, stock(&stores, b.id).await),
        (4, 5),
        "the stale hold came back, the fresh one (its order may still be stored) did not"
    );
    let again = stores.catalogue.sweep_holds(bound, 100).await.unwrap();
    assert_eq!(again, HoldSweep::default(), "once");
    // Its own release after the sweep gives nothing more.
    stores
        .catalogue
        .release_stock(&lines, &stale)
        .await
        .unwrap();
    assert_eq!(stock(&stores, a.id).await, 4);
}

async fn the_sweeper_keeps_the_stock_of_an_order_stored_with_its_hold(stores: Stores) {
    let a = product(&stores, "a", 5).await;
    let user = Id::new();
    let mut order = order_for(user, &[(&a, 2)], now());
    let held = hold_from(order.id, TimeDelta::minutes(10));
    order.created_at = held.at;
    reserve(&stores, &[line(a.id, 2)], &held).await;
    stores.orders.insert_order(&order).await.unwrap();
    // Its clearing was lost: the sweeper forgets the hold, and the stock stays taken.
    let bound = now() - TimeDelta::minutes(1);
    let swept = stores.catalogue.sweep_holds(bound, 100).await.unwrap();
    assert_eq!(
        swept,
        HoldSweep {
            returned: 0,
            cleared: 1
        }
    );
    assert_eq!(stock(&stores, a.id).await, 3);
    assert_eq!(
        stores.catalogue.sweep_holds(bound, 100).await.unwrap(),
        HoldSweep::default()
    );
}

async fn another_attempt_at_a_stored_order_gets_its_stock_back(stores: Stores) {
    // Two attempts at one order id (a retry with the same Idempotency-Key after a 503): the
    // second stored the order; the first one's hold is given back though the order exists.
    let a = product(&stores, "a", 5).await;
    let mut order = order_for(Id::new(), &[(&a, 1)], now());
    let first = hold_from(order.id, TimeDelta::minutes(11));
    let second = hold_from(order.id, TimeDelta::minutes(10));
    reserve(&stores, &[line(a.id, 1)], &first).await;
    reserve(&stores, &[line(a.id, 1)], &second).await;
    order.created_at = second.at;
    stores.orders.insert_order(&order).await.unwrap();
    let swept = stores
        .catalogue
        .sweep_holds(now() - TimeDelta::minutes(1), 100)
        .await
        .unwrap();
    assert_eq!(
        swept,
        HoldSweep {
            returned: 1,
            cleared: 1
        }
    );
    assert_eq!(stock(&stores, a.id).await, 4, "one order, one unit");
}

async fn a_cleared_hold_is_never_swept(stores: Stores) {
    let a = product(&stores, "a", 5).await;
    let held = hold_from(Id::new(), TimeDelta::minutes(10));
    reserve(&stores, &[line(a.id, 2)], &held).await;
    stores
        .catalogue
        .clear_holds(&[(held, vec![line(a.id, 2)])])
        .await
        .unwrap();
    let swept = stores
        .catalogue
        .sweep_holds(now() - TimeDelta::minutes(1), 100)
        .await
        .unwrap();
    assert_eq!(swept, HoldSweep::default());
    assert_eq!(stock(&stores, a.id).await, 3);
}

contract_tests!(
    a_release_gives_back_what_its_hold_took_once,
    the_sweeper_gives_back_a_stale_hold_whose_order_was_never_stored,
    the_sweeper_keeps_the_stock_of_an_order_stored_with_its_hold,
    another_attempt_at_a_stored_order_gets_its_stock_back,
    a_cleared_hold_is_never_swept,
);
