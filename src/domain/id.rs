//! Identifiers: 24-hex ObjectId strings on every backend, so ids look the same whether the data
//! lives in SQLite or MongoDB and clients never have to care which.

use std::fmt;
use std::str::FromStr;

use bson::oid::ObjectId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(ObjectId);

impl Id {
    /// A fresh id; ObjectIds embed their creation second, so ids sort roughly by age.
    pub fn new() -> Self {
        Id(ObjectId::new())
    }

    pub fn from_object_id(oid: ObjectId) -> Self {
        Id(oid)
    }

    pub fn object_id(&self) -> ObjectId {
        self.0
    }

    /// Builds a stable id from a small number: used for seed data so re-seeding is a no-op.
    pub fn fixed(n: u32) -> Self {
        let mut bytes = [0u8; 12];
        bytes[0..4].copy_from_slice(&0x6500_0000u32.to_be_bytes());
        bytes[8..12].copy_from_slice(&n.to_be_bytes());
        Id(ObjectId::from_bytes(bytes))
    }
}

impl Default for Id {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for Id {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 24 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("must be a 24-character hexadecimal id".into());
        }
        ObjectId::parse_str(s.to_ascii_lowercase())
            .map(Id)
            .map_err(|_| "must be a 24-character hexadecimal id".into())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.0.to_hex())
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_hex())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Id {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[0-9a-fA-F]{24}$"))
            // Also as lengths: a regex `$` may match before a final line break in some dialects.
            .min_length(Some(24))
            .max_length(Some(24))
            // The first product of the demo catalogue, so an example request finds something.
            .examples([serde_json::json!(Id::fixed(101).to_string())])
            .into()
    }
}
impl utoipa::ToSchema for Id {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_its_string_form() {
        let id = Id::new();
        assert_eq!(id.to_string().parse::<Id>().unwrap(), id);
    }

    #[test]
    fn refuses_anything_but_24_hex_digits() {
        for bad in [
            "",
            "abc",
            "zzzzzzzzzzzzzzzzzzzzzzzz",
            "65a1f0c2e4b0a1b2c3d4e5f",
            "65a1f0c2e4b0a1b2c3d4e5f6a",
        ] {
            assert!(bad.parse::<Id>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn fixed_ids_are_stable_and_distinct() {
        assert_eq!(Id::fixed(1), Id::fixed(1));
        assert_ne!(Id::fixed(1), Id::fixed(2));
    }
}
