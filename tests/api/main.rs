//! The black-box suites, in one test binary: every test drives the real `order-service` binary
//! (and `loadgen`) over HTTP on a random port with its own data, through `harness`.
//!
//! One binary instead of one per suite, because each test binary compiles its own harness copy
//! and links the whole crate: after a change to `src/`, rebuilding the tests took about twice
//! the CPU with twelve binaries as it does with this one. A suite is a module, so
//! it is selected by its path: `cargo test --test api -- orders::` runs one, and `scripts/test`
//! runs `auth:: products:: orders:: errors:: ops:: security::` again on the real backends.
//! (The filters match anywhere in a test's path: no module below may be named after a suite.)
//!
//! Tests run in parallel threads of this one process. What must not share the machine with
//! another of its kind (load generation, scale-out, fuzzing, Prometheus) is marked
//! `#[serial(heavy)]`, so at most one of them runs at a time, next to light tests.

mod harness;

mod auth;
mod chaos;
mod errors;
mod events;
mod fuzz;
mod loadgen;
mod observability;
mod oncall;
mod ops;
mod orders;
mod products;
mod resilience;
mod scale_out;
mod security;
mod traces;
