//! Client mistakes: every one is a 4xx `application/problem+json`, never a 5xx.

use crate::harness::*;
use reqwest::Method;
use serde_json::{json, Value};

/// A problem response with `status`, whatever its code; returns the body.
fn assert_problem_any_code(r: &Resp, status: u16) -> Value {
    let code = r
        .json()
        .get("code")
        .and_then(|c| c.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("problem without code: {}", r.ctx()));
    assert_problem(r, status, &code)
}

/// A 400 whose code is `malformed_json` or `validation_failed` and whose text names `field`.
fn assert_bad_type(r: &Resp, field: &str) {
    assert_eq!(r.status, 400, "{}", r.ctx());
    let code = r.json()["code"].as_str().unwrap_or("").to_string();
    assert!(
        code == "malformed_json" || code == "validation_failed",
        "wrong type must be malformed_json or validation_failed, got {code:?}: {}",
        r.ctx()
    );
    let body = assert_problem(r, 400, &code);
    let mut text = body["detail"].as_str().unwrap_or("").to_string();
    if let Some(errors) = body["errors"].as_array() {
        for e in errors {
            text.push_str(&e.to_string());
        }
    }
    assert!(
        text.contains(field),
        "the problem does not name `{field}`: {}",
        r.ctx()
    );
}

