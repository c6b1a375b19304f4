//! Client addresses behind proxies (issue 16, item 3). A client writes the left part of
//! `X-Forwarded-For` and `Forwarded` itself (proxies append, and pass on what they got), so a
//! guesser rotating made-up addresses there must still meet the per-address limit: the service
//! trusts only the `TRUST_PROXY_HOPS` entries its own proxies appended.

use reqwest::Method;
use serde_json::json;

use crate::harness::*;

const PER_ADDRESS: usize = 3;

/// A login as it reaches the service through proxies: `header` as they pass it on.
async fn login_via(srv: &TestServer, header: (&str, String), email: &str) -> Resp {
    let rb = srv
        .request(Method::POST, "/api/auth/login")
        .header(header.0, header.1)
        .json(&json!({"email": email, "password": "a guess"}));
    srv.send(rb).await
}

async fn proxied_server(hops: &str) -> TestServer {
    TestServer::start(
        ServerEnv::fresh().with_vars(&[
            ("TRUST_PROXY_HEADERS", "true"),
            ("TRUST_PROXY_HOPS", hops),
            ("LOGIN_MAX_FAILURES_PER_IP", &PER_ADDRESS.to_string()),
        ]),
        "serve",
    )
    .await
}

/// `PER_ADDRESS` guesses from `client` go through (each for a new email, each with a new forged
/// address in front); the next one, forged differently again, is refused.
async fn assert_throttled(srv: &TestServer, header: impl Fn(usize) -> (&'static str, String)) {
    for i in 0..PER_ADDRESS {
        let r = login_via(srv, header(i), &unique_email()).await;
        assert_problem(&r, 401, "invalid_credentials");
    }
    let r = login_via(srv, header(PER_ADDRESS), &unique_email()).await;
    assert_problem(&r, 429, "rate_limited");
}

fn forged(i: usize) -> String {
    format!("198.51.100.{}", i + 1)
}

#[tokio::test]
async fn forged_leftmost_entries_rotated_per_request_are_still_throttled() {
    let srv = proxied_server("1").await;
    assert_throttled(&srv, |i| {
        ("x-forwarded-for", format!("{}, 203.0.113.7", forged(i)))
    })
    .await;
    assert_throttled(&srv, |i| {
        (
            "forwarded",
            format!("for={};proto=https, for=\"203.0.113.8:4711\"", forged(i)),
        )
    })
    .await;
    // Another client behind the same proxy has an address of its own.
    let r = login_via(
        &srv,
        ("x-forwarded-for", "203.0.113.7, 203.0.113.9".into()),
        &unique_email(),
    )
    .await;
    assert_problem(&r, 401, "invalid_credentials");
}

#[tokio::test]
async fn with_two_proxies_the_address_the_outer_one_saw_is_the_client() {
    let srv = proxied_server("2").await;
    // Forged entries, the client as the outer proxy saw it, then the outer proxy itself as
    // the inner one saw it (the same for every client).
    assert_throttled(&srv, |i| {
        (
            "x-forwarded-for",
            format!("{}, 203.0.113.20, 10.0.0.2", forged(i)),
        )
    })
    .await;
    let r = login_via(
        &srv,
        ("x-forwarded-for", "203.0.113.21, 10.0.0.2".into()),
        &unique_email(),
    )
    .await;
    assert_problem(&r, 401, "invalid_credentials");
}

#[tokio::test]
async fn trust_proxy_hops_must_be_at_least_one() {
    let env =
        ServerEnv::fresh().with_vars(&[("TRUST_PROXY_HEADERS", "true"), ("TRUST_PROXY_HOPS", "0")]);
    let (status, out) = blocking(move || run_cli(&env, &["serve"], STARTUP_DEADLINE)).await;
    assert!(!status.success(), "started with TRUST_PROXY_HOPS=0:\n{out}");
    assert!(out.contains("TRUST_PROXY_HOPS"), "{out}");
}
