//! Waking the processes that wait for the FerretDB write lock when its holder gives it back,
//! through Redis pub/sub, instead of having them look at the lock document every few
//! milliseconds.
//!
//! - **Announced.** The holder publishes on one channel per database each time it deletes its
//!   lock document, without waiting: a signal queued while one is being sent is the same news.
//!   Every process subscribes, and a message wakes its waiting writer (`notify`) at once.
//! - **Looked at anyway.** Pub/sub delivers at most once, so a waiter also looks at the lock
//!   document every `WATCH_EVERY` (`write_lock`) whatever happens: that catches a lost message
//!   and a holder that died without releasing (judged by watching its lease, as before).
//! - **Trusted only while it is seen to work.** The lock's hand-over must not come to depend on
//!   Redis's health: a Redis that is slow, paused or cut would otherwise stretch every hand-over
//!   to `WATCH_EVERY`, and writes queued behind them past their timeout. So each announcement
//!   names its process and a sequence number, and the process hears its own announcement back
//!   on its subscription. One not heard back within `ECHO_WITHIN` (publish and delivery both
//!   count) makes the process distrust the channel, wake its waiters at once, and have them look
//!   as often as they do without Redis, until an announcement of its own comes back in time. The
//!   same holds while the subscription is down.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// Bound of one connect, subscribe or publish.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Wait before subscribing again after the subscription broke.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);
/// How soon a process must hear its own announcement back to keep trusting the channel. A
/// healthy local Redis answers in well under a millisecond; this leaves room for a busy machine
/// while keeping a degraded channel's cost to a few tens of milliseconds of slower hand-overs.
const ECHO_WITHIN: Duration = Duration::from_millis(30);

/// The channel of one database's lock, under the deployment's key prefix.
pub fn channel(prefix: &str, database: &str) -> String {
    format!("{prefix}ferretdb-lock-released:{database}")
}

/// See the module comment.
pub(super) struct LockWakeups {
    released: Notify,
    listening: AtomicBool,
    publish: mpsc::Sender<()>,
    /// Names this process's announcements, so that it knows its own when they come back.
    process: String,
    /// The sequence number of the last announcement sent.
    sent: AtomicU64,
    /// The oldest announcement of this process not yet heard back: its number and when it was
    /// sent. `None` when every announcement came back.
    unechoed: Mutex<Option<(u64, Instant)>>,
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
            process: hex::encode(rand::random::<[u8; 8]>()),
            sent: AtomicU64::new(0),
            unechoed: Mutex::new(None),
        });
        tokio::spawn(listen(
            client.clone(),
            channel.clone(),
            Arc::downgrade(&wakeups),
        ));
        tokio::spawn(publish_releases(
            client,
            channel,
            signals,
            Arc::downgrade(&wakeups),
        ));
        wakeups
    }

    /// Tells the other processes that the lock is free. Never waits.
    pub(super) fn released(&self) {
        let _ = self.publish.try_send(());
    }

    /// Whether a release would reach this process now, as far as it can tell: subscribed, and
    /// its own last announcement heard back in time.
    pub(super) fn trusted(&self) -> bool {
        self.listening.load(Ordering::Acquire)
            && self
                .unechoed()
                .map_or(true, |since| since.elapsed() < ECHO_WITHIN)
    }

    /// Woken by each release another process announces (and by this process's own), and when
    /// the channel stops being trusted.
    pub(super) fn notify(&self) -> &Notify {
        &self.released
    }

    fn unechoed(&self) -> Option<Instant> {
        let unechoed = self.unechoed.lock().unwrap_or_else(|e| e.into_inner());
        unechoed.map(|(_, since)| since)
    }

    /// Numbers the next announcement and starts waiting for its echo; the message to publish.
    fn announcement(&self) -> (u64, String) {
        let sequence = self.sent.fetch_add(1, Ordering::AcqRel) + 1;
        let mut unechoed = self.unechoed.lock().unwrap_or_else(|e| e.into_inner());
        // The oldest one unheard decides: a later one heard back clears them all.
        unechoed.get_or_insert((sequence, Instant::now()));
        (sequence, format!("{}:{sequence}", self.process))
    }

    /// A message heard on the channel: this process's own announcements clear their wait.
    fn heard(&self, message: &str) {
        let Some((process, sequence)) = message.split_once(':') else {
            return;
        };
        let Ok(sequence) = sequence.parse::<u64>() else {
            return;
        };
        if process != self.process {
            return;
        }
        let mut unechoed = self.unechoed.lock().unwrap_or_else(|e| e.into_inner());
        if unechoed.is_some_and(|(oldest, _)| sequence >= oldest) {
            *unechoed = None;
        }
    }

    /// Announcement `sequence` was sent `ECHO_WITHIN` ago: if it (or an older one) is still
    /// unheard, the channel is no longer trusted, and waiters are woken to look for themselves.
    fn check_echo(&self, sequence: u64) {
        let unheard = {
            let unechoed = self.unechoed.lock().unwrap_or_else(|e| e.into_inner());
            unechoed.is_some_and(|(oldest, _)| oldest <= sequence)
        };
        if unheard {
            self.released.notify_waiters();
        }
    }
}

