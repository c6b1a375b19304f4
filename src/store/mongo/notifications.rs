//! Status-email claims on MongoDB, keyed by `_id` = `"{orderId}:{status}"`, so the claim, its
//! takeover, the mark-sent and the release are each a write on one `_id`, and the sweeper's
//! search for unsent claims runs on one index (`notifications_unsent`).
//!
//! A claim is inserted with `sent: false`; the `_id` makes a second insert a duplicate key,
//! atomic even where updates are not. A duplicate is then taken over only when it is unsent
//! and stale (`claimedAt` before the lease bound), by one conditional update. Marking sent
//! sets `sent` and `expiresAt` (sent time plus retention): a TTL index on `expiresAt` deletes
//! the record when it is past its use; unsent claims have no `expiresAt` and never expire.
//!
//! Records of the former shape (an ObjectId `_id`, no `sent`) still sit under the unique
//! `(orderId, status)` index: they refuse a new claim as a duplicate and never match a
//! takeover by `_id`, so an email claimed before the upgrade is not sent again.

use bson::doc;
use bson::oid::ObjectId;
use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use mongodb::options::ReturnDocument;
use mongodb::Collection;
use serde::{Deserialize, Serialize};

use super::bulk::insert_many_outcomes;
use super::documents::bson_time;
use super::errors::db_error;
use super::MongoStore;
use crate::domain::{Id, OrderStatus};
use crate::error::BackendError;
use crate::store::StoreResult;

/// One status email: who claimed it when, and whether it went out.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ClaimDoc {
    #[serde(rename = "_id")]
    pub(super) id: String,
    pub(super) order_id: ObjectId,
    pub(super) status: String,
    pub(super) claimed_at: bson::DateTime,
    #[serde(default)]
    pub(super) sent: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) expires_at: Option<bson::DateTime>,
}

fn key(order_id: Id, status: OrderStatus) -> String {
    format!("{order_id}:{}", status.as_str())
}

fn claim_doc(order_id: Id, status: OrderStatus, now: bson::DateTime) -> ClaimDoc {
    ClaimDoc {
        id: key(order_id, status),
        order_id: order_id.object_id(),
        status: status.as_str().to_owned(),
        claimed_at: now,
        sent: false,
        expires_at: None,
    }
}

impl MongoStore {
    fn claims(&self) -> &Collection<ClaimDoc> {
        &self.notifications
    }

    /// Takes over a claim that is unsent and stale; false when it is sent or fresh.
    async fn take_over(
        &self,
        order_id: Id,
        status: OrderStatus,
        stale_before: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let taken = self
            .write(self.claims().update_one(
                doc! {
                    "_id": key(order_id, status),
                    "sent": false,
                    "claimedAt": { "$lt": bson_time(stale_before) },
                },
                doc! { "$set": { "claimedAt": bson_time(Utc::now()) } },
            ))
            .await
            .map_err(db_error)?;
        Ok(taken.modified_count == 1)
    }

    pub(super) async fn claim_one_notification(
        &self,
        order_id: Id,
        status: OrderStatus,
        stale_before: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let claim = claim_doc(order_id, status, bson_time(Utc::now()));
        match self
            .write(self.claims().insert_one(&claim))
            .await
            .map_err(db_error)
        {
            Ok(_) => Ok(true),
            Err(BackendError::Duplicate) => self.take_over(order_id, status, stale_before).await,
            Err(e) => Err(e),
        }
    }

    /// One unordered `insertMany` for every claim; the ones refused as duplicates are then
    /// tried as takeovers. All are made or none: when the batch fails, the claims it did make
    /// are given back (see the trait).
    pub(super) async fn claim_many_notifications(
        &self,
        claims: &[(Id, OrderStatus)],
        stale_before: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        if claims.len() < 2 {
            let mut made = Vec::with_capacity(claims.len());
            for &(order_id, status) in claims {
                made.push(
                    self.claim_one_notification(order_id, status, stale_before)
                        .await?,
                );
            }
            return Ok(made);
        }
        let now = bson_time(Utc::now());
        let docs: Vec<ClaimDoc> = claims
            .iter()
            .map(|&(order_id, status)| claim_doc(order_id, status, now))
            .collect();
        let result = self
            .write(self.claims().insert_many(&docs).ordered(false))
            .await;
        let outcomes = insert_many_outcomes(result, docs.len())?;
        let answers = join_all(claims.iter().zip(&outcomes).map(
            |(&(order_id, status), outcome)| async move {
                match outcome {
                    Ok(()) => Ok(true),
                    Err(BackendError::Duplicate) => {
                        self.take_over(order_id, status, stale_before).await
                    }
                    Err(e) => Err(e.clone()),
                }
            },
        ))
        .await;
        if let Some(e) = answers.iter().find_map(|a| a.as_ref().err()).cloned() {
            for (&(order_id, status), answer) in claims.iter().zip(&answers) {
                if matches!(answer, Ok(true)) {
                    let _ = self.release_one_notification(order_id, status).await;
                }
            }
            return Err(e);
        }
        Ok(answers.into_iter().flatten().collect())
    }

