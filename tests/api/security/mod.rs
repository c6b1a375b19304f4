//! Abuse tests: hostile clients get nowhere. Stolen or forged tokens, password guessing, other
//! people's orders, oversized or malicious input and cross-origin pages are all refused, and the
//! refusals themselves reveal nothing (which accounts exist, which orders exist).

mod concurrent_guesses;
mod headers;
mod hostile_input;
mod lockout;
mod metric_series;
mod ownership;
mod private_redis;
mod proxies;
mod refresh_reuse;
mod revocation;
mod throttle_eviction;
mod tokens;
