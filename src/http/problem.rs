//! Errors as `application/problem+json` (RFC 9457), mapped from `AppError` in exactly this one
//! place. Each problem has a stable machine-readable `code`; client mistakes are 4xx with a
//! detail saying what is wrong; internal details are logged, never sent.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::context;
use crate::domain::FieldError;
use crate::error::AppError;

/// The media type of every error answer (and of the document's error responses).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// What the HTTP layer can fail with: the flows' errors plus the protocol's own.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("unsupported media type")]
    UnsupportedMediaType(String),
    #[error("payload too large")]
    PayloadTooLarge(usize),
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
}

/// The problem document, as the OpenAPI document describes it (`error_response` writes it).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// `urn:order-service:problem:` and the code.
    #[schema(example = "urn:order-service:problem:validation_failed")]
    pub r#type: String,
    #[schema(example = "Invalid request")]
    pub title: String,
    /// The HTTP status.
    #[schema(example = 400, minimum = 400, maximum = 599)]
    pub status: u16,
    pub detail: String,
    /// Stable, machine-readable error code.
    #[schema(example = "validation_failed")]
    pub code: String,
    /// The request path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Every invalid field, for `validation_failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// The unknown products, for `product_not_found`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<crate::domain::Id>>)]
    pub product_ids: Option<Vec<String>>,
    /// Every short item, for `insufficient_stock`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shortages: Option<Vec<crate::error::Shortage>>,
    /// The order's status, for `invalid_order_state`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_status: Option<crate::domain::OrderStatus>,
    /// Seconds to wait, for `rate_limited` (also in `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub retry_after: Option<u64>,
}

struct Parts {
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    detail: String,
    extra: Map<String, Value>,
}

impl ApiError {
    fn parts(&self) -> Parts {
        let mut extra = Map::new();
        let (status, code, title, detail) = match self {
            ApiError::App(e) => match e {
                AppError::Validation(errors) => {
                    let detail = errors
                        .iter()
                        .map(|e| format!("{}: {}", e.field, e.message))
                        .collect::<Vec<_>>()
                        .join("; ");
                    extra.insert("errors".into(), json!(errors));
                    (
                        StatusCode::BAD_REQUEST,
                        "validation_failed",
                        "Invalid request",
                        detail,
                    )
                }
                AppError::EmailTaken => (
                    StatusCode::CONFLICT,
                    "email_taken",
                    "Email already registered",
                    e.to_string(),
                ),
                AppError::InvalidCredentials => (
                    StatusCode::UNAUTHORIZED,
                    "invalid_credentials",
                    "Invalid credentials",
                    e.to_string(),
                ),
                AppError::Unauthenticated(why) => (
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "Authentication required",
                    why.to_string(),
                ),
                AppError::RateLimited { retry_after } => {
                    extra.insert("retryAfter".into(), json!(retry_after.as_secs().max(1)));
                    let detail = format!("too many login attempts; try again in {} seconds", retry_after.as_secs().max(1));
                    (StatusCode::TOO_MANY_REQUESTS, "rate_limited", "Too many requests", detail)
                }
                AppError::Forbidden => (
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "Forbidden",
                    e.to_string(),
                ),
                AppError::NotFound(what) => (
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "Not found",
                    format!("{what} not found"),
                ),
                AppError::UnknownProducts(ids) => {
                    let list = ids.iter().map(|i| i.to_string()).collect::<Vec<_>>();
                    let detail = format!("unknown product(s): {}", list.join(", "));
                    extra.insert("productIds".into(), json!(list));
                    (
                        StatusCode::NOT_FOUND,
                        "product_not_found",
                        "Product not found",
                        detail,
                    )
                }
                AppError::InsufficientStock(shortages) => {
                    let detail = shortages
                        .iter()
                        .map(|s| {
                            format!(
                                "{} ({}): requested {}, available {}",
                                s.product_name, s.product_id, s.requested, s.available
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    extra.insert("shortages".into(), json!(shortages));
                    (
                        StatusCode::CONFLICT,
                        "insufficient_stock",
                        "Insufficient stock",
                        format!("not enough stock: {detail}"),
                    )
                }
                AppError::IdempotencyKeyReused => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "Idempotency key reused",
                    "this Idempotency-Key was already used with a different request body; use a new key".to_string(),
                ),
                AppError::InvalidTransition { current, action } => {
                    extra.insert("currentStatus".into(), json!(current));
                    let detail =
                        format!("the order is {} and can not be {action}", current.as_str());
                    (
                        StatusCode::CONFLICT,
                        "invalid_order_state",
                        "Invalid order state",
                        detail,
                    )
                }
                AppError::Overloaded => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "Overloaded",
                    "the service has too many orders in progress; nothing was reserved; try again shortly".to_string(),
                ),
                AppError::Unavailable(what) => {
                    tracing::warn!(backend = what, "answering 503: backend unavailable");
                    let detail = format!("{what} is unavailable; try again shortly");
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "service_unavailable",
                        "Service unavailable",
                        detail,
                    )
                }
                AppError::Internal(text) => {
                    tracing::error!(error = %text, "internal error");
                    let detail = "an unexpected error occurred; it has been logged".to_string();
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal_error",
                        "Internal error",
                        detail,
                    )
                }
            },
            ApiError::MalformedJson(why) => (
                StatusCode::BAD_REQUEST,
                "malformed_json",
                "Malformed JSON",
                format!("the body is not valid JSON: {why}"),
            ),
            ApiError::UnsupportedMediaType(got) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
                format!("expected Content-Type: application/json, got {got}"),
            ),
            ApiError::PayloadTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
                format!("the body exceeds the limit of {limit} bytes"),
            ),
            ApiError::RouteNotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "Not found",
                "no such route".to_string(),
            ),
            ApiError::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
                "this route does not accept that method".to_string(),
            ),
        };
        Parts {
            status,
            code,
            title,
            detail,
            extra,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.parts().status
    }

    fn error_response(&self) -> HttpResponse {
        let Parts {
            status,
            code,
            title,
            detail,
            extra,
        } = self.parts();
        let mut body = Map::new();
        body.insert(
            "type".into(),
            json!(format!("urn:order-service:problem:{code}")),
        );
        body.insert("title".into(), json!(title));
        body.insert("status".into(), json!(status.as_u16()));
        body.insert("detail".into(), json!(detail));
        body.insert("code".into(), json!(code));
        if let Some(path) = context::current_path() {
            body.insert("instance".into(), json!(path));
        }
        body.extend(extra);
        let mut response = HttpResponse::build(status);
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        if status == StatusCode::UNAUTHORIZED {
            let challenge = if code == "unauthorized" {
                r#"Bearer error="invalid_token""#
            } else {
                "Bearer"
            };
            response.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            ));
        }
        if let ApiError::App(AppError::RateLimited { retry_after }) = self {
            response.insert_header((
                header::RETRY_AFTER,
                retry_after.as_secs().max(1).to_string(),
            ));
        }
        if let ApiError::MethodNotAllowed(allow) = self {
            response.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
        }
        response.body(Value::Object(body).to_string())
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(_: actix::MailboxError) -> Self {
        ApiError::App(AppError::Unavailable("service"))
    }
}
