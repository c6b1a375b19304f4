//! Two refreshes with one token (issue 16, item 5): a retry after a lost response, or two tabs
//! refreshing at once. Within `REFRESH_REUSE_INTERVAL` the spent token returns the same new
//! pair; after it, reuse revokes the family as a stolen token's would.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

async fn refresh(srv: &TestServer, token: &str) -> Resp {
    srv.post("/api/auth/refresh", None, &json!({ "refreshToken": token }))
        .await
}

fn pair(r: &Resp) -> (String, String) {
    r.assert_status(200);
    let body = r.json();
    (str_of(&body["accessToken"]), str_of(&body["refreshToken"]))
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_all_get_the_same_working_pair() {
    let srv = TestServer::serve().await;
    let user = srv.new_user().await;

    let answers = join_all((0..4).map(|_| refresh(&srv, &user.refresh))).await;
    let pairs: Vec<_> = answers.iter().map(pair).collect();
    assert!(
        pairs.iter().all(|p| *p == pairs[0]),
        "concurrent refreshes got different pairs"
    );
    let (access, next_refresh) = &pairs[0];
    srv.me(access).await.assert_status(200);
    // The pair is a live one: it refreshes in turn.
    let (access2, _) = pair(&refresh(&srv, next_refresh).await);
    srv.me(&access2).await.assert_status(200);
}

#[tokio::test]
async fn a_retry_after_a_lost_response_gets_the_same_pair() {
    let srv = TestServer::serve().await;
    let user = srv.new_user().await;
    let first = pair(&refresh(&srv, &user.refresh).await);
    // The response was lost; the client sends the same token again.
    let again = pair(&refresh(&srv, &user.refresh).await);
    assert_eq!(first, again);
    srv.me(&first.0).await.assert_status(200);
}

#[tokio::test]
async fn a_spent_token_after_the_interval_revokes_the_family() {
    let srv = TestServer::start(
        ServerEnv::fresh().with_vars(&[("REFRESH_REUSE_INTERVAL", "1s")]),
        "serve",
    )
    .await;
    let user = srv.new_user().await;
    let spent_at = Instant::now();
    let (access, next) = pair(&refresh(&srv, &user.refresh).await);
    // The behaviour under test is what happens once the interval has passed: wait for it.
    poll_until(
        Duration::from_secs(5),
        "the reuse interval to pass",
        || async {
            if spent_at.elapsed() > Duration::from_millis(2100) {
                Ok(())
            } else {
                Err(format!("{:?} elapsed", spent_at.elapsed()))
            }
        },
    )
    .await;
    assert_problem(&refresh(&srv, &user.refresh).await, 401, "unauthorized");
    assert_problem(&srv.me(&access).await, 401, "unauthorized");
    assert_problem(&refresh(&srv, &next).await, 401, "unauthorized");
}

#[tokio::test]
async fn a_spent_token_whose_successor_was_spent_too_revokes_even_within_the_interval() {
    let srv = TestServer::serve().await;
    let user = srv.new_user().await;
    let (_, second) = pair(&refresh(&srv, &user.refresh).await);
    let (third_access, _) = pair(&refresh(&srv, &second).await);
    // The first token is two rotations old: that is reuse, interval or not.
    assert_problem(&refresh(&srv, &user.refresh).await, 401, "unauthorized");
    assert_problem(&srv.me(&third_access).await, 401, "unauthorized");
}
