//! `/api/products*`: public reads, admin writes, all through InventoryActor.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};

use super::extract::{parse_path_id, whole_number, Admin, Json};
use super::problem::ApiError;
use super::schema;
use super::ApiState;
use crate::actors::{ask, inventory::NAME};
use crate::domain::product::{self, ProductFields};
use crate::domain::{Id, Page, PageRequest, Product};
use crate::error::AppError;
use crate::messages::inventory::{CreateProduct, GetProduct, ListProducts, UpdateProduct};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    #[param(schema_with = PageRequest::page_schema)]
    pub page: Option<String>,
    #[param(schema_with = PageRequest::limit_schema)]
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

/// The body of `POST /api/products`, and (see [`ProductPatchRequest`]) of `PATCH`.
#[derive(Deserialize)]
pub struct ProductRequest {
    pub name: Option<String>,
    pub description: Option<String>,
    #[serde(default, deserialize_with = "whole_number")]
    pub price: Option<i64>,
    #[serde(default, deserialize_with = "whole_number")]
    pub stock: Option<i64>,
}

/// The fields of a product: name, schema, JSON type, and whether a new product must have it.
fn field_schemas() -> [(&'static str, ObjectBuilder, Type, bool); 4] {
    [
        ("name", product::name_schema(), Type::String, true),
        (
            "description",
            product::description_schema(),
            Type::String,
            false,
        ),
        ("price", product::price_schema(), Type::Integer, true),
        ("stock", product::stock_schema(), Type::Integer, false),
    ]
}

/// A new product: a name and a price; no description is an empty one, no stock is 0.
impl PartialSchema for ProductRequest {
    fn schema() -> RefOr<Schema> {
        schema::object(field_schemas().map(|(name, schema, of, needed)| {
            if needed {
                (name, schema.into(), true)
            } else {
                (name, schema::or_null(schema, of), false)
            }
        }))
    }
}
impl ToSchema for ProductRequest {}

/// The body of `PATCH /api/products/{id}`, for the document only: the handler reads a
/// [`ProductRequest`], every field optional.
pub struct ProductPatchRequest;

/// Any of the fields; one absent or `null` stays as it is (so `{}` changes nothing, as a JSON
/// merge patch would).
impl PartialSchema for ProductPatchRequest {
    fn schema() -> RefOr<Schema> {
        schema::object(
            field_schemas().map(|(name, schema, of, _)| (name, schema::or_null(schema, of), false)),
        )
    }
}
impl ToSchema for ProductPatchRequest {}

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

#[utoipa::path(get, path = "/api/products", tag = "products", operation_id = "listProducts", params(PageQuery),
    responses(
        (status = 200, description = "A page of products, oldest first", body = Page<Product>),
        (status = 400, description = "Bad page or limit, or a query string that can not be read"),
    ))]
pub async fn list(
    state: web::Data<ApiState>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let page = page_query(&req)?;
    let products = ask(NAME, &state.inventory, ListProducts { page }).await?;
    Ok(HttpResponse::Ok().json(products))
}

#[utoipa::path(get, path = "/api/products/{id}", tag = "products", operation_id = "getProduct",
    params(("id" = Id, Path, description = "Product id")),
    responses(
        (status = 200, description = "The product", body = Product),
        (status = 400, description = "Malformed id"),
        (status = 404, description = "No such product"),
    ))]
pub async fn get(
    state: web::Data<ApiState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_path_id(&id)?;
    let product = ask(NAME, &state.inventory, GetProduct { id }).await?;
    Ok(HttpResponse::Ok().json(product))
}

#[utoipa::path(post, path = "/api/products", tag = "products", operation_id = "createProduct",
    request_body = ProductRequest, security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Product,
            headers(("Location" = String, description = "The product's URL"))),
        (status = 403, description = "Not an admin"),
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

#[utoipa::path(patch, path = "/api/products/{id}", tag = "products", operation_id = "updateProduct",
    request_body = ProductPatchRequest, security(("bearer" = [])),
    params(("id" = Id, Path, description = "Product id")),
    responses(
        (status = 200, description = "Updated (or, with no field set, as it was)", body = Product),
        (status = 400, description = "Invalid fields or id"),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such product"),
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
    let product = ask(NAME, &state.inventory, UpdateProduct { id, patch }).await?;
    Ok(HttpResponse::Ok().json(product))
}
