//! Revocations that must take effect everywhere at once, or fail so the client retries
//! (issue 16, item 4). Every process checks sessions through the shared cache; a logout whose
//! `revoked` can not be written there would leave other processes honouring a cached `active`.
//! Here Redis answers every write with an error (`NOREPLICAS`) while reads still work.

use serde_json::json;

use super::private_redis::PrivateRedis;
use crate::harness::*;

async fn logout(srv: &TestServer, access: &str) -> Resp {
    srv.call(
        reqwest::Method::POST,
        "/api/auth/logout",
        Some(access),
        None,
    )
    .await
}

async fn refresh(srv: &TestServer, token: &str) -> Resp {
    srv.post("/api/auth/refresh", None, &json!({ "refreshToken": token }))
        .await
}

/// A server on a Redis the test controls (`None` without redis-server).
async fn server_with_redis(vars: &[(&str, &str)]) -> Option<(TestServer, PrivateRedis)> {
    let (env, redis) = PrivateRedis::for_env(ServerEnv::fresh().with_vars(vars))?;
    Some((TestServer::start(env, "serve").await, redis))
}

#[tokio::test]
async fn a_logout_that_can_not_be_recorded_fails_with_503_and_a_retry_completes_it() {
    let Some((srv, redis)) = server_with_redis(&[]).await else {
        return;
    };
    let user = srv.new_user().await;
    // The session is cached as active, as every process that served the user has it.
    srv.me(&user.access).await.assert_status(200);

    redis.refuse_writes(true);
    let r = logout(&srv, &user.access).await;
    redis.refuse_writes(false);
    assert_problem(&r, 503, "service_unavailable");
    assert!(r.header("retry-after").is_some(), "{}", r.ctx());

    // The client retries: now it takes, and the token is refused.
    logout(&srv, &user.access).await.assert_status(204);
    assert_problem(&srv.me(&user.access).await, 401, "unauthorized");
    assert_problem(&refresh(&srv, &user.refresh).await, 401, "unauthorized");
    // Logging out again is harmless.
    logout(&srv, &user.access).await.assert_status(204);
}

#[tokio::test]
async fn a_reuse_revocation_that_can_not_be_recorded_fails_with_503_and_a_retry_completes_it() {
    let Some((srv, redis)) = server_with_redis(&[("REFRESH_REUSE_INTERVAL", "0")]).await else {
        return;
    };
    let user = srv.new_user().await;
    let r = refresh(&srv, &user.refresh).await;
    r.assert_status(200);
    let rotated = TestServer::parse_auth(&r, &user.email, &user.password);
    srv.me(&rotated.access).await.assert_status(200);

    // The spent token comes back while the cache takes no writes: the revocation it calls for
    // can not reach every process, so the answer says retry rather than done.
    redis.refuse_writes(true);
    let r = refresh(&srv, &user.refresh).await;
    redis.refuse_writes(false);
    assert_problem(&r, 503, "service_unavailable");

    // The retry finishes the revocation: the thief's (or victim's) newer pair is dead too.
    assert_problem(&refresh(&srv, &user.refresh).await, 401, "unauthorized");
    assert_problem(&srv.me(&rotated.access).await, 401, "unauthorized");
    assert_problem(&refresh(&srv, &rotated.refresh).await, 401, "unauthorized");
}

#[tokio::test]
async fn logging_out_twice_is_harmless() {
    let srv = TestServer::serve().await;
    let user = srv.new_user().await;
    logout(&srv, &user.access).await.assert_status(204);
    logout(&srv, &user.access).await.assert_status(204);
    assert_problem(&srv.me(&user.access).await, 401, "unauthorized");
    // Only a correctly signed token may log out.
    let forged = format!("{}x", user.access);
    assert_problem(&logout(&srv, &forged).await, 401, "unauthorized");
}
