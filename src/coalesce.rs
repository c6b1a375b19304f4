//! Coalescing: items submitted one at a time at about the same moment leave together in one
//! call, and each submitter gets its own item's outcome back. The queue's sends share
//! `SendMessageBatch`es this way (`queue::batcher`), and SES emails share
//! `SendBulkTemplatedEmail`s (`mail::batcher`): both services charge, and throttle, by request.
//!
//! The first item of a batch waits at most `linger` for company, and a batch leaves at once when
//! it is full. While every one of the `in_flight` calls is busy, items gather in the channel and
//! the next batch leaves fuller, so under heavy load batches fill by themselves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};

/// How batches are filled and sent.
#[derive(Clone, Copy, Debug)]
pub struct Batching {
    /// How long the first item of a batch waits for others.
    pub linger: Duration,
    /// Calls in progress at once.
    pub in_flight: usize,
    /// The most items one call takes.
    pub max_batch: usize,
}

/// Hands items to a flushing task; see the module comment.
pub struct Coalescer<T, R> {
    tx: mpsc::Sender<(T, oneshot::Sender<R>)>,
}

impl<T, R> Clone for Coalescer<T, R> {
    fn clone(&self) -> Self {
        Coalescer {
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Coalescer<T, R> {
    /// Starts the batching task on the current runtime. `flush` sends one batch and answers one
    /// outcome per item, in the batch's order.
    pub fn start<F, Fut>(batching: Batching, flush: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(run(rx, batching, Arc::new(flush)));
        Coalescer { tx }
    }

    /// Puts `item` in the next batch and waits for its outcome; `None` when the batching task
    /// is gone (the runtime is shutting down) or the flush answered for fewer items.
    pub async fn submit(&self, item: T) -> Option<R> {
        let (reply, outcome) = oneshot::channel();
        self.tx.send((item, reply)).await.ok()?;
        outcome.await.ok()
    }
}

async fn run<T, R, F, Fut>(
    mut rx: mpsc::Receiver<(T, oneshot::Sender<R>)>,
    batching: Batching,
    flush: Arc<F>,
) where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<R>> + Send + 'static,
{
    let in_flight = Arc::new(Semaphore::new(batching.in_flight.max(1)));
    let max_batch = batching.max_batch.max(1);
    while let Some(first) = rx.recv().await {
        // A free slot before the batch is collected: while every slot is busy, items gather in
        // the channel and the batch leaves fuller.
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + batching.linger;
        while batch.len() < max_batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(next)) => batch.push(next),
                Ok(None) | Err(_) => break,
            }
        }
        let flush = flush.clone();
        tokio::spawn(async move {
            let (items, replies): (Vec<T>, Vec<_>) = batch.into_iter().unzip();
            let outcomes = flush(items).await;
            drop(permit);
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(outcome);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn concurrent_items_share_bounded_batches_and_each_gets_its_own_outcome() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let recorded = sizes.clone();
        let coalescer = Coalescer::start(
            Batching {
                linger: Duration::from_millis(50),
                in_flight: 4,
                max_batch: 10,
            },
            move |items: Vec<u32>| {
                recorded.lock().unwrap().push(items.len());
                async move { items.into_iter().map(|i| i * 2).collect::<Vec<_>>() }
            },
        );
        let submits: Vec<_> = (0..25u32)
            .map(|i| {
                let c = coalescer.clone();
                tokio::spawn(async move { (i, c.submit(i).await) })
            })
            .collect();
        for s in submits {
            let (i, outcome) = s.await.unwrap();
            assert_eq!(outcome, Some(i * 2));
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 25);
        assert!(sizes.iter().all(|n| *n <= 10), "{sizes:?}");
        assert!(sizes.len() < 25, "items were not batched: {sizes:?}");
    }
}
