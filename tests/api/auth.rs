//! Registration, login, token refresh and rotation, logout and bearer authentication.

use crate::harness::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

#[tokio::test]
async fn register_login_me_and_duplicate_email() {
    let srv = TestServer::serve().await;
    let local = unique("Mixed.Case");
    let email = format!("{local}@Example.COM");
    let lower = email.to_lowercase();

    let reg = srv
        .register(&email, "s3cret-password", "Ada Lovelace")
        .await;
    assert_eq!(reg.user["email"], json!(lower));
    let created = assert_time(&reg.user["createdAt"], "createdAt");
    let age = chrono::Utc::now().signed_duration_since(created);
    assert!(
        age.num_seconds().abs() < 300,
        "createdAt {created} is not now"
    );

    // expiresIn is in seconds: it matches the access token's own lifetime.
    let claims = jwt_claims(&reg.access);
    if let Some(exp) = claims["exp"].as_i64() {
        let expires_in = reg.body["expiresIn"].as_i64().unwrap();
        let left = exp - chrono::Utc::now().timestamp();
        assert!(
            (left - expires_in).abs() <= 60,
            "expiresIn {expires_in} s but the token expires in {left} s"
        );
    }

    // /me answers the same user object.
    let r = srv.me(&reg.access).await;
    r.assert_status(200);
    let me = r.json();
    assert_user(&me);
    assert_eq!(me, reg.user, "/me must answer the registered user");

    // Login with the email as typed at registration, and in lower case.
    for typed in [email.as_str(), lower.as_str()] {
        let auth = srv.login(typed, "s3cret-password").await;
        assert_eq!(auth.user, reg.user, "login answers the same user");
        assert_ne!(auth.access, reg.access, "each login is a new session");
        let r = srv.me(&auth.access).await;
        r.assert_status(200);
        assert_eq!(r.json()["id"], reg.user["id"]);
    }

    // The same email in any case is taken.
    for again in [email.clone(), lower.clone(), email.to_uppercase()] {
        let r = srv
            .register_raw(&again, "another-password", "Someone Else")
            .await;
        assert_problem(&r, 409, "email_taken");
    }
    // The original password still works (the failed registration changed nothing).
    srv.login(&lower, "s3cret-password").await;

    // Seeded accounts exist with their roles.
    let admin = srv.login_admin().await;
    assert_eq!(admin.user["email"], json!(ADMIN_EMAIL));
    let user = srv.login(SEED_USER_EMAIL, SEED_USER_PASSWORD).await;
    assert_eq!(user.user["role"], json!("user"));
}

#[tokio::test]
async fn register_validation_names_each_bad_field() {
    let srv = TestServer::serve().await;

    let r = srv.register_raw("not-an-email", "short", "   ").await;
    assert_validation(&r, &["email", "password", "name"]);

    let r = srv.register_raw(&unique_email(), "1234567", "Ann").await;
    assert_validation(&r, &["password"]);

    let r = srv.register_raw(&unique_email(), "long-enough", "").await;
    assert_validation(&r, &["name"]);

    for bad in [
        "",
        "no-at-sign",
        "two@@example.com",
        "@example.com",
        "user@",
        "a b@example.com",
    ] {
        let r = srv.register_raw(bad, "long-enough", "Ann").await;
        assert_validation(&r, &["email"]);
    }

    // Missing fields are a 400 too, never a 5xx.
    let r = srv
        .post(
            "/api/auth/register",
            None,
            &json!({"email": unique_email()}),
        )
        .await;
    assert_eq!(r.status, 400, "missing password and name: {}", r.ctx());
    assert!(
        r.content_type().starts_with("application/problem+json"),
        "{}",
        r.ctx()
    );

    // Exactly 8 characters is enough; nothing was created by the refused attempts.
    let email = unique_email();
    srv.register(&email, "12345678", "Ann").await;
}

