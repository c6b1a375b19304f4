//! Refresh rotation and access tokens: a spent refresh token revokes its family; forged, foreign,
//! expired and revoked access tokens are refused.
//!
//! Tokens are forged here (base64url, and HMAC from the `hmac` crate), independently of the
//! service's JWT library, so a misconfigured validation can not agree with itself.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Sha256, Sha512};

use crate::harness::*;

// --- Forged JWTs ------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Alg {
    Unsigned,
    Hs256,
    Hs512,
}

/// A JWT with exactly this header and these claims, signed as `alg` says with `key`.
fn jwt(header: &Value, claims: &Value, alg: Alg, key: &str) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string().as_bytes()),
        URL_SAFE_NO_PAD.encode(claims.to_string().as_bytes())
    );
    let signature = match alg {
        Alg::Unsigned => Vec::new(),
        Alg::Hs256 => mac::<Hmac<Sha256>>(key, &signing_input),
        Alg::Hs512 => mac::<Hmac<Sha512>>(key, &signing_input),
    };
    let signature = URL_SAFE_NO_PAD.encode(signature);
    format!("{signing_input}.{signature}")
}

/// The MAC of `input` under `key` (HMAC accepts keys of any length).
fn mac<M: Mac + KeyInit>(key: &str, input: &str) -> Vec<u8> {
    <M as Mac>::new_from_slice(key.as_bytes())
        .expect("HMAC takes keys of any length")
        .chain_update(input.as_bytes())
        .finalize()
        .into_bytes()
        .to_vec()
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url payload"))
        .expect("JSON claims")
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// --- Refresh rotation -------------------------------------------------------------------------

async fn refresh(srv: &TestServer, token: &str) -> Resp {
    srv.post("/api/auth/refresh", None, &json!({ "refreshToken": token }))
        .await
}

#[tokio::test]
async fn replaying_a_spent_refresh_token_revokes_its_whole_family() {
    // No reuse interval: every replay is reuse (see `refresh_reuse` for the interval).
    let srv = TestServer::start(
        ServerEnv::fresh().with_vars(&[("REFRESH_REUSE_INTERVAL", "0")]),
        "serve",
    )
    .await;
    let user = srv.new_user().await;
    let other_session = srv.login(&user.email, &user.password).await;

    let r = refresh(&srv, &user.refresh).await;
    r.assert_status(200);
    let rotated = TestServer::parse_auth(&r, &user.email, &user.password);
    srv.me(&rotated.access).await.assert_status(200);

    // The spent token comes back: a thief, or the victim, replays it. It is refused ...
    assert_problem(&refresh(&srv, &user.refresh).await, 401, "unauthorized");
    // ... and the family is revoked, so whoever holds the rotated pair is locked out too.
    assert_problem(&refresh(&srv, &rotated.refresh).await, 401, "unauthorized");
    assert_problem(&srv.me(&rotated.access).await, 401, "unauthorized");
    // Only that family: the user's other login is untouched.
    srv.me(&other_session.access).await.assert_status(200);
    refresh(&srv, &other_session.refresh)
        .await
        .assert_status(200);
}

// --- Access tokens ----------------------------------------------------------------------------

#[tokio::test]
async fn forged_foreign_and_expired_access_tokens_are_refused() {
    let env = ServerEnv::fresh().with_vars(&[]);
    let (secret, refresh_secret) = (env.jwt_secret.clone(), env.jwt_refresh_secret.clone());
    let srv = TestServer::start(env, "serve").await;
    let user = srv.new_user().await;
    let claims = claims_of(&user.access);
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let edited = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims.clone();
        edit(&mut c);
        c
    };

    // Control: a token we sign ourselves with the right secret and algorithm is accepted, so
    // every refusal below is down to the one thing that differs.
    let ours = jwt(
        &hs256,
        &edited(&|c| c["jti"] = json!("00112233445566778899aabbccddeeff")),
        Alg::Hs256,
        &secret,
    );
    assert_ne!(ours, user.access);
    srv.me(&ours).await.assert_status(200);

    let now = now_secs();
    let forged: Vec<(&str, String)> = vec![
        (
            "alg none",
            jwt(
                &json!({"alg": "none", "typ": "JWT"}),
                &claims,
                Alg::Unsigned,
                "",
            ),
        ),
        (
            "alg None",
            jwt(
                &json!({"alg": "None", "typ": "JWT"}),
                &claims,
                Alg::Unsigned,
                "",
            ),
        ),
        (
            "HS256 header without a signature",
            jwt(&hs256, &claims, Alg::Unsigned, ""),
        ),
        (
            "HS512 with the right secret",
            jwt(
                &json!({"alg": "HS512", "typ": "JWT"}),
                &claims,
                Alg::Hs512,
                &secret,
            ),
        ),
        (
            "wrong issuer",
            jwt(
                &hs256,
                &edited(&|c| c["iss"] = json!("someone-else")),
                Alg::Hs256,
                &secret,
            ),
        ),
        (
            "wrong audience",
            jwt(
                &hs256,
                &edited(&|c| c["aud"] = json!("another-api")),
                Alg::Hs256,
                &secret,
            ),
        ),
        (
            "expired an hour ago",
            jwt(
                &hs256,
                &edited(&|c| {
                    c["iat"] = json!(now - 7200);
                    c["exp"] = json!(now - 3600);
                }),
                Alg::Hs256,
                &secret,
            ),
        ),
        (
            "no expiry",
            jwt(
                &hs256,
                &edited(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
                Alg::Hs256,
                &secret,
            ),
        ),
        (
            "signed with another secret",
            jwt(&hs256, &claims, Alg::Hs256, &random_string(48)),
        ),
        (
            "signed with the refresh secret",
            jwt(&hs256, &claims, Alg::Hs256, &refresh_secret),
        ),
        (
            "a refresh-type token under the access secret",
            jwt(
                &hs256,
                &edited(&|c| c["typ"] = json!("refresh")),
                Alg::Hs256,
                &secret,
            ),
        ),
        (
            "a session that does not exist",
            jwt(
                &hs256,
                &edited(&|c| c["sid"] = json!("0123456789abcdef01234567")),
                Alg::Hs256,
                &secret,
            ),
        ),
    ];
    for (what, token) in &forged {
        for path in ["/api/auth/me", "/api/orders"] {
            let r = srv.get(path, Some(token)).await;
            assert_eq!(r.status, 401, "{what} was accepted: {}", r.ctx());
            assert_problem(&r, 401, "unauthorized");
        }
    }

    // Logout revokes the access token at once, not when it expires.
    let session = srv.login(&user.email, &user.password).await;
    srv.me(&session.access).await.assert_status(200);
    srv.call(
        Method::POST,
        "/api/auth/logout",
        Some(&session.access),
        None,
    )
    .await
    .assert_status(204);
    assert_problem(&srv.me(&session.access).await, 401, "unauthorized");
    // A token re-signed for the ended session is refused as well: revocation is by session.
    let resigned = jwt(&hs256, &claims_of(&session.access), Alg::Hs256, &secret);
    assert_problem(&srv.me(&resigned).await, 401, "unauthorized");
}
