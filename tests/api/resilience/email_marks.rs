//! Duplicate emails (issue 14 (c)): an email that went out while the store could not take its
//! mark used to stay an unsent claim until its lease ran out, and the email sweeper then sent
//! it again. Its sender knows it went out, and marks it again on its own until the mark lands.
//! FerretDB and moto (SES) each behind a black-hole proxy: the send is held until the store
//! is cut off, so its mark meets the outage.

use super::*;
use crate::harness::support::blackhole::BlackHoleProxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_sent_while_the_store_was_out_of_reach_is_not_sent_again() {
    let Some(ferretdb) = blocking(support::ferretdb::start).await else {
        return;
    };
    let Some(moto) = blocking(support::moto::start).await else {
        return;
    };
    moto.verify_sender(SES_SENDER).await;
    let store = BlackHoleProxy::forward_to(([127, 0, 0, 1], ferretdb.port).into());
    let ses = BlackHoleProxy::forward_to(([127, 0, 0, 1], moto.port).into());
    let database = unique("marks");
    let uri = format!("mongodb://127.0.0.1:{}/{database}", store.port);
    let mut env = ServerEnv::embedded(&[
        ("MONGODB_URI", &uri),
        ("BACKEND_TIMEOUT", "4s"),
        ("EMAIL_RESEND_AFTER", "8s"),
    ]);
    env.extra.extend(moto.env());
    env.extra.push((
        "AWS_ENDPOINT_URL_SES".into(),
        format!("http://127.0.0.1:{}", ses.port),
    ));
    env.extra
        .push(("AWS_SES_SENDER_EMAIL".into(), SES_SENDER.into()));
    let srv = TestServer::start(env, "serve").await;
    let admin = srv.login_admin().await;
    let pid = str_of(&srv.create_product(&admin, &unique("Marked"), 100, 10).await["id"]);
    let user = srv.new_user().await;

    // A first order's email makes the service's SES template, so that the next email's
    // request to SES is its send.
    let first = str_of(&srv.place_order(&user, &[(&pid, 1)]).await["id"]);
    poll_until(ORDER_DEADLINE, "the first order's email", || async {
        let sent = moto.sent_emails().await;
        match sent.iter().any(|e| e.subject.contains(&first)) {
            true => Ok(()),
            false => Err(format!("{} emails, none for {first}", sent.len())),
        }
    })
    .await;

    // The email is claimed, and its send held in the SES hole.
    ses.black_hole();
    ses.count(b"SendBulkTemplatedEmail");
    let id = str_of(&srv.place_order(&user, &[(&pid, 1)]).await["id"]);
    wait_until_seen(&ses, "the email's send").await;
    // The store goes out of reach, then the send goes through: its mark meets the outage.
    store.black_hole();
    ses.heal();
    poll_until(RECOVERY_DEADLINE, "the mark to fail", || async {
        let page = metrics_page(&srv).await;
        let failed = metric(
            &page,
            "backend_errors_total",
            Some("operation=\"mark_notifications_sent\""),
        );
        match failed {
            n if n >= 1.0 => Ok(()),
            n => Err(format!("mark failures {n}")),
        }
    })
    .await;
    store.heal();

    // Marked sent once the store is back, by the sender: never taken over by the sweeper.
    let direct = mongodb::Client::with_uri_str(ferretdb.uri(&database))
        .await
        .expect("connect to FerretDB directly");
    let claims = direct
        .database(&database)
        .collection::<bson::Document>("notifications");
    let key = format!("{id}:completed");
    poll_until(RECOVERY_DEADLINE, "the email marked sent", || async {
        let claim = claims
            .find_one(bson::doc! { "_id": &key })
            .await
            .map_err(|e| e.to_string())?;
        match claim.as_ref().and_then(|c| c.get_bool("sent").ok()) {
            Some(true) => Ok(()),
            other => Err(format!("sent: {other:?}")),
        }
    })
    .await;
    let page = metrics_page(&srv).await;
    assert_eq!(
        metric(&page, "emails_resent_total", None),
        0.0,
        "the sweeper sent it again"
    );
    let sent: Vec<_> = moto
        .sent_emails()
        .await
        .into_iter()
        .filter(|e| e.subject.contains(&id))
        .collect();
    assert_eq!(sent.len(), 1, "one email: {sent:?}");
    drop(ferretdb);
}
