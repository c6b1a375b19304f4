//! The embedded queue: SQS semantics on two tables of the store's SQLite file, so the embedded
//! set runs with nothing to install and the worker code can not tell it from AWS SQS.
//!
//! A message is visible when `visible_at <= now`. Receiving hides it for the visibility timeout
//! and hands out a fresh receipt handle; deleting needs the latest handle, so a worker that
//! overran its timeout can not delete a message another worker now holds. A message received
//! `max_receives` times and never deleted moves to `dead_letters` instead of being delivered
//! again (SQS's redrive policy), so one poison message can not loop forever.
//!
//! Every receive runs as one `BEGIN IMMEDIATE` transaction (see `crate::store::sqlite`): the
//! select of visible messages and their hiding are one step, so two workers (threads or
//! processes) never receive the same delivery. Long polls wake at once on a send from this
//! process and otherwise re-check briefly, because other processes sharing the file send
//! without telling us and hidden messages reappear when their timeout runs out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rand::Rng;
use rusqlite::params;
use tokio::time::Instant;

mod dead_letters;

pub use super::DeadLetter;
use super::{
    OutgoingMessage, Queue, QueueDepth, QueueResult, ReceivedMessage, TraceCarrier, MAX_BATCH,
};
use crate::error::BackendError;
use crate::store::sqlite::SqliteDb;

/// Short enough that a message sent by another process, or one whose visibility ran out, is
/// picked up promptly; long enough that an idle worker costs next to nothing.
const RECHECK: Duration = Duration::from_millis(100);

/// The embedded [`Queue`].
#[derive(Clone, Debug)]
pub struct SqliteQueue {
    db: SqliteDb,
    max_receives: u32,
    recheck: Duration,
}

impl SqliteQueue {
    /// `max_receives` is the redrive limit: deliveries a message gets before it is dead-lettered
    /// (at least 1).
    pub fn new(db: SqliteDb, max_receives: u32) -> SqliteQueue {
        SqliteQueue {
            db,
            max_receives: max_receives.max(1),
            recheck: RECHECK,
        }
    }

    /// One attempt: up to `max` visible messages, dead-lettering on the way those that had
    /// all their deliveries.
    async fn receive_now(
        &self,
        max: usize,
        visibility: Duration,
    ) -> QueueResult<Vec<ReceivedMessage>> {
        let max_receives = self.max_receives;
        let hidden_for = millis(visibility);
        self.db
            .write(move |c| {
                let now = now_millis();
                let mut next_due = c.prepare_cached(
                    "SELECT id, message_id, body, receive_count, sent_at, traceparent, tracestate \
                     FROM queue_messages WHERE visible_at <= ?1 ORDER BY visible_at, id LIMIT ?2",
                )?;
                let mut hide = c.prepare_cached(
                    "UPDATE queue_messages \
                     SET receive_count = receive_count + 1, receipt_handle = ?1, \
                     visible_at = ?2 WHERE id = ?3",
                )?;
                let mut to_dead_letters = c.prepare_cached(
                    "INSERT INTO dead_letters (message_id, body, receive_count, sent_at, moved_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                let mut remove = c.prepare_cached("DELETE FROM queue_messages WHERE id = ?1")?;
                let mut received = Vec::with_capacity(max);
                // Redrive at the moment of delivery, as SQS does: a message that already had its
                // `max_receives` deliveries goes to the dead letters instead of out once more.
                // Only the messages next in line are looked at, so a deep backlog costs nothing
                // per receive (a sweep of every visible message did, on each receive).
                // Delivered ids are skipped when looking again: with a zero visibility timeout a
                // message handed out here is visible again at once, and must not go out twice.
                let mut delivered: Vec<i64> = Vec::with_capacity(max);
                loop {
                    let wanted = max - received.len() + delivered.len();
                    let due: Vec<(i64, String, String, u32, i64, TraceCarrier)> = next_due
                        .query_map(params![now, wanted as i64], |r| {
                            let trace = TraceCarrier {
                                traceparent: r.get(5)?,
                                tracestate: r.get(6)?,
                            };
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, trace))
                        })?
                        .filter(|row| !matches!(row, Ok((id, ..)) if delivered.contains(id)))
                        .collect::<rusqlite::Result<_>>()?;
                    if due.is_empty() {
                        break;
                    }
                    let mut dead_lettered = false;
                    for (id, message_id, body, count, sent_at, trace) in due {
                        if received.len() == max {
                            break;
                        }
                        if count >= max_receives {
                            to_dead_letters
                                .execute(params![message_id, body, count, sent_at, now])?;
                            remove.execute([id])?;
                            dead_lettered = true;
                            continue;
                        }
                        let receipt_handle = random_hex();
                        hide.execute(params![receipt_handle, now.saturating_add(hidden_for), id])?;
                        delivered.push(id);
                        received.push(ReceivedMessage {
                            message_id,
                            receipt_handle,
                            body,
                            receive_count: count + 1,
                            trace,
                        });
                    }
                    // Look again only to fill the places of messages just dead-lettered.
                    if received.len() == max || !dead_lettered {
                        break;
                    }
                }
                Ok(received)
            })
            .await
            .map_err(as_queue)
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn ping(&self) -> QueueResult<()> {
        self.db
            .read(|c| c.query_row("SELECT 1", [], |_| Ok(())))
            .await
            .map_err(as_queue)
    }

