//! The FerretDB write lock: how the store sends its writes on a server whose updates are not
//! atomic. FerretDB 1.x applies `findAndModify` and `update` as a read followed by a blind
//! write of the whole document (FerretDB issue #3040), so against it writes run one at a time
//! among all the processes sharing the database; on MongoDB writes go straight through.
//! Everything about the lock is behind [`Writes`], so changing the strategy touches this file.
//!
//! What it costs, and why it is shaped so:
//!
//! - **One acquisition per batch of writes.** Within a process the writers queue for their
//!   turn (`write_turns`: a write a client waits on first, the worker's deferred by at most a
//!   second; waiting is a queue, not a sleep loop), so only one task per process ever
//!   contends for the shared lease. The lease is kept while writers are
//!   queued behind the one finishing, for at most `MAX_HOLD`, then given back so that other
//!   processes get their turn; under load one insert and one delete cover many writes.
//! - **Woken, not polling, across processes.** A process waiting for another's lease looks at
//!   the lock document once, then waits for the holder's release, announced on Redis pub/sub
//!   when Redis is configured (`lock_wakeups`), looking again every `WATCH_EVERY` (50 ms) in
//!   case the announcement was lost. Without Redis, or while the process does not trust the
//!   channel (its own announcements do not come back within 30 ms), it looks every 0.5-5 ms,
//!   as it must to get the lock soon after its release: the hand-over never depends on Redis's
//!   health.
//! - **Never a write without it.** A lease that can not be had within `LOCK_PATIENCE`, or a lock
//!   command that fails, fails the write as `Unavailable` (a 503 `unavailable` to the client):
//!   an unserialised write on this server can oversell or lose a transition. Inserts and
//!   deletes by `_id` would be safe without it, but measured worse (BENCHMARKS.md, "Real
//!   backends"): queued behind the lock they form batches, and SQLite then sees one writer.
//! - **Renewed while held, judged by the holder's own clock.** The holder counts its lease from
//!   the monotonic instant *before* it sent the command that took or renewed it, and sends no
//!   write once half the lease has gone by without a renewal. While one write is in flight
//!   the lease is renewed beside it. Another process never compares wall clocks: it declares a
//!   lease dead only after watching the lock document stay unchanged (same owner, same renewal
//!   count) for a whole `LEASE` on its own monotonic clock.
//! - **Its own lost inserts known for its own.** A lock insert whose reply never came (lost, or
//!   the write cut by `BACKEND_TIMEOUT` with it in flight) may have landed. The process notes
//!   each insert's owner before sending it, and removes a lock document under a noted owner as
//!   soon as it sees one, instead of waiting out a whole lease while every write fails.
//!
//! Where it is not safe, plainly: leases assume clocks that run at the same rate and that no
//! command is delayed in flight longer than half a lease (5 s). A holder stalled past that
//! (a frozen VM) whose write then lands can overlap another holder's. On MongoDB none of this
//! applies: there is no lock.

use std::future::IntoFuture;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Document};
use chrono::Utc;
use mongodb::{Collection, Database};
use tokio::sync::futures::Notified;
use tokio::time::Instant;

use super::errors::db_error;
use super::lock_wakeups::LockWakeups;
use super::write_turns::{Urgency, WriteTurns};
use crate::error::BackendError;
use crate::round_trips::{self, WorkPath};
use crate::store::StoreResult;

/// Warned about once per process, not once per connect.
static NON_ATOMIC_WARNED: AtomicBool = AtomicBool::new(false);

/// Why a write was not sent: carried in a driver error (`Error::custom`) so every call site's
/// error mapping (`db_error`) turns it into `Unavailable`.
#[derive(Debug, Clone)]
pub(super) struct LockUnavailable(pub(super) String);

