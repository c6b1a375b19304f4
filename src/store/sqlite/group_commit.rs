//! Group commit for the embedded database's one writer connection.
//!
//! SQLite admits one writer at a time, so every write of the process goes through one
//! connection. Running each write as its own transaction, handed to a blocking thread in turn,
//! made the hand-offs the bottleneck (about 600 orders/s, mostly the kernel switching threads;
//! see BENCHMARKS.md). Instead one thread owns the connection: callers send it jobs, and it
//! takes every job waiting (up to [`MAX_GROUP`]) into one `BEGIN IMMEDIATE` transaction.
//!
//! - Each job runs inside its own savepoint, so a job that fails (an insufficient-stock check,
//!   a duplicate key, a panic) is rolled back alone and the others still commit.
//! - Callers are answered only after the group's `COMMIT`: an `Ok` always means committed, and
//!   a failed commit fails every job of the group (none of them changed anything).
//! - Jobs run in the order they were sent, each seeing the effects of the ones before it, so
//!   the group is equivalent to running its jobs one after the other — the same serial order
//!   the single writer always gave.
//! - Under light load a group is one job and nothing waits; under heavy load the thread never
//!   sleeps between groups and one commit serves many writes.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::error::BackendError;

/// Most jobs in one transaction: bounds how long the first job of a group waits for the last
/// one (each takes tens of microseconds).
const MAX_GROUP: usize = 128;

/// Turns SQLite's errors into the store's (the caller's classification of busy, duplicate...).
pub type ErrorMapper = fn(rusqlite::Error) -> BackendError;

/// The sending side: cheap to clone; the thread stops when the last clone is dropped.
#[derive(Clone)]
pub struct GroupWriter {
    jobs: mpsc::Sender<Box<dyn Job>>,
    backend: &'static str,
}

impl GroupWriter {
    /// Starts the writer thread, which owns `conn` from now on.
    pub fn start(
        conn: Connection,
        backend: &'static str,
        map_error: ErrorMapper,
    ) -> std::io::Result<GroupWriter> {
        let (jobs, inbox) = mpsc::channel::<Box<dyn Job>>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, inbox, backend, map_error))?;
        Ok(GroupWriter { jobs, backend })
    }

    /// Runs `f` in the next group and waits for the group's commit.
    pub async fn write<T, F>(&self, f: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(Pending { f, reply }))
            .map_err(|_| BackendError::unavailable(self.backend, "the database writer stopped"))?;
        answer.await.map_err(|_| {
            // The job's reply was dropped unanswered: it panicked (and was rolled back).
            BackendError::other(self.backend, "the database write failed")
        })?
    }
}

/// A caller's write, before it ran.
trait Job: Send {
    /// Runs inside the job's savepoint; the outcome waits for the group's commit.
    fn run(self: Box<Self>, conn: &Connection, map_error: ErrorMapper) -> Box<dyn Outcome>;
    /// Answers without running: the group could not start.
    fn refuse(self: Box<Self>, error: BackendError);
}

/// A job that ran: whether it succeeded (so its savepoint is kept), and its answer to give.
trait Outcome: Send {
    fn succeeded(&self) -> bool;
    /// `committed` is the group's fate; a job that failed by itself reports its own error.
    fn answer(self: Box<Self>, committed: Result<(), BackendError>);
}

struct Pending<T, F> {
    f: F,
    reply: oneshot::Sender<Result<T, BackendError>>,
}

struct Ran<T> {
    result: Result<T, BackendError>,
    reply: oneshot::Sender<Result<T, BackendError>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection, map_error: ErrorMapper) -> Box<dyn Outcome> {
        let Pending { f, reply } = *self;
        Box::new(Ran {
            result: f(conn).map_err(map_error),
            reply,
        })
    }

    fn refuse(self: Box<Self>, error: BackendError) {
        let _ = self.reply.send(Err(error));
    }
}

impl<T: Send + 'static> Outcome for Ran<T> {
    fn succeeded(&self) -> bool {
        self.result.is_ok()
    }

    fn answer(self: Box<Self>, committed: Result<(), BackendError>) {
        let answer = match (self.result, committed) {
            (Err(own), _) => Err(own),
            (Ok(value), Ok(())) => Ok(value),
            (Ok(_), Err(group)) => Err(group),
        };
        // A caller that gave up waiting is not our concern: the write stands either way.
        let _ = self.reply.send(answer);
    }
}

