//! Emails at least once, duplicates suppressed: an email whose sender died between the claim
//! and the send, or whose send failed after the claim, still goes out exactly once after
//! healing; and a failing mailer never dead-letters the order's message.

use super::*;

/// Sum of one metric on `srv`'s page.
async fn counter(srv: &TestServer, name: &str) -> f64 {
    metric(&metrics_page(srv).await, name, None)
}

/// Waits until `srv` counts at least one failed email.
async fn wait_for_a_failed_email(srv: &TestServer) {
    poll_until(ORDER_DEADLINE, "a failed email send", || async {
        match counter(srv, "emails_failed_total").await {
            n if n >= 1.0 => Ok(()),
            n => Err(format!("emails_failed_total = {n}")),
        }
    })
    .await;
}

/// Places one order through an `api` process and stops it: no worker has run, so the order
/// waits in the queue while the test plays what a dead process left behind. Returns the
/// stopped processes' environment, the customer and the order's id.
async fn order_waiting_for_a_worker(env: ServerEnv) -> (ServerEnv, Auth, String) {
    let api = TestServer::start(env, "api").await;
    let admin = api.login_admin().await;
    let pid = str_of(
        &api.create_product(&admin, &unique("Waiting"), 300, 10)
            .await["id"],
    );
    let user = api.new_user().await;
    let id = str_of(&api.place_order(&user, &[(&pid, 1)]).await["id"]);
    (api.stop(), user, id)
}

/// Starts a `serve` process on `env`, waits for order `id` to complete, and checks that
/// exactly one email file went out for it. Returns the process, for its counters.
async fn completed_with_one_email(env: &ServerEnv, user: &Auth, id: &str) -> TestServer {
    let srv = TestServer::start(env.clone(), "serve").await;
    let user = srv.login(&user.email, &user.password).await;
    srv.poll_order_status(&user, id, "completed").await;
    srv.find_email_file(id, "completed").await;
    assert_eq!(
        email_files_of(env, id),
        vec![format!("order-{id}-completed.eml")]
    );
    srv
}

