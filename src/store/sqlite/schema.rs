//! The embedded database's schema and its migrations, applied when the file is opened.

use rusqlite::{Connection, TransactionBehavior};

use super::db::{db_error, BACKEND};
use crate::error::BackendError;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran. Append new
/// steps, never edit a released one: databases in the field already ran it.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE IF NOT EXISTS users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS sessions (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    current_jti TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_id);

CREATE TABLE IF NOT EXISTS products (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    price       INTEGER NOT NULL CHECK (price >= 0),
    -- The last line of defence against overselling: a bug that decrements too far fails
    -- loudly instead of selling stock that is not there.
    stock       INTEGER NOT NULL CHECK (stock >= 0),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS products_by_age ON products (created_at, id);

CREATE TABLE IF NOT EXISTS orders (
    id               TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL,
    -- Snapshots taken at creation and never queried into: JSON keeps them one read away.
    items            TEXT NOT NULL,
    shipping_address TEXT NOT NULL,
    payment_method   TEXT NOT NULL,
    status           TEXT NOT NULL,
    total_amount     INTEGER NOT NULL,
    failure_reason   TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    -- The outbox flag: 0 until the queue confirmed the order's message.
    enqueued         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS orders_unenqueued ON orders (created_at)
    WHERE enqueued = 0 AND status = 'pending';
-- The stranded-order sweeper's: orders not yet terminal, by their last change.
CREATE INDEX IF NOT EXISTS orders_unfinished ON orders (updated_at)
    WHERE status IN ('pending', 'processing');
-- Status streams' (crate::events): the changes since an event id, everyone's and one user's.
CREATE INDEX IF NOT EXISTS orders_by_change ON orders (updated_at, id);
CREATE INDEX IF NOT EXISTS orders_by_user_change ON orders (user_id, updated_at, id);

-- One row per (order, status) the customer was told about: the primary key is the claim.
CREATE TABLE IF NOT EXISTS order_notifications (
    order_id   TEXT NOT NULL,
    status     TEXT NOT NULL,
    claimed_at TEXT NOT NULL,
    PRIMARY KEY (order_id, status)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS idempotency_keys (
    user_id      TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status       INTEGER NOT NULL,
    body         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (user_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency_keys (created_at);

-- The embedded queue (crate::queue::sqlite). Times are integer milliseconds since the epoch:
-- visibility arithmetic happens in SQL, and every process sharing the file agrees on it.
CREATE TABLE IF NOT EXISTS queue_messages (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id     TEXT NOT NULL,
    body           TEXT NOT NULL,
    receive_count  INTEGER NOT NULL DEFAULT 0,
    visible_at     INTEGER NOT NULL,
    receipt_handle TEXT,
    sent_at        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_by_visibility ON queue_messages (visible_at, id);
CREATE INDEX IF NOT EXISTS queue_by_receipt ON queue_messages (receipt_handle)
    WHERE receipt_handle IS NOT NULL;

CREATE TABLE IF NOT EXISTS dead_letters (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id    TEXT NOT NULL,
    body          TEXT NOT NULL,
    receive_count INTEGER NOT NULL,
    sent_at       INTEGER NOT NULL,
    moved_at      INTEGER NOT NULL
);
"#,
    // The trace context of each queued message (W3C traceparent/tracestate; NULL when tracing
    // was off), as SQS carries it in message attributes beside the body.
    r#"
ALTER TABLE queue_messages ADD COLUMN traceparent TEXT;
ALTER TABLE queue_messages ADD COLUMN tracestate TEXT;
"#,
    // Emails at least once: a claim is an unsent email until `sent_at` is set, and a stale
    // unsent claim is sent again by the sweeper. Claims made before this step were released
    // when their send failed, so every one of them went out: they count as sent, kept for the
    // default retention (30 days, same fixed-width text as `rows::ts`). `keep_until` is when a
    // sent record may be purged.
    r#"
ALTER TABLE order_notifications ADD COLUMN sent_at TEXT;
ALTER TABLE order_notifications ADD COLUMN keep_until TEXT;
UPDATE order_notifications SET sent_at = claimed_at,
    keep_until = strftime('%Y-%m-%dT%H:%M:%S', claimed_at, '+30 days') || substr(claimed_at, 20);
CREATE INDEX IF NOT EXISTS order_notifications_unsent ON order_notifications (claimed_at)
    WHERE sent_at IS NULL;
CREATE INDEX IF NOT EXISTS order_notifications_expiry ON order_notifications (keep_until)
    WHERE keep_until IS NOT NULL;
CREATE INDEX IF NOT EXISTS dead_letters_by_age ON dead_letters (moved_at);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_at);
-- An admin's look through the orders in one status, newest first.
CREATE INDEX IF NOT EXISTS orders_by_status ON orders (status, created_at DESC, id DESC);
"#,
    // Stock holds: what each reservation took, per product, written in the reservation's own
    // transaction and deleted once its order is stored, so stock whose order never got stored
    // (a process killed between the two writes, a reservation cut by the timeout) is found
    // and given back by the hold sweeper.
    r#"
CREATE TABLE IF NOT EXISTS stock_holds (
    hold_id    TEXT NOT NULL,
    product_id TEXT NOT NULL,
    order_id   TEXT NOT NULL,
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    held_at    TEXT NOT NULL,
    PRIMARY KEY (hold_id, product_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS stock_holds_by_age ON stock_holds (held_at);
"#,
    // When the stranded-order sweeper may send a stranded order again (NULL: never claimed),
    // so however many processes sweep, one claims it, and the waits between re-sends double
    // (`crate::store::orders::resend_due`).
    r#"
ALTER TABLE orders ADD COLUMN resend_due TEXT;
"#,
];

pub(super) fn migrate(conn: &mut Connection) -> Result<(), BackendError> {
    // IMMEDIATE so that two processes starting together do not both run the same step: the
    // second waits, then reads the version the first one left.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_error)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db_error)?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(BackendError::other(
            BACKEND,
            format!(
                "the database schema is version {version}, newer than this build knows ({known})"
            ),
        ));
    }
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql).map_err(db_error)?;
        tx.pragma_update(None, "user_version", step as i64 + 1)
            .map_err(db_error)?;
    }
    tx.commit().map_err(db_error)
}
