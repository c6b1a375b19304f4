//! Stock holds on MongoDB: each reservation records itself on every product it takes from, in
//! the same update as the decrement (`$push` onto the product's `holds`), so stock taken by a
//! reservation whose reply was lost, or whose order was never stored, is recognisable later.
//! No extra command on the request path: the record rides in the reservation's own write.
//!
//! An entry is one string, `"{at ms, 13 digits}:{hold id}:{order id}:{quantity}"`, and not a
//! sub-document, because FerretDB 1.24 removes array elements only by equal value (`$pull`
//! with a condition, or with `$in`, matches and silently removes nothing, while the `$inc`
//! beside it still applies) and ignores `$slice` (checked against it). A string is pulled by
//! equal value on both servers (`$pullAll`), matched as an array element, and, starting with
//! its time, range-queried for stale holds (`holds < "{bound ms}"`, the `products_holds` index).
//!
//! Giving a line back is one atomic update on its product, conditional on the entry being
//! there: `{_id, holds: entry}` → `$inc` the quantity and `$pullAll` the entry. So whoever
//! does it (the reservation's own compensation, a release, the sweeper of another process),
//! it happens once. Forgetting a stored order's entries is a `$pullAll` per product, batched.
//! The list is bounded by that clearing (every stored order's entries go within a batch) and
//! by the sweeper (which finishes what a failed clearing left), not by `$slice`, which would
//! drop entries that may still need giving back.
//!
//! The same list records the stock returns of failed and cancelled orders, as
//! `"{transition ms}:return:{order id}:{quantity}"`: the return is one update conditional on
//! its record being absent (`$inc` and `$push` of the record), so however many callers return
//! an order's stock (the transition, a refused retry, the repair at start) and wherever one is
//! cut off, each product gets it back once. Every caller builds the same record from the order
//! (its `updatedAt` is the terminal transition's time). The sweeper forgets a return record
//! once it is older than the bound, when no return of that order is in flight any more.

use std::collections::{HashMap, HashSet};

use bson::oid::ObjectId;
use bson::{doc, Document};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::Deserialize;

use super::errors::db_error;
use super::MongoStore;
use crate::store::{Hold, HoldSweep, StoreResult};

/// The products' field holding the entries.
pub(super) const FIELD: &str = "holds";

/// The entry `hold` leaves on a product it took `qty` from.
pub(super) fn entry(hold: &Hold, qty: i64) -> String {
    format!(
        "{:013}:{}:{}:{qty}",
        hold.at.timestamp_millis().max(0),
        hold.id,
        hold.order_id
    )
}

/// The second field of a return record, where a hold has its id.
const RETURN: &str = "return";

/// The record of a failed or cancelled order's stock return of `qty` on a product.
pub(super) fn return_record(order_id: ObjectId, transition: bson::DateTime, qty: i64) -> String {
    format!(
        "{:013}:{RETURN}:{order_id}:{qty}",
        transition.timestamp_millis().max(0)
    )
}

/// An entry read back: when, whose order, how much, and whether it records a return (not a
/// hold).
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    at_ms: i64,
    order_id: ObjectId,
    qty: i64,
    returned: bool,
}

fn parse(entry: &str) -> Option<Entry> {
    let mut parts = entry.split(':');
    let (at, kind, order, qty) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some(Entry {
        at_ms: at.parse().ok()?,
        order_id: order.parse().ok()?,
        qty: qty.parse().ok().filter(|q: &i64| *q > 0)?,
        returned: kind == RETURN,
    })
}

/// An order as the sweeper reads it: when it was created, which names the hold it was placed
/// with (its `createdAt` is that hold's time, see `crate::actors::order::place`).
#[derive(Debug, Deserialize)]
struct CreatedDoc {
    #[serde(rename = "createdAt")]
    created_at: bson::DateTime,
}

/// Entries made before `before` sort below this.
fn bound(before: DateTime<Utc>) -> String {
    format!("{:013}", before.timestamp_millis().max(0))
}

/// A product as the sweeper reads it: only its holds.
#[derive(Debug, Deserialize)]
struct HeldDoc {
    #[serde(rename = "_id")]
    id: ObjectId,
    #[serde(default)]
    holds: Vec<String>,
}

/// The statement that gives one entry's quantity back if, and only if, the entry is there.
fn give_back_statement(product: ObjectId, entry: &str, qty: i64) -> Document {
    doc! {
        "q": { "_id": product, FIELD: entry },
        "u": { "$inc": { "stock": qty }, "$pullAll": { FIELD: [entry] } },
    }
}

impl MongoStore {
    /// Gives back what `hold` took of these lines and still holds, in one unordered `update`
    /// command; a line the hold did not take (or that was given back already) matches nothing.
    /// How many lines came back.
    pub(super) async fn give_back_held(
        &self,
        hold: &Hold,
        lines: &[(ObjectId, i64)],
    ) -> StoreResult<i64> {
        let statements: Vec<Document> = lines
            .iter()
            .map(|&(product, qty)| give_back_statement(product, &entry(hold, qty), qty))
            .collect();
        let outcome = self.run_updates(statements).await;
        if let Err(e) = &outcome {
            tracing::warn!(order_id = %hold.order_id, error = %e, "could not give held stock back; the hold sweeper will");
        }
        outcome
    }

