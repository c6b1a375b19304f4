//! Regression test of the campaign's first finding (seed 20261203, 30 s): orders completed in
//! the store still read `pending` through the API after the heal. The order had been cached
//! when placed; Redis was unreachable when the worker moved it on, so neither the cache write
//! of the new status nor the delete after it happened, and the old entry stayed for its TTL.
//! The same steps here, one at a time, with Redis cut at its Toxiproxy proxy.

use super::*;

/// Order-cache lookups (hits and misses) a process has counted: moves when the cache answers.
fn cache_lookups(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            (l.starts_with("cache_hits_total{") || l.starts_with("cache_misses_total{"))
                && l.contains("cache=\"order\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_change_the_cache_missed_is_never_read_stale() {
    let Some(real) = blocking(RealBackends::start_if_installed).await else {
        return;
    };
    let Some(toxiproxy) = blocking(|| toxiproxy::start(1)).await else {
        return;
    };
    let env = service_env(&real, &toxiproxy).await;
    // No worker yet: the order stays pending, and is read (and, before the fix, cached) so.
    let api = TestServer::start(env.clone(), "api").await;
    let admin = api.login_admin().await;
    let pid = str_of(&api.create_product(&admin, &unique("Stale"), 100, 10).await["id"]);
    let user = api.new_user().await;
    let id = str_of(&api.place_order(&user, &[(&pid, 1)]).await["id"]);
    assert_eq!(api.get_order(&user, &id).await["status"], "pending");

    // Redis away while the worker completes the order: its cache writes can not land.
    toxiproxy.set_enabled("redis", false).await;
    let _worker = TestServer::start(env.with_vars(&[("METRICS_PORT", "0")]), "worker").await;
    api.poll_order_status_within(&user, &id, "completed", Duration::from_secs(30))
        .await;

    // Redis back: once the API's reads go through the cache again, they show what the store has.
    toxiproxy.set_enabled("redis", true).await;
    let before = cache_lookups(&api.get("/metrics", None).await.text);
    let shown = poll_until(
        Duration::from_secs(30),
        "an order read that the cache answered",
        || async {
            let order = api.get_order(&user, &id).await;
            let after = cache_lookups(&api.get("/metrics", None).await.text);
            if after > before {
                Ok(order["status"].clone())
            } else {
                Err("the cache is not consulted yet".to_string())
            }
        },
    )
    .await;
    assert_eq!(
        shown, "completed",
        "the API showed a status the store had left (a stale cache entry)"
    );
}
