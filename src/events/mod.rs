//! Status events: every acknowledged order change (placed, and each transition) becomes an
//! [`OrderEvent`] that the SSE streams of `http::order_events` send to the clients following
//! the order.
//!
//! Where events travel, by topology:
//! - one `serve` process: the worker's transitions reach the [`bus::Bus`] of the same process
//!   directly;
//! - with Redis configured (`REDIS_HOST`): every process also publishes its events on one
//!   pub/sub channel, and every process serving the API feeds what it hears from the others
//!   into its bus (`redis`). Pub/sub forgets what it could not deliver, so a subscriber that
//!   (re)connects first reads the store for the changes it may have missed;
//! - without Redis, in an `api` process: the process that holds streams reads the store's
//!   changes since the last one it saw, at `SSE_STORE_POLL_INTERVAL`, while it has streams open
//!   (`store_feed`): bounded reads, one query per interval whatever the number of streams.
//!
//! Event ids, and why they can be filled from the store: an id is the order's `updatedAt` in
//! milliseconds and the rank of its status (pending 0, processing 1, a terminal status 2), as
//! one decimal number, `ms × 10 + rank` (so ids compare as numbers do). The store keeps each order's current state with its `updatedAt`, and every
//! transition moves it forward, so "the changes since id X" is a range query on `updatedAt`
//! (indexed, per user and for everyone), and "has the order moved since X" is a comparison of
//! ids. A resumed stream therefore gets, for each order that changed while it was away, its
//! state as it is now: a status passed through meanwhile is not replayed, the latest always is,
//! so a client never misses where an order ended up. Commits and clocks of different processes
//! are not perfectly ordered, so a resume of the all-orders stream reads back
//! [`RESUME_OVERLAP`] before its id (a client may see an order's current state twice; never a
//! gap), and the single-order stream compares ids, which needs no allowance. Within a stream
//! ids never go down: a late event is sent under the highest id sent so far.
//!
//! A slow reader never holds up a publisher: each stream has a bounded buffer, and a stream
//! whose buffer is full is dropped (its client resumes with `Last-Event-ID`).

pub mod bus;
pub mod redis;
pub mod store_feed;
pub mod streams;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::{Id, Order, OrderStatus};

/// How far back of its `Last-Event-ID` a resumed all-orders stream reads: more than the commit
/// lag and clock skew between the processes that make transitions.
pub const RESUME_OVERLAP: Duration = Duration::from_secs(2);

/// The rank of a status along the state machine: every transition raises it.
pub fn rank(status: OrderStatus) -> u8 {
    match status {
        OrderStatus::Pending => 0,
        OrderStatus::Processing => 1,
        OrderStatus::Completed | OrderStatus::Failed | OrderStatus::Cancelled => 2,
    }
}

/// `updatedAt` in ms × 10 + status rank: ordered as the order's changes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    pub at_ms: i64,
    pub rank: u8,
}

impl EventId {
    pub fn of(order: &Order) -> EventId {
        EventId {
            at_ms: order.updated_at.timestamp_millis(),
            rank: rank(order.status),
        }
    }

    /// What [`EventId`]'s `Display` writes, and nothing else: 1 to 18 digits, the last 0 to 2
    /// ([`EventId::PATTERN`]).
    pub fn parse(raw: &str) -> Option<EventId> {
        if raw.is_empty() || raw.len() > 18 || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let value: i64 = raw.parse().ok()?;
        let rank = (value % 10) as u8;
        (rank <= 2).then_some(EventId {
            at_ms: value / 10,
            rank,
        })
    }

    /// The pattern of [`EventId::parse`], as the OpenAPI document states it.
    pub const PATTERN: &'static str = "^[0-9]{0,17}[0-2]$";
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.at_ms, self.rank)
    }
}

/// The `data:` of a status event: the status, when it changed, and the order as
/// `GET /api/orders/{id}` answers it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventData<'a> {
    status: OrderStatus,
    updated_at: chrono::DateTime<chrono::Utc>,
    order: &'a Order,
}

/// One order change, encoded once for every stream that sends it.
#[derive(Debug)]
pub struct OrderEvent {
    pub order_id: Id,
    pub user_id: Id,
    pub id: EventId,
    /// The JSON of the `data:` line (one line: JSON has no raw newlines).
    pub data: String,
}

