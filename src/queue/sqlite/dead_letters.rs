//! The embedded queue's dead letters, for the on-call: listed, moved back onto the queue
//! (`order-service dlq list | redrive`), and deleted when past their retention.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::{as_queue, now_millis, random_hex, DeadLetter, QueueResult, SqliteQueue};

impl SqliteQueue {
    /// Every dead letter, oldest first (tests and tools).
    pub async fn dead_letters(&self) -> QueueResult<Vec<DeadLetter>> {
        self.list_dead_letters(usize::MAX).await
    }

    pub(super) async fn list_dead_letters(&self, limit: usize) -> QueueResult<Vec<DeadLetter>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .read(move |c| {
                c.prepare_cached(
                    "SELECT message_id, body, receive_count, moved_at FROM dead_letters \
                     ORDER BY id LIMIT ?1",
                )?
                .query_map([limit], |r| {
                    Ok(DeadLetter {
                        message_id: r.get(0)?,
                        body: r.get(1)?,
                        receive_count: r.get(2)?,
                        moved_at: DateTime::from_timestamp_millis(r.get(3)?).unwrap_or_default(),
                    })
                })?
                .collect()
            })
            .await
            .map_err(as_queue)
    }

    /// In one write: each chosen dead letter becomes a visible message again (a new id, a
    /// receive count of 0) and leaves the dead letters, so a crash can not duplicate or lose it.
    pub(super) async fn redrive_dead_letters(
        &self,
        ids: Option<&[String]>,
    ) -> QueueResult<Vec<String>> {
        let ids: Option<Vec<String>> = ids.map(<[String]>::to_vec);
        let moved = self
            .db
            .write(move |c| {
                let chosen: Vec<(i64, String, String)> = c
                    .prepare_cached("SELECT id, message_id, body FROM dead_letters ORDER BY id")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .filter(|row| match (row, &ids) {
                        (Ok((_, message_id, _)), Some(ids)) => ids.contains(message_id),
                        _ => true,
                    })
                    .collect::<rusqlite::Result<_>>()?;
                let now = now_millis();
                let mut send = c.prepare_cached(
                    "INSERT INTO queue_messages \
                     (message_id, body, receive_count, visible_at, sent_at) VALUES (?1, ?2, 0, ?3, ?3)",
                )?;
                let mut remove = c.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?;
                let mut moved = Vec::with_capacity(chosen.len());
                for (id, message_id, body) in chosen {
                    send.execute(params![random_hex(), body, now])?;
                    remove.execute([id])?;
                    moved.push(message_id);
                }
                Ok(moved)
            })
            .await
            .map_err(as_queue)?;
        if !moved.is_empty() {
            self.db.queue_sent().notify_one();
        }
        Ok(moved)
    }

    /// Deletes the dead letters moved before `before`; how many went.
    pub(super) async fn delete_dead_letters_before(
        &self,
        before: DateTime<Utc>,
    ) -> QueueResult<u64> {
        let before = before.timestamp_millis();
        self.db
            .write(move |c| {
                let gone = c
                    .prepare_cached("DELETE FROM dead_letters WHERE moved_at < ?1")?
                    .execute([before])?;
                Ok(gone as u64)
            })
            .await
            .map_err(as_queue)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::queue::Queue;
    use crate::store::sqlite::test_support::temp_db;

    /// Sends `bodies` and receives each until it is dead-lettered (one receive allowed).
    async fn dead_lettered(queue: &SqliteQueue, bodies: &[&str]) -> Vec<DeadLetter> {
        let bodies: Vec<String> = bodies.iter().map(|b| b.to_string()).collect();
        queue.send_batch(&bodies).await.unwrap();
        queue
            .receive(10, Duration::ZERO, Duration::ZERO)
            .await
            .unwrap();
        assert!(queue
            .receive(10, Duration::ZERO, Duration::ZERO)
            .await
            .unwrap()
            .is_empty());
        queue.dead_letters().await.unwrap()
    }

    #[tokio::test]
    async fn redrive_moves_the_chosen_dead_letters_back_once() {
        let t = temp_db();
        let queue = SqliteQueue::new(t.db.clone(), 1);
        let dead = dead_lettered(&queue, &["a", "b", "c"]).await;
        assert_eq!(Queue::dead_letters(&queue, 2).await.unwrap().len(), 2);

        let moved = queue
            .redrive(Some(&[dead[1].message_id.clone(), "no-such-id".into()]))
            .await
            .unwrap();
        assert_eq!(moved, vec![dead[1].message_id.clone()]);
        let back = queue
            .receive(10, Duration::ZERO, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].body.as_str(), back[0].receive_count), ("b", 1));
        let left: Vec<String> = queue
            .dead_letters()
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.body)
            .collect();
        assert_eq!(left, ["a", "c"]);

        assert_eq!(queue.redrive(None).await.unwrap().len(), 2);
        assert!(queue.dead_letters().await.unwrap().is_empty());
        assert_eq!(queue.depth().await.unwrap().visible, 2);
    }

    #[tokio::test]
    async fn only_dead_letters_past_their_retention_are_purged() {
        let t = temp_db();
        let queue = SqliteQueue::new(t.db.clone(), 1);
        let dead = dead_lettered(&queue, &["old"]).await;
        assert_eq!(
            queue
                .delete_dead_letters_before(dead[0].moved_at)
                .await
                .unwrap(),
            0
        );
        assert_eq!(queue.dead_letters().await.unwrap().len(), 1);
        let later = dead[0].moved_at + chrono::TimeDelta::milliseconds(1);
        assert_eq!(queue.delete_dead_letters_before(later).await.unwrap(), 1);
        assert!(queue.dead_letters().await.unwrap().is_empty());
    }
}
