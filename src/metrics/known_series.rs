//! The label sets known in advance, registered at 0 when the service starts. A counter that
//! appears only at its first event leaves its Grafana panel on "No data" until then, and a
//! `rate()` alert can not fire on that first increase (Prometheus's instrumentation guidance:
//! export 0 for the series you know of).
//!
//! `BACKEND_CALLS` must name every `backend_call("backend", "operation", …)` in `src/`; a unit
//! test reads the sources, so the list can not drift from the code.

use super::{
    ACTOR_MAILBOX_BACKLOG, AUTH_LOGINS_TOTAL, AUTH_REGISTRATIONS_TOTAL, AUTH_TOKENS_REJECTED_TOTAL,
    AUTH_TOKEN_REFRESHES_TOTAL, BACKEND_ERRORS_TOTAL, CACHE_ERRORS_TOTAL, CACHE_HITS_TOTAL,
    CACHE_MISSES_TOTAL, EMAILS_DUPLICATE_TOTAL, EMAILS_RESENT_TOTAL,
    ORDER_EVENTS_UNPUBLISHED_TOTAL, ORDER_EVENT_STREAMS_OPEN,
    ORDER_EVENT_SUBSCRIBERS_DROPPED_TOTAL, STOCK_RESERVATION_FAILURES_TOTAL,
};

/// Every `(backend, operation)` pair the service counts calls of.
pub const BACKEND_CALLS: [(&str, &str); 36] = [
    ("mailer", "send"),
    ("queue", "delete"),
    ("queue", "depth"),
    ("queue", "extend_visibility"),
    ("queue", "send"),
    ("store", "claim_notifications"),
    ("store", "claim_stranded"),
    ("store", "clear_holds"),
    ("store", "find_order"),
    ("store", "find_product"),
    ("store", "find_session"),
    ("store", "find_user"),
    ("store", "find_user_by_email"),
    ("store", "find_users"),
    ("store", "insert_order"),
    ("store", "insert_product"),
    ("store", "insert_session"),
    ("store", "insert_user"),
    ("store", "list_all_orders"),
    ("store", "list_orders"),
    ("store", "list_products"),
    ("store", "mark_enqueued"),
    ("store", "mark_notifications_sent"),
    ("store", "orders_changed_since"),
    ("store", "release_notification"),
    ("store", "release_stock"),
    ("store", "reserve_stock"),
    ("store", "revoke_session"),
    ("store", "rotate_session"),
    ("store", "save_idempotency"),
    ("store", "sweep_holds"),
    ("store", "transition_order"),
    ("store", "transition_orders"),
    ("store", "unenqueued_orders"),
    ("store", "unsent_notifications"),
    ("store", "update_product"),
];

/// `(metric, label, values)`: each counter with the one label it is counted by.
const OUTCOMES: [(&str, &str, &[&str]); 7] = [
    // Emails go out for terminal statuses only.
    (
        EMAILS_DUPLICATE_TOTAL,
        "kind",
        &["completed", "failed", "cancelled"],
    ),
    (
        EMAILS_RESENT_TOTAL,
        "kind",
        &["completed", "failed", "cancelled"],
    ),
    (
        AUTH_LOGINS_TOTAL,
        "outcome",
        &["success", "invalid_credentials", "rate_limited"],
    ),
    (
        AUTH_REGISTRATIONS_TOTAL,
        "outcome",
        &["success", "email_taken"],
    ),
    (
        AUTH_TOKEN_REFRESHES_TOTAL,
        "outcome",
        &[
            "success",
            "reissued",
            "expired",
            "invalid",
            "wrong_type",
            "inactive",
            "reused",
            "unknown_user",
        ],
    ),
    (
        AUTH_TOKENS_REJECTED_TOTAL,
        "reason",
        &["expired", "invalid", "wrong_type", "revoked"],
    ),
    (
        STOCK_RESERVATION_FAILURES_TOTAL,
        "reason",
        &["unknown_product", "insufficient_stock"],
    ),
];

pub fn register() {
    for (name, label, values) in OUTCOMES {
        for value in values {
            metrics::counter!(name, label => *value).increment(0);
        }
    }
    for (backend, operation) in BACKEND_CALLS {
        metrics::counter!(BACKEND_ERRORS_TOTAL, "backend" => backend, "operation" => operation)
            .increment(0);
    }
    metrics::counter!(CACHE_ERRORS_TOTAL, "cache" => "refresh_reuse", "operation" => "set")
        .increment(0);
    for cache in ["order", "session"] {
        metrics::counter!(CACHE_HITS_TOTAL, "cache" => cache).increment(0);
        metrics::counter!(CACHE_MISSES_TOTAL, "cache" => cache).increment(0);
    }
    metrics::counter!(ORDER_EVENT_SUBSCRIBERS_DROPPED_TOTAL).increment(0);
    metrics::counter!(ORDER_EVENTS_UNPUBLISHED_TOTAL).increment(0);
    metrics::gauge!(ORDER_EVENT_STREAMS_OPEN).increment(0.0);
    // Before any actor starts, so nothing has counted a message in yet.
    for actor in ["auth", "inventory", "order", "mailer", "sqs_poller"] {
        metrics::gauge!(ACTOR_MAILBOX_BACKLOG, "actor" => actor).increment(0.0);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::BACKEND_CALLS;

    fn sources(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(std::fs::read_to_string(&path).expect("read a source file"));
            }
        }
    }

    #[test]
    fn every_backend_call_in_the_sources_is_registered_and_nothing_else() {
        let mut files = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let call = regex::Regex::new(r#"backend_call\(\s*"(\w+)",\s*"(\w+)""#).unwrap();
        let in_code: BTreeSet<(String, String)> = files
            .iter()
            .flat_map(|text| call.captures_iter(text))
            // This file's own doc comment names the pattern with placeholders.
            .filter(|c| &c[1] != "backend")
            .map(|c| (c[1].to_string(), c[2].to_string()))
            .collect();
        let listed: BTreeSet<(String, String)> = BACKEND_CALLS
            .iter()
            .map(|(b, o)| (b.to_string(), o.to_string()))
            .collect();
        assert!(!in_code.is_empty(), "the scan found no backend_call at all");
        assert_eq!(
            in_code, listed,
            "BACKEND_CALLS must list exactly the backend_call pairs of src/"
        );
    }
}
