//! The shared cache: Redis, so every `api` and `worker` process sees the same cached orders and
//! sessions, and a write by one process invalidates the entry for all of them.
//!
//! The cache is only a speed-up (see [`super::Cache`]): a slow or absent Redis must cost a request
//! a few hundred milliseconds at worst, never its answer. Hence:
//! - every call is bounded by [`CALL_TIMEOUT`], whatever state the connection is in;
//! - [`RedisCache::lazy`] never fails and connects on first use, so the service starts (and
//!   answers from the store) while Redis is down, and picks Redis up once it is back;
//! - after a call finds Redis unreachable, calls fail at once for [`RETRY_AFTER`] instead of each
//!   waiting for its own timeout, so an outage does not add latency to every request;
//! - `redis::aio::ConnectionManager` multiplexes all calls on one connection and replaces it by
//!   itself when it breaks.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use redis::{Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, RedisError};
use tokio::sync::OnceCell;

use super::{Cache, CacheResult};
use crate::config::RedisConfig;
use crate::error::BackendError;

const BACKEND: &str = "cache";

/// Prefix of every key, so several deployments (or test runs) can share one Redis.
pub const DEFAULT_KEY_PREFIX: &str = "order-service:";

/// Upper bound of one cache call, connection included: a cache answer that takes longer than
/// this is worth less than going to the store.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// One TCP connect attempt. Redis sits next to the service; a connect slower than this means it
/// is unreachable, and the call timeout would cut it anyway.
const CONNECTION_TIMEOUT: Duration = Duration::from_millis(300);

/// How long calls fail fast after Redis was found unreachable, before one tries it again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The Redis [`Cache`].
pub struct RedisCache {
    /// `None` only if the configuration could not make a client, which is reported on each call
    /// rather than at construction so that `lazy` never fails.
    client: Option<Client>,
    manager_config: ConnectionManagerConfig,
    /// Set by the first successful connect; the manager then reconnects by itself. A failed
    /// connect leaves it empty, so a later call tries again.
    manager: OnceCell<ConnectionManager>,
    prefix: String,
    /// While set and in the future, calls fail without touching the network.
    retry_at: Mutex<Option<Instant>>,
}

impl RedisCache {
    /// Connects now, failing within [`CALL_TIMEOUT`] with `BackendError::Unavailable` when Redis
    /// can not be reached. For callers that want to know at start; the service itself uses
    /// [`RedisCache::lazy`] so that a Redis outage never stops it from starting.
    pub async fn connect(
        config: &RedisConfig,
        key_prefix: impl Into<String>,
    ) -> Result<RedisCache, BackendError> {
        let cache = RedisCache::lazy(config, key_prefix);
        bounded(cache.manager()).await?;
        Ok(cache)
    }

    /// Never fails and does no I/O: the connection is made on first use, and tried again on a
    /// later call while Redis is down. Every key is stored under `key_prefix` (usually
    /// [`DEFAULT_KEY_PREFIX`]; tests use a unique one).
    pub fn lazy(config: &RedisConfig, key_prefix: impl Into<String>) -> RedisCache {
        let client = match client(config) {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::error!(error = %e, "invalid Redis configuration; cache disabled");
                None
            }
        };
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            // Few, quick retries: the call timeout bounds them anyway, and a reconnect that keeps
            // failing should give the breaker (`retry_at`) its turn rather than keep retrying.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(200));
        RedisCache {
            client,
            manager_config,
            manager: OnceCell::new(),
            prefix: key_prefix.into(),
            retry_at: Mutex::new(None),
        }
    }

    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The connection, made now if there is none yet. Unbounded: callers put it under the
    /// call timeout together with what they do with it.
    async fn manager(&self) -> CacheResult<ConnectionManager> {
        let Some(client) = &self.client else {
            return Err(BackendError::other(BACKEND, "invalid Redis configuration"));
        };
        self.manager
            .get_or_try_init(|| async {
                ConnectionManager::new_with_config(client.clone(), self.manager_config.clone())
                    .await
                    .map_err(to_backend)
            })
            .await
            .cloned()
    }

    /// Runs one command, connecting first if need be, all under one call timeout and the
    /// breaker.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> CacheResult<T> {
        if let Some(at) = *self.retry_at.lock().unwrap_or_else(|p| p.into_inner()) {
            if Instant::now() < at {
                return Err(BackendError::unavailable(
                    BACKEND,
                    "Redis was unreachable moments ago; not retrying yet",
                ));
            }
        }
        let result = bounded(async {
            let mut manager = self.manager().await?;
            cmd.query_async::<T>(&mut manager).await.map_err(to_backend)
        })
        .await;
        self.note(&result);
        result
    }

    /// Opens the breaker after an outage, closes it after a success.
    fn note<T>(&self, result: &CacheResult<T>) {
        let mut retry_at = self.retry_at.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(_) => *retry_at = None,
            Err(BackendError::Unavailable { .. }) => *retry_at = Some(Instant::now() + RETRY_AFTER),
            Err(_) => {}
        }
    }
}

