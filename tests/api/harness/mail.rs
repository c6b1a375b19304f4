//! The emails the service sent: the `.eml` files of the embedded mailer (in a directory per
//! UTC day under `MAIL_DIR`), or what SES (moto) accepted on the real backends; and reading
//! them, with a maintained MIME parser.

use std::path::{Path, PathBuf};

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

use super::poll::poll_until;
use super::process::list_dir;
use super::real::RealBackends;
use super::server::TestServer;
use super::ORDER_DEADLINE;

/// Every `.eml` file under `mail_dir`'s day directories (`YYYY-MM-DD/…eml`), sorted by path.
pub fn email_files(mail_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = list_dir(mail_dir)
        .into_iter()
        .filter(|day| is_day(day))
        .flat_map(|day| {
            let dir = mail_dir.join(&day);
            list_dir(&dir).into_iter().map(move |f| dir.join(f))
        })
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    files
}

/// `YYYY-MM-DD`.
fn is_day(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

impl TestServer {
    /// Where the email file of `order_id` reaching `status` is: in whichever day directory
    /// holds it, or today's (UTC) when none does yet.
    pub fn email_path(&self, order_id: &str, status: &str) -> PathBuf {
        let name = format!("order-{order_id}-{status}.eml");
        let mail_dir = self.env.mail_dir();
        email_files(&mail_dir)
            .into_iter()
            .find(|p| p.file_name().is_some_and(|f| f == name.as_str()))
            .unwrap_or_else(|| {
                let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
                mail_dir.join(today).join(name)
            })
    }

    /// Waits for the email telling the customer that order `order_id` reached `status`, and
    /// returns it as RFC 5322 text: the `.eml` file in `$MAIL_DIR` with the embedded mailer, or
    /// the raw message SES (moto) accepted with the real backends.
    pub async fn find_email_file(&self, order_id: &str, status: &str) -> String {
        if let Some(real) = self.env.real.clone() {
            return find_sent_email(&real, order_id, status).await;
        }
        poll_until(
            ORDER_DEADLINE,
            &format!("email file order-{order_id}-{status}.eml under MAIL_DIR/<day>/"),
            || {
                let path = self.email_path(order_id, status);
                let mail_dir = self.env.mail_dir();
                async move {
                    match std::fs::read(&path) {
                        Ok(bytes) if !bytes.is_empty() => {
                            Ok(String::from_utf8(bytes).expect("email file is not UTF-8"))
                        }
                        Ok(_) => Err("file is empty".into()),
                        Err(e) => Err(format!("{e}; mail dir has {:?}", email_files(&mail_dir))),
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
