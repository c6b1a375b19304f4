//! The `Idempotency` contract: the first answer for a key wins, for a day.

use chrono::TimeDelta;
use order_service::domain::Id;
use order_service::store::Stores;

use super::{now, record};

async fn the_first_idempotent_answer_wins(stores: Stores) {
    let (user_id, t) = (Id::new(), now());
    let first = record("h1", 201, r#"{"a":1}"#);
    let second = record("h2", 200, "{}");
    assert!(stores
        .idempotency
        .find_idempotency(user_id, "k")
        .await
        .unwrap()
        .is_none());

    let won = stores
        .idempotency
        .save_idempotency(user_id, "k", &first, t)
        .await
        .unwrap();
    assert_eq!(
        (won.request_hash.as_str(), won.status, won.body.as_str()),
        ("h1", 201, r#"{"a":1}"#)
    );
    let won = stores
        .idempotency
        .save_idempotency(user_id, "k", &second, t)
        .await
        .unwrap();
    assert_eq!(
        (won.request_hash.as_str(), won.status, won.body.as_str()),
        ("h1", 201, r#"{"a":1}"#)
    );
    let found = stores
        .idempotency
        .find_idempotency(user_id, "k")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.request_hash.as_str(), found.status), ("h1", 201));
    assert!(
        stores
            .idempotency
            .find_idempotency(Id::new(), "k")
            .await
            .unwrap()
            .is_none(),
        "keys are per user"
    );
    assert!(stores
        .idempotency
        .find_idempotency(user_id, "other")
        .await
        .unwrap()
        .is_none());
}

async fn idempotency_records_expire_after_a_day(stores: Stores) {
    let user_id = Id::new();
    let first = record("h1", 201, "{}");
    let second = record("h2", 200, "{}");
    let old = now() - TimeDelta::hours(25);
    stores
        .idempotency
        .save_idempotency(user_id, "k", &first, old)
        .await
        .unwrap();
    assert!(
        stores
            .idempotency
            .find_idempotency(user_id, "k")
            .await
            .unwrap()
            .is_none(),
        "a record older than a day no longer answers"
    );
    let won = stores
        .idempotency
        .save_idempotency(user_id, "k", &second, now())
        .await
        .unwrap();
    assert_eq!(
        won.request_hash, "h2",
        "an expired record no longer holds its key"
    );
    let found = stores
        .idempotency
        .find_idempotency(user_id, "k")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.request_hash, "h2");

    let recent = now() - TimeDelta::hours(23);
    stores
        .idempotency
        .save_idempotency(user_id, "young", &first, recent)
        .await
        .unwrap();
    assert_eq!(
        stores
            .idempotency
            .find_idempotency(user_id, "young")
            .await
            .unwrap()
            .unwrap()
            .request_hash,
        "h1"
    );
}

async fn concurrent_idempotent_saves_agree_on_one_answer(stores: Stores) {
    let user_id = Id::new();
    let t = now();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let stores = stores.clone();
            tokio::spawn(async move {
                let mine = record(&format!("h{i}"), 201, &format!("{{\"n\":{i}}}"));
                stores
                    .idempotency
                    .save_idempotency(user_id, "k", &mine, t)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut answers = vec![];
    for task in tasks {
        answers.push(task.await.unwrap().request_hash);
    }
    answers.dedup();
    assert_eq!(
        answers.len(),
        1,
        "every caller sees the same winner: {answers:?}"
    );
    let stored = stores
        .idempotency
        .find_idempotency(user_id, "k")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.request_hash, answers[0]);
}

contract_tests! {
    the_first_idempotent_answer_wins,
    idempotency_records_expire_after_a_day,
    concurrent_idempotent_saves_agree_on_one_answer,
}
