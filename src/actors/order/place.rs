//! Placing an order: reserve its stock, store it, queue it; and the `Idempotency-Key` path
//! that makes a retried or doubled request converge on one order.
//!
//! The reservation is made under a hold (`crate::store::Hold`) that names the order, so its
//! stock is never held by nobody: once the order is stored the hold is forgotten (in the
//! background); when the order is known not stored (an idempotency twin stored it first) the
//! hold is given back at once; and in every case in between (a reservation or an insert whose
//! reply was lost, a process killed half-way) nothing is given back here, and the hold sweeper
//! (`crate::actors::holds`) decides once any write still in flight has landed: the order
//! stored with this hold (its `createdAt` is the hold's time), the hold is forgotten; not
//! stored, or stored by another attempt (a retry with the same `Idempotency-Key`), its stock
//! goes back. So a lost reply can not leak stock, and an insert that lands late can not find
//! its stock given back.

use std::time::Duration;

use super::OrderActor;
use crate::actors::ask;
use crate::actors::inventory;
use crate::domain::{Id, Order, OrderItem, OrderLine};
use crate::error::{AppError, BackendError};
use crate::messages::inventory::{ClearHold, ReleaseStock, ReserveStock};
use crate::messages::order::{CreateOrder, IdempotencyKey, PlacedOrder};
use crate::metrics::*;
use crate::queue::OrderMessage;
use crate::store::{Hold, IdempotencyRecord};

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
        // On an error nothing is known of what the reservation took; the hold sweeper is.
        let hold = Hold::new(order_id);
        let reserved = ask(
            inventory::NAME,
            &self.inventory,
            ReserveStock {
                lines: msg.lines.clone(),
                hold,
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
            // The hold's time, so that the stored order names the reservation it was placed
            // with: the sweeper tells a stored order's hold from a failed attempt's by it.
            hold.at,
        );
        order.id = order_id;
        match backend_call("store", "insert_order", self.orders.insert_order(&order)).await {
            Ok(()) => {}
            Err(BackendError::Duplicate) => {
                // A concurrent request with the same idempotency key stored it first: our
                // reservation is a second one, held by no order, so it goes back before the
                // answer (the stock reads right at once); the sweeper does it if this fails.
                self.release(msg.lines.clone(), hold).await;
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
            Err(e) => {
                if self.settle_ambiguous_insert(&order).await != Some(true) {
                    // Not stored, or not known: the insert may still land (a write cut by the
                    // timeout can), so the stock stays held; the hold sweeper gives it back
                    // only once the order is past landing and still absent.
                    tracing::warn!(error = %e, order_id = %order.id, "the order's insert failed; its stock stays held until the hold sweeper looks");
                    return Err(e.into());
                }
                // Applied after all (its reply was lost): the order is placed, stock and all.
                tracing::warn!(error = %e, order_id = %order.id, "the order's insert reported an error but was applied")
            }
        }
        self.inventory.do_send(ClearHold {
            hold,
            lines: msg.lines.clone(),
        });
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

    /// Gives back the stock of a reservation whose order is someone else's (a twin stored it
    /// first); if that fails, the hold sweeper gives it back later.
    async fn release(&self, lines: Vec<OrderLine>, hold: Hold) {
        if let Err(e) = ask(
            inventory::NAME,
            &self.inventory,
            ReleaseStock { lines, hold },
        )
        .await
        {
            tracing::warn!(error = %e, order_id = %hold.order_id, "could not return the stock of a second reservation; the hold sweeper will");
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
