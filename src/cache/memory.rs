//! The embedded cache: in-process, bounded, with a time-to-live per entry (moka). Only this
//! process sees it, which is right for the embedded mode's single process.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::sync::Cache as MokaCache;
use moka::Expiry;

use super::{Cache, CacheResult};

#[derive(Clone)]
struct Entry {
    value: String,
    ttl: Duration,
}

/// Lets every entry carry its own lifetime, as Redis `SET … EX` does.
struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, value: &Entry, _now: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
    fn expire_after_update(
        &self,
        _key: &String,
        value: &Entry,
        _now: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

pub struct MemoryCache {
    entries: MokaCache<String, Entry>,
}

impl MemoryCache {
    /// `max_entries` bounds memory; the least useful entries are evicted first.
    pub fn new(max_entries: u64) -> Self {
        MemoryCache {
            entries: MokaCache::builder()
                .max_capacity(max_entries)
                .expire_after(PerEntryTtl)
                .build(),
        }
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn ping(&self) -> CacheResult<()> {
        Ok(())
    }

    async fn get(&self, key: &str) -> CacheResult<Option<String>> {
        Ok(self.entries.get(key).map(|e| e.value))
    }

    async fn set(&self, key: &str, value: &str, ttl: Duration) -> CacheResult<()> {
        self.entries.insert(
            key.to_string(),
            Entry {
                value: value.to_string(),
                ttl,
            },
        );
        Ok(())
    }

    async fn set_if_absent(&self, key: &str, value: &str, ttl: Duration) -> CacheResult<()> {
        // `get_with` runs the initialiser only when the key is absent, atomically per key.
        self.entries.get_with(key.to_string(), || Entry {
            value: value.to_string(),
            ttl,
        });
        Ok(())
    }

    async fn delete(&self, key: &str) -> CacheResult<()> {
        self.entries.invalidate(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn set_if_absent_never_overwrites() {
        let c = MemoryCache::new(100);
        c.set("k", "new", Duration::from_secs(60)).await.unwrap();
        c.set_if_absent("k", "stale", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(c.get("k").await.unwrap().as_deref(), Some("new"));
        c.delete("k").await.unwrap();
        c.set_if_absent("k", "filled", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(c.get("k").await.unwrap().as_deref(), Some("filled"));
    }

    #[tokio::test]
    async fn entries_expire() {
        let c = MemoryCache::new(100);
        c.set("k", "v", Duration::from_millis(20)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while c.get("k").await.unwrap().is_some() {
            assert!(Instant::now() < deadline, "entry never expired");
            tokio::task::yield_now().await;
        }
    }
}
