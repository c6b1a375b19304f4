//! Group commit for order inserts: the orders placed while one `insertMany` is in flight go
//! out together in the next one, unordered, each with its own outcome (a duplicate id refuses
//! only its own order). An order placed alone waits for nothing: the task takes whatever is
//! waiting the moment it is free. On MongoDB that is one round trip per batch instead of one
//! per order; on FerretDB, one serialised write (and a share of one lock acquisition).

use mongodb::Collection;
use tokio::sync::{mpsc, oneshot};

use super::bulk::insert_many_outcomes;
use super::documents::OrderDoc;
use super::errors::BACKEND;
use super::write_lock::Writes;
use crate::error::BackendError;
use crate::round_trips::{self, WorkPath};
use crate::store::StoreResult;

/// Most orders in one `insertMany`: well under the server's 16 MiB message and 100,000 writes.
const MAX_BATCH: usize = 128;

type Pending = (OrderDoc, oneshot::Sender<StoreResult<()>>);

/// The handle; clones share the task, which ends when the last handle is dropped.
#[derive(Clone)]
pub(super) struct InsertBatcher {
    pending: mpsc::UnboundedSender<Pending>,
}

impl InsertBatcher {
    /// Starts the task on the current runtime.
    pub(super) fn start(orders: Collection<OrderDoc>, writes: Writes) -> InsertBatcher {
        let (pending, inbox) = mpsc::unbounded_channel();
        // Only order placement inserts orders: its round trips are the request path's.
        tokio::spawn(round_trips::scope(
            WorkPath::Request,
            run(orders, writes, inbox),
        ));
        InsertBatcher { pending }
    }

    /// Inserts one order with whatever else is waiting. `Duplicate` when the id is taken.
    pub(super) async fn insert(&self, order: OrderDoc) -> StoreResult<()> {
        let (answer, outcome) = oneshot::channel();
        let gone = || BackendError::unavailable(BACKEND, "the order writer stopped");
        self.pending.send((order, answer)).map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?
    }
}

async fn run(
    orders: Collection<OrderDoc>,
    writes: Writes,
    mut inbox: mpsc::UnboundedReceiver<Pending>,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while inbox.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (docs, answers): (Vec<OrderDoc>, Vec<_>) = batch.drain(..).unzip();
        let count = docs.len();
        // Bounded here too, not only by each caller's `BACKEND_TIMEOUT`: a reply lost on the way
        // back would otherwise hold this task (and, on FerretDB, the write lock it renews) for
        // good, and every later order with it. The callers look their orders up after a fault.
        let write = writes.run(orders.insert_many(&docs).ordered(false));
        let bound = crate::deadline::backend_timeout();
        let outcomes = crate::deadline::within(BACKEND, bound, async { Ok(write.await) })
            .await
            .and_then(|result| insert_many_outcomes(result, count));
        match outcomes {
            Ok(outcomes) => {
                for (answer, outcome) in answers.into_iter().zip(outcomes) {
                    let _ = answer.send(outcome);
                }
            }
            Err(e) => {
                for answer in answers {
                    let _ = answer.send(Err(e.clone()));
                }
            }
        }
    }
}
