//! The shipping address exactly as the replaced service takes it, each part bounded text.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema};
use utoipa::openapi::RefOr;

use super::{text, FieldError};

const MAX_STREET: usize = 200;
const MAX_CITY: usize = 100;
const MAX_STATE: usize = 100;
const MAX_ZIP_CODE: usize = 20;
const MAX_COUNTRY: usize = 100;

/// Each part: its JSON name, its longest length and an example, for the schema.
const PARTS: [(&str, usize, &str); 5] = [
    ("street", MAX_STREET, "1 Main St"),
    ("city", MAX_CITY, "Springfield"),
    ("state", MAX_STATE, "IL"),
    ("zipCode", MAX_ZIP_CODE, "62701"),
    ("country", MAX_COUNTRY, "US"),
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShippingAddress {
    pub street: String,
    pub city: String,
    pub state: String,
    pub zip_code: String,
    pub country: String,
}

/// The address as it arrives, before any check.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShippingAddressInput {
    pub street: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub zip_code: Option<String>,
    pub country: Option<String>,
}

/// Every part required, each bounded text, as [`ShippingAddressInput::parse`] takes them.
impl utoipa::PartialSchema for ShippingAddressInput {
    fn schema() -> RefOr<Schema> {
        PARTS
            .iter()
            .fold(ObjectBuilder::new(), |object, &(name, max, example)| {
                let part = text::schema(max).examples([serde_json::json!(example)]);
                object.property(name, part).required(name)
            })
            .into()
    }
}
impl utoipa::ToSchema for ShippingAddressInput {}

impl ShippingAddressInput {
    /// Parses every part, collecting all problems so the client can fix them in one go.
    pub fn parse(self, prefix: &str, errors: &mut Vec<FieldError>) -> Option<ShippingAddress> {
        let mut part = |name: &str, value: Option<String>, max: usize| -> Option<String> {
            let field = format!("{prefix}.{name}");
            match value {
                None => {
                    errors.push(FieldError::new(field, "is required"));
                    None
                }
                Some(v) => text::bounded(&v, 1, max)
                    .map_err(|m| errors.push(FieldError::new(field, m)))
                    .ok(),
            }
        };
        let street = part("street", self.street, MAX_STREET);
        let city = part("city", self.city, MAX_CITY);
        let state = part("state", self.state, MAX_STATE);
        let zip_code = part("zipCode", self.zip_code, MAX_ZIP_CODE);
        let country = part("country", self.country, MAX_COUNTRY);
        Some(ShippingAddress {
            street: street?,
            city: city?,
            state: state?,
            zip_code: zip_code?,
            country: country?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> ShippingAddressInput {
        ShippingAddressInput {
            street: Some("1 Main St".into()),
            city: Some("Springfield".into()),
            state: Some("IL".into()),
            zip_code: Some("62701".into()),
            country: Some("US".into()),
        }
    }

    #[test]
    fn parses_a_complete_address() {
        let mut errors = vec![];
        assert!(full().parse("shippingAddress", &mut errors).is_some());
        assert!(errors.is_empty());
    }

    #[test]
    fn names_every_missing_or_empty_part() {
        let mut errors = vec![];
        let input = ShippingAddressInput {
            city: Some("  ".into()),
            zip_code: None,
            ..full()
        };
        assert!(input.parse("shippingAddress", &mut errors).is_none());
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["shippingAddress.city", "shippingAddress.zipCode"]);
    }
}
