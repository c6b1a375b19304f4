//! The OpenAPI document, generated from the handlers' annotations, and Swagger UI served from
//! the binary itself (the UI's files are compiled in, so it works offline).
//!
//! The document is a contract, checked by `tests/fuzz.rs` (schemathesis): every request it
//! allows is accepted, every one it forbids is refused, every status, content type and body the
//! service answers is in it. So the request schemas come from the same rules the parsers apply
//! (`domain`), and the answers every operation of a kind can give are added here, in one place,
//! from the facts that cause them ([`CommonResponses`]).
//!
//! This module reads the handlers (their annotations and request types); they never read it.
//! The schema pieces their hand-written `ToSchema` impls share live in `schema`, below both.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, Response};
use utoipa::{Modify, OpenApi};

use super::problem::{self, PROBLEM_JSON};
use super::{admin, auth, health, order_events, orders, products};
use crate::domain;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Order service",
        description = "Event-driven order processing: register, log in, browse products, place orders that are \
            processed asynchronously and confirmed by email. Amounts are integer cents. Errors are \
            application/problem+json with a stable `code`. Request bodies are JSON (`application/json` \
            or any `application/*+json`) of at most `BODY_LIMIT_BYTES` (1 MiB by default); unknown \
            fields in them are ignored.",
        version = env!("CARGO_PKG_VERSION")
    ),
    paths(
        auth::register, auth::login, auth::refresh, auth::logout, auth::me,
        products::list, products::get, products::create, products::update,
        orders::create, orders::list, orders::get, orders::cancel,
        admin::list_orders,
        order_events::order, order_events::all,
        health::health, health::ready,
    ),
    components(schemas(
        problem::Problem, domain::FieldError, crate::error::Shortage,
        auth::AuthResponse, auth::UserView, auth::RegisterRequest, auth::LoginRequest, auth::RefreshRequest,
        products::ProductRequest, products::ProductPatchRequest, domain::Product, domain::Page<domain::Product>,
        orders::CreateOrderRequest, orders::OrderItemRequest, domain::address::ShippingAddressInput,
        domain::Order, domain::OrderItem, domain::OrderStatus, domain::ShippingAddress, domain::Page<domain::Order>,
        health::Health, health::Readiness, order_events::StatusEvent,
    )),
    modifiers(&BearerAuth, &CommonResponses),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "products", description = "The catalogue"),
        (name = "orders", description = "Placing and following orders"),
        (name = "admin", description = "What only admins see"),
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

/// The answers that follow from what an operation is rather than what it does:
/// - a JSON body (the `Json` extractor): 400 (not JSON, or invalid fields), 413, 415;
/// - a bearer token (the `Auth` extractor): 401;
/// - any work on a backend (everything but `/health`): 503 while one is down, and 503 also
///   when an actor's mailbox is full;
/// - and every error is problem+json, with `WWW-Authenticate` on 401 and `Retry-After` on 429
///   and on the 503s of `ApiError`.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                add_common_responses(path, operation);
            }
        }
    }
}

fn add_common_responses(path: &str, operation: &mut Operation) {
    let responses = &mut operation.responses.responses;
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status.to_string())
            .or_insert_with(|| ResponseBuilder::new().description(description).into());
    };
    if operation.request_body.is_some() {
        add(
            "400",
            "The body is not JSON (`malformed_json`) or has invalid fields (`validation_failed`, \
             each named in `errors`)",
        );
        add(
            "413",
            "The body is larger than the limit (`payload_too_large`)",
        );
        add(
            "415",
            "The body is not declared as JSON (`unsupported_media_type`)",
        );
    }
    if operation.security.is_some() {
        add(
            "401",
            "No bearer token, or one that is invalid, expired or revoked (`unauthorized`)",
        );
    }
    if path != "/health" {
        add(
            "503",
            "A backend is unavailable or the service is overloaded; try again shortly",
        );
    }
    for (status, response) in responses.iter_mut() {
        if let RefOr::T(response) = response {
            describe_error(status, path, response);
        }
    }
}

/// An error answer is a problem document, with the headers that go with its status.
fn describe_error(status: &str, path: &str, response: &mut Response) {
    if !status.starts_with('4') && !status.starts_with('5') {
        return;
    }
    if response.content.is_empty() {
        let problem = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build();
        response.content.insert(PROBLEM_JSON.to_string(), problem);
    }
    let header = |description: &str| {
        HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::String))
            .description(Some(description))
            .build()
    };
    match status {
        "401" => {
            response.headers.insert(
                "WWW-Authenticate".into(),
                header("`Bearer`, with `error=\"invalid_token\"` when a token was refused"),
            );
        }
        // `/ready` answers its own 503, which names the failing backends instead.
        "429" | "503" if path != "/ready" => {
            response
                .headers
                .insert("Retry-After".into(), header("Seconds to wait"));
        }
        _ => {}
    }
}
