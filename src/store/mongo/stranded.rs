//! The stranded-order sweeper's claims on MongoDB: which stranded orders this process sends
//! again. Every process sweeps, so a claim is a compare-and-set on the order's `resendDue`
//! (and its `updatedAt`, so an order that moved on meanwhile is not claimed); the statements
//! of one pass go out as one multi-statement `update`, and each claimed order carries the
//! pass's `resendClaim` token, by which the pass tells its claims from another process's when
//! not every statement matched.
//!
//! A pass that fails once its claims are sent (the reply lost, the call cut by
//! `BACKEND_TIMEOUT`, the read after it refused) may have claimed orders it never hands to the
//! sweeper, and a claim is due again only after a wait as long as the order's age (up to
//! `MAX_RESEND_WAIT_BOUNDS` bounds): an order stranded by a fault would stay stranded that much
//! longer. So the store remembers such a pass's token ([`UnsettledClaims`]), and the next pass
//! first takes over whatever that token still holds.

use std::sync::{Arc, Mutex};
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

/// The tokens of this process's claim passes whose claims may have landed without being handed
/// to the sweeper. Shared by the store's clones; a plain mutex, never held across an await.
#[derive(Clone, Default)]
pub(super) struct UnsettledClaims(Arc<Mutex<Vec<ObjectId>>>);

/// Tokens remembered at most: one is added per pass that fails after sending its claims.
const UNSETTLED_KEPT: usize = 64;

impl UnsettledClaims {
    fn note(&self, token: ObjectId) {
        let mut tokens = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if tokens.len() >= UNSETTLED_KEPT {
            tokens.remove(0);
        }
        tokens.push(token);
    }

    fn settled(&self, settled: &[ObjectId]) {
        let mut tokens = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tokens.retain(|t| !settled.contains(t));
    }

    fn snapshot(&self) -> Vec<ObjectId> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl MongoStore {
    /// `Orders::claim_stranded`: the orders an earlier pass of this process claimed without
    /// hearing back, if any (one read); then one indexed read of the due orders and one update
    /// claiming them, plus a read of the claims by id only when another process claimed some
    /// first.
    pub(super) async fn claim_stranded_orders(
        &self,
        now: DateTime<Utc>,
        bound: Duration,
        limit: u32,
    ) -> StoreResult<Vec<Id>> {
        // Settled only once this whole pass is answered: if its own claims fail, the next pass
        // reads these again.
        let tokens = self.unsettled_claims.snapshot();
        let mut ids = self.claimed_unheard(&tokens).await?;
        let fresh = self.claim_due_orders(now, bound, limit).await?;
        self.unsettled_claims.settled(&tokens);
        for id in fresh {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// The unfinished orders still under `tokens`, those of this process's passes that failed
    /// after sending their claims: claimed, never sent.
    async fn claimed_unheard(&self, tokens: &[ObjectId]) -> StoreResult<Vec<Id>> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let orders = self.orders.clone_with_type::<Stranded>();
        let claimed: Vec<Stranded> = orders
            .find(doc! { "status": unfinished(), "resendClaim": { "$in": tokens } })
            .projection(doc! { "_id": 1, "updatedAt": 1 })
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        Ok(claimed
            .into_iter()
            .map(|order| Id::from_object_id(order.id))
            .collect())
    }

    /// One pass's claims of the orders due now.
    async fn claim_due_orders(
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
        // Noted before the claims are sent; settled once they are handed over. A call cut
        // mid-way (`BACKEND_TIMEOUT` drops this future) leaves the note, as it must.
        self.unsettled_claims.note(token);
        let matched = self
            .run_update_statements(self.orders.name(), statements, "a stranded-order claim")
            .await?;
        let ids: Vec<ObjectId> = due.iter().map(|order| order.id).collect();
        if matched == ids.len() as i64 {
            self.unsettled_claims.settled(&[token]);
            return Ok(ids.into_iter().map(Id::from_object_id).collect());
        }
        // Some were claimed (or changed) by someone else between the read and the update.
        let read = self.find_by_ids(&orders, &ids, |order| order.id).await?;
        self.unsettled_claims.settled(&[token]);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_remembered_until_settled() {
        let claims = UnsettledClaims::default();
        let (a, b) = (ObjectId::new(), ObjectId::new());
        claims.note(a);
        claims.clone().note(b);
        assert_eq!(claims.snapshot(), vec![a, b]);
        claims.settled(&[a]);
        assert_eq!(claims.snapshot(), vec![b]);
    }

    #[test]
    fn the_oldest_tokens_go_first_past_the_bound() {
        let claims = UnsettledClaims::default();
        let first = ObjectId::new();
        claims.note(first);
        for _ in 0..UNSETTLED_KEPT {
            claims.note(ObjectId::new());
        }
        let kept = claims.snapshot();
        assert_eq!(kept.len(), UNSETTLED_KEPT);
        assert!(!kept.contains(&first));
    }
}
