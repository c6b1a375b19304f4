//! Queue processing: the deliveries of one receive moved through the lifecycle together (one
//! store call per step), and an order failed for good when its message runs out of attempts.

use futures_util::future::join_all;
use tracing::Instrument;

use super::OrderActor;
use crate::domain::{Id, Order, OrderStatus};
use crate::error::AppError;
use crate::messages::order::ProcessOrder;
use crate::store::TransitionOutcome;

impl OrderActor {
    /// Processes the deliveries of one receive; one outcome per delivery, in order. A delivery
    /// that failed on its last allowed attempt fails its order for good.
    pub(super) async fn process_all(
        &self,
        deliveries: &[ProcessOrder],
    ) -> Vec<Result<(), AppError>> {
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
    pub(super) async fn process(
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
        // The orders moved to completed here are emailed through the claims made ahead of the
        // move (`claim_ahead`); the others already terminal (a redelivery, a cancelled order)
        // through `notify_all`.
        let mut claimed_ahead: Vec<Id> = Vec::new();
        if !processing.is_empty() {
            let before: Vec<Order> = orders
                .iter()
                .filter(|(_, o)| o.status == OrderStatus::Processing)
                .map(|(_, o)| o.clone())
                .collect();
            let before_refs: Vec<&Order> = before.iter().collect();
            // Processing is where payment capture and fulfilment integrations plug in; today it
            // takes the configured time and the order is complete once its stock is reserved.
            self.take_processing_time().await;
            // The completion emails are claimed after the processing, not during it: a worker
            // that dies mid-processing then leaves no claim behind, and the redelivery that
            // completes the order wins the claim and emails at once. Claimed during it, the
            // dead worker's fresh claim would hold the email back for the whole resend lease.
            let claims = self
                .claim_ahead(&before_refs, OrderStatus::Completed)
                .await?;
            let completed = match self
                .transition_all(&processing, OrderStatus::Processing, OrderStatus::Completed)
                .await
            {
                Ok(completed) => completed,
                Err(e) => {
                    claims.give_back(self).await;
                    return Err(e);
                }
            };
            for order in completed.into_iter().flatten() {
                if let Some((_, slot)) = orders.iter_mut().find(|(_, o)| o.id == order.id) {
                    *slot = order;
                }
            }
            claimed_ahead = before.iter().map(|o| o.id).collect();
            let now: Vec<(&Order, Option<String>)> = claimed_ahead
                .iter()
                .filter_map(|id| orders.iter().find(|(_, o)| o.id == *id))
                .map(|(d, o)| (o, d.message.request_id.clone()))
                .collect();
            claims.tell(self, &now).await;
        }
        let terminal: Vec<(&Order, Option<String>)> = orders
            .iter()
            .filter(|(_, o)| o.status.is_terminal() && !claimed_ahead.contains(&o.id))
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
    /// back and the customer is told (the email claimed first, as for every terminal change).
    /// When the store can not be reached for that either, the order stays as it is, for the
    /// stranded-order sweeper. The message itself still goes to the dead-letter queue.
    pub(super) async fn give_up(&self, msg: &ProcessOrder, cause: &AppError) {
        let id = msg.message.order_id;
        let reason = format!("processing failed after {} attempts", msg.receive_count);
        let result = async {
            // A pending order first moves to processing: failed is only reachable from there.
            let order = match self
                .transition(id, OrderStatus::Pending, OrderStatus::Processing, None)
                .await?
            {
                TransitionOutcome::Moved(order) | TransitionOutcome::Refused(Some(order)) => order,
                TransitionOutcome::Refused(None) => return Ok(()),
            };
            if order.status != OrderStatus::Processing {
                return Ok(());
            }
            let claims = self.claim_ahead(&[&order], OrderStatus::Failed).await?;
            let outcome = match self
                .transition(
                    id,
                    OrderStatus::Processing,
                    OrderStatus::Failed,
                    Some(&reason),
                )
                .await
            {
                Ok(outcome) => outcome,
                Err(e) => {
                    claims.give_back(self).await;
                    return Err(e);
                }
            };
            if let TransitionOutcome::Moved(_) = &outcome {
                tracing::error!(order_id = %id, cause = %cause, "order failed");
            }
            if let TransitionOutcome::Moved(now) | TransitionOutcome::Refused(Some(now)) = outcome {
                claims
                    .tell(self, &[(&now, msg.message.request_id.clone())])
                    .await;
            }
            Ok::<(), AppError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::error!(order_id = %id, error = %e, "could not mark a failing order failed");
        }
    }
}

impl OrderActor {
    /// The configured processing time, if any.
    async fn take_processing_time(&self) {
        if !self.processing_time.is_zero() {
            tokio::time::sleep(self.processing_time).await;
        }
    }
}

/// The span of one delivery's work and log lines (made once, when it was received).
pub(super) fn process_span(delivery: &ProcessOrder) -> tracing::Span {
    delivery.span.clone()
}
