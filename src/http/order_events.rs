//! `/api/orders/{id}/events` and `/api/orders/events`: order status as server-sent events.
//! The streams themselves (who may follow what, what is sent first, resuming) are
//! `events::streams`'; this is the HTTP end: the `Last-Event-ID` header, the `text/event-stream`
//! framing, and the heartbeat comment that keeps idle connections open through proxies.
//!
//! The heartbeat also ends abandoned streams: while a response streams, the server does not
//! read the connection, so a client that left is noticed only when a write to it fails, at a
//! heartbeat at the latest (the stream's subscription is then dropped with its body).

use std::convert::Infallible;
use std::time::Duration;

use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::{stream, StreamExt};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use super::extract::{parse_path_id, Auth};
use super::problem::ApiError;
use super::schema;
use super::ApiState;
use crate::domain::Id;
use crate::error::AppError;
use crate::events::streams::Feed;
use crate::events::{EventId, OrderEvent};

/// Sent first: how long an `EventSource` waits before reconnecting (it also puts the response
/// head on the wire at once, before any event).
const RETRY: &[u8] = b"retry: 1000\n\n";
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// The `Last-Event-ID` a reconnecting client sends; anything but an id this service wrote is
/// refused, so a typo can not silently restart a stream from nothing.
fn last_event_id(req: &HttpRequest) -> Result<Option<EventId>, ApiError> {
    let Some(value) = req.headers().get("last-event-id") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(EventId::parse)
        .map(Some)
        .ok_or_else(|| {
            AppError::field(
                "Last-Event-ID",
                "must be an event id as this service sent it in `id:` (digits, the last 0 to 2)",
            )
            .into()
        })
}

/// One event of either stream, as the OpenAPI document describes it (the fields of an SSE
/// event, as an `EventSource` hands them over).
pub struct StatusEvent;

impl PartialSchema for StatusEvent {
    fn schema() -> RefOr<Schema> {
        let event = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["status"]));
        let id = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(EventId::PATTERN))
            .description(Some(
                "`updatedAt` in ms × 10 + status rank (pending 0, processing 1, terminal 2); send it back as `Last-Event-ID`",
            ));
        let data = ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/json")
            .description(Some(
                "`{status, updatedAt, order}`: the status, when it changed, and the order as \
                 `GET /api/orders/{id}` answers it",
            ));
        schema::object([
            ("event", event.into(), true),
            ("id", id.into(), true),
            ("data", data.into(), true),
        ])
    }
}
impl ToSchema for StatusEvent {}

fn frame(id: EventId, event: &OrderEvent) -> Bytes {
    Bytes::from(format!("id: {id}\nevent: status\ndata: {}\n\n", event.data))
}

/// The response: `retry:`, then each event of `feed`, with a heartbeat comment every
/// `heartbeat`; it ends when the feed does.
fn event_stream(feed: Feed, heartbeat: Duration) -> HttpResponse {
    let first_beat = tokio::time::Instant::now() + heartbeat;
    let ticker = tokio::time::interval_at(first_beat, heartbeat);
    let body = stream::once(async { Ok::<_, Infallible>(Bytes::from_static(RETRY)) }).chain(
        stream::unfold((feed, ticker), |(mut feed, mut ticker)| async move {
            let chunk = tokio::select! {
                next = feed.next() => {
                    let (id, event) = next?;
                    frame(id, &event)
                }
                _ = ticker.tick() => {
                    feed.recheck().await;
                    Bytes::from_static(KEEP_ALIVE)
                }
            };
            Some((Ok(chunk), (feed, ticker)))
        }),
    );
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // nginx buffers responses unless told not to.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

#[utoipa::path(get, path = "/api/orders/{id}/events", tag = "orders", operation_id = "orderEvents", security(("bearer" = [])),
    params(
        ("id" = Id, Path, description = "Order id"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, pattern = "^[0-9]{0,17}[0-2]$",
            description = "On reconnect, the `id:` of the last event received: the order's current state is sent \
                only if it changed since"),
    ),
    responses(
        (status = 200, description = "Server-sent events: the order's state at once (event `status`, `data`: \
            `{status, updatedAt, order}`, `id`: `updatedAt` in ms × 10 + status rank), then one event per status change; \
            the stream ends after a terminal status (completed, failed, cancelled). A `: keep-alive` comment \
            every `SSE_HEARTBEAT_INTERVAL`.", content_type = "text/event-stream", body = StatusEvent),
        (status = 400, description = "Malformed id or Last-Event-ID"),
        (status = 404, description = "No such order, or not the caller's"),
    ))]
pub async fn order(
    state: web::Data<ApiState>,
    Auth(principal): Auth,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let order_id = parse_path_id(&id)?;
    let last = last_event_id(&req)?;
    let feed = state.events.order(&principal, order_id, last).await?;
    Ok(event_stream(feed, state.events.heartbeat))
}

#[utoipa::path(get, path = "/api/orders/events", tag = "orders", operation_id = "allOrderEvents", security(("bearer" = [])),
    params(
        ("Last-Event-ID" = Option<String>, Header, nullable = false, pattern = "^[0-9]{0,17}[0-2]$",
            description = "On reconnect, the `id:` of the last event received: every order changed since is sent \
                first, as it is now (an order may come twice, never be missed)"),
    ),
    responses(
        (status = 200, description = "Server-sent events, open until the client leaves: an event `status` \
            (`data`: `{status, updatedAt, order}`) for each change to any of the caller's orders (an admin's: \
            every order), placing included. A `: keep-alive` comment every `SSE_HEARTBEAT_INTERVAL`.",
            content_type = "text/event-stream", body = StatusEvent),
        (status = 400, description = "Malformed Last-Event-ID"),
    ))]
pub async fn all(
    state: web::Data<ApiState>,
    Auth(principal): Auth,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let last = last_event_id(&req)?;
    let feed = state.events.all(&principal, last).await?;
    Ok(event_stream(feed, state.events.heartbeat))
}
