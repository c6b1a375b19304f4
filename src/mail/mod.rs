//! Outgoing email. The embedded mailer writes `.eml` files; the real one sends through SES.

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

#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn ping(&self) -> Result<(), BackendError>;
    async fn send(&self, email: &OutgoingEmail) -> Result<(), BackendError>;
}
