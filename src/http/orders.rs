//! `/api/orders*`: every route needs a bearer token; all work is OrderActor's.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::{parse_path_id, Auth, Json, RequestId};
use super::problem::{ApiError, Problem};
use super::products::{page_query, PageQuery};
use super::ApiState;
use crate::actors::{ask, order::NAME};
use crate::domain::address::ShippingAddressInput;
use crate::domain::order::{parse_lines, parse_payment_method, request_fingerprint};
use crate::domain::{FieldError, Order, Page};
use crate::error::AppError;
use crate::messages::order::{CancelOrder, CreateOrder, GetOrder, IdempotencyKey, ListOrders};

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderItemRequest {
    #[schema(example = "65a1f0c2e4b0a1b2c3d4e5f6")]
    pub product_id: Option<String>,
    /// 1 to 1000.
    #[schema(example = 1, minimum = 1, maximum = 1000)]
    pub quantity: Option<i64>,
}

/// Exactly the body of the service this one replaces.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateOrderRequest {
    /// 1 to 100 lines; the same product twice is merged.
    pub items: Option<Vec<OrderItemRequest>>,
    pub shipping_address: Option<ShippingAddressInput>,
    #[schema(example = "credit_card")]
    pub payment_method: Option<String>,
}

/// The optional `Idempotency-Key` header: 1 to 255 visible ASCII characters.
fn idempotency_key(req: &actix_web::HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or("").trim();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AppError::field(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        )
        .into());
    }
    Ok(Some(key.to_string()))
}

#[utoipa::path(post, path = "/api/orders", tag = "orders", request_body = CreateOrderRequest, security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Makes retries safe: the same key with the same body returns the original order (with \
            `Idempotent-Replayed: true`) without reserving stock again; with a different body it is 422. \
            Keys are per user and kept at least 24 hours.")),
    responses(
        (status = 201, description = "Accepted: stock reserved, order pending and queued", body = Order,
            headers(("Location" = String, description = "The order's URL"))),
        (status = 400, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown product(s), listed in productIds", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not enough stock; every short item in shortages; nothing reserved", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Idempotency-Key reused with a different body", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A backend is unavailable; nothing was reserved", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    state: web::Data<ApiState>,
    Auth(principal): Auth,
    request_id: RequestId,
    req: actix_web::HttpRequest,
    body: Json<CreateOrderRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    let mut errors = vec![];
    let lines = match body.items {
        None => {
            errors.push(FieldError::new("items", "is required"));
            vec![]
        }
        Some(items) => parse_lines(
            items
                .into_iter()
                .map(|i| (i.product_id, i.quantity))
                .collect(),
            &mut errors,
        ),
    };
    let address = match body.shipping_address {
        None => {
            errors.push(FieldError::new("shippingAddress", "is required"));
            None
        }
        Some(a) => a.parse("shippingAddress", &mut errors),
    };
    let payment_method = match body.payment_method {
        None => {
            errors.push(FieldError::new("paymentMethod", "is required"));
            None
        }
        Some(p) => parse_payment_method(&p)
            .map_err(|m| errors.push(FieldError::new("paymentMethod", m)))
            .ok(),
    };
    let (true, Some(shipping_address), Some(payment_method)) =
        (errors.is_empty(), address, payment_method)
    else {
        return Err(AppError::Validation(errors).into());
    };
    let idempotency = idempotency_key(&req)?.map(|key| IdempotencyKey {
        key,
        request_fingerprint: request_fingerprint(&lines, &shipping_address, &payment_method),
    });
    let placed = ask(
        NAME,
        &state.orders,
        CreateOrder {
            principal,
            lines,
            shipping_address,
            payment_method,
            request_id: request_id.0,
            idempotency,
        },
    )
    .await?;
    let mut response = HttpResponse::Created();
    response.insert_header((
        actix_web::http::header::LOCATION,
        format!("/api/orders/{}", placed.order.id),
    ));
    if placed.replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(response.json(placed.order))
}

#[utoipa::path(get, path = "/api/orders", tag = "orders", params(PageQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's orders, newest first", body = Page<Order>),
        (status = 400, description = "Bad page or limit", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    state: web::Data<ApiState>,
    Auth(principal): Auth,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let page = page_query(&req)?;
    let orders = ask(NAME, &state.orders, ListOrders { principal, page }).await?;
    Ok(HttpResponse::Ok().json(orders))
}

#[utoipa::path(get, path = "/api/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id (24 hex characters)")),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or not the caller's", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(
    state: web::Data<ApiState>,
    Auth(principal): Auth,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let order_id = parse_path_id(&id)?;
    let order = ask(
        NAME,
        &state.orders,
        GetOrder {
            principal,
            order_id,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(order))
}

#[utoipa::path(post, path = "/api/orders/{id}/cancel", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id (24 hex characters)")),
    responses(
        (status = 200, description = "Cancelled; its stock is back", body = Order),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or not the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order is no longer pending", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn cancel(
    state: web::Data<ApiState>,
    Auth(principal): Auth,
    request_id: RequestId,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let order_id = parse_path_id(&id)?;
    let order = ask(
        NAME,
        &state.orders,
        CancelOrder {
            principal,
            order_id,
            request_id: request_id.0,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(order))
}
