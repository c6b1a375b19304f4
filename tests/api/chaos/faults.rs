//! Carrying out the schedule: each lane's faults in turn, at their planned times, each healed
//! after its duration. Network faults are Toxiproxy toxics (or the proxy disabled); process
//! faults are signals to the fleet's processes and, after a kill or a termination, a new
//! process in the slot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::fleet::Fleet;
use super::schedule::{Fault, Lane, Planned};
use crate::harness::support::toxiproxy::Toxiproxy;

/// A fault as it happened.
#[derive(Clone, Debug)]
pub struct Applied {
    pub planned: Planned,
    /// What went wrong with it, e.g. a SIGTERM the process did not exit cleanly from.
    pub trouble: Option<String>,
}

/// How long a SIGTERM'd process may drain before it counts as hung: the service's
/// `SHUTDOWN_TIMEOUT` plus time to tear down.
pub const TERM_PATIENCE: Duration = Duration::from_secs(10);

/// Runs the whole `plan` (each lane in a task of its own) from `start`; returns every fault as
/// applied, in plan order, once the last is healed.
pub async fn run(
    plan: &[Planned],
    start: Instant,
    toxiproxy: Arc<Toxiproxy>,
    fleet: Arc<Fleet>,
) -> Vec<Applied> {
    let mut lanes: Vec<Lane> = plan.iter().map(|p| p.fault.lane()).collect();
    lanes.sort();
    lanes.dedup();
    let tasks = lanes.into_iter().map(|lane| {
        let faults: Vec<Planned> = plan
            .iter()
            .filter(|p| p.fault.lane() == lane)
            .copied()
            .collect();
        let (toxiproxy, fleet) = (toxiproxy.clone(), fleet.clone());
        tokio::spawn(async move {
            let mut done = Vec::new();
            for planned in faults {
                // The schedule's clock: a fault waits for its time (or goes at once when the
                // lane's previous one, a slow restart, ran late).
                tokio::time::sleep_until((start + planned.at).into()).await;
                done.push(one(&planned, start, &toxiproxy, &fleet).await);
            }
            done
        })
    });
    let mut applied: Vec<Applied> = Vec::new();
    for task in futures_util::future::join_all(tasks).await {
        applied.extend(task.expect("a fault lane panicked"));
    }
    applied.sort_by_key(|a| a.planned.at);
    applied
}

/// Applies one fault, waits its duration, heals it.
async fn one(planned: &Planned, start: Instant, toxiproxy: &Toxiproxy, fleet: &Fleet) -> Applied {
    let applied_s = start.elapsed().as_secs_f64();
    eprintln!(
        "chaos: {applied_s:6.1}s {} for {:?}",
        planned.fault, planned.lasts
    );
    let mut trouble = None;
    match planned.fault {
        Fault::Latency {
            backend,
            latency_ms,
            jitter_ms,
        } => {
            let attributes = json!({"latency": latency_ms, "jitter": jitter_ms});
            toxic(
                toxiproxy,
                backend.proxy(),
                "latency",
                &["downstream"],
                attributes,
                planned.lasts,
            )
            .await
        }
        Fault::ResetPeer {
            backend,
            timeout_ms,
        } => {
            let attributes = json!({ "timeout": timeout_ms });
            toxic(
                toxiproxy,
                backend.proxy(),
                "reset_peer",
                &["downstream"],
                attributes,
                planned.lasts,
            )
            .await
        }
        Fault::BlackHole { backend } => {
            // Both ways: requests are not delivered and replies not returned, as in a partition.
            let streams = ["upstream", "downstream"];
            toxic(
                toxiproxy,
                backend.proxy(),
                "timeout",
                &streams,
                json!({"timeout": 0}),
                planned.lasts,
            )
            .await
        }
        Fault::Bandwidth { backend, rate_kb } => {
            let attributes = json!({ "rate": rate_kb });
            toxic(
                toxiproxy,
                backend.proxy(),
                "bandwidth",
                &["downstream"],
                attributes,
                planned.lasts,
            )
            .await
        }
        Fault::Down { backend } => {
            toxiproxy.set_enabled(backend.proxy(), false).await;
            tokio::time::sleep(planned.lasts).await;
            toxiproxy.set_enabled(backend.proxy(), true).await;
        }
        Fault::Kill { role, index } => {
            fleet.kill(role, index);
            tokio::time::sleep(planned.lasts).await;
            fleet.restart(role, index).await;
        }
        Fault::Pause { role, index } => {
            fleet.pause(role, index, true);
            tokio::time::sleep(planned.lasts).await;
            fleet.pause(role, index, false);
        }
        Fault::Terminate { role, index } => {
            trouble = fleet.terminate(role, index, TERM_PATIENCE).await.err();
            tokio::time::sleep(planned.lasts).await;
            fleet.restart(role, index).await;
        }
    }
    Applied {
        planned: *planned,
        trouble,
    }
}

/// A toxic of `kind` on each of `streams` of `proxy` for `lasts`, then removed.
async fn toxic(
    toxiproxy: &Toxiproxy,
    proxy: &str,
    kind: &str,
    streams: &[&str],
    attributes: serde_json::Value,
    lasts: Duration,
) {
    for stream in streams {
        let name = format!("chaos_{stream}");
        toxiproxy
            .add_toxic(proxy, &name, kind, stream, attributes.clone())
            .await;
    }
    tokio::time::sleep(lasts).await;
    for stream in streams {
        toxiproxy
            .remove_toxic(proxy, &format!("chaos_{stream}"))
            .await;
    }
}
