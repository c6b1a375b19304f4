//! The emails the service sent: the `.eml` files of the embedded mailer, or what SES (moto)
//! accepted on the real backends; and reading them, with a maintained MIME parser.

use std::path::PathBuf;

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

use super::poll::poll_until;
use super::process::list_dir;
use super::real::RealBackends;
use super::server::TestServer;
use super::ORDER_DEADLINE;

impl TestServer {
    pub fn email_path(&self, order_id: &str, status: &str) -> PathBuf {
        self.env
            .mail_dir()
            .join(format!("order-{order_id}-{status}.eml"))
    }

    /// Waits for the email telling the customer that order `order_id` reached `status`, and
    /// returns it as RFC 5322 text: the `.eml` file in `$MAIL_DIR` with the embedded mailer, or
    /// the raw message SES (moto) accepted with the real backends.
    pub async fn find_email_file(&self, order_id: &str, status: &str) -> String {
        if let Some(real) = self.env.real.clone() {
            return find_sent_email(&real, order_id, status).await;
        }
        let path = self.email_path(order_id, status);
        poll_until(
            ORDER_DEADLINE,
            &format!("email file {}", path.display()),
            || {
                let path = path.clone();
                async move {
                    match std::fs::read(&path) {
                        Ok(bytes) if !bytes.is_empty() => {
                            Ok(String::from_utf8(bytes).expect("email file is not UTF-8"))
                        }
                        Ok(_) => Err("file is empty".into()),
                        Err(e) => Err(format!(
                            "{e}; mail dir has {:?}",
                            list_dir(path.parent().unwrap())
                        )),
                    }
                }
            },
        )
        .await
    }
}

/// The words the service's subject line uses for each status (see `actors::mailer`).
fn subject_marker(status: &str) -> &'static str {
    match status {
        "completed" => "is complete",
        "cancelled" => "has been cancelled",
        "failed" => "could not be completed",
        other => panic!("no email is sent for status {other}"),
    }
}

/// Emails SES accepted for this order and status (the real-backend counterpart of the files).
pub async fn sent_emails_for(real: &RealBackends, order_id: &str, status: &str) -> Vec<String> {
    let marker = subject_marker(status);
    real.moto
        .sent_emails()
        .await
        .into_iter()
        .filter(|e| e.subject.contains(order_id) && e.subject.contains(marker))
        .map(|e| e.raw)
        .collect()
}

async fn find_sent_email(real: &RealBackends, order_id: &str, status: &str) -> String {
    poll_until(
        ORDER_DEADLINE,
        &format!("SES email for order {order_id} ({status})"),
        || async {
            let mut found = sent_emails_for(real, order_id, status).await;
            match found.len() {
                0 => Err("not sent yet".to_string()),
                1 => Ok(found.remove(0)),
                n => {
                    panic!("{n} emails sent for order {order_id} ({status}); expected exactly one")
                }
            }
        },
    )
    .await
}

/// Parses an email (RFC 5322 with MIME) as the tests read it: `mail-parser` unfolds the headers,
/// decodes RFC 2047 encoded words and each part's quoted-printable or base64 body.
pub fn parse_email(raw: &str) -> Message<'_> {
    MessageParser::default()
        .parse(raw)
        .unwrap_or_else(|| panic!("not an RFC 5322 message:\n{raw}"))
}

/// The MIME type of a message or part, lowercase (`text/plain` when it names none, RFC 2045).
pub fn mime_type<'x>(part: &impl MimeHeaders<'x>) -> String {
    part.content_type()
        .map(|ct| match ct.subtype() {
            Some(sub) => format!("{}/{sub}", ct.ctype()),
            None => ct.ctype().to_string(),
        })
        .unwrap_or_else(|| "text/plain".into())
        .to_ascii_lowercase()
}

/// Every part that is not a container (multipart or message), in order, as (MIME type,
/// decoded text).
pub fn leaf_parts(msg: &Message) -> Vec<(String, String)> {
    msg.parts
        .iter()
        .filter(|p| !p.is_multipart() && !p.is_message())
        .map(|p| {
            let text = match &p.body {
                PartType::Text(t) | PartType::Html(t) => t.to_string(),
                _ => String::from_utf8_lossy(p.contents()).into_owned(),
            };
            (mime_type(p), text)
        })
        .collect()
}
