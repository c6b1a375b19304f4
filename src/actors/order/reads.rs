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
    /// two fields the caller needs are read out of them), otherwise the order read through
    /// [`Self::load_order`] and written out once.
    pub(super) async fn load_order_json(
        &self,
        id: Id,
    ) -> Result<Option<(OrderHead, String)>, AppError> {
        let key = order_key(id);
        if let Ok(Some(json)) = cache_call("get", self.cache.get(&key)).await {
            if let Ok(head) = serde_json::from_str::<OrderHead>(&json) {
                if head.id == id {
                    metrics::counter!(CACHE_HITS_TOTAL, "cache" => "order").increment(1);
                    return Ok(Some((head, json)));
                }
            }
        }
        // A miss, a failure or an unreadable entry: the full read counts and logs it.
        Ok(self.load_order(id).await?.map(|order| {
            let head = OrderHead {
                id: order.id,
                user_id: order.user_id,
                status: order.status,
            };
            (
                head,
                serde_json::to_string(&order).expect("orders serialise"),
            )
        }))
    }

    /// Reads an order through the cache; the store answers when the cache misses or fails.
    pub(super) async fn load_order(&self, id: Id) -> Result<Option<Order>, AppError> {
        let key = order_key(id);
        match cache_call("get", self.cache.get(&key)).await {
            Ok(Some(json)) => match serde_json::from_str::<Order>(&json) {
                // An entry in another status was written by an older version of the service:
                // it may be stale, so the store answers.
                Ok(order) if order.status.is_terminal() => {
                    metrics::counter!(CACHE_HITS_TOTAL, "cache" => "order").increment(1);
                    return Ok(Some(order));
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
        let order = backend_call("store", "find_order", self.orders.find_order(id)).await?;
        if let Some(order) = order.as_ref().filter(|o| o.status.is_terminal()) {
            let json = serde_json::to_string(order).expect("orders serialise");
            // A terminal order never changes, so this can overwrite whatever is there.
            if self.cache.set(&key, &json, self.cache_ttl).await.is_err() {
                metrics::counter!(CACHE_ERRORS_TOTAL, "cache" => "order", "operation" => "set")
                    .increment(1);
            }
        }
        Ok(order)
    }
}
