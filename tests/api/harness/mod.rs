//! Black-box harness: every test spawns the real `order-service` binary on a random port with its
//! own fresh data directory and talks to it over HTTP only. Nothing here links to the service's
//! code, so the same suite runs against the embedded backends or, with `TEST_BACKENDS=real`, against
//! real FerretDB, redis-server and moto servers (see `RealBackends`).
//!
//! Suites `use crate::harness::*`: the modules below each hold one part (the process, the
//! server and its client, the flows, the shapes, the emails), re-exported here as one prelude.
#![allow(dead_code)]

use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_order-service");
pub const LISTEN_PREFIX: &str = "order-service listening on http://127.0.0.1:";
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
pub const ORDER_DEADLINE: Duration = Duration::from_secs(10);
pub const POLL_EVERY: Duration = Duration::from_millis(30);

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin123";
pub const SEED_USER_EMAIL: &str = "user@example.com";
pub const SEED_USER_PASSWORD: &str = "user123";

#[path = "../../support/mod.rs"]
pub mod support;

mod checks;
mod flows;
mod mail;
mod names;
mod poll;
mod process;
mod real;
mod response;
mod server;
mod shapes;

pub use mail::*;
pub use names::*;
pub use poll::*;
pub use process::*;
pub use real::*;
pub use response::*;
pub use server::*;
pub use shapes::*;
