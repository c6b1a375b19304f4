//! Password guesses that arrive together: the throttle counts an attempt before it verifies the
//! password, so a burst of concurrent wrong guesses for one email gets no more verifications than
//! the limit allows one at a time (issue 16, item 1).

use std::collections::BTreeMap;

use crate::harness::*;

const LIMIT: usize = 5;
const BURST: usize = 48;

#[tokio::test]
async fn a_burst_of_concurrent_wrong_passwords_is_verified_no_more_than_the_limit() {
    let srv = TestServer::start(
        ServerEnv::fresh().with_vars(&[
            ("LOGIN_MAX_FAILURES_PER_EMAIL", &LIMIT.to_string()),
            // Only the per-email limit is under test: the address may guess as it likes.
            ("LOGIN_MAX_FAILURES_PER_IP", "100000"),
        ]),
        "serve",
    )
    .await;
    let victim = srv.new_user().await;

    let guesses: Vec<String> = (0..BURST).map(|i| format!("guess {i}")).collect();
    let answers = join_all(guesses.iter().map(|g| srv.login_raw(&victim.email, g))).await;
    let mut by_status = BTreeMap::<u16, usize>::new();
    for r in &answers {
        match r.status {
            401 => assert_problem(r, 401, "invalid_credentials"),
            429 => assert_problem(r, 429, "rate_limited"),
            _ => panic!("unexpected answer to a wrong password: {}", r.ctx()),
        };
        *by_status.entry(r.status).or_default() += 1;
    }
    // Every 401 is a guess that was verified; the limit holds exactly, with no slack.
    assert_eq!(
        by_status.get(&401).copied().unwrap_or(0),
        LIMIT,
        "{BURST} concurrent wrong passwords were answered {by_status:?}"
    );
    // And the email stays locked for the right password too.
    assert_problem(
        &srv.login_raw(&victim.email, &victim.password).await,
        429,
        "rate_limited",
    );
}
