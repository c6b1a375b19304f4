//! Lockouts that outlive order traffic (issue 16, item 2): the throttle's counters must not be
//! evicted by the orders the cache holds, or a busy server forgets who was guessing passwords.

use std::time::Duration;

use serial_test::serial;

use super::private_redis::PrivateRedis;
use crate::harness::*;

/// The embedded order cache holds 16 MiB of orders (`MEMORY_CACHE_BYTES`); the churn caches
/// twice that after the lockout.
const ORDER_CACHE_BYTES: usize = 16 * 1024 * 1024;
const LINES: usize = 100;

#[tokio::test]
#[serial(heavy)]
async fn a_lockout_survives_the_order_cache_filling_up_many_times() {
    // Embedded whatever the pass: Redis's eviction is the operator's setting (next test).
    let srv = TestServer::start(
        ServerEnv::embedded(&[("LOGIN_MAX_FAILURES_PER_EMAIL", "3")]),
        "serve",
    )
    .await;
    let admin = srv.login_admin().await;
    let customer = srv.new_user().await;
    let victim = srv.new_user().await;
    for _ in 0..3 {
        assert_problem(
            &srv.login_raw(&victim.email, "a guess").await,
            401,
            "invalid_credentials",
        );
    }
    assert_problem(
        &srv.login_raw(&victim.email, &victim.password).await,
        429,
        "rate_limited",
    );

    // Big orders: a hundred lines, each with a long product name snapshotted into it.
    let mut products = Vec::new();
    for i in 0..LINES {
        let name = format!("{i:03} {}", "n".repeat(190));
        let p = srv.create_product(&admin, &name, 100, 1_000_000).await;
        products.push(str_of(&p["id"]));
    }
    let lines: Vec<(&str, i64)> = products.iter().map(|id| (id.as_str(), 1)).collect();
    let body = order_body(&lines);
    let first = srv.place_order_raw(&customer, &body).await;
    first.assert_status(201);
    let orders = 2 * ORDER_CACHE_BYTES / first.text.len() + 1;
    for batch in (0..orders).collect::<Vec<_>>().chunks(8) {
        for r in join_all(batch.iter().map(|_| srv.place_order_raw(&customer, &body))).await {
            r.assert_status(201);
        }
    }

    // The order cache has been filled twice over since; the lockout is still there.
    let r = srv.login_raw(&victim.email, &victim.password).await;
    assert_problem(&r, 429, "rate_limited");
}

#[tokio::test]
async fn a_redis_that_may_evict_throttle_counters_is_reported_at_start() {
    let Some((env, redis)) = PrivateRedis::for_env(ServerEnv::fresh()) else {
        return;
    };
    assert_eq!(redis.command("CONFIG SET maxmemory 256mb"), "+OK");
    assert_eq!(
        redis.command("CONFIG SET maxmemory-policy allkeys-lru"),
        "+OK"
    );
    let srv = TestServer::start(env, "serve").await;
    // Logged before the listening line, but maybe on the other stream: poll briefly.
    poll_until(
        Duration::from_secs(5),
        "a warning about allkeys-lru",
        || async {
            let out = srv.output();
            if out.contains("maxmemory-policy noeviction") {
                Ok(())
            } else {
                Err(out)
            }
        },
    )
    .await;
    // The Redis is this test's own: it goes with the server's environment.
}
