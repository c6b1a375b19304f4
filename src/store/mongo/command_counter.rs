//! Counts every command the store sends, by collection, command name and the work it was sent
//! for (`crate::round_trips`), as `mongodb_commands_total`. It listens to the driver's command
//! monitoring (`CommandStartedEvent`), so what is counted is what went over the wire, retries
//! and cursor continuations included, whatever server answers; no call site can forget it.
//!
//! The labels are bounded: a collection or command the store does not know is counted as
//! `other`, and the known series are registered at 0 at connect, so `rate()` sees the first one.

use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;

use crate::metrics::MONGODB_COMMANDS_TOTAL;
use crate::round_trips::{self, WorkPath};

/// The collections the store uses (`MongoStore` holds them).
pub(super) const COLLECTIONS: [&str; 9] = [
    "users",
    "sessions",
    "products",
    "orders",
    "notifications",
    "idempotency_records",
    "idempotency_keys",
    "outbox",
    "locks",
];

/// The commands the store sends on the hot paths, as the server names them.
const COMMANDS: [&str; 8] = [
    "insert",
    "update",
    "delete",
    "find",
    "findAndModify",
    "getMore",
    "aggregate",
    "count",
];

const OTHER: &str = "other";

/// The handler for `ClientOptions::command_event_handler`. Called inline by the driver in the
/// task that sends the command, so the task-local path is the sender's.
pub(super) fn handler() -> EventHandler<CommandEvent> {
    EventHandler::callback(|event| {
        if let CommandEvent::Started(started) = event {
            let command = known(&started.command_name, &COMMANDS);
            // The target collection is the value of the command's own key, except for
            // getMore, which names it in `collection`.
            let key = if started.command_name == "getMore" {
                "collection"
            } else {
                started.command_name.as_str()
            };
            let collection = started
                .command
                .get_str(key)
                .map_or(OTHER, |c| known(c, &COLLECTIONS));
            metrics::counter!(
                MONGODB_COMMANDS_TOTAL,
                "collection" => collection,
                "command" => command,
                "path" => round_trips::current(),
            )
            .increment(1);
        }
    })
}

fn known(name: &str, names: &[&'static str]) -> &'static str {
    names.iter().find(|n| **n == name).copied().unwrap_or(OTHER)
}

/// Creates at 0 the series the order path produces, so a panel or alert sees their first
/// increment. The lock's series only where the lock is used.
pub(super) fn register(with_lock: bool) {
    for collection in COLLECTIONS.iter().filter(|c| **c != "locks") {
        for command in COMMANDS {
            for path in [WorkPath::Request, WorkPath::Worker] {
                metrics::counter!(
                    MONGODB_COMMANDS_TOTAL,
                    "collection" => *collection,
                    "command" => command,
                    "path" => path.as_str(),
                )
                .increment(0);
            }
        }
    }
    if with_lock {
        for command in ["insert", "update", "delete", "find", "findAndModify"] {
            metrics::counter!(
                MONGODB_COMMANDS_TOTAL,
                "collection" => "locks",
                "command" => command,
                "path" => WorkPath::Lock.as_str(),
            )
            .increment(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_are_other() {
        assert_eq!(known("orders", &COLLECTIONS), "orders");
        assert_eq!(known("x; drop", &COLLECTIONS), "other");
        assert_eq!(known("listIndexes", &COMMANDS), "other");
    }
}