    async fn send_messages(&self, bodies: &[OutgoingMessage]) -> QueueResult<()> {
        if bodies.is_empty() {
            return Ok(());
        }
        // SQS refuses larger batches; refusing here too keeps callers honest on both backends.
        if bodies.len() > MAX_BATCH {
            return Err(BackendError::other(
                "queue",
                format!(
                    "a batch holds at most {MAX_BATCH} messages, got {}",
                    bodies.len()
                ),
            ));
        }
        let bodies = bodies.to_vec();
        self.db
            .write(move |c| {
                let now = now_millis();
                let mut insert = c.prepare_cached(
                    "INSERT INTO queue_messages \
                     (message_id, body, receive_count, visible_at, sent_at, traceparent, tracestate) \
                     VALUES (?1, ?2, 0, ?3, ?3, ?4, ?5)",
                )?;
                for m in bodies {
                    let trace = m.trace;
                    insert.execute(params![random_hex(), m.body, now, trace.traceparent, trace.tracestate])?;
                }
                Ok(())
            })
            .await
            .map_err(as_queue)?;
        // After the commit, so a woken poll finds the messages. One poll, not every one
        // waiting: a receive takes up to a whole batch, and waking all of them made each send
        // cost a receive (a write) per waiting poll, of which all but one found nothing. A
        // woken poll that returns without waiting again hands the wake-up on to another.
        self.db.queue_sent().notify_one();
        Ok(())
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> QueueResult<Vec<ReceivedMessage>> {
        let max = max.clamp(1, MAX_BATCH);
        let start = Instant::now();
        let deadline = start
            .checked_add(wait)
            .unwrap_or(start + Duration::from_secs(86_400));
        loop {
            // Registered before looking, so a send that commits between our look and our wait
            // still wakes us.
            let sent = self.db.queue_sent().notified();
            tokio::pin!(sent);
            sent.as_mut().enable();

            let received = self.receive_now(max, visibility).await?;
            if received.len() == max {
                // There may be more: a send wakes only one poll, so wake another for the rest.
                self.db.queue_sent().notify_one();
            }
            let now = Instant::now();
            if !received.is_empty() || now >= deadline {
                return Ok(received);
            }
            let recheck_at = (now + self.recheck).min(deadline);
            tokio::select! {
                () = &mut sent => {}
                () = tokio::time::sleep_until(recheck_at) => {}
            }
        }
    }

    async fn delete_batch(&self, receipt_handles: &[String]) -> QueueResult<()> {
        if receipt_handles.is_empty() {
            return Ok(());
        }
        let handles = receipt_handles.to_vec();
        self.db
            .write(move |c| {
                // A stale handle matches nothing: its message was received again since, and
                // belongs to whoever holds the newer handle.
                let mut delete =
                    c.prepare_cached("DELETE FROM queue_messages WHERE receipt_handle = ?1")?;
                for handle in handles {
                    delete.execute([handle])?;
                }
                Ok(())
            })
            .await
            .map_err(as_queue)
    }

    async fn extend_visibility(
        &self,
        receipt_handle: &str,
        visibility: Duration,
    ) -> QueueResult<()> {
        let handle = receipt_handle.to_owned();
        let hidden_for = millis(visibility);
        self.db
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE queue_messages SET visible_at = ?1 WHERE receipt_handle = ?2",
                )?
                .execute(params![now_millis().saturating_add(hidden_for), handle])?;
                Ok(())
            })
            .await
            .map_err(as_queue)
    }

    async fn depth(&self) -> QueueResult<QueueDepth> {
        self.db
            .read(|c| {
                let now = now_millis();
                let (visible, in_flight): (i64, i64) = c
                    .prepare_cached(
                        "SELECT coalesce(sum(visible_at <= ?1), 0), \
                         coalesce(sum(visible_at > ?1), 0) \
                         FROM queue_messages",
                    )?
                    .query_row([now], |r| Ok((r.get(0)?, r.get(1)?)))?;
                let dead: i64 = c
                    .prepare_cached("SELECT count(*) FROM dead_letters")?
                    .query_row([], |r| r.get(0))?;
                Ok(QueueDepth {
                    visible: visible as u64,
                    in_flight: in_flight as u64,
                    dead_letters: dead as u64,
                })
            })
            .await
            .map_err(as_queue)
    }

    async fn dead_letters(&self, limit: usize) -> QueueResult<Vec<DeadLetter>> {
        self.list_dead_letters(limit).await
    }

    async fn redrive(&self, ids: Option<&[String]>) -> QueueResult<Vec<String>> {
        self.redrive_dead_letters(ids).await
    }

    async fn purge_dead_letters(&self, before: chrono::DateTime<chrono::Utc>) -> QueueResult<u64> {
        self.delete_dead_letters_before(before).await
    }
}

