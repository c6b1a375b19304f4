//! The MongoDB store (`MONGODB_URI`): how the service runs in production, with many `api` and
//! `worker` processes sharing one database. It keeps the semantics of the embedded store
//! (`super::sqlite`) without multi-document transactions, so it works on a standalone server
//! and on compatible servers; every rule that SQLite gets from one transaction is rebuilt here
//! from single-document atomic updates.
//!
//! Concurrency and compensation choices:
//!
//! - **Stock is reserved line by line with conditional decrements** (`stock >= qty` in the
//!   filter of a `findAndModify`), so stock can never go below zero however many processes
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
//! - **Stock returned by failed and cancelled orders** goes back through a per-line claim on the
//!   order document (see [`MongoStore::return_order_stock`]), so a return is never doubled, and
//!   interrupted returns are finished by [`MongoStore::repair_stock_returns`].
//! - **Uniqueness is enforced by unique indexes** (emails, notification claims, idempotency
//!   keys), which are atomic even where nothing else is.
//!
//! Times are BSON datetimes, which keep milliseconds: a time read back is the time written,
//! truncated to the millisecond. That is all callers need (ordering, `updated_at - created_at`),
//! and it keeps the documents readable and usable by TTL indexes.
//!
//! FerretDB 1.x (used by the tests and fine for development) applies `findAndModify` and
//! `update` as a read followed by a blind write of the whole document (FerretDB issue #3040):
//! two concurrent updates of one document can both pass their filter, and the last write wins
//! whole. Against it the store sends one write at a time per process (reads stay concurrent),
//! which keeps a single process correct; several processes sharing a FerretDB 1.x are not, and
//! the store says so at connect. On MongoDB every write goes straight through.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bson::oid::ObjectId;
use bson::{doc, Document};
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::TryStreamExt;
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions, ReturnDocument};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use super::{
    IdempotencyRecord, ReserveOutcome, RotateOutcome, Session, Store, StoreResult,
    TransitionOutcome,
};
use crate::domain::{
    Cents, Email, Id, NewProduct, Order, OrderItem, OrderLine, OrderStatus, PageRequest, Product,
    ProductPatch, Quantity, Role, ShippingAddress, User,
};
use crate::error::{BackendError, Shortage};

const BACKEND: &str = "database";

/// Used when the URI names no database, so `mongodb://host` works out of the box.
const DEFAULT_DATABASE: &str = "order-service";

/// A down database must fail a request (and `/ready`) quickly rather than hold it for the
/// driver's default 30 s; a URI that sets its own timeouts keeps them.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Same window as the embedded store: clients retry within minutes; a day leaves room for a
/// client that was offline.
const IDEMPOTENCY_TTL_HOURS: i64 = 24;

/// How often a reservation that lost a race (it failed, yet stock was there when it looked) is
/// tried again before answering `Insufficient`. Each retry only happens after a real conflict,
/// so a few are plenty.
const RESERVE_ATTEMPTS: usize = 5;

/// Passes of `save_idempotency`; each one only fails because another saver changed the key.
const SAVE_ATTEMPTS: usize = 5;

/// Server error codes that mean "not reachable right now" rather than "refused": the same
/// list the driver retries reads on, plus MaxTimeMSExpired.
const UNAVAILABLE_CODES: &[i32] = &[
    6, 7, 50, 89, 91, 134, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
];

const DUPLICATE_KEY: i32 = 11000;

/// Server shortcomings are warned about once per process, not once per connect.
static TTL_WARNED: AtomicBool = AtomicBool::new(false);
static NON_ATOMIC_WARNED: AtomicBool = AtomicBool::new(false);

