//! Stock holds, the background half: forgetting the holds of stored orders (batched, off the
//! request path) and the hold sweeper, which gives back the stock of reservations whose order
//! was never stored (see `crate::store::Catalogue` for why a hold exists).
//!
//! A hold is forgotten only once its order is stored; one lost here (a crash, a store fault)
//! is forgotten by the sweeper instead, which finds the order stored. The sweeper looks at
//! holds older than `STOCK_HOLD_EXPIRY`: long past the request that made them, so an order
//! insert still in flight (cut by `BACKEND_TIMEOUT` on our side, not yet applied on the
//! server's) has landed by then, and its stock is not given back under it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::domain::OrderLine;
use crate::error::AppError;
use crate::metrics::backend_call;
use crate::round_trips;
use crate::store::{Catalogue, Hold};

/// Most holds forgotten in one store call.
const MAX_CLEARS: usize = 256;
/// Most stale holds one sweep looks at; more wait for the next pass.
const SWEEP_BATCH: u32 = 200;

/// The handle of the clearing task; it ends when the last handle is dropped.
#[derive(Clone)]
pub struct HoldClears {
    held: mpsc::UnboundedSender<(Hold, Vec<OrderLine>)>,
}

impl HoldClears {
    /// Starts the clearing task on the current runtime.
    pub fn start(catalogue: Arc<dyn Catalogue>) -> HoldClears {
        let (held, inbox) = mpsc::unbounded_channel();
        // The tail of placing an order, as the outbox flags are: counted as the request path's
        // round trips, though nobody waits for them.
        tokio::spawn(round_trips::request_tail(run(catalogue, inbox)));
        HoldClears { held }
    }

    /// Forgets the hold soon; returns at once.
    pub fn clear(&self, hold: Hold, lines: Vec<OrderLine>) {
        if self.held.send((hold, lines)).is_err() {
            tracing::debug!(order_id = %hold.order_id, "hold not cleared; the hold sweeper will");
        }
    }
}

/// Takes what is waiting, forgets it in one store call, and again.
async fn run(
    catalogue: Arc<dyn Catalogue>,
    mut inbox: mpsc::UnboundedReceiver<(Hold, Vec<OrderLine>)>,
) {
    let mut batch = Vec::with_capacity(MAX_CLEARS);
    while inbox.recv_many(&mut batch, MAX_CLEARS).await > 0 {
        if let Err(e) = backend_call("store", "clear_holds", catalogue.clear_holds(&batch)).await {
            tracing::warn!(error = %e, orders = batch.len(), "could not clear the stock holds of stored orders; the hold sweeper will");
        }
        batch.clear();
    }
}

/// One sweeper pass: gives back the stock of stale holds whose order was never stored, and
/// forgets the stale holds of stored orders, until none older than `expiry` is left.
pub async fn sweep(catalogue: &dyn Catalogue, expiry: Duration) -> Result<(), AppError> {
    let expiry = chrono::Duration::from_std(expiry).unwrap_or(chrono::Duration::MAX);
    loop {
        let before = crate::domain::now() - expiry;
        let swept = backend_call(
            "store",
            "sweep_holds",
            catalogue.sweep_holds(before, SWEEP_BATCH),
        )
        .await?;
        if swept.returned > 0 {
            tracing::warn!(
                lines = swept.returned,
                "gave back stock held by reservations whose order was never stored"
            );
        }
        if swept.returned + swept.cleared < u64::from(SWEEP_BATCH) / 2 {
            return Ok(());
        }
    }
}
