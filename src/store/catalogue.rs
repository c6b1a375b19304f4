//! Products and their stock. Stock is taken only by `reserve_stock` (every line of an order or
//! none, with conditional decrements, so concurrent orders never oversell) and given back by
//! `release_stock` or by the order's own transition to failed or cancelled (see
//! [`super::Orders::transition_order`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;
use crate::domain::{Id, NewProduct, OrderLine, PageRequest, Product, ProductPatch};
use crate::error::Shortage;

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

    /// Takes stock for every line, or for none.
    async fn reserve_stock(&self, lines: &[OrderLine]) -> StoreResult<ReserveOutcome>;

    /// Adds the lines' quantities back to stock: the compensation for a reservation whose
    /// order could not be stored. (Orders that fail or are cancelled return their stock through
    /// `Orders::transition_order` instead, which makes that exactly-once.)
    async fn release_stock(&self, lines: &[OrderLine]) -> StoreResult<()>;
}
