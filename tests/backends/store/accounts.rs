//! The `Accounts` contract: users with unique emails, sessions that rotate and tell reuse of a
//! spent refresh token from a session that is over.

use chrono::{DateTime, TimeDelta, Utc};
use order_service::domain::{Email, Id, Role, User};
use order_service::error::BackendError;
use order_service::store::{RotateOutcome, Session, Stores};

use super::{now, user};

async fn users_have_unique_emails(stores: Stores) {
    let ann = user("ann@example.com");
    stores.accounts.insert_user(&ann).await.unwrap();

    let by_id = stores
        .accounts
        .find_user(ann.id)
        .await
        .unwrap()
        .expect("found by id");
    let by_email = stores
        .accounts
        .find_user_by_email(&ann.email)
        .await
        .unwrap()
        .expect("found by email");
    for found in [&by_id, &by_email] {
        assert_eq!(
            (
                found.id,
                &found.email,
                found.name.as_str(),
                found.role,
                found.password_hash.as_str(),
                found.created_at
            ),
            (
                ann.id,
                &ann.email,
                ann.name.as_str(),
                ann.role,
                ann.password_hash.as_str(),
                ann.created_at
            )
        );
    }

    let twin = User {
        id: Id::new(),
        role: Role::Admin,
        ..ann.clone()
    };
    assert!(
        matches!(
            stores.accounts.insert_user(&twin).await,
            Err(BackendError::Duplicate)
        ),
        "a second account with the same email"
    );
    assert!(stores.accounts.find_user(twin.id).await.unwrap().is_none());
    assert!(matches!(
        stores.accounts.insert_user(&ann).await,
        Err(BackendError::Duplicate)
    ));

    let bob = user("bob@example.com");
    stores.accounts.insert_user(&bob).await.unwrap();
    assert_eq!(
        stores
            .accounts
            .find_user(bob.id)
            .await
            .unwrap()
            .unwrap()
            .email,
        bob.email
    );
    assert!(stores
        .accounts
        .find_user(Id::new())
        .await
        .unwrap()
        .is_none());
    let nobody = Email::parse("nobody@example.com").unwrap();
    assert!(stores
        .accounts
        .find_user_by_email(&nobody)
        .await
        .unwrap()
        .is_none());
}

async fn sessions_rotate_and_detect_reuse(stores: Stores) {
    let t = now();
    let session = Session {
        id: Id::new(),
        user_id: Id::new(),
        current_jti: "one".into(),
        expires_at: t + TimeDelta::days(7),
        revoked: false,
        created_at: t,
    };
    stores.accounts.insert_session(&session).await.unwrap();
    let stored = stores
        .accounts
        .find_session(session.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            stored.user_id,
            stored.current_jti.as_str(),
            stored.expires_at,
            stored.revoked,
            stored.created_at
        ),
        (session.user_id, "one", session.expires_at, false, t)
    );

    let later = t + TimeDelta::days(8);
    let rotate = |presented: &'static str, next: &'static str, at: DateTime<Utc>| {
        let stores = stores.clone();
        async move {
            stores
                .accounts
                .rotate_session(session.id, presented, next, later, at)
                .await
                .unwrap()
        }
    };
    assert_eq!(rotate("one", "two", t).await, RotateOutcome::Rotated);
    let stored = stores
        .accounts
        .find_session(session.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.current_jti.as_str(), stored.expires_at),
        ("two", later)
    );
    assert_eq!(
        rotate("one", "three", t).await,
        RotateOutcome::Reused,
        "a spent token"
    );
    assert_eq!(
        stores
            .accounts
            .find_session(session.id)
            .await
            .unwrap()
            .unwrap()
            .current_jti,
        "two",
        "reuse changes nothing by itself"
    );
    assert_eq!(
        rotate("two", "three", later).await,
        RotateOutcome::Inactive,
        "expired"
    );
    stores.accounts.revoke_session(session.id).await.unwrap();
    assert!(
        stores
            .accounts
            .find_session(session.id)
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
    assert_eq!(
        rotate("two", "three", t).await,
        RotateOutcome::Inactive,
        "revoked"
    );
    let unknown = stores
        .accounts
        .rotate_session(Id::new(), "x", "y", later, t)
        .await
        .unwrap();
    assert_eq!(unknown, RotateOutcome::Inactive);
    assert!(stores
        .accounts
        .find_session(Id::new())
        .await
        .unwrap()
        .is_none());
    stores
        .accounts
        .revoke_session(Id::new())
        .await
        .expect("revoking an unknown session is a no-op");
}

async fn batch_lookups_answer_each_user_in_order(stores: Stores) {
    let ann = user("ann.batch@example.com");
    let bob = user("bob.batch@example.com");
    stores.accounts.insert_user(&ann).await.unwrap();
    stores.accounts.insert_user(&bob).await.unwrap();
    let found = stores
        .accounts
        .find_users(&[bob.id, Id::new(), ann.id, bob.id])
        .await
        .unwrap();
    let ids: Vec<Option<Id>> = found.iter().map(|u| u.as_ref().map(|u| u.id)).collect();
    assert_eq!(ids, vec![Some(bob.id), None, Some(ann.id), Some(bob.id)]);
    assert_eq!(found[2].as_ref().unwrap().email, ann.email);
}

contract_tests! {
    users_have_unique_emails,
    sessions_rotate_and_detect_reuse,
    batch_lookups_answer_each_user_in_order,
}
