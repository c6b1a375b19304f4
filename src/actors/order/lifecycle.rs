//! Status changes: each one a conditional transition in the store, with the cache, the log and
//! the metrics kept in step; and cancellation, the one change a customer asks for.

use futures_util::future::join_all;
use tracing::Instrument;

use super::process::process_span;
use super::OrderActor;
use crate::domain::{Id, Order, OrderStatus};
use crate::error::AppError;
use crate::messages::order::{CancelOrder, ProcessOrder};
use crate::metrics::*;
use crate::store::TransitionOutcome;
use crate::telemetry::spans;

impl OrderActor {
    /// Applies one conditional transition and keeps cache and metrics in step.
    pub(super) async fn transition(
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
        .instrument(spans::transition(from.as_str(), to.as_str(), 1))
        .await?;
        if let TransitionOutcome::Moved(order) = &outcome {
            self.moved(order, from).await;
        }
        Ok(outcome)
    }

    /// The same transition for each order of `batch`, in one store call; each order as it now
    /// is (moved or not), `None` for an unknown id.
    pub(super) async fn transition_all(
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
        .instrument(spans::transition(from.as_str(), to.as_str(), ids.len()))
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

    /// Keeps the cache, the status streams, the log and the metrics in step with a status
    /// change that happened.
    pub(super) async fn moved(&self, order: &Order, from: OrderStatus) {
        self.events.publish(order);
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

    pub(super) async fn cancel(self, msg: CancelOrder) -> Result<Order, AppError> {
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
        // The email is claimed first: a cancellation that stands always has one to send. When
        // the claim can not be made, nothing is cancelled and the caller may try again.
        let claims = self.claim_ahead(&[&order], OrderStatus::Cancelled).await?;
        let outcome = match self
            .transition(order.id, OrderStatus::Pending, OrderStatus::Cancelled, None)
            .await
        {
            Ok(outcome) => outcome,
            Err(e) => {
                claims.give_back(&self).await;
                return Err(e);
            }
        };
        let (cancelled, now) = match outcome {
            TransitionOutcome::Moved(o) => (Ok(o.clone()), o),
            TransitionOutcome::Refused(now) => {
                let now = now.unwrap_or(order);
                let refused = AppError::InvalidTransition {
                    current: now.status,
                    action: "cancelled",
                };
                (Err(refused), now)
            }
        };
        claims
            .tell(&self, &[(&now, Some(msg.request_id.clone()))])
            .await;
        cancelled
    }
}