#[tokio::test]
async fn login_failures_are_indistinguishable() {
    let srv = TestServer::serve().await;
    let user = srv.new_user().await;

    let wrong_password = srv.login_raw(&user.email, "not-the-password").await;
    let b1 = assert_problem(&wrong_password, 401, "invalid_credentials");
    let unknown = srv.login_raw(&unique_email(), "not-the-password").await;
    let b2 = assert_problem(&unknown, 401, "invalid_credentials");
    assert_eq!(
        without_instance(b1),
        without_instance(b2),
        "wrong password and unknown email must answer the same body"
    );
    assert_eq!(wrong_password.content_type(), unknown.content_type());

    // Seeded admin with a wrong password.
    let r = srv.login_raw(ADMIN_EMAIL, "admin1234").await;
    assert_problem(&r, 401, "invalid_credentials");

    // Missing password: a client mistake, 400.
    let r = srv
        .post("/api/auth/login", None, &json!({"email": user.email}))
        .await;
    assert_eq!(r.status, 400, "{}", r.ctx());
}

#[tokio::test]
async fn refresh_rotates_and_spends_the_token() {
    // No reuse interval, so a spent token is refused at once (the interval has its own tests
    // in `security::refresh_reuse`).
    let srv = TestServer::start(
        ServerEnv::fresh().with_vars(&[("REFRESH_REUSE_INTERVAL", "0")]),
        "serve",
    )
    .await;
    let user = srv.new_user().await;

    let r = srv
        .post(
            "/api/auth/refresh",
            None,
            &json!({"refreshToken": user.refresh}),
        )
        .await;
    r.assert_status(200);
    let second = TestServer::parse_auth(&r, &user.email, &user.password);
    assert_eq!(second.user, user.user, "refresh answers the same user");
    assert_ne!(
        second.refresh, user.refresh,
        "refresh must hand out a new refresh token"
    );
    assert_ne!(
        second.access, user.access,
        "refresh must hand out a new access token"
    );
    srv.me(&second.access).await.assert_status(200);

    // The presented token is spent. (What a reuse does to the rest of that session is the
    // service's choice; this test does not use that session again.)
    let r = srv
        .post(
            "/api/auth/refresh",
            None,
            &json!({"refreshToken": user.refresh}),
        )
        .await;
    assert_problem(&r, 401, "unauthorized");

    // Another session: an access token is not a refresh token, nor is garbage, and those
    // refused attempts do not spend the session's real refresh token.
    let other = srv.login(&user.email, &user.password).await;
    for bad in [
        other.access.as_str(),
        second.access.as_str(),
        "garbage",
        "a.b.c",
        "",
    ] {
        let r = srv
            .post("/api/auth/refresh", None, &json!({"refreshToken": bad}))
            .await;
        if bad.is_empty() {
            // An empty token may be refused as invalid input or as a bad token.
            assert!(
                r.status == 400 || r.status == 401,
                "empty refresh token: {}",
                r.ctx()
            );
        } else {
            assert_problem(&r, 401, "unauthorized");
        }
    }
    let r = srv
        .post(
            "/api/auth/refresh",
            None,
            &json!({"refreshToken": other.refresh}),
        )
        .await;
    r.assert_status(200);
    let next = TestServer::parse_auth(&r, &user.email, &user.password);
    // Each new refresh token works exactly once.
    let r = srv
        .post(
            "/api/auth/refresh",
            None,
            &json!({"refreshToken": next.refresh}),
        )
        .await;
    r.assert_status(200);
    let last = TestServer::parse_auth(&r, &user.email, &user.password);
    srv.me(&last.access).await.assert_status(200);
    let r = srv
        .post(
            "/api/auth/refresh",
            None,
            &json!({"refreshToken": next.refresh}),
        )
        .await;
    assert_problem(&r, 401, "unauthorized");

    // Missing field: a client mistake.
    let r = srv.post("/api/auth/refresh", None, &json!({})).await;
    assert_eq!(r.status, 400, "{}", r.ctx());
}

