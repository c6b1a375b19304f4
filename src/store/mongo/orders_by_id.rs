//! The orders' conditional writes on a server that finds documents by `_id` alone (FerretDB
//! 1.x, see `point_access`): each one a read and a write by `_id` under the write lock, instead
//! of a filter on `_id` and the status that such a server answers by scanning every order.
//!
//! The lock makes the pair atomic among all writers: every write to that server, from every
//! process, runs alone under it (`write_lock`). The answers are the documents read, with the
//! write applied to them (`with_set`), so nothing is read back.

use bson::oid::ObjectId;
use bson::{doc, Document};

use super::bulk::UpdateReply;
use super::documents::OrderDoc;
use super::errors::{db_error, BACKEND};
use super::point_access::{find_each, update_each_command, with_set};
use super::MongoStore;
use crate::domain::OrderStatus;
use crate::error::BackendError;
use crate::store::StoreResult;

/// What a conditional write on one order found.
pub(super) enum Conditional {
    /// The order as the write left it.
    Moved(OrderDoc),
    /// Not written: the order as it is, or `None` when there is no such order.
    Refused(Option<OrderDoc>),
}

impl MongoStore {
    /// `$set: set` on the order if its status is `from`.
    pub(super) async fn set_if_status_by_id(
        &self,
        id: ObjectId,
        from: OrderStatus,
        set: Document,
    ) -> StoreResult<Conditional> {
        let orders = self.orders.clone();
        self.write(async move {
            let Some(current) = orders.find_one(doc! { "_id": id }).await? else {
                return Ok(Conditional::Refused(None));
            };
            if current.status != from.as_str() {
                return Ok(Conditional::Refused(Some(current)));
            }
            let after = with_set(&current, &set)?;
            orders
                .update_one(doc! { "_id": id }, doc! { "$set": set })
                .await?;
            Ok(Conditional::Moved(after))
        })
        .await
        .map_err(db_error)
    }

    /// `$set: set` on each of these orders whose status is `from`, in one `update` command
    /// after a point read of each; an outcome per id, in order.
    pub(super) async fn set_each_if_status_by_id(
        &self,
        ids: &[ObjectId],
        from: OrderStatus,
        set: Document,
    ) -> StoreResult<Vec<Conditional>> {
        let orders = self.orders.clone();
        let db = self.db.clone();
        let update = doc! { "$set": set.clone() };
        let written = self
            .write(async move {
                let found = find_each(&orders, ids).await?;
                let movable: Vec<ObjectId> = found
                    .iter()
                    .filter(|d| d.status == from.as_str())
                    .map(|d| d.id)
                    .collect();
                if movable.is_empty() {
                    return Ok((found, None));
                }
                let reply = db
                    .run_command(update_each_command(orders.name(), &movable, &update))
                    .await?;
                Ok((found, Some(reply)))
            })
            .await
            .map_err(db_error)?;
        let (found, reply) = written;
        if let Some(reply) = reply {
            let reply = UpdateReply::parse(&reply)?;
            if !reply.refused.is_empty() {
                return Err(BackendError::other(
                    BACKEND,
                    format!("{} order transitions refused", reply.refused.len()),
                ));
            }
        }
        let mut by_id: std::collections::HashMap<ObjectId, OrderDoc> =
            found.into_iter().map(|d| (d.id, d)).collect();
        ids.iter()
            .map(|id| match by_id.remove(id) {
                None => Ok(Conditional::Refused(None)),
                Some(d) if d.status == from.as_str() => {
                    with_set(&d, &set).map(Conditional::Moved).map_err(db_error)
                }
                Some(d) => Ok(Conditional::Refused(Some(d))),
            })
            .collect()
    }

    /// Which of these orders are pending, by a point read of each.
    pub(super) async fn pending_among_by_id(
        &self,
        ids: &[ObjectId],
    ) -> StoreResult<std::collections::HashSet<ObjectId>> {
        let found = find_each(&self.orders, ids).await.map_err(db_error)?;
        Ok(found
            .into_iter()
            .filter(|d| d.status == OrderStatus::Pending.as_str())
            .map(|d| d.id)
            .collect())
    }
}
