//! The actors of the order flow, started under supervision.
//!
//! Every handler returns its work as a future spawned into the actor's context, so a slow
//! backend call never holds the mailbox. Each future runs through [`guarded`]: a panic becomes an
//! internal error for that one caller and stops the actor, which its `Supervisor` restarts with
//! fresh state (counted in `actor_restarts_total`) while the service keeps serving.

pub mod admission;
pub mod auth;
pub mod backlog;
pub mod enqueued_marks;
pub mod holds;
pub mod inventory;
pub mod mailer;
pub mod order;
pub mod sqs_poller;
pub mod traced;

use std::future::Future;
use std::panic::AssertUnwindSafe;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use futures_util::FutureExt;
use tracing::Instrument;

use crate::error::AppError;
use crate::metrics::{ACTOR_MAILBOX_BACKLOG, ACTOR_RESTARTS_TOTAL};
use crate::round_trips::{self, WorkPath};

/// Mailbox size of each actor: deep enough for bursts, bounded so overload turns into
/// back-pressure on the senders instead of unbounded memory.
pub const MAILBOX_CAPACITY: usize = 4096;

/// Wraps a handler's future: a panic inside it answers `Internal` and restarts the actor. The
/// future runs in the span current when the handler made it (the sender's, see [`traced`]).
pub fn guarded<A, T, F>(
    actor_name: &'static str,
    fut: F,
) -> ResponseActFuture<A, Result<T, AppError>>
where
    A: Actor<Context = Context<A>>,
    F: Future<Output = Result<T, AppError>> + 'static,
    T: 'static,
{
    let fut = fut.instrument(tracing::Span::current());
    Box::pin(actix::fut::wrap_future::<_, A>(AssertUnwindSafe(fut).catch_unwind()).map(
        move |outcome, _actor, ctx| match outcome {
            Ok(result) => result,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(actor = actor_name, panic = %what, "actor failed; restarting it");
                ctx.stop();
                Err(AppError::Internal(format!("{actor_name} failed")))
            }
        },
    ))
}

/// [`guarded`], with the handler's backend round trips counted as part of `path` (the actor's
/// mailbox is a task boundary, so the sender's mark does not reach the handler's future).
pub fn guarded_as<A, T, F>(
    actor_name: &'static str,
    path: WorkPath,
    fut: F,
) -> ResponseActFuture<A, Result<T, AppError>>
where
    A: Actor<Context = Context<A>>,
    F: Future<Output = Result<T, AppError>> + 'static,
    T: 'static,
{
    guarded(actor_name, round_trips::scope(path, fut))
}

/// Counts a supervisor restart; called from each actor's `Supervised::restarting`.
pub fn count_restart(actor_name: &'static str) {
    metrics::counter!(ACTOR_RESTARTS_TOTAL, "actor" => actor_name).increment(1);
    tracing::warn!(actor = actor_name, "actor restarted by its supervisor");
}

/// Sends a message and waits for the reply, keeping `actor_mailbox_backlog` up to date. A
/// mailbox that is gone (the actor is restarting) is a 503, not a 500: a retry will succeed.
/// The message goes with the current span, so the actor's work joins the caller's trace.
pub async fn ask<A, M, T>(actor_name: &'static str, addr: &Addr<A>, msg: M) -> Result<T, AppError>
where
    A: Actor + Handler<traced::Traced<M>>,
    A::Context: ToEnvelope<A, traced::Traced<M>>,
    M: Message<Result = Result<T, AppError>> + Send + 'static,
    T: Send + 'static,
{
    let backlog = metrics::gauge!(ACTOR_MAILBOX_BACKLOG, "actor" => actor_name);
    backlog.increment(1.0);
    let reply = addr.send(traced::Traced::current(msg)).await;
    backlog.decrement(1.0);
    reply.map_err(|e| {
        tracing::warn!(actor = actor_name, error = %e, "actor mailbox unavailable");
        AppError::Unavailable(actor_name)
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A supervised actor that panics on request, to prove the restart path end to end.
    #[derive(Default)]
    struct Fragile {
        handled: u32,
    }

    impl Actor for Fragile {
        type Context = Context<Self>;
    }

    impl Supervised for Fragile {
        fn restarting(&mut self, _ctx: &mut Context<Self>) {
            count_restart("fragile");
        }
    }

    #[derive(Message)]
    #[rtype(result = "Result<u32, AppError>")]
    struct Work {
        panic: bool,
    }

    super::traced::traced_handlers!(Fragile: Work);

    impl Handler<Work> for Fragile {
        type Result = ResponseActFuture<Self, Result<u32, AppError>>;
        fn handle(&mut self, msg: Work, _ctx: &mut Context<Self>) -> Self::Result {
            self.handled += 1;
            let handled = self.handled;
            guarded("fragile", async move {
                if msg.panic {
                    panic!("boom");
                }
                Ok(handled)
            })
        }
    }

    #[actix::test]
    async fn a_panicking_handler_restarts_the_actor_and_it_keeps_serving() {
        let addr = Supervisor::start(|_| Fragile::default());
        assert_eq!(
            ask("fragile", &addr, Work { panic: false }).await.unwrap(),
            1
        );
        let failed = ask("fragile", &addr, Work { panic: true }).await;
        assert!(matches!(failed, Err(AppError::Internal(_))), "{failed:?}");
        // Restarted actors keep their state object in actix (only `restarting` resets it), so we
        // assert on the service staying available rather than on a counter value.
        assert!(ask("fragile", &addr, Work { panic: false }).await.is_ok());
    }
}
