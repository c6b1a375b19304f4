//! The SES template that bulk sends name. The service renders every email itself
//! (`actors::mailer::render`), so what SES sends says exactly what the embedded mailer's `.eml`
//! files say; the template only puts the three rendered parts in their places. SES does not
//! escape what it substitutes (AWS: "SES doesn't escape HTML content when rendering the HTML
//! template"), so the HTML goes in as the service escaped it.
//!
//! The template is made on the first bulk send of each process: looked up, created when missing
//! and corrected when someone changed it. Its name carries a version: a later release that needs
//! other parts uses a new name and leaves this one to the processes still running it. When SES
//! refuses to manage templates (an IAM policy without `ses:CreateTemplate`, say), the mailer
//! sends one `SendRawEmail` per email instead and asks again after [`RETRY_AFTER`].

use std::time::{Duration, Instant};

use aws_sdk_ses::types::Template;
use aws_sdk_ses::Client;
use tokio::sync::Mutex;

use super::count_request;
use crate::aws::sdk_error;
use crate::error::BackendError;

/// The template's name in the account and region.
pub const TEMPLATE_NAME: &str = "order-service-email-v1";

/// The parts, each one variable of the per-destination data ([`template_data`]).
const SUBJECT_PART: &str = "{{subject}}";
const TEXT_PART: &str = "{{text}}";
const HTML_PART: &str = "{{html}}";

/// How long a refusal to manage the template stands before the mailer asks again.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

/// The per-destination data: the rendered subject and both bodies.
pub fn template_data(subject: &str, text: &str, html: &str) -> String {
    serde_json::json!({ "subject": subject, "text": text, "html": html }).to_string()
}

/// The data for a destination with none of its own; every destination has its own, but SES
/// requires a default that names every variable.
pub fn default_template_data() -> String {
    template_data("", "", "")
}

#[derive(Debug)]
enum State {
    /// Not looked at yet, or lost (a send found it missing).
    Unknown,
    Ready,
    /// SES refused to manage it; bulk sends wait until then.
    RefusedUntil(Instant),
}

/// Whether the template is there to send with; see the module comment.
#[derive(Debug)]
pub struct TemplateState {
    state: Mutex<State>,
}

impl TemplateState {
    pub fn new() -> TemplateState {
        TemplateState {
            state: Mutex::new(State::Unknown),
        }
    }

    /// Whether bulk sends can name the template now; makes or corrects it first when needed.
    /// Concurrent callers wait for one look rather than each making their own. A look that
    /// failed for the network or SES's health is no answer: it is the sends' error, and the
    /// next send looks again.
    pub async fn ready(&self, client: &Client) -> Result<bool, BackendError> {
        let mut state = self.state.lock().await;
        match *state {
            State::Ready => return Ok(true),
            State::RefusedUntil(until) if Instant::now() < until => return Ok(false),
            _ => {}
        }
        match ensure(client).await {
            Ok(()) => {
                *state = State::Ready;
                Ok(true)
            }
            Err(e @ BackendError::Unavailable { .. }) => Err(e),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    template = TEMPLATE_NAME,
                    retry_after_s = RETRY_AFTER.as_secs(),
                    "SES email template refused; sending one SendRawEmail per email"
                );
                *state = State::RefusedUntil(Instant::now() + RETRY_AFTER);
                Ok(false)
            }
        }
    }

    /// A send found the template missing (deleted by hand, say): look again next time.
    pub async fn forget(&self) {
        *self.state.lock().await = State::Unknown;
    }
}

fn template() -> Result<Template, BackendError> {
    Template::builder()
        .template_name(TEMPLATE_NAME)
        .subject_part(SUBJECT_PART)
        .text_part(TEXT_PART)
        .html_part(HTML_PART)
        .build()
        .map_err(|e| BackendError::other("mailer", e))
}

/// Looks the template up; creates it when missing, rewrites it when its parts differ.
async fn ensure(client: &Client) -> Result<(), BackendError> {
    count_request("GetTemplate");
    let found = client
        .get_template()
        .template_name(TEMPLATE_NAME)
        .send()
        .await;
    match found {
        Ok(output) => {
            let same = output.template().is_some_and(|t| {
                t.subject_part() == Some(SUBJECT_PART)
                    && t.text_part() == Some(TEXT_PART)
                    && t.html_part() == Some(HTML_PART)
            });
            if same {
                return Ok(());
            }
            count_request("UpdateTemplate");
            client
                .update_template()
                .template(template()?)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| sdk_error("mailer", "UpdateTemplate", e))
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_template_does_not_exist_exception()) =>
        {
            count_request("CreateTemplate");
            match client.create_template().template(template()?).send().await {
                Ok(_) => Ok(()),
                // Another process made it first: the name's version says the parts are these.
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_already_exists_exception()) =>
                {
                    Ok(())
                }
                Err(e) => Err(sdk_error("mailer", "CreateTemplate", e)),
            }
        }
        Err(e) => Err(sdk_error("mailer", "GetTemplate", e)),
    }
}
