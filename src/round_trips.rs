//! Which work a backend round trip belongs to: the request a client waits on, the worker that
//! processes the queue, or the FerretDB write lock's own bookkeeping. Round trips are a cost
//! like CPU (see DESIGN.md), and the ones a client waits on cost latency as well, so the
//! MongoDB command counter labels every command with the path it was sent for.
//!
//! The path rides in a tokio task-local rather than in every store signature: the code that
//! knows which work it is doing (the HTTP middleware, the actors' handlers, the worker, the
//! lock) marks its future once, and every command polled inside it is counted under that path.
//! A task-local is set per poll of the wrapped future, so it follows the work across awaits but
//! not across an actor's mailbox: each actor handler marks its own future again.

use std::future::{Future, IntoFuture};

/// The work a round trip is part of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkPath {
    /// Serving an HTTP request: the client waits on it.
    Request,
    /// Processing queue messages, and the background jobs of the worker (outbox, sweeps).
    Worker,
    /// The FerretDB write lock's own commands, whoever needed the write.
    Lock,
}

impl WorkPath {
    pub const ALL: [WorkPath; 3] = [WorkPath::Request, WorkPath::Worker, WorkPath::Lock];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkPath::Request => "request",
            WorkPath::Worker => "worker",
            WorkPath::Lock => "lock",
        }
    }
}

/// The label of round trips sent outside any marked work (start-up, index creation, seeding).
pub const UNMARKED: &str = "other";

tokio::task_local! {
    static PATH: WorkPath;
    /// Set inside `request_tail`.
    static UNAWAITED: ();
}

/// Runs `fut` as part of `path`; an inner mark (the lock inside a request) wins.
pub fn scope<F: IntoFuture>(path: WorkPath, fut: F) -> impl Future<Output = F::Output> {
    PATH.scope(path, fut.into_future())
}

/// The label of the work being polled now.
pub fn current() -> &'static str {
    PATH.try_with(|p| p.as_str()).unwrap_or(UNMARKED)
}

/// Runs `fut` as the tail of requests: work that placing an order leaves behind (flags, hold
/// clears), counted as the request path's round trips, though no client waits on it.
pub fn request_tail<F: IntoFuture>(fut: F) -> impl Future<Output = F::Output> {
    PATH.scope(WorkPath::Request, UNAWAITED.scope((), fut.into_future()))
}

/// Whether a client is waiting on the work being polled now: a request, and not its tail.
/// (The FerretDB write lock lets such writes go first.)
pub fn client_waits() -> bool {
    PATH.try_with(|p| *p == WorkPath::Request).unwrap_or(false)
        && UNAWAITED.try_with(|_| ()).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_innermost_mark_wins_and_survives_awaits() {
        assert_eq!(current(), UNMARKED);
        scope(WorkPath::Request, async {
            tokio::task::yield_now().await;
            assert_eq!(current(), "request");
            scope(WorkPath::Lock, async { assert_eq!(current(), "lock") }).await;
            assert_eq!(current(), "request");
        })
        .await;
    }

    #[tokio::test]
    async fn a_client_waits_on_a_request_but_not_on_its_tail_nor_the_worker() {
        assert!(!client_waits());
        assert!(scope(WorkPath::Request, async { client_waits() }).await);
        assert!(!scope(WorkPath::Worker, async { client_waits() }).await);
        let tail = request_tail(async { (current(), client_waits()) }).await;
        assert_eq!(tail, ("request", false));
    }
}
