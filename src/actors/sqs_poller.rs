//! SqsPollerActor: the worker's loop. It long-polls the queue for up to ten messages, hands them
//! to OrderActor as one batch, and deletes the ones that were processed. A message that fails is left alone:
//! it comes back after its visibility timeout, and after too many receives the queue moves it to
//! the dead-letter queue. Several polls run at once (`WORKER_CONCURRENCY / 10`, at least one).
//!
//! Shutdown: `StopPolling` stops new receives, interrupts long polls that are only waiting, and
//! replies when every batch in flight is processed and deleted.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::{oneshot, watch};
use tracing::Instrument;

use super::order::{self, OrderActor};
use super::{ask, count_restart};
use crate::config::QueueSettings;
use crate::messages::order::{ProcessOrder, ProcessOrders};
use crate::messages::sqs_poller::{Poll, StopPolling};
use crate::metrics::*;
use crate::queue::{OrderMessage, Queue, ReceivedMessage, MAX_BATCH};
use crate::telemetry;

pub const NAME: &str = "sqs_poller";
const ERROR_BACKOFF: Duration = Duration::from_secs(1);
const DEPTH_INTERVAL: Duration = Duration::from_secs(5);

pub struct SqsPollerActor {
    queue: Arc<dyn Queue>,
    orders: Addr<OrderActor>,
    settings: QueueSettings,
    batches_in_flight: usize,
    stop_tx: watch::Sender<bool>,
    stopped_waiters: Vec<oneshot::Sender<()>>,
}

impl SqsPollerActor {
    pub fn new(queue: Arc<dyn Queue>, orders: Addr<OrderActor>, settings: QueueSettings) -> Self {
        SqsPollerActor {
            queue,
            orders,
            settings,
            batches_in_flight: 0,
            stop_tx: watch::channel(false).0,
            stopped_waiters: vec![],
        }
    }

    fn is_stopping(&self) -> bool {
        *self.stop_tx.borrow()
    }

    fn parallel_polls(&self) -> usize {
        self.settings.worker_concurrency.div_ceil(MAX_BATCH).max(1)
    }
}

impl Actor for SqsPollerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        for _ in 0..self.parallel_polls() {
            ctx.notify(Poll);
        }
        ctx.run_interval(DEPTH_INTERVAL, |actor, ctx| {
            let queue = actor.queue.clone();
            ctx.spawn(actix::fut::wrap_future(async move {
                if let Ok(depth) = backend_call("queue", "depth", queue.depth()).await {
                    metrics::gauge!(QUEUE_DEPTH, "state" => "visible").set(depth.visible as f64);
                    metrics::gauge!(QUEUE_DEPTH, "state" => "in_flight")
                        .set(depth.in_flight as f64);
                    metrics::gauge!(QUEUE_DEPTH, "state" => "dead_letter")
                        .set(depth.dead_letters as f64);
                }
            }));
        });
        tracing::info!(
            polls = self.parallel_polls(),
            "worker polling the order queue"
        );
    }
}

impl Supervised for SqsPollerActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        count_restart(NAME);
        self.batches_in_flight = 0;
    }
}

impl Handler<Poll> for SqsPollerActor {
    type Result = ();
    fn handle(&mut self, _: Poll, ctx: &mut Context<Self>) {
        if self.is_stopping() {
            return;
        }
        self.batches_in_flight += 1;
        let batch = poll_once(
            self.queue.clone(),
            self.orders.clone(),
            self.settings.clone(),
            self.stop_tx.subscribe(),
        );
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(batch).map(|outcome, actor, ctx| {
                actor.batches_in_flight -= 1;
                if actor.is_stopping() {
                    if actor.batches_in_flight == 0 {
                        for waiter in actor.stopped_waiters.drain(..) {
                            let _ = waiter.send(());
                        }
                    }
                } else if outcome.is_err() {
                    ctx.notify_later(Poll, ERROR_BACKOFF);
                } else {
                    ctx.notify(Poll);
                }
            }),
        );
    }
}

impl Handler<StopPolling> for SqsPollerActor {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, _: StopPolling, _: &mut Context<Self>) -> Self::Result {
        let _ = self.stop_tx.send(true);
        let (tx, rx) = oneshot::channel();
        if self.batches_in_flight == 0 {
            let _ = tx.send(());
        } else {
            self.stopped_waiters.push(tx);
        }
        Box::pin(async move {
            let _ = rx.await;
            tracing::info!("worker stopped polling; in-flight messages are done");
        })
    }
}

