//! The read cache in front of the store. Only a speed-up: every caller treats an error like a
//! miss, so the service answers (from the store) when the cache is down.

pub mod memory;
pub mod none;
pub mod redis;
pub mod security;

use std::time::Duration;

use async_trait::async_trait;

use crate::error::BackendError;

pub type CacheResult<T> = Result<T, BackendError>;

#[async_trait]
pub trait Cache: Send + Sync + 'static {
    async fn ping(&self) -> CacheResult<()>;
    async fn get(&self, key: &str) -> CacheResult<Option<String>>;
    /// Overwrites: used by writers right after they changed the source of truth.
    async fn set(&self, key: &str, value: &str, ttl: Duration) -> CacheResult<()>;
    /// Fills an empty slot only: used by readers after a miss, so a slow reader can not put
    /// back a value older than the one a writer stored meanwhile.
    async fn set_if_absent(&self, key: &str, value: &str, ttl: Duration) -> CacheResult<()>;
    async fn delete(&self, key: &str) -> CacheResult<()>;
    /// Adds one to a counter that lives `window` from its first increment (a fixed window, as
    /// Redis `INCR` + `PEXPIRE NX`), and returns the new count. Rate limits count with it, so
    /// they are shared by every process that shares the cache.
    async fn increment(&self, key: &str, window: Duration) -> CacheResult<u64>;
}

pub fn order_key(id: crate::domain::Id) -> String {
    format!("order:{id}")
}

pub fn session_key(id: crate::domain::Id) -> String {
    format!("session:{id}")
}
