//! The system of record, cut along the domain's aggregates: one narrow trait each, so an actor
//! holds only the part of the store it works on, and a new query has one obvious home.
//!
//! - [`Accounts`] (`accounts.rs`): users and their sessions (refresh-token families). Used by
//!   `AuthActor` and the `Authenticator`; `OrderActor` reads the customer an email goes to.
//! - [`Catalogue`] (`catalogue.rs`): products and their stock, reserved and released. Used by
//!   `InventoryActor`.
//! - [`Orders`] (`orders.rs`): orders, their status transitions, email claims and outbox
//!   flags. Used by `OrderActor` and `EnqueuedMarks`.
//! - [`Idempotency`] (`idempotency.rs`): stored answers to `Idempotency-Key` requests. Used by
//!   `OrderActor`.
//! - [`Retention`] (`retention.rs`): deletes expired sessions and old email records, on the
//!   retention sweep's schedule.
//! - [`StoreHealth`] (here): a round trip for `/ready`, and whether the database is empty
//!   (seeding at start).
//!
//! Why this cut: each trait is what one consistency rule needs in one place. Stock is reserved
//! all or none within the catalogue. An order's status moves by conditional updates, and the
//! transition to failed or cancelled gives the order's stock back in the same step, so that
//! return lives with the orders (it is what makes it exactly-once) even though it writes
//! products. Notification claims and outbox flags are per order and per status, so they are
//! orders too. Idempotency records belong to no aggregate (they hold an answer, not a domain
//! value), and users and sessions change together at login and logout.
//!
//! Each backend is one type implementing every trait: `sqlite/` and `mongo/`, with one file
//! per trait (`accounts.rs`, `catalogue.rs`, `orders.rs`, `idempotency.rs`) beside the shared
//! mechanics (connections, schema, documents, error mapping). [`Stores`] hands out one backend
//! as the five trait objects, built once per process.
//!
//! Shaped for MongoDB's semantics as much as SQLite's: no operation needs a multi-document
//! transaction. Stock moves only through `reserve_stock` (all lines or none, conditional
//! decrements) and through order transitions that return stock, and every status change is a
//! conditional update on the stored status.
//!
//! Times round-trip at millisecond precision (MongoDB's); the service's clock
//! (`domain::now`) already truncates to it, so what is answered is what is stored.

pub mod accounts;
pub mod catalogue;
pub mod idempotency;
pub mod mongo;
pub mod orders;
pub mod retention;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

pub use accounts::{Accounts, RotateOutcome, Session};
pub use catalogue::{Catalogue, Hold, HoldSweep, ReserveOutcome};
pub use idempotency::{Idempotency, IdempotencyRecord};
pub use orders::{Orders, TransitionOutcome};
pub use retention::{Purged, Retention};

use crate::error::BackendError;

pub type StoreResult<T> = Result<T, BackendError>;

/// What the process asks of the store as a whole rather than of one aggregate.
#[async_trait]
pub trait StoreHealth: Send + Sync + 'static {
    /// Cheap round trip proving the store answers, for `/ready`.
    async fn ping(&self) -> StoreResult<()>;

    /// True when no user exists yet (a fresh database, seeded in development).
    async fn is_empty(&self) -> StoreResult<bool>;
}

/// One store backend, handed out trait by trait. Cloning is cheap: every field points at the
/// same backend (and its connections).
#[derive(Clone)]
pub struct Stores {
    pub accounts: Arc<dyn Accounts>,
    pub catalogue: Arc<dyn Catalogue>,
    pub orders: Arc<dyn Orders>,
    pub idempotency: Arc<dyn Idempotency>,
    pub health: Arc<dyn StoreHealth>,
    /// Deletes what is past its use (`crate::retention`).
    pub retention: Arc<dyn Retention>,
}

impl Stores {
    /// Every part of the store, served by `backend`.
    pub fn new<B>(backend: B) -> Stores
    where
        B: Accounts + Catalogue + Orders + Idempotency + StoreHealth + Retention,
    {
        let backend = Arc::new(backend);
        Stores {
            accounts: backend.clone(),
            catalogue: backend.clone(),
            orders: backend.clone(),
            idempotency: backend.clone(),
            health: backend.clone(),
            retention: backend,
        }
    }
}
