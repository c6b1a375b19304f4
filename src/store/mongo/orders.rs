//! Orders, their transitions, notification claims and outbox entries on MongoDB. Without a
//! transaction spanning an order and its products, the order document carries the bookkeeping
//! that makes a failed or cancelled order's stock come back exactly once.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use mongodb::options::ReturnDocument;

use async_trait::async_trait;

use bson::doc;
use bson::oid::ObjectId;
use futures_util::future::try_join_all;
use futures_util::TryStreamExt;

use super::bulk::insert_many_outcomes;
use super::documents::*;
use super::errors::db_error;
use super::orders_by_id::Conditional;
use super::{find_page, find_sorted, MongoStore};
use crate::domain::{Id, Order, OrderStatus, PageRequest};
use crate::error::BackendError;
use crate::store::{Orders, StoreResult, TransitionOutcome};

impl MongoStore {
    /// Gives back the stock of a failed or cancelled order, exactly once per product however
    /// many callers (the winning transition, a refused retry, the repair at start) try at once.
    ///
    /// There is no transaction spanning the order and its products, so the transition that
    /// moved the order set `stockReturned: false` in the same conditional update as the status
    /// (so the intent can not be lost), and each product's return is one update conditional on
    /// the product not holding the return's record yet, which it adds (see `holds`): a retry
    /// after any cut (a lost reply, a crash between products) gives back only what did not
    /// come back. Products claimed on the order by the former way (`returnedProducts`, before
    /// an upgrade) are left as they were. Then `stockReturned` is set, and no caller tries again.
    async fn return_order_stock(&self, order: &OrderDoc) -> StoreResult<()> {
        let lines: Vec<(ObjectId, i64)> = merge_quantities(
            order
                .items
                .iter()
                .map(|i| (i.product_id, i64::from(i.quantity))),
        )
        .into_iter()
        .filter(|(product_id, _)| !order.returned_products.contains(product_id))
        .collect();
        self.return_once(order.id, order.updated_at, &lines).await?;
        self.write(self.orders.update_one(
            doc! { "_id": order.id },
            doc! { "$set": { "stockReturned": true } },
        ))
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Finishes the stock returns of failed or cancelled orders that a crash or an outage
    /// interrupted (their `stockReturned` is still false). Safe to run at any time and from
    /// several processes at once; meant to be called at start. Returns how many orders it
    /// finished.
    pub async fn repair_stock_returns(&self) -> StoreResult<u64> {
        let returning: Vec<&str> = OrderStatus::ALL
            .into_iter()
            .filter(|s| s.returns_stock())
            .map(OrderStatus::as_str)
            .collect();
        let pending: Vec<OrderDoc> = self
            .orders
            .find(doc! { "status": { "$in": returning }, "stockReturned": false })
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        let mut repaired = 0;
        for order in &pending {
            self.return_order_stock(order).await?;
            repaired += 1;
        }
        if repaired > 0 {
            tracing::info!(orders = repaired, "finished interrupted stock returns");
        }
        Ok(repaired)
    }
}

#[async_trait]
impl Orders for MongoStore {
    async fn insert_order(&self, order: &Order) -> StoreResult<()> {
        self.order_inserts.insert(order_to_doc(order)).await
    }

    async fn find_order(&self, id: Id) -> StoreResult<Option<Order>> {
        self.orders
            .find_one(doc! { "_id": id.object_id() })
            .await
            .map_err(db_error)?
            .map(order_from_doc)
            .transpose()
    }

    async fn list_orders(&self, user_id: Id, page: PageRequest) -> StoreResult<(Vec<Order>, u64)> {
        let filter = doc! { "userId": user_id.object_id() };
        // _id breaks ties within a millisecond, so the order is total and pages are stable.
        let sort = doc! { "createdAt": -1, "_id": -1 };
        find_page(&self.orders, filter, sort, page, order_from_doc).await
    }

    async fn list_all_orders(
        &self,
        status: Option<OrderStatus>,
        page: PageRequest,
    ) -> StoreResult<(Vec<Order>, u64)> {
        // With a status, served by orders_by_status.
        let filter = match status {
            Some(status) => doc! { "status": status.as_str() },
            None => doc! {},
        };
        let sort = doc! { "createdAt": -1, "_id": -1 };
        find_page(&self.orders, filter, sort, page, order_from_doc).await
    }

