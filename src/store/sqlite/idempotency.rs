//! Idempotency records on SQLite. Expired records are purged on the write path, so the table
//! stays small without a sweeper task.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Row};

use super::rows::ts;
use super::SqliteStore;
use crate::domain::Id;
use crate::store::{Idempotency, IdempotencyRecord, StoreResult};

/// Idempotency records answer retries for at least this long (clients retry within minutes;
/// a day leaves room for a client that was offline).
const IDEMPOTENCY_TTL_HOURS: i64 = 24;

fn idempotency_from_row(r: &Row<'_>) -> rusqlite::Result<IdempotencyRecord> {
    Ok(IdempotencyRecord {
        request_hash: r.get(0)?,
        status: r.get(1)?,
        body: r.get(2)?,
    })
}

#[async_trait]
impl Idempotency for SqliteStore {
    async fn find_idempotency(
        &self,
        user_id: Id,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        let key = key.to_owned();
        let oldest = ts(Utc::now() - chrono::Duration::hours(IDEMPOTENCY_TTL_HOURS));
        self.db
            .read(move |c| {
                // Expired rows may linger until the next save purges them; they no longer count.
                c.prepare_cached(
                    "SELECT request_hash, status, body FROM idempotency_keys \
                     WHERE user_id = ?1 AND key = ?2 AND created_at >= ?3",
                )?
                .query_row(params![user_id, key, oldest], idempotency_from_row)
                .optional()
            })
            .await
    }

    async fn save_idempotency(
        &self,
        user_id: Id,
        key: &str,
        record: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<IdempotencyRecord> {
        let key = key.to_owned();
        let record = record.clone();
        self.db
            .write(move |c| {
                // Purging here, on the write path, keeps the table small without a sweeper task;
                // the index on created_at makes it a no-op when nothing has expired.
                c.prepare_cached("DELETE FROM idempotency_keys WHERE created_at < ?1")?
                    .execute([ts(now - chrono::Duration::hours(IDEMPOTENCY_TTL_HOURS))])?;
                c.prepare_cached(
                    "INSERT INTO idempotency_keys \
                     (user_id, key, request_hash, status, body, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                )?
                .execute(params![
                    user_id,
                    key,
                    record.request_hash,
                    record.status,
                    record.body,
                    ts(now)
                ])?;
                c.prepare_cached(
                    "SELECT request_hash, status, body FROM idempotency_keys \
                     WHERE user_id = ?1 AND key = ?2",
                )?
                .query_row(params![user_id, key], idempotency_from_row)
            })
            .await
    }
}
