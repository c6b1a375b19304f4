//! Following other processes' changes through the store: for an `api` process without Redis
//! (the workers' transitions happen elsewhere and nothing carries them here), and for a Redis
//! subscriber that (re)connects (pub/sub keeps nothing for a listener that was away).
//!
//! One query per interval for the whole process, whatever the number of its streams: the
//! orders changed since the last change seen, read back [`READ_BACK`] to cover the commit lag
//! between processes (a transition is stamped before it is written). What it reads again is not
//! passed on twice: the bus drops a change it already passed on. It reads only while the
//! process has streams open.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::bus::Bus;
use super::OrderEvent;
use crate::metrics::backend_call;
use crate::store::Orders;

/// Orders one read brings at most; a busy interval reads on, up to [`MAX_PAGES`].
const PAGE: u32 = 1000;
const MAX_PAGES: usize = 10;
/// How far back of the last change seen each read starts.
pub const READ_BACK: Duration = Duration::from_secs(1);

/// Passes every order changed at or after `since` to the bus; returns where the next read
/// should start: [`READ_BACK`] before this read began (a change stamped earlier is assumed
/// written by then), or where a read that hit [`MAX_PAGES`] stopped.
pub async fn catch_up(
    orders: &Arc<dyn Orders>,
    bus: &Bus,
    since: DateTime<Utc>,
) -> Result<DateTime<Utc>, crate::error::BackendError> {
    let started = crate::domain::now();
    let mut from = since;
    for _ in 0..MAX_PAGES {
        let page = backend_call(
            "store",
            "orders_changed_since",
            orders.orders_changed_since(None, from, PAGE),
        )
        .await?;
        let full = page.len() == PAGE as usize;
        for order in &page {
            bus.publish(Arc::new(OrderEvent::new(order)));
        }
        match page.last().map(|o| o.updated_at) {
            // A full page whose changes all share one millisecond can not be paged past.
            Some(last) if full && last > from => from = last,
            _ => return Ok((started - READ_BACK).max(since)),
        }
    }
    Ok(from)
}

/// The `api` process's poll loop (no Redis): runs until the bus is closed.
pub async fn run(orders: Arc<dyn Orders>, bus: Arc<Bus>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut since = crate::domain::now() - READ_BACK;
    loop {
        ticker.tick().await;
        if bus.is_closed() {
            return;
        }
        if !bus.has_subscribers() {
            // Nobody to tell: start from now when someone subscribes (they read the store
            // themselves for anything older).
            since = crate::domain::now() - READ_BACK;
            continue;
        }
        match catch_up(&orders, &bus, since).await {
            Ok(next) => since = since.max(next),
            Err(e) => tracing::warn!(error = %e, "status events: store read failed; retrying"),
        }
    }
}
