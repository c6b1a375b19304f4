//! SqsPollerActor's inbox.

use actix::Message;

/// Receive the next batch (sent by the poller to itself, so each batch is one mailbox turn).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Poll;

/// Stop receiving; replies once the batch in flight is processed, for graceful shutdown.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopPolling;
