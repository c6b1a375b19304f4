//! Whether the queue's own redrive policy leaves the service its last delivery.
//!
//! The worker's last attempt (receive `QUEUE_MAX_RECEIVES`) is the one that ends an order
//! `failed`, returns its stock and tells the customer. An SQS redrive policy whose
//! `maxReceiveCount` is lower moves the message to the dead-letter queue before that attempt,
//! and the order strands. This is a misconfiguration to report (log and `/ready`), not a reason
//! to refuse traffic. The embedded queue dead-letters by `QUEUE_MAX_RECEIVES` itself.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::OnceCell;
use utoipa::ToSchema;

use super::{Queue, QueueResult};

/// The stable code of the warning, for alerts and scripts.
pub const REDRIVE_BEFORE_LAST_ATTEMPT: &str = "queue_redrive_before_last_attempt";

/// A misconfiguration `/ready` reports without failing.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ConfigWarning {
    #[schema(example = "queue_redrive_before_last_attempt")]
    pub code: &'static str,
    pub detail: String,
}

/// The check, run once it succeeds: at start, and by `/ready` while SQS has not answered yet.
pub struct RedriveCheck {
    queue: Arc<dyn Queue>,
    max_receives: u32,
    outcome: OnceCell<Option<ConfigWarning>>,
}

impl RedriveCheck {
    pub fn new(queue: Arc<dyn Queue>, max_receives: u32) -> RedriveCheck {
        RedriveCheck {
            queue,
            max_receives,
            outcome: OnceCell::new(),
        }
    }

    /// The warning, if the policy dead-letters too early; `None` as well while the queue can
    /// not be asked (the next call asks again).
    pub async fn warning(&self) -> Option<ConfigWarning> {
        match self.outcome.get_or_try_init(|| self.check()).await {
            Ok(warning) => warning.clone(),
            Err(e) => {
                tracing::debug!(error = %e, "could not read the queue's redrive policy yet");
                None
            }
        }
    }

    async fn check(&self) -> QueueResult<Option<ConfigWarning>> {
        let Some(limit) = self.queue.redrive_max_receives().await? else {
            return Ok(None);
        };
        if limit >= self.max_receives {
            return Ok(None);
        }
        tracing::warn!(
            max_receive_count = limit,
            queue_max_receives = self.max_receives,
            "the queue's redrive policy dead-letters a message before the service's last attempt: \
             raise its maxReceiveCount to at least QUEUE_MAX_RECEIVES, or orders strand"
        );
        Ok(Some(ConfigWarning {
            code: REDRIVE_BEFORE_LAST_ATTEMPT,
            detail: format!(
                "the queue's redrive policy has maxReceiveCount {limit}, below QUEUE_MAX_RECEIVES \
                 {}: messages are dead-lettered before the attempt that fails the order",
                self.max_receives
            ),
        }))
    }
}

/// `maxReceiveCount` of a `RedrivePolicy` attribute; AWS writes it as a number or a string.
pub fn max_receive_count(policy: &str) -> Option<u32> {
    let policy: serde_json::Value = serde_json::from_str(policy).ok()?;
    match &policy["maxReceiveCount"] {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// `deadLetterTargetArn` of a `RedrivePolicy` attribute: the dead-letter queue.
pub fn dead_letter_arn(policy: &str) -> Option<String> {
    let policy: serde_json::Value = serde_json::from_str(policy).ok()?;
    policy["deadLetterTargetArn"].as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::max_receive_count;

    #[test]
    fn reads_the_count_as_a_number_or_a_string() {
        assert_eq!(max_receive_count(r#"{"maxReceiveCount":2}"#), Some(2));
        assert_eq!(max_receive_count(r#"{"maxReceiveCount":"7"}"#), Some(7));
        assert_eq!(max_receive_count(r#"{"deadLetterTargetArn":"x"}"#), None);
        assert_eq!(max_receive_count("not json"), None);
    }
}
