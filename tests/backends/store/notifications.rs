//! The email-claim contract behind "emails at least once": a claim is a lease on sending one
//! status email. It is refused while fresh and unsent, taken over once stale, never again once
//! marked sent; a claim given back is stale at once; the sweeper's list holds exactly the stale
//! unsent claims; and a second mark says the send was a duplicate.

use chrono::{TimeDelta, Utc};
use order_service::domain::{Id, OrderStatus};
use order_service::store::Stores;

use super::orders::fresh_only;

const DONE: OrderStatus = OrderStatus::Completed;

/// A lease bound in the future: every unsent claim counts as stale.
fn everything_stale() -> chrono::DateTime<Utc> {
    Utc::now() + TimeDelta::hours(1)
}

fn keep() -> chrono::DateTime<Utc> {
    Utc::now() + TimeDelta::days(30)
}

async fn a_stale_unsent_claim_is_taken_over_and_a_sent_one_never(stores: Stores) {
    let (a, b) = (Id::new(), Id::new());
    let o = &stores.orders;
    assert!(o.claim_notification(a, DONE, fresh_only()).await.unwrap());
    assert!(o.claim_notification(b, DONE, fresh_only()).await.unwrap());
    // Fresh: another caller waits for the lease.
    assert!(!o.claim_notification(a, DONE, fresh_only()).await.unwrap());
    // Stale and unsent: its sender is presumed dead, the email is taken over.
    assert!(o
        .claim_notification(a, DONE, everything_stale())
        .await
        .unwrap());
    // Sent: never again, however stale.
    assert!(!o
        .mark_notification_sent(b, DONE, Utc::now(), keep())
        .await
        .unwrap());
    assert!(!o
        .claim_notification(b, DONE, everything_stale())
        .await
        .unwrap());
    let batch = o
        .claim_notifications(&[(a, DONE), (b, DONE)], everything_stale())
        .await
        .unwrap();
    assert_eq!(batch, vec![true, false]);
}

async fn the_sweeper_lists_only_stale_unsent_claims(stores: Stores) {
    let (sent, unsent, released) = (Id::new(), Id::new(), Id::new());
    let o = &stores.orders;
    for id in [sent, unsent, released] {
        assert!(o.claim_notification(id, DONE, fresh_only()).await.unwrap());
    }
    o.mark_notification_sent(sent, DONE, Utc::now(), keep())
        .await
        .unwrap();
    o.release_notification(released, DONE).await.unwrap();

    // With an hour's lease only the claim given back is due.
    let due = o.unsent_notifications(fresh_only(), 100).await.unwrap();
    assert!(due.contains(&(released, DONE)), "{due:?}");
    assert!(!due.contains(&(unsent, DONE)), "{due:?}");
    assert!(!due.contains(&(sent, DONE)), "{due:?}");
    // Past the lease the unsent one is due too; the sent one never.
    let due = o
        .unsent_notifications(everything_stale(), 100)
        .await
        .unwrap();
    assert!(
        due.contains(&(released, DONE)) && due.contains(&(unsent, DONE)),
        "{due:?}"
    );
    assert!(!due.contains(&(sent, DONE)), "{due:?}");
    // Oldest first: the released claim's time went back to the epoch.
    assert_eq!(due.first(), Some(&(released, DONE)), "{due:?}");
    // A released claim is taken at once by the next caller.
    assert!(o
        .claim_notification(released, DONE, fresh_only())
        .await
        .unwrap());
    // Releasing a sent claim changes nothing.
    o.release_notification(sent, DONE).await.unwrap();
    assert!(!o
        .claim_notification(sent, DONE, everything_stale())
        .await
        .unwrap());
}

async fn a_second_mark_reports_a_duplicate(stores: Stores) {
    let id = Id::new();
    let o = &stores.orders;
    assert!(o.claim_notification(id, DONE, fresh_only()).await.unwrap());
    assert!(!o
        .mark_notification_sent(id, DONE, Utc::now(), keep())
        .await
        .unwrap());
    assert!(o
        .mark_notification_sent(id, DONE, Utc::now(), keep())
        .await
        .unwrap());
    // A mark with no claim (a record purged) is recorded, and is no duplicate.
    let other = Id::new();
    assert!(!o
        .mark_notification_sent(other, DONE, Utc::now(), keep())
        .await
        .unwrap());
    assert!(!o
        .claim_notification(other, DONE, everything_stale())
        .await
        .unwrap());
}

contract_tests! {
    a_stale_unsent_claim_is_taken_over_and_a_sent_one_never,
    the_sweeper_lists_only_stale_unsent_claims,
    a_second_mark_reports_a_duplicate,
}
