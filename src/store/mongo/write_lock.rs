//! The FerretDB write lock: how the store sends its writes on a server whose updates are not
//! atomic. FerretDB 1.x applies `findAndModify` and `update` as a read followed by a blind
//! write of the whole document (FerretDB issue #3040), so against it every write runs alone
//! among all the processes sharing the database; on MongoDB writes go straight through.
//! Everything about the lock is behind [`Writes`], so changing the strategy touches this file.

use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Document};
use chrono::{TimeDelta, Utc};
use mongodb::{Collection, Database};

use super::errors::db_error;
use crate::error::BackendError;
use crate::store::StoreResult;

/// Warned about once per process, not once per connect.
static NON_ATOMIC_WARNED: AtomicBool = AtomicBool::new(false);

/// How this process sends its writes to one database. Cloning is cheap; clones share the lock.
#[derive(Clone)]
pub(super) struct Writes {
    /// Present on servers whose updates are not atomic: every write then runs alone among all
    /// the processes sharing the database.
    lock: Option<Arc<SharedWriteLock>>,
}

impl Writes {
    /// Straight through on MongoDB; serialised with a lock document in `db` on a FerretDB 1.x.
    pub(super) async fn for_server(db: &Database) -> StoreResult<Writes> {
        let Some(version) = non_atomic_server(db).await? else {
            return Ok(Writes { lock: None });
        };
        if !NON_ATOMIC_WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                server = %version,
                "this server does not apply updates atomically (FerretDB issue #3040): \
                 writes are serialised across processes with a lock document, which is \
                 correct but slow; use MongoDB in production"
            );
        }
        Ok(Writes {
            lock: Some(Arc::new(SharedWriteLock::new(db.collection("locks")))),
        })
    }

    /// True when writes are serialised because the server's updates are not atomic.
    pub(super) fn serialised(&self) -> bool {
        self.lock.is_some()
    }

    /// Runs one write; alone among the writes of every process when the server needs that.
    /// Reads never wait: they only see whole committed documents.
    pub(super) async fn run<F: IntoFuture>(&self, op: F) -> F::Output {
        match &self.lock {
            None => op.await,
            Some(lock) => {
                let held = lock.acquire().await;
                // A write cut short by `BACKEND_TIMEOUT` drops this future while it holds the
                // lock: the guard gives the lock back then, or every process would wait out
                // the lease (and, on a slow server, time out holding it again).
                let mut unreleased = Unreleased {
                    locks: lock.locks.clone(),
                    owner: held.as_ref().ok().map(|(_, owner)| owner.clone()),
                };
                let out = op.await;
                if let Ok(token) = held {
                    lock.release(token).await;
                }
                unreleased.owner = None;
                out
            }
        }
    }
}

/// The FerretDB version, when the server is a FerretDB 1.x: it applies `update` and
/// `findAndModify` as a read followed by a blind write of the whole document, so two
/// concurrent updates of one document can both pass their filter and the last one wins.
/// FerretDB announces itself in `buildInfo`; MongoDB has no such field.
async fn non_atomic_server(db: &Database) -> StoreResult<Option<String>> {
    let info = db
        .run_command(doc! { "buildInfo": 1 })
        .await
        .map_err(db_error)?;
    Ok(info
        .get_str("ferretdbVersion")
        .ok()
        .filter(|v| v.trim_start_matches('v').starts_with("1."))
        .map(str::to_owned))
}

/// A write lock shared by every process using one database, for servers whose updates are not
/// atomic. Mutual exclusion comes from the one thing such servers do apply atomically: an
/// insert refused by the unique `_id` (here, of the single lock document). A holder that dies
/// leaves the lock to expire after `LEASE`, when another process removes it. The removal and
/// the release are filtered deletes, which such a server may apply to a newer lock if the
/// lease ran out in between: that needs a write to take longer than `LEASE`, and the
/// consequence is one unserialised write. Within a process, a local mutex queues writers first
/// so they do not all poll the database.
struct SharedWriteLock {
    local: tokio::sync::Mutex<()>,
    locks: Collection<Document>,
}

const LOCK_ID: &str = "writes";
const LEASE: TimeDelta = TimeDelta::seconds(10);
/// If the lock can not be had for this long, the write goes ahead unserialised (and says so)
/// rather than the service stalling on a wedged lock.
const LOCK_PATIENCE: Duration = Duration::from_secs(15);

/// The lock document of a holder whose write was dropped before it could release it.
struct Unreleased {
    locks: Collection<Document>,
    owner: Option<String>,
}

impl Drop for Unreleased {
    fn drop(&mut self) {
        let (Some(owner), Ok(runtime)) = (self.owner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let locks = self.locks.clone();
        // Bounded too: past the lease, another process removes the lock anyway.
        let release = async move {
            locks
                .delete_one(doc! { "_id": LOCK_ID, "owner": owner })
                .await
        };
        runtime.spawn(async move {
            let _ = tokio::time::timeout(LEASE.to_std().unwrap_or_default(), release).await;
        });
    }
}

impl SharedWriteLock {
    fn new(locks: Collection<Document>) -> Self {
        SharedWriteLock {
            local: tokio::sync::Mutex::new(()),
            locks,
        }
    }

    /// Returns a token naming this holder, or an error when the lock could not be had (the
    /// write then proceeds anyway, see `LOCK_PATIENCE`).
    async fn acquire(&self) -> Result<(tokio::sync::MutexGuard<'_, ()>, String), ()> {
        let local = self.local.lock().await;
        let owner = hex::encode(rand::random::<[u8; 12]>());
        let deadline = tokio::time::Instant::now() + LOCK_PATIENCE;
        let mut pause = Duration::from_micros(500);
        loop {
            let now = Utc::now();
            let lock = doc! { "_id": LOCK_ID, "owner": &owner, "expiresAt": bson::DateTime::from_millis((now + LEASE).timestamp_millis()) };
            match self.locks.insert_one(lock).await.map_err(db_error) {
                Ok(_) => return Ok((local, owner)),
                Err(BackendError::Duplicate) => {
                    // Held by another process; clear it only if its holder is long gone.
                    let expired = doc! { "_id": LOCK_ID, "expiresAt": { "$lt": bson::DateTime::from_millis(now.timestamp_millis()) } };
                    let _ = self.locks.delete_one(expired).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "write lock unavailable; writing without it");
                    return Err(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::error!("write lock held too long; writing without it");
                return Err(());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    async fn release(&self, (local, owner): (tokio::sync::MutexGuard<'_, ()>, String)) {
        if let Err(e) = self
            .locks
            .delete_one(doc! { "_id": LOCK_ID, "owner": owner })
            .await
        {
            tracing::warn!(error = %db_error(e), "could not release the write lock; it expires by itself");
        }
        drop(local);
    }
}
