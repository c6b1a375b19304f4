//! The email-claim contract behind "emails at least once": a claim is a lease on sending one
//! status email. It is refused while fresh and unsent, taken over once stale, never again once
//! marked sent; a claim given back is stale at once; the sweeper's list holds exactly the stale
//! unsent claims; and a second mark says the send was a duplicate.

use chrono::{TimeDelta, Utc};
use order_service::domain::{Id, OrderStatus};
use order_service::store::{Session, Stores};

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

    // The batch form answers each claim as the single call would, in order.
    let (b, c) = (Id::new(), Id::new());
    assert!(o.claim_notification(b, DONE, fresh_only()).await.unwrap());
    let batch = [(id, DONE), (b, DONE), (c, DONE)];
    let before = o
        .mark_notifications_sent(&batch, Utc::now(), keep())
        .await
        .unwrap();
    assert_eq!(before, vec![true, false, false]);
    let again = o
        .mark_notifications_sent(&batch, Utc::now(), keep())
        .await
        .unwrap();
    assert_eq!(again, vec![true, true, true]);
    assert!(!o
        .claim_notification(c, DONE, everything_stale())
        .await
        .unwrap());
}

fn session(expires_at: chrono::DateTime<Utc>) -> Session {
    Session {
        id: Id::new(),
        user_id: Id::new(),
        current_jti: "jti".into(),
        expires_at,
        revoked: false,
        created_at: super::now(),
    }
}

/// Retention: what is past its use goes, what is fresh (or still to be sent) stays.
async fn expired_records_are_purged_and_fresh_ones_stay(stores: Stores) {
    let now = super::now();
    let (old, fresh) = (
        session(now - TimeDelta::days(3)),
        session(now + TimeDelta::days(3)),
    );
    // The expired one last: a MongoDB store without TTL indexes purges at each insert.
    stores.accounts.insert_session(&fresh).await.unwrap();
    stores.accounts.insert_session(&old).await.unwrap();
    let o = &stores.orders;
    let (expired, kept, unsent) = (Id::new(), Id::new(), Id::new());
    o.mark_notification_sent(
        expired,
        DONE,
        now - TimeDelta::days(40),
        now - TimeDelta::days(10),
    )
    .await
    .unwrap();
    o.mark_notification_sent(kept, DONE, now, now + TimeDelta::days(30))
        .await
        .unwrap();
    assert!(o
        .claim_notification(unsent, DONE, fresh_only())
        .await
        .unwrap());

    let purged = stores
        .retention
        .purge_expired(now, now - TimeDelta::days(1))
        .await
        .unwrap();
    assert!(
        purged.sessions >= 1 && purged.notifications >= 1,
        "{purged:?}"
    );
    assert!(stores
        .accounts
        .find_session(old.id)
        .await
        .unwrap()
        .is_none());
    assert!(stores
        .accounts
        .find_session(fresh.id)
        .await
        .unwrap()
        .is_some());
    // The purged record no longer suppresses a claim; the kept one does; the unsent claim
    // survived (it is still the sweeper's).
    assert!(o
        .claim_notification(expired, DONE, fresh_only())
        .await
        .unwrap());
    assert!(!o
        .claim_notification(kept, DONE, everything_stale())
        .await
        .unwrap());
    let due = o
        .unsent_notifications(everything_stale(), 1000)
        .await
        .unwrap();
    assert!(due.contains(&(unsent, DONE)), "{due:?}");
}

contract_tests! {
    a_stale_unsent_claim_is_taken_over_and_a_sent_one_never,
    the_sweeper_lists_only_stale_unsent_claims,
    a_second_mark_reports_a_duplicate,
    expired_records_are_purged_and_fresh_ones_stay,
}
