//! The embedded mailer: each email becomes an RFC 5322 `.eml` file in `MAIL_DIR` (open it with
//! any mail client), plus a log line. The file name is the email's stable reference, and the
//! file is written under a temporary name then renamed, so a reader never sees half an email
//! and sending the same email twice leaves one file.

use std::path::PathBuf;

use async_trait::async_trait;
use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::Message;

use super::{Mailer, OutgoingEmail};
use crate::error::BackendError;

const BACKEND: &str = "mailer";

pub struct FileMailer {
    dir: PathBuf,
    from: Mailbox,
}

impl FileMailer {
    pub fn new(dir: PathBuf, from: Mailbox) -> Result<Self, BackendError> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| BackendError::unavailable(BACKEND, format!("{}: {e}", dir.display())))?;
        Ok(FileMailer { dir, from })
    }
}

/// Builds the RFC 5322 message with a text and an HTML alternative; shared with the SES mailer.
pub fn build_message(from: &Mailbox, email: &OutgoingEmail) -> Result<Message, BackendError> {
    let to = Mailbox::new(
        Some(email.to_name.clone()),
        email
            .to
            .as_str()
            .parse()
            .map_err(|e| BackendError::other(BACKEND, e))?,
    );
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(email.subject.clone())
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(email.text.clone()),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(email.html.clone()),
                ),
        )
        .map_err(|e| BackendError::other(BACKEND, e))
}

#[async_trait]
impl Mailer for FileMailer {
    async fn ping(&self) -> Result<(), BackendError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || std::fs::metadata(&dir).map(|_| ()))
            .await
            .map_err(|e| BackendError::other(BACKEND, e))?
            .map_err(|e| BackendError::unavailable(BACKEND, e))
    }

    async fn send(&self, email: &OutgoingEmail) -> Result<(), BackendError> {
        let bytes = build_message(&self.from, email)?.formatted();
        let final_path = self.dir.join(format!("{}.eml", email.reference));
        let tmp_path = self.dir.join(format!(".{}.eml.tmp", email.reference));
        tokio::task::spawn_blocking(move || {
            std::fs::write(&tmp_path, bytes)?;
            std::fs::rename(&tmp_path, &final_path)
        })
        .await
        .map_err(|e| BackendError::other(BACKEND, e))?
        .map_err(|e| BackendError::unavailable(BACKEND, e))?;
        tracing::info!(reference = %email.reference, to = %email.to, subject = %email.subject, "email written");
        Ok(())
    }
}
