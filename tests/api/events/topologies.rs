//! Separate `api` and `worker` processes on FerretDB, redis-server and moto: a client following
//! an order on the api process sees the `completed` a worker made, through Redis pub/sub, and
//! without Redis through the api process's reads of the store.

use std::sync::Arc;

use serial_test::serial;

use super::client::*;
use super::shop;
use crate::harness::*;

async fn api_and_worker_follow(extra: &[(&str, &str)]) {
    let Some(real) = blocking(RealBackends::start_if_installed).await else {
        return;
    };
    let mut env = ServerEnv::fresh().with_vars(extra);
    env.real = Some(Arc::new(real));
    let api = TestServer::start(env.clone(), "api").await;
    let s = shop(&api).await;
    let order = api.place_order(&s.customer, &[(&s.product, 1)]).await;
    let id = str_of(&order["id"]);
    let mut one = open_ok(
        &api,
        &format!("/api/orders/{id}/events"),
        &s.customer.access,
        None,
    )
    .await;
    let mut all = open_ok(&api, "/api/orders/events", &s.customer.access, None).await;
    assert_eq!(one.next_status().await.unwrap().json()["status"], "pending");

    // Only now is there a worker, in a process of its own.
    let _worker = TestServer::start(env.with_vars(&[("METRICS_PORT", "0")]), "worker").await;
    let rest = one.rest().await;
    let last = rest.last().expect("events after pending");
    assert_eq!(last.json()["status"], "completed", "{:?}", summary(&rest));
    assert_eq!(last.json()["order"], api.get_order(&s.customer, &id).await);
    all.until(&id, "completed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial(heavy)]
async fn a_worker_s_transitions_reach_the_api_s_streams_through_redis() {
    api_and_worker_follow(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial(heavy)]
async fn without_redis_the_api_process_reads_the_store() {
    // Blank is unset: the api and worker run without Redis.
    api_and_worker_follow(&[("REDIS_HOST", "")]).await;
}

#[tokio::test]
async fn a_change_whose_event_was_lost_reaches_a_single_order_stream_at_a_heartbeat() {
    // The api process listens on a Redis that the worker never publishes to (the worker runs
    // without Redis), so no event of the worker's arrives: only the stream's own re-read of
    // its order, at each heartbeat, can bring the `completed`.
    let Some(redis) = blocking(support::redis::start).await else {
        return;
    };
    let env = ServerEnv::embedded(&[]);
    let env2 = env.clone();
    blocking(move || seed(&env2)).await;
    let port = redis.port.to_string();
    let api = TestServer::start(
        env.clone().with_vars(&[
            ("REDIS_HOST", "127.0.0.1"),
            ("REDIS_PORT", &port),
            ("SSE_HEARTBEAT_INTERVAL", "300ms"),
        ]),
        "api",
    )
    .await;
    let s = shop(&api).await;
    let order = api.place_order(&s.customer, &[(&s.product, 1)]).await;
    let id = str_of(&order["id"]);
    let mut stream = open_ok(
        &api,
        &format!("/api/orders/{id}/events"),
        &s.customer.access,
        None,
    )
    .await;
    assert_eq!(
        stream.next_status().await.unwrap().json()["status"],
        "pending"
    );

    let _worker = TestServer::start(env.with_vars(&[("METRICS_PORT", "0")]), "worker").await;
    let rest = stream.rest().await;
    let last = rest.last().expect("the change, re-read at a heartbeat");
    assert_eq!(last.json()["status"], "completed", "{:?}", summary(&rest));
}
