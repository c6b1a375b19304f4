//! The system of record: users, sessions, products, orders, idempotency records.
//!
//! Shaped for MongoDB's semantics as much as SQLite's: no operation needs a multi-document
//! transaction. Stock moves only through `reserve_stock` (all lines or none, conditional
//! decrements) and through order transitions that return stock, and every status change is a
//! conditional update on the stored status.
//!
//! Times round-trip at millisecond precision (MongoDB's); the service's clock
//! (`domain::now`) already truncates to it, so what is answered is what is stored.

pub mod mongo;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::future::{join_all, try_join_all};

use crate::domain::{
    Email, Id, NewProduct, Order, OrderLine, OrderStatus, PageRequest, Product, ProductPatch, User,
};
use crate::error::{BackendError, Shortage};

pub type StoreResult<T> = Result<T, BackendError>;

/// A login's refresh-token family. Each refresh replaces `current_jti`; presenting an older one
/// is reuse of a stolen token and revokes the whole family.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: Id,
    pub user_id: Id,
    pub current_jti: String,
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum RotateOutcome {
    Rotated,
    /// The session is gone, revoked or expired.
    Inactive,
    /// The presented token was already spent: the caller must revoke the family.
    Reused,
}

#[derive(Debug)]
pub enum ReserveOutcome {
    /// Stock was taken for every line; the products as they were at that moment.
    Reserved(Vec<(Product, OrderLine)>),
    UnknownProducts(Vec<Id>),
    Insufficient(Vec<Shortage>),
}

/// The outcome of a conditional status change.
#[derive(Debug)]
pub enum TransitionOutcome {
    /// The stored status was `from` and is now `to`; the order as it now is.
    Moved(Order),
    /// The stored status was not `from`; nothing changed. The order as it is, if it exists.
    Refused(Option<Order>),
}

/// A stored answer to an idempotent request.
#[derive(Clone, Debug)]
pub struct IdempotencyRecord {
    pub request_hash: String,
    pub status: u16,
    pub body: String,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip proving the store answers, for `/ready`.
    async fn ping(&self) -> StoreResult<()>;

    async fn insert_user(&self, user: &User) -> StoreResult<()>;
    async fn find_user(&self, id: Id) -> StoreResult<Option<User>>;
    /// `find_user` for each of `ids`, answered in the same order (one read when embedded).
    async fn find_users(&self, ids: &[Id]) -> StoreResult<Vec<Option<User>>> {
        try_join_all(ids.iter().map(|&id| self.find_user(id))).await
    }
    async fn find_user_by_email(&self, email: &Email) -> StoreResult<Option<User>>;

    async fn insert_session(&self, session: &Session) -> StoreResult<()>;
    async fn find_session(&self, id: Id) -> StoreResult<Option<Session>>;
    /// Replaces `presented_jti` by `next_jti` if and only if it is the current one.
    async fn rotate_session(
        &self,
        id: Id,
        presented_jti: &str,
        next_jti: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<RotateOutcome>;
    async fn revoke_session(&self, id: Id) -> StoreResult<()>;

    async fn insert_product(
        &self,
        product: &NewProduct,
        id: Id,
        now: DateTime<Utc>,
    ) -> StoreResult<Product>;
    async fn find_product(&self, id: Id) -> StoreResult<Option<Product>>;
    async fn list_products(&self, page: PageRequest) -> StoreResult<(Vec<Product>, u64)>;
    async fn update_product(
        &self,
        id: Id,
        patch: &ProductPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Product>>;

    /// Takes stock for every line, or for none.
    async fn reserve_stock(&self, lines: &[OrderLine]) -> StoreResult<ReserveOutcome>;

    /// Adds the lines' quantities back to stock: the compensation for a reservation whose
    /// order could not be stored. (Orders that fail or are cancelled return their stock through
    /// `transition_order` instead, which makes that exactly-once.)
    async fn release_stock(&self, lines: &[OrderLine]) -> StoreResult<()>;

    async fn insert_order(&self, order: &Order) -> StoreResult<()>;
    async fn find_order(&self, id: Id) -> StoreResult<Option<Order>>;
    /// The user's orders, newest first, and how many there are in all.
    async fn list_orders(&self, user_id: Id, page: PageRequest) -> StoreResult<(Vec<Order>, u64)>;
    /// Moves the order from `from` to `to` if it is still in `from`. When `to` returns stock
    /// (failed, cancelled), the order's reserved quantities go back in the same step, so stock
    /// is returned exactly once per order.
    async fn transition_order(
        &self,
        id: Id,
        from: OrderStatus,
        to: OrderStatus,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<TransitionOutcome>;
    /// Records that the customer was told about `status`, if nobody recorded it yet. Returns
    /// false when it was recorded before: the email must not be sent again.
    async fn claim_notification(&self, order_id: Id, status: OrderStatus) -> StoreResult<bool>;
    /// `transition_order` (without a reason) for each of `ids`, answered in the same order. A
    /// worker processes the messages of one receive together through this; the embedded store
    /// applies them in one write instead of one write each.
    async fn transition_orders(
        &self,
        ids: &[Id],
        from: OrderStatus,
        to: OrderStatus,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<TransitionOutcome>> {
        try_join_all(
            ids.iter()
                .map(|&id| self.transition_order(id, from, to, None, now)),
        )
        .await
    }
    /// `claim_notification` for each claim, answered in the same order: all are made or none
    /// (the embedded store makes them in one write). None, because a caller that sees an error
    /// sends no email, so a claim made meanwhile would stop every later attempt from sending it.
    async fn claim_notifications(&self, claims: &[(Id, OrderStatus)]) -> StoreResult<Vec<bool>> {
        let results = join_all(
            claims
                .iter()
                .map(|&(order_id, status)| self.claim_notification(order_id, status)),
        )
        .await;
        if let Some(error) = results.iter().find_map(|r| r.as_ref().err()).cloned() {
            for (&(order_id, status), result) in claims.iter().zip(&results) {
                if matches!(result, Ok(true)) {
                    let _ = self.release_notification(order_id, status).await;
                }
            }
            return Err(error);
        }
        Ok(results.into_iter().flatten().collect())
    }
    /// Gives a notification claim back after the email could not be sent.
    async fn release_notification(&self, order_id: Id, status: OrderStatus) -> StoreResult<()>;

    /// Marks the order's queue message as sent (the outbox flag).
    async fn mark_enqueued(&self, order_id: Id) -> StoreResult<()>;
    /// `mark_enqueued` for each of `order_ids` (one write when embedded, one update on MongoDB).
    async fn mark_enqueued_many(&self, order_ids: &[Id]) -> StoreResult<()> {
        for &id in order_ids {
            self.mark_enqueued(id).await?;
        }
        Ok(())
    }
    /// Pending orders whose queue message was never confirmed sent, older than `before`.
    async fn unenqueued_orders(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Id>>;

    async fn find_idempotency(
        &self,
        user_id: Id,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>>;
    /// Stores the answer unless one exists for this key already; returns the one that won.
    async fn save_idempotency(
        &self,
        user_id: Id,
        key: &str,
        record: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<IdempotencyRecord>;

    /// True when no user exists yet (a fresh database, seeded in development).
    async fn is_empty(&self) -> StoreResult<bool>;
}
