//! The order in which this process's writers take their turn at the FerretDB write lock: a
//! write a client is waiting on (an HTTP request's reservation or order insert) goes ahead of
//! the worker's and the background jobs' writes, but never starves them.
//!
//! Why: on FerretDB every write of the process runs one at a time (`write_lock`), and under
//! load the queue of writers is what `POST /api/orders` waits in. First come, first served
//! made a request wait behind every transition, email claim and outbox batch queued before it,
//! so its answer took as long as the worker's backlog. A request's writes are few and small
//! (the reservation, a share of one insert batch); the worker's can wait a little without
//! anyone noticing, since the client follows its order by its status stream anyway.
//!
//! How: earliest due first. A writer's due time is when it arrived, plus `BACKGROUND_DEFERRAL`
//! for a write no client waits on. So a request's write goes ahead of background writes that
//! arrived less than that before it, and a background write waits at most that long for
//! requests that arrived after it: bounded, never a starvation. Among writes of one kind the
//! order is first come, first served. Waiting is a queue of wake-ups handed from one turn to
//! the next, never a sleep loop.
//!
//! Hand-written (about sixty lines on `std` and `tokio` primitives) because the priority
//! mutexes on crates.io are young single-maintainer crates built on `unsafe` code, and none
//! offers deadline ordering; this one is small enough to read whole.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// How much longer than a request's write a write no client waits on may be kept waiting.
/// Measured against 250 ms (BENCHMARKS.md, "Requests first at the write lock"): on a saturated
/// FerretDB it halves `POST`'s median again with no loss of throughput or completion lag; well
/// under `BACKEND_TIMEOUT`, which the wait counts against.
pub(super) const BACKGROUND_DEFERRAL: Duration = Duration::from_secs(1);

/// Whether a client is waiting on the write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Urgency {
    /// An HTTP request's write: its client waits for the answer.
    Request,
    /// The worker's and background jobs' writes.
    Background,
}

impl Urgency {
    /// The urgency of the work being polled now (`round_trips` marks it).
    pub(super) fn of_current_work() -> Urgency {
        if crate::round_trips::client_waits() {
            Urgency::Request
        } else {
            Urgency::Background
        }
    }

    fn deferral(self) -> Duration {
        match self {
            Urgency::Request => Duration::ZERO,
            Urgency::Background => BACKGROUND_DEFERRAL,
        }
    }
}

/// One turn at a time, earliest due first.
#[derive(Default)]
pub(super) struct WriteTurns {
    state: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    /// A turn is being taken now.
    busy: bool,
    waiting: BinaryHeap<Waiter>,
    arrivals: u64,
}

struct Waiter {
    due: Instant,
    /// Arrival order, so that equal due times are first come, first served.
    arrival: u64,
    wake: oneshot::Sender<()>,
}

/// The turn; the next writer's begins when it is dropped.
pub(super) struct Turn<'a> {
    turns: &'a WriteTurns,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.turns.pass_on();
    }
}

impl WriteTurns {
    /// Waits for this writer's turn. Cancel-safe: a writer dropped while it waits leaves the
    /// queue, and one dropped just as its turn came passes the turn on.
    pub(super) async fn take(&self, urgency: Urgency) -> Turn<'_> {
        let woken = {
            let mut queue = self.queue();
            if !queue.busy {
                queue.busy = true;
                return Turn { turns: self };
            }
            let (wake, woken) = oneshot::channel();
            queue.arrivals += 1;
            let waiter = Waiter {
                due: Instant::now() + urgency.deferral(),
                arrival: queue.arrivals,
                wake,
            };
            queue.waiting.push(waiter);
            woken
        };
        let mut waiting = Waiting {
            turns: self,
            woken: Some(woken),
        };
        let woken = waiting.woken.as_mut().expect("set above");
        // The sender is only ever used to hand the turn over, never dropped unsent while this
        // writer waits: the queue that owns it lives as long as `self`.
        let handed = woken.await;
        waiting.woken = None;
        debug_assert!(handed.is_ok());
        Turn { turns: self }
    }

    /// Hands the turn to the first waiter still there, or frees it.
    fn pass_on(&self) {
        let mut queue = self.queue();
        while let Some(next) = queue.waiting.pop() {
            if next.wake.send(()).is_ok() {
                return; // Still busy: the turn is the next writer's now.
            }
        }
        queue.busy = false;
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A writer in the queue; on drop before its turn came, it gives up its place, and passes the
/// turn on if it was handed one it will not take.
struct Waiting<'a> {
    turns: &'a WriteTurns,
    woken: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mut woken) = self.woken.take() {
            woken.close();
            if woken.try_recv().is_ok() {
                self.turns.pass_on();
            }
        }
    }
}

