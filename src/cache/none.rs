//! A cache that holds nothing: every read misses and goes to the store.
//!
//! Used when several processes share the embedded store (`api` and `worker` on one SQLite
//! file) but each would have its own in-process cache: a worker's status change could not
//! reach the API's copy, so the API would serve stale orders and honour logged-out sessions.
//! Correctness beats the speed-up; with Redis every process shares one cache instead.

use std::time::Duration;

use async_trait::async_trait;

use super::{Cache, CacheResult};

pub struct NoCache;

#[async_trait]
impl Cache for NoCache {
    async fn ping(&self) -> CacheResult<()> {
        Ok(())
    }
    async fn get(&self, _key: &str) -> CacheResult<Option<String>> {
        Ok(None)
    }
    async fn set(&self, _key: &str, _value: &str, _ttl: Duration) -> CacheResult<()> {
        Ok(())
    }
    async fn set_if_absent(&self, _key: &str, _value: &str, _ttl: Duration) -> CacheResult<()> {
        Ok(())
    }
    async fn delete(&self, _key: &str) -> CacheResult<()> {
        Ok(())
    }
    /// A cache that holds nothing can not count; callers that need counters (the login
    /// throttle) are given a real cache instead (see `app::run`).
    async fn increment(&self, _key: &str, _window: Duration) -> CacheResult<u64> {
        Err(crate::error::BackendError::other(
            "cache",
            "this cache holds no counters",
        ))
    }
}
