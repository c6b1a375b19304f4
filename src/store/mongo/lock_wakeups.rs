//! Waking the processes that wait for the FerretDB write lock when its holder gives it back,
//! through Redis pub/sub, instead of having them look at the lock document every few
//! milliseconds.
//!
//! The holder publishes on one channel per database each time it deletes its lock document
//! (`released`), without waiting: a signal queued while the same is being sent is the same
//! news. Every process subscribes, and a message wakes its waiting writer (`notify`) at once.
//! Pub/sub delivers at most once, so a waiter also looks at the lock document every
//! `WATCH_EVERY` whatever happens: that catches a lost message, a Redis outage, and a holder
//! that died without releasing (judged by watching its lease, as before; see `write_lock`).
//! While the subscription is down (`listening` is false) waiters look as often as they did
//! without Redis.
//!
//! The same channel carries the other half of "requests first" across processes: a process
//! whose waiting write is a request's (a client waits on it) announces that it wants the lock
//! (`wanted`), again at each look while it waits. A holder that has heard so within
//! [`WANTED_FOR`] gives the lease back after its current write unless its own next writer is
//! due too (`write_lock`'s `keep`), and then lets the wanting process take it first. Messages
//! name their process, which ignores its own.

use std::sync::atomic::{AtomicBool, Ordering};
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

/// How long a process's announcement that a request waits for the lock stands. The wanting
/// process announces again at each look (every `write_lock::WATCH_EVERY`, 100 ms, at most), so
/// a want stands while it is real and lapses soon after.
pub(super) const WANTED_FOR: Duration = Duration::from_millis(200);

/// What goes over the channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signal {
    Released,
    Wanted,
}

impl Signal {
    fn word(self) -> &'static str {
        match self {
            Signal::Released => "released",
            Signal::Wanted => "wanted",
        }
    }
}

/// `"<word> <origin>"`.
fn message(signal: Signal, origin: u64) -> String {
    format!("{} {origin:016x}", signal.word())
}

fn parse(message: &str) -> Option<(Signal, u64)> {
    let (word, origin) = message.split_once(' ')?;
    let signal = match word {
        "released" => Signal::Released,
        "wanted" => Signal::Wanted,
        _ => return None,
    };
    Some((signal, u64::from_str_radix(origin, 16).ok()?))
}

/// The channel of one database's lock, under the deployment's key prefix.
pub fn channel(prefix: &str, database: &str) -> String {
    format!("{prefix}ferretdb-lock-released:{database}")
}

/// The announcement another process makes when it releases the lock, as [`channel`] carries
/// it (for tests that play such a process).
pub fn release_message() -> String {
    message(Signal::Released, 0)
}

/// See the module comment.
pub(super) struct LockWakeups {
    released: Notify,
    listening: AtomicBool,
    publish: mpsc::Sender<Signal>,
    /// This process on the channel.
    origin: u64,
    /// When another process last said a request of its waits for the lock.
    wanted_at: Mutex<Option<Instant>>,
}

impl LockWakeups {
    /// Starts the subscriber and the publisher on the current runtime.
    pub(super) fn start(client: redis::Client, channel: String) -> Arc<LockWakeups> {
        // Few signals pending: one queued while the same is on its way is news its listeners
        // get from that one.
        let (publish, signals) = mpsc::channel(2);
        let wakeups = Arc::new(LockWakeups {
            released: Notify::new(),
            listening: AtomicBool::new(false),
            publish,
            // Never 0, the origin of `release_message`.
            origin: rand::random::<u64>() | 1,
            wanted_at: Mutex::new(None),
        });
        tokio::spawn(listen(
            client.clone(),
            channel.clone(),
            Arc::downgrade(&wakeups),
        ));
        tokio::spawn(publish_signals(client, channel, wakeups.origin, signals));
        wakeups
    }

    /// Tells the other processes that the lock is free. Never waits.
    pub(super) fn released(&self) {
        let _ = self.publish.try_send(Signal::Released);
    }

    /// Tells the holder that a request of this process waits for the lock. Never waits.
    pub(super) fn wanted(&self) {
        let _ = self.publish.try_send(Signal::Wanted);
    }

    /// Whether another process said, within `WANTED_FOR`, that a request of its waits; taking
    /// the answer, so that one announcement makes the holder yield once.
    pub(super) fn take_wanted_elsewhere(&self) -> bool {
        let mut wanted_at = self.wanted_at.lock().unwrap_or_else(|p| p.into_inner());
        wanted_at.take().is_some_and(|at| at.elapsed() < WANTED_FOR)
    }

    /// As if another process had just announced that a request of its waits.
    #[cfg(test)]
    pub(super) fn hear_wanted(&self) {
        *self.wanted_at.lock().unwrap() = Some(Instant::now());
    }

    /// Whether a release would reach this process now.
    pub(super) fn listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Woken by each release another process announces.
    pub(super) fn notify(&self) -> &Notify {
        &self.released
    }
}

async fn publish_signals(
    client: redis::Client,
    channel: String,
    origin: u64,
    mut signals: mpsc::Receiver<Signal>,
) {
    let mut connection: Option<ConnectionManager> = None;
    while let Some(signal) = signals.recv().await {
        if connection.is_none() {
            connection = tokio::time::timeout(CALL_TIMEOUT, ConnectionManager::new(client.clone()))
                .await
                .ok()
                .and_then(Result::ok);
        }
        let Some(redis) = connection.as_mut() else {
            // Waiters find the lock free at their next look instead; a holder that does not
            // hear a want keeps its lease for at most `MAX_HOLD`.
            continue;
        };
        let published = tokio::time::timeout(
            CALL_TIMEOUT,
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(message(signal, origin))
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
            while let Some(received) = messages.next().await {
                let Some(lock) = wakeups.upgrade() else {
                    return;
                };
                let payload: String = received.get_payload().unwrap_or_default();
                match parse(&payload) {
                    Some((_, origin)) if origin == lock.origin => {}
                    Some((Signal::Wanted, _)) => {
                        *lock.wanted_at.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(Instant::now());
                    }
                    // A release, or a message of another version: look at the lock now.
                    _ => lock.released.notify_waiters(),
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_their_signal_and_process() {
        for signal in [Signal::Released, Signal::Wanted] {
            assert_eq!(parse(&message(signal, 0xfeed)), Some((signal, 0xfeed)));
        }
        assert_eq!(parse(&release_message()), Some((Signal::Released, 0)));
        assert_eq!(parse("released"), None);
        assert_eq!(parse("other 12"), None);
    }
}
