//! MailerActor: tells customers what became of their orders. A failed send is retried with
//! backoff a few times, then reported back, and the caller leaves the email to the email
//! sweeper: an email is counted as failed, never silently dropped. A send refused for the
//! sending rate (SES throttling, which lasts for as long as the rate is exceeded) backs off for
//! longer, with jitter so that many sends do not come back together, and comes back as
//! `crate::mail::THROTTLED_MAILER` when it stays refused.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tracing::Instrument;

use super::{count_restart, guarded, MAILBOX_CAPACITY};
use crate::domain::{Order, OrderStatus};
use crate::error::AppError;
use crate::mail::{is_throttled, Mailer, OutgoingEmail, THROTTLED_MAILER};
use crate::messages::mailer::SendOrderEmail;
use crate::metrics::{backend_call, EMAILS_FAILED_TOTAL, EMAILS_SENT_TOTAL};

pub const NAME: &str = "mailer";

/// How often a send is tried, and how long it waits between tries (doubling each time).
#[derive(Clone, Copy, Debug)]
struct RetryPolicy {
    attempts: u32,
    first_backoff: Duration,
    /// Throttled sends count apart, with a longer backoff.
    throttled_attempts: u32,
    throttled_first_backoff: Duration,
}

/// Failures: 3 tries within 600 ms. Throttled sends: about 15 s of waiting in all, well inside
/// `EMAIL_RESEND_AFTER`'s default, so the sweeper does not send again what is still being
/// retried here.
const RETRIES: RetryPolicy = RetryPolicy {
    attempts: 3,
    first_backoff: Duration::from_millis(200),
    throttled_attempts: 6,
    throttled_first_backoff: Duration::from_millis(500),
};

pub struct MailerActor {
    pub mailer: Arc<dyn Mailer>,
}

impl Actor for MailerActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
    }
}

impl Supervised for MailerActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        count_restart(NAME);
    }
}

impl Handler<SendOrderEmail> for MailerActor {
    type Result = ResponseActFuture<Self, Result<(), AppError>>;
    fn handle(&mut self, msg: SendOrderEmail, _: &mut Context<Self>) -> Self::Result {
        let mailer = self.mailer.clone();
        let email = render(&msg);
        let kind = msg.order.status.as_str();
        let span = tracing::info_span!(
            "email",
            order_id = %msg.order.id,
            request_id = msg.request_id.as_deref().unwrap_or("-"),
            kind
        );
        guarded(
            NAME,
            send_with_retries(mailer, email, kind, RETRIES).instrument(span),
        )
    }
}

/// Sends with exponential backoff; the last failure is returned for the caller to defer the
/// email to the sweeper.
async fn send_with_retries(
    mailer: Arc<dyn Mailer>,
    email: OutgoingEmail,
    kind: &'static str,
    policy: RetryPolicy,
) -> Result<(), AppError> {
    let mut backoff = policy.first_backoff;
    let mut throttled_backoff = policy.throttled_first_backoff;
    let (mut failures, mut throttled) = (0, 0);
    loop {
        let e = match backend_call("mailer", "send", mailer.send(&email)).await {
            Ok(()) => {
                metrics::counter!(EMAILS_SENT_TOTAL, "kind" => kind).increment(1);
                tracing::info!(reference = %email.reference, "order email sent");
                return Ok(());
            }
            Err(e) => e,
        };
        let wait = if is_throttled(&e) {
            throttled += 1;
            let wait = jittered(throttled_backoff);
            throttled_backoff *= 2;
            (throttled < policy.throttled_attempts).then_some(wait)
        } else {
            failures += 1;
            let wait = backoff;
            backoff *= 2;
            (failures < policy.attempts).then_some(wait)
        };
        let Some(wait) = wait else {
            metrics::counter!(EMAILS_FAILED_TOTAL, "kind" => kind).increment(1);
            tracing::error!(error = %e, "email send failed after retries");
            if is_throttled(&e) {
                return Err(AppError::Unavailable(THROTTLED_MAILER));
            }
            return Err(e.into());
        };
        tracing::warn!(error = %e, failures, throttled, "email send failed; retrying");
        tokio::time::sleep(wait).await;
    }
}

/// `d` give or take a quarter, so throttled senders spread out.
fn jittered(d: Duration) -> Duration {
    use rand::Rng;
    d.mul_f64(rand::thread_rng().gen_range(0.75..1.25))
}

fn headline(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Pending => "has been received",
        OrderStatus::Processing => "is being processed",
        OrderStatus::Completed => "is complete",
        OrderStatus::Failed => "could not be completed",
        OrderStatus::Cancelled => "has been cancelled",
    }
}

