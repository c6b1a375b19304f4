//! `write_lock`'s decisions that need no server: what becomes of the lease after a write.

use super::*;

/// A lock on a server that is never contacted: `after_write` decides from this process's
/// state alone. Its wake-ups' Redis is not there either; their tasks just fail to connect.
async fn lock(max_hold: Duration) -> SharedWriteLock {
    let client = mongodb::Client::with_uri_str("mongodb://127.0.0.1:9")
        .await
        .unwrap();
    let lock = SharedWriteLock::new(
        client.database("none").collection("locks"),
        Timing {
            max_hold,
            ..Timing::default()
        },
    );
    let redis = redis::Client::open("redis://127.0.0.1:9").unwrap();
    let _ = lock
        .wakeups
        .set(LockWakeups::start(redis, "test-channel".into()));
    lock
}

fn lease() -> Lease {
    Lease {
        owner: "us".into(),
        renewals: 0,
        since: Instant::now(),
        taken: Instant::now(),
    }
}

#[tokio::test]
async fn the_lease_goes_to_another_process_s_request_unless_a_write_here_is_due() {
    let lock = lock(Duration::from_secs(60)).await;
    assert_eq!(
        lock.after_write(&lease()),
        AfterWrite::Release,
        "nobody queued"
    );

    let _current = lock.turns.take(Urgency::Background).await;
    let queued = Queued::join(&lock.queued);
    let background = lock.turns.take(Urgency::Background);
    let mut background = std::pin::pin!(background);
    assert!(futures_util::poll!(background.as_mut()).is_pending());
    assert_eq!(
        lock.after_write(&lease()),
        AfterWrite::Keep,
        "no want heard"
    );

    let wakeups = lock.wakeups.get().unwrap();
    wakeups.hear_wanted();
    assert_eq!(
        lock.after_write(&lease()),
        AfterWrite::Yield,
        "another process's request waits, and our next write is not due"
    );
    assert_eq!(
        lock.after_write(&lease()),
        AfterWrite::Keep,
        "one want, one yield"
    );

    let request = lock.turns.take(Urgency::Request);
    let mut request = std::pin::pin!(request);
    assert!(futures_util::poll!(request.as_mut()).is_pending());
    wakeups.hear_wanted();
    assert_eq!(
        lock.after_write(&lease()),
        AfterWrite::Keep,
        "a request of ours waits too"
    );
    drop(queued);
}

#[tokio::test]
async fn the_lease_is_given_back_after_max_hold_whatever_waits() {
    let lock = lock(Duration::ZERO).await;
    let _queued = Queued::join(&lock.queued);
    assert_eq!(lock.after_write(&lease()), AfterWrite::Release);
}
