//! The SQS dead-letter queue (the one the queue's redrive policy names), for the on-call.
//! SQS lists messages only by receiving them, so listing hides them for a few seconds
//! (`PEEK_VISIBILITY`) and then lets them reappear; redriving sends each chosen body to the
//! queue and only then deletes it from the dead-letter queue, so a failure in between leaves
//! a duplicate (harmless: processing is idempotent), never a loss. Messages received but not
//! chosen are made visible again at once.

use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use chrono::DateTime;

use super::{count_request, queue_error, whole_seconds, SqsQueue, MAX_VISIBILITY};
use crate::error::BackendError;
use crate::queue::{DeadLetter, QueueResult, MAX_BATCH};

/// How long listed messages stay hidden: long enough for one listing to page through them
/// without seeing one twice.
const PEEK_VISIBILITY: Duration = Duration::from_secs(10);
/// How long messages being moved stay hidden from another redrive.
const MOVE_VISIBILITY: Duration = Duration::from_secs(60);

impl SqsQueue {
    /// The dead-letter queue's URL, from the redrive policy.
    async fn dead_letter_queue(&self) -> QueueResult<String> {
        let arn = self
            .redrive_policy()
            .await?
            .as_deref()
            .and_then(crate::queue::redrive::dead_letter_arn)
            .ok_or_else(|| {
                BackendError::other(
                    "queue",
                    "the queue has no redrive policy, so no dead-letter queue",
                )
            })?;
        self.dead_letter_url(&arn).await
    }

    /// One receive of up to ten dead letters, hidden for `visibility`; with receipt handles.
    async fn receive_dead(
        &self,
        url: &str,
        visibility: Duration,
    ) -> QueueResult<Vec<(DeadLetter, String)>> {
        count_request("ReceiveMessage");
        let output = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(MAX_BATCH as i32)
            .wait_time_seconds(0)
            .visibility_timeout(whole_seconds(visibility, MAX_VISIBILITY))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(queue_error("ReceiveMessage (dead-letter queue)"))?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let attribute = |name| {
                    m.attributes
                        .as_ref()
                        .and_then(|a| a.get(&name))
                        .and_then(|v| v.parse::<i64>().ok())
                };
                let letter = DeadLetter {
                    message_id: m.message_id.clone().unwrap_or_default(),
                    body: m.body.clone().unwrap_or_default(),
                    receive_count: attribute(MessageSystemAttributeName::ApproximateReceiveCount)
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(0),
                    moved_at: attribute(MessageSystemAttributeName::SentTimestamp)
                        .and_then(DateTime::from_timestamp_millis)
                        .unwrap_or_default(),
                };
                Some((letter, m.receipt_handle?))
            })
            .collect())
    }

    /// Makes received dead letters visible again.
    async fn unhide(&self, url: &str, handles: &[String]) {
        for handle in handles {
            count_request("ChangeMessageVisibility");
            let _ = self
                .client
                .change_message_visibility()
                .queue_url(url)
                .receipt_handle(handle)
                .visibility_timeout(0)
                .send()
                .await;
        }
    }

    pub(super) async fn list_dead_letters(&self, limit: usize) -> QueueResult<Vec<DeadLetter>> {
        let url = self.dead_letter_queue().await?;
        let mut listed: Vec<DeadLetter> = Vec::new();
        let mut handles = Vec::new();
        while listed.len() < limit {
            let got = self.receive_dead(&url, PEEK_VISIBILITY).await?;
            let fresh: Vec<_> = got
                .into_iter()
                .filter(|(d, _)| !listed.iter().any(|l| l.message_id == d.message_id))
                .collect();
            if fresh.is_empty() {
                break;
            }
            for (letter, handle) in fresh {
                listed.push(letter);
                handles.push(handle);
            }
        }
        self.unhide(&url, &handles).await;
        listed.sort_by_key(|d| d.moved_at);
        listed.truncate(limit);
        Ok(listed)
    }

    pub(super) async fn redrive_dead_letters(
        &self,
        ids: Option<&[String]>,
    ) -> QueueResult<Vec<String>> {
        let url = self.dead_letter_queue().await?;
        let mut moved = Vec::new();
        let mut passed_over = Vec::new();
        loop {
            let got = self.receive_dead(&url, MOVE_VISIBILITY).await?;
            if got.is_empty() {
                break;
            }
            for (letter, handle) in got {
                let chosen = ids.map_or(true, |ids| ids.contains(&letter.message_id));
                if !chosen || moved.contains(&letter.message_id) {
                    passed_over.push(handle);
                    continue;
                }
                count_request("SendMessage");
                self.client
                    .send_message()
                    .queue_url(&self.queue_url)
                    .message_body(&letter.body)
                    .send()
                    .await
                    .map_err(queue_error("SendMessage (redrive)"))?;
                count_request("DeleteMessage");
                self.client
                    .delete_message()
                    .queue_url(&url)
                    .receipt_handle(&handle)
                    .send()
                    .await
                    .map_err(queue_error("DeleteMessage (dead-letter queue)"))?;
                moved.push(letter.message_id);
            }
            if ids.is_some_and(|ids| ids.iter().all(|id| moved.contains(id))) {
                break;
            }
        }
        self.unhide(&url, &passed_over).await;
        Ok(moved)
    }
}
