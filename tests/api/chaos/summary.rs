//! The campaign's summary on stderr: the seed (to replay it), faults by kind and by target,
//! the orders and calls of the load, and each invariant's verdict; then the same figures as
//! the Markdown rows `RELIABILITY.md` records.

use std::collections::BTreeMap;
use std::time::Duration;

use super::faults::Applied;
use super::invariants::Verdict;
use super::load::{Ledger, Outcome};

pub fn print(
    seed: u64,
    duration: Duration,
    faults: &[Applied],
    ledger: &Ledger,
    verdicts: &[Verdict],
) {
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_target: BTreeMap<String, usize> = BTreeMap::new();
    for f in faults {
        *by_kind.entry(f.planned.fault.kind()).or_default() += 1;
        *by_target.entry(f.planned.fault.target()).or_default() += 1;
    }
    let mut by_call: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for call in &ledger.calls {
        let outcome = match &call.outcome {
            Outcome::Status(s) => s.to_string(),
            Outcome::NoAnswer {
                timed_out: true, ..
            } => "timeout".into(),
            Outcome::NoAnswer { .. } => "no answer".into(),
        };
        *by_call.entry((call.what, outcome)).or_default() += 1;
    }
    let keyed_replays: usize = ledger.keyed.values().map(|a| a.len() - 1).sum();
    let mut out = String::new();
    out += &format!("\n===== chaos campaign: seed {seed} (CHAOS_SEED={seed} replays it), {duration:?} of faults =====\n");
    out += &format!("faults: {} in all\n", faults.len());
    for (kind, n) in &by_kind {
        out += &format!("  {kind:<11} {n}\n");
    }
    out += &format!(
        "targets: {}\n",
        by_target
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    out += &format!(
        "orders answered 201: {} ({} with a key, {keyed_replays} replays); cancellations answered 200: {}\n",
        ledger.placed.len(),
        ledger.keyed.len(),
        ledger.cancelled.len()
    );
    out += &format!("calls: {}\n", ledger.calls.len());
    for ((what, outcome), n) in &by_call {
        out += &format!("  {what:<13} {outcome:<10} {n}\n");
    }
    out += "invariants:\n";
    for v in verdicts {
        let mark = if v.held { "held  " } else { "BROKEN" };
        out += &format!("  {mark} {}: {}\n", v.name, v.detail);
    }
    out += "RELIABILITY.md rows:\n";
    out += &format!(
        "| seed | {seed} |\n| fault time | {duration:?} |\n| faults | {} |\n",
        faults.len()
    );
    for (kind, n) in &by_kind {
        out += &format!("| faults: {kind} | {n} |\n");
    }
    out += &format!("| orders answered 201 | {} |\n", ledger.placed.len());
    for v in verdicts {
        let mark = if v.held { "held" } else { "**broken**" };
        out += &format!("| {} | {mark}: {} |\n", v.name, v.detail);
    }
    eprintln!("{out}");
}
