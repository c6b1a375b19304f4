//! The email sweeper: sends the status emails whose claim was never marked sent once the claim
//! is stale (`EMAIL_RESEND_AFTER`): the sender died between claim and mark (or between a claim
//! made ahead of a change and the change, see `claim_ahead`), its send failed and the claim was
//! given back, or its release failed too. Every process runs it; each email is
//! taken over by one conditional write, so two sweepers never send the same one. A pass sends
//! a few at a time and stops at a throttled send, giving back what it claimed and did not send,
//! so a mailer over its sending rate is not pressed harder.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;

use super::notify::{recipient, Sent};
use super::OrderActor;
use crate::domain::{Id, OrderStatus};
use crate::error::AppError;
use crate::metrics::*;

/// Claims read per pass at most; a larger backlog takes several passes.
const SWEEP_BATCH: u32 = 100;
/// Emails sent at once within a pass.
const SENDS_AT_ONCE: usize = 10;
/// How often the sweeper looks (more often when the lease is shorter), so a claim given back
/// after a failed send goes out again within seconds.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

impl OrderActor {
    /// Runs a sweeper pass every few seconds, never two at once.
    pub(super) fn start_email_sweeper(&self, ctx: &mut Context<Self>) {
        Self::run_passes(
            ctx,
            SWEEP_EVERY.min(self.emails.resend_after),
            Arc::new(AtomicBool::new(false)),
            "email sweeper",
            |this| Box::pin(async move { this.resend_unsent_emails().await }),
        );
    }

    /// One pass: takes over the stale unsent claims and sends their emails.
    pub(super) async fn resend_unsent_emails(&self) -> Result<(), AppError> {
        let stale_before = self.stale_before();
        let unsent = backend_call(
            "store",
            "unsent_notifications",
            self.orders.unsent_notifications(stale_before, SWEEP_BATCH),
        )
        .await?;
        if unsent.is_empty() {
            return Ok(());
        }
        let won = backend_call(
            "store",
            "claim_notifications",
            self.orders.claim_notifications(&unsent, stale_before),
        )
        .await?;
        let ours: Vec<(Id, OrderStatus)> = unsent
            .into_iter()
            .zip(won)
            .filter_map(|(claim, won)| won.then_some(claim))
            .collect();
        let mut chunks = ours.chunks(SENDS_AT_ONCE);
        while let Some(chunk) = chunks.next() {
            let outcomes = self.resend_chunk(chunk).await?;
            if outcomes.contains(&Sent::Deferred { throttled: true }) {
                tracing::warn!("the mailer is over its sending rate; the email sweeper waits for its next pass");
                for &(order_id, status) in chunks.by_ref().flatten() {
                    self.release_claim(order_id, status).await;
                }
                break;
            }
        }
        Ok(())
    }

    /// Sends the emails of a few claims at once; what became of each.
    async fn resend_chunk(&self, claims: &[(Id, OrderStatus)]) -> Result<Vec<Sent>, AppError> {
        let orders = join_all(claims.iter().map(|&(order_id, _)| {
            backend_call("store", "find_order", self.orders.find_order(order_id))
        }))
        .await;
        let mut outcomes = Vec::with_capacity(claims.len());
        let mut due = Vec::with_capacity(claims.len());
        let mut to_close = Vec::new();
        let mut to_give_back = Vec::new();
        for (&(order_id, status), order) in claims.iter().zip(orders) {
            match order? {
                Some(order) if order.status == status => due.push(order),
                // Claimed ahead of a change that has not happened yet (`claim_ahead`): the
                // order is still on its way, by a redelivery or the stranded-order sweeper.
                // The claim is given back, not kept for a lease: the delivery that makes the
                // change then wins it and sends at once, and if none does, the next pass looks
                // again. (Kept, it made that delivery lose the claim, and the email waited a
                // whole `EMAIL_RESEND_AFTER` after the change: RELIABILITY.md, run 4.)
                Some(order) if !order.status.is_terminal() => {
                    tracing::info!(order_id = %order_id, status = status.as_str(), now = order.status.as_str(), "email claimed ahead of a status change still to come; looking again later");
                    to_give_back.push((order_id, status));
                    outcomes.push(Sent::Deferred { throttled: false });
                }
                // The order is gone, or ended in another status (a claim made ahead of a change
                // that was refused): a terminal status never changes, so nothing true is left
                // to tell. The claim is closed so that it is not picked up on every pass.
                other => {
                    tracing::info!(order_id = %order_id, status = status.as_str(), now = ?other.map(|o| o.status), "email claimed for a status the order never reached; closed unsent");
                    to_close.push((order_id, status));
                    outcomes.push(Sent::Done);
                }
            }
        }
        // Given back before the sends below, which may take seconds: the change may be made
        // meanwhile.
        join_all(
            to_give_back
                .iter()
                .map(|&(order_id, status)| self.release_claim(order_id, status)),
        )
        .await;
        let user_ids: Vec<Id> = due.iter().map(|o| o.user_id).collect();
        let users = self.recipients(&user_ids).await;
        let sends = due.iter().enumerate().map(|(i, order)| {
            let user = recipient(&users, i);
            async move {
                tracing::warn!(order_id = %order.id, status = order.status.as_str(), "sending an email that was claimed and never marked sent");
                let sent = self.send_claimed(order, user, None).await;
                if sent == Sent::Done {
                    metrics::counter!(EMAILS_RESENT_TOTAL, "kind" => order.status.as_str())
                        .increment(1);
                }
                sent
            }
        });
        let sent = join_all(sends).await;
        to_close.extend(
            due.iter()
                .zip(&sent)
                .filter(|(_, s)| **s == Sent::Done)
                .map(|(o, _)| (o.id, o.status)),
        );
        self.close_claims(&to_close).await;
        outcomes.extend(sent);
        Ok(outcomes)
    }
}
