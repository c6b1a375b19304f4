//! The embedded store: one SQLite file under `DATA_DIR`, so a fresh clone runs with nothing to
//! install. [`SqliteDb`] owns the file and is shared with the embedded queue
//! (`crate::queue::sqlite`), so an order and its queue message live in one database.
//!
//! Concurrency choices:
//!
//! - **One writer connection, with group commit.** SQLite admits one writer at a time whatever
//!   we do; a pool of writers would only trade waiting on our lock for `SQLITE_BUSY` retries
//!   inside SQLite. One thread owns the writer connection and runs the writes waiting for it
//!   together, in their order of arrival, in one transaction with a savepoint each
//!   (`group_commit`): a failing write is undone alone, and under load one commit
//!   serves many writes instead of one thread hand-off and one commit each.
//! - **`BEGIN IMMEDIATE` for every write.** Several processes (`api`, `worker`) may share the
//!   file. A deferred transaction that reads and then writes can find, at its first write, that
//!   another process committed since its read; SQLite then fails it with `SQLITE_BUSY` at once,
//!   whatever the busy timeout. Taking the write lock at `BEGIN` makes every read-check-write
//!   sequence (stock checks, conditional transitions) serialisable across processes, and lets
//!   the busy timeout do the waiting.
//! - **A few read-only connections.** In WAL mode readers see a committed snapshot and never
//!   wait for the writer, so product and order reads keep flowing during a write burst. A
//!   semaphore bounds them, which also bounds the blocking threads they occupy.
//! - **No SQLite call runs on the async executor** (actix actors and HTTP workers share it), so
//!   a disk stall or a busy wait can not freeze it: writes run on the writer thread, reads in
//!   `spawn_blocking`.
//!
//! No table has a foreign key: the MongoDB store can not enforce them and both stores must pass
//! the same contract tests, so neither may refuse what the other accepts.

mod db;
mod group_commit;
mod rows;
mod schema;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

pub use db::SqliteDb;
use rows::{conversion_error, sql_count, to_json, ts, Json, Ts};

use super::{
    IdempotencyRecord, ReserveOutcome, RotateOutcome, Session, Store, StoreResult,
    TransitionOutcome,
};
use crate::domain::{
    Cents, Email, Id, NewProduct, Order, OrderLine, OrderStatus, PageRequest, Product,
    ProductPatch, Role, User,
};
use crate::error::Shortage;

/// Idempotency records answer retries for at least this long (clients retry within minutes;
/// a day leaves room for a client that was offline).
const IDEMPOTENCY_TTL_HOURS: i64 = 24;

// Column lists, spelled once so every query and its row reader agree on the order.
macro_rules! user_columns {
    () => {
        "id, email, name, role, password_hash, created_at"
    };
}
macro_rules! session_columns {
    () => {
        "id, user_id, current_jti, expires_at, revoked, created_at"
    };
}
macro_rules! product_columns {
    () => {
        "id, name, description, price, stock, created_at, updated_at"
    };
}
macro_rules! order_columns {
    () => {
        "id, user_id, items, shipping_address, payment_method, status, total_amount, \
         failure_reason, created_at, updated_at"
    };
}

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<User> {
    let email: String = r.get(1)?;
    let role: String = r.get(3)?;
    Ok(User {
        id: r.get(0)?,
        email: Email::parse(&email).map_err(|e| conversion_error(1, e))?,
        name: r.get(2)?,
        role: Role::parse(&role)
            .ok_or_else(|| conversion_error(3, format!("unknown role {role:?}")))?,
        password_hash: r.get(4)?,
        created_at: r.get::<_, Ts>(5)?.0,
    })
}

fn session_from_row(r: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: r.get(0)?,
        user_id: r.get(1)?,
        current_jti: r.get(2)?,
        expires_at: r.get::<_, Ts>(3)?.0,
        revoked: r.get(4)?,
        created_at: r.get::<_, Ts>(5)?.0,
    })
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

fn order_from_row(r: &Row<'_>) -> rusqlite::Result<Order> {
    Ok(Order {
        id: r.get(0)?,
        user_id: r.get(1)?,
        items: r.get::<_, Json<_>>(2)?.0,
        shipping_address: r.get::<_, Json<_>>(3)?.0,
        payment_method: r.get(4)?,
        status: r.get(5)?,
        total_amount: Cents::from_stored(r.get(6)?),
        failure_reason: r.get(7)?,
        created_at: r.get::<_, Ts>(8)?.0,
        updated_at: r.get::<_, Ts>(9)?.0,
    })
}

