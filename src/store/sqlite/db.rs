//! The SQLite connections: the one writer (with group commit, `group_commit`) and a few
//! readers, and how SQLite's errors become the store's. Shared by the store and the embedded
//! queue (`crate::queue::sqlite`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::{Notify, Semaphore};

use super::group_commit::GroupWriter;
use super::schema::migrate;
use crate::error::BackendError;

pub(super) const BACKEND: &str = "database";

/// WAL readers never block the writer, so a handful is plenty for one process; more would
/// only compete for the same disk.
const READ_CONNECTIONS: usize = 4;

/// How long a statement waits for another process's write lock before giving up as
/// unavailable.
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// WAL pages past which the writer checkpoints by itself: only a backstop should the
/// checkpointer fall behind (80 MB of WAL), never the normal path.
const WRITER_AUTOCHECKPOINT_PAGES: i64 = 20_000;

/// The database file, shared by the store and the queue. Cloning is cheap and every clone uses
/// the same connections.
#[derive(Clone)]
pub struct SqliteDb {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The writer thread's inbox. Jobs run in arrival order, so a burst of writes can not
    /// starve any one of them.
    writer: GroupWriter,
    /// Idle read connections, opened on first need. Never locked across a query, so a panic in
    /// one can not poison it for the others.
    readers: Arc<Mutex<Vec<Connection>>>,
    read_permits: Arc<Semaphore>,
    queue_sent: Notify,
    /// Dropped with the database: the checkpointer's thread ends.
    _checkpointer: std::sync::mpsc::Sender<()>,
}

impl SqliteDb {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteDb, BackendError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| BackendError::unavailable(BACKEND, e))?;
        }
        let mut conn = Connection::open(path).map_err(db_error)?;
        configure_writer(&conn).map_err(db_error)?;
        migrate(&mut conn)?;
        let checkpointer = start_checkpointer(path).map_err(|e| BackendError::other(BACKEND, e))?;
        Ok(SqliteDb {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer: GroupWriter::start(conn, BACKEND, db_error)
                    .map_err(|e| BackendError::other(BACKEND, e))?,
                readers: Arc::new(Mutex::new(Vec::with_capacity(READ_CONNECTIONS))),
                read_permits: Arc::new(Semaphore::new(READ_CONNECTIONS)),
                queue_sent: Notify::new(),
                _checkpointer: checkpointer,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the writer connection inside a `BEGIN IMMEDIATE` transaction (shared with
    /// the writes sent at the same moment, each in its own savepoint): its changes are kept if
    /// it returns `Ok` and undone otherwise, so a multi-statement change is all or none, and
    /// the answer comes after the commit.
    pub async fn write<T, F>(&self, f: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.inner.writer.write(f).await
    }

    /// Runs `f` on a read-only connection inside one read transaction, so the statements it
    /// runs (a page and its total, say) see the same snapshot.
    pub async fn read<T, F>(&self, f: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let permit = self
            .inner
            .read_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| BackendError::other(BACKEND, e))?;
        let readers = self.inner.readers.clone();
        let path = self.inner.path.clone();
        run_blocking(move || {
            let _permit = permit;
            let idle = readers.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let mut conn = match idle {
                Some(conn) => conn,
                None => open_reader(&path)?,
            };
            let result = (|| {
                let tx = conn.transaction()?;
                let value = f(&tx)?;
                tx.commit()?;
                Ok(value)
            })();
            // An error leaves the connection usable (the transaction rolled back on drop); only
            // a panic loses it, and the next read opens a fresh one.
            readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
            result
        })
        .await
    }

    /// Wakes the long polls of every queue handle on this database in this process when
    /// messages are sent. Lives here rather than in the queue so that two queue handles built
    /// on the same database still hear each other.
    pub(crate) fn queue_sent(&self) -> &Notify {
        &self.inner.queue_sent
    }
}

impl std::fmt::Debug for SqliteDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDb")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

async fn run_blocking<T, F>(f: F) -> Result<T, BackendError>
where
    T: Send + 'static,
    F: FnOnce() -> rusqlite::Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(db_error),
        Err(e) => Err(BackendError::other(
            BACKEND,
            format!("database task failed: {e}"),
        )),
    }
}

/// Prepared statements each connection keeps. rusqlite's default (16) is fewer than the
/// distinct statements the store and queue run, so under load statements were evicted and
/// parsed again over and over; every one of ours fits with room to spare.
const STATEMENT_CACHE: usize = 128;

fn configure_writer(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // journal_mode answers with the mode now in force; reading it keeps the pragma from being
    // mistaken for a statement that unexpectedly returned rows.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(
            mode,
            "SQLite refused WAL mode; readers will wait for writers"
        );
    }
    // NORMAL is durable across application crashes in WAL mode; only a power loss can drop the
    // last transactions, and it never corrupts the file.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Checkpoints are the checkpointer's job (see `start_checkpointer`); this is the backstop.
    conn.pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)?;
    // No table declares a foreign key today (see the module comment); enforcing them anyway
    // means one added by a later migration can not be silently ignored.
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Copies the WAL into the database file every [`CHECKPOINT_EVERY`], on a thread and a
/// connection of its own, until the database is dropped.
///
/// SQLite's default is that the commit which takes the WAL past 1,000 pages checkpoints it, on
/// the writer connection: copying the pages and two `fsync`s, inside the group commit every
/// write of the process waits for. Profiled at 200 orders/s the writer did that four times a
/// second (some 45 WAL pages per order), and an `fsync` that meets the kernel's writeback can
/// take far longer than a commit. A `PASSIVE` checkpoint elsewhere never takes the write lock,
/// so the writer only ever appends to the WAL.
fn start_checkpointer(path: &Path) -> std::io::Result<std::sync::mpsc::Sender<()>> {
    let conn = Connection::open(path).map_err(std::io::Error::other)?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(std::io::Error::other)?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(CHECKPOINT_EVERY)
            {
                // Busy or failed: the next tick tries again, and the writer's backstop remains.
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
        })?;
    Ok(stop)
}

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Busy, locked and I/O trouble are worth a retry (503); a uniqueness violation is the
/// caller's business; anything else is a bug or a damaged file.
pub(super) fn db_error(e: rusqlite::Error) -> BackendError {
    use rusqlite::ffi;
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen
            | ErrorCode::ReadOnly => BackendError::unavailable(BACKEND, e),
            ErrorCode::ConstraintViolation
                if f.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                BackendError::Duplicate
            }
            _ => BackendError::other(BACKEND, e),
        },
        _ => BackendError::other(BACKEND, e),
    }
}
