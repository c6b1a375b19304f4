//! Emails claimed ahead of the status change they tell of. A terminal change (completed,
//! failed, cancelled) is made only once its email is claimed in the store, so every order that
//! reaches a terminal status has a claim the email sweeper can find, whatever fails after the
//! change. Claimed after the change, as it once was, a delivery that completed an order and then
//! could not reach the store, and whose message then died, left an order no one would ever
//! email (RELIABILITY.md, "What the campaign found").
//!
//! The claim costs no extra round trip: it is the write the email needed anyway, made before
//! the change instead of after it, beside the read of the customers. When the change is then
//! refused, a claim for a status the order did not reach is closed unsent; one whose change
//! failed is given back, so that its retry wins it at once. A claim its caller could not finish
//! either way (the process died between the claim and the change) is the email sweeper's: it
//! sends it once the order is in that status and the claim's lease (`EMAIL_RESEND_AFTER`) is
//! over, waits while the order is still on its way, and closes it once the order has ended
//! otherwise.

use futures_util::future::join_all;

use super::notify::{recipient, ClaimedEmail, Recipients};
use super::OrderActor;
use crate::domain::{Id, Order, OrderStatus};
use crate::error::AppError;

/// The emails of one status, claimed for a batch of orders before moving them there.
pub(super) struct ClaimedAhead {
    status: OrderStatus,
    ids: Vec<Id>,
    /// Per order: whether this caller won the claim (and so is the one to send).
    won: Vec<bool>,
    users: Recipients,
}

impl OrderActor {
    /// Claims the emails of `status` for `orders` ahead of moving them there, and reads their
    /// customers meanwhile. `Err` when the claims could not be made: the change must not be
    /// made then, and the caller's delivery (or request) is retried.
    pub(super) async fn claim_ahead(
        &self,
        orders: &[&Order],
        status: OrderStatus,
    ) -> Result<ClaimedAhead, AppError> {
        let ids: Vec<Id> = orders.iter().map(|o| o.id).collect();
        let claims: Vec<(Id, OrderStatus)> = ids.iter().map(|&id| (id, status)).collect();
        let user_ids: Vec<Id> = orders.iter().map(|o| o.user_id).collect();
        let (won, users) = tokio::join!(self.claim_emails(&claims), self.recipients(&user_ids));
        Ok(ClaimedAhead {
            status,
            ids,
            won: won?,
            users,
        })
    }
}

impl ClaimedAhead {
    /// After the change: `now` is each claimed order as it now is (moved or refused), in the
    /// claim's order, with its request id. The orders in the claimed status whose claim this
    /// caller won are emailed; a won claim whose order is in another status is closed.
    pub(super) async fn tell(self, actor: &OrderActor, now: &[(&Order, Option<String>)]) {
        let mut due = Vec::new();
        let mut never_reached = Vec::new();
        for (i, (order, request_id)) in now.iter().enumerate() {
            debug_assert_eq!(order.id, self.ids[i], "orders in the claim's order");
            if !self.won[i] {
                continue;
            }
            if order.status == self.status {
                due.push(ClaimedEmail {
                    order,
                    request_id: request_id.clone(),
                    user: recipient(&self.users, i),
                });
            } else {
                // Refused: each terminal status is reached from one status only, and the order
                // has left it, so this claim's email can never be true.
                never_reached.push((order.id, self.status));
            }
        }
        let ((), ()) = tokio::join!(
            actor.send_and_close(due),
            actor.close_claims(&never_reached)
        );
    }

    /// The change failed (it may or may not have been made): the claims won are given back, so
    /// that the change's retry wins them again at once, or the sweeper finds them.
    pub(super) async fn give_back(self, actor: &OrderActor) {
        join_all(
            self.ids
                .iter()
                .zip(&self.won)
                .filter(|(_, won)| **won)
                .map(|(&id, _)| actor.release_claim(id, self.status)),
        )
        .await;
    }
}
