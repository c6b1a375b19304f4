//! One `SendBulkTemplatedEmail` for up to 50 emails: each email is a destination of the
//! service's template (see `template`) with its own rendered parts as data, and SES answers a
//! status per destination, so one refused address does not fail the others.

use aws_sdk_ses::types::{
    BulkEmailDestination, BulkEmailDestinationStatus, BulkEmailStatus, Destination,
};
use aws_sdk_ses::Client;
use email_encoding::headers::{quoted_string, writer::EmailWriter};

use super::template::{default_template_data, template_data, TEMPLATE_NAME};
use super::{count_request, send_error, BACKEND};
use crate::error::BackendError;
use crate::mail::OutgoingEmail;

/// What became of one bulk request.
pub enum BulkOutcome {
    /// SES answered for each email, in order.
    Answered(Vec<Result<(), BackendError>>),
    /// The template is gone (deleted by hand, say): nothing was sent.
    TemplateMissing(BackendError),
    /// The request failed as a whole: nothing was sent.
    Failed(BackendError),
}

/// A mailbox as SES takes it in `Source` and `ToAddresses`: the display name quoted, or in
/// RFC 2047 encoded words when it is not plain ASCII (SES's rule for non-ASCII names), then the
/// address. The encoder folds long names onto new lines; SES wants one line, and unfolding is
/// taking the line breaks out again.
pub fn mailbox(name: &str, address: &str) -> String {
    let name = name.trim();
    if name.is_empty() {
        return address.to_string();
    }
    let mut encoded = String::new();
    quoted_string::encode(name, &mut EmailWriter::new(&mut encoded, 0, 0, false))
        .expect("writing to a String does not fail");
    format!("{} <{address}>", encoded.replace("\r\n", ""))
}

pub async fn send(client: &Client, source: &str, emails: &[OutgoingEmail]) -> BulkOutcome {
    let destinations = emails
        .iter()
        .map(|email| {
            BulkEmailDestination::builder()
                .destination(
                    Destination::builder()
                        .to_addresses(mailbox(&email.to_name, email.to.as_str()))
                        .build(),
                )
                .replacement_template_data(template_data(&email.subject, &email.text, &email.html))
                .build()
        })
        .collect();
    count_request("SendBulkTemplatedEmail");
    let answer = client
        .send_bulk_templated_email()
        .source(source)
        .template(TEMPLATE_NAME)
        .default_template_data(default_template_data())
        .set_destinations(Some(destinations))
        .send()
        .await;
    let output = match answer {
        Ok(output) => output,
        Err(e) => {
            let missing = e
                .as_service_error()
                .is_some_and(|s| s.is_template_does_not_exist_exception());
            let error = send_error("SendBulkTemplatedEmail", e);
            return match missing {
                true => BulkOutcome::TemplateMissing(error),
                false => BulkOutcome::Failed(error),
            };
        }
    };
    let statuses = output.status();
    if statuses
        .iter()
        .any(|s| s.status() == Some(&BulkEmailStatus::TemplateDoesNotExist))
    {
        return BulkOutcome::TemplateMissing(BackendError::unavailable(
            BACKEND,
            format!("SendBulkTemplatedEmail: template {TEMPLATE_NAME} does not exist"),
        ));
    }
    let outcomes = emails
        .iter()
        .enumerate()
        .map(|(i, email)| {
            let outcome = match statuses.get(i) {
                Some(status) => destination_outcome(status),
                None => Err(BackendError::unavailable(
                    BACKEND,
                    format!(
                        "SendBulkTemplatedEmail: {} statuses for {} destinations",
                        statuses.len(),
                        emails.len()
                    ),
                )),
            };
            if outcome.is_ok() {
                tracing::info!(
                    reference = %email.reference,
                    ses_message_id = statuses[i].message_id(),
                    subject = %email.subject,
                    "email sent through SES"
                );
            }
            outcome
        })
        .collect();
    BulkOutcome::Answered(outcomes)
}

/// One destination's status: sent, refused for the rate (retried for longer), worth another
/// try, or refused for good. An answer with a message id and no status (emulators) was sent.
fn destination_outcome(status: &BulkEmailDestinationStatus) -> Result<(), BackendError> {
    let detail = || {
        format!(
            "SendBulkTemplatedEmail: {}: {}",
            status.status().map(|s| s.as_str()).unwrap_or("no status"),
            status.error().unwrap_or("no detail")
        )
    };
    match status.status() {
        Some(BulkEmailStatus::Success) => Ok(()),
        None if status.message_id().is_some() => Ok(()),
        Some(BulkEmailStatus::AccountThrottled) => Err(crate::mail::throttled(BACKEND, detail())),
        Some(BulkEmailStatus::TransientFailure | BulkEmailStatus::Failed) => {
            Err(BackendError::unavailable(BACKEND, detail()))
        }
        _ => Err(BackendError::other(BACKEND, detail())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a mail reader makes of the mailbox as a `To` header: the name and the address.
    fn read_back(mailbox: &str) -> (Option<String>, String) {
        let raw = format!("To: {mailbox}\r\n\r\n");
        let message = mail_parser::MessageParser::default().parse(&raw).unwrap();
        let to = message.to().and_then(|list| list.first()).unwrap();
        (
            to.name().map(str::to_string),
            to.address().unwrap().to_string(),
        )
    }

    #[test]
    fn names_are_quoted_or_encoded_on_one_ascii_line_and_read_back_as_given() {
        assert_eq!(mailbox("", "a@example.com"), "a@example.com");
        assert_eq!(mailbox("Ann", "a@example.com"), "Ann <a@example.com>");
        let long = "Zoë Müller-Lüdenscheidt ".repeat(8);
        for name in [
            "Order Service",
            "Doe, Jane",
            "Zoë Müller",
            "\"Q\" <x@y>",
            long.trim(),
        ] {
            let encoded = mailbox(name, "z@example.com");
            assert!(
                encoded.is_ascii() && !encoded.contains(['\r', '\n']),
                "{encoded}"
            );
            assert_eq!(
                read_back(&encoded),
                (Some(name.to_string()), "z@example.com".to_string()),
                "{encoded}"
            );
        }
    }

    #[test]
    fn each_destination_status_is_its_own_outcome() {
        let status = |s: Option<BulkEmailStatus>, id: Option<&str>| {
            let mut b = BulkEmailDestinationStatus::builder();
            if let Some(s) = s {
                b = b.status(s);
            }
            if let Some(id) = id {
                b = b.message_id(id);
            }
            b.build()
        };
        assert!(destination_outcome(&status(Some(BulkEmailStatus::Success), Some("m"))).is_ok());
        assert!(destination_outcome(&status(None, Some("m"))).is_ok());
        let throttled = destination_outcome(&status(Some(BulkEmailStatus::AccountThrottled), None));
        assert!(crate::mail::is_throttled(&throttled.unwrap_err()));
        assert!(matches!(
            destination_outcome(&status(Some(BulkEmailStatus::TransientFailure), None)),
            Err(BackendError::Unavailable { .. })
        ));
        assert!(matches!(
            destination_outcome(&status(Some(BulkEmailStatus::MessageRejected), None)),
            Err(BackendError::Other { .. })
        ));
    }
}
