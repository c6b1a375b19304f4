//! Telling the customer: each status email is claimed once in the store before it is handed
//! to the mailer, and the claim is given back when the email could not be sent.

use futures_util::future::join_all;

use super::OrderActor;
use crate::actors::{ask, mailer};
use crate::domain::{Order, User};
use crate::error::{AppError, BackendError};
use crate::messages::mailer::SendOrderEmail;
use crate::metrics::backend_call;

impl OrderActor {
    /// Emails the customer about the order's current (terminal) status, once per status.
    pub(super) async fn notify(
        &self,
        order: &Order,
        request_id: Option<String>,
    ) -> Result<(), AppError> {
        let mut outcomes = self.notify_all(&[(order, request_id)]).await;
        outcomes.pop().expect("one outcome per order")
    }

    /// Emails each customer about their order's current (terminal) status, once per status; one
    /// outcome per order, in order. The claims (one write) and the recipients (one read) are
    /// asked for together, for all the orders at once, so the emails wait for the slower of two
    /// store calls instead of two calls per order in turn.
    pub(super) async fn notify_all(
        &self,
        orders: &[(&Order, Option<String>)],
    ) -> Vec<Result<(), AppError>> {
        let claims: Vec<_> = orders.iter().map(|(o, _)| (o.id, o.status)).collect();
        let user_ids: Vec<_> = orders.iter().map(|(o, _)| o.user_id).collect();
        let (claimed, users) = tokio::join!(
            backend_call(
                "store",
                "claim_notifications",
                self.orders.claim_notifications(&claims),
            ),
            backend_call("store", "find_users", self.accounts.find_users(&user_ids)),
        );
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(e) => return vec![Err(e.into()); orders.len()],
        };
        let sends = orders
            .iter()
            .zip(claimed)
            .enumerate()
            .map(|(i, ((order, request_id), claimed))| {
                let user = users.as_ref().map(|found| found[i].clone()).map_err(Clone::clone);
                async move {
                    if !claimed {
                        return Ok(());
                    }
                    let sent = self.email(order, user, request_id.clone()).await;
                    if let Err(e) = &sent {
                        // Give the claim back so the next delivery of the message tries again.
                        tracing::warn!(error = %e, order_id = %order.id, "order email not sent; will retry");
                        let _ = backend_call(
                            "store",
                            "release_notification",
                            self.orders.release_notification(order.id, order.status),
                        )
                        .await;
                    }
                    sent
                }
            });
        join_all(sends).await
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
