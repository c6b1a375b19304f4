//! The in-process bus: who follows what, and the hand-over of each event to their buffers.
//!
//! Subscribers are indexed by what they follow (one order, one user's orders, or everyone's),
//! so an event wakes only its own streams: a broadcast channel would wake every stream for
//! every event, which at thousands of streams and thousands of changes a second is most of a
//! core. Each subscriber has a bounded buffer; a publisher only ever `try_send`s, and a
//! subscriber whose buffer is full is removed (its stream ends after what it holds, and the
//! client resumes from the store with `Last-Event-ID`). A subscriber costs its buffer's few
//! slots and an entry here.
//!
//! The same change can arrive twice (the store feed reads back a little to cover commit lag,
//! Redis and the store feed may both bring it after a reconnect), or late, after a later one.
//! The bus remembers, for a few seconds, the highest status rank it passed on for each order
//! and drops anything not above it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::OrderEvent;
use crate::domain::Id;
use crate::metrics::{ORDER_EVENT_STREAMS_OPEN, ORDER_EVENT_SUBSCRIBERS_DROPPED_TOTAL};

/// Events a subscriber may hold unread before it is dropped: a client keeping up holds one or
/// two; one that falls this far behind resumes from the store instead.
pub const BUFFER: usize = 256;

/// How long the bus remembers an order's last rank: more than the store feed's read-back and
/// its interval together.
const DEDUPE_WINDOW: Duration = Duration::from_secs(5);

/// How long the bus keeps an order's latest event for a stream opened just after it (see
/// [`Bus::latest`]): a client opens its stream within milliseconds of the `201`; short, since
/// at thousands of changes a second every second kept is thousands of events held.
const RECENT_WINDOW: Duration = Duration::from_secs(2);

/// What a subscriber follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    Order(Id),
    User(Id),
    Everyone,
}

struct Slot {
    key: u64,
    tx: mpsc::Sender<Arc<OrderEvent>>,
}

#[derive(Default)]
struct Inner {
    next_key: u64,
    by_order: HashMap<Id, Vec<Slot>>,
    by_user: HashMap<Id, Vec<Slot>>,
    everyone: Vec<Slot>,
    /// Per order: the highest rank passed on, and when.
    last_rank: HashMap<Id, (u8, Instant)>,
    /// `last_rank`'s entries by age, to forget them after [`DEDUPE_WINDOW`].
    ages: VecDeque<(Instant, Id)>,
    /// Per order: the latest event passed on, for [`RECENT_WINDOW`].
    recent: HashMap<Id, (Arc<OrderEvent>, Instant)>,
    /// `recent`'s entries by age.
    recent_ages: VecDeque<(Instant, Id)>,
}

impl Inner {
    /// Forgets the latest events older than [`RECENT_WINDOW`].
    fn forget_old_events(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.recent_ages.front() {
            if now.duration_since(at) < RECENT_WINDOW {
                break;
            }
            self.recent_ages.pop_front();
            if self.recent.get(&id).is_some_and(|(_, seen)| *seen == at) {
                self.recent.remove(&id);
            }
        }
    }
}

#[derive(Default)]
pub struct Bus {
    inner: Mutex<Inner>,
    subscribers: AtomicUsize,
    closed: AtomicBool,
}

/// A subscriber's end: its buffer, and its place on the bus, given back on drop.
pub struct Subscription {
    pub rx: mpsc::Receiver<Arc<OrderEvent>>,
    bus: Arc<Bus>,
    topic: Topic,
    key: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.bus.remove(self.topic, self.key);
        metrics::gauge!(ORDER_EVENT_STREAMS_OPEN).decrement(1.0);
    }
}

impl Bus {
    pub fn new() -> Arc<Bus> {
        Arc::new(Bus::default())
    }

