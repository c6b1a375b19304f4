//! The API process's view of the workers' backlog: it reads the queue's depth at an interval and
//! hands it to [`Admission`], which sheds creations while the backlog is at its bound (see there
//! for why). It runs in every process that serves the API, whether or not it also runs a worker.

use std::sync::Arc;
use std::time::Duration;

use super::admission::Admission;
use crate::metrics::{backend_call, QUEUE_BACKLOG_OBSERVED};
use crate::queue::Queue;

/// How often the depth is read: often enough that a spike is shed within a fraction of a
/// second on the embedded queue; once a second on SQS, where each read is a billed
/// `GetQueueAttributes` and its `ApproximateNumberOfMessages` is itself a little behind.
pub fn probe_interval(queue_is_remote: bool) -> Duration {
    if queue_is_remote {
        Duration::from_secs(1)
    } else {
        Duration::from_millis(200)
    }
}

/// Starts the probe on the current runtime, unless the backlog is unbounded. It ends with the
/// process.
pub fn watch(queue: Arc<dyn Queue>, admission: Arc<Admission>, every: Duration) {
    if !admission.watches_backlog() {
        return;
    }
    actix::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = tokio::time::Instant::now();
        loop {
            ticks.tick().await;
            let since = last.elapsed();
            last = tokio::time::Instant::now();
            let waiting = backend_call("queue", "depth", queue.depth())
                .await
                .ok()
                .map(|depth| depth.visible);
            if let Some(waiting) = waiting {
                metrics::gauge!(QUEUE_BACKLOG_OBSERVED).set(waiting as f64);
            }
            admission.observe_backlog(waiting, since);
        }
    });
}
