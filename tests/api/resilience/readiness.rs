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