    /// Forgets the entries of stored orders: one statement per product, one command.
    pub(super) async fn clear_held(
        &self,
        held: &[(Hold, Vec<(ObjectId, i64)>)],
    ) -> StoreResult<()> {
        let mut by_product: HashMap<ObjectId, Vec<String>> = HashMap::new();
        for (hold, lines) in held {
            for &(product, qty) in lines {
                by_product
                    .entry(product)
                    .or_default()
                    .push(entry(hold, qty));
            }
        }
        let statements: Vec<Document> = by_product
            .into_iter()
            .map(|(product, entries)| {
                doc! { "q": { "_id": product }, "u": { "$pullAll": { FIELD: entries } } }
            })
            .collect();
        self.run_updates(statements).await.map(|_| ())
    }

    /// One sweep: the entries older than `before` on up to `limit` products; each whose order
    /// was stored with it (created at the entry's time) is forgotten, every other is given back.
    pub(super) async fn sweep_stale_holds(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<HoldSweep> {
        let bound = bound(before);
        let products: Vec<HeldDoc> = self
            .products
            .clone_with_type::<HeldDoc>()
            .find(doc! { FIELD: { "$lt": &bound } })
            .projection(doc! { FIELD: 1 })
            .limit(i64::from(limit))
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        let stale: Vec<(ObjectId, String, Entry)> = products
            .into_iter()
            .flat_map(|p| {
                let id = p.id;
                p.holds.into_iter().filter(|e| *e < bound).filter_map(move |e| {
                    let parsed = parse(&e);
                    if parsed.is_none() {
                        tracing::error!(product_id = %id, entry = %e, "unreadable stock hold left alone");
                    }
                    Some((id, e.clone(), parsed?))
                })
            })
            .collect();
        if stale.is_empty() {
            return Ok(HoldSweep::default());
        }
        // Point reads by `_id` (the only shape FerretDB answers without reading every order).
        let orders: HashSet<ObjectId> = stale
            .iter()
            .filter(|(_, _, e)| !e.returned)
            .map(|(_, _, e)| e.order_id)
            .collect();
        let mut stored: HashMap<ObjectId, i64> = HashMap::new();
        for order_id in orders {
            let found = self
                .orders
                .clone_with_type::<CreatedDoc>()
                .find_one(doc! { "_id": order_id })
                .projection(doc! { "createdAt": 1 })
                .await
                .map_err(db_error)?;
            if let Some(order) = found {
                stored.insert(order_id, order.created_at.timestamp_millis());
            }
        }
        let (mut give_back, mut forget) = (Vec::new(), Vec::new());
        for (product, raw, e) in &stale {
            // A return record past the bound, or the hold of an order stored with it: done.
            if e.returned || stored.get(&e.order_id) == Some(&e.at_ms) {
                forget
                    .push(doc! { "q": { "_id": product }, "u": { "$pullAll": { FIELD: [raw] } } });
            } else {
                tracing::warn!(order_id = %e.order_id, product_id = %product, quantity = e.qty, "giving back stock held for an order that was not stored with it");
                give_back.push(give_back_statement(*product, raw, e.qty));
            }
        }
        let returned = self.run_updates(give_back).await?;
        let cleared = self.run_updates(forget).await?;
        Ok(HoldSweep {
            returned: returned as u64,
            cleared: cleared as u64,
        })
    }

    /// Gives back a failed or cancelled order's quantities, each product once whoever calls
    /// (see the module comment); one command for all its products.
    pub(super) async fn return_once(
        &self,
        order_id: ObjectId,
        transition: bson::DateTime,
        lines: &[(ObjectId, i64)],
    ) -> StoreResult<()> {
        let statements: Vec<Document> = lines
            .iter()
            .map(|&(product, qty)| {
                let record = return_record(order_id, transition, qty);
                doc! {
                    "q": { "_id": product, FIELD: { "$ne": &record } },
                    "u": { "$inc": { "stock": qty }, "$push": { FIELD: &record } },
                }
            })
            .collect();
        self.run_updates(statements).await.map(|_| ())
    }

    /// Runs unordered update statements on the products in one command; how many matched. A
    /// refused statement is an error (nothing here should ever be refused).
    async fn run_updates(&self, statements: Vec<Document>) -> StoreResult<i64> {
        self.run_update_statements(self.products.name(), statements, "a stock hold update")
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Id;

    #[test]
    fn an_entry_reads_back_and_sorts_by_its_time() {
        let at = DateTime::from_timestamp_millis(1_733_230_000_123).unwrap();
        let hold = Hold {
            id: Id::new(),
            order_id: Id::new(),
            at,
        };
        let e = entry(&hold, 3);
        assert_eq!(
            parse(&e),
            Some(Entry {
                at_ms: 1_733_230_000_123,
                order_id: hold.order_id.object_id(),
                qty: 3,
                returned: false,
            })
        );
        assert!(e < bound(at + chrono::Duration::milliseconds(1)));
        assert!(e >= bound(at));
        assert_eq!(parse("garbage"), None);
        let order = ObjectId::new();
        let returned = return_record(order, bson::DateTime::from_millis(5), 2);
        assert_eq!(
            parse(&returned),
            Some(Entry {
                at_ms: 5,
                order_id: order,
                qty: 2,
                returned: true,
            })
        );
        assert_eq!(parse(&e.replace(":3", ":0")), None, "no hold of nothing");
    }
}
