//! A [`Mailer`] that coalesces sends: emails due at about the same moment leave in one
//! `send_many` of the mailer it wraps (on SES, one `SendBulkTemplatedEmail` of up to 50
//! destinations instead of one request each, since SES charges and throttles API requests). Each
//! caller still sends one email and gets that email's own outcome, so the MailerActor's retries,
//! claims and counting stay per email.
//!
//! Only the SES mailer is wrapped: writing `.eml` files gains nothing from company.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Mailer, OutgoingEmail};
use crate::coalesce::{Batching, Coalescer};
use crate::error::BackendError;

/// SES's bound on destinations per `SendBulkTemplatedEmail`.
pub const MAX_DESTINATIONS: usize = 50;

/// For SES. An email tells a customer about a change that has already happened, so a quarter
/// of a second more before it leaves costs nobody anything, and it is what lets emails share
/// requests at moderate rates: at 24 orders/s about seven emails go in each request, where a
/// few milliseconds would leave most of them alone. At high rates requests fill to 50 at once.
/// Four requests at a time keep SES busy without flooding an account near its sending rate.
pub const SES_BATCHING: Batching = Batching {
    linger: Duration::from_millis(250),
    in_flight: 4,
    max_batch: MAX_DESTINATIONS,
};

pub struct MailBatcher {
    inner: Arc<dyn Mailer>,
    sends: Coalescer<OutgoingEmail, Result<(), BackendError>>,
}

impl MailBatcher {
    /// Starts the batching task on the current runtime.
    pub fn start(inner: Arc<dyn Mailer>, batching: Batching) -> MailBatcher {
        let mailer = inner.clone();
        let sends = Coalescer::start(batching, move |emails: Vec<OutgoingEmail>| {
            let mailer = mailer.clone();
            async move { mailer.send_many(&emails).await }
        });
        MailBatcher { inner, sends }
    }
}

#[async_trait]
impl Mailer for MailBatcher {
    async fn ping(&self) -> Result<(), BackendError> {
        self.inner.ping().await
    }

    async fn send(&self, email: &OutgoingEmail) -> Result<(), BackendError> {
        self.sends.submit(email.clone()).await.unwrap_or_else(|| {
            Err(BackendError::unavailable(
                "mailer",
                "the mail batcher stopped",
            ))
        })
    }

    async fn send_many(&self, emails: &[OutgoingEmail]) -> Vec<Result<(), BackendError>> {
        self.inner.send_many(emails).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::domain::Email;

    /// Records each call's emails and refuses the ones addressed to `refused@`.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<usize>>,
    }

    #[async_trait]
    impl Mailer for Recorder {
        async fn ping(&self) -> Result<(), BackendError> {
            Ok(())
        }
        async fn send(&self, _: &OutgoingEmail) -> Result<(), BackendError> {
            unreachable!("the batcher sends through send_many")
        }
        async fn send_many(&self, emails: &[OutgoingEmail]) -> Vec<Result<(), BackendError>> {
            self.calls.lock().unwrap().push(emails.len());
            emails
                .iter()
                .map(|e| match e.to.as_str().starts_with("refused@") {
                    true => Err(BackendError::other("mailer", "MessageRejected")),
                    false => Ok(()),
                })
                .collect()
        }
    }

    fn email(to: &str) -> OutgoingEmail {
        OutgoingEmail {
            to: Email::parse(to).unwrap(),
            to_name: "Ann".into(),
            subject: "s".into(),
            text: "t".into(),
            html: "h".into(),
            reference: format!("order-{to}-completed"),
        }
    }

    #[tokio::test]
    async fn concurrent_sends_share_requests_and_a_refusal_stays_its_own() {
        let recorder = Arc::new(Recorder::default());
        let batcher = Arc::new(MailBatcher::start(
            recorder.clone(),
            Batching {
                linger: Duration::from_millis(50),
                ..SES_BATCHING
            },
        ));
        let sends: Vec<_> = (0..60)
            .map(|i| {
                let batcher = batcher.clone();
                let to = if i == 7 {
                    "refused@example.com".to_string()
                } else {
                    format!("c{i}@example.com")
                };
                tokio::spawn(async move { (i, batcher.send(&email(&to)).await) })
            })
            .collect();
        for send in sends {
            let (i, outcome) = send.await.unwrap();
            assert_eq!(outcome.is_err(), i == 7, "email {i}: {outcome:?}");
        }
        let calls = recorder.calls.lock().unwrap().clone();
        assert_eq!(calls.iter().sum::<usize>(), 60);
        assert!(calls.iter().all(|n| *n <= MAX_DESTINATIONS), "{calls:?}");
        assert!(calls.len() < 10, "sends were not batched: {calls:?}");
    }
}
