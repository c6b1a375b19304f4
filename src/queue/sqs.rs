//! The real queue: AWS SQS (or anything that speaks its API, such as moto or LocalStack), so many
//! `api` processes can hand orders to many `worker` processes.
//!
//! SQS already has the semantics the embedded queue imitates (visibility timeout, receive count,
//! deletion by receipt handle), so this is a thin mapping. Dead letters are SQS's own business:
//! the queue's redrive policy moves a message received too often, and we only read the
//! dead-letter queue's size for `depth`.
//!
//! Configuration follows the AWS SDK's standard sources (`AWS_REGION`, `AWS_ENDPOINT_URL`,
//! `AWS_ENDPOINT_URL_SQS`, credentials from the environment, profile or instance role), so the
//! same binary runs against AWS and against a local emulator without code changes.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;

mod dead_letters;

use super::sqs_attributes::{trace_attributes, trace_of, TRACEPARENT, TRACESTATE};
use super::{
    DeadLetter, OutgoingMessage, Queue, QueueDepth, QueueResult, ReceivedMessage, MAX_BATCH,
};
use crate::aws::{emulator_credentials, https_client, load_sdk_config, sdk_error};
use crate::config::AwsConfig;
use crate::error::BackendError;
use crate::metrics::SQS_REQUESTS_TOTAL;

const BACKEND: &str = "queue";

/// SQS's limit for one long poll.
const MAX_WAIT: Duration = Duration::from_secs(20);
/// SQS's limit for a visibility timeout (12 hours).
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

/// Timeouts of every SQS call. The operation timeout must outlast the longest long poll (20 s)
/// with room for the answer; the connect timeout catches an unreachable endpoint quickly.
pub fn sqs_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_timeout(MAX_WAIT + Duration::from_secs(10))
        .build()
}

/// An SQS client for an explicit endpoint, without reading the environment: for tests and
/// tools that talk to a local emulator.
pub fn client_for_endpoint(endpoint: &str, region: &str) -> Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(https_client())
        .endpoint_url(endpoint)
        .region(Region::new(region.to_string()))
        .credentials_provider(emulator_credentials())
        .timeout_config(sqs_timeouts())
        .build();
    Client::from_conf(config)
}

fn queue_error<E>(operation: &str) -> impl FnOnce(SdkError<E>) -> BackendError + '_
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    move |e| sdk_error(BACKEND, operation, e)
}

/// Counts one SQS API call. SQS bills and throttles by request, so requests per order is a
/// number operators watch (and `bench/run --real` reports); batching is what keeps it low.
fn count_request(operation: &'static str) {
    metrics::counter!(SQS_REQUESTS_TOTAL, "operation" => operation).increment(1);
}

/// Whole seconds for SQS, rounded up so a sub-second wait or visibility is not silently zero.
fn whole_seconds(d: Duration, max: Duration) -> i32 {
    let d = d.min(max);
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// The SQS [`Queue`].
#[derive(Debug)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
    /// The dead-letter queue's URL, with the ARN it was resolved from: looked up once, and again
    /// only if the redrive policy starts pointing elsewhere.
    dead_letter_queue: Mutex<Option<(String, String)>>,
}

impl SqsQueue {
    /// The service's constructor: AWS configuration from the standard sources (see the module
    /// doc). Does no network call, so the service starts while SQS is unreachable; `ping` tells.
    pub async fn new(queue_url: String, aws: &AwsConfig) -> Result<SqsQueue, BackendError> {
        let sdk = load_sdk_config(aws, sqs_timeouts()).await;
        Ok(SqsQueue::from_client(Client::new(&sdk), queue_url))
    }

    /// A queue on an explicit endpoint (e.g. moto) with placeholder credentials, without reading
    /// the environment, so parallel tests need not mutate it.
    pub fn with_endpoint(queue_url: String, endpoint: &str, region: &str) -> SqsQueue {
        SqsQueue::from_client(client_for_endpoint(endpoint, region), queue_url)
    }

    pub fn from_client(client: Client, queue_url: String) -> SqsQueue {
        SqsQueue {
            client,
            queue_url,
            dead_letter_queue: Mutex::new(None),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// The queue's `RedrivePolicy` attribute, when it has one.
    async fn redrive_policy(&self) -> QueueResult<Option<String>> {
        count_request("GetQueueAttributes");
        Ok(self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(queue_error("GetQueueAttributes"))?
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::RedrivePolicy)))
    }

