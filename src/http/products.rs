//! `/api/products*`: public reads, admin writes, all through InventoryActor.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::extract::{parse_path_id, Admin, Json};
use super::problem::{ApiError, Problem};
use super::ApiState;
use crate::actors::{ask, inventory::NAME};
use crate::domain::product::ProductFields;
use crate::domain::{Page, PageRequest, Product};
use crate::error::AppError;
use crate::messages::inventory::{CreateProduct, GetProduct, ListProducts, UpdateProduct};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page number, from 1.
    #[param(minimum = 1)]
    pub page: Option<String>,
    /// Page size, 1 to 100 (larger values are capped at 100); default 10.
    #[param(minimum = 1)]
    pub limit: Option<String>,
}

impl PageQuery {
    pub fn parse(&self) -> Result<PageRequest, ApiError> {
        PageRequest::parse(self.page.as_deref(), self.limit.as_deref())
            .map_err(|e| AppError::Validation(e).into())
    }
}

/// Lenient query parsing: a malformed query string is a 400 naming it, not a bare error.
pub fn page_query(req: &actix_web::HttpRequest) -> Result<PageRequest, ApiError> {
    let query: PageQuery = serde_urlencoded::from_str(req.query_string())
        .map_err(|e| AppError::field("query", format!("could not be read: {e}")))?;
    query.parse()
}

#[derive(Deserialize, ToSchema)]
pub struct ProductRequest {
    #[schema(example = "Mechanical keyboard")]
    pub name: Option<String>,
    pub description: Option<String>,
    /// Unit price in integer cents.
    #[schema(example = 8999, minimum = 0)]
    pub price: Option<i64>,
    #[schema(example = 25, minimum = 0)]
    pub stock: Option<i64>,
}

impl ProductRequest {
    fn fields(self) -> ProductFields {
        ProductFields {
            name: self.name,
            description: self.description,
            price: self.price,
            stock: self.stock,
        }
    }
}

#[utoipa::path(get, path = "/api/products", tag = "products", params(PageQuery),
    responses(
        (status = 200, description = "A page of products", body = Page<Product>),
        (status = 400, description = "Bad page or limit", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    state: web::Data<ApiState>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let page = page_query(&req)?;
    let products = ask(NAME, &state.inventory, ListProducts { page }).await?;
    Ok(HttpResponse::Ok().json(products))
}

#[utoipa::path(get, path = "/api/products/{id}", tag = "products",
    params(("id" = String, Path, description = "Product id (24 hex characters)")),
    responses(
        (status = 200, description = "The product", body = Product),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(
    state: web::Data<ApiState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_path_id(&id)?;
    let product = ask(NAME, &state.inventory, GetProduct { id }).await?;
    Ok(HttpResponse::Ok().json(product))
}

#[utoipa::path(post, path = "/api/products", tag = "products", request_body = ProductRequest, security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Product),
        (status = 400, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    state: web::Data<ApiState>,
    _admin: Admin,
    body: Json<ProductRequest>,
) -> Result<HttpResponse, ApiError> {
    let product = body.0.fields().parse_new().map_err(AppError::Validation)?;
    let product = ask(NAME, &state.inventory, CreateProduct { product }).await?;
    Ok(HttpResponse::Created()
        .insert_header((
            actix_web::http::header::LOCATION,
            format!("/api/products/{}", product.id),
        ))
        .json(product))
}

#[utoipa::path(patch, path = "/api/products/{id}", tag = "products", request_body = ProductRequest, security(("bearer" = [])),
    params(("id" = String, Path, description = "Product id (24 hex characters)")),
    responses(
        (status = 200, description = "Updated", body = Product),
        (status = 400, description = "Invalid fields or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn update(
    state: web::Data<ApiState>,
    _admin: Admin,
    id: web::Path<String>,
    body: Json<ProductRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_path_id(&id)?;
    let patch = body
        .0
        .fields()
        .parse_patch()
        .map_err(AppError::Validation)?;
    if patch.is_empty() {
        return Err(AppError::field(
            "body",
            "must set at least one of name, description, price, stock",
        )
        .into());
    }
    let product = ask(NAME, &state.inventory, UpdateProduct { id, patch }).await?;
    Ok(HttpResponse::Ok().json(product))
}
