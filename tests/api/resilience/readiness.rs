//! `/ready` means "can take traffic": the database and the queue must answer; the cache and the
//! mailer are reported but the service serves without them; and the SES probe, which AWS
//! allows about once a second, is asked at most once per few seconds however often `/ready` is.

use super::*;
use crate::harness::support::blackhole::BlackHoleProxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_cache_is_reported_but_the_process_stays_ready() {
    // Nothing listens there: Redis is down for the whole life of the process.
    let port = support::free_port().to_string();
    let env = ServerEnv::embedded(&[("REDIS_HOST", "127.0.0.1"), ("REDIS_PORT", &port)]);
    let srv = TestServer::start(env, "serve").await;
    let r = srv.get("/ready", None).await;
    r.assert_status(200);
    let body = r.json();
    assert_ne!(body["checks"]["cache"], json!("ok"), "{}", r.ctx());
    assert_eq!(body["checks"]["database"], json!("ok"), "{}", r.ctx());
    assert_eq!(body["degraded"], json!(["cache"]), "{}", r.ctx());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_probes_share_one_ses_quota_call() {
    let Some(moto) = blocking(support::moto::start).await else {
        return;
    };
    moto.verify_sender(SES_SENDER).await;
    let proxy = BlackHoleProxy::forward_to(([127, 0, 0, 1], moto.port).into());
    proxy.count(b"GetSendQuota");
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let mut vars: Vec<(String, String)> = moto.env();
    vars.push(("AWS_ENDPOINT_URL_SES".into(), endpoint));
    vars.push(("AWS_SES_SENDER_EMAIL".into(), SES_SENDER.into()));
    let mut env = ServerEnv::embedded(&[]);
    env.extra = vars;
    let srv = TestServer::start(env, "serve").await;
    for _ in 0..10 {
        srv.get("/ready", None).await.assert_status(200);
    }
    assert!(
        proxy.counted() <= 1,
        "10 probes asked SES GetSendQuota {} times",
        proxy.counted()
    );
    drop(moto);
}

/// A server on the embedded store and a moto queue whose redrive policy dead-letters after
/// `max_receive_count` receives, told `QUEUE_MAX_RECEIVES=5`; with its `/ready` body (moto
/// first, so it outlives the server).
async fn ready_with_redrive_limit(
    max_receive_count: u32,
) -> Option<(support::moto::Moto, TestServer, Value)> {
    let moto = blocking(support::moto::start).await?;
    let (queue_url, _) = moto.create_queue("orders", max_receive_count).await;
    let mut env = ServerEnv::embedded(&[("QUEUE_MAX_RECEIVES", "5")]);
    env.extra.extend(moto.env());
    env.extra.push(("AWS_SQS_QUEUE_URL".into(), queue_url));
    let srv = TestServer::start(env, "serve").await;
    let r = srv.get("/ready", None).await;
    r.assert_status(200);
    assert_eq!(r.json()["checks"]["queue"], json!("ok"), "{}", r.ctx());
    let body = r.json();
    Some((moto, srv, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_policy_that_dead_letters_before_the_last_attempt_is_reported() {
    // SQS would move the message to its dead-letter queue after 2 receives, before the service's
    // 5th and last attempt (the one that fails the order and returns its stock).
    let Some((_moto, srv, body)) = ready_with_redrive_limit(2).await else {
        return;
    };
    let warnings = body["warnings"].as_array().cloned().unwrap_or_default();
    assert_eq!(warnings.len(), 1, "{body}");
    assert_eq!(
        warnings[0]["code"],
        json!("queue_redrive_before_last_attempt")
    );
    let detail = warnings[0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("maxReceiveCount 2") && detail.contains("QUEUE_MAX_RECEIVES 5"),
        "{body}"
    );
    // And the log says so, with both numbers.
    poll_until(
        Duration::from_secs(5),
        "the redrive warning in the log",
        || {
            let output = srv.output();
            async move {
                let line = output
                    .lines()
                    .find(|l| l.contains("redrive policy dead-letters"));
                match line {
                    Some(l) if l.contains('2') && l.contains('5') => Ok(()),
                    _ => Err(output),
                }
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_policy_that_leaves_the_last_attempt_is_not_reported() {
    let Some((_moto, srv, body)) = ready_with_redrive_limit(5).await else {
        return;
    };
    assert!(body.get("warnings").is_none(), "{body}");
    // The OpenAPI document describes the warnings a probe may list.
    let doc = srv.get("/api-docs/openapi.json", None).await.json();
    let schemas = &doc["components"]["schemas"];
    assert!(
        schemas["Readiness"]["properties"]["warnings"].is_object()
            && schemas["ConfigWarning"]["properties"]["code"].is_object(),
        "{schemas}"
    );
    assert!(
        !srv.output().contains("redrive policy dead-letters"),
        "{}",
        srv.output()
    );
}