    async fn transition_order(
        &self,
        id: Id,
        from: OrderStatus,
        to: OrderStatus,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<TransitionOutcome> {
        let mut set = doc! { "status": to.as_str(), "updatedAt": bson_time(now) };
        if let Some(reason) = reason {
            set.insert("failureReason", reason);
        }
        if to.returns_stock() {
            // The intent to return stock, written with the status in one atomic update, so it
            // survives a crash before the stock is back (see `return_order_stock`).
            set.insert("stockReturned", false);
        }
        let moved = if self.by_id_only() {
            self.set_if_status_by_id(id.object_id(), from, set).await?
        } else {
            let moved = self
                .write(
                    self.orders
                        .find_one_and_update(
                            doc! { "_id": id.object_id(), "status": from.as_str() },
                            doc! { "$set": set },
                        )
                        .return_document(ReturnDocument::After),
                )
                .await
                .map_err(db_error)?;
            match moved {
                Some(doc) => Conditional::Moved(doc),
                None => Conditional::Refused(
                    self.orders
                        .find_one(doc! { "_id": id.object_id() })
                        .await
                        .map_err(db_error)?,
                ),
            }
        };
        match moved {
            Conditional::Moved(doc) => {
                if to.returns_stock() {
                    // On error the order has moved but its stock is not all back: the caller
                    // sees the error (the step it asked for is unfinished), and its retry,
                    // refused below, or the repair at start finishes the return.
                    self.return_order_stock(&doc).await?;
                }
                Ok(TransitionOutcome::Moved(order_from_doc(doc)?))
            }
            Conditional::Refused(current) => {
                // A caller retrying a transition whose stock return was cut short finishes it
                // here; the per-product claims make that safe alongside any other attempt.
                if let Some(doc) = current.as_ref().filter(|d| d.stock_returned == Some(false)) {
                    self.return_order_stock(doc).await?;
                }
                Ok(TransitionOutcome::Refused(
                    current.map(order_from_doc).transpose()?,
                ))
            }
        }
    }

    /// One `updateMany` and one `find` for the whole batch instead of a `findAndModify` per
    /// order. The update stamps the orders it moves with a fresh token (`movedBy`), so the read
    /// tells each order's outcome apart: moved by this batch, or refused (as it is). Transitions
    /// that return stock go one by one, since each carries its own return. On FerretDB, which
    /// would scan every order for both, a point read each and one update of one `_id` per
    /// statement (`orders_by_id`).
    async fn transition_orders(
        &self,
        ids: &[Id],
        from: OrderStatus,
        to: OrderStatus,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<TransitionOutcome>> {
        if ids.len() < 2 || to.returns_stock() {
            return try_join_all(
                ids.iter()
                    .map(|&id| self.transition_order(id, from, to, None, now)),
            )
            .await;
        }
        let oids: Vec<ObjectId> = ids.iter().map(|id| id.object_id()).collect();
        if self.by_id_only() {
            let set = doc! { "status": to.as_str(), "updatedAt": bson_time(now) };
            let outcomes = self.set_each_if_status_by_id(&oids, from, set).await?;
            return outcomes
                .into_iter()
                .map(|outcome| match outcome {
                    Conditional::Moved(d) => order_from_doc(d).map(TransitionOutcome::Moved),
                    Conditional::Refused(d) => d
                        .map(order_from_doc)
                        .transpose()
                        .map(TransitionOutcome::Refused),
                })
                .collect();
        }
        let token = ObjectId::new();
        self.write(self.orders.update_many(
            doc! { "_id": { "$in": &oids }, "status": from.as_str() },
            doc! { "$set": { "status": to.as_str(), "updatedAt": bson_time(now), "movedBy": token } },
        ))
        .await
        .map_err(db_error)?;
        let mut found = self
            .find_by_ids(&self.orders, &oids, |d: &OrderDoc| d.id)
            .await?;
        oids.iter()
            .map(|oid| {
                let Some(d) = found.remove(oid) else {
                    return Ok(TransitionOutcome::Refused(None));
                };
                // Moved by us and still where we put it; moved on since by someone else counts
                // as refused, so only one caller ever acts on a transition.
                let ours = d.moved_by == Some(token) && d.status == to.as_str();
                let order = order_from_doc(d)?;
                Ok(if ours {
                    TransitionOutcome::Moved(order)
                } else {
                    TransitionOutcome::Refused(Some(order))
                })
            })
            .collect()
    }

    // The email claims live in `notifications.rs`.
    async fn claim_notifications(
        &self,
        claims: &[(Id, OrderStatus)],
        stale_before: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        self.claim_many_notifications(claims, stale_before).await
    }

    async fn claim_notification(
        &self,
        order_id: Id,
        status: OrderStatus,
        stale_before: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.claim_one_notification(order_id, status, stale_before)
            .await
    }

    async fn mark_notification_sent(
        &self,
        order_id: Id,
        status: OrderStatus,
        now: DateTime<Utc>,
        keep_until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.mark_one_notification_sent(order_id, status, now, keep_until)
            .await
    }

    async fn mark_notifications_sent(
        &self,
        claims: &[(Id, OrderStatus)],
        now: DateTime<Utc>,
        keep_until: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        self.mark_many_notifications_sent(claims, now, keep_until)
            .await
    }

    async fn release_notification(&self, order_id: Id, status: OrderStatus) -> StoreResult<()> {
        self.release_one_notification(order_id, status).await
    }

    async fn unsent_notifications(
        &self,
        stale_before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<(Id, OrderStatus)>> {
        self.unsent_notification_claims(stale_before, limit).await
    }

    async fn mark_enqueued(&self, order_id: Id) -> StoreResult<()> {
        self.mark_enqueued_many(&[order_id]).await
    }

    async fn mark_enqueued_many(&self, order_ids: &[Id]) -> StoreResult<()> {
        if order_ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<_> = order_ids.iter().map(|id| id.object_id()).collect();
        self.write(self.outbox.delete_many(doc! { "_id": { "$in": ids } }))
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn unenqueued_orders(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Id>> {
        loop {
            let entries = find_sorted(
                &self.outbox,
                doc! { "createdAt": { "$lt": bson_time(before) } },
                doc! { "createdAt": 1 },
                limit,
            )
            .await?;
            let full_page = entries.len() == limit as usize;
            let ids: Vec<ObjectId> = entries.iter().map(|e| e.order_id).collect();
            let pending = self.pending_among(&ids).await?;
            // An entry whose order is not pending needs no message: a worker took the order,
            // it was cancelled, or its insert never landed (the entry goes first, see
            // `insert_batcher`). Dropped here, so a later page is not full of them.
            let settled: Vec<ObjectId> = ids
                .iter()
                .copied()
                .filter(|id| !pending.contains(id))
                .collect();
            if !settled.is_empty() {
                self.write(self.outbox.delete_many(doc! { "_id": { "$in": settled } }))
                    .await
                    .map_err(db_error)?;
            }
            if !pending.is_empty() || !full_page {
                return Ok(ids
                    .into_iter()
                    .filter(|id| pending.contains(id))
                    .map(Id::from_object_id)
                    .collect());
            }
        }
    }

    async fn stuck_orders(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Id>> {
        // Served by orders_outbox's status prefix: only the orders not yet terminal are read.
        let filter = doc! {
            "status": { "$in": [OrderStatus::Pending.as_str(), OrderStatus::Processing.as_str()] },
            "updatedAt": { "$lt": bson_time(before) },
        };
        self.order_ids(filter, doc! { "updatedAt": 1 }, limit).await
    }

    async fn claim_stranded(
        &self,
        now: DateTime<Utc>,
        bound: std::time::Duration,
        limit: u32,
    ) -> StoreResult<Vec<Id>> {
        self.claim_stranded_orders(now, bound, limit).await
    }

    async fn orders_changed_since(
        &self,
        user_id: Option<Id>,
        since: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Order>> {
        // Served by orders_by_change, or orders_by_user_change for one user's.
        let mut filter = doc! { "updatedAt": { "$gte": bson_time(since) } };
        if let Some(user_id) = user_id {
            filter.insert("userId", user_id.object_id());
        }
        let docs = find_sorted(
            &self.orders,
            filter,
            doc! { "updatedAt": 1, "_id": 1 },
            limit,
        )
        .await?;
        docs.into_iter().map(order_from_doc).collect()
    }
}

impl MongoStore {
    /// Which of these orders are pending, in one indexed read.
    async fn pending_among(&self, ids: &[ObjectId]) -> StoreResult<HashSet<ObjectId>> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        if self.by_id_only() {
            return self.pending_among_by_id(ids).await;
        }
        let filter = doc! { "_id": { "$in": ids }, "status": OrderStatus::Pending.as_str() };
        let found = self.order_ids(filter, doc! {}, ids.len() as u32).await?;
        Ok(found.into_iter().map(|id| id.object_id()).collect())
    }

    /// Outbox entries for the pending orders an earlier version flagged `enqueued: false`
    /// instead, so an upgrade loses none of them; their flags are then removed, so this finds
    /// nothing next time. Runs at connect: one indexed read when there is nothing to move.
    pub(super) async fn move_legacy_outbox_flags(&self) -> StoreResult<u64> {
        let flagged: Vec<OutboxDoc> = self
            .orders
            .clone_with_type::<OutboxDoc>()
            .find(doc! { "status": OrderStatus::Pending.as_str(), "enqueued": false })
            .projection(doc! { "_id": 1, "createdAt": 1 })
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        if flagged.is_empty() {
            return Ok(0);
        }
        let entered = self
            .write(self.outbox.insert_many(&flagged).ordered(false))
            .await;
        for outcome in insert_many_outcomes(entered, flagged.len())? {
            match outcome {
                Ok(()) | Err(BackendError::Duplicate) => {}
                Err(e) => return Err(e),
            }
        }
        // Only these: the flag of orders already sent is harmless and never read again, and
        // clearing it everywhere would scan the whole collection at every start.
        let ids: Vec<ObjectId> = flagged.iter().map(|e| e.order_id).collect();
        self.write(self.orders.update_many(
            doc! { "_id": { "$in": ids } },
            doc! { "$unset": { "enqueued": "" } },
        ))
        .await
        .map_err(db_error)?;
        Ok(flagged.len() as u64)
    }

    /// The ids of the orders `filter` selects, in `sort` order, at most `limit`.
    async fn order_ids(
        &self,
        filter: bson::Document,
        sort: bson::Document,
        limit: u32,
    ) -> StoreResult<Vec<Id>> {
        let docs: Vec<IdDoc> = self
            .orders
            .clone_with_type::<IdDoc>()
            .find(filter)
            .sort(sort)
            .limit(i64::from(limit))
            .projection(doc! { "_id": 1 })
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        Ok(docs.into_iter().map(|d| Id::from_object_id(d.id)).collect())
    }
}
