//! `GET /api/orders/events`: every change to the caller's orders (an admin's: everyone's), and
//! a resume that replays from the store what changed while the client was away.

use super::client::*;
use super::shop;
use crate::harness::*;

#[tokio::test]
async fn a_customer_sees_only_their_orders_and_an_admin_sees_all() {
    let srv = TestServer::serve().await;
    let s = shop(&srv).await;
    let other = srv.new_user().await;
    let mut mine = open_ok(&srv, "/api/orders/events", &s.customer.access, None).await;
    let mut theirs = open_ok(&srv, "/api/orders/events", &other.access, None).await;
    let mut admin = open_ok(&srv, "/api/orders/events", &s.admin.access, None).await;

    // The other customer's order first: had it leaked into the first stream, it would come
    // there before the first customer's own.
    let their_order = str_of(&srv.place_order(&other, &[(&s.product, 1)]).await["id"]);
    let seen_by_admin = admin.until(&their_order, "completed").await;
    let my_order = str_of(&srv.place_order(&s.customer, &[(&s.product, 1)]).await["id"]);
    let seen_by_me = mine.until(&my_order, "completed").await;
    let seen_by_them = theirs.until(&their_order, "completed").await;
    let seen_by_admin_later = admin.until(&my_order, "completed").await;

    let orders_in = |frames: &[Frame]| -> Vec<String> {
        summary(frames).into_iter().map(|(id, _)| id).collect()
    };
    assert!(
        orders_in(&seen_by_me).iter().all(|id| *id == my_order),
        "another user's order on a customer's stream: {:?}",
        summary(&seen_by_me)
    );
    assert!(orders_in(&seen_by_them).iter().all(|id| *id == their_order));
    // Placing is a change too: each stream saw its orders from pending.
    for (frames, order) in [(&seen_by_me, &my_order), (&seen_by_them, &their_order)] {
        assert_eq!(
            summary(frames).first(),
            Some(&(order.clone(), "pending".to_string())),
            "{:?}",
            summary(frames)
        );
    }
    assert!(orders_in(&seen_by_admin).contains(&their_order));
    assert!(orders_in(&seen_by_admin_later).contains(&my_order));
    for frames in [
        &seen_by_me,
        &seen_by_them,
        &seen_by_admin,
        &seen_by_admin_later,
    ] {
        assert!(frames.iter().all(|f| f.id.is_some()), "an event without id");
    }
}

#[tokio::test]
async fn a_resumed_stream_replays_the_orders_changed_while_away() {
    let srv = TestServer::serve().await;
    let s = shop(&srv).await;
    let mut stream = open_ok(&srv, "/api/orders/events", &s.customer.access, None).await;
    let first = str_of(&srv.place_order(&s.customer, &[(&s.product, 1)]).await["id"]);
    let seen = stream.until(&first, "completed").await;
    let last_id = seen.last().unwrap().id.clone().unwrap();
    drop(stream);

    // Placed and completed while the client was away.
    let missed = str_of(&srv.place_order(&s.customer, &[(&s.product, 1)]).await["id"]);
    let done = srv
        .poll_order_status(&s.customer, &missed, "completed")
        .await;

    let mut resumed = open_ok(
        &srv,
        "/api/orders/events",
        &s.customer.access,
        Some(&last_id),
    )
    .await;
    let replayed = resumed.until(&missed, "completed").await;
    let event = replayed.last().unwrap();
    assert_eq!(event.json()["order"], done);
    // Ids on the resumed stream go on from where the client was.
    let parsed = |id: &str| id.parse::<i64>().expect("a numeric id");
    for f in &replayed {
        assert!(
            parsed(f.id.as_deref().unwrap()) >= parsed(&last_id),
            "{f:?} after {last_id}"
        );
    }
    // Only the caller's orders were replayed.
    assert!(summary(&replayed)
        .iter()
        .all(|(id, _)| *id == first || *id == missed));
}