impl std::fmt::Display for LockUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the FerretDB write lock is unavailable: {}", self.0)
    }
}

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
                 writes are serialised across processes with a lease on a lock document, which \
                 is correct but slow; use MongoDB in production"
            );
        }
        Ok(Writes::serialised_on(
            db.collection("locks"),
            Timing::default(),
        ))
    }

    fn serialised_on(locks: Collection<Document>, timing: Timing) -> Writes {
        Writes {
            lock: Some(Arc::new(SharedWriteLock::new(locks, timing))),
        }
    }

    /// Has waiters woken by the holder's release, announced through Redis (`lock_wakeups`),
    /// instead of looking at the lock every few milliseconds. No effect where there is no lock.
    pub(super) fn wake_waiters_through(&self, wakeups: impl FnOnce() -> Arc<LockWakeups>) {
        if let Some(lock) = &self.lock {
            let _ = lock.wakeups.set(wakeups());
        }
    }

    /// True when writes are serialised because the server's updates are not atomic.
    pub(super) fn serialised(&self) -> bool {
        self.lock.is_some()
    }

    /// Runs one write; alone among the writes of every process when the server needs that, and
    /// not at all (an `Unavailable` error) when the lock can not be had. Reads never wait: they
    /// only see whole committed documents.
    pub(super) async fn run<F, T>(&self, op: F) -> Result<T, mongodb::error::Error>
    where
        F: IntoFuture<Output = Result<T, mongodb::error::Error>>,
    {
        match &self.lock {
            None => op.await,
            Some(lock) => lock.run(op.into_future()).await,
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

const LOCK_ID: &str = "writes";

/// How often a waiter whose wake-ups come through Redis looks at the lock document anyway: for
/// a release whose announcement was lost, and to see a dead holder's lease run out (10 s). It
/// bounds how late a hand-over can be while the channel fails in a way this process can not
/// see (`lock_wakeups`: its own announcements still come back, the holder's do not).
const WATCH_EVERY: Duration = Duration::from_millis(50);

/// The lock's clock settings; shorter in tests.
#[derive(Clone, Copy, Debug)]
struct Timing {
    /// How long a lease lasts without renewal. Others take it over after watching it unchanged
    /// this long.
    lease: Duration,
    /// How long a write waits for the lease before it fails as unavailable.
    patience: Duration,
    /// How long a process keeps the lease for its queued writers before giving others a turn.
    max_hold: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease: Duration::from_secs(10),
            patience: Duration::from_secs(5),
            max_hold: Duration::from_millis(100),
        }
    }
}

impl Timing {
    /// The holder sends nothing under a lease older than this without renewing it first.
    fn trusted(&self) -> Duration {
        self.lease / 2
    }

    /// How often the lease is renewed beside a write in flight.
    fn renew_every(&self) -> Duration {
        self.lease / 4
    }
}

/// The lease this process holds.
struct Lease {
    owner: String,
    /// Bumped by every renewal, so that others can see the holder is alive without comparing
    /// clocks.
    renewals: i64,
    /// When the command that took or last renewed the lease was sent (the holder's own clock).
    since: Instant,
    /// When this process took it, for `MAX_HOLD`.
    taken: Instant,
}

/// What the process knows of the lock between writes.
#[derive(Default)]
struct LockState {
    lease: Option<Lease>,
    /// Another holder's lock document as last seen, and since when (our clock) it has not
    /// changed: kept across writes, since a dead holder is only known after a whole lease.
    watched: Option<(Document, Instant)>,
    /// The owners of this process's lock inserts whose outcome it never learned: the reply was
    /// lost, or the write was cut (`BACKEND_TIMEOUT`) while the insert was in flight. The
    /// insert may still have landed, and then the lock document is this process's own,
    /// abandoned: it is removed as soon as it is seen, instead of being waited out for a whole
    /// lease while every write of every process fails on `LOCK_PATIENCE`.
    unconfirmed: Vec<(String, Instant)>,
}

impl LockState {
    /// Notes an insert about to be sent under `owner`, before it is: if the write is cut with
    /// the insert in flight, the note stays.
    fn unconfirmed_insert(&mut self, owner: &str, lease: Duration) {
        // A landed insert older than two leases was taken over like any dead holder's.
        self.unconfirmed
            .retain(|(_, sent)| sent.elapsed() < lease * 2);
        if !self.unconfirmed.iter().any(|(o, _)| o == owner) {
            if self.unconfirmed.len() >= UNCONFIRMED_KEPT {
                self.unconfirmed.remove(0);
            }
            self.unconfirmed.push((owner.to_string(), Instant::now()));
        }
    }

