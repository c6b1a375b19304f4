//! Status-email claims on SQLite: one row per (order, status), the primary key being the claim.
//! A row whose `sent_at` is NULL is a claim whose email may not have gone out; once its
//! `claimed_at` is older than the lease (`EMAIL_RESEND_AFTER`), another caller may take it
//! over and send. Every statement runs inside the caller's write (or read), so a claim, a
//! takeover and a mark are each one step of the single writer.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::rows::ts;
use crate::domain::{Id, OrderStatus};

/// Claims a status email, or takes over a stale unsent claim; false when it was sent or is
/// held by a fresh claim. The upsert is one statement, so two callers can not both win.
pub(super) fn claim_in(
    conn: &Connection,
    order_id: Id,
    status: OrderStatus,
    stale_before: DateTime<Utc>,
) -> rusqlite::Result<bool> {
    let changed = conn
        .prepare_cached(
            "INSERT INTO order_notifications (order_id, status, claimed_at) \
             VALUES (?1, ?2, ?3) \
             ON CONFLICT (order_id, status) DO UPDATE SET claimed_at = excluded.claimed_at \
             WHERE sent_at IS NULL AND claimed_at < ?4",
        )?
        .execute(params![order_id, status, ts(Utc::now()), ts(stale_before)])?;
    Ok(changed == 1)
}

/// Marks a claim sent; true when it was marked before (the send was a duplicate). A missing
/// row (purged, or never claimed) is recorded as sent now.
pub(super) fn mark_sent_in(
    conn: &Connection,
    order_id: Id,
    status: OrderStatus,
    now: DateTime<Utc>,
    keep_until: DateTime<Utc>,
) -> rusqlite::Result<bool> {
    let before: Option<Option<String>> = conn
        .prepare_cached(
            "SELECT sent_at FROM order_notifications WHERE order_id = ?1 AND status = ?2",
        )?
        .query_row(params![order_id, status], |r| r.get(0))
        .optional()?;
    conn.prepare_cached(
        "INSERT INTO order_notifications (order_id, status, claimed_at, sent_at, keep_until) \
         VALUES (?1, ?2, ?3, ?3, ?4) \
         ON CONFLICT (order_id, status) DO UPDATE SET \
         sent_at = coalesce(sent_at, excluded.sent_at), keep_until = excluded.keep_until",
    )?
    .execute(params![order_id, status, ts(now), ts(keep_until)])?;
    Ok(matches!(before, Some(Some(_))))
}

/// Makes an unsent claim stale at once (its time goes back to the epoch).
pub(super) fn release_in(
    conn: &Connection,
    order_id: Id,
    status: OrderStatus,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE order_notifications SET claimed_at = ?3 \
         WHERE order_id = ?1 AND status = ?2 AND sent_at IS NULL",
    )?
    .execute(params![order_id, status, ts(DateTime::UNIX_EPOCH)])?;
    Ok(())
}

/// Unsent claims made before `stale_before`, oldest first (served by the partial index
/// `order_notifications_unsent`).
pub(super) fn unsent_in(
    conn: &Connection,
    stale_before: DateTime<Utc>,
    limit: u32,
) -> rusqlite::Result<Vec<(Id, OrderStatus)>> {
    conn.prepare_cached(
        "SELECT order_id, status FROM order_notifications \
         WHERE sent_at IS NULL AND claimed_at < ?1 ORDER BY claimed_at LIMIT ?2",
    )?
    .query_map(params![ts(stale_before), limit], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?
    .collect()
}
