//! Waiting without sleeping as synchronisation: polling with a deadline, and blocking work kept
//! off the async runtime.

use std::future::Future;
use std::time::{Duration, Instant};

use super::POLL_EVERY;

/// Re-checks `check` every few tens of milliseconds until it returns `Ok`, or panics after
/// `deadline` with `what` and the last `Err` it reported (what was seen instead).
pub async fn poll_until<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => {
                if start.elapsed() >= deadline {
                    panic!("timed out after {deadline:?} waiting for {what}; last seen: {last}");
                }
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Runs blocking work (process spawning, waiting) off the async runtime; re-raises its panic.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Runs futures concurrently on the current task and collects their outputs in order.
pub use futures_util::future::join_all;
