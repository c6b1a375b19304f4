//! The MongoDB store (`MONGODB_URI`): how the service runs in production, with many `api` and
//! `worker` processes sharing one database. It keeps the semantics of the embedded store
//! (`super::sqlite`) without multi-document transactions, so it works on a standalone server
//! and on compatible servers; every rule that SQLite gets from one transaction is rebuilt here
//! from single-document atomic updates.
//!
//! Concurrency and compensation choices:
//!
//! - **Stock is reserved with conditional decrements** (`stock >= qty` in the filter: a
//!   `findAndModify` for one line, one ordered `update` command for all the lines of a longer
//!   order, see `catalogue`), so stock can never go below zero however many processes
//!   reserve at once. Lines are taken in product-id order, so concurrent reservations of the
//!   same products queue on the first one rather than each holding what another needs. When a
//!   line can not be taken, the lines already taken are given back (compensation) and the
//!   outcome is decided from a fresh read. That read may find enough stock everywhere, because
//!   another reservation was holding units it then gave back: the reservation is then retried
//!   a few times before it answers `Insufficient`. While a reservation is in flight, others
//!   can see the stock it holds as gone and be refused; that is the price of having no
//!   transaction, and it only ever makes stock look lower, never higher.
//! - **Status changes are conditional updates on the stored status**, so only one caller wins a
//!   transition; the loser reads the order back and is refused.
//! - **Stock returned by failed and cancelled orders** goes back through one update per product
//!   conditional on the return's record on the product (see [`MongoStore::return_order_stock`]
//!   and `holds`), so a return is never doubled nor lost to a cut, and interrupted returns are
//!   finished by the next caller or [`MongoStore::repair_stock_returns`].
//! - **Every reservation leaves a hold on its products** in the same update (`holds`), so stock
//!   whose order was never stored is found and given back by the hold sweeper.
//! - **Uniqueness is enforced by unique keys** (`_id` for idempotency records and outbox
//!   entries, unique indexes for emails and notification claims), which are atomic even where
//!   nothing else is.
//! - **The outbox is a collection of its own**, keyed by order id: written just before the
//!   order, deleted when the queue confirms it, so the outbox pass reads only what is unsent.
//!
//! Times are BSON datetimes, which keep milliseconds: a time read back is the time written,
//! truncated to the millisecond. That is all callers need (ordering, `updated_at - created_at`),
//! and it keeps the documents readable and usable by TTL indexes.
//!
//! FerretDB 1.x (used by the tests and fine for development) applies `findAndModify` and
//! `update` as a read followed by a blind write of the whole document (FerretDB issue #3040):
//! two concurrent updates of one document can both pass their filter, and the last write wins
//! whole. Against it the store sends one write at a time among all the processes sharing the
//! database, under a lease on a lock document (`write_lock`: one acquisition per batch of
//! writes, and never a write without it), and says so at connect; reads stay concurrent. It also finds
//! documents by `_id` alone without a scan, so there the hot paths read and write by `_id`
//! (`point_access`, `orders_by_id`). On MongoDB every write goes straight through.
//!
//! Layout: one file per trait of `crate::store` (`accounts`, `catalogue`, `orders`,
//! `idempotency`), each holding that aggregate's queries; beside them what they share: the
//! stored documents and their conversions (`documents`), the orders' email claims
//! (`notifications`), error mapping and credential
//! redaction (`errors`), index creation (`indexes`) and the FerretDB write lock
//! (`write_lock`). This file connects and holds the collections.

mod accounts;
mod bulk;
mod catalogue;
mod command_counter;
mod documents;
mod errors;
mod holds;
mod idempotency;
mod indexes;
mod insert_batcher;
pub mod lock_wakeups;
mod notifications;
mod orders;
mod orders_by_id;
mod point_access;
mod purge_clock;
mod retention;
mod stranded;
mod write_lock;
mod write_turns;

use std::future::IntoFuture;
use std::time::Duration;

use async_trait::async_trait;
use bson::{doc, Document};
use futures_util::TryStreamExt;
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database};
use serde::de::DeserializeOwned;

use crate::domain::PageRequest;
use crate::error::BackendError;
use crate::store::{StoreHealth, StoreResult};
use documents::*;
use errors::{db_error, redact, BACKEND};
use insert_batcher::InsertBatcher;
use point_access::Lookups;
use purge_clock::PurgeClock;
use write_lock::Writes;