    /// The URL of the queue a redrive policy's `deadLetterTargetArn` names.
    async fn dead_letter_url(&self, arn: &str) -> QueueResult<String> {
        if let Some((known_arn, url)) = &*self
            .dead_letter_queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
        {
            if known_arn == arn {
                return Ok(url.clone());
            }
        }
        // arn:aws:sqs:<region>:<account>:<name>. The account matters when the dead-letter queue
        // belongs to another account.
        let mut parts = arn.rsplitn(3, ':');
        let name = parts.next().unwrap_or_default();
        let account = parts.next().filter(|a| !a.is_empty());
        count_request("GetQueueUrl");
        let url = self
            .client
            .get_queue_url()
            .queue_name(name)
            .set_queue_owner_aws_account_id(account.map(str::to_string))
            .send()
            .await
            .map_err(queue_error("GetQueueUrl (dead-letter queue)"))?
            .queue_url
            .ok_or_else(|| BackendError::other(BACKEND, "GetQueueUrl returned no URL"))?;
        *self
            .dead_letter_queue
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((arn.to_string(), url.clone()));
        Ok(url)
    }
}

/// Creates `<name>-dlq` and `<name>`, whose redrive policy moves a message to the former after
/// `max_receives` receives; returns `(queue_url, dead_letter_queue_url)`. Creating a queue that
/// exists with the same attributes is a no-op in SQS, so this is safe to run at every deploy.
pub async fn create_queue_with_dlq(
    client: &Client,
    name: &str,
    max_receives: u32,
) -> Result<(String, String), BackendError> {
    let dlq_url = client
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .map_err(queue_error("CreateQueue (dead-letter queue)"))?
        .queue_url
        .ok_or_else(|| BackendError::other(BACKEND, "CreateQueue returned no URL"))?;
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(queue_error("GetQueueAttributes (dead-letter queue)"))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| BackendError::other(BACKEND, "the dead-letter queue has no ARN"))?;
    let redrive_policy = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": max_receives.max(1).to_string(),
    })
    .to_string();
    let queue_url = client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::RedrivePolicy, redrive_policy)
        .send()
        .await
        .map_err(queue_error("CreateQueue"))?
        .queue_url
        .ok_or_else(|| BackendError::other(BACKEND, "CreateQueue returned no URL"))?;
    Ok((queue_url, dlq_url))
}

#[async_trait]
impl Queue for SqsQueue {
    async fn ping(&self) -> QueueResult<()> {
        count_request("GetQueueAttributes");
        self.client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(queue_error("GetQueueAttributes"))?;
        Ok(())
    }

