//! The embedded cache: in-process, bounded, with a time-to-live per entry (moka). Only this
//! process sees it, which is right for the embedded mode's single process.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::policy::EvictionPolicy;
use moka::sync::Cache as MokaCache;
use moka::Expiry;

use super::{Cache, CacheResult};

#[derive(Clone)]
struct Entry {
    value: String,
    expires_at: Instant,
}

impl Entry {
    fn new(value: impl Into<String>, ttl: Duration) -> Self {
        Entry {
            value: value.into(),
            expires_at: Instant::now() + ttl,
        }
    }
}

/// Lets every entry carry its own deadline, as Redis `SET … EX` does; a counter keeps the
/// deadline of its first increment when it is updated.
struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, value: &Entry, now: Instant) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(now))
    }
    fn expire_after_update(
        &self,
        _key: &String,
        value: &Entry,
        now: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(now))
    }
}

pub struct MemoryCache {
    entries: MokaCache<String, Entry>,
}

impl MemoryCache {
    /// `max_bytes` bounds the memory the keys and values take (moka's own bookkeeping adds
    /// about a hundred bytes an entry); the least recently used entries are evicted first.
    /// Bounded by size rather than by count because orders vary in size (1 to 100 lines).
    ///
    /// Least recently used, not moka's default TinyLFU: TinyLFU admits a new entry only if it
    /// looks more popular than the one it would evict, and a just-placed order has been read at
    /// most once. Once the cache was full (about 25,000 orders), new orders were no longer
    /// cached at all and nearly every status poll went to the store.
    pub fn new(max_bytes: u64) -> Self {
        MemoryCache {
            entries: MokaCache::builder()
                .max_capacity(max_bytes)
                .eviction_policy(EvictionPolicy::lru())
                .weigher(|key: &String, entry: &Entry| {
                    u32::try_from(key.len() + entry.value.len()).unwrap_or(u32::MAX)
                })
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
        self.entries.insert(key.to_string(), Entry::new(value, ttl));
        Ok(())
    }

    async fn set_if_absent(&self, key: &str, value: &str, ttl: Duration) -> CacheResult<()> {
        // `get_with` runs the initialiser only when the key is absent, atomically per key.
        self.entries
            .get_with(key.to_string(), || Entry::new(value, ttl));
        Ok(())
    }

    async fn delete(&self, key: &str) -> CacheResult<()> {
        self.entries.invalidate(key);
        Ok(())
    }

    async fn increment(&self, key: &str, window: Duration) -> CacheResult<u64> {
        // The upsert runs atomically per key, so concurrent increments are never lost.
        let entry = self
            .entries
            .entry(key.to_string())
            .and_upsert_with(|current| match current {
                Some(e) => {
                    let e = e.into_value();
                    let count = e.value.parse::<u64>().unwrap_or(0) + 1;
                    Entry {
                        value: count.to_string(),
                        expires_at: e.expires_at,
                    }
                }
                None => Entry::new("1", window),
            });
        Ok(entry.into_value().value.parse().unwrap_or(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn set_if_absent_never_overwrites() {
        let c = MemoryCache::new(1 << 20);
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
    async fn counters_count_concurrently_within_their_window() {
        let c = std::sync::Arc::new(MemoryCache::new(1 << 20));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(
                    async move { c.increment("n", Duration::from_secs(60)).await.unwrap() },
                )
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(c.increment("n", Duration::from_secs(60)).await.unwrap(), 51);
        assert_eq!(c.get("n").await.unwrap().as_deref(), Some("51"));
    }

    #[tokio::test]
    async fn a_full_cache_makes_room_for_new_entries() {
        let c = MemoryCache::new(64 * 1024);
        let value = "v".repeat(1000);
        let ttl = Duration::from_secs(60);
        // Fill it with entries read a few times each, as orders being polled are.
        for i in 0..100 {
            c.set(&format!("old-{i}"), &value, ttl).await.unwrap();
            for _ in 0..3 {
                c.get(&format!("old-{i}")).await.unwrap();
            }
        }
        c.entries.run_pending_tasks();
        // A new entry is kept even so: the next read of a just-placed order is a hit.
        for i in 0..100 {
            let key = format!("new-{i}");
            c.set(&key, &value, ttl).await.unwrap();
            c.entries.run_pending_tasks();
            assert_eq!(
                c.get(&key).await.unwrap().as_deref(),
                Some(value.as_str()),
                "{key} was not kept"
            );
        }
        assert!(c.entries.weighted_size() <= 64 * 1024);
    }

    #[tokio::test]
    async fn entries_expire() {
        let c = MemoryCache::new(1 << 20);
        c.set("k", "v", Duration::from_millis(20)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while c.get("k").await.unwrap().is_some() {
            assert!(Instant::now() < deadline, "entry never expired");
            tokio::task::yield_now().await;
        }
    }
}
