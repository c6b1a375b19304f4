//! Products and stock on MongoDB: reservations with conditional decrements (all the lines of
//! an order in one write), each recording its hold on the product in the same update (see
//! `holds`), and compensation when a line can not be taken (see the module comment of
//! `super`). Every give-back goes through the hold, so it happens at most once per line.

use std::collections::HashMap;

use bson::oid::ObjectId;
use chrono::{DateTime, Utc};
use mongodb::options::ReturnDocument;

use async_trait::async_trait;
use bson::{doc, Document};

use super::bulk::UpdateReply;
use super::documents::*;
use super::errors::{db_error, BACKEND, DUPLICATE_KEY};
use super::{find_page, holds, MongoStore};
use crate::domain::{Id, NewProduct, OrderLine, PageRequest, Product, ProductPatch};
use crate::error::BackendError;
use crate::error::Shortage;
use crate::store::{Catalogue, Hold, HoldSweep, ReserveOutcome, StoreResult};

/// How often a reservation that lost a race (it failed, yet stock was there when it looked) is
/// tried again before answering `Insufficient`. Each retry only happens after a real conflict,
/// so a few are plenty.
const RESERVE_ATTEMPTS: usize = 5;

impl MongoStore {
    async fn find_products(&self, ids: &[ObjectId]) -> StoreResult<HashMap<ObjectId, Product>> {
        self.find_by_ids(&self.products, ids, |d: &ProductDoc| d.id)
            .await?
            .into_iter()
            .map(|(id, d)| Ok((id, product_from_doc(d)?)))
            .collect()
    }

    /// A multi-line reservation in one write: one `update` command whose ordered statements
    /// are each a conditional decrement with `upsert`. A line that can not be taken matches
    /// nothing, so its upsert tries to insert the product's `_id` again and fails as a duplicate
    /// key, and that stops the statements after it: the lines before it are exactly the ones
    /// taken, and they are given back. Products are never deleted, and every line's product was
    /// just read, so the upsert never inserts. The products answered are as read just before the
    /// write (name and price snapshot the order). Returns `None` when the lines could not all be
    /// taken (the caller decides why from a fresh read).
    async fn try_reserve_together(
        &self,
        wanted: &[(ObjectId, i64)],
        hold: &Hold,
    ) -> StoreResult<Option<Vec<Product>>> {
        let ids: Vec<ObjectId> = wanted.iter().map(|(id, _)| *id).collect();
        let mut found = self.find_products(&ids).await?;
        if wanted
            .iter()
            .any(|(id, qty)| !found.get(id).is_some_and(|p| p.stock >= *qty))
        {
            return Ok(None);
        }
        let updates: Vec<Document> = wanted
            .iter()
            .map(|&(id, qty)| {
                doc! {
                    "q": { "_id": id, "stock": { "$gte": qty } },
                    "u": {
                        "$inc": { "stock": -qty },
                        "$push": { holds::FIELD: holds::entry(hold, qty) },
                    },
                    "upsert": true,
                }
            })
            .collect();
        let command = doc! { "update": self.products.name(), "updates": updates, "ordered": true };
        // Unknown whether any decrement happened when the reply is lost: each that did carries
        // the hold, and the hold sweeper gives it back once the order is known not stored.
        let reply = self
            .write(self.db.run_command(command))
            .await
            .map_err(db_error)?;
        let reply = UpdateReply::parse(&reply)?;
        let Some(&(refused_at, code)) = reply.refused.first() else {
            return Ok(Some(
                ids.iter()
                    .map(|id| found.remove(id).expect("every product was read"))
                    .collect(),
            ));
        };
        // Given back through the hold, so only lines really taken come back, whatever the reply
        // says of where the statements stopped.
        let taken = &wanted[..refused_at.min(wanted.len())];
        self.give_back_held(hold, taken).await?;
        if code == DUPLICATE_KEY {
            Ok(None)
        } else {
            Err(BackendError::other(
                BACKEND,
                format!("a stock reservation was refused with code {code}"),
            ))
        }
    }

