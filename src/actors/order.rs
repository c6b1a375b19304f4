//! OrderActor: places orders (reserve stock, store, enqueue), serves order reads through the
//! cache, cancels, and processes queue messages through the order lifecycle.
//!
//! Delivery is at-least-once, so processing is written to be repeatable: a message means "look
//! at this order and do what is due". Each status change is a conditional update on the stored
//! status (a duplicate or late message finds nothing to move), stock is returned inside the
//! transition that fails or cancels the order, and each email is claimed once per status
//! before it is sent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;
use tracing::Instrument;

use super::admission::Admission;
use super::enqueued_marks::EnqueuedMarks;
use super::inventory::{self, InventoryActor};
use super::mailer::{self, MailerActor};
use super::{ask, count_restart, guarded, MAILBOX_CAPACITY};
use crate::cache::{order_key, Cache};
use crate::domain::{Id, Order, OrderItem, OrderStatus, Page, User};
use crate::error::{AppError, BackendError};
use crate::messages::inventory::{ReleaseStock, ReserveStock};
use crate::messages::mailer::SendOrderEmail;
use crate::messages::order::*;
use crate::metrics::*;
use crate::queue::batcher::SendBatcher;
use crate::queue::OrderMessage;
use crate::store::{Accounts, Idempotency, IdempotencyRecord, Orders, TransitionOutcome};
use crate::tokens::Principal;

pub const NAME: &str = "order";

/// How often the outbox reconciler looks for orders whose queue message was never confirmed.
const OUTBOX_INTERVAL: Duration = Duration::from_secs(5);
/// How long a retry waits for the order of its idempotency key to appear before placing it itself.
const IDEMPOTENT_WAIT: Duration = Duration::from_secs(5);

/// What an idempotency record remembers: the order id the key stands for, and when it was first
/// seen (to tell a request still in progress from one that died).
struct IdempotentOrder {
    order_id: Id,
    first_seen_ms: i64,
}

impl IdempotentOrder {
    fn encode(&self) -> String {
        format!("{}|{}", self.order_id, self.first_seen_ms)
    }

    fn decode(s: &str) -> Option<Self> {
        let (id, ms) = s.split_once('|')?;
        Some(IdempotentOrder {
            order_id: id.parse().ok()?,
            first_seen_ms: ms.parse().ok()?,
        })
    }
}

/// An order younger than this may still be on its way to the queue from the request that placed it.
const OUTBOX_GRACE: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct OrderActor {
    /// Orders, their transitions, email claims and outbox flags.
    pub orders: Arc<dyn Orders>,
    /// The `Idempotency-Key` records of order creation.
    pub idempotency: Arc<dyn Idempotency>,
    /// Read only, for the name and address an order's email goes to.
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
}

impl Actor for OrderActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        if !self.runs_outbox {
            return;
        }
        ctx.run_interval(OUTBOX_INTERVAL, |actor, ctx| {
            if actor.outbox_busy.swap(true, Ordering::AcqRel) {
                return;
            }
            let this = actor.clone();
            ctx.spawn(actix::fut::wrap_future(async move {
                if let Err(e) = this.resend_unqueued().await {
                    tracing::warn!(error = %e, "outbox reconciler pass failed");
                }
                this.outbox_busy.store(false, Ordering::Release);
            }));
        });
    }
}

impl Supervised for OrderActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        count_restart(NAME);
    }
}

impl OrderActor {
    /// Writes the order's current state to the cache after a change, so no read shows the old
    /// status once the change is acknowledged. If the write fails the entry is dropped instead.
    async fn cache_order(&self, order: &Order) {
        let key = order_key(order.id);
        let json = serde_json::to_string(order).expect("orders serialise");
        if let Err(e) = self.cache.set(&key, &json, self.cache_ttl).await {
            metrics::counter!(CACHE_ERRORS_TOTAL, "cache" => "order", "operation" => "set")
                .increment(1);
            tracing::warn!(error = %e, order_id = %order.id, "order cache write failed; invalidating");
            if self.cache.delete(&key).await.is_err() {
                metrics::counter!(CACHE_ERRORS_TOTAL, "cache" => "order", "operation" => "delete")
                    .increment(1);
            }
        }
    }

