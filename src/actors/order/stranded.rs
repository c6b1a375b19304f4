//! The stranded-order sweeper: an order still pending or processing long after its last change
//! (`ORDER_STUCK_AFTER`) has lost its message, whatever its outbox flag says. That happens when
//! the last delivery's `give_up` could not reach the store either (the message is then
//! dead-lettered with the order untouched), when a queue loses a message, or when the queue
//! dead-letters before the worker's last attempt (a redrive `maxReceiveCount` below
//! `QUEUE_MAX_RECEIVES`). The order is sent again: processing is idempotent, so a message that
//! was only slow costs a duplicate delivery (and the waits between re-sends double, so a queue
//! backlog is not fed one more copy of each of its orders per bound), and one that keeps failing ends in `give_up`, which
//! fails the order, returns its stock and tells the customer.

use std::time::Duration;

use super::OrderActor;
use crate::error::AppError;
use crate::metrics::*;

/// Orders sent again per pass at most; a larger backlog takes several passes.
const SWEEP_BATCH: u32 = 500;

impl OrderActor {
    /// How often the sweeper looks: once per bound (never more often than every second). Each
    /// process sweeps, but the store's claims send a stranded order once across all of them,
    /// with a doubling wait between re-sends (`crate::store::orders::resend_due`).
    pub(super) fn sweep_interval(&self) -> Duration {
        self.stuck_after.max(Duration::from_secs(1))
    }

    /// One pass: the orders not terminal, unchanged for `stuck_after` and due, claimed and sent
    /// back on the queue. A send that fails leaves its order claimed: it goes out again when
    /// the claim's wait is over.
    pub(super) async fn resend_stranded(&self) -> Result<(), AppError> {
        let ids = backend_call(
            "store",
            "claim_stranded",
            self.orders
                .claim_stranded(crate::domain::now(), self.stuck_after, SWEEP_BATCH),
        )
        .await?;
        for id in &ids {
            tracing::warn!(order_id = %id, "order stranded (not terminal past ORDER_STUCK_AFTER); sending it again");
        }
        self.resend(&ids, ORDERS_STRANDED_RESENT_TOTAL, "stranded-order sweeper")
            .await
            .map(drop)
    }
}
