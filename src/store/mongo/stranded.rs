//! The stranded-order sweeper's claims on MongoDB: which stranded orders this process sends
//! again. Every process sweeps, so a claim is a compare-and-set on the order's `resendDue`
//! (and its `updatedAt`, so an order that moved on meanwhile is not claimed); the statements
//! of one pass go out as one multi-statement `update`, and each claimed order carries the
//! pass's `resendClaim` token, by which the pass tells its claims from another process's when
//! not every statement matched.

use std::time::Duration;

use bson::oid::ObjectId;
use bson::{doc, Bson, Document};
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::TryStreamExt;
use serde::Deserialize;

use super::documents::{bson_time, chrono_time};
use super::errors::{db_error, BACKEND};
use super::MongoStore;
use crate::domain::{Id, OrderStatus};
use crate::error::BackendError;
use crate::store::orders::resend_due;
use crate::store::StoreResult;

/// What a claim reads of a stranded order, and compares against when it claims it.
#[derive(Deserialize)]
struct Stranded {
    #[serde(rename = "_id")]
    id: ObjectId,
    #[serde(rename = "updatedAt")]
    updated_at: bson::DateTime,
    #[serde(rename = "resendDue", default)]
    resend_due: Option<bson::DateTime>,
    #[serde(rename = "resendClaim", default)]
    resend_claim: Option<ObjectId>,
}

fn unfinished() -> Bson {
    Bson::from(doc! {
        "$in": [OrderStatus::Pending.as_str(), OrderStatus::Processing.as_str()]
    })
}

impl MongoStore {
    /// `Orders::claim_stranded`: one indexed read of the due orders and one update claiming
    /// them, plus a read of the claims by id only when another process claimed some first.
    pub(super) async fn claim_stranded_orders(
        &self,
        now: DateTime<Utc>,
        bound: Duration,
        limit: u32,
    ) -> StoreResult<Vec<Id>> {
        let before = now - TimeDelta::from_std(bound).unwrap_or(TimeDelta::MAX);
        // Served by orders_outbox's status prefix: only the orders not yet terminal are read.
        let filter = doc! {
            "status": unfinished(),
            "updatedAt": { "$lt": bson_time(before) },
            "$or": [
                { "resendDue": { "$exists": false } },
                { "resendDue": { "$lte": bson_time(now) } },
            ],
        };
        let orders = self.orders.clone_with_type::<Stranded>();
        let due: Vec<Stranded> = orders
            .find(filter)
            .sort(doc! { "updatedAt": 1 })
            .limit(i64::from(limit))
            .projection(doc! { "_id": 1, "updatedAt": 1, "resendDue": 1 })
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let token = ObjectId::new();
        let statements = due
            .iter()
            .map(|order| claim_statement(order, now, bound, token))
            .collect::<Result<Vec<Document>, BackendError>>()?;
        let matched = self
            .run_update_statements(self.orders.name(), statements, "a stranded-order claim")
            .await?;
        let ids: Vec<ObjectId> = due.iter().map(|order| order.id).collect();
        if matched == ids.len() as i64 {
            return Ok(ids.into_iter().map(Id::from_object_id).collect());
        }
        // Some were claimed (or changed) by someone else between the read and the update.
        let read = self.find_by_ids(&orders, &ids, |order| order.id).await?;
        Ok(ids
            .into_iter()
            .filter(|id| read.get(id).and_then(|order| order.resend_claim) == Some(token))
            .map(Id::from_object_id)
            .collect())
    }
}

/// The claim of one order: matched only while the order is as the read saw it.
fn claim_statement(
    order: &Stranded,
    now: DateTime<Utc>,
    bound: Duration,
    token: ObjectId,
) -> Result<Document, BackendError> {
    let updated_at = chrono_time(order.updated_at).map_err(|e| BackendError::other(BACKEND, e))?;
    let previous: Bson = match order.resend_due {
        Some(due) => due.into(),
        None => doc! { "$exists": false }.into(),
    };
    Ok(doc! {
        "q": {
            "_id": order.id,
            "status": unfinished(),
            "updatedAt": order.updated_at,
            "resendDue": previous,
        },
        "u": { "$set": {
            "resendDue": bson_time(resend_due(now, updated_at, bound)),
            "resendClaim": token,
        } },
    })
}
