//! The embedded store: one SQLite file under `DATA_DIR`, so a fresh clone runs with nothing to
//! install. [`SqliteDb`] owns the file and is shared with the embedded queue
//! (`crate::queue::sqlite`), so an order and its queue message live in one database.
//!
//! Concurrency choices:
//!
//! - **One writer connection, with group commit.** SQLite admits one writer at a time whatever
//!   we do; a pool of writers would only trade waiting on our lock for `SQLITE_BUSY` retries
//!   inside SQLite. One thread owns the writer connection and runs the writes waiting for it
//!   together, in their order of arrival, in one transaction with a savepoint each
//!   (`group_commit`): a failing write is undone alone, and under load one commit
//!   serves many writes instead of one thread hand-off and one commit each.
//! - **`BEGIN IMMEDIATE` for every write.** Several processes (`api`, `worker`) may share the
//!   file. A deferred transaction that reads and then writes can find, at its first write, that
//!   another process committed since its read; SQLite then fails it with `SQLITE_BUSY` at once,
//!   whatever the busy timeout. Taking the write lock at `BEGIN` makes every read-check-write
//!   sequence (stock checks, conditional transitions) serialisable across processes, and lets
//!   the busy timeout do the waiting.
//! - **A few read-only connections.** In WAL mode readers see a committed snapshot and never
//!   wait for the writer, so product and order reads keep flowing during a write burst. A
//!   semaphore bounds them, which also bounds the blocking threads they occupy.
//! - **No SQLite call runs on the async executor** (actix actors and HTTP workers share it), so
//!   a disk stall or a busy wait can not freeze it: writes run on the writer thread, reads in
//!   `spawn_blocking`.
//!
//! No table has a foreign key: the MongoDB store can not enforce them and both stores must pass
//! the same contract tests, so neither may refuse what the other accepts.
//!
//! Layout: one file per trait of `crate::store` (`accounts`, `catalogue`, `orders`,
//! `idempotency`; the orders' email claims in `notifications`), each holding that aggregate's queries, column lists and row readers; beside
//! them what they share: the connections and error mapping (`db`), the writer's group commit
//! (`group_commit`), the schema and its migrations (`schema`) and column conversions (`rows`).

mod accounts;
mod catalogue;
mod db;
mod group_commit;
mod holds;
mod idempotency;
mod notifications;
mod orders;
mod retention;
mod rows;
mod schema;

use async_trait::async_trait;

pub use db::SqliteDb;

use crate::store::{StoreHealth, StoreResult};

/// The embedded store: every trait of `crate::store` on one [`SqliteDb`].
#[derive(Clone, Debug)]
pub struct SqliteStore {
    db: SqliteDb,
}

impl SqliteStore {
    pub fn new(db: SqliteDb) -> SqliteStore {
        SqliteStore { db }
    }

    pub fn db(&self) -> &SqliteDb {
        &self.db
    }
}

#[async_trait]
impl StoreHealth for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.db
            .read(|c| c.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }

    async fn is_empty(&self) -> StoreResult<bool> {
        self.db
            .read(|c| c.query_row("SELECT NOT EXISTS (SELECT 1 FROM users)", [], |r| r.get(0)))
            .await
    }
}

/// Throwaway databases for unit tests, here so the queue's tests can use them too.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::SqliteDb;

    /// A database in its own directory, removed when dropped. Unique per process and call, so
    /// tests run in parallel without sharing state (and without a `tempfile` dependency).
    pub(crate) struct TempDb {
        pub(crate) db: SqliteDb,
        dir: PathBuf,
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    pub(crate) fn temp_db() -> TempDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("order-service-sqlite-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = SqliteDb::open(&dir.join("nested").join("test.db")).expect("open test database");
        TempDb { db, dir }
    }
}

/// What only the embedded store has: the file and its schema version outlive a handle, and
/// handles on one file (an `api` and a `worker` process) stay consistent through SQLite's own
/// locking. What every store promises is tested once for both, in `tests/backends/store`.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;

    use super::schema::MIGRATIONS;
    use super::test_support::temp_db;
    use super::*;
    use crate::domain::{Cents, Email, Id, NewProduct, OrderLine, Quantity, Role, User};
    use crate::store::{Accounts, Catalogue, ReserveOutcome};

    #[tokio::test]
    async fn opening_twice_keeps_data_and_schema_version() {
        let t = temp_db();
        let store = SqliteStore::new(t.db.clone());
        assert!(store.is_empty().await.unwrap());
        let user = User {
            id: Id::new(),
            email: Email::parse("ann@example.com").unwrap(),
            name: "Ann".into(),
            role: Role::User,
            password_hash: "$argon2id$fake".into(),
            created_at: Utc::now(),
        };
        store.insert_user(&user).await.unwrap();
        let again = SqliteStore::new(SqliteDb::open(t.db.path()).unwrap());
        assert!(!again.is_empty().await.unwrap());
        let version: i64 = again
            .db
            .read(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn reservations_from_two_handles_on_one_file_never_oversell() {
        // Two SqliteDb handles stand for two processes (api and worker) sharing the file: only
        // SQLite's own locking, not our writer thread, keeps them apart.
        let t = temp_db();
        let first = Arc::new(SqliteStore::new(t.db.clone()));
        let second = Arc::new(SqliteStore::new(SqliteDb::open(t.db.path()).unwrap()));
        let new = NewProduct {
            name: "scarce".into(),
            description: String::new(),
            price: Cents::from_stored(250),
            stock: 37,
        };
        let p = first
            .insert_product(&new, Id::new(), Utc::now())
            .await
            .unwrap();
        let one = OrderLine {
            product_id: p.id,
            quantity: Quantity::parse(1).unwrap(),
        };
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let store = if i % 2 == 0 {
                    first.clone()
                } else {
                    second.clone()
                };
                tokio::spawn(async move {
                    let hold = crate::store::Hold::new(crate::domain::Id::new());
                    store.reserve_stock(&[one], &hold).await.unwrap()
                })
            })
            .collect();
        let mut reserved = 0;
        for task in tasks {
            if let ReserveOutcome::Reserved(_) = task.await.unwrap() {
                reserved += 1;
            }
        }
        assert_eq!(reserved, 37);
        let left = second.find_product(p.id).await.unwrap().unwrap().stock;
        assert_eq!(left, 0);
    }
}
