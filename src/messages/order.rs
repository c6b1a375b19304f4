//! OrderActor's inbox: placing, reading and cancelling orders, and processing queue messages.

use actix::Message;

use crate::domain::{Id, Order, OrderLine, Page, PageRequest, ShippingAddress};
use crate::error::AppError;
use crate::queue::OrderMessage;
use crate::tokens::Principal;

#[derive(Message)]
#[rtype(result = "Result<PlacedOrder, AppError>")]
pub struct CreateOrder {
    pub principal: Principal,
    pub lines: Vec<OrderLine>,
    pub shipping_address: ShippingAddress,
    pub payment_method: String,
    pub request_id: String,
    pub idempotency: Option<IdempotencyKey>,
}

/// A client's `Idempotency-Key` and the fingerprint of the request it came with.
#[derive(Clone, Debug)]
pub struct IdempotencyKey {
    pub key: String,
    pub request_fingerprint: String,
}

#[derive(Debug)]
pub struct PlacedOrder {
    pub order: Order,
    /// True when this answers a retry: the order was placed by an earlier request with the key.
    pub replayed: bool,
}

/// The caller's own order; an admin may read any. Someone else's is `NotFound`, exactly as a
/// missing one, so ids of other users' orders can not be probed. Answered as the order's JSON,
/// so a cached order is served as the bytes the cache holds, never parsed and written again.
#[derive(Message)]
#[rtype(result = "Result<OrderJson, AppError>")]
pub struct GetOrder {
    pub principal: Principal,
    pub order_id: Id,
}

/// An order as `GET /api/orders/{id}` sends it.
#[derive(Debug)]
pub struct OrderJson {
    /// The order's JSON representation (as `serde_json` writes an `Order`).
    pub json: String,
    pub status: crate::domain::OrderStatus,
}

#[derive(Message)]
#[rtype(result = "Result<Page<Order>, AppError>")]
pub struct ListOrders {
    pub principal: Principal,
    pub page: PageRequest,
}

/// Everyone's orders, for an admin (others are refused).
#[derive(Message)]
#[rtype(result = "Result<Page<Order>, AppError>")]
pub struct ListAllOrders {
    pub principal: Principal,
    pub status: Option<crate::domain::OrderStatus>,
    pub page: PageRequest,
}

#[derive(Message)]
#[rtype(result = "Result<Order, AppError>")]
pub struct CancelOrder {
    pub principal: Principal,
    pub order_id: Id,
    pub request_id: String,
}

/// One delivery of a queue message.
pub struct ProcessOrder {
    pub message: OrderMessage,
    pub receive_count: u32,
    /// This delivery is the last before the message is dead-lettered: a failure now is final.
    pub last_attempt: bool,
    /// The span of this delivery's work and log lines, made once (`new`) and entered at each
    /// step: one `process_order` span per delivery in a trace, not one per step that logs.
    pub span: tracing::Span,
}

impl ProcessOrder {
    /// A delivery, with its span opened in the current one (the batch's `process` span).
    pub fn new(message: OrderMessage, receive_count: u32, last_attempt: bool) -> ProcessOrder {
        let span = tracing::info_span!(
            "process_order",
            order_id = %message.order_id,
            request_id = message.request_id.as_deref().unwrap_or("-"),
            receive_count = receive_count
        );
        ProcessOrder {
            message,
            receive_count,
            last_attempt,
            span,
        }
    }
}

/// The deliveries of one receive, processed together. The answer has one outcome per delivery,
/// in the same order: `Ok` means that message is done with and may be deleted.
#[derive(Message)]
#[rtype(result = "Result<Vec<Result<(), AppError>>, AppError>")]
pub struct ProcessOrders(pub Vec<ProcessOrder>);