fn run(
    conn: Connection,
    inbox: mpsc::Receiver<Box<dyn Job>>,
    backend: &'static str,
    map_error: ErrorMapper,
) {
    while let Ok(first) = inbox.recv() {
        let mut group = Vec::with_capacity(MAX_GROUP);
        group.push(first);
        group.extend(inbox.try_iter().take(MAX_GROUP - 1));
        let mut waiting = group.into_iter();
        // A group cut short (its transaction was lost mid-way) leaves the rest for a new one.
        while waiting.len() > 0 {
            run_group(&conn, &mut waiting, backend, map_error);
        }
    }
    tracing::debug!("database writer stopped: no store handle is left");
}

/// Runs jobs from `jobs` in one transaction until they are all done, or until the transaction
/// is lost (the remaining jobs stay in `jobs`).
fn run_group(
    conn: &Connection,
    jobs: &mut std::vec::IntoIter<Box<dyn Job>>,
    backend: &'static str,
    map_error: ErrorMapper,
) {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        // Another process held the write lock past the busy timeout, or the file is gone.
        let error = map_error(e);
        for job in jobs {
            job.refuse(error.clone());
        }
        return;
    }
    let mut ran: Vec<Box<dyn Outcome>> = Vec::with_capacity(jobs.len());
    let mut lost = None;
    for job in jobs.by_ref() {
        if let Err(e) = exec(conn, "SAVEPOINT job") {
            job.refuse(map_error(e));
            lost = Some(BackendError::unavailable(
                backend,
                "the write transaction failed",
            ));
            break;
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| job.run(conn, map_error)));
        let keep = matches!(&outcome, Ok(o) if o.succeeded());
        if let Err(panic) = &outcome {
            tracing::error!(
                panic = panic_text(panic),
                "a database write panicked; rolled back"
            );
        }
        if !keep {
            // Undo this job alone. If SQLite already rolled the whole transaction back (a full
            // disk, an I/O error), this fails and the autocommit check below notices.
            let _ = exec(conn, "ROLLBACK TO job");
        }
        let _ = exec(conn, "RELEASE job");
        if let Ok(outcome) = outcome {
            ran.push(outcome);
        }
        if conn.is_autocommit() {
            lost = Some(BackendError::unavailable(
                backend,
                "the write transaction was rolled back",
            ));
            break;
        }
    }
    let committed = match lost {
        Some(error) => {
            if !conn.is_autocommit() {
                let _ = exec(conn, "ROLLBACK");
            }
            Err(error)
        }
        None => exec(conn, "COMMIT").map_err(|e| {
            if !conn.is_autocommit() {
                let _ = exec(conn, "ROLLBACK");
            }
            map_error(e)
        }),
    };
    for outcome in ran {
        outcome.answer(committed.clone());
    }
}

/// Runs one of the group's own statements from the statement cache: they run several times
/// per job, and parsing them anew each time was a visible share of the writer's time.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("unknown panic")
}

#[cfg(test)]
mod tests {
    use crate::error::BackendError;
    use crate::store::sqlite::test_support::temp_db;
    use crate::store::sqlite::SqliteDb;

    async fn with_table() -> crate::store::sqlite::test_support::TempDb {
        let temp = temp_db();
        temp.db
            .write(|c| c.execute_batch("CREATE TABLE t (v INTEGER NOT NULL UNIQUE)"))
            .await
            .unwrap();
        temp
    }

    async fn count(db: &SqliteDb) -> i64 {
        db.read(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_failing_job_is_rolled_back_alone_and_the_others_commit() {
        let temp = with_table().await;
        // Sent together, so they share groups; each answer must still be its own.
        let writes: Vec<_> = (0..200)
            .map(|i| {
                let db = temp.db.clone();
                tokio::spawn(async move {
                    db.write(move |c| {
                        c.execute("INSERT INTO t (v) VALUES (?1)", [i % 100])?;
                        // A second statement, to prove a failing job's earlier work is undone.
                        c.execute("INSERT INTO t (v) VALUES (?1)", [1000 + i])?;
                        Ok(i)
                    })
                    .await
                })
            })
            .collect();
        let mut ok = 0;
        for w in writes {
            match w.await.unwrap() {
                Ok(_) => ok += 1,
                Err(BackendError::Duplicate) => {}
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
        // Values 0..100 each succeed once; their twins hit the unique constraint, and both of
        // their inserts are rolled back.
        assert_eq!(ok, 100);
        assert_eq!(count(&temp.db).await, 200);
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone_and_the_writer_keeps_serving() {
        let temp = with_table().await;
        let panicked = temp
            .db
            .write(|c| -> rusqlite::Result<()> {
                c.execute("INSERT INTO t (v) VALUES (1)", [])?;
                panic!("boom")
            })
            .await;
        assert!(panicked.is_err());
        temp.db
            .write(|c| c.execute("INSERT INTO t (v) VALUES (2)", []))
            .await
            .unwrap();
        assert_eq!(count(&temp.db).await, 1);
    }
}
