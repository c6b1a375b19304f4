//! Stock holds on SQLite: a row per (reservation, product) in `stock_holds`, inserted by the
//! reservation's own transaction, so a hold exists exactly when its stock was taken. The
//! reservation and the order insert are two writes (the order goes through the group commit),
//! so a process killed between them, or a reservation whose caller stopped waiting
//! (`BACKEND_TIMEOUT`) while the write still committed, leaves stock held by no order: the
//! sweeper finds it by its row. Giving a hold back deletes its row and adds its quantity in one
//! transaction, so it happens once whoever does it.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::catalogue::GIVE_BACK_STOCK;
use super::rows::ts;
use crate::domain::{Id, OrderLine};
use crate::store::{Hold, HoldSweep};

/// Records what `hold` takes of `product_id` (inside the reservation's transaction). Lines of
/// one product are merged by adding to the row.
pub(super) fn record(
    conn: &Connection,
    hold: &Hold,
    product_id: Id,
    quantity: u32,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO stock_holds (hold_id, product_id, order_id, quantity, held_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (hold_id, product_id) DO UPDATE SET quantity = quantity + excluded.quantity",
    )?
    .execute(params![
        hold.id,
        product_id,
        hold.order_id,
        quantity,
        ts(hold.at)
    ])?;
    Ok(())
}

/// Gives back what `hold` still holds of `product_id`, and forgets it; how much came back.
fn give_back(conn: &Connection, hold_id: Id, product_id: Id) -> rusqlite::Result<i64> {
    let held: Option<i64> = conn
        .prepare_cached(
            "DELETE FROM stock_holds WHERE hold_id = ?1 AND product_id = ?2 RETURNING quantity",
        )?
        .query_row(params![hold_id, product_id], |r| r.get(0))
        .optional()?;
    let Some(quantity) = held else {
        return Ok(0);
    };
    conn.prepare_cached(GIVE_BACK_STOCK)?
        .execute(params![quantity, product_id])?;
    Ok(quantity)
}

/// Gives back what `hold` took of the lines' products (inside one write).
pub(super) fn release(conn: &Connection, hold: &Hold, lines: &[OrderLine]) -> rusqlite::Result<()> {
    for line in lines {
        give_back(conn, hold.id, line.product_id)?;
    }
    Ok(())
}

/// Forgets the holds of stored orders (inside one write).
pub(super) fn clear(conn: &Connection, holds: &[Hold]) -> rusqlite::Result<()> {
    let mut forget = conn.prepare_cached("DELETE FROM stock_holds WHERE hold_id = ?1")?;
    for hold in holds {
        forget.execute([hold.id])?;
    }
    Ok(())
}

/// Up to `limit` holds made before `before`: given back when their order was not stored with
/// them (absent, or created at another time: another attempt's), forgotten when it was (inside
/// one write, so no order can be stored in between).
pub(super) fn sweep(
    conn: &Connection,
    before: DateTime<Utc>,
    limit: u32,
) -> rusqlite::Result<HoldSweep> {
    let stale: Vec<(Id, Id, Id, bool)> = conn
        .prepare_cached(
            "SELECT h.hold_id, h.product_id, h.order_id, \
             EXISTS (SELECT 1 FROM orders o WHERE o.id = h.order_id AND o.created_at = h.held_at) \
             FROM stock_holds h WHERE h.held_at < ?1 ORDER BY h.held_at LIMIT ?2",
        )?
        .query_map(params![ts(before), limit], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut swept = HoldSweep::default();
    for (hold_id, product_id, order_id, stored) in stale {
        if stored {
            conn.prepare_cached("DELETE FROM stock_holds WHERE hold_id = ?1 AND product_id = ?2")?
                .execute(params![hold_id, product_id])?;
            swept.cleared += 1;
        } else {
            let quantity = give_back(conn, hold_id, product_id)?;
            tracing::warn!(%order_id, %product_id, quantity, "giving back stock held for an order that was never stored");
            swept.returned += 1;
        }
    }
    Ok(swept)
}
