//! The order aggregate. Its status changes only through the transitions allowed by
//! [`OrderStatus::can_become`]; stores apply each transition as a conditional update on the
//! stored status, so a duplicate or late message can never move an order twice.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Type};

use super::{text, Cents, FieldError, Id, ShippingAddress};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Pending,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 5] = [
        OrderStatus::Pending,
        OrderStatus::Processing,
        OrderStatus::Completed,
        OrderStatus::Failed,
        OrderStatus::Cancelled,
    ];

    /// The whole state machine: pending → processing → completed | failed; pending → cancelled.
    pub fn can_become(self, next: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (Pending, Processing)
                | (Pending, Cancelled)
                | (Processing, Completed)
                | (Processing, Failed)
        )
    }

    /// No transition leaves a terminal status.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderStatus::Completed | OrderStatus::Failed | OrderStatus::Cancelled
        )
    }

    /// Leaving pending for one of these gives the reserved stock back.
    pub fn returns_stock(self) -> bool {
        matches!(self, OrderStatus::Failed | OrderStatus::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Processing => "processing",
            OrderStatus::Completed => "completed",
            OrderStatus::Failed => "failed",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<OrderStatus> {
        OrderStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// How many units of one product; bounded so one line can not drain a warehouse by typo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quantity(u32);

pub const MAX_QUANTITY: u32 = 1000;
pub const MAX_ITEMS: usize = 100;

impl Quantity {
    pub fn parse(value: i64) -> Result<Self, String> {
        if (1..=i64::from(MAX_QUANTITY)).contains(&value) {
            Ok(Quantity(value as u32))
        } else {
            Err(format!("must be a whole number from 1 to {MAX_QUANTITY}"))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// What [`Quantity::parse`] accepts.
    pub fn schema() -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(MAX_QUANTITY))
            .examples([serde_json::json!(1)])
    }
}

/// One requested line, after parsing: which product and how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderLine {
    pub product_id: Id,
    pub quantity: Quantity,
}

/// Parses the requested lines: 1..=100 of them; the same product twice is merged into one
/// line so stock is checked against the real total.
pub fn parse_lines(
    raw: Vec<(Option<String>, Option<i64>)>,
    errors: &mut Vec<FieldError>,
) -> Vec<OrderLine> {
    if raw.is_empty() {
        errors.push(FieldError::new("items", "must contain at least one item"));
        return vec![];
    }
    if raw.len() > MAX_ITEMS {
        errors.push(FieldError::new(
            "items",
            format!("must contain at most {MAX_ITEMS} items"),
        ));
        return vec![];
    }
    let mut lines: Vec<OrderLine> = Vec::with_capacity(raw.len());
    for (i, (product_id, quantity)) in raw.into_iter().enumerate() {
        let pid = match product_id {
            None => {
                errors.push(FieldError::new(
                    format!("items[{i}].productId"),
                    "is required",
                ));
                None
            }
            Some(s) => s
                .parse::<Id>()
                .map_err(|m| errors.push(FieldError::new(format!("items[{i}].productId"), m)))
                .ok(),
        };
        let qty = match quantity {
            None => {
                errors.push(FieldError::new(
                    format!("items[{i}].quantity"),
                    "is required",
                ));
                None
            }
            Some(q) => Quantity::parse(q)
                .map_err(|m| errors.push(FieldError::new(format!("items[{i}].quantity"), m)))
                .ok(),
        };
        let (Some(product_id), Some(quantity)) = (pid, qty) else {
            continue;
        };
        match lines.iter_mut().find(|l| l.product_id == product_id) {
            Some(existing) => {
                match Quantity::parse(i64::from(existing.quantity.get() + quantity.get())) {
                    Ok(sum) => existing.quantity = sum,
                    Err(_) => errors.push(FieldError::new(
                        format!("items[{i}].quantity"),
                        format!(
                            "total quantity of product {product_id} must be at most {MAX_QUANTITY}"
                        ),
                    )),
                }
            }
            None => lines.push(OrderLine {
                product_id,
                quantity,
            }),
        }
    }
    lines
}

/// A stable digest of what an order request asks for, to recognise the same request when an
/// idempotency key comes back.
pub fn request_fingerprint(
    lines: &[OrderLine],
    address: &ShippingAddress,
    payment_method: &str,
) -> String {
    use sha2::{Digest, Sha256};
    let canonical = serde_json::json!({
        "items": lines.iter().map(|l| (l.product_id.to_string(), l.quantity.get())).collect::<Vec<_>>(),
        "shippingAddress": address,
        "paymentMethod": payment_method,
    });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

const MAX_PAYMENT_METHOD_LEN: usize = 50;

pub fn parse_payment_method(raw: &str) -> Result<String, String> {
    text::bounded(raw, 1, MAX_PAYMENT_METHOD_LEN)
}

pub fn payment_method_schema() -> ObjectBuilder {
    text::schema(MAX_PAYMENT_METHOD_LEN).examples([serde_json::json!("credit_card")])
}

/// A line of a placed order, with the product's name and price as they were when ordered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderItem {
    pub product_id: Id,
    pub product_name: String,
    /// Unit price in cents at order time.
    pub unit_price: Cents,
    #[schema(value_type = u32, minimum = 1, maximum = 1000)]
    pub quantity: Quantity,
    /// `unitPrice × quantity`, in cents.
    pub line_total: Cents,
}

impl OrderItem {
    pub fn new(
        product_id: Id,
        product_name: String,
        unit_price: Cents,
        quantity: Quantity,
    ) -> Self {
        // Bounded by MAX_UNIT_PRICE × MAX_QUANTITY, far inside i64.
        let line_total = unit_price
            .times(quantity.get())
            .expect("bounded line total");
        OrderItem {
            product_id,
            product_name,
            unit_price,
            quantity,
            line_total,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: Id,
    pub user_id: Id,
    pub items: Vec<OrderItem>,
    pub shipping_address: ShippingAddress,
    #[schema(example = "credit_card")]
    pub payment_method: String,
    pub status: OrderStatus,
    /// Sum of the line totals, in cents.
    pub total_amount: Cents,
    /// Why a failed order failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Order {
    /// A new pending order from items whose stock has just been reserved.
    pub fn place(
        user_id: Id,
        items: Vec<OrderItem>,
        shipping_address: ShippingAddress,
        payment_method: String,
        now: DateTime<Utc>,
    ) -> Order {
        let total_amount = items
            .iter()
            .try_fold(Cents::ZERO, |acc, i| acc.plus(i.line_total))
            .expect("bounded order total");
        Order {
            id: Id::new(),
            user_id,
            items,
            shipping_address,
            payment_method,
            status: OrderStatus::Pending,
            total_amount,
            failure_reason: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// The reserved quantities, for giving stock back.
    pub fn reserved_lines(&self) -> Vec<OrderLine> {
        self.items
            .iter()
            .map(|i| OrderLine {
                product_id: i.product_id,
                quantity: i.quantity,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus::*;

    #[test]
    fn state_machine_allows_exactly_the_documented_transitions() {
        let allowed = [
            (Pending, Processing),
            (Pending, Cancelled),
            (Processing, Completed),
            (Processing, Failed),
        ];
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
    }

    #[test]
    fn terminal_states_have_no_way_out() {
        for s in OrderStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            assert!(OrderStatus::ALL.iter().all(|t| !s.can_become(*t)));
        }
    }

    #[test]
    fn quantity_bounds() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(1001).is_err());
        assert_eq!(Quantity::parse(1000).unwrap().get(), 1000);
    }

    #[test]
    fn merges_repeated_products_and_reports_every_bad_line() {
        let a = Id::new().to_string();
        let mut errors = vec![];
        let lines = parse_lines(
            vec![
                (Some(a.clone()), Some(2)),
                (Some(a.clone()), Some(3)),
                (Some("nope".into()), Some(1)),
                (None, Some(0)),
            ],
            &mut errors,
        );
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].quantity.get(), 5);
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "items[2].productId",
                "items[3].productId",
                "items[3].quantity"
            ]
        );
    }

    #[test]
    fn totals_are_sums_of_line_totals() {
        let address = ShippingAddress {
            street: "s".into(),
            city: "c".into(),
            state: "st".into(),
            zip_code: "z".into(),
            country: "co".into(),
        };
        let items = vec![
            OrderItem::new(
                Id::new(),
                "a".into(),
                Cents::from_stored(250),
                Quantity::parse(4).unwrap(),
            ),
            OrderItem::new(
                Id::new(),
                "b".into(),
                Cents::from_stored(199),
                Quantity::parse(1).unwrap(),
            ),
        ];
        let order = Order::place(Id::new(), items, address, "card".into(), Utc::now());
        assert_eq!(order.items[0].line_total.value(), 1000);
        assert_eq!(order.total_amount.value(), 1199);
        assert_eq!(order.status, Pending);
    }
}
