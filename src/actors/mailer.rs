//! MailerActor: tells customers what became of their orders. A failed send is retried with
//! backoff a few times, then reported back so the caller can leave the queue message for a
//! later retry: an email is counted as failed, never silently dropped.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tracing::Instrument;

use super::{count_restart, guarded, MAILBOX_CAPACITY};
use crate::domain::{Order, OrderStatus};
use crate::error::AppError;
use crate::mail::{Mailer, OutgoingEmail};
use crate::messages::mailer::SendOrderEmail;
use crate::metrics::{backend_call, EMAILS_FAILED_TOTAL, EMAILS_SENT_TOTAL};

pub const NAME: &str = "mailer";
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

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
            send_with_retries(mailer, email, kind).instrument(span),
        )
    }
}

/// Sends with exponential backoff; the last failure is returned so the queue retries later.
async fn send_with_retries(
    mailer: Arc<dyn Mailer>,
    email: OutgoingEmail,
    kind: &'static str,
) -> Result<(), AppError> {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        match backend_call("mailer", "send", mailer.send(&email)).await {
            Ok(()) => {
                metrics::counter!(EMAILS_SENT_TOTAL, "kind" => kind).increment(1);
                tracing::info!(reference = %email.reference, "order email sent");
                return Ok(());
            }
            Err(e) if attempt < ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "email send failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                attempt += 1;
            }
            Err(e) => {
                metrics::counter!(EMAILS_FAILED_TOTAL, "kind" => kind).increment(1);
                tracing::error!(error = %e, "email send failed after retries");
                return Err(e.into());
            }
        }
    }
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
