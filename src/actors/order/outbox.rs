//! The outbox reconciler: orders stored but never confirmed on the queue are sent again. One
//! OrderActor per process runs it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;

use super::OrderActor;
use crate::error::AppError;
use crate::metrics::*;

/// How often the outbox reconciler looks for orders whose queue message was never confirmed.
const OUTBOX_INTERVAL: Duration = Duration::from_secs(5);

/// An order younger than this may still be on its way to the queue from the request that placed it.
const OUTBOX_GRACE: Duration = Duration::from_secs(10);

impl OrderActor {
    /// Runs a reconciler pass every `OUTBOX_INTERVAL`, never two at once.
    pub(super) fn start_outbox(&self, ctx: &mut Context<Self>) {
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

    /// The outbox: orders stored but never confirmed on the queue are sent now. A message sent
    /// twice is harmless, since processing is idempotent.
    async fn resend_unqueued(&self) -> Result<(), AppError> {
        let before = crate::domain::now()
            - chrono::Duration::from_std(OUTBOX_GRACE).expect("small duration");
        let ids = backend_call(
            "store",
            "unenqueued_orders",
            self.orders.unenqueued_orders(before, 100),
        )
        .await?;
        for id in ids {
            self.enqueue(id, None).await?;
            backend_call("store", "mark_enqueued", self.orders.mark_enqueued(id)).await?;
            metrics::counter!(OUTBOX_RESENT_TOTAL).increment(1);
            tracing::info!(order_id = %id, "outbox sent an order that was never queued");
        }
        Ok(())
    }
}
