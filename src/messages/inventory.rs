//! InventoryActor's inbox: the catalogue and stock reservations.

use actix::Message;

use crate::domain::{Id, NewProduct, OrderLine, Page, PageRequest, Product, ProductPatch};
use crate::error::AppError;
use crate::store::Hold;

#[derive(Message)]
#[rtype(result = "Result<Page<Product>, AppError>")]
pub struct ListProducts {
    pub page: PageRequest,
}

#[derive(Message)]
#[rtype(result = "Result<Product, AppError>")]
pub struct GetProduct {
    pub id: Id,
}

#[derive(Message)]
#[rtype(result = "Result<Product, AppError>")]
pub struct CreateProduct {
    pub product: NewProduct,
}

#[derive(Message)]
#[rtype(result = "Result<Product, AppError>")]
pub struct UpdateProduct {
    pub id: Id,
    pub patch: ProductPatch,
}

/// Takes stock for every line, or for none. Replies with each product as it was when reserved
/// (its name and price are what the order snapshots).
#[derive(Message)]
#[rtype(result = "Result<Vec<(Product, OrderLine)>, AppError>")]
pub struct ReserveStock {
    pub lines: Vec<OrderLine>,
    /// Recorded on every product taken from, so the stock is recognisable by its order.
    pub hold: Hold,
}

/// Gives back what `hold` took for an order that will not be stored (compensation).
#[derive(Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct ReleaseStock {
    pub lines: Vec<OrderLine>,
    pub hold: Hold,
}

/// The order of `hold` is stored: its hold is forgotten, in the background and batched with
/// others (the stock stays taken).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClearHold {
    pub hold: Hold,
    pub lines: Vec<OrderLine>,
}