    /// Sets `sent` (and the expiry) and answers whether it was set before. A missing record is
    /// written as sent; one of the former shape refuses the upsert by its unique index and
    /// counts as sent before.
    pub(super) async fn mark_one_notification_sent(
        &self,
        order_id: Id,
        status: OrderStatus,
        now: DateTime<Utc>,
        keep_until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let before = self
            .write(
                self.claims()
                    .find_one_and_update(
                        doc! { "_id": key(order_id, status) },
                        doc! {
                            "$set": { "sent": true, "expiresAt": bson_time(keep_until) },
                            "$setOnInsert": {
                                "orderId": order_id.object_id(),
                                "status": status.as_str(),
                                "claimedAt": bson_time(now),
                            },
                        },
                    )
                    .upsert(true)
                    .return_document(ReturnDocument::Before),
            )
            .await
            .map_err(db_error);
        match before {
            Ok(before) => Ok(before.is_some_and(|d| d.sent)),
            Err(BackendError::Duplicate) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// One `find` (which were sent before) and one `updateMany` for the batch; a claim the
    /// update did not find (purged, or of the former shape) is then marked on its own.
    pub(super) async fn mark_many_notifications_sent(
        &self,
        claims: &[(Id, OrderStatus)],
        now: DateTime<Utc>,
        keep_until: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        if claims.len() < 2 {
            let mut before = Vec::with_capacity(claims.len());
            for &(order_id, status) in claims {
                before.push(
                    self.mark_one_notification_sent(order_id, status, now, keep_until)
                        .await?,
                );
            }
            return Ok(before);
        }
        let keys: Vec<String> = claims.iter().map(|&(o, s)| key(o, s)).collect();
        let found = self
            .find_by_ids(self.claims(), &keys, |d: &ClaimDoc| d.id.clone())
            .await?;
        let update = doc! { "$set": { "sent": true, "expiresAt": bson_time(keep_until) } };
        let matched = self.update_by_ids(self.claims(), &keys, update).await?;
        let mut before = Vec::with_capacity(claims.len());
        for (&(order_id, status), key) in claims.iter().zip(&keys) {
            match found.get(key) {
                Some(d) => before.push(d.sent),
                // Not there at the read: written as sent now (unless the update's count says
                // every claim was found after all).
                None if matched < keys.len() as u64 => before.push(
                    self.mark_one_notification_sent(order_id, status, now, keep_until)
                        .await?,
                ),
                None => before.push(false),
            }
        }
        Ok(before)
    }

    pub(super) async fn release_one_notification(
        &self,
        order_id: Id,
        status: OrderStatus,
    ) -> StoreResult<()> {
        self.write(self.claims().update_one(
            doc! { "_id": key(order_id, status), "sent": false },
            doc! { "$set": { "claimedAt": bson::DateTime::from_millis(0) } },
        ))
        .await
        .map_err(db_error)?;
        Ok(())
    }

    pub(super) async fn unsent_notification_claims(
        &self,
        stale_before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<(Id, OrderStatus)>> {
        let docs = super::find_sorted(
            self.claims(),
            doc! { "sent": false, "claimedAt": { "$lt": bson_time(stale_before) } },
            doc! { "claimedAt": 1 },
            limit,
        )
        .await?;
        Ok(docs
            .into_iter()
            .filter_map(|d| {
                let status = OrderStatus::parse(&d.status)?;
                Some((Id::from_object_id(d.order_id), status))
            })
            .collect())
    }
}
