//! Status events across processes through Redis pub/sub: every process publishes its changes on
//! one channel; every process serving the API listens and feeds the others' into its bus.
//!
//! The publisher never makes a transition wait: events go into a bounded queue drained by one
//! task, which sends what has gathered as one pipeline (one round trip for a worker's batch).
//! An event that can not be sent (Redis down, queue full) is counted
//! (`order_events_unpublished_total`) and logged. Pub/sub delivers at most once, so what
//! brings such an event, or one a listener missed while it was not subscribed, is the store:
//! a listener reads it for the time it was not subscribed each time it subscribes again, and
//! a client that resumes with `Last-Event-ID` reads it for the time it was away. A live stream
//! that misses an unpublished event sees the order's next change, or its state on resuming.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::Client;
use tokio::sync::mpsc;

use super::bus::Bus;
use super::{store_feed, OrderEvent, Wire};
use crate::domain::Order;
use crate::metrics::ORDER_EVENTS_UNPUBLISHED_TOTAL;
use crate::store::Orders;

/// Events waiting to be published at most; past it they are dropped and counted.
const QUEUE: usize = 16_384;
/// Events sent in one pipeline at most.
const PIPELINE: usize = 256;
/// Bound of one connect or pipeline.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Wait before subscribing again after the subscription broke.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// The channel, under the deployment's key prefix.
pub fn channel(prefix: &str) -> String {
    format!("{prefix}order-events")
}

/// A process's id on the channel, so it skips its own messages.
fn new_origin() -> u64 {
    rand::random()
}

/// Sends this process's events to the channel (see the module doc).
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::Sender<String>,
    origin: u64,
}

impl Publisher {
    /// Starts the sending task on the current runtime.
    pub fn start(client: Client, channel: String) -> Publisher {
        let (tx, rx) = mpsc::channel(QUEUE);
        actix_web::rt::spawn(send_loop(client, channel, rx));
        Publisher {
            tx,
            origin: new_origin(),
        }
    }

    pub fn origin(&self) -> u64 {
        self.origin
    }

    pub fn send(&self, order: &Order) {
        let wire = Wire {
            origin: self.origin,
            order: order.clone(),
        };
        let payload = serde_json::to_string(&wire).expect("an order serialises");
        if self.tx.try_send(payload).is_err() {
            metrics::counter!(ORDER_EVENTS_UNPUBLISHED_TOTAL).increment(1);
        }
    }
}

async fn send_loop(client: Client, channel: String, mut rx: mpsc::Receiver<String>) {
    let mut connection: Option<ConnectionManager> = None;
    let mut batch = Vec::with_capacity(PIPELINE);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < PIPELINE {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let sent = tokio::time::timeout(CALL_TIMEOUT, async {
            if connection.is_none() {
                connection = Some(ConnectionManager::new(client.clone()).await?);
            }
            let conn = connection.as_mut().expect("connected above");
            let mut pipe = redis::pipe();
            for payload in &batch {
                pipe.cmd("PUBLISH").arg(&channel).arg(payload).ignore();
            }
            pipe.query_async::<()>(conn).await
        })
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            metrics::counter!(ORDER_EVENTS_UNPUBLISHED_TOTAL).increment(batch.len() as u64);
            tracing::warn!(
                events = batch.len(),
                "status events could not be published to Redis; listeners recover them from the store"
            );
            connection = None;
        }
        batch.clear();
    }
}

/// Listens on the channel until the bus is closed, passing other processes' events to `bus`.
/// Each time it (re)subscribes, it first reads the store for what it may have missed since it
/// last heard the channel.
pub async fn listen(
    client: Client,
    channel: String,
    origin: u64,
    bus: Arc<Bus>,
    orders: Arc<dyn Orders>,
) {
    let mut missed_since = crate::domain::now() - store_feed::READ_BACK;
    while !bus.is_closed() {
        let subscribed = tokio::time::timeout(CALL_TIMEOUT, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channel.as_str()).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        let Ok(Ok(pubsub)) = subscribed else {
            tracing::warn!("status events: can not subscribe to Redis; trying again");
            tokio::time::sleep(RESUBSCRIBE_AFTER).await;
            continue;
        };
        if bus.has_subscribers() {
            if let Err(e) = store_feed::catch_up(&orders, &bus, missed_since).await {
                tracing::warn!(error = %e, "status events: could not read the changes missed while unsubscribed");
            }
        }
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            let Ok(wire) = serde_json::from_slice::<Wire>(message.get_payload_bytes()) else {
                tracing::warn!("status events: unreadable message on the Redis channel");
                continue;
            };
            if wire.origin != origin && bus.has_subscribers() {
                bus.publish(Arc::new(OrderEvent::new(&wire.order)));
            }
            if bus.is_closed() {
                return;
            }
        }
        tracing::warn!("status events: Redis subscription lost; subscribing again");
        missed_since = crate::domain::now() - store_feed::READ_BACK;
        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
    }
}
