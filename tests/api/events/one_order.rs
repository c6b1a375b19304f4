//! `GET /api/orders/{id}/events`: the order's state at once, each change, the end after a
//! terminal status; resuming with `Last-Event-ID`; who may follow an order; the heartbeat; and
//! shutdown with streams open.

use std::time::Duration;

use serde_json::json;

use super::client::*;
use super::{shop, worker_for};
use crate::harness::*;

fn statuses(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(|f| str_of(&f.json()["status"])).collect()
}

/// Each event carries the status, its time and the whole order, under an id that grows.
fn assert_events_are_well_formed(frames: &[Frame]) {
    let mut last: Option<i64> = None;
    for f in frames {
        let j = f.json();
        assert_eq!(j["status"], j["order"]["status"], "{f:?}");
        assert_eq!(j["updatedAt"], j["order"]["updatedAt"], "{f:?}");
        assert_order(&j["order"]);
        let id =
            f.id.as_deref()
                .unwrap_or_else(|| panic!("an event without id: {f:?}"));
        let id: i64 = id.parse().expect("a numeric id");
        if let Some(last) = last {
            assert!(id > last, "ids must grow: {frames:?}");
        }
        last = Some(id);
    }
}

#[tokio::test]
async fn follows_an_order_from_its_state_now_to_completed_and_ends() {
    // No worker yet: the order waits, pending, while the client subscribes.
    let api = TestServer::api().await;
    let s = shop(&api).await;
    let order = api.place_order(&s.customer, &[(&s.product, 2)]).await;
    let id = str_of(&order["id"]);
    let path = format!("/api/orders/{id}/events");
    let mut stream = open_ok(&api, &path, &s.customer.access, None).await;

    let first = stream.next_status().await.expect("the state at once");
    assert_eq!(first.json()["status"], "pending");
    assert_eq!(first.json()["order"], api.get_order(&s.customer, &id).await);

    // A worker in another process moves it; the api process hears of it (Redis, or the store).
    let _worker = worker_for(&api).await;
    let rest = stream.rest().await;
    let seen = statuses(&rest);
    assert_eq!(
        seen.last().map(String::as_str),
        Some("completed"),
        "{seen:?}"
    );
    assert!(
        seen == ["completed"] || seen == ["processing", "completed"],
        "each change once, in order: {seen:?}"
    );
    let all: Vec<Frame> = std::iter::once(first).chain(rest).collect();
    assert_events_are_well_formed(&all);
    assert_eq!(
        all.last().unwrap().json()["order"],
        api.get_order(&s.customer, &id).await,
        "the last event is the order as GET answers it"
    );
}

#[tokio::test]
async fn in_one_process_every_transition_is_sent() {
    // Slow fulfilment, so the stream opens before the order completes.
    let srv = TestServer::start(
        ServerEnv::fresh().with_vars(&[("ORDER_PROCESSING_TIME", "1s")]),
        "serve",
    )
    .await;
    let s = shop(&srv).await;
    let order = srv.place_order(&s.customer, &[(&s.product, 1)]).await;
    let id = str_of(&order["id"]);
    let mut stream = open_ok(
        &srv,
        &format!("/api/orders/{id}/events"),
        &s.customer.access,
        None,
    )
    .await;
    let frames = stream.rest().await;
    assert_events_are_well_formed(&frames);
    let seen = statuses(&frames);
    assert!(
        seen == ["pending", "processing", "completed"] || seen == ["processing", "completed"],
        "the state at once, then every change, then the end: {seen:?}"
    );
}

#[tokio::test]
async fn a_finished_order_sends_its_state_and_ends_at_once() {
    let srv = TestServer::serve().await;
    let s = shop(&srv).await;
    let order = srv.place_order(&s.customer, &[(&s.product, 1)]).await;
    let id = str_of(&order["id"]);
    let done = srv.poll_order_status(&s.customer, &id, "completed").await;
    let path = format!("/api/orders/{id}/events");

    let mut stream = open_ok(&srv, &path, &s.customer.access, None).await;
    let frames = stream.rest().await;
    assert_eq!(statuses(&frames), ["completed"]);
    assert_eq!(frames[0].json()["order"], done);
    assert_events_are_well_formed(&frames);

    // Resuming from that event: nothing is left to send.
    let last = frames[0].id.clone().unwrap();
    let mut again = open_ok(&srv, &path, &s.customer.access, Some(&last)).await;
    assert!(again.rest().await.is_empty());

    // The admin may follow anyone's order.
    let mut admin = open_ok(&srv, &path, &s.admin.access, None).await;
    assert_eq!(statuses(&admin.rest().await), ["completed"]);
}

