//! The invariant checker: after the campaign has healed, it waits (up to `SETTLE`) for the
//! promises that take time — orders finished, stock returned, emails sent — then judges every
//! invariant on what the backends hold, what the API shows and what the customers were
//! answered. Each verdict says what held and, when one did not, the orders or calls that broke it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::faults::Applied;
use super::fleet::Fleet;
use super::load::{Ledger, Outcome, Shop};
use super::snapshot::{self, Snapshot, TERMINAL};
use crate::harness::support::moto::Moto;

/// How long the promises that take time get after the heal.
pub const SETTLE: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct Verdict {
    pub name: &'static str,
    pub held: bool,
    pub detail: String,
}

pub struct Checker<'a> {
    pub shop: &'a Shop,
    pub ledger: &'a Ledger,
    pub faults: &'a [Applied],
    pub fleet: &'a Fleet,
    pub db: &'a mongodb::Database,
    pub moto: &'a Moto,
    /// Invariant (e)'s bound on one request.
    pub request_bound: Duration,
}

/// The words of each emailing status's subject (see `actors::mailer`).
fn marker(status: &str) -> &'static str {
    match status {
        "completed" => "is complete",
        "cancelled" => "has been cancelled",
        _ => "could not be completed",
    }
}

impl Checker<'_> {
    /// Waits for the settling invariants, then judges them all.
    pub async fn verdicts(&self) -> Vec<Verdict> {
        let products: Vec<String> = self.shop.products.iter().map(|p| p.id.clone()).collect();
        let started = Instant::now();
        // The store first, often; moto's `data.json` (every backend's whole state, slow once it
        // holds thousands of messages) only when the store has settled, and less often.
        let mut with_mail = false;
        let snap = loop {
            let moto = with_mail.then_some(self.moto);
            match snapshot::take(self.db, moto, &products).await {
                Ok(snap) => {
                    let stored = self.finished(&snap).held && self.stock(&snap).held;
                    let late = started.elapsed() >= SETTLE;
                    if with_mail && (late || (stored && self.emails(&snap).held)) {
                        break snap;
                    }
                    with_mail = stored || late;
                }
                Err(e) if started.elapsed() >= SETTLE => panic!("could not read the backends: {e}"),
                Err(_) => {}
            }
            let pause = if with_mail { 3_000 } else { 500 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        };
        eprintln!(
            "chaos: settled (or gave up) after {:.1}s",
            started.elapsed().as_secs_f64()
        );
        let mut finished = self.finished(&snap);
        if finished.held {
            finished = self.api_agrees(&snap).await;
        }
        vec![
            finished,
            self.stock(&snap),
            self.emails(&snap),
            self.errors(),
            self.answers(),
            self.bounded(),
            self.once_per_key(&snap),
            self.terms(),
        ]
    }

    fn customer_ids(&self) -> BTreeSet<String> {
        self.shop.customers.iter().map(|c| c.id()).collect()
    }

    /// (a) Every order answered 201 is terminal in the store, and cancelled when its
    /// cancellation was answered 200.
    fn finished(&self, snap: &Snapshot) -> Verdict {
        let stored: BTreeMap<&str, &str> = snap
            .orders
            .iter()
            .map(|o| (o.id.as_str(), o.status.as_str()))
            .collect();
        let mut broken = Vec::new();
        for id in self.ledger.placed.keys() {
            match stored.get(id.as_str()) {
                None => broken.push(format!("{id} answered 201 but not stored")),
                Some(s) if !TERMINAL.contains(s) => broken.push(format!("{id} {s}")),
                Some(s) if self.ledger.cancelled.contains(id) && *s != "cancelled" => {
                    broken.push(format!("{id} {s} after its cancellation was answered 200"))
                }
                Some(_) => {}
            }
        }
        let ours = self.customer_ids();
        let unanswered = snap
            .orders
            .iter()
            .filter(|o| ours.contains(&o.user) && !self.ledger.placed.contains_key(&o.id))
            .count();
        verdict(
            "(a) every order answered 201 is terminal",
            broken,
            format!(
                "{} orders answered 201 all terminal ({} more stored whose answer was lost or an error)",
                self.ledger.placed.len(),
                unanswered
            ),
        )
    }

    /// (a), as customers see it: the API shows each of them in the stored status.
    async fn api_agrees(&self, snap: &Snapshot) -> Verdict {
        let stored: BTreeMap<&str, &str> = snap
            .orders
            .iter()
            .map(|o| (o.id.as_str(), o.status.as_str()))
            .collect();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut broken = Vec::new();
        for placed in self.ledger.placed.values() {
            let (_, base) = self.fleet.apis()[placed.customer % self.fleet.apis().len()].clone();
            let token = &self.shop.customers[placed.customer].access;
            let url = format!("{base}/api/orders/{}", placed.id);
            let shown = match client.get(&url).bearer_auth(token).send().await {
                Ok(r) if r.status() == 200 => r
                    .json::<serde_json::Value>()
                    .await
                    .map(|o| o["status"].as_str().unwrap_or("?").to_string())
                    .unwrap_or_else(|e| format!("unreadable: {e}")),
                Ok(r) => format!("answer {}", r.status()),
                Err(e) => format!("no answer: {e}"),
            };
            if stored.get(placed.id.as_str()) != Some(&shown.as_str()) {
                broken.push(format!(
                    "{} stored {:?}, API shows {shown}",
                    placed.id,
                    stored.get(placed.id.as_str())
                ));
            }
        }
        verdict(
            "(a) every order answered 201 is terminal",
            broken,
            format!(
                "{} orders answered 201 all terminal, in the store and through the API",
                self.ledger.placed.len()
            ),
        )
    }

    /// (b) For every product: initial stock = current stock + the quantities of its orders that
    /// are not failed or cancelled (every stored order counts, answered or not).
    fn stock(&self, snap: &Snapshot) -> Verdict {
        let mut broken = Vec::new();
        for p in &self.shop.products {
            let held: i64 = snap
                .orders
                .iter()
                .filter(|o| o.status != "failed" && o.status != "cancelled")
                .flat_map(|o| o.items.iter())
                .filter(|(id, _)| *id == p.id)
                .map(|(_, q)| q)
                .sum();
            let now = snap.stock.get(&p.id).copied().unwrap_or(i64::MIN);
            if now + held != p.initial {
                broken.push(format!(
                    "{}: initial {} != stock {now} + held {held} ({:+} units)",
                    p.id,
                    p.initial,
                    now + held - p.initial
                ));
            }
        }
        verdict(
            "(b) stock is conserved",
            broken,
            format!(
                "{} products: initial = current + held by live orders",
                self.shop.products.len()
            ),
        )
    }

    /// (c) Every terminal order of the campaign's customers has an email for its status through
    /// SES, and none for a status it does not have. Duplicates are counted and reported, as the
    /// issue states the invariant ("Any duplicate is counted and reported; none may be
    /// missing"): emails are sent at least once, and SES has no idempotency key, so a send whose
    /// reply was lost, or whose sender stopped before its mark reached the store, is sent again
    /// rather than risk a customer never told. The count is in the summary and RELIABILITY.md.
    fn emails(&self, snap: &Snapshot) -> Verdict {
        let ours = self.customer_ids();
        let (mut missing, mut duplicated, mut extra, mut stray, mut terminal) =
            (Vec::new(), Vec::new(), 0, Vec::new(), 0);
        for order in snap.orders.iter().filter(|o| ours.contains(&o.user)) {
            let about: Vec<&String> = snap
                .subjects
                .iter()
                .filter(|s| s.contains(&order.id))
                .collect();
            let right = if TERMINAL.contains(&order.status.as_str()) {
                terminal += 1;
                let mark = marker(&order.status);
                about.iter().filter(|s| s.contains(mark)).count()
            } else {
                0
            };
            match right {
                0 if TERMINAL.contains(&order.status.as_str()) => {
                    missing.push(format!("{} {}", order.id, order.status))
                }
                0 | 1 => {}
                n => {
                    duplicated.push(format!("{} {} x{n}", order.id, order.status));
                    extra += n - 1;
                }
            }
            if about.len() > right {
                stray.push(format!("{} {}: {:?}", order.id, order.status, about));
            }
        }
        let mut broken = Vec::new();
        if !missing.is_empty() {
            broken.push(format!("{} missing: {}", missing.len(), missing.join(", ")));
        }
        if !stray.is_empty() {
            broken.push(format!(
                "emails for a status the order does not have: {}",
                stray.join("; ")
            ));
        }
        let duplicates = if duplicated.is_empty() {
            "0 duplicates".to_string()
        } else {
            format!("{extra} duplicates (counted): {}", duplicated.join(", "))
        };
        verdict(
            "(c) every emailing transition emailed, none missing",
            broken,
            format!("{terminal} terminal orders, each emailed; {duplicates}"),
        )
    }

    /// (d) No 500 (nor any other 5xx but 503), and every 503 carried a problem+json body.
    fn errors(&self) -> Verdict {
        let mut broken = Vec::new();
        let mut unavailable = 0;
        for call in &self.ledger.calls {
            if let Outcome::Status(s) = call.outcome {
                if s >= 500 && s != 503 {
                    broken.push(format!("{} -> {s}: {}", call.what, call.body));
                } else if s == 503 {
                    unavailable += 1;
                    if let Err(why) = &call.problem {
                        broken.push(format!(
                            "{} -> 503 without a problem body ({why}): {}",
                            call.what, call.body
                        ));
                    }
                }
            }
        }
        verdict(
            "(d) no 500; every 503 a problem",
            broken,
            format!("0 answers 500; {unavailable} answers 503, each a problem+json with a code"),
        )
    }

    /// Every answer is one the API documents for the call (no 401 for a valid token, no 404
    /// for an order just placed, ...).
    fn answers(&self) -> Verdict {
        let mut broken = Vec::new();
        for call in &self.ledger.calls {
            let Outcome::Status(s) = call.outcome else {
                continue;
            };
            let code = call.problem.as_deref().unwrap_or("");
            let expected = match call.what {
                _ if s == 503 || s >= 500 => true, // judged by (d)
                "place" | "place_keyed" | "place_retry" | "place_replay" => {
                    s == 201 || (s == 409 && code == "insufficient_stock")
                }
                "cancel" => s == 200 || (s == 409 && code == "invalid_order_state"),
                _ => s == 200,
            };
            if !expected {
                broken.push(format!("{} -> {s}: {}", call.what, call.body));
            }
        }
        broken.truncate(20);
        verdict(
            "(d) every other answer documented",
            broken,
            format!(
                "{} calls, each answered as documented",
                self.ledger.calls.len()
            ),
        )
    }

    /// (e) No request took longer than the bound, unless its API process was paused (SIGSTOP)
    /// while it waited: those are counted apart, since a paused process holds its clients.
    fn bounded(&self) -> Verdict {
        let (mut broken, mut excused, mut slowest) = (Vec::new(), 0, Duration::ZERO);
        for call in &self.ledger.calls {
            let timed_out = matches!(
                call.outcome,
                Outcome::NoAnswer {
                    timed_out: true,
                    ..
                }
            );
            if self
                .fleet
                .api_paused_during(call.api, call.started, call.started + call.took)
            {
                excused += 1;
                continue;
            }
            slowest = slowest.max(call.took);
            if call.took > self.request_bound || timed_out {
                broken.push(format!(
                    "{} on api{} took {:?}: {:?}",
                    call.what, call.api, call.took, call.outcome
                ));
            }
        }
        broken.truncate(20);
        verdict(
            "(e) every request within the bound",
            broken,
            format!(
                "slowest {slowest:.1?} (bound {:?}); {excused} calls met a paused API and are not judged",
                self.request_bound
            ),
        )
    }

    /// (f) No order placed twice for one idempotency key (nor for one request without a key):
    /// one stored order per street tag, and every 201 for a key names that order.
    fn once_per_key(&self, snap: &Snapshot) -> Verdict {
        let mut per_tag: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for o in &snap.orders {
            if let Some(tag) = o.street.strip_suffix(" Chaos St") {
                per_tag.entry(tag).or_default().push(&o.id);
            }
        }
        let mut broken = Vec::new();
        for (tag, ids) in &per_tag {
            if ids.len() > 1 {
                broken.push(format!("{tag}: {} orders stored {ids:?}", ids.len()));
            }
        }
        let mut replays = 0;
        for (key, answered) in &self.ledger.keyed {
            let distinct: BTreeSet<&String> = answered.iter().collect();
            replays += answered.len() - 1;
            let stored = per_tag.get(key.as_str()).cloned().unwrap_or_default();
            if distinct.len() > 1 || distinct.iter().any(|id| !stored.contains(&id.as_str())) {
                broken.push(format!(
                    "key {key}: answers named {distinct:?}, stored {stored:?}"
                ));
            }
        }
        verdict(
            "(f) one order per idempotency key",
            broken,
            format!(
                "{} keys answered 201 ({replays} replays), one stored order each; {} tagged requests, none stored twice",
                self.ledger.keyed.len(),
                per_tag.len()
            ),
        )
    }

    /// Every SIGTERM'd process drained and exited 0 within its patience.
    fn terms(&self) -> Verdict {
        let terms: Vec<&Applied> = self
            .faults
            .iter()
            .filter(|f| f.planned.fault.kind() == "sigterm")
            .collect();
        let broken = terms.iter().filter_map(|f| f.trouble.clone()).collect();
        verdict(
            "(g) every SIGTERM drains and exits 0",
            broken,
            format!("{} SIGTERMs, each a clean exit", terms.len()),
        )
    }
}

fn verdict(name: &'static str, broken: Vec<String>, held: String) -> Verdict {
    Verdict {
        name,
        held: broken.is_empty(),
        detail: if broken.is_empty() {
            held
        } else {
            broken.join("; ")
        },
    }
}