#[tokio::test]
async fn logout_revokes_only_that_session() {
    let srv = TestServer::serve().await;
    let a = srv.new_user().await;
    let b = srv.login(&a.email, &a.password).await;

    let r = srv
        .call(
            reqwest::Method::POST,
            "/api/auth/logout",
            Some(&a.access),
            None,
        )
        .await;
    r.assert_status(204);
    assert!(r.text.is_empty(), "204 must have no body: {}", r.ctx());

    assert_problem(&srv.me(&a.access).await, 401, "unauthorized");
    let r = srv
        .post(
            "/api/auth/refresh",
            None,
            &json!({"refreshToken": a.refresh}),
        )
        .await;
    assert_problem(&r, 401, "unauthorized");

    // The other session keeps working, both its access and refresh token.
    srv.me(&b.access).await.assert_status(200);
    let r = srv
        .post(
            "/api/auth/refresh",
            None,
            &json!({"refreshToken": b.refresh}),
        )
        .await;
    r.assert_status(200);
    let b2 = TestServer::parse_auth(&r, &b.email, &b.password);
    srv.me(&b2.access).await.assert_status(200);

    // Logout without a token is 401; logging out of an ended session again is harmless (204),
    // so a client may retry a logout whose answer it lost (issue 16).
    let r = srv
        .call(reqwest::Method::POST, "/api/auth/logout", None, None)
        .await;
    assert_problem(&r, 401, "unauthorized");
    let r = srv
        .call(
            reqwest::Method::POST,
            "/api/auth/logout",
            Some(&a.access),
            None,
        )
        .await;
    r.assert_status(204);
    assert_problem(&srv.me(&a.access).await, 401, "unauthorized");
}

fn assert_bearer_challenge(r: &Resp) {
    assert_problem(r, 401, "unauthorized");
    let challenge = r
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("no WWW-Authenticate: {}", r.ctx()));
    assert!(
        challenge.starts_with("Bearer"),
        "WWW-Authenticate is {challenge:?}: {}",
        r.ctx()
    );
}

fn jwt_claims(token: &str) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "access token is not a JWT: {token}");
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(parts[1])
            .expect("JWT payload base64url"),
    )
    .expect("JWT payload JSON")
}

/// Re-encodes a JWT with a modified payload but the original signature.
fn tamper(token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "access token is not a JWT: {token}");
    let payload = URL_SAFE_NO_PAD
        .decode(parts[1])
        .expect("JWT payload base64url");
    let mut claims: Value = serde_json::from_slice(&payload).expect("JWT payload JSON");
    edit(&mut claims);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_string(&claims).unwrap().as_bytes());
    format!("{}.{}.{}", parts[0], payload, parts[2])
}

#[tokio::test]
async fn bad_bearer_tokens_are_401_with_challenge() {
    let srv = TestServer::serve().await;
    let user = srv.new_user().await;

    // Missing header.
    assert_bearer_challenge(&srv.get("/api/auth/me", None).await);

    // Malformed headers.
    for value in [
        "".to_string(),
        "Bearer".to_string(),
        "Bearer ".to_string(),
        "Basic dXNlcjpwYXNz".to_string(),
        format!("Token {}", user.access),
        "Bearer garbage".to_string(),
        "Bearer a.b.c".to_string(),
    ] {
        let rb = srv
            .request(reqwest::Method::GET, "/api/auth/me")
            .header("authorization", value.clone());
        let r = srv.send(rb).await;
        assert_bearer_challenge(&r);
    }

    // A refresh token is not an access token.
    assert_bearer_challenge(&srv.me(&user.refresh).await);

    // Signature checks: a changed signature, or a changed payload with the old signature.
    let mut sig_changed = user.access.clone();
    let last = sig_changed.pop().unwrap();
    sig_changed.push(if last == 'A' { 'B' } else { 'A' });
    assert_bearer_challenge(&srv.me(&sig_changed).await);
    let forged = tamper(&user.access, |c| {
        c["role"] = json!("admin");
        if let Some(exp) = c["exp"].as_i64() {
            c["exp"] = json!(exp + 3600);
        }
    });
    assert_bearer_challenge(&srv.me(&forged).await);
    let r = srv
        .post(
            "/api/products",
            Some(&forged),
            &json!({"name": "x", "price": 1, "stock": 1}),
        )
        .await;
    assert_problem(&r, 401, "unauthorized");

    // The genuine token still works.
    srv.me(&user.access).await.assert_status(200);
}