// --- Documents ------------------------------------------------------------------------------
// Typed mirrors of what is stored, kept apart from the domain types so that renaming a field in
// the JSON API can never silently change the stored shape. Fields are camelCase, as the
// replaced Node.js service stored them.

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserDoc {
    #[serde(rename = "_id")]
    id: ObjectId,
    email: String,
    name: String,
    role: String,
    password_hash: String,
    created_at: bson::DateTime,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionDoc {
    #[serde(rename = "_id")]
    id: ObjectId,
    user_id: ObjectId,
    current_jti: String,
    expires_at: bson::DateTime,
    revoked: bool,
    created_at: bson::DateTime,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProductDoc {
    #[serde(rename = "_id")]
    id: ObjectId,
    name: String,
    description: String,
    price: i64,
    stock: i64,
    created_at: bson::DateTime,
    updated_at: bson::DateTime,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderItemDoc {
    product_id: ObjectId,
    product_name: String,
    unit_price: i64,
    quantity: i32,
    line_total: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddressDoc {
    street: String,
    city: String,
    state: String,
    zip_code: String,
    country: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderDoc {
    #[serde(rename = "_id")]
    id: ObjectId,
    user_id: ObjectId,
    items: Vec<OrderItemDoc>,
    shipping_address: AddressDoc,
    payment_method: String,
    status: String,
    total_amount: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure_reason: Option<String>,
    created_at: bson::DateTime,
    updated_at: bson::DateTime,
    /// The outbox flag: false until the queue confirmed the order's message.
    #[serde(default)]
    enqueued: bool,
    /// Set to false by the transition that must return stock, true once every line is back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stock_returned: Option<bool>,
    /// Products whose stock this order has claimed to give back (see `return_order_stock`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    returned_products: Vec<ObjectId>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotificationDoc {
    order_id: ObjectId,
    status: String,
    claimed_at: bson::DateTime,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdempotencyDoc {
    #[serde(rename = "_id", default, skip_serializing_if = "Option::is_none")]
    id: Option<ObjectId>,
    user_id: ObjectId,
    key: String,
    request_hash: String,
    status: i32,
    body: String,
    created_at: bson::DateTime,
}

#[derive(Debug, Deserialize)]
struct IdDoc {
    #[serde(rename = "_id")]
    id: ObjectId,
}

// --- Conversions ------------------------------------------------------------------------------
// Stored values are checked again on the way out: a hand-edited or damaged document surfaces as
// an error naming it, instead of an invalid domain value.

fn bson_time(t: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(t.timestamp_millis())
}

fn chrono_time(t: bson::DateTime) -> Result<DateTime<Utc>, String> {
    DateTime::from_timestamp_millis(t.timestamp_millis())
        .ok_or_else(|| format!("time {t} is out of range"))
}

fn corrupt(what: &str, id: ObjectId, problem: impl std::fmt::Display) -> BackendError {
    BackendError::other(BACKEND, format!("stored {what} {id} is invalid: {problem}"))
}

fn user_from_doc(d: UserDoc) -> StoreResult<User> {
    let bad = |p: String| corrupt("user", d.id, p);
    Ok(User {
        id: Id::from_object_id(d.id),
        email: Email::parse(&d.email).map_err(|e| bad(format!("email {e}")))?,
        name: d.name.clone(),
        role: Role::parse(&d.role).ok_or_else(|| bad(format!("unknown role {:?}", d.role)))?,
        password_hash: d.password_hash.clone(),
        created_at: chrono_time(d.created_at).map_err(bad)?,
    })
}

fn session_from_doc(d: SessionDoc) -> StoreResult<Session> {
    let bad = |p: String| corrupt("session", d.id, p);
    Ok(Session {
        id: Id::from_object_id(d.id),
        user_id: Id::from_object_id(d.user_id),
        current_jti: d.current_jti.clone(),
        expires_at: chrono_time(d.expires_at).map_err(bad)?,
        revoked: d.revoked,
        created_at: chrono_time(d.created_at).map_err(bad)?,
    })
}

fn product_from_doc(d: ProductDoc) -> StoreResult<Product> {
    let bad = |p: String| corrupt("product", d.id, p);
    Ok(Product {
        id: Id::from_object_id(d.id),
        name: d.name.clone(),
        description: d.description.clone(),
        price: Cents::from_stored(d.price),
        stock: d.stock,
        created_at: chrono_time(d.created_at).map_err(bad)?,
        updated_at: chrono_time(d.updated_at).map_err(bad)?,
    })
}

fn order_from_doc(d: OrderDoc) -> StoreResult<Order> {
    let bad = |p: String| corrupt("order", d.id, p);
    let items = d
        .items
        .iter()
        .map(|i| {
            Ok(OrderItem {
                product_id: Id::from_object_id(i.product_id),
                product_name: i.product_name.clone(),
                unit_price: Cents::from_stored(i.unit_price),
                quantity: Quantity::parse(i64::from(i.quantity))
                    .map_err(|e| bad(format!("item quantity {e}")))?,
                line_total: Cents::from_stored(i.line_total),
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let a = &d.shipping_address;
    Ok(Order {
        id: Id::from_object_id(d.id),
        user_id: Id::from_object_id(d.user_id),
        items,
        shipping_address: ShippingAddress {
            street: a.street.clone(),
            city: a.city.clone(),
            state: a.state.clone(),
            zip_code: a.zip_code.clone(),
            country: a.country.clone(),
        },
        payment_method: d.payment_method.clone(),
        status: OrderStatus::parse(&d.status)
            .ok_or_else(|| bad(format!("unknown status {:?}", d.status)))?,
        total_amount: Cents::from_stored(d.total_amount),
        failure_reason: d.failure_reason.clone(),
        created_at: chrono_time(d.created_at).map_err(bad)?,
        updated_at: chrono_time(d.updated_at).map_err(bad)?,
    })
}

fn order_to_doc(o: &Order) -> OrderDoc {
    OrderDoc {
        id: o.id.object_id(),
        user_id: o.user_id.object_id(),
        items: o
            .items
            .iter()
            .map(|i| OrderItemDoc {
                product_id: i.product_id.object_id(),
                product_name: i.product_name.clone(),
                unit_price: i.unit_price.value(),
                // Quantities are bounded by MAX_QUANTITY (1000), far inside i32.
                quantity: i.quantity.get() as i32,
                line_total: i.line_total.value(),
            })
            .collect(),
        shipping_address: AddressDoc {
            street: o.shipping_address.street.clone(),
            city: o.shipping_address.city.clone(),
            state: o.shipping_address.state.clone(),
            zip_code: o.shipping_address.zip_code.clone(),
            country: o.shipping_address.country.clone(),
        },
        payment_method: o.payment_method.clone(),
        status: o.status.as_str().to_owned(),
        total_amount: o.total_amount.value(),
        failure_reason: o.failure_reason.clone(),
        created_at: bson_time(o.created_at),
        updated_at: bson_time(o.updated_at),
        enqueued: false,
        stock_returned: None,
        returned_products: vec![],
    }
}

fn idempotency_from_doc(d: IdempotencyDoc) -> StoreResult<IdempotencyRecord> {
    Ok(IdempotencyRecord {
        status: u16::try_from(d.status).map_err(|_| {
            BackendError::other(
                BACKEND,
                format!("stored idempotency record has status {}", d.status),
            )
        })?,
        request_hash: d.request_hash,
        body: d.body,
    })
}

/// Sums the quantities per product, keeping the order in which products first appear, so one
/// conditional update checks a product against everything the request wants of it.
fn merge_quantities(lines: impl IntoIterator<Item = (ObjectId, i64)>) -> Vec<(ObjectId, i64)> {
    let mut merged: Vec<(ObjectId, i64)> = vec![];
    for (id, qty) in lines {
        match merged.iter_mut().find(|(m, _)| *m == id) {
            Some((_, total)) => *total = total.saturating_add(qty),
            None => merged.push((id, qty)),
        }
    }
    merged
}

fn order_line_quantities(lines: &[OrderLine]) -> Vec<(ObjectId, i64)> {
    merge_quantities(
        lines
            .iter()
            .map(|l| (l.product_id.object_id(), i64::from(l.quantity.get()))),
    )
}

// --- Errors -----------------------------------------------------------------------------------

/// Unreachable or timed out is worth a retry (503); a uniqueness violation is the caller's
/// business; anything else is a bug, a refused command or damaged data.
fn db_error(e: mongodb::error::Error) -> BackendError {
    let duplicate = match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    };
    if duplicate {
        return BackendError::Duplicate;
    }
    let unavailable = match e.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Authentication { .. } => true,
        ErrorKind::Command(c) => UNAVAILABLE_CODES.contains(&c.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => UNAVAILABLE_CODES.contains(&w.code),
        _ => e.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR),
    };
    if unavailable {
        BackendError::unavailable(BACKEND, e)
    } else {
        BackendError::other(BACKEND, e)
    }
}

/// The server's answer to a command it refused, if it answered at all.
fn command_code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        _ => None,
    }
}

/// Removes the URI's credentials from an error text: driver messages about a bad URI may quote
/// parts of it, and errors end up in logs.
fn redact(e: BackendError, uri: &str) -> BackendError {
    let secrets: Vec<&str> = uri
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|authority| authority.rsplit_once('@'))
        .map(|(userinfo, _)| {
            let mut s = vec![userinfo];
            if let Some((_, password)) = userinfo.split_once(':') {
                s.push(password);
            }
            s
        })
        .unwrap_or_default();
    let scrub = |detail: String| {
        let mut detail = detail.replace(uri, "<MONGODB_URI>");
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            detail = detail.replace(s, "***");
        }
        detail
    };
    match e {
        BackendError::Unavailable { backend, detail } => BackendError::Unavailable {
            backend,
            detail: scrub(detail),
        },
        BackendError::Other { backend, detail } => BackendError::Other {
            backend,
            detail: scrub(detail),
        },
        BackendError::Duplicate => BackendError::Duplicate,
    }
}

// --- The store --------------------------------------------------------------------------------

/// The MongoDB [`Store`]. Cloning is cheap: clones share the driver's connection pool.
#[derive(Clone)]
pub struct MongoStore {
    db: Database,
    users: Collection<UserDoc>,
    sessions: Collection<SessionDoc>,
    products: Collection<ProductDoc>,
    orders: Collection<OrderDoc>,
    notifications: Collection<NotificationDoc>,
    idempotency: Collection<IdempotencyDoc>,
    /// False when the server refused TTL indexes: expired records are then purged by the code.
    ttl_indexes: bool,
    /// Present on servers whose updates are not atomic (FerretDB 1.x, see the module comment):
    /// every write then runs alone among all the processes sharing the database.
    write_lock: Option<Arc<SharedWriteLock>>,
}

/// A write lock shared by every process using one database, for servers whose updates are not
/// atomic. Mutual exclusion comes from the one thing such servers do apply atomically: an
/// insert refused by the unique `_id` (here, of the single lock document). A holder that dies
/// leaves the lock to expire after `LEASE`, when another process removes it. The removal and
/// the release are filtered deletes, which such a server may apply to a newer lock if the
/// lease ran out in between: that needs a write to take longer than `LEASE`, and the
/// consequence is one unserialised write. Within a process, a local mutex queues writers first
/// so they do not all poll the database.
struct SharedWriteLock {
    local: tokio::sync::Mutex<()>,
    locks: Collection<Document>,
}

const LOCK_ID: &str = "writes";
const LEASE: TimeDelta = TimeDelta::seconds(10);
/// If the lock can not be had for this long, the write goes ahead unserialised (and says so)
/// rather than the service stalling on a wedged lock.
const LOCK_PATIENCE: Duration = Duration::from_secs(15);

impl SharedWriteLock {
    fn new(locks: Collection<Document>) -> Self {
        SharedWriteLock {
            local: tokio::sync::Mutex::new(()),
            locks,
        }
    }

    /// Returns a token naming this holder, or an error when the lock could not be had (the
    /// write then proceeds anyway, see `LOCK_PATIENCE`).
    async fn acquire(&self) -> Result<(tokio::sync::MutexGuard<'_, ()>, String), ()> {
        let local = self.local.lock().await;
        let owner = hex::encode(rand::random::<[u8; 12]>());
        let deadline = tokio::time::Instant::now() + LOCK_PATIENCE;
        let mut pause = Duration::from_micros(500);
        loop {
            let now = Utc::now();
            let lock = doc! { "_id": LOCK_ID, "owner": &owner, "expiresAt": bson::DateTime::from_millis((now + LEASE).timestamp_millis()) };
            match self.locks.insert_one(lock).await.map_err(db_error) {
                Ok(_) => return Ok((local, owner)),
                Err(BackendError::Duplicate) => {
                    // Held by another process; clear it only if its holder is long gone.
                    let expired = doc! { "_id": LOCK_ID, "expiresAt": { "$lt": bson::DateTime::from_millis(now.timestamp_millis()) } };
                    let _ = self.locks.delete_one(expired).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "write lock unavailable; writing without it");
                    return Err(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::error!("write lock held too long; writing without it");
                return Err(());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    async fn release(&self, (local, owner): (tokio::sync::MutexGuard<'_, ()>, String)) {
        if let Err(e) = self
            .locks
            .delete_one(doc! { "_id": LOCK_ID, "owner": owner })
            .await
        {
            tracing::warn!(error = %db_error(e), "could not release the write lock; it expires by itself");
        }
        drop(local);
    }
}

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
        let name = options
            .default_database
            .clone()
            .unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
        let client = Client::with_options(options).map_err(db_error)?;
        let db = client.database(&name);
        let mut store = MongoStore {
            users: db.collection("users"),
            sessions: db.collection("sessions"),
            products: db.collection("products"),
            orders: db.collection("orders"),
            notifications: db.collection("notifications"),
            idempotency: db.collection("idempotency_keys"),
            db,
            ttl_indexes: true,
            write_lock: None,
        };
        // The driver connects lazily; asking now makes a wrong address fail at start, not at
        // the first request.
        store.ping().await?;
        if let Some(version) = store.non_atomic_server().await? {
            if !NON_ATOMIC_WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    server = %version,
                    "this server does not apply updates atomically (FerretDB issue #3040): \
                     writes are serialised across processes with a lock document, which is \
                     correct but slow; use MongoDB in production"
                );
            }
            store.write_lock = Some(Arc::new(SharedWriteLock::new(store.db.collection("locks"))));
        }
        store.ttl_indexes = store.create_indexes().await?;
        Ok(store)
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// True when this process serialises its writes because the server's updates are not
    /// atomic (FerretDB 1.x).
    pub fn serialises_writes(&self) -> bool {
        self.write_lock.is_some()
    }

    /// The FerretDB version, when the server is a FerretDB 1.x: it applies `update` and
    /// `findAndModify` as a read followed by a blind write of the whole document, so two
    /// concurrent updates of one document can both pass their filter and the last one wins.
    /// FerretDB announces itself in `buildInfo`; MongoDB has no such field.
    async fn non_atomic_server(&self) -> StoreResult<Option<String>> {
        let info = self
            .db
            .run_command(doc! { "buildInfo": 1 })
            .await
            .map_err(db_error)?;
        Ok(info
            .get_str("ferretdbVersion")
            .ok()
            .filter(|v| v.trim_start_matches('v').starts_with("1."))
            .map(str::to_owned))
    }

    /// Runs one write; alone among this process's writes when the server needs that (see
    /// `write_lock`). Reads never wait: they only see whole committed documents.
    async fn write<F: IntoFuture>(&self, op: F) -> F::Output {
        match &self.write_lock {
            None => op.await,
            Some(lock) => {
                let held = lock.acquire().await;
                let out = op.await;
                if let Ok(token) = held {
                    lock.release(token).await;
                }
                out
            }
        }
    }

    /// Creates every index (a no-op for those that exist). Returns whether the server accepted
    /// the TTL indexes.
    async fn create_indexes(&self) -> StoreResult<bool> {
        fn index(keys: Document, name: &str, unique: bool) -> IndexModel {
            IndexModel::builder()
                .keys(keys)
                .options(
                    IndexOptions::builder()
                        .name(name.to_owned())
                        .unique(unique.then_some(true))
                        .build(),
                )
                .build()
        }
        self.users
            .create_index(index(doc! { "email": 1 }, "users_email", true))
            .await
            .map_err(db_error)?;
        self.products
            .create_index(index(
                doc! { "createdAt": 1, "_id": 1 },
                "products_by_age",
                false,
            ))
            .await
            .map_err(db_error)?;
        self.orders
            .create_index(index(
                doc! { "userId": 1, "createdAt": -1, "_id": -1 },
                "orders_by_user",
                false,
            ))
            .await
            .map_err(db_error)?;
        // Serves the outbox query (pending, not enqueued, oldest first) and, through its
        // status prefix, the search for interrupted stock returns.
        self.orders
            .create_index(index(
                doc! { "status": 1, "enqueued": 1, "createdAt": 1 },
                "orders_outbox",
                false,
            ))
            .await
            .map_err(db_error)?;
        self.notifications
            .create_index(index(
                doc! { "orderId": 1, "status": 1 },
                "notifications_claim",
                true,
            ))
            .await
            .map_err(db_error)?;
        self.idempotency
            .create_index(index(
                doc! { "userId": 1, "key": 1 },
                "idempotency_key",
                true,
            ))
            .await
            .map_err(db_error)?;

        let idempotency_ttl = self
            .ttl_index(
                &self.idempotency.clone_with_type::<Document>(),
                "createdAt",
                "idempotency_expiry",
                Duration::from_secs(IDEMPOTENCY_TTL_HOURS as u64 * 3600),
            )
            .await?;
        let sessions_ttl = self
            .ttl_index(
                &self.sessions.clone_with_type::<Document>(),
                "expiresAt",
                "sessions_expiry",
                Duration::ZERO,
            )
            .await?;
        Ok(idempotency_ttl && sessions_ttl)
    }

    /// A TTL index on `field`; when the server refuses TTL indexes (FerretDB 1.x answers
    /// NotImplemented), a plain index under another name instead, so the code's own purges
    /// stay cheap.
    async fn ttl_index(
        &self,
        coll: &Collection<Document>,
        field: &str,
        name: &str,
        expire_after: Duration,
    ) -> StoreResult<bool> {
        let ttl = IndexModel::builder()
            .keys(doc! { field: 1 })
            .options(
                IndexOptions::builder()
                    .name(name.to_owned())
                    .expire_after(expire_after)
                    .build(),
            )
            .build();
        let refused = match coll.create_index(ttl).await {
            Ok(_) => return Ok(true),
            Err(e) => match db_error(e) {
                BackendError::Other { detail, .. } => detail,
                other => return Err(other),
            },
        };
        if !TTL_WARNED.swap(true, Ordering::Relaxed) {
            // The driver's message ends with the raw server reply; the first clause says it all.
            let reason = refused.split(", labels").next().unwrap_or(&refused);
            tracing::warn!(
                error = %reason,
                "the database refused TTL indexes; expired sessions and idempotency records \
                 are ignored and purged by the service instead"
            );
        }
        let plain = IndexModel::builder()
            .keys(doc! { field: 1 })
            .options(
                IndexOptions::builder()
                    .name(format!("{name}_plain"))
                    .build(),
            )
            .build();
        coll.create_index(plain).await.map_err(db_error)?;
        Ok(false)
    }

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

    /// Gives back the stock of a failed or cancelled order, exactly once per product however
    /// many callers (the winning transition, a refused retry, the repair at start) try at once.
    ///
    /// There is no transaction spanning the order and its products, so the order document
    /// carries the bookkeeping: the transition that moved it set `stockReturned: false` in the
    /// same conditional update as the status (so the intent can not be lost), and each product
    /// is then *claimed* on the order (`$addToSet returnedProducts: pid`, guarded by
    /// `returnedProducts: {$ne: pid}` so that the outcome does not hang on how a server counts
    /// a no-op `$addToSet`) before its `$inc`. The claim is atomic on one document, so only one
    /// caller ever gives a product's quantity back. If the `$inc` is refused by the
    /// server, the claim is withdrawn so that a later attempt can do it.
    ///
    /// The crash window, named honestly: if the process dies (or loses the connection) after a
    /// claim and before its `$inc` reached the server, that line is never given back: the
    /// product's stock stays too low by the line's quantity. Claiming after the `$inc` instead
    /// would turn the same window into a double return, which would let the shop sell stock it
    /// does not have; a shortfall is the safe side and an admin can correct it. The window is a
    /// single round trip per line, and the error log names the order and product.
    async fn return_order_stock(&self, order: &OrderDoc) -> StoreResult<()> {
        let lines = merge_quantities(
            order
                .items
                .iter()
                .map(|i| (i.product_id, i64::from(i.quantity))),
        );
        for (product_id, qty) in lines {
            let claimed = self
                .write(self.orders.update_one(
                    doc! { "_id": order.id, "returnedProducts": { "$ne": product_id } },
                    doc! { "$addToSet": { "returnedProducts": product_id } },
                ))
                .await
                .map_err(db_error)?;
            if claimed.modified_count == 0 {
                continue; // Someone else gives (or gave) this one back.
            }
            let given = self
                .write(self.products.update_one(
                    doc! { "_id": product_id },
                    doc! { "$inc": { "stock": qty } },
                ))
                .await;
            let Err(e) = given else { continue };
            // A refusal from the server means the $inc did not happen: withdrawing the claim is
            // safe and lets a retry or the repair finish. Without an answer we can not know, so
            // the claim stays (the safe side, see above).
            if command_code(&e).is_some() {
                let unclaim = self
                    .write(self.orders.update_one(
                        doc! { "_id": order.id },
                        doc! { "$pull": { "returnedProducts": product_id } },
                    ))
                    .await;
                if unclaim.is_ok() {
                    return Err(db_error(e));
                }
            }
            tracing::error!(
                order_id = %order.id,
                product_id = %product_id,
                quantity = qty,
                error = %e,
                "stock of a failed or cancelled order may not have been given back; check the \
                 product's stock"
            );
            return Err(db_error(e));
        }
        self.write(self.orders.update_one(
            doc! { "_id": order.id },
            doc! { "$set": { "stockReturned": true } },
        ))
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Finishes the stock returns of failed or cancelled orders that a crash or an outage
    /// interrupted (their `stockReturned` is still false). Safe to run at any time and from
    /// several processes at once; meant to be called at start. Returns how many orders it
    /// finished.
    pub async fn repair_stock_returns(&self) -> StoreResult<u64> {
        let returning: Vec<&str> = OrderStatus::ALL
            .into_iter()
            .filter(|s| s.returns_stock())
            .map(OrderStatus::as_str)
            .collect();
        let pending: Vec<OrderDoc> = self
            .orders
            .find(doc! { "status": { "$in": returning }, "stockReturned": false })
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        let mut repaired = 0;
        for order in &pending {
            self.return_order_stock(order).await?;
            repaired += 1;
        }
        if repaired > 0 {
            tracing::info!(orders = repaired, "finished interrupted stock returns");
        }
        Ok(repaired)
    }
}

#[async_trait]
impl Store for MongoStore {
    async fn ping(&self) -> StoreResult<()> {
        self.db
            .run_command(doc! { "ping": 1 })
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn insert_user(&self, user: &User) -> StoreResult<()> {
        let d = UserDoc {
            id: user.id.object_id(),
            email: user.email.as_str().to_owned(),
            name: user.name.clone(),
            role: user.role.as_str().to_owned(),
            password_hash: user.password_hash.clone(),
            created_at: bson_time(user.created_at),
        };
        self.write(self.users.insert_one(&d))
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn find_user(&self, id: Id) -> StoreResult<Option<User>> {
        self.users
            .find_one(doc! { "_id": id.object_id() })
            .await
            .map_err(db_error)?
            .map(user_from_doc)
            .transpose()
    }

    async fn find_user_by_email(&self, email: &Email) -> StoreResult<Option<User>> {
        self.users
            .find_one(doc! { "email": email.as_str() })
            .await
            .map_err(db_error)?
            .map(user_from_doc)
            .transpose()
    }

    async fn insert_session(&self, session: &Session) -> StoreResult<()> {
        if !self.ttl_indexes {
            // Without a TTL index nothing else removes expired sessions; a login is a rare
            // enough write to carry the purge, and the index on expiresAt keeps it cheap.
            self.write(
                self.sessions
                    .delete_many(doc! { "expiresAt": { "$lte": bson_time(Utc::now()) } }),
            )
            .await
            .map_err(db_error)?;
        }
        let d = SessionDoc {
            id: session.id.object_id(),
            user_id: session.user_id.object_id(),
            current_jti: session.current_jti.clone(),
            expires_at: bson_time(session.expires_at),
            revoked: session.revoked,
            created_at: bson_time(session.created_at),
        };
        self.write(self.sessions.insert_one(&d))
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn find_session(&self, id: Id) -> StoreResult<Option<Session>> {
        self.sessions
            .find_one(doc! { "_id": id.object_id() })
            .await
            .map_err(db_error)?
            .map(session_from_doc)
            .transpose()
    }

    async fn rotate_session(
        &self,
        id: Id,
        presented_jti: &str,
        next_jti: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<RotateOutcome> {
        let rotated = self
            .write(self.sessions.update_one(
                doc! {
                    "_id": id.object_id(),
                    "currentJti": presented_jti,
                    "revoked": false,
                    "expiresAt": { "$gt": bson_time(now) },
                },
                doc! { "$set": { "currentJti": next_jti, "expiresAt": bson_time(expires_at) } },
            ))
            .await
            .map_err(db_error)?;
        if rotated.matched_count == 1 {
            return Ok(RotateOutcome::Rotated);
        }
        // Not rotated: either the session can not be used at all, or it is alive and the
        // presented token is not its current one, which is reuse. The read comes after the
        // failed update, so a session that was active then and is revoked now reads as
        // inactive: never a false accusation of reuse against a session already closed.
        let session = self.find_session(id).await?;
        Ok(match session {
            Some(s) if !s.revoked && s.expires_at > now => RotateOutcome::Reused,
            _ => RotateOutcome::Inactive,
        })
    }

    async fn revoke_session(&self, id: Id) -> StoreResult<()> {
        self.write(self.sessions.update_one(
            doc! { "_id": id.object_id() },
            doc! { "$set": { "revoked": true } },
        ))
        .await
        .map_err(db_error)?;
        Ok(())
    }

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
        let docs: Vec<ProductDoc> = self
            .products
            .find(doc! {})
            .sort(doc! { "createdAt": 1, "_id": 1 })
            .skip(page.offset())
            .limit(i64::from(page.limit))
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        let total = self
            .products
            .count_documents(doc! {})
            .await
            .map_err(db_error)?;
        let products = docs
            .into_iter()
            .map(product_from_doc)
            .collect::<StoreResult<_>>()?;
        Ok((products, total))
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

    async fn insert_order(&self, order: &Order) -> StoreResult<()> {
        self.write(self.orders.insert_one(order_to_doc(order)))
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn find_order(&self, id: Id) -> StoreResult<Option<Order>> {
        self.orders
            .find_one(doc! { "_id": id.object_id() })
            .await
            .map_err(db_error)?
            .map(order_from_doc)
            .transpose()
    }

    async fn list_orders(&self, user_id: Id, page: PageRequest) -> StoreResult<(Vec<Order>, u64)> {
        let filter = doc! { "userId": user_id.object_id() };
        // _id breaks ties within a millisecond, so the order is total and pages are stable.
        let docs: Vec<OrderDoc> = self
            .orders
            .find(filter.clone())
            .sort(doc! { "createdAt": -1, "_id": -1 })
            .skip(page.offset())
            .limit(i64::from(page.limit))
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        let total = self
            .orders
            .count_documents(filter)
            .await
            .map_err(db_error)?;
        let orders = docs
            .into_iter()
            .map(order_from_doc)
            .collect::<StoreResult<_>>()?;
        Ok((orders, total))
    }

    async fn transition_order(
        &self,
        id: Id,
        from: OrderStatus,
        to: OrderStatus,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<TransitionOutcome> {
        let mut set = doc! { "status": to.as_str(), "updatedAt": bson_time(now) };
        if let Some(reason) = reason {
            set.insert("failureReason", reason);
        }
        if to.returns_stock() {
            // The intent to return stock, written with the status in one atomic update, so it
            // survives a crash before the stock is back (see `return_order_stock`).
            set.insert("stockReturned", false);
        }
        let moved = self
            .write(
                self.orders
                    .find_one_and_update(
                        doc! { "_id": id.object_id(), "status": from.as_str() },
                        doc! { "$set": set },
                    )
                    .return_document(ReturnDocument::After),
            )
            .await
            .map_err(db_error)?;
        match moved {
            Some(doc) => {
                if to.returns_stock() {
                    // On error the order has moved but its stock is not all back: the caller
                    // sees the error (the step it asked for is unfinished), and its retry,
                    // refused below, or the repair at start finishes the return.
                    self.return_order_stock(&doc).await?;
                }
                Ok(TransitionOutcome::Moved(order_from_doc(doc)?))
            }
            None => {
                let current = self
                    .orders
                    .find_one(doc! { "_id": id.object_id() })
                    .await
                    .map_err(db_error)?;
                // A caller retrying a transition whose stock return was cut short finishes it
                // here; the per-product claims make that safe alongside any other attempt.
                if let Some(doc) = current.as_ref().filter(|d| d.stock_returned == Some(false)) {
                    self.return_order_stock(doc).await?;
                }
                Ok(TransitionOutcome::Refused(
                    current.map(order_from_doc).transpose()?,
                ))
            }
        }
    }

    async fn claim_notification(&self, order_id: Id, status: OrderStatus) -> StoreResult<bool> {
        // The unique index on (orderId, status) is the claim: an insert is atomic even where
        // updates are not.
        let claim = NotificationDoc {
            order_id: order_id.object_id(),
            status: status.as_str().to_owned(),
            claimed_at: bson_time(Utc::now()),
        };
        match self
            .write(self.notifications.insert_one(&claim))
            .await
            .map_err(db_error)
        {
            Ok(_) => Ok(true),
            Err(BackendError::Duplicate) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn release_notification(&self, order_id: Id, status: OrderStatus) -> StoreResult<()> {
        self.write(
            self.notifications
                .delete_one(doc! { "orderId": order_id.object_id(), "status": status.as_str() }),
        )
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn mark_enqueued(&self, order_id: Id) -> StoreResult<()> {
        self.mark_enqueued_many(&[order_id]).await
    }

    async fn mark_enqueued_many(&self, order_ids: &[Id]) -> StoreResult<()> {
        if order_ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<_> = order_ids.iter().map(|id| id.object_id()).collect();
        self.write(self.orders.update_many(
            doc! { "_id": { "$in": ids } },
            doc! { "$set": { "enqueued": true } },
        ))
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn unenqueued_orders(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Id>> {
        let docs: Vec<IdDoc> = self
            .orders
            .clone_with_type::<IdDoc>()
            .find(doc! {
                "status": OrderStatus::Pending.as_str(),
                "enqueued": false,
                "createdAt": { "$lt": bson_time(before) },
            })
            .sort(doc! { "createdAt": 1 })
            .limit(i64::from(limit))
            .projection(doc! { "_id": 1 })
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        Ok(docs.into_iter().map(|d| Id::from_object_id(d.id)).collect())
    }

    async fn find_idempotency(
        &self,
        user_id: Id,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        // A TTL index removes expired records only once a minute, and not at all where the
        // server has none: the age check is what makes expiry exact.
        let oldest = Utc::now() - TimeDelta::hours(IDEMPOTENCY_TTL_HOURS);
        self.idempotency
            .find_one(doc! {
                "userId": user_id.object_id(),
                "key": key,
                "createdAt": { "$gte": bson_time(oldest) },
            })
            .await
            .map_err(db_error)?
            .map(idempotency_from_doc)
            .transpose()
    }

    async fn save_idempotency(
        &self,
        user_id: Id,
        key: &str,
        record: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<IdempotencyRecord> {
        let oldest = bson_time(now - TimeDelta::hours(IDEMPOTENCY_TTL_HOURS));
        if !self.ttl_indexes {
            // As in the embedded store: purging on the write path keeps the collection small
            // without a sweeper task.
            self.write(
                self.idempotency
                    .delete_many(doc! { "createdAt": { "$lt": oldest } }),
            )
            .await
            .map_err(db_error)?;
        }
        let fresh = IdempotencyDoc {
            id: None,
            user_id: user_id.object_id(),
            key: key.to_owned(),
            request_hash: record.request_hash.clone(),
            status: i32::from(record.status),
            body: record.body.clone(),
            created_at: bson_time(now),
        };
        // The unique index on (userId, key) decides who is first. A loser reads the winner; a
        // winner that has expired but is not purged yet is taken over, conditionally on its
        // creation time so that two savers can not both take it over. Each pass ends or sees a
        // change made by someone else, so a few passes settle any race.
        for _ in 0..SAVE_ATTEMPTS {
            match self
                .write(self.idempotency.insert_one(&fresh))
                .await
                .map_err(db_error)
            {
                Ok(_) => return Ok(record.clone()),
                Err(BackendError::Duplicate) => {}
                Err(e) => return Err(e),
            }
            let existing = self
                .idempotency
                .find_one(doc! { "userId": user_id.object_id(), "key": key })
                .await
                .map_err(db_error)?;
            let Some(existing) = existing else {
                continue; // Purged between our insert and our read: insert again.
            };
            if existing.created_at >= oldest {
                return idempotency_from_doc(existing);
            }
            let taken_over = self
                .write(self.idempotency.update_one(
                    doc! { "_id": existing.id, "createdAt": existing.created_at },
                    doc! { "$set": {
                        "requestHash": &fresh.request_hash,
                        "status": fresh.status,
                        "body": &fresh.body,
                        "createdAt": fresh.created_at,
                    } },
                ))
                .await
                .map_err(db_error)?;
            if taken_over.matched_count == 1 {
                return Ok(record.clone());
            }
        }
        Err(BackendError::other(
            BACKEND,
            "an idempotency key kept changing under concurrent saves",
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_credentials() {
        let uri = "mongodb://ann:s3cret@db.example:27017/shop";
        let e = BackendError::other(BACKEND, "bad option in ann:s3cret@db.example, s3cret");
        let text = redact(e, uri).to_string();
        assert!(!text.contains("s3cret") && !text.contains("ann:"), "{text}");
        let e = BackendError::unavailable(BACKEND, format!("cannot parse {uri}"));
        assert!(!redact(e, uri).to_string().contains("s3cret"));
    }

    #[test]
    fn quantities_are_summed_per_product_in_first_seen_order() {
        let (a, b) = (ObjectId::new(), ObjectId::new());
        assert_eq!(
            merge_quantities([(a, 2), (b, 1), (a, 3)]),
            vec![(a, 5), (b, 1)]
        );
    }

    #[test]
    fn times_keep_milliseconds() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        let back = chrono_time(bson_time(t)).unwrap();
        assert_eq!(back.timestamp_subsec_nanos(), 123_000_000);
        assert_eq!(back.timestamp(), t.timestamp());
    }

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
