//! The shipping address exactly as the replaced service takes it, each part bounded text.

use serde::{Deserialize, Serialize};

use super::{text, FieldError};

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
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShippingAddressInput {
    #[schema(example = "1 Main St")]
    pub street: Option<String>,
    #[schema(example = "Springfield")]
    pub city: Option<String>,
    #[schema(example = "IL")]
    pub state: Option<String>,
    #[schema(example = "62701")]
    pub zip_code: Option<String>,
    #[schema(example = "US")]
    pub country: Option<String>,
}

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
        let street = part("street", self.street, 200);
        let city = part("city", self.city, 100);
        let state = part("state", self.state, 100);
        let zip_code = part("zipCode", self.zip_code, 20);
        let country = part("country", self.country, 100);
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
