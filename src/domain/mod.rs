//! Pure types and rules of the order domain. Nothing in here does I/O, so every rule can be
//! unit-tested directly and every layer above can rely on values being valid once constructed.

pub mod address;
pub mod email;
pub mod id;
pub mod money;
pub mod order;
pub mod page;
pub mod product;
pub mod text;
pub mod user;

pub use address::ShippingAddress;
pub use email::Email;
pub use id::Id;
pub use money::Cents;
pub use order::{Order, OrderItem, OrderLine, OrderStatus, Quantity};
pub use page::{Page, PageRequest};
pub use product::{NewProduct, Product, ProductPatch};
pub use user::{Role, User};

/// The service's clock: UTC, truncated to the millisecond, which is the precision MongoDB keeps.
/// Every time the service records comes from here, so a time reads back exactly as it was
/// answered whatever the store.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(3)
}

/// One input field that failed to parse, reported back to the client as is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON path of the offending field, e.g. `items[2].quantity`.
    pub field: String,
    /// Why the value was refused, in words a client developer can act on.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
