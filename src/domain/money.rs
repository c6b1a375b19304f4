//! Money as integer minor units (cents). Floats never touch an amount: sums and products are
//! checked so an absurd order is refused instead of wrapping around.

use serde::{Deserialize, Serialize};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Cents(i64);

/// The largest price we accept for one unit: 100 million in major units. Bounds every total
/// (100 items × 1000 units × this) well inside `i64`.
pub const MAX_UNIT_PRICE: i64 = 10_000_000_000;

impl Cents {
    pub const ZERO: Cents = Cents(0);

    /// A unit price: non-negative and bounded.
    pub fn price(value: i64) -> Result<Self, String> {
        if value < 0 {
            Err("must not be negative (amounts are integer cents)".into())
        } else if value > MAX_UNIT_PRICE {
            Err(format!("must be at most {MAX_UNIT_PRICE} cents"))
        } else {
            Ok(Cents(value))
        }
    }

    /// Wraps a value read back from storage, which was validated when it was written.
    pub fn from_stored(value: i64) -> Self {
        Cents(value)
    }

    pub fn value(self) -> i64 {
        self.0
    }

    pub fn times(self, quantity: u32) -> Option<Cents> {
        self.0.checked_mul(i64::from(quantity)).map(Cents)
    }

    pub fn plus(self, other: Cents) -> Option<Cents> {
        self.0.checked_add(other.0).map(Cents)
    }

    /// `12.34`, for the human-readable parts of emails only.
    pub fn display_major(self) -> String {
        format!("{}.{:02}", self.0 / 100, (self.0 % 100).abs())
    }
}

impl utoipa::PartialSchema for Cents {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int64,
            )))
            .minimum(Some(0))
            .description(Some("Amount in integer minor units (cents)"))
            .into()
    }
}
impl utoipa::ToSchema for Cents {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refuses_negative_and_huge_prices() {
        assert!(Cents::price(-1).is_err());
        assert!(Cents::price(MAX_UNIT_PRICE + 1).is_err());
        assert_eq!(Cents::price(0).unwrap().value(), 0);
    }

    #[test]
    fn formats_major_units() {
        assert_eq!(Cents::from_stored(1999).display_major(), "19.99");
        assert_eq!(Cents::from_stored(5).display_major(), "0.05");
    }

    proptest! {
        #[test]
        fn line_totals_never_overflow_for_valid_inputs(price in 0..=MAX_UNIT_PRICE, qty in 1u32..=1000) {
            let total = Cents::price(price).unwrap().times(qty).unwrap();
            prop_assert_eq!(total.value(), price * i64::from(qty));
        }
    }
}
