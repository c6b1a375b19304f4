//! Following every order of one account on ONE `GET /api/orders/events` stream, as a client
//! app subscribed per user would (`--follow sse`, the default).
//!
//! A stream per order costs a request, a subscription and a read of the order each time, which
//! is more than the one or two polls an order needs when it completes in milliseconds; one
//! stream per account is opened once, before the account's first order, and lives for the run.
//!
//! The stream is open (the service has subscribed it) before the order is placed, so no event
//! can be missed; but the completion may be read off the stream before the iteration that
//! placed the order has registered its interest. So a terminal event for an order nobody waits
//! for yet is kept (a bounded number, briefly) and handed over at registration.
//!
//! A stream that ends or fails is reopened with `Last-Event-ID`, so the service replays what
//! changed meanwhile. If it can not be reopened, every waiting order is released to polling,
//! as a client would fall back, and so is every later one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, OnceCell};

use crate::client::{next_block, parse_event, Api, OrderView};
use crate::stats::{Endpoint, Failure, Stats};

/// Terminal events kept for orders not (yet) waited for, before the oldest are dropped.
const KEPT_UNCLAIMED: usize = 4096;
/// How long such an event is worth keeping: far longer than a 201 takes to be read.
const UNCLAIMED_FOR: Duration = Duration::from_secs(30);
/// Pause before reopening a stream that ended.
const REOPEN_AFTER: Duration = Duration::from_millis(100);

/// One stream per account, opened on first use.
pub struct Followers {
    accounts: Vec<Follower>,
}

impl Followers {
    pub fn new(accounts: usize) -> Followers {
        Followers {
            accounts: (0..accounts).map(|_| Follower::default()).collect(),
        }
    }

    pub fn of(&self, account: usize) -> &Follower {
        &self.accounts[account % self.accounts.len()]
    }
}

#[derive(Default)]
pub struct Follower {
    /// `Ok` once the stream is open; `Err` if it could never be opened (orders are polled).
    opened: OnceCell<Result<(), ()>>,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    by_order: HashMap<String, Slot>,
    /// Set once the stream is lost for good: waiting is pointless, poll instead.
    broken: bool,
}

enum Slot {
    Waiting(oneshot::Sender<OrderView>),
    Ended(OrderView, Instant),
}

/// What the stream told about one order.
pub enum Outcome {
    Ended(OrderView),
    /// Not ended by the deadline.
    TimedOut,
    /// The stream is gone: follow this order by polling.
    Lost,
}

pub struct StreamCtx<'a> {
    pub api: &'a Api,
    pub stats: &'a Arc<Stats>,
    pub token: &'a str,
    /// Who records the stream's opening.
    pub key: usize,
    /// The stream is not needed past this (the run's drain deadline).
    pub until: Instant,
}

impl Follower {
    /// Opens the account's stream unless it is open already; `false` if it can not be (the
    /// caller polls instead).
    pub async fn ensure_open(&self, cx: StreamCtx<'_>) -> bool {
        let opened = self
            .opened
            .get_or_init(|| async {
                let t = Instant::now();
                let remaining = cx.until.saturating_duration_since(t);
                match cx.api.user_events(cx.token, None, remaining).await {
                    Ok(response) => {
                        cx.stats.record(cx.key, Endpoint::UserEvents, t, Ok(()));
                        tokio::spawn(read(
                            response,
                            self.shared.clone(),
                            cx.api.clone(),
                            cx.token.to_string(),
                            cx.until,
                        ));
                        Ok(())
                    }
                    Err(f) => {
                        cx.stats.record(cx.key, Endpoint::UserEvents, t, Err(f));
                        self.shared.lock().broken = true;
                        Err(())
                    }
                }
            })
            .await;
        opened.is_ok()
    }

    /// Waits until the stream says `order_id` ended, or `deadline`.
    pub async fn wait(&self, order_id: &str, deadline: Instant) -> Outcome {
        let answer = {
            let mut slots = self.shared.lock();
            if slots.broken {
                return Outcome::Lost;
            }
            if let Some(Slot::Ended(order, _)) = slots.by_order.remove(order_id) {
                return Outcome::Ended(order);
            }
            let (tx, rx) = oneshot::channel();
            slots
                .by_order
                .insert(order_id.to_string(), Slot::Waiting(tx));
            rx
        };
        match tokio::time::timeout_at(deadline.into(), answer).await {
            Ok(Ok(order)) => Outcome::Ended(order),
            Ok(Err(_)) => Outcome::Lost,
            Err(_) => {
                self.shared.lock().by_order.remove(order_id);
                Outcome::TimedOut
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ended(&self, order: OrderView) {
        let mut slots = self.lock();
        match slots.by_order.remove(&order.id) {
            Some(Slot::Waiting(tx)) => {
                let _ = tx.send(order);
            }
            // Seen before its iteration registered (or a replay of one already handed over).
            _ => {
                if slots.by_order.len() >= KEPT_UNCLAIMED {
                    let now = Instant::now();
                    slots.by_order.retain(|_, slot| match slot {
                        Slot::Waiting(_) => true,
                        Slot::Ended(_, at) => now.duration_since(*at) < UNCLAIMED_FOR,
                    });
                }
                let id = order.id.clone();
                slots
                    .by_order
                    .insert(id, Slot::Ended(order, Instant::now()));
            }
        }
    }

    /// The stream is lost for good: every waiting order goes to polling.
    fn give_up(&self) {
        let mut slots = self.lock();
        slots.broken = true;
        // Dropping the senders wakes their waiters with `Lost`.
        slots.by_order.clear();
    }
}

/// Reads the stream to the end of the run, reopening it after `Last-Event-ID` when it ends.
async fn read(
    mut response: reqwest::Response,
    shared: Arc<Shared>,
    api: Api,
    token: String,
    until: Instant,
) {
    let mut last_id: Option<String> = None;
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        // Anything but more bytes (ended, cut) reopens the stream below, unless the run is over.
        if let Ok(Some(bytes)) = response.chunk().await {
            buffer.extend_from_slice(&bytes);
            while let Some(block) = next_block(&mut buffer) {
                match parse_event(&block) {
                    Ok(Some(event)) => {
                        if event.id.is_some() {
                            last_id = event.id.clone();
                        }
                        if let Some(order) = event.terminal() {
                            shared.ended(order);
                        }
                    }
                    Ok(None) => {}
                    Err(_) => return shared.give_up(),
                }
            }
            continue;
        }
        if Instant::now() + REOPEN_AFTER >= until {
            return;
        }
        tokio::time::sleep(REOPEN_AFTER).await;
        buffer.clear();
        let remaining = until.saturating_duration_since(Instant::now());
        match api.user_events(&token, last_id.as_deref(), remaining).await {
            Ok(again) => response = again,
            Err(Failure::Transport("timeout")) => return,
            Err(_) => return shared.give_up(),
        }
    }
}
