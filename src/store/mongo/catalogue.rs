//! Products and stock on MongoDB: reservations line by line with conditional decrements,
//! and compensation when a line can not be taken (see the module comment of `super`).

use std::collections::HashMap;

use bson::oid::ObjectId;
use chrono::{DateTime, Utc};
use mongodb::options::ReturnDocument;

use async_trait::async_trait;
use bson::doc;
use futures_util::TryStreamExt;

use super::documents::*;
use super::errors::db_error;
use super::{find_page, MongoStore};
use crate::domain::{Id, NewProduct, OrderLine, PageRequest, Product, ProductPatch};
use crate::error::Shortage;
use crate::store::{Catalogue, ReserveOutcome, StoreResult};

/// How often a reservation that lost a race (it failed, yet stock was there when it looked) is
/// tried again before answering `Insufficient`. Each retry only happens after a real conflict,
/// so a few are plenty.
const RESERVE_ATTEMPTS: usize = 5;

impl MongoStore {
    async fn find_products(&self, ids: &[ObjectId]) -> StoreResult<HashMap<ObjectId, Product>> {
        let docs: Vec<ProductDoc> = self
            .products
            .find(doc! { "_id": { "$in": ids.to_vec() } })
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        docs.into_iter()
            .map(|d| Ok((d.id, product_from_doc(d)?)))
            .collect()
    }

    /// Adds quantities back to stock: the compensation of a reservation. Tries every line even
    /// after a failure, so as much as possible goes back, and names in the log what could not.
    async fn give_back(&self, taken: &[(ObjectId, i64)]) -> StoreResult<()> {
        let mut first_error = None;
        for &(id, qty) in taken {
            let result = self
                .write(
                    self.products
                        .update_one(doc! { "_id": id }, doc! { "$inc": { "stock": qty } }),
                )
                .await;
            if let Err(e) = result {
                tracing::error!(
                    product_id = %id,
                    quantity = qty,
                    error = %e,
                    "could not give reserved stock back; the product's stock is too low by this \
                     quantity"
                );
                first_error.get_or_insert(db_error(e));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// One pass over the lines: takes each with a conditional decrement. Returns the products as
    /// they were before their decrement, or, at the first line that can not be taken, gives the
    /// taken lines back and returns `None`.
    async fn try_reserve(&self, wanted: &[(ObjectId, i64)]) -> StoreResult<Option<Vec<Product>>> {
        let mut taken: Vec<(ObjectId, i64)> = Vec::with_capacity(wanted.len());
        let mut before = Vec::with_capacity(wanted.len());
        for &(id, qty) in wanted {
            let result = self
                .write(
                    self.products
                        .find_one_and_update(
                            doc! { "_id": id, "stock": { "$gte": qty } },
                            doc! { "$inc": { "stock": -qty } },
                        )
                        .return_document(ReturnDocument::Before),
                )
                .await;
            let taken_now = match result {
                Ok(Some(doc)) => {
                    taken.push((id, qty));
                    product_from_doc(doc)
                }
                Ok(None) => {
                    self.give_back(&taken).await?;
                    return Ok(None);
                }
                // Unknown whether this decrement happened (the reply may be what was lost):
                // only the known ones can be given back. A lost reply leaves stock too low,
                // never too high.
                Err(e) => Err(db_error(e)),
            };
            match taken_now {
                Ok(product) => before.push(product),
                Err(e) => {
                    if let Err(g) = self.give_back(&taken).await {
                        tracing::error!(error = %g, "compensation of a failed reservation failed");
                    }
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

    async fn reserve_stock(&self, lines: &[OrderLine]) -> StoreResult<ReserveOutcome> {
        let wanted = order_line_quantities(lines);
        let ids: Vec<ObjectId> = wanted.iter().map(|(id, _)| *id).collect();
        // Taken in one global order (by id), as locks are, so that two reservations wanting the
        // same products contend for the first of them instead of each holding what the other
        // needs and both failing. Outcomes are still reported in request order.
        let mut take_order = wanted.clone();
        take_order.sort_unstable_by_key(|(id, _)| *id);
        for attempt in 1..=RESERVE_ATTEMPTS {
            if let Some(before) = self.try_reserve(&take_order).await? {
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

    async fn release_stock(&self, lines: &[OrderLine]) -> StoreResult<()> {
        // Not all-or-none as in SQLite: each line is its own update. `give_back` still tries
        // every line, so a failure leaves as little as possible unreleased, and says which.
        self.give_back(&order_line_quantities(lines)).await
    }
}
