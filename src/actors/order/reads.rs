//! Order reads through the cache, and the cache kept in step with every change, so no read
//! shows an old status once a change is acknowledged.

use super::OrderActor;
use crate::cache::order_key;
use crate::domain::{Id, Order};
use crate::error::AppError;
use crate::metrics::*;
use crate::telemetry::spans::cache_call;

impl OrderActor {
    /// Writes the order's current state to the cache after a change, so no read shows the old
    /// status once the change is acknowledged. If the write fails the entry is dropped instead.
    pub(super) async fn cache_order(&self, order: &Order) {
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

    /// Reads an order through the cache; the store answers when the cache misses or fails.
    pub(super) async fn load_order(&self, id: Id) -> Result<Option<Order>, AppError> {
        let key = order_key(id);
        match cache_call("get", self.cache.get(&key)).await {
            Ok(Some(json)) => match serde_json::from_str::<Order>(&json) {
                Ok(order) => {
                    metrics::counter!(CACHE_HITS_TOTAL, "cache" => "order").increment(1);
                    return Ok(Some(order));
                }
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
        if let Some(order) = &order {
            let json = serde_json::to_string(order).expect("orders serialise");
            // Only fill an empty slot: a writer may have stored a newer status meanwhile.
            if self
                .cache
                .set_if_absent(&key, &json, self.cache_ttl)
                .await
                .is_err()
            {
                metrics::counter!(CACHE_ERRORS_TOTAL, "cache" => "order", "operation" => "set")
                    .increment(1);
            }
        }
        Ok(order)
    }
}