    async fn send_messages(&self, bodies: &[OutgoingMessage]) -> QueueResult<()> {
        match bodies {
            [] => Ok(()),
            [body] => {
                count_request("SendMessage");
                self.client
                    .send_message()
                    .queue_url(&self.queue_url)
                    .message_body(&body.body)
                    .set_message_attributes(trace_attributes(&body.trace))
                    .send()
                    .await
                    .map_err(queue_error("SendMessage"))?;
                Ok(())
            }
            _ if bodies.len() > MAX_BATCH => Err(BackendError::other(
                BACKEND,
                format!(
                    "a batch holds at most {MAX_BATCH} messages, got {}",
                    bodies.len()
                ),
            )),
            _ => {
                let entries = bodies
                    .iter()
                    .enumerate()
                    .map(|(i, body)| {
                        SendMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .message_body(&body.body)
                            .set_message_attributes(trace_attributes(&body.trace))
                            .build()
                            .map_err(|e| BackendError::other(BACKEND, e))
                    })
                    .collect::<QueueResult<Vec<_>>>()?;
                count_request("SendMessageBatch");
                let output = self
                    .client
                    .send_message_batch()
                    .queue_url(&self.queue_url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(queue_error("SendMessageBatch"))?;
                let failed = output.failed();
                if failed.is_empty() {
                    return Ok(());
                }
                // Some entries may have gone through: the caller resends the whole batch, and the
                // duplicates are harmless because every order transition is conditional.
                let detail = format!(
                    "SendMessageBatch: {} of {} entries failed: {}",
                    failed.len(),
                    bodies.len(),
                    failed
                        .iter()
                        .map(|f| format!("#{} {} {}", f.id(), f.code(), f.message().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                if failed.iter().all(|f| !f.sender_fault()) {
                    Err(BackendError::unavailable(BACKEND, detail))
                } else {
                    Err(BackendError::other(BACKEND, detail))
                }
            }
        }
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> QueueResult<Vec<ReceivedMessage>> {
        count_request("ReceiveMessage");
        let output = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(whole_seconds(wait, MAX_WAIT))
            .visibility_timeout(whole_seconds(visibility, MAX_VISIBILITY))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names(TRACEPARENT)
            .message_attribute_names(TRACESTATE)
            .send()
            .await
            .map_err(queue_error("ReceiveMessage"))?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                Some(ReceivedMessage {
                    message_id: m.message_id.unwrap_or_default(),
                    // A message without a handle could never be deleted; SQS always sends one.
                    receipt_handle: m.receipt_handle?,
                    trace: trace_of(m.message_attributes.as_ref()),
                    body: m.body.unwrap_or_default(),
                    receive_count,
                })
            })
            .collect())
    }

    async fn delete_batch(&self, receipt_handles: &[String]) -> QueueResult<()> {
        for chunk in receipt_handles.chunks(MAX_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, handle)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(handle)
                        .build()
                        .map_err(|e| BackendError::other(BACKEND, e))
                })
                .collect::<QueueResult<Vec<_>>>()?;
            count_request("DeleteMessageBatch");
            let output = self
                .client
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(queue_error("DeleteMessageBatch"))?;
            // Not an error for the caller: an undeleted message comes back after its visibility
            // timeout and is processed (idempotently) and deleted again.
            for failed in output.failed() {
                tracing::warn!(
                    entry = failed.id(),
                    code = failed.code(),
                    message = failed.message().unwrap_or(""),
                    "SQS did not delete a processed message; it will be redelivered"
                );
            }
        }
        Ok(())
    }

    async fn extend_visibility(
        &self,
        receipt_handle: &str,
        visibility: Duration,
    ) -> QueueResult<()> {
        count_request("ChangeMessageVisibility");
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(whole_seconds(visibility, MAX_VISIBILITY))
            .send()
            .await
            .map_err(queue_error("ChangeMessageVisibility"))?;
        Ok(())
    }

    async fn redrive_max_receives(&self) -> QueueResult<Option<u32>> {
        let policy = self.redrive_policy().await?;
        Ok(policy
            .as_deref()
            .and_then(super::redrive::max_receive_count))
    }

    async fn depth(&self) -> QueueResult<QueueDepth> {
        count_request("GetQueueAttributes");
        let mut attributes = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(queue_error("GetQueueAttributes"))?
            .attributes
            .unwrap_or_default();
        let count = |a: &mut std::collections::HashMap<QueueAttributeName, String>, name| {
            a.remove(&name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let visible = count(
            &mut attributes,
            QueueAttributeName::ApproximateNumberOfMessages,
        );
        let in_flight = count(
            &mut attributes,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        );

        let dead_letter_arn = attributes
            .remove(&QueueAttributeName::RedrivePolicy)
            .as_deref()
            .and_then(super::redrive::dead_letter_arn);
        let dead_letters = match dead_letter_arn {
            None => 0,
            Some(arn) => {
                let url = self.dead_letter_url(&arn).await?;
                count_request("GetQueueAttributes");
                let mut dlq = self
                    .client
                    .get_queue_attributes()
                    .queue_url(url)
                    .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                    .send()
                    .await
                    .map_err(queue_error("GetQueueAttributes (dead-letter queue)"))?
                    .attributes
                    .unwrap_or_default();
                count(&mut dlq, QueueAttributeName::ApproximateNumberOfMessages)
            }
        };
        Ok(QueueDepth {
            visible,
            in_flight,
            dead_letters,
        })
    }

    async fn dead_letters(&self, limit: usize) -> QueueResult<Vec<DeadLetter>> {
        self.list_dead_letters(limit).await
    }

    async fn redrive(&self, ids: Option<&[String]>) -> QueueResult<Vec<String>> {
        self.redrive_dead_letters(ids).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up_to_whole_seconds_within_limits() {
        assert_eq!(whole_seconds(Duration::ZERO, MAX_WAIT), 0);
        assert_eq!(whole_seconds(Duration::from_millis(200), MAX_WAIT), 1);
        assert_eq!(whole_seconds(Duration::from_secs(5), MAX_WAIT), 5);
        assert_eq!(whole_seconds(Duration::from_secs(60), MAX_WAIT), 20);
        assert_eq!(
            whole_seconds(Duration::from_secs(86_400), MAX_VISIBILITY),
            43_200
        );
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_unavailable() {
        let queue = SqsQueue::with_endpoint(
            "http://127.0.0.1:1/123456789012/orders".into(),
            "http://127.0.0.1:1",
            "us-east-1",
        );
        let err = queue.ping().await.unwrap_err();
        assert!(
            matches!(
                err,
                BackendError::Unavailable {
                    backend: "queue",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
