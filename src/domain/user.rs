//! Accounts. The password hash lives here but is never serialised towards a client: the HTTP
//! layer has its own view type.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Type};

use super::{text, Email, Id};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct User {
    pub id: Id,
    pub email: Email,
    pub name: String,
    pub role: Role,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

pub const MIN_PASSWORD_LEN: usize = 8;
/// Argon2 accepts long inputs, but an unbounded one is a cheap way to burn our CPU.
pub const MAX_PASSWORD_LEN: usize = 128;

const MAX_NAME_LEN: usize = 100;

pub fn parse_name(raw: &str) -> Result<String, String> {
    text::bounded(raw, 1, MAX_NAME_LEN)
}

pub fn name_schema() -> ObjectBuilder {
    text::schema(MAX_NAME_LEN).examples([serde_json::json!("Ann")])
}

/// What [`check_new_password`] accepts: a length, counted in characters as JSON Schema counts.
pub fn new_password_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(MIN_PASSWORD_LEN))
        .max_length(Some(MAX_PASSWORD_LEN))
        .description(Some(format!(
            "{MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters, any"
        )))
        .examples([serde_json::json!("correct horse battery")])
}

/// A password chosen at registration. Only the length is ruled on: composition rules push
/// people to weaker, predictable passwords (NIST SP 800-63B).
pub fn check_new_password(raw: &str) -> Result<(), String> {
    let len = raw.chars().count();
    if len < MIN_PASSWORD_LEN {
        Err(format!("must be at least {MIN_PASSWORD_LEN} characters"))
    } else if len > MAX_PASSWORD_LEN {
        Err(format!("must be at most {MAX_PASSWORD_LEN} characters"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_length_is_the_only_rule() {
        assert!(check_new_password("1234567").is_err());
        assert!(check_new_password("12345678").is_ok());
        assert!(check_new_password(&"x".repeat(129)).is_err());
    }

    #[test]
    fn names_must_not_be_blank() {
        assert!(parse_name("   ").is_err());
        assert_eq!(parse_name(" Ann ").unwrap(), "Ann");
    }
}