    /// One pass over the lines: takes each with a conditional decrement, in turn, stopping at
    /// the first that can not be taken. The pass is one write, so on FerretDB it is one turn at
    /// the write lock (one wait behind the other writers) however many lines the order has.
    /// Returns the products as they were before their decrement, or, at the first line that can
    /// not be taken, gives the taken lines back and returns `None`.
    async fn try_reserve(
        &self,
        wanted: &[(ObjectId, i64)],
        hold: &Hold,
    ) -> StoreResult<Option<Vec<Product>>> {
        let mut answers = Vec::with_capacity(wanted.len());
        let take_in_turn = async {
            for &(id, qty) in wanted {
                let answer = self
                    .products
                    .find_one_and_update(
                        doc! { "_id": id, "stock": { "$gte": qty } },
                        doc! {
                            "$inc": { "stock": -qty },
                            "$push": { holds::FIELD: holds::entry(hold, qty) },
                        },
                    )
                    .return_document(ReturnDocument::Before)
                    .await;
                let taken = matches!(answer, Ok(Some(_)));
                answers.push(answer);
                if !taken {
                    break;
                }
            }
            Ok(())
        };
        // An error here is the write lock's refusal: nothing was sent.
        self.write(take_in_turn).await.map_err(db_error)?;
        let mut before = Vec::with_capacity(wanted.len());
        for (i, answer) in answers.into_iter().enumerate() {
            let taken_now = match answer {
                Ok(Some(doc)) => product_from_doc(doc),
                Ok(None) => {
                    self.give_back_held(hold, &wanted[..i]).await?;
                    return Ok(None);
                }
                // Unknown whether this decrement happened (the reply may be what was lost): it
                // is given back with the others only if its hold is on the product, and if
                // that fails too, the hold sweeper gives back whatever the hold took.
                Err(e) => Err(db_error(e)),
            };
            match taken_now {
                Ok(product) => before.push(product),
                Err(e) => {
                    let _ = self.give_back_held(hold, &wanted[..=i]).await;
                    return Err(e);
                }
            }
        }
        Ok(Some(before))
    }
}

#[async_trait]
impl Catalogue for MongoStore {
    async fn insert_product(
        &self,
        product: &NewProduct,
        id: Id,
        now: DateTime<Utc>,
    ) -> StoreResult<Product> {
        let d = ProductDoc {
            id: id.object_id(),
            name: product.name.clone(),
            description: product.description.clone(),
            price: product.price.value(),
            stock: product.stock,
            created_at: bson_time(now),
            updated_at: bson_time(now),
        };
        self.write(self.products.insert_one(&d))
            .await
            .map_err(db_error)?;
        // Built from what was stored, so the answer equals what a later read returns (times
        // at millisecond precision).
        product_from_doc(d)
    }

    async fn find_product(&self, id: Id) -> StoreResult<Option<Product>> {
        self.products
            .find_one(doc! { "_id": id.object_id() })
            .await
            .map_err(db_error)?
            .map(product_from_doc)
            .transpose()
    }

    async fn list_products(&self, page: PageRequest) -> StoreResult<(Vec<Product>, u64)> {
        // _id breaks ties between products created in the same millisecond, so pages never
        // overlap or skip.
        let sort = doc! { "createdAt": 1, "_id": 1 };
        find_page(&self.products, doc! {}, sort, page, product_from_doc).await
    }

