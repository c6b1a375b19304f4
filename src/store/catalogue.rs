//! Products and their stock. Stock is taken only by `reserve_stock` (every line of an order or
//! none, with conditional decrements, so concurrent orders never oversell) and given back by
//! `release_stock` or by the order's own transition to failed or cancelled (see
//! [`super::Orders::transition_order`]).
//!
//! Every reservation is tagged with a [`Hold`], recorded on each product it takes from in the
//! same atomic step as the decrement. So the stock a reservation took is recognisable by its
//! order even when nobody heard the reply: a reservation whose reply was lost, one cut by
//! `BACKEND_TIMEOUT` half-way, a release that failed, a process killed before the order was
//! stored. The hold is forgotten once the order is stored (`clear_holds`); a hold still there
//! past a bound whose order was not stored with it is given back by `sweep_holds`, exactly once
//! (the give-back and the removal of the hold are one atomic step). An order is stored with
//! the hold whose time is its `created_at`: another attempt at the same order id (a retry with
//! the same `Idempotency-Key`) has a hold of another time, given back though the order exists. The bound must outlast any write
//! still in flight: an order insert that lands after the sweep gave its stock back is the one
//! case this does not cover.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;
use crate::domain::{Id, NewProduct, OrderLine, PageRequest, Product, ProductPatch};
use crate::error::Shortage;

/// One reservation's tag, recorded on every product it takes from. `id` is this reservation's
/// own (two requests racing for one idempotency key reserve under one order id, and each
/// gives back only its own); `at` dates it for the sweeper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hold {
    pub id: Id,
    pub order_id: Id,
    pub at: DateTime<Utc>,
}

impl Hold {
    /// A fresh hold for a reservation made now on behalf of `order_id`.
    pub fn new(order_id: Id) -> Hold {
        Hold {
            id: Id::new(),
            order_id,
            at: crate::domain::now(),
        }
    }
}

/// What one sweep of stale holds did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HoldSweep {
    /// Lines given back: their order was never stored with them.
    pub returned: u64,
    /// Lines forgotten: their order is stored with them (its clearing was lost).
    pub cleared: u64,
}

#[derive(Debug)]
pub enum ReserveOutcome {
    /// Stock was taken for every line; the products as they were at that moment.
    Reserved(Vec<(Product, OrderLine)>),
    UnknownProducts(Vec<Id>),
    Insufficient(Vec<Shortage>),
}

#[async_trait]
pub trait Catalogue: Send + Sync + 'static {
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

    /// Takes stock for every line, or for none, recording `hold` on each product taken from.
    /// On an error, what was taken (if anything) is left to `sweep_holds`.
    async fn reserve_stock(&self, lines: &[OrderLine], hold: &Hold) -> StoreResult<ReserveOutcome>;

    /// Gives back what `hold` took of these lines and is still held, and forgets it: the
    /// compensation for a reservation whose order will not be stored. Idempotent, and safe
    /// beside the sweeper: each line comes back at most once. (Orders that fail or are
    /// cancelled return their stock through `Orders::transition_order` instead.)
    async fn release_stock(&self, lines: &[OrderLine], hold: &Hold) -> StoreResult<()>;

    /// Forgets the holds of orders that are stored (their stock stays taken), in one call.
    async fn clear_holds(&self, held: &[(Hold, Vec<OrderLine>)]) -> StoreResult<()>;

    /// For up to `limit` holds made before `before`: gives back the lines of those whose order
    /// was not stored with them (absent, or created at another time than the hold's) and
    /// forgets the rest. Safe from several processes at once.
    async fn sweep_holds(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<HoldSweep>;
}
