//! `/api/orders*`: every route needs a bearer token; all work is OrderActor's.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::openapi::schema::{ArrayBuilder, Schema};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use super::extract::{parse_path_id, whole_number, Auth, Json, Object, RequestId};
use super::problem::ApiError;
use super::products::{page_query, PageQuery};
use super::schema;
use super::ApiState;
use crate::actors::{ask, order::NAME};
use crate::domain::address::ShippingAddressInput;
use crate::domain::order::{
    parse_lines, parse_payment_method, payment_method_schema, request_fingerprint, MAX_ITEMS,
};
use crate::domain::{FieldError, Id, Order, Page, Quantity};
use crate::error::AppError;
use crate::messages::order::{CancelOrder, CreateOrder, GetOrder, IdempotencyKey, ListOrders};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderItemRequest {
    pub product_id: Option<String>,
    #[serde(default, deserialize_with = "whole_number")]
    pub quantity: Option<i64>,
}

impl PartialSchema for OrderItemRequest {
    fn schema() -> RefOr<Schema> {
        schema::object([
            ("productId", schema::reference::<Id>(), true),
            ("quantity", Quantity::schema().into(), true),
        ])
    }
}
impl ToSchema for OrderItemRequest {}

/// Exactly the body of the service this one replaces.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateOrderRequest {
    pub items: Option<Vec<Object<OrderItemRequest>>>,
    pub shipping_address: Option<Object<ShippingAddressInput>>,
    pub payment_method: Option<String>,
}

impl PartialSchema for CreateOrderRequest {
    fn schema() -> RefOr<Schema> {
        let items = ArrayBuilder::new()
            .items(schema::reference::<OrderItemRequest>())
            .min_items(Some(1))
            .max_items(Some(MAX_ITEMS))
            .description(Some(format!(
                "1 to {MAX_ITEMS} lines; lines of the same product are merged into one, whose \
                 quantity must stay within the bound of one line's"
            )));
        schema::object([
            ("items", items.into(), true),
            (
                "shippingAddress",
                schema::reference::<ShippingAddressInput>(),
                true,
            ),
            ("paymentMethod", payment_method_schema().into(), true),
        ])
    }
}
impl ToSchema for CreateOrderRequest {}

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

#[utoipa::path(post, path = "/api/orders", tag = "orders", operation_id = "createOrder",
    request_body = CreateOrderRequest, security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
        description = "Optional; makes retries safe: the same key with the same body returns the original order \
            (with `Idempotent-Replayed: true`) without reserving stock again; with a different body it is 422. \
            Keys are per user and kept at least 24 hours; 1 to 255 visible ASCII characters.")),
    responses(
        (status = 201, description = "Accepted: stock reserved, order pending and queued", body = Order,
            headers(
                ("Location" = String, description = "The order's URL"),
                ("Idempotent-Replayed" = String, description = "`true` when this is the answer to an earlier request with the same Idempotency-Key"),
            )),
        (status = 400, description = "Invalid fields, or an invalid Idempotency-Key"),
        (status = 404, description = "Unknown product(s), listed in productIds; nothing reserved"),
        (status = 409, description = "Not enough stock; every short item in shortages; nothing reserved"),
        (status = 422, description = "Idempotency-Key reused with a different body"),
        (status = 503, description = "A backend is unavailable; nothing was reserved"),
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
                .map(|Object(i)| (i.product_id, i.quantity))
                .collect(),
            &mut errors,
        ),
    };
    let address = match body.shipping_address {
        None => {
            errors.push(FieldError::new("shippingAddress", "is required"));
            None
        }
        Some(Object(a)) => a.parse("shippingAddress", &mut errors),
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

#[utoipa::path(get, path = "/api/orders", tag = "orders", operation_id = "listOrders", params(PageQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's orders, newest first", body = Page<Order>),
        (status = 400, description = "Bad page or limit, or a query string that can not be read"),
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

#[utoipa::path(get, path = "/api/orders/{id}", tag = "orders", operation_id = "getOrder", security(("bearer" = [])),
    params(("id" = Id, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order", body = Order,
            headers(("Retry-After" = u64, description = "Only while the order is not in a final status: \
                seconds a client polling for its outcome should wait before asking again"))),
        (status = 400, description = "Malformed id"),
        (status = 404, description = "No such order, or not the caller's"),
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
    let mut response = HttpResponse::Ok();
    response.insert_header(actix_web::http::header::ContentType::json());
    if !order.status.is_terminal() {
        // Pollers that honour it ask once a second instead of as fast as they can: under a
        // backlog, their polls would otherwise multiply with the orders waiting.
        response.insert_header((
            actix_web::http::header::RETRY_AFTER,
            POLL_AGAIN_AFTER_SECS.to_string(),
        ));
    }
    Ok(response.body(order.json))
}

/// What `Retry-After` tells a client polling an order that is not final yet.
const POLL_AGAIN_AFTER_SECS: u64 = 1;

#[utoipa::path(post, path = "/api/orders/{id}/cancel", tag = "orders", operation_id = "cancelOrder", security(("bearer" = [])),
    params(("id" = Id, Path, description = "Order id")),
    responses(
        (status = 200, description = "Cancelled; its stock is back", body = Order),
        (status = 400, description = "Malformed id"),
        (status = 404, description = "No such order, or not the caller's"),
        (status = 409, description = "The order is no longer pending (`invalid_order_state`, with currentStatus)"),
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