    /// The insert under `owner` was answered (taken, or refused as a duplicate).
    fn confirmed(&mut self, owner: &str) {
        self.unconfirmed.retain(|(o, _)| o != owner);
    }

    /// Whether the lock document seen is one this process inserted without hearing back: a
    /// noted owner, or `current`, the insert just refused as a duplicate (which is its own
    /// document if the driver sent it again after a first try that landed).
    fn abandoned_by_us(&self, seen: &Document, current: &str) -> Option<String> {
        let owner = seen.get_str("owner").ok()?;
        (owner == current || self.unconfirmed.iter().any(|(o, _)| o == owner))
            .then(|| owner.to_string())
    }
}

/// How many unconfirmed lock inserts a process remembers; an older one's document, if it
/// landed, is taken over after a lease like any holder's that stopped renewing.
const UNCONFIRMED_KEPT: usize = 16;

/// A write lock shared by every process using one database. Mutual exclusion comes from the
/// one thing such servers do apply atomically: an insert refused by the unique `_id` (of the
/// single lock document).
struct SharedWriteLock {
    locks: Collection<Document>,
    /// One write at a time in this process, in the order `write_turns` gives. Even under the
    /// lease two writes of this process must not overlap, as they could touch one document.
    turns: WriteTurns,
    /// The lease held between writes. Only the writer whose turn it is locks it, so it is never
    /// contended; a mutex only because the turn and the state are handed between tasks.
    state: tokio::sync::Mutex<LockState>,
    /// Writers waiting for their turn: while there are some, the lease is kept for them.
    queued: AtomicUsize,
    timing: Timing,
    /// Releases announced across processes, when Redis is there to carry them.
    wakeups: std::sync::OnceLock<Arc<LockWakeups>>,
}

