//! The real mailer: AWS SES (or an emulator such as moto), used when `AWS_SES_SENDER_EMAIL` is
//! set. The MailerActor retries a failed send with backoff, so a refusal here is an error, never
//! swallowed.
//!
//! Emails go out in `SendBulkTemplatedEmail`s of up to 50 (`bulk`), gathered by the
//! `mail::batcher` in front of this mailer: SES bills and throttles API requests, and one
//! request per email was the larger half of the service's AWS requests per order. The service
//! renders every email itself (`actors::mailer::render`, the same text and HTML the embedded
//! mailer writes to `.eml` files) and the account's template (`template`) only places the
//! parts. `From` is "Order Service" and the sender; `To` carries the customer's name.
//!
//! Where SES refuses to manage the template, each email goes out alone through `SendRawEmail`
//! instead, as the very RFC 5322 message the embedded mailer writes (`file::build_message`).

mod bulk;
mod template;

use async_trait::async_trait;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ses::primitives::Blob;
use aws_sdk_ses::types::RawMessage;
use aws_sdk_ses::Client;
use lettre::message::Mailbox;
use std::time::Duration;

use super::file::build_message;
use super::{Mailer, OutgoingEmail};
use crate::aws::{emulator_credentials, https_client, load_sdk_config, sdk_error};
use crate::config::AwsConfig;
use crate::domain::Email;
use crate::error::BackendError;
use crate::metrics::SES_REQUESTS_TOTAL;
use bulk::BulkOutcome;
use template::TemplateState;

const BACKEND: &str = "mailer";

/// Counts one SES API request: SES bills and rate-limits per request, so requests per order
/// are a cost the benchmark reports.
fn count_request(operation: &'static str) {
    metrics::counter!(SES_REQUESTS_TOTAL, "operation" => operation).increment(1);
}

/// The display name on `From`, as the service we replace used.
pub const SENDER_NAME: &str = "Order Service";

/// A send is one small request; anything slower than this is better retried by the actor.
fn ses_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(15))
        .build()
}

/// The SES [`Mailer`].
#[derive(Debug)]
pub struct SesMailer {
    client: Client,
    /// The verified sender: the envelope source (bounces go there).
    sender: Email,
    /// `"Order Service" <sender>`, the `From` header.
    from: Mailbox,
    /// `From`, as SES takes it in a bulk send's `Source` (see `bulk::mailbox`).
    source: String,
    /// Whether bulk sends can name the template.
    template: TemplateState,
    /// The last `GetSendQuota` answer and when it came: SES allows that call about once a
    /// second per account, and every process's `/ready` probes ask, so they share one answer
    /// for `PING_REUSE` instead of being throttled into "not ready".
    last_ping: std::sync::Mutex<Option<(std::time::Instant, Result<(), BackendError>)>>,
}

/// How long one `GetSendQuota` answer stands for the mailer's health.
const PING_REUSE: Duration = Duration::from_secs(10);

impl SesMailer {
    /// The service's constructor: AWS configuration from the standard sources, with
    /// `AWS_ENDPOINT_URL_SES` honoured by the SDK. Does no network call; `ping` tells whether
    /// SES answers.
    pub async fn new(sender: Email, aws: &AwsConfig) -> Result<SesMailer, BackendError> {
        let sdk = load_sdk_config(aws, ses_timeouts()).await;
        SesMailer::from_client(Client::new(&sdk), sender)
    }

    /// A mailer on an explicit endpoint (e.g. moto) with placeholder credentials, without reading
    /// the environment, so parallel tests need not mutate it.
    pub fn with_endpoint(
        sender: Email,
        endpoint: &str,
        region: &str,
    ) -> Result<SesMailer, BackendError> {
        SesMailer::from_client(client_for_endpoint(endpoint, region), sender)
    }

