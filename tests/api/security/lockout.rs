//! Password guessing: failed logins lock an email (whether or not it exists) and an address,
//! without locking out the busy addresses that also log in well; passwords are stored as argon2id.

use std::collections::BTreeSet;

use crate::harness::*;

fn retry_after(r: &Resp) -> u64 {
    let value = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After: {}", r.ctx()));
    value
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is not delay-seconds: {value:?}"))
}

/// Header names of a response, minus those whose presence varies per request anyway.
fn header_names(r: &Resp) -> BTreeSet<String> {
    r.headers
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k != "date")
        .collect()
}

#[tokio::test]
async fn failed_logins_lock_an_email_whether_or_not_it_exists() {
    let srv = TestServer::start(
        ServerEnv::fresh().with_vars(&[("LOGIN_MAX_FAILURES_PER_EMAIL", "3")]),
        "serve",
    )
    .await;
    let victim = srv.new_user().await;
    let ghost = unique_email();

    let mut locked = Vec::new();
    for email in [victim.email.as_str(), ghost.as_str()] {
        for _ in 0..3 {
            let r = srv.login_raw(email, "wrong password").await;
            assert_problem(&r, 401, "invalid_credentials");
        }
        // Over the limit even the right password is refused: the guesser can not tell.
        let password = if email == victim.email {
            victim.password.as_str()
        } else {
            "wrong password"
        };
        let r = srv.login_raw(email, password).await;
        assert_problem(&r, 429, "rate_limited");
        let wait = retry_after(&r);
        assert!(
            (1..=900).contains(&wait),
            "Retry-After {wait}s is outside the 15 min window"
        );
        locked.push(r);
    }
    // The same answer for an account that exists and one that does not.
    let (existing, missing) = (&locked[0], &locked[1]);
    assert_eq!(
        without_instance(existing.json()),
        without_instance(missing.json()),
        "429 bodies differ between an existing and an unknown email"
    );
    assert_eq!(header_names(existing), header_names(missing));
    assert_eq!(retry_after(existing), retry_after(missing));

    // The lock is per email: everyone else logs in as usual.
    let bystander = srv.new_user().await;
    srv.login(&bystander.email, &bystander.password).await;
}

#[tokio::test]
async fn failed_logins_lock_an_address_but_busy_addresses_with_good_logins_are_served() {
    let srv = TestServer::start(
        ServerEnv::fresh().with_vars(&[
            ("LOGIN_MAX_FAILURES_PER_EMAIL", "3"),
            ("LOGIN_MAX_FAILURES_PER_IP", "5"),
        ]),
        "serve",
    )
    .await;
    // An office behind one address: thirty people log in successfully; nobody is throttled.
    let users = join_all((0..30).map(|_| srv.new_user())).await;
    let logins = join_all(users.iter().map(|u| srv.login_raw(&u.email, &u.password))).await;
    for r in &logins {
        r.assert_status(200);
    }

    // Someone at that address guesses passwords of five different accounts ...
    for u in &users[..5] {
        assert_problem(
            &srv.login_raw(&u.email, "guess").await,
            401,
            "invalid_credentials",
        );
    }
    // ... and the address is locked, for any account, right password or not.
    let r = srv.login_raw(&users[10].email, &users[10].password).await;
    assert_problem(&r, 429, "rate_limited");
    assert!(retry_after(&r) >= 1);
}

#[test]
fn passwords_are_hashed_with_argon2id_at_owasp_strength() {
    let hash = order_service::password::hash_password("x").expect("hash");
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "weaker than OWASP's argon2id minimum (19 MiB, 2 passes, 1 lane): {hash}"
    );
    let again = order_service::password::hash_password("x").expect("hash");
    assert_ne!(hash, again, "every hash has its own salt");
}