/// Writes the claim of order `id`'s completion email, made at `claimed_at` and never marked
/// sent, into the embedded store of the stopped processes of `env`: what a process that died
/// between the claim and the send leaves behind.
async fn claim_completion_email(
    env: &ServerEnv,
    id: &str,
    claimed_at: chrono::DateTime<chrono::Utc>,
) {
    let (db, id) = (env.data_dir.join("order-service.sqlite3"), id.to_string());
    let claimed_at = claimed_at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    blocking(move || {
        let c = rusqlite::Connection::open(db).unwrap();
        c.execute(
            "INSERT INTO order_notifications (order_id, status, claimed_at) \
             VALUES (?1, 'completed', ?2)",
            [id.as_str(), claimed_at.as_str()],
        )
        .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_claimed_by_a_process_that_died_before_sending_still_goes_out_once() {
    let env = ServerEnv::embedded(&[("EMAIL_RESEND_AFTER", "2s")]);
    let (env, user, id) = order_waiting_for_a_worker(env).await;

    // The claim a worker made just before it was killed, and no email: what a crash between
    // claim and send leaves behind.
    claim_completion_email(&env, &id, chrono::Utc::now()).await;

    // The worker finds the claim held and sends nothing; the sweeper sends it once it is stale.
    let srv = completed_with_one_email(&env, &user, &id).await;
    let resent = poll_until(ORDER_DEADLINE, "the resend counted", || async {
        match counter(&srv, "emails_resent_total").await {
            n if n >= 1.0 => Ok(n),
            n => Err(format!("emails_resent_total = {n}")),
        }
    })
    .await;
    assert_eq!(resent, 1.0, "sent again once");
    assert_eq!(counter(&srv, "emails_sent_total").await, 1.0, "one email");
    assert_eq!(counter(&srv, "emails_duplicate_total").await, 0.0);
}

/// The chaos campaign's 10-minute run 4 (RELIABILITY.md): an email claimed ahead of a change
/// by a delivery that then failed, and looked at by the email sweeper while its order was still
/// on its way, went out only a whole `EMAIL_RESEND_AFTER` after the order completed: the
/// sweeper's look kept the claim, so the delivery that completed the order lost it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_claimed_ahead_and_looked_at_while_its_order_waits_goes_out_when_it_completes() {
    // A lease far longer than the test: only the delivery that completes the order can send in
    // time.
    let env = ServerEnv::embedded(&[("EMAIL_RESEND_AFTER", "1h")]);
    let (env, user, id) = order_waiting_for_a_worker(env).await;

    // The completion email claimed ahead by a delivery that failed two hours ago: a stale
    // claim, and the order still pending in the queue.
    claim_completion_email(&env, &id, chrono::Utc::now() - chrono::Duration::hours(2)).await;

    // An API process, no worker: its email sweeper finds the claim stale and the order not
    // completed yet.
    let api = TestServer::start(env.clone(), "api").await;
    // (It looks every few seconds: `email_sweeper::SWEEP_EVERY`.)
    poll_until(
        3 * ORDER_DEADLINE,
        "the email sweeper looking at the claim",
        || {
            let output = api.output();
            async move {
                if output.contains("email claimed ahead of a status change still to come") {
                    Ok(())
                } else {
                    Err("not looked at yet".to_string())
                }
            }
        },
    )
    .await;
    let env = api.stop();

    // A worker completes the order: its email goes out now, once, not an hour on.
    let srv = completed_with_one_email(&env, &user, &id).await;
    assert_eq!(counter(&srv, "emails_sent_total").await, 1.0, "one email");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailer_failing_on_the_last_attempt_neither_loses_the_email_nor_dead_letters_the_order() {
    // One receive per message: before, the failed email failed the delivery, which was the
    // last, so the message went to the dead letters and the email was never sent.
    let env = ServerEnv::embedded(&[("QUEUE_MAX_RECEIVES", "1")]);
    let srv = TestServer::start(env.clone(), "serve").await;
    let admin = srv.login_admin().await;
    let pid = str_of(&srv.create_product(&admin, &unique("Unsent"), 300, 10).await["id"]);
    let user = srv.new_user().await;
    // The mail directory becomes a file: every email write fails.
    let mail_dir = env.mail_dir();
    std::fs::remove_dir_all(&mail_dir).unwrap();
    std::fs::write(&mail_dir, b"not a directory").unwrap();

    let id = str_of(&srv.place_order(&user, &[(&pid, 2)]).await["id"]);
    srv.poll_order_status(&user, &id, "completed").await;
    wait_for_a_failed_email(&srv).await;

    // Healed: the sweeper sends the email it was given back.
    std::fs::remove_file(&mail_dir).unwrap();
    std::fs::create_dir(&mail_dir).unwrap();
    srv.find_email_file(&id, "completed").await;
    assert_eq!(
        email_files_of(&env, &id),
        vec![format!("order-{id}-completed.eml")]
    );
    let page = metrics_page(&srv).await;
    assert_eq!(metric(&page, "emails_sent_total", None), 1.0, "one email");
    assert_eq!(metric(&page, "emails_duplicate_total", None), 0.0);
    assert_eq!(
        metric(&page, "queue_messages_dead_lettered_total", None),
        0.0,
        "an email failure is not a failed delivery"
    );
    let dead = open_queue(&env, 1).dead_letters().await.unwrap();
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(srv.product_stock(&pid).await, 8);
}

/// The real backends, owned by the test (see `outages::env_on`).
fn env_on(real: &RealBackends, extra: &[(&str, &str)]) -> ServerEnv {
    let mut env = ServerEnv::embedded(extra);
    env.extra.splice(0..0, real.env());
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_whose_send_failed_while_ses_and_sqs_were_down_goes_out_once_after_healing() {
    let Some(mut real) = blocking(RealBackends::start_if_installed).await else {
        return;
    };
    // Processing takes long enough for moto to go down between the receive and the email.
    let srv = TestServer::start(env_on(&real, &[("ORDER_PROCESSING_TIME", "3s")]), "serve").await;
    let admin = srv.login_admin().await;
    let pid = str_of(
        &srv.create_product(&admin, &unique("SesDown"), 300, 10)
            .await["id"],
    );
    let user = srv.new_user().await;
    let id = str_of(&srv.place_order(&user, &[(&pid, 1)]).await["id"]);
    srv.poll_order_status(&user, &id, "processing").await;

    // SES and SQS go down together (one moto): the send fails after the claim, and the queue
    // message dies with moto's memory, so no redelivery can send the email.
    tokio::task::block_in_place(|| real.moto.kill());
    srv.poll_order_status_within(&user, &id, "completed", RECOVERY_DEADLINE)
        .await;
    wait_for_a_failed_email(&srv).await;
    tokio::task::block_in_place(|| real.moto.restart());
    RealBackends::prepare_moto(&real.moto).await;

    let sent = poll_until(RECOVERY_DEADLINE, "the completion email", || async {
        match sent_emails_for(&real, &id, "completed").await.len() {
            0 => Err("none yet".to_string()),
            n => Ok(n),
        }
    })
    .await;
    assert_eq!(sent, 1, "exactly one completion email");
    assert_eq!(counter(&srv, "emails_duplicate_total").await, 0.0);
    assert_eq!(srv.product_stock(&pid).await, 9);
}

/// Makes the service's database refuse (or accept again) every new status-email claim, as a
/// store that takes an order's status changes but not the write that follows them would.
async fn refuse_email_claims(env: &ServerEnv, refuse: bool) {
    let path = env.data_dir.join("order-service.sqlite3");
    blocking(move || {
        let c = rusqlite::Connection::open(path).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        let sql = if refuse {
            "CREATE TRIGGER test_refuse_claims BEFORE INSERT ON order_notifications \
             BEGIN SELECT RAISE(ABORT, 'claims refused by the test'); END"
        } else {
            "DROP TRIGGER test_refuse_claims"
        };
        c.execute_batch(sql).unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_every_delivery_failed_to_claim_its_email_is_still_emailed_once() {
    // Two receives per message, redelivered after a second: before, the first delivery
    // completed the order and then failed to claim its email, the second found it completed and
    // failed the same way, and the message died. Nothing ever looked at a completed order's
    // email again: the customer was never told.
    let env = ServerEnv::embedded(&[
        ("QUEUE_MAX_RECEIVES", "2"),
        ("QUEUE_VISIBILITY_TIMEOUT", "1s"),
        ("ORDER_STUCK_AFTER", "2s"),
        ("EMAIL_RESEND_AFTER", "2s"),
    ]);
    let srv = TestServer::start(env.clone(), "serve").await;
    let admin = srv.login_admin().await;
    let pid = str_of(&srv.create_product(&admin, &unique("Untold"), 300, 10).await["id"]);
    let user = srv.new_user().await;
    refuse_email_claims(&env, true).await;

    let id = str_of(&srv.place_order(&user, &[(&pid, 3)]).await["id"]);
    let queue = open_queue(&env, 2);
    poll_until(
        RECOVERY_DEADLINE,
        "the order's message dead-lettered",
        || async {
            let depth = queue.depth().await.map_err(|e| e.to_string())?;
            match depth.dead_letters {
                0 => Err(format!("{depth:?}")),
                _ => Ok(()),
            }
        },
    )
    .await;

    // Healed: the order ends completed, and its customer is told once.
    refuse_email_claims(&env, false).await;
    srv.poll_order_status_within(&user, &id, "completed", RECOVERY_DEADLINE)
        .await;
    let files = poll_until(RECOVERY_DEADLINE, "the completion email", || async {
        match email_files_of(&env, &id) {
            files if files.is_empty() => Err("no email file".to_string()),
            files => Ok(files),
        }
    })
    .await;
    assert_eq!(files, vec![format!("order-{id}-completed.eml")]);
    assert_eq!(counter(&srv, "emails_duplicate_total").await, 0.0);
    assert_eq!(srv.product_stock(&pid).await, 7);
}
