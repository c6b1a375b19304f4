//! Names no other test (or test run) on this machine uses, random secrets, and fresh data
//! directories.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A string unique within this machine for the life of the test run.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}-{}-{n}-{}", std::process::id(), nanos())
}

/// A random alphanumeric string (used for the JWT secrets).
pub fn random_string(len: usize) -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::thread_rng(), len)
}

pub fn unique_email() -> String {
    format!("{}@example.com", unique("user"))
}

/// A fresh, empty data directory unique to this test.
pub fn fresh_data_dir() -> PathBuf {
    let dir = std::env::temp_dir()
        .join("order-service-tests")
        .join(unique("data"));
    std::fs::create_dir_all(&dir).expect("create test data dir");
    dir
}