/// Used when the URI names no database, so `mongodb://host` works out of the box.
const DEFAULT_DATABASE: &str = "order-service";

/// A down database must fail a request (and `/ready`) quickly rather than hold it for the
/// driver's default 30 s; a URI that sets its own timeouts keeps them.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The MongoDB store: every trait of `crate::store` on one database. Cloning is cheap: clones share the driver's connection pool.
#[derive(Clone)]
pub struct MongoStore {
    db: Database,
    users: Collection<UserDoc>,
    sessions: Collection<SessionDoc>,
    products: Collection<ProductDoc>,
    orders: Collection<OrderDoc>,
    notifications: Collection<notifications::ClaimDoc>,
    idempotency: Collection<IdempotencyDoc>,
    /// Each order's entry until the queue confirmed it (see `insert_batcher`).
    outbox: Collection<OutboxDoc>,
    /// False when the server refused TTL indexes: expired records are then purged by the code.
    ttl_indexes: bool,
    /// When that purge of idempotency records is due.
    idempotency_purges: PurgeClock,
    /// Whether records of the layout before `_id` keys may still be replayed (see
    /// `idempotency`).
    legacy_idempotency: bool,
    /// Straight through, or serialised on servers whose updates are not atomic (FerretDB 1.x,
    /// see the module comment).
    writes: Writes,
    /// Whether the server finds documents by any indexed filter or by `_id` alone
    /// (`point_access`).
    lookups: Lookups,
    /// Concurrent orders' inserts, sent together (`insert_batcher`).
    order_inserts: InsertBatcher,
    /// Users read for emails lately. Nothing changes a user once registered (no route edits
    /// or deletes one), so a copy is as good as a read: a customer ordering again is not read
    /// again for each email. Bounded in size and age.
    recent_users: moka::sync::Cache<crate::domain::Id, crate::domain::User>,
    /// Stranded-order claim passes of this process that failed after sending their claims
    /// (`stranded`).
    unsettled_claims: stranded::UnsettledClaims,
}

/// Bounds of `recent_users`: one entry per active customer, a few hundred bytes each.
const RECENT_USERS: u64 = 10_000;
const RECENT_USERS_FOR: Duration = Duration::from_secs(600);

impl std::fmt::Debug for MongoStore {
    // Only the database name: the client's options hold the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoStore")
            .field("database", &self.db.name())
            .finish_non_exhaustive()
    }
}

impl MongoStore {
    /// Connects, checks that the server answers and creates the indexes the store relies on.
    /// A server that can not be reached fails within a few seconds as `Unavailable`. Errors
    /// never contain the URI's credentials.
    pub async fn connect(uri: &str) -> Result<MongoStore, BackendError> {
        Self::connect_inner(uri).await.map_err(|e| redact(e, uri))
    }

