//! `/api/admin/*`: what only admins see. `GET /api/admin/orders` pages through everyone's
//! orders, optionally in one status, in the page shape of `GET /api/orders`: how an on-call
//! finds the orders stuck in `processing` or the ones that `failed`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::IntoParams;

use super::extract::Admin;
use super::problem::ApiError;
use super::ApiState;
use crate::actors::{ask, order::NAME};
use crate::domain::{Order, OrderStatus, Page, PageRequest};
use crate::error::AppError;
use crate::messages::order::ListAllOrders;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AdminOrdersQuery {
    /// Only orders in this status.
    #[param(value_type = Option<OrderStatus>)]
    pub status: Option<String>,
    #[param(schema_with = PageRequest::page_schema)]
    pub page: Option<String>,
    #[param(schema_with = PageRequest::limit_schema)]
    pub limit: Option<String>,
}

#[utoipa::path(get, path = "/api/admin/orders", tag = "admin", operation_id = "listAllOrders",
    params(AdminOrdersQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "Everyone's orders (in `status`, when given), newest first", body = Page<Order>),
        (status = 400, description = "An unknown status, a bad page or limit, or a query string that can not be read"),
        (status = 403, description = "Not an admin"),
    ))]
pub async fn list_orders(
    state: web::Data<ApiState>,
    Admin(principal): Admin,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query: AdminOrdersQuery = serde_urlencoded::from_str(req.query_string())
        .map_err(|e| AppError::field("query", format!("could not be read: {e}")))?;
    let mut errors = PageRequest::parse(query.page.as_deref(), query.limit.as_deref())
        .err()
        .unwrap_or_default();
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => {
            let parsed = OrderStatus::parse(s);
            if parsed.is_none() {
                let known: Vec<&str> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
                errors.push(crate::domain::FieldError::new(
                    "status",
                    format!("must be one of {}", known.join(", ")),
                ));
            }
            parsed
        }
    };
    if !errors.is_empty() {
        return Err(AppError::Validation(errors).into());
    }
    let page = PageRequest::parse(query.page.as_deref(), query.limit.as_deref())
        .map_err(AppError::Validation)?;
    let orders = ask(
        NAME,
        &state.orders,
        ListAllOrders {
            principal,
            status,
            page,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(orders))
}
