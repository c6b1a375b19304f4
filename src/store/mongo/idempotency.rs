//! Idempotency records on MongoDB, keyed by `_id` = `"{userId}:{key}"`: the lookup is a point
//! read and the save a plain insert whose duplicate-key refusal decides who was first, with no
//! secondary unique index to maintain on every order. The age check makes expiry exact whether
//! or not the server has TTL indexes.
//!
//! Records written before this layout (collection `idempotency_keys`, an ObjectId `_id` and a
//! unique index on `(userId, key)`) are still honoured while any of them is young enough to
//! matter: a retry that spans the upgrade gets its first answer, not a second order. At connect
//! the store looks once for such a record; when there is none (every new deployment, and every
//! one a day after the upgrade) no request pays for the old collection.

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

/// The collection of the records as they are written now.
pub(super) const COLLECTION: &str = "idempotency_records";

/// The collection of the records written before they were keyed by `_id`; only read.
pub(super) const LEGACY_COLLECTION: &str = "idempotency_keys";

/// Passes of `save_idempotency`; each one only fails because another saver changed the key.
const SAVE_ATTEMPTS: usize = 5;

/// Where the server has no TTL indexes, expired records are purged by the saves themselves,
/// at most this often per process: one `delete` per order would double the writes of an
/// idempotent order, and a record's age check already hides what is not purged yet.
pub(super) const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The record's `_id`. A key is 1 to 255 visible ASCII characters (checked at the edge), so it
/// can not contain anything that would make two (user, key) pairs meet.
fn record_id(user_id: Id, key: &str) -> String {
    format!("{}:{key}", user_id.object_id().to_hex())
}

fn oldest_alive(now: DateTime<Utc>) -> bson::DateTime {
    bson_time(now - TimeDelta::hours(IDEMPOTENCY_TTL_HOURS))
}

#[async_trait]
impl Idempotency for MongoStore {
    async fn find_idempotency(
        &self,
        user_id: Id,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        // A TTL index removes expired records only once a minute, and not at all where the
        // server has none: the age check is what makes expiry exact.
        let oldest = oldest_alive(Utc::now());
        let found = self
            .idempotency
            .find_one(doc! { "_id": record_id(user_id, key), "createdAt": { "$gte": oldest } })
            .await
            .map_err(db_error)?;
        match found {
            Some(d) => idempotency_from_doc(d).map(Some),
            None => self.find_legacy_idempotency(user_id, key, oldest).await,
        }
    }

    async fn save_idempotency(
        &self,
        user_id: Id,
        key: &str,
        record: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<IdempotencyRecord> {
        let oldest = oldest_alive(now);
        if !self.ttl_indexes && self.idempotency_purges.due() {
            self.write(
                self.idempotency
                    .delete_many(doc! { "createdAt": { "$lt": oldest } }),
            )
            .await
            .map_err(db_error)?;
        }
        if let Some(first) = self.find_legacy_idempotency(user_id, key, oldest).await? {
            return Ok(first);
        }
        let fresh = IdempotencyDoc {
            id: record_id(user_id, key),
            user_id: user_id.object_id(),
            key: key.to_owned(),
            request_hash: record.request_hash.clone(),
            status: i32::from(record.status),
            body: record.body.clone(),
            created_at: bson_time(now),
        };
        // The `_id` decides who is first. A loser reads the winner; a winner that has expired
        // but is not purged yet is taken over, conditionally on its creation time so that two
        // savers can not both take it over. Each pass ends or sees a change made by someone
        // else, so a few passes settle any race.
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
                .find_one(doc! { "_id": &fresh.id })
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
                    doc! { "_id": &fresh.id, "createdAt": existing.created_at },
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

impl MongoStore {
    /// A record of the layout before `_id` keys, when one young enough was seen at connect.
    async fn find_legacy_idempotency(
        &self,
        user_id: Id,
        key: &str,
        oldest: bson::DateTime,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        if !self.legacy_idempotency {
            return Ok(None);
        }
        self.db
            .collection::<LegacyIdempotencyDoc>(LEGACY_COLLECTION)
            .find_one(doc! {
                "userId": user_id.object_id(),
                "key": key,
                "createdAt": { "$gte": oldest },
            })
            .await
            .map_err(db_error)?
            .map(legacy_idempotency_from_doc)
            .transpose()
    }

    /// Whether the old collection holds a record that can still be replayed (one read at
    /// connect).
    pub(super) async fn has_legacy_idempotency(&self) -> StoreResult<bool> {
        let young = self
            .db
            .collection::<bson::Document>(LEGACY_COLLECTION)
            .find_one(doc! { "createdAt": { "$gte": oldest_alive(Utc::now()) } })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(db_error)?;
        Ok(young.is_some())
    }
}