    /// Reads an order through the cache; the store answers when the cache misses or fails.
    async fn load_order(&self, id: Id) -> Result<Option<Order>, AppError> {
        let key = order_key(id);
        match self.cache.get(&key).await {
            Ok(Some(json)) => match serde_json::from_str::<Order>(&json) {
                Ok(order) => {
                    metrics::counter!(CACHE_HITS_TOTAL, "cache" => "order").increment(1);
                    return Ok(Some(order));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable order in cache; reading the store")
                }
            },
            Ok(None) => metrics::counter!(CACHE_MISSES_TOTAL, "cache" => "order").increment(1),
            Err(e) => {
                metrics::counter!(CACHE_ERRORS_TOTAL, "cache" => "order", "operation" => "get")
                    .increment(1);
                tracing::warn!(error = %e, "order cache read failed; reading the store");
            }
        }
        let order = backend_call("store", "find_order", self.orders.find_order(id)).await?;
        if let Some(order) = &order {
            let json = serde_json::to_string(order).expect("orders serialise");
            // Only fill an empty slot: a writer may have stored a newer status meanwhile.
            if self
                .cache
                .set_if_absent(&key, &json, self.cache_ttl)
                .await
                .is_err()
            {
                metrics::counter!(CACHE_ERRORS_TOTAL, "cache" => "order", "operation" => "set")
                    .increment(1);
            }
        }
        Ok(order)
    }

    async fn enqueue(&self, order_id: Id, request_id: Option<String>) -> Result<(), AppError> {
        let body = serde_json::to_string(&OrderMessage {
            order_id,
            request_id,
        })
        .expect("messages serialise");
        backend_call("queue", "send", self.sender.send(body)).await?;
        metrics::counter!(QUEUE_MESSAGES_SENT_TOTAL).increment(1);
        Ok(())
    }

    /// Applies one conditional transition and keeps cache and metrics in step.
    async fn transition(
        &self,
        order_id: Id,
        from: OrderStatus,
        to: OrderStatus,
        reason: Option<&str>,
    ) -> Result<TransitionOutcome, AppError> {
        let outcome = backend_call(
            "store",
            "transition_order",
            self.orders
                .transition_order(order_id, from, to, reason, crate::domain::now()),
        )
        .await?;
        if let TransitionOutcome::Moved(order) = &outcome {
            self.moved(order, from).await;
        }
        Ok(outcome)
    }

    /// The same transition for each order of `batch`, in one store call; each order as it now
    /// is (moved or not), `None` for an unknown id.
    async fn transition_all(
        &self,
        batch: &[&ProcessOrder],
        from: OrderStatus,
        to: OrderStatus,
    ) -> Result<Vec<Option<Order>>, AppError> {
        let ids: Vec<Id> = batch.iter().map(|d| d.message.order_id).collect();
        let outcomes = backend_call(
            "store",
            "transition_orders",
            self.orders
                .transition_orders(&ids, from, to, crate::domain::now()),
        )
        .await?;
        let orders: Vec<(bool, Option<Order>)> = outcomes
            .into_iter()
            .map(|outcome| match outcome {
                TransitionOutcome::Moved(order) => (true, Some(order)),
                TransitionOutcome::Refused(order) => (false, order),
            })
            .collect();
        // The cache writes of the orders that moved go out together (each a round trip on Redis).
        join_all(
            batch
                .iter()
                .zip(&orders)
                .filter_map(|(delivery, (moved, order))| {
                    Some((delivery, order.as_ref().filter(|_| *moved)?))
                })
                .map(|(delivery, order)| {
                    self.moved(order, from).instrument(process_span(delivery))
                }),
        )
        .await;
        Ok(orders.into_iter().map(|(_, order)| order).collect())
    }

    /// Keeps the cache, the log and the metrics in step with a status change that happened.
    async fn moved(&self, order: &Order, from: OrderStatus) {
        self.cache_order(order).await;
        tracing::info!(order_id = %order.id, from = from.as_str(), to = order.status.as_str(), "order status changed");
        match order.status {
            OrderStatus::Completed => {
                metrics::counter!(ORDERS_COMPLETED_TOTAL).increment(1);
                let waited = (order.updated_at - order.created_at)
                    .to_std()
                    .unwrap_or_default();
                metrics::histogram!(ORDER_COMPLETION_SECONDS).record(waited.as_secs_f64());
            }
            OrderStatus::Failed => metrics::counter!(ORDERS_FAILED_TOTAL).increment(1),
            OrderStatus::Cancelled => metrics::counter!(ORDERS_CANCELLED_TOTAL).increment(1),
            OrderStatus::Pending | OrderStatus::Processing => {}
        }
    }