/// A place in the queue of this process's writers, left however the writer ends: a write
/// dropped while it waits (cut by `BACKEND_TIMEOUT`) must not count as queued forever.
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn join(queued: &'a AtomicUsize) -> Self {
        queued.fetch_add(1, Ordering::AcqRel);
        Queued(queued)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The lease of a write dropped in flight (cut by `BACKEND_TIMEOUT`). Without this the lock
/// document would stay until others see it unchanged for a whole lease, and every write of
/// every process, this one's too, would wait or fail for that long. Released at once instead:
/// the dropped command is already on the server, which applies it as soon as it can.
struct Unreleased {
    locks: Collection<Document>,
    owner: Option<String>,
    lease: Duration,
    wakeups: Option<Arc<LockWakeups>>,
}

impl Drop for Unreleased {
    fn drop(&mut self) {
        let (Some(owner), Ok(runtime)) = (self.owner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let locks = self.locks.clone();
        let bound = self.lease;
        let wakeups = self.wakeups.take();
        runtime.spawn(async move {
            let release = locks.delete_one(doc! { "_id": LOCK_ID, "owner": owner });
            // Bounded: past the lease, another process removes the lock anyway.
            let released =
                tokio::time::timeout(bound, round_trips::scope(WorkPath::Lock, release)).await;
            if let (Ok(Ok(_)), Some(wakeups)) = (released, wakeups) {
                wakeups.released();
            }
        });
    }
}

impl SharedWriteLock {
    fn new(locks: Collection<Document>, timing: Timing) -> Self {
        SharedWriteLock {
            locks,
            turns: WriteTurns::default(),
            state: tokio::sync::Mutex::new(LockState::default()),
            queued: AtomicUsize::new(0),
            timing,
            wakeups: std::sync::OnceLock::new(),
        }
    }

    async fn run<F, T>(&self, op: F) -> Result<T, mongodb::error::Error>
    where
        F: std::future::Future<Output = Result<T, mongodb::error::Error>>,
    {
        let queued = Queued::join(&self.queued);
        let _turn = self.turns.take(Urgency::of_current_work()).await;
        drop(queued);
        let mut state = self.state.lock().await;
        let held = state.lease.take();
        let lease = match self.ready_lease(held, &mut state).await {
            Ok(lease) => lease,
            Err(e) => {
                tracing::warn!(error = %e, "write refused: the write lock is unavailable");
                return Err(mongodb::error::Error::custom(e));
            }
        };
        let mut unreleased = Unreleased {
            locks: self.locks.clone(),
            owner: Some(lease.owner.clone()),
            lease: self.timing.lease,
            wakeups: self.wakeups.get().cloned(),
        };
        let (out, lease, alive) = self.alongside_renewals(lease, op).await;
        unreleased.owner = None;
        state.lease = if alive && self.keep(&lease) {
            Some(lease)
        } else {
            // A lease we no longer trust is given back too: if the document is still ours,
            // nobody has to wait a whole lease to see that we are gone.
            self.release(lease).await;
            None
        };
        out
    }

    /// Whether to keep the lease for the next writer of this process.
    fn keep(&self, lease: &Lease) -> bool {
        self.queued.load(Ordering::Acquire) > 0 && lease.taken.elapsed() < self.timing.max_hold
    }

    /// A lease good for a write: the one held if it is fresh, renewed if it is getting old, or
    /// a new one.
    async fn ready_lease(
        &self,
        held: Option<Lease>,
        state: &mut LockState,
    ) -> Result<Lease, LockUnavailable> {
        if let Some(mut lease) = held {
            if lease.since.elapsed() < self.timing.renew_every() {
                return Ok(lease);
            }
            match self.renew(&mut lease).await {
                Ok(true) => return Ok(lease),
                Ok(false) => tracing::warn!("the write lock's lease was lost; taking it again"),
                Err(e) => {
                    tracing::warn!(error = %e, "the write lock's lease could not be renewed; taking it again")
                }
            }
            self.release(lease).await;
        }
        self.acquire(state).await
    }

    /// Runs `op`, renewing the lease beside it for as long as it takes. Returns the lease, and
    /// whether it is still ours.
    async fn alongside_renewals<F, T>(&self, mut lease: Lease, op: F) -> (F::Output, Lease, bool)
    where
        F: std::future::Future<Output = Result<T, mongodb::error::Error>>,
    {
        let mut op = std::pin::pin!(op);
        let mut alive = true;
        loop {
            let due = lease.since + self.timing.renew_every();
            tokio::select! {
                out = &mut op => return (out, lease, alive),
                _ = tokio::time::sleep_until(due), if alive => {
                    alive = matches!(self.renew(&mut lease).await, Ok(true));
                    if !alive {
                        tracing::error!("the write lock's lease could not be renewed during a write");
                    }
                }
            }
        }
    }

    /// Extends the lease. `Ok(false)` when it is no longer ours (taken over), an error when it
    /// is unknown.
    async fn renew(&self, lease: &mut Lease) -> Result<bool, LockUnavailable> {
        if lease.since.elapsed() >= self.timing.trusted() {
            return Ok(false); // Too old to trust: others may already be taking it over.
        }
        let sent = Instant::now();
        let renewed = round_trips::scope(
            WorkPath::Lock,
            self.locks.update_one(
                doc! { "_id": LOCK_ID, "owner": &lease.owner, "renewals": lease.renewals },
                doc! { "$inc": { "renewals": 1 }, "$set": { "renewedAt": bson::DateTime::now() } },
            ),
        )
        .await
        .map_err(|e| LockUnavailable(db_error(e).to_string()))?;
        if renewed.matched_count == 0 {
            return Ok(false);
        }
        lease.renewals += 1;
        lease.since = sent;
        Ok(true)
    }

    /// Takes the lease: inserts the lock document, or waits until its holder gives it back or is
    /// seen dead. Only one task per process is ever here (it holds `state`).
    async fn acquire(&self, state: &mut LockState) -> Result<Lease, LockUnavailable> {
        round_trips::scope(WorkPath::Lock, async {
            let owner = hex::encode(rand::random::<[u8; 12]>());
            let deadline = Instant::now() + self.timing.patience;
            let mut pause = Duration::from_micros(500);
            loop {
                // Armed before the attempt: a release between a refused insert and the wait
                // still wakes the wait.
                let mut release = self.armed_release();
                let sent = Instant::now();
                let lock = doc! {
                    "_id": LOCK_ID,
                    "owner": &owner,
                    "renewals": 0_i64,
                    // For people reading the database; no process decides anything by it.
                    "takenAt": bson::DateTime::from_millis(Utc::now().timestamp_millis()),
                };
                state.unconfirmed_insert(&owner, self.timing.lease);
                match self.locks.insert_one(lock).await.map_err(db_error) {
                    Ok(_) => {
                        state.confirmed(&owner);
                        state.watched = None;
                        return Ok(Lease {
                            owner,
                            renewals: 0,
                            since: sent,
                            taken: sent,
                        });
                    }
                    Err(BackendError::Duplicate) => state.confirmed(&owner),
                    // Unknown whether it landed: the owner stays noted.
                    Err(e) => return Err(LockUnavailable(e.to_string())),
                }
                // Held by someone: watch it until it is released (gone) or dead.
                loop {
                    if Instant::now() >= deadline {
                        return Err(LockUnavailable(format!(
                            "held by another process for over {:?}",
                            self.timing.patience
                        )));
                    }
                    self.wait_for_release(release.take(), &mut pause).await;
                    release = self.armed_release();
                    let seen = self
                        .locks
                        .find_one(doc! { "_id": LOCK_ID })
                        .projection(doc! { "owner": 1, "renewals": 1 })
                        .await
                        .map_err(|e| LockUnavailable(db_error(e).to_string()))?;
                    let Some(seen) = seen else { break };
                    if let Some(ours) = state.abandoned_by_us(&seen, &owner) {
                        tracing::warn!(
                            "removing this process's own write lock, left by an insert whose reply was lost"
                        );
                        self.locks
                            .delete_one(doc! { "_id": LOCK_ID, "owner": &ours })
                            .await
                            .map_err(|e| LockUnavailable(db_error(e).to_string()))?;
                        state.confirmed(&ours);
                        state.watched = None;
                        break;
                    }
                    match state.watched.as_ref() {
                        Some((last, since)) if *last == seen => {
                            if since.elapsed() >= self.timing.lease {
                                // Unchanged for a whole lease on our clock: its holder is gone.
                                tracing::warn!(
                                    "taking over a write lock whose holder stopped renewing it"
                                );
                                self.locks
                                    .delete_one(seen)
                                    .await
                                    .map_err(|e| LockUnavailable(db_error(e).to_string()))?;
                                state.watched = None;
                                break;
                            }
                        }
                        _ => state.watched = Some((seen, Instant::now())),
                    }
                }
            }
        })
        .await
    }

    /// A wait for the next release another process announces, registered now; `None` when
    /// releases are not announced to this process (no Redis), or the channel is not trusted
    /// now (its subscription is down, or its own announcements do not come back in time).
    fn armed_release(&self) -> Option<Pin<Box<Notified<'_>>>> {
        let wakeups = self.wakeups.get().filter(|w| w.trusted())?;
        let mut release = Box::pin(wakeups.notify().notified());
        release.as_mut().enable();
        Some(release)
    }

    /// Until the holder announces its release, or `WATCH_EVERY` at most; without
    /// announcements, a pause that doubles up to 5 ms.
    async fn wait_for_release(
        &self,
        release: Option<Pin<Box<Notified<'_>>>>,
        pause: &mut Duration,
    ) {
        match release {
            Some(release) => {
                let _ = tokio::time::timeout(WATCH_EVERY, release).await;
            }
            None => {
                tokio::time::sleep(*pause).await;
                *pause = (*pause * 2).min(Duration::from_millis(5));
            }
        }
    }

    async fn release(&self, lease: Lease) {
        let released = round_trips::scope(
            WorkPath::Lock,
            self.locks
                .delete_one(doc! { "_id": LOCK_ID, "owner": &lease.owner }),
        )
        .await;
        match released {
            Ok(_) => {
                if let Some(wakeups) = self.wakeups.get() {
                    wakeups.released();
                }
            }
            Err(e) => {
                tracing::warn!(error = %db_error(e), "could not release the write lock; others take it over once its lease runs out")
            }
        }
    }
}
