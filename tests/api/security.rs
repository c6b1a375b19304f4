//! Abuse tests: hostile clients get nowhere. Stolen or forged tokens, password guessing, other
//! people's orders, oversized or malicious input and cross-origin pages are all refused, and the
//! refusals themselves reveal nothing (which accounts exist, which orders exist).
//!
//! Tokens are forged by hand (base64url + HMAC built on the crate's own `sha2`), independently of
//! the service's JWT library, so a misconfigured validation can not agree with itself.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::harness::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256, Sha512};

fn env_with(extra: &[(&str, &str)]) -> ServerEnv {
    let mut env = ServerEnv::fresh();
    env.extra = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env
}

// ---------------------------------------------------------------------------------------------
// Hand-made JWTs
// ---------------------------------------------------------------------------------------------

/// HMAC (RFC 2104) over a hash with the given block size.
fn hmac(key: &[u8], message: &[u8], block: usize, hash: fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let mut key = if key.len() > block {
        hash(key)
    } else {
        key.to_vec()
    };
    key.resize(block, 0);
    let pad = |byte: u8| key.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
    let inner = hash(&[pad(0x36), message.to_vec()].concat());
    hash(&[pad(0x5c), inner].concat())
}

fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

fn sha512(data: &[u8]) -> Vec<u8> {
    Sha512::digest(data).to_vec()
}

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
        Alg::Unsigned => String::new(),
        Alg::Hs256 => {
            URL_SAFE_NO_PAD.encode(hmac(key.as_bytes(), signing_input.as_bytes(), 64, sha256))
        }
        Alg::Hs512 => {
            URL_SAFE_NO_PAD.encode(hmac(key.as_bytes(), signing_input.as_bytes(), 128, sha512))
        }
    };
    format!("{signing_input}.{signature}")
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The forgeries below are only meaningful if the signing is right: RFC 4231, test case 2.
#[test]
fn hand_made_hmac_matches_rfc_4231() {
    let (key, data) = (b"Jefe", b"what do ya want for nothing?");
    assert_eq!(
        hex(&hmac(key, data, 64, sha256)),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(
        hex(&hmac(key, data, 128, sha512)),
        "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Refresh rotation
// ---------------------------------------------------------------------------------------------

async fn refresh(srv: &TestServer, token: &str) -> Resp {
    srv.post("/api/auth/refresh", None, &json!({ "refreshToken": token }))
        .await
}

#[tokio::test]
async fn replaying_a_spent_refresh_token_revokes_its_whole_family() {
    let srv = TestServer::start(env_with(&[]), "serve").await;
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

// ---------------------------------------------------------------------------------------------
// 9. Access tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn forged_foreign_and_expired_access_tokens_are_refused() {
    let env = env_with(&[]);
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

// ---------------------------------------------------------------------------------------------
// 10. Login throttling
// ---------------------------------------------------------------------------------------------

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
    let srv = TestServer::start(env_with(&[("LOGIN_MAX_FAILURES_PER_EMAIL", "3")]), "serve").await;
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
        env_with(&[
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

// ---------------------------------------------------------------------------------------------
// 11. Object-level access, for every `{id}` route in the OpenAPI document
// ---------------------------------------------------------------------------------------------

/// The id of an object that belongs to user A, by the route's resource.
fn object_id<'a>(path: &str, order_of_a: &'a str, product: &'a str) -> &'a str {
    if path.starts_with("/api/orders/{id}") {
        order_of_a
    } else if path.starts_with("/api/products/{id}") {
        product
    } else {
        panic!(
            "new route with an id: {path}. Teach this test which object of user A it addresses, \
             so that its object-level access check is tested"
        )
    }
}

/// A body that passes validation, for operations that take one.
fn body_for(method: &str, path: &str) -> Option<Value> {
    match (method, path) {
        ("post", "/api/products") => Some(json!({"name": "Forbidden", "price": 1, "stock": 1})),
        ("patch", "/api/products/{id}") => Some(json!({"stock": 5})),
        _ => None,
    }
}

#[tokio::test]
async fn other_users_objects_are_invisible_on_every_id_route() {
    // API only: A's order stays pending, so even cancelling it is possible for A.
    let srv = TestServer::start(env_with(&[]), "api").await;
    let admin = srv.login_admin().await;
    let product = str_of(
        &srv.create_product(&admin, &unique("Private"), 100, 10)
            .await["id"],
    );
    let a = srv.new_user().await;
    let b = srv.new_user().await;
    let order_of_a = str_of(&srv.place_order(&a, &[(&product, 1)]).await["id"]);
    let nobodys = "0123456789abcdef01234567";

    let doc = srv.get("/api-docs/openapi.json", None).await;
    doc.assert_status(200);
    let doc = doc.json();
    let mut owner_checks = Vec::new();
    let mut admin_checks = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if !["get", "put", "post", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let other_params: Vec<&str> = path
                .split('/')
                .filter(|s| s.starts_with('{') && *s != "{id}")
                .collect();
            assert!(
                other_params.is_empty(),
                "{method} {path}: path parameters {other_params:?} are unknown to this test"
            );
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            if !secured {
                continue; // public (e.g. the catalogue)
            }
            let http_method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let url = |id: &str| path.replace("{id}", id);
            let real = if path.contains("{id}") {
                url(object_id(path, &order_of_a, &product))
            } else {
                path.clone()
            };
            let body = body_for(method, path);
            let call = |token: Option<String>, url: String| {
                let (http_method, body) = (http_method.clone(), body.clone());
                let srv = &srv;
                async move {
                    srv.call(http_method, &url, token.as_deref(), body.as_ref())
                        .await
                }
            };

            let r = call(None, real.clone()).await;
            assert_problem(&r, 401, "unauthorized");

            if op["responses"].get("403").is_some() {
                // Admin-only: a user's token is refused outright.
                let r = call(Some(b.access.clone()), real.clone()).await;
                assert_eq!(
                    r.status,
                    403,
                    "{method} {path} with a user token: {}",
                    r.ctx()
                );
                assert_problem(&r, 403, "forbidden");
                admin_checks += 1;
            } else if path.contains("{id}") {
                // Owner-scoped: B sees A's object exactly as an object that does not exist.
                let theirs = call(Some(b.access.clone()), real.clone()).await;
                assert_eq!(
                    theirs.status,
                    404,
                    "{method} {path}: user B reached user A's object: {}",
                    theirs.ctx()
                );
                assert_problem(&theirs, 404, "not_found");
                let missing = call(Some(b.access.clone()), url(nobodys)).await;
                assert_eq!(
                    without_instance(theirs.json()),
                    without_instance(missing.json()),
                    "{method} {path}: another user's object and no object answer differently"
                );
                owner_checks.push((http_method.clone(), real.clone(), body.clone()));
            }
        }
    }
    assert!(
        owner_checks.len() >= 2 && admin_checks >= 2,
        "the document should have owner-scoped and admin routes: {} and {admin_checks}",
        owner_checks.len()
    );
    // Control, after B's attempts: the same calls work for A, so the ids were real and B's
    // attempts changed nothing. Reads first, so the cancel comes last.
    owner_checks.sort_by_key(|(m, _, _)| *m != Method::GET);
    for (method, url, body) in owner_checks {
        let r = srv.call(method, &url, Some(&a.access), body.as_ref()).await;
        assert!(
            (200..300).contains(&r.status),
            "the owner was refused: {}",
            r.ctx()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 12. Hostile input
// ---------------------------------------------------------------------------------------------

async fn post_raw(
    srv: &TestServer,
    path: &str,
    token: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Resp {
    let rb = srv
        .request(Method::POST, path)
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body);
    srv.send(rb).await
}

/// An order body of exactly `size` bytes, padded with an unknown field (which is ignored).
fn order_of_size(product: &str, size: usize) -> Vec<u8> {
    let mut body = order_body(&[(product, 1)]);
    body["padding"] = json!("");
    let base = body.to_string().len();
    assert!(size >= base);
    body["padding"] = json!("x".repeat(size - base));
    let bytes = body.to_string().into_bytes();
    assert_eq!(bytes.len(), size);
    bytes
}

fn address(street: &str, city: &str, state: &str, zip: &str, country: &str) -> Value {
    json!({"street": street, "city": city, "state": state, "zipCode": zip, "country": country})
}

#[tokio::test]
async fn hostile_input_is_refused_and_honest_unicode_survives() {
    let srv = TestServer::start(env_with(&[]), "api").await;
    let admin = srv.login_admin().await;
    let pid = str_of(
        &srv.create_product(&admin, &unique("Target"), 250, 1000)
            .await["id"],
    );
    let user = srv.new_user().await;
    let json_ct = "application/json";

    // Body size: exactly 1 MiB is accepted, one byte more is 413.
    const LIMIT: usize = 1024 * 1024;
    let r = post_raw(
        &srv,
        "/api/orders",
        &user.access,
        json_ct,
        order_of_size(&pid, LIMIT),
    )
    .await;
    r.assert_status(201);
    let r = post_raw(
        &srv,
        "/api/orders",
        &user.access,
        json_ct,
        order_of_size(&pid, LIMIT + 1),
    )
    .await;
    assert_problem(&r, 413, "payload_too_large");

    // Item counts and quantities: 100 lines pass (merged into one), 101 do not.
    let lines = |n: usize, q: i64| vec![(pid.as_str(), q); n];
    let r = srv
        .place_order_raw(&user, &order_body(&lines(100, 1)))
        .await;
    r.assert_status(201);
    assert_eq!(r.json()["items"][0]["quantity"], json!(100));
    let r = srv
        .place_order_raw(&user, &order_body(&lines(101, 1)))
        .await;
    assert_validation(&r, &["items"]);
    for bad in [0, -1, 1001, i64::MAX] {
        let r = srv
            .place_order_raw(&user, &order_body(&[(&pid, bad)]))
            .await;
        assert_validation(&r, &["items[0].quantity"]);
    }

    // Names: 10,000 characters, or control characters (log and header injection), are refused.
    let huge = "n".repeat(10_000);
    let hostile_names = [
        huge.as_str(),
        "Ann\nBcc: everyone@example.com",
        "Ann\r\nX-Injected: 1",
        "Ann\u{0}Lee",
        "\u{1b}[31mred\u{1b}[0m",
        "tab\tbed",
    ];
    for name in hostile_names {
        let r = srv
            .register_raw(&unique_email(), "correct horse battery", name)
            .await;
        assert_validation(&r, &["name"]);
        let r = srv
            .create_product_raw(&admin, &json!({"name": name, "price": 1, "stock": 1}))
            .await;
        assert_validation(&r, &["name"]);
        let mut body = order_body(&[(&pid, 1)]);
        body["shippingAddress"]["city"] = json!(name);
        let r = srv.place_order_raw(&user, &body).await;
        assert_validation(&r, &["shippingAddress.city"]);
    }

    // Honest non-ASCII text is accepted and comes back intact.
    let name = "Zoë Ñandú-Łukasz 🚀";
    let r = srv
        .register_raw(&unique_email(), "correct horse battery", name)
        .await;
    r.assert_status(201);
    let zoe = TestServer::parse_auth(&r, "", "");
    assert_eq!(srv.me(&zoe.access).await.json()["name"], json!(name));
    let product_name = "Café ☕ 東京 — naïve";
    let cafe = srv
        .create_product_raw(
            &admin,
            &json!({"name": product_name, "description": "Ünïcödé ✓", "price": 450, "stock": 5}),
        )
        .await;
    cafe.assert_status(201);
    let cafe = cafe.json();
    let cafe_id = str_of(&cafe["id"]);
    assert_eq!(srv.get_product(&cafe_id).await["name"], json!(product_name));
    let addr = address("Straße 5 🏠", "Zürich", "Île-de-France", "75001", "Česko");
    let mut body = order_body(&[(&cafe_id, 1)]);
    body["shippingAddress"] = addr.clone();
    let r = srv.place_order_raw(&zoe, &body).await;
    r.assert_status(201);
    let id = str_of(&r.json()["id"]);
    let stored = srv.get_order(&zoe, &id).await;
    assert_eq!(stored["shippingAddress"], addr);
    assert_eq!(stored["items"][0]["productName"], json!(product_name));

    // Wrong content types are 415, whatever the body.
    let good = order_body(&[(&pid, 1)]).to_string().into_bytes();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
        "multipart/form-data; boundary=x",
    ] {
        let r = post_raw(&srv, "/api/orders", &user.access, ct, good.clone()).await;
        assert_problem(&r, 415, "unsupported_media_type");
    }
    let rb = srv
        .request(Method::POST, "/api/orders")
        .bearer_auth(&user.access)
        .body(good);
    assert_problem(&srv.send(rb).await, 415, "unsupported_media_type");

    // Unknown fields are ignored (documented), including ones that try to set what only the
    // service decides: status, owner, prices, totals.
    let mut sneaky = order_body(&[(&pid, 2)]);
    sneaky["status"] = json!("completed");
    sneaky["userId"] = admin.user["id"].clone();
    sneaky["totalAmount"] = json!(1);
    sneaky["discount"] = json!(100);
    sneaky["items"][0]["unitPrice"] = json!(1);
    sneaky["items"][0]["productName"] = json!("Free stuff");
    let r = srv.place_order_raw(&user, &sneaky).await;
    r.assert_status(201);
    let o = r.json();
    assert_order(&o);
    assert_eq!(o["status"], json!("pending"));
    assert_eq!(o["userId"], user.user["id"]);
    assert_eq!(o["items"][0]["unitPrice"], json!(250));
    assert_ne!(o["items"][0]["productName"], json!("Free stuff"));
    assert_eq!(o["totalAmount"], json!(500));
}

// ---------------------------------------------------------------------------------------------
// 13. Security headers and CORS
// ---------------------------------------------------------------------------------------------

fn assert_security_headers(r: &Resp) {
    let want = |name: &str| {
        r.header(name)
            .unwrap_or_else(|| panic!("no {name}: {}", r.ctx()))
    };
    assert_eq!(want("x-content-type-options"), "nosniff", "{}", r.ctx());
    assert_eq!(want("x-frame-options"), "DENY", "{}", r.ctx());
    let csp = want("content-security-policy");
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("default-src"),
        "weak Content-Security-Policy {csp:?}: {}",
        r.ctx()
    );
    let referrer = want("referrer-policy");
    assert!(
        [
            "no-referrer",
            "same-origin",
            "strict-origin",
            "strict-origin-when-cross-origin"
        ]
        .contains(&referrer.as_str()),
        "Referrer-Policy {referrer:?}: {}",
        r.ctx()
    );
}

async fn preflight(srv: &TestServer, origin: &str) -> Resp {
    let rb = srv
        .request(Method::OPTIONS, "/api/orders")
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        );
    srv.send(rb).await
}

async fn cross_origin_get(srv: &TestServer, origin: &str) -> Resp {
    let rb = srv
        .request(Method::GET, "/api/products")
        .header("origin", origin);
    srv.send(rb).await
}

#[tokio::test]
async fn every_response_carries_security_headers_and_cors_is_closed_by_default() {
    let srv = TestServer::start(env_with(&[]), "serve").await;
    let user = srv.new_user().await;
    let responses = vec![
        srv.get("/health", None).await,
        srv.get("/api/products", None).await,
        srv.get("/api/auth/me", Some(&user.access)).await,
        srv.get("/api/auth/me", None).await,
        srv.get("/api/orders/not-an-id", Some(&user.access)).await,
        srv.get("/api/orders/0123456789abcdef01234567", Some(&user.access))
            .await,
        srv.post("/api/orders", Some(&user.access), &json!({}))
            .await,
        srv.get("/no/such/route", None).await,
        srv.call(Method::DELETE, "/api/products", None, None).await,
        srv.get("/api-docs/", None).await,
        srv.get("/api-docs/openapi.json", None).await,
        srv.get("/metrics", None).await,
    ];
    let statuses: BTreeSet<u16> = responses.iter().map(|r| r.status).collect();
    assert!(
        statuses.contains(&200)
            && statuses.contains(&400)
            && statuses.contains(&401)
            && statuses.contains(&404)
            && statuses.contains(&405),
        "the sample should span 2xx and 4xx: {statuses:?}"
    );
    for r in &responses {
        assert_security_headers(r);
    }

    // No origins configured: a cross-origin page gets no permission at all.
    for r in [
        preflight(&srv, "https://evil.example").await,
        cross_origin_get(&srv, "https://evil.example").await,
    ] {
        assert_eq!(
            r.header("access-control-allow-origin"),
            None,
            "CORS allowed by default: {}",
            r.ctx()
        );
        assert_eq!(r.header("access-control-allow-credentials"), None);
    }
}

#[tokio::test]
async fn cors_allows_only_the_configured_origin() {
    let srv = TestServer::start(
        env_with(&[("CORS_ALLOWED_ORIGINS", "https://shop.example")]),
        "serve",
    )
    .await;
    let r = preflight(&srv, "https://shop.example").await;
    assert!(
        (200..300).contains(&r.status),
        "preflight from the shop: {}",
        r.ctx()
    );
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://shop.example"),
        "{}",
        r.ctx()
    );
    let methods = r
        .header("access-control-allow-methods")
        .unwrap_or_default()
        .to_ascii_uppercase();
    assert!(methods.contains("POST"), "allowed methods {methods:?}");
    let r = cross_origin_get(&srv, "https://shop.example").await;
    r.assert_status(200);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://shop.example")
    );
    assert_security_headers(&r);

    for origin in [
        "https://evil.example",
        "https://shop.example.evil.example",
        "http://shop.example",
        "null",
    ] {
        for r in [
            preflight(&srv, origin).await,
            cross_origin_get(&srv, origin).await,
        ] {
            let allowed = r.header("access-control-allow-origin");
            assert!(
                allowed.is_none(),
                "origin {origin} was allowed ({allowed:?}): {}",
                r.ctx()
            );
        }
    }
}
