//! Chooses each backend from the configuration: the real service when its variable is set
//! (`MONGODB_URI`, `REDIS_HOST`, `AWS_SQS_QUEUE_URL`, `AWS_SES_SENDER_EMAIL`), the embedded one
//! otherwise. Any mix works, e.g. MongoDB with the embedded queue.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use lettre::message::Mailbox;

use crate::cache::{memory::MemoryCache, redis::RedisCache, Cache};
use crate::config::Config;
use crate::error::BackendError;
use crate::mail::batcher::{MailBatcher, SES_BATCHING};
use crate::mail::{file::FileMailer, ses::SesMailer, Mailer};
use crate::queue::redrive::{ConfigWarning, RedriveCheck};
use crate::queue::{sqlite::SqliteQueue, sqs::SqsQueue, Queue};
use crate::store::mongo::MongoStore;
use crate::store::sqlite::{SqliteDb, SqliteStore};
use crate::store::Stores;

/// The four backends, behind their traits, and what kind each one is (for logs and metrics).
#[derive(Clone)]
pub struct Backends {
    /// The store, one trait object per aggregate (all served by one backend).
    pub stores: Stores,
    pub queue: Arc<dyn Queue>,
    pub cache: Arc<dyn Cache>,
    pub mailer: Arc<dyn Mailer>,
    pub kinds: BackendKinds,
    /// Whether the queue's redrive policy leaves the worker its last attempt.
    pub redrive: Arc<RedriveCheck>,
}

/// A cheap round trip to one backend: `Ok` when it answers.
pub type Probe<'a> = BoxFuture<'a, Result<(), BackendError>>;

/// What `/ready` needs of the backends: a round trip to each, under the name the readiness
/// report gives it. The HTTP layer holds this, not [`Backends`], so it probes the backends
/// without knowing how they are built or wired.
pub trait ReadinessProbes: Send + Sync + 'static {
    /// One probe per configured backend, not yet started (the caller runs them together).
    fn probes(&self) -> Vec<(&'static str, Probe<'_>)>;
    /// Misconfigurations to report without failing readiness.
    fn warnings(&self) -> BoxFuture<'_, Vec<ConfigWarning>> {
        Box::pin(async { Vec::new() })
    }
}

impl ReadinessProbes for Backends {
    fn probes(&self) -> Vec<(&'static str, Probe<'_>)> {
        vec![
            ("database", self.stores.health.ping()),
            ("queue", self.queue.ping()),
            ("cache", self.cache.ping()),
            ("mailer", self.mailer.ping()),
        ]
    }

    fn warnings(&self) -> BoxFuture<'_, Vec<ConfigWarning>> {
        Box::pin(async { self.redrive.warning().await.into_iter().collect() })
    }
}

/// The kind of each backend, as named in logs and in `build_info`'s labels.
#[derive(Clone, Copy, Debug)]
pub struct BackendKinds {
    pub store: &'static str,
    pub queue: &'static str,
    pub cache: &'static str,
    pub mailer: &'static str,
}

const MEMORY_CACHE: &str = "memory";
const SQS_QUEUE: &str = "sqs";

impl BackendKinds {
    /// The cache lives in this process, so only this process sees what it holds.
    pub fn cache_is_in_process(&self) -> bool {
        self.cache == MEMORY_CACHE
    }

    /// The queue is a remote service billed and throttled per request (SQS).
    pub fn queue_is_remote(&self) -> bool {
        self.queue == SQS_QUEUE
    }
}

/// Bytes of keys and values the embedded cache holds at most: some 20,000 typical orders,
/// far more than the orders clients are following at any moment, in a bounded footprint.
const MEMORY_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// Prefix of every Redis key, so deployments can share a Redis.
pub(crate) const REDIS_KEY_PREFIX: &str = "order-service:";

pub async fn build(config: &Config) -> anyhow::Result<Backends> {
    // The SQLite file is opened only when the store or the queue is embedded.
    let needs_sqlite = config.mongodb_uri.is_none() || config.aws.sqs_queue_url.is_none();
    let db = if needs_sqlite {
        Some(SqliteDb::open(&config.database_path())?)
    } else {
        None
    };

    let (stores, store_kind) = match &config.mongodb_uri {
        Some(uri) => {
            let mongo = MongoStore::connect(uri.expose()).await?;
            if let Some(redis) = &config.redis {
                match crate::cache::redis::client(redis) {
                    Ok(client) => mongo.wake_lock_waiters_through(client, REDIS_KEY_PREFIX),
                    Err(e) => {
                        tracing::warn!(error = %e, "invalid Redis configuration; FerretDB lock waiters look at the lock instead")
                    }
                }
            }
            // Finish stock returns a crashed process left half done (see `MongoStore`).
            match mongo.repair_stock_returns().await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(orders = n, "finished interrupted stock returns"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not check for interrupted stock returns")
                }
            }
            (Stores::new(mongo), "mongodb")
        }
        None => (
            Stores::new(SqliteStore::new(db.clone().expect("opened above"))),
            "sqlite",
        ),
    };
    let (queue, queue_kind): (Arc<dyn Queue>, _) = match &config.aws.sqs_queue_url {
        Some(url) => (
            Arc::new(SqsQueue::new(url.clone(), &config.aws).await?),
            SQS_QUEUE,
        ),
        None => (
            Arc::new(SqliteQueue::new(
                db.expect("opened above"),
                config.queue.max_receives,
            )),
            "sqlite",
        ),
    };
    // Redis connects lazily: the service starts, and answers from the store, while Redis is down.
    let (cache, cache_kind): (Arc<dyn Cache>, _) = match &config.redis {
        Some(redis) => {
            let redis = RedisCache::lazy(redis, REDIS_KEY_PREFIX);
            crate::cache::security::warn_if_redis_may_evict(&redis).await;
            (Arc::new(redis), "redis")
        }
        None => (Arc::new(MemoryCache::new(MEMORY_CACHE_BYTES)), MEMORY_CACHE),
    };
    let (mailer, mailer_kind): (Arc<dyn Mailer>, _) = match &config.aws.ses_sender_email {
        Some(sender) => {
            let ses = Arc::new(SesMailer::new(sender.clone(), &config.aws).await?);
            // Emails due together share `SendBulkTemplatedEmail`s (see `mail::batcher`).
            (Arc::new(MailBatcher::start(ses, SES_BATCHING)), "ses")
        }
        None => {
            let from: Mailbox = "Order Service <orders@order-service.local>"
                .parse()
                .expect("valid sender");
            (
                Arc::new(FileMailer::new(config.mail_dir.clone(), from)?),
                "file",
            )
        }
    };
    let redrive = Arc::new(RedriveCheck::new(queue.clone(), config.queue.max_receives));
    Ok(Backends {
        stores,
        redrive,
        queue,
        cache,
        mailer,
        kinds: BackendKinds {
            store: store_kind,
            queue: queue_kind,
            cache: cache_kind,
            mailer: mailer_kind,
        },
    })
}
