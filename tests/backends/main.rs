//! Contract tests of the backend traits: one source, run against the embedded implementation
//! and against the real one (started as a child process, see `support`).

#[path = "../support/mod.rs"]
mod support;

mod cache_contract;
mod mailer_contract;
mod queue_contract;
mod store;
