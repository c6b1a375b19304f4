//! Order service: an event-driven order processing service on supervised actix actors, with
//! embedded (SQLite, in-process) or real (MongoDB, Redis, SQS, SES) backends.
//! `DESIGN.md`'s map of the flow applies module by module; `main.rs` is only the CLI.

pub mod actors;
pub mod app;
pub mod authenticator;
pub mod aws;
pub mod backends;
pub mod cache;
pub mod coalesce;
pub mod config;
pub mod deadline;
pub mod domain;
pub mod duration;
pub mod error;
pub mod events;
pub mod http;
pub mod mail;
pub mod messages;
pub mod metrics;
pub mod oncall;
pub mod password;
pub mod queue;
pub mod refresh_reuse;
pub mod retention;
pub mod round_trips;
pub mod seed;
pub mod store;
pub mod telemetry;
pub mod throttle;
pub mod tokens;