    pub fn from_client(client: Client, sender: Email) -> Result<SesMailer, BackendError> {
        for operation in [
            "GetSendQuota",
            "SendRawEmail",
            "SendBulkTemplatedEmail",
            "GetTemplate",
            "CreateTemplate",
            "UpdateTemplate",
        ] {
            metrics::counter!(SES_REQUESTS_TOTAL, "operation" => operation).increment(0);
        }
        let address = sender
            .as_str()
            .parse()
            .map_err(|e| BackendError::other(BACKEND, format!("sender address: {e}")))?;
        Ok(SesMailer {
            client,
            from: Mailbox::new(Some(SENDER_NAME.to_string()), address),
            source: bulk::mailbox(SENDER_NAME, sender.as_str()),
            template: TemplateState::new(),
            sender,
            last_ping: std::sync::Mutex::new(None),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// An SES client for an explicit endpoint, without reading the environment (tests, tools).
pub fn client_for_endpoint(endpoint: &str, region: &str) -> Client {
    let config = aws_sdk_ses::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(https_client())
        .endpoint_url(endpoint)
        .region(Region::new(region.to_string()))
        .credentials_provider(emulator_credentials())
        .timeout_config(ses_timeouts())
        .build();
    Client::from_conf(config)
}

/// SES's answers for a send over the account's sending rate (the error code is `Throttling`,
/// its message "Maximum sending rate exceeded"; some SDKs and emulators say
/// `MaxSendRateExceeded` or `ThrottlingException`).
const THROTTLING_CODES: [&str; 3] = ["Throttling", "ThrottlingException", "MaxSendRateExceeded"];

/// A throttled send is told apart (see `crate::mail::THROTTLED`): it is retried for longer.
fn send_error<E>(operation: &str, e: aws_sdk_ses::error::SdkError<E>) -> BackendError
where
    E: std::error::Error + aws_sdk_ses::error::ProvideErrorMetadata + Send + Sync + 'static,
{
    use aws_sdk_ses::error::ProvideErrorMetadata;
    let throttled = e.code().is_some_and(|c| THROTTLING_CODES.contains(&c))
        || e.message()
            .is_some_and(|m| m.contains("Maximum sending rate exceeded"));
    let error = sdk_error(BACKEND, operation, e);
    if throttled {
        crate::mail::throttled(BACKEND, error)
    } else {
        error
    }
}

#[async_trait]
impl Mailer for SesMailer {
    async fn ping(&self) -> Result<(), BackendError> {
        let lock = || self.last_ping.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, answer)) = &*lock() {
            if at.elapsed() < PING_REUSE {
                return answer.clone();
            }
        }
        // Cheap, and proves the endpoint, the credentials and the region all at once.
        count_request("GetSendQuota");
        let answer = self
            .client
            .get_send_quota()
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error(BACKEND, "GetSendQuota", e));
        *lock() = Some((std::time::Instant::now(), answer.clone()));
        answer
    }

    async fn send(&self, email: &OutgoingEmail) -> Result<(), BackendError> {
        let mut outcomes = self.send_many(std::slice::from_ref(email)).await;
        outcomes.pop().expect("one outcome per email")
    }

    async fn send_many(&self, emails: &[OutgoingEmail]) -> Vec<Result<(), BackendError>> {
        let mut outcomes = Vec::with_capacity(emails.len());
        for chunk in emails.chunks(super::batcher::MAX_DESTINATIONS) {
            outcomes.extend(self.send_chunk(chunk).await);
        }
        outcomes
    }
}

/// The same error for each email of `emails`.
fn each(emails: &[OutgoingEmail], e: BackendError) -> Vec<Result<(), BackendError>> {
    emails.iter().map(|_| Err(e.clone())).collect()
}

impl SesMailer {
    /// Up to 50 emails in one bulk request, or one by one where the template is refused. A
    /// template gone since it was made (deleted by hand, or an emulator restarted) is made again
    /// once, and the request tried again.
    async fn send_chunk(&self, emails: &[OutgoingEmail]) -> Vec<Result<(), BackendError>> {
        let mut last_error = None;
        for _ in 0..2 {
            match self.template.ready(&self.client).await {
                Err(e) => return each(emails, e),
                Ok(false) => {
                    let mut outcomes = Vec::with_capacity(emails.len());
                    for email in emails {
                        outcomes.push(self.send_raw(email).await);
                    }
                    return outcomes;
                }
                Ok(true) => {}
            }
            match bulk::send(&self.client, &self.source, emails).await {
                BulkOutcome::Answered(outcomes) => return outcomes,
                BulkOutcome::Failed(e) => return each(emails, e),
                BulkOutcome::TemplateMissing(e) => {
                    self.template.forget().await;
                    last_error = Some(e);
                }
            }
        }
        each(emails, last_error.expect("set by the last try"))
    }

    /// One email, alone, as the RFC 5322 message the embedded mailer writes.
    async fn send_raw(&self, email: &OutgoingEmail) -> Result<(), BackendError> {
        let message = build_message(&self.from, email)?.formatted();
        let raw = RawMessage::builder()
            .data(Blob::new(message))
            .build()
            .map_err(|e| BackendError::other(BACKEND, e))?;
        // No `Destinations`: SES takes the recipients from the `To` header, the one place they
        // are written.
        count_request("SendRawEmail");
        let output = self
            .client
            .send_raw_email()
            .source(self.sender.as_str())
            .raw_message(raw)
            .send()
            .await
            .map_err(|e| send_error("SendRawEmail", e))?;
        tracing::info!(
            reference = %email.reference,
            ses_message_id = output.message_id(),
            subject = %email.subject,
            "email sent through SES"
        );
        Ok(())
    }
}
