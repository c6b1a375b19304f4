//! Opening a status stream: who may follow what, what a stream sends first (the order's state,
//! or what a resumed stream missed, from the store), and which live events it passes on.
//!
//! A stream subscribes to the bus *before* it reads the store, so a change made between the
//! two is in its buffer rather than lost; what the read already covered is then skipped.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::bus::{Bus, Subscription, Topic};
use super::{EventId, OrderEvent, RESUME_OVERLAP};
use crate::domain::Id;
use crate::error::AppError;
use crate::metrics::backend_call;
use crate::store::Orders;
use crate::tokens::Principal;

/// Orders one store read of a resume brings at most; a resume reads on until it has them all.
const REPLAY_PAGE: u32 = 500;
/// Bound on what one resume replays: a client away long enough to miss more reads the rest
/// with `GET /api/orders`.
const REPLAY_LIMIT: usize = 10_000;

/// Opens streams; `http::order_events` holds one.
pub struct Streams {
    pub bus: Arc<Bus>,
    pub orders: Arc<dyn Orders>,
    /// How often an idle stream sends a `: keep-alive` comment (`SSE_HEARTBEAT_INTERVAL`).
    pub heartbeat: Duration,
}

/// What a stream passes on of the live events.
enum Filter {
    /// One order: only changes above the rank already sent; the stream ends after a terminal
    /// one. `orders` reads it again at each heartbeat ([`Feed::recheck`]).
    Order {
        order_id: Id,
        sent_rank: Option<u8>,
        orders: Arc<dyn Orders>,
    },
    /// Many orders: changes not already covered by the resume's read of the store.
    Many { replayed: HashMap<Id, u8> },
}

/// One open stream: what it sends first, then the live events it follows.
pub struct Feed {
    backlog: VecDeque<Arc<OrderEvent>>,
    subscription: Subscription,
    filter: Filter,
    /// The highest id sent: ids on a stream never go down.
    last_id: Option<EventId>,
    done: bool,
}

impl Feed {
    /// At a heartbeat, a single-order stream reads its order again: a change whose event was
    /// lost on the way (a Redis publish that failed) is then sent now rather than never. One
    /// read by id per stream and heartbeat; a failed read waits for the next.
    pub async fn recheck(&mut self) {
        let Filter::Order {
            order_id,
            sent_rank,
            orders,
        } = &self.filter
        else {
            return;
        };
        if self.done || !self.backlog.is_empty() {
            return;
        }
        let found = backend_call("store", "find_order", orders.find_order(*order_id)).await;
        if let Ok(Some(order)) = found {
            if !matches!(*sent_rank, Some(r) if super::rank(order.status) <= r) {
                self.backlog.push_back(Arc::new(OrderEvent::new(&order)));
            }
        }
    }

    /// The next event to send and the id to send it under; `None` when the stream is over (a
    /// terminal status was sent, the subscriber was dropped for falling behind, or shutdown).
    /// Cancel-safe: nothing is awaited after an event is taken.
    pub async fn next(&mut self) -> Option<(EventId, Arc<OrderEvent>)> {
        loop {
            if self.done {
                return None;
            }
            // What the stream read from the store is sent as it is; live events are filtered.
            let (event, live) = match self.backlog.pop_front() {
                Some(event) => (event, false),
                None => match self.subscription.rx.recv().await {
                    Some(event) => (event, true),
                    None => {
                        self.done = true;
                        return None;
                    }
                },
            };
            let fresh = match &mut self.filter {
                Filter::Order { sent_rank, .. } => {
                    let fresh = !matches!(*sent_rank, Some(r) if event.id.rank <= r);
                    if fresh {
                        *sent_rank = Some(event.id.rank);
                        self.done = event.is_terminal();
                    }
                    fresh
                }
                Filter::Many { .. } if !live => true,
                Filter::Many { replayed } => match replayed.get(&event.order_id) {
                    Some(&rank) if rank >= event.id.rank => false,
                    Some(_) => {
                        replayed.remove(&event.order_id);
                        true
                    }
                    None => true,
                },
            };
            if fresh {
                let id = self.last_id.map_or(event.id, |last| last.max(event.id));
                self.last_id = Some(id);
                return Some((id, event));
            }
        }
    }
}

impl Streams {
    /// One order's stream: its state now (unless `last` shows the client has it), then each
    /// change, ending after a terminal status. Someone else's order is `NotFound`, as for
    /// `GET /api/orders/{id}`.
    pub async fn order(
        &self,
        principal: &Principal,
        order_id: Id,
        last: Option<EventId>,
    ) -> Result<Feed, AppError> {
        let subscription = self.bus.subscribe(Topic::Order(order_id));
        // Opened right after the order was placed or changed (the usual case: a client follows
        // the order it was just answered `201` for), the bus has its state: no store read.
        let current = match self.bus.latest(order_id) {
            Some(event) => event,
            None => backend_call("store", "find_order", self.orders.find_order(order_id))
                .await?
                .map(|order| Arc::new(OrderEvent::new(&order)))
                .ok_or(AppError::NotFound("order"))?,
        };
        if current.user_id != principal.user_id && !principal.is_admin() {
            return Err(AppError::NotFound("order"));
        }
        let now = current.id;
        let mut backlog = VecDeque::new();
        let (sent_rank, done) = match last {
            // The client has this state (or a later one it can not have): nothing to repeat.
            Some(last) if last >= now => (Some(now.rank), current.is_terminal()),
            _ => {
                backlog.push_back(current);
                (None, false)
            }
        };
        Ok(Feed {
            backlog,
            subscription,
            filter: Filter::Order {
                order_id,
                sent_rank,
                orders: self.orders.clone(),
            },
            last_id: last,
            done,
        })
    }

    /// Every change to the caller's orders (an admin's: everyone's). With `last`, first the
    /// orders that changed since (from [`RESUME_OVERLAP`] before it), each as it is now.
    pub async fn all(
        &self,
        principal: &Principal,
        last: Option<EventId>,
    ) -> Result<Feed, AppError> {
        let (topic, user) = if principal.is_admin() {
            (Topic::Everyone, None)
        } else {
            (Topic::User(principal.user_id), Some(principal.user_id))
        };
        let subscription = self.bus.subscribe(topic);
        let mut backlog = VecDeque::new();
        let mut replayed = HashMap::new();
        if let Some(last) = last {
            let overlap = RESUME_OVERLAP.as_millis() as i64;
            let mut since =
                chrono::DateTime::from_timestamp_millis(last.at_ms.saturating_sub(overlap))
                    .unwrap_or_default();
            loop {
                let page = backend_call(
                    "store",
                    "orders_changed_since",
                    self.orders.orders_changed_since(user, since, REPLAY_PAGE),
                )
                .await?;
                let full = page.len() == REPLAY_PAGE as usize;
                let mut added = 0;
                for order in page {
                    since = order.updated_at;
                    if replayed
                        .insert(order.id, super::rank(order.status))
                        .is_none()
                    {
                        backlog.push_back(Arc::new(OrderEvent::new(&order)));
                        added += 1;
                    }
                }
                // Each page starts at the last one's last millisecond, so a page that brought
                // nothing new means all that is left shares that millisecond: it was read.
                if !full || added == 0 || backlog.len() >= REPLAY_LIMIT {
                    break;
                }
            }
        }
        Ok(Feed {
            backlog,
            subscription,
            filter: Filter::Many { replayed },
            last_id: last,
            done: false,
        })
    }
}
