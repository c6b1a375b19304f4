//! The one error type of the service's flows. Every actor replies with it; the HTTP layer maps it
//! to a status and a problem+json body in exactly one place (`http::problem`).

use serde::Serialize;

use crate::domain::{FieldError, Id, OrderStatus};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Shortage {
    pub product_id: Id,
    pub product_name: String,
    pub requested: u32,
    pub available: i64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AppError {
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("invalid email or password")]
    InvalidCredentials,
    /// Missing, malformed, expired or revoked token; the text says which, without secrets.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Too many login attempts; try again after the given time.
    #[error("too many login attempts")]
    RateLimited { retry_after: std::time::Duration },
    #[error("this action needs the admin role")]
    Forbidden,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("unknown products")]
    UnknownProducts(Vec<Id>),
    #[error("not enough stock")]
    InsufficientStock(Vec<Shortage>),
    /// An `Idempotency-Key` came back with a different request body.
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("the order is {current:?} and can not be {action}")]
    InvalidTransition {
        current: OrderStatus,
        action: &'static str,
    },
    /// Too much work in flight: this request was shed before it changed anything.
    #[error("the service is overloaded")]
    Overloaded,
    /// A backend did not answer; the name says which (never its address or credentials).
    #[error("{0} is unavailable")]
    Unavailable(&'static str),
    /// Something that should not happen; the text is logged, never sent to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        AppError::Internal(e.to_string())
    }

    pub fn field(field: &str, message: impl Into<String>) -> Self {
        AppError::Validation(vec![FieldError::new(field, message)])
    }
}

/// What a backend call can fail with. Backends speak only this; actors turn it into `AppError`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The backend could not be reached or timed out: worth a retry, and a 503 to the client.
    #[error("{backend} unavailable: {detail}")]
    Unavailable {
        backend: &'static str,
        detail: String,
    },
    /// A uniqueness constraint refused the write.
    #[error("duplicate key")]
    Duplicate,
    #[error("{backend} error: {detail}")]
    Other {
        backend: &'static str,
        detail: String,
    },
}

impl BackendError {
    /// True for failures of the backend itself; false for answers such as a duplicate key.
    pub fn is_fault(&self) -> bool {
        !matches!(self, BackendError::Duplicate)
    }

    pub fn unavailable(backend: &'static str, e: impl std::fmt::Display) -> Self {
        BackendError::Unavailable {
            backend,
            detail: e.to_string(),
        }
    }
    pub fn other(backend: &'static str, e: impl std::fmt::Display) -> Self {
        BackendError::Other {
            backend,
            detail: e.to_string(),
        }
    }
}

impl From<BackendError> for AppError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Unavailable { backend, .. } => AppError::Unavailable(backend),
            other => AppError::Internal(other.to_string()),
        }
    }
}
