//! Order reads through the cache. Only orders in a terminal status are cached: no transition
//! leaves one, so a cached order can never be stale, whatever the cache missed. Caching the
//! others too, kept in step by a write per change, left the old status in place for the whole
//! TTL whenever Redis missed that write and the delete after it (the chaos campaign's first run
//! found orders completed in the store and `pending` through the API after the heal).

use super::OrderActor;
use crate::cache::order_key;
use crate::domain::{Id, Order, OrderStatus};
use crate::error::AppError;
use crate::metrics::*;
use crate::telemetry::spans::cache_call;

/// What a read needs out of a cached order's JSON; serde skips the rest without building it.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OrderHead {
    id: Id,
    pub(super) user_id: Id,
    pub(super) status: OrderStatus,
}

impl OrderActor {
    /// Caches an order that reached a terminal status, for the reads that follow. If the write
    /// fails the entry is dropped instead. A pending or processing order is not cached (see the
    /// module's comment): reading it costs a store round trip for the few moments it lasts.
    pub(super) async fn cache_order(&self, order: &Order) {
        if !order.status.is_terminal() {
            return;
        }
        let key = order_key(order.id);
        let json = serde_json::to_string(order).expect("orders serialise");
        if let Err(e) = cache_call("set", self.cache.set(&key, &json, self.cache_ttl)).await {
            metrics::counter!(CACHE_ERRORS_TOTAL, "cache" => "order", "operation" => "set")
                .increment(1);
            tracing::warn!(error = %e, order_id = %order.id, "order cache write failed; invalidating");
            if cache_call("delete", self.cache.delete(&key)).await.is_err() {
                metrics::counter!(CACHE_ERRORS_TOTAL, "cache" => "order", "operation" => "delete")
                    .increment(1);
            }
        }
    }

    /// An order's owner and status, and its JSON: a cached order's bytes as they are (only the
    /// fields a read needs are read out of them), otherwise the order read from the store and
    /// written out once.
    pub(super) async fn load_order_json(
        &self,
        id: Id,
    ) -> Result<Option<(OrderHead, String)>, AppError> {
        if let Some(hit) = self.cached_order_json(id).await {
            return Ok(Some(hit));
        }
        Ok(self.read_through(id).await?.map(|order| {
            let head = OrderHead {
                id: order.id,
                user_id: order.user_id,
                status: order.status,
            };
            let json = serde_json::to_string(&order).expect("orders serialise");
            (head, json)
        }))
    }

    /// The cached entry of a finished order, counted as a hit; `None` (counted as a miss or an
    /// error) otherwise. An entry in another status was written by an older version of the
    /// service and may be stale, so it is not trusted.
    async fn cached_order_json(&self, id: Id) -> Option<(OrderHead, String)> {
        match cache_call("get", self.cache.get(&order_key(id))).await {
            Ok(Some(json)) => match serde_json::from_str::<OrderHead>(&json) {
                Ok(head) if head.id == id && head.status.is_terminal() => {
                    metrics::counter!(CACHE_HITS_TOTAL, "cache" => "order").increment(1);
                    return Some((head, json));
                }
                Ok(_) => metrics::counter!(CACHE_MISSES_TOTAL, "cache" => "order").increment(1),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable order in cache; reading the store")
                }
            },
            Ok(None) => metrics::counter!(CACHE_MISSES_TOTAL, "cache" => "order").increment(1),
            Err(e) => {
                metrics::counter!(CACHE_ERRORS_TOTAL, "cache" => "order", "operation" => "get")
                    .increment(1);
                tracing::warn!(error = %e, "order cache read failed; reading the store");
            }
        }
        None
    }

    /// The order from the store, cached on the way when it is finished.
    async fn read_through(&self, id: Id) -> Result<Option<Order>, AppError> {
        let order = backend_call("store", "find_order", self.orders.find_order(id)).await?;
        if let Some(order) = order.as_ref().filter(|o| o.status.is_terminal()) {
            let json = serde_json::to_string(order).expect("orders serialise");
            // A terminal order never changes, so this can overwrite whatever is there.
            let written = self.cache.set(&order_key(id), &json, self.cache_ttl).await;
            if written.is_err() {
                metrics::counter!(CACHE_ERRORS_TOTAL, "cache" => "order", "operation" => "set")
                    .increment(1);
            }
        }
        Ok(order)
    }
}
