//! The OpenAPI document, generated from the handlers' annotations, and Swagger UI served from
//! the binary itself (the UI's files are compiled in, so it works offline).

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{auth, health, orders, problem, products};
use crate::domain;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Order service",
        description = "Event-driven order processing: register, log in, browse products, place orders that are \
            processed asynchronously and confirmed by email. Amounts are integer cents. Errors are \
            application/problem+json with a stable `code`.",
        version = env!("CARGO_PKG_VERSION")
    ),
    paths(
        auth::register, auth::login, auth::refresh, auth::logout, auth::me,
        products::list, products::get, products::create, products::update,
        orders::create, orders::list, orders::get, orders::cancel,
        health::health, health::ready,
    ),
    components(schemas(
        problem::Problem, domain::FieldError, crate::error::Shortage,
        auth::AuthResponse, auth::UserView, auth::RegisterRequest, auth::LoginRequest, auth::RefreshRequest,
        products::ProductRequest, domain::Product, domain::Page<domain::Product>,
        orders::CreateOrderRequest, orders::OrderItemRequest, domain::address::ShippingAddressInput,
        domain::Order, domain::OrderItem, domain::OrderStatus, domain::ShippingAddress, domain::Page<domain::Order>,
        health::Health, health::Readiness,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "products", description = "The catalogue"),
        (name = "orders", description = "Placing and following orders"),
        (name = "operations", description = "Health and readiness"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        scheme.description =
            Some("The accessToken from /api/auth/login or /api/auth/register".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}
