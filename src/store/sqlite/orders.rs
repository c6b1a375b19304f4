//! Orders, their transitions, notification claims and outbox flags on SQLite. A transition
//! that fails or cancels an order gives its stock back in the same transaction.

use async_trait::async_trait;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::catalogue::GIVE_BACK_STOCK;
use super::rows::{sql_count, to_json, ts, Json, Ts};
use super::{notifications, SqliteStore};
use crate::domain::{Cents, Id, Order, OrderStatus, PageRequest};
use crate::store::orders::resend_due;
use crate::store::{Orders, StoreResult, TransitionOutcome};

// Column list, spelled once so the queries and the row reader agree on the order.
macro_rules! order_columns {
    () => {
        "id, user_id, items, shipping_address, payment_method, status, total_amount, \
         failure_reason, created_at, updated_at"
    };
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

fn load_order(conn: &Connection, id: Id) -> rusqlite::Result<Option<Order>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        order_columns!(),
        " FROM orders WHERE id = ?1"
    ))?
    .query_row([id], order_from_row)
    .optional()
}

impl SqliteStore {
    /// `one` for each email claim, all in one write; the answers in order.
    async fn each_claim<T, F>(&self, claims: &[(Id, OrderStatus)], one: F) -> StoreResult<Vec<T>>
    where
        T: Send + 'static,
        F: Fn(&Connection, Id, OrderStatus) -> rusqlite::Result<T> + Send + 'static,
    {
        let claims = claims.to_vec();
        self.db
            .write(move |c| {
                claims
                    .into_iter()
                    .map(|(order_id, status)| one(c, order_id, status))
                    .collect()
            })
            .await
    }
}

#[async_trait]
impl Orders for SqliteStore {
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

    async fn list_all_orders(
        &self,
        status: Option<OrderStatus>,
        page: PageRequest,
    ) -> StoreResult<(Vec<Order>, u64)> {
        self.db
            .read(move |c| {
                // `?1 IS NULL OR status = ?1`: one statement for both; with a status it is
                // served by orders_by_status.
                let rows = c
                    .prepare_cached(concat!(
                        "SELECT ",
                        order_columns!(),
                        " FROM orders WHERE ?1 IS NULL OR status = ?1 \
                         ORDER BY created_at DESC, id DESC LIMIT ?2 OFFSET ?3"
                    ))?
                    .query_map(
                        params![status, page.limit, sql_count(page.offset())],
                        order_from_row,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let total: i64 = c
                    .prepare_cached("SELECT count(*) FROM orders WHERE ?1 IS NULL OR status = ?1")?
                    .query_row(params![status], |r| r.get(0))?;
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

    async fn claim_notification(
        &self,
        order_id: Id,
        status: OrderStatus,
        stale_before: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.db
            .write(move |c| notifications::claim_in(c, order_id, status, stale_before))
            .await
    }

    async fn claim_notifications(
        &self,
        claims: &[(Id, OrderStatus)],
        stale_before: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        self.each_claim(claims, move |c, order_id, status| {
            notifications::claim_in(c, order_id, status, stale_before)
        })
        .await
    }

    async fn mark_notification_sent(
        &self,
        order_id: Id,
        status: OrderStatus,
        now: DateTime<Utc>,
        keep_until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.db
            .write(move |c| notifications::mark_sent_in(c, order_id, status, now, keep_until))
            .await
    }

    async fn mark_notifications_sent(
        &self,
        claims: &[(Id, OrderStatus)],
        now: DateTime<Utc>,
        keep_until: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        self.each_claim(claims, move |c, order_id, status| {
            notifications::mark_sent_in(c, order_id, status, now, keep_until)
        })
        .await
    }

    async fn release_notification(&self, order_id: Id, status: OrderStatus) -> StoreResult<()> {
        self.db
            .write(move |c| notifications::release_in(c, order_id, status))
            .await
    }

    async fn unsent_notifications(
        &self,
        stale_before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<(Id, OrderStatus)>> {
        self.db
            .read(move |c| notifications::unsent_in(c, stale_before, limit))
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

    async fn stuck_orders(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Id>> {
        self.db
            .read(move |c| {
                // The literal conditions match the partial index orders_unfinished.
                c.prepare_cached(
                    "SELECT id FROM orders \
                     WHERE status IN ('pending', 'processing') AND updated_at < ?1 \
                     ORDER BY updated_at LIMIT ?2",
                )?
                .query_map(params![ts(before), limit], |r| r.get(0))?
                .collect()
            })
            .await
    }

    async fn claim_stranded(
        &self,
        now: DateTime<Utc>,
        bound: Duration,
        limit: u32,
    ) -> StoreResult<Vec<Id>> {
        let before = now - TimeDelta::from_std(bound).unwrap_or(TimeDelta::MAX);
        self.db
            .write(move |c| {
                // Read and claimed in one write transaction: no other process (they share the
                // file) claims between the two. The literal conditions match orders_unfinished.
                let due: Vec<(Id, Ts)> = c
                    .prepare_cached(
                        "SELECT id, updated_at FROM orders \
                         WHERE status IN ('pending', 'processing') AND updated_at < ?1 \
                           AND (resend_due IS NULL OR resend_due <= ?2) \
                         ORDER BY updated_at LIMIT ?3",
                    )?
                    .query_map(params![ts(before), ts(now), limit], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                let mut claim =
                    c.prepare_cached("UPDATE orders SET resend_due = ?2 WHERE id = ?1")?;
                for (id, Ts(updated_at)) in &due {
                    claim.execute(params![id, ts(resend_due(now, *updated_at, bound))])?;
                }
                Ok(due.into_iter().map(|(id, _)| id).collect())
            })
            .await
    }

    async fn orders_changed_since(
        &self,
        user_id: Option<Id>,
        since: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Order>> {
        self.db
            .read(move |c| {
                // Two statements rather than `user_id = ?1 OR ?1 IS NULL`, so each is served
                // by its own index (orders_by_user_change, orders_by_change).
                let mut statement = match user_id {
                    Some(_) => c.prepare_cached(concat!(
                        "SELECT ",
                        order_columns!(),
                        " FROM orders WHERE user_id = ?1 AND updated_at >= ?2 \
                         ORDER BY updated_at, id LIMIT ?3"
                    ))?,
                    None => c.prepare_cached(concat!(
                        "SELECT ",
                        order_columns!(),
                        " FROM orders WHERE ?1 IS NULL AND updated_at >= ?2 \
                         ORDER BY updated_at, id LIMIT ?3"
                    ))?,
                };
                let orders = statement
                    .query_map(params![user_id, ts(since), limit], order_from_row)?
                    .collect();
                orders
            })
            .await
    }
}