    async fn connect_inner(uri: &str) -> Result<MongoStore, BackendError> {
        let mut options = ClientOptions::parse(uri)
            .await
            .map_err(|e| match db_error(e) {
                BackendError::Other { detail, .. } => {
                    BackendError::other(BACKEND, format!("invalid MONGODB_URI: {detail}"))
                }
                other => other,
            })?;
        options
            .server_selection_timeout
            .get_or_insert(CONNECT_TIMEOUT);
        options.connect_timeout.get_or_insert(CONNECT_TIMEOUT);
        options
            .app_name
            .get_or_insert_with(|| "order-service".to_owned());
        options.command_event_handler = Some(command_counter::handler());
        let name = options
            .default_database
            .clone()
            .unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
        let client = Client::with_options(options).map_err(db_error)?;
        let db = client.database(&name);
        // The driver connects lazily; asking now makes a wrong address fail at start, not at
        // the first request.
        ping(&db).await?;
        let writes = Writes::for_server(&db).await?;
        command_counter::register(writes.serialised());
        let order_inserts = InsertBatcher::start(
            db.collection("orders"),
            db.collection("outbox"),
            writes.clone(),
        );
        let mut store = MongoStore {
            order_inserts,
            users: db.collection("users"),
            sessions: db.collection("sessions"),
            products: db.collection("products"),
            orders: db.collection("orders"),
            notifications: db.collection("notifications"),
            idempotency: db.collection(idempotency::COLLECTION),
            outbox: db.collection("outbox"),
            db,
            // The one server known to need serialised writes (FerretDB 1.x) is also the one
            // that looks documents up by `_id` alone.
            lookups: if writes.serialised() {
                Lookups::ByIdOnly
            } else {
                Lookups::Indexed
            },
            ttl_indexes: true,
            idempotency_purges: PurgeClock::new(idempotency::PURGE_EVERY),
            legacy_idempotency: false,
            writes,
            unsettled_claims: stranded::UnsettledClaims::default(),
            recent_users: moka::sync::Cache::builder()
                .max_capacity(RECENT_USERS)
                .time_to_live(RECENT_USERS_FOR)
                .build(),
        };
        store.ttl_indexes = store.create_indexes().await?;
        store.legacy_idempotency = store.has_legacy_idempotency().await?;
        let moved = store.move_legacy_outbox_flags().await?;
        if moved > 0 {
            tracing::info!(
                orders = moved,
                "moved unsent orders to the outbox collection"
            );
        }
        Ok(store)
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Where writes are serialised (FerretDB 1.x), has this process's writer that waits for
    /// another process's lease woken by that process announcing its release on Redis pub/sub
    /// (`lock_wakeups`), rather than looking at the lock every few milliseconds. Every process
    /// sharing the database should be given the same Redis and `prefix`.
    pub fn wake_lock_waiters_through(&self, redis: redis::Client, prefix: &str) {
        let channel = lock_wakeups::channel(prefix, self.db.name());
        self.writes
            .wake_waiters_through(|| lock_wakeups::LockWakeups::start(redis, channel));
    }

    /// True when this process serialises its writes because the server's updates are not
    /// atomic (FerretDB 1.x).
    pub fn serialises_writes(&self) -> bool {
        self.writes.serialised()
    }

    /// Runs one write as the server needs it (see `write_lock`).
    async fn write<F, T>(&self, op: F) -> Result<T, mongodb::error::Error>
    where
        F: IntoFuture<Output = Result<T, mongodb::error::Error>>,
    {
        self.writes.run(op).await
    }
}

#[async_trait]
impl StoreHealth for MongoStore {
    async fn ping(&self) -> StoreResult<()> {
        ping(&self.db).await
    }

    async fn is_empty(&self) -> StoreResult<bool> {
        let any = self
            .users
            .clone_with_type::<Document>()
            .find_one(doc! {})
            .projection(doc! { "_id": 1 })
            .await
            .map_err(db_error)?;
        Ok(any.is_none())
    }
}

/// A cheap round trip proving the server answers.
async fn ping(db: &Database) -> StoreResult<()> {
    db.run_command(doc! { "ping": 1 }).await.map_err(db_error)?;
    Ok(())
}

/// One page of what `filter` matches in `coll`, in `sort` order and converted, and how many
/// match in all: two round trips (the page, the count).
async fn find_page<D, T>(
    coll: &Collection<D>,
    filter: Document,
    sort: Document,
    page: PageRequest,
    convert: fn(D) -> StoreResult<T>,
) -> StoreResult<(Vec<T>, u64)>
where
    D: DeserializeOwned + Send + Sync,
{
    let docs: Vec<D> = coll
        .find(filter.clone())
        .sort(sort)
        .skip(page.offset())
        .limit(i64::from(page.limit))
        .await
        .map_err(db_error)?
        .try_collect()
        .await
        .map_err(db_error)?;
    let total = coll.count_documents(filter).await.map_err(db_error)?;
    let items = docs.into_iter().map(convert).collect::<StoreResult<_>>()?;
    Ok((items, total))
}

/// At most `limit` documents that `filter` selects, in `sort` order, in one `find`.
async fn find_sorted<D>(
    coll: &Collection<D>,
    filter: Document,
    sort: Document,
    limit: u32,
) -> StoreResult<Vec<D>>
where
    D: DeserializeOwned + Send + Sync,
{
    coll.find(filter)
        .sort(sort)
        .limit(i64::from(limit))
        .await
        .map_err(db_error)?
        .try_collect()
        .await
        .map_err(db_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_server_fails_fast_as_unavailable() {
        // Port 9 (discard) on loopback: nothing listens there in a test environment.
        let started = std::time::Instant::now();
        let uri = "mongodb://ann:s3cret@127.0.0.1:9/x?serverSelectionTimeoutMS=500";
        let e = MongoStore::connect(uri).await.unwrap_err();
        assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
