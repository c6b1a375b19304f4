//! The `Cache` contract, written once and run against the embedded cache (`MemoryCache`) and
//! the real one (`RedisCache` on a throwaway redis-server). The real variants return early,
//! with a SKIPPED line, when redis-server is not installed.

use std::time::{Duration, Instant};

use order_service::cache::Cache;

/// Long enough never to expire during a test.
const HOUR: Duration = Duration::from_secs(3600);
/// Bounds waits for an expiry; only a very slow machine gets near it.
const DEADLINE: Duration = Duration::from_secs(10);
const POLL_EVERY: Duration = Duration::from_millis(20);

async fn get(cache: &dyn Cache, key: &str) -> Option<String> {
    cache.get(key).await.expect("get")
}

/// Polls until `key` is gone, failing after [`DEADLINE`].
async fn wait_until_expired(cache: &dyn Cache, key: &str) {
    let deadline = Instant::now() + DEADLINE;
    while get(cache, key).await.is_some() {
        assert!(Instant::now() < deadline, "{key} never expired");
        tokio::time::sleep(POLL_EVERY).await;
    }
}

async fn ping_answers(cache: &dyn Cache) {
    cache.ping().await.expect("ping");
}

async fn set_get_and_overwrite(cache: &dyn Cache) {
    assert_eq!(get(cache, "order:1").await, None);
    cache.set("order:1", "v1", HOUR).await.unwrap();
    assert_eq!(get(cache, "order:1").await.as_deref(), Some("v1"));
    cache.set("order:1", "v2", HOUR).await.unwrap();
    assert_eq!(get(cache, "order:1").await.as_deref(), Some("v2"));
    // Keys are independent, and values round-trip whatever they hold.
    let json = r#"{"id":"65f1c2","total":1999,"note":"café ✓"}"#;
    cache.set("order:2", json, HOUR).await.unwrap();
    assert_eq!(get(cache, "order:2").await.as_deref(), Some(json));
    assert_eq!(get(cache, "order:1").await.as_deref(), Some("v2"));
}

async fn set_if_absent_never_overwrites(cache: &dyn Cache) {
    cache.set_if_absent("k", "filled", HOUR).await.unwrap();
    assert_eq!(get(cache, "k").await.as_deref(), Some("filled"));
    cache.set("k", "new", HOUR).await.unwrap();
    cache.set_if_absent("k", "stale", HOUR).await.unwrap();
    assert_eq!(
        get(cache, "k").await.as_deref(),
        Some("new"),
        "a reader overwrote a writer"
    );
    cache.delete("k").await.unwrap();
    cache.set_if_absent("k", "refilled", HOUR).await.unwrap();
    assert_eq!(get(cache, "k").await.as_deref(), Some("refilled"));
}

async fn delete_removes_and_tolerates_missing_keys(cache: &dyn Cache) {
    cache
        .delete("never-set")
        .await
        .expect("deleting a missing key is fine");
    cache.set("k", "v", HOUR).await.unwrap();
    cache.set("other", "stays", HOUR).await.unwrap();
    cache.delete("k").await.unwrap();
    assert_eq!(get(cache, "k").await, None);
    assert_eq!(get(cache, "other").await.as_deref(), Some("stays"));
}

async fn entries_expire_after_their_ttl(cache: &dyn Cache) {
    // Sub-second (Redis PX), whole seconds (Redis EX), and a filled-on-miss entry.
    cache
        .set("short", "v", Duration::from_millis(100))
        .await
        .unwrap();
    cache
        .set("second", "v", Duration::from_secs(1))
        .await
        .unwrap();
    cache
        .set_if_absent("filled", "v", Duration::from_millis(300))
        .await
        .unwrap();
    cache.set("kept", "v", HOUR).await.unwrap();
    wait_until_expired(cache, "short").await;
    wait_until_expired(cache, "second").await;
    wait_until_expired(cache, "filled").await;
    assert_eq!(get(cache, "kept").await.as_deref(), Some("v"));
}

async fn overwriting_resets_the_ttl(cache: &dyn Cache) {
    cache
        .set("k", "short-lived", Duration::from_millis(100))
        .await
        .unwrap();
    cache.set("k", "long-lived", HOUR).await.unwrap();
    // Past the first TTL, measured by a key set with it alongside.
    cache
        .set("witness", "v", Duration::from_millis(100))
        .await
        .unwrap();
    wait_until_expired(cache, "witness").await;
    assert_eq!(get(cache, "k").await.as_deref(), Some("long-lived"));
}

async fn counters_count_within_their_window(cache: &dyn Cache) {
    for expected in 1..=3 {
        assert_eq!(cache.increment("logins:a", HOUR).await.unwrap(), expected);
    }
    assert_eq!(
        cache.increment("logins:b", HOUR).await.unwrap(),
        1,
        "counters are per key"
    );
    // A counter is readable as a plain value.
    assert_eq!(get(cache, "logins:a").await.as_deref(), Some("3"));
}

