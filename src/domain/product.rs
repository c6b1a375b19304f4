//! Catalogue entries. Stock is the quantity still available to order; reservations take from it
//! and cancellations or failures give back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};

use super::money::MAX_UNIT_PRICE;
use super::{text, Cents, FieldError, Id};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub id: Id,
    #[schema(example = "Mechanical keyboard")]
    pub name: String,
    pub description: String,
    /// Unit price in integer cents.
    pub price: Cents,
    /// Units available to order right now.
    pub stock: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub const MAX_STOCK: i64 = 1_000_000_000;

#[derive(Clone, Debug)]
pub struct NewProduct {
    pub name: String,
    pub description: String,
    pub price: Cents,
    pub stock: i64,
}

/// A partial update; `None` leaves the field as it is.
#[derive(Clone, Debug, Default)]
pub struct ProductPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub price: Option<Cents>,
    pub stock: Option<i64>,
}

impl ProductPatch {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.description.is_none()
            && self.price.is_none()
            && self.stock.is_none()
    }
}

const MAX_NAME_LEN: usize = 200;
const MAX_DESCRIPTION_LEN: usize = 2000;

pub fn parse_product_name(raw: &str) -> Result<String, String> {
    text::bounded(raw, 1, MAX_NAME_LEN)
}

pub fn parse_description(raw: &str) -> Result<String, String> {
    text::bounded_multiline(raw, MAX_DESCRIPTION_LEN)
}

/// The schemas of the request fields, as `ProductFields` parses them: name, description, price
/// and stock.
pub fn name_schema() -> ObjectBuilder {
    text::schema(MAX_NAME_LEN).examples([serde_json::json!("Mechanical keyboard")])
}

pub fn description_schema() -> ObjectBuilder {
    text::multiline_schema(MAX_DESCRIPTION_LEN)
        .examples([serde_json::json!("Tenkeyless, brown switches")])
}

pub fn price_schema() -> ObjectBuilder {
    whole_number(0, MAX_UNIT_PRICE)
        .description(Some("Unit price in integer cents"))
        .examples([serde_json::json!(8999)])
}

pub fn stock_schema() -> ObjectBuilder {
    whole_number(0, MAX_STOCK)
        .description(Some("Units available to order"))
        .examples([serde_json::json!(25)])
}

fn whole_number(min: i64, max: i64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(min))
        .maximum(Some(max))
}

pub fn parse_stock(value: i64) -> Result<i64, String> {
    if value < 0 {
        Err("must not be negative".into())
    } else if value > MAX_STOCK {
        Err(format!("must be at most {MAX_STOCK}"))
    } else {
        Ok(value)
    }
}

fn check<T>(errors: &mut Vec<FieldError>, field: &str, parsed: Result<T, String>) -> Option<T> {
    parsed
        .map_err(|m| errors.push(FieldError::new(field, m)))
        .ok()
}

/// Parses the optional fields of a create or update request, collecting every problem.
pub struct ProductFields {
    pub name: Option<String>,
    pub description: Option<String>,
    pub price: Option<i64>,
    pub stock: Option<i64>,
}

impl ProductFields {
    pub fn parse_patch(self) -> Result<ProductPatch, Vec<FieldError>> {
        let mut errors = vec![];
        let patch = ProductPatch {
            name: self
                .name
                .and_then(|n| check(&mut errors, "name", parse_product_name(&n))),
            description: self
                .description
                .and_then(|d| check(&mut errors, "description", parse_description(&d))),
            price: self
                .price
                .and_then(|p| check(&mut errors, "price", Cents::price(p))),
            stock: self
                .stock
                .and_then(|s| check(&mut errors, "stock", parse_stock(s))),
        };
        if errors.is_empty() {
            Ok(patch)
        } else {
            Err(errors)
        }
    }

    pub fn parse_new(self) -> Result<NewProduct, Vec<FieldError>> {
        let mut missing = vec![];
        if self.name.is_none() {
            missing.push(FieldError::new("name", "is required"));
        }
        if self.price.is_none() {
            missing.push(FieldError::new("price", "is required"));
        }
        let patch = self.parse_patch();
        match patch {
            Ok(p) if missing.is_empty() => Ok(NewProduct {
                name: p.name.unwrap_or_default(),
                description: p.description.unwrap_or_default(),
                price: p.price.unwrap_or(Cents::ZERO),
                stock: p.stock.unwrap_or(0),
            }),
            Ok(_) => Err(missing),
            Err(mut e) => {
                missing.append(&mut e);
                Err(missing)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_product_needs_name_and_price() {
        let errs = ProductFields {
            name: None,
            description: None,
            price: None,
            stock: Some(-1),
        }
        .parse_new()
        .unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "price", "stock"]);
    }

    #[test]
    fn patch_keeps_absent_fields_absent() {
        let p = ProductFields {
            name: None,
            description: None,
            price: Some(100),
            stock: None,
        }
        .parse_patch()
        .unwrap();
        assert_eq!(p.price, Some(Cents::from_stored(100)));
        assert!(p.name.is_none() && p.stock.is_none());
    }
}