/// One receive and the processing of what it brought. `Err` means the queue itself failed.
async fn poll_once(
    queue: Arc<dyn Queue>,
    orders: Addr<OrderActor>,
    settings: QueueSettings,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ()> {
    // Not timed like other backend calls: a long poll's duration is mostly waiting for work,
    // which would drown the latency histogram. Its failures are counted below. Bounded all the
    // same: the wait it asked for, plus the answer's own `BACKEND_TIMEOUT`.
    let receive = crate::deadline::within(
        "queue",
        settings.wait_time + crate::deadline::backend_timeout(),
        queue.receive(MAX_BATCH, settings.wait_time, settings.visibility_timeout),
    );
    let messages = tokio::select! {
        received = receive => received,
        // A long poll that is only waiting is abandoned at shutdown; had it just received
        // messages, they reappear after their visibility timeout.
        _ = stop.wait_for(|stopping| *stopping) => return Ok(()),
    };
    let messages = match messages {
        Ok(m) => m,
        Err(e) => {
            metrics::counter!(BACKEND_ERRORS_TOTAL, "backend" => "queue", "operation" => "receive")
                .increment(1);
            tracing::warn!(error = %e, "queue receive failed; backing off");
            return Err(());
        }
    };
    if messages.is_empty() {
        return Ok(());
    }
    metrics::counter!(QUEUE_MESSAGES_RECEIVED_TOTAL).increment(messages.len() as u64);
    let process = telemetry::worker::consume_spans(&messages);
    async {
        let receipts = process_batch(queue.as_ref(), &orders, &settings, &messages).await;
        if !receipts.is_empty() {
            match backend_call("queue", "delete", queue.delete_batch(&receipts)).await {
                Ok(()) => {
                    metrics::counter!(QUEUE_MESSAGES_DELETED_TOTAL).increment(receipts.len() as u64)
                }
                // Processing is idempotent: the messages come back and are acknowledged again.
                Err(e) => tracing::warn!(error = %e, "could not delete processed messages"),
            }
        }
    }
    .instrument(process)
    .await;
    Ok(())
}

/// Keeps messages hidden while their processing runs: every half visibility timeout their
/// timeouts are extended, so long work is not delivered to a second worker meanwhile. If this
/// process dies, the extensions stop and the messages come back after one timeout.
async fn with_visibility_heartbeat<F: Future>(
    queue: &dyn Queue,
    receipts: &[&str],
    visibility: Duration,
    work: F,
) -> F::Output {
    tokio::pin!(work);
    let every = (visibility / 2).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = tokio::time::sleep(every) => {
                for receipt in receipts {
                    if let Err(e) = backend_call("queue", "extend_visibility", queue.extend_visibility(receipt, visibility)).await {
                        tracing::warn!(error = %e, "could not extend a message's visibility");
                    }
                }
            }
        }
    }
}

/// Processes one receive's messages together (OrderActor takes them as one batch, so each step
/// of the lifecycle is one store call for all of them); returns the receipt handles of those
/// that may be deleted.
async fn process_batch(
    queue: &dyn Queue,
    orders: &Addr<OrderActor>,
    settings: &QueueSettings,
    messages: &[ReceivedMessage],
) -> Vec<String> {
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(messages.len());
    let mut parsed: Vec<&ReceivedMessage> = Vec::with_capacity(messages.len());
    for message in messages {
        let last_attempt = message.receive_count >= settings.max_receives;
        match serde_json::from_str::<OrderMessage>(&message.body) {
            Ok(order_message) => {
                deliveries.push(ProcessOrder::new(
                    order_message,
                    message.receive_count,
                    last_attempt,
                ));
                parsed.push(message);
            }
            Err(e) => {
                tracing::error!(message_id = %message.message_id, error = %e, receive_count = message.receive_count, "unparseable queue message");
                if last_attempt {
                    dead_lettered(message);
                }
            }
        }
    }
    if deliveries.is_empty() {
        return vec![];
    }
    let receipts: Vec<&str> = parsed.iter().map(|m| m.receipt_handle.as_str()).collect();
    let work = ask(order::NAME, orders, ProcessOrders(deliveries));
    let outcomes =
        with_visibility_heartbeat(queue, &receipts, settings.visibility_timeout, work).await;
    let elapsed = started.elapsed().as_secs_f64();
    // The whole batch fails only when OrderActor could not take it (or panicked).
    if let Err(e) = &outcomes {
        tracing::warn!(error = %e, messages = parsed.len(), "a batch of messages could not be processed; they will be redelivered");
    }
    let mut done = Vec::with_capacity(parsed.len());
    let mut again = Vec::new();
    for (i, message) in parsed.into_iter().enumerate() {
        metrics::histogram!(QUEUE_MESSAGE_PROCESSING_SECONDS).record(elapsed);
        if outcomes.as_ref().is_ok_and(|each| each[i].is_ok()) {
            done.push(message.receipt_handle.clone());
        } else if message.receive_count >= settings.max_receives {
            dead_lettered(message);
        } else {
            again.push(message);
        }
    }
    retry_soon(queue, &again, settings.visibility_timeout).await;
    done
}

/// A delivery that failed (a backend timed out, the write lock was busy) comes back after a
/// short backoff that doubles with each receive, not after the whole visibility timeout: a
/// customer's order should not wait 30 s for a fault that lasted one. If this fails too, the
/// message simply comes back at its timeout.
async fn retry_soon(queue: &dyn Queue, messages: &[&ReceivedMessage], visibility: Duration) {
    for message in messages {
        let doubling = Duration::from_secs(1u64 << message.receive_count.clamp(1, 5));
        let backoff = doubling.min(visibility);
        let call = queue.extend_visibility(&message.receipt_handle, backoff);
        if let Err(e) = backend_call("queue", "extend_visibility", call).await {
            tracing::warn!(error = %e, "could not shorten a failed message's visibility");
        }
    }
}

fn dead_lettered(message: &ReceivedMessage) {
    metrics::counter!(QUEUE_MESSAGES_DEAD_LETTERED_TOTAL).increment(1);
    tracing::error!(message_id = %message.message_id, "message failed its last allowed delivery; it goes to the dead-letter queue");
}
