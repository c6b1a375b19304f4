//! The fault schedule, drawn from the seed alone: which fault, on what, when and for how long.
//! Pure (no I/O, no clock), so one seed always plans the same campaign and a seed that broke
//! an invariant replays as a regression test.
//!
//! Faults fall in lanes, one per backend (its Toxiproxy proxy) and one per process role (the
//! two `api`, the two `worker`): a lane runs its faults one after the other, so at most one
//! process of a role is down at a time (the load always has an API to go to, the queue a
//! worker) while the lanes overlap each other freely, as faults in production do.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    Database,
    Cache,
    Aws,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Database, Backend::Cache, Backend::Aws];

    /// The Toxiproxy proxy in front of it.
    pub fn proxy(self) -> &'static str {
        match self {
            Backend::Database => "ferretdb",
            Backend::Cache => "redis",
            Backend::Aws => "moto",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Api,
    Worker,
}

impl Role {
    pub fn mode(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Worker => "worker",
        }
    }
}

/// Processes of each role in the fleet.
pub const PER_ROLE: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Every reply late by `latency_ms` ± `jitter_ms`.
    Latency {
        backend: Backend,
        latency_ms: u64,
        jitter_ms: u64,
    },
    /// Connections reset (TCP RST) `timeout_ms` after they carry data.
    ResetPeer { backend: Backend, timeout_ms: u64 },
    /// A black hole: bytes go in, nothing comes back, nothing is closed (`timeout` toxic, 0).
    BlackHole { backend: Backend },
    /// Replies squeezed to `rate_kb` KB/s.
    Bandwidth { backend: Backend, rate_kb: u64 },
    /// The proxy down (connections dropped, nothing listening), then up.
    Down { backend: Backend },
    /// SIGKILL, then a new process after the fault's duration.
    Kill { role: Role, index: usize },
    /// SIGSTOP, then SIGCONT after the fault's duration.
    Pause { role: Role, index: usize },
    /// SIGTERM (a graceful drain), then a new process after the fault's duration.
    Terminate { role: Role, index: usize },
}

/// The lane a fault runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    Backend(Backend),
    Process(Role),
}

impl Fault {
    /// The name the summary counts it under (Toxiproxy's toxic names, the signals' names).
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Latency { .. } => "latency",
            Fault::ResetPeer { .. } => "reset_peer",
            Fault::BlackHole { .. } => "timeout",
            Fault::Bandwidth { .. } => "bandwidth",
            Fault::Down { .. } => "down",
            Fault::Kill { .. } => "sigkill",
            Fault::Pause { .. } => "sigstop",
            Fault::Terminate { .. } => "sigterm",
        }
    }

    pub fn lane(&self) -> Lane {
        match *self {
            Fault::Latency { backend, .. }
            | Fault::ResetPeer { backend, .. }
            | Fault::BlackHole { backend }
            | Fault::Bandwidth { backend, .. }
            | Fault::Down { backend } => Lane::Backend(backend),
            Fault::Kill { role, .. }
            | Fault::Pause { role, .. }
            | Fault::Terminate { role, .. } => Lane::Process(role),
        }
    }

    /// What it hits, for the summary: `ferretdb`, `api1`, ...
    pub fn target(&self) -> String {
        match *self {
            Fault::Latency { backend, .. }
            | Fault::ResetPeer { backend, .. }
            | Fault::BlackHole { backend }
            | Fault::Bandwidth { backend, .. }
            | Fault::Down { backend } => backend.proxy().to_string(),
            Fault::Kill { role, index }
            | Fault::Pause { role, index }
            | Fault::Terminate { role, index } => format!("{}{index}", role.mode()),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.kind(), self.target())?;
        match *self {
            Fault::Latency {
                latency_ms,
                jitter_ms,
                ..
            } => write!(f, " ({latency_ms}±{jitter_ms} ms)"),
            Fault::ResetPeer { timeout_ms, .. } => write!(f, " (after {timeout_ms} ms)"),
            Fault::Bandwidth { rate_kb, .. } => write!(f, " ({rate_kb} KB/s)"),
            _ => Ok(()),
        }
    }
}

/// One fault of the campaign: applied `at` after the start, healed `lasts` later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planned {
    pub at: Duration,
    pub lasts: Duration,
    pub fault: Fault,
}

/// Gap between one fault and the next, whatever their lanes: "a fault every few seconds".
const GAP_MS: std::ops::Range<u64> = 1_000..3_000;
/// How long a network fault lasts. Longer than `BACKEND_TIMEOUT`, so a black hole is cut.
const NETWORK_MS: std::ops::Range<u64> = 1_000..6_000;
/// How long a process stays paused, or dead before its replacement starts.
const PROCESS_MS: std::ops::Range<u64> = 500..4_000;
/// Quiet time a lane keeps after a fault heals, so its next fault hits a recovered system.
const LANE_REST: Duration = Duration::from_millis(500);