async fn publish_releases(
    client: redis::Client,
    channel: String,
    mut signals: mpsc::Receiver<()>,
    wakeups: Weak<LockWakeups>,
) {
    let mut connection: Option<ConnectionManager> = None;
    while signals.recv().await.is_some() {
        let Some(lock) = wakeups.upgrade() else {
            return;
        };
        let (sequence, message) = lock.announcement();
        // The echo is checked on its own timer: a Redis that does not answer the publish at
        // all (paused, cut) must be distrusted as soon as one that answers late.
        let watched = Arc::downgrade(&lock);
        tokio::spawn(async move {
            tokio::time::sleep(ECHO_WITHIN).await;
            if let Some(lock) = watched.upgrade() {
                lock.check_echo(sequence);
            }
        });
        drop(lock);
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
                .arg(&message)
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
            while let Some(message) = messages.next().await {
                let Some(lock) = wakeups.upgrade() else {
                    return;
                };
                if let Ok(text) = message.get_payload::<String>() {
                    lock.heard(&text);
                }
                lock.released.notify_waiters();
            }
            let Some(lock) = wakeups.upgrade() else {
                return;
            };
            lock.listening.store(false, Ordering::Release);
            // Waiting with a subscription that is gone would be waiting for nothing.
            lock.released.notify_waiters();
            tracing::warn!("FerretDB write lock: the Redis subscription broke; waiters look more often until it is back");
        }
        if wakeups.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wakeups() -> LockWakeups {
        let (publish, _) = mpsc::channel(1);
        LockWakeups {
            released: Notify::new(),
            listening: AtomicBool::new(true),
            publish,
            process: "p1".to_string(),
            sent: AtomicU64::new(0),
            unechoed: Mutex::new(None),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_announcement_not_heard_back_in_time_ends_the_trust_until_one_is() {
        let w = wakeups();
        assert!(w.trusted());
        let (first, message) = w.announcement();
        assert_eq!(message, format!("p1:{first}"));
        // Another process's announcements, or garbage, prove nothing about ours.
        w.heard("p2:99");
        w.heard("released");
        tokio::time::advance(ECHO_WITHIN).await;
        assert!(!w.trusted(), "unheard past ECHO_WITHIN");
        // A later announcement heard back clears the older ones too.
        let (second, message) = w.announcement();
        assert!(second > first);
        w.heard(&message);
        assert!(w.trusted());
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscription_that_is_down_is_not_trusted() {
        let w = wakeups();
        w.listening.store(false, Ordering::Release);
        assert!(!w.trusted());
    }
}
