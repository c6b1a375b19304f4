//! Group commit for order inserts: the orders placed while one `insertMany` is in flight go
//! out together in the next one, unordered, each with its own outcome (a duplicate id refuses
//! only its own order). An order placed alone waits for nothing: the task takes whatever is
//! waiting the moment it is free. On MongoDB that is one round trip per batch instead of one
//! per order; on FerretDB, one serialised write (and a share of one lock acquisition).
//!
//! Each order's outbox entry (`outbox`, keyed by the order's id) goes out first, in one
//! `insertMany` of its own, and an order is inserted only once its entry is stored. So a stored
//! order always has its entry until the queue confirms it, even if the process dies between the
//! two writes; an entry whose order never got stored is found and dropped by the outbox pass.

use mongodb::Collection;
use tokio::sync::{mpsc, oneshot};

use super::bulk::insert_many_outcomes;
use super::documents::{OrderDoc, OutboxDoc};
use super::errors::{db_error, BACKEND};
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
    pub(super) fn start(
        orders: Collection<OrderDoc>,
        outbox: Collection<OutboxDoc>,
        writes: Writes,
    ) -> InsertBatcher {
        let (pending, inbox) = mpsc::unbounded_channel();
        let target = Target {
            orders,
            outbox,
            writes,
        };
        // Only order placement inserts orders: its round trips are the request path's.
        tokio::spawn(round_trips::scope(WorkPath::Request, run(target, inbox)));
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

/// Where a batch goes.
struct Target {
    orders: Collection<OrderDoc>,
    outbox: Collection<OutboxDoc>,
    writes: Writes,
}

async fn run(target: Target, mut inbox: mpsc::UnboundedReceiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while inbox.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (docs, answers): (Vec<OrderDoc>, Vec<_>) = batch.drain(..).unzip();
        match insert_batch(&target, docs).await {
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

/// The outbox entries, then the orders whose entry is stored: each order's outcome, or `Err`
/// when nothing is known of the batch. Both inserts are one write, so on FerretDB one turn at
/// the write lock; and bounded here too, not only by each caller's `BACKEND_TIMEOUT`: a reply
/// lost on the way back would otherwise hold this task (and, on FerretDB, the write lock it
/// renews) for good, and every later order with it. The callers look their orders up after a
/// fault.
async fn insert_batch(target: &Target, docs: Vec<OrderDoc>) -> StoreResult<Vec<StoreResult<()>>> {
    let in_one_turn = async { Ok(entries_then_orders(target, docs).await) };
    let turn = async { Ok(target.writes.run(in_one_turn).await) };
    let bound = crate::deadline::backend_timeout();
    match crate::deadline::within(BACKEND, bound, turn).await? {
        Ok(outcomes) => outcomes,
        // The write lock's refusal: nothing was sent.
        Err(e) => Err(db_error(e)),
    }
}

async fn entries_then_orders(
    target: &Target,
    docs: Vec<OrderDoc>,
) -> StoreResult<Vec<StoreResult<()>>> {
    let entries: Vec<OutboxDoc> = docs.iter().map(OutboxDoc::for_order).collect();
    let entered = insert_many_outcomes(target.outbox.insert_many(&entries).await, entries.len())?;
    // A duplicate entry is an order placed twice under one id (an idempotency race): the order
    // insert below answers that one. Any other refusal keeps its order out.
    let mut outcomes: Vec<StoreResult<()>> = Vec::with_capacity(docs.len());
    let mut admitted = Vec::with_capacity(docs.len());
    for (doc, entry) in docs.into_iter().zip(entered) {
        match entry {
            Ok(()) | Err(BackendError::Duplicate) => {
                outcomes.push(Ok(()));
                admitted.push(doc);
            }
            Err(e) => outcomes.push(Err(e)),
        }
    }
    if admitted.is_empty() {
        return Ok(outcomes);
    }
    let inserted =
        insert_many_outcomes(target.orders.insert_many(&admitted).await, admitted.len())?;
    let mut inserted = inserted.into_iter();
    for outcome in outcomes.iter_mut().filter(|o| o.is_ok()) {
        *outcome = inserted.next().expect("one outcome per admitted order");
    }
    Ok(outcomes)
}