/// The database is the queue's backend here; naming it "queue" lets readiness checks and 503s
/// say which part of the service is in trouble.
fn as_queue(e: BackendError) -> BackendError {
    match e {
        BackendError::Unavailable { detail, .. } => BackendError::Unavailable {
            backend: "queue",
            detail,
        },
        BackendError::Other { detail, .. } => BackendError::Other {
            backend: "queue",
            detail,
        },
        BackendError::Duplicate => BackendError::Duplicate,
    }
}

/// Wall-clock milliseconds: visibility deadlines are shared with other processes on the file,
/// so they must be on a clock every process reads the same.
fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// 128 random bits: receipt handles and message ids must not be guessable from one another.
fn random_hex() -> String {
    hex::encode(rand::thread_rng().gen::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::sqlite::test_support::temp_db;

    const NO_WAIT: Duration = Duration::ZERO;
    const HOUR: Duration = Duration::from_secs(3600);

    fn bodies(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn sent_messages_are_received_once_and_deleted() {
        let t = temp_db();
        let queue = SqliteQueue::new(t.db.clone(), 3);
        queue.ping().await.unwrap();
        queue.send_batch(&bodies(&["a", "b"])).await.unwrap();
        let got = queue.receive(10, NO_WAIT, HOUR).await.unwrap();
        assert_eq!(
            got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(got
            .iter()
            .all(|m| m.receive_count == 1 && m.receipt_handle.len() == 32));
        assert_ne!(got[0].message_id, got[1].message_id);

        assert!(
            queue.receive(10, NO_WAIT, HOUR).await.unwrap().is_empty(),
            "hidden while in flight"
        );
        let depth = queue.depth().await.unwrap();
        assert_eq!(
            (depth.visible, depth.in_flight, depth.dead_letters),
            (0, 2, 0)
        );

        let handles: Vec<String> = got.into_iter().map(|m| m.receipt_handle).collect();
        queue.delete_batch(&handles).await.unwrap();
        let depth = queue.depth().await.unwrap();
        assert_eq!((depth.visible, depth.in_flight), (0, 0));
    }

    #[tokio::test]
    async fn receive_takes_at_most_ten_and_at_least_one() {
        let t = temp_db();
        let queue = SqliteQueue::new(t.db.clone(), 3);
        let ten: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        queue.send_batch(&ten).await.unwrap();
        queue.send_batch(&ten[..2]).await.unwrap();
        assert_eq!(queue.receive(50, NO_WAIT, HOUR).await.unwrap().len(), 10);
        assert_eq!(queue.receive(0, NO_WAIT, HOUR).await.unwrap().len(), 1);
        let eleven: Vec<String> = (0..11).map(|i| i.to_string()).collect();
        assert!(queue.send_batch(&eleven).await.is_err());
    }

    #[tokio::test]
    async fn an_undeleted_message_comes_back_after_its_visibility_timeout() {
        let t = temp_db();
        let queue = SqliteQueue::new(t.db.clone(), 5);
        queue.send_batch(&bodies(&["order"])).await.unwrap();
        let first = queue
            .receive(1, NO_WAIT, Duration::from_millis(50))
            .await
            .unwrap()
            .remove(0);

        // The long poll re-checks until the 50 ms have passed; the generous wait only bounds a
        // very slow machine.
        let second = queue
            .receive(1, Duration::from_secs(10), HOUR)
            .await
            .unwrap()
            .remove(0);
        assert_eq!(
            (second.message_id.as_str(), second.receive_count),
            (first.message_id.as_str(), 2)
        );
        assert_ne!(second.receipt_handle, first.receipt_handle);

        queue.delete_batch(&[first.receipt_handle]).await.unwrap();
        assert_eq!(
            queue.depth().await.unwrap().in_flight,
            1,
            "a stale receipt deletes nothing"
        );
        queue.delete_batch(&[second.receipt_handle]).await.unwrap();
        assert_eq!(queue.depth().await.unwrap().in_flight, 0);
    }

    #[tokio::test]
    async fn a_message_received_too_often_goes_to_the_dead_letters() {
        let t = temp_db();
        let queue = SqliteQueue::new(t.db.clone(), 2);
        queue.send_batch(&bodies(&["poison"])).await.unwrap();
        // A zero visibility timeout makes each delivery visible again at once.
        for expected in 1..=2 {
            let got = queue.receive(1, NO_WAIT, Duration::ZERO).await.unwrap();
            assert_eq!(got[0].receive_count, expected);
        }
        assert!(queue
            .receive(1, NO_WAIT, Duration::ZERO)
            .await
            .unwrap()
            .is_empty());
        let dead = queue.dead_letters().await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].body.as_str(), dead[0].receive_count),
            ("poison", 2)
        );
        let depth = queue.depth().await.unwrap();
        assert_eq!(
            (depth.visible, depth.in_flight, depth.dead_letters),
            (0, 0, 1)
        );
    }

    #[tokio::test]
    async fn extending_visibility_keeps_a_message_hidden() {
        let t = temp_db();
        let queue = SqliteQueue::new(t.db.clone(), 3);
        queue.send_batch(&bodies(&["slow"])).await.unwrap();
        let got = queue
            .receive(1, NO_WAIT, Duration::ZERO)
            .await
            .unwrap()
            .remove(0);
        queue
            .extend_visibility(&got.receipt_handle, HOUR)
            .await
            .unwrap();
        assert!(queue.receive(1, NO_WAIT, HOUR).await.unwrap().is_empty());
        assert_eq!(queue.depth().await.unwrap().in_flight, 1);
        queue
            .extend_visibility("no-such-receipt", HOUR)
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_poll_returns_as_soon_as_a_message_is_sent() {
        let t = temp_db();
        // With a re-check this slow, only the send's wake-up can end the poll in time.
        let receiver = SqliteQueue {
            recheck: HOUR,
            ..SqliteQueue::new(t.db.clone(), 3)
        };
        let sender = SqliteQueue::new(t.db.clone(), 3);
        let start = Instant::now();
        let poll =
            tokio::spawn(async move { receiver.receive(1, Duration::from_secs(60), HOUR).await });
        sender.send_batch(&bodies(&["hello"])).await.unwrap();
        let got = poll.await.unwrap().unwrap();
        assert_eq!(got[0].body, "hello");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "took {:?}",
            start.elapsed()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_receivers_never_share_a_delivery() {
        let t = temp_db();
        let queue = Arc::new(SqliteQueue::new(t.db.clone(), 3));
        for chunk in (0..40)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .chunks(MAX_BATCH)
        {
            queue.send_batch(chunk).await.unwrap();
        }
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    let mut mine = vec![];
                    loop {
                        let got = queue.receive(3, NO_WAIT, HOUR).await.unwrap();
                        if got.is_empty() {
                            return mine;
                        }
                        mine.extend(got.into_iter().map(|m| m.body));
                    }
                })
            })
            .collect();
        let mut all = vec![];
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all.sort_by_key(|b| b.parse::<u32>().unwrap());
        assert_eq!(all, (0..40).map(|i| i.to_string()).collect::<Vec<_>>());
    }
}
