//! What the MongoDB store keeps: typed mirrors of the stored documents, and their conversions
//! from and to the domain types. Kept apart from the domain types so that renaming a field in
//! the JSON API can never silently change the stored shape. Fields are camelCase, as the
//! replaced Node.js service stored them.

use bson::oid::ObjectId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::errors::BACKEND;
use crate::domain::{
    Cents, Email, Id, Order, OrderItem, OrderLine, OrderStatus, Product, Quantity, Role,
    ShippingAddress, User,
};
use crate::error::BackendError;
use crate::store::{IdempotencyRecord, Session, StoreResult};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UserDoc {
    #[serde(rename = "_id")]
    pub(super) id: ObjectId,
    pub(super) email: String,
    pub(super) name: String,
    pub(super) role: String,
    pub(super) password_hash: String,
    pub(super) created_at: bson::DateTime,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SessionDoc {
    #[serde(rename = "_id")]
    pub(super) id: ObjectId,
    pub(super) user_id: ObjectId,
    pub(super) current_jti: String,
    pub(super) expires_at: bson::DateTime,
    pub(super) revoked: bool,
    pub(super) created_at: bson::DateTime,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ProductDoc {
    #[serde(rename = "_id")]
    pub(super) id: ObjectId,
    pub(super) name: String,
    pub(super) description: String,
    pub(super) price: i64,
    pub(super) stock: i64,
    pub(super) created_at: bson::DateTime,
    pub(super) updated_at: bson::DateTime,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OrderItemDoc {
    pub(super) product_id: ObjectId,
    pub(super) product_name: String,
    pub(super) unit_price: i64,
    pub(super) quantity: i32,
    pub(super) line_total: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AddressDoc {
    pub(super) street: String,
    pub(super) city: String,
    pub(super) state: String,
    pub(super) zip_code: String,
    pub(super) country: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OrderDoc {
    #[serde(rename = "_id")]
    pub(super) id: ObjectId,
    pub(super) user_id: ObjectId,
    pub(super) items: Vec<OrderItemDoc>,
    pub(super) shipping_address: AddressDoc,
    pub(super) payment_method: String,
    pub(super) status: String,
    pub(super) total_amount: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) failure_reason: Option<String>,
    pub(super) created_at: bson::DateTime,
    pub(super) updated_at: bson::DateTime,
    /// Set to false by the transition that must return stock, true once every line is back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) stock_returned: Option<bool>,
    /// Products whose stock this order has claimed to give back (see `return_order_stock`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) returned_products: Vec<ObjectId>,
    /// The batch transition that last moved the order (see `transition_orders`): how a batch
    /// tells the orders it moved from those someone else did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) moved_by: Option<ObjectId>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct IdempotencyDoc {
    /// `"{userId}:{key}"` (see `idempotency`).
    #[serde(rename = "_id")]
    pub(super) id: String,
    pub(super) user_id: ObjectId,
    pub(super) key: String,
    pub(super) request_hash: String,
    pub(super) status: i32,
    pub(super) body: String,
    pub(super) created_at: bson::DateTime,
}

/// An order's outbox entry, keyed by the order's id: stored just before the order, deleted once
/// the queue confirmed the order's message. The outbox pass reads these, never the orders.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OutboxDoc {
    #[serde(rename = "_id")]
    pub(super) order_id: ObjectId,
    pub(super) created_at: bson::DateTime,
}

impl OutboxDoc {
    pub(super) fn for_order(order: &OrderDoc) -> OutboxDoc {
        OutboxDoc {
            order_id: order.id,
            created_at: order.created_at,
        }
    }
}

/// A record of the layout before `_id` keys (`idempotency_keys`), read only: just what a
/// replay needs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LegacyIdempotencyDoc {
    pub(super) request_hash: String,
    pub(super) status: i32,
    pub(super) body: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct IdDoc {
    #[serde(rename = "_id")]
    pub(super) id: ObjectId,
}

// --- Conversions ------------------------------------------------------------------------------
// Stored values are checked again on the way out: a hand-edited or damaged document surfaces as
// an error naming it, instead of an invalid domain value.

pub(super) fn bson_time(t: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(t.timestamp_millis())
}

pub(super) fn chrono_time(t: bson::DateTime) -> Result<DateTime<Utc>, String> {
    DateTime::from_timestamp_millis(t.timestamp_millis())
        .ok_or_else(|| format!("time {t} is out of range"))
}

pub(super) fn corrupt(what: &str, id: ObjectId, problem: impl std::fmt::Display) -> BackendError {
    BackendError::other(BACKEND, format!("stored {what} {id} is invalid: {problem}"))
}

pub(super) fn user_from_doc(d: UserDoc) -> StoreResult<User> {
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

pub(super) fn session_from_doc(d: SessionDoc) -> StoreResult<Session> {
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

pub(super) fn product_from_doc(d: ProductDoc) -> StoreResult<Product> {
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

pub(super) fn order_from_doc(d: OrderDoc) -> StoreResult<Order> {
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

pub(super) fn order_to_doc(o: &Order) -> OrderDoc {
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
        stock_returned: None,
        returned_products: vec![],
        moved_by: None,
    }
}

pub(super) fn idempotency_from_doc(d: IdempotencyDoc) -> StoreResult<IdempotencyRecord> {
    stored_answer(d.status, d.request_hash, d.body)
}

pub(super) fn legacy_idempotency_from_doc(
    d: LegacyIdempotencyDoc,
) -> StoreResult<IdempotencyRecord> {
    stored_answer(d.status, d.request_hash, d.body)
}

fn stored_answer(
    status: i32,
    request_hash: String,
    body: String,
) -> StoreResult<IdempotencyRecord> {
    Ok(IdempotencyRecord {
        status: u16::try_from(status).map_err(|_| {
            BackendError::other(
                BACKEND,
                format!("stored idempotency record has status {status}"),
            )
        })?,
        request_hash,
        body,
    })
}

/// Sums the quantities per product, keeping the order in which products first appear, so one
/// conditional update checks a product against everything the request wants of it.
pub(super) fn merge_quantities(
    lines: impl IntoIterator<Item = (ObjectId, i64)>,
) -> Vec<(ObjectId, i64)> {
    let mut merged: Vec<(ObjectId, i64)> = vec![];
    for (id, qty) in lines {
        match merged.iter_mut().find(|(m, _)| *m == id) {
            Some((_, total)) => *total = total.saturating_add(qty),
            None => merged.push((id, qty)),
        }
    }
    merged
}

pub(super) fn order_line_quantities(lines: &[OrderLine]) -> Vec<(ObjectId, i64)> {
    merge_quantities(
        lines
            .iter()
            .map(|l| (l.product_id.object_id(), i64::from(l.quantity.get()))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