impl Ord for Waiter {
    /// The heap pops its greatest: the earliest due, then the earliest arrival.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.arrival).cmp(&(self.due, self.arrival))
    }
}

impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Waiter {}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Queues writers of the given urgencies, `gap` apart, behind a turn held meanwhile, and
    /// returns the order in which they got their turns.
    async fn served_order(writers: &[(&'static str, Urgency)], gap: Duration) -> Vec<&'static str> {
        let turns = Arc::new(WriteTurns::default());
        let served = Arc::new(Mutex::new(Vec::new()));
        let held = turns.take(Urgency::Background).await;
        let mut tasks = Vec::new();
        for &(name, urgency) in writers {
            let (turns, served) = (turns.clone(), served.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = turns.take(urgency).await;
                served.lock().unwrap().push(name);
            }));
            // Let the writer join the queue before the next one arrives.
            tokio::task::yield_now().await;
            tokio::time::advance(gap).await;
        }
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        let order = served.lock().unwrap().clone();
        order
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_goes_ahead_of_recent_background_writes() {
        use Urgency::*;
        let writers = [
            ("worker 1", Background),
            ("worker 2", Background),
            ("request", Request),
        ];
        let order = served_order(&writers, Duration::from_millis(10)).await;
        assert_eq!(order, ["request", "worker 1", "worker 2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_background_write_waits_no_longer_than_its_deferral() {
        use Urgency::*;
        // The worker's write has waited longer than the deferral when the request arrives.
        let gap = BACKGROUND_DEFERRAL + Duration::from_millis(1);
        let writers = [("worker", Background), ("request", Request)];
        assert_eq!(served_order(&writers, gap).await, ["worker", "request"]);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_of_one_kind_are_first_come_first_served() {
        use Urgency::*;
        let writers = [("a", Request), ("b", Request), ("c", Request)];
        assert_eq!(
            served_order(&writers, Duration::ZERO).await,
            ["a", "b", "c"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_dropped_while_it_waits_does_not_keep_the_turn() {
        let turns = Arc::new(WriteTurns::default());
        let held = turns.take(Urgency::Background).await;
        let gone = {
            let turns = turns.clone();
            tokio::spawn(async move {
                let _turn = turns.take(Urgency::Request).await;
            })
        };
        tokio::task::yield_now().await;
        gone.abort();
        let _ = gone.await;
        drop(held);
        // The next writer gets its turn at once.
        let next = tokio::time::timeout(Duration::from_secs(1), turns.take(Urgency::Background));
        assert!(
            next.await.is_ok(),
            "the turn was lost with the dropped writer"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_handed_to_a_writer_that_then_gives_up_is_passed_on() {
        let turns = WriteTurns::default();
        let held = turns.take(Urgency::Background).await;
        let mut first = Box::pin(turns.take(Urgency::Request));
        // Poll the first waiter once so that it is queued, then hand it the turn.
        assert!(futures_util::poll!(first.as_mut()).is_pending());
        drop(held);
        drop(first); // Handed the turn, never took it.
        let next = tokio::time::timeout(Duration::from_secs(1), turns.take(Urgency::Background));
        assert!(next.await.is_ok(), "the handed turn was lost");
    }
}