async fn raw(
    srv: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    ct: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Resp {
    let mut rb = srv.request(method, path).body(body);
    if let Some(ct) = ct {
        rb = rb.header("content-type", ct);
    }
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    srv.send(rb).await
}

#[tokio::test]
async fn malformed_json_wrong_types_and_missing_fields() {
    let srv = TestServer::serve().await;
    let admin = srv.login_admin().await;
    let user = srv.new_user().await;
    let product = srv.create_product(&admin, &unique("Typed"), 100, 100).await;
    let pid = str_of(&product["id"]);
    let ppath = format!("/api/products/{pid}");
    let json_ct = Some("application/json");

    // Syntax errors.
    let endpoints: Vec<(Method, &str, Option<&str>)> = vec![
        (Method::POST, "/api/auth/register", None),
        (Method::POST, "/api/auth/login", None),
        (Method::POST, "/api/auth/refresh", None),
        (Method::POST, "/api/products", Some(&admin.access)),
        (Method::PATCH, &ppath, Some(&admin.access)),
        (Method::POST, "/api/orders", Some(&user.access)),
    ];
    for (m, path, token) in &endpoints {
        for body in [r#"{"email": "#, "{not json}", r#"{"a":1,}"#, "\u{0}\u{1}"] {
            let r = raw(&srv, m.clone(), path, *token, json_ct, body).await;
            assert_problem(&r, 400, "malformed_json");
        }
        // An empty body with a JSON content type is not JSON either.
        let r = raw(&srv, m.clone(), path, *token, json_ct, "").await;
        assert_eq!(r.status, 400, "empty JSON body: {}", r.ctx());
        assert!(
            r.content_type().starts_with("application/problem+json"),
            "{}",
            r.ctx()
        );
        // Valid JSON of the wrong shape.
        for body in ["[]", "42", "\"text\"", "null"] {
            let r = raw(&srv, m.clone(), path, *token, json_ct, body).await;
            assert_eq!(r.status, 400, "body {body}: {}", r.ctx());
            let code = assert_problem_any_code(&r, 400)["code"].clone();
            assert!(
                code == json!("malformed_json") || code == json!("validation_failed"),
                "{}",
                r.ctx()
            );
        }
    }

    // Wrong JSON types name the field.
    let mut body = order_body(&[(&pid, 1)]);
    body["items"][0]["quantity"] = json!("two");
    assert_bad_type(&srv.place_order_raw(&user, &body).await, "quantity");
    body["items"][0]["quantity"] = json!(1.5);
    assert_bad_type(&srv.place_order_raw(&user, &body).await, "quantity");
    body["items"][0]["quantity"] = json!(1e30);
    assert_bad_type(&srv.place_order_raw(&user, &body).await, "quantity");
    let mut body = order_body(&[(&pid, 1)]);
    body["items"] = json!({"productId": pid, "quantity": 1});
    assert_bad_type(&srv.place_order_raw(&user, &body).await, "items");
    let mut body = order_body(&[(&pid, 1)]);
    body["shippingAddress"]["zipCode"] = json!(62701);
    assert_bad_type(&srv.place_order_raw(&user, &body).await, "zipCode");

    let r = srv
        .create_product_raw(
            &admin,
            &json!({"name": unique("P"), "price": "abc", "stock": 1}),
        )
        .await;
    assert_bad_type(&r, "price");
    // Amounts are integer cents: a decimal price is refused.
    let r = srv
        .create_product_raw(
            &admin,
            &json!({"name": unique("P"), "price": 19.99, "stock": 1}),
        )
        .await;
    assert_bad_type(&r, "price");
    let r = srv
        .create_product_raw(
            &admin,
            &json!({"name": unique("P"), "price": 100, "stock": "many"}),
        )
        .await;
    assert_bad_type(&r, "stock");
    let r = srv
        .create_product_raw(
            &admin,
            &json!({"name": unique("P"), "price": 1e20, "stock": 1}),
        )
        .await;
    assert_bad_type(&r, "price");
    let r = srv
        .patch(&ppath, Some(&admin.access), &json!({"price": "free"}))
        .await;
    assert_bad_type(&r, "price");
    let r = srv
        .post(
            "/api/auth/register",
            None,
            &json!({"email": 42, "password": "long-enough", "name": "Ann"}),
        )
        .await;
    assert_bad_type(&r, "email");
    let r = srv
        .post(
            "/api/auth/login",
            None,
            &json!({"email": user.email, "password": ["x"]}),
        )
        .await;
    assert_bad_type(&r, "password");

    // Missing or null fields.
    for body in [
        json!({}),
        json!({"email": null, "password": null, "name": null}),
    ] {
        let r = srv.post("/api/auth/register", None, &body).await;
        assert_eq!(r.status, 400, "{}", r.ctx());
        assert!(
            r.content_type().starts_with("application/problem+json"),
            "{}",
            r.ctx()
        );
    }
    let r = srv
        .post("/api/orders", Some(&user.access), &json!({}))
        .await;
    assert_eq!(r.status, 400, "{}", r.ctx());
    let r = srv
        .post(
            "/api/orders",
            Some(&user.access),
            &json!({"items": [{}], "shippingAddress": default_address(), "paymentMethod": "card"}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.ctx());

    // A charset parameter on the JSON content type is fine.
    let body =
        json!({"email": unique_email(), "password": "long-enough", "name": "Charset"}).to_string();
    let r = raw(
        &srv,
        Method::POST,
        "/api/auth/register",
        None,
        Some("application/json; charset=utf-8"),
        body,
    )
    .await;
    r.assert_status(201);

    // Nothing above touched the stock.
    assert_eq!(srv.product_stock(&pid).await, 100);
}

#[tokio::test]
async fn wrong_content_type_and_oversized_bodies() {
    let srv = TestServer::serve().await;
    let user = srv.new_user().await;
    let admin = srv.login_admin().await;
    let reg =
        json!({"email": unique_email(), "password": "long-enough", "name": "Ann"}).to_string();

    // 415 for a non-JSON content type, or none at all.
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/xml"),
        None,
    ] {
        let r = raw(
            &srv,
            Method::POST,
            "/api/auth/register",
            None,
            ct,
            reg.clone(),
        )
        .await;
        if ct.is_none() && r.status == 400 {
            // Without a content type, "not JSON" is also a fair reading.
            continue;
        }
        assert_problem(&r, 415, "unsupported_media_type");
    }
    let login = json!({"email": user.email, "password": user.password}).to_string();
    let r = raw(
        &srv,
        Method::POST,
        "/api/auth/login",
        None,
        Some("text/plain"),
        login,
    )
    .await;
    assert_problem(&r, 415, "unsupported_media_type");
    let order = srv_order_json();
    let r = raw(
        &srv,
        Method::POST,
        "/api/orders",
        Some(&user.access),
        Some("text/plain"),
        order,
    )
    .await;
    assert_problem(&r, 415, "unsupported_media_type");
    let product = json!({"name": unique("P"), "price": 1}).to_string();
    let r = raw(
        &srv,
        Method::POST,
        "/api/products",
        Some(&admin.access),
        Some("text/plain"),
        product,
    )
    .await;
    assert_problem(&r, 415, "unsupported_media_type");
    // The refused registration did not create the account.
    let email = serde_json::from_str::<Value>(&reg).unwrap()["email"]
        .as_str()
        .unwrap()
        .to_string();
    let r = srv.login_raw(&email, "long-enough").await;
    assert_problem(&r, 401, "invalid_credentials");

    // 413 above 1 MiB, on public and authenticated endpoints.
    let big_name = "a".repeat(1024 * 1024 + 1024);
    let big = json!({"email": unique_email(), "password": "long-enough", "name": big_name});
    let r = srv.post("/api/auth/register", None, &big).await;
    assert_problem(&r, 413, "payload_too_large");
    let mut big_order = order_body(&[("ffffffffffffffffffffffff", 1)]);
    big_order["paymentMethod"] = json!("x".repeat(2 * 1024 * 1024));
    let r = srv.place_order_raw(&user, &big_order).await;
    assert_problem(&r, 413, "payload_too_large");

    // Below the limit a long field is an ordinary validation error, not a 413.
    let long =
        json!({"email": unique_email(), "password": "long-enough", "name": "a".repeat(256 * 1024)});
    let r = srv.post("/api/auth/register", None, &long).await;
    assert_validation(&r, &["name"]);

    // The server is still healthy afterwards.
    srv.get("/health", None).await.assert_status(200);
    srv.me(&user.access).await.assert_status(200);
}

fn srv_order_json() -> String {
    order_body(&[("ffffffffffffffffffffffff", 1)]).to_string()
}

#[tokio::test]
async fn unknown_routes_and_odd_requests_are_problems_not_5xx() {
    let srv = TestServer::serve().await;
    let user = srv.new_user().await;

    for path in [
        "/nope",
        "/api",
        "/api/nope",
        "/api/auth",
        "/api/orders/ffffffffffffffffffffffff/refund",
        "/api/products/a/b/c",
    ] {
        let r = srv.get(path, None).await;
        assert_problem_any_code(&r, 404);
        let r = srv.get(path, Some(&user.access)).await;
        assert_problem_any_code(&r, 404);
    }

    // Wrong methods on known paths: 404 or 405, as a problem.
    for (m, path) in [
        (Method::DELETE, "/api/products"),
        (Method::PUT, "/api/auth/login"),
        (Method::DELETE, "/api/orders/ffffffffffffffffffffffff"),
        (Method::GET, "/api/auth/logout"),
        (Method::POST, "/health"),
    ] {
        let r = srv.call(m, path, Some(&user.access), None).await;
        assert!(r.status == 404 || r.status == 405, "{}", r.ctx());
        assert_problem_any_code(&r, r.status);
    }

    // Odd ids and queries.
    for path in [
        "/api/orders/not-an-id",
        "/api/orders/%00",
        "/api/orders/ffffffffffffffffffffffff%20",
        "/api/products/%E2%9C%93",
        "/api/products?page=99999999999999999999999",
        "/api/products?limit=99999999999999999999999",
        "/api/orders?page=1e3",
        "/api/products?page=1&page=2",
    ] {
        let r = srv.get(path, Some(&user.access)).await;
        assert!(
            (400..500).contains(&r.status) || r.status == 200,
            "client mistake answered {}",
            r.ctx()
        );
        if r.status != 200 {
            assert_problem_any_code(&r, r.status);
        }
    }
    let r = srv
        .get("/api/products?page=99999999999999999999999", None)
        .await;
    assert_validation(&r, &["page"]);

    // Deeply nested JSON is refused cleanly.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let r = raw(
        &srv,
        Method::POST,
        "/api/auth/login",
        None,
        Some("application/json"),
        deep,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.ctx());

    // Still serving.
    srv.get("/health", None).await.assert_status(200);
}