/// Giving stock back never needs a check: it only ever adds what a reservation took.
const GIVE_BACK_STOCK: &str = "UPDATE products SET stock = stock + ?1 WHERE id = ?2";

fn load_product(conn: &Connection, id: Id) -> rusqlite::Result<Option<Product>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        product_columns!(),
        " FROM products WHERE id = ?1"
    ))?
    .query_row([id], product_from_row)
    .optional()
}

fn load_user(conn: &Connection, id: Id) -> rusqlite::Result<Option<User>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users WHERE id = ?1"
    ))?
    .query_row([id], user_from_row)
    .optional()
}

/// One conditional status change, inside the caller's write.
fn transition_in(
    conn: &Connection,
    id: Id,
    from: OrderStatus,
    to: OrderStatus,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> rusqlite::Result<TransitionOutcome> {
    let moved = conn
        .prepare_cached(concat!(
            "UPDATE orders SET status = ?1, updated_at = ?2, \
             failure_reason = coalesce(?3, failure_reason) \
             WHERE id = ?4 AND status = ?5 RETURNING ",
            order_columns!()
        ))?
        .query_row(params![to, ts(now), reason, id, from], order_from_row)
        .optional()?;
    let Some(order) = moved else {
        return Ok(TransitionOutcome::Refused(load_order(conn, id)?));
    };
    // Only the transaction that won the status change gets here, so the stock goes back exactly
    // once however many callers race to cancel or fail the order.
    if to.returns_stock() {
        let mut give_back = conn.prepare_cached(GIVE_BACK_STOCK)?;
        for line in order.reserved_lines() {
            give_back.execute(params![line.quantity.get(), line.product_id])?;
        }
    }
    Ok(TransitionOutcome::Moved(order))
}

/// Records a notification claim inside the caller's write; false when it was claimed before.
fn claim_in(conn: &Connection, order_id: Id, status: OrderStatus) -> rusqlite::Result<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO order_notifications (order_id, status, claimed_at) \
             VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        )?
        .execute(params![order_id, status, ts(Utc::now())])?;
    Ok(inserted == 1)
}

fn load_order(conn: &Connection, id: Id) -> rusqlite::Result<Option<Order>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        order_columns!(),
        " FROM orders WHERE id = ?1"
    ))?
    .query_row([id], order_from_row)
    .optional()
}

/// The embedded [`Store`].
#[derive(Clone, Debug)]
pub struct SqliteStore {
    db: SqliteDb,
}

impl SqliteStore {
    pub fn new(db: SqliteDb) -> SqliteStore {
        SqliteStore { db }
    }

    pub fn db(&self) -> &SqliteDb {
        &self.db
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.db
            .read(|c| c.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }

    async fn insert_user(&self, user: &User) -> StoreResult<()> {
        let user = user.clone();
        self.db
            .write(move |c| {
                c.prepare_cached(concat!(
                    "INSERT INTO users (",
                    user_columns!(),
                    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                ))?
                .execute(params![
                    user.id,
                    user.email.as_str(),
                    user.name,
                    user.role.as_str(),
                    user.password_hash,
                    ts(user.created_at)
                ])?;
                Ok(())
            })
            .await
    }

    async fn find_user(&self, id: Id) -> StoreResult<Option<User>> {
        self.db.read(move |c| load_user(c, id)).await
    }

    async fn find_users(&self, ids: &[Id]) -> StoreResult<Vec<Option<User>>> {
        let ids = ids.to_vec();
        self.db
            .read(move |c| ids.into_iter().map(|id| load_user(c, id)).collect())
            .await
    }

    async fn find_user_by_email(&self, email: &Email) -> StoreResult<Option<User>> {
        let email = email.as_str().to_owned();
        self.db
            .read(move |c| {
                c.prepare_cached(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users WHERE email = ?1"
                ))?
                .query_row([email], user_from_row)
                .optional()
            })
            .await
    }

    async fn insert_session(&self, session: &Session) -> StoreResult<()> {
        let s = session.clone();
        self.db
            .write(move |c| {
                c.prepare_cached(concat!(
                    "INSERT INTO sessions (",
                    session_columns!(),
                    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                ))?
                .execute(params![
                    s.id,
                    s.user_id,
                    s.current_jti,
                    ts(s.expires_at),
                    s.revoked,
                    ts(s.created_at)
                ])?;
                Ok(())
            })
            .await
    }

    async fn find_session(&self, id: Id) -> StoreResult<Option<Session>> {
        self.db
            .read(move |c| {
                c.prepare_cached(concat!(
                    "SELECT ",
                    session_columns!(),
                    " FROM sessions WHERE id = ?1"
                ))?
                .query_row([id], session_from_row)
                .optional()
            })
            .await
    }

