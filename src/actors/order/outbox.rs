//! The outbox reconciler: orders stored but never confirmed on the queue are sent again, in
//! batches and concurrently, until none is left. One OrderActor per process runs it, along with
//! the stranded-order sweeper (`stranded.rs`), on the same pass machinery.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::{join_all, BoxFuture};

use super::OrderActor;
use crate::domain::Id;
use crate::error::AppError;
use crate::metrics::*;

/// How often the outbox reconciler looks for orders whose queue message was never confirmed.
const OUTBOX_INTERVAL: Duration = Duration::from_secs(5);

/// An order younger than this may still be on its way to the queue from the request that placed it.
const OUTBOX_GRACE: Duration = Duration::from_secs(10);

/// Orders read per store call; all of them are sent at once, so the send batcher fills its
/// batches (ten messages a request) and keeps several requests in flight.
const OUTBOX_BATCH: u32 = 500;

impl OrderActor {
    /// Runs `pass` every `interval`, never two at once (`busy` is set while one runs).
    pub(super) fn run_passes(
        ctx: &mut Context<Self>,
        interval: Duration,
        busy: Arc<AtomicBool>,
        what: &'static str,
        pass: fn(OrderActor) -> BoxFuture<'static, Result<(), AppError>>,
    ) {
        ctx.run_interval(interval, move |actor, ctx| {
            if busy.swap(true, Ordering::AcqRel) {
                return;
            }
            let (this, busy) = (actor.clone(), busy.clone());
            ctx.spawn(actix::fut::wrap_future(async move {
                if let Err(e) = pass(this).await {
                    tracing::warn!(error = %e, "{what} pass failed");
                }
                busy.store(false, Ordering::Release);
            }));
        });
    }

    /// Runs a reconciler pass every `OUTBOX_INTERVAL`, and the stranded-order sweeper.
    pub(super) fn start_outbox(&self, ctx: &mut Context<Self>) {
        Self::run_passes(
            ctx,
            OUTBOX_INTERVAL,
            self.outbox_busy.clone(),
            "outbox reconciler",
            |this| Box::pin(async move { this.resend_unqueued().await }),
        );
        Self::run_passes(
            ctx,
            self.sweep_interval(),
            Arc::new(AtomicBool::new(false)),
            "stranded-order sweeper",
            |this| Box::pin(async move { this.resend_stranded().await }),
        );
    }

    /// The outbox: orders stored but never confirmed on the queue are sent now, a batch at a
    /// time until the backlog is gone (after a queue outage it can be minutes of orders). A
    /// message sent twice is harmless, since processing is idempotent.
    async fn resend_unqueued(&self) -> Result<(), AppError> {
        let before = crate::domain::now()
            - chrono::Duration::from_std(OUTBOX_GRACE).expect("small duration");
        loop {
            let ids = backend_call(
                "store",
                "unenqueued_orders",
                self.orders.unenqueued_orders(before, OUTBOX_BATCH),
            )
            .await?;
            let sent = self.resend(&ids, OUTBOX_RESENT_TOTAL, "outbox").await?;
            backend_call(
                "store",
                "mark_enqueued",
                self.orders.mark_enqueued_many(&sent),
            )
            .await?;
            if ids.len() < OUTBOX_BATCH as usize {
                return Ok(());
            }
        }
    }

    /// Sends the messages of `ids` all at once; the ids whose send succeeded. `Err` when none
    /// did (the queue is down: the next pass tries again), so a pass stops instead of spinning.
    pub(super) async fn resend(
        &self,
        ids: &[Id],
        counter: &'static str,
        who: &'static str,
    ) -> Result<Vec<Id>, AppError> {
        let outcomes = join_all(ids.iter().map(|&id| self.enqueue(id, None))).await;
        let mut sent = Vec::with_capacity(ids.len());
        let mut failure = None;
        for (&id, outcome) in ids.iter().zip(outcomes) {
            match outcome {
                Ok(()) => sent.push(id),
                Err(e) => failure = Some(e),
            }
        }
        if !sent.is_empty() {
            metrics::counter!(counter).increment(sent.len() as u64);
            tracing::info!(orders = sent.len(), "{who} sent orders again");
        }
        match failure {
            Some(e) if sent.is_empty() => Err(e),
            _ => Ok(sent),
        }
    }
}