/// The subject and both bodies, naming the order and its items.
pub fn render(msg: &SendOrderEmail) -> OutgoingEmail {
    let order: &Order = &msg.order;
    let status = order.status;
    let subject = format!("Your order {} {}", order.id, headline(status));
    let mut text = format!(
        "Hello {},\n\nYour order {} {}.\n\n",
        msg.to_name,
        order.id,
        headline(status)
    );
    let mut rows = String::new();
    for item in &order.items {
        text.push_str(&format!(
            "  {} x {} @ {} = {}\n",
            item.quantity.get(),
            item.product_name,
            item.unit_price.display_major(),
            item.line_total.display_major()
        ));
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            item.quantity.get(),
            escape_html(&item.product_name),
            item.unit_price.display_major(),
            item.line_total.display_major()
        ));
    }
    text.push_str(&format!(
        "\nTotal: {}\n",
        order.total_amount.display_major()
    ));
    let mut reason_html = String::new();
    if let Some(reason) = &order.failure_reason {
        text.push_str(&format!("Reason: {reason}\n"));
        reason_html = format!("<p>Reason: {}</p>", escape_html(reason));
    }
    if status.returns_stock() {
        text.push_str("No payment has been taken for this order.\n");
    }
    text.push_str("\nThank you for shopping with us.\n");
    let html = format!(
        "<!DOCTYPE html><html><body><p>Hello {name},</p><p>Your order <strong>{id}</strong> {headline}.</p>\
         <table><thead><tr><th>Qty</th><th>Item</th><th>Unit price</th><th>Total</th></tr></thead><tbody>{rows}</tbody></table>\
         <p>Total: <strong>{total}</strong></p>{reason_html}<p>Thank you for shopping with us.</p></body></html>",
        name = escape_html(&msg.to_name),
        id = order.id,
        headline = headline(status),
        total = order.total_amount.display_major(),
    );
    OutgoingEmail {
        to: msg.to.clone(),
        to_name: msg.to_name.clone(),
        subject,
        text,
        html,
        reference: format!("order-{}-{}", order.id, status.as_str()),
    }
}

/// Names and reasons come from users and admins: escaped for HTML text and quoted attributes.
fn escape_html(s: &str) -> std::borrow::Cow<'_, str> {
    html_escape::encode_safe(s)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::error::BackendError;

    /// Refuses the first `refusals` sends with `refusal`, then accepts.
    struct Flaky {
        refusals: u32,
        refusal: fn() -> BackendError,
        sends: AtomicU32,
    }

    #[async_trait]
    impl Mailer for Flaky {
        async fn ping(&self) -> Result<(), BackendError> {
            Ok(())
        }
        async fn send(&self, _: &OutgoingEmail) -> Result<(), BackendError> {
            if self.sends.fetch_add(1, Ordering::SeqCst) < self.refusals {
                return Err((self.refusal)());
            }
            Ok(())
        }
    }

    const QUICK: RetryPolicy = RetryPolicy {
        attempts: 3,
        first_backoff: Duration::from_millis(1),
        throttled_attempts: 6,
        throttled_first_backoff: Duration::from_millis(1),
    };

    fn email() -> OutgoingEmail {
        OutgoingEmail {
            to: crate::domain::Email::parse("ann@example.com").unwrap(),
            to_name: "Ann".into(),
            subject: "s".into(),
            text: "t".into(),
            html: "h".into(),
            reference: "order-x-completed".into(),
        }
    }

    fn throttling() -> BackendError {
        crate::mail::throttled(
            "mailer",
            "SendRawEmail: Throttling: Maximum sending rate exceeded",
        )
    }

    fn outage() -> BackendError {
        BackendError::unavailable("mailer", "connection refused")
    }

    async fn send(refusals: u32, refusal: fn() -> BackendError) -> (Result<(), AppError>, u32) {
        let mailer = Arc::new(Flaky {
            refusals,
            refusal,
            sends: AtomicU32::new(0),
        });
        let outcome = send_with_retries(mailer.clone(), email(), "completed", QUICK).await;
        (outcome, mailer.sends.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn throttling_outlasts_the_retries_an_outage_gets() {
        // Five refusals for the rate are ridden out; five for an outage are not.
        let (outcome, sends) = send(5, throttling).await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(sends, 6);
        let (outcome, sends) = send(5, outage).await;
        assert!(
            matches!(outcome, Err(AppError::Unavailable("mailer"))),
            "{outcome:?}"
        );
        assert_eq!(sends, 3);
    }

    #[tokio::test]
    async fn a_send_that_stays_throttled_says_so() {
        let (outcome, sends) = send(u32::MAX, throttling).await;
        assert!(
            matches!(outcome, Err(AppError::Unavailable(name)) if name == THROTTLED_MAILER),
            "{outcome:?}"
        );
        assert_eq!(sends, 6);
    }
}
