//! Products and stock on SQLite. A reservation is one write transaction, which holds the
//! write lock from its first statement: the stock it checks is the stock it decrements, and
//! the hold it records (`holds`) is committed with the decrement or not at all.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::rows::{sql_count, ts, Ts};
use super::{holds, SqliteStore};
use crate::domain::{Cents, Id, NewProduct, OrderLine, PageRequest, Product, ProductPatch};
use crate::error::Shortage;
use crate::store::{Catalogue, Hold, HoldSweep, ReserveOutcome, StoreResult};

// Column list, spelled once so the queries and the row reader agree on the order.
macro_rules! product_columns {
    () => {
        "id, name, description, price, stock, created_at, updated_at"
    };
}

fn product_from_row(r: &Row<'_>) -> rusqlite::Result<Product> {
    Ok(Product {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        price: Cents::from_stored(r.get(3)?),
        stock: r.get(4)?,
        created_at: r.get::<_, Ts>(5)?.0,
        updated_at: r.get::<_, Ts>(6)?.0,
    })
}

/// Giving stock back never needs a check: it only ever adds what a reservation took.
pub(super) const GIVE_BACK_STOCK: &str = "UPDATE products SET stock = stock + ?1 WHERE id = ?2";

fn load_product(conn: &Connection, id: Id) -> rusqlite::Result<Option<Product>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        product_columns!(),
        " FROM products WHERE id = ?1"
    ))?
    .query_row([id], product_from_row)
    .optional()
}

#[async_trait]
impl Catalogue for SqliteStore {
    async fn insert_product(
        &self,
        product: &NewProduct,
        id: Id,
        now: DateTime<Utc>,
    ) -> StoreResult<Product> {
        let product = Product {
            id,
            name: product.name.clone(),
            description: product.description.clone(),
            price: product.price,
            stock: product.stock,
            created_at: now,
            updated_at: now,
        };
        self.db
            .write(move |c| {
                c.prepare_cached(concat!(
                    "INSERT INTO products (",
                    product_columns!(),
                    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ))?
                .execute(params![
                    product.id,
                    product.name,
                    product.description,
                    product.price.value(),
                    product.stock,
                    ts(product.created_at),
                    ts(product.updated_at)
                ])?;
                Ok(product)
            })
            .await
    }

    async fn find_product(&self, id: Id) -> StoreResult<Option<Product>> {
        self.db.read(move |c| load_product(c, id)).await
    }

    async fn list_products(&self, page: PageRequest) -> StoreResult<(Vec<Product>, u64)> {
        self.db
            .read(move |c| {
                let rows = c
                    .prepare_cached(concat!(
                        "SELECT ",
                        product_columns!(),
                        " FROM products ORDER BY created_at, id LIMIT ?1 OFFSET ?2"
                    ))?
                    .query_map(
                        params![page.limit, sql_count(page.offset())],
                        product_from_row,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let total: i64 = c
                    .prepare_cached("SELECT count(*) FROM products")?
                    .query_row([], |r| r.get(0))?;
                Ok((rows, total as u64))
            })
            .await
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
        let patch = patch.clone();
        self.db
            .write(move |c| {
                c.prepare_cached(concat!(
                    "UPDATE products SET name = coalesce(?1, name), \
                     description = coalesce(?2, description), price = coalesce(?3, price), \
                     stock = coalesce(?4, stock), updated_at = ?5 WHERE id = ?6 RETURNING ",
                    product_columns!()
                ))?
                .query_row(
                    params![
                        patch.name,
                        patch.description,
                        patch.price.map(Cents::value),
                        patch.stock,
                        ts(now),
                        id
                    ],
                    product_from_row,
                )
                .optional()
            })
            .await
    }

    async fn reserve_stock(&self, lines: &[OrderLine], hold: &Hold) -> StoreResult<ReserveOutcome> {
        let lines = lines.to_vec();
        let hold = *hold;
        self.db
            .write(move |c| {
                // The transaction holds the write lock from its first statement, so the stock
                // read here is still the stock when the decrements run.
                let mut products: Vec<Product> = Vec::with_capacity(lines.len());
                let mut missing: Vec<Id> = vec![];
                for line in &lines {
                    if products.iter().any(|p| p.id == line.product_id)
                        || missing.contains(&line.product_id)
                    {
                        continue;
                    }
                    match load_product(c, line.product_id)? {
                        Some(p) => products.push(p),
                        None => missing.push(line.product_id),
                    }
                }
                if !missing.is_empty() {
                    return Ok(ReserveOutcome::UnknownProducts(missing));
                }
                // Lines are normally merged per product already; summing again keeps the check
                // honest if they are not.
                let shortages: Vec<Shortage> = products
                    .iter()
                    .filter_map(|p| {
                        let requested: u32 = lines
                            .iter()
                            .filter(|l| l.product_id == p.id)
                            .map(|l| l.quantity.get())
                            .fold(0, u32::saturating_add);
                        (i64::from(requested) > p.stock).then(|| Shortage {
                            product_id: p.id,
                            product_name: p.name.clone(),
                            requested,
                            available: p.stock,
                        })
                    })
                    .collect();
                if !shortages.is_empty() {
                    return Ok(ReserveOutcome::Insufficient(shortages));
                }
                let mut take =
                    c.prepare_cached("UPDATE products SET stock = stock - ?1 WHERE id = ?2")?;
                let mut reserved = Vec::with_capacity(lines.len());
                for line in lines {
                    take.execute(params![line.quantity.get(), line.product_id])?;
                    holds::record(c, &hold, line.product_id, line.quantity.get())?;
                    let before = products.iter().find(|p| p.id == line.product_id).cloned();
                    reserved.push((before.expect("every product was loaded above"), line));
                }
                Ok(ReserveOutcome::Reserved(reserved))
            })
            .await
    }

    async fn release_stock(&self, lines: &[OrderLine], hold: &Hold) -> StoreResult<()> {
        let (lines, hold) = (lines.to_vec(), *hold);
        // One transaction, so a compensation is never half applied; through the hold, so it
        // is never applied twice.
        self.db
            .write(move |c| holds::release(c, &hold, &lines))
            .await
    }

    async fn clear_holds(&self, held: &[(Hold, Vec<OrderLine>)]) -> StoreResult<()> {
        let holds: Vec<Hold> = held.iter().map(|(hold, _)| *hold).collect();
        self.db.write(move |c| holds::clear(c, &holds)).await
    }

    async fn sweep_holds(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<HoldSweep> {
        self.db.write(move |c| holds::sweep(c, before, limit)).await
    }
}
