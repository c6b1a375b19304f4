//! OrderActor: places orders (reserve stock, store, enqueue), serves order reads through the
//! cache, cancels, and processes queue messages through the order lifecycle.
//!
//! Delivery is at-least-once, so processing is written to be repeatable: a message means "look
//! at this order and do what is due". Each status change is a conditional update on the stored
//! status (a duplicate or late message finds nothing to move), stock is returned inside the
//! transition that fails or cancels the order, and each email is claimed per status before the
//! change it tells of (`claim_ahead`), sent after it, and marked sent.
//!
//! The actor's state and its handlers are here; each job has a file: `place` (reserve, store,
//! queue; idempotency keys), `reads` (order reads through the cache), `lifecycle` (conditional
//! transitions, cancellation), `process` (queue deliveries, giving up), `notify` (emails, at
//! least once per status), `claim_ahead` (each terminal change's email claimed before it), `email_sweeper` (emails claimed and never marked sent), `outbox`
//! (resending orders never confirmed on the queue) and `stranded` (orders that lost their
//! message).

mod claim_ahead;
mod email_sweeper;
mod lifecycle;
mod notify;
mod outbox;
mod place;
mod process;
mod reads;
mod stranded;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::admission::Admission;
use super::enqueued_marks::EnqueuedMarks;
use super::inventory::InventoryActor;
use super::mailer::MailerActor;
use super::{count_restart, guarded_as, MAILBOX_CAPACITY};
use crate::cache::Cache;
use crate::config::EmailSettings;
use crate::domain::{Order, Page};
use crate::error::AppError;
use crate::messages::order::*;
use crate::metrics::*;
use crate::queue::batcher::SendBatcher;
use crate::round_trips::WorkPath;
use crate::store::{Accounts, Idempotency, Orders};
use crate::tokens::Principal;

pub const NAME: &str = "order";

#[derive(Clone)]
pub struct OrderActor {
    /// Orders, their transitions, email claims and outbox flags.
    pub orders: Arc<dyn Orders>,
    /// The `Idempotency-Key` records of order creation.
    pub idempotency: Arc<dyn Idempotency>,
    /// Read only: the customer (name, email address) an order's email goes to.
    pub accounts: Arc<dyn Accounts>,
    pub cache: Arc<dyn Cache>,
    /// Queue sends go through here, so orders placed together share one batch request.
    pub sender: SendBatcher,
    /// Sets the outbox flag of orders whose message was sent, off the request's path.
    pub enqueued: EnqueuedMarks,
    pub inventory: Addr<InventoryActor>,
    pub mailer: Addr<MailerActor>,
    pub cache_ttl: Duration,
    /// How long the fulfilment step takes (`ORDER_PROCESSING_TIME`).
    pub processing_time: Duration,
    /// Set while a reconciler pass runs, so slow passes never pile up.
    pub outbox_busy: Arc<AtomicBool>,
    /// Whether this instance runs the outbox reconciler (one instance per process does).
    pub runs_outbox: bool,
    /// Bounds the creations in flight (`MAX_ORDERS_IN_FLIGHT`); the rest are shed.
    pub admission: Arc<Admission>,
    /// Pending or processing unchanged this long, an order is stranded (`ORDER_STUCK_AFTER`).
    pub stuck_after: Duration,
    /// When an unsent email is sent again, and how long email records are kept.
    pub emails: EmailSettings,
    /// Where each placed order and each status change is reported, for the status streams.
    pub events: crate::events::Events,
}

impl Actor for OrderActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        if self.runs_outbox {
            self.start_outbox(ctx);
            self.start_email_sweeper(ctx);
        }
    }
}

impl Supervised for OrderActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        count_restart(NAME);
    }
}

impl Handler<CreateOrder> for OrderActor {
    type Result = ResponseActFuture<Self, Result<PlacedOrder, AppError>>;
    fn handle(&mut self, msg: CreateOrder, _: &mut Context<Self>) -> Self::Result {
        let permit = match self.admission.try_admit() {
            Ok(permit) => permit,
            Err(shed) => {
                metrics::counter!(ORDERS_SHED_TOTAL, "reason" => shed.as_str()).increment(1);
                return Box::pin(actix::fut::ready(Err(AppError::Overloaded)));
            }
        };
        let this = self.clone();
        guarded_as(NAME, WorkPath::Request, async move {
            let placed = this.create(msg).await;
            drop(permit);
            placed
        })
    }
}

impl Handler<GetOrder> for OrderActor {
    type Result = ResponseActFuture<Self, Result<OrderJson, AppError>>;
    fn handle(&mut self, msg: GetOrder, _: &mut Context<Self>) -> Self::Result {
        let this = self.clone();
        guarded_as(NAME, WorkPath::Request, async move {
            this.load_order_json(msg.order_id)
                .await?
                .filter(|(head, _)| {
                    head.user_id == msg.principal.user_id || msg.principal.is_admin()
                })
                .map(|(head, json)| OrderJson {
                    json,
                    status: head.status,
                })
                .ok_or(AppError::NotFound("order"))
        })
    }
}

impl Handler<ListOrders> for OrderActor {
    type Result = ResponseActFuture<Self, Result<Page<Order>, AppError>>;
    fn handle(&mut self, msg: ListOrders, _: &mut Context<Self>) -> Self::Result {
        let orders = self.orders.clone();
        guarded_as(NAME, WorkPath::Request, async move {
            let principal: Principal = msg.principal;
            let (found, total) = backend_call(
                "store",
                "list_orders",
                orders.list_orders(principal.user_id, msg.page),
            )
            .await?;
            Ok(Page::new(found, msg.page, total))
        })
    }
}

impl Handler<ListAllOrders> for OrderActor {
    type Result = ResponseActFuture<Self, Result<Page<Order>, AppError>>;
    fn handle(&mut self, msg: ListAllOrders, _: &mut Context<Self>) -> Self::Result {
        let orders = self.orders.clone();
        guarded_as(NAME, WorkPath::Request, async move {
            if !msg.principal.is_admin() {
                return Err(AppError::Forbidden);
            }
            let (found, total) = backend_call(
                "store",
                "list_all_orders",
                orders.list_all_orders(msg.status, msg.page),
            )
            .await?;
            Ok(Page::new(found, msg.page, total))
        })
    }
}

impl Handler<CancelOrder> for OrderActor {
    type Result = ResponseActFuture<Self, Result<Order, AppError>>;
    fn handle(&mut self, msg: CancelOrder, _: &mut Context<Self>) -> Self::Result {
        guarded_as(NAME, WorkPath::Request, self.clone().cancel(msg))
    }
}

impl Handler<ProcessOrders> for OrderActor {
    type Result = ResponseActFuture<Self, Result<Vec<Result<(), AppError>>, AppError>>;
    fn handle(&mut self, msg: ProcessOrders, _: &mut Context<Self>) -> Self::Result {
        let this = self.clone();
        guarded_as(NAME, WorkPath::Worker, async move {
            Ok(this.process_all(&msg.0).await)
        })
    }
}