    /// Emails the customer about the order's current (terminal) status, once per status.
    async fn notify(&self, order: &Order, request_id: Option<String>) -> Result<(), AppError> {
        let mut outcomes = self.notify_all(&[(order, request_id)]).await;
        outcomes.pop().expect("one outcome per order")
    }

    /// Emails each customer about their order's current (terminal) status, once per status; one
    /// outcome per order, in order. The claims (one write) and the recipients (one read) are
    /// asked for together, for all the orders at once, so the emails wait for the slower of two
    /// store calls instead of two calls per order in turn.
    async fn notify_all(&self, orders: &[(&Order, Option<String>)]) -> Vec<Result<(), AppError>> {
        let claims: Vec<_> = orders.iter().map(|(o, _)| (o.id, o.status)).collect();
        let user_ids: Vec<_> = orders.iter().map(|(o, _)| o.user_id).collect();
        let (claimed, users) = tokio::join!(
            backend_call(
                "store",
                "claim_notifications",
                self.orders.claim_notifications(&claims),
            ),
            backend_call("store", "find_users", self.accounts.find_users(&user_ids)),
        );
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(e) => return vec![Err(e.into()); orders.len()],
        };
        let sends = orders
            .iter()
            .zip(claimed)
            .enumerate()
            .map(|(i, ((order, request_id), claimed))| {
                let user = users.as_ref().map(|found| found[i].clone()).map_err(Clone::clone);
                async move {
                    if !claimed {
                        return Ok(());
                    }
                    let sent = self.email(order, user, request_id.clone()).await;
                    if let Err(e) = &sent {
                        // Give the claim back so the next delivery of the message tries again.
                        tracing::warn!(error = %e, order_id = %order.id, "order email not sent; will retry");
                        let _ = self.orders.release_notification(order.id, order.status)
                            .await;
                    }
                    sent
                }
            });
        join_all(sends).await
    }

    /// Hands one order's email to the mailer; `user` is the lookup of its customer.
    async fn email(
        &self,
        order: &Order,
        user: Result<Option<User>, BackendError>,
        request_id: Option<String>,
    ) -> Result<(), AppError> {
        let user = user?
            .ok_or_else(|| AppError::Internal(format!("order {} belongs to no user", order.id)))?;
        let email = SendOrderEmail {
            order: order.clone(),
            to: user.email,
            to_name: user.name,
            request_id,
        };
        ask(mailer::NAME, &self.mailer, email).await
    }

    async fn create(self, msg: CreateOrder) -> Result<PlacedOrder, AppError> {
        match msg.idempotency.clone() {
            None => self.place(msg, Id::new()).await,
            Some(key) => self.create_idempotent(msg, key).await,
        }
    }

    /// Honours an `Idempotency-Key` without locks or extra store operations. The first request
    /// with the key stores a record naming the order id it will use; every later request with
    /// the key (a retry, or a concurrent twin) reads that record, so all of them converge on one
    /// order id, and the store's unique id makes sure only one order is ever inserted.
    async fn create_idempotent(
        self,
        msg: CreateOrder,
        key: IdempotencyKey,
    ) -> Result<PlacedOrder, AppError> {
        let user_id = msg.principal.user_id;
        let now = crate::domain::now();
        let proposed = IdempotentOrder {
            order_id: Id::new(),
            first_seen_ms: now.timestamp_millis(),
        };
        let record = IdempotencyRecord {
            request_hash: key.request_fingerprint.clone(),
            status: 201,
            body: proposed.encode(),
        };
        let stored = backend_call(
            "store",
            "save_idempotency",
            self.idempotency
                .save_idempotency(user_id, &key.key, &record, now),
        )
        .await?;
        if stored.request_hash != key.request_fingerprint {
            return Err(AppError::IdempotencyKeyReused);
        }
        let claimed = IdempotentOrder::decode(&stored.body)
            .ok_or_else(|| AppError::Internal("unreadable idempotency record".into()))?;
        if claimed.order_id == proposed.order_id {
            return self.place(msg, claimed.order_id).await;
        }
        // Someone placed, or is placing, this order: wait for it rather than reserve stock twice.
        let deadline = tokio::time::Instant::now() + IDEMPOTENT_WAIT;
        loop {
            if let Some(order) = backend_call(
                "store",
                "find_order",
                self.orders.find_order(claimed.order_id),
            )
            .await?
            {
                return Ok(PlacedOrder {
                    order,
                    replayed: true,
                });
            }
            let abandoned =
                now.timestamp_millis() - claimed.first_seen_ms > IDEMPOTENT_WAIT.as_millis() as i64;
            if abandoned || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The first request failed (say, out of stock) or died before storing the order: place it
        // now under the same id; if it appears meanwhile, the insert finds it and we return that.
        self.place(msg, claimed.order_id).await
    }

    /// Reserves stock, stores the order under `order_id`, then queues it.
    async fn place(self, msg: CreateOrder, order_id: Id) -> Result<PlacedOrder, AppError> {
        let reserved = ask(
            inventory::NAME,
            &self.inventory,
            ReserveStock {
                lines: msg.lines.clone(),
            },
        )
        .await?;
        let items = reserved
            .into_iter()
            .map(|(product, line)| {
                OrderItem::new(product.id, product.name, product.price, line.quantity)
            })
            .collect();
        let mut order = Order::place(
            msg.principal.user_id,
            items,
            msg.shipping_address,
            msg.payment_method,
            crate::domain::now(),
        );
        order.id = order_id;
        if let Err(e) =
            backend_call("store", "insert_order", self.orders.insert_order(&order)).await
        {
            // The stock is ours but no new order holds it: give it back before answering.
            if let Err(release) = ask(
                inventory::NAME,
                &self.inventory,
                ReleaseStock { lines: msg.lines },
            )
            .await
            {
                tracing::error!(error = %release, order_id = %order.id, "could not return stock of an unsaved order");
            }
            if matches!(e, BackendError::Duplicate) {
                // A concurrent request with the same idempotency key stored it first.
                if let Some(existing) = self.orders.find_order(order_id).await? {
                    return Ok(PlacedOrder {
                        order: existing,
                        replayed: true,
                    });
                }
            }
            return Err(e.into());
        }
        metrics::counter!(ORDERS_CREATED_TOTAL).increment(1);
        tracing::info!(order_id = %order.id, total = order.total_amount.value(), "order placed");
        self.cache_order(&order).await;
        // The order is stored, so it is accepted whatever the queue does now: if the send fails,
        // the outbox reconciler sends it later (the order's `enqueued` flag stays unset).
        match self.enqueue(order.id, Some(msg.request_id)).await {
            Ok(()) => self.enqueued.mark(order.id),
            Err(e) => {
                tracing::warn!(error = %e, order_id = %order.id, "queue unavailable; the outbox will send the order")
            }
        }
        Ok(PlacedOrder {
            order,
            replayed: false,
        })
    }

    /// The outbox: orders stored but never confirmed on the queue are sent now. A message sent
    /// twice is harmless, since processing is idempotent.
    async fn resend_unqueued(&self) -> Result<(), AppError> {
        let before = crate::domain::now()
            - chrono::Duration::from_std(OUTBOX_GRACE).expect("small duration");
        let ids = self.orders.unenqueued_orders(before, 100).await?;
        for id in ids {
            self.enqueue(id, None).await?;
            self.orders.mark_enqueued(id).await?;
            metrics::counter!(OUTBOX_RESENT_TOTAL).increment(1);
            tracing::info!(order_id = %id, "outbox sent an order that was never queued");
        }
        Ok(())
    }

    async fn cancel(self, msg: CancelOrder) -> Result<Order, AppError> {
        let order = backend_call("store", "find_order", self.orders.find_order(msg.order_id))
            .await?
            .filter(|o| o.user_id == msg.principal.user_id || msg.principal.is_admin())
            .ok_or(AppError::NotFound("order"))?;
        if order.status != OrderStatus::Pending {
            return Err(AppError::InvalidTransition {
                current: order.status,
                action: "cancelled",
            });
        }
        let cancelled = match self
            .transition(order.id, OrderStatus::Pending, OrderStatus::Cancelled, None)
            .await?
        {
            TransitionOutcome::Moved(o) => o,
            TransitionOutcome::Refused(now) => {
                let current = now.map_or(order.status, |o| o.status);
                return Err(AppError::InvalidTransition {
                    current,
                    action: "cancelled",
                });
            }
        };
        if self
            .notify(&cancelled, Some(msg.request_id.clone()))
            .await
            .is_err()
        {
            // The cancellation stands; a worker will send the email from the queue.
            if let Err(e) = self.enqueue(cancelled.id, Some(msg.request_id)).await {
                tracing::error!(error = %e, order_id = %cancelled.id, "cancellation email could not be scheduled");
            }
        }
        Ok(cancelled)
    }

    /// Processes the deliveries of one receive; one outcome per delivery, in order. A delivery
    /// that failed on its last allowed attempt fails its order for good.
    async fn process_all(&self, deliveries: &[ProcessOrder]) -> Vec<Result<(), AppError>> {
        let outcomes = match self.process(deliveries).await {
            Ok(outcomes) => outcomes,
            Err(e) => {
                // Each step is a conditional change, so the orders carry on one by one from
                // wherever the batch stopped, and each message gets an outcome of its own.
                tracing::warn!(error = %e, messages = deliveries.len(), "processing a batch failed; processing its messages one by one");
                join_all(deliveries.iter().map(|d| async move {
                    let mut outcome = self.process(std::slice::from_ref(d)).await?;
                    outcome.pop().expect("one outcome per delivery")
                }))
                .await
            }
        };
        for (delivery, outcome) in deliveries.iter().zip(&outcomes) {
            if let Err(e) = outcome {
                let span = process_span(delivery);
                if delivery.last_attempt {
                    self.give_up(delivery, e).instrument(span).await;
                } else {
                    let _entered = span.enter();
                    tracing::warn!(error = %e, "processing failed; the message will be redelivered");
                }
            }
        }
        outcomes
    }

    /// Moves each delivery's order as far along its lifecycle as is due, and tells the customer.
    /// Each lifecycle step is one store call for all of them (on the embedded store, one write)
    /// instead of one per order. The conditional move out of pending doubles as the read: when
    /// it is refused (a redelivery, a cancelled order) the store answers with the order as it
    /// is, so no message costs a separate lookup first. `Err` when a step failed: nothing is
    /// decided about any of the messages then.
    async fn process(
        &self,
        deliveries: &[ProcessOrder],
    ) -> Result<Vec<Result<(), AppError>>, AppError> {
        // An order may have two messages in one receive (say, the outbox's and the original):
        // it is processed once, and its outcome answers both.
        let mut batch: Vec<&ProcessOrder> = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            if !batch
                .iter()
                .any(|d| d.message.order_id == delivery.message.order_id)
            {
                batch.push(delivery);
            }
        }
        let mut orders: Vec<(&ProcessOrder, Order)> = Vec::with_capacity(batch.len());
        let started = self
            .transition_all(&batch, OrderStatus::Pending, OrderStatus::Processing)
            .await?;
        for (delivery, order) in batch.iter().zip(started) {
            match order {
                Some(order) => orders.push((delivery, order)),
                None => {
                    let _entered = process_span(delivery).entered();
                    tracing::warn!("message for an unknown order; dropping it");
                }
            }
        }
        let processing: Vec<&ProcessOrder> = orders
            .iter()
            .filter(|(_, o)| o.status == OrderStatus::Processing)
            .map(|(d, _)| *d)
            .collect();
        if !processing.is_empty() {
            // Processing is where payment capture and fulfilment integrations plug in; today it
            // takes the configured time and the order is complete once its stock is reserved.
            if !self.processing_time.is_zero() {
                tokio::time::sleep(self.processing_time).await;
            }
            let completed = self
                .transition_all(&processing, OrderStatus::Processing, OrderStatus::Completed)
                .await?;
            for order in completed.into_iter().flatten() {
                if let Some((_, slot)) = orders.iter_mut().find(|(_, o)| o.id == order.id) {
                    *slot = order;
                }
            }
        }
        let terminal: Vec<(&Order, Option<String>)> = orders
            .iter()
            .filter(|(_, o)| o.status.is_terminal())
            .map(|(d, o)| (o, d.message.request_id.clone()))
            .collect();
        let emailed = self.notify_all(&terminal).await;
        let outcome_of = |id: Id| {
            terminal
                .iter()
                .zip(&emailed)
                .find(|((o, _), _)| o.id == id)
                .map_or(Ok(()), |(_, outcome)| outcome.clone())
        };
        Ok(deliveries
            .iter()
            .map(|d| outcome_of(d.message.order_id))
            .collect())
    }

    /// The message failed on its last allowed delivery: the order fails for good, its stock goes
    /// back and the customer is told. The message itself still goes to the dead-letter queue.
    async fn give_up(&self, msg: &ProcessOrder, cause: &AppError) {
        let id = msg.message.order_id;
        let reason = format!("processing failed after {} attempts", msg.receive_count);
        let result = async {
            // A pending order first moves to processing: failed is only reachable from there.
            let _ = self
                .transition(id, OrderStatus::Pending, OrderStatus::Processing, None)
                .await?;
            if let TransitionOutcome::Moved(order) = self
                .transition(
                    id,
                    OrderStatus::Processing,
                    OrderStatus::Failed,
                    Some(&reason),
                )
                .await?
            {
                tracing::error!(order_id = %id, cause = %cause, "order failed");
                self.notify(&order, msg.message.request_id.clone()).await?;
            }
            Ok::<(), AppError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::error!(order_id = %id, error = %e, "could not mark a failing order failed");
        }
    }
}

