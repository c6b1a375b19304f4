//! Orders through their lifecycle: placement, reads, conditional status transitions (which
//! give a failed or cancelled order's stock back in the same step, exactly once), the claims
//! that make each status email go out at least once and be sent by one caller at a time, and
//! the outbox flags that tell which orders' queue messages were confirmed sent.

use async_trait::async_trait;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::future::{join_all, try_join_all};

use super::StoreResult;
use crate::domain::{Id, Order, OrderStatus, PageRequest};

/// The outcome of a conditional status change.
#[derive(Debug)]
pub enum TransitionOutcome {
    /// The stored status was `from` and is now `to`; the order as it now is.
    Moved(Order),
    /// The stored status was not `from`; nothing changed. The order as it is, if it exists.
    Refused(Option<Order>),
}

#[async_trait]
pub trait Orders: Send + Sync + 'static {
    /// Refused with `BackendError::Duplicate` when the id is taken.
    async fn insert_order(&self, order: &Order) -> StoreResult<()>;
    async fn find_order(&self, id: Id) -> StoreResult<Option<Order>>;
    /// The user's orders, newest first, and how many there are in all.
    async fn list_orders(&self, user_id: Id, page: PageRequest) -> StoreResult<(Vec<Order>, u64)>;
    /// Everyone's orders (in `status` only, when given), newest first, and how many there are
    /// in all: what an admin looks through.
    async fn list_all_orders(
        &self,
        status: Option<OrderStatus>,
        page: PageRequest,
    ) -> StoreResult<(Vec<Order>, u64)>;

    /// Moves the order from `from` to `to` if it is still in `from`. When `to` returns stock
    /// (failed, cancelled), the order's reserved quantities go back in the same step, so stock
    /// is returned exactly once per order.
    async fn transition_order(
        &self,
        id: Id,
        from: OrderStatus,
        to: OrderStatus,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<TransitionOutcome>;
    /// `transition_order` (without a reason) for each of `ids`, answered in the same order. A
    /// worker processes the messages of one receive together through this; the embedded store
    /// applies them in one write instead of one write each.
    async fn transition_orders(
        &self,
        ids: &[Id],
        from: OrderStatus,
        to: OrderStatus,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<TransitionOutcome>> {
        try_join_all(
            ids.iter()
                .map(|&id| self.transition_order(id, from, to, None, now)),
        )
        .await
    }

    /// Claims the status email of `(order_id, status)`: true when this caller is now the one to
    /// send it. A claim is taken when none exists, or when one exists that was never marked
    /// sent and was made before `stale_before` (its sender crashed, or gave it back with
    /// `release_notification`). False when it was sent, or another caller's claim is fresh.
    async fn claim_notification(
        &self,
        order_id: Id,
        status: OrderStatus,
        stale_before: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// `claim_notification` for each claim, answered in the same order. On an error every
    /// claim this call made is given back, best effort: a claim left behind is only an unsent
    /// claim, which the email sweeper sends once it is stale.
    async fn claim_notifications(
        &self,
        claims: &[(Id, OrderStatus)],
        stale_before: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        let results =
            join_all(claims.iter().map(|&(order_id, status)| {
                self.claim_notification(order_id, status, stale_before)
            }))
            .await;
        if let Some(error) = results.iter().find_map(|r| r.as_ref().err()).cloned() {
            for (&(order_id, status), result) in claims.iter().zip(&results) {
                if matches!(result, Ok(true)) {
                    let _ = self.release_notification(order_id, status).await;
                }
            }
            return Err(error);
        }
        Ok(results.into_iter().flatten().collect())
    }
    /// Records that the email of a claim went out, to be kept until `keep_until` (then the
    /// record may be purged). True when it was marked sent before: this send was a duplicate.
    async fn mark_notification_sent(
        &self,
        order_id: Id,
        status: OrderStatus,
        now: DateTime<Utc>,
        keep_until: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// `mark_notification_sent` for each claim, answered in the same order (the embedded
    /// store makes them in one write; MongoDB in one read and one update).
    async fn mark_notifications_sent(
        &self,
        claims: &[(Id, OrderStatus)],
        now: DateTime<Utc>,
        keep_until: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        let mut before = Vec::with_capacity(claims.len());
        for &(order_id, status) in claims {
            before.push(
                self.mark_notification_sent(order_id, status, now, keep_until)
                    .await?,
            );
        }
        Ok(before)
    }
    /// Gives an unsent claim back after its email could not be sent: it is stale at once, so
    /// the next delivery or the sweeper's next pass takes it. A claim that was sent is kept.
    async fn release_notification(&self, order_id: Id, status: OrderStatus) -> StoreResult<()>;
    /// Claims never marked sent and made before `stale_before`, oldest first: the emails the
    /// sweeper sends again.
    async fn unsent_notifications(
        &self,
        stale_before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<(Id, OrderStatus)>>;

    /// Marks the order's queue message as sent (the outbox flag).
    async fn mark_enqueued(&self, order_id: Id) -> StoreResult<()>;
    /// `mark_enqueued` for each of `order_ids` (one write when embedded, one update on MongoDB).
    async fn mark_enqueued_many(&self, order_ids: &[Id]) -> StoreResult<()> {
        for &id in order_ids {
            self.mark_enqueued(id).await?;
        }
        Ok(())
    }
    /// Pending orders whose queue message was never confirmed sent, older than `before`.
    async fn unenqueued_orders(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Id>>;
    /// Orders pending or processing whose last change is older than `before`, whatever their
    /// outbox flag, oldest change first: the stranded-order sweeper sends them again.
    async fn stuck_orders(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Id>>;
    /// Claims, for the stranded-order sweeper to send again, up to `limit` orders stranded at
    /// `now`: pending or processing, unchanged for `bound`, and due (never claimed, or their
    /// last claim's wait is over), oldest change first. A claim is a compare-and-set on the
    /// order, so however many processes sweep, a due order is claimed by one of them, once; and
    /// it makes the order due again only after [`resend_wait`], so an order whose messages keep
    /// getting lost is sent again after 1, 2, 4 … bounds rather than every bound.
    async fn claim_stranded(
        &self,
        now: DateTime<Utc>,
        bound: Duration,
        limit: u32,
    ) -> StoreResult<Vec<Id>>;

    /// Orders whose last change (`updatedAt`) is at or after `since`, oldest change first (ties
    /// by id), at most `limit`: only `user_id`'s when given, every order's otherwise. Status
    /// streams fill a reconnect's gap with it, and `api` processes without Redis follow the
    /// workers' transitions through it (`crate::events`).
    async fn orders_changed_since(
        &self,
        user_id: Option<Id>,
        since: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Order>>;
}

/// The longest wait between two re-sends of a stranded order, in bounds (`ORDER_STUCK_AFTER`).
pub const MAX_RESEND_WAIT_BOUNDS: i32 = 8;

/// When a stranded order claimed at `now`, unchanged since `updated_at`, is due again: after as
/// long again as it has been unchanged, so the waits double, but never less than one `bound`
/// nor more than [`MAX_RESEND_WAIT_BOUNDS`] of them. A stranded order's message is often only
/// slow (a queue backlog after an outage): doubling keeps the sweeper from piling duplicates
/// onto that backlog, while an order whose message really was lost still goes out again soon.
pub fn resend_due(now: DateTime<Utc>, updated_at: DateTime<Utc>, bound: Duration) -> DateTime<Utc> {
    let bound = TimeDelta::from_std(bound).unwrap_or(TimeDelta::MAX);
    let longest = bound
        .checked_mul(MAX_RESEND_WAIT_BOUNDS)
        .unwrap_or(TimeDelta::MAX);
    let wait = (now - updated_at).clamp(bound, longest.max(bound));
    now.checked_add_signed(wait)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resend_waits_double_from_one_bound_up_to_the_longest() {
        let bound = Duration::from_secs(10);
        let changed = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let at = |s| changed + TimeDelta::seconds(s);
        // Claimed at the bound: due one bound later; then each wait is the age so far.
        assert_eq!(resend_due(at(10), changed, bound), at(20));
        assert_eq!(resend_due(at(20), changed, bound), at(40));
        assert_eq!(resend_due(at(40), changed, bound), at(80));
        // Never more than eight bounds apart, however old the order.
        assert_eq!(resend_due(at(1000), changed, bound), at(1080));
        // A clock behind the last change still waits a bound.
        assert_eq!(resend_due(at(-5), changed, bound), at(5));
    }
}