/// The campaign for `seed`: faults from about a second in until `duration`, each lane's faults
/// in turn. Targets are dealt from a shuffled deck of every backend and role, and fault kinds
/// from a shuffled deck per family, so every backend, every process role and every kind comes
/// up within the first rounds whatever the seed.
pub fn plan(seed: u64, duration: Duration) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let lanes: Vec<Lane> = Backend::ALL
        .iter()
        .map(|b| Lane::Backend(*b))
        .chain([Lane::Process(Role::Api), Lane::Process(Role::Worker)])
        .collect();
    let mut lane_deck = Deck::new(lanes);
    let mut network_deck = Deck::new((0..5).collect());
    let mut process_deck = Deck::new((0..3).collect());
    let mut api_deck = Deck::new((0..PER_ROLE).collect());
    let mut worker_deck = Deck::new((0..PER_ROLE).collect());
    // When each lane is free again.
    let mut free_at: std::collections::HashMap<Lane, Duration> = Default::default();
    let mut plan = Vec::new();
    let mut at = Duration::from_millis(rng.gen_range(GAP_MS));
    while at < duration {
        // The first lane of the deck that is free now; if none is, the gap grows.
        let lane = (0..lane_deck.len())
            .map(|_| lane_deck.draw(&mut rng))
            .find(|lane| !matches!(free_at.get(lane), Some(free) if *free > at));
        if let Some(lane) = lane {
            let (fault, lasts) = match lane {
                Lane::Backend(backend) => {
                    let lasts = Duration::from_millis(rng.gen_range(NETWORK_MS));
                    let fault = match network_deck.draw(&mut rng) {
                        0 => Fault::Latency {
                            backend,
                            latency_ms: rng.gen_range(50..600),
                            jitter_ms: rng.gen_range(0..200),
                        },
                        1 => Fault::ResetPeer {
                            backend,
                            timeout_ms: rng.gen_range(0..500),
                        },
                        2 => Fault::BlackHole { backend },
                        3 => Fault::Bandwidth {
                            backend,
                            rate_kb: rng.gen_range(1..32),
                        },
                        _ => Fault::Down { backend },
                    };
                    (fault, lasts)
                }
                Lane::Process(role) => {
                    let index = match role {
                        Role::Api => api_deck.draw(&mut rng),
                        Role::Worker => worker_deck.draw(&mut rng),
                    };
                    let lasts = Duration::from_millis(rng.gen_range(PROCESS_MS));
                    let fault = match process_deck.draw(&mut rng) {
                        0 => Fault::Kill { role, index },
                        1 => Fault::Pause { role, index },
                        _ => Fault::Terminate { role, index },
                    };
                    (fault, lasts)
                }
            };
            free_at.insert(lane, at + lasts + LANE_REST);
            plan.push(Planned { at, lasts, fault });
        }
        at += Duration::from_millis(rng.gen_range(GAP_MS));
    }
    plan
}

/// Cards dealt in a shuffled order, reshuffled when all are dealt.
struct Deck<T> {
    cards: Vec<T>,
    next: usize,
}

impl<T: Copy> Deck<T> {
    fn new(cards: Vec<T>) -> Self {
        let next = cards.len();
        Deck { cards, next }
    }

    fn len(&self) -> usize {
        self.cards.len()
    }

    fn draw(&mut self, rng: &mut StdRng) -> T {
        if self.next == self.cards.len() {
            self.cards.shuffle(rng);
            self.next = 0;
        }
        self.next += 1;
        self.cards[self.next - 1]
    }
}

#[test]
fn one_seed_plans_one_campaign_that_covers_every_kind_and_target() {
    let a = plan(7, Duration::from_secs(60));
    assert_eq!(a, plan(7, Duration::from_secs(60)), "a seed replays");
    assert_ne!(a, plan(8, Duration::from_secs(60)), "another seed differs");
    let kinds: std::collections::BTreeSet<_> = a.iter().map(|p| p.fault.kind()).collect();
    assert_eq!(kinds.len(), 8, "every kind in a minute: {kinds:?}");
    let targets: std::collections::BTreeSet<_> = a.iter().map(|p| p.fault.target()).collect();
    assert_eq!(
        targets.len(),
        7,
        "every backend and process in a minute: {targets:?}"
    );
    for pair in a.windows(2) {
        assert!(
            pair[1].at - pair[0].at <= Duration::from_secs(6),
            "a fault every few seconds"
        );
    }
}
