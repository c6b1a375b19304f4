//! Load shedding at the edge, before any work is done for a creation that would be shed.
//!
//! Past capacity most creations are answered 503 `overloaded`, and under a spike those answers
//! (and the clients' retries after each `Retry-After`) outnumber the admitted orders several
//! times over: 5,000–7,000 a second in `bench/run`'s recovery phase, against 300–1,400 admitted.
//! Shed by the OrderActor, each had first been authenticated (a token check and a session
//! lookup, a Redis round trip on the real backends), its body parsed and validated, and sent
//! to the actor's thread and back: CPU and wake-ups the workers needed to drain the backlog.
//! So this middleware, on `POST /api/orders` only, asks the admission first
//! ([`Admission::refuses`]) and answers a creation it would shed at once.
//!
//! - The request's body is read to its end and dropped: actix closes a keep-alive connection
//!   whose request body was left unread, and a reconnect would cost the client and the
//!   service more than reading a few hundred bytes. A body past [`MAX_DRAINED`] is not read
//!   further (the connection closes then).
//! - A shed request is not authenticated, so under overload a request with a bad token is
//!   answered 503 rather than 401. The answer says only that the service is overloaded, which
//!   any client can see, and nothing was looked at or changed.
//! - The OrderActor still takes the permit itself ([`Admission::try_admit`]): a creation let
//!   through here may still be shed there when the bound was reached in between.
//!
//! [`Admission::refuses`]: crate::actors::admission::Admission::refuses
//! [`Admission::try_admit`]: crate::actors::admission::Admission::try_admit

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage, ResponseError};
use futures_util::StreamExt;

use super::problem::ApiError;
use super::ApiState;
use crate::error::AppError;
use crate::metrics::ORDERS_SHED_TOTAL;

/// The most of a shed request's body read (and dropped) to keep its connection open.
pub const MAX_DRAINED: usize = 64 * 1024;

/// Answers 503 `overloaded` at once when the admission would shed the creation; else passes it on.
pub async fn shed_when_overloaded(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let refused = req
        .app_data::<web::Data<ApiState>>()
        .and_then(|state| state.admission.refuses());
    let Some(shed) = refused else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    metrics::counter!(ORDERS_SHED_TOTAL, "reason" => shed.as_str()).increment(1);
    let mut payload = req.take_payload();
    let mut read = 0;
    while let Some(Ok(chunk)) = payload.next().await {
        read += chunk.len();
        if read > MAX_DRAINED {
            break;
        }
    }
    let response = ApiError::App(AppError::Overloaded).error_response();
    Ok(req.into_response(response).map_into_right_body())
}