impl Handler<CreateOrder> for OrderActor {
    type Result = ResponseActFuture<Self, Result<PlacedOrder, AppError>>;
    fn handle(&mut self, msg: CreateOrder, _: &mut Context<Self>) -> Self::Result {
        let Some(permit) = self.admission.try_admit() else {
            metrics::counter!(ORDERS_SHED_TOTAL).increment(1);
            return Box::pin(actix::fut::ready(Err(AppError::Overloaded)));
        };
        let this = self.clone();
        guarded(NAME, async move {
            let placed = this.create(msg).await;
            drop(permit);
            placed
        })
    }
}

impl Handler<GetOrder> for OrderActor {
    type Result = ResponseActFuture<Self, Result<Order, AppError>>;
    fn handle(&mut self, msg: GetOrder, _: &mut Context<Self>) -> Self::Result {
        let this = self.clone();
        guarded(NAME, async move {
            this.load_order(msg.order_id)
                .await?
                .filter(|o| o.user_id == msg.principal.user_id || msg.principal.is_admin())
                .ok_or(AppError::NotFound("order"))
        })
    }
}

impl Handler<ListOrders> for OrderActor {
    type Result = ResponseActFuture<Self, Result<Page<Order>, AppError>>;
    fn handle(&mut self, msg: ListOrders, _: &mut Context<Self>) -> Self::Result {
        let orders = self.orders.clone();
        guarded(NAME, async move {
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

impl Handler<CancelOrder> for OrderActor {
    type Result = ResponseActFuture<Self, Result<Order, AppError>>;
    fn handle(&mut self, msg: CancelOrder, _: &mut Context<Self>) -> Self::Result {
        guarded(NAME, self.clone().cancel(msg))
    }
}

impl Handler<ProcessOrders> for OrderActor {
    type Result = ResponseActFuture<Self, Result<Vec<Result<(), AppError>>, AppError>>;
    fn handle(&mut self, msg: ProcessOrders, _: &mut Context<Self>) -> Self::Result {
        let this = self.clone();
        guarded(NAME, async move { Ok(this.process_all(&msg.0).await) })
    }
}

/// The span of one delivery's log lines.
fn process_span(delivery: &ProcessOrder) -> tracing::Span {
    tracing::info_span!(
        "process_order",
        order_id = %delivery.message.order_id,
        request_id = delivery.message.request_id.as_deref().unwrap_or("-"),
        receive_count = delivery.receive_count
    )
}
