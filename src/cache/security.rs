//! Where the state that protects accounts lives: login-throttle counters and the refresh-token
//! reuse interval's entries. Losing one of them silently lifts a lockout (or logs a user out), so
//! it must never compete for room with cached orders, which come and go by the thousand.
//!
//! - Embedded: a map of its own, bounded by [`SECURITY_STATE_BYTES`], that order traffic never
//!   writes to. A shared one would evict a lockout as soon as enough orders were cached after it.
//! - Redis: the shared Redis, so every API process sees the same counters. Redis evicts across
//!   the whole instance, whatever the key, so the service expects `maxmemory-policy noeviction`
//!   when a `maxmemory` is set (cache writes then fail when it is full, which costs only misses).
//!   [`warn_if_redis_may_evict`] checks that at start.

use std::sync::Arc;

use super::memory::MemoryCache;
use super::redis::RedisCache;
use super::Cache;

/// Bytes of keys and values the embedded security state holds: about 100,000 counters (a key
/// is some 60 bytes), far more than the emails and addresses failing logins in one window.
pub const SECURITY_STATE_BYTES: u64 = 8 * 1024 * 1024;

/// The security state's store: `cache` itself when it is shared (Redis), else a map of its own.
pub fn security_state(cache: &Arc<dyn Cache>, in_process: bool) -> Arc<dyn Cache> {
    if in_process {
        Arc::new(MemoryCache::new(SECURITY_STATE_BYTES))
    } else {
        cache.clone()
    }
}

/// Warns when Redis may evict keys that still have time to live: a lockout could vanish under
/// order traffic. Silent when Redis is unreachable or refuses `CONFIG` (managed services often
/// do); the README names the expected policy either way.
pub async fn warn_if_redis_may_evict(redis: &RedisCache) {
    match redis.eviction_settings().await {
        Ok((maxmemory, policy)) if maxmemory > 0 && policy != "noeviction" => {
            tracing::warn!(
                maxmemory,
                policy = %policy,
                "Redis may evict login-throttle counters under memory pressure; \
                 set maxmemory-policy noeviction (see README)"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "could not read Redis's eviction policy"),
    }
}
