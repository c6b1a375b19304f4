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

mod documents;
mod errors;
mod indexes;
mod write_lock;

use std::collections::HashMap;
use std::future::IntoFuture;
use std::time::Duration;

use async_trait::async_trait;
use bson::oid::ObjectId;
use bson::{doc, Document};
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::TryStreamExt;
use mongodb::options::{ClientOptions, ReturnDocument};
use mongodb::{Client, Collection, Database};

use super::{
    IdempotencyRecord, ReserveOutcome, RotateOutcome, Session, Store, StoreResult,
    TransitionOutcome,
};
use crate::domain::{
    Email, Id, NewProduct, Order, OrderLine, OrderStatus, PageRequest, Product, ProductPatch, User,
};
use crate::error::{BackendError, Shortage};
use documents::*;
use errors::{command_code, db_error, redact, BACKEND};
use write_lock::Writes;

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
    /// Straight through, or serialised on servers whose updates are not atomic (FerretDB 1.x,
    /// see the module comment).
    writes: Writes,
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
        // The driver connects lazily; asking now makes a wrong address fail at start, not at
        // the first request.
        ping(&db).await?;
        let writes = Writes::for_server(&db).await?;
        let mut store = MongoStore {
            users: db.collection("users"),
            sessions: db.collection("sessions"),
            products: db.collection("products"),
            orders: db.collection("orders"),
            notifications: db.collection("notifications"),
            idempotency: db.collection("idempotency_keys"),
            db,
            ttl_indexes: true,
            writes,
        };
        store.ttl_indexes = store.create_indexes().await?;
        Ok(store)
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// True when this process serialises its writes because the server's updates are not
    /// atomic (FerretDB 1.x).
    pub fn serialises_writes(&self) -> bool {
        self.writes.serialised()
    }

    /// Runs one write as the server needs it (see `write_lock`).
    async fn write<F: IntoFuture>(&self, op: F) -> F::Output {
        self.writes.run(op).await
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
        ping(&self.db).await
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

/// A cheap round trip proving the server answers.
async fn ping(db: &Database) -> StoreResult<()> {
    db.run_command(doc! { "ping": 1 }).await.map_err(db_error)?;
    Ok(())
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