    pub fn subscribe(self: &Arc<Self>, topic: Topic) -> Subscription {
        let (tx, rx) = mpsc::channel(BUFFER);
        let mut inner = self.inner.lock().expect("bus lock");
        let key = inner.next_key;
        inner.next_key += 1;
        // After `close`, the sender is dropped here and the stream ends at once.
        if !self.closed.load(Ordering::Acquire) {
            let slot = Slot { key, tx };
            match topic {
                Topic::Order(id) => inner.by_order.entry(id).or_default().push(slot),
                Topic::User(id) => inner.by_user.entry(id).or_default().push(slot),
                Topic::Everyone => inner.everyone.push(slot),
            }
            self.subscribers.fetch_add(1, Ordering::Relaxed);
        }
        metrics::gauge!(ORDER_EVENT_STREAMS_OPEN).increment(1.0);
        Subscription {
            rx,
            bus: self.clone(),
            topic,
            key,
        }
    }

    pub fn has_subscribers(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Hands `event` to every subscriber it concerns, unless it is not news (see the module
    /// doc). Returns whether it was passed on.
    pub fn publish(&self, event: Arc<OrderEvent>) -> bool {
        let mut guard = self.inner.lock().expect("bus lock");
        let inner = &mut *guard;
        let now = Instant::now();
        while let Some(&(at, id)) = inner.ages.front() {
            if now.duration_since(at) < DEDUPE_WINDOW {
                break;
            }
            inner.ages.pop_front();
            if inner
                .last_rank
                .get(&id)
                .is_some_and(|(_, seen)| *seen == at)
            {
                inner.last_rank.remove(&id);
            }
        }
        if inner
            .last_rank
            .get(&event.order_id)
            .is_some_and(|(rank, _)| *rank >= event.id.rank)
        {
            return false;
        }
        inner.last_rank.insert(event.order_id, (event.id.rank, now));
        inner.ages.push_back((now, event.order_id));
        inner.forget_old_events(now);
        inner.recent.insert(event.order_id, (event.clone(), now));
        inner.recent_ages.push_back((now, event.order_id));

        let mut dropped = 0;
        if let Some(slots) = inner.by_order.get_mut(&event.order_id) {
            dropped += deliver(slots, &event);
            if slots.is_empty() {
                inner.by_order.remove(&event.order_id);
            }
        }
        if let Some(slots) = inner.by_user.get_mut(&event.user_id) {
            dropped += deliver(slots, &event);
            if slots.is_empty() {
                inner.by_user.remove(&event.user_id);
            }
        }
        dropped += deliver(&mut inner.everyone, &event);
        if dropped > 0 {
            self.subscribers.fetch_sub(dropped, Ordering::Relaxed);
            metrics::counter!(ORDER_EVENT_SUBSCRIBERS_DROPPED_TOTAL).increment(dropped as u64);
        }
        true
    }

    /// The latest event this bus passed on for the order, if that was less than
    /// [`RECENT_WINDOW`] ago: the state a stream opened right after an order was placed or
    /// changed starts from, instead of a store read. It is the newest this process knows; a
    /// change after it reaches a stream subscribed before asking.
    pub fn latest(&self, order_id: Id) -> Option<Arc<OrderEvent>> {
        let mut inner = self.inner.lock().expect("bus lock");
        inner.forget_old_events(Instant::now());
        inner.recent.get(&order_id).map(|(event, _)| event.clone())
    }

    /// Ends every stream (after what each holds) and refuses new ones: at shutdown, so open
    /// streams do not hold up the HTTP server's drain.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let mut inner = self.inner.lock().expect("bus lock");
        inner.by_order.clear();
        inner.by_user.clear();
        inner.everyone.clear();
        self.subscribers.store(0, Ordering::Relaxed);
    }

    fn remove(&self, topic: Topic, key: u64) {
        let mut guard = self.inner.lock().expect("bus lock");
        let inner = &mut *guard;
        let (slots, emptied) = match topic {
            Topic::Order(id) => (inner.by_order.get_mut(&id), Some((true, id))),
            Topic::User(id) => (inner.by_user.get_mut(&id), Some((false, id))),
            Topic::Everyone => (Some(&mut inner.everyone), None),
        };
        let Some(slots) = slots else { return };
        let before = slots.len();
        slots.retain(|s| s.key != key);
        let removed = before - slots.len();
        let empty = slots.is_empty();
        if removed > 0 {
            self.subscribers.fetch_sub(removed, Ordering::Relaxed);
        }
        match emptied {
            Some((true, id)) if empty => {
                inner.by_order.remove(&id);
            }
            Some((false, id)) if empty => {
                inner.by_user.remove(&id);
            }
            _ => {}
        }
    }
}

/// `try_send`s to each slot; removes the slots that are full or gone. Returns how many.
fn deliver(slots: &mut Vec<Slot>, event: &Arc<OrderEvent>) -> usize {
    let before = slots.len();
    slots.retain(|slot| slot.tx.try_send(event.clone()).is_ok());
    before - slots.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventId;

    fn event(order_id: Id, user_id: Id, rank: u8) -> Arc<OrderEvent> {
        Arc::new(OrderEvent {
            order_id,
            user_id,
            id: EventId { at_ms: 1, rank },
            data: "{}".into(),
        })
    }

    #[test]
    fn an_event_reaches_its_order_its_user_and_everyone_and_no_one_else() {
        let bus = Bus::new();
        let (order, user, other) = (Id::new(), Id::new(), Id::new());
        let mut by_order = bus.subscribe(Topic::Order(order));
        let mut by_user = bus.subscribe(Topic::User(user));
        let mut all = bus.subscribe(Topic::Everyone);
        let mut unrelated = bus.subscribe(Topic::User(other));
        assert!(bus.publish(event(order, user, 1)));
        assert!(by_order.rx.try_recv().is_ok());
        assert!(by_user.rx.try_recv().is_ok());
        assert!(all.rx.try_recv().is_ok());
        assert!(unrelated.rx.try_recv().is_err());
    }

    #[test]
    fn repeated_or_older_changes_are_not_passed_on() {
        let bus = Bus::new();
        let (order, user) = (Id::new(), Id::new());
        let mut sub = bus.subscribe(Topic::Order(order));
        assert!(bus.publish(event(order, user, 1)));
        assert!(!bus.publish(event(order, user, 1)));
        assert!(!bus.publish(event(order, user, 0)));
        assert!(bus.publish(event(order, user, 2)));
        assert_eq!(sub.rx.try_recv().unwrap().id.rank, 1);
        assert_eq!(sub.rx.try_recv().unwrap().id.rank, 2);
        assert!(sub.rx.try_recv().is_err());
    }

    #[test]
    fn the_latest_event_passed_on_is_kept_for_a_stream_opened_just_after() {
        let bus = Bus::new();
        let (order, user) = (Id::new(), Id::new());
        let _someone = bus.subscribe(Topic::Everyone);
        assert!(bus.latest(order).is_none());
        bus.publish(event(order, user, 0));
        bus.publish(event(order, user, 1));
        // A late, older change is not news and does not replace the newer one.
        bus.publish(event(order, user, 0));
        assert_eq!(bus.latest(order).unwrap().id.rank, 1);
        assert!(bus.latest(Id::new()).is_none());
    }

    #[test]
    fn a_full_subscriber_is_dropped_without_holding_up_the_others() {
        let bus = Bus::new();
        let user = Id::new();
        let mut slow = bus.subscribe(Topic::User(user));
        let mut fast = bus.subscribe(Topic::Everyone);
        for _ in 0..=BUFFER {
            bus.publish(event(Id::new(), user, 0));
            fast.rx
                .try_recv()
                .expect("the reader that keeps up gets every event");
        }
        // The slow one gets what its buffer held, then its end.
        for _ in 0..BUFFER {
            assert!(slow.rx.try_recv().is_ok());
        }
        assert!(matches!(
            slow.rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert!(bus.has_subscribers());
        drop(fast);
        drop(slow);
        assert!(!bus.has_subscribers());
    }

    #[test]
    fn close_ends_every_stream_and_refuses_new_ones() {
        let bus = Bus::new();
        let mut sub = bus.subscribe(Topic::Everyone);
        bus.close();
        assert!(matches!(
            sub.rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        let mut late = bus.subscribe(Topic::Everyone);
        assert!(matches!(
            late.rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }
}
