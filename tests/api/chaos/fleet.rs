//! The service's processes in the campaign: two `api` and two `worker` processes on one
//! environment, each in a slot that a fault empties (SIGKILL, SIGTERM) and fills again with a
//! new process, or pauses (SIGSTOP) and resumes. The load asks it for the APIs alive now; the
//! checker asks which requests met a paused process.
//!
//! Each process's output goes to a file of its own in the log directory when it is replaced or
//! at the end, instead of the harness's dump on a failed test: the campaign runs a dozen
//! processes, and the files are what explains a broken invariant.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::schedule::{Role, PER_ROLE};
use crate::harness::*;

pub struct Fleet {
    env: ServerEnv,
    slots: Vec<Mutex<Slot>>,
    pub logs: PathBuf,
}

struct Slot {
    role: Role,
    index: usize,
    server: Option<TestServer>,
    /// Processes this slot has had; names the log files.
    generation: u32,
    /// When the process was paused, and resumed (`None` while paused).
    pauses: Vec<(Instant, Option<Instant>)>,
}

/// Tries at starting a process: a start can meet a backend fault (the database down while the
/// new process connects), which a second try a moment later does not.
const START_TRIES: usize = 5;

impl Fleet {
    /// Starts `api0` (which seeds the empty database), then `api1`, `worker0`, `worker1`.
    pub async fn start(env: ServerEnv, logs: PathBuf) -> Fleet {
        let mut slots = Vec::new();
        for role in [Role::Api, Role::Worker] {
            for index in 0..PER_ROLE {
                slots.push(Mutex::new(Slot {
                    role,
                    index,
                    server: None,
                    generation: 0,
                    pauses: Vec::new(),
                }));
            }
        }
        let fleet = Fleet { env, slots, logs };
        for role in [Role::Api, Role::Worker] {
            for index in 0..PER_ROLE {
                fleet.restart(role, index).await;
            }
        }
        fleet
    }

    fn slot(&self, role: Role, index: usize) -> &Mutex<Slot> {
        let base = match role {
            Role::Api => 0,
            Role::Worker => PER_ROLE,
        };
        &self.slots[base + index]
    }

    /// The APIs alive now, as `(slot, base URL)`; a paused one is listed (its clients wait).
    pub fn apis(&self) -> Vec<(usize, String)> {
        (0..PER_ROLE)
            .filter_map(|i| {
                let slot = self.slot(Role::Api, i).lock().unwrap();
                slot.server.as_ref().map(|s| (i, s.base.clone()))
            })
            .collect()
    }

    /// Whether API `index` was paused at any moment between `from` and `to`.
    pub fn api_paused_during(&self, index: usize, from: Instant, to: Instant) -> bool {
        let slot = self.slot(Role::Api, index).lock().unwrap();
        slot.pauses
            .iter()
            .any(|(stopped, resumed)| *stopped <= to && resumed.map_or(true, |r| r >= from))
    }

    /// A new process in the slot (after a kill or a termination, or at the start).
    pub async fn restart(&self, role: Role, index: usize) {
        let mut env = self.env.clone();
        if role == Role::Worker {
            env = env.with_vars(&[("METRICS_PORT", "0")]);
        }
        let server = blocking(move || {
            let mut last = String::new();
            for _ in 0..START_TRIES {
                let env = env.clone();
                let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    TestServer::launch(env, role.mode())
                }));
                match started {
                    Ok(server) => return server,
                    Err(panic) => {
                        last = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .unwrap_or_else(|| "a panic".into())
                    }
                }
            }
            panic!(
                "{} would not start in {START_TRIES} tries: {last}",
                role.mode()
            )
        })
        .await;
        let mut slot = self.slot(role, index).lock().unwrap();
        assert!(slot.server.is_none(), "a slot holds one process");
        slot.generation += 1;
        slot.server = Some(server);
    }

    /// SIGKILL: the process is gone at once, whatever it was doing.
    pub fn kill(&self, role: Role, index: usize) {
        let mut slot = self.slot(role, index).lock().unwrap();
        if let Some(server) = slot.server.take() {
            retire(&self.logs, &slot, server);
        }
    }

    /// SIGTERM, then waits (up to `patience`) for the drain to end. `Err` with what happened
    /// when the process did not exit cleanly in time (it is then killed).
    pub async fn terminate(
        &self,
        role: Role,
        index: usize,
        patience: Duration,
    ) -> Result<(), String> {
        let Some(mut server) = self.slot(role, index).lock().unwrap().server.take() else {
            return Ok(());
        };
        signal(server.pid(), libc::SIGTERM);
        let (server, exit) = blocking(move || {
            let exit = server.wait_for_exit(patience);
            (server, exit)
        })
        .await;
        let slot = self.slot(role, index).lock().unwrap();
        let name = format!("{}{index}", role.mode());
        retire(&self.logs, &slot, server);
        match exit {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("{name} exited with {status} after SIGTERM")),
            None => Err(format!("{name} had not exited {patience:?} after SIGTERM")),
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`), noted for the request-time invariant.
    pub fn pause(&self, role: Role, index: usize, paused: bool) {
        let mut slot = self.slot(role, index).lock().unwrap();
        let Some(pid) = slot.server.as_ref().map(TestServer::pid) else {
            return;
        };
        if paused {
            signal(pid, libc::SIGSTOP);
            slot.pauses.push((Instant::now(), None));
        } else {
            signal(pid, libc::SIGCONT);
            if let Some(open) = slot.pauses.iter_mut().find(|(_, end)| end.is_none()) {
                open.1 = Some(Instant::now());
            }
        }
    }

    /// Healing: every paused process resumed, every empty slot filled.
    pub async fn heal(&self) {
        for role in [Role::Api, Role::Worker] {
            for index in 0..PER_ROLE {
                self.pause(role, index, false);
                let empty = self.slot(role, index).lock().unwrap().server.is_none();
                if empty {
                    self.restart(role, index).await;
                }
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for slot in &self.slots {
            let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(server) = slot.server.take() {
                retire(&self.logs, &slot, server);
            }
        }
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
    // SAFETY: kill(2) only sends a signal; the pid is our own child's.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
}

/// Stops a process for good and keeps its output in `logs`.
fn retire(logs: &Path, slot: &Slot, mut server: TestServer) {
    server.kill();
    let file = logs.join(format!(
        "{}{}.{}.log",
        slot.role.mode(),
        slot.index,
        slot.generation
    ));
    let _ = std::fs::write(&file, server.output());
    // Killed, its output kept: forgetting it skips the harness's dump of the output to the test's
    // stderr (a dozen processes' worth when the campaign fails).
    std::mem::forget(server);
}
