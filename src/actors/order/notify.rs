//! Telling the customer, at least once and by one sender at a time: each status email is
//! claimed in the store (a lease, `EMAIL_RESEND_AFTER`), sent, then marked sent. A send that
//! fails gives the claim back; a process that dies between the claim and the mark leaves the
//! claim unsent. Either way the email sweeper (`email_sweeper`) sends it once the claim is
//! stale, so an email is never lost to a crash, a failed release or a dead-lettered message.
//!
//! A failed send is therefore not a failed delivery: the order's step is done and the email has
//! a retry loop of its own, so a mailer outage (or SES throttling) can not push a queue message
//! to its last attempt and into the dead letters.
//!
//! A send that went out and whose mark did not reach the store is marked again by its sender,
//! on its own and often, so the mark normally lands before the claim's lease runs out and the
//! sweeper never takes it. The price that remains is a duplicate when the sender dies between
//! the send and the mark, when the store stays out of reach past the lease, when a send
//! outlives its lease, or when a send went out but its reply was lost (it counts as failed): the
//! sweeper sends again. Two sends that both reach the mark are
//! counted in `emails_duplicate_total`; every resend is counted in `emails_resent_total`, the
//! bound on the duplicates the service can not see.

use futures_util::future::join_all;

use super::OrderActor;
use crate::actors::{ask, mailer};
use crate::domain::{Id, Order, OrderStatus, User};
use crate::error::{AppError, BackendError};
use crate::messages::mailer::SendOrderEmail;
use crate::metrics::{backend_call, EMAILS_DUPLICATE_TOTAL};

/// The first pause before a failed mark is tried again, and the longest: short, because the
/// mark races the claim's lease.
const MARK_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(250);
const MARK_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(2);
/// For how many leases (`EMAIL_RESEND_AFTER`) a failed mark is tried again.
const MARK_RETRY_LEASES: u32 = 4;
/// How long a delivery waits for its marks at most (half a lease when that is shorter).
const MARK_RETRY_INLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// The customers of a batch of emails, in the batch's order (`None`: no such user).
pub(super) type Recipients = Result<Vec<Option<User>>, BackendError>;

/// The customer at `i` of a recipients lookup, or the lookup's error.
pub(super) fn recipient(users: &Recipients, i: usize) -> Result<Option<User>, BackendError> {
    users
        .as_ref()
        .map(|found| found[i].clone())
        .map_err(Clone::clone)
}

/// An email this caller has claimed, with what it takes to send it.
pub(super) struct ClaimedEmail<'a> {
    pub(super) order: &'a Order,
    pub(super) request_id: Option<String>,
    pub(super) user: Result<Option<User>, BackendError>,
}

/// What became of one claimed email.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sent {
    /// Sent and marked.
    Done,
    /// Not sent; the claim was given back for the sweeper (`throttled`: the mailer is over
    /// its sending rate, so a pass stops sending for now).
    Deferred { throttled: bool },
}