#[tokio::test]
async fn a_resumed_stream_gets_the_change_it_missed_from_the_store() {
    let api = TestServer::api().await;
    let s = shop(&api).await;
    let order = api.place_order(&s.customer, &[(&s.product, 1)]).await;
    let id = str_of(&order["id"]);
    let path = format!("/api/orders/{id}/events");
    let mut stream = open_ok(&api, &path, &s.customer.access, None).await;
    let pending = stream.next_status().await.unwrap();
    assert_eq!(pending.json()["status"], "pending");
    drop(stream);

    // Completed while nobody listened.
    let _worker = worker_for(&api).await;
    let done = api.poll_order_status(&s.customer, &id, "completed").await;

    let mut resumed = open_ok(&api, &path, &s.customer.access, pending.id.as_deref()).await;
    let frames = resumed.rest().await;
    assert_eq!(
        statuses(&frames),
        ["completed"],
        "the missed change, then the end"
    );
    assert_eq!(frames[0].json()["order"], done);
    assert_events_are_well_formed(&[pending, frames[0].clone()]);
}

#[tokio::test]
async fn only_the_owner_follows_an_order_and_bad_input_is_refused() {
    let srv = TestServer::serve().await;
    let s = shop(&srv).await;
    let order = srv.place_order(&s.customer, &[(&s.product, 1)]).await;
    let id = str_of(&order["id"]);
    let path = format!("/api/orders/{id}/events");
    let stranger = srv.new_user().await;

    let refused = |r: Result<EventStream, Resp>| r.err().expect("refused");
    let r = refused(open(&srv, &path, Some(&stranger.access), None).await);
    assert_problem(&r, 404, "not_found");
    let r = refused(open(&srv, &path, None, None).await);
    assert_problem(&r, 401, "unauthorized");
    let r = refused(open(&srv, "/api/orders/events", None, None).await);
    assert_problem(&r, 401, "unauthorized");
    let r = refused(
        open(
            &srv,
            &format!("/api/orders/{}/events", "0".repeat(24)),
            Some(&s.customer.access),
            None,
        )
        .await,
    );
    assert_problem(&r, 404, "not_found");
    let r = refused(
        open(
            &srv,
            "/api/orders/nope/events",
            Some(&s.customer.access),
            None,
        )
        .await,
    );
    assert_validation(&r, &["id"]);
    for bad in ["", "x", "13", "1-2", "-12", "1234567890123456780"] {
        for p in [path.as_str(), "/api/orders/events"] {
            let r = refused(open(&srv, p, Some(&s.customer.access), Some(bad)).await);
            assert_validation(&r, &["Last-Event-ID"]);
        }
    }
    // Nothing above changed the order.
    assert_eq!(
        srv.get_order(&s.customer, &id).await["items"],
        order["items"]
    );
    let r = srv
        .call(
            reqwest::Method::POST,
            &path,
            Some(&s.customer.access),
            Some(&json!({})),
        )
        .await;
    assert_problem(&r, 405, "method_not_allowed");
}

#[tokio::test]
async fn idle_streams_get_a_heartbeat_comment() {
    let srv = TestServer::start(
        ServerEnv::fresh().with_vars(&[("SSE_HEARTBEAT_INTERVAL", "200ms")]),
        "serve",
    )
    .await;
    let user = srv.new_user().await;
    let mut stream = open_ok(&srv, "/api/orders/events", &user.access, None).await;
    let mut beats = 0;
    while beats < 2 {
        match stream.next_within(Duration::from_secs(5)).await {
            Next::Frame(f) if f.comments == ["keep-alive"] => beats += 1,
            Next::Frame(f) => assert!(f.retry.is_some(), "only retry and heartbeats: {f:?}"),
            Next::End => panic!("the stream ended"),
        }
    }
}

#[tokio::test]
async fn open_streams_do_not_hold_up_shutdown() {
    let mut srv = TestServer::start(
        ServerEnv::fresh().with_vars(&[("SHUTDOWN_TIMEOUT", "60s")]),
        "serve",
    )
    .await;
    let user = srv.new_user().await;
    let mut stream = open_ok(&srv, "/api/orders/events", &user.access, None).await;
    assert!(
        matches!(stream.next_within(FRAME_DEADLINE).await, Next::Frame(f) if f.retry.is_some())
    );

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &srv.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    // The stream is ended by the server, not left for the 60 s drain to cut.
    assert!(matches!(
        stream.next_within(Duration::from_secs(15)).await,
        Next::End
    ));
    let exit = blocking(move || {
        let exit = srv.wait_for_exit(Duration::from_secs(15));
        (exit, srv.output())
    })
    .await;
    assert!(
        exit.0.is_some_and(|s| s.success()),
        "exit after SIGTERM with a stream open: {:?}; output:\n{}",
        exit.0,
        exit.1
    );
}
