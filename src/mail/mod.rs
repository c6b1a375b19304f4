//! Outgoing email. The embedded mailer writes `.eml` files; the real one sends through SES.

pub mod batcher;
pub mod file;
pub mod ses;

use async_trait::async_trait;

use crate::domain::Email;
use crate::error::BackendError;

#[derive(Clone, Debug)]
pub struct OutgoingEmail {
    pub to: Email,
    pub to_name: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Stable name for this email (e.g. `order-<id>-completed`): sending the same email twice
    /// produces the same file, and lets a log line be traced to one email.
    pub reference: String,
}

/// How a mailer says it is over its sending rate (SES `Throttling`): the start of an
/// `Unavailable` error's detail. Such a send is retried for longer, and never counted as lost.
pub const THROTTLED: &str = "throttled";
/// The backend name the mailer actor answers with after a send that stayed throttled.
pub const THROTTLED_MAILER: &str = "mailer (throttled)";

/// A refusal for being over the sending rate.
pub fn throttled(backend: &'static str, detail: impl std::fmt::Display) -> BackendError {
    BackendError::unavailable(backend, format!("{THROTTLED}: {detail}"))
}

/// Whether `e` is a refusal for being over the sending rate.
pub fn is_throttled(e: &BackendError) -> bool {
    matches!(e, BackendError::Unavailable { detail, .. } if detail.starts_with(THROTTLED))
}

#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn ping(&self) -> Result<(), BackendError>;
    async fn send(&self, email: &OutgoingEmail) -> Result<(), BackendError>;

    /// Sends several emails in as few requests as the transport allows, with one outcome per
    /// email in their order: one email refused does not fail the others. By default one send
    /// after another; SES sends up to 50 in one `SendBulkTemplatedEmail`.
    async fn send_many(&self, emails: &[OutgoingEmail]) -> Vec<Result<(), BackendError>> {
        let mut outcomes = Vec::with_capacity(emails.len());
        for email in emails {
            outcomes.push(self.send(email).await);
        }
        outcomes
    }
}
