//! Coalesces sends: orders placed at about the same moment share one `SendMessageBatch` (up to
//! ten messages) instead of one request each, which is what SQS charges and throttles by.
//!
//! A sender hands its body to the batcher and waits for the outcome of the batch it joined, so
//! callers keep their simple "sent or failed" answer. The batcher waits at most `linger` for
//! company after the first message; under light load that adds `linger` to one request, under
//! heavy load batches fill up at once.
//!
//! How it batches is the queue's to say ([`REMOTE`], [`LOCAL`]): on SQS several batches go out
//! at once (one at a time would cap the service at ten messages per round trip, about 500
//! orders/s at SQS's typical 20 ms) and a send waits a few milliseconds for company. The embedded queue
//! takes one batch at a time without waiting: the messages that arrive while a batch is
//! written gather in the channel and leave together in the next one. The mechanics are
//! `crate::coalesce`'s, shared with the SES mailer's batches.

use std::sync::Arc;
use std::time::Duration;

use super::{OutgoingMessage, Queue, TraceCarrier, MAX_BATCH};
use crate::coalesce::{Batching, Coalescer};
use crate::error::BackendError;

/// For a queue that bills per request and answers in tens of milliseconds (SQS): enough
/// batches out to keep it busy, few enough not to flood a queue in trouble.
pub const REMOTE: Batching = Batching {
    linger: Duration::from_millis(3),
    in_flight: 16,
    max_batch: MAX_BATCH,
};

/// For the embedded queue: no request costs anything but the write itself.
pub const LOCAL: Batching = Batching {
    linger: Duration::ZERO,
    in_flight: 1,
    max_batch: MAX_BATCH,
};

#[derive(Clone)]
pub struct SendBatcher {
    sends: Coalescer<OutgoingMessage, Result<(), BackendError>>,
}

impl SendBatcher {
    /// Starts the batching task on the current runtime.
    pub fn start(queue: Arc<dyn Queue>, batching: Batching) -> Self {
        let sends = Coalescer::start(batching, move |messages: Vec<OutgoingMessage>| {
            let queue = queue.clone();
            async move {
                // One request for the batch: its outcome is every message's.
                let outcome = queue.send_messages(&messages).await;
                vec![outcome; messages.len()]
            }
        });
        SendBatcher { sends }
    }

    /// Sends one body in the next batch and waits until that batch was sent. The message
    /// carries the context of the current span (the queue send's), for the worker to join.
    pub async fn send(&self, body: String) -> Result<(), BackendError> {
        let message = OutgoingMessage {
            body,
            trace: TraceCarrier::of(&tracing::Span::current()),
        };
        self.sends.submit(message).await.unwrap_or_else(|| {
            Err(BackendError::unavailable(
                "queue",
                "the send batcher stopped",
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{DeadLetter, QueueDepth, QueueResult, ReceivedMessage};
    use std::sync::Mutex;

    /// Records the size of each batch it is sent.
    #[derive(Default)]
    struct Recorder {
        batches: Mutex<Vec<usize>>,
    }

    #[async_trait::async_trait]
    impl Queue for Recorder {
        async fn ping(&self) -> QueueResult<()> {
            Ok(())
        }
        async fn send_messages(&self, messages: &[OutgoingMessage]) -> QueueResult<()> {
            self.batches.lock().unwrap().push(messages.len());
            Ok(())
        }
        async fn receive(
            &self,
            _: usize,
            _: Duration,
            _: Duration,
        ) -> QueueResult<Vec<ReceivedMessage>> {
            Ok(vec![])
        }
        async fn delete_batch(&self, _: &[String]) -> QueueResult<()> {
            Ok(())
        }
        async fn extend_visibility(&self, _: &str, _: Duration) -> QueueResult<()> {
            Ok(())
        }
        async fn depth(&self) -> QueueResult<QueueDepth> {
            Ok(QueueDepth::default())
        }
        async fn dead_letters(&self, _: usize) -> QueueResult<Vec<DeadLetter>> {
            Ok(vec![])
        }
        async fn redrive(&self, _: Option<&[String]>) -> QueueResult<Vec<String>> {
            Ok(vec![])
        }
    }

    #[tokio::test]
    async fn concurrent_sends_share_batches_of_at_most_ten() {
        let recorder = Arc::new(Recorder::default());
        let batcher = SendBatcher::start(
            recorder.clone(),
            Batching {
                linger: Duration::from_millis(50),
                in_flight: 4,
                ..REMOTE
            },
        );
        let sends: Vec<_> = (0..25)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { b.send(format!("m{i}")).await })
            })
            .collect();
        for s in sends {
            s.await.unwrap().unwrap();
        }
        let batches = recorder.batches.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 25);
        assert!(batches.iter().all(|n| *n <= MAX_BATCH), "{batches:?}");
        assert!(batches.len() < 25, "sends were not batched: {batches:?}");
    }
}
