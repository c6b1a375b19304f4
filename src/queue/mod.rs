//! The order queue, with SQS semantics so the embedded queue and AWS SQS are interchangeable:
//! at-least-once delivery, a visibility timeout during which a received message is hidden,
//! a receive count, dead letters after too many receives, deletion by receipt handle.

pub mod batcher;
pub mod redrive;
pub mod sqlite;
pub mod sqs;
mod sqs_attributes;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::Id;
use crate::error::BackendError;
pub use crate::telemetry::propagation::TraceCarrier;

pub type QueueResult<T> = Result<T, BackendError>;

/// SQS's limit for one receive or one batch call.
pub const MAX_BATCH: usize = 10;

#[derive(Clone, Debug)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// 1 on the first delivery.
    pub receive_count: u32,
    /// The trace context of the send, so processing joins the sender's trace.
    pub trace: TraceCarrier,
}

/// A message to send: its body, and the trace context it travels with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub body: String,
    pub trace: TraceCarrier,
}

/// A message the queue gave up on after too many receives (the dead-letter queue).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The id the message had on the queue; what `redrive` is given to pick it.
    pub message_id: String,
    pub body: String,
    /// Receives before it was dead-lettered (on SQS, including those of `dlq list` itself).
    pub receive_count: u32,
    /// When it was dead-lettered (embedded queue), or first sent (SQS, which does not say
    /// when it moved).
    pub moved_at: chrono::DateTime<chrono::Utc>,
}

/// Messages sitting in the queue, as far as the backend can tell.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueueDepth {
    pub visible: u64,
    pub in_flight: u64,
    pub dead_letters: u64,
}

#[async_trait]
pub trait Queue: Send + Sync + 'static {
    async fn ping(&self) -> QueueResult<()>;
    /// Sends up to [`MAX_BATCH`] messages in one call.
    async fn send_messages(&self, messages: &[OutgoingMessage]) -> QueueResult<()>;
    /// Sends up to [`MAX_BATCH`] bodies without trace context (tests, tools).
    async fn send_batch(&self, bodies: &[String]) -> QueueResult<()> {
        let messages: Vec<OutgoingMessage> = bodies
            .iter()
            .map(|body| OutgoingMessage {
                body: body.clone(),
                trace: TraceCarrier::default(),
            })
            .collect();
        self.send_messages(&messages).await
    }
    /// Waits up to `wait` for at least one message, and returns up to `max` of them, each hidden
    /// for `visibility`.
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> QueueResult<Vec<ReceivedMessage>>;
    /// Deletes processed messages by receipt handle.
    async fn delete_batch(&self, receipt_handles: &[String]) -> QueueResult<()>;
    /// Hides a message for longer, for work that runs long.
    async fn extend_visibility(
        &self,
        receipt_handle: &str,
        visibility: Duration,
    ) -> QueueResult<()>;
    async fn depth(&self) -> QueueResult<QueueDepth>;
    /// The receives after which the backend itself dead-letters a message (SQS's redrive
    /// `maxReceiveCount`), when that is set apart from `QUEUE_MAX_RECEIVES`; see [`redrive`].
    async fn redrive_max_receives(&self) -> QueueResult<Option<u32>> {
        Ok(None)
    }
    /// Up to `limit` dead letters, oldest first, for the on-call (`order-service dlq list`).
    /// They stay where they are.
    async fn dead_letters(&self, limit: usize) -> QueueResult<Vec<DeadLetter>>;
    /// Moves dead letters back onto the queue, as new messages with a fresh receive count: the
    /// ones whose `message_id` is in `ids`, or every one when `ids` is `None`. Returns the ids
    /// moved (an id not found is simply absent).
    async fn redrive(&self, ids: Option<&[String]>) -> QueueResult<Vec<String>>;
    /// Deletes the dead letters older than `before`; how many went. SQS does this itself (the
    /// dead-letter queue's `MessageRetentionPeriod`), so by default nothing is done here.
    async fn purge_dead_letters(&self, before: chrono::DateTime<chrono::Utc>) -> QueueResult<u64> {
        let _ = before;
        Ok(0)
    }
}

/// What travels in a message: which order, and the request id that placed it so the worker's
/// and mailer's log lines can be joined to the HTTP request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OrderMessage {
    pub order_id: Id,
    #[serde(default)]
    pub request_id: Option<String>,
}
