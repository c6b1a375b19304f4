//! InventoryActor's inbox: the catalogue and stock reservations.

use actix::Message;

use crate::domain::{Id, NewProduct, OrderLine, Page, PageRequest, Product, ProductPatch};
use crate::error::AppError;

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
}

/// Gives back stock reserved for an order that was never stored (compensation).
#[derive(Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct ReleaseStock {
    pub lines: Vec<OrderLine>,
}
