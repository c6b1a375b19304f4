//! The HTTP edge. Handlers only parse, authenticate, send one message to an actor and map the
//! reply; no business rule lives here.

pub mod admin;
pub mod auth;
pub mod client_address;
pub mod context;
pub mod docs;
pub mod extract;
pub mod health;
pub mod middleware;
pub mod order_events;
pub mod orders;
pub mod problem;
pub mod products;
pub mod schema;
pub mod shedding;

use std::sync::Arc;

use actix::Addr;
use actix_web::{web, HttpResponse};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::actors::admission::Admission;
use crate::actors::{auth::AuthActor, inventory::InventoryActor, order::OrderActor};
use crate::authenticator::Authenticator;
use crate::backends::ReadinessProbes;
use problem::ApiError;

/// What handlers reach: the actors' addresses, the token checker and the backends' probes.
pub struct ApiState {
    pub auth: Addr<AuthActor>,
    pub inventory: Addr<InventoryActor>,
    pub orders: Addr<OrderActor>,
    pub authenticator: Arc<Authenticator>,
    /// Order creation's load shedding, checked at the edge before any work (see [`shedding`]).
    pub admission: Arc<Admission>,
    /// What `/ready` asks.
    pub readiness: Arc<dyn ReadinessProbes>,
    /// Where the login throttle takes the client's address from.
    pub client_address: client_address::ClientAddressSource,
    /// Opens the order status streams.
    pub events: Arc<crate::events::streams::Streams>,
}

async fn route_not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound)
}

/// A route whose other methods answer 405 with the `Allow` header RFC 9110 asks for.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed(allow))
    }))
}

/// The operational routes every process serves (a `worker` serves only these).
pub fn operations(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/health", "GET").route(web::get().to(health::health)))
        .service(resource("/ready", "GET").route(web::get().to(health::ready)))
        .service(resource("/metrics", "GET").route(web::get().to(health::metrics)))
        .default_service(web::to(route_not_found));
}

/// The whole API, documentation included.
pub fn api(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/api/auth/register", "POST").route(web::post().to(auth::register)))
        .service(resource("/api/auth/login", "POST").route(web::post().to(auth::login)))
        .service(resource("/api/auth/refresh", "POST").route(web::post().to(auth::refresh)))
        .service(resource("/api/auth/logout", "POST").route(web::post().to(auth::logout)))
        .service(resource("/api/auth/me", "GET").route(web::get().to(auth::me)))
        .service(
            resource("/api/products", "GET, POST")
                .route(web::get().to(products::list))
                .route(web::post().to(products::create)),
        )
        .service(
            resource("/api/products/{id}", "GET, PATCH")
                .route(web::get().to(products::get))
                .route(web::patch().to(products::update)),
        )
        .service(
            resource("/api/orders", "GET, POST")
                .route(web::get().to(orders::list))
                .route(
                    web::post()
                        .to(orders::create)
                        .wrap(actix_web::middleware::from_fn(
                            shedding::shed_when_overloaded,
                        )),
                ),
        )
        // Before `/api/orders/{id}`, which would take `events` for an id.
        .service(resource("/api/orders/events", "GET").route(web::get().to(order_events::all)))
        .service(resource("/api/orders/{id}", "GET").route(web::get().to(orders::get)))
        .service(
            resource("/api/orders/{id}/events", "GET").route(web::get().to(order_events::order)),
        )
        .service(resource("/api/orders/{id}/cancel", "POST").route(web::post().to(orders::cancel)))
        .service(resource("/api/admin/orders", "GET").route(web::get().to(admin::list_orders)))
        .service(web::redirect("/api-docs", "/api-docs/"))
        .service(
            SwaggerUi::new("/api-docs/{_:.*}")
                .url("/api-docs/openapi.json", docs::ApiDoc::openapi()),
        );
    operations(cfg);
}
