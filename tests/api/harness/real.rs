//! The real backend set for one server environment: its own FerretDB, redis-server and moto,
//! started when the suite runs with `TEST_BACKENDS=real` (the second pass of `scripts/test`).

use super::names::unique;
use super::support;

/// True when the suite runs against the real backends: `TEST_BACKENDS=real` (set by
/// `scripts/test` for its second pass). Every server environment then gets its own FerretDB,
/// redis-server and moto (SQS and SES), so the same tests prove both backend sets.
pub fn real_backends() -> bool {
    std::env::var("TEST_BACKENDS").is_ok_and(|v| v == "real")
}

/// The SES sender the real-backend environments verify and configure.
pub const SES_SENDER: &str = "orders@example.com";
/// Receives before SQS dead-letters a message; the service is told the same.
pub const MAX_RECEIVES: u32 = 5;

/// One set of real backend servers, private to a server environment (and its restarts).
pub struct RealBackends {
    pub ferretdb: support::ferretdb::FerretDb,
    pub redis: support::redis::RedisServer,
    pub moto: support::moto::Moto,
    pub database: String,
    pub queue_url: String,
}

impl std::fmt::Debug for RealBackends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealBackends")
            .field("ferretdb_port", &self.ferretdb.port)
            .field("redis_port", &self.redis.port)
            .field("moto_port", &self.moto.port)
            .field("database", &self.database)
            .finish()
    }
}

impl RealBackends {
    /// Starts the three servers, creates the queue with its dead-letter queue and verifies the
    /// sender. Runs its async setup on a private runtime thread, so it can be called anywhere.
    pub fn start() -> RealBackends {
        std::thread::spawn(|| {
            let missing =
                "TEST_BACKENDS=real needs FerretDB, redis-server and moto (run scripts/test)";
            let ferretdb = support::ferretdb::start().expect(missing);
            let redis = support::redis::start().expect(missing);
            let moto = support::moto::start().expect(missing);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let queue_url = runtime.block_on(Self::prepare_moto(&moto));
            RealBackends {
                ferretdb,
                redis,
                moto,
                database: unique("orders"),
                queue_url,
            }
        })
        .join()
        .expect("start the real backends")
    }

    /// `start` when all three servers are installed; otherwise `None` after printing `SKIPPED`
    /// (or a panic under `REQUIRE_BACKENDS=1`), for tests that need them whatever the pass.
    pub fn start_if_installed() -> Option<RealBackends> {
        let hint = "see scripts/test";
        let installed = [
            support::find_binary("FERRETDB_BIN", "ferretdb", hint),
            support::find_binary("REDIS_SERVER_BIN", "redis-server", hint),
            support::find_binary("MOTO_SERVER_BIN", "moto_server", hint),
        ]
        .iter()
        .all(Option::is_some);
        if !installed {
            eprintln!("SKIPPED: this test needs FerretDB, redis-server and moto");
            return None;
        }
        Some(Self::start())
    }

    /// Creates the queue (with its dead-letter queue) and verifies the sender; again after a
    /// restart of moto, which keeps its state in memory only. Returns the queue's URL.
    pub async fn prepare_moto(moto: &support::moto::Moto) -> String {
        moto.verify_sender(SES_SENDER).await;
        moto.create_queue("orders", MAX_RECEIVES).await.0
    }

    /// The service's environment for these servers, with the `.env` names of the old service.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("MONGODB_URI".to_string(), self.ferretdb.uri(&self.database)),
            ("REDIS_HOST".to_string(), self.redis.host().to_string()),
            ("REDIS_PORT".to_string(), self.redis.port().to_string()),
            ("AWS_SQS_QUEUE_URL".to_string(), self.queue_url.clone()),
            ("AWS_SES_SENDER_EMAIL".to_string(), SES_SENDER.to_string()),
            ("QUEUE_MAX_RECEIVES".to_string(), MAX_RECEIVES.to_string()),
        ];
        env.extend(self.moto.env());
        env
    }
}