impl OrderActor {
    /// Emails each customer about their order's current (terminal) status, once per status; one
    /// outcome per order, in order. The claims (one write) and the recipients (one read) are
    /// asked for together. `Err` only when the claims could not be made: the caller's delivery
    /// then retries. A claimed email that could not be sent is the sweeper's, and answers `Ok`.
    pub(super) async fn notify_all(
        &self,
        orders: &[(&Order, Option<String>)],
    ) -> Vec<Result<(), AppError>> {
        let now = crate::domain::now();
        // An order that reached its status longer ago than the records are kept may have lost
        // its record: a late message (an old dead letter redriven) must not email it again.
        let oldest = now - chrono_duration(self.emails.record_retention);
        let claims: Vec<_> = orders.iter().map(|(o, _)| (o.id, o.status)).collect();
        let user_ids: Vec<_> = orders.iter().map(|(o, _)| o.user_id).collect();
        let (claimed, users) = tokio::join!(self.claim_emails(&claims), self.recipients(&user_ids));
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(e) => return vec![Err(e); orders.len()],
        };
        let mut expired = Vec::new();
        let mut due = Vec::new();
        for (i, ((order, request_id), claimed)) in orders.iter().zip(claimed).enumerate() {
            if !claimed {
                continue;
            }
            if order.updated_at < oldest {
                // Claimed only because its record is gone: closed, not sent.
                expired.push((order.id, order.status));
                continue;
            }
            due.push(ClaimedEmail {
                order,
                request_id: request_id.clone(),
                user: recipient(&users, i),
            });
        }
        let (_, ()) = tokio::join!(self.close_claims(&expired), self.send_and_close(due));
        vec![Ok(()); orders.len()]
    }

    /// Claims the status emails of `claims` (one store write); true where this caller won.
    pub(super) async fn claim_emails(
        &self,
        claims: &[(Id, OrderStatus)],
    ) -> Result<Vec<bool>, AppError> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let claimed = backend_call(
            "store",
            "claim_notifications",
            self.orders.claim_notifications(claims, self.stale_before()),
        )
        .await?;
        Ok(claimed)
    }

    /// The customers of `user_ids` (one store read), for the emails about to be sent.
    pub(super) async fn recipients(&self, user_ids: &[Id]) -> Recipients {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        backend_call("store", "find_users", self.accounts.find_users(user_ids)).await
    }

    /// Sends the claimed emails at once, then closes the claims of those that went out in one
    /// store write (`close_claims`); one that could not be sent was given back to the sweeper.
    pub(super) async fn send_and_close(&self, emails: Vec<ClaimedEmail<'_>>) {
        let sends = emails.into_iter().map(|email| async move {
            let sent = self
                .send_claimed(email.order, email.user, email.request_id)
                .await;
            (sent == Sent::Done).then_some((email.order.id, email.order.status))
        });
        let to_close: Vec<(Id, OrderStatus)> =
            join_all(sends).await.into_iter().flatten().collect();
        self.close_claims(&to_close).await;
    }

    /// Gives an unsent claim back (best effort): it is stale at once, so the next delivery or
    /// the sweeper takes it. If this fails too, the claim goes stale by itself.
    pub(super) async fn release_claim(&self, order_id: Id, status: OrderStatus) {
        let _ = backend_call(
            "store",
            "release_notification",
            self.orders.release_notification(order_id, status),
        )
        .await;
    }

    /// Claims older than this, never marked sent, are taken over and sent again.
    pub(super) fn stale_before(&self) -> chrono::DateTime<chrono::Utc> {
        crate::domain::now() - chrono_duration(self.emails.resend_after)
    }

    /// Sends one claimed email (the caller then closes the claim with `close_claims`); on
    /// failure gives the claim back.
    pub(super) async fn send_claimed(
        &self,
        order: &Order,
        user: Result<Option<User>, BackendError>,
        request_id: Option<String>,
    ) -> Sent {
        match self.email(order, user, request_id).await {
            Ok(()) => Sent::Done,
            Err(e) => {
                let throttled = matches!(&e, AppError::Unavailable(name) if *name == crate::mail::THROTTLED_MAILER);
                tracing::warn!(error = %e, order_id = %order.id, "order email not sent; the email sweeper will send it");
                self.release_claim(order.id, order.status).await;
                Sent::Deferred { throttled }
            }
        }
    }

    /// Marks claims sent, in one store call; a claim found marked already was sent twice, and
    /// is counted. When the store does not answer, the sender, which knows the emails went
    /// out, marks them again on its own (`mark_until_recorded`) instead of leaving them to
    /// go stale, so that the sweeper does not send them again once the store is back.
    pub(super) async fn close_claims(&self, claims: &[(Id, OrderStatus)]) {
        if claims.is_empty() {
            return;
        }
        match self.mark_sent(claims).await {
            Ok(before) => count_duplicates(claims, &before),
            Err(e) => {
                tracing::warn!(error = %e, emails = claims.len(), "order emails sent but not recorded yet; marking them again");
                let claims = claims.to_vec();
                // The queue processor's instance (the one that runs no outbox) keeps trying
                // within the delivery for a while: a graceful shutdown waits for deliveries in
                // flight, so a SIGTERM does not end the retry before the store is back. A
                // request (a cancellation's email) or a sweeper pass does not wait.
                if !self.runs_outbox {
                    let wait = (self.emails.resend_after / 2).min(MARK_RETRY_INLINE);
                    if self
                        .mark_until(&claims, tokio::time::Instant::now() + wait)
                        .await
                    {
                        return;
                    }
                }
                let this = self.clone();
                actix::spawn(async move { this.mark_until_recorded(claims).await });
            }
        }
    }

    async fn mark_sent(&self, claims: &[(Id, OrderStatus)]) -> Result<Vec<bool>, BackendError> {
        let now = crate::domain::now();
        let keep_until = now + chrono_duration(self.emails.record_retention);
        backend_call(
            "store",
            "mark_notifications_sent",
            self.orders.mark_notifications_sent(claims, now, keep_until),
        )
        .await
    }

    /// Tries the marks again, soon and often, until they land: the claims' leases run out
    /// `EMAIL_RESEND_AFTER` after they were made, and a mark that lands before the sweeper's
    /// next look keeps the email from going out twice. Past a few leases (a long store outage)
    /// the sweeper has sent them again anyway, and the marks are left to it.
    async fn mark_until_recorded(self, claims: Vec<(Id, OrderStatus)>) {
        let give_up = tokio::time::Instant::now() + self.emails.resend_after * MARK_RETRY_LEASES;
        if !self.mark_until(&claims, give_up).await {
            tracing::warn!(
                emails = claims.len(),
                "order emails sent but never recorded; the sweeper sends them again"
            );
        }
    }

    /// Tries the marks again until they land (true) or `until` passes (false).
    ///
    /// A claim found marked here is not counted as a duplicate: the first try may have landed
    /// with its reply lost. A second send that did happen is still counted when the sweeper
    /// marks it after this (and always in `emails_resent_total`).
    async fn mark_until(&self, claims: &[(Id, OrderStatus)], until: tokio::time::Instant) -> bool {
        let mut pause = MARK_RETRY_FIRST;
        while tokio::time::Instant::now() + pause < until {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MARK_RETRY_MAX);
            if self.mark_sent(claims).await.is_ok() {
                tracing::info!(
                    emails = claims.len(),
                    "order emails recorded as sent after a retry"
                );
                return true;
            }
        }
        false
    }

    /// Hands one order's email to the mailer; `user` is the lookup of its customer.
    pub(super) async fn email(
        &self,
        order: &Order,
        user: Result<Option<User>, BackendError>,
        request_id: Option<String>,
    ) -> Result<(), AppError> {
        let user = user?
            .ok_or_else(|| AppError::Internal(format!("order {} belongs to no user", order.id)))?;
        let email = SendOrderEmail {
            order: order.clone(),
            to: user.email,
            to_name: user.name,
            request_id,
        };
        ask(mailer::NAME, &self.mailer, email).await
    }
}

/// Counts the claims a mark found marked before: their email went out twice.
fn count_duplicates(claims: &[(Id, OrderStatus)], before: &[bool]) {
    for (&(order_id, status), &twice) in claims.iter().zip(before) {
        if twice {
            metrics::counter!(EMAILS_DUPLICATE_TOTAL, "kind" => status.as_str()).increment(1);
            tracing::warn!(order_id = %order_id, status = status.as_str(), "order email sent twice");
        }
    }
}

/// A configuration duration as a time span (saturating: a huge setting means "never").
pub(super) fn chrono_duration(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}
