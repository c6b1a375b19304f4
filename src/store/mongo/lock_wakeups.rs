//! Waking the processes that wait for the FerretDB write lock when its holder gives it back,
//! through Redis pub/sub, instead of having them look at the lock document every few
//! milliseconds.
//!
//! The holder publishes on one channel per database each time it deletes its lock document
//! (`released`), without waiting: a signal queued while one is being sent is the same news.
//! Every process subscribes, and a message wakes its waiting writer (`notify`) at once. Pub/sub
//! delivers at most once, so a waiter also looks at the lock document every `WATCH_EVERY`
//! whatever happens: that catches a lost message, a Redis outage, and a holder that died
//! without releasing (judged by watching its lease, as before; see `write_lock`). While the
//! subscription is down (`listening` is false) waiters look as often as they did without Redis.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, Notify};

/// Bound of one connect, subscribe or publish.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Wait before subscribing again after the subscription broke.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// The channel of one database's lock, under the deployment's key prefix.
pub fn channel(prefix: &str, database: &str) -> String {
    format!("{prefix}ferretdb-lock-released:{database}")
}

/// See the module comment.
pub(super) struct LockWakeups {
    released: Notify,
    listening: AtomicBool,
    publish: mpsc::Sender<()>,
}

impl LockWakeups {
    /// Starts the subscriber and the publisher on the current runtime.
    pub(super) fn start(client: redis::Client, channel: String) -> Arc<LockWakeups> {
        // One signal pending at most: a release announced while another is on its way is news
        // the waiters get from that one.
        let (publish, signals) = mpsc::channel(1);
        let wakeups = Arc::new(LockWakeups {
            released: Notify::new(),
            listening: AtomicBool::new(false),
            publish,
        });
        tokio::spawn(listen(
            client.clone(),
            channel.clone(),
            Arc::downgrade(&wakeups),
        ));
        tokio::spawn(publish_releases(client, channel, signals));
        wakeups
    }

    /// Tells the other processes that the lock is free. Never waits.
    pub(super) fn released(&self) {
        let _ = self.publish.try_send(());
    }

    /// Whether a release would reach this process now.
    pub(super) fn listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Woken by each release another process announces (and by this process's own).
    pub(super) fn notify(&self) -> &Notify {
        &self.released
    }
}

async fn publish_releases(client: redis::Client, channel: String, mut signals: mpsc::Receiver<()>) {
    let mut connection: Option<ConnectionManager> = None;
    while signals.recv().await.is_some() {
        if connection.is_none() {
            connection = tokio::time::timeout(CALL_TIMEOUT, ConnectionManager::new(client.clone()))
                .await
                .ok()
                .and_then(Result::ok);
        }
        let Some(redis) = connection.as_mut() else {
            // Waiters find the lock free at their next look instead.
            continue;
        };
        let published = tokio::time::timeout(
            CALL_TIMEOUT,
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg("released")
                .query_async::<i64>(redis),
        )
        .await;
        if !matches!(published, Ok(Ok(_))) {
            connection = None;
        }
    }
}

async fn listen(client: redis::Client, channel: String, wakeups: Weak<LockWakeups>) {
    loop {
        let subscribed = tokio::time::timeout(CALL_TIMEOUT, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channel.as_str()).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        if let Ok(Ok(pubsub)) = subscribed {
            let Some(lock) = wakeups.upgrade() else {
                return;
            };
            lock.listening.store(true, Ordering::Release);
            // A release announced before the subscription was missed: wake whoever waits, to
            // look again now rather than at their next look.
            lock.released.notify_waiters();
            drop(lock);
            let mut messages = pubsub.into_on_message();
            while messages.next().await.is_some() {
                let Some(lock) = wakeups.upgrade() else {
                    return;
                };
                lock.released.notify_waiters();
            }
            let Some(lock) = wakeups.upgrade() else {
                return;
            };
            lock.listening.store(false, Ordering::Release);
            tracing::warn!("FerretDB write lock: the Redis subscription broke; waiters look more often until it is back");
        }
        if wakeups.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
    }
}
