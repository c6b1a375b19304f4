//! The FerretDB write lock (issue 14's last bullet, issue 12 item 3): a write never goes ahead
//! without it, and another holder's lease is judged by whether it is renewed, never by
//! comparing clocks. Each test plays the other process by writing the lock document itself.
//! On MongoDB there is no lock, and the tests return at once.

use std::time::{Duration, Instant};

use bson::doc;
use order_service::error::BackendError;
use order_service::store::Stores;

use super::{product, Fixture};

/// What the lock waits at most before it refuses a write (`write_lock`'s patience), with room.
const REFUSED_WITHIN: Duration = Duration::from_secs(12);

/// The lock document of another, live process, taken now and renewed every 100 ms until the
/// task is aborted. `expires_at` is what a process whose wall clock is off would write there.
async fn live_holder(
    db: &mongodb::Database,
    expires_at: bson::DateTime,
) -> tokio::task::JoinHandle<()> {
    let locks = db.collection::<bson::Document>("locks");
    locks
        .insert_one(doc! {
            "_id": "writes", "owner": "another-process", "renewals": 0_i64,
            "expiresAt": expires_at,
        })
        .await
        .expect("take the lock as another process");
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            locks
                .update_one(
                    doc! { "_id": "writes", "owner": "another-process" },
                    doc! { "$inc": { "renewals": 1 }, "$set": { "expiresAt": expires_at } },
                )
                .await
                .expect("renew the other process's lease");
        }
    })
}

/// Checks that a write is refused while another process holds the lock and renews it, its
/// clock `offset_ms` off ours; the lock document is still the holder's afterwards.
async fn refused_beside_live_holder(test: &str, offset_ms: i64) {
    let Some(fixture) = ferretdb_fixture(test).await else {
        return;
    };
    let db = fixture.mongo.as_ref().unwrap().store.database().clone();
    let expires_at =
        bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() + offset_ms);
    let holder = live_holder(&db, expires_at).await;
    assert_write_refused(&fixture.stores).await;
    let lock = db
        .collection::<bson::Document>("locks")
        .find_one(doc! { "_id": "writes" })
        .await
        .unwrap();
    assert_eq!(
        lock.as_ref().and_then(|l| l.get_str("owner").ok()),
        Some("another-process"),
        "the live holder's lock was taken from it: {lock:?}"
    );
    holder.abort();
}

/// A product insert that must wait for the lock: refused as unavailable, quickly enough, and
/// not applied.
async fn assert_write_refused(stores: &Stores) {
    let started = Instant::now();
    let outcome = super::catalogue_probe(stores).await;
    assert!(
        matches!(outcome, Err(BackendError::Unavailable { .. })),
        "a write went ahead while another process held the lock: {outcome:?}"
    );
    assert!(
        started.elapsed() < REFUSED_WITHIN,
        "refused only after {:?}",
        started.elapsed()
    );
    let (products, _) = stores
        .catalogue
        .list_products(super::page(1, 100))
        .await
        .unwrap();
    assert!(products.iter().all(|p| p.name != "probe"), "{products:?}");
}

async fn ferretdb_fixture(test: &str) -> Option<Fixture> {
    let fixture = Fixture::mongo(test).await?;
    if !fixture.mongo.as_ref().unwrap().store.serialises_writes() {
        eprintln!("SKIPPED: the server applies updates atomically; there is no lock");
        return None;
    }
    Some(fixture)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_never_goes_ahead_while_another_process_holds_the_lock() {
    // Its lease runs for another hour by anyone's clock: waiting longer does not make it ours.
    refused_beside_live_holder("lock_held", 3_600_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_holder_whose_clock_is_behind_keeps_its_lock() {
    // Its clock is an hour behind ours: by our clock its lease ran out long ago, yet it renews.
    refused_beside_live_holder("lock_skewed", -3_600_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_is_taken_over_after_one_unrenewed_lease() {
    let Some(fixture) = ferretdb_fixture("lock_dead").await else {
        return;
    };
    let db = fixture.mongo.as_ref().unwrap().store.database().clone();
    let far = bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() + 3_600_000);
    db.collection::<bson::Document>("locks")
        .insert_one(
            doc! { "_id": "writes", "owner": "crashed", "renewals": 0_i64, "expiresAt": far },
        )
        .await
        .unwrap();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(40);
    // Writes are refused until the holder has been silent for a whole lease, then go through.
    loop {
        match super::catalogue_probe(&fixture.stores).await {
            Ok(()) => break,
            Err(BackendError::Unavailable { .. }) if Instant::now() < deadline => {}
            Err(e) => panic!("the dead holder's lock was never taken over: {e:?}"),
        }
    }
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "taken over after {:?}, before a lease could have run out",
        started.elapsed()
    );
    // And the lock is free again afterwards, for this process or any other.
    product(&fixture.stores, "after", 1).await;
    fixture.finish().await;
}