impl OrderEvent {
    pub fn new(order: &Order) -> OrderEvent {
        let data = serde_json::to_string(&EventData {
            status: order.status,
            updated_at: order.updated_at,
            order,
        })
        .expect("an order serialises");
        OrderEvent {
            order_id: order.id,
            user_id: order.user_id,
            id: EventId::of(order),
            data,
        }
    }

    pub fn is_terminal(&self) -> bool {
        self.id.rank == 2
    }
}

/// What travels on the Redis channel: the order, and which process sent it (a process hears
/// its own messages too, and has already delivered those).
#[derive(Serialize, Deserialize)]
struct Wire {
    origin: u64,
    order: Order,
}

/// Where the order actors report changes: this process's bus, and Redis when configured.
#[derive(Clone)]
pub struct Events {
    bus: Arc<bus::Bus>,
    redis: Option<redis::Publisher>,
}

impl Events {
    /// Events for this process only (no Redis).
    pub fn local(bus: Arc<bus::Bus>) -> Events {
        Events { bus, redis: None }
    }

    pub fn with_redis(bus: Arc<bus::Bus>, publisher: redis::Publisher) -> Events {
        Events {
            bus,
            redis: Some(publisher),
        }
    }

    /// Reports a change that the store acknowledged. Never waits: the bus hands the event to
    /// buffers, and the Redis publisher sends from a task of its own.
    pub fn publish(&self, order: &Order) {
        if let Some(redis) = &self.redis {
            redis.send(order);
        }
        if self.bus.has_subscribers() {
            self.bus.publish(Arc::new(OrderEvent::new(order)));
        }
    }

    pub fn bus(&self) -> &Arc<bus::Bus> {
        &self.bus
    }
}

/// What a process does with events besides its own bus, by role and configuration (see the
/// module doc): with Redis it publishes, and listens when it serves the API; without, a
/// process serving the API reads the store when `polls_store` (its changes may be made by
/// other processes).
pub fn start(
    bus: &Arc<bus::Bus>,
    redis: Option<&crate::config::RedisConfig>,
    serves_api: bool,
    polls_store: bool,
    poll_interval: Duration,
    orders: Arc<dyn crate::store::Orders>,
) -> Events {
    let client = redis.and_then(|config| match crate::cache::redis::client(config) {
        Ok(client) => Some(client),
        Err(e) => {
            tracing::error!(error = %e, "invalid Redis configuration; status events stay in this process");
            None
        }
    });
    match client {
        Some(client) => {
            let channel = redis::channel(crate::backends::REDIS_KEY_PREFIX);
            let publisher = redis::Publisher::start(client.clone(), channel.clone());
            if serves_api {
                actix_web::rt::spawn(redis::listen(
                    client,
                    channel,
                    publisher.origin(),
                    bus.clone(),
                    orders,
                ));
            }
            Events::with_redis(bus.clone(), publisher)
        }
        None => {
            if serves_api && polls_store {
                actix_web::rt::spawn(store_feed::run(orders, bus.clone(), poll_interval));
            }
            Events::local(bus.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_back_what_they_write_and_refuse_anything_else() {
        for id in [
            EventId {
                at_ms: 1_764_000_000_123,
                rank: 2,
            },
            EventId { at_ms: 0, rank: 0 },
        ] {
            assert_eq!(EventId::parse(&id.to_string()), Some(id));
        }
        assert_eq!(
            EventId::parse("17640000001231"),
            Some(EventId {
                at_ms: 1_764_000_000_123,
                rank: 1
            })
        );
        for bad in [
            "",
            "-",
            "13",
            "9",
            "1-1",
            "a1",
            " 11",
            "+11",
            "-10",
            "1234567890123456780",
        ] {
            assert_eq!(EventId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_documented_pattern_admits_exactly_what_parses() {
        let pattern = regex::Regex::new(EventId::PATTERN).unwrap();
        for raw in ["0", "2", "10", "17640000001232", "123456789012345672"] {
            assert!(
                pattern.is_match(raw) && EventId::parse(raw).is_some(),
                "{raw}"
            );
        }
        for raw in ["", "3", "19", "1234567890123456782", "1-1", "a0"] {
            assert!(
                !pattern.is_match(raw) && EventId::parse(raw).is_none(),
                "{raw}"
            );
        }
    }

    #[test]
    fn ids_order_as_the_changes_do() {
        let a = EventId { at_ms: 5, rank: 0 };
        let b = EventId { at_ms: 5, rank: 1 };
        let c = EventId { at_ms: 6, rank: 0 };
        assert!(a < b && b < c);
    }
}