/// The password goes into the connection info, never into a URL that could end up in a log.
pub(crate) fn client(config: &RedisConfig) -> redis::RedisResult<Client> {
    let mut redis = RedisConnectionInfo::default();
    if let Some(password) = &config.password {
        redis = redis.set_password(password.expose());
    }
    let info = ConnectionAddr::Tcp(config.host.clone(), config.port)
        .into_connection_info()?
        .set_redis_settings(redis)
        // Small request/response pairs: waiting to coalesce packets would only add latency.
        .set_tcp_settings(TcpSettings::default().set_nodelay(true));
    Client::open(info)
}

async fn bounded<T>(call: impl std::future::Future<Output = CacheResult<T>>) -> CacheResult<T> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(BackendError::unavailable(
                BACKEND,
                format!("no answer within {CALL_TIMEOUT:?}"),
            ))
        })
}

/// Network trouble is `Unavailable` (worth a retry, and it opens the breaker); anything else,
/// such as a refused password or a wrong-type reply, is `Other`.
fn to_backend(e: RedisError) -> BackendError {
    if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
    {
        BackendError::unavailable(BACKEND, e)
    } else {
        BackendError::other(BACKEND, e)
    }
}

/// `SET` expiry arguments: whole seconds as `EX` (at least 1), anything finer as `PX`, since
/// Redis refuses a zero expiry.
fn expiry(ttl: Duration) -> (&'static str, u64) {
    if ttl.subsec_nanos() == 0 && ttl.as_secs() >= 1 {
        ("EX", ttl.as_secs())
    } else {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        ("PX", millis.max(1))
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn ping(&self) -> CacheResult<()> {
        self.run::<String>(&redis::cmd("PING")).await.map(|_| ())
    }

    async fn get(&self, key: &str) -> CacheResult<Option<String>> {
        self.run(redis::cmd("GET").arg(self.key(key))).await
    }

    async fn set(&self, key: &str, value: &str, ttl: Duration) -> CacheResult<()> {
        let (unit, amount) = expiry(ttl);
        self.run(
            redis::cmd("SET")
                .arg(self.key(key))
                .arg(value)
                .arg(unit)
                .arg(amount),
        )
        .await
    }

    async fn set_if_absent(&self, key: &str, value: &str, ttl: Duration) -> CacheResult<()> {
        let (unit, amount) = expiry(ttl);
        // NX replies nil when the key exists: not an error, the writer's value wins.
        self.run::<redis::Value>(
            redis::cmd("SET")
                .arg(self.key(key))
                .arg(value)
                .arg("NX")
                .arg(unit)
                .arg(amount),
        )
        .await
        .map(|_| ())
    }

    async fn delete(&self, key: &str) -> CacheResult<()> {
        self.run::<i64>(redis::cmd("DEL").arg(self.key(key)))
            .await
            .map(|_| ())
    }

    async fn increment(&self, key: &str, window: Duration) -> CacheResult<u64> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        self.run(
            redis::cmd("EVAL")
                .arg(INCREMENT_IN_WINDOW)
                .arg(1)
                .arg(self.key(key))
                .arg(window_ms),
        )
        .await
    }
}

impl RedisCache {
    /// `maxmemory` (bytes, 0 for none) and `maxmemory-policy`, from `CONFIG GET`.
    pub async fn eviction_settings(&self) -> CacheResult<(u64, String)> {
        let setting = |name: &str| {
            let mut cmd = redis::cmd("CONFIG");
            cmd.arg("GET").arg(name);
            cmd
        };
        let memory: Vec<String> = self.run(&setting("maxmemory")).await?;
        let policy: Vec<String> = self.run(&setting("maxmemory-policy")).await?;
        let maxmemory = memory.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((maxmemory, policy.get(1).cloned().unwrap_or_default()))
    }
}

/// `INCR`, and start the window on a counter without an expiry (its first increment). One
/// script, so the two steps are atomic: a crash between them can not leave a counter that never
/// expires. Checking `PTTL` rather than using `PEXPIRE … NX` keeps Redis 6 supported.
const INCREMENT_IN_WINDOW: &str = r"
local count = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return count
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds_use_ex_and_anything_finer_px() {
        assert_eq!(expiry(Duration::from_secs(600)), ("EX", 600));
        assert_eq!(expiry(Duration::from_millis(1500)), ("PX", 1500));
        assert_eq!(expiry(Duration::from_millis(20)), ("PX", 20));
        assert_eq!(expiry(Duration::ZERO), ("PX", 1));
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_fast_as_unavailable() {
        // Port 1 on loopback: nothing listens, so connects are refused at once.
        let nowhere = RedisConfig {
            host: "127.0.0.1".into(),
            port: 1,
            password: None,
        };
        let cache = RedisCache::lazy(&nowhere, DEFAULT_KEY_PREFIX);
        let started = Instant::now();
        let err = cache.get("k").await.unwrap_err();
        assert!(
            matches!(
                err,
                BackendError::Unavailable {
                    backend: "cache",
                    ..
                }
            ),
            "{err:?}"
        );
        // The breaker answers the next call without waiting.
        let err = cache
            .set("k", "v", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let err = RedisCache::connect(&nowhere, DEFAULT_KEY_PREFIX)
            .await
            .err()
            .expect("nothing listens on port 1");
        assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
    }
}
