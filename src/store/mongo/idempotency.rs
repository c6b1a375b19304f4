//! Idempotency records on MongoDB. A unique index on (user, key) decides who is first; the
//! age check makes expiry exact whether or not the server has TTL indexes.

use chrono::{DateTime, TimeDelta, Utc};

use async_trait::async_trait;
use bson::doc;

use super::documents::*;
use super::errors::db_error;
use super::errors::BACKEND;
use super::MongoStore;
use crate::domain::Id;
use crate::error::BackendError;
use crate::store::{Idempotency, IdempotencyRecord, StoreResult};

/// Same window as the embedded store: clients retry within minutes; a day leaves room for a
/// client that was offline.
pub(super) const IDEMPOTENCY_TTL_HOURS: i64 = 24;

/// Passes of `save_idempotency`; each one only fails because another saver changed the key.
const SAVE_ATTEMPTS: usize = 5;

#[async_trait]
impl Idempotency for MongoStore {
    async fn find_idempotency(
        &self,
        user_id: Id,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        // A TTL index removes expired records only once a minute, and not at all where the
        // server has none: the age check is what makes expiry exact.
        let oldest = Utc::now() - TimeDelta::hours(IDEMPOTENCY_TTL_HOURS);
        self.idempotency
            .find_one(doc! {
                "userId": user_id.object_id(),
                "key": key,
                "createdAt": { "$gte": bson_time(oldest) },
            })
            .await
            .map_err(db_error)?
            .map(idempotency_from_doc)
            .transpose()
    }

    async fn save_idempotency(
        &self,
        user_id: Id,
        key: &str,
        record: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<IdempotencyRecord> {
        let oldest = bson_time(now - TimeDelta::hours(IDEMPOTENCY_TTL_HOURS));
        if !self.ttl_indexes {
            // As in the embedded store: purging on the write path keeps the collection small
            // without a sweeper task.
            self.write(
                self.idempotency
                    .delete_many(doc! { "createdAt": { "$lt": oldest } }),
            )
            .await
            .map_err(db_error)?;
        }
        let fresh = IdempotencyDoc {
            id: None,
            user_id: user_id.object_id(),
            key: key.to_owned(),
            request_hash: record.request_hash.clone(),
            status: i32::from(record.status),
            body: record.body.clone(),
            created_at: bson_time(now),
        };
        // The unique index on (userId, key) decides who is first. A loser reads the winner; a
        // winner that has expired but is not purged yet is taken over, conditionally on its
        // creation time so that two savers can not both take it over. Each pass ends or sees a
        // change made by someone else, so a few passes settle any race.
        for _ in 0..SAVE_ATTEMPTS {
            match self
                .write(self.idempotency.insert_one(&fresh))
                .await
                .map_err(db_error)
            {
                Ok(_) => return Ok(record.clone()),
                Err(BackendError::Duplicate) => {}
                Err(e) => return Err(e),
            }
            let existing = self
                .idempotency
                .find_one(doc! { "userId": user_id.object_id(), "key": key })
                .await
                .map_err(db_error)?;
            let Some(existing) = existing else {
                continue; // Purged between our insert and our read: insert again.
            };
            if existing.created_at >= oldest {
                return idempotency_from_doc(existing);
            }
            let taken_over = self
                .write(self.idempotency.update_one(
                    doc! { "_id": existing.id, "createdAt": existing.created_at },
                    doc! { "$set": {
                        "requestHash": &fresh.request_hash,
                        "status": fresh.status,
                        "body": &fresh.body,
                        "createdAt": fresh.created_at,
                    } },
                ))
                .await
                .map_err(db_error)?;
            if taken_over.matched_count == 1 {
                return Ok(record.clone());
            }
        }
        Err(BackendError::other(
            BACKEND,
            "an idempotency key kept changing under concurrent saves",
        ))
    }
}
