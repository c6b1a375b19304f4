//! Retention, black box: the running service deletes what is past its use (an old day of
//! `MAIL_DIR`, an old dead letter) and keeps what is fresh (today's emails).

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_mail_days_and_dead_letters_go_and_fresh_emails_stay() {
    let env = ServerEnv::embedded(&[
        ("RETENTION_SWEEP_INTERVAL", "1s"),
        ("MAIL_RETENTION_DAYS", "2"),
        ("DEAD_LETTER_RETENTION", "1s"),
    ]);
    let old_day = env.mail_dir().join("2020-01-01");
    std::fs::create_dir_all(&old_day).unwrap();
    std::fs::write(old_day.join("order-x-completed.eml"), b"old").unwrap();
    // A dead letter, moved there by a receive past the limit.
    let queue = open_queue(&env, 1);
    queue.send_batch(&["{}".to_string()]).await.unwrap();
    for _ in 0..2 {
        queue
            .receive(1, Duration::ZERO, Duration::ZERO)
            .await
            .unwrap();
    }
    assert_eq!(queue.dead_letters().await.unwrap().len(), 1);

    let srv = TestServer::start(env.clone(), "serve").await;
    let admin = srv.login_admin().await;
    let pid = str_of(&srv.create_product(&admin, &unique("Kept"), 300, 10).await["id"]);
    let user = srv.new_user().await;
    let id = str_of(&srv.place_order(&user, &[(&pid, 1)]).await["id"]);
    srv.find_email_file(&id, "completed").await;

    poll_until(
        RECOVERY_DEADLINE,
        "the old day and the dead letter deleted",
        || async {
            let dead = queue.dead_letters().await.map_err(|e| e.to_string())?;
            if old_day.exists() || !dead.is_empty() {
                return Err(format!(
                    "old day there: {}; dead letters: {dead:?}",
                    old_day.exists()
                ));
            }
            Ok(())
        },
    )
    .await;
    // Today's email outlives the sweeps.
    assert_eq!(
        email_files_of(&env, &id),
        vec![format!("order-{id}-completed.eml")]
    );
    // In the directory of the day it was sent (today, or yesterday if the test ran over
    // midnight UTC).
    let path = srv.email_path(&id, "completed");
    let day = path
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let now = chrono::Utc::now();
    let days = [now, now - chrono::TimeDelta::days(1)].map(|t| t.format("%Y-%m-%d").to_string());
    assert!(
        days.contains(&day),
        "{} is not in a directory of today's",
        path.display()
    );
}