    async fn update_product(
        &self,
        id: Id,
        patch: &ProductPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Product>> {
        if patch.is_empty() {
            // Nothing to change, so nothing to date either.
            return self.find_product(id).await;
        }
        let mut set = doc! { "updatedAt": bson_time(now) };
        if let Some(name) = &patch.name {
            set.insert("name", name);
        }
        if let Some(description) = &patch.description {
            set.insert("description", description);
        }
        if let Some(price) = patch.price {
            set.insert("price", price.value());
        }
        if let Some(stock) = patch.stock {
            set.insert("stock", stock);
        }
        self.write(
            self.products
                .find_one_and_update(doc! { "_id": id.object_id() }, doc! { "$set": set })
                .return_document(ReturnDocument::After),
        )
        .await
        .map_err(db_error)?
        .map(product_from_doc)
        .transpose()
    }

    async fn reserve_stock(&self, lines: &[OrderLine], hold: &Hold) -> StoreResult<ReserveOutcome> {
        let wanted = order_line_quantities(lines);
        let ids: Vec<ObjectId> = wanted.iter().map(|(id, _)| *id).collect();
        // Taken in one global order (by id), as locks are, so that two reservations wanting the
        // same products contend for the first of them instead of each holding what the other
        // needs and both failing. Outcomes are still reported in request order.
        let mut take_order = wanted.clone();
        take_order.sort_unstable_by_key(|(id, _)| *id);
        for attempt in 1..=RESERVE_ATTEMPTS {
            // One line: one findAndModify, which also answers the product. More: a read and
            // one write for all of them, instead of a write per line; not on FerretDB 1.x, where
            // the scale-out test lost stock with it (3 units of 100,000 under two processes):
            // its ordered multi-statement update did not stop where its reply said, so the
            // lines given back were not exactly the lines taken.
            let taken = if take_order.len() == 1 || self.serialises_writes() {
                self.try_reserve(&take_order, hold).await?
            } else {
                self.try_reserve_together(&take_order, hold).await?
            };
            if let Some(before) = taken {
                // One entry per requested line, as the embedded store answers, with the product
                // as it was before this reservation took from it.
                let reserved = lines
                    .iter()
                    .map(|line| {
                        let product = before
                            .iter()
                            .find(|p| p.id == line.product_id)
                            .cloned()
                            .expect("every line's product was reserved");
                        (product, *line)
                    })
                    .collect();
                return Ok(ReserveOutcome::Reserved(reserved));
            }
            // Decide from what is there now that our own holds are given back.
            let current = self.find_products(&ids).await?;
            let missing: Vec<Id> = ids
                .iter()
                .filter(|id| !current.contains_key(id))
                .map(|id| Id::from_object_id(*id))
                .collect();
            if !missing.is_empty() {
                return Ok(ReserveOutcome::UnknownProducts(missing));
            }
            let shortages: Vec<Shortage> = wanted
                .iter()
                .map(|(id, qty)| (&current[id], *qty))
                .filter(|(p, qty)| p.stock < *qty)
                .map(|(p, qty)| Shortage {
                    product_id: p.id,
                    product_name: p.name.clone(),
                    requested: u32::try_from(qty).unwrap_or(u32::MAX),
                    available: p.stock,
                })
                .collect();
            if !shortages.is_empty() {
                return Ok(ReserveOutcome::Insufficient(shortages));
            }
            // Every line has enough stock now: a concurrent reservation held some of it while
            // we tried and has given it back since. Try again.
            tracing::debug!(attempt, "stock reservation raced with another; retrying");
            tokio::task::yield_now().await;
        }
        // Stock kept moving under us on every attempt: the lines were in stock each time we
        // looked, yet we could not get them all. Rather than loop on, answer with every line as
        // it last stood; the client may try again.
        let current = self.find_products(&ids).await?;
        let shortages = wanted
            .iter()
            .filter_map(|(id, qty)| {
                current.get(id).map(|p| Shortage {
                    product_id: p.id,
                    product_name: p.name.clone(),
                    requested: u32::try_from(*qty).unwrap_or(u32::MAX),
                    available: p.stock,
                })
            })
            .collect();
        Ok(ReserveOutcome::Insufficient(shortages))
    }

    async fn release_stock(&self, lines: &[OrderLine], hold: &Hold) -> StoreResult<()> {
        // Each line is its own statement of one unordered command, so every line is tried; a
        // line not given back keeps its hold, and the sweeper finishes it.
        self.give_back_held(hold, &order_line_quantities(lines))
            .await
            .map(|_| ())
    }

    async fn clear_holds(&self, held: &[(Hold, Vec<OrderLine>)]) -> StoreResult<()> {
        let held: Vec<(Hold, Vec<(ObjectId, i64)>)> = held
            .iter()
            .map(|(hold, lines)| (*hold, order_line_quantities(lines)))
            .collect();
        self.clear_held(&held).await
    }

    async fn sweep_holds(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<HoldSweep> {
        self.sweep_stale_holds(before, limit).await
    }
}