    async fn rotate_session(
        &self,
        id: Id,
        presented_jti: &str,
        next_jti: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<RotateOutcome> {
        let (presented, next) = (presented_jti.to_owned(), next_jti.to_owned());
        self.db
            .write(move |c| {
                let now = ts(now);
                let rotated = c
                    .prepare_cached(
                        "UPDATE sessions SET current_jti = ?1, expires_at = ?2 \
                         WHERE id = ?3 AND current_jti = ?4 AND revoked = 0 AND expires_at > ?5",
                    )?
                    .execute(params![next, ts(expires_at), id, presented, now])?;
                if rotated == 1 {
                    return Ok(RotateOutcome::Rotated);
                }
                // Same transaction as the update: the session can not change between the two.
                let active = c
                    .prepare_cached(
                        "SELECT revoked = 0 AND expires_at > ?2 FROM sessions WHERE id = ?1",
                    )?
                    .query_row(params![id, now], |r| r.get::<_, bool>(0))
                    .optional()?;
                Ok(match active {
                    Some(true) => RotateOutcome::Reused,
                    Some(false) | None => RotateOutcome::Inactive,
                })
            })
            .await
    }

    async fn revoke_session(&self, id: Id) -> StoreResult<()> {
        self.db
            .write(move |c| {
                c.prepare_cached("UPDATE sessions SET revoked = 1 WHERE id = ?1")?
                    .execute([id])?;
                Ok(())
            })
            .await
    }

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

    async fn reserve_stock(&self, lines: &[OrderLine]) -> StoreResult<ReserveOutcome> {
        let lines = lines.to_vec();
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
                    let before = products.iter().find(|p| p.id == line.product_id).cloned();
                    reserved.push((before.expect("every product was loaded above"), line));
                }
                Ok(ReserveOutcome::Reserved(reserved))
            })
            .await
    }

    async fn release_stock(&self, lines: &[OrderLine]) -> StoreResult<()> {
        let lines = lines.to_vec();
        self.db
            .write(move |c| {
                // One transaction, so a compensation is never half applied.
                let mut give_back = c.prepare_cached(GIVE_BACK_STOCK)?;
                for line in lines {
                    give_back.execute(params![line.quantity.get(), line.product_id])?;
                }
                Ok(())
            })
            .await
    }

    async fn insert_order(&self, order: &Order) -> StoreResult<()> {
        let o = order.clone();
        // Serialised here rather than in the closure: the writer thread is the one resource
        // every write waits for, so it only runs SQL.
        let (items, address) = (to_json(&o.items), to_json(&o.shipping_address));
        self.db
            .write(move |c| {
                c.prepare_cached(concat!(
                    "INSERT INTO orders (",
                    order_columns!(),
                    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ))?
                .execute(params![
                    o.id,
                    o.user_id,
                    items?,
                    address?,
                    o.payment_method,
                    o.status,
                    o.total_amount.value(),
                    o.failure_reason,
                    ts(o.created_at),
                    ts(o.updated_at)
                ])?;
                Ok(())
            })
            .await
    }

    async fn find_order(&self, id: Id) -> StoreResult<Option<Order>> {
        self.db.read(move |c| load_order(c, id)).await
    }

    async fn list_orders(&self, user_id: Id, page: PageRequest) -> StoreResult<(Vec<Order>, u64)> {
        self.db
            .read(move |c| {
                let rows = c
                    .prepare_cached(concat!(
                        "SELECT ",
                        order_columns!(),
                        " FROM orders WHERE user_id = ?1 \
                         ORDER BY created_at DESC, id DESC LIMIT ?2 OFFSET ?3"
                    ))?
                    .query_map(
                        params![user_id, page.limit, sql_count(page.offset())],
                        order_from_row,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let total: i64 = c
                    .prepare_cached("SELECT count(*) FROM orders WHERE user_id = ?1")?
                    .query_row([user_id], |r| r.get(0))?;
                Ok((rows, total as u64))
            })
            .await
    }

    async fn transition_order(
        &self,
        id: Id,
        from: OrderStatus,
        to: OrderStatus,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<TransitionOutcome> {
        let reason = reason.map(str::to_owned);
        self.db
            .write(move |c| transition_in(c, id, from, to, reason.as_deref(), now))
            .await
    }

    async fn transition_orders(
        &self,
        ids: &[Id],
        from: OrderStatus,
        to: OrderStatus,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<TransitionOutcome>> {
        let ids = ids.to_vec();
        self.db
            .write(move |c| {
                ids.into_iter()
                    .map(|id| transition_in(c, id, from, to, None, now))
                    .collect()
            })
            .await
    }

    async fn claim_notification(&self, order_id: Id, status: OrderStatus) -> StoreResult<bool> {
        self.db.write(move |c| claim_in(c, order_id, status)).await
    }

    async fn claim_notifications(&self, claims: &[(Id, OrderStatus)]) -> StoreResult<Vec<bool>> {
        let claims = claims.to_vec();
        self.db
            .write(move |c| {
                claims
                    .into_iter()
                    .map(|(order_id, status)| claim_in(c, order_id, status))
                    .collect()
            })
            .await
    }

    async fn release_notification(&self, order_id: Id, status: OrderStatus) -> StoreResult<()> {
        self.db
            .write(move |c| {
                c.prepare_cached(
                    "DELETE FROM order_notifications WHERE order_id = ?1 AND status = ?2",
                )?
                .execute(params![order_id, status])?;
                Ok(())
            })
            .await
    }

    async fn mark_enqueued(&self, order_id: Id) -> StoreResult<()> {
        self.mark_enqueued_many(&[order_id]).await
    }

    async fn mark_enqueued_many(&self, order_ids: &[Id]) -> StoreResult<()> {
        let order_ids = order_ids.to_vec();
        self.db
            .write(move |c| {
                let mut mark = c.prepare_cached("UPDATE orders SET enqueued = 1 WHERE id = ?1")?;
                for id in order_ids {
                    mark.execute([id])?;
                }
                Ok(())
            })
            .await
    }

    async fn unenqueued_orders(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Id>> {
        self.db
            .read(move |c| {
                // The literal conditions match the partial index orders_unenqueued.
                c.prepare_cached(
                    "SELECT id FROM orders \
                     WHERE enqueued = 0 AND status = 'pending' AND created_at < ?1 \
                     ORDER BY created_at LIMIT ?2",
                )?
                .query_map(params![ts(before), limit], |r| r.get(0))?
                .collect()
            })
            .await
    }

    async fn find_idempotency(
        &self,
        user_id: Id,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        let key = key.to_owned();
        let oldest = ts(Utc::now() - chrono::Duration::hours(IDEMPOTENCY_TTL_HOURS));
        self.db
            .read(move |c| {
                // Expired rows may linger until the next save purges them; they no longer count.
                c.prepare_cached(
                    "SELECT request_hash, status, body FROM idempotency_keys \
                     WHERE user_id = ?1 AND key = ?2 AND created_at >= ?3",
                )?
                .query_row(params![user_id, key, oldest], idempotency_from_row)
                .optional()
            })
            .await
    }

    async fn save_idempotency(
        &self,
        user_id: Id,
        key: &str,
        record: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<IdempotencyRecord> {
        let key = key.to_owned();
        let record = record.clone();
        self.db
            .write(move |c| {
                // Purging here, on the write path, keeps the table small without a sweeper task;
                // the index on created_at makes it a no-op when nothing has expired.
                c.prepare_cached("DELETE FROM idempotency_keys WHERE created_at < ?1")?
                    .execute([ts(now - chrono::Duration::hours(IDEMPOTENCY_TTL_HOURS))])?;
                c.prepare_cached(
                    "INSERT INTO idempotency_keys \
                     (user_id, key, request_hash, status, body, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                )?
                .execute(params![
                    user_id,
                    key,
                    record.request_hash,
                    record.status,
                    record.body,
                    ts(now)
                ])?;
                c.prepare_cached(
                    "SELECT request_hash, status, body FROM idempotency_keys \
                     WHERE user_id = ?1 AND key = ?2",
                )?
                .query_row(params![user_id, key], idempotency_from_row)
            })
            .await
    }

    async fn is_empty(&self) -> StoreResult<bool> {
        self.db
            .read(|c| c.query_row("SELECT NOT EXISTS (SELECT 1 FROM users)", [], |r| r.get(0)))
            .await
    }
}

fn idempotency_from_row(r: &Row<'_>) -> rusqlite::Result<IdempotencyRecord> {
    Ok(IdempotencyRecord {
        request_hash: r.get(0)?,
        status: r.get(1)?,
        body: r.get(2)?,
    })
}

/// Throwaway databases for unit tests, here so the queue's tests can use them too.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::SqliteDb;

    /// A database in its own directory, removed when dropped. Unique per process and call, so
    /// tests run in parallel without sharing state (and without a `tempfile` dependency).
    pub(crate) struct TempDb {
        pub(crate) db: SqliteDb,
        dir: PathBuf,
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    pub(crate) fn temp_db() -> TempDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("order-service-sqlite-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = SqliteDb::open(&dir.join("nested").join("test.db")).expect("open test database");
        TempDb { db, dir }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Duration as TimeDelta;

    use super::schema::MIGRATIONS;
    use super::test_support::temp_db;
    use super::*;
    use crate::domain::{OrderItem, Quantity, ShippingAddress};
    use crate::error::BackendError;

    fn qty(n: i64) -> Quantity {
        Quantity::parse(n).unwrap()
    }

    fn line(product_id: Id, n: i64) -> OrderLine {
        OrderLine {
            product_id,
            quantity: qty(n),
        }
    }

    async fn product(store: &SqliteStore, name: &str, stock: i64) -> Product {
        let new = NewProduct {
            name: name.into(),
            description: String::new(),
            price: Cents::from_stored(250),
            stock,
        };
        store
            .insert_product(&new, Id::new(), Utc::now())
            .await
            .unwrap()
    }

    async fn stock(store: &SqliteStore, id: Id) -> i64 {
        store.find_product(id).await.unwrap().unwrap().stock
    }

    fn user(email: &str) -> User {
        User {
            id: Id::new(),
            email: Email::parse(email).unwrap(),
            name: "Ann".into(),
            role: Role::User,
            password_hash: "$argon2id$fake".into(),
            created_at: Utc::now(),
        }
    }

    fn order_for(user_id: Id, product: &Product, n: i64, created_at: DateTime<Utc>) -> Order {
        let address = ShippingAddress {
            street: "1 Main St".into(),
            city: "Springfield".into(),
            state: "IL".into(),
            zip_code: "62701".into(),
            country: "US".into(),
        };
        let items = vec![OrderItem::new(
            product.id,
            product.name.clone(),
            product.price,
            qty(n),
        )];
        Order::place(user_id, items, address, "card".into(), created_at)
    }

    #[tokio::test]
    async fn opening_twice_keeps_data_and_schema_version() {
        let t = temp_db();
        let store = SqliteStore::new(t.db.clone());
        assert!(store.is_empty().await.unwrap());
        store.insert_user(&user("ann@example.com")).await.unwrap();
        let again = SqliteStore::new(SqliteDb::open(t.db.path()).unwrap());
        assert!(!again.is_empty().await.unwrap());
        let version: i64 = again
            .db
            .read(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    #[tokio::test]
    async fn users_round_trip_and_emails_are_unique() {
        let t = temp_db();
        let store = SqliteStore::new(t.db.clone());
        let ann = user("ann@example.com");
        store.insert_user(&ann).await.unwrap();
        let found = store.find_user_by_email(&ann.email).await.unwrap().unwrap();
        assert_eq!(
            (found.id, found.created_at, found.role),
            (ann.id, ann.created_at, Role::User)
        );
        assert_eq!(
            store.find_user(ann.id).await.unwrap().unwrap().email,
            ann.email
        );
        let twin = User {
            id: Id::new(),
            ..ann
        };
        assert!(matches!(
            store.insert_user(&twin).await,
            Err(BackendError::Duplicate)
        ));
    }

    #[tokio::test]
    async fn reserve_refuses_unknown_products_and_changes_nothing() {
        let t = temp_db();
        let store = SqliteStore::new(t.db.clone());
        let a = product(&store, "a", 5).await;
        let (m1, m2) = (Id::new(), Id::new());
        let outcome = store
            .reserve_stock(&[line(a.id, 2), line(m1, 1), line(m2, 1)])
            .await
            .unwrap();
        match outcome {
            ReserveOutcome::UnknownProducts(ids) => assert_eq!(ids, [m1, m2]),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(stock(&store, a.id).await, 5);
    }

    #[tokio::test]
    async fn reserve_reports_every_shortage_and_changes_nothing() {
        let t = temp_db();
        let store = SqliteStore::new(t.db.clone());
        let a = product(&store, "a", 5).await;
        let b = product(&store, "b", 1).await;
        let c = product(&store, "c", 0).await;
        let outcome = store
            .reserve_stock(&[line(a.id, 2), line(b.id, 3), line(c.id, 1)])
            .await
            .unwrap();
        match outcome {
            ReserveOutcome::Insufficient(shortages) => assert_eq!(
                shortages,
                [
                    Shortage {
                        product_id: b.id,
                        product_name: "b".into(),
                        requested: 3,
                        available: 1
                    },
                    Shortage {
                        product_id: c.id,
                        product_name: "c".into(),
                        requested: 1,
                        available: 0
                    },
                ]
            ),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            (stock(&store, a.id).await, stock(&store, b.id).await),
            (5, 1)
        );
    }

    #[tokio::test]
    async fn reserve_takes_every_line_and_returns_products_as_they_were() {
        let t = temp_db();
        let store = SqliteStore::new(t.db.clone());
        let a = product(&store, "a", 5).await;
        let b = product(&store, "b", 3).await;
        let ReserveOutcome::Reserved(reserved) = store
            .reserve_stock(&[line(a.id, 5), line(b.id, 1)])
            .await
            .unwrap()
        else {
            panic!("not reserved")
        };
        assert_eq!(reserved.len(), 2);
        assert_eq!(
            (
                reserved[0].0.id,
                reserved[0].0.stock,
                reserved[0].1.quantity.get()
            ),
            (a.id, 5, 5)
        );
        assert_eq!((reserved[1].0.name.as_str(), reserved[1].0.stock), ("b", 3));
        assert_eq!(
            (stock(&store, a.id).await, stock(&store, b.id).await),
            (0, 2)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_reservations_never_oversell() {
        let t = temp_db();
        let store = Arc::new(SqliteStore::new(t.db.clone()));
        let p = product(&store, "scarce", 37).await;
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.reserve_stock(&[line(p.id, 1)]).await.unwrap() })
            })
            .collect();
        let mut reserved = 0;
        for task in tasks {
            match task.await.unwrap() {
                ReserveOutcome::Reserved(_) => reserved += 1,
                ReserveOutcome::Insufficient(s) => assert_eq!(s[0].available, 0),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(reserved, 37);
        assert_eq!(stock(&store, p.id).await, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn reservations_from_two_handles_on_one_file_never_oversell() {
        // Two SqliteDb handles stand for two processes (api and worker) sharing the file: only
        // SQLite's own locking, not our writer thread, keeps them apart.
        let t = temp_db();
        let first = Arc::new(SqliteStore::new(t.db.clone()));
        let second = Arc::new(SqliteStore::new(SqliteDb::open(t.db.path()).unwrap()));
        let p = product(&first, "scarce", 37).await;
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let store = if i % 2 == 0 {
                    first.clone()
                } else {
                    second.clone()
                };
                tokio::spawn(async move { store.reserve_stock(&[line(p.id, 1)]).await.unwrap() })
            })
            .collect();
        let mut reserved = 0;
        for task in tasks {
            if let ReserveOutcome::Reserved(_) = task.await.unwrap() {
                reserved += 1;
            }
        }
        assert_eq!(reserved, 37);
        assert_eq!(stock(&second, p.id).await, 0);
    }

    #[tokio::test]
    async fn released_stock_goes_back() {
        let t = temp_db();
        let store = SqliteStore::new(t.db.clone());
        let a = product(&store, "a", 5).await;
        let b = product(&store, "b", 5).await;
        let lines = [line(a.id, 2), line(b.id, 5)];
        assert!(matches!(
            store.reserve_stock(&lines).await.unwrap(),
            ReserveOutcome::Reserved(_)
        ));
        assert_eq!(
            (stock(&store, a.id).await, stock(&store, b.id).await),
            (3, 0)
        );
        store.release_stock(&lines).await.unwrap();
        assert_eq!(
            (stock(&store, a.id).await, stock(&store, b.id).await),
            (5, 5)
        );
    }

    #[tokio::test]
    async fn transitions_are_conditional_on_the_stored_status() {
        let t = temp_db();
        let store = SqliteStore::new(t.db.clone());
        let p = product(&store, "a", 10).await;
        let order = order_for(Id::new(), &p, 2, Utc::now());
        store.insert_order(&order).await.unwrap();
        assert_eq!(store.find_order(order.id).await.unwrap().unwrap(), order);

        let later = order.created_at + TimeDelta::seconds(1);
        let refused = store.transition_order(
            order.id,
            OrderStatus::Processing,
            OrderStatus::Completed,
            None,
            later,
        );
        match refused.await.unwrap() {
            TransitionOutcome::Refused(Some(o)) => assert_eq!(o.status, OrderStatus::Pending),
            other => panic!("unexpected {other:?}"),
        }
        let missing = store.transition_order(
            Id::new(),
            OrderStatus::Pending,
            OrderStatus::Processing,
            None,
            later,
        );
        assert!(matches!(
            missing.await.unwrap(),
            TransitionOutcome::Refused(None)
        ));

        let moved = store.transition_order(
            order.id,
            OrderStatus::Pending,
            OrderStatus::Processing,
            None,
            later,
        );
        let TransitionOutcome::Moved(o) = moved.await.unwrap() else {
            panic!("not moved")
        };
        assert_eq!(
            (o.status, o.updated_at, o.failure_reason),
            (OrderStatus::Processing, later, None)
        );
        let failed = store.transition_order(
            order.id,
            OrderStatus::Processing,
            OrderStatus::Failed,
            Some("card declined"),
            later,
        );
        let TransitionOutcome::Moved(o) = failed.await.unwrap() else {
            panic!("not moved")
        };
        assert_eq!(
            (o.status, o.failure_reason.as_deref()),
            (OrderStatus::Failed, Some("card declined"))
        );
        // Failing returns stock: the order reserved nothing here, so the stock rises by 2.
        assert_eq!(stock(&store, p.id).await, 12);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_cancellations_return_stock_exactly_once() {
        let t = temp_db();
        let store = Arc::new(SqliteStore::new(t.db.clone()));
        let p = product(&store, "a", 10).await;
        assert!(matches!(
            store.reserve_stock(&[line(p.id, 3)]).await.unwrap(),
            ReserveOutcome::Reserved(_)
        ));
        let order = order_for(Id::new(), &p, 3, Utc::now());
        store.insert_order(&order).await.unwrap();
        assert_eq!(stock(&store, p.id).await, 7);

        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .transition_order(
                            order.id,
                            OrderStatus::Pending,
                            OrderStatus::Cancelled,
                            None,
                            Utc::now(),
                        )
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut moved = 0;
        for task in tasks {
            match task.await.unwrap() {
                TransitionOutcome::Moved(_) => moved += 1,
                TransitionOutcome::Refused(Some(o)) => assert_eq!(o.status, OrderStatus::Cancelled),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(moved, 1);
        assert_eq!(stock(&store, p.id).await, 10);
    }

    #[tokio::test]
    async fn a_notification_is_claimed_once_until_released() {
        let t = temp_db();
        let store = SqliteStore::new(t.db.clone());
        let id = Id::new();
        assert!(store
            .claim_notification(id, OrderStatus::Completed)
            .await
            .unwrap());
        assert!(!store
            .claim_notification(id, OrderStatus::Completed)
            .await
            .unwrap());
        assert!(store
            .claim_notification(id, OrderStatus::Processing)
            .await
            .unwrap());
        store
            .release_notification(id, OrderStatus::Completed)
            .await
            .unwrap();
        assert!(store
            .claim_notification(id, OrderStatus::Completed)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn rotation_tells_reuse_from_an_inactive_session() {
        let t = temp_db();
        let store = SqliteStore::new(t.db.clone());
        let now = Utc::now();
        let session = Session {
            id: Id::new(),
            user_id: Id::new(),
            current_jti: "one".into(),
            expires_at: now + TimeDelta::days(7),
            revoked: false,
            created_at: now,
        };
        store.insert_session(&session).await.unwrap();
        let week = now + TimeDelta::days(8);
        let rotate = |presented: &'static str, next: &'static str, at: DateTime<Utc>| {
            let store = store.clone();
            async move {
                store
                    .rotate_session(session.id, presented, next, week, at)
                    .await
                    .unwrap()
            }
        };

        assert_eq!(rotate("one", "two", now).await, RotateOutcome::Rotated);
        let stored = store.find_session(session.id).await.unwrap().unwrap();
        assert_eq!(
            (stored.current_jti.as_str(), stored.expires_at),
            ("two", week)
        );
        assert_eq!(rotate("one", "three", now).await, RotateOutcome::Reused);
        assert_eq!(
            rotate("two", "three", week).await,
            RotateOutcome::Inactive,
            "expired"
        );
        store.revoke_session(session.id).await.unwrap();
        assert_eq!(
            rotate("two", "three", now).await,
            RotateOutcome::Inactive,
            "revoked"
        );
        let unknown = store
            .rotate_session(Id::new(), "x", "y", week, now)
            .await
            .unwrap();
        assert_eq!(unknown, RotateOutcome::Inactive);
    }

    #[tokio::test]
    async fn the_first_idempotent_answer_wins_and_expires_after_a_day() {
        let t = temp_db();
        let store = SqliteStore::new(t.db.clone());
        let (user_id, now) = (Id::new(), Utc::now());
        let first = IdempotencyRecord {
            request_hash: "h1".into(),
            status: 201,
            body: "{\"a\":1}".into(),
        };
        let second = IdempotencyRecord {
            request_hash: "h2".into(),
            status: 200,
            body: "{}".into(),
        };
        assert!(store
            .find_idempotency(user_id, "k")
            .await
            .unwrap()
            .is_none());
        let won = store
            .save_idempotency(user_id, "k", &first, now)
            .await
            .unwrap();
        assert_eq!((won.request_hash.as_str(), won.status), ("h1", 201));
        let won = store
            .save_idempotency(user_id, "k", &second, now)
            .await
            .unwrap();
        assert_eq!(
            (won.request_hash.as_str(), won.body.as_str()),
            ("h1", "{\"a\":1}")
        );
        assert_eq!(
            store
                .find_idempotency(user_id, "k")
                .await
                .unwrap()
                .unwrap()
                .request_hash,
            "h1"
        );
        assert!(
            store
                .find_idempotency(Id::new(), "k")
                .await
                .unwrap()
                .is_none(),
            "keys are per user"
        );

        let old = Utc::now() - TimeDelta::hours(25);
        store
            .save_idempotency(user_id, "old", &first, old)
            .await
            .unwrap();
        assert!(store
            .find_idempotency(user_id, "old")
            .await
            .unwrap()
            .is_none());
        let won = store
            .save_idempotency(user_id, "old", &second, Utc::now())
            .await
            .unwrap();
        assert_eq!(
            won.request_hash, "h2",
            "an expired record no longer blocks its key"
        );
    }

    #[tokio::test]
    async fn pages_are_stable_and_orders_come_newest_first() {
        let t = temp_db();
        let store = SqliteStore::new(t.db.clone());
        let mut ids = vec![];
        for i in 0..5 {
            ids.push(product(&store, &format!("p{i}"), 1).await.id);
        }
        let (page, total) = store
            .list_products(PageRequest { page: 2, limit: 2 })
            .await
            .unwrap();
        assert_eq!(total, 5);
        assert_eq!(page.iter().map(|p| p.id).collect::<Vec<_>>(), ids[2..4]);

        let (ann, bob) = (Id::new(), Id::new());
        let p = store.find_product(ids[0]).await.unwrap().unwrap();
        let start = Utc::now();
        let mut orders = vec![];
        for i in 0..3 {
            let o = order_for(ann, &p, 1, start + TimeDelta::seconds(i));
            store.insert_order(&o).await.unwrap();
            orders.push(o.id);
        }
        store
            .insert_order(&order_for(bob, &p, 1, start))
            .await
            .unwrap();
        let (page, total) = store
            .list_orders(ann, PageRequest { page: 1, limit: 2 })
            .await
            .unwrap();
        assert_eq!(total, 3);
        assert_eq!(
            page.iter().map(|o| o.id).collect::<Vec<_>>(),
            [orders[2], orders[1]]
        );
        let (page, _) = store
            .list_orders(ann, PageRequest { page: 2, limit: 2 })
            .await
            .unwrap();
        assert_eq!(page.iter().map(|o| o.id).collect::<Vec<_>>(), [orders[0]]);
    }

    #[tokio::test]
    async fn the_outbox_lists_pending_orders_never_enqueued() {
        let t = temp_db();
        let store = SqliteStore::new(t.db.clone());
        let p = product(&store, "a", 10).await;
        let old = Utc::now() - TimeDelta::minutes(5);
        let (sent, unsent, fresh) = (
            order_for(Id::new(), &p, 1, old),
            order_for(Id::new(), &p, 1, old),
            order_for(Id::new(), &p, 1, Utc::now()),
        );
        for o in [&sent, &unsent, &fresh] {
            store.insert_order(o).await.unwrap();
        }
        store.mark_enqueued(sent.id).await.unwrap();
        let due = store
            .unenqueued_orders(Utc::now() - TimeDelta::minutes(1), 10)
            .await
            .unwrap();
        assert_eq!(due, [unsent.id]);
    }

    #[tokio::test]
    async fn updates_patch_only_the_given_fields() {
        let t = temp_db();
        let store = SqliteStore::new(t.db.clone());
        let p = product(&store, "a", 10).await;
        let later = p.updated_at + TimeDelta::seconds(1);
        let patch = ProductPatch {
            stock: Some(3),
            ..ProductPatch::default()
        };
        let updated = store
            .update_product(p.id, &patch, later)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (updated.name.as_str(), updated.stock, updated.updated_at),
            ("a", 3, later)
        );
        assert!(store
            .update_product(Id::new(), &patch, later)
            .await
            .unwrap()
            .is_none());
        store.ping().await.unwrap();
    }
}
