//! Placing an order: reserve its stock, store it, queue it; and the `Idempotency-Key` path
//! that makes a retried or doubled request converge on one order.

use std::time::Duration;

use super::OrderActor;
use crate::actors::ask;
use crate::actors::inventory;
use crate::domain::{Id, Order, OrderItem, OrderLine};
use crate::error::{AppError, BackendError};
use crate::messages::inventory::{ReleaseStock, ReserveStock};
use crate::messages::order::{CreateOrder, IdempotencyKey, PlacedOrder};
use crate::metrics::*;
use crate::queue::OrderMessage;
use crate::store::IdempotencyRecord;

/// Pauses before each new look at an order whose insert outcome is unknown: some 10 minutes in
/// all, to ride out an outage of the store.
const SETTLE_PAUSES: [Duration; 8] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(180),
    Duration::from_secs(300),
];

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

impl OrderActor {
    pub(super) async fn create(self, msg: CreateOrder) -> Result<PlacedOrder, AppError> {
        match msg.idempotency.clone() {
            None => self.place(msg, Id::new()).await,
            Some(key) => self.create_idempotent(msg, key).await,
        }
    }

    /// Honours an `Idempotency-Key` without locks or extra store operations. The first request
    /// with the key stores a record naming the order id it will use; every later request with
    /// the key (a retry, or a concurrent twin) reads that record, so all of them converge on one
    /// order id, and the store's unique id makes sure only one order is ever inserted.
    pub(super) async fn create_idempotent(
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
    pub(super) async fn place(
        self,
        msg: CreateOrder,
        order_id: Id,
    ) -> Result<PlacedOrder, AppError> {
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
        match backend_call("store", "insert_order", self.orders.insert_order(&order)).await {
            Ok(()) => {}
            Err(BackendError::Duplicate) => {
                // A concurrent request with the same idempotency key stored it first: our
                // reservation is a second one, held by no order, so it goes back.
                self.release(msg.lines, order.id).await;
                if let Some(existing) =
                    backend_call("store", "find_order", self.orders.find_order(order_id)).await?
                {
                    return Ok(PlacedOrder {
                        order: existing,
                        replayed: true,
                    });
                }
                return Err(BackendError::Duplicate.into());
            }
            Err(e) => match self.settle_ambiguous_insert(&order).await {
                // Applied after all (its reply was lost): the order is placed, stock and all.
                Some(true) => {
                    tracing::warn!(error = %e, order_id = %order.id, "the order's insert reported an error but was applied")
                }
                Some(false) => {
                    self.release(msg.lines, order.id).await;
                    return Err(e.into());
                }
                None => {
                    self.settle_later(order.id, msg.lines);
                    return Err(e.into());
                }
            },
        }
        metrics::counter!(ORDERS_CREATED_TOTAL).increment(1);
        tracing::info!(order_id = %order.id, total = order.total_amount.value(), "order placed");
        self.events.publish(&order);
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

    /// Whether an order whose insert failed with a fault (not a refusal) is stored: a write
    /// whose reply was lost to a timeout or a reset may have been applied, and giving back the
    /// stock of an order that exists oversells it. `None` when the store can not tell yet.
    async fn settle_ambiguous_insert(&self, order: &Order) -> Option<bool> {
        backend_call("store", "find_order", self.orders.find_order(order.id))
            .await
            .ok()
            .map(|found| found.is_some())
    }

    /// The store could not say whether the order was stored: its stock stays reserved until
    /// it can. Asked again with growing pauses (well past any write still in flight); found,
    /// the order is left to the outbox like any unqueued order; absent, its stock goes back.
    fn settle_later(&self, order_id: Id, lines: Vec<OrderLine>) {
        let this = self.clone();
        actix::spawn(async move {
            for pause in SETTLE_PAUSES {
                tokio::time::sleep(pause).await;
                match backend_call("store", "find_order", this.orders.find_order(order_id)).await {
                    Ok(Some(_)) => {
                        tracing::warn!(%order_id, "an order answered 503 was stored after all; the outbox sends it");
                        return;
                    }
                    Ok(None) => {
                        this.release(lines, order_id).await;
                        return;
                    }
                    Err(_) => continue,
                }
            }
            tracing::error!(%order_id, "could not learn whether an order was stored; its stock stays reserved");
        });
    }

    /// Gives back the stock of an order that was not stored.
    async fn release(&self, lines: Vec<OrderLine>, order_id: Id) {
        if let Err(e) = ask(inventory::NAME, &self.inventory, ReleaseStock { lines }).await {
            tracing::error!(error = %e, %order_id, "could not return stock of an unsaved order");
        }
    }

    pub(super) async fn enqueue(
        &self,
        order_id: Id,
        request_id: Option<String>,
    ) -> Result<(), AppError> {
        let body = serde_json::to_string(&OrderMessage {
            order_id,
            request_id,
        })
        .expect("messages serialise");
        backend_call("queue", "send", self.sender.send(body)).await?;
        metrics::counter!(QUEUE_MESSAGES_SENT_TOTAL).increment(1);
        Ok(())
    }
}