async fn a_counter_window_starts_at_its_first_increment(cache: &dyn Cache) {
    let window = Duration::from_millis(300);
    assert_eq!(cache.increment("n", window).await.unwrap(), 1);
    // Later increments do not extend the window: the counter expires 300 ms after the first.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let count = cache.increment("n", window).await.unwrap();
        if count == 1 {
            break; // a new window began
        }
        assert!(
            Instant::now() < deadline,
            "the window never ended (count {count})"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

async fn concurrent_increments_are_never_lost(cache: &dyn Cache) {
    let increments = (0..50).map(|_| cache.increment("n", HOUR));
    let counts = futures_util::future::join_all(increments).await;
    let mut counts: Vec<u64> = counts.into_iter().map(|c| c.unwrap()).collect();
    counts.sort_unstable();
    assert_eq!(
        counts,
        (1..=50).collect::<Vec<u64>>(),
        "each increment sees its own count"
    );
}

/// Generates one `#[tokio::test]` per contract function for each implementation.
macro_rules! cache_contract {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            use order_service::cache::memory::MemoryCache;
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(&MemoryCache::new(1 << 20)).await;
                }
            )*
        }

        mod real {
            $(
                #[tokio::test]
                async fn $test() {
                    let Some(redis) = crate::support::redis::start() else { return };
                    let cache = super::redis_cache(&redis).await;
                    super::$test(&cache).await;
                }
            )*
        }
    };
}

cache_contract!(
    ping_answers,
    set_get_and_overwrite,
    set_if_absent_never_overwrites,
    delete_removes_and_tolerates_missing_keys,
    entries_expire_after_their_ttl,
    overwriting_resets_the_ttl,
    counters_count_within_their_window,
    a_counter_window_starts_at_its_first_increment,
    concurrent_increments_are_never_lost,
);

fn redis_config(redis: &crate::support::redis::RedisServer) -> order_service::config::RedisConfig {
    order_service::config::RedisConfig {
        host: redis.host().to_string(),
        port: redis.port(),
        password: None,
    }
}

/// A cache on `redis` under a prefix of its own, as the service would have.
async fn redis_cache(
    redis: &crate::support::redis::RedisServer,
) -> order_service::cache::redis::RedisCache {
    order_service::cache::redis::RedisCache::connect(&redis_config(redis), "contract-test:")
        .await
        .expect("connect to redis-server")
}

/// What only the real cache has: a server shared by processes, which can go away.
mod redis_only {
    use std::time::{Duration, Instant};

    use order_service::cache::redis::{RedisCache, CALL_TIMEOUT};
    use order_service::cache::Cache;
    use order_service::error::BackendError;

    use super::{redis_config, DEADLINE, HOUR, POLL_EVERY};

    /// Polls `ping` until it succeeds, failing after [`DEADLINE`].
    async fn wait_until_reachable(cache: &RedisCache) {
        let deadline = Instant::now() + DEADLINE;
        while let Err(e) = cache.ping().await {
            assert!(Instant::now() < deadline, "Redis never came back: {e}");
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    fn assert_unavailable<T: std::fmt::Debug>(result: Result<T, BackendError>) {
        match result {
            Err(BackendError::Unavailable {
                backend: "cache", ..
            }) => {}
            other => panic!("expected the cache to be unavailable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn keys_carry_the_prefix_so_deployments_can_share_a_redis() {
        let Some(redis) = crate::support::redis::start() else {
            return;
        };
        let config = redis_config(&redis);
        let blue = RedisCache::connect(&config, "blue:").await.unwrap();
        let green = RedisCache::connect(&config, "green:").await.unwrap();
        blue.set("order:1", "blue's", HOUR).await.unwrap();
        assert_eq!(green.get("order:1").await.unwrap(), None);
        green.set("order:1", "green's", HOUR).await.unwrap();
        assert_eq!(
            blue.get("order:1").await.unwrap().as_deref(),
            Some("blue's")
        );
        green.delete("order:1").await.unwrap();
        assert_eq!(
            blue.get("order:1").await.unwrap().as_deref(),
            Some("blue's")
        );
    }

    #[tokio::test]
    async fn an_outage_fails_calls_fast_and_the_cache_recovers_by_itself() {
        let Some(mut redis) = crate::support::redis::start() else {
            return;
        };
        let cache = RedisCache::connect(&redis_config(&redis), "outage:")
            .await
            .unwrap();
        cache.set("k", "v", HOUR).await.unwrap();

        redis.kill();
        for _ in 0..3 {
            let started = Instant::now();
            assert_unavailable(cache.get("k").await);
            assert!(
                started.elapsed() <= CALL_TIMEOUT + Duration::from_millis(200),
                "a call during the outage took {:?}",
                started.elapsed()
            );
        }

        redis.restart();
        wait_until_reachable(&cache).await;
        // The restarted server is empty (no persistence): a miss, then the cache works again.
        assert_eq!(cache.get("k").await.unwrap(), None);
        cache.set("k", "again", HOUR).await.unwrap();
        assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("again"));
    }

    #[tokio::test]
    async fn a_lazy_cache_starts_while_redis_is_down_and_connects_once_it_is_up() {
        let Some(mut redis) = crate::support::redis::start() else {
            return;
        };
        redis.kill();
        let config = redis_config(&redis);

        let err = RedisCache::connect(&config, "lazy:").await.err();
        assert!(
            matches!(err, Some(BackendError::Unavailable { .. })),
            "connect must fail fast while Redis is down: {err:?}"
        );

        let cache = RedisCache::lazy(&config, "lazy:");
        assert_unavailable(cache.get("k").await);
        assert_unavailable(cache.set("k", "v", HOUR).await);

        redis.restart();
        wait_until_reachable(&cache).await;
        cache.set("k", "v", HOUR).await.unwrap();
        assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("v"));
    }
}
